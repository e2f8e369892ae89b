//! A repository of each format version, made once by the salvor that
//! introduced it and checked in under `tests/fixtures/repo-vN/`, keeps
//! restoring byte for byte in every later version, and each of its objects
//! decodes to what `tests/fixtures/repo-vN.vectors` records: the test vectors
//! of every object kind (config, key file, index file, snapshot, lock, the
//! blobs of every pack, the master key's keyed hash and chunker seed).
//! docs/FORMAT.md (section 19) describes them.
//!
//! The fixtures are never written by the suite. `make_fixture` (ignored)
//! made each, from the trees `fixture_tree` builds, with
//! `SALVOR_WRITE_FIXTURE=N cargo test -p salvor --test fixtures -- --ignored`;
//! a format change adds a new fixture beside the old ones, never replaces one.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use common::world::*;
use salvor_engine::backend::{FileType, open_url};
use salvor_engine::format::{self, ObjectKind};
use salvor_engine::id::PackId;
use salvor_engine::repo::Repository;

/// A fixture repository's password (test data, not a secret).
fn password(version: u8) -> String {
    format!("salvor fixture v{version}")
}

/// Where a fixture's trees were backed up from, as its snapshots record.
fn tree_path(version: u8) -> String {
    format!("/tmp/salvor-fixture-v{version}/tree")
}

fn fixture_dir(version: u8) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/repo-v{version}"))
}

fn vectors_file(version: u8) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/repo-v{version}.vectors"))
}

/// The stream of the fixture's third snapshot (`db.sql`). From v2 it is
/// long enough (about 1,200 chunks of 1 KiB) for its content list to be
/// list blobs.
fn fixture_stream(version: u8) -> Vec<u8> {
    if version == 1 {
        text(19, 300_000)
    } else {
        text(19, 1_200_000)
    }
}

