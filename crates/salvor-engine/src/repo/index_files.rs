//! Loading the index files into one [`Index`], and compacting them.
//!
//! Every backup writes at least one small index file, so a repository that
//! backs up hourly gains 8,760 of them a year, and every command reads them
//! all (against S3, one request each). A backup therefore compacts them
//! when they accumulate: it writes one file holding the packs of many small
//! ones, naming them in its `supersedes` list, and only then deletes them.
//! A crash in between leaves both, which readers resolve by ignoring the
//! superseded files; a reader that listed a file a compaction has since
//! deleted lists again and finds the file that replaced it.

use std::collections::HashSet;

use rayon::prelude::*;

use super::Repository;
use crate::backend::FileType;
use crate::error::{ErrorKind, Result};
use crate::format::index::{IndexFile, IndexPack};
use crate::id::IndexId;
use crate::index::Index;

/// Compaction starts when more than this many small index files exist.
pub const COMPACT_AT: usize = 32;
/// A sealed index file below this size is small (a few thousand blobs).
pub const SMALL_INDEX: u64 = 512 * 1024;
/// At most this many packs go into one compacted file (as `repair index`).
const PACKS_PER_FILE: usize = 256;

/// Every index record of a repository, merged (one a pack,
/// [`crate::format::index::merge_records`]), and the files they came from:
/// what a rewriter of the whole index (prune, `repair packs`) starts from.
#[derive(Debug, Default)]
pub struct IndexRecords {
    /// One record a pack.
    pub records: Vec<IndexPack>,
    /// The index files read.
    pub files: Vec<String>,
}

/// What a compaction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactStats {
    /// Index files read and removed.
    pub files_removed: u64,
    /// Index files written.
    pub files_written: u64,
}

