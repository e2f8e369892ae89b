//! Content-defined chunking: FastCDC 2020 with a secret gear table, or
//! row-aligned cut points for text streams ([`lines`]).
//!
//! We use the `fastcdc` crate's cut-point function with a gear table XORed with
//! the repository's secret 64-bit seed, so chunk boundaries (and so chunk sizes)
//! do not fingerprint known files; the row rule keys its line hash the same
//! way. The crate's own `StreamCDC` allocates a new `Vec` per chunk;
//! [`ChunkReader`] instead hands out slices of one reusable buffer, which
//! matters at tens of thousands of chunks per second.

use std::io::{self, Read};
use std::sync::Arc;

use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};

mod lines;

use crate::format::config::{ChunkerParams, CutRule};
use lines::LineCut;

/// First buffer size for a new reader.
const INITIAL_BUFFER: usize = 128 * 1024;

/// Cut-point parameters plus the seeded gear tables; cheap to clone.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
    gear: Arc<(Vec<u64>, Vec<u64>)>,
    lines: Option<Arc<LineCut>>,
}

/// What keys a repository's chunker (FORMAT.md section 13).
#[derive(Clone, Copy)]
pub enum ChunkerSecret {
    /// v1: a 64-bit seed XORed into FastCDC's public gear table and used as
    /// the line hash's seed. A few dozen observed cut points of known
    /// content pin it down bit by bit (eprint 2025/532 and 2025/558).
    Seed(u64),
    /// v2: a 256-bit key from which the whole gear table (16,384 secret
    /// bits) and the line rule's PRF key are derived.
    Key([u8; 32]),
}

impl From<u64> for ChunkerSecret {
    fn from(seed: u64) -> Self {
        Self::Seed(seed)
    }
}

/// The gear table of a v2 repository and its shifted copy (FastCDC's
/// `GEAR_LS` is `GEAR << 1`): 256 words of BLAKE3's XOF in derive-key mode.
fn keyed_gear(key: &[u8; 32]) -> (Vec<u64>, Vec<u64>) {
    let mut bytes = [0u8; 256 * 8];
    blake3::Hasher::new_derive_key("salvor v2 gear table")
        .update(key)
        .finalize_xof()
        .fill(&mut bytes);
    let gear: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
        .collect();
    let shifted = gear.iter().map(|g| g << 1).collect();
    (gear, shifted)
}

impl Chunker {
    /// A chunker for `params` keyed by the repository's secret.
    pub fn new(params: ChunkerParams, secret: impl Into<ChunkerSecret>) -> Self {
        let secret = secret.into();
        let (mask_s, mask_l) = select_masks(params.avg as usize, Normalization::Level1);
        let gear = match &secret {
            ChunkerSecret::Seed(seed) => {
                let (g, gls) = get_gear_with_seed(*seed);
                (g.into_owned(), gls.into_owned())
            }
            ChunkerSecret::Key(key) => keyed_gear(key),
        };
        Self {
            params,
            mask_s,
            mask_l,
            gear: Arc::new(gear),
            lines: (params.cut == CutRule::Lines).then(|| {
                let [min, avg, max] = [params.min, params.avg, params.max].map(|v| v as usize);
                Arc::new(LineCut::new(min, avg, max, secret))
            }),
        }
    }

    /// The size parameters.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the next chunk at the start of `data`, or `None` when more
    /// input is needed to decide (not at EOF and less than `max` buffered).
    pub fn next_cut(&self, data: &[u8], eof: bool) -> Option<usize> {
        if data.is_empty() || (!eof && data.len() < self.params.max as usize) {
            return None;
        }
        if data.len() <= self.params.min as usize {
            return Some(data.len());
        }
        if let Some(len) = self.lines.as_ref().and_then(|l| l.cut(data)) {
            return Some(len);
        }
        let (_, len) = cut_gear(
            data,
            self.params.min as usize,
            self.params.avg as usize,
            self.params.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear.0,
            &self.gear.1,
        );
        Some(len)
    }
}

/// Splits a reader into chunks, reusing one buffer.
pub struct ChunkReader<'c, R> {
    reader: R,
    chunker: &'c Chunker,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Bytes read from the reader so far.
    pub bytes_read: u64,
}

