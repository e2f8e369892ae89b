//! Reading snapshots: walking trees, finding a path, dumping a file, and the
//! logic behind `ls`, `diff` and `stats`.

use std::collections::BTreeMap;
use std::io::Write;

use crate::error::{Error, ErrorKind, Result};
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::index::IdSet;
use crate::repo::BlobReader;

/// Joins a parent path and a name (bytes; paths in snapshots are absolute).
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Visits every node below `tree` depth-first in name order. The visitor
/// returns whether to descend into a directory. An explicit stack, not
/// recursion, so a tree of any depth is walked on any thread.
///
/// # Errors
/// Unreadable trees, or the visitor's error.
pub fn walk(
    reader: &BlobReader,
    tree: &BlobId,
    path: &[u8],
    visit: &mut dyn FnMut(&[u8], &Node) -> Result<bool>,
) -> Result<()> {
    let mut stack = vec![(reader.read_tree(tree)?.nodes.into_iter(), path.to_vec())];
    while let Some((nodes, dir)) = stack.last_mut() {
        let Some(node) = nodes.next() else {
            stack.pop();
            continue;
        };
        let p = join(dir, &node.name);
        if visit(&p, &node)?
            && let Some(sub) = &node.subtree
        {
            stack.push((reader.read_tree(sub)?.nodes.into_iter(), p));
        }
    }
    Ok(())
}

/// Finds the node at `path` ("/etc/hosts" or "etc/hosts"); `None` for the root.
///
/// # Errors
/// [`ErrorKind::NotFound`] naming the path.
pub fn find(reader: &BlobReader, root: &BlobId, path: &str) -> Result<Option<Node>> {
    let mut tree = *root;
    let mut found = None;
    for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let t = reader.read_tree(&tree)?;
        let node = t.find(comp.as_bytes()).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("{path} is not in the snapshot"),
            )
            .remedy(crate::Remedy::ListContents)
        })?;
        if let Some(s) = node.subtree {
            tree = s;
        } else if node.kind == NodeKind::Dir {
            return Err(Error::corrupt(format!("directory {path} has no tree")));
        }
        found = Some(node);
    }
    Ok(found)
}

/// Blobs of one batch: their decoded frames and where each blob lies.
type Batch = (
    crate::index::IdMap<u32, Vec<u8>>,
    Vec<crate::index::BlobLocation>,
);

/// Blobs hashed side by side per rayon task when verifying.
const VERIFY_BATCH: usize = 64;

/// Fetches, decrypts, decompresses and verifies the frames of a batch of
/// blobs on the rayon pool.
fn decode_batch(reader: &BlobReader, batch: &[BlobId]) -> Result<Batch> {
    use rayon::prelude::*;
    let index = reader.index();
    let locs: Vec<_> = batch
        .iter()
        .map(|id| index.get(id).ok_or_else(|| index.missing(id, "")))
        .collect::<Result<_>>()?;
    let mut frames: Vec<u32> = locs.iter().map(|l| l.frame).collect();
    frames.sort_unstable();
    frames.dedup();
    let decoded: crate::index::IdMap<u32, Vec<u8>> = frames
        .par_iter()
        .map(|f| Ok((*f, reader.read_frame(*f)?)))
        .collect::<Result<_>>()?;
    let data: Vec<&[u8]> = batch
        .iter()
        .zip(&locs)
        .map(|(id, l)| {
            blob_slice(&decoded, l)
                .ok_or_else(|| Error::corrupt(format!("blob {id} lies outside its frame")))
        })
        .collect::<Result<_>>()?;
    batch
        .par_chunks(VERIFY_BATCH)
        .zip(data.par_chunks(VERIFY_BATCH))
        .try_for_each(|(ids, data)| {
            crate::repo::blobs::verify_blobs(reader.repo().key(), ids, data)
        })?;
    Ok((decoded, locs))
}

fn blob_slice<'a>(
    frames: &'a crate::index::IdMap<u32, Vec<u8>>,
    l: &crate::index::BlobLocation,
) -> Option<&'a [u8]> {
    frames
        .get(&l.frame)?
        .get(l.offset as usize..l.offset as usize + l.length as usize)
}