impl Repository {
    /// Reads every index file whole ([`IndexRecords`]). A file listed and
    /// then gone was replaced by a compaction, so the listing is read again.
    ///
    /// # Errors
    /// A damaged index file ([`ErrorKind::Corrupt`], naming it): a
    /// rewrite without its records would lose them. Backend failures.
    pub fn index_records(&self) -> Result<IndexRecords> {
        for _attempt in 0..5 {
            let files: Vec<String> = self
                .backend
                .list(FileType::Index)?
                .into_iter()
                .map(|o| o.name)
                .collect();
            let mut merged = crate::format::index::RecordMerger::default();
            let mut vanished = false;
            // A few files at a time: decoded files are larger than records.
            for batch in files.chunks(2 * rayon::current_num_threads().max(1)) {
                let read: Vec<(&String, Result<IndexFile>)> = batch
                    .par_iter()
                    .map(|n| (n, self.read_index_file(n)))
                    .collect();
                for (name, file) in read {
                    match file {
                        Ok(f) => f.packs.into_iter().for_each(|p| merged.push(p)),
                        Err(e) if e.kind() == ErrorKind::NotFound => vanished = true,
                        Err(e) if e.kind() == ErrorKind::Corrupt => {
                            return Err(crate::Error::corrupt(format!(
                                "index file {name} cannot be read ({})",
                                e.without_hint()
                            ))
                            .remedy(crate::Remedy::RepairIndex));
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            if !vanished {
                return Ok(IndexRecords {
                    records: merged.finish(),
                    files,
                });
            }
        }
        Err(crate::Error::new(
            ErrorKind::Backend,
            "the index kept changing while it was read",
        )
        .hint("try again"))
    }

    /// An index of `records` as readers resolve it: records that may be
    /// reused first, so that a blob stored both in such a pack and in a
    /// marked one is found in the former.
    pub fn index_of<'a>(&self, records: impl IntoIterator<Item = &'a IndexPack>) -> Index {
        let mut index = Index::spilling(self.spill_dir());
        let mut rest = Vec::new();
        for r in records {
            if r.reusable() {
                index.add_pack(r);
            } else {
                rest.push(r);
            }
        }
        rest.into_iter().for_each(|r| index.add_pack(r));
        index.finish();
        index
    }

    /// Loads every index file (in parallel) into one in-memory index.
    ///
    /// A damaged index file does not stop a restore whose blobs other files
    /// (or no file) name: it is skipped with a warning and recorded
    /// ([`Index::damaged`]), and a blob it alone held is then reported
    /// missing with `repair index` as the way out.
    ///
    /// # Errors
    /// Backend failures other than a damaged index file.
    pub fn load_index(&self) -> Result<Index> {
        let mut listed = self.backend.list(FileType::Index)?;
        let (mut index, mut loaded) = self.open_table(&listed);
        let from_table = index.blob_count();
        let mut superseded: HashSet<IndexId> = HashSet::new();
        // A file listed but gone when read was compacted away meanwhile:
        // the file that replaced it is found by listing again.
        for _attempt in 0..5 {
            let fresh: Vec<&String> = listed
                .iter()
                .map(|o| &o.name)
                .filter(|n| !loaded.contains(*n))
                .collect();
            if fresh.is_empty() {
                break;
            }
            let vanished = self.load_files(&fresh, &mut index, &mut superseded, &mut loaded)?;
            if !vanished {
                break;
            }
            listed = self.backend.list(FileType::Index)?;
        }
        let names: HashSet<&str> = listed.iter().map(|o| o.name.as_str()).collect();
        if let Some(c) = &self.cache {
            c.retain(FileType::Index, &names);
        }
        let stale = superseded
            .iter()
            .any(|id| names.contains(id.to_hex().as_str()));
        if stale {
            // A compaction was interrupted before it deleted what it
            // merged: load again without the superseded files, so that the
            // compacted records (which may carry newer fields) are the ones
            // used. Rare, and read from the cache when there is one.
            let keep: Vec<&String> = listed
                .iter()
                .map(|o| &o.name)
                .filter(|n| IndexId::from_hex(n).map_or(true, |id| !superseded.contains(&id)))
                .collect();
            index = Index::spilling(self.spill_dir());
            let mut again = HashSet::new();
            self.load_files(&keep, &mut index, &mut HashSet::new(), &mut again)?;
            index.set_superseded(
                superseded
                    .iter()
                    .map(IndexId::to_hex)
                    .filter(|n| names.contains(n.as_str()))
                    .collect(),
            );
        }
        index.finish();
        if let Some(c) = &self.cache {
            c.retain_frames(&|id| index.has_pack(id));
        }
        self.persist_table(&index, &loaded, from_table);
        Ok(index)
    }

    /// The index persisted in the cache, if it is intact and made from
    /// index files that are all still listed, with the names of those
    /// files; else an empty index.
    fn open_table(&self, listed: &[crate::backend::ObjectInfo]) -> (Index, HashSet<String>) {
        let empty = || (Index::spilling(self.spill_dir()), HashSet::new());
        let Some(cache) = &self.cache else {
            return empty();
        };
        let path = cache.table_path();
        let Ok(file) = std::fs::File::open(&path) else {
            return empty();
        };
        match Index::open_persisted(&file, &self.key.cache_key(), self.spill_dir()) {
            Ok(Some((index, files))) => {
                let names: HashSet<&str> = listed.iter().map(|o| o.name.as_str()).collect();
                if files.iter().all(|f| names.contains(f.as_str())) {
                    return (index, files.into_iter().collect());
                }
                tracing::debug!("the cached index table is stale: a file it was made from is gone");
            }
            Ok(None) => {}
            Err(e) => tracing::debug!("cached index table: {e}"),
        }
        empty()
    }

    /// Persists `index` in the cache when it is large (spilled) and the
    /// table there is missing or covers too little of it: writing 10M
    /// blobs costs about as much as one load from the table saves.
    fn persist_table(&self, index: &Index, files: &HashSet<String>, from_table: usize) {
        let Some(cache) = &self.cache else {
            return;
        };
        let total = index.blob_count();
        let added = total.saturating_sub(from_table);
        let worth = total >= crate::spill::SPILL_AT
            && (from_table == 0 || added >= (from_table / 8).max(crate::spill::SPILL_AT));
        if !worth || !index.damaged().is_empty() || !index.superseded().is_empty() {
            return;
        }
        let tmp = cache.table_tmp_path();
        let files: Vec<String> = files.iter().cloned().collect();
        let done = index
            .persist(&tmp, &self.key.cache_key(), &files)
            .and_then(|()| {
                std::fs::rename(&tmp, cache.table_path())
                    .map_err(|e| crate::Error::io("cannot rename", &tmp, e))
            });
        if let Err(e) = done {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!("the index table is not cached: {e}");
        }
    }

    /// Reads `names` into `index`, a few at a time, so that decoded files
    /// (larger than their index entries) are not all in memory at once.
    /// Returns whether some file had vanished since it was listed.
    fn load_files(
        &self,
        names: &[&String],
        index: &mut Index,
        superseded: &mut HashSet<IndexId>,
        loaded: &mut HashSet<String>,
    ) -> Result<bool> {
        let batch = 2 * rayon::current_num_threads().max(1);
        let mut vanished = false;
        // Packs no writer may reuse (marked by a prune) are added last, so
        // that a blob also stored in a pack that may be reused is found
        // there: the first location wins, and a backup then deduplicates
        // against it instead of storing it once more.
        let mut last = Vec::new();
        for chunk in names.chunks(batch) {
            let files: Vec<(&String, Result<IndexFile>)> = chunk
                .par_iter()
                .map(|n| (*n, self.read_index_file(n)))
                .collect();
            for (name, f) in files {
                match f {
                    Ok(f) => {
                        let (reusable, marked): (Vec<_>, Vec<_>) =
                            f.packs.into_iter().partition(IndexPack::reusable);
                        reusable.iter().for_each(|p| index.add_pack(p));
                        last.extend(marked);
                        superseded.extend(f.supersedes);
                        loaded.insert(name.clone());
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => vanished = true,
                    Err(e) if e.kind() == ErrorKind::Corrupt => {
                        tracing::warn!(
                            "skipping damaged index file {name}: {}; repair index rebuilds it",
                            e.clone_message()
                        );
                        index.add_damaged(format!("index file {name}: {}", e.clone_message()));
                        loaded.insert(name.clone());
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        last.iter().for_each(|p| index.add_pack(p));
        Ok(vanished)
    }

    /// Merges small index files when more than [`COMPACT_AT`] exist, and
    /// removes the files an interrupted compaction left that `index`
    /// found superseded. Needs a lock (shared
    /// is enough: what it writes repeats records, and what it deletes is
    /// repeated in a file already durable). `v1` repositories are compacted
    /// too, without the `supersedes` list their format lacks.
    ///
    /// # Errors
    /// Backend failures; nothing is deleted before its replacement is durable.
    pub fn compact_index(&self, index: &Index) -> Result<CompactStats> {
        let mut stats = CompactStats::default();
        for name in index.superseded() {
            match self.delete_doc(FileType::Index, name) {
                Ok(()) => stats.files_removed += 1,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let listed = self.backend.list(FileType::Index)?;
        let small: Vec<&String> = listed
            .iter()
            .filter(|o| o.size < SMALL_INDEX)
            .map(|o| &o.name)
            .collect();
        if small.len() <= COMPACT_AT {
            return Ok(stats);
        }
        let mut group: Vec<IndexPack> = Vec::new();
        let mut members: Vec<&String> = Vec::new();
        for name in small {
            let file = match self.read_index_file(name) {
                Ok(f) => f,
                // Gone (another compaction) or damaged (left for `check`
                // and `repair index`): not merged, not deleted.
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Corrupt) => continue,
                Err(e) => return Err(e),
            };
            if group.len() + file.packs.len() > PACKS_PER_FILE && !members.is_empty() {
                self.write_compacted(&mut group, &mut members, &mut stats)?;
            }
            group.extend(file.packs);
            members.push(name);
        }
        if members.len() > 1 {
            self.write_compacted(&mut group, &mut members, &mut stats)?;
        }
        Ok(stats)
    }

    fn write_compacted(
        &self,
        group: &mut Vec<IndexPack>,
        members: &mut Vec<&String>,
        stats: &mut CompactStats,
    ) -> Result<()> {
        let file = IndexFile {
            packs: crate::format::index::merge_records(group.drain(..)),
            supersedes: members
                .iter()
                .filter_map(|n| IndexId::from_hex(n).ok())
                .collect(),
            extensions: Vec::new(),
        };
        let written = self.write_index(&file)?.to_hex();
        stats.files_written += 1;
        for name in members.drain(..) {
            if *name != written {
                match self.delete_doc(FileType::Index, name) {
                    Ok(()) => stats.files_removed += 1,
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}
