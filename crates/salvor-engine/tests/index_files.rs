//! Index v2 and the local cache through the engine API: pack records carry
//! their write time; small index files are compacted as they accumulate,
//! and readers cope with what an interrupted or concurrent compaction
//! leaves; a cached repository opened again reads no index file and no
//! snapshot from storage, refetches a damaged cached copy, and `check`
//! bypasses the cache.

mod common;

use std::path::Path;
use std::sync::Arc;

use salvor_engine::Repository;
use salvor_engine::backend::fault::FaultyBackend;
use salvor_engine::backend::opendal::OpendalBackend;
use salvor_engine::backend::{Backend, FileType, ObjectInfo};
use salvor_engine::backup::{BackupProgress, StreamOptions, backup_stream};
use salvor_engine::format::index::IndexFile;
use salvor_engine::repo::{BlobReader, InitOptions};

type Counted = Arc<FaultyBackend<OpendalBackend>>;

fn opts() -> InitOptions {
    common::init_options()
}

fn counted(dir: &Path) -> Counted {
    Arc::new(FaultyBackend::new(
        OpendalBackend::from_url(dir.to_str().unwrap()).unwrap(),
    ))
}

fn backup(repo: &Repository, name: &str, data: &[u8]) {
    let opts = StreamOptions {
        name: name.into(),
        ..Default::default()
    };
    backup_stream(repo, data, &opts, Arc::new(BackupProgress::default())).unwrap();
}

fn index_names(b: &dyn Backend) -> Vec<String> {
    b.list(FileType::Index)
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect()
}

fn check_clean(repo: &Repository) {
    common::assert_clean(repo);
}

/// Every snapshot dumps back the bytes its stream was made of.
fn assert_restorable(repo: &Repository, expected: &[(String, Vec<u8>)]) {
    let reader = BlobReader::new(repo, Arc::new(repo.load_index().unwrap()));
    let snaps = repo.snapshots().unwrap();
    assert_eq!(snaps.len(), expected.len());
    for ((_, snap), (name, data)) in snaps.iter().zip(expected) {
        let root = reader.read_tree(&snap.tree).unwrap();
        let node = root.find(name.as_bytes()).unwrap();
        let mut out = Vec::new();
        salvor_engine::browse::dump(&reader, node, &mut out).unwrap();
        assert!(&out == data, "{name} differs");
    }
}

#[test]
fn pack_records_carry_when_they_were_written() {
    let dir = tempfile::tempdir().unwrap();
    let before = jiff::Timestamp::now().as_second();
    let repo = Repository::init(Box::new(counted(dir.path())), b"pw", &opts()).unwrap();
    backup(&repo, "a", b"some bytes\n");
    let after = jiff::Timestamp::now().as_second();
    for name in index_names(repo.backend()) {
        let f: IndexFile = repo.read_index_file(&name).unwrap();
        for p in &f.packs {
            assert!((before..=after).contains(&p.written), "{}", p.written);
            assert!(p.reusable());
        }
    }
    let index = repo.load_index().unwrap();
    assert!(index.packs().iter().all(|p| p.written >= before));
}

#[test]
fn small_index_files_are_compacted_and_every_snapshot_still_restores() {
    let dir = tempfile::tempdir().unwrap();
    let backend = counted(dir.path());
    let repo = Repository::init(Box::new(backend.clone()), b"pw", &opts()).unwrap();
    let mut expected = Vec::new();
    let limit = salvor_engine::repo::index_files::COMPACT_AT;
    for i in 0..=limit {
        let (name, data) = (format!("s{i}"), format!("stream {i}\n").repeat(50 + i));
        backup(&repo, &name, data.as_bytes());
        expected.push((name, data.into_bytes()));
        // Below the threshold nothing is merged: one file per backup.
        if i < limit {
            assert_eq!(index_names(backend.as_ref()).len(), i + 1);
        }
    }
    let files = index_names(backend.as_ref());
    assert_eq!(
        files.len(),
        1,
        "{} index files after compaction",
        files.len()
    );
    let merged = repo.read_index_file(&files[0]).unwrap();
    assert_eq!(
        merged.supersedes.len(),
        limit + 1,
        "it names what it replaced"
    );
    assert_restorable(&repo, &expected);
    check_clean(&repo);

    // An interrupted compaction: the merged file is durable, the files it
    // supersedes are still there. Readers skip them; the next compaction
    // removes them.
    let mut leftovers = Vec::new();
    for (i, p) in merged.packs.iter().enumerate().take(3) {
        let id = repo
            .write_index(&IndexFile {
                packs: vec![p.clone()],
                extensions: vec![salvor_engine::format::Extension {
                    tag: 2 * i as u32 + 2,
                    data: vec![],
                }],
                ..Default::default()
            })
            .unwrap();
        leftovers.push(id);
    }
    let mut again = merged.clone();
    again.supersedes.extend(leftovers.iter().copied());
    let again_id = repo.write_index(&again).unwrap();
    repo.delete_doc(FileType::Index, &files[0]).unwrap();
    let index = repo.load_index().unwrap();
    let mut skipped = index.superseded().to_vec();
    skipped.sort();
    let mut want: Vec<String> = leftovers.iter().map(|i| i.to_hex()).collect();
    want.sort();
    assert_eq!(skipped, want);
    assert_restorable(&repo, &expected);
    let stats = repo.compact_index(&index).unwrap();
    assert_eq!(stats.files_removed, 3);
    assert_eq!(index_names(backend.as_ref()), vec![again_id.to_hex()]);
    check_clean(&repo);
}

/// Lists one index file that is gone by the time it is read, as when a
/// compaction deletes it in between.
struct Vanishing<B>(B, std::sync::atomic::AtomicBool);