/// Writes a file's content to `out`, verifying every blob.
///
/// Batches of ~2048 blobs (~8 MiB of frames) are decoded in parallel while
/// the previous batch is written, so decoding and writing overlap.
///
/// # Errors
/// Not a file, corruption, or write errors.
pub fn dump(reader: &BlobReader, node: &Node, out: &mut dyn Write) -> Result<u64> {
    const DUMP_BATCH: usize = 2048;
    if node.kind != NodeKind::File {
        return Err(
            Error::invalid(format!("{} is not a file", node.name_lossy()))
                .remedy(crate::Remedy::RestoreDirectory),
        );
    }
    let write_err = |e| Error::io("cannot write", "standard output", e);
    std::thread::scope(|s| {
        let (tx, rx) = crossbeam_channel::bounded::<Result<Batch>>(1);
        s.spawn(move || {
            // Content lists are read as they are needed: one list per level
            // and one batch in memory, whatever the file's size.
            let mut batch = Vec::with_capacity(DUMP_BATCH);
            let stop = || Error::new(ErrorKind::Interrupted, "the writer stopped");
            let send = |batch: &mut Vec<BlobId>| {
                let r = decode_batch(reader, batch);
                batch.clear();
                let failed = r.is_err();
                // A closed channel means the writer stopped (an error): stop too.
                if tx.send(r).is_err() || failed {
                    return Err(stop());
                }
                Ok(())
            };
            let walked = crate::content::walk(
                reader,
                &node.content,
                node.content_levels,
                &mut |id| {
                    batch.push(*id);
                    if batch.len() == DUMP_BATCH {
                        send(&mut batch)?;
                    }
                    Ok(())
                },
                &mut |_| Ok(()),
            );
            match walked {
                Ok(()) if !batch.is_empty() => {
                    let _ = send(&mut batch);
                }
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        let mut n = 0;
        for batch in rx {
            // Cancelled, or the lock lost: stop (the producer sees the
            // channel close). Its own `Interrupted` means only that.
            reader.check_live()?;
            let (frames, locs) = batch?;
            for l in &locs {
                let data = blob_slice(&frames, l).expect("verified by decode_batch");
                out.write_all(data).map_err(write_err)?;
                n += data.len() as u64;
            }
        }
        out.flush().map_err(write_err)?;
        Ok(n)
    })
}

/// Flattens a snapshot into path → node (for `diff`).
///
/// # Errors
/// Unreadable trees.
pub fn flatten(reader: &BlobReader, root: &BlobId) -> Result<BTreeMap<Vec<u8>, Node>> {
    let mut out = BTreeMap::new();
    walk(reader, root, b"", &mut |p, n| {
        out.insert(p.to_vec(), n.clone());
        Ok(true)
    })?;
    Ok(out)
}

/// One line of `salvor diff`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiffEntry {
    /// `+` added, `-` removed, `M` content changed, `U` metadata only, `T` type changed.
    pub change: char,
    /// The path.
    pub path: String,
}

/// Compares two snapshots' trees.
///
/// # Errors
/// Unreadable trees.
pub fn diff(reader: &BlobReader, a: &BlobId, b: &BlobId) -> Result<Vec<DiffEntry>> {
    let (fa, fb) = (flatten(reader, a)?, flatten(reader, b)?);
    let mut out = Vec::new();
    let path = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    for (p, na) in &fa {
        match fb.get(p) {
            None => out.push(DiffEntry {
                change: '-',
                path: path(p),
            }),
            Some(nb) if nb.kind != na.kind => out.push(DiffEntry {
                change: 'T',
                path: path(p),
            }),
            // Lists are built deterministically from the data ids: equal
            // (levels, ids) means equal content, and unequal means changed.
            Some(nb)
                if nb.content != na.content
                    || nb.content_levels != na.content_levels
                    || nb.link_target != na.link_target =>
            {
                out.push(DiffEntry {
                    change: 'M',
                    path: path(p),
                });
            }
            Some(nb)
                if nb.kind != NodeKind::Dir
                    && (nb.mode, nb.uid, nb.gid, nb.mtime_ns)
                        != (na.mode, na.uid, na.gid, na.mtime_ns) =>
            {
                out.push(DiffEntry {
                    change: 'U',
                    path: path(p),
                });
            }
            _ => {}
        }
    }
    for p in fb.keys().filter(|p| !fa.contains_key(*p)) {
        out.push(DiffEntry {
            change: '+',
            path: path(p),
        });
    }
    out.sort_by(|x, y| x.path.cmp(&y.path));
    Ok(out)
}

/// Deduplicated size of a set of snapshots (their logical size is the sum
/// of their summaries' `total_bytes`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SnapshotSizes {
    /// Distinct blobs referenced.
    pub unique_blobs: u64,
    /// Plaintext bytes of distinct blobs.
    pub unique_bytes: u64,
}

/// A set of blob ids [`reach`] fills: in memory, or spilling to disk.
pub trait BlobSet {
    /// Adds `id`; true when it was not there yet.
    fn insert(&mut self, id: BlobId) -> bool;
}

impl BlobSet for IdSet<BlobId> {
    fn insert(&mut self, id: BlobId) -> bool {
        std::collections::HashSet::insert(self, id)
    }
}

impl BlobSet for crate::spill::SpillSet {
    fn insert(&mut self, id: BlobId) -> bool {
        crate::spill::SpillSet::insert(self, id)
    }
}

/// Distinct blobs referenced by the given snapshot roots.
///
/// # Errors
/// Unreadable trees; blobs missing from the index.
pub fn sizes(reader: &BlobReader, roots: &[BlobId]) -> Result<SnapshotSizes> {
    let mut seen: IdSet<BlobId> = IdSet::default();
    reach(reader, roots, &mut seen)?;
    let index = reader.index();
    Ok(SnapshotSizes {
        unique_blobs: seen.len() as u64,
        unique_bytes: seen
            .iter()
            .map(|id| index.get(id).map_or(0, |l| u64::from(l.length)))
            .sum(),
    })
}

/// Adds every blob reachable from `roots` (trees, list blobs, data blobs)
/// to `seen`. A tree already in `seen` is not walked again, so a caller
/// that keeps `seen` across calls walks only what is new, and each tree
/// shared by many snapshots is read once.
///
/// # Errors
/// Unreadable trees and content lists.
pub fn reach(reader: &BlobReader, roots: &[BlobId], seen: &mut impl BlobSet) -> Result<()> {
    for root in roots {
        if !seen.insert(*root) {
            continue;
        }
        walk(reader, root, b"", &mut |_, n| {
            let mut lists = Vec::new();
            crate::content::walk(
                reader,
                &n.content,
                n.content_levels,
                &mut |id| {
                    seen.insert(*id);
                    Ok(())
                },
                &mut |id| {
                    lists.push(*id);
                    Ok(())
                },
            )?;
            for id in lists {
                seen.insert(id);
            }
            Ok(n.subtree.is_some_and(|t| seen.insert(t)))
        })?;
    }
    Ok(())
}
