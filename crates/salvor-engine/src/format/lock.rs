//! `locks/<id>`: who is using the repository, sealed.

use serde::{Deserialize, Serialize};

/// A lock document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockFile {
    /// Exclusive locks (maintenance) exclude every other lock.
    pub exclusive: bool,
    /// Host holding it.
    pub hostname: String,
    /// Process id on that host.
    pub pid: u32,
    /// Unix seconds of the last refresh.
    pub refreshed: i64,
    /// The command, for `salvor unlock` listings.
    pub command: String,
}
