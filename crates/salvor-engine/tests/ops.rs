//! Operations as library calls, driven as a daemon would: snapshots are
//! filtered by host, tag and source; "latest of a source" skips newer
//! snapshots of other sources, and a named snapshot of another source is
//! refused; stats count two identical backups as one copy of the data;
//! diff names what changed.

mod common;

use std::path::Path;
use std::sync::Arc;

use salvor_engine::backend::open_url;
use salvor_engine::backup::{BackupOptions, BackupProgress, backup_paths};
use salvor_engine::format::snapshot::Manifest;
use salvor_engine::id::SnapshotId;
use salvor_engine::ops::snapshots::{SnapshotFilter, list, select};
use salvor_engine::ops::stats::{StatsOptions, stats};
use salvor_engine::{ErrorKind, Remedy, Repository};

fn init(dir: &Path) -> Repository {
    let opts = common::init_options();
    Repository::init(open_url(dir.to_str().unwrap()).unwrap(), b"pw", &opts).unwrap()
}

fn backup(repo: &Repository, src: &Path, host: &str, tags: &[&str], source: &str) -> SnapshotId {
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        tags: tags.iter().map(ToString::to_string).collect(),
        host: Some(host.into()),
        manifest: Some((source.into(), Manifest::default())),
        // Each backup reads everything: the snapshots are told apart by
        // their metadata, not by what a parent let them skip.
        force: true,
        ..Default::default()
    };
    backup_paths(repo, &opts, Arc::new(BackupProgress::default()))
        .unwrap()
        .0
}

fn ids(entries: &[(SnapshotId, salvor_engine::format::snapshot::Snapshot)]) -> Vec<SnapshotId> {
    entries.iter().map(|(id, _)| *id).collect()
}

#[test]
fn snapshots_are_filtered_and_chosen_by_host_tag_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha\n").unwrap();
    let repo = init(&dir.path().join("repo"));
    let etc_a = backup(&repo, &src, "a", &["daily"], "etc");
    let pg_a = backup(&repo, &src, "a", &["daily", "critical"], "pg");
    let etc_b = backup(&repo, &src, "b", &[], "etc");

    let all = list(&repo, &SnapshotFilter::default()).unwrap();
    assert_eq!(ids(&all.snapshots), [etc_a, pg_a, etc_b]);
    assert!(all.unreadable.is_empty());
    let host_a = SnapshotFilter {
        hosts: vec!["a".into()],
        ..Default::default()
    };
    assert_eq!(ids(&list(&repo, &host_a).unwrap().snapshots), [etc_a, pg_a]);
    let both_tags = SnapshotFilter {
        tags: vec!["daily".into(), "critical".into()],
        ..Default::default()
    };
    assert_eq!(ids(&list(&repo, &both_tags).unwrap().snapshots), [pg_a]);
    let with_path = |p: &str| SnapshotFilter {
        paths: vec![p.to_string()],
        ..Default::default()
    };
    let src_path = src.to_str().unwrap();
    assert_eq!(
        list(&repo, &with_path(src_path)).unwrap().snapshots.len(),
        3
    );
    let slash = format!("{src_path}/");
    assert_eq!(list(&repo, &with_path(&slash)).unwrap().snapshots.len(), 3);
    assert!(
        list(&repo, &with_path("/elsewhere"))
            .unwrap()
            .snapshots
            .is_empty()
    );
    // A named snapshot of another host is refused.
    let e = select(&repo, &etc_b.to_hex(), &host_a).unwrap_err();
    assert!(e.to_string().contains("not of the host"), "{e}");

    // The latest of a source skips newer snapshots of other sources.
    let pg = SnapshotFilter {
        source: Some("pg".into()),
        ..Default::default()
    };
    assert_eq!(select(&repo, "latest", &pg).unwrap().0, pg_a);
    let etc = SnapshotFilter {
        source: Some("etc".into()),
        ..Default::default()
    };
    assert_eq!(select(&repo, "latest", &etc).unwrap().0, etc_b);
    // A snapshot of another source, named by id, is refused.
    let e = select(&repo, &etc_b.to_hex()[..12], &pg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains("holds no backup of source pg"),
        "{e}"
    );
    assert_eq!(e.remedy_kind(), Some(Remedy::ListSnapshots));
    let none = SnapshotFilter {
        source: Some("redis".into()),
        ..Default::default()
    };
    let e = select(&repo, "latest", &none).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("no snapshot of source redis"), "{e}");
}

#[test]
fn stats_count_identical_backups_once_and_diff_names_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(src.join("data.bin"), &data).unwrap();
    let repo = init(&dir.path().join("repo"));
    let first = backup(&repo, &src, "a", &[], "files");
    backup(&repo, &src, "a", &[], "files");

    let s = stats(&repo, &StatsOptions::default()).unwrap();
    assert_eq!(s.snapshots, 2);
    assert_eq!(s.logical_bytes, 2 * data.len() as u64);
    // The data once, and the snapshots' small trees.
    let unique = s.unique_bytes - data.len() as u64;
    assert!(unique < 4096, "{s:?}");
    assert!(s.dedup_ratio > 1.99 && s.dedup_ratio < 2.0, "{s:?}");
    assert!(s.stored_bytes > 0 && s.packs > 0, "{s:?}");
    let one = StatsOptions {
        snapshots: vec![first.to_hex()],
    };
    let r = stats(&repo, &one).unwrap().dedup_ratio;
    assert!(r > 0.99 && r < 1.0, "{r}");

    std::fs::write(src.join("new.txt"), b"new\n").unwrap();
    let third = backup(&repo, &src, "a", &[], "files");
    let d = salvor_engine::ops::diff::diff(&repo, &first.to_hex(), &third.to_hex()).unwrap();
    let added: Vec<_> = d
        .iter()
        .filter(|e| e.change == '+')
        .map(|e| &e.path)
        .collect();
    assert_eq!(added.len(), 1, "{d:?}");
    assert!(added[0].ends_with("/src/new.txt"), "{d:?}");
}
