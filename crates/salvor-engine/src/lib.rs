//! The salvor repository engine.
//!
//! It knows nothing about databases, schedules or command lines: it stores
//! files and streams in a content-defined-chunked, deduplicated, compressed and
//! authenticated-encrypted repository, and reads them back verified.
//!
//! # Layout
//! - [`backend`]: where bytes live (OpenDAL: local, S3, SFTP) behind a small trait.
//! - [`crypto`], [`chunker`], [`format`]: keys and AEAD, FastCDC, every persisted structure.
//! - [`pack`], [`index`]: frames and packs on the write side; where each blob is.
//! - [`content`]: a file's content list, as a tree of list blobs from format v2.
//! - [`repo`]: an opened repository (keys, documents, snapshots, locks, blob reading).
//! - [`clock`], [`cancel`]: the time and the stop signal every operation is given.
//! - [`backup`], [`restore`], [`check`], [`repair`], [`browse`]: the pipelines;
//!   [`priority`]: how a backup shares the CPU with the service it protects.
//! - [`ops`]: operations as library calls (options in, results out) that the
//!   CLI, jobs and the daemon share.
//!
//! `docs/FORMAT.md` in the project specifies every byte this crate writes.

// No length is ever silently truncated: every narrowing cast is checked or
// carries an allow with the reason it cannot truncate.
#![cfg_attr(not(test), warn(clippy::cast_possible_truncation))]

pub mod backend;
pub mod backup;
pub mod browse;
pub mod cancel;
pub mod check;
pub mod chunker;
pub mod clock;
pub mod content;
pub mod crypto;
pub mod error;
pub mod format;
pub mod id;
pub mod index;
pub mod longpath;
pub mod ops;
pub mod pack;
pub mod priority;
pub mod repair;
pub mod repo;
pub mod restore;
pub mod spill;

pub use error::{Error, ErrorKind, Remedy, Result};
pub use repo::Repository;
