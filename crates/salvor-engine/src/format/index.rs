//! `index/<id>`: which blobs live in which packs. Sealed postcard.

use serde::{Deserialize, Serialize};

use super::pack::FrameEntry;
use crate::id::PackId;

/// One pack's entries, identical to its header.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexPack {
    /// The pack.
    pub id: PackId,
    /// Its stored size in bytes.
    pub size: u64,
    /// The pack's salt (also in its clear prefix), so a frame can be read
    /// with one ranged request.
    pub salt: [u8; crate::crypto::SALT_LEN],
    /// Its frames, in nonce order.
    pub frames: Vec<FrameEntry>,
}

/// An index file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexFile {
    /// Packs described by this file.
    pub packs: Vec<IndexPack>,
}
