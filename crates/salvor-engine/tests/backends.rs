//! The backend contract and the decorators around providers: every local
//! stack passes the conformance suite; the suite catches a store that
//! truncates reads; transient failures are retried until they pass and
//! permanent ones fail at once with the object named; a backup over a
//! link that drops every few requests completes and checks clean; the
//! metered decorator counts what reaches the store. (S3 and SFTP run the
//! same suite through `salvor check-storage` in the CLI's tests, against
//! the real servers.)

mod common;

use std::path::Path;
use std::sync::Arc;

use salvor_engine::backend::fault::{Failure, FaultyBackend};
use salvor_engine::backend::metered::MeteredBackend;
use salvor_engine::backend::opendal::OpendalBackend;
use salvor_engine::backend::retry::{RetryPolicy, RetryingBackend};
use salvor_engine::backend::{Backend, FileType, conformance, decorate, open_url};
use salvor_engine::backup::{BackupProgress, StreamOptions, backup_stream};
use salvor_engine::format::config::RepoConfig;
use salvor_engine::repo::{BlobReader, InitOptions};
use salvor_engine::{ErrorKind, Repository};

fn local(dir: &Path) -> OpendalBackend {
    let b = OpendalBackend::from_url(dir.to_str().unwrap()).unwrap();
    b.create().unwrap();
    b
}

fn assert_conforms(b: &dyn Backend, spool: &Path) {
    let failed: Vec<String> = conformance::run(b, spool)
        .into_iter()
        .filter_map(|o| o.failure.map(|f| format!("{}: {f}", o.check)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} fails:\n{}",
        b.location(),
        failed.join("\n")
    );
}

#[test]
fn local_and_memory_stores_and_every_decorator_keep_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    assert_conforms(&local(&dir.path().join("plain")), spool.path());
    assert_conforms(
        decorate(local(&dir.path().join("decorated")), &Default::default()).as_ref(),
        spool.path(),
    );
    assert_conforms(open_url("memory://").unwrap().as_ref(), spool.path());
    // Retries over a link that drops every third request.
    let flaky = FaultyBackend::new(local(&dir.path().join("flaky")));
    flaky.fail_every(3);
    assert_conforms(
        &RetryingBackend::new(flaky, RetryPolicy::immediate(10)),
        spool.path(),
    );
}

#[test]
fn the_suite_catches_a_store_that_truncates_reads() {
    let dir = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let b = FaultyBackend::new(local(dir.path()));
    b.truncate_reads(true);
    let outcomes = conformance::run(&b, spool.path());
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.failure.is_some())
        .map(|o| o.check)
        .collect();
    assert!(
        failed.contains(&"written objects read back and are listed")
            && failed.contains(&"ranged reads return exactly the range"),
        "{outcomes:?}"
    );
}

#[test]
fn transient_failures_are_retried_and_permanent_ones_fail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyBackend::new(local(dir.path())));
    let b = RetryingBackend::new(faulty.clone(), RetryPolicy::immediate(4));
    let name = "ab".repeat(32);
    b.write(FileType::Snapshot, &name, b"snap").unwrap();

    let before = faulty.request_count();
    faulty.fail_next(3, Failure::Transient);
    assert_eq!(b.read(FileType::Snapshot, &name).unwrap(), b"snap");
    assert_eq!(
        faulty.request_count() - before,
        4,
        "three failures, then success"
    );

    let before = faulty.request_count();
    faulty.fail_next(4, Failure::Transient);
    let e = b.read(FileType::Snapshot, &name).unwrap_err();
    assert_eq!(faulty.request_count() - before, 4);
    let text = e.to_string();
    assert!(text.contains("gave up after 4 attempts"), "{text}");
    assert!(text.contains(&FileType::Snapshot.path(&name)), "{text}");

    let before = faulty.request_count();
    faulty.fail_next(1, Failure::Permanent);
    let e = b.write(FileType::Index, &name, b"x").unwrap_err();
    assert_eq!(
        faulty.request_count() - before,
        1,
        "a permanent error is not retried"
    );
    assert!(!e.is_transient());
    assert!(e.to_string().contains(&FileType::Index.path(&name)), "{e}");

    // A missing object is permanent too: no retry, reported as missing.
    let before = faulty.request_count();
    let e = b.read(FileType::Key, &name).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(faulty.request_count() - before, 1);
}

fn dump_text(n: u32) -> Vec<u8> {
    (0..n)
        .flat_map(|i| format!("INSERT INTO t VALUES ({i}, 'row {i} of {n}');\n").into_bytes())
        .collect()
}

