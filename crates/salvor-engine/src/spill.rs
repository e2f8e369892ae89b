//! Sorted runs of blob ids on disk, memory-mapped, each with a Bloom filter:
//! what keeps a backup's memory flat however many blobs it indexes or adds.
//!
//! The index of a repository and the set of blobs a backup has queued both
//! grow by 32 bytes or more per blob, which is 2.5 GB for 10M blobs in peers'
//! layouts. Here both keep at most [`SPILL_AT`] entries in memory; beyond
//! that the entries are sorted and written to an unlinked temporary file
//! (in the local cache when there is one), mapped read-only, so their pages
//! are file-backed: the kernel can drop and re-read them, and a container's
//! OOM killer, which counts anonymous memory, does not see them. A lookup
//! first asks each run's Bloom filter (10 bits per id resident, about 1%
//! false positives), so an absent id, the common case in a backup, touches
//! no mapped page. Runs are merged as they accumulate ([`push_run`]).
//!
//! Written by hand: ids are already uniform keyed hashes, so the filter takes
//! its bit positions straight from them, and the runs are plain sorted
//! arrays; the on-disk map and filter crates would hash again and bring
//! their own formats.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::id::BlobId;
use crate::index::IdSet;

/// Entries held in memory before they are spilled into a run.
pub const SPILL_AT: usize = 64 * 1024;

/// A Bloom filter over ids: 10 bits an id, 7 probes, positions from the id's
/// own bytes (double hashing of two 64-bit words).
struct Bloom {
    bits: Vec<u64>,
    /// Number of bits.
    m: u64,
}

impl Bloom {
    fn new(entries: usize) -> Self {
        let words = (entries.max(1) * 10).div_ceil(64);
        Self {
            bits: vec![0; words],
            m: words as u64 * 64,
        }
    }

    /// Bytes 8..24 of the id: bytes 0..8 already pick the id's bucket in
    /// the in-memory maps, and every byte of a keyed hash is uniform.
    fn positions(&self, id: &[u8]) -> [u64; 7] {
        let word = |i: usize| u64::from_le_bytes(id[i..i + 8].try_into().expect("8 bytes"));
        let (h1, h2) = (word(8), word(16) | 1);
        // Lemire's multiply-shift maps a uniform word onto [0, m) without a
        // division, so the filter needs no power-of-two size.
        std::array::from_fn(|i| {
            let h = h1.wrapping_add((i as u64).wrapping_mul(h2));
            ((u128::from(h) * u128::from(self.m)) >> 64) as u64
        })
    }

    fn insert(&mut self, id: &[u8]) {
        for p in self.positions(id) {
            self.bits[(p / 64) as usize] |= 1 << (p % 64);
        }
    }

    fn may_contain(&self, id: &[u8]) -> bool {
        self.positions(id)
            .iter()
            .all(|p| self.bits[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }
}

/// One sorted run: records of `rec` bytes, the first 32 the id, ascending
/// and unique by id, in a mapped unlinked file.
pub struct Run {
    map: memmap2::Mmap,
    rec: usize,
    len: usize,
    bloom: Bloom,
}

impl Run {
    /// Writes `records` (sorted, unique by id, each `rec` bytes) into a new
    /// run under `dir`.
    ///
    /// # Errors
    /// When the temporary file cannot be written or mapped (a full disk).
    pub fn write<R: AsRef<[u8]>>(
        dir: &Path,
        rec: usize,
        len: usize,
        records: impl Iterator<Item = R>,
    ) -> Result<Self> {
        let io = |e: std::io::Error| {
            Error::io("cannot write a spill file of the index", dir, e)
                .without_hint()
                .remedy(crate::Remedy::MoreCacheSpace)
        };
        let file = tempfile::tempfile_in(dir).map_err(io)?;
        let mut bloom = Bloom::new(len);
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &file);
        let mut n = 0;
        for r in records {
            let r = r.as_ref();
            debug_assert_eq!(r.len(), rec);
            bloom.insert(&r[..32]);
            out.write_all(r).map_err(io)?;
            n += 1;
        }
        out.flush().map_err(io)?;
        drop(out);
        // SAFETY: the file is unlinked and private to this process, and is
        // never written again, so the mapping cannot change under us.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Ok(Self {
            map,
            rec,
            len: n,
            bloom,
        })
    }

    /// Maps `len` records of `rec` bytes that start at `offset` in `file`
    /// (the persisted index table of the cache, already verified) and
    /// builds their filter. The records must be sorted and unique by id,
    /// and the file must never change while mapped.
    ///
    /// # Errors
    /// When the file cannot be mapped or is shorter than the records.
    pub fn map_file(file: &std::fs::File, offset: u64, rec: usize, len: usize) -> Result<Self> {
        let bytes = rec
            .checked_mul(len)
            .ok_or_else(|| Error::corrupt("run too large"))?;
        // SAFETY: the caller's file is never written again once made (the
        // cache replaces such files by rename, never in place).
        #[allow(unsafe_code)]
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(bytes)
                .map(file)
        }
        .map_err(|e| {
            Error::new(crate::ErrorKind::Backend, "cannot map a cached index table").source(e)
        })?;
        let mut bloom = Bloom::new(len);
        for r in map.chunks_exact(rec) {
            bloom.insert(&r[..32]);
        }
        Ok(Self {
            map,
            rec,
            len,
            bloom,
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the run is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Record `i`.
    pub fn record(&self, i: usize) -> &[u8] {
        &self.map[i * self.rec..(i + 1) * self.rec]
    }

    /// The record of `id`, if present.
    pub fn get(&self, id: &BlobId) -> Option<&[u8]> {
        if !self.bloom.may_contain(&id.0) {
            return None;
        }
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let r = self.record(mid);
            match r[..32].cmp(&id.0[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(r),
            }
        }
        None
    }

    /// Every record, in id order.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        self.map.chunks_exact(self.rec)
    }
}

