//! Request metrics: a decorator that counts what is sent to a backend
//! (kopia's `blob/storagemetrics`). Object stores bill per request, so
//! the counts are reported where users can see them (a backup's `--json`
//! summary) and compared in `bench/`. It sits inside the retry decorator:
//! every attempt is a request the store counts.

use std::sync::Mutex;

use serde::Serialize;

use super::{Backend, FileType, ObjectInfo, ObjectSink};
use crate::error::Result;

/// Requests sent and bytes moved, by kind of request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Requests {
    /// Listings (one per kind listed, however many pages the store sends).
    pub list: u64,
    /// Whole and ranged reads.
    pub read: u64,
    /// Writes of whole objects.
    pub write: u64,
    /// Deletes.
    pub delete: u64,
    /// Existence checks (a HEAD on object stores).
    pub exists: u64,
    /// Requests that failed, whatever their kind.
    pub failed: u64,
    /// Bytes received by reads.
    pub bytes_read: u64,
    /// Bytes sent by writes.
    pub bytes_written: u64,
}

impl Requests {
    /// Requests of every kind.
    pub fn total(&self) -> u64 {
        self.list + self.read + self.write + self.delete + self.exists
    }

    /// What was sent since `earlier` was taken.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            list: self.list - earlier.list,
            read: self.read - earlier.read,
            write: self.write - earlier.write,
            delete: self.delete - earlier.delete,
            exists: self.exists - earlier.exists,
            failed: self.failed - earlier.failed,
            bytes_read: self.bytes_read - earlier.bytes_read,
            bytes_written: self.bytes_written - earlier.bytes_written,
        }
    }
}

/// Wraps a backend and counts its requests.
pub struct MeteredBackend<B> {
    inner: B,
    counts: Mutex<Requests>,
}

impl<B: Backend> MeteredBackend<B> {
    /// `inner`, counted from zero.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            counts: Mutex::default(),
        }
    }

    fn count<T>(
        &self,
        result: Result<T>,
        field: fn(&mut Requests) -> &mut u64,
        bytes: impl FnOnce(&T, &mut Requests),
    ) -> Result<T> {
        let mut c = self.counts.lock().unwrap();
        *field(&mut c) += 1;
        match &result {
            Ok(v) => bytes(v, &mut c),
            Err(_) => c.failed += 1,
        }
        result
    }
}

fn read_bytes<T: AsRef<[u8]>>(data: &T, c: &mut Requests) {
    c.bytes_read += data.as_ref().len() as u64;
}

fn nothing<T>(_: &T, _: &mut Requests) {}

impl<B: Backend> Backend for MeteredBackend<B> {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
    fn list(&self, kind: FileType) -> Result<Vec<ObjectInfo>> {
        self.count(self.inner.list(kind), |c| &mut c.list, nothing)
    }
    fn read(&self, kind: FileType, name: &str) -> Result<Vec<u8>> {
        self.count(self.inner.read(kind, name), |c| &mut c.read, read_bytes)
    }
    fn read_at_most(&self, kind: FileType, name: &str, max: u64) -> Result<Vec<u8>> {
        let r = self.inner.read_at_most(kind, name, max);
        self.count(r, |c| &mut c.read, read_bytes)
    }
    fn read_range(&self, kind: FileType, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let r = self.inner.read_range(kind, name, offset, length);
        self.count(r, |c| &mut c.read, read_bytes)
    }
    fn write(&self, kind: FileType, name: &str, data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        let r = self.inner.write(kind, name, data);
        self.count(r, |c| &mut c.write, |(), c| c.bytes_written += len)
    }
    fn write_bytes(&self, kind: FileType, name: &str, data: bytes::Bytes) -> Result<()> {
        let len = data.len() as u64;
        let r = self.inner.write_bytes(kind, name, data);
        self.count(r, |c| &mut c.write, |(), c| c.bytes_written += len)
    }
    fn sink(&self, spool_dir: &std::path::Path) -> Result<Box<dyn ObjectSink>> {
        self.inner.sink(spool_dir)
    }
    fn connections(&self) -> usize {
        self.inner.connections()
    }
    fn delete(&self, kind: FileType, name: &str) -> Result<()> {
        self.count(self.inner.delete(kind, name), |c| &mut c.delete, nothing)
    }
    fn remove_temporaries(&self, older_than: std::time::SystemTime) -> Result<u64> {
        self.inner.remove_temporaries(older_than)
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn exists(&self, kind: FileType, name: &str) -> Result<bool> {
        self.count(self.inner.exists(kind, name), |c| &mut c.exists, nothing)
    }
    fn capabilities(&self) -> super::Capabilities {
        self.inner.capabilities()
    }
    fn create_new(&self, kind: FileType, name: &str, data: &[u8]) -> Result<bool> {
        let len = data.len() as u64;
        let r = self.inner.create_new(kind, name, data);
        self.count(
            r,
            |c| &mut c.write,
            |created, c| {
                if *created {
                    c.bytes_written += len;
                }
            },
        )
    }
    fn requests(&self) -> Option<Requests> {
        Some(*self.counts.lock().unwrap())
    }
}
