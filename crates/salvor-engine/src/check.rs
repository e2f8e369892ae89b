//! Repository verification.
//!
//! Structure (always): every key file is named by its hash, decodes and
//! asks for KDF parameters in range; every index file opens, every indexed pack exists with
//! its recorded size, every snapshot opens and every tree and data blob it
//! references is indexed and every tree decodes. With `read_data`: selected
//! packs are downloaded whole, their hash checked against their name, their
//! header decrypted and compared with the index, and every frame decrypted and
//! every blob re-hashed, so a single flipped bit anywhere is found and named.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::backend::{FileType, ObjectInfo};
use crate::error::{Error, Result};
use crate::format::tree::NodeKind;
use crate::id::{BlobId, PackId};
use crate::index::{IdSet, Index};
use crate::repo::blobs::verify_blobs;
use crate::repo::{BlobReader, Repository};

/// Which packs `--read-data-subset` reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subset {
    /// Every pack.
    All,
    /// Part `n` of `m` (1-based), by pack id: run 1/m … m/m to cover everything.
    Part(u32, u32),
    /// A random share of packs, in percent.
    Percent(f64),
}

impl std::str::FromStr for Subset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!("invalid subset {s:?}"))
                .hint("use a percentage like 10% or a part like 1/5")
        };
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            return if v > 0.0 && v <= 100.0 {
                Ok(Self::Percent(v))
            } else {
                Err(bad())
            };
        }
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let (n, m): (u32, u32) = (
            n.trim().parse().map_err(|_| bad())?,
            m.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || m == 0 || n > m {
            Err(bad())
        } else {
            Ok(Self::Part(n, m))
        }
    }
}

impl Subset {
    fn selects(self, id: &PackId) -> bool {
        match self {
            Self::All => true,
            Self::Part(n, m) => u32::from_le_bytes(id.0[..4].try_into().unwrap()) % m == n - 1,
            Self::Percent(p) => rand::random::<f64>() * 100.0 < p,
        }
    }
}

/// Options for [`check`].
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// Read pack contents, not only structure.
    pub read_data: Option<Subset>,
}

/// Live counters for progress display.
#[derive(Debug, Default)]
pub struct CheckProgress {
    /// Packs to read.
    pub packs_total: AtomicU64,
    /// Packs read.
    pub packs_done: AtomicU64,
    /// Bytes of packs to read.
    pub bytes_total: AtomicU64,
    /// Bytes read.
    pub bytes_done: AtomicU64,
}

/// What kind of damage (or harmless leftover) a check found: typed, so
/// that metrics, drills and the audit log can count and compare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A key file that does not decode or asks for parameters out of range.
    DamagedKey,
    /// An index file that does not open.
    DamagedIndexFile,
    /// A pack the index lists that storage does not hold.
    MissingPack,
    /// A pack whose size in storage differs from the index's.
    PackSizeMismatch,
    /// A pack no index lists (left by an interrupted backup; harmless).
    UnindexedPack,
    /// A pack a prune marked and deleted, still named by the index
    /// because that prune was stopped before it rewrote it (harmless: the
    /// next prune drops the record).
    PrunedPack,
    /// A snapshot that does not open.
    DamagedSnapshot,
    /// A tree that cannot be read or decoded.
    DamagedTree,
    /// A directory whose tree is not recorded.
    DirectoryWithoutTree,
    /// A content list (of a file or stream) that cannot be walked.
    DamagedContentList,
    /// A data blob a snapshot references that no index lists.
    MissingBlob,
    /// A pack whose bytes fail authentication, hashing or parsing.
    DamagedPack,
    /// The index's record of a pack's frames and blobs differs from the
    /// pack's own header, or from another index record of the same pack.
    IndexMismatch,
}

impl FindingKind {
    /// Whether data is lost or at risk (an error, not a warning).
    pub fn loses_data(self) -> bool {
        !matches!(self, Self::UnindexedPack | Self::PrunedPack)
    }
}

/// One thing `check` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// What kind of finding.
    pub kind: FindingKind,
    /// The object it is about: `pack <id>`, `index <name>`,
    /// `snapshot <id>`, `key <name>`.
    pub object: String,
    /// The whole sentence, naming the object and the cause.
    pub message: String,
}

