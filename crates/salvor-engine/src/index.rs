//! The in-memory index: where every blob lives.
//!
//! Peers run out of memory on repositories with tens of millions of blobs, so
//! entries are small: a blob maps to a 16-byte location (frame number, offset,
//! length, kind) and frame/pack details are shared in side tables. The blobs
//! are one sorted array of (id, location), 48 bytes each and nothing else,
//! searched by binary search: a hash map of the same entries holds 75 bytes
//! each at its usual load, and 150 or more while it doubles. The array is
//! built by [`Index::add_pack`] and sorted once by [`Index::finish`]; looking
//! a blob up before that is a bug and panics. An index made by
//! [`Index::spilling`] keeps at most [`crate::spill::SPILL_AT`] entries in
//! memory and the rest in mapped sorted runs ([`table`]), so what it holds
//! resident is about 1.25 bytes per blob (the runs' Bloom filters). Ids are uniformly random
//! (keyed BLAKE3), so the id maps for packs use the first eight bytes of an
//! id as its hash instead of running SipHash over 32 bytes.

mod persisted;
mod table;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::Remedy;
use crate::crypto::SALT_LEN;
use crate::format::index::IndexPack;
use crate::format::pack::{BlobKind, Compression};
use crate::id::{BlobId, PackId};

/// Hasher for ids that are already uniformly random.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Keys are 32-byte ids; their first 8 bytes are a perfectly good hash.
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(b);
    }
}

/// A `HashMap` keyed by random ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
/// A `HashSet` of random ids.
pub type IdSet<K> = std::collections::HashSet<K, BuildHasherDefault<IdHasher>>;

/// Where a blob is, within its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Index into [`Index::frame`].
    pub frame: u32,
    /// Offset in the frame's plaintext.
    pub offset: u32,
    /// Plaintext length.
    pub length: u32,
    /// Data or tree.
    pub kind: BlobKind,
    /// False when its pack record forbids deduplicating against it (an
    /// extension this build does not know, such as a prune's delete mark).
    pub reusable: bool,
}

/// Where a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FrameLocation {
    /// Index into [`Index::pack`].
    pub pack: u32,
    /// The frame's nonce counter (its position in the pack header).
    pub nonce: u32,
    /// Ciphertext offset in the pack.
    pub offset: u64,
    /// Ciphertext length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
    /// Compression of the plaintext.
    pub compression: Compression,
}

/// A pack known to the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackInfo {
    /// Its id (= file name).
    pub id: PackId,
    /// Stored size.
    pub size: u64,
    /// Salt for its cipher.
    pub salt: [u8; SALT_LEN],
    /// Unix seconds when it was written or indexed (0: unknown, v1).
    pub written: i64,
}

/// All blobs of a repository.
#[derive(Default)]
pub struct Index {
    packs: Vec<PackInfo>,
    pack_numbers: IdMap<PackId, u32>,
    frames: Vec<FrameLocation>,
    /// Sorted by id once [`Index::finish`] ran; one entry per id.
    blobs: table::BlobTable,
    /// Index files that could not be read, with why: their blobs are
    /// missing here, and `repair index` rebuilds them from the packs.
    damaged: Vec<String>,
    /// Listed index files that a compacted file supersedes (left by an
    /// interrupted compaction); their records were not used.
    superseded: Vec<String>,
}

impl Index {
    /// An empty index whose blob table spills into mapped files under
    /// `dir` beyond [`crate::spill::SPILL_AT`] blobs.
    pub fn spilling(dir: std::path::PathBuf) -> Self {
        Self {
            blobs: table::BlobTable::spilling(dir),
            ..Self::default()
        }
    }

    /// Records an index file that could not be read.
    pub fn add_damaged(&mut self, what: String) {
        self.damaged.push(what);
    }

    /// Records the listed index files that were skipped as superseded.
    pub fn set_superseded(&mut self, names: Vec<String>) {
        self.superseded = names;
    }

    /// The listed index files that were skipped as superseded.
    pub fn superseded(&self) -> &[String] {
        &self.superseded
    }

    /// The index files that could not be read.
    pub fn damaged(&self) -> &[String] {
        &self.damaged
    }

