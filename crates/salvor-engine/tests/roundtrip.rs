//! Property tests of the whole data path through the engine API: random trees
//! (unicode and non-UTF-8 names, empty and multi-MiB files, symlinks,
//! hardlinks, permission bits, nested and deep directories, nanosecond mtimes)
//! are backed up, restored and compared with the source; and a backend that
//! runs out of space or returns flipped bits never yields a panic, a
//! half-written snapshot or silently wrong data.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use salvor_engine::backend::fault::FaultyBackend;
use salvor_engine::backend::opendal::OpendalBackend;
use salvor_engine::backup::{BackupOptions, backup_paths};
use salvor_engine::check::{CheckOptions, CheckProgress, FindingKind, Subset, check};
use salvor_engine::crypto::KdfParams;
use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::repo::{BlobReader, InitOptions};
use salvor_engine::restore::{RestoreOptions, RestoreProgress, restore};
use salvor_engine::{ErrorKind, Repository};

const PASSWORD: &[u8] = b"roundtrip test password";

fn fast_init() -> InitOptions {
    InitOptions {
        kdf: KdfParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        ..Default::default()
    }
}

fn local(path: &Path) -> OpendalBackend {
    OpendalBackend::from_url(path.to_str().expect("utf-8 temp path")).expect("local backend")
}

/// Deterministic bytes: xorshift noise, or (when `text`) repetitive text.
fn content(seed: u64, len: usize, text: bool) -> Vec<u8> {
    if text {
        let line = format!("line {seed} of a compressible file; ");
        return line.bytes().cycle().take(len).collect();
    }
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

// ---------------------------------------------------------------- generation

#[derive(Debug, Clone)]
enum Spec {
    File {
        size: usize,
        seed: u64,
        text: bool,
        mode: u32,
        mtime: (i64, i64),
    },
    Symlink {
        target: Vec<u8>,
        mtime: (i64, i64),
    },
    /// A hard link to the `to`-th regular file created (mod count).
    Hardlink {
        to: usize,
    },
    Dir {
        mode: u32,
        mtime: (i64, i64),
        children: BTreeMap<Vec<u8>, Spec>,
    },
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-zA-Z0-9_.-]{1,12}".prop_map(String::into_bytes),
        2 => "\\PC{1,6}".prop_map(String::into_bytes),
        2 => prop::collection::vec(any::<u8>(), 1..12),
    ]
    .prop_map(|mut n| {
        for b in &mut n {
            if *b == b'/' || *b == 0 {
                *b = b'x';
            }
        }
        if n == b"." || n == b".." {
            n.push(b'x');
        }
        n
    })
}

fn mtime() -> impl Strategy<Value = (i64, i64)> {
    (1i64..4_000_000_000, 0i64..1_000_000_000)
}

fn file_mode() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![
        0o644, 0o600, 0o755, 0o700, 0o444, 0o640, 0o750, 0o400, 0o4755, 0o2755, 0o666,
    ])
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => Just(0usize),
        6 => 1usize..4096,
        3 => 4096usize..300_000,
        1 => (1usize << 20)..(5usize << 19),
    ]
}

fn leaf() -> impl Strategy<Value = Spec> {
    prop_oneof![
        6 => (size(), any::<u64>(), any::<bool>(), file_mode(), mtime())
            .prop_map(|(size, seed, text, mode, mtime)| Spec::File { size, seed, text, mode, mtime }),
        2 => (prop_oneof![name(), "(\\.\\./)?[a-z]{1,8}(/[a-z]{1,8})?".prop_map(String::into_bytes), Just(b"/etc/hostname".to_vec())], mtime())
            .prop_map(|(target, mtime)| Spec::Symlink { target, mtime }),
        1 => any::<usize>().prop_map(|to| Spec::Hardlink { to }),
    ]
}

fn dir_mode() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![0o755, 0o700, 0o750, 0o775, 0o1777, 0o711])
}

