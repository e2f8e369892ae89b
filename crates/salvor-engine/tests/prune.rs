//! Prune beside running backups, through the engine API, with the injected
//! clock: unused packs go at once in a quiet repository; a backup that was
//! running when they were marked holds the deletion back, and what it
//! deduplicated against them is unmarked (rescued) rather than deleted;
//! the margin after a mark is honoured; a damaged repository is refused; a
//! prune stopped at any write or delete is finished by the next; v1
//! repositories are pruned under an exclusive lock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use salvor_engine::backend::{Backend, FileType};
use salvor_engine::backup::{BackupProgress, StreamBackup, StreamOptions, backup_stream};
use salvor_engine::id::SnapshotId;
use salvor_engine::ops::prune::{MARK_MARGIN, PruneOptions, PruneResults, prune};
use salvor_engine::repo::BlobReader;
use salvor_engine::{ErrorKind, Remedy, Repository};

use common::faulty_repo as init;

/// `n` bytes that do not compress, different for each `seed`.
fn noise(seed: u8, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}

fn opts() -> StreamOptions {
    StreamOptions {
        name: "db.sql".into(),
        ..Default::default()
    }
}

fn backup(repo: &Repository, data: &[u8]) -> SnapshotId {
    backup_stream(repo, data, &opts(), Arc::default())
        .unwrap()
        .0
}

fn begin(repo: &Repository) -> StreamBackup {
    StreamBackup::begin(repo, &opts(), Arc::new(BackupProgress::default())).unwrap()
}

fn forget(repo: &Repository, id: &SnapshotId) {
    repo.backend()
        .delete(FileType::Snapshot, &id.to_hex())
        .unwrap();
}

/// The stream of snapshot `id`, read back through a fresh index.
fn read_back(repo: &Repository, id: &SnapshotId) -> Vec<u8> {
    let snap = repo.read_snapshot(id).unwrap();
    let reader = BlobReader::new(repo, Arc::new(repo.load_index().unwrap()));
    let root = reader.read_tree(&snap.tree).unwrap();
    let mut out = Vec::new();
    salvor_engine::browse::dump(&reader, root.find(b"db.sql").unwrap(), &mut out).unwrap();
    out
}

fn pack_bytes(b: &dyn Backend) -> u64 {
    b.list(FileType::Pack).unwrap().iter().map(|o| o.size).sum()
}

fn run(repo: &Repository) -> PruneResults {
    prune(repo, &PruneOptions::default()).unwrap()
}

#[test]
fn a_quiet_repository_is_pruned_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let (b, repo, _clock) = init(dir.path(), 2);
    let (old, new) = (noise(1, 3_000_000), noise(2, 2_000_000));
    let gone = backup(&repo, &old);
    let kept = backup(&repo, &new);
    let before = pack_bytes(b.as_ref());
    forget(&repo, &gone);

    let dry = prune(
        &repo,
        &PruneOptions {
            dry_run: true,
            ..PruneOptions::default()
        },
    )
    .unwrap();
    assert!(
        dry.packs_deleted > 0 && dry.bytes_deleted >= 3_000_000,
        "{dry:?}"
    );
    assert_eq!(
        pack_bytes(b.as_ref()),
        before,
        "a dry run deleted something"
    );

    let r = run(&repo);
    assert_eq!(r.snapshots, 1);
    assert_eq!((r.packs_pending, r.holders.len()), (0, 0), "{r:?}");
    assert!(r.bytes_deleted >= 3_000_000, "{r:?}");
    let after = pack_bytes(b.as_ref());
    assert!(
        after < before - 3_000_000 && after >= 2_000_000,
        "{before} -> {after}"
    );
    common::assert_clean(&repo);
    assert!(read_back(&repo, &kept) == new);
    assert_eq!(
        b.list(FileType::Lock).unwrap().len(),
        0,
        "prune left its lock"
    );
    // Nothing left to do.
    let again = run(&repo);
    assert_eq!(
        (
            again.packs_deleted,
            again.packs_repacked,
            again.packs_pending
        ),
        (0, 0, 0)
    );
    assert_eq!(pack_bytes(b.as_ref()), after);
}

