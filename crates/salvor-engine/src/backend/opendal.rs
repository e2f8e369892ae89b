//! The OpenDAL provider: one code path for local disk, S3-compatible storage and SFTP.
//!
//! OpenDAL is async; the engine is built on threads (its hot path is CPU work), so
//! every backend of the process shares one small tokio runtime and uses
//! OpenDAL's blocking operator. Remote requests get OpenDAL's timeouts
//! (`timeout` for requests without a transfer, `io-timeout` for a transfer
//! that stalls); a timeout is transient, so [`super::retry`] tries again.
//! For local disk OpenDAL already writes to a temporary file, fsyncs it and
//! renames it into place (`atomic_write_dir`); it does not fsync the directory,
//! so this provider adds that, completing the durability contract.
//!
//! Local repositories are private: directories 0700 and files 0600 whatever
//! the umask (key files let anyone who can read them guess passwords
//! offline). To share one with a group, give the repository directory group
//! bits (`chmod g+rx` to read, `g+rwx` to also write); new files and
//! directories then get the same group bits, as restic does.
//!
//! Retries are not made here but by [`super::retry`], around any provider:
//! this one only says which failures are transient (what OpenDAL marks
//! temporary). [`super::open_url`] retries remote stores only: a local
//! disk's errors (full, read-only, no permission) do not go away by
//! waiting, and each retry costs seconds.

use std::path::{Path, PathBuf};

use std::time::Duration;

use opendal::layers::TimeoutLayer;
use opendal::{ErrorKind as OdKind, Operator, blocking, options, services};

use super::options::BackendOptions;
use super::{Backend, Capabilities, FileType, ObjectInfo, ObjectSink};
use crate::error::{Error, ErrorKind, Result};

/// A backend reached through OpenDAL.
pub struct OpendalBackend {
    location: String,
    /// Built at once for remote stores; for a local path only once the
    /// directory exists, because OpenDAL creates its root when built and a
    /// mistyped `--repo` must not leave directories behind.
    op: std::sync::OnceLock<blocking::Operator>,
    /// Root directory for local repositories: directory fsyncs and `create`.
    local_root: Option<PathBuf>,
    /// Modes of new local files and directories, from the root's group bits.
    modes: std::sync::OnceLock<Modes>,
    /// Parallel transfers worth running.
    connections: usize,
}

/// The runtime OpenDAL's blocking operators run on, shared by every
/// backend of the process (a daemon may open many).
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("salvor-io")
        .enable_all()
        .build()
        .map_err(|e| Error::new(ErrorKind::Io, "cannot start the I/O runtime").source(e))?;
    // Another thread may have won the race; its runtime is as good.
    Ok(RUNTIME.get_or_init(|| rt))
}

/// OpenDAL's strategy for ssh's StrictHostKeyChecking: `strict` (yes),
/// `accept-new`, or `off` (no).
///
/// # Errors
/// Any other value.
pub(crate) fn known_hosts_strategy(value: &str) -> Result<&'static str> {
    match value {
        "strict" | "yes" => Ok("strict"),
        "accept-new" => Ok("add"),
        "off" | "no" => Ok("accept"),
        _ => Err(
            Error::invalid(format!("invalid SFTP known-hosts setting {value:?}"))
                .hint("use strict, accept-new or off (SALVOR_SFTP_KNOWN_HOSTS)"),
        ),
    }
}

/// Permission bits for what a local repository creates.
#[derive(Debug, Clone, Copy)]
struct Modes {
    file: u32,
    dir: u32,
}

impl Modes {
    /// Private, plus the group bits (read, or read and write) the
    /// repository directory has.
    fn from_root(root_mode: u32) -> Self {
        let (file, dir) = match root_mode & 0o070 {
            g if g & 0o020 != 0 => (0o660, 0o770),
            g if g & 0o040 != 0 => (0o640, 0o750),
            _ => (0o600, 0o700),
        };
        Self { file, dir }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            format!("cannot set the mode of {}", path.display()),
        )
        .source(e)
    })
}

/// An I/O error on a local path, with the disk-full hint where it applies.
fn local_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    let err = Error::io(what, path, e);
    if err.is_no_space() {
        err.hint("the repository's disk is full: free space there, then run the command again")
    } else {
        err
    }
}

