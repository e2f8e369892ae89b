//! Changing a snapshot's tags (to protect it with `keep`, or to file it).
//!
//! A snapshot document is named by its hash, so new tags make a new
//! snapshot: it is written first, recording the one it replaces in
//! `original` (kept from an earlier rewrite or copy), and only then is
//! the old one removed. A run killed between the two leaves both, which
//! `forget` treats as two snapshots; nothing is ever lost.

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::ops::snapshots::{SnapshotFilter, select};
use crate::repo::Repository;

/// What to change. `set` replaces every tag; `add` and `remove` apply to
/// what is there.
#[derive(Debug, Clone, Default)]
pub struct TagOptions {
    /// The snapshots, by id or unique prefix.
    pub ids: Vec<String>,
    /// Replace the tags with these.
    pub set: Option<Vec<String>>,
    /// Add these.
    pub add: Vec<String>,
    /// Remove these.
    pub remove: Vec<String>,
}

/// One snapshot that changed: its old id and its new one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Retagged {
    /// The snapshot that was replaced (and removed).
    pub old: SnapshotId,
    /// The snapshot with the new tags.
    pub new: SnapshotId,
    /// Its tags now.
    pub tags: Vec<String>,
}

/// Changes the tags of the snapshots `opts` names; those whose tags stay
/// as they were are left alone (not rewritten).
///
/// # Errors
/// No snapshots or no change named, an empty tag, an unknown id, lock
/// conflicts, backend failures.
pub fn tag(repo: &Repository, opts: &TagOptions) -> Result<Vec<Retagged>> {
    if opts.ids.is_empty() {
        return Err(Error::invalid("no snapshot named").hint("name the snapshots to tag by id"));
    }
    if opts.set.is_none() && opts.add.is_empty() && opts.remove.is_empty() {
        return Err(Error::invalid("no tag change given").hint("set, add or remove tags"));
    }
    let all_tags = opts
        .set
        .iter()
        .flatten()
        .chain(&opts.add)
        .chain(&opts.remove);
    if all_tags
        .clone()
        .any(|t| t.trim().is_empty() || t.contains(','))
    {
        return Err(Error::invalid("a tag is empty or holds a comma")
            .hint("give each tag on its own, without commas"));
    }
    let _lock = repo.lock(false, "tag")?;
    let mut out = Vec::new();
    for spec in &opts.ids {
        let (old, mut snap) = select(repo, spec, &SnapshotFilter::default())?;
        let mut tags = opts.set.clone().unwrap_or_else(|| snap.tags.clone());
        for t in &opts.add {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        tags.retain(|t| !opts.remove.contains(t));
        if tags == snap.tags {
            continue;
        }
        snap.tags = tags;
        snap.original.get_or_insert(old);
        let new = repo.write_snapshot(&snap)?;
        repo.backend().delete(FileType::Snapshot, &old.to_hex())?;
        out.push(Retagged {
            old,
            new,
            tags: snap.tags,
        });
    }
    Ok(out)
}
