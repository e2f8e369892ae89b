//! File-system calls on paths of any length.
//!
//! Linux refuses a path of `PATH_MAX` (4096) bytes or more with
//! `ENAMETOOLONG`, yet directories nest as deep as anyone makes them: a
//! chain of 2,048 one-letter directories already has a longer path. Backup
//! and restore must handle every tree a file system can hold, so each call
//! here takes a whole path: a short one goes straight to the usual call; a
//! long one is opened a segment at a time (`openat` with `O_PATH` on
//! segments shorter than `PATH_MAX`, each relative to the last), and the
//! call is made on the last component relative to the directory holding it
//! (the `*at` family).
//!
//! Written by hand because no crate does this for plain paths: `cap-std`
//! resolves every component in user space under capability rules (no
//! absolute symlinks, no `..` above its root), where a backup of `/` must
//! resolve intermediate components exactly as the kernel does for a short
//! path.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Dir, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};

/// Paths shorter than this go to the usual calls (`PATH_MAX` counts the NUL).
const SHORT: usize = 4000;
/// The longest piece of a long path opened in one `openat`.
const SEGMENT: usize = 2048;

fn too_long() -> io::Error {
    io::Error::from_raw_os_error(libc::ENAMETOOLONG)
}

/// Opens the directory at `path` (any length) as an `O_PATH` descriptor.
fn open_dir(path: &[u8]) -> io::Result<OwnedFd> {
    let mut fd: Option<OwnedFd> = None;
    let mut rest = path;
    while !rest.is_empty() {
        let cut = if rest.len() <= SEGMENT {
            rest.len()
        } else {
            match rest[..=SEGMENT].iter().rposition(|&b| b == b'/') {
                Some(0) | None => return Err(too_long()),
                Some(i) => i,
            }
        };
        let dir = fd.as_ref().map_or(CWD, AsFd::as_fd);
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        fd = Some(rustix::fs::openat(
            dir,
            OsStr::from_bytes(&rest[..cut]),
            flags,
            Mode::empty(),
        )?);
        rest = &rest[cut..];
        while let [b'/', tail @ ..] = rest {
            rest = tail;
        }
    }
    fd.ok_or_else(too_long)
}

/// Runs `f` on the directory holding `path`'s last component and that
/// component; for a short path, on the current directory and the whole path.
fn at<T>(path: &Path, f: impl FnOnce(BorrowedFd<'_>, &OsStr) -> io::Result<T>) -> io::Result<T> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() < SHORT {
        return f(CWD, path.as_os_str());
    }
    let end = bytes.len() - bytes.iter().rev().take_while(|&&b| b == b'/').count();
    let slash = bytes[..end]
        .iter()
        .rposition(|&b| b == b'/')
        .ok_or_else(too_long)?;
    let dir = open_dir(&bytes[..slash.max(1)])?;
    f(dir.as_fd(), OsStr::from_bytes(&bytes[slash + 1..end]))
}

/// `lstat`: the metadata of the entry itself, not of a symlink's target.
///
/// # Errors
/// As `std::fs::symlink_metadata`.
pub fn symlink_metadata(path: &Path) -> io::Result<Metadata> {
    if path.as_os_str().len() < SHORT {
        return std::fs::symlink_metadata(path);
    }
    let fd = at(path, |d, n| {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(rustix::fs::openat(d, n, flags, Mode::empty())?)
    })?;
    File::from(fd).metadata()
}

/// The target of a symlink.
///
/// # Errors
/// As `std::fs::read_link`.
pub fn read_link(path: &Path) -> io::Result<PathBuf> {
    if path.as_os_str().len() < SHORT {
        return std::fs::read_link(path);
    }
    at(path, |d, n| {
        let target = rustix::fs::readlinkat(d, n, Vec::new())?;
        Ok(PathBuf::from(OsString::from_vec(target.into_bytes())))
    })
}

