//! Operations as library calls: what a command does, with typed options in
//! and typed results out (rustic_core's `commands/`), shared by the CLI,
//! config-driven jobs and the daemon. The front end only parses and
//! prints. Every operation that reads snapshot data holds a shared lock
//! while it does ([`crate::repo::BlobReader::open`]), so that a prune can
//! see it and wait.

pub mod diff;
pub mod forget;
pub mod prune;
pub mod snapshots;
pub mod stats;
pub mod tag;