#[test]
fn a_backup_over_a_link_that_drops_every_seventh_request_completes_and_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyBackend::new(local(dir.path())));
    let metered = Arc::new(MeteredBackend::new(faulty.clone()));
    let retried = RetryingBackend::new(metered.clone(), RetryPolicy::immediate(5));
    let repo = Repository::init(Box::new(retried), b"pw", &common::init_options()).unwrap();
    faulty.fail_every(7);
    let data = dump_text(300_000);
    let stream = StreamOptions {
        name: "db.sql".into(),
        ..Default::default()
    };
    let (_, snap) = backup_stream(
        &repo,
        &data[..],
        &stream,
        Arc::new(BackupProgress::default()),
    )
    .unwrap();
    let sent = metered.requests().unwrap();
    assert!(sent.failed > 0, "the link dropped requests: {sent:?}");
    assert_eq!(
        sent.total(),
        faulty.request_count(),
        "every request counted once"
    );
    assert!(sent.write >= 3 && sent.bytes_written > 0, "{sent:?}");

    faulty.fail_every(0);
    common::assert_clean(&repo);
    let reader = BlobReader::new(&repo, Arc::new(repo.load_index().unwrap()));
    let root = reader.read_tree(&snap.tree).unwrap();
    let mut out = Vec::new();
    salvor_engine::browse::dump(&reader, root.find(b"db.sql").unwrap(), &mut out).unwrap();
    assert!(out == data, "the stream differs");
}

#[test]
fn listings_carry_sizes_and_the_stores_modification_times() {
    let dir = tempfile::tempdir().unwrap();
    let b = local(dir.path());
    let before = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(2);
    b.write(FileType::Snapshot, &"cd".repeat(32), b"12345")
        .unwrap();
    let listed = b.list(FileType::Snapshot).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, 5);
    let t = listed[0]
        .modified
        .expect("local disks have modification times");
    assert!(t >= before && t <= jiff::Timestamp::now(), "{t}");
}

/// A restore from a remote store reads as many packs at once as the
/// store has connections, not one per core: over a link where every
/// request takes 50 ms, four reads overlap even on a two-core machine.
#[test]
fn a_remote_restore_reads_as_many_packs_at_once_as_the_store_has_connections() {
    use salvor_engine::backend::limit::LimitedBackend;
    use salvor_engine::restore::{RestoreOptions, RestoreProgress, restore};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // 24 files of incompressible bytes, in packs of about 256 KiB.
    for i in 0..24u64 {
        let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let data: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        std::fs::write(src.join(format!("f{i}")), data).unwrap();
    }
    let store = Arc::new(FaultyBackend::new(
        OpendalBackend::from_url("memory://").unwrap(),
    ));
    let limited = Arc::new(LimitedBackend::new(store.clone(), 16));
    let mut config = RepoConfig::new_default();
    config.pack_target = 256 << 10;
    config.frame_target = 64 << 10;
    let init = InitOptions {
        config,
        kdf: common::cheap_kdf(),
    };
    let repo = Repository::init(Box::new(limited.clone()), b"pw", &init).unwrap();
    let backup = salvor_engine::backup::BackupOptions {
        paths: vec![src.clone()],
        ..Default::default()
    };
    let (_, snap) =
        salvor_engine::backup::backup_paths(&repo, &backup, Arc::new(BackupProgress::default()))
            .unwrap();
    assert!(
        repo.load_index().unwrap().packs().len() >= 12,
        "small packs, so that there are many to read"
    );
    assert!(
        limited.connections() >= 4,
        "a remote store has several connections"
    );
    let reader = BlobReader::open(&repo, "restore").unwrap();
    limited.reset_peak();
    store.delay_requests(std::time::Duration::from_millis(50));
    let opts = RestoreOptions {
        target: dir.path().join("restore"),
        ..Default::default()
    };
    restore(&reader, &snap, &opts, &RestoreProgress::default()).unwrap();
    let peak = limited.peak();
    assert!(peak >= 4, "at most {peak} reads at once");
    let restored = opts.target.join(src.strip_prefix("/").unwrap());
    for i in 0..24 {
        let name = format!("f{i}");
        assert!(
            std::fs::read(restored.join(&name)).unwrap() == std::fs::read(src.join(&name)).unwrap(),
            "{name} differs"
        );
    }
}

/// Two inits racing on one location: exactly one makes the repository, the
/// other is told it exists and leaves no key file behind, so the
/// repository opens with the winner's password only.
#[test]
fn of_two_racing_inits_one_wins_and_the_other_leaves_nothing() {
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("repo");
        let url = url.to_str().unwrap();
        let results: Vec<_> = std::thread::scope(|s| {
            let a = s.spawn(|| {
                Repository::init(open_url(url).unwrap(), b"alpha", &common::init_options())
            });
            let b = s.spawn(|| {
                Repository::init(open_url(url).unwrap(), b"beta", &common::init_options())
            });
            vec![("alpha", a.join().unwrap()), ("beta", b.join().unwrap())]
        });
        let winners: Vec<&str> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} inits succeeded",
            winners.len()
        );
        for (_, r) in &results {
            if let Err(e) = r {
                assert_eq!(e.kind(), ErrorKind::RepositoryExists, "round {round}: {e}");
            }
        }
        let backend = open_url(url).unwrap();
        assert_eq!(
            backend.list(FileType::Key).unwrap().len(),
            1,
            "round {round}"
        );
        let loser = if winners[0] == "alpha" {
            "beta"
        } else {
            "alpha"
        };
        assert!(Repository::open(open_url(url).unwrap(), winners[0].as_bytes()).is_ok());
        let e = Repository::open(open_url(url).unwrap(), loser.as_bytes())
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::WrongPassword, "round {round}");
    }
}
