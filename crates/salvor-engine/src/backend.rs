//! Where bytes live: a flat key/value namespace.
//!
//! The trait is deliberately small (restic's `Backend`, rustic_core's
//! `ReadBackend`/`WriteBackend`): list, read, ranged read, write, delete, keyed
//! by [`FileType`]. Providers live in submodules and are chosen by URL in
//! [`open_url`], the one place that knows every scheme. Cross-cutting concerns
//! are decorators around any backend, never inside a provider: request
//! metrics ([`metered`]), retries of transient failures ([`retry`]), a bound
//! on concurrent requests ([`limit`]) and, in tests, fault injection
//! ([`fault`]). [`conformance`] checks the contract below against any of them.
//!
//! # Contract every provider keeps
//! - `write` is atomic and durable: once it returns, the object is complete and
//!   survives a crash; a reader never sees a partial object. Objects are never
//!   overwritten with different content (names are content hashes or random).
//! - `read` returns the whole object or fails; read-after-write is consistent
//!   for the same process.
//! - `delete` of a missing object succeeds (idempotent).
//! - A missing object is reported as [`ErrorKind::NotFound`].

pub mod conformance;
pub mod fault;
pub mod limit;
pub mod metered;
pub mod opendal;
pub mod options;
pub mod retry;

use crate::error::{Error, ErrorKind, Result};

/// The kinds of object in a repository; each maps to a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// The single `config` object.
    Config,
    /// `keys/`.
    Key,
    /// `data/<2 hex>/`: packs.
    Pack,
    /// `index/`.
    Index,
    /// `snapshots/`.
    Snapshot,
    /// `locks/`.
    Lock,
}

impl FileType {
    /// The directory of this type.
    pub fn dir(self) -> &'static str {
        match self {
            Self::Config => "",
            Self::Key => "keys/",
            Self::Pack => "data/",
            Self::Index => "index/",
            Self::Snapshot => "snapshots/",
            Self::Lock => "locks/",
        }
    }

    /// Object path of `name` (packs are fanned out by their first two hex digits).
    pub fn path(self, name: &str) -> String {
        match self {
            Self::Config => "config".to_string(),
            Self::Pack => format!("data/{}/{name}", &name[..2.min(name.len())]),
            _ => format!("{}{name}", self.dir()),
        }
    }

    /// Human name, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Key => "key",
            Self::Pack => "pack",
            Self::Index => "index file",
            Self::Snapshot => "snapshot",
            Self::Lock => "lock",
        }
    }
}

/// One stored object, as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's name within its kind's directory.
    pub name: String,
    /// Its length in bytes.
    pub size: u64,
    /// When the store last wrote it, by the store's clock, where the store
    /// says (local disk, S3 and SFTP all do). Prune's grace periods read
    /// it: it is the one time a host with a wrong clock cannot forge.
    pub modified: Option<jiff::Timestamp>,
}

impl ObjectInfo {
    /// An object known by name and size only.
    pub fn new(name: impl Into<String>, size: u64) -> Self {
        Self {
            name: name.into(),
            size,
            modified: None,
        }
    }
}

/// What a backend promises beyond the contract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    /// [`Backend::create_new`] is atomic: of two writers racing to create
    /// one name, exactly one succeeds (a local hard link, S3's
    /// `If-None-Match: *`). Without it, a check and then a write.
    pub atomic_create: bool,
    /// Listings carry the store's modification times.
    pub list_times: bool,
    /// Objects are written under a temporary name in `tmp/` and renamed
    /// into place (local disks, SFTP), so a writer that dies leaves files
    /// there for [`Backend::remove_temporaries`].
    pub temporaries: bool,
}

