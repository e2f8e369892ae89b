//! The index persisted in the local cache: a large index is written once as
//! a table and later opens map it instead of reading every index file; the
//! table answers exactly as the index files do (locations, dedup flags,
//! packs, a restore through it); files added since are loaded on top; a
//! table made from files that are gone, or a damaged or forged one, is
//! not used and is made again.

mod common;

use std::path::Path;
use std::sync::Arc;

use salvor_engine::Repository;
use salvor_engine::backend::fault::FaultyBackend;
use salvor_engine::backend::opendal::OpendalBackend;
use salvor_engine::backend::{Backend, FileType};
use salvor_engine::backup::{BackupProgress, StreamOptions, backup_stream};
use salvor_engine::format::Extension;
use salvor_engine::format::index::{IndexFile, IndexPack};
use salvor_engine::format::pack::{BlobEntry, BlobKind, Compression, FrameEntry};
use salvor_engine::id::{BlobId, PackId};
use salvor_engine::index::Index;
use salvor_engine::repo::BlobReader;

type Counted = Arc<FaultyBackend<OpendalBackend>>;

fn init(dir: &Path) -> Counted {
    let backend = Arc::new(FaultyBackend::new(
        OpendalBackend::from_url(dir.to_str().unwrap()).unwrap(),
    ));
    Repository::init(Box::new(backend.clone()), b"pw", &common::init_options()).unwrap();
    backend
}

fn open(backend: &Counted, cache: &Path) -> Repository {
    Repository::open(Box::new(backend.clone()), b"pw")
        .unwrap()
        .with_derived_cache(cache)
        .unwrap()
}

/// An index file of `packs` synthetic packs of 1,000 blobs (no pack data:
/// only the index is under test), numbered from `first`; odd-numbered
/// files' packs carry a critical extension, so their blobs are not reusable.
fn synthetic_file(repo: &Repository, first: u64, packs: u64) {
    let packs = (first..first + packs)
        .map(|p| {
            let frames = (0..4)
                .map(|f| FrameEntry {
                    offset: 30 + f * 1_000_000,
                    length: 1_000_000,
                    raw_length: 1_000_000,
                    compression: Compression::Zstd,
                    blobs: (0..250u32)
                        .map(|b| BlobEntry {
                            kind: if b == 0 {
                                BlobKind::Tree
                            } else {
                                BlobKind::Data
                            },
                            id: BlobId(
                                *blake3::hash(&(p * 1_000 + f * 250 + u64::from(b)).to_le_bytes())
                                    .as_bytes(),
                            ),
                            offset: b * 4_000,
                            length: 4_000,
                        })
                        .collect(),
                })
                .collect();
            let mut pack = IndexPack::new(
                PackId(*blake3::hash(&p.to_be_bytes()).as_bytes()),
                4_000_000,
                [7; 24],
                frames,
                1_767_322_800,
            );
            if p % 2 == 1 {
                pack.extensions.push(Extension {
                    tag: 1,
                    data: vec![1],
                });
            }
            pack
        })
        .collect();
    repo.write_index(&IndexFile {
        packs,
        ..Default::default()
    })
    .unwrap();
}

/// Everything an index answers, resolved to ids and values: the same for
/// two indexes that hold the same repository however they were loaded.
fn answers(index: &Index) -> Vec<(BlobId, PackId, u64, u32, u32, bool, bool)> {
    let mut all: Vec<_> = index
        .blobs()
        .map(|(id, l)| {
            let frame = index.frame(l.frame);
            let pack = index.pack(frame.pack);
            (
                id,
                pack.id,
                frame.offset,
                l.offset,
                l.length,
                l.kind == BlobKind::Tree,
                index.reusable(&id),
            )
        })
        .collect();
    all.sort_unstable_by_key(|a| a.0);
    all
}