/// Adds a newly written run, then merges the newest runs while the newest
/// is at least half the size of the one before: like a binary counter, this
/// keeps about log2(entries / batch) runs and writes each entry a
/// logarithmic number of times (merging every run whenever there were too
/// many rewrote everything at each step: 30 s to load a 10M-blob index).
/// Runs stay in the order they were written, so "the earliest wins" holds.
///
/// # Errors
/// As [`Run::write`]; the runs are then left as they were, still correct.
pub fn push_run(dir: &Path, runs: &mut Vec<Run>, run: Run) -> Result<()> {
    runs.push(run);
    while runs.len() >= 2 && runs[runs.len() - 1].len() * 2 >= runs[runs.len() - 2].len() {
        let tail = runs.len() - 2;
        let merged = merge(dir, &runs[tail..])?;
        runs.truncate(tail);
        runs.push(merged);
    }
    Ok(())
}

/// Merges runs into one; for an id in several, the record of the earliest
/// run wins.
///
/// # Errors
/// As [`Run::write`].
pub fn merge(dir: &Path, runs: &[Run]) -> Result<Run> {
    let rec = runs.first().map_or(32, |r| r.rec);
    let total = runs.iter().map(Run::len).sum();
    let refs: Vec<&Run> = runs.iter().collect();
    Run::write(dir, rec, total, merged(&refs))
}

/// The records of `runs` in id order, each id once, from the earliest run
/// that has it. A heap of the runs' heads, so that merging the hundreds of
/// runs a large index is loaded into costs one pass.
pub fn merged<'a>(runs: &[&'a Run]) -> impl Iterator<Item = &'a [u8]> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    // (id, run number, position): equal ids pop the earliest run first.
    let runs: Vec<&'a Run> = runs.to_vec();
    let mut heap: BinaryHeap<Reverse<(&'a [u8], usize, usize)>> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .map(|(i, r)| Reverse((&r.record(0)[..32], i, 0)))
        .collect();
    let mut last: Option<&'a [u8]> = None;
    std::iter::from_fn(move || {
        loop {
            let Reverse((id, i, p)) = heap.pop()?;
            let r: &'a Run = runs[i];
            if p + 1 < r.len() {
                heap.push(Reverse((&r.record(p + 1)[..32], i, p + 1)));
            }
            if last != Some(id) {
                last = Some(id);
                return Some(r.record(p));
            }
        }
    })
}

/// A set of ids that spills to disk: what a backup has queued for storage,
/// and what a prune finds the snapshots use.
pub struct SpillSet {
    mem: IdSet<BlobId>,
    runs: Vec<Run>,
    dir: Option<PathBuf>,
    spill_at: usize,
}