/// A storage backend. See the module documentation for the contract.
pub trait Backend: Send + Sync {
    /// The location as the user gave it (no credentials).
    fn location(&self) -> &str;
    /// True for a repository on a local file system, where a local cache
    /// would only copy what is already one read away.
    fn is_local(&self) -> bool {
        false
    }
    /// Every object of `kind`, in no particular order.
    ///
    /// # Errors
    /// Backend failures.
    fn list(&self, kind: FileType) -> Result<Vec<ObjectInfo>>;
    /// The whole object.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when missing; backend failures.
    fn read(&self, kind: FileType, name: &str) -> Result<Vec<u8>>;
    /// The whole object if it holds at most `max` bytes. Small documents
    /// (keys, locks, snapshots) are read this way, so an object planted in
    /// their place by someone with write access cannot exhaust memory.
    ///
    /// # Errors
    /// As [`Backend::read`]; [`ErrorKind::Corrupt`] when it is larger.
    fn read_at_most(&self, kind: FileType, name: &str, max: u64) -> Result<Vec<u8>> {
        let data = self.read(kind, name)?;
        check_size(kind, name, data.len() as u64, max)?;
        Ok(data)
    }
    /// `length` bytes at `offset`.
    ///
    /// # Errors
    /// As [`Backend::read`]; a short object is an error.
    fn read_range(&self, kind: FileType, name: &str, offset: u64, length: u64) -> Result<Vec<u8>>;
    /// Stores an object atomically and durably.
    ///
    /// # Errors
    /// Backend failures (full disk, permissions, network).
    fn write(&self, kind: FileType, name: &str, data: &[u8]) -> Result<()>;
    /// Like [`Backend::write`], from a shared buffer, which may own a
    /// mapped file: a provider that can send it without copying keeps a
    /// pack being uploaded out of anonymous memory.
    ///
    /// # Errors
    /// As [`Backend::write`].
    fn write_bytes(&self, kind: FileType, name: &str, data: bytes::Bytes) -> Result<()> {
        self.write(kind, name, &data)
    }
    /// Starts an object that is written in pieces and named at the end (a
    /// pack is named by the hash of its bytes). The default spools it into
    /// an unlinked file in `spool_dir` and writes it, mapped, on commit;
    /// local storage streams it to a temporary file in the repository
    /// instead. Either way a pack being written is not held in memory.
    ///
    /// # Errors
    /// Backend failures; a spool file that cannot be made.
    fn sink(&self, spool_dir: &std::path::Path) -> Result<Box<dyn ObjectSink>> {
        SpoolSink::new(spool_dir).map(|s| Box::new(s) as Box<dyn ObjectSink>)
    }
    /// Parallel transfers worth running: uploads (local disks gain nothing
    /// from more than one) and, with at least one per core, the reads of a
    /// restore or a check ([`reader_threads`]).
    fn connections(&self) -> usize {
        2
    }
    /// Removes an object; missing is fine.
    ///
    /// # Errors
    /// Backend failures.
    fn delete(&self, kind: FileType, name: &str) -> Result<()>;
    /// Removes temporary files last modified before `older_than` (stores
    /// with [`Capabilities::temporaries`] keep files being written in
    /// `tmp/`); returns how many.
    ///
    /// # Errors
    /// Backend failures.
    fn remove_temporaries(&self, older_than: std::time::SystemTime) -> Result<u64> {
        let _ = older_than;
        Ok(0)
    }
    /// Prepares an empty repository location (directories for local storage).
    ///
    /// # Errors
    /// Backend failures.
    fn create(&self) -> Result<()> {
        Ok(())
    }
    /// Whether an object exists.
    ///
    /// # Errors
    /// Backend failures other than not-found.
    fn exists(&self, kind: FileType, name: &str) -> Result<bool> {
        match self.read(kind, name) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
    /// The requests this backend has sent so far, when a
    /// [`metered::MeteredBackend`] counts them; decorators pass it through.
    fn requests(&self) -> Option<metered::Requests> {
        None
    }
    /// What it promises beyond the contract.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    /// Stores an object only if none exists under its name: `true` when
    /// this call created it, `false` when one was there (left as it was).
    /// Atomic where [`Capabilities::atomic_create`] says so; otherwise a
    /// check, then a write. A retried request whose first attempt landed
    /// also sees `false`: callers that must tell compare the contents.
    ///
    /// # Errors
    /// As [`Backend::write`].
    fn create_new(&self, kind: FileType, name: &str, data: &[u8]) -> Result<bool> {
        create_by_checking(self, kind, name, data)
    }
}

/// Create-if-absent without help from the store: a check, then a write
/// (not atomic; [`Capabilities::atomic_create`] is false for it).
///
/// # Errors
/// As [`Backend::write`].
pub fn create_by_checking<B: Backend + ?Sized>(
    b: &B,
    kind: FileType,
    name: &str,
    data: &[u8],
) -> Result<bool> {
    if b.exists(kind, name)? {
        return Ok(false);
    }
    b.write(kind, name, data)?;
    Ok(true)
}

/// An object being written in pieces ([`Backend::sink`]). Dropped without
/// [`ObjectSink::commit`], it leaves nothing under any object's name.
pub trait ObjectSink: Send {
    /// Appends bytes.
    ///
    /// # Errors
    /// Backend failures (a full disk).
    fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Makes the object durable under `name` in `backend` (the backend that
    /// made the sink), atomically: before it returns, nothing of it is visible.
    ///
    /// # Errors
    /// As [`Backend::write`].
    fn commit(self: Box<Self>, backend: &dyn Backend, kind: FileType, name: &str) -> Result<()>;
}

/// The default sink. The name of an object written in pieces is known
/// only at the end (a pack's is its hash) and object stores take the name
/// first, so the bytes wait in a file, not in memory, as restic's packer
/// does. Streaming to a temporary object and copying it under its name
/// would cost two more requests per pack (a copy and a delete) on stores
/// that bill per request, and leave orphans a crash cannot clean up
/// without a listing. The file is unlinked from the start, so a killed
/// process leaves nothing behind, and mapped on commit: its pages are
/// page cache the kernel can reclaim, not anonymous memory.
struct SpoolSink {
    file: std::io::BufWriter<std::fs::File>,
    dir: std::path::PathBuf,
}

impl SpoolSink {
    fn new(dir: &std::path::Path) -> Result<Self> {
        let file = tempfile::tempfile_in(dir).map_err(|e| {
            Error::io("cannot create a spool file in", dir, e)
                .hint("packs wait there until uploaded")
                .remedy(crate::Remedy::ChooseCache)
        })?;
        Ok(Self {
            // Coalesces the small writes (prefix, header); frames bypass it.
            file: std::io::BufWriter::with_capacity(64 << 10, file),
            dir: dir.to_path_buf(),
        })
    }
}

impl ObjectSink for SpoolSink {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        use std::io::Write;
        self.file
            .write_all(data)
            .map_err(|e| Error::io("cannot write a spool file in", &self.dir, e))
    }

