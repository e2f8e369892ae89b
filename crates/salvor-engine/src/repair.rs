//! `repair index`: rebuild the index from the packs that are really in storage.
//!
//! After a pack is lost (deleted, or gone with a failed disk), the index still
//! names its blobs, so new backups would deduplicate against data that no
//! longer exists and never store it again. Rebuilding the index from the pack
//! headers drops the lost blobs; the next backup then stores them anew.
//! Only each pack's clear prefix and encrypted header are read (three ranged
//! reads), so this costs little even on object storage.
//!
//! A pack whose header cannot be read (truncated, a flipped bit) keeps the
//! entries an old index file holds for it: its frames may well be intact,
//! and repair never removes what is still readable.
//!
//! Order: new index files are written first and old ones deleted after, so a
//! crash in between leaves duplicate entries (harmless), never a gap. The
//! exclusive lock keeps backups out while the index is replaced.

mod packs;
mod snapshots;

pub use packs::{DamagedPack, RepairPacksResults, repair_packs};
pub use snapshots::{
    DamagedSnapshot, REPAIRED_TAG, RepairSnapshotsOptions, RepairSnapshotsResults, repair_snapshots,
};

use rayon::prelude::*;

use crate::backend::FileType;
use crate::crypto::{NonceDomain, TAG_LEN};
use crate::error::{Error, Result};
use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::PackHeader;
use crate::format::{self, ObjectKind, PREFIX_LEN};
use crate::id::PackId;
use crate::index::IdMap;
use crate::repo::Repository;

/// Packs per rebuilt index file.
const PACKS_PER_INDEX: usize = 256;

/// What `repair index` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairStats {
    /// Packs whose header was read and indexed.
    pub packs_indexed: u64,
    /// Blobs in those packs.
    pub blobs: u64,
    /// Packs left out, with the reason (unreadable header, bad name) and
    /// no entry in any readable old index file to keep.
    pub packs_skipped: Vec<String>,
    /// Packs whose header cannot be read but whose entries an old index
    /// file still holds: kept, since their frames may well be readable
    /// (`check --read-data` tells which are).
    pub packs_kept_from_index: Vec<String>,
    /// Index files written.
    pub index_files_written: u64,
    /// Old index files removed.
    pub index_files_removed: u64,
}

/// One pack's index entry, read from its header (three ranged reads).
///
/// # Errors
/// Backend failures; a damaged prefix, trailer or header.
pub(crate) fn read_pack_entry(repo: &Repository, name: &str, size: u64) -> Result<IndexPack> {
    let id = PackId::from_hex(name)?;
    let what = || format!("pack {id}");
    if size < (PREFIX_LEN + 4 + TAG_LEN) as u64 {
        return Err(Error::corrupt(format!(
            "pack {id} is truncated ({size} bytes)"
        )));
    }
    let backend = repo.backend();
    let prefix = backend.read_range(FileType::Pack, name, 0, PREFIX_LEN as u64)?;
    let salt = format::parse_prefix(&prefix, ObjectKind::Pack, &what)?;
    let tail = backend.read_range(FileType::Pack, name, size - 4, 4)?;
    let header_len = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")));
    if header_len + 4 + PREFIX_LEN as u64 > size {
        return Err(Error::corrupt(format!(
            "pack {id} has an invalid header length"
        )));
    }
    let ct = backend.read_range(FileType::Pack, name, size - 4 - header_len, header_len)?;
    let plain =
        repo.key()
            .object_cipher(&salt)
            .open(0, NonceDomain::PackHeader, &ct, &prefix, &what)?;
    let header: PackHeader = format::from_bytes(&plain, &what)?;
    let indexed = repo.clock().now().as_second();
    Ok(IndexPack::new(id, size, salt, header.frames, indexed))
}

/// Rebuilds the index from the packs in storage.
///
/// # Errors
/// Lock conflicts and backend failures; unreadable packs are skipped and listed.
pub fn repair_index(repo: &Repository) -> Result<RepairStats> {
    let _lock = repo.lock(true, "repair index")?;
    let old: Vec<String> = repo
        .backend()
        .list(FileType::Index)?
        .into_iter()
        .map(|o| o.name)
        .collect();
    // What the old index says, from every file that still opens: a pack
    // whose header is damaged keeps these entries rather than being dropped.
    let mut records = Vec::new();
    for name in &old {
        if let Ok(f) = repo.read_index_file(name) {
            records.extend(f.packs);
        }
    }
    let mut previous: IdMap<PackId, IndexPack> = crate::format::index::merge_records(records)
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let packs = repo.backend().list(FileType::Pack)?;
    let read: Vec<(String, Result<IndexPack>)> = packs
        .par_iter()
        .map(|o| (o.name.clone(), read_pack_entry(repo, &o.name, o.size)))
        .collect();
    let mut stats = RepairStats::default();
    let mut entries = Vec::new();
    for (name, r) in read {
        match r {
            Ok(mut p) => {
                // The old record knows when the pack was written, and may
                // carry fields (marks) this build cannot rebuild from a pack.
                if let Some(old) = previous.remove(&p.id) {
                    if old.written != 0 {
                        p.written = old.written;
                    }
                    p.extensions = old.extensions;
                }
                stats.packs_indexed += 1;
                stats.blobs += p.frames.iter().map(|f| f.blobs.len() as u64).sum::<u64>();
                entries.push(p);
            }
            Err(e) => match PackId::from_hex(&name)
                .ok()
                .and_then(|id| previous.remove(&id))
            {
                Some(p) => {
                    stats.blobs += p.frames.iter().map(|f| f.blobs.len() as u64).sum::<u64>();
                    stats.packs_kept_from_index.push(format!(
                        "{name}: {} (kept its entries from the old index)",
                        e.without_hint()
                    ));
                    entries.push(p);
                }
                None => stats.packs_skipped.push(format!("{name}: {e}")),
            },
        }
    }
    entries.sort_by_key(|p| p.id);
    let mut written = std::collections::HashSet::new();
    for chunk in entries.chunks(PACKS_PER_INDEX) {
        let id = repo.write_index(&IndexFile {
            packs: chunk.to_vec(),
            ..Default::default()
        })?;
        written.insert(id.to_hex());
        stats.index_files_written += 1;
    }
    // Same content, same name: never delete a file just written.
    for name in old.iter().filter(|n| !written.contains(*n)) {
        repo.delete_doc(FileType::Index, name)?;
        stats.index_files_removed += 1;
    }
    Ok(stats)
}
