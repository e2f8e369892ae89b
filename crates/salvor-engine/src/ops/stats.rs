//! Repository size, deduplication and compression.

use crate::backend::FileType;
use crate::browse;
use crate::error::Result;
use crate::repo::{BlobReader, Repository};

/// What [`stats`] measures.
#[derive(Debug, Clone, Default)]
pub struct StatsOptions {
    /// Only these snapshots (ids, prefixes or `latest`); empty: all.
    pub snapshots: Vec<String>,
}

/// Sizes of a set of snapshots and of the repository holding them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Snapshots measured.
    pub snapshots: usize,
    /// What they hold, counted as often as they hold it.
    pub logical_bytes: u64,
    /// Distinct data they reference, uncompressed.
    pub unique_bytes: u64,
    /// Distinct blobs they reference.
    pub unique_blobs: u64,
    /// Every pack in storage, referenced by these snapshots or not.
    pub stored_bytes: u64,
    /// `logical_bytes / unique_bytes`.
    pub dedup_ratio: f64,
    /// Every indexed blob's stored length over the packs' bytes.
    pub compression_ratio: f64,
    /// Packs in the index.
    pub packs: usize,
}

fn ratio(a: u64, b: u64) -> f64 {
    // Ratios for a person to read: f64's 53 bits are plenty.
    #[allow(clippy::cast_precision_loss)]
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Measures the snapshots `opts` names.
///
/// # Errors
/// Unknown or damaged snapshots, lock conflicts, backend failures.
pub fn stats(repo: &Repository, opts: &StatsOptions) -> Result<Stats> {
    let chosen = if opts.snapshots.is_empty() {
        repo.snapshots()?
    } else {
        opts.snapshots
            .iter()
            .map(|s| repo.find_snapshot(s))
            .collect::<Result<_>>()?
    };
    let reader = BlobReader::open(repo, "stats")?;
    let index = reader.index().clone();
    let roots: Vec<_> = chosen.iter().map(|(_, s)| s.tree).collect();
    let sizes = browse::sizes(&reader, &roots)?;
    let logical: u64 = chosen.iter().map(|(_, s)| s.summary.total_bytes).sum();
    let stored: u64 = repo
        .backend()
        .list(FileType::Pack)?
        .iter()
        .map(|o| o.size)
        .sum();
    let raw: u64 = index.blobs().map(|(_, l)| u64::from(l.length)).sum();
    Ok(Stats {
        snapshots: chosen.len(),
        logical_bytes: logical,
        unique_bytes: sizes.unique_bytes,
        unique_blobs: sizes.unique_blobs,
        stored_bytes: stored,
        dedup_ratio: ratio(logical, sizes.unique_bytes),
        compression_ratio: ratio(raw, stored),
        packs: index.packs().len(),
    })
}
