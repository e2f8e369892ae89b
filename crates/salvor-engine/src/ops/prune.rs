//! `prune`: delete the data no snapshot references, beside running backups.
//!
//! restic's prune takes an exclusive lock, so every backup on every host
//! waits (or fails) while it runs; kopia's waits a day or more before it
//! frees anything. Here a prune holds a shared lock like a backup and works
//! in two steps (FORMAT.md section 16 has the argument):
//!
//! 1. **Mark.** A pack no snapshot needs gets a delete mark in the index
//!    (an odd extension: no writer deduplicates against it again), and a
//!    pack mostly unused is repacked: its live blobs are copied into new
//!    packs, then it is marked.
//! 2. **Sweep.** A marked pack is deleted once every backup that could have
//!    read the index before the mark has ended: every live lock started
//!    after the mark plus [`MARK_MARGIN`]. Just before, the snapshots are
//!    read again; a marked pack that one of them needs (a backup that began
//!    before the mark deduplicated against it) is unmarked instead.
//!
//! In a quiet repository both steps run in one prune: nothing holds the
//! sweep back. While backups run, what was marked is deleted by the next
//! prune after they end, and they never wait for it.
//!
//! Order keeps every crash harmless: new packs and their index files before
//! the marks; marks before deletions; a pack deleted before the index stops
//! naming it (so no backup adopts it as unindexed); index files removed only
//! after their replacements are durable. Whatever a killed prune left, the
//! next one finishes. A damaged repository is not pruned: what prune would
//! rely on (a pack the index names, a readable snapshot or tree) is
//! missing, and deleting more could only lose more.
//!
//! v1 repositories cannot hold marks, so there prune takes an exclusive
//! lock and deletes at once, as restic does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rayon::prelude::*;

use crate::backend::FileType;
use crate::error::{Error, ErrorKind, Result};
use crate::format::index::{IndexFile, IndexPack};
use crate::format::lock::LockFile;
use crate::format::pack::BlobKind;
use crate::id::{BlobId, PackId, SnapshotId};
use crate::index::Index;
use crate::pack::{Packer, Uploader};
use crate::repo::lock::LockGuard;
use crate::repo::{BlobReader, Repository};
use crate::spill::SpillSet;

/// How long after a mark a lock must have started for its holder to be
/// known to have read the index with the mark in it: the clock skew
/// between hosts that locks already tolerate (10 minutes, section 12) plus
/// the time one index file takes to write.
pub const MARK_MARGIN: Duration = Duration::from_secs(15 * 60);
/// Packs per rewritten index file (as `repair index`).
const PACKS_PER_FILE: usize = 256;
/// A rewrite of the index that took longer than this stamps its new marks
/// again once it is done ([`rewrite_index`]).
const RESTAMP_AFTER: Duration = Duration::from_secs(60);

/// What [`prune`] is to do.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// The share of the repository's used data that may stay unused in
    /// partly used packs (restic's `--max-unused`); packs beyond it, the
    /// emptiest first, are repacked.
    pub max_unused: f64,
    /// At most this many bytes of packs are repacked in one run.
    pub max_repack_bytes: Option<u64>,
    /// Decide and report; change nothing.
    pub dry_run: bool,
    /// Snapshots to count as forgotten (a dry run of a forget followed by
    /// a prune); only with `dry_run`.
    pub assume_forgotten: Vec<SnapshotId>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            max_unused: 0.05,
            max_repack_bytes: None,
            dry_run: false,
            assume_forgotten: Vec::new(),
        }
    }
}

/// What a prune is doing, for a progress display: the step, and bytes done
/// of bytes to do where the step moves data (repacking, deleting).
#[derive(Debug, Default)]
pub struct PruneProgress {
    /// The current step, in words ("reading snapshots").
    pub step: std::sync::Mutex<&'static str>,
    /// Bytes done in the current step.
    pub done: std::sync::atomic::AtomicU64,
    /// Bytes the current step will do (0: not counted).
    pub total: std::sync::atomic::AtomicU64,
}

impl PruneProgress {
    fn step(&self, step: &'static str, total: u64) {
        *self.step.lock().unwrap() = step;
        self.done.store(0, std::sync::atomic::Ordering::Relaxed);
        self.total
            .store(total, std::sync::atomic::Ordering::Relaxed);
    }