    /// The error for a blob this index does not hold; `whose` says what
    /// needed it ("of /etc/hosts"). The hint depends on why it may be
    /// missing: an unreadable index file (which `repair index` fixes) or
    /// lost data (which `check` finds).
    pub fn missing(&self, id: &BlobId, whose: &str) -> crate::Error {
        let e = crate::Error::new(
            crate::ErrorKind::Corrupt,
            format!("blob {id}{whose} is not in the index"),
        );
        match self.damaged.first() {
            Some(first) => e
                .hint(format!(
                    "{} index file(s) could not be read ({first})",
                    self.damaged.len()
                ))
                .remedy(Remedy::RepairIndex),
            None => e.remedy(Remedy::Check),
        }
    }

    /// Adds one pack's entries; call [`Index::finish`] before looking blobs
    /// up. A blob already present elsewhere keeps its first location (two
    /// hosts may have stored the same blob concurrently).
    pub fn add_pack(&mut self, pack: &IndexPack) {
        if self.pack_numbers.contains_key(&pack.id) {
            return;
        }
        let pn = u32::try_from(self.packs.len()).expect("fewer than 2^32 packs");
        self.packs.push(PackInfo {
            id: pack.id,
            size: pack.size,
            salt: pack.salt,
            written: pack.written,
        });
        let reusable = pack.reusable();
        self.pack_numbers.insert(pack.id, pn);
        for (nonce, f) in pack.frames.iter().enumerate() {
            let fn_ = u32::try_from(self.frames.len()).expect("fewer than 2^32 frames");
            self.frames.push(FrameLocation {
                pack: pn,
                nonce: u32::try_from(nonce).expect("fewer than 2^32 frames in a pack"),
                offset: f.offset,
                length: f.length,
                raw_length: f.raw_length,
                compression: f.compression,
            });
            for b in &f.blobs {
                self.blobs.push(
                    b.id,
                    BlobLocation {
                        frame: fn_,
                        offset: b.offset,
                        length: b.length,
                        kind: b.kind,
                        reusable,
                    },
                );
            }
        }
    }

    /// Sorts the entries added since the last call, keeping each blob's
    /// first location (frame numbers grow in the order packs were added).
    pub fn finish(&mut self) {
        self.blobs.finish();
    }

    fn search(&self, id: &BlobId) -> Option<BlobLocation> {
        self.blobs.get(id)
    }

