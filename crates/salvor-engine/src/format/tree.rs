//! Tree blobs: one directory's entries, sorted by name bytes. postcard.
//!
//! Names and link targets are raw bytes, so file names that are not UTF-8
//! round-trip exactly on Linux. Format v2 nodes end with the levels of their
//! content list ([`crate::content`]) and tagged extensions, which readers
//! that do not know a tag keep as they are; v1 nodes have neither, and
//! their encoding is frozen in [`v1`].

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
    /// Content blobs in order (files): data blobs, or with `content_levels`
    /// above 0 the list blobs of that level ([`crate::content`]).
    pub content: Vec<BlobId>,
    /// Subtree (directories).
    pub subtree: Option<BlobId>,
    /// Levels of list blobs between `content` and the data (v2; 0 in v1).
    pub content_levels: u8,
    /// Fields added after v2, by tag; unknown tags are kept as they are.
    pub extensions: Vec<Extension>,
}

pub use super::Extension;

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
            content_levels: 0,
            extensions: Vec::new(),
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

/// Encodes a tree for a repository of format `version`.
///
/// # Panics
/// A v2 field on a node of a v1 tree: v1 writers build flat content lists.
pub fn encode(tree: &Tree, version: u8) -> Vec<u8> {
    if version == 1 {
        super::to_bytes(&v1::TreeRef(tree))
    } else {
        super::to_bytes(tree)
    }
}

/// Decodes a tree blob of a repository of format `version`.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] when it does not decode.
pub fn decode(data: &[u8], version: u8, what: &dyn Fn() -> String) -> crate::Result<Tree> {
    if version == 1 {
        let t: v1::Tree = super::from_bytes(data, what)?;
        Ok(Tree {
            nodes: t.nodes.into_iter().map(Node::from).collect(),
        })
    } else {
        super::from_bytes(data, what)
    }
}

/// The v1 encoding, frozen: v1 repositories are read and written with it.
pub mod v1 {
    use serde::ser::{SerializeSeq, SerializeStruct};
    use serde::{Deserialize, Serialize, Serializer};

    use super::NodeKind;
    use crate::id::BlobId;

    /// A v1 tree as decoded.
    #[derive(Deserialize)]
    pub struct Tree {
        pub nodes: Vec<Node>,
    }

    /// A v1 node as decoded: the fields of [`super::Node`] up to `subtree`.
    #[derive(Deserialize)]
    pub struct Node {
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        kind: NodeKind,
        mode: u32,
        uid: u32,
        gid: u32,
        size: u64,
        mtime_ns: i64,
        ctime_ns: i64,
        inode: u64,
        device: u64,
        links: u64,
        rdev: u64,
        #[serde(with = "serde_bytes")]
        link_target: Vec<u8>,
        content: Vec<BlobId>,
        subtree: Option<BlobId>,
    }

    impl From<Node> for super::Node {
        fn from(n: Node) -> Self {
            Self {
                name: n.name,
                kind: n.kind,
                mode: n.mode,
                uid: n.uid,
                gid: n.gid,
                size: n.size,
                mtime_ns: n.mtime_ns,
                ctime_ns: n.ctime_ns,
                inode: n.inode,
                device: n.device,
                links: n.links,
                rdev: n.rdev,
                link_target: n.link_target,
                content: n.content,
                subtree: n.subtree,
                content_levels: 0,
                extensions: Vec::new(),
            }
        }
    }

    /// Serializes a tree in the v1 layout without copying its nodes.
    pub struct TreeRef<'a>(pub &'a super::Tree);

    struct NodeRef<'a>(&'a super::Node);

    impl Serialize for TreeRef<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut t = s.serialize_struct("Tree", 1)?;
            t.serialize_field("nodes", &Nodes(&self.0.nodes))?;
            t.end()
        }
    }

    struct Nodes<'a>(&'a [super::Node]);

    impl Serialize for Nodes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for n in self.0 {
                seq.serialize_element(&NodeRef(n))?;
            }
            seq.end()
        }
    }

    impl Serialize for NodeRef<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let n = self.0;
            assert!(
                n.content_levels == 0 && n.extensions.is_empty(),
                "a v1 tree cannot hold v2 fields"
            );
            let mut t = s.serialize_struct("Node", 15)?;
            t.serialize_field("name", serde_bytes::Bytes::new(&n.name))?;
            t.serialize_field("kind", &n.kind)?;
            t.serialize_field("mode", &n.mode)?;
            t.serialize_field("uid", &n.uid)?;
            t.serialize_field("gid", &n.gid)?;
            t.serialize_field("size", &n.size)?;
            t.serialize_field("mtime_ns", &n.mtime_ns)?;
            t.serialize_field("ctime_ns", &n.ctime_ns)?;
            t.serialize_field("inode", &n.inode)?;
            t.serialize_field("device", &n.device)?;
            t.serialize_field("links", &n.links)?;
            t.serialize_field("rdev", &n.rdev)?;
            t.serialize_field("link_target", serde_bytes::Bytes::new(&n.link_target))?;
            t.serialize_field("content", &n.content)?;
            t.serialize_field("subtree", &n.subtree)?;
            t.end()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tree {
        let mut f = Node::new(b"db.sql".to_vec(), NodeKind::File);
        f.mode = 0o600;
        f.size = 12345;
        f.mtime_ns = -5;
        f.content = vec![BlobId([7; 32]), BlobId([9; 32])];
        let mut d = Node::new(b"\xffdir".to_vec(), NodeKind::Dir);
        d.subtree = Some(BlobId([1; 32]));
        Tree { nodes: vec![f, d] }
    }

    /// The v1 layout as it was derived before v2: its bytes must not change.
    #[derive(Serialize)]
    struct OldNode {
        #[serde(with = "serde_bytes")]
        name: Vec<u8>,
        kind: NodeKind,
        mode: u32,
        uid: u32,
        gid: u32,
        size: u64,
        mtime_ns: i64,
        ctime_ns: i64,
        inode: u64,
        device: u64,
        links: u64,
        rdev: u64,
        #[serde(with = "serde_bytes")]
        link_target: Vec<u8>,
        content: Vec<BlobId>,
        subtree: Option<BlobId>,
    }

    #[test]
    fn v1_encoding_is_unchanged_and_both_versions_round_trip() {
        let t = sample();
        let old: Vec<OldNode> = t
            .nodes
            .iter()
            .map(|n| OldNode {
                name: n.name.clone(),
                kind: n.kind,
                mode: n.mode,
                uid: n.uid,
                gid: n.gid,
                size: n.size,
                mtime_ns: n.mtime_ns,
                ctime_ns: n.ctime_ns,
                inode: n.inode,
                device: n.device,
                links: n.links,
                rdev: n.rdev,
                link_target: n.link_target.clone(),
                content: n.content.clone(),
                subtree: n.subtree,
            })
            .collect();
        #[derive(Serialize)]
        struct OldTree {
            nodes: Vec<OldNode>,
        }
        let v1 = encode(&t, 1);
        assert_eq!(v1, crate::format::to_bytes(&OldTree { nodes: old }));
        assert_eq!(decode(&v1, 1, &|| "t".into()).unwrap(), t);
        let mut t2 = t.clone();
        t2.nodes[0].content_levels = 2;
        t2.nodes[0].extensions.push(Extension {
            tag: 77,
            data: vec![1, 2, 3],
        });
        let v2 = encode(&t2, 2);
        assert_eq!(
            v2.len(),
            v1.len() + 2 * 2 + 5,
            "two bytes per node, plus the extension"
        );
        assert_eq!(decode(&v2, 2, &|| "t".into()).unwrap(), t2);
    }
}