#[test]
fn a_large_index_is_opened_from_the_cached_table_and_answers_as_its_files_do() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let backend = init(&dir.path().join("repo"));
    let repo = open(&backend, &cache);
    // A real stream, then 72k synthetic blobs: past the 64k blobs from
    // which a table is worth persisting.
    let data: Vec<u8> = (0..3_000_000u32)
        .flat_map(|i| (i / 7).to_le_bytes())
        .collect();
    let opts = StreamOptions {
        name: "db.sql".into(),
        ..Default::default()
    };
    backup_stream(&repo, &data[..], &opts, Arc::new(BackupProgress::default())).unwrap();
    for f in 0..9 {
        synthetic_file(&repo, f * 8, 8);
    }
    let direct = answers(&repo.without_cache().load_index().unwrap());
    assert!(direct.len() > 72_000);
    assert!(direct.iter().any(|a| !a.6) && direct.iter().any(|a| a.6));
    let files = backend.list(FileType::Index).unwrap().len() as u64;

    // The first open reads every file and persists the table.
    let before = backend.reads(FileType::Index);
    let first = repo.load_index().unwrap();
    assert_eq!(backend.reads(FileType::Index) - before, files);
    assert!(
        cache
            .join(repo.config().id.as_str())
            .join("index.table")
            .exists()
    );
    assert_eq!(answers(&first), direct);

    // A reopened repository maps the table: no index file is read, the
    // answers are the same, and the stream restores through it.
    let repo = open(&backend, &cache);
    let before = backend.reads(FileType::Index);
    let index = repo.load_index().unwrap();
    assert_eq!(
        backend.reads(FileType::Index),
        before,
        "read from the table"
    );
    assert_eq!(answers(&index), direct);
    assert_eq!(index.packs().len(), first.packs().len());
    let reader = BlobReader::new(&repo, Arc::new(index));
    let (_, snap) = repo.snapshots().unwrap().remove(0);
    let root = reader.read_tree(&snap.tree).unwrap();
    let mut out = Vec::new();
    salvor_engine::browse::dump(&reader, root.find(b"db.sql").unwrap(), &mut out).unwrap();
    assert!(out == data, "the stream restores through the table");

    // A file added since is read on top of the table, alone.
    synthetic_file(&repo, 1_000, 2);
    let before = backend.reads(FileType::Index);
    let index = repo.load_index().unwrap();
    assert_eq!(backend.reads(FileType::Index) - before, 1);
    let direct = answers(&repo.without_cache().load_index().unwrap());
    assert_eq!(answers(&index), direct);
    assert_eq!(index.blob_count(), direct.len());
}

#[test]
fn a_stale_damaged_or_forged_table_is_not_used_and_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let backend = init(&dir.path().join("repo"));
    let repo = open(&backend, &cache);
    for f in 0..9 {
        synthetic_file(&repo, f * 8, 8);
    }
    repo.load_index().unwrap();
    let table = cache.join(repo.config().id.as_str()).join("index.table");
    let files = backend.list(FileType::Index).unwrap();
    // Loads the index, which reads `reads` index files and answers as the
    // files themselves do.
    let load_reading = |reads: u64| {
        let before = backend.reads(FileType::Index);
        let index = repo.load_index().unwrap();
        assert_eq!(backend.reads(FileType::Index) - before, reads);
        assert_eq!(
            answers(&index),
            answers(&repo.without_cache().load_index().unwrap())
        );
        index
    };

    // A byte flipped: the mac fails, every file is read, the table is
    // written again and then used.
    let mut bytes = std::fs::read(&table).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&table, &bytes).unwrap();
    load_reading(files.len() as u64);
    load_reading(0); // made again, and used

    // Another repository's table (another key) is a forgery here.
    let other_dir = tempfile::tempdir().unwrap();
    let other_backend = init(&other_dir.path().join("repo"));
    let other = open(&other_backend, &other_dir.path().join("cache"));
    for f in 0..9 {
        synthetic_file(&other, f * 8, 8);
    }
    other.load_index().unwrap();
    let other_table = other_dir
        .path()
        .join("cache")
        .join(other.config().id.as_str())
        .join("index.table");
    std::fs::copy(&other_table, &table).unwrap();
    load_reading(files.len() as u64);

    // A file the table was made from is gone (a compaction or repair
    // replaced it): the table is stale, and the index is read from files.
    backend.delete(FileType::Index, &files[0].name).unwrap();
    let index = load_reading(files.len() as u64 - 1);
    assert!(index.blob_count() < 72_000);

    // A truncated table is not an error either.
    std::fs::write(&table, b"SALVORIT").unwrap();
    repo.load_index().unwrap();
}