#[test]
fn a_pack_partly_used_is_repacked_and_restores_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (b, repo, _clock) = init(dir.path(), 2);
    // Two streams in one backup share packs; forgetting one leaves them
    // partly used.
    let (x, y) = (noise(3, 1_500_000), noise(4, 1_500_000));
    let mut run1 = begin(&repo);
    run1.add_stream("db.sql", &x[..]).unwrap();
    run1.add_stream("other.sql", &y[..]).unwrap();
    let (both, _) = run1.commit().unwrap();
    let only_x = backup(&repo, &x);
    forget(&repo, &both);
    let before = pack_bytes(b.as_ref());
    let r = run(&repo);
    assert!(r.packs_repacked >= 1 && r.bytes_repack_written > 0, "{r:?}");
    let after = pack_bytes(b.as_ref());
    assert!(after < before - 1_000_000, "{before} -> {after}");
    common::assert_clean(&repo);
    assert!(read_back(&repo, &only_x) == x);
    // `--max-unused 100%` (or a zero budget) repacks nothing.
    let calm = prune(
        &repo,
        &PruneOptions {
            max_repack_bytes: Some(0),
            ..PruneOptions::default()
        },
    )
    .unwrap();
    assert_eq!(calm.packs_repacked, 0);
}

#[test]
fn a_backup_running_during_a_prune_keeps_what_it_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let (b, repo, clock) = init(dir.path(), 2);
    let data = noise(5, 2_000_000);
    let first = backup(&repo, &data);
    // A backup begins (it loads the index, where the blobs may be reused),
    // then the snapshot that used them is forgotten and a prune runs.
    let mut running = begin(&repo);
    forget(&repo, &first);
    let r = run(&repo);
    assert_eq!(
        r.packs_deleted, 0,
        "deleted while a backup may use it: {r:?}"
    );
    assert!(r.packs_pending > 0 && r.bytes_pending >= 2_000_000, "{r:?}");
    assert_eq!(r.holders.len(), 1);
    assert_eq!(r.holders[0].command, "backup");
    // The running backup deduplicates against the marked packs and commits.
    running.add_stream("db.sql", &data[..]).unwrap();
    let (second, snap) = running.commit().unwrap();
    assert!(
        snap.summary.bytes_added < 100_000,
        "it stored again what it found: {}",
        snap.summary.bytes_added
    );
    common::assert_clean(&repo);
    // A backup that begins after the marks does not reuse marked packs.
    clock.advance(Duration::from_secs(60));
    let later = backup_stream(&repo, &data[..], &opts(), Arc::default()).unwrap();
    assert!(
        later.1.summary.bytes_added >= 2_000_000,
        "{:?}",
        later.1.summary
    );
    // The next prune finds the marked packs in use and unmarks them; the
    // copies the later backup made are what is unused now.
    let r = run(&repo);
    assert!(r.packs_rescued > 0, "{r:?}");
    common::assert_clean(&repo);
    assert!(read_back(&repo, &second) == data);
    assert!(read_back(&repo, &later.0) == data);
    let _ = b;
}

#[test]
fn a_mark_waits_for_backups_that_began_before_it_and_its_margin() {
    let dir = tempfile::tempdir().unwrap();
    let (b, repo, clock) = init(dir.path(), 2);
    let gone = backup(&repo, &noise(6, 2_000_000));
    forget(&repo, &gone);
    // A backup of other data is running when the prune marks.
    let mut early = begin(&repo);
    let r = run(&repo);
    assert!(r.packs_pending > 0 && r.packs_deleted == 0, "{r:?}");
    let held = pack_bytes(b.as_ref());
    // One that begins a minute after the mark could have read the index
    // before the mark was durable on a host whose clock is behind: it holds
    // the sweep back too, even once the early one has ended.
    clock.advance(Duration::from_secs(60));
    let mut soon = begin(&repo);
    early.add_stream("db.sql", &noise(7, 10_000)[..]).unwrap();
    early.commit().unwrap();
    let r = run(&repo);
    assert_eq!(r.packs_deleted, 0, "{r:?}");
    assert!(r.holders.len() == 1 && r.holders[0].started.is_some());
    soon.add_stream("db.sql", &noise(8, 10_000)[..]).unwrap();
    soon.commit().unwrap();
    // One that begins after the margin does not.
    clock.advance(MARK_MARGIN);
    let mut late = begin(&repo);
    let r = run(&repo);
    assert!(r.packs_deleted > 0 && r.packs_pending == 0, "{r:?}");
    assert!(pack_bytes(b.as_ref()) < held - 2_000_000);
    late.add_stream("db.sql", &noise(9, 10_000)[..]).unwrap();
    let (id, _) = late.commit().unwrap();
    common::assert_clean(&repo);
    assert!(read_back(&repo, &id) == noise(9, 10_000));
}