    fn add(&self, n: u64) {
        self.done.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A live lock that holds a sweep back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    /// Its command (`backup`, `restore`, ...).
    pub command: String,
    /// Its host.
    pub hostname: String,
    /// Its process on that host.
    pub pid: u32,
    /// When it started (Unix seconds); `None` for a lock of an older salvor.
    pub started: Option<i64>,
}

/// What [`prune`] found and did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneResults {
    /// Nothing was changed.
    pub dry_run: bool,
    /// The repository format cannot hold marks (v1): the prune held an
    /// exclusive lock and deleted at once.
    pub exclusive: bool,
    /// Snapshots whose data was kept.
    pub snapshots: u64,
    /// Packs in the repository when the prune began.
    pub packs_before: u64,
    /// Their bytes.
    pub bytes_before: u64,
    /// Packs deleted.
    pub packs_deleted: u64,
    /// Bytes of the packs deleted.
    pub bytes_deleted: u64,
    /// Packs whose live blobs were copied into new packs (then marked, or
    /// deleted).
    pub packs_repacked: u64,
    /// Bytes of those packs.
    pub bytes_repacked: u64,
    /// Bytes of the new packs the repack wrote.
    pub bytes_repack_written: u64,
    /// Marked packs found in use again and unmarked.
    pub packs_rescued: u64,
    /// Packs no index named (left by killed backups), taken into the index.
    pub packs_adopted: u64,
    /// Records dropped of packs an earlier prune deleted before it was
    /// stopped (their bytes were freed then).
    pub packs_finished: u64,
    /// Packs left marked, deleted by a later prune once the holders end.
    pub packs_pending: u64,
    /// Their bytes.
    pub bytes_pending: u64,
    /// The live locks that kept the pending packs from being deleted now.
    pub holders: Vec<Holder>,
    /// Index files written.
    pub index_files_written: u64,
    /// Index files removed.
    pub index_files_removed: u64,
    /// Temporary files of dead writers removed.
    pub temporaries_removed: u64,
    /// Unindexed packs that could not be read (left alone; `check` names them).
    pub unreadable: Vec<String>,
}

/// Deletes what no snapshot references, marking first where backups may be
/// running (see the module documentation).
///
/// # Errors
/// Another prune or an exclusive lock; a damaged repository (with
/// [`crate::Remedy::RepairBeforePrune`]); a lost lock or a cancel, which
/// stop it at a safe point; backend failures.
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneResults> {
    prune_with(repo, opts, &PruneProgress::default())
}

/// [`prune`], reporting its steps to `progress`.
///
/// # Errors
/// As [`prune`].
pub fn prune_with(
    repo: &Repository,
    opts: &PruneOptions,
    progress: &PruneProgress,
) -> Result<PruneResults> {
    if !opts.dry_run && !opts.assume_forgotten.is_empty() {
        return Err(Error::invalid(
            "snapshots may be counted as forgotten only in a dry run",
        ));
    }
    if !(0.0..=1.0).contains(&opts.max_unused) {
        return Err(Error::invalid(format!(
            "the unused share must be between 0% and 100%, not {}%",
            opts.max_unused * 100.0
        )));
    }
    let exclusive = repo.config().version < 2;
    let lock = repo.lock(exclusive, "prune")?;
    if let Some(other) = live_foreign(repo, &lock)?
        .into_iter()
        .find(|l| l.command == "prune")
    {
        return Err(Error::new(
            ErrorKind::Locked,
            format!(
                "another prune is running on {} (pid {})",
                other.hostname, other.pid
            ),
        )
        .remedy(crate::Remedy::RemoveStaleLock));
    }
    let mut results = PruneResults {
        dry_run: opts.dry_run,
        exclusive,
        ..PruneResults::default()
    };
    let mut scan = Scan {
        used: SpillSet::new(Some(repo.spill_dir())),
        scanned: HashSet::new(),
    };
    let ctx = Ctx {
        repo,
        lock: &lock,
        progress,
    };
    let (pending, after) = pass(&ctx, opts, &mut scan, &mut results, true, None)?;
    let sweep_now = match pending {
        Some(newest) if !opts.dry_run && !exclusive => ready(&live_foreign(repo, &lock)?, newest),
        _ => false,
    };
    if sweep_now {
        // Nothing that began before the marks is still running: sweep them
        // now rather than at the next prune.
        let again = PruneOptions {
            max_repack_bytes: Some(0),
            ..opts.clone()
        };
        // Unless a snapshot appeared meanwhile (then everything is read
        // again), the second pass starts from what the first wrote:
        // locks listed first, then the snapshots.
        let reuse = match after {
            Some(mut state) => {
                state.holders = live_foreign(repo, &lock)?;
                let (snapshots, errors) = repo.snapshots_lenient()?;
                let unseen = errors.iter().any(|e| e.kind() != ErrorKind::NotFound)
                    || snapshots.iter().any(|(id, _)| !scan.scanned.contains(id));
                (!unseen).then_some(state)
            }
            None => None,
        };
        pass(&ctx, &again, &mut scan, &mut results, false, reuse)?;
    }
    if !opts.dry_run {
        results.temporaries_removed = repo.remove_dead_temporaries(&lock)?;
    }
    Ok(results)
}

