//! `config`: repository-wide parameters, sealed under the master key.

use serde::{Deserialize, Serialize};

/// Chunk sizes in bytes, and the rule that picks cut points between them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    /// Smallest chunk (except a stream's last).
    pub min: u32,
    /// Target average.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
    /// How cut points are chosen. Absent in repositories made before the
    /// `lines` rule existed, which therefore keep chunking as they did.
    #[serde(default, skip_serializing_if = "CutRule::is_gear")]
    pub cut: CutRule,
}

/// The rule that picks cut points (docs/FORMAT.md, section 13).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CutRule {
    /// FastCDC 2020's gear hash at any byte.
    #[default]
    Gear,
    /// Only after a `\n`, from a keyed hash of the line; the gear rule where
    /// no line ends in range. Text dumps change row by row, so row-aligned
    /// chunks dedup better, and are found faster.
    Lines,
}

impl CutRule {
    fn is_gear(&self) -> bool {
        *self == Self::Gear
    }
}

/// The repository configuration document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepoConfig {
    /// Format version of the repository as a whole.
    pub version: u8,
    /// Random repository id (hex), stable across key changes.
    pub id: String,
    /// Chunking of regular files.
    pub file_chunker: ChunkerParams,
    /// Chunking of streams (dumps, stdin): smaller chunks dedup day-to-day dumps.
    pub stream_chunker: ChunkerParams,
    /// Raw bytes collected into one compressed, encrypted frame.
    pub frame_target: u32,
    /// Stored bytes after which a pack is closed.
    pub pack_target: u32,
    /// zstd level for file and tree frames.
    pub compression_level: i32,
    /// zstd level for stream frames: dumps are large and often compress as
    /// well or better at level 1 (measured on pg_dump output: smaller and 2x faster).
    pub stream_compression_level: i32,
}

impl ChunkerParams {
    /// File chunking around an average size: min = avg/4, max = avg*4.
    ///
    /// # Errors
    /// An average outside 1 KiB..=8 MiB.
    pub fn for_files(avg: u32) -> crate::Result<Self> {
        Self::bounded(avg / 4, avg, CutRule::Gear)
    }

    /// Stream chunking around an average size: min = avg/2, max = avg*4. The
    /// cut-point search skips the first `min` bytes of every chunk and was
    /// ~15% of a dump backup's CPU; avg/2 instead of avg/4 measured 5% less
    /// CPU on the bench dump, for 1 MiB more on its 35 MiB day 2.
    ///
    /// # Errors
    /// An average outside 1 KiB..=8 MiB.
    pub fn for_streams(avg: u32, cut: CutRule) -> crate::Result<Self> {
        Self::bounded(avg / 2, avg, cut)
    }

    fn bounded(min: u32, avg: u32, cut: CutRule) -> crate::Result<Self> {
        let p = Self {
            min,
            avg,
            max: avg.saturating_mul(4),
            cut,
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks the bounds FastCDC needs.
    ///
    /// # Errors
    /// Values out of range or out of order.
    pub fn validate(&self) -> crate::Result<()> {
        if !(1024..=8 << 20).contains(&self.avg)
            || self.min < 64
            || self.min > self.avg
            || self.avg > self.max
            || self.max > 64 << 20
        {
            return Err(
                crate::Error::invalid(format!("invalid chunk sizes {self:?}"))
                    .hint("use an average between 1 KiB and 8 MiB"),
            );
        }
        Ok(())
    }
}

impl RepoConfig {
    /// Defaults chosen by benchmark (see `bench/README.md`).
    pub fn new_default() -> Self {
        Self {
            version: super::FORMAT_VERSION,
            id: crate::id::random_hex(),
            file_chunker: ChunkerParams {
                min: 128 * 1024,
                avg: 512 * 1024,
                max: 2 * 1024 * 1024,
                cut: CutRule::Gear,
            },
            // 4 KiB: a day-2 pg_dump with 1% of rows changed at scattered places keeps
            // ~75% of its chunks (16 KiB keeps ~35%); see bench/README.md. The
            // minimum is avg/2, as in `ChunkerParams::for_streams`.
            stream_chunker: ChunkerParams {
                min: 2048,
                avg: 4 * 1024,
                max: 16 * 1024,
                cut: CutRule::Lines,
            },
            frame_target: 1024 * 1024,
            pack_target: 16 * 1024 * 1024,
            compression_level: 3,
            stream_compression_level: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_without_a_cut_rule_keep_the_gear() {
        let old = r#"{"min":2048,"avg":4096,"max":16384}"#;
        let p: ChunkerParams = serde_json::from_str(old).unwrap();
        assert_eq!(p.cut, CutRule::Gear);
        assert_eq!(serde_json::to_string(&p).unwrap(), old);
        let new = RepoConfig::new_default();
        assert_eq!(new.stream_chunker.cut, CutRule::Lines);
        assert_eq!(new.file_chunker.cut, CutRule::Gear);
        let json = serde_json::to_string(&new.stream_chunker).unwrap();
        assert!(json.ends_with(r#""cut":"lines"}"#), "{json}");
        assert_eq!(
            ChunkerParams::for_streams(4096, CutRule::Lines).unwrap(),
            new.stream_chunker
        );
    }
}