/// The names in a directory (without `.` and `..`), each or the error
/// reading it; a symlink in the directory's place is not followed.
///
/// # Errors
/// The directory cannot be opened.
pub fn read_dir_names(path: &Path) -> io::Result<Vec<io::Result<OsString>>> {
    if path.as_os_str().len() < SHORT {
        return Ok(std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect());
    }
    let fd = at(path, |d, n| {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(rustix::fs::openat(d, n, flags, Mode::empty())?)
    })?;
    let dir = Dir::new(fd)?;
    Ok(dir
        .filter_map(|e| match e {
            Ok(e) if matches!(e.file_name().to_bytes(), b"." | b"..") => None,
            Ok(e) => Some(Ok(OsString::from_vec(e.file_name().to_bytes().to_vec()))),
            Err(e) => Some(Err(e.into())),
        })
        .collect())
}

fn open_with(path: &Path, flags: OFlags, mode: u32) -> io::Result<File> {
    at(path, |d, n| {
        let fd = rustix::fs::openat(d, n, flags | OFlags::CLOEXEC, Mode::from_raw_mode(mode))?;
        Ok(File::from(fd))
    })
}

/// Opens a regular file for reading without following a symlink in its
/// place and without blocking on a FIFO put there (`O_NOFOLLOW | O_NONBLOCK`).
///
/// # Errors
/// As `open(2)`.
pub fn open_read_nofollow(path: &Path) -> io::Result<File> {
    open_with(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        0,
    )
}

/// Creates a new file for writing; fails if anything exists at `path`.
///
/// # Errors
/// As `open(2)` with `O_CREAT | O_EXCL`.
pub fn create_new(path: &Path) -> io::Result<File> {
    open_with(
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
        0o666,
    )
}

/// Opens an existing file for writing (never through a symlink).
///
/// # Errors
/// As `open(2)`.
pub fn open_write(path: &Path) -> io::Result<File> {
    open_with(path, OFlags::WRONLY | OFlags::NOFOLLOW, 0)
}

/// Removes a file, symlink or special file (not a directory).
///
/// # Errors
/// As `unlink(2)`.
pub fn remove_file(path: &Path) -> io::Result<()> {
    at(path, |d, n| {
        Ok(rustix::fs::unlinkat(d, n, AtFlags::empty())?)
    })
}

/// Creates one directory (mode 0777 less the umask; the parent must exist).
///
/// # Errors
/// As `mkdir(2)`, including `AlreadyExists`.
pub fn create_dir(path: &Path) -> io::Result<()> {
    at(path, |d, n| {
        Ok(rustix::fs::mkdirat(d, n, Mode::from_raw_mode(0o777))?)
    })
}

/// Creates a directory and any missing parents.
///
/// # Errors
/// A component cannot be created, or exists and is not a directory.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    if path.as_os_str().len() < SHORT {
        return std::fs::create_dir_all(path);
    }
    // Find the deepest ancestor that exists, then create downwards.
    let mut missing = Vec::new();
    let mut cur = path;
    loop {
        match symlink_metadata(cur) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(cur);
                cur = cur.parent().ok_or(e)?;
            }
            Err(e) => return Err(e),
        }
    }
    for dir in missing.into_iter().rev() {
        match create_dir(dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Creates a symlink at `path` pointing to `target`.
///
/// # Errors
/// As `symlink(2)`.
pub fn symlink(target: &OsStr, path: &Path) -> io::Result<()> {
    at(path, |d, n| Ok(rustix::fs::symlinkat(target, d, n)?))
}

/// What [`mknod`] creates.
#[derive(Debug, Clone, Copy)]
pub enum Special {
    /// A named pipe.
    Fifo,
    /// A block device.
    Block,
    /// A character device.
    Char,
}

/// Creates a FIFO or device node.
///
/// # Errors
/// As `mknod(2)`.
pub fn mknod(path: &Path, kind: Special, mode: u32, dev: u64) -> io::Result<()> {
    let t = match kind {
        Special::Fifo => FileType::Fifo,
        Special::Block => FileType::BlockDevice,
        Special::Char => FileType::CharacterDevice,
    };
    at(path, |d, n| {
        Ok(rustix::fs::mknodat(
            d,
            n,
            t,
            Mode::from_raw_mode(mode & 0o7777),
            dev,
        )?)
    })
}

/// Creates `link` as another name of `original` (never following symlinks).
///
/// # Errors
/// As `link(2)`.
pub fn hard_link(original: &Path, link: &Path) -> io::Result<()> {
    at(original, |od, on| {
        at(link, |ld, ln| {
            Ok(rustix::fs::linkat(od, on, ld, ln, AtFlags::empty())?)
        })
    })
}

/// Sets owner and group without following a symlink.
///
/// # Errors
/// As `lchown(2)`.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    at(path, |d, n| {
        Ok(rustix::fs::chownat(
            d,
            n,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    })
}

/// Sets permission bits (of a file or directory, not a symlink).
///
/// # Errors
/// As `chmod(2)`.
pub fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    at(path, |d, n| {
        Ok(rustix::fs::chmodat(
            d,
            n,
            Mode::from_raw_mode(mode & 0o7777),
            AtFlags::empty(),
        )?)
    })
}

