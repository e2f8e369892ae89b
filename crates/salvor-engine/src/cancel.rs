//! Cancellation: a flag an operation's caller raises (a signal handler, a
//! daemon stopping a job, a timeout) and the operation polls at every stage.
//!
//! Polling a flag rather than unwinding keeps the write order intact: a
//! cancelled backup stops reading, lets nothing reach the commit point, and
//! returns [`crate::ErrorKind::Interrupted`]; what it uploaded before is adopted
//! by the next backup, like the packs of a killed one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// A shared cancellation flag; clones see the same flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag nobody has raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token on an existing flag (one a signal handler sets).
    pub fn from_flag(flag: Arc<AtomicBool>) -> Self {
        Self(flag)
    }

    /// Asks every operation holding this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err` once cancelled.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Interrupted`].
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            return Err(Error::interrupted("stopped before finishing"));
        }
        Ok(())
    }
}
