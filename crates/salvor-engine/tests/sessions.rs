//! Live locks, cancellation and the injected clock, through the engine API:
//! stale locks are judged by the repository's clock (no test sleeps for
//! minutes); a backup whose lock cannot be refreshed, or was removed by
//! another process, stops before its commit and records nothing; a
//! cancelled backup records nothing and releases its lock; readers that
//! restore hold a shared lock an exclusive one must wait for.

mod common;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use salvor_engine::backend::opendal::OpendalBackend;
use salvor_engine::backend::{Backend, FileType};
use salvor_engine::backup::{BackupProgress, StreamBackup, StreamOptions, backup_stream};
use salvor_engine::cancel::Cancel;
use salvor_engine::clock::{Clock, ManualClock};
use salvor_engine::repo::BlobReader;
use salvor_engine::repo::lock::{LOST_AFTER, REFRESH_EVERY, STALE_AFTER};
use salvor_engine::{ErrorKind, Repository};

fn init(dir: &Path) -> (common::Faulty, Repository, Arc<ManualClock>) {
    common::faulty_repo(dir, salvor_engine::format::FORMAT_VERSION)
}

/// Another handle on the same storage with its own clock: a second host.
fn second_host(dir: &Path, clock: Arc<ManualClock>) -> Repository {
    let backend = OpendalBackend::from_url(dir.to_str().unwrap()).unwrap();
    Repository::open(Box::new(backend), b"pw")
        .unwrap()
        .with_clock(clock)
}

fn stream_opts() -> StreamOptions {
    StreamOptions {
        name: "db.sql".into(),
        ..Default::default()
    }
}

fn begin(repo: &Repository) -> StreamBackup {
    StreamBackup::begin(repo, &stream_opts(), Arc::new(BackupProgress::default())).unwrap()
}

fn data() -> Vec<u8> {
    (0..200_000u32)
        .flat_map(|i| format!("INSERT INTO t VALUES ({i}, 'row {i}');\n").into_bytes())
        .collect()
}

fn lock_count(b: &dyn Backend) -> usize {
    b.list(FileType::Lock).unwrap().len()
}

fn snapshot_count(repo: &Repository) -> usize {
    repo.snapshots().unwrap().len()
}

/// The next backup completes, and what it stored reads back.
fn next_backup_works(repo: &Repository) {
    let d = data();
    backup_stream(repo, &d[..], &stream_opts(), Arc::default()).unwrap();
    assert_eq!(snapshot_count(repo), 1);
    assert_eq!(lock_count(repo.backend()), 0, "the backup left its lock");
}

#[test]
fn a_lock_is_stale_by_the_repository_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, repo, clock) = init(dir.path());
    // A prune on another host takes an exclusive lock, and that host's
    // clock stops: it never refreshes again (a host that hangs).
    let other = second_host(dir.path(), ManualClock::new(clock.now()));
    let held = other.lock(true, "prune").unwrap();
    clock.advance(STALE_AFTER - Duration::from_secs(60));
    let e = repo
        .lock(false, "backup")
        .expect_err("a live exclusive lock");
    assert_eq!(e.kind(), ErrorKind::Locked, "{e}");
    assert!(e.to_string().contains("`prune`"), "{e}");
    clock.advance(Duration::from_secs(120));
    drop(
        repo.lock(false, "backup")
            .expect("the prune's lock is stale now"),
    );
    drop(held);
    // A lock stamped in the future (a host whose clock runs an hour
    // ahead) is never stale by age.
    let ahead = ManualClock::new(clock.now());
    ahead.advance(Duration::from_secs(3600));
    let skewed = second_host(dir.path(), ahead);
    let future = skewed.lock(true, "prune").unwrap();
    clock.advance(STALE_AFTER);
    assert_eq!(
        repo.lock(false, "backup").err().map(|e| e.kind()),
        Some(ErrorKind::Locked)
    );
    drop(future);
}

#[test]
fn a_held_lock_is_refreshed_as_the_clock_moves() {
    let dir = tempfile::tempdir().unwrap();
    let (b, repo, clock) = init(dir.path());
    let guard = repo.lock(false, "backup").unwrap();
    let first = guard.name();
    let mut names = vec![first.clone()];
    // Forty minutes pass, five at a time: the refresher keeps up.
    for _ in 0..8 {
        clock.advance(REFRESH_EVERY);
        let before = names.last().unwrap().clone();
        assert!(
            wait_for(|| guard.name() != before),
            "no refresh after {REFRESH_EVERY:?}"
        );
        names.push(guard.name());
        guard.check().unwrap();
    }
    assert_eq!(lock_count(b.as_ref()), 1, "old locks are removed");
    guard.verify().unwrap();
    drop(guard);
    assert_eq!(lock_count(b.as_ref()), 0);
}

