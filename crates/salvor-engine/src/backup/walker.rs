//! Walks the selected paths depth-first, deciding per file whether it must be
//! read (new or changed) or can reuse the parent snapshot's content.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::Session;
use super::exclude::ExcludeSet;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::longpath;
use crate::repo::BlobReader;

/// A file that a reader thread must read.
pub(super) struct Job {
    pub path: PathBuf,
    pub node: Node,
    pub reply: Sender<FileResult>,
}

/// What a reader thread found.
pub(super) struct FileResult {
    pub content: crate::content::Content,
    pub size: u64,
    pub error: Option<String>,
    pub warning: Option<String>,
}

/// One step of the walk, consumed in order by the tree builder.
pub(super) enum Event {
    Enter(Node),
    Leave,
    Entry(Node),
    File {
        node: Node,
        result: Receiver<FileResult>,
        is_new: bool,
    },
}

/// Builds a tree node from `lstat` metadata.
pub fn node_from_metadata(name: &[u8], m: &std::fs::Metadata) -> Node {
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    };
    let mut n = Node::new(name.to_vec(), kind);
    n.mode = m.mode() & 0o7777;
    n.uid = m.uid();
    n.gid = m.gid();
    n.size = if kind == NodeKind::File { m.size() } else { 0 };
    n.mtime_ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
    n.ctime_ns = m.ctime() * 1_000_000_000 + m.ctime_nsec();
    n.inode = m.ino();
    n.device = m.dev();
    n.links = m.nlink();
    n.rdev = m.rdev();
    n
}

/// A directory being walked: its remaining entries, and the parent
/// snapshot's tree of it for change detection.
struct OpenDir {
    path: PathBuf,
    names: std::vec::IntoIter<OsString>,
    sub: Option<Tree>,
}

/// Counts kept by the walker.
#[derive(Default)]
pub(super) struct WalkCounts {
    pub unchanged: u64,
    pub dirs: u64,
    pub unchanged_bytes: u64,
}

pub(super) struct Walker<'a> {
    pub session: &'a Session,
    pub reader: &'a BlobReader,
    pub excludes: &'a ExcludeSet,
    pub jobs: Sender<Job>,
    pub events: Sender<Event>,
    pub counts: WalkCounts,
}

