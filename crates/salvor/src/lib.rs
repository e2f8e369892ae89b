//! salvor: backup and disaster recovery for files, databases and APIs.
//!
//! The repository engine lives in `salvor-engine`; this crate holds what sits
//! on top of it: the command line today, then sources, jobs and the daemon.

pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzz;
pub mod input;
pub mod source;