    /// Location of a blob.
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.search(id)
    }

    /// Whether a blob is present.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.search(id).is_some()
    }

    /// Whether a new backup may reference the blob without storing it
    /// again: it is present, in a pack whose record allows it.
    pub fn reusable(&self, id: &BlobId) -> bool {
        self.search(id).is_some_and(|l| l.reusable)
    }

    /// A frame by number.
    pub fn frame(&self, n: u32) -> &FrameLocation {
        &self.frames[n as usize]
    }

    /// A pack by number.
    pub fn pack(&self, n: u32) -> &PackInfo {
        &self.packs[n as usize]
    }

    /// Every pack.
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    /// A pack's number (for [`Index::pack`]), if it is indexed.
    pub fn pack_number(&self, id: &PackId) -> Option<u32> {
        self.pack_numbers.get(id).copied()
    }

    /// Whether a pack is indexed.
    pub fn has_pack(&self, id: &PackId) -> bool {
        self.pack_numbers.contains_key(id)
    }

    /// Number of distinct blobs.
    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    /// Every blob once, with its location.
    pub fn blobs(&self) -> impl Iterator<Item = (BlobId, BlobLocation)> + '_ {
        self.blobs.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::IndexPack;
    use crate::format::pack::{BlobEntry, FrameEntry};

    fn pack(n: u8, blobs: &[u8]) -> IndexPack {
        IndexPack {
            id: PackId([n; 32]),
            size: 100,
            salt: [0; SALT_LEN],
            frames: vec![FrameEntry {
                offset: 30,
                length: 50,
                raw_length: 40,
                compression: Compression::None,
                blobs: blobs
                    .iter()
                    .map(|&b| BlobEntry {
                        kind: BlobKind::Data,
                        id: BlobId([b; 32]),
                        offset: u32::from(b),
                        length: 1,
                    })
                    .collect(),
            }],
            written: 0,
            extensions: Vec::new(),
        }
    }

    #[test]
    fn lookups_find_every_blob_once_at_its_first_location() {
        let mut i = Index::default();
        i.add_pack(&pack(1, &[9, 3, 7]));
        i.add_pack(&pack(2, &[3, 5]));
        i.add_pack(&pack(1, &[200]));
        i.finish();
        assert_eq!(i.blob_count(), 4);
        let loc = i.get(&BlobId([3; 32])).unwrap();
        assert_eq!(
            (loc.frame, i.frame(loc.frame).pack),
            (0, 0),
            "first seen wins"
        );
        assert_eq!(i.get(&BlobId([5; 32])).unwrap().frame, 1);
        assert!(!i.contains(&BlobId([200; 32])), "a pack is added once");
        assert!(!i.contains(&BlobId([4; 32])));
        let ids: Vec<u8> = i.blobs().map(|(k, _)| k.0[0]).collect();
        assert_eq!(ids, [3, 5, 7, 9]);
        // Added after the first sort (adopted packs): sorted again.
        i.add_pack(&pack(3, &[1, 9]));
        i.finish();
        assert_eq!(i.blob_count(), 5);
        assert_eq!(i.get(&BlobId([9; 32])).unwrap().frame, 0);
        assert_eq!(i.get(&BlobId([1; 32])).unwrap().frame, 2);
    }

    #[test]
    #[should_panic(expected = "before Index::finish")]
    fn a_lookup_before_finish_is_a_bug() {
        let mut i = Index::default();
        i.add_pack(&pack(1, &[1]));
        i.contains(&BlobId([1; 32]));
    }

    #[test]
    fn an_entry_is_48_bytes() {
        assert_eq!(std::mem::size_of::<(BlobId, BlobLocation)>(), 48);
    }

    /// A pack numbered `first` holding the blobs of `ids`.
    fn wide_pack(first: u32, ids: impl Iterator<Item = u64>) -> IndexPack {
        let id = |n: u64| BlobId(*blake3::hash(&n.to_le_bytes()).as_bytes());
        let mut p = pack(0, &[]);
        p.id = PackId(*blake3::hash(&first.to_le_bytes()).as_bytes());
        p.frames[0].blobs = ids
            .map(|n| BlobEntry {
                kind: BlobKind::Data,
                id: id(n),
                offset: first,
                length: u32::try_from(n % 1000).unwrap(),
            })
            .collect();
        p
    }

    #[test]
    fn a_spilling_index_answers_like_one_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let n = crate::spill::SPILL_AT as u64;
        let mut spilled = Index::spilling(dir.path().into());
        let mut plain = Index::default();
        // Three packs overlapping by a third: the first location must win
        // across runs as it does in memory.
        let packs = [
            wide_pack(1, 0..n),
            wide_pack(2, n * 2 / 3..n * 5 / 3),
            wide_pack(3, n * 4 / 3..n * 2 + 10),
        ];
        for p in &packs {
            spilled.add_pack(p);
            plain.add_pack(p);
        }
        spilled.finish();
        plain.finish();
        assert_eq!(spilled.blob_count(), plain.blob_count());
        assert_eq!(spilled.blob_count(), usize::try_from(n * 2 + 10).unwrap());
        let id = |n: u64| BlobId(*blake3::hash(&n.to_le_bytes()).as_bytes());
        for k in (0..n * 2 + 10)
            .step_by(97)
            .chain([n * 2 / 3, n * 4 / 3, n * 2 + 9])
        {
            assert_eq!(spilled.get(&id(k)), plain.get(&id(k)), "blob {k}");
        }
        assert!(spilled.get(&id(n * 3)).is_none());
        let mut a: Vec<_> = spilled.blobs().collect();
        let mut b: Vec<_> = plain.blobs().collect();
        a.sort_by_key(|(k, _)| *k);
        b.sort_by_key(|(k, _)| *k);
        assert!(a == b, "the same entries");
        // Adopted later: a small addition after the runs were merged.
        spilled.add_pack(&wide_pack(4, [5, n * 3].into_iter()));
        spilled.finish();
        assert_eq!(spilled.blob_count(), plain.blob_count() + 1);
        assert_eq!(
            spilled.get(&id(5)).unwrap().offset,
            1,
            "the first location stays"
        );
        assert_eq!(spilled.get(&id(n * 3)).unwrap().offset, 4);
    }
}
