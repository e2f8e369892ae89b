//! Content lists: the ids of a file's data blobs, as a tree of list blobs.
//!
//! A v1 node holds every content id inline: 32 bytes per chunk, so a 100 GB
//! dump at 4 KiB chunks is a 800 MB tree node, held whole in memory and
//! stored again whenever one byte of the dump changes. From format v2 a long
//! list is cut into *list blobs* (data blobs whose plaintext is the
//! concatenated ids), those lists' ids are cut the same way one level up,
//! and so on, until one level fits inline in the node (as bupstash's htree
//! does). A cut follows an id whose last byte is zero, or [`MAX_LIST`] ids:
//! ids are keyed hashes, so cuts fall at random but depend only on the ids
//! around them, and the lists of an unchanged region of a stream are the
//! same blobs from day to day. Writers and readers hold one list per level,
//! never the whole list.

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::repo::BlobReader;

/// Most ids in one list blob (32 KiB), and in a node's inline list.
pub const MAX_LIST: usize = 1024;

/// Most levels of list blobs. With [`MAX_LIST`]-id lists, eight levels
/// address more chunks than any file can hold; a deeper node is corrupt.
pub const MAX_LEVELS: u8 = 8;

/// True after an id that ends a list: one in 256 on average.
fn cuts_after(id: &BlobId) -> bool {
    id.0[31] == 0
}

/// Builds a node's content list from its data blob ids, in order.
pub struct ListBuilder {
    /// Write every id inline (format v1 nodes).
    flat: bool,
    /// The open list of each level; level 0 holds data blob ids.
    levels: Vec<Vec<BlobId>>,
    /// Whether a level has already been cut (so its top cannot be inline).
    cut: Vec<bool>,
}

/// A finished content list: what a node stores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    /// Data blob ids (`levels` 0) or ids of list blobs of level `levels`.
    pub ids: Vec<BlobId>,
    /// How many levels of list blobs lie between `ids` and the data.
    pub levels: u8,
}

impl ListBuilder {
    /// A builder; `flat` keeps every id inline, as format v1 requires.
    pub fn new(flat: bool) -> Self {
        Self {
            flat,
            levels: vec![Vec::new()],
            cut: vec![false],
        }
    }

    /// Appends the next data blob id; `store` stores a list blob's
    /// plaintext and returns its id.
    pub fn push(&mut self, id: BlobId, store: &mut dyn FnMut(&[u8]) -> BlobId) {
        self.push_at(0, id, store);
    }

    fn push_at(&mut self, level: usize, id: BlobId, store: &mut dyn FnMut(&[u8]) -> BlobId) {
        self.levels[level].push(id);
        if self.flat {
            return;
        }
        if cuts_after(&id) || self.levels[level].len() >= MAX_LIST {
            let list = std::mem::take(&mut self.levels[level]);
            self.cut[level] = true;
            let list_id = store(&encode(&list));
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
                self.cut.push(false);
            }
            self.push_at(level + 1, list_id, store);
        }
    }

    /// The node's content: the lowest level that was never cut and holds
    /// everything above it, inline.
    pub fn finish(mut self, store: &mut dyn FnMut(&[u8]) -> BlobId) -> Content {
        let mut level = 0;
        loop {
            let top = level + 1 == self.levels.len();
            if top && !self.cut[level] {
                let levels = u8::try_from(level).expect("at most MAX_LEVELS levels");
                return Content {
                    ids: std::mem::take(&mut self.levels[level]),
                    levels,
                };
            }
            let rest = std::mem::take(&mut self.levels[level]);
            if !rest.is_empty() {
                let list_id = store(&encode(&rest));
                if top {
                    self.levels.push(Vec::new());
                    self.cut.push(false);
                }
                self.levels[level + 1].push(list_id);
            }
            level += 1;
        }
    }
}

fn encode(ids: &[BlobId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * 32);
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    out
}