fn tree() -> impl Strategy<Value = Spec> {
    let inner = leaf().prop_recursive(4, 40, 8, |inner| {
        (
            dir_mode(),
            mtime(),
            prop::collection::btree_map(name(), inner, 0..8),
        )
            .prop_map(|(mode, mtime, children)| Spec::Dir {
                mode,
                mtime,
                children,
            })
    });
    (
        dir_mode(),
        mtime(),
        prop::collection::btree_map(name(), inner, 1..10),
    )
        .prop_map(|(mode, mtime, children)| Spec::Dir {
            mode,
            mtime,
            children,
        })
}

/// Everything needed to materialize a spec: files are written first, hard
/// links second, then file and symlink times, then directory modes and
/// times deepest first (creating entries bumps a directory's mtime).
#[derive(Default)]
struct Build {
    files: Vec<PathBuf>,
    links: Vec<(PathBuf, usize)>,
    times: Vec<(PathBuf, (i64, i64))>,
    dirs: Vec<(PathBuf, u32, (i64, i64))>,
}

fn set_time(path: &Path, (s, ns): (i64, i64)) {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(s, ns);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat");
}

fn create(path: &Path, spec: &Spec, b: &mut Build) {
    match spec {
        Spec::File {
            size,
            seed,
            text,
            mode,
            mtime,
        } => {
            std::fs::write(path, content(*seed, *size, *text)).expect("write file");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).expect("chmod");
            b.files.push(path.to_path_buf());
            b.times.push((path.to_path_buf(), *mtime));
        }
        Spec::Symlink { target, mtime } => {
            std::os::unix::fs::symlink(OsStr::from_bytes(target), path).expect("symlink");
            b.times.push((path.to_path_buf(), *mtime));
        }
        Spec::Hardlink { to } => b.links.push((path.to_path_buf(), *to)),
        Spec::Dir {
            mode,
            mtime,
            children,
        } => {
            std::fs::create_dir(path).expect("mkdir");
            for (n, c) in children {
                create(&path.join(OsStr::from_bytes(n)), c, b);
            }
            b.dirs.push((path.to_path_buf(), *mode, *mtime));
        }
    }
}

/// Materializes `spec` at `root` (plus a file > 1 MiB and a 30-level deep path,
/// so every case has both).
fn materialize(root: &Path, spec: &Spec, seed: u64) {
    let mut b = Build::default();
    create(root, spec, &mut b);
    let big = root.join("big.bin");
    if big.symlink_metadata().is_err() {
        std::fs::write(
            &big,
            content(
                seed,
                (1 << 20) + (seed % 500_000) as usize,
                seed.is_multiple_of(2),
            ),
        )
        .expect("big file");
    }
    let mut deep = root.join("deep");
    if deep.symlink_metadata().is_err() {
        for i in 0..30 {
            deep.push(format!("level-{i}"));
        }
        std::fs::create_dir_all(&deep).expect("deep dirs");
        std::fs::write(deep.join("bottom.txt"), b"at the bottom\n").expect("deep file");
    }
    if !b.files.is_empty() {
        for (path, to) in &b.links {
            std::fs::hard_link(&b.files[to % b.files.len()], path).expect("hard link");
        }
    }
    for (path, t) in &b.times {
        set_time(path, *t);
    }
    // `dirs` is in post-order: children before parents.
    for (path, mode, t) in &b.dirs {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).expect("chmod dir");
        set_time(path, *t);
    }
}

// ---------------------------------------------------------------- comparison

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    mtime: (i64, i64),
    data: Vec<u8>,
}

/// Relative path → entry, and the hardlink groups (paths sharing an inode).
type Scan = (BTreeMap<Vec<u8>, Entry>, BTreeSet<BTreeSet<Vec<u8>>>);