/// Whether a mark made at `mark` (Unix seconds) may be swept while
/// `holders` are live: each began after the mark (with the margin), so it
/// read the index with the mark in it. A lock of an older salvor, which does
/// not say when it began, holds every mark back.
fn ready(holders: &[LockFile], mark: i64) -> bool {
    let after = mark.saturating_add(MARK_MARGIN.as_secs().cast_signed());
    mark != i64::MAX
        && holders
            .iter()
            .all(|l| l.started.is_some_and(|s| s >= after))
}

/// The live locks other than `ours`.
fn live_foreign(repo: &Repository, ours: &LockGuard) -> Result<Vec<LockFile>> {
    let name = ours.name();
    let now = repo.clock().now().as_second();
    Ok(repo
        .locks()?
        .readable
        .into_iter()
        .filter(|(n, l)| *n != name && !l.is_stale_at(now))
        .map(|(_, l)| l)
        .collect())
}

/// The damage prune will not work around.
fn damaged(what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("prune changes nothing while the repository is damaged: {what}"),
    )
    .remedy(crate::Remedy::RepairBeforePrune)
}

/// What the snapshots reference, kept across passes: a second pass walks
/// only the snapshots that appeared since the first. The set spills into
/// mapped files beyond a batch, so a prune's memory stays small however
/// many blobs the snapshots use.
struct Scan {
    used: SpillSet,
    scanned: HashSet<SnapshotId>,
}

/// Adds what every snapshot not yet scanned (and not in `skip`)
/// references to `scan.used`; returns how many snapshots count. Errors are
/// as found (a tree or blob that no index names, an unreadable snapshot).
fn scan_snapshots(
    repo: &Repository,
    index: &Arc<Index>,
    scan: &mut Scan,
    skip: &[SnapshotId],
) -> Result<u64> {
    let (snapshots, errors) = repo.snapshots_lenient()?;
    // One removed between list and read was forgotten meanwhile: no loss.
    if let Some(e) = errors.into_iter().find(|e| e.kind() != ErrorKind::NotFound) {
        return Err(Error::corrupt(format!(
            "{}; prune cannot tell what it references",
            e.without_hint()
        )));
    }
    let reader = BlobReader::new(repo, index.clone());
    let fresh: Vec<(SnapshotId, BlobId)> = snapshots
        .iter()
        .filter(|(id, _)| !skip.contains(id) && !scan.scanned.contains(id))
        .map(|(id, s)| (*id, s.tree))
        .collect();
    let roots: Vec<BlobId> = fresh.iter().map(|(_, t)| *t).collect();
    crate::browse::reach(&reader, &roots, &mut scan.used)?;
    scan.scanned.extend(fresh.iter().map(|(id, _)| *id));
    Ok(snapshots
        .iter()
        .filter(|(id, _)| !skip.contains(id))
        .count() as u64)
}