/// Decodes a list blob's plaintext.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] for a length that is not whole ids, or
/// an empty or overlong list.
pub fn decode(list: &BlobId, data: &[u8]) -> Result<Vec<BlobId>> {
    if data.is_empty() || !data.len().is_multiple_of(32) || data.len() / 32 > MAX_LIST {
        return Err(Error::corrupt(format!(
            "list blob {list} has {} bytes, not 1 to {MAX_LIST} ids of 32 bytes",
            data.len()
        )));
    }
    Ok(data
        .chunks_exact(32)
        .map(|c| BlobId(c.try_into().expect("32 bytes")))
        .collect())
}

/// Calls `data` with each data blob id of a content list in order, and
/// `list` with each list blob id (before reading it), holding one list per
/// level in memory.
///
/// # Errors
/// Unreadable or corrupt list blobs, too many levels, or what the callbacks return.
pub fn walk(
    reader: &BlobReader,
    ids: &[BlobId],
    levels: u8,
    data: &mut dyn FnMut(&BlobId) -> Result<()>,
    list: &mut dyn FnMut(&BlobId) -> Result<()>,
) -> Result<()> {
    if levels > MAX_LEVELS {
        return Err(Error::corrupt(format!(
            "a content list has {levels} levels, more than {MAX_LEVELS}"
        )));
    }
    if levels == 0 {
        return ids.iter().try_for_each(&mut *data);
    }
    for id in ids {
        list(id)?;
        let below = decode(id, &reader.read_metadata_blob(id)?)?;
        walk(reader, &below, levels - 1, data, list)?;
    }
    Ok(())
}