fn scan(root: &Path) -> Scan {
    let mut entries = BTreeMap::new();
    let mut inodes: BTreeMap<u64, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        let rel = p
            .strip_prefix(root)
            .expect("below root")
            .as_os_str()
            .as_bytes()
            .to_vec();
        let ft = m.file_type();
        let (kind, data) = if ft.is_dir() {
            for e in std::fs::read_dir(&p).expect("read_dir") {
                stack.push(e.expect("dir entry").path());
            }
            ("dir", Vec::new())
        } else if ft.is_symlink() {
            (
                "symlink",
                std::fs::read_link(&p)
                    .expect("readlink")
                    .into_os_string()
                    .into_vec(),
            )
        } else {
            inodes.entry(m.ino()).or_default().insert(rel.clone());
            ("file", std::fs::read(&p).expect("read"))
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            m.mode() & 0o7777
        };
        entries.insert(
            rel,
            Entry {
                kind,
                mode,
                mtime: (m.mtime(), m.mtime_nsec()),
                data,
            },
        );
    }
    let groups = inodes.into_values().filter(|g| g.len() > 1).collect();
    (entries, groups)
}

fn assert_same_tree(src: &Path, restored: &Path) -> Result<(), TestCaseError> {
    let (a, la) = scan(src);
    let (b, lb) = scan(restored);
    let names_a: Vec<_> = a.keys().collect();
    let names_b: Vec<_> = b.keys().collect();
    prop_assert_eq!(names_a, names_b, "restored tree lists different paths");
    for (p, ea) in &a {
        let eb = &b[p];
        let shown = String::from_utf8_lossy(p);
        prop_assert_eq!(ea.kind, eb.kind, "type of {}", shown);
        prop_assert_eq!(ea.mode, eb.mode, "mode of {}", shown);
        prop_assert_eq!(ea.mtime, eb.mtime, "mtime of {}", shown);
        prop_assert!(
            ea.data == eb.data,
            "content or link target of {} differs ({} vs {} bytes)",
            shown,
            ea.data.len(),
            eb.data.len()
        );
    }
    prop_assert_eq!(la, lb, "hardlink groups differ");
    Ok(())
}

fn restored_root(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").expect("absolute source"))
}

fn restore_into(repo: &Repository, snap: &Snapshot, target: &Path) -> salvor_engine::Result<()> {
    let reader = BlobReader::new(repo, Arc::new(repo.load_index()?));
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        ..Default::default()
    };
    restore(&reader, snap, &opts, &RestoreProgress::default()).map(|_| ())
}

fn count_files(root: &Path) -> u64 {
    scan(root).0.values().filter(|e| e.kind == "file").count() as u64
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 10,
        max_shrink_iters: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// restore(backup(tree)) == tree, for a first and an incremental backup;
    /// the incremental one reads nothing and `check --read-data` is clean.
    #[test]
    fn random_trees_round_trip(spec in tree(), seed in any::<u64>()) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        materialize(&src, &spec, seed);
        let repo = Repository::init(Box::new(local(&dir.path().join("repo"))), PASSWORD, &fast_init()).unwrap();
        let opts = BackupOptions { paths: vec![src.clone()], ..Default::default() };

        let (_, s1) = backup_paths(&repo, &opts, Arc::default()).unwrap();
        prop_assert!(!s1.partial, "warnings: {:?}", s1.summary.warnings);
        let t1 = dir.path().join("restore1");
        restore_into(&repo, &s1, &t1).unwrap();
        assert_same_tree(&src, &restored_root(&t1, &src))?;

        let (_, s2) = backup_paths(&repo, &opts, Arc::default()).unwrap();
        prop_assert_eq!(s2.summary.bytes_read, 0);
        prop_assert_eq!(s2.summary.files_unchanged, count_files(&src));
        prop_assert_eq!(s2.summary.data_blobs_added, 0);
        let t2 = dir.path().join("restore2");
        restore_into(&repo, &s2, &t2).unwrap();
        assert_same_tree(&src, &restored_root(&t2, &src))?;

        let r = check(&repo, &CheckOptions { read_data: Some(Subset::All) }, &CheckProgress::default()).unwrap();
        prop_assert!(r.errors.is_empty(), "check errors: {:?}", r.errors);
        prop_assert_eq!(r.snapshots, 2);
    }
}

// ---------------------------------------------------------------- faults

