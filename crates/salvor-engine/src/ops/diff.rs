//! What changed between two snapshots.

use crate::browse::{self, DiffEntry};
use crate::error::Result;
use crate::repo::{BlobReader, Repository};

/// The changes from snapshot `from` to snapshot `to` (each `latest`, an id
/// or a unique prefix), in path order.
///
/// # Errors
/// Unknown snapshots, lock conflicts, damaged trees.
pub fn diff(repo: &Repository, from: &str, to: &str) -> Result<Vec<DiffEntry>> {
    let (_, a) = repo.find_snapshot(from)?;
    let (_, b) = repo.find_snapshot(to)?;
    let reader = BlobReader::open(repo, "diff")?;
    browse::diff(&reader, &a.tree, &b.tree)
}
