//! `index/<id>`: which blobs live in which packs. Sealed postcard.
//!
//! v2 records can grow: each index file and each pack record ends with tagged
//! [`Extension`]s, and a tag's lowest bit says whether a reader that does not
//! know it may still deduplicate against the pack (even: yes, the field is
//! informational; odd: no, the field changes what the pack means, as a
//! prune's delete mark would). v1 files are read and written with the frozen
//! [`v1`] encoding.

use serde::{Deserialize, Serialize};

use super::Extension;

/// The pack-record extension a prune adds to a pack it will delete: odd, so
/// no writer, of this build or an older one, deduplicates against the pack
/// once it is marked. Its data is the mark's time, i64 Unix seconds (the
/// prune's clock), little-endian (FORMAT.md section 16).
pub const DELETE_MARK: u32 = 1;
use super::pack::FrameEntry;
use crate::id::{IndexId, PackId};

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
    /// v2: Unix seconds when the pack was written, or, for a pack indexed
    /// after the fact (adopted, repaired), when it was indexed: never
    /// earlier than the truth, so a prune's grace period stays safe. 0 when
    /// unknown (v1 files).
    pub written: i64,
    /// v2: fields added later, by tag.
    pub extensions: Vec<Extension>,
}

impl IndexPack {
    /// A record of a pack written or indexed at `written` (Unix seconds,
    /// from the repository's clock).
    pub fn new(
        id: PackId,
        size: u64,
        salt: [u8; crate::crypto::SALT_LEN],
        frames: Vec<FrameEntry>,
        written: i64,
    ) -> Self {
        Self {
            id,
            size,
            salt,
            frames,
            written,
            extensions: Vec::new(),
        }
    }

    /// False when the record carries a field that forbids deduplicating
    /// against the pack (an odd tag: a delete mark, or one this build does
    /// not know).
    pub fn reusable(&self) -> bool {
        self.extensions.iter().all(|e| e.tag % 2 == 0)
    }

    /// When a prune marked the pack for deletion, if it did. A mark whose
    /// data does not decode counts as marked at the end of time, so that
    /// it is never judged old enough to act on.
    pub fn delete_mark(&self) -> Option<i64> {
        self.extensions
            .iter()
            .find(|e| e.tag == DELETE_MARK)
            .map(|e| {
                e.data
                    .as_slice()
                    .try_into()
                    .map_or(i64::MAX, i64::from_le_bytes)
            })
    }

    /// Marks the pack for deletion at `at` (Unix seconds), replacing an
    /// earlier mark.
    pub fn set_delete_mark(&mut self, at: i64) {
        self.clear_delete_mark();
        self.extensions.push(Extension {
            tag: DELETE_MARK,
            data: at.to_le_bytes().to_vec(),
        });
    }

    /// Takes a delete mark away: the pack is in use again.
    pub fn clear_delete_mark(&mut self) {
        self.extensions.retain(|e| e.tag != DELETE_MARK);
    }
}

/// One record per pack of `records` (index files may repeat a pack), in
/// the order first seen. Where records of a pack disagree on its delete
/// mark, one without a mark wins: some writer indexed the pack as in use,
/// and only a prune that sees it unused again may mark it. Of several
/// marks the latest wins, which only delays the deletion. Every rewriter of
/// index records (compaction, `repair index`, prune) merges this way, so
/// that no rewrite brings an old mark back.
pub fn merge_records(records: impl IntoIterator<Item = IndexPack>) -> Vec<IndexPack> {
    let mut m = RecordMerger::default();
    records.into_iter().for_each(|r| m.push(r));
    m.finish()
}

/// [`merge_records`] one record at a time, so that a reader of many index
/// files holds the merged records and one batch of files, not both whole.
#[derive(Default)]
pub struct RecordMerger {
    out: Vec<IndexPack>,
    at: std::collections::HashMap<PackId, usize>,
}

impl RecordMerger {
    /// Adds a record.
    pub fn push(&mut self, r: IndexPack) {
        match self.at.get(&r.id) {
            None => {
                self.at.insert(r.id, self.out.len());
                self.out.push(r);
            }
            Some(&i) => {
                let (old, new) = (self.out[i].delete_mark(), r.delete_mark());
                if old.is_some() && (new.is_none() || new > old) {
                    self.out[i] = r;
                }
            }
        }
    }

    /// The merged records, in the order first seen.
    pub fn finish(self) -> Vec<IndexPack> {
        self.out
    }
}

/// An index file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IndexFile {
    /// Packs described by this file.
    pub packs: Vec<IndexPack>,
    /// v2: index files whose packs this one repeats (it was written by a
    /// compaction); a reader that lists both ignores those.
    pub supersedes: Vec<IndexId>,
    /// v2: fields added later, by tag.
    pub extensions: Vec<Extension>,
}

/// Encodes an index file for a repository of format `version`.
pub fn encode(file: &IndexFile, version: u8) -> Vec<u8> {
    if version == 1 {
        super::to_bytes(&v1::IndexFileRef(file))
    } else {
        super::to_bytes(file)
    }
}