/// A local object streamed to a file in `tmp/`, then fsynced and renamed
/// into place (and its directory fsynced) on commit: the same durability as
/// [`Backend::write`], without holding the object in memory. A sink dropped
/// uncommitted removes its file; one a killed process left is removed by a
/// later backup ([`Backend::remove_temporaries`]).
struct FileSink {
    /// `None` once committed.
    file: Option<std::io::BufWriter<std::fs::File>>,
    path: PathBuf,
    root: PathBuf,
}

impl ObjectSink for FileSink {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        use std::io::Write;
        let file = self.file.as_mut().expect("written before commit");
        file.write_all(data)
            .map_err(|e| local_err("cannot write", &self.path, e))
    }

    fn commit(mut self: Box<Self>, _: &dyn Backend, kind: FileType, name: &str) -> Result<()> {
        let file = self.file.take().expect("committed once");
        let dest = self.root.join(kind.path(name));
        let durable = file
            .into_inner()
            .map_err(|e| local_err("cannot write", &self.path, e.into_error()))
            .and_then(|f| {
                f.sync_all()
                    .map_err(|e| local_err("cannot fsync", &self.path, e))
            })
            .and_then(|()| {
                std::fs::rename(&self.path, &dest)
                    .map_err(|e| local_err("cannot rename into", &dest, e))
            });
        if let Err(e) = durable {
            let _ = std::fs::remove_file(&self.path);
            return Err(e);
        }
        let parent = dest.parent().expect("objects live in directories");
        OpendalBackend::sync_dir(parent)
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // Uncommitted (a failed or abandoned pack): leave nothing behind.
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn od_err(what: String, e: opendal::Error) -> Error {
    let kind = match e.kind() {
        OdKind::NotFound => ErrorKind::NotFound,
        _ => ErrorKind::Backend,
    };
    // OpenDAL shows one level of cause; the one that says what to fix (ssh's
    // "Host key verification failed.", a TLS or DNS failure) is often deeper.
    let root = root_cause(&e).filter(|r| !e.to_string().contains(r.as_str()));
    let host_key = root
        .as_deref()
        .is_some_and(|r| r.contains("Host key verification failed"));
    let what = match root {
        Some(r) => format!("{what} ({r})"),
        None => what,
    };
    let temporary = e.is_temporary();
    let mut err = Error::new(kind, what).source(e);
    if temporary {
        err = err.transient();
    }
    if host_key {
        err = err.hint(
            "add the server's host key to ssh's known_hosts (ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts, \
             after checking its fingerprint) or set SALVOR_SFTP_KNOWN_HOSTS=accept-new",
        );
    } else if err.is_no_space() {
        err =
            err.hint("the repository's disk is full: free space there, then run the command again");
    } else if kind == ErrorKind::Backend {
        err = err.hint("check that the repository location is reachable and writable");
    }
    err
}

/// The innermost cause of `e`, trimmed, if it has one.
fn root_cause(e: &opendal::Error) -> Option<String> {
    let mut cause = std::error::Error::source(e)?;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    let text = text.trim().trim_start_matches("ssh: ").trim();
    (!text.is_empty()).then(|| text.replace('\n', "; "))
}

impl OpendalBackend {
    /// Whether this is an SFTP store (written through temporary names).
    fn is_sftp(&self) -> bool {
        self.location.starts_with("sftp://")
    }

    /// Removes the `tmp/` files of a remote store older than `older_than`.
    fn remove_remote_temporaries(&self, older_than: std::time::SystemTime) -> Result<u64> {
        let op = self.op()?;
        let entries = match op.list("tmp/") {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(od_err("cannot list tmp/".into(), e)),
        };
        let mut n = 0;
        for e in entries {
            let old = e
                .metadata()
                .last_modified()
                .is_some_and(|t| std::time::SystemTime::from(t) < older_than);
            if e.metadata().is_file() && old {
                match op.delete(e.path()) {
                    Ok(()) => n += 1,
                    Err(err) if err.kind() == opendal::ErrorKind::NotFound => {}
                    Err(err) => return Err(od_err(format!("cannot remove {}", e.path()), err)),
                }
            }
        }
        Ok(n)
    }

    /// Builds the operator for `url` with the settings of the environment
    /// (see [`super::open_url`]).
    ///
    /// # Errors
    /// Unknown scheme or invalid parameters.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_url_with(url, &BackendOptions::from_env())
    }

    /// Builds the operator for `url` with `opts`.
    ///
    /// # Errors
    /// Unknown scheme or invalid parameters.
    pub fn from_url_with(url: &str, opts: &BackendOptions) -> Result<Self> {
        let runtime = runtime()?;
        let _guard = runtime.enter();
        let op = if let Some(rest) = url.strip_prefix("s3://") {
            // The process-wide HTTP client OpenDAL's S3 service sends through.
            opendal::install_default();
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let mut b = services::S3::default()
                .bucket(bucket)
                .root(&format!("/{prefix}"));
            if let Some(ep) = &opts.s3_endpoint {
                b = b.endpoint(ep);
            }
            b = b.region(opts.s3_region.as_deref().unwrap_or("us-east-1"));
            // Unset, OpenDAL looks for credentials itself (profiles, instance roles).
            if let Some(id) = &opts.s3_access_key_id {
                b = b.access_key_id(id);
            }
            if let Some(secret) = &opts.s3_secret_access_key {
                b = b.secret_access_key(secret);
            }
            Operator::new(b).map_err(|e| od_err(format!("invalid s3 location {url}"), e))?
        } else if let Some(rest) = url.strip_prefix("sftp://") {
            let (auth, path) = rest.split_once('/').ok_or_else(|| {
                Error::invalid(format!("invalid sftp location {url}"))
                    .hint("use sftp://[USER@]HOST[:PORT]/PATH")
            })?;
            let (user, host) = auth
                .split_once('@')
                .map_or((None, auth), |(u, h)| (Some(u), h));
            // `ssh://` form, so that a `:PORT` is a port, not part of the host name.
            let mut b = services::Sftp::default()
                .endpoint(&format!("ssh://{host}"))
                .root(&format!("/{path}"));
            if let Some(k) = &opts.sftp_known_hosts {
                b = b.known_hosts_strategy(known_hosts_strategy(k)?);
            }
            if let Some(u) = user {
                b = b.user(u);
            }
            if let Some(k) = &opts.sftp_key {
                b = b.key(k);
            }
            Operator::new(b).map_err(|e| od_err(format!("invalid sftp location {url}"), e))?
        } else if url.starts_with("memory://") {
            Operator::new(services::Memory::default())
                .map_err(|e| od_err("memory backend".into(), e))?
        } else {
            let path = url.strip_prefix("file://").unwrap_or(url);
            if path.contains("://") {
                return Err(
                    Error::invalid(format!("unknown repository scheme in {url}"))
                        .hint("use a local path, s3://BUCKET/PREFIX or sftp://USER@HOST/PATH"),
                );
            }
            let root =
                std::path::absolute(path).map_err(|e| Error::io("cannot resolve", path, e))?;
            drop(_guard);
            return Ok(Self {
                location: url.to_string(),
                op: Default::default(),
                local_root: Some(root),
                modes: Default::default(),
                connections: opts.connections.unwrap_or(1),
            });
        };
        let defaults = TimeoutLayer::default();
        let op = op.layer(
            defaults
                .with_timeout(opts.timeout.unwrap_or(Duration::from_secs(60)))
                .with_io_timeout(opts.io_timeout.unwrap_or(Duration::from_secs(30))),
        );
        let op = Self::blocking(op)?;
        drop(_guard);
        Ok(Self {
            location: url.to_string(),
            op: op.into(),
            local_root: None,
            modes: Default::default(),
            connections: opts.connections.unwrap_or(4),
        })
    }

    fn blocking(op: Operator) -> Result<blocking::Operator> {
        blocking::Operator::new(op).map_err(|e| od_err("cannot create the backend".into(), e))
    }

    /// Modes for new local files and directories (see the module docs).
    fn modes(&self, root: &Path) -> Modes {
        *self.modes.get_or_init(|| {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(root).map_or(0o700, |m| m.permissions().mode());
            Modes::from_root(mode)
        })
    }

    /// The operator; for a local repository, built on first use once its directory exists.
    fn op(&self) -> Result<&blocking::Operator> {
        if let Some(op) = self.op.get() {
            return Ok(op);
        }
        let root = self
            .local_root
            .as_ref()
            .expect("only local operators are built lazily");
        if !root.is_dir() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no repository at {}", root.display()),
            ));
        }
        let _guard = runtime()?.enter();
        let b = services::Fs::default()
            .root(&root.to_string_lossy())
            .atomic_write_dir(&root.join("tmp").to_string_lossy());
        let op = Operator::new(b)
            .map_err(|e| od_err(format!("invalid local location {}", self.location), e))?;
        let op = Self::blocking(op)?;
        Ok(self.op.get_or_init(|| op))
    }

    /// [`Backend::create_new`] on local disk: the object is written to
    /// `tmp/` and made durable, then hard-linked under its name, which the
    /// file system refuses atomically when the name exists (a rename would
    /// replace it). OpenDAL's own `if_not_exists` checks, then renames.
    fn create_new_local(&self, root: &Path, path: &str, data: &[u8]) -> Result<bool> {
        use std::io::Write;
        let dest = root.join(path);
        let tmp = root
            .join("tmp")
            .join(format!("create-{}", crate::id::random_hex()));
        let mode = self.modes(root).file;
        let written = (|| {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)
                .map_err(|e| local_err("cannot create", &tmp, e))?;
            f.write_all(data)
                .and_then(|()| f.sync_all())
                .map_err(|e| local_err("cannot write", &tmp, e))?;
            set_mode(&tmp, mode)
        })();
        let linked = written.and_then(|()| match std::fs::hard_link(&tmp, &dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(local_err("cannot link into", &dest, e)),
        });
        let _ = std::fs::remove_file(&tmp);
        if linked? {
            Self::sync_dir(dest.parent().expect("objects live in directories"))?;
            return Ok(true);
        }
        Ok(false)
    }

    fn sync_dir(dir: &Path) -> Result<()> {
        let f = std::fs::File::open(dir).map_err(|e| Error::io("cannot open directory", dir, e))?;
        f.sync_all()
            .map_err(|e| Error::io("cannot fsync directory", dir, e))
    }
}