#[test]
fn a_damaged_repository_is_not_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let (b, repo, _clock) = init(dir.path(), 2);
    let gone = backup(&repo, &noise(10, 1_000_000));
    backup(&repo, &noise(11, 1_000_000));
    forget(&repo, &gone);
    // A pack the index names is lost.
    let packs = b.list(FileType::Pack).unwrap();
    let victim = packs.iter().max_by_key(|o| o.size).unwrap();
    b.delete(FileType::Pack, &victim.name).unwrap();
    let left = b.list(FileType::Pack).unwrap().len();
    let e = prune(&repo, &PruneOptions::default()).expect_err("pruned a damaged repository");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(e.remedy_kind(), Some(Remedy::RepairBeforePrune), "{e}");
    assert!(e.to_string().contains("missing from storage"), "{e}");
    assert_eq!(b.list(FileType::Pack).unwrap().len(), left, "it deleted");
    assert_eq!(b.list(FileType::Lock).unwrap().len(), 0);
}

#[test]
fn a_prune_stopped_at_any_write_or_delete_is_finished_by_the_next() {
    // Stopped at its n-th request, for every n (as if killed there: no
    // request after it happens), a prune leaves a repository that checks
    // clean and restores, and the next prune ends where one uninterrupted
    // run would have.
    let reference = {
        let dir = tempfile::tempdir().unwrap();
        let (b, repo, _c) = init(dir.path(), 2);
        let (kept, _) = scenario(&repo);
        run(&repo);
        let _ = kept;
        pack_bytes(b.as_ref())
    };
    let mut stop = 0;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let (b, repo, _c) = init(dir.path(), 2);
        let (kept, data) = scenario(&repo);
        b.die_after(Some(stop));
        let stopped = prune(&repo, &PruneOptions::default());
        b.die_after(None);
        if stopped.is_ok() {
            // Every request the prune makes has had its turn to fail.
            assert!(stop > 20, "a prune takes more than {stop} requests");
            break;
        }
        repo.unlock(true).unwrap();
        let r = common::check_data(&repo);
        assert!(r.errors.is_empty(), "stop {stop}: {:?}", r.errors.first());
        assert!(read_back(&repo, &kept) == data, "stop {stop}");
        run(&repo);
        common::assert_clean(&repo);
        assert!(read_back(&repo, &kept) == data, "stop {stop}");
        // Nothing is left to do, and what is stored is what one run leaves
        // (repacked frames may group blobs differently: a few KiB).
        let last = run(&repo);
        assert_eq!(
            (last.packs_deleted, last.packs_repacked, last.packs_pending),
            (0, 0, 0),
            "stop {stop}: {last:?}"
        );
        let bytes = pack_bytes(b.as_ref());
        assert!(
            bytes.abs_diff(reference) < reference / 50,
            "stop {stop}: {bytes} vs {reference}"
        );
        stop += 1;
    }
}