impl<'c, R: Read> ChunkReader<'c, R> {
    /// Wraps `reader`; `buf` is reused storage (its contents are discarded).
    pub fn new(reader: R, chunker: &'c Chunker, mut buf: Vec<u8>) -> Self {
        // Start small and grow only for inputs that need it: most files are
        // far smaller than the buffer a large file wants, and a zero-filled
        // buffer is resident memory.
        if buf.is_empty() {
            buf.resize(INITIAL_BUFFER.min(Self::wanted(chunker)), 0);
        }
        Self {
            reader,
            chunker,
            buf,
            start: 0,
            end: 0,
            eof: false,
            bytes_read: 0,
        }
    }

    /// Largest buffer: room for several maximal chunks, so most refills are large reads.
    fn wanted(chunker: &Chunker) -> usize {
        (chunker.params.max as usize * 4).max(1 << 20)
    }

    /// Returns the buffer for reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let wanted = Self::wanted(self.chunker);
        loop {
            while !self.eof && self.end < self.buf.len() {
                self.read_some()?;
            }
            if self.eof || self.buf.len() >= wanted {
                return Ok(());
            }
            let grown = (self.buf.len() * 2).min(wanted);
            self.buf.resize(grown, 0);
        }
    }

    fn read_some(&mut self) -> io::Result<()> {
        match self.reader.read(&mut self.buf[self.end..]) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                self.end += n;
                self.bytes_read += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Up to `max` next chunks as one run of the buffer, their lengths in
    /// `lens` (cleared first); `None` at the end of input. Chunks come in
    /// batches so their ids can be hashed side by side.
    ///
    /// # Errors
    /// Read errors from the underlying reader.
    pub fn next_chunks(&mut self, max: usize, lens: &mut Vec<usize>) -> io::Result<Option<&[u8]>> {
        lens.clear();
        if !self.eof && self.end - self.start < self.chunker.params.max as usize {
            self.fill()?;
        }
        let begin = self.start;
        while lens.len() < max {
            let Some(len) = self
                .chunker
                .next_cut(&self.buf[self.start..self.end], self.eof)
            else {
                break;
            };
            lens.push(len);
            self.start += len;
        }
        Ok((!lens.is_empty()).then(|| &self.buf[begin..self.start]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ChunkerParams {
        ChunkerParams {
            min: 2048,
            avg: 8192,
            max: 32768,
            cut: CutRule::Gear,
        }
    }

    fn line_params() -> ChunkerParams {
        ChunkerParams {
            cut: CutRule::Lines,
            ..params()
        }
    }

    /// Text like a dump: rows of 20 to 275 printable bytes, one per line.
    fn rows(n: usize) -> Vec<u8> {
        let noise = data(n);
        let mut out = Vec::with_capacity(n);
        let mut i = 0;
        while out.len() < n {
            let len = 20 + noise[i % n] as usize;
            for k in 0..len {
                out.push(b'a' + noise[(i + k * 7 + 1) % n] % 26);
            }
            out.push(b'\n');
            i += 1;
        }
        out.truncate(n);
        out
    }

    fn data(n: usize) -> Vec<u8> {
        let mut x: u64 = 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks(c: &Chunker, d: &[u8]) -> Vec<Vec<u8>> {
        let mut r = ChunkReader::new(d, c, Vec::new());
        let mut out = Vec::new();
        let mut lens = Vec::new();
        // Batches of 3 exercise both a batch ending mid-buffer and at a refill.
        while let Some(run) = r.next_chunks(3, &mut lens).unwrap() {
            let mut at = 0;
            for &len in &lens {
                out.push(run[at..at + len].to_vec());
                at += len;
            }
            assert_eq!(at, run.len());
        }
        out
    }

    /// The chunks of `d`, checked: they concatenate to `d`, and every one but
    /// the last lies within the test params' min and max.
    fn checked_chunks(c: &Chunker, d: &[u8]) -> Vec<Vec<u8>> {
        let cs = chunks(c, d);
        assert_eq!(cs.concat(), d);
        for ch in &cs[..cs.len() - 1] {
            assert!((2048..=32768).contains(&ch.len()), "chunk of {}", ch.len());
        }
        cs
    }

    #[test]
    fn chunks_concatenate_to_input_and_respect_bounds() {
        let c = Chunker::new(params(), 42);
        let d = data(1 << 20);
        let cs = checked_chunks(&c, &d);
        let avg = d.len() / cs.len();
        assert!((4096..20000).contains(&avg), "average {avg}");
        assert!(chunks(&c, &[]).is_empty());
    }

    #[test]
    fn insertion_shifts_only_nearby_chunks() {
        // Binary data too: under the lines rule its bytes 0x0a act as line ends.
        for p in [params(), line_params()] {
            let new = new_chunks_after_insert(
                &Chunker::new(p, 7),
                &data(1 << 20),
                500_000,
                b"inserted bytes",
            );
            assert!(new <= 3, "{p:?}: {new} new chunks");
        }
    }

    /// How many chunks of `d` with `insert` spliced in at `at` are not chunks of `d`.
    fn new_chunks_after_insert(c: &Chunker, d: &[u8], at: usize, insert: &[u8]) -> usize {
        let mut e = d.to_vec();
        e.splice(at..at, insert.iter().copied());
        let before: std::collections::HashSet<_> = chunks(c, d).into_iter().collect();
        chunks(c, &e)
            .iter()
            .filter(|x| !before.contains(*x))
            .count()
    }

    #[test]
    fn seed_changes_boundaries() {
        for (p, d) in [(params(), data(1 << 20)), (line_params(), rows(1 << 20))] {
            assert_ne!(
                chunks(&Chunker::new(p, 1), &d),
                chunks(&Chunker::new(p, 2), &d)
            );
            let keyed = |k: u8| chunks(&Chunker::new(p, ChunkerSecret::Key([k; 32])), &d);
            assert_ne!(keyed(1), keyed(2));
            assert_eq!(keyed(1), keyed(1));
        }
    }

    #[test]
    fn keyed_chunkers_keep_their_sizes_and_insert_locality() {
        for (p, d) in [(params(), data(4 << 20)), (line_params(), rows(4 << 20))] {
            let c = Chunker::new(p, ChunkerSecret::Key([5; 32]));
            let cs = checked_chunks(&c, &d);
            let mean = d.len() / cs.len();
            let avg = p.avg as usize;
            assert!(mean > avg / 2 && mean < avg * 2, "{p:?}: mean {mean}");
            assert!(new_chunks_after_insert(&c, &d, d.len() / 3, b" changed") <= 3);
        }
    }

    #[test]
    fn line_rule_cuts_after_newlines_near_the_average() {
        let c = Chunker::new(line_params(), 42);
        let d = rows(4 << 20);
        let cs = checked_chunks(&c, &d);
        assert_eq!(cs, chunks(&c, &d), "deterministic");
        // Only where no line cut in [min, max] (e^-5 of chunks here) does
        // the gear decide.
        let mid_line = cs.iter().filter(|ch| ch.last() != Some(&b'\n')).count();
        assert!(
            mid_line * 50 <= cs.len(),
            "{mid_line} of {} cut mid-line",
            cs.len()
        );
        // The mean is about avg plus half a line: each byte past min cuts
        // with probability 1 / (avg - min).
        let mean = d.len() / cs.len();
        assert!((7000..10000).contains(&mean), "mean {mean}");
    }

    #[test]
    fn line_rule_resyncs_after_an_edited_row() {
        let d = rows(1 << 20);
        // Lengthen one row in the middle, as an UPDATE does.
        let at = 500_000 + memchr::memchr(b'\n', &d[500_000..]).unwrap();
        let new = new_chunks_after_insert(&Chunker::new(line_params(), 7), &d, at, b" changed");
        assert!(new <= 2, "{new} new chunks");
    }

    #[test]
    fn line_rule_falls_back_to_the_gear_without_newlines() {
        let d: Vec<u8> = data(1 << 20).iter().map(|b| b | 0x80).collect();
        let by_lines = chunks(&Chunker::new(line_params(), 9), &d);
        assert_eq!(by_lines, chunks(&Chunker::new(params(), 9), &d));
        assert!(by_lines.len() > 30, "{} chunks", by_lines.len());
    }
}
