//! A fault-injecting decorator for tests (kopia's `FaultyStorage`, restic's
//! `errorBackend`): fails writes after a budget or of one kind, fails the
//! next requests transiently or permanently, delays requests, truncates or
//! flips bits on reads.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use super::{Backend, FileType, ObjectInfo, metered::Requests};
use crate::error::{Error, ErrorKind, Result};

/// What [`FaultyBackend::fail_next`] makes requests fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A reset connection: worth retrying.
    Transient,
    /// A refused permission (an S3 403): not worth retrying.
    Permanent,
}

/// The error an injected failure of kind `how` returns.
fn failure(how: Failure, what: String) -> Error {
    let e = Error::new(ErrorKind::Backend, what);
    match how {
        Failure::Transient => e
            .source(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
            .transient(),
        Failure::Permanent => e.source(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
    }
}

/// Wraps a backend and injects failures.
pub struct FaultyBackend<B> {
    inner: B,
    /// Writes allowed before every further write fails; negative = unlimited.
    writes_left: AtomicI64,
    /// When non-zero, flip this bit index (mod length) in every pack read.
    flip_bit: AtomicU64,
    /// Whole and ranged reads, by kind, for tests that count requests.
    reads: std::sync::Mutex<std::collections::HashMap<FileType, u64>>,
    /// Writes of this kind fail (a connection reset) while set.
    failing_kind: std::sync::Mutex<Option<FileType>>,
    /// Writes refused because of `failing_kind`.
    refused: AtomicU64,
    /// Requests of any kind still to fail, and how.
    fail_next: std::sync::Mutex<(u64, Failure)>,
    /// When non-zero, every this-many-th request fails transiently.
    fail_every: AtomicU64,
    /// Requests that reached this decorator, failed or not.
    requests: AtomicU64,
    /// When non-zero, this request and every later one fail (a process
    /// killed at that point: nothing it asks for after happens).
    dead_from: AtomicU64,
    /// Every request waits this long first (milliseconds).
    delay_ms: AtomicU64,
    /// Reads return one byte less than the object holds.
    truncate: AtomicBool,
}

impl<B: Backend> FaultyBackend<B> {
    /// A transparent wrapper.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            writes_left: AtomicI64::new(-1),
            flip_bit: AtomicU64::new(0),
            reads: Default::default(),
            failing_kind: Default::default(),
            refused: AtomicU64::new(0),
            fail_next: std::sync::Mutex::new((0, Failure::Transient)),
            fail_every: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            dead_from: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            truncate: AtomicBool::new(false),
        }
    }
    /// Fails the next `n` requests of any kind with `how`.
    pub fn fail_next(&self, n: u64, how: Failure) {
        *self.fail_next.lock().unwrap() = (n, how);
    }
    /// Lets `n` more requests through and fails every one after them, as
    /// if the process had been killed there; `None` revives it.
    pub fn die_after(&self, n: Option<u64>) {
        let from = n.map_or(0, |n| self.request_count() + n + 1);
        self.dead_from.store(from, Ordering::SeqCst);
    }
    /// Fails every `n`-th request transiently (a flaky link); 0 disables.
    pub fn fail_every(&self, n: u64) {
        self.fail_every.store(n, Ordering::SeqCst);
    }
    /// Requests that reached this decorator so far.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
    /// Makes every request wait `d` first (a slow link).
    pub fn delay_requests(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(ms, Ordering::SeqCst);
    }
    /// Makes every read return one byte short (a dropped connection the
    /// client did not notice), or stops doing so.
    pub fn truncate_reads(&self, on: bool) {
        self.truncate.store(on, Ordering::SeqCst);
    }
    /// Counts a request, waits, and fails it if told to.
    fn request(&self, what: impl FnOnce() -> String) -> Result<()> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let ms = self.delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
        let every = self.fail_every.load(Ordering::SeqCst);
        let dead = self.dead_from.load(Ordering::SeqCst);
        if dead > 0 && n >= dead {
            return Err(failure(Failure::Permanent, what()));
        }
        let how = {
            let mut next = self.fail_next.lock().unwrap();
            if next.0 > 0 {
                next.0 -= 1;
                Some(next.1)
            } else if every > 0 && n.is_multiple_of(every) {
                Some(Failure::Transient)
            } else {
                None
            }
        };
        let Some(how) = how else {
            return Ok(());
        };
        Err(failure(how, what()))
    }
    /// How many writes [`Self::fail_writes_of`] refused.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
    /// Fails every write of `kind` (a lost connection, say), or none.
    pub fn fail_writes_of(&self, kind: Option<FileType>) {
        *self.failing_kind.lock().unwrap() = kind;
    }
    /// How many reads of `kind` reached the wrapped backend.
    pub fn reads(&self, kind: FileType) -> u64 {
        self.reads.lock().unwrap().get(&kind).copied().unwrap_or(0)
    }
    fn count(&self, kind: FileType) {
        *self.reads.lock().unwrap().entry(kind).or_default() += 1;
    }
    /// Lets `n` more writes succeed, then fails every write like a full disk.
    pub fn fail_writes_after(&self, n: i64) {
        self.writes_left.store(n, Ordering::SeqCst);
    }
    /// Flips bit `bit` (modulo the read length) of every pack read; 0 disables.
    pub fn flip_pack_bit(&self, bit: u64) {
        self.flip_bit.store(bit, Ordering::SeqCst);
    }
    fn corrupt(&self, kind: FileType, mut data: Vec<u8>) -> Vec<u8> {
        if self.truncate.load(Ordering::SeqCst) {
            data.pop();
        }
        let bit = self.flip_bit.load(Ordering::SeqCst);
        if kind == FileType::Pack && bit != 0 && !data.is_empty() {
            let i = usize::try_from(bit / 8).unwrap_or(usize::MAX) % data.len();
            data[i] ^= 1 << (bit % 8);
        }
        data
    }
}

