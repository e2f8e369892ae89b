//! Pack layout: `prefix | frame* | header ciphertext | header length u32 LE`.
//!
//! A frame is one or more consecutive blobs, compressed together with zstd and
//! encrypted with nonce = frame number. Small chunks dedup well, large frames
//! compress well; frames give salvor both. The encrypted header repeats the
//! index entries, so the index can always be rebuilt from the packs.

use serde::{Deserialize, Serialize};

use crate::id::BlobId;

/// What a blob holds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum BlobKind {
    /// File or stream content.
    Data,
    /// A serialized [`super::tree::Tree`].
    Tree,
}

/// One blob inside a frame's plaintext.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobEntry {
    /// Data or tree.
    pub kind: BlobKind,
    /// Keyed hash of the plaintext.
    pub id: BlobId,
    /// Offset in the frame's decompressed plaintext.
    pub offset: u32,
    /// Plaintext length.
    pub length: u32,
}

/// Frame compression.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is (it did not shrink).
    None,
    /// One zstd frame.
    Zstd,
}

/// One frame of a pack.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FrameEntry {
    /// Byte offset of the ciphertext in the pack file.
    pub offset: u64,
    /// Ciphertext length including the tag.
    pub length: u32,
    /// Plaintext length after decompression.
    pub raw_length: u32,
    /// How the plaintext was compressed.
    pub compression: Compression,
    /// The blobs in this frame, in order.
    pub blobs: Vec<BlobEntry>,
}

/// The decrypted pack header: frames in nonce order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PackHeader {
    /// Frame `i` is encrypted with counter `i`.
    pub frames: Vec<FrameEntry>,
}