impl SpillSet {
    /// An empty set spilling into `dir`; without a directory it stays in
    /// memory.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self::with_threshold(dir, SPILL_AT)
    }

    /// [`SpillSet::new`] spilling every `spill_at` ids (tests).
    pub fn with_threshold(dir: Option<PathBuf>, spill_at: usize) -> Self {
        Self {
            mem: IdSet::default(),
            runs: Vec::new(),
            dir,
            spill_at: spill_at.max(1),
        }
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.mem.contains(id) || self.runs.iter().any(|r| r.get(id).is_some())
    }

    /// Adds `id`; true when it was not there yet. A spill file that cannot
    /// be written (a full disk) is logged once and the set stays in memory:
    /// more memory, never a wrong answer.
    pub fn insert(&mut self, id: BlobId) -> bool {
        if self.contains(&id) {
            return false;
        }
        self.mem.insert(id);
        if self.mem.len() >= self.spill_at
            && let Some(dir) = self.dir.clone()
            && let Err(e) = self.spill(&dir)
        {
            tracing::warn!("a set of blob ids stays in memory: {e}");
            self.dir = None;
        }
        true
    }

    fn spill(&mut self, dir: &Path) -> Result<()> {
        let mut ids: Vec<BlobId> = self.mem.iter().copied().collect();
        ids.sort_unstable();
        let run = Run::write(dir, 32, ids.len(), ids.iter().map(|i| i.0))?;
        // The cleared map keeps its capacity: the next batch reuses it.
        self.mem.clear();
        push_run(dir, &mut self.runs, run)
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.mem.len() + self.runs.iter().map(Run::len).sum::<usize>()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of runs on disk.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Every id once, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = BlobId> + '_ {
        let spilled = self.runs.iter().flat_map(|r| {
            r.records()
                .map(|rec| BlobId(rec.try_into().expect("32-byte records")))
        });
        self.mem.iter().copied().chain(spilled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> BlobId {
        BlobId(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    #[test]
    fn a_spilling_set_answers_like_a_set_across_runs_and_merges() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SpillSet::with_threshold(Some(dir.path().into()), 100);
        for n in 0..2_500 {
            assert!(s.insert(id(n)), "{n} is new");
        }
        for n in (0..2_500).step_by(7) {
            assert!(!s.insert(id(n)), "{n} again");
        }
        assert_eq!(s.len(), 2_500);
        // 25 batches of 100: a binary counter keeps a handful of runs.
        assert!(s.runs() >= 1 && s.runs() <= 6, "{} runs", s.runs());
        assert!((0..2_500).all(|n| s.contains(&id(n))));
        assert!((2_500..12_500).all(|n| !s.contains(&id(n))));
        let mut all: Vec<BlobId> = s.iter().collect();
        all.sort_unstable();
        let mut want: Vec<BlobId> = (0..2_500).map(id).collect();
        want.sort_unstable();
        assert!(all == want, "iter yields every id once");
        // Nothing is left on disk: the files were unlinked at creation.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_filter_rules_out_almost_every_absent_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids: Vec<[u8; 32]> = (0..10_000).map(|n| id(n).0).collect();
        ids.sort_unstable();
        let run = Run::write(dir.path(), 32, ids.len(), ids.iter()).unwrap();
        let false_positives = (10_000..110_000)
            .filter(|n| run.bloom.may_contain(&id(*n).0))
            .count();
        assert!(false_positives < 2_000, "{false_positives} of 100000");
        assert!(ids.iter().all(|i| run.bloom.may_contain(i)));
    }

    #[test]
    fn merge_keeps_the_earliest_runs_record_and_sorts() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |n: u64, tag: u8| {
            let mut r = id(n).0.to_vec();
            r.push(tag);
            r
        };
        let mut a: Vec<Vec<u8>> = (0..50).map(|n| rec(n, 1)).collect();
        let mut b: Vec<Vec<u8>> = (25..80).map(|n| rec(n, 2)).collect();
        a.sort();
        b.sort();
        let ra = Run::write(dir.path(), 33, a.len(), a.iter().map(Vec::as_slice)).unwrap();
        let rb = Run::write(dir.path(), 33, b.len(), b.iter().map(Vec::as_slice)).unwrap();
        let m = merge(dir.path(), &[ra, rb]).unwrap();
        assert_eq!(m.len(), 80);
        let all: Vec<&[u8]> = m.records().collect();
        assert!(all.windows(2).all(|w| w[0][..32] < w[1][..32]));
        for n in 0..80 {
            let r = m.get(&id(n)).unwrap();
            assert_eq!(r[32], if n < 50 { 1 } else { 2 }, "{n}");
        }
        assert!(m.get(&id(1000)).is_none());
    }
}