/// Small frames and packs, so a few MiB make a dozen packs (a dozen chances to fail).
fn small_packs() -> InitOptions {
    let mut o = fast_init();
    o.config.file_chunker = salvor_engine::format::config::ChunkerParams {
        min: 16 * 1024,
        avg: 64 * 1024,
        max: 256 * 1024,
        cut: salvor_engine::format::config::CutRule::Gear,
    };
    o.config.frame_target = 64 * 1024;
    o.config.pack_target = 256 * 1024;
    o
}

fn write_tree(root: &Path, files: &[(&str, usize, u64)]) {
    for (name, len, seed) in files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content(*seed, *len, seed.is_multiple_of(3))).unwrap();
    }
}

/// A disk that fills up at every possible point of a backup: the backup
/// fails with an error (no panic), no snapshot appears, the repository
/// still checks clean, earlier snapshots restore, and once space is back
/// the same backup succeeds. Then flipped bits on read are reported as
/// corruption naming the pack, never returned as data.
#[test]
fn full_disk_mid_backup_and_bit_flips_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write_tree(
        &a,
        &[
            ("one.txt", 100_000, 3),
            ("sub/two.bin", 700_000, 7),
            ("empty", 0, 9),
        ],
    );
    write_tree(
        &b,
        &[
            ("x.bin", 1 << 20, 11),
            ("y.bin", 1 << 20, 13),
            ("z/w.txt", 900_000, 15),
            ("z/v.bin", 600_000, 17),
        ],
    );
    let fault = Arc::new(FaultyBackend::new(local(&dir.path().join("repo"))));
    let repo = Repository::init(Box::new(fault.clone()), PASSWORD, &small_packs()).unwrap();
    let (_, sa) = backup_paths(
        &repo,
        &BackupOptions {
            paths: vec![a.clone()],
            ..Default::default()
        },
        Arc::default(),
    )
    .unwrap();

    let opts_b = BackupOptions {
        paths: vec![b.clone()],
        ..Default::default()
    };
    let mut failures = 0;
    let mut succeeded = None;
    for n in 0..200 {
        fault.fail_writes_after(n);
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            backup_paths(&repo, &opts_b, Arc::default())
        }));
        fault.fail_writes_after(-1);
        let res = res.unwrap_or_else(|_| panic!("backup panicked when writes fail after {n}"));
        match res {
            Ok(s) => {
                succeeded = Some((n, s));
                break;
            }
            Err(e) => {
                failures += 1;
                assert!(
                    e.is_no_space() || e.to_string().contains("No space"),
                    "write budget {n}: unexpected error {e}"
                );
                assert_eq!(
                    repo.snapshots().unwrap().len(),
                    1,
                    "write budget {n}: a failed backup left a snapshot"
                );
                let r = check(
                    &repo,
                    &CheckOptions { read_data: None },
                    &CheckProgress::default(),
                )
                .unwrap();
                assert!(
                    r.errors.is_empty(),
                    "write budget {n}: check errors {:?}",
                    r.errors
                );
                let t = dir.path().join(format!("restore-a-{n}"));
                restore_into(&repo, &sa, &t).unwrap();
                assert!(
                    scan(&a).0 == scan(&restored_root(&t, &a)).0,
                    "write budget {n}: snapshot a restored differently"
                );
                std::fs::remove_dir_all(&t).unwrap();
            }
        }
    }
    let (n, (_, sb)) = succeeded.expect("backup never succeeded with 200 writes allowed");
    assert!(
        failures >= 5 && n as usize == failures,
        "expected several failing write budgets before success, got {failures}"
    );
    let r = check(
        &repo,
        &CheckOptions {
            read_data: Some(Subset::All),
        },
        &CheckProgress::default(),
    )
    .unwrap();
    assert!(r.errors.is_empty(), "check after recovery: {:?}", r.errors);
    assert!(r.packs >= 8, "small packs expected, got {}", r.packs);
    let tb = dir.path().join("restore-b");
    restore_into(&repo, &sb, &tb).unwrap();
    assert!(
        scan(&b).0 == scan(&restored_root(&tb, &b)).0,
        "snapshot b restored differently"
    );

    // Bit flips on every pack read: restore and check report corruption naming a pack.
    fault.flip_pack_bit(8 * 1000 + 3);
    let t = dir.path().join("restore-flipped");
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        restore_into(&repo, &sb, &t)
    }))
    .expect("restore panicked on corrupt data")
    .expect_err("restore of corrupt data succeeded");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(
        err.to_string().contains("pack "),
        "error does not name the pack: {err}"
    );
    let r = check(
        &repo,
        &CheckOptions {
            read_data: Some(Subset::All),
        },
        &CheckProgress::default(),
    )
    .unwrap();
    assert!(
        !r.errors.is_empty(),
        "check --read-data missed flipped bits"
    );
    assert!(
        r.errors
            .iter()
            .any(|e| e.kind == FindingKind::DamagedPack && e.object.starts_with("pack ")),
        "{:?}",
        r.errors
    );
    fault.flip_pack_bit(0);
    let t = dir.path().join("restore-after-flip");
    restore_into(&repo, &sa, &t).unwrap();
    assert!(scan(&a).0 == scan(&restored_root(&t, &a)).0);
}