/// What a pass decides from.
struct Loaded {
    records: Vec<IndexPack>,
    files: Vec<String>,
    holders: Vec<LockFile>,
    index: Arc<Index>,
    used: Vec<u64>,
}

/// Reads the index, the packs, the locks and then the snapshots. A backup
/// that uploads and commits between the first reads and the last leaves a
/// snapshot whose blobs this index lacks: that is read again (twice at
/// most) before it is called damage.
fn load(
    repo: &Repository,
    lock: &LockGuard,
    opts: &PruneOptions,
    scan: &mut Scan,
    results: &mut PruneResults,
    progress: &PruneProgress,
    first: bool,
) -> Result<Loaded> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        progress.step("reading the index", 0);
        let crate::repo::IndexRecords { mut records, files } =
            repo.index_records().map_err(|e| match e.kind() {
                ErrorKind::Corrupt => damaged(e.without_hint()),
                _ => e,
            })?;
        let stored: HashMap<String, u64> = repo
            .backend()
            .list(FileType::Pack)?
            .into_iter()
            .map(|o| (o.name, o.size))
            .collect();
        if first {
            results.packs_before = stored.len() as u64;
            results.bytes_before = stored.values().sum();
        }
        // Marked packs already deleted by a prune killed before it rewrote
        // the index: their records go now. An unmarked pack that is gone
        // is damage.
        let mut finished = 0u64;
        let mut problem = None;
        records.retain(|r| match stored.get(&r.id.to_hex()) {
            Some(&size) if size == r.size => true,
            Some(&size) => {
                problem.get_or_insert(format!(
                    "pack {} has {size} bytes, the index says {}",
                    r.id, r.size
                ));
                true
            }
            None if r.delete_mark().is_some() => {
                finished += 1;
                false
            }
            None => {
                problem.get_or_insert(format!(
                    "pack {} is in the index but missing from storage",
                    r.id
                ));
                true
            }
        });
        if let Some(p) = problem {
            return Err(damaged(p));
        }
        let (adopted, unreadable) = adopt_unindexed(repo, &stored, &mut records);

        // Locks first, snapshots second: a backup that is not live at this
        // listing has written its snapshot (or never will), so the scan
        // sees it.
        let holders = live_foreign(repo, lock)?;
        let index = Arc::new(repo.index_of(&records));
        progress.step("reading snapshots", 0);
        let scanned = scan_snapshots(repo, &index, scan, &opts.assume_forgotten)
            .and_then(|n| Ok((n, usage(&index, &scan.used)?)));
        match scanned {
            Ok((snapshots, used)) => {
                results.snapshots = snapshots;
                results.packs_finished += finished;
                results.packs_adopted += adopted;
                for u in unreadable {
                    if !results.unreadable.contains(&u) {
                        results.unreadable.push(u);
                    }
                }
                return Ok(Loaded {
                    records,
                    files,
                    holders,
                    index,
                    used,
                });
            }
            Err(e) if attempt < 3 && e.kind() == ErrorKind::Corrupt => {
                tracing::info!("reading the index again, a backup committed meanwhile: {e}");
            }
            Err(e) => {
                return Err(match e.kind() {
                    ErrorKind::Corrupt | ErrorKind::NotFound => damaged(e.without_hint()),
                    _ => e,
                });
            }
        }
    }
}

/// What becomes of a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Stays as it is.
    Keep,
    /// Marked and found in use: unmarked.
    Rescue,
    /// Deleted now.
    Delete,
    /// Marked now (or kept marked), deleted by a later sweep.
    Mark,
    /// Its live blobs are copied into new packs; then it is marked (or,
    /// exclusively locked, deleted).
    Repack,
}

/// One pass: load, scan, decide, act. Returns the newest mark it leaves,
/// if it leaves any.
/// What every step of a prune works with.
struct Ctx<'a> {
    repo: &'a Repository,
    lock: &'a LockGuard,
    progress: &'a PruneProgress,
}