/// Sets access and modification time to `mtime_ns`, not following a symlink.
///
/// # Errors
/// As `utimensat(2)`.
pub fn set_times_nofollow(path: &Path, mtime_ns: i64) -> io::Result<()> {
    let t = Timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    at(path, |d, n| {
        Ok(rustix::fs::utimensat(
            d,
            n,
            &times,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of `depth` directories named `d` below `root`, made with the
    /// calls above (a plain `mkdir -p` of the whole path would fail).
    fn chain(root: &Path, depth: usize) -> PathBuf {
        let mut p = root.to_path_buf();
        for _ in 0..depth {
            p.push("d");
            create_dir(&p).unwrap();
        }
        p
    }

    #[test]
    fn every_call_works_beyond_path_max() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = chain(tmp.path(), 2500);
        assert!(deep.as_os_str().len() > 5000);
        assert!(symlink_metadata(&deep).unwrap().is_dir());
        let f = deep.join("file");
        {
            use std::io::Write;
            create_new(&f).unwrap().write_all(b"deep").unwrap();
        }
        assert!(create_new(&f).is_err(), "O_EXCL");
        let mut s = String::new();
        use std::io::Read;
        open_read_nofollow(&f)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "deep");
        open_write(&f).unwrap();
        symlink(OsStr::new("file"), &deep.join("link")).unwrap();
        assert_eq!(read_link(&deep.join("link")).unwrap(), Path::new("file"));
        assert!(symlink_metadata(&deep.join("link")).unwrap().is_symlink());
        assert!(open_read_nofollow(&deep.join("link")).is_err());
        hard_link(&f, &deep.join("hard")).unwrap();
        mknod(&deep.join("fifo"), Special::Fifo, 0o600, 0).unwrap();
        chmod(&f, 0o640).unwrap();
        set_times_nofollow(&f, 1_500_000_000_123_456_789).unwrap();
        let m = symlink_metadata(&f).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((m.mode() & 0o7777, m.nlink()), (0o640, 2));
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_500_000_000, 123_456_789));
        let me = nix::unistd::geteuid().as_raw();
        lchown(&deep.join("link"), me, nix::unistd::getegid().as_raw()).unwrap();
        let mut names: Vec<_> = read_dir_names(&deep)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        names.sort();
        assert_eq!(names, ["fifo", "file", "hard", "link"]);
        remove_file(&deep.join("hard")).unwrap();
        let deeper = deep.join("x/y/z");
        create_dir_all(&deeper).unwrap();
        assert!(symlink_metadata(&deeper).unwrap().is_dir());
        create_dir_all(&deeper).unwrap();
        assert!(create_dir_all(&f.join("below-a-file")).is_err());
    }
}
