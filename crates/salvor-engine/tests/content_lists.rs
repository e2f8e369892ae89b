//! Format v2 content lists through the engine API: a long stream's content
//! becomes list blobs that dump, restore, check and a re-backup all read; an
//! unchanged stream backed up again stores no data and a small tree (in v1
//! its whole chunk list again); an edit adds a few list blobs; v1
//! repositories keep flat lists.

use std::path::Path;
use std::sync::Arc;

use salvor_engine::Repository;
use salvor_engine::backend::opendal::OpendalBackend;
use salvor_engine::backup::{BackupProgress, StreamOptions, backup_stream};
use salvor_engine::check::{CheckOptions, CheckProgress, Subset, check};
use salvor_engine::crypto::KdfParams;
use salvor_engine::format::config::RepoConfig;
use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::format::tree::Node;
use salvor_engine::repo::{BlobReader, InitOptions};

fn init(dir: &Path, version: u8) -> Repository {
    let mut config = RepoConfig::new_default();
    config.version = version;
    let opts = InitOptions {
        config,
        kdf: KdfParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
    };
    let backend = OpendalBackend::from_url(dir.to_str().unwrap()).unwrap();
    Repository::init(Box::new(backend), b"pw", &opts).unwrap()
}

/// SQL-like lines: 4 KiB stream chunks, about 6,000 of them.
fn dump(edit: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0u64;
    while out.len() < 24 << 20 {
        let v = if edit && i == 200_000 {
            7
        } else {
            i * 7919 % 100_003
        };
        out.extend_from_slice(
            format!("INSERT INTO t VALUES ({i}, 'row {v}', {});\n", i % 97).as_bytes(),
        );
        i += 1;
    }
    out
}

fn backup(repo: &Repository, data: &[u8]) -> Snapshot {
    let opts = StreamOptions {
        name: "db.sql".into(),
        ..Default::default()
    };
    backup_stream(repo, data, &opts, Arc::new(BackupProgress::default()))
        .unwrap()
        .1
}

fn node(repo: &Repository, snap: &Snapshot) -> (BlobReader, Node) {
    let reader = BlobReader::new(repo, Arc::new(repo.load_index().unwrap()));
    let root = reader.read_tree(&snap.tree).unwrap();
    let n = root.find(b"db.sql").unwrap().clone();
    (reader, n)
}

fn dumped(reader: &BlobReader, n: &Node) -> Vec<u8> {
    let mut out = Vec::new();
    salvor_engine::browse::dump(reader, n, &mut out).unwrap();
    out
}

#[test]
fn a_long_stream_is_a_tree_of_lists_that_every_reader_follows() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(&dir.path().join("repo"), 2);
    let data = dump(false);
    let first = backup(&repo, &data);
    let (reader, n) = node(&repo, &first);
    assert!(n.content_levels >= 1, "levels {}", n.content_levels);
    assert!(n.content.len() <= salvor_engine::content::MAX_LIST);
    assert!(dumped(&reader, &n) == data, "dump differs");
    let ids = salvor_engine::content::data_ids(&reader, &n.content, n.content_levels).unwrap();
    assert!(ids.len() > 4000, "{} chunks", ids.len());

    let target = dir.path().join("restore");
    let opts = salvor_engine::restore::RestoreOptions {
        target: target.clone(),
        ..Default::default()
    };
    salvor_engine::restore::restore(
        &reader,
        &first,
        &opts,
        &salvor_engine::restore::RestoreProgress::default(),
    )
    .unwrap();
    assert!(
        std::fs::read(target.join("db.sql")).unwrap() == data,
        "restore differs"
    );

    // Unchanged: no data, and a tree of one small node (v1 stores 32 bytes a chunk again).
    let again = backup(&repo, &data);
    assert_eq!(again.summary.bytes_added, 0, "{:?}", again.summary);
    assert!(again.summary.tree_bytes_added < 4096, "{:?}", again.summary);

    // One changed row: its chunk, and the lists above it.
    let edited = dump(true);
    let third = backup(&repo, &edited);
    assert!(
        third.summary.data_blobs_added <= 2 + 2 * u64::from(n.content_levels),
        "{:?}",
        third.summary
    );
    let (reader, n3) = node(&repo, &third);
    assert!(dumped(&reader, &n3) == edited);

    let r = check(
        &repo,
        &CheckOptions {
            read_data: Some(Subset::All),
        },
        &CheckProgress::default(),
    )
    .unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.snapshots, 3);
}

#[test]
fn v1_repositories_keep_flat_lists() {
    let dir = tempfile::tempdir().unwrap();
    let repo = init(&dir.path().join("repo"), 1);
    let data = dump(false);
    let first = backup(&repo, &data);
    let (reader, n) = node(&repo, &first);
    assert_eq!(n.content_levels, 0);
    assert!(n.content.len() > 4000);
    assert!(dumped(&reader, &n) == data);
    let again = backup(&repo, &data);
    assert_eq!(again.summary.bytes_added, 0);
    assert!(
        again.summary.tree_bytes_added as usize >= n.content.len() * 32,
        "v1 stores the whole list again: {:?}",
        again.summary
    );
    // Every object written into it says version 1, as salvor 0.1 requires.
    for entry in walkdir(&dir.path().join("repo")) {
        let bytes = std::fs::read(&entry).unwrap();
        if bytes.starts_with(b"SLVR") {
            assert_eq!(bytes[4], 1, "{} has version {}", entry.display(), bytes[4]);
        }
    }
}

fn walkdir(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