fn pass(
    ctx: &Ctx<'_>,
    opts: &PruneOptions,
    scan: &mut Scan,
    results: &mut PruneResults,
    first: bool,
    reuse: Option<Loaded>,
) -> Result<(Option<i64>, Option<Loaded>)> {
    let Ctx {
        repo,
        lock,
        progress,
    } = *ctx;
    let exclusive = results.exclusive;
    let Loaded {
        records,
        files,
        holders,
        index,
        used,
    } = match reuse {
        Some(state) => state,
        None => load(repo, lock, opts, scan, results, progress, first)?,
    };

    let mut fates = decide(&records, &index, &used, &holders, exclusive, opts);
    let marked_total = |fates: &[Fate], records: &[IndexPack]| {
        records
            .iter()
            .zip(fates)
            .filter(|(_, f)| matches!(f, Fate::Mark | Fate::Repack))
            .fold((0u64, 0u64), |(n, b), (r, _)| (n + 1, b + r.size))
    };
    let counts = |fate: Fate, fates: &[Fate]| {
        records
            .iter()
            .zip(fates)
            .filter(|(_, f)| **f == fate)
            .fold((0u64, 0u64), |(n, b), (r, _)| (n + 1, b + r.size))
    };
    let (repacked, repacked_bytes) = counts(Fate::Repack, &fates);
    results.packs_repacked += repacked;
    results.bytes_repacked += repacked_bytes;
    results.packs_rescued += counts(Fate::Rescue, &fates).0;
    if opts.dry_run {
        let (n, b) = counts(Fate::Delete, &fates);
        results.packs_deleted += n;
        results.bytes_deleted += b;
        let (n, b) = marked_total(&fates, &records);
        if holders.is_empty() {
            // A real run would sweep these in its second pass.
            results.packs_deleted += n;
            results.bytes_deleted += b;
        } else {
            results.packs_pending = n;
            results.bytes_pending = b;
            results.holders = holders.iter().map(holder).collect();
        }
        return Ok((None, None));
    }

    repo.cancel().check()?;
    lock.verify()?;
    if repacked > 0 {
        progress.step("repacking", repacked_bytes);
        results.bytes_repack_written +=
            repack(repo, &index, &records, &fates, &scan.used, progress)?;
    }
    if exclusive {
        // Nothing else runs: repacked packs go at once.
        for f in &mut fates {
            if *f == Fate::Repack {
                *f = Fate::Delete;
            }
        }
    }
    let doomed: Vec<(PackId, u64)> = records
        .iter()
        .zip(&fates)
        .filter(|(_, f)| **f == Fate::Delete)
        .map(|(r, _)| (r.id, r.size))
        .collect();
    let (n, b) = marked_total(&fates, &records);
    let newest = if exclusive {
        // The index is rewritten before the deletions, so a crash leaves
        // unindexed packs (deleted by the next prune), never an index
        // naming a gap.
        progress.step("writing the index", 0);
        let rewritten = rewrite_index(repo, lock, records, &fates, &files, results)?;
        delete_packs(repo, lock, &doomed, results, progress)?;
        rewritten
    } else {
        // Deleted before the index stops naming them: a backup that finds
        // a pack no index names adopts it, and must never adopt one that
        // is about to go.
        delete_packs(repo, lock, &doomed, results, progress)?;
        progress.step("writing the index", 0);
        rewrite_index(repo, lock, records, &fates, &files, results)?
    };
    results.packs_pending = n;
    results.bytes_pending = b;
    results.holders = if n > 0 {
        holders.iter().map(holder).collect()
    } else {
        Vec::new()
    };
    // What a second pass may start from instead of reading everything
    // again: the records as now written, and this pass's use of each pack.
    // Valid only without a repack (it moved blobs to packs this index does
    // not hold); a blob moves only away from marked packs otherwise, so a
    // pack this pass found unused is still unused.
    let after = (repacked == 0).then(|| Loaded {
        records: newest.records,
        files: newest.files,
        holders: Vec::new(),
        index,
        used,
    });
    Ok((newest.newest, after))
}

fn holder(l: &LockFile) -> Holder {
    Holder {
        command: l.command.clone(),
        hostname: l.hostname.clone(),
        pid: l.pid,
        started: l.started,
    }
}

