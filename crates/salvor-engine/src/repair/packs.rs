//! `repair packs`: salvage what can still be read of damaged packs.
//!
//! A pack is damaged when its bytes no longer hash to its name (a flipped
//! bit, a truncated upload) or storage has lost it. Every frame of a
//! damaged pack that still authenticates and decompresses, and every blob
//! in it that re-hashes to its id, is copied into a new pack; then the
//! damaged pack is deleted and the index rewritten without it. What could
//! not be salvaged is reported by pack, and `repair snapshots` then names
//! (and rewrites) the snapshots and paths that lost it.
//!
//! Under the exclusive lock, in this order: new packs and their index
//! files; the damaged packs deleted (a deleted one cannot be adopted back
//! by a backup); the index rewritten without them. A crash leaves either
//! salvaged copies beside the damaged pack (harmless: repair again) or an
//! index naming a deleted pack, which the next `repair packs` drops.

use std::collections::HashSet;
use std::sync::Arc;

use rayon::prelude::*;

use crate::backend::FileType;
use crate::error::{ErrorKind, Result};
use crate::format::index::{IndexFile, IndexPack};
use crate::id::{IndexId, PackId};
use crate::index::FrameLocation;
use crate::pack::{Packer, Uploader};
use crate::repo::Repository;

/// Packs per rewritten index file.
const PACKS_PER_FILE: usize = 256;

/// One damaged pack and what became of its blobs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DamagedPack {
    /// The pack.
    pub id: PackId,
    /// Why it is damaged.
    pub reason: String,
    /// Blobs copied into new packs.
    pub salvaged: u64,
    /// Blobs that could not be read and that no other pack holds: lost.
    pub lost: u64,
    /// Blobs that could not be read here but another pack holds.
    pub elsewhere: u64,
}

/// What [`repair_packs`] found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairPacksResults {
    /// Packs read.
    pub packs_read: u64,
    /// The damaged ones.
    pub damaged: Vec<DamagedPack>,
    /// Bytes of new packs written.
    pub bytes_written: u64,
    /// Nothing was changed.
    pub dry_run: bool,
}