/// Every data blob id of a content list, in order (for callers that plan
/// over a whole file, such as restore: 32 bytes per chunk).
///
/// # Errors
/// As [`walk`].
pub fn data_ids(reader: &BlobReader, ids: &[BlobId], levels: u8) -> Result<Vec<BlobId>> {
    if levels == 0 {
        return Ok(ids.to_vec());
    }
    let mut out = Vec::new();
    walk(
        reader,
        ids,
        levels,
        &mut |id| {
            out.push(*id);
            Ok(())
        },
        &mut |_| Ok(()),
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn id(i: u64) -> BlobId {
        BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    /// Builds a list in memory; returns its content and the list blobs.
    fn build(ids: &[BlobId], flat: bool) -> (Content, HashMap<BlobId, Vec<u8>>) {
        let mut blobs = HashMap::new();
        let mut store = |d: &[u8]| {
            let k = BlobId(*blake3::hash(d).as_bytes());
            blobs.insert(k, d.to_vec());
            k
        };
        let mut b = ListBuilder::new(flat);
        for i in ids {
            b.push(*i, &mut store);
        }
        let c = b.finish(&mut store);
        (c, blobs)
    }

    fn expand(c: &Content, blobs: &HashMap<BlobId, Vec<u8>>) -> Vec<BlobId> {
        fn go(ids: &[BlobId], levels: u8, blobs: &HashMap<BlobId, Vec<u8>>, out: &mut Vec<BlobId>) {
            for i in ids {
                if levels == 0 {
                    out.push(*i);
                } else {
                    go(&decode(i, &blobs[i]).unwrap(), levels - 1, blobs, out);
                }
            }
        }
        let mut out = Vec::new();
        go(&c.ids, c.levels, blobs, &mut out);
        out
    }

    #[test]
    fn lists_of_any_length_round_trip() {
        for n in [0, 1, 2, 255, 256, 1023, 1024, 1025, 5000, 300_000] {
            let ids: Vec<BlobId> = (0..n).map(id).collect();
            let (c, blobs) = build(&ids, false);
            assert!(c.ids.len() <= MAX_LIST, "{n}: inline {}", c.ids.len());
            assert_eq!(expand(&c, &blobs), ids, "{n}");
            for b in blobs.values() {
                assert!(b.len() / 32 <= MAX_LIST);
            }
            if n >= 5000 {
                assert!(c.levels >= 1, "{n} ids are cut into lists");
            }
            let (flat, none) = build(&ids, true);
            assert_eq!((flat.ids, flat.levels, none.len()), (ids, 0, 0));
        }
    }

    #[test]
    fn an_edit_changes_only_the_lists_around_it() {
        let ids: Vec<BlobId> = (0..200_000).map(id).collect();
        let (_, before) = build(&ids, false);
        let mut edited = ids.clone();
        edited[100_000] = id(9_999_999);
        edited.insert(150_000, id(8_888_888));
        let (_, after) = build(&edited, false);
        let new = after.keys().filter(|k| !before.contains_key(k)).count();
        assert!(new <= 8, "{new} of {} list blobs are new", after.len());
        assert!(after.len() > 500);
    }

    /// One edit of a list of ids: what a changed region of a dump does to
    /// its chunks.
    #[derive(Debug, Clone)]
    enum Edit {
        Replace(usize, u64),
        Insert(usize, u64),
        Delete(usize),
    }

    fn edit_strategy() -> impl proptest::strategy::Strategy<Value = Edit> {
        use proptest::prelude::*;
        prop_oneof![
            (any::<usize>(), any::<u64>()).prop_map(|(i, v)| Edit::Replace(i, v)),
            (any::<usize>(), any::<u64>()).prop_map(|(i, v)| Edit::Insert(i, v)),
            any::<usize>().prop_map(Edit::Delete),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn random_lists_round_trip(n in 0usize..40_000, seed in proptest::prelude::any::<u64>()) {
            let ids: Vec<BlobId> = (0..n as u64).map(|i| id(i ^ seed.rotate_left(17))).collect();
            let (c, blobs) = build(&ids, false);
            proptest::prop_assert!(c.ids.len() <= MAX_LIST);
            proptest::prop_assert!(c.levels <= MAX_LEVELS);
            proptest::prop_assert!(blobs.values().all(|b| !b.is_empty() && b.len() / 32 <= MAX_LIST));
            proptest::prop_assert_eq!(expand(&c, &blobs), ids);
        }

        #[test]
        fn an_edited_list_shares_all_but_a_few_list_blobs(
            n in 2_000usize..40_000,
            seed in proptest::prelude::any::<u64>(),
            edits in proptest::collection::vec(edit_strategy(), 1..4),
        ) {
            let ids: Vec<BlobId> = (0..n as u64).map(|i| id(i ^ seed.rotate_left(17))).collect();
            let (c, before) = build(&ids, false);
            let mut edited = ids.clone();
            for e in &edits {
                match *e {
                    Edit::Replace(i, v) => { let at = i % edited.len(); edited[at] = id(v); }
                    Edit::Insert(i, v) => edited.insert(i % (edited.len() + 1), id(v)),
                    Edit::Delete(i) => { edited.remove(i % edited.len()); }
                }
            }
            let (c2, after) = build(&edited, false);
            proptest::prop_assert_eq!(expand(&c2, &after), edited);
            // Each edit changes the list around it on each level, and may
            // split it or merge it with a neighbour: two lists a level.
            let levels = usize::from(c.levels.max(c2.levels)) + 1;
            let new = after.keys().filter(|k| !before.contains_key(k)).count();
            proptest::prop_assert!(
                new <= edits.len() * 2 * levels,
                "{} new of {} list blobs after {} edits, {} levels", new, after.len(), edits.len(), levels
            );
        }
    }

    #[test]
    fn corrupt_lists_are_refused() {
        let l = id(1);
        assert!(decode(&l, &[]).is_err());
        assert!(decode(&l, &[0; 33]).is_err());
        assert!(decode(&l, &vec![0; 32 * (MAX_LIST + 1)]).is_err());
        assert_eq!(decode(&l, &[7; 64]).unwrap().len(), 2);
    }
}