/// Reads the header of every pack that no index names (left by a killed
/// backup, or being written by a live one) and takes it into `records`.
/// One a live backup is about to index is harmless to adopt: it is marked
/// like any unused pack, and the backup's lock holds the sweep back until
/// its snapshot, which then rescues it, is written.
fn adopt_unindexed(
    repo: &Repository,
    stored: &HashMap<String, u64>,
    records: &mut Vec<IndexPack>,
) -> (u64, Vec<String>) {
    let known: HashSet<String> = records.iter().map(|r| r.id.to_hex()).collect();
    let unknown: Vec<(&String, &u64)> =
        stored.iter().filter(|(n, _)| !known.contains(*n)).collect();
    let read: Vec<(String, Result<IndexPack>)> = unknown
        .par_iter()
        .map(|(n, size)| {
            (
                (*n).clone(),
                crate::repair::read_pack_entry(repo, n, **size),
            )
        })
        .collect();
    let (mut adopted, mut unreadable) = (0, Vec::new());
    for (name, r) in read {
        match r {
            Ok(p) => {
                adopted += 1;
                records.push(p);
            }
            Err(e) => unreadable.push(format!("pack {name}: {}", e.without_hint())),
        }
    }
    (adopted, unreadable)
}

/// Plaintext bytes the snapshots use of each pack (by pack number): a blob
/// counts for the pack the index finds it in.
fn usage(index: &Index, used: &SpillSet) -> Result<Vec<u64>> {
    let mut bytes = vec![0u64; index.packs().len()];
    for id in used.iter() {
        let Some(loc) = index.get(&id) else {
            return Err(damaged(format!(
                "blob {id}, which a snapshot references, is not in the index"
            )));
        };
        bytes[index.frame(loc.frame).pack as usize] += u64::from(loc.length);
    }
    Ok(bytes)
}

fn raw_bytes(r: &IndexPack) -> u64 {
    r.frames
        .iter()
        .flat_map(|f| &f.blobs)
        .map(|b| u64::from(b.length))
        .sum()
}

/// The fate of each record (same order).
fn decide(
    records: &[IndexPack],
    index: &Index,
    used: &[u64],
    holders: &[LockFile],
    exclusive: bool,
    opts: &PruneOptions,
) -> Vec<Fate> {
    let mut fates = Vec::with_capacity(records.len());
    // (record, unused stored bytes (estimated), unused share) of packs in part used.
    let mut partly: Vec<(usize, u64, f64)> = Vec::new();
    let (mut kept, mut unused_total) = (0u64, 0u64);
    for (i, r) in records.iter().enumerate() {
        let pn = index.pack_number(&r.id).expect("every record is indexed");
        let (u, raw) = (used[pn as usize], raw_bytes(r));
        let fate = match r.delete_mark() {
            Some(_) if u > 0 => Fate::Rescue,
            Some(m) if exclusive || ready(holders, m) => Fate::Delete,
            Some(_) => Fate::Mark,
            None if u == 0 && exclusive => Fate::Delete,
            None if u == 0 => Fate::Mark,
            None => Fate::Keep,
        };
        if matches!(fate, Fate::Keep | Fate::Rescue) {
            kept += r.size;
            if fate == Fate::Keep && u < raw {
                // Compressed frames hold many blobs: the stored bytes a
                // blob takes are estimated in proportion to its length.
                #[allow(clippy::cast_precision_loss)]
                let share = 1.0 - u as f64 / raw as f64;
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss
                )]
                let unused = (r.size as f64 * share) as u64;
                unused_total += unused;
                partly.push((i, unused, share));
            }
        }
        fates.push(fate);
    }
    // Repack the emptiest packs until what stays unused is within the
    // allowed share of what is used (restic's rule), within the budget.
    partly.sort_by(|a, b| b.2.total_cmp(&a.2));
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let allowed = (kept.saturating_sub(unused_total) as f64 * opts.max_unused) as u64;
    let mut budget = opts.max_repack_bytes.unwrap_or(u64::MAX);
    for (i, unused, _) in partly {
        if unused_total <= allowed {
            break;
        }
        let size = records[i].size;
        if size > budget {
            continue;
        }
        budget -= size;
        unused_total -= unused;
        fates[i] = Fate::Repack;
    }
    fates
}

