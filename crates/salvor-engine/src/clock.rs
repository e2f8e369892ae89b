//! Wall-clock time, passed in.
//!
//! Everything the engine records or compares against the wall clock (snapshot
//! times, lock refreshes and staleness, pack times, temporary-file cutoffs)
//! asks the repository's [`Clock`], never the system directly, so tests of
//! stale locks, lost locks, grace periods and retention move time forward
//! instead of sleeping. Durations measured for reports (how long a backup
//! took) use [`std::time::Instant`], which no test needs to move.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use jiff::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Timestamp;

    /// Now as a [`std::time::SystemTime`], for comparison with file times.
    fn system_time(&self) -> std::time::SystemTime {
        std::time::SystemTime::from(self.now())
    }
}

/// The system's clock: what every real run uses.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The clock a repository uses unless given another.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that moves only when told: for tests.
#[derive(Debug)]
pub struct ManualClock {
    nanos: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Arc<Self> {
        Arc::new(Self {
            nanos: AtomicI64::new(nanos_of(start)),
        })
    }

    /// A clock standing at the system's current time.
    pub fn starting_now() -> Arc<Self> {
        Self::new(Timestamp::now())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to `to` (backwards too: clocks do jump).
    pub fn set(&self, to: Timestamp) {
        self.nanos.store(nanos_of(to), Ordering::SeqCst);
    }
}

fn nanos_of(t: Timestamp) -> i64 {
    // Every timestamp until the year 2262 fits; later ones saturate.
    i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_nanosecond(i128::from(self.nanos.load(Ordering::SeqCst)))
            .unwrap_or(Timestamp::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = Timestamp::from_second(1_700_000_000).unwrap();
        let c = ManualClock::new(start);
        assert_eq!(c.now(), start);
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now().as_second(), 1_700_000_090);
        c.set(start);
        assert_eq!(c.now(), start);
        assert_eq!(
            c.system_time(),
            std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
    }
}
