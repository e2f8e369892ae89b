//! A bound on concurrent requests: a decorator around any backend
//! (restic's `backend/sema`). The engine runs uploads, tree reads and
//! restore reads on several pools at once; without a bound their sum is
//! what reaches a store, which throttles (S3 answers 503 SlowDown) or
//! refuses (an SFTP server's session limit) past a point. A request waits
//! for a free slot; none holds a slot while it waits for another, so the
//! bound cannot deadlock.

use std::sync::{Condvar, Mutex};

use super::{Backend, FileType, ObjectInfo, ObjectSink, metered::Requests};
use crate::error::Result;

/// Wraps a backend and lets at most `limit` requests run at once.
pub struct LimitedBackend<B> {
    inner: B,
    limit: usize,
    /// Requests running now, and the most that ever ran at once.
    running: Mutex<(usize, usize)>,
    freed: Condvar,
}

/// A slot, given back on drop (also when the request panics).
struct Slot<'a, B>(&'a LimitedBackend<B>);

impl<B> Drop for Slot<'_, B> {
    fn drop(&mut self) {
        self.0.running.lock().unwrap().0 -= 1;
        self.0.freed.notify_one();
    }
}

impl<B: Backend> LimitedBackend<B> {
    /// `inner`, with at most `limit` (at least one) requests at once.
    pub fn new(inner: B, limit: usize) -> Self {
        Self {
            inner,
            limit: limit.max(1),
            running: Mutex::new((0, 0)),
            freed: Condvar::new(),
        }
    }

    /// The most requests that ran at once since creation or [`Self::reset_peak`].
    pub fn peak(&self) -> usize {
        self.running.lock().unwrap().1
    }

    /// Starts counting [`Self::peak`] again from what runs now.
    pub fn reset_peak(&self) {
        let mut running = self.running.lock().unwrap();
        running.1 = running.0;
    }

    fn slot(&self) -> Slot<'_, B> {
        let mut running = self.running.lock().unwrap();
        while running.0 >= self.limit {
            running = self.freed.wait(running).unwrap();
        }
        running.0 += 1;
        running.1 = running.1.max(running.0);
        Slot(self)
    }
}

impl<B: Backend> Backend for LimitedBackend<B> {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
    fn list(&self, kind: FileType) -> Result<Vec<ObjectInfo>> {
        let _slot = self.slot();
        self.inner.list(kind)
    }
    fn read(&self, kind: FileType, name: &str) -> Result<Vec<u8>> {
        let _slot = self.slot();
        self.inner.read(kind, name)
    }
    fn read_at_most(&self, kind: FileType, name: &str, max: u64) -> Result<Vec<u8>> {
        let _slot = self.slot();
        self.inner.read_at_most(kind, name, max)
    }
    fn read_range(&self, kind: FileType, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let _slot = self.slot();
        self.inner.read_range(kind, name, offset, length)
    }
    fn write(&self, kind: FileType, name: &str, data: &[u8]) -> Result<()> {
        let _slot = self.slot();
        self.inner.write(kind, name, data)
    }
    fn write_bytes(&self, kind: FileType, name: &str, data: bytes::Bytes) -> Result<()> {
        let _slot = self.slot();
        self.inner.write_bytes(kind, name, data)
    }
    fn sink(&self, spool_dir: &std::path::Path) -> Result<Box<dyn ObjectSink>> {
        self.inner.sink(spool_dir)
    }
    fn connections(&self) -> usize {
        self.inner.connections().min(self.limit)
    }
    fn delete(&self, kind: FileType, name: &str) -> Result<()> {
        let _slot = self.slot();
        self.inner.delete(kind, name)
    }
    fn remove_temporaries(&self, older_than: std::time::SystemTime) -> Result<u64> {
        self.inner.remove_temporaries(older_than)
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn exists(&self, kind: FileType, name: &str) -> Result<bool> {
        let _slot = self.slot();
        self.inner.exists(kind, name)
    }
    fn capabilities(&self) -> super::Capabilities {
        self.inner.capabilities()
    }
    fn create_new(&self, kind: FileType, name: &str, data: &[u8]) -> Result<bool> {
        let _slot = self.slot();
        self.inner.create_new(kind, name, data)
    }
    fn requests(&self) -> Option<Requests> {
        self.inner.requests()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::backend::fault::FaultyBackend;

    #[test]
    fn no_more_than_the_limit_run_at_once() {
        let inner = FaultyBackend::new(
            crate::backend::opendal::OpendalBackend::from_url("memory://").unwrap(),
        );
        inner.delay_requests(Duration::from_millis(20));
        let b = Arc::new(LimitedBackend::new(inner, 3));
        std::thread::scope(|s| {
            for i in 0..12 {
                let b = b.clone();
                s.spawn(move || {
                    b.write(FileType::Snapshot, &format!("{i:064}"), b"x")
                        .unwrap()
                });
            }
        });
        assert_eq!(b.list(FileType::Snapshot).unwrap().len(), 12);
        assert_eq!(b.peak(), 3, "twelve writers, three slots");
    }
}