impl Walker<'_> {
    fn emit(&self, ev: Event) {
        // The builder only stops early on a fatal error, which it reports itself.
        let _ = self.events.send(ev);
    }

    fn subtree(&self, node: Option<&Node>) -> Option<Tree> {
        let id = node.filter(|n| n.kind == NodeKind::Dir)?.subtree?;
        match self.reader.read_tree(&id) {
            Ok(t) => Some(t),
            Err(e) => {
                self.session.warn(format!(
                    "parent tree {id} unreadable, reading everything again: {e}"
                ));
                None
            }
        }
    }

    /// Walks the selected absolute paths below `base`, emitting intermediate
    /// directories with their real metadata.
    pub fn walk_selection(&mut self, base: &Path, selected: &[PathBuf], parent: Option<&Tree>) {
        let mut groups: BTreeMap<OsString, (bool, Vec<PathBuf>)> = BTreeMap::new();
        for p in selected {
            let Ok(rel) = p.strip_prefix(base) else {
                continue;
            };
            let mut comps = rel.components();
            let Some(first) = comps.next() else { continue };
            let g = groups.entry(first.as_os_str().to_owned()).or_default();
            if comps.next().is_none() {
                g.0 = true;
            }
            g.1.push(p.clone());
        }
        for (name, (whole, group)) in groups {
            let path = base.join(&name);
            let pnode = parent.and_then(|t| t.find(name.as_bytes()));
            if whole {
                self.walk_entry(&path, &name, pnode);
                continue;
            }
            // An intermediate component is recorded as the directory it leads to,
            // even when it is a symlink (`/lib` on merged-/usr systems).
            match std::fs::metadata(&path) {
                Ok(m) => {
                    self.emit(Event::Enter(node_from_metadata(name.as_bytes(), &m)));
                    let sub = self.subtree(pnode);
                    self.walk_selection(&path, &group, sub.as_ref());
                    self.emit(Event::Leave);
                }
                Err(e) => self.session.warn(format!("{}: {e}", path.display())),
            }
        }
    }

    /// Visits one entry; a directory is walked whole before this returns,
    /// with an explicit stack rather than recursion, so no depth a file
    /// system allows can overflow the thread's stack.
    fn walk_entry(&mut self, path: &Path, name: &OsStr, parent: Option<&Node>) {
        let Some(dir) = self.visit(path, name, parent) else {
            return;
        };
        let mut stack = vec![dir];
        while let Some(top) = stack.last_mut() {
            let next = if self.session.aborted() {
                None
            } else {
                top.names.next()
            };
            let Some(n) = next else {
                stack.pop();
                self.emit(Event::Leave);
                continue;
            };
            let path = top.path.join(&n);
            let pn = top.sub.as_ref().and_then(|t| t.find(n.as_bytes()));
            let opened = self.visit(&path, &n, pn);
            if let Some(dir) = opened {
                stack.push(dir);
            }
        }
    }

    /// Emits one entry's event; for a directory, emits `Enter` and returns
    /// what walking its contents needs (the caller emits `Leave`).
    fn visit(&mut self, path: &Path, name: &OsStr, parent: Option<&Node>) -> Option<OpenDir> {
        if self.excludes.is_excluded(path, name) {
            return None;
        }
        let meta = match longpath::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.session.warn(format!("{}: {e}", path.display()));
                return None;
            }
        };
        let mut node = node_from_metadata(name.as_bytes(), &meta);
        match node.kind {
            NodeKind::Dir => return Some(self.open_dir(path, node, parent)),
            NodeKind::File => self.walk_file(path, node, parent),
            NodeKind::Symlink => match longpath::read_link(path) {
                Ok(t) => {
                    node.link_target = t.as_os_str().as_bytes().to_vec();
                    self.emit(Event::Entry(node));
                }
                Err(e) => self.session.warn(format!("{}: {e}", path.display())),
            },
            _ => self.emit(Event::Entry(node)),
        }
        None
    }

    fn open_dir(&mut self, path: &Path, node: Node, parent: Option<&Node>) -> OpenDir {
        self.counts.dirs += 1;
        self.emit(Event::Enter(node));
        let sub = self.subtree(parent);
        let mut names: Vec<OsString> = Vec::new();
        match longpath::read_dir_names(path) {
            Ok(entries) => {
                for e in entries {
                    match e {
                        Ok(n) => names.push(n),
                        Err(e) => self.session.warn(format!("{}: {e}", path.display())),
                    }
                }
            }
            Err(e) => self.session.warn(format!("{}: {e}", path.display())),
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        OpenDir {
            path: path.to_path_buf(),
            names: names.into_iter(),
            sub,
        }
    }

    /// Whether every blob of a parent's file is still indexed (after a
    /// `repair index` some may not be: then the file is read again). A long
    /// list's list blobs are read for it: one 32 KiB read per 1024 chunks.
    fn all_indexed(&self, p: &Node) -> bool {
        let index = &self.session.index;
        let indexed = |id: &crate::id::BlobId| {
            if index.reusable(id) {
                Ok(())
            } else {
                Err(crate::Error::corrupt("not indexed"))
            }
        };
        // The closure only borrows the index, so it is Copy: one for data
        // blobs, one for list blobs.
        let (mut data, mut lists) = (indexed, indexed);
        crate::content::walk(
            self.reader,
            &p.content,
            p.content_levels,
            &mut data,
            &mut lists,
        )
        .is_ok()
    }

    fn walk_file(&mut self, path: &Path, mut node: Node, parent: Option<&Node>) {
        if let Some(p) = parent.filter(|p| {
            p.kind == NodeKind::File
                && p.size == node.size
                && p.mtime_ns == node.mtime_ns
                && p.ctime_ns == node.ctime_ns
                && p.inode == node.inode
                && self.all_indexed(p)
        }) {
            node.content.clone_from(&p.content);
            node.content_levels = p.content_levels;
            node.extensions.clone_from(&p.extensions);
            self.counts.unchanged += 1;
            self.counts.unchanged_bytes += node.size;
            self.session.progress.files.fetch_add(1, Ordering::Relaxed);
            self.session
                .progress
                .bytes
                .fetch_add(node.size, Ordering::Relaxed);
            return self.emit(Event::Entry(node));
        }
        let (tx, rx) = bounded(1);
        let is_new = parent.is_none();
        if self
            .jobs
            .send(Job {
                path: path.to_path_buf(),
                node: node.clone(),
                reply: tx,
            })
            .is_ok()
        {
            self.emit(Event::File {
                node,
                result: rx,
                is_new,
            });
        }
    }
}
