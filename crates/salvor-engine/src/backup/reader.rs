//! Reader threads: read a file, chunk, hash, dedup, hand new blobs to the packer.

use std::os::unix::fs::MetadataExt;

use crossbeam_channel::Receiver;

use super::Session;
use super::walker::{FileResult, Job};
use crate::chunker::Chunker;

/// Serves jobs until the walker closes the queue.
pub(super) fn run(session: &Session, chunker: &Chunker, jobs: Receiver<Job>) {
    let mut buf = Vec::new();
    for job in jobs {
        let res = read_file(session, chunker, &job, &mut buf);
        let _ = job.reply.send(res);
    }
}

fn read_file(session: &Session, chunker: &Chunker, job: &Job, buf: &mut Vec<u8>) -> FileResult {
    let fail = |e: std::io::Error| FileResult {
        content: Vec::new(),
        size: 0,
        error: Some(format!("{}: {e}", job.path.display())),
        warning: None,
    };
    let file = match std::fs::File::open(&job.path) {
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
