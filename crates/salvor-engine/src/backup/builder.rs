//! Runs the walk and assembles trees bottom-up from its events.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::bounded;

use super::exclude::ExcludeSet;
use super::walker::{Event, WalkCounts, Walker};
use super::{Session, reader};
use crate::chunker::Chunker;
use crate::error::Result;
use crate::format::pack::BlobKind;
use crate::format::snapshot::BackupSummary;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::BlobId;
use crate::repo::BlobReader;

fn store_tree(session: &Session, mut nodes: Vec<Node>) -> BlobId {
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let version = session.repo.config().version;
    session.store(
        BlobKind::Tree,
        &crate::format::tree::encode(&Tree { nodes }, version),
    )
}

/// Backs up `paths`; returns the root tree and the summary so far.
pub(super) fn build(
    session: &Arc<Session>,
    blobs: &Arc<BlobReader>,
    chunker: &Chunker,
    paths: &[PathBuf],
    excludes: &ExcludeSet,
    parent: Option<Tree>,
    threads: usize,
) -> Result<(BlobId, BackupSummary)> {
    let (job_tx, job_rx) = bounded(threads * 8);
    let (ev_tx, ev_rx) = bounded(8192);
    let mut summary = BackupSummary::default();
    let mut stack: Vec<(Option<Node>, Vec<Node>)> = vec![(None, Vec::new())];
    let counts: WalkCounts = std::thread::scope(|s| {
        for _ in 0..threads {
            let rx = job_rx.clone();
            s.spawn(move || reader::run(session, chunker, rx));
        }
        drop(job_rx);
        let walker = s.spawn(move || {
            let mut w = Walker {
                session,
                reader: blobs,
                excludes,
                jobs: job_tx,
                events: ev_tx,
                counts: WalkCounts::default(),
            };
            w.walk_selection(std::path::Path::new("/"), paths, parent.as_ref());
            w.counts
        });
        for ev in ev_rx {
            match ev {
                Event::Enter(node) => stack.push((Some(node), Vec::new())),
                Event::Leave => {
                    let (node, children) = stack.pop().expect("balanced walk");
                    let mut node = node.expect("entered directory");
                    node.subtree = Some(store_tree(session, children));
                    stack.last_mut().expect("root").1.push(node);
                }
                Event::Entry(node) => {
                    if node.kind == NodeKind::File {
                        summary.total_bytes += node.size;
                    }
                    stack.last_mut().expect("root").1.push(node);
                }
                Event::File {
                    mut node,
                    result,
                    is_new,
                } => {
                    let Ok(res) = result.recv() else {
                        // Only a crashed reader drops its reply; the scope re-raises its panic.
                        session.warn(format!(
                            "{}: not read (a reader thread failed)",
                            node.name_lossy()
                        ));
                        continue;
                    };
                    session.progress.files.fetch_add(1, Ordering::Relaxed);
                    if let Some(e) = res.error {
                        // After a storage failure every later file fails too: one error is enough.
                        if !session.aborted() {
                            session.warn(e);
                        }
                        continue;
                    }
                    if let Some(w) = res.warning {
                        session.warn(w);
                    }
                    node.content = res.content.ids;
                    node.content_levels = res.content.levels;
                    node.size = res.size;
                    summary.total_bytes += node.size;
                    if is_new {
                        summary.files_new += 1
                    } else {
                        summary.files_changed += 1
                    }
                    stack.last_mut().expect("root").1.push(node);
                }
            }
        }
        walker.join().expect("walker thread")
    });
    summary.files_unchanged = counts.unchanged;
    summary.dirs = counts.dirs;
    let (_, root) = stack.pop().expect("root");
    Ok((store_tree(session, root), summary))
}
