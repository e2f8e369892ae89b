//! `repair snapshots`: rewrite the snapshots that reference lost data, so
//! that every restore and the next backup work again, and say exactly what
//! was lost.
//!
//! A blob is lost when no index names it, or its pack is gone from storage
//! (after `repair packs` salvaged what it could, or a disk failed). A file
//! with a lost blob is left out of the rewritten tree, and a directory
//! whose tree is lost becomes empty; both are named in the report, by
//! snapshot and path. The rewritten snapshot keeps everything else, gains
//! the tag `repaired`, records the one it replaces in `original`, and is
//! written before that one is removed (as `tag` does), after its new trees
//! are indexed. A snapshot whose root tree is lost cannot be rewritten:
//! `forget` drops it (and with it every damaged snapshot, instead of a
//! rewrite).

use std::collections::HashSet;
use std::sync::Arc;

use crate::backend::FileType;
use crate::error::{ErrorKind, Result};
use crate::format::pack::BlobKind;
use crate::format::tree::{self, NodeKind, Tree};
use crate::id::{BlobId, SnapshotId};
use crate::index::Index;
use crate::pack::{Packer, Uploader};
use crate::repo::{BlobReader, Repository};

/// The tag a rewritten snapshot gains.
pub const REPAIRED_TAG: &str = "repaired";

/// What [`repair_snapshots`] is to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct RepairSnapshotsOptions {
    /// Remove damaged snapshots instead of rewriting them.
    pub forget: bool,
    /// Report, change nothing.
    pub dry_run: bool,
}

/// One snapshot that lost data.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DamagedSnapshot {
    /// The snapshot.
    pub id: SnapshotId,
    /// What it lost: `/path/file` for a file left out, `/path/dir/` for a
    /// directory emptied, `/` when the root tree itself is lost.
    pub lost: Vec<String>,
    /// Its rewrite, when it was rewritten.
    pub replaced_by: Option<SnapshotId>,
    /// Whether it was removed.
    pub forgotten: bool,
}

/// What [`repair_snapshots`] found and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairSnapshotsResults {
    /// Snapshots read.
    pub snapshots: u64,
    /// Those that lost data.
    pub damaged: Vec<DamagedSnapshot>,
    /// Nothing was changed.
    pub dry_run: bool,
}

/// Finds the snapshots that reference lost data and rewrites (or, with
/// `forget`, removes) them.
///
/// # Errors
/// Lock conflicts, backend failures, unreadable snapshot documents.
pub fn repair_snapshots(
    repo: &Repository,
    opts: &RepairSnapshotsOptions,
) -> Result<RepairSnapshotsResults> {
    let lock = repo.lock(false, "repair snapshots")?;
    // Only what storage holds: a blob whose first copy is in a lost pack
    // but which another pack holds too is not lost.
    let stored: HashSet<String> = repo
        .backend()
        .list(FileType::Pack)?
        .into_iter()
        .map(|o| o.name)
        .collect();
    let records = repo.index_records()?.records;
    let index = Arc::new(repo.index_of(records.iter().filter(|r| stored.contains(&r.id.to_hex()))));
    drop(records);
    let reader = BlobReader::new(repo, index.clone());
    let mut out = RepairSnapshotsResults {
        dry_run: opts.dry_run,
        ..RepairSnapshotsResults::default()
    };
    let uploader = Uploader::new(repo, repo.backend().connections());
    let trees = Packer::new(repo, &uploader, repo.config().compression_level);
    let mut rewrite = Rewrite {
        repo,
        reader: &reader,
        index: &index,
        trees: &trees,
        store: !opts.dry_run && !opts.forget,
        written: HashSet::new(),
    };
    let mut plans = Vec::new();
    for (id, snap) in repo.snapshots()? {
        out.snapshots += 1;
        repo.cancel().check()?;
        let mut lost = Vec::new();
        let root = match rewrite.tree(&snap.tree, "/", &mut lost) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::Corrupt || e.kind() == ErrorKind::NotFound => {
                lost = vec!["/".into()];
                None
            }
            Err(e) => return Err(e),
        };
        if !lost.is_empty() {
            plans.push((id, snap, root, lost));
        }
    }
    trees.finish()?;
    uploader.finish()?;
    lock.verify()?;
    for (id, mut snap, root, lost) in plans {
        let mut d = DamagedSnapshot {
            id,
            lost,
            replaced_by: None,
            forgotten: false,
        };
        let whole_root_lost = d.lost == ["/"];
        if !opts.dry_run {
            if !opts.forget && !whole_root_lost {
                snap.tree = root.unwrap_or(snap.tree);
                snap.original = Some(snap.original.unwrap_or(id));
                if !snap.tags.iter().any(|t| t == REPAIRED_TAG) {
                    snap.tags.push(REPAIRED_TAG.into());
                }
                d.replaced_by = Some(repo.write_snapshot(&snap)?);
            }
            if opts.forget || d.replaced_by.is_some() {
                match repo.backend().delete(FileType::Snapshot, &id.to_hex()) {
                    // Forgotten meanwhile by another process: as good.
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                d.forgotten = d.replaced_by.is_none();
            }
        }
        out.damaged.push(d);
    }
    Ok(out)
}