/// Reads every indexed pack (or those named in `only`, by id or prefix) and
/// salvages the damaged ones.
///
/// # Errors
/// Lock conflicts; an unreadable index file (run `repair index` first);
/// backend failures other than a pack's own damage.
pub fn repair_packs(
    repo: &Repository,
    only: &[String],
    dry_run: bool,
) -> Result<RepairPacksResults> {
    let lock = repo.lock(true, "repair packs")?;
    let crate::repo::IndexRecords { records, files } = repo.index_records()?;
    let stored: std::collections::HashMap<String, u64> = repo
        .backend()
        .list(FileType::Pack)?
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    let chosen: Vec<&IndexPack> = records
        .iter()
        .filter(|r| only.is_empty() || only.iter().any(|p| r.id.to_hex().starts_with(p.as_str())))
        .collect();
    let mut out = RepairPacksResults {
        dry_run,
        ..RepairPacksResults::default()
    };
    let uploader = Uploader::new(repo, repo.backend().connections());
    let level = repo.config().compression_level;
    let (data, trees) = (
        Packer::new(repo, &uploader, level),
        Packer::new(repo, &uploader, level),
    );
    // A damaged pack as read: its id, why, how many blobs were salvaged,
    // and the ids of those that were not.
    type Found = (PackId, String, u64, Vec<crate::id::BlobId>);
    let found: Vec<Result<Option<Found>>> =
        crate::backend::with_reader_pool(repo.backend(), || {
            Ok(chosen
                .par_iter()
                .map(|r| {
                    repo.cancel().check()?;
                    let present = stored.contains_key(&r.id.to_hex());
                    let bytes = if present {
                        match repo.backend().read(FileType::Pack, &r.id.to_hex()) {
                            Ok(b) => Some(b),
                            Err(e) if e.kind() == ErrorKind::NotFound => None,
                            Err(e) => return Err(e),
                        }
                    } else {
                        None
                    };
                    let Some(bytes) = bytes else {
                        let unread = r
                            .frames
                            .iter()
                            .flat_map(|f| &f.blobs)
                            .map(|b| b.id)
                            .collect();
                        return Ok(Some((r.id, "missing from storage".to_string(), 0, unread)));
                    };
                    if PackId::hash_of(&bytes) == r.id {
                        return Ok(None);
                    }
                    let holds_trees = r
                        .frames
                        .iter()
                        .flat_map(|f| &f.blobs)
                        .any(|b| b.kind == crate::format::pack::BlobKind::Tree);
                    let packer = if holds_trees { &trees } else { &data };
                    let (salvaged, unread) = salvage(repo, r, &bytes, (!dry_run).then_some(packer));
                    Ok(Some((
                        r.id,
                        "its bytes do not match its hash (damaged on storage)".to_string(),
                        salvaged,
                        unread,
                    )))
                })
                .collect())
        })?;
    out.packs_read = chosen.len() as u64;
    let found: Vec<Found> = found
        .into_iter()
        .filter_map(Result::transpose)
        .collect::<Result<_>>()?;
    // A blob this pack lost is not lost if a pack in storage that is not
    // damaged holds it too.
    let bad: HashSet<PackId> = found.iter().map(|f| f.0).collect();
    let healthy = repo.index_of(
        records
            .iter()
            .filter(|r| !bad.contains(&r.id) && stored.contains_key(&r.id.to_hex())),
    );
    for (id, reason, salvaged, unread) in found {
        let elsewhere = unread.iter().filter(|b| healthy.contains(b)).count() as u64;
        out.damaged.push(DamagedPack {
            id,
            reason,
            salvaged,
            lost: unread.len() as u64 - elsewhere,
            elsewhere,
        });
    }
    drop(healthy);
    let stats = data
        .finish()
        .and_then(|a| trees.finish().map(|b| a.stored + b.stored));
    let written = uploader.finish();
    out.bytes_written = stats?;
    let new_files: HashSet<String> = written?.iter().map(IndexId::to_hex).collect();
    if dry_run || out.damaged.is_empty() {
        return Ok(out);
    }
    lock.verify()?;
    let damaged: HashSet<PackId> = out.damaged.iter().map(|d| d.id).collect();
    for id in &damaged {
        match repo.backend().delete(FileType::Pack, &id.to_hex()) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let kept: Vec<IndexPack> = records
        .into_iter()
        .filter(|r| !damaged.contains(&r.id))
        .collect();
    let mut written_now = HashSet::new();
    for chunk in kept.chunks(PACKS_PER_FILE) {
        let id = repo.write_index(&IndexFile {
            packs: chunk.to_vec(),
            ..IndexFile::default()
        })?;
        written_now.insert(id.to_hex());
    }
    for name in files
        .iter()
        .filter(|n| !written_now.contains(*n) && !new_files.contains(*n))
    {
        match repo.delete_doc(FileType::Index, name) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Copies every blob of `r` that still reads from `bytes` (the damaged
/// pack) into `packer` (none: a dry run, only count); returns (salvaged,
/// lost) blob counts.
fn salvage(
    repo: &Repository,
    r: &IndexPack,
    bytes: &[u8],
    packer: Option<&Arc<Packer>>,
) -> (u64, Vec<crate::id::BlobId>) {
    let (mut salvaged, mut lost) = (0, Vec::new());
    for (nonce, f) in r.frames.iter().enumerate() {
        let ct = usize::try_from(f.offset)
            .ok()
            .and_then(|o| Some(o..o.checked_add(f.length as usize)?))
            .and_then(|range| bytes.get(range));
        let loc = FrameLocation {
            pack: 0,
            nonce: u32::try_from(nonce).unwrap_or(u32::MAX),
            offset: f.offset,
            length: f.length,
            raw_length: f.raw_length,
            compression: f.compression,
        };
        let Some(plain) =
            ct.and_then(|ct| crate::pack::decode_frame(repo.key(), &r.salt, &loc, ct, &r.id).ok())
        else {
            lost.extend(f.blobs.iter().map(|b| b.id));
            continue;
        };
        for b in &f.blobs {
            let (start, len) = (b.offset as usize, b.length as usize);
            match start.checked_add(len).and_then(|end| plain.get(start..end)) {
                Some(data) if crate::repo::blobs::verify_blob(repo.key(), &b.id, data).is_ok() => {
                    if let Some(p) = packer {
                        p.add(b.kind, b.id, data);
                    }
                    salvaged += 1;
                }
                _ => lost.push(b.id),
            }
        }
    }
    (salvaged, lost)
}