impl Backend for OpendalBackend {
    fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    fn location(&self) -> &str {
        &self.location
    }

    fn list(&self, kind: FileType) -> Result<Vec<ObjectInfo>> {
        let dir = kind.dir();
        if dir.is_empty() {
            return Ok(if self.exists(kind, "config")? {
                vec![ObjectInfo::new("config", 0)]
            } else {
                vec![]
            });
        }
        let op = match self.op() {
            Ok(op) => op,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let opts = options::ListOptions {
            recursive: true,
            ..Default::default()
        };
        let entries = match op.list_options(dir, opts) {
            Ok(e) => e,
            Err(e) if e.kind() == OdKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(od_err(format!("cannot list {dir}"), e)),
        };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if e.metadata().is_dir() {
                continue;
            }
            let name = e.name().to_string();
            if name.is_empty() || name.starts_with('.') {
                continue;
            }
            let (mut size, mut modified) =
                (e.metadata().content_length(), e.metadata().last_modified());
            if size == 0 {
                // Some listings leave the size out; a stat has it. (A
                // missing time is not worth a request per object.)
                if let Ok(m) = op.stat(e.path()) {
                    size = m.content_length();
                    modified = modified.or(m.last_modified());
                }
            }
            out.push(ObjectInfo {
                name,
                size,
                modified: modified.map(Into::into),
            });
        }
        Ok(out)
    }