impl Finding {
    fn new(kind: FindingKind, object: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind,
            object: object.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What `check` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckResults {
    /// Problems that lose data.
    pub errors: Vec<Finding>,
    /// Harmless findings (unreferenced packs from interrupted backups).
    pub warnings: Vec<Finding>,
    /// Snapshots checked.
    pub snapshots: u64,
    /// Packs in the index.
    pub packs: u64,
    /// Distinct blobs in the index.
    pub blobs: u64,
    /// Packs whose data was read.
    pub packs_read: u64,
}

/// Runs the check.
///
/// # Errors
/// Only failures that stop the check itself (backend unreachable); damage
/// is reported in [`CheckResults::errors`].
pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &CheckProgress,
) -> Result<CheckResults> {
    // What the repository holds is checked, not a local copy of it.
    let repo = &repo.without_cache();
    let _lock = repo.lock_for_reading("check")?;
    let mut r = CheckResults::default();
    for (name, e) in crate::repo::keys::verify_key_files(repo.backend())? {
        r.errors.push(Finding::new(
            FindingKind::DamagedKey,
            format!("key {name}"),
            e.clone_message(),
        ));
    }
    let mut index = Index::spilling(repo.spill_dir());
    // What each index record says of its pack's frames, as a hash (32
    // bytes a pack, not the records themselves), for `read_data` to compare
    // with the pack's header; a structure-only check hashes nothing.
    let mut tables: HashMap<PackId, [u8; 32]> = HashMap::new();
    let compare_frames = opts.read_data.is_some();
    let mut marked: HashMap<PackId, bool> = HashMap::new();
    let mut last = Vec::new();
    for ObjectInfo { name, .. } in repo.backend().list(FileType::Index)? {
        match repo.read_index_file(&name) {
            Ok(f) => {
                for p in &f.packs {
                    let hash = compare_frames.then(|| frame_table_hash(&p.frames));
                    if let Some(hash) = hash
                        && *tables.entry(p.id).or_insert(hash) != hash
                    {
                        r.errors.push(Finding::new(
                            FindingKind::IndexMismatch,
                            format!("pack {}", p.id),
                            format!(
                                "pack {} is listed with different frames in index file {name}",
                                p.id
                            ),
                        ));
                    }
                    // Marked as a whole only if every record marks it.
                    *marked.entry(p.id).or_insert(true) &= p.delete_mark().is_some();
                }
                // As readers do: packs that may be reused first, so that a
                // blob a prune has copied out of a marked pack is found in
                // its copy.
                let (reusable, rest): (Vec<_>, Vec<_>) =
                    f.packs.into_iter().partition(|p| p.reusable());
                reusable.iter().for_each(|p| index.add_pack(p));
                last.extend(rest);
            }
            Err(e) => r.errors.push(Finding::new(
                FindingKind::DamagedIndexFile,
                format!("index {name}"),
                format!("index file {name}: {}", e.clone_message()),
            )),
        }
    }
    last.iter().for_each(|p| index.add_pack(p));
    index.finish();
    let index = Arc::new(index);
    r.packs = index.packs().len() as u64;
    r.blobs = index.blob_count() as u64;
    let stored: HashMap<String, u64> = repo
        .backend()
        .list(FileType::Pack)?
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    let mut gone: IdSet<PackId> = IdSet::default();
    for p in index.packs() {
        match stored.get(&p.id.to_hex()) {
            None if marked.get(&p.id) == Some(&true) => {
                gone.insert(p.id);
                r.warnings.push(Finding::new(
                    FindingKind::PrunedPack,
                    format!("pack {}", p.id),
                    format!(
                        "pack {} was deleted by a prune that stopped before it updated the \
                         index (harmless: the next prune finishes)",
                        p.id
                    ),
                ));
            }
            None => {
                gone.insert(p.id);
                r.errors.push(Finding::new(
                    FindingKind::MissingPack,
                    format!("pack {}", p.id),
                    format!("pack {} is in the index but missing from storage", p.id),
                ));
            }
            Some(&s) if s != p.size => r.errors.push(Finding::new(
                FindingKind::PackSizeMismatch,
                format!("pack {}", p.id),
                format!("pack {} has {s} bytes, the index says {}", p.id, p.size),
            )),
            _ => {}
        }
    }
    for name in stored.keys() {
        if PackId::from_hex(name).map_or(true, |id| !index.has_pack(&id)) {
            r.warnings.push(Finding::new(
                FindingKind::UnindexedPack,
                format!("pack {name}"),
                format!(
                    "pack {name} is not in any index (left by an interrupted backup; harmless)"
                ),
            ));
        }
    }
    check_snapshots(repo, &index, &gone, &mut r)?;
    if let Some(subset) = opts.read_data {
        read_packs(repo, &index, &tables, &gone, subset, progress, &mut r)?;
    }
    Ok(r)
}

fn check_snapshots(
    repo: &Repository,
    index: &Arc<Index>,
    gone: &IdSet<PackId>,
    r: &mut CheckResults,
) -> Result<()> {
    let reader = BlobReader::new(repo, index.clone());
    // Indexed, in a pack that storage holds.
    let present = |id: &BlobId| {
        index
            .get(id)
            .is_some_and(|l| !gone.contains(&index.pack(index.frame(l.frame).pack).id))
    };
    let mut seen: IdSet<BlobId> = IdSet::default();
    for ObjectInfo { name, .. } in repo.backend().list(FileType::Snapshot)? {
        let snap =
            match crate::id::SnapshotId::from_hex(&name).and_then(|id| repo.read_snapshot(&id)) {
                Ok(s) => s,
                Err(e) => {
                    r.errors.push(Finding::new(
                        FindingKind::DamagedSnapshot,
                        format!("snapshot {name}"),
                        format!("snapshot {name}: {}", e.clone_message()),
                    ));
                    continue;
                }
            };
        r.snapshots += 1;
        let short = &name[..8];
        let finding = |kind, message: String| {
            Finding::new(
                kind,
                format!("snapshot {name}"),
                format!("snapshot {short}: {message}"),
            )
        };
        let mut stack = vec![(snap.tree, String::from("/"))];
        while let Some((tree, path)) = stack.pop() {
            if !seen.insert(tree) {
                continue;
            }
            if !present(&tree) {
                r.errors.push(finding(
                    FindingKind::MissingBlob,
                    format!(
                        "tree blob {tree} of {path} is not in the index or its pack is missing"
                    ),
                ));
                continue;
            }
            let t = match reader.read_tree(&tree) {
                Ok(t) => t,
                Err(e) => {
                    r.errors.push(finding(
                        FindingKind::DamagedTree,
                        format!("tree of {path}: {}", e.clone_message()),
                    ));
                    continue;
                }
            };
            for n in &t.nodes {
                let p = format!("{}{}", path, n.name_lossy());
                match (n.kind, n.subtree) {
                    (NodeKind::Dir, Some(s)) => stack.push((s, format!("{p}/"))),
                    (NodeKind::Dir, None) => r.errors.push(finding(
                        FindingKind::DirectoryWithoutTree,
                        format!("directory {p} has no tree"),
                    )),
                    _ => {}
                }
                let mut missing = Vec::new();
                let mut note = |id: &BlobId| {
                    if !present(id) {
                        missing.push(*id);
                    }
                    Ok(())
                };
                // A list blob that is missing stops the walk below it: its
                // read fails and is reported with the list it belongs to.
                let mut note_list = |id: &BlobId| {
                    if present(id) {
                        Ok(())
                    } else {
                        Err(crate::Error::corrupt(format!(
                            "list blob {id} is not in the index"
                        )))
                    }
                };
                if let Err(e) = crate::content::walk(
                    &reader,
                    &n.content,
                    n.content_levels,
                    &mut note,
                    &mut note_list,
                ) {
                    r.errors.push(finding(
                        FindingKind::DamagedContentList,
                        format!("content list of {p}: {}", e.clone_message()),
                    ));
                }
                for id in missing {
                    r.errors.push(finding(
                        FindingKind::MissingBlob,
                        format!("blob {id} of {p} is not in the index or its pack is missing"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A hash of a pack's frame table (offsets, lengths, compression and
/// every blob's id, kind, offset and length), as the index records it or
/// as the pack's header holds it.
fn frame_table_hash(frames: &[crate::format::pack::FrameEntry]) -> [u8; 32] {
    let bytes = postcard::to_allocvec(frames).expect("frame tables serialise");
    *blake3::hash(&bytes).as_bytes()
}

fn read_packs(
    repo: &Repository,
    index: &Arc<Index>,
    tables: &HashMap<PackId, [u8; 32]>,
    gone: &IdSet<PackId>,
    subset: Subset,
    progress: &CheckProgress,
    r: &mut CheckResults,
) -> Result<()> {
    let packs: Vec<_> = index
        .packs()
        .iter()
        .filter(|p| !gone.contains(&p.id) && subset.selects(&p.id))
        .copied()
        .collect();
    progress
        .packs_total
        .store(packs.len() as u64, Ordering::Relaxed);
    progress
        .bytes_total
        .store(packs.iter().map(|p| p.size).sum(), Ordering::Relaxed);
    let read_all = || -> Result<Vec<Finding>> {
        Ok(packs
            .par_iter()
            .filter_map(|p| {
                let res = read_pack(repo, index, p);
                progress.packs_done.fetch_add(1, Ordering::Relaxed);
                progress.bytes_done.fetch_add(p.size, Ordering::Relaxed);
                let object = format!("pack {}", p.id);
                match res {
                    Ok(frames) if tables.get(&p.id) == Some(&frames) => None,
                    Ok(_) => Some(Finding::new(
                        FindingKind::IndexMismatch,
                        object,
                        format!(
                            "pack {}: its header and the index disagree on its frames or blobs \
                             (repair index rebuilds the index from the headers)",
                            p.id
                        ),
                    )),
                    // Unreadable storage is damage too, but of another kind.
                    Err(e) if e.kind() == crate::ErrorKind::NotFound => Some(Finding::new(
                        FindingKind::MissingPack,
                        object,
                        e.clone_message(),
                    )),
                    Err(e) => Some(Finding::new(
                        FindingKind::DamagedPack,
                        object,
                        e.clone_message(),
                    )),
                }
            })
            .collect())
    };
    let errors = crate::backend::with_reader_pool(repo.backend(), read_all)?;
    r.packs_read = packs.len() as u64;
    r.errors.extend(errors);
    Ok(())
}

/// Reads and verifies one pack whole; returns its header's
/// [`frame_table_hash`].
fn read_pack(repo: &Repository, index: &Index, p: &crate::index::PackInfo) -> Result<[u8; 32]> {
    let data = repo.backend().read(FileType::Pack, &p.id.to_hex())?;
    let (salt, header) = crate::pack::read_header(repo.key(), &p.id, &data)?;
    if salt != p.salt {
        return Err(Error::corrupt(format!(
            "pack {}: salt differs from the index",
            p.id
        )));
    }
    for (nonce, f) in header.frames.iter().enumerate() {
        let loc = crate::index::FrameLocation {
            pack: 0,
            nonce: u32::try_from(nonce).expect("fewer than 2^32 frames in a pack"),
            offset: f.offset,
            length: f.length,
            raw_length: f.raw_length,
            compression: f.compression,
        };
        let range = usize::try_from(f.offset).ok().and_then(|start| {
            let end = start.checked_add(usize::try_from(f.length).ok()?)?;
            Some(start..end)
        });
        let ct = range
            .and_then(|r| data.get(r))
            .ok_or_else(|| Error::corrupt(format!("pack {}: frame {nonce} out of bounds", p.id)))?;
        let plain = crate::pack::decode_frame(repo.key(), &salt, &loc, ct, &p.id)?;
        let data: Vec<&[u8]> = f
            .blobs
            .iter()
            .map(|b| {
                plain
                    .get(b.offset as usize..b.offset as usize + b.length as usize)
                    .ok_or_else(|| {
                        Error::corrupt(format!("pack {}: blob {} out of frame bounds", p.id, b.id))
                    })
            })
            .collect::<Result<_>>()?;
        let ids: Vec<BlobId> = f.blobs.iter().map(|b| b.id).collect();
        verify_blobs(repo.key(), &ids, &data).map_err(|e| e.context(format!("pack {}", p.id)))?;
        for b in &f.blobs {
            if !index.contains(&b.id) {
                return Err(Error::corrupt(format!(
                    "pack {}: blob {} is missing from the index",
                    p.id, b.id
                )));
            }
        }
    }
    Ok(frame_table_hash(&header.frames))
}
