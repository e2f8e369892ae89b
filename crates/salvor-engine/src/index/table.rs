//! The blob table of an [`super::Index`]: id → location, sorted, in memory
//! up to [`SPILL_AT`] entries and beyond that in mapped runs on disk
//! ([`crate::spill`]), so that the resident part of a 10M-blob index is its
//! Bloom filter (12 MiB) and one batch, not 480 MB of entries.

use std::path::PathBuf;

use super::BlobLocation;
use crate::format::pack::BlobKind;
use crate::id::BlobId;
use crate::spill::{Run, SPILL_AT, merge, merged};

/// Bytes of a location in a run: frame, offset, length (u32 LE each), kind,
/// reusable, two zero bytes.
const LOC: usize = 16;
/// Bytes of a record: the id, then its location.
pub const REC: usize = 32 + LOC;

fn encode(id: &BlobId, l: &BlobLocation) -> [u8; REC] {
    let mut r = [0u8; REC];
    r[..32].copy_from_slice(&id.0);
    r[32..36].copy_from_slice(&l.frame.to_le_bytes());
    r[36..40].copy_from_slice(&l.offset.to_le_bytes());
    r[40..44].copy_from_slice(&l.length.to_le_bytes());
    r[44] = u8::from(l.kind == BlobKind::Tree);
    r[45] = u8::from(l.reusable);
    r
}

fn decode(r: &[u8]) -> (BlobId, BlobLocation) {
    let word = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().expect("4 bytes"));
    let mut id = [0u8; 32];
    id.copy_from_slice(&r[..32]);
    (
        BlobId(id),
        BlobLocation {
            frame: word(32),
            offset: word(36),
            length: word(40),
            kind: if r[44] == 1 {
                BlobKind::Tree
            } else {
                BlobKind::Data
            },
            reusable: r[45] == 1,
        },
    )
}

/// Blob locations by id.
#[derive(Default)]
pub struct BlobTable {
    /// Entries not yet in a run; sorted and unique once `finish` ran.
    mem: Vec<(BlobId, BlobLocation)>,
    /// Runs in the order they were written; after `finish`, at most one
    /// besides the base.
    runs: Vec<Run>,
    /// Whether `runs[0]` is a base that is never merged: the index table
    /// persisted in the cache, which would cost a rewrite of every entry.
    based: bool,
    /// Where runs go; `None` keeps everything in memory.
    dir: Option<PathBuf>,
    /// Entries were added since the last `finish`.
    unsorted: bool,
    count: usize,
}

impl BlobTable {
    /// A table that spills into `dir`.
    pub fn spilling(dir: PathBuf) -> Self {
        Self {
            dir: Some(dir),
            ..Self::default()
        }
    }

    /// A table whose first entries are `base` (sorted, unique, mapped from
    /// the cache), spilling what is added later into `dir`.
    pub fn with_base(dir: PathBuf, base: Run) -> Self {
        Self {
            count: base.len(),
            runs: vec![base],
            based: true,
            dir: Some(dir),
            ..Self::default()
        }
    }

    /// Sorts `mem` by id, keeping each id's first location (frame numbers
    /// grow in the order packs were added).
    fn sort_mem(&mut self) {
        self.mem
            .sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.frame.cmp(&b.1.frame)));
        self.mem.dedup_by(|later, first| later.0 == first.0);
    }

    /// Adds an entry; call [`BlobTable::finish`] before looking up.
    pub fn push(&mut self, id: BlobId, loc: BlobLocation) {
        self.mem.push((id, loc));
        self.unsorted = true;
        if self.mem.len() >= SPILL_AT
            && let Some(dir) = self.dir.clone()
        {
            self.sort_mem();
            let len = self.mem.len();
            let run = Run::write(&dir, REC, len, self.mem.iter().map(|(i, l)| encode(i, l)));
            // No merging while loading: nothing is looked up before
            // `finish`, which merges every run in one pass.
            match run {
                Ok(r) => {
                    self.mem.clear();
                    self.runs.push(r);
                }
                Err(e) => {
                    tracing::warn!("the index stays in memory: {e}");
                    self.dir = None;
                }
            }
        }
    }

    /// Sorts what was added and merges the runs into one.
    pub fn finish(&mut self) {
        if !self.unsorted {
            return;
        }
        self.sort_mem();
        let first = usize::from(self.based);
        if self.runs.len() > first + 1
            && let Some(dir) = &self.dir
        {
            match merge(dir, &self.runs[first..]) {
                Ok(m) => {
                    self.runs.truncate(first);
                    self.runs.push(m);
                }
                Err(e) => tracing::warn!("the index's runs stay unmerged: {e}"),
            }
        }
        // An id in several runs, or in a run and in `mem`, is counted (and
        // found) once, in the earliest run. Runs other than a base are
        // merged, so only a base makes runs overlap.
        let runs = &self.runs;
        let mut count = runs.first().map_or(0, Run::len);
        for (k, r) in runs.iter().enumerate().skip(1) {
            let earlier = &runs[..k];
            count += r
                .records()
                .filter(|rec| {
                    let id = decode(rec).0;
                    earlier.iter().all(|e| e.get(&id).is_none())
                })
                .count();
        }
        count += self
            .mem
            .iter()
            .filter(|(id, _)| runs.iter().all(|r| r.get(id).is_none()))
            .count();
        self.count = count;
        self.unsorted = false;
    }

    /// The location of `id`; earlier runs win, as earlier packs do.
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        assert!(
            !self.unsorted,
            "the index was searched before Index::finish"
        );
        for r in &self.runs {
            if let Some(rec) = r.get(id) {
                return Some(decode(rec).1);
            }
        }
        self.mem
            .binary_search_by(|(k, _)| k.cmp(id))
            .ok()
            .map(|i| self.mem[i].1)
    }

    /// Number of distinct blobs.
    pub fn len(&self) -> usize {
        assert!(!self.unsorted, "the index was read before Index::finish");
        self.count
    }

    /// Every blob once, with its location (each run in id order, then the
    /// rest).
    pub fn iter(&self) -> impl Iterator<Item = (BlobId, BlobLocation)> + '_ {
        assert!(!self.unsorted, "the index was read before Index::finish");
        let runs = &self.runs;
        runs.iter()
            .enumerate()
            .flat_map(move |(k, r)| {
                r.records()
                    .map(decode)
                    .filter(move |(id, _)| runs[..k].iter().all(|e| e.get(id).is_none()))
            })
            .chain(
                self.mem
                    .iter()
                    .filter(move |(id, _)| runs.iter().all(|r| r.get(id).is_none()))
                    .copied(),
            )
    }

    /// Writes every blob once, in id order, as records of [`REC`] bytes
    /// (what [`BlobTable::with_base`] maps again); returns how many.
    ///
    /// # Errors
    /// When `out` fails, or the entries held in memory cannot be spilled.
    pub fn write_sorted(&self, out: &mut impl std::io::Write) -> crate::Result<usize> {
        assert!(!self.unsorted, "the index was read before Index::finish");
        let dir = self.dir.clone().unwrap_or_else(std::env::temp_dir);
        let mem = Run::write(
            &dir,
            REC,
            self.mem.len(),
            self.mem.iter().map(|(i, l)| encode(i, l)),
        )?;
        let mut all: Vec<&Run> = self.runs.iter().collect();
        all.push(&mem);
        let mut n = 0;
        for r in merged(&all) {
            out.write_all(r).map_err(|e| {
                crate::Error::new(crate::ErrorKind::Backend, "cannot write the index table")
                    .source(e)
            })?;
            n += 1;
        }
        Ok(n)
    }
}