/// Copies the used blobs of the packs to repack into new packs, indexed in
/// new index files; returns the bytes written. Every blob is authenticated
/// and re-hashed on the way ([`BlobReader::read_frame`], [`crate::repo::blobs::verify_blob`]).
fn repack(
    repo: &Repository,
    index: &Arc<Index>,
    records: &[IndexPack],
    fates: &[Fate],
    used: &SpillSet,
    progress: &PruneProgress,
) -> Result<u64> {
    let reader = BlobReader::new(repo, index.clone());
    let uploader = Uploader::new(repo, repo.backend().connections());
    let level = repo.config().compression_level;
    let (data, trees) = (
        Packer::new(repo, &uploader, level),
        Packer::new(repo, &uploader, level),
    );
    let chosen: Vec<&IndexPack> = records
        .iter()
        .zip(fates)
        .filter(|(_, f)| **f == Fate::Repack)
        .map(|(r, _)| r)
        .collect();
    let copied = crate::backend::with_reader_pool(repo.backend(), || {
        chosen.par_iter().try_for_each(|r| -> Result<()> {
            repo.cancel().check()?;
            let pn = index.pack_number(&r.id).expect("indexed");
            // Trees and content lists stay together in packs of their own
            // (readers cache those frames).
            let holds_trees = r
                .frames
                .iter()
                .flat_map(|f| &f.blobs)
                .any(|b| b.kind == BlobKind::Tree);
            let packer = if holds_trees { &trees } else { &data };
            // The blobs found here (not a copy elsewhere) that are used, by frame.
            let mut by_frame: std::collections::BTreeMap<
                u32,
                Vec<(BlobId, crate::index::BlobLocation)>,
            > = std::collections::BTreeMap::new();
            for b in r.frames.iter().flat_map(|f| &f.blobs) {
                if let Some(loc) = index.get(&b.id)
                    && used.contains(&b.id)
                    && index.frame(loc.frame).pack == pn
                {
                    by_frame.entry(loc.frame).or_default().push((b.id, loc));
                }
            }
            for (frame, blobs) in by_frame {
                let plain = reader.read_frame(frame)?;
                for (id, loc) in blobs {
                    let (start, len) = (loc.offset as usize, loc.length as usize);
                    let bytes = plain.get(start..start + len).ok_or_else(|| {
                        Error::corrupt(format!("blob {id} lies outside its frame in pack {}", r.id))
                    })?;
                    crate::repo::blobs::verify_blob(repo.key(), &id, bytes)?;
                    packer.add(loc.kind, id, bytes);
                }
            }
            progress.add(r.size);
            Ok(())
        })
    });
    let finished = data
        .finish()
        .and_then(|a| trees.finish().map(|b| a.stored + b.stored));
    let written = uploader.finish();
    copied?;
    let stored = finished?;
    written?;
    Ok(stored)
}