/// Two backups sharing packs, the first forgotten: a prune has packs to
/// delete and packs to repack. Returns the kept snapshot and its stream.
fn scenario(repo: &Repository) -> (SnapshotId, Vec<u8>) {
    let (x, y) = (noise(12, 1_200_000), noise(13, 1_200_000));
    let mut both = begin(repo);
    both.add_stream("db.sql", &x[..]).unwrap();
    both.add_stream("other.sql", &y[..]).unwrap();
    let (first, _) = both.commit().unwrap();
    let gone = backup(repo, &noise(14, 800_000));
    let kept = backup(repo, &x);
    forget(repo, &first);
    forget(repo, &gone);
    (kept, x)
}

#[test]
fn another_prune_or_an_exclusive_lock_stops_a_prune() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, repo, _clock) = init(dir.path(), 2);
    backup(&repo, &noise(15, 10_000));
    let other = repo.lock(false, "prune").unwrap();
    let e = prune(&repo, &PruneOptions::default()).expect_err("two prunes at once");
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    assert!(e.to_string().contains("another prune"), "{e}");
    drop(other);
    let exclusive = repo.lock(true, "repair index").unwrap();
    let e = prune(&repo, &PruneOptions::default()).expect_err("beside an exclusive lock");
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    drop(exclusive);
    run(&repo);
}

#[test]
fn a_v1_repository_is_pruned_under_an_exclusive_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (b, repo, _clock) = init(dir.path(), 1);
    let gone = backup(&repo, &noise(16, 1_000_000));
    let kept = backup(&repo, &noise(17, 500_000));
    forget(&repo, &gone);
    let running = begin(&repo);
    let e = prune(&repo, &PruneOptions::default()).expect_err("beside a backup, in v1");
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    drop(running);
    repo.unlock(true).unwrap();
    let before = pack_bytes(b.as_ref());
    let r = run(&repo);
    assert!(r.exclusive && r.packs_pending == 0, "{r:?}");
    assert!(pack_bytes(b.as_ref()) < before - 900_000);
    common::assert_clean(&repo);
    assert!(read_back(&repo, &kept) == noise(17, 500_000));
}

#[test]
fn a_backup_paused_past_the_stale_age_loses_its_lock_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, repo, clock) = init(dir.path(), 2);
    let data = noise(18, 1_000_000);
    let first = backup(&repo, &data);
    // A backup begins (its index lets it reuse the data), then its host is
    // suspended for 35 minutes: its lock goes stale.
    let mut paused = begin(&repo);
    forget(&repo, &first);
    clock.advance(salvor_engine::repo::lock::STALE_AFTER + Duration::from_secs(300));
    let r = run(&repo);
    assert!(r.packs_deleted > 0 && r.holders.is_empty(), "{r:?}");
    // It resumes. Its refresher wakes first (the clock says 35 minutes
    // since the last refresh) and must not take the lock back.
    std::thread::sleep(Duration::from_millis(1500));
    paused.add_stream("db.sql", &data[..]).unwrap_or_default();
    let e = paused.commit().expect_err("a snapshot over deleted data");
    assert_eq!(e.kind(), ErrorKind::LockLost, "{e}");
    assert!(repo.snapshots().unwrap().is_empty());
    common::assert_clean(&repo);
}

#[test]
fn a_slow_rewrite_stamps_its_marks_again_once_the_old_files_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (b, repo, clock) = init(dir.path(), 2);
    let gone = backup(&repo, &noise(19, 600_000));
    backup(&repo, &noise(20, 600_000));
    forget(&repo, &gone);
    // A backup holds the sweep back, so the marks stay to be read. Every
    // request takes 250 ms while the repository's clock runs 200 times as
    // fast: each index file written or removed takes 50 s of it, so the
    // rewrite outlasts the minute after which marks are stamped again.
    let _running = begin(&repo);
    b.delay_requests(Duration::from_millis(250));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (clock, stop) = (clock.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                clock.advance(Duration::from_secs(1));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let r = run(&repo);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ticker.join().unwrap();
    b.delay_requests(Duration::ZERO);
    assert!(r.packs_pending > 0, "{r:?}");
    let files = b.list(FileType::Index).unwrap().len() as u64;
    assert!(
        r.index_files_written > files,
        "no file was written again: {} written, {files} left",
        r.index_files_written
    );
    common::assert_clean(&repo);
}