    fn read(&self, kind: FileType, name: &str) -> Result<Vec<u8>> {
        let path = kind.path(name);
        self.op()?
            .read(&path)
            .map(|b| b.to_vec())
            .map_err(|e| od_err(format!("cannot read {path}"), e))
    }

    fn read_at_most(&self, kind: FileType, name: &str, max: u64) -> Result<Vec<u8>> {
        // The size first: OpenDAL refuses a range past an object's end, so
        // "read one byte more than allowed" is not available.
        let path = kind.path(name);
        let op = self.op()?;
        let meta = op
            .stat(&path)
            .map_err(|e| od_err(format!("cannot read {path}"), e))?;
        super::check_size(kind, name, meta.content_length(), max)?;
        let buf = op
            .read(&path)
            .map_err(|e| od_err(format!("cannot read {path}"), e))?;
        super::check_size(kind, name, buf.len() as u64, max)?;
        Ok(buf.to_vec())
    }

    fn read_range(&self, kind: FileType, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let path = kind.path(name);
        let opts = options::ReadOptions {
            range: (offset..offset + length).into(),
            ..Default::default()
        };
        let buf = self
            .op()?
            .read_options(&path, opts)
            .map_err(|e| od_err(format!("cannot read {path}"), e))?;
        if buf.len() as u64 != length {
            return Err(Error::corrupt(format!(
                "{path} is truncated: wanted {length} bytes at offset {offset}, got {}",
                buf.len()
            )));
        }
        Ok(buf.to_vec())
    }