/// Rewrites trees without what is lost.
struct Rewrite<'a> {
    repo: &'a Repository,
    reader: &'a BlobReader,
    index: &'a Arc<Index>,
    trees: &'a Arc<Packer>,
    /// Whether rewritten trees are stored (not in a dry run).
    store: bool,
    /// Trees stored by this run.
    written: HashSet<BlobId>,
}

impl Rewrite<'_> {
    /// Whether a blob can be read: the index holds only packs in storage.
    fn present(&self, id: &BlobId) -> bool {
        self.index.contains(id)
    }

    /// The tree `id` without what is lost (`None`: nothing was), adding
    /// the lost paths below `path` to `lost`.
    fn tree(&mut self, id: &BlobId, path: &str, lost: &mut Vec<String>) -> Result<Option<BlobId>> {
        if !self.present(id) {
            return Err(crate::Error::corrupt(format!("tree {id} is lost")));
        }
        let mut t = self.reader.read_tree(id)?;
        let mut changed = false;
        let mut kept = Vec::with_capacity(t.nodes.len());
        for mut n in std::mem::take(&mut t.nodes) {
            let p = format!("{path}{}", n.name_lossy());
            match (n.kind, n.subtree) {
                (NodeKind::Dir, Some(sub)) => {
                    let before = lost.len();
                    match self.tree(&sub, &format!("{p}/"), lost) {
                        Ok(Some(new)) => {
                            n.subtree = Some(new);
                            changed = true;
                        }
                        Ok(None) => {}
                        Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                            lost.truncate(before);
                            lost.push(format!("{p}/"));
                            n.subtree = Some(self.store_tree(&Tree::default()));
                            changed = true;
                        }
                        Err(e) => return Err(e),
                    }
                }
                (NodeKind::File, _) if !self.content_present(&n.content, n.content_levels) => {
                    lost.push(p);
                    changed = true;
                    continue;
                }
                _ => {}
            }
            kept.push(n);
        }
        if !changed {
            return Ok(None);
        }
        t.nodes = kept;
        Ok(Some(self.store_tree(&t)))
    }

    fn content_present(&self, content: &[BlobId], levels: u8) -> bool {
        let mut all = true;
        let walked = crate::content::walk(
            self.reader,
            content,
            levels,
            &mut |id| {
                all &= self.present(id);
                Ok(())
            },
            &mut |id| {
                if self.present(id) {
                    Ok(())
                } else {
                    Err(crate::Error::corrupt("a list blob is lost"))
                }
            },
        );
        all && walked.is_ok()
    }

    fn store_tree(&mut self, t: &Tree) -> BlobId {
        let bytes = tree::encode(t, self.repo.config().version);
        let id = self.repo.key().blob_id(&bytes);
        if self.store && !self.index.reusable(&id) && self.written.insert(id) {
            self.trees.add(BlobKind::Tree, id, &bytes);
        }
        id
    }
}
