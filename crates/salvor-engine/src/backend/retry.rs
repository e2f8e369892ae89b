//! Retries with backoff: a decorator around any backend (restic's
//! `backend/retry`, kopia's `blob/retrying`), so every provider gets the
//! same policy and tests can drive it through [`super::fault`].
//!
//! Only errors the backend marks transient ([`Error::is_transient`]: a
//! timeout, a reset connection, a 5xx or throttling reply) are retried; a
//! missing object, a refused permission or a full disk fails at once, with
//! the object named, since waiting does not change them. Every request
//! salvor sends is safe to repeat: objects are named by content or at
//! random and never overwritten with other bytes, and deleting a missing
//! object succeeds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng;

use super::{Backend, FileType, ObjectInfo, ObjectSink, metered::Requests};
use crate::error::Result;

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The wait before the first retry; it doubles for each next one.
    pub first_delay: Duration,
    /// The longest wait between attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts over about 15 s: long enough to ride out a load
    /// balancer's failover or a throttling burst, short enough that an
    /// outage is reported while someone still watches.
    fn default() -> Self {
        Self {
            attempts: 5,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No waiting between attempts (tests).
    pub fn immediate(attempts: u32) -> Self {
        Self {
            attempts,
            first_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        }
    }

    /// The wait before retry number `retry` (1-based): exponential, with
    /// "equal jitter" (half fixed, half random), so that many hosts that
    /// failed together do not all come back at the same instant.
    fn delay(&self, retry: u32) -> Duration {
        let exp = self
            .first_delay
            .saturating_mul(1 << (retry - 1).min(16))
            .min(self.max_delay);
        let half = exp / 2;
        half + half.mul_f64(rand::thread_rng().r#gen::<f64>())
    }
}

/// Wraps a backend and retries its transient failures.
pub struct RetryingBackend<B> {
    inner: B,
    policy: RetryPolicy,
    /// An outage is one warning, not one per retry: later ones are debug.
    warned: AtomicBool,
}

impl<B: Backend> RetryingBackend<B> {
    /// `inner`, retried by `policy`.
    pub fn new(inner: B, policy: RetryPolicy) -> Self {
        Self {
            inner,
            policy,
            warned: AtomicBool::new(false),
        }
    }

    fn run<T>(&self, what: impl Fn() -> String, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        let mut attempt = 1;
        loop {
            match op() {
                Err(e) if e.is_transient() && attempt < self.policy.attempts => {
                    let wait = self.policy.delay(attempt);
                    if self.warned.swap(true, Ordering::Relaxed) {
                        tracing::debug!(
                            "retrying {} in {:.1}s (attempt {}): {e}",
                            what(),
                            wait.as_secs_f64(),
                            attempt + 1
                        );
                    } else {
                        tracing::warn!(
                            "the repository storage failed, retrying {} in {:.1}s: {e}",
                            what(),
                            wait.as_secs_f64()
                        );
                    }
                    std::thread::sleep(wait);
                    attempt += 1;
                }
                Err(e) if e.is_transient() => {
                    return Err(
                        e.context(format!("gave up after {} attempts", self.policy.attempts))
                    );
                }
                other => return other,
            }
        }
    }
}

fn path(kind: FileType, name: &str) -> impl Fn() -> String + '_ {
    move || kind.path(name)
}

impl<B: Backend> Backend for RetryingBackend<B> {
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }
    fn list(&self, kind: FileType) -> Result<Vec<ObjectInfo>> {
        self.run(
            || format!("the listing of {}", kind.dir()),
            || self.inner.list(kind),
        )
    }
    fn read(&self, kind: FileType, name: &str) -> Result<Vec<u8>> {
        self.run(path(kind, name), || self.inner.read(kind, name))
    }
    fn read_at_most(&self, kind: FileType, name: &str, max: u64) -> Result<Vec<u8>> {
        self.run(path(kind, name), || {
            self.inner.read_at_most(kind, name, max)
        })
    }
    fn read_range(&self, kind: FileType, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.run(path(kind, name), || {
            self.inner.read_range(kind, name, offset, length)
        })
    }
    fn write(&self, kind: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.run(path(kind, name), || self.inner.write(kind, name, data))
    }
    fn write_bytes(&self, kind: FileType, name: &str, data: bytes::Bytes) -> Result<()> {
        // A clone of `Bytes` shares the buffer: a retry sends the same pages.
        self.run(path(kind, name), || {
            self.inner.write_bytes(kind, name, data.clone())
        })
    }
    fn sink(&self, spool_dir: &std::path::Path) -> Result<Box<dyn ObjectSink>> {
        // The sink's commit writes through the repository's backend, this
        // decorator included, so an upload is retried as a whole.
        self.inner.sink(spool_dir)
    }
    fn connections(&self) -> usize {
        self.inner.connections()
    }
    fn delete(&self, kind: FileType, name: &str) -> Result<()> {
        self.run(path(kind, name), || self.inner.delete(kind, name))
    }
    fn remove_temporaries(&self, older_than: std::time::SystemTime) -> Result<u64> {
        self.inner.remove_temporaries(older_than)
    }
    fn create(&self) -> Result<()> {
        self.run(
            || "the repository's directories".into(),
            || self.inner.create(),
        )
    }
    fn exists(&self, kind: FileType, name: &str) -> Result<bool> {
        self.run(path(kind, name), || self.inner.exists(kind, name))
    }
    fn capabilities(&self) -> super::Capabilities {
        self.inner.capabilities()
    }
    fn create_new(&self, kind: FileType, name: &str, data: &[u8]) -> Result<bool> {
        self.run(path(kind, name), || self.inner.create_new(kind, name, data))
    }
    fn requests(&self) -> Option<Requests> {
        self.inner.requests()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        let p = RetryPolicy::default();
        for retry in 1..10 {
            let d = p.delay(retry);
            let full = (p.first_delay * 2u32.pow(retry - 1)).min(p.max_delay);
            assert!(
                d >= full / 2 && d <= full,
                "retry {retry}: {d:?} of {full:?}"
            );
        }
        assert_eq!(RetryPolicy::immediate(3).delay(2), Duration::ZERO);
    }
}