/// The tree of the first (`version` 1) or second (2) snapshot: every kind of
/// entry salvor records, small enough to check in.
fn fixture_tree(root: &Path, version: u32) {
    let conf: &[u8] = if version == 1 {
        b"[server]\nport = 8080\n"
    } else {
        b"[server]\nport = 9090\nworkers = 4\n"
    };
    write_mode(&root.join("etc/app.conf"), conf, 0o644);
    write_mode(
        &root.join("etc/tls/server.key"),
        b"-----BEGIN KEY-----\nfixture\n",
        0o600,
    );
    write_mode(
        &root.join("etc/tls/server.crt"),
        b"-----BEGIN CERTIFICATE-----\n",
        0o644,
    );
    write_mode(&root.join("bin/tool"), &noise(1, 40_000), 0o755);
    write_mode(&root.join("bin/suid-tool"), &noise(2, 1000), 0o4755);
    let mut big = mixed(3, 150_000);
    if version == 2 {
        big.extend_from_slice(&noise(4, 20_000));
    }
    write_mode(&root.join("data/big.bin"), &big, 0o640);
    write_mode(&root.join("data/empty"), b"", 0o644);
    write_mode(&root.join("data/readonly.txt"), b"read only\n", 0o444);
    write(&root.join("data/hard-a.txt"), &text(5, 20_000));
    std::fs::hard_link(root.join("data/hard-a.txt"), root.join("etc/hard-b.txt")).unwrap();
    write(
        &root.join(std::ffi::OsStr::from_bytes(b"names/not-utf8-\xff\xfe.txt")),
        b"bytes, not text\n",
    );
    write(
        &root.join("names/unicod\u{e9}-\u{65e5}\u{672c}.txt"),
        b"unicode\n",
    );
    if version == 1 {
        write(&root.join("names/with space & 'quote'.txt"), b"spaces\n");
    } else {
        write(&root.join("names/added in v2.txt"), b"new\n");
    }
    let mut deep = root.join("deep");
    for i in 0..12 {
        deep.push(format!("d{i}"));
    }
    write(&deep.join("bottom.txt"), b"deep down\n");
    std::fs::create_dir_all(root.join("links")).unwrap();
    std::os::unix::fs::symlink("../etc/app.conf", root.join("links/relative")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("links/absolute")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", root.join("links/dangling")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::create_dir_all(root.join("shared")).unwrap();
    // Times last, every entry's fixed (the snapshots recorded them).
    let mut files: Vec<PathBuf> = walk_files(root);
    files.sort();
    for (n, f) in files.iter().enumerate() {
        let n = n as i64 + 1;
        let ns = (1_600_000_000 + n * 3600) * 1_000_000_000 + (n * 123_456_789) % 1_000_000_000;
        salvor_engine::longpath::set_times_nofollow(f, ns).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("shared"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(&dirs[i])
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.path())
            .collect();
        subdirs.sort();
        dirs.extend(subdirs);
        i += 1;
    }
    for (k, d) in dirs.iter().rev().enumerate() {
        set_mtime(d, 1_500_000_000 + k as u64 * 60, 987_654_321);
    }
}

/// Every object of the fixture of `version` at `dir`, decoded, one line each.
fn vectors(dir: &Path, version: u8) -> String {
    let backend = open_url(dir.to_str().unwrap()).unwrap();
    let repo = Repository::open(backend, password(version).as_bytes()).unwrap();
    assert_eq!(repo.config().version, version);
    let (key, b) = (repo.key(), repo.backend());
    let hash = |data: &[u8]| blake3::hash(data).to_hex().to_string();
    let mut out = vec![
        format!(
            "# salvor repository format v{version} test vectors for tests/fixtures/repo-v{version}"
        ),
        "# <object> <plaintext length> <BLAKE3 of the plaintext>; blob <pack> <kind> <id> <length>"
            .to_string(),
        format!(
            "key-check {}",
            key.blob_id(format!("salvor format v{version} test vector").as_bytes())
                .to_hex()
        ),
        format!("chunker-seed {:016x}", key.chunker_seed()),
    ];
    if let salvor_engine::chunker::ChunkerSecret::Key(k) = key.chunker_secret(version) {
        out.push(format!("chunker-key {}", hex::encode(k)));
    }
    let config = b.read(FileType::Config, "config").unwrap();
    let plain = format::open(key, ObjectKind::Config, &config, &|| "config".into()).unwrap();
    out.push(format!("config {} {}", plain.len(), hash(&plain)));
    out.push(format!("config-json {}", String::from_utf8(plain).unwrap()));
    let names = |ft: FileType| {
        let mut n: Vec<String> = b.list(ft).unwrap().into_iter().map(|o| o.name).collect();
        n.sort();
        n
    };
    for name in names(FileType::Key) {
        let raw = b.read(FileType::Key, &name).unwrap();
        out.push(format!("keys/{name} {} {}", raw.len(), hash(&raw)));
    }
    for (ft, kind, dir) in [
        (FileType::Index, ObjectKind::Index, "index"),
        (FileType::Snapshot, ObjectKind::Snapshot, "snapshots"),
        (FileType::Lock, ObjectKind::Lock, "locks"),
    ] {
        for name in names(ft) {
            let plain = repo.read_doc(ft, kind, &name).unwrap();
            out.push(format!("{dir}/{name} {} {}", plain.len(), hash(&plain)));
        }
    }
    let index = std::sync::Arc::new(repo.load_index().unwrap());
    let reader = salvor_engine::repo::blobs::BlobReader::new(&repo, index);
    for name in names(FileType::Pack) {
        let raw = b.read(FileType::Pack, &name).unwrap();
        let (_, header) =
            salvor_engine::pack::read_header(key, &PackId::from_hex(&name).unwrap(), &raw).unwrap();
        for frame in &header.frames {
            for blob in &frame.blobs {
                let plain = reader.read_blob(&blob.id).unwrap();
                assert_eq!(plain.len(), blob.length as usize);
                out.push(format!(
                    "blob {name} {:?} {} {}",
                    blob.kind,
                    blob.id.to_hex(),
                    blob.length
                ));
            }
        }
    }
    out.join("\n") + "\n"
}

/// A copy of the fixture to work in: commands may write locks, and the
/// checkout must never change.
fn fixture_copy(w: &World, version: u8) -> PathBuf {
    let to = w.path(&format!("repo-v{version}"));
    let mut stack = vec![(fixture_dir(version), to.clone())];
    while let Some((from, to)) = stack.pop() {
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&from).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push((e.path(), to.join(e.file_name())));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    // Directories git cannot hold when empty.
    for d in ["locks", "snapshots", "index", "keys", "data"] {
        std::fs::create_dir_all(to.join(d)).unwrap();
    }
    to
}

fn objects_decode_to_the_recorded_vectors(version: u8) {
    let w = World::new();
    let repo = fixture_copy(&w, version);
    let want = std::fs::read_to_string(vectors_file(version)).unwrap();
    let got = vectors(&repo, version);
    assert!(
        got == want,
        "the v{version} fixture decodes differently from its vectors:\n{}",
        got.lines()
            .zip(want.lines())
            .filter(|(g, w)| g != w)
            .map(|(g, w)| format!("  got  {g}\n  want {w}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn checks_and_restores_byte_for_byte(version: u8) {
    let w = World::new();
    let repo = fixture_copy(&w, version);
    let run = |args: &[&str]| {
        let out = w
            .cmd()
            .env("SALVOR_REPO", &repo)
            .env("SALVOR_PASSWORD", password(version))
            .args(args)
            .output()
            .unwrap();
        assert_no_panic(&out);
        assert!(out.status.success(), "salvor {args:?}:\n{}", show(&out));
        out
    };
    let out = run(&["check", "--read-data"]);
    assert!(stdout(&out).contains("no errors found"), "{}", show(&out));
    let snaps: serde_json::Value =
        serde_json::from_slice(&run(&["--json", "snapshots"]).stdout).unwrap();
    let snaps = snaps.as_array().unwrap();
    // v2 adds a command source's snapshot with its typed manifest.
    assert_eq!(snaps.len(), if version == 1 { 3 } else { 4 }, "{snaps:?}");
    for (i, tree) in [(0, 1), (1, 2)] {
        let expected = w.path(&format!("expected-{tree}"));
        fixture_tree(&expected, tree);
        let target = w.path(&format!("restore-{tree}"));
        let id = snaps[i]["id"].as_str().unwrap();
        run(&["restore", "-q", id, "--target", target.to_str().unwrap()]);
        assert_same_tree(
            &expected,
            &restored(&target, Path::new(&tree_path(version))),
        );
    }
    let out = run(&["dump", snaps[2]["id"].as_str().unwrap(), "db.sql"]);
    assert!(
        out.stdout == fixture_stream(version),
        "the v{version} stream differs"
    );
    // Listing and comparing read the same trees.
    let out = run(&[
        "diff",
        snaps[0]["id"].as_str().unwrap(),
        snaps[1]["id"].as_str().unwrap(),
    ]);
    let diff = stdout(&out);
    assert!(
        diff.contains("added in v2.txt") && diff.contains("with space"),
        "{diff}"
    );
    if version >= 2 {
        let m = &snaps[3]["manifests"]["cmd"];
        assert_eq!(m["type"], "command");
        assert_eq!(m["identity"], "command:printf");
        let out = run(&["dump", snaps[3]["id"].as_str().unwrap(), "cmd/stdout"]);
        assert_eq!(out.stdout, b"a\nb\n");
    }
}

#[test]
fn v1_fixture_objects_decode_to_the_recorded_vectors() {
    objects_decode_to_the_recorded_vectors(1);
}

#[test]
fn v1_fixture_checks_and_restores_byte_for_byte() {
    checks_and_restores_byte_for_byte(1);
}

#[test]
fn v2_fixture_objects_decode_to_the_recorded_vectors() {
    objects_decode_to_the_recorded_vectors(2);
}

#[test]
fn v2_fixture_checks_and_restores_byte_for_byte() {
    checks_and_restores_byte_for_byte(2);
}

/// The v2 fixture's stream really is a tree of list blobs.
#[test]
fn v2_fixture_stream_has_list_blobs() {
    let w = World::new();
    let dir = fixture_copy(&w, 2);
    let repo = Repository::open(
        open_url(dir.to_str().unwrap()).unwrap(),
        password(2).as_bytes(),
    )
    .unwrap();
    let reader = salvor_engine::repo::blobs::BlobReader::new(
        &repo,
        std::sync::Arc::new(repo.load_index().unwrap()),
    );
    let snaps = repo.snapshots().unwrap();
    let root = reader.read_tree(&snaps[2].1.tree).unwrap();
    let node = root.find(b"db.sql").unwrap();
    assert!(node.content_levels >= 1, "levels {}", node.content_levels);
}

/// Writes the fixture of version `SALVOR_WRITE_FIXTURE` (once, by hand;
/// see the module comment).
#[test]
#[ignore = "writes tests/fixtures/repo-vN: run by hand once per format version"]
fn make_fixture() {
    let version: u8 = std::env::var("SALVOR_WRITE_FIXTURE")
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("set SALVOR_WRITE_FIXTURE to the format version to write");
    let dir = fixture_dir(version);
    assert!(
        !dir.exists(),
        "{} exists: a fixture is never replaced",
        dir.display()
    );
    use salvor_engine::crypto::KdfParams;
    use salvor_engine::format::config::{ChunkerParams, RepoConfig};
    let mut config = RepoConfig::new_default();
    config.version = version;
    // Small file chunks, so that a 150 kB file has several; from v2 small
    // stream chunks, so that a 1.2 MB stream has a content list of list blobs.
    config.file_chunker = ChunkerParams::for_files(16 * 1024).unwrap();
    if version >= 2 {
        config.stream_chunker =
            ChunkerParams::for_streams(1024, salvor_engine::format::config::CutRule::Lines)
                .unwrap();
    }
    let opts = salvor_engine::repo::InitOptions {
        config,
        kdf: KdfParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
    };
    let repo = Repository::init(
        open_url(dir.to_str().unwrap()).unwrap(),
        password(version).as_bytes(),
        &opts,
    )
    .unwrap();
    let tree_path = tree_path(version);
    let tree = Path::new(&tree_path);
    let _ = std::fs::remove_dir_all(tree.parent().unwrap());
    let w = World::new();
    let run = |args: &[&str], stdin: Option<Vec<u8>>| {
        let mut c = w.cmd();
        c.env("SALVOR_REPO", &dir)
            .env("SALVOR_PASSWORD", password(version))
            .args(args);
        if let Some(s) = stdin {
            c.write_stdin(s);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "salvor {args:?}:\n{}", show(&out));
    };
    for version in [1, 2] {
        let _ = std::fs::remove_dir_all(tree);
        fixture_tree(tree, version);
        let tag = format!("v{version}");
        run(
            &[
                "backup", "-q", "--host", "fixture", "--tag", &tag, &tree_path,
            ],
            None,
        );
    }
    run(
        &[
            "backup",
            "-q",
            "--host",
            "fixture",
            "--stdin",
            "--stdin-name",
            "db.sql",
        ],
        Some(fixture_stream(version)),
    );
    if version >= 2 {
        // A source snapshot, so that a typed manifest (type, identity) has
        // a vector too.
        let config = dir.parent().unwrap().join("fixture-salvor.toml");
        std::fs::write(
            &config,
            "[source.cmd]\ntype = \"command\"\ncommand = \"printf 'a\\\\nb\\\\n'\"\n",
        )
        .unwrap();
        run(
            &[
                "backup",
                "-q",
                "--host",
                "fixture",
                "--config",
                config.to_str().unwrap(),
                "--source",
                "cmd",
            ],
            None,
        );
        std::fs::remove_file(&config).unwrap();
    }
    // A stale shared lock, so that the lock kind has a vector too.
    let lock = salvor_engine::format::lock::LockFile {
        exclusive: false,
        hostname: "fixture".into(),
        pid: 1,
        refreshed: 1_700_000_000,
        command: "backup".into(),
        started: None,
        pid_namespace: None,
    };
    repo.write_doc(
        FileType::Lock,
        ObjectKind::Lock,
        &serde_json::to_vec(&lock).unwrap(),
    )
    .unwrap();
    std::fs::remove_dir_all(tree.parent().unwrap()).unwrap();
    std::fs::write(vectors_file(version), vectors(&dir, version)).unwrap();
}