#[test]
fn a_storage_failure_stops_the_backup_early() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files: Vec<(String, usize, u64)> = (0..60)
        .map(|i| (format!("f{i:02}.bin"), 512 * 1024, 100 + i))
        .collect();
    let specs: Vec<(&str, usize, u64)> =
        files.iter().map(|(n, l, s)| (n.as_str(), *l, *s)).collect();
    write_tree(&src, &specs);
    let total: u64 = files.iter().map(|f| f.1 as u64).sum();
    let fault = Arc::new(FaultyBackend::new(local(&dir.path().join("repo"))));
    let repo = Repository::init(Box::new(fault.clone()), PASSWORD, &small_packs()).unwrap();
    // The lock and a few packs succeed, then the disk is "full".
    fault.fail_writes_after(4);
    let progress = Arc::new(salvor_engine::backup::BackupProgress::default());
    let opts = BackupOptions {
        paths: vec![src],
        ..Default::default()
    };
    let err = backup_paths(&repo, &opts, progress.clone()).unwrap_err();
    fault.fail_writes_after(-1);
    assert!(err.is_no_space(), "{err}");
    let read = progress.bytes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        read < total / 2,
        "kept reading {read} of {total} bytes after the disk filled up"
    );
    assert!(repo.snapshots().unwrap().is_empty());
}

#[test]
fn remote_style_sinks_spool_to_an_unlinked_file_and_write_it_on_commit() {
    use salvor_engine::backend::{Backend, FileType, fault::FaultyBackend};
    let dir = tempfile::tempdir().unwrap();
    // A decorator does not override `sink`: it gets the default spool sink,
    // as S3 and SFTP do.
    let backend = FaultyBackend::new(local(&dir.path().join("repo")));
    backend.create().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let data = content(3, 300_000, false);
    let mut sink = backend.sink(&spool).unwrap();
    sink.write(&data[..1000]).unwrap();
    sink.write(&data[1000..]).unwrap();
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "the spool file is unlinked, so a killed process leaves nothing"
    );
    let name = "ab".repeat(32);
    assert!(!backend.exists(FileType::Pack, &name).unwrap());
    sink.commit(&backend, FileType::Pack, &name).unwrap();
    assert_eq!(backend.read(FileType::Pack, &name).unwrap(), data);
    // Abandoned: nothing under any name.
    let mut sink = backend.sink(&spool).unwrap();
    sink.write(&data).unwrap();
    drop(sink);
    assert_eq!(backend.list(FileType::Pack).unwrap().len(), 1);
    // An unusable spool directory is a clear error, not a panic.
    let err = backend.sink(&dir.path().join("missing")).err().unwrap();
    assert!(err.to_string().contains("spool"), "{err}");
}