#[test]
fn a_backup_whose_lock_cannot_be_refreshed_stops_before_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (b, repo, clock) = init(dir.path());
    let d = data();
    let mut run = begin(&repo);
    run.add_stream("db.sql", &d[..]).unwrap();
    // The connection to storage breaks for lock writes only, and the
    // backup goes on past the point where its holder must give it up.
    b.fail_writes_of(Some(FileType::Lock));
    clock.advance(REFRESH_EVERY);
    assert!(wait_for(|| b.refused() > 0), "no refresh was tried");
    clock.advance(LOST_AFTER - REFRESH_EVERY);
    let e = run.commit().expect_err("commit with a lost lock");
    assert_eq!(e.kind(), ErrorKind::LockLost, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("could not be refreshed for 20 minutes") && text.contains("cannot write"),
        "{text}"
    );
    assert_eq!(snapshot_count(&repo), 0, "a snapshot was recorded");
    b.fail_writes_of(None);
    repo.unlock(true).unwrap();
    next_backup_works(&repo);
}

#[test]
fn a_backup_whose_lock_was_removed_stops_before_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, repo, clock) = init(dir.path());
    let d = data();
    let mut run = begin(&repo);
    run.add_stream("db.sql", &d[..]).unwrap();
    // Someone runs `unlock --remove-all` on another host.
    let other = second_host(dir.path(), ManualClock::new(clock.now()));
    assert_eq!(other.unlock(true).unwrap(), 1);
    let e = run.commit().expect_err("commit without a lock");
    assert_eq!(e.kind(), ErrorKind::LockLost, "{e}");
    assert!(e.to_string().contains("removed from storage"), "{e}");
    assert_eq!(snapshot_count(&repo), 0);
    next_backup_works(&repo);
}

#[test]
fn the_refresher_notices_a_removed_lock_and_the_backup_stops_reading() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, repo, clock) = init(dir.path());
    let mut run = begin(&repo);
    let other = second_host(dir.path(), ManualClock::new(clock.now()));
    other.unlock(true).unwrap();
    clock.advance(REFRESH_EVERY);
    // An endless stream: only the lost lock can end this backup.
    let endless = std::io::repeat(b'x').take(16 << 30);
    let e = run.add_stream("db.sql", endless).expect_err("stopped");
    assert_eq!(e.kind(), ErrorKind::LockLost, "{e}");
    assert_eq!(snapshot_count(&repo), 0);
    assert_eq!(
        lock_count(repo.backend()),
        0,
        "the lost lock was written again"
    );
}

/// A reader that raises `cancel` after `after` bytes, then keeps going.
struct CancelAfter {
    left: usize,
    cancel: Cancel,
}

impl Read for CancelAfter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            self.cancel.cancel();
        }
        let n = buf.len().min(self.left.max(1 << 16));
        self.left = self.left.saturating_sub(n);
        buf[..n].fill(b'y');
        Ok(n)
    }
}

#[test]
fn a_cancelled_backup_records_nothing_and_releases_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (b, repo, _clock) = init(dir.path());
    let cancel = Cancel::new();
    let cancellable = repo.clone().with_cancel(cancel.clone());
    let reader = CancelAfter {
        left: 8 << 20,
        cancel: cancel.clone(),
    };
    let e =
        backup_stream(&cancellable, reader, &stream_opts(), Arc::default()).expect_err("cancelled");
    assert_eq!(e.kind(), ErrorKind::Interrupted, "{e}");
    assert!(e.to_string().contains("no snapshot was recorded"), "{e}");
    assert_eq!(snapshot_count(&repo), 0);
    assert_eq!(
        lock_count(b.as_ref()),
        0,
        "the cancelled backup left its lock"
    );
    // Cancelled at the very end (after the data, before the commit) too.
    let cancel = Cancel::new();
    let late = repo.clone().with_cancel(cancel.clone());
    let d = data();
    let mut run = begin(&late);
    run.add_stream("db.sql", &d[..]).unwrap();
    cancel.cancel();
    assert_eq!(
        run.commit().err().map(|e| e.kind()),
        Some(ErrorKind::Interrupted)
    );
    assert_eq!(snapshot_count(&repo), 0);
    next_backup_works(&repo);
}

#[test]
fn a_restore_reader_holds_a_shared_lock_and_stops_when_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let (b, repo, _clock) = init(dir.path());
    next_backup_works(&repo);
    let cancel = Cancel::new();
    let handle = repo.clone().with_cancel(cancel.clone());
    let reader = BlobReader::open(&handle, "restore").unwrap();
    assert_eq!(lock_count(b.as_ref()), 1);
    let e = repo.lock(true, "prune").expect_err("the reader's lock");
    assert!(e.to_string().contains("`restore`"), "{e}");
    reader.check_live().unwrap();
    cancel.cancel();
    assert_eq!(
        reader.check_live().err().map(|e| e.kind()),
        Some(ErrorKind::Interrupted)
    );
    drop(reader);
    assert_eq!(lock_count(b.as_ref()), 0);
    drop(repo.lock(true, "prune").unwrap());
}

fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}