/// Decodes an index file of a repository of format `version`.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] when it does not decode.
pub fn decode(data: &[u8], version: u8, what: &dyn Fn() -> String) -> crate::Result<IndexFile> {
    if version == 1 {
        let f: v1::IndexFile = super::from_bytes(data, what)?;
        Ok(IndexFile {
            packs: f
                .packs
                .into_iter()
                .map(|p| IndexPack {
                    id: p.id,
                    size: p.size,
                    salt: p.salt,
                    frames: p.frames,
                    written: 0,
                    extensions: Vec::new(),
                })
                .collect(),
            ..Default::default()
        })
    } else {
        super::from_bytes(data, what)
    }
}

/// The v1 encoding, frozen: v1 repositories are read and written with it.
pub mod v1 {
    use serde::ser::SerializeStruct;
    use serde::{Deserialize, Serialize, Serializer};

    use crate::format::pack::FrameEntry;
    use crate::id::PackId;

    /// A v1 index file as decoded.
    #[derive(Deserialize)]
    pub struct IndexFile {
        pub packs: Vec<IndexPack>,
    }

    /// A v1 pack record as decoded.
    #[derive(Deserialize)]
    pub struct IndexPack {
        pub id: PackId,
        pub size: u64,
        pub salt: [u8; crate::crypto::SALT_LEN],
        pub frames: Vec<FrameEntry>,
    }

    /// Encodes a current index file in v1, dropping what v1 cannot hold.
    pub struct IndexFileRef<'a>(pub &'a super::IndexFile);

    struct PacksRef<'a>(&'a [super::IndexPack]);

    struct PackRef<'a>(&'a super::IndexPack);

    impl Serialize for IndexFileRef<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut st = s.serialize_struct("IndexFile", 1)?;
            st.serialize_field("packs", &PacksRef(&self.0.packs))?;
            st.end()
        }
    }

    impl Serialize for PacksRef<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.0.iter().map(PackRef))
        }
    }

    impl Serialize for PackRef<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let p = self.0;
            let mut st = s.serialize_struct("IndexPack", 4)?;
            st.serialize_field("id", &p.id)?;
            st.serialize_field("size", &p.size)?;
            st.serialize_field("salt", &p.salt)?;
            st.serialize_field("frames", &p.frames)?;
            st.end()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> IndexFile {
        IndexFile {
            packs: vec![IndexPack {
                written: 1_767_322_800,
                extensions: vec![Extension {
                    tag: 4,
                    data: vec![9],
                }],
                ..IndexPack::new(PackId([7; 32]), 100, [3; 24], Vec::new(), 1_767_322_800)
            }],
            supersedes: vec![IndexId([1; 32])],
            extensions: vec![Extension {
                tag: 2,
                data: vec![1, 2],
            }],
        }
    }

    #[test]
    fn v2_round_trips_and_keeps_unknown_extensions() {
        let f = file();
        let b = encode(&f, 2);
        assert_eq!(decode(&b, 2, &|| "i".into()).unwrap(), f);
        assert!(f.packs[0].reusable());
        let mut critical = f.packs[0].clone();
        critical.extensions.push(Extension {
            tag: 1,
            data: Vec::new(),
        });
        assert!(!critical.reusable());
    }

    #[test]
    fn a_delete_mark_forbids_reuse_and_comes_off_again() {
        let mut p = file().packs.remove(0);
        assert_eq!(p.delete_mark(), None);
        p.set_delete_mark(1_800_000_000);
        p.set_delete_mark(1_800_000_100);
        assert_eq!(p.delete_mark(), Some(1_800_000_100));
        assert!(!p.reusable());
        assert_eq!(p.extensions.len(), 2, "one mark, and the other field kept");
        let b = encode(
            &IndexFile {
                packs: vec![p.clone()],
                ..Default::default()
            },
            2,
        );
        assert_eq!(decode(&b, 2, &|| "i".into()).unwrap().packs[0], p);
        p.clear_delete_mark();
        assert!(p.reusable() && p.delete_mark().is_none());
        p.extensions.push(Extension {
            tag: DELETE_MARK,
            data: vec![1],
        });
        assert_eq!(
            p.delete_mark(),
            Some(i64::MAX),
            "an odd-sized mark is never old"
        );
    }

    #[test]
    fn merging_keeps_one_record_a_pack_and_prefers_no_mark() {
        let plain = file().packs.remove(0);
        let mut marked = plain.clone();
        marked.set_delete_mark(100);
        let mut later = plain.clone();
        later.set_delete_mark(200);
        let mut other = plain.clone();
        other.id = PackId([8; 32]);
        let m = merge_records([marked.clone(), other.clone(), plain.clone(), later.clone()]);
        assert_eq!(m, [plain.clone(), other.clone()]);
        let m = merge_records([marked, later.clone(), other]);
        assert_eq!(m[0].delete_mark(), Some(200));
    }

    #[test]
    fn v1_drops_the_v2_fields_and_reads_back_with_defaults() {
        let f = file();
        let b = encode(&f, 1);
        let back = decode(&b, 1, &|| "i".into()).unwrap();
        assert_eq!(back.packs[0].id, f.packs[0].id);
        assert_eq!(back.packs[0].written, 0);
        assert!(back.packs[0].extensions.is_empty() && back.supersedes.is_empty());
        // The v1 bytes are exactly the v1 layout: no trailing fields.
        assert_eq!(b.len(), 1 + 32 + 1 + 24 + 1);
        assert!(decode(&b, 2, &|| "i".into()).is_err());
    }
}