    fn write(&self, kind: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.write_bytes(kind, name, bytes::Bytes::copy_from_slice(data))
    }

    fn write_bytes(&self, kind: FileType, name: &str, data: bytes::Bytes) -> Result<()> {
        let path = kind.path(name);
        let op = self.op()?;
        if self.is_sftp() {
            // SFTP writes a file in place, so a connection that drops (or
            // a writer killed) mid-write would leave part of an object
            // under its final name: write a temporary file, then rename it
            // (OpenSSH's posix-rename is atomic).
            let tmp = format!("tmp/{}.part", crate::id::random_hex());
            let done = op
                .write(&tmp, data)
                .map(|_| ())
                .and_then(|()| op.rename(&tmp, &path));
            if let Err(e) = done {
                let _ = op.delete(&tmp);
                return Err(od_err(format!("cannot write {path}"), e));
            }
            return Ok(());
        }
        // OpenDAL sends the shared buffer as it is: a mapped spool file
        // goes out without being copied into memory.
        op.write(&path, data)
            .map_err(|e| od_err(format!("cannot write {path}"), e))?;
        if let Some(root) = &self.local_root {
            let full = root.join(&path);
            set_mode(&full, self.modes(root).file)?;
            if let Some(parent) = full.parent() {
                Self::sync_dir(parent)?;
            }
        }
        Ok(())
    }

    fn delete(&self, kind: FileType, name: &str) -> Result<()> {
        let path = kind.path(name);
        self.op()?
            .delete(&path)
            .map_err(|e| od_err(format!("cannot delete {path}"), e))
    }

