//! Reader threads: read a file, chunk, hash, dedup, hand new blobs to the packer.

use std::os::unix::fs::MetadataExt;

use crossbeam_channel::Receiver;

use super::Session;
use super::walker::{FileResult, Job};
use crate::chunker::Chunker;
use crate::content::Content;

/// Serves jobs until the walker closes the queue.
pub(super) fn run(session: &Session, chunker: &Chunker, jobs: Receiver<Job>) {
    let mut buf = Vec::new();
    for job in jobs {
        if session.aborted() {
            // Storage failed: drain the queue without reading.
            let _ = job.reply.send(FileResult {
                content: Content::default(),
                size: 0,
                error: Some("stopped".into()),
                warning: None,
            });
            continue;
        }
        let res = read_file(session, chunker, &job, &mut buf);
        let _ = job.reply.send(res);
    }
}

/// Opens the file the walker saw, and only that: no symlink is followed and a
/// FIFO put in its place cannot block the open (`O_NOFOLLOW | O_NONBLOCK`),
/// and the opened object must be the same regular file (device and inode).
fn open_same_file(job: &Job) -> std::io::Result<std::fs::File> {
    let file = crate::longpath::open_read_nofollow(&job.path)?;
    let m = file.metadata()?;
    if !m.is_file() || m.ino() != job.node.inode || m.dev() != job.node.device {
        return Err(std::io::Error::other(
            "replaced by another file between scan and read; not stored",
        ));
    }
    Ok(file)
}

fn read_file(session: &Session, chunker: &Chunker, job: &Job, buf: &mut Vec<u8>) -> FileResult {
    let fail = |e: std::io::Error| FileResult {
        content: Content::default(),
        size: 0,
        error: Some(format!("{}: {e}", job.path.display())),
        warning: None,
    };
    let file = match open_same_file(job) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let (content, size, b) = match session.store_stream(&file, chunker, std::mem::take(buf)) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    *buf = b;
    // A file that changed while we read it may be stored half old, half new:
    // say so rather than keep quiet.
    let warning = match file.metadata() {
        Ok(m) => {
            let mtime = m.mtime() * 1_000_000_000 + m.mtime_nsec();
            let ctime = m.ctime() * 1_000_000_000 + m.ctime_nsec();
            (mtime != job.node.mtime_ns
                || ctime != job.node.ctime_ns
                || m.size() != size
                || size != job.node.size)
                .then(|| {
                    format!(
                        "{}: file changed while it was read; the stored copy may be inconsistent",
                        job.path.display()
                    )
                })
        }
        Err(e) => Some(format!("{}: {e}", job.path.display())),
    };
    FileResult {
        content,
        size,
        error: None,
        warning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::walker::node_from_metadata;

    fn job(path: &std::path::Path) -> Job {
        let m = std::fs::symlink_metadata(path).unwrap();
        Job {
            path: path.to_path_buf(),
            node: node_from_metadata(b"f", &m),
            reply: crossbeam_channel::bounded(1).0,
        }
    }

    #[test]
    fn a_file_swapped_after_the_scan_is_not_read() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"scanned").unwrap();
        let j = job(&f);
        assert!(open_same_file(&j).is_ok());
        // Keep the scanned file alive elsewhere so its inode number cannot be reused.
        std::fs::rename(&f, d.path().join("kept")).unwrap();
        // Replaced by a symlink: not followed.
        std::fs::write(d.path().join("other"), b"elsewhere").unwrap();
        std::os::unix::fs::symlink(d.path().join("other"), &f).unwrap();
        assert!(open_same_file(&j).is_err());
        // Replaced by a FIFO: the open must not block, and it is refused.
        std::fs::remove_file(&f).unwrap();
        nix::unistd::mkfifo(&f, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(open_same_file(&j).is_err());
        // Replaced by another regular file (new inode): refused too.
        std::fs::remove_file(&f).unwrap();
        std::fs::write(d.path().join("new"), b"new").unwrap();
        std::fs::rename(d.path().join("new"), &f).unwrap();
        assert!(open_same_file(&j).is_err());
    }
}
