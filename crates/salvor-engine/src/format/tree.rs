//! Tree blobs: one directory's entries, sorted by name bytes. postcard.
//!
//! Names and link targets are raw bytes, so file names that are not UTF-8
//! round-trip exactly on Linux.

use serde::{Deserialize, Serialize};

use crate::id::BlobId;

/// The type of a directory entry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum NodeKind {
    /// Regular file (or a stream).
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Block device.
    BlockDevice,
    /// Character device.
    CharDevice,
    /// Named pipe.
    Fifo,
    /// Unix socket (recorded, not restored).
    Socket,
}

/// One directory entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Node {
    /// File name bytes.
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// Entry type.
    pub kind: NodeKind,
    /// Permission bits incl. setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch (change detection only).
    pub ctime_ns: i64,
    /// Inode number (change detection and hardlinks).
    pub inode: u64,
    /// Device id of the containing file system.
    pub device: u64,
    /// Hard link count.
    pub links: u64,
    /// Device number for device nodes.
    pub rdev: u64,
    /// Symlink target bytes.
    #[serde(with = "serde_bytes")]
    pub link_target: Vec<u8>,
    /// Content blobs in order (files).
    pub content: Vec<BlobId>,
    /// Subtree (directories).
    pub subtree: Option<BlobId>,
}

impl Node {
    /// A node with only name and kind set.
    pub fn new(name: Vec<u8>, kind: NodeKind) -> Self {
        Self {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            device: 0,
            links: 0,
            rdev: 0,
            link_target: Vec::new(),
            content: Vec::new(),
            subtree: None,
        }
    }

    /// The name for display (lossy for non-UTF-8 names).
    pub fn name_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }
}

/// One directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tree {
    /// Entries sorted by name bytes, names unique.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Finds an entry by name (binary search: nodes are sorted).
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}