    fn create(&self) -> Result<()> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        // A directory made here is private; one the user made keeps its mode,
        // whose group bits then decide what everything inside gets.
        if !root.exists() {
            std::fs::create_dir_all(root)
                .map_err(|e| Error::io("cannot create directory", root, e))?;
            set_mode(root, 0o700)?;
        }
        let dir_mode = self.modes(root).dir;
        let mk = |p: PathBuf| {
            std::fs::create_dir_all(&p).map_err(|e| Error::io("cannot create directory", &p, e))?;
            set_mode(&p, dir_mode)
        };
        for d in ["keys", "index", "snapshots", "locks", "tmp", "data"] {
            mk(root.join(d))?;
        }
        // Fan-out directories exist up front, so a pack write never creates a
        // directory whose own entry would need another fsync.
        for i in 0..=255u8 {
            let d = root.join("data").join(format!("{i:02x}"));
            mk(d.clone())?;
            Self::sync_dir(&d)?;
        }
        for d in ["keys", "index", "snapshots", "locks", "tmp", "data"] {
            Self::sync_dir(&root.join(d))?;
        }
        Self::sync_dir(root)?;
        if let Some(parent) = root.parent() {
            Self::sync_dir(parent)?;
        }
        Ok(())
    }

    fn connections(&self) -> usize {
        self.connections
    }

    fn capabilities(&self) -> Capabilities {
        if self.local_root.is_some() {
            return Capabilities {
                atomic_create: true,
                list_times: true,
                temporaries: true,
            };
        }
        let Some(op) = self.op.get() else {
            return Capabilities::default();
        };
        let cap = op.info().capability();
        Capabilities {
            atomic_create: cap.write_with_if_not_exists,
            // Memory (tests) lists no times; S3 and SFTP do.
            list_times: !self.location.starts_with("memory://"),
            temporaries: self.is_sftp(),
        }
    }

    fn create_new(&self, kind: FileType, name: &str, data: &[u8]) -> Result<bool> {
        let path = kind.path(name);
        if let Some(root) = &self.local_root {
            return self.create_new_local(root, &path, data);
        }
        let op = self.op()?;
        if !op.info().capability().write_with_if_not_exists {
            return super::create_by_checking(self, kind, name, data);
        }
        let opts = options::WriteOptions {
            if_not_exists: true,
            ..Default::default()
        };
        match op.write_options(&path, bytes::Bytes::copy_from_slice(data), opts) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == OdKind::ConditionNotMatch => Ok(false),
            Err(e) => Err(od_err(format!("cannot write {path}"), e)),
        }
    }

    fn sink(&self, spool_dir: &Path) -> Result<Box<dyn ObjectSink>> {
        let Some(root) = &self.local_root else {
            // OpenDAL's writers need the name first; a pack's is its hash.
            return super::SpoolSink::new(spool_dir).map(|s| Box::new(s) as Box<dyn ObjectSink>);
        };
        let path = root
            .join("tmp")
            .join(format!("sink-{}", crate::id::random_hex()));
        let mode = self.modes(root).file;
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .map_err(|e| local_err("cannot create", &path, e))?
        };
        // The umask may have taken bits the repository's mode asks for.
        set_mode(&path, mode)?;
        Ok(Box::new(FileSink {
            // Coalesces the small writes (prefix, header); frames bypass it.
            file: Some(std::io::BufWriter::with_capacity(64 << 10, file)),
            path,
            root: root.clone(),
        }))
    }

    fn remove_temporaries(&self, older_than: std::time::SystemTime) -> Result<u64> {
        let Some(root) = &self.local_root else {
            return if self.is_sftp() {
                self.remove_remote_temporaries(older_than)
            } else {
                Ok(0)
            };
        };
        let dir = root.join("tmp");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io("cannot list", &dir, e)),
        };
        let mut n = 0;
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < older_than);
            if old && e.file_type().is_ok_and(|t| t.is_file()) {
                match std::fs::remove_file(e.path()) {
                    Ok(()) => n += 1,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(Error::io("cannot remove", e.path(), err)),
                }
            }
        }
        Ok(n)
    }

    fn exists(&self, kind: FileType, name: &str) -> Result<bool> {
        let path = kind.path(name);
        let op = match self.op() {
            Ok(op) => op,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        op.exists(&path)
            .map_err(|e| od_err(format!("cannot check {path}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_files(root: &Path) -> usize {
        std::fs::read_dir(root.join("tmp")).unwrap().count()
    }

    #[test]
    fn a_local_sink_streams_to_tmp_and_commits_atomically_or_leaves_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        let b = OpendalBackend::from_url(root.to_str().unwrap()).unwrap();
        b.create().unwrap();
        let name = "ab".repeat(32);
        let mut s = b.sink(&root).unwrap();
        s.write(b"hello ").unwrap();
        s.write(b"pack").unwrap();
        assert_eq!(tmp_files(&root), 1, "written to tmp/ as it comes");
        assert!(
            !b.exists(FileType::Pack, &name).unwrap(),
            "invisible until committed"
        );
        s.commit(&b, FileType::Pack, &name).unwrap();
        assert_eq!(b.read(FileType::Pack, &name).unwrap(), b"hello pack");
        assert_eq!(tmp_files(&root), 0);
        let mode = std::fs::metadata(root.join(FileType::Pack.path(&name)))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // Abandoned (a failed backup): nothing under any name, nothing in tmp/.
        let mut s = b.sink(&root).unwrap();
        s.write(b"half a pack").unwrap();
        drop(s);
        assert_eq!(tmp_files(&root), 0);
        assert_eq!(b.list(FileType::Pack).unwrap().len(), 1);
    }
}