impl<B: Backend> Backend for FaultyBackend<B> {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
    fn list(&self, kind: FileType) -> Result<Vec<ObjectInfo>> {
        self.request(|| format!("cannot list {}", kind.dir()))?;
        self.inner.list(kind)
    }
    fn read(&self, kind: FileType, name: &str) -> Result<Vec<u8>> {
        self.request(|| format!("cannot read {}", kind.path(name)))?;
        self.count(kind);
        self.inner.read(kind, name).map(|d| self.corrupt(kind, d))
    }
    fn read_range(&self, kind: FileType, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.request(|| format!("cannot read {}", kind.path(name)))?;
        self.count(kind);
        self.inner
            .read_range(kind, name, offset, length)
            .map(|d| self.corrupt(kind, d))
    }
    fn write(&self, kind: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.request(|| format!("cannot write {}", kind.path(name)))?;
        if *self.failing_kind.lock().unwrap() == Some(kind) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(failure(
                Failure::Transient,
                format!("cannot write {}", kind.path(name)),
            ));
        }
        if self.writes_left.load(Ordering::SeqCst) == 0 {
            return Err(Error::new(
                ErrorKind::Backend,
                format!("cannot write {}", kind.path(name)),
            )
            .source(std::io::Error::from_raw_os_error(libc::ENOSPC)));
        }
        let _ = self
            .writes_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                (v > 0).then(|| v - 1)
            });
        self.inner.write(kind, name, data)
    }
    fn delete(&self, kind: FileType, name: &str) -> Result<()> {
        self.request(|| format!("cannot delete {}", kind.path(name)))?;
        self.inner.delete(kind, name)
    }
    fn connections(&self) -> usize {
        self.inner.connections()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn remove_temporaries(&self, older_than: std::time::SystemTime) -> Result<u64> {
        self.inner.remove_temporaries(older_than)
    }
    fn exists(&self, kind: FileType, name: &str) -> Result<bool> {
        self.request(|| format!("cannot check {}", kind.path(name)))?;
        self.inner.exists(kind, name)
    }
    fn capabilities(&self) -> super::Capabilities {
        self.inner.capabilities()
    }
    fn create_new(&self, kind: FileType, name: &str, data: &[u8]) -> Result<bool> {
        self.request(|| format!("cannot write {}", kind.path(name)))?;
        self.inner.create_new(kind, name, data)
    }
    fn requests(&self) -> Option<Requests> {
        self.inner.requests()
    }
}