impl<B: Backend> Backend for Vanishing<B> {
    fn location(&self) -> &str {
        self.0.location()
    }
    fn list(&self, kind: FileType) -> salvor_engine::Result<Vec<ObjectInfo>> {
        let mut l = self.0.list(kind)?;
        if kind == FileType::Index && !self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
            l.push(ObjectInfo::new("ab".repeat(32), 100));
        }
        Ok(l)
    }
    fn read(&self, kind: FileType, name: &str) -> salvor_engine::Result<Vec<u8>> {
        self.0.read(kind, name)
    }
    fn read_range(
        &self,
        kind: FileType,
        name: &str,
        offset: u64,
        length: u64,
    ) -> salvor_engine::Result<Vec<u8>> {
        self.0.read_range(kind, name, offset, length)
    }
    fn write(&self, kind: FileType, name: &str, data: &[u8]) -> salvor_engine::Result<()> {
        self.0.write(kind, name, data)
    }
    fn delete(&self, kind: FileType, name: &str) -> salvor_engine::Result<()> {
        self.0.delete(kind, name)
    }
    fn create(&self) -> salvor_engine::Result<()> {
        self.0.create()
    }
}

#[test]
fn an_index_file_deleted_between_list_and_read_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(Box::new(counted(dir.path())), b"pw", &opts()).unwrap();
    backup(&repo, "a", b"kept\n");
    let blobs = repo.load_index().unwrap().blob_count();
    let backend = Vanishing(
        OpendalBackend::from_url(dir.path().to_str().unwrap()).unwrap(),
        false.into(),
    );
    let repo = Repository::open(Box::new(backend), b"pw").unwrap();
    let index = repo.load_index().unwrap();
    assert_eq!(index.blob_count(), blobs);
    assert!(index.damaged().is_empty());
}

#[test]
fn a_cached_repository_reads_no_index_or_snapshot_from_storage() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let repo_dir = dir.path().join("repo");
    std::fs::create_dir(&repo_dir).unwrap();
    let repo = Repository::init(Box::new(counted(&repo_dir)), b"pw", &opts())
        .unwrap()
        .with_cache(&cache)
        .unwrap();
    let expected: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("s{i}"),
                format!("day {i}\n").repeat(99).into_bytes(),
            )
        })
        .collect();
    for (name, data) in &expected {
        backup(&repo, name, data);
    }

    // Opened again, as the next run would: everything is in the cache.
    let backend = counted(&repo_dir);
    let repo = Repository::open(Box::new(backend.clone()), b"pw")
        .unwrap()
        .with_cache(&cache)
        .unwrap();
    assert_restorable(&repo, &expected);
    assert_eq!(backend.reads(FileType::Index), 0);
    assert_eq!(backend.reads(FileType::Snapshot), 0);
    backup(&repo, "s0", &expected[0].1);
    assert_eq!(backend.reads(FileType::Index), 0, "an unchanged re-backup");

    // A damaged cached copy is noticed by its hash and fetched again.
    let names = index_names(backend.as_ref());
    let cached = repo.cache().unwrap().dir().join("index").join(&names[0]);
    std::fs::write(&cached, b"garbage").unwrap();
    let index = repo.load_index().unwrap();
    assert!(index.damaged().is_empty());
    assert_eq!(backend.reads(FileType::Index), 1);
    assert_ne!(std::fs::read(&cached).unwrap(), b"garbage");

    // check reads the repository itself, never the cache.
    check_clean(&repo);
    assert_eq!(backend.reads(FileType::Index), 1 + names.len() as u64);

    // A file deleted from the repository leaves the cache at the next load.
    std::fs::remove_file(repo_dir.join("index").join(&names[0])).unwrap();
    let _ = repo.load_index().unwrap();
    assert!(!cached.exists());
}

/// `check --read-data` compares each pack's whole frame table (offsets,
/// lengths, compression, every blob's place) with the index, not only
/// its salt and blob set: an index record that moves one blob is found,
/// as is a pack listed twice with different frames.
#[test]
fn check_compares_each_packs_frame_table_with_the_index() {
    use salvor_engine::check::FindingKind;
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(Box::new(counted(dir.path())), b"pw", &opts()).unwrap();
    let data: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("row {i}\n").into_bytes())
        .collect();
    backup(&repo, "a", &data);
    check_clean(&repo);
    let names = index_names(repo.backend());
    assert_eq!(names.len(), 1);
    let original = repo.read_index_file(&names[0]).unwrap();
    let mut file = original.clone();
    let pack = file
        .packs
        .iter_mut()
        .find(|p| p.frames.iter().any(|f| f.blobs.len() > 1))
        .expect("a frame of several blobs");
    let frame = pack.frames.iter_mut().find(|f| f.blobs.len() > 1).unwrap();
    // The blob set stays; one blob's place in its frame moves.
    frame.blobs[1].offset += 1;
    let id = pack.id;
    repo.write_index(&file).unwrap();
    repo.backend().delete(FileType::Index, &names[0]).unwrap();
    let r = common::check_data(&repo);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_eq!(r.errors[0].kind, FindingKind::IndexMismatch);
    assert_eq!(r.errors[0].object, format!("pack {id}"));
    assert!(
        r.errors[0]
            .message
            .contains("header and the index disagree"),
        "{:?}",
        r.errors
    );
    // The true record beside the forged one: two records disagree.
    repo.write_index(&original).unwrap();
    let r = common::check_data(&repo);
    assert!(
        r.errors.iter().any(|f| f.kind == FindingKind::IndexMismatch
            && f.message.contains("listed with different frames")),
        "{:?}",
        r.errors
    );
}