    fn commit(self: Box<Self>, backend: &dyn Backend, kind: FileType, name: &str) -> Result<()> {
        let file = self
            .file
            .into_inner()
            .map_err(|e| Error::io("cannot write a spool file in", &self.dir, e.into_error()))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("cannot read a spool file in", &self.dir, e))?
            .len();
        if len == 0 {
            // Mapping an empty file fails; there is nothing to map.
            return backend.write(kind, name, &[]);
        }
        // SAFETY: the file is unlinked and private to this sink, so nothing
        // else can change it while it is mapped.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| Error::io("cannot map a spool file in", &self.dir, e))?;
        backend.write_bytes(kind, name, bytes::Bytes::from_owner(map))
    }
}

/// A shared backend is a backend, so a caller can keep a handle on a decorator
/// (e.g. [`fault::FaultyBackend`] in tests) while the repository owns another.
impl<B: Backend + ?Sized> Backend for std::sync::Arc<B> {
    fn location(&self) -> &str {
        (**self).location()
    }
    fn is_local(&self) -> bool {
        (**self).is_local()
    }
    fn list(&self, kind: FileType) -> Result<Vec<ObjectInfo>> {
        (**self).list(kind)
    }
    fn read(&self, kind: FileType, name: &str) -> Result<Vec<u8>> {
        (**self).read(kind, name)
    }
    fn read_range(&self, kind: FileType, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        (**self).read_range(kind, name, offset, length)
    }
    fn read_at_most(&self, kind: FileType, name: &str, max: u64) -> Result<Vec<u8>> {
        (**self).read_at_most(kind, name, max)
    }
    fn write(&self, kind: FileType, name: &str, data: &[u8]) -> Result<()> {
        (**self).write(kind, name, data)
    }
    fn write_bytes(&self, kind: FileType, name: &str, data: bytes::Bytes) -> Result<()> {
        (**self).write_bytes(kind, name, data)
    }
    fn sink(&self, spool_dir: &std::path::Path) -> Result<Box<dyn ObjectSink>> {
        (**self).sink(spool_dir)
    }
    fn connections(&self) -> usize {
        (**self).connections()
    }
    fn delete(&self, kind: FileType, name: &str) -> Result<()> {
        (**self).delete(kind, name)
    }
    fn create(&self) -> Result<()> {
        (**self).create()
    }
    fn remove_temporaries(&self, older_than: std::time::SystemTime) -> Result<u64> {
        (**self).remove_temporaries(older_than)
    }
    fn exists(&self, kind: FileType, name: &str) -> Result<bool> {
        (**self).exists(kind, name)
    }
    fn requests(&self) -> Option<metered::Requests> {
        (**self).requests()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn create_new(&self, kind: FileType, name: &str, data: &[u8]) -> Result<bool> {
        (**self).create_new(kind, name, data)
    }
}

/// The error for an object larger than any salvor writes of its kind.
///
/// # Errors
/// When `len` exceeds `max`.
pub fn check_size(kind: FileType, name: &str, len: u64, max: u64) -> Result<()> {
    if len > max {
        return Err(Error::corrupt(format!(
            "{} {} is larger than any salvor writes ({len} bytes or more, at most {max} expected)",
            kind.noun(),
            kind.path(name)
        )));
    }
    Ok(())
}

impl FileType {
    /// The largest object of this kind salvor reads whole into memory.
    pub fn max_document(self) -> u64 {
        match self {
            Self::Config | Self::Key | Self::Lock => 1 << 20,
            Self::Snapshot => 256 << 20,
            Self::Index => 1 << 30,
            Self::Pack => u64::MAX,
        }
    }
}

/// Opens the backend for a repository location.
///
/// Accepted forms: a path or `file://PATH` (local), `s3://BUCKET[/PREFIX]`
/// (endpoint and credentials from `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`), `sftp://[USER@]HOST[:PORT]/PATH`,
/// and `memory://` (tests).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for an unknown scheme or malformed URL.
pub fn open_url(url: &str) -> Result<Box<dyn Backend>> {
    open_url_with(url, &options::BackendOptions::from_env())
}

/// [`open_url`] with settings of the caller's, not only the environment's.
///
/// # Errors
/// As [`open_url`]; an option set for another kind of store.
pub fn open_url_with(url: &str, opts: &options::BackendOptions) -> Result<Box<dyn Backend>> {
    if url.is_empty() {
        return Err(Error::invalid("no repository given").remedy(crate::Remedy::NameRepository));
    }
    opts.check_applies(url)?;
    let provider = opendal::OpendalBackend::from_url_with(url, opts)?;
    Ok(decorate(provider, opts))
}

/// Threads for work that waits on `backend`'s reads (restore, `check
/// --read-data`): as many as its connections, so that a restore from S3
/// is not capped at one GET per core, and at least one per core, since
/// each also decrypts and decompresses what it read. Each holds one read
/// (a span of a pack, at most a pack) in memory.
pub fn reader_threads(backend: &dyn Backend) -> usize {
    backend.connections().max(rayon::current_num_threads())
}

/// Runs `work` on a pool of [`reader_threads`] threads: the global pool
/// when that is as large, else a pool of its own for this call.
///
/// # Errors
/// Those of `work`; a pool that cannot be started.
pub fn with_reader_pool<T: Send>(
    backend: &dyn Backend,
    work: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let threads = reader_threads(backend);
    if threads <= rayon::current_num_threads() {
        return work();
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("salvor-read-{i}"))
        .build()
        .map_err(|e| Error::new(ErrorKind::Io, "cannot start the reader threads").source(e))?
        .install(work)
}

/// Concurrent requests a remote repository gets at most: the uploads
/// ([`Backend::connections`]) with room beside them for the reads, lists
/// and lock refreshes of the same run.
pub const REMOTE_REQUEST_LIMIT: usize = 8;

/// The decorators every repository's provider gets, innermost first:
/// requests are counted as the store sees them (each retry is one more),
/// then for a remote store transient failures are retried and concurrent
/// requests bounded. A local disk is neither: its errors do not pass by
/// waiting, and its one writer needs no bound.
pub fn decorate<B: Backend + 'static>(
    provider: B,
    opts: &options::BackendOptions,
) -> Box<dyn Backend> {
    let local = provider.is_local();
    let connections = provider.connections();
    let metered = metered::MeteredBackend::new(provider);
    if local {
        return Box::new(metered);
    }
    let mut policy = retry::RetryPolicy::default();
    if let Some(n) = opts.attempts {
        policy.attempts = n;
    }
    let retried = retry::RetryingBackend::new(metered, policy);
    let limit = REMOTE_REQUEST_LIMIT.max(connections * 2);
    Box::new(limit::LimitedBackend::new(retried, limit))
}
