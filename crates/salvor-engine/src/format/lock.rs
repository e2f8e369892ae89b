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
    /// Unix seconds (holder's clock) when the holder first took the lock,
    /// kept across refreshes: a prune deletes what it marked only once
    /// every live lock started after the mark (FORMAT.md section 16).
    /// Absent from locks written before prune existed, which count as
    /// started before any mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<i64>,
    /// The holder's PID namespace (`pid:[4026531836]`), so that a reader on
    /// a host of the same name (containers) judges the pid only when it
    /// shares the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<String>,
}