/// Deletes the packs fated to go, and verifies the lock first: a prune
/// that lost it must assume another prune runs, or a backup it cannot see.
fn delete_packs(
    repo: &Repository,
    lock: &LockGuard,
    doomed: &[(PackId, u64)],
    results: &mut PruneResults,
    progress: &PruneProgress,
) -> Result<()> {
    if doomed.is_empty() {
        return Ok(());
    }
    lock.verify()?;
    progress.step("deleting", doomed.iter().map(|(_, size)| size).sum());
    let gone = crate::backend::with_reader_pool(repo.backend(), || {
        Ok(doomed
            .par_iter()
            .map(|&(id, size)| {
                repo.cancel().check()?;
                let done = repo.backend().delete(FileType::Pack, &id.to_hex());
                progress.add(size);
                match done {
                    Ok(()) => Ok(Some(size)),
                    // Deleted already (an earlier prune that was stopped).
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .collect::<Vec<Result<Option<u64>>>>())
    })?;
    let mut first_error = None;
    for g in gone {
        match g {
            Ok(Some(size)) => {
                results.packs_deleted += 1;
                results.bytes_deleted += size;
            }
            Ok(None) => results.packs_finished += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Writes the index anew: every record but the deleted ones, marks set or
/// cleared by fate (each new mark stamped just before its file is
/// written), then removes the files it replaces. Returns the newest mark
/// the index now holds.
///
/// A mark takes effect only once no file names its pack unmarked, which
/// is after the old files are removed; if that took longer than
/// [`RESTAMP_AFTER`] (a large index, a slow link, a stopped prune), the
/// new marks are written again with the time then, so that a mark's time
/// is never much earlier than the moment it took effect (section 16).
fn rewrite_index(
    repo: &Repository,
    lock: &LockGuard,
    records: Vec<IndexPack>,
    fates: &[Fate],
    old: &[String],
    results: &mut PruneResults,
) -> Result<Rewritten> {
    lock.verify()?;
    // Moved, not copied: the records are the largest thing a prune holds.
    let mut kept: Vec<(IndexPack, Fate)> = records
        .into_iter()
        .zip(fates.iter().copied())
        .filter(|(_, f)| *f != Fate::Delete)
        .collect();
    // Marked records together: a later sweep rewrites fewer files.
    kept.sort_by_key(|(r, f)| (matches!(f, Fate::Mark | Fate::Repack), r.id));
    let first_stamp = repo.clock().now().as_second();
    let mut written: HashSet<String> = HashSet::new();
    // Files holding marks made now, with their records.
    let mut fresh: Vec<(String, Vec<IndexPack>)> = Vec::new();
    let mut out = Rewritten::default();
    let mut newest = None;
    let mut kept = kept.into_iter().peekable();
    while kept.peek().is_some() {
        let chunk: Vec<(IndexPack, Fate)> = kept.by_ref().take(PACKS_PER_FILE).collect();
        repo.cancel().check()?;
        lock.check()?;
        let now = repo.clock().now().as_second();
        let mut stamped = false;
        let packs: Vec<IndexPack> = chunk
            .into_iter()
            .map(|(mut r, f)| {
                match f {
                    Fate::Rescue => r.clear_delete_mark(),
                    Fate::Repack => {
                        r.set_delete_mark(now);
                        stamped = true;
                    }
                    // A mark that does not decode is made again.
                    Fate::Mark if r.delete_mark().is_none_or(|m| m == i64::MAX) => {
                        r.set_delete_mark(now);
                        stamped = true;
                    }
                    _ => {}
                }
                newest = newest.max(r.delete_mark());
                r
            })
            .collect();
        let file = IndexFile {
            packs,
            ..IndexFile::default()
        };
        let name = repo.write_index(&file)?.to_hex();
        written.insert(name.clone());
        results.index_files_written += 1;
        if stamped {
            fresh.push((name, file.packs));
        } else {
            out.files.push(name);
            out.records.extend(file.packs);
        }
    }
    remove_index_files(repo, old.iter().filter(|n| !written.contains(*n)), results)?;
    let now = repo.clock().now().as_second();
    if !fresh.is_empty() && now - first_stamp > RESTAMP_AFTER.as_secs().cast_signed() {
        lock.verify()?;
        for (name, mut packs) in std::mem::take(&mut fresh) {
            for p in &mut packs {
                if p.delete_mark().is_some_and(|m| m >= first_stamp) {
                    p.set_delete_mark(now);
                }
            }
            newest = newest.max(Some(now));
            let again = IndexFile {
                packs,
                ..IndexFile::default()
            };
            let new = repo.write_index(&again)?.to_hex();
            let packs = again.packs;
            results.index_files_written += 1;
            if new != name {
                remove_index_files(repo, std::iter::once(&name), results)?;
            }
            out.files.push(new);
            out.records.extend(packs);
        }
    }
    for (name, packs) in fresh {
        out.files.push(name);
        out.records.extend(packs);
    }
    out.newest = newest;
    Ok(out)
}

/// The index as a rewrite left it.
#[derive(Default)]
struct Rewritten {
    /// The newest delete mark it holds.
    newest: Option<i64>,
    /// The files written.
    files: Vec<String>,
    /// Their records.
    records: Vec<IndexPack>,
}

/// Removes index files (gone already is fine).
fn remove_index_files<'a>(
    repo: &Repository,
    names: impl Iterator<Item = &'a String>,
    results: &mut PruneResults,
) -> Result<()> {
    for name in names {
        match repo.delete_doc(FileType::Index, name) {
            Ok(()) => results.index_files_removed += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
