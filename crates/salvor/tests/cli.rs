//! CLI integration tests through the real `salvor` binary.
//!
//! Every test works in its own temporary directory. Passwords only ever travel
//! in the environment (`SALVOR_PASSWORD`, `SALVOR_NEW_PASSWORD`), never argv.
//! Most repositories are created through the engine API with a cheap Argon2
//! cost so the suite stays fast; `init_*` tests create them through the binary.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::world::*;
use salvor_engine::backend::FileType;
use serde_json::Value;

// -------------------------------------------------------------------- tests

#[test]
fn init_creates_a_repository_and_refuses_to_overwrite_it() {
    let w = World::new();
    let v = w.json(&[&"init"]);
    assert_eq!(v["id"].as_str().map(str::len), Some(64), "{v}");
    assert!(w.repo().join("config").is_file());
    assert_eq!(count_files(&w.repo().join("keys")), 1);
    let out = w.run(&[&"init"]);
    assert!(
        !out.status.success(),
        "second init succeeded:\n{}",
        show(&out)
    );
    assert!(stderr(&out).contains("exists"), "{}", show(&out));
    // The first repository is untouched and opens with its password.
    assert_eq!(count_files(&w.repo().join("keys")), 1);
    assert_eq!(w.json(&[&"snapshots"]), Value::Array(vec![]));
}

#[test]
fn init_picks_the_stream_cut_rule_and_both_round_trip() {
    use salvor_engine::format::config::{ChunkerParams, CutRule};
    let data = mixed(5, 3 << 20);
    for (args, want) in [
        (
            vec!["init"],
            ChunkerParams::for_streams(4096, CutRule::Lines),
        ),
        (
            vec!["init", "--stream-cut", "gear", "--stream-chunk-size", "8K"],
            ChunkerParams::for_streams(8192, CutRule::Gear),
        ),
    ] {
        let w = World::new();
        let args: Vec<&dyn AsRef<OsStr>> = args.iter().map(|a| a as &dyn AsRef<OsStr>).collect();
        w.ok(&args);
        assert_eq!(w.open().config().stream_chunker, want.unwrap());
        let out = w
            .cmd()
            .args(["backup", "--stdin", "--stdin-name", "db.sql"])
            .write_stdin(data.clone())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        assert!(w.ok(&[&"dump", &"latest", &"db.sql"]).stdout == data);
    }
    let w = World::new();
    let out = w.fails(&[&"init", &"--stream-cut", &"bytes"], 2);
    assert!(stderr(&out).contains("lines"), "{}", show(&out));
}

#[test]
fn backup_and_restore_reproduce_the_tree_exactly() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    rich_tree(&src);
    let b = w.backup(&src);
    assert_eq!(b["partial"], Value::Bool(false), "{b}");
    let files = scan(&src).0.values().filter(|e| e.kind == "file").count() as u64;
    assert_eq!(b["summary"]["files_new"].as_u64(), Some(files), "{b}");
    let id = snapshot_id(&b);

    let snaps = w.json(&[&"snapshots"]);
    let list = snaps.as_array().expect("snapshots --json is an array");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"].as_str(), Some(id.as_str()));
    assert_eq!(list[0]["short_id"].as_str(), Some(&id[..8]));
    assert_eq!(list[0]["paths"][0].as_str(), Some(src.to_str().unwrap()));
    assert_eq!(list[0]["partial"], Value::Bool(false));
    let text_list = stdout(&w.ok(&[&"snapshots"]));
    assert!(
        text_list.contains(&id[..8]) && text_list.contains("1 snapshots"),
        "{text_list}"
    );

    let target = w.path("restore");
    let r = w.json(&[&"restore", &"latest", &"--target", &target]);
    assert_eq!(r["snapshot"].as_str(), Some(id.as_str()), "{r}");
    assert_eq!(r["stats"]["hardlinks"].as_u64(), Some(1), "{r}");
    assert_same_tree(&src, &restored(&target, &src));
    // The hardlink pair is one inode again.
    let (ia, ib) = (
        restored(&target, &src).join("data/hard-a.txt"),
        restored(&target, &src).join("etc/hard-b.txt"),
    );
    assert_eq!(ia.metadata().unwrap().ino(), ib.metadata().unwrap().ino());

    // Restoring by full id and by prefix gives the same tree.
    let again = w.restore(&id[..10], "restore-prefix", &src);
    assert_same_tree(&src, &again);
}

#[test]
fn ls_lists_every_file() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    rich_tree(&src);
    w.backup(&src);
    let s = src.to_str().unwrap();

    let text = stdout(&w.ok(&[&"ls", &"latest"]));
    for f in [
        "etc/app.conf",
        "data/big.bin",
        "data/empty",
        "links/relative",
        "deep/d0/d1",
    ] {
        assert!(
            text.lines().any(|l| l == format!("{s}/{f}")),
            "ls lacks {f}:\n{text}"
        );
    }
    let long = stdout(&w.ok(&[&"ls", &"--long", &"latest", &format!("{s}/links")]));
    assert!(
        long.lines()
            .any(|l| l.starts_with("lrwxrwxrwx")
                && l.ends_with("/links/relative -> ../etc/app.conf")),
        "{long}"
    );
    assert!(
        !long.contains("big.bin"),
        "ls of a directory lists other directories:\n{long}"
    );

    let v = w.json(&[&"ls", &"latest"]);
    let entries = v.as_array().expect("ls --json is an array");
    let listed: BTreeSet<String> = entries
        .iter()
        .filter_map(|e| e["path"].as_str())
        .filter_map(|p| p.strip_prefix(&format!("{s}/")).map(String::from))
        .collect();
    let expected: BTreeSet<String> = scan(&src)
        .0
        .keys()
        .filter(|k| !k.is_empty())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(listed, expected);
    let by_path = |rel: &str| {
        entries
            .iter()
            .find(|e| e["path"].as_str() == Some(&format!("{s}/{rel}")))
            .unwrap_or_else(|| panic!("{rel} not listed"))
    };
    assert_eq!(by_path("data/big.bin")["type"], "file");
    assert_eq!(by_path("data/big.bin")["size"].as_u64(), Some(3 << 20));
    assert_eq!(by_path("data/empty")["size"].as_u64(), Some(0));
    assert_eq!(by_path("links/relative")["type"], "symlink");
    assert_eq!(by_path("links/relative")["link_target"], "../etc/app.conf");
    assert_eq!(by_path("etc")["type"], "dir");
    assert_eq!(by_path("etc/secret.key")["mode"].as_u64(), Some(0o600));
    assert_eq!(by_path("bin/suid-tool")["mode"].as_u64(), Some(0o4755));
    assert!(
        listed.contains("names/not-utf8-\u{fffd}\u{fffd}.txt"),
        "{listed:?}"
    );

    // Only below a path.
    let sub = w.json(&[&"ls", &"latest", &format!("{s}/etc")]);
    let paths: Vec<&str> = sub
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(
        paths.iter().all(|p| p.starts_with(&format!("{s}/etc"))),
        "{paths:?}"
    );
    assert!(
        paths.contains(&format!("{s}/etc/app.conf").as_str()),
        "{paths:?}"
    );
    let out = w.fails(&[&"ls", &"latest", &format!("{s}/no/such/dir")], 1);
    assert!(
        stderr(&out).contains("not in the snapshot"),
        "{}",
        show(&out)
    );
}

#[test]
fn diff_shows_added_removed_and_modified() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    rich_tree(&src);
    let id1 = snapshot_id(&w.backup(&src));
    write(
        &src.join("etc/app.conf"),
        b"[server]\nport = 9090\nworkers = 8\n",
    );
    std::fs::remove_file(src.join("bin/tool")).unwrap();
    write(&src.join("new.txt"), b"new file\n");
    std::fs::set_permissions(
        src.join("etc/secret.key"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let b2 = w.backup(&src);
    assert_eq!(b2["summary"]["files_new"].as_u64(), Some(1), "{b2}");
    assert_eq!(b2["summary"]["files_changed"].as_u64(), Some(2), "{b2}");
    let id2 = snapshot_id(&b2);

    let s = src.to_str().unwrap();
    let out = stdout(&w.ok(&[&"diff", &id1, &id2]));
    for line in [
        format!("M    {s}/etc/app.conf"),
        format!("-    {s}/bin/tool"),
        format!("+    {s}/new.txt"),
        format!("U    {s}/etc/secret.key"),
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "diff lacks {line:?}:\n{out}"
        );
    }
    assert!(
        out.contains("1 added, 1 removed, 1 modified, 1 metadata changed, 0 type changed"),
        "{out}"
    );

    let v = w.json(&[&"diff", &&id1[..8], &"latest"]);
    let mut got: Vec<(String, String)> = v
        .as_array()
        .expect("diff --json is an array")
        .iter()
        .map(|e| {
            (
                e["change"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        ("+".to_string(), format!("{s}/new.txt")),
        ("-".to_string(), format!("{s}/bin/tool")),
        ("M".to_string(), format!("{s}/etc/app.conf")),
        ("U".to_string(), format!("{s}/etc/secret.key")),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn unchanged_second_backup_reads_nothing_and_stores_almost_nothing() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    rich_tree(&src);
    let files = scan(&src).0.values().filter(|e| e.kind == "file").count() as u64;
    let first = w.backup(&src);
    assert!(
        first["summary"]["bytes_read"].as_u64().unwrap() > 3 << 20,
        "{first}"
    );
    let before = w.repo_bytes();

    let second = w.backup(&src);
    let s = &second["summary"];
    assert_eq!(s["files_unchanged"].as_u64(), Some(files), "{second}");
    assert_eq!(s["files_new"].as_u64(), Some(0), "{second}");
    assert_eq!(s["files_changed"].as_u64(), Some(0), "{second}");
    assert_eq!(s["bytes_read"].as_u64(), Some(0), "{second}");
    assert_eq!(s["data_blobs_added"].as_u64(), Some(0), "{second}");
    assert_eq!(s["total_bytes"], first["summary"]["total_bytes"]);
    let grown = w.repo_bytes() - before;
    assert!(
        grown < 16 * 1024,
        "an unchanged backup added {grown} bytes (trees, index and snapshot only expected)"
    );
    let tree = w.restore("latest", "restore", &src);
    assert_same_tree(&src, &tree);
}

#[test]
fn stats_report_deduplication_and_compression() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    rich_tree(&src);
    let b1 = w.backup(&src);
    w.json(&[&"backup", &"--force", &src]);
    let v = w.json(&[&"stats"]);
    let total = b1["summary"]["total_bytes"].as_u64().unwrap();
    assert_eq!(v["snapshots"].as_u64(), Some(2), "{v}");
    assert_eq!(v["logical_bytes"].as_u64(), Some(2 * total), "{v}");
    // The hardlinked pair and the empty files share content: unique < total.
    let unique = v["unique_bytes"].as_u64().unwrap();
    assert!(
        unique > total / 2 && unique < total + 64 * 1024,
        "unique bytes {unique} for {total} of data: {v}"
    );
    assert!(v["dedup_ratio"].as_f64().unwrap() > 1.9, "{v}");
    assert!(v["compression_ratio"].as_f64().unwrap() > 1.0, "{v}");
    let stored = v["stored_bytes"].as_u64().unwrap();
    assert!(stored > 0 && stored < total, "{v}");
    assert!(v["packs"].as_u64().unwrap() >= 2, "{v}");
    // One snapshot: no deduplication between snapshots.
    let one = w.json(&[&"stats", &"latest"]);
    assert_eq!(one["snapshots"].as_u64(), Some(1));
    assert!(one["dedup_ratio"].as_f64().unwrap() < 1.1, "{one}");
    let text = stdout(&w.ok(&[&"stats"]));
    assert!(
        text.contains("dedup ratio:") && text.contains("compression ratio:"),
        "{text}"
    );
}

#[test]
fn stdin_backup_and_dump_round_trip() {
    let w = World::new();
    w.init();
    let data = mixed(42, 5 << 20);
    let out = w
        .cmd()
        .args(["--json", "backup", "--stdin", "--stdin-name", "db.sql"])
        .write_stdin(data.clone())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = snapshot_id(&v);
    assert_eq!(
        v["summary"]["total_bytes"].as_u64(),
        Some(data.len() as u64)
    );
    for spec in ["latest", &id[..8], id.as_str()] {
        let out = w.ok(&[&"dump", &spec, &"db.sql"]);
        assert!(
            out.stdout == data,
            "dump {spec} returned {} bytes, not the {} backed up",
            out.stdout.len(),
            data.len()
        );
    }
    let out = w.fails(&[&"dump", &"latest", &"other.sql"], 1);
    assert!(
        stderr(&out).contains("not in the snapshot"),
        "{}",
        show(&out)
    );
    // An empty stream is a valid, empty file.
    let out = w
        .cmd()
        .args(["backup", "--stdin", "--stdin-name", "empty.sql"])
        .write_stdin(Vec::new())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(w.ok(&[&"dump", &"latest", &"empty.sql"]).stdout.is_empty());
    // The earlier stream is still there by id.
    assert!(w.ok(&[&"dump", &&id[..12], &"db.sql"]).stdout == data);
}

#[test]
fn snapshot_selectors_latest_prefix_ambiguous_and_unknown() {
    let w = World::new();
    let repo = w.init();
    // 17 snapshots: two of them must share a first hex digit.
    let mut ids = Vec::new();
    for i in 0..17 {
        let opts = salvor_engine::backup::StreamOptions {
            name: "s.txt".into(),
            ..Default::default()
        };
        let body = format!("snapshot number {i}\n");
        let (id, _) =
            salvor_engine::backup::backup_stream(&repo, body.as_bytes(), &opts, Arc::default())
                .unwrap();
        ids.push(id.to_hex());
    }
    let listed = w.json(&[&"snapshots"]);
    assert_eq!(listed.as_array().unwrap().len(), 17);
    assert_eq!(
        stdout(&w.ok(&[&"dump", &"latest", &"s.txt"])),
        "snapshot number 16\n"
    );
    for (i, id) in ids.iter().enumerate().step_by(5) {
        assert_eq!(
            stdout(&w.ok(&[&"dump", &&id[..8], &"s.txt"])),
            format!("snapshot number {i}\n")
        );
    }
    let first_chars: Vec<char> = ids.iter().map(|i| i.chars().next().unwrap()).collect();
    let shared = first_chars
        .iter()
        .find(|c| first_chars.iter().filter(|d| d == c).count() > 1)
        .unwrap();
    let out = w.fails(&[&"ls", &shared.to_string()], 2);
    assert!(stderr(&out).contains("ambiguous"), "{}", show(&out));
    let out = w.fails(&[&"dump", &"zzzzzz", &"s.txt"], 1);
    assert!(
        stderr(&out).contains("no snapshot matches"),
        "{}",
        show(&out)
    );
    let out = w.fails(
        &[
            &"restore",
            &"0123456789abcdef0123",
            &"--target",
            &w.path("t"),
        ],
        1,
    );
    assert!(
        stderr(&out).contains("no snapshot matches"),
        "{}",
        show(&out)
    );
    assert!(!w.path("t").exists() || count_files(&w.path("t")) == 0);
    // `latest` on an empty repository is an error, not a crash.
    let empty = World::new();
    empty.init();
    let out = empty.fails(&[&"ls", &"latest"], 1);
    assert!(stderr(&out).contains("no snapshots"), "{}", show(&out));
}

#[test]
fn backup_excludes_by_glob_and_exclude_file() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    for f in [
        "keep.txt",
        "a.tmp",
        "sub/b.tmp",
        "sub/keep.rs",
        "cache/x.bin",
        "sub/cache/y.bin",
        "logs/app.log",
        "logs/keep.txt",
        "other/app.log",
    ] {
        write(&src.join(f), f.as_bytes());
    }
    let s = src.to_str().unwrap();
    let excludes = w.path("excludes.txt");
    std::fs::write(
        &excludes,
        format!("# build output\n\ncache\n  {s}/logs/*.log  \n"),
    )
    .unwrap();
    let b = w.json(&[
        &"backup",
        &src,
        &"--exclude",
        &"*.tmp",
        &"--exclude-file",
        &excludes,
    ]);
    assert_eq!(b["summary"]["files_new"].as_u64(), Some(4), "{b}");
    let v = w.json(&[&"ls", &"latest", &s]);
    let got: BTreeSet<String> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            e["path"]
                .as_str()?
                .strip_prefix(&format!("{s}/"))
                .map(String::from)
        })
        .collect();
    let want: BTreeSet<String> = [
        "keep.txt",
        "sub",
        "sub/keep.rs",
        "logs",
        "logs/keep.txt",
        "other",
        "other/app.log",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(got, want);
    let out = w.run(&[&"backup", &src, &"--exclude-file", &w.path("missing.txt")]);
    assert!(
        !out.status.success() && stderr(&out).contains("exclude file"),
        "{}",
        show(&out)
    );
    let out = w.run(&[&"backup", &src, &"--exclude", &"a[b"]);
    assert!(
        !out.status.success() && stderr(&out).contains("invalid exclude pattern"),
        "{}",
        show(&out)
    );
}

#[test]
fn restore_include_and_exclude() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    for f in [
        "docs/a.md",
        "docs/sub/b.md",
        "docs/c.bak",
        "other.txt",
        "code/main.rs",
        "code/notes.md",
    ] {
        write(&src.join(f), f.as_bytes());
    }
    w.backup(&src);
    let s = src.to_str().unwrap();
    let files_under = |t: &Path| -> BTreeSet<String> {
        let root = restored(t, &src);
        walk_files(&root)
            .iter()
            .map(|p| {
                p.strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();

    let t1 = w.path("t1");
    w.ok(&[
        &"restore",
        &"latest",
        &"--target",
        &t1,
        &"--include",
        &format!("{s}/docs"),
        &"--exclude",
        &"*.bak",
    ]);
    assert_eq!(files_under(&t1), set(&["docs/a.md", "docs/sub/b.md"]));

    let t2 = w.path("t2");
    w.ok(&[
        &"restore",
        &"latest",
        &"--target",
        &t2,
        &"--include",
        &"*.md",
    ]);
    assert_eq!(
        files_under(&t2),
        set(&["docs/a.md", "docs/sub/b.md", "code/notes.md"])
    );
    assert!(!restored(&t2, &src).join("other.txt").exists());

    let t3 = w.path("t3");
    w.ok(&[
        &"restore",
        &"latest",
        &"--target",
        &t3,
        &"--exclude",
        &format!("{s}/docs"),
    ]);
    assert_eq!(
        files_under(&t3),
        set(&["other.txt", "code/main.rs", "code/notes.md"])
    );
    assert!(!restored(&t3, &src).join("docs").exists());
    assert_eq!(
        std::fs::read(restored(&t3, &src).join("code/main.rs")).unwrap(),
        b"code/main.rs"
    );
}

#[test]
fn wrong_password_missing_repo_and_no_password() {
    let w = World::new();
    w.init();
    let out = w.run_env(
        &[("SALVOR_PASSWORD", Some(&"not the password"))],
        &[&"snapshots"],
    );
    assert_eq!(out.status.code(), Some(12), "{}", show(&out));
    let err = stderr(&out);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "not a one-line message:\n{err}"
    );
    assert!(err.contains("wrong password"), "{err}");
    assert!(
        !err.contains("not the password"),
        "the password leaked into the message: {err}"
    );

    let out = w.run_env(
        &[("SALVOR_REPO", Some(&w.path("nothing-here")))],
        &[&"snapshots"],
    );
    assert_eq!(out.status.code(), Some(10), "{}", show(&out));
    assert!(stderr(&out).contains("no repository"), "{}", show(&out));
    assert_eq!(stderr(&out).trim_end().lines().count(), 1, "{}", show(&out));

    // No password anywhere and stdin is not a terminal: a clear error, not a hang.
    let out = w.run_env(&[("SALVOR_PASSWORD", None)], &[&"snapshots"]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(stderr(&out).contains("SALVOR_PASSWORD"), "{}", show(&out));

    // No repository at all: usage-level error naming the option.
    let out = w.run_env(&[("SALVOR_REPO", None)], &[&"snapshots"]);
    assert!(
        !out.status.success() && stderr(&out).contains("SALVOR_REPO"),
        "{}",
        show(&out)
    );
}

#[test]
fn password_file_and_password_command() {
    let w = World::new();
    w.init();
    let pw = w.path("pw.txt");
    std::fs::write(&pw, format!("{PASSWORD}\nsecond line ignored\n")).unwrap();
    w.ok_env(
        &[("SALVOR_PASSWORD", None)],
        &[&"--password-file", &pw, &"snapshots"],
    );
    w.ok_env(
        &[
            ("SALVOR_PASSWORD", None),
            ("SALVOR_PASSWORD_FILE", Some(&pw)),
        ],
        &[&"snapshots"],
    );
    let cat = format!("cat '{}'", pw.display());
    w.ok_env(
        &[
            ("SALVOR_PASSWORD", None),
            ("SALVOR_PASSWORD_COMMAND", Some(&cat)),
        ],
        &[&"snapshots"],
    );
    let out = w.run_env(
        &[
            ("SALVOR_PASSWORD", None),
            ("SALVOR_PASSWORD_COMMAND", Some(&"exit 3")),
        ],
        &[&"snapshots"],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("password command failed"),
        "{}",
        show(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    let w = World::new();
    w.fails(&[&"backup", &"--no-such-flag"], 2);
    w.fails(&[&"no-such-command"], 2);
    w.fails(&[], 2);
    w.fails(&[&"restore", &"latest"], 2);
    w.fails(&[&"backup", &"--stdin", &"some/path"], 2);
    let out = w.ok(&[&"--help"]);
    assert!(stdout(&out).contains("Exit codes"), "{}", show(&out));
}

#[test]
fn unreadable_file_makes_a_partial_snapshot_and_exit_3() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    write(&src.join("readable.txt"), b"fine\n");
    write(&src.join("locked.txt"), b"secret\n");
    write(&src.join("closed/inside.txt"), b"hidden\n");
    std::fs::set_permissions(
        src.join("locked.txt"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::fs::set_permissions(src.join("closed"), std::fs::Permissions::from_mode(0o000)).unwrap();
    // As root, permissions do not stop reads; run salvor without the
    // capabilities that bypass them instead.
    let mut cmd = if is_root() {
        if std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!(
                "SKIPPED unreadable_file_makes_a_partial_snapshot_and_exit_3: running as root and setpriv is not installed, so no file is unreadable"
            );
            return;
        }
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search",
            BIN,
        ]);
        c
    } else {
        std::process::Command::new(BIN)
    };
    w.env(&mut cmd);
    let out = cmd.args(["--json", "backup"]).arg(&src).output().unwrap();
    let restore_perms = || {
        std::fs::set_permissions(
            src.join("locked.txt"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::set_permissions(src.join("closed"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    };
    restore_perms();
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
    assert_eq!(v["partial"], Value::Bool(true), "{v}");
    let warnings: Vec<&str> = v["summary"]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        warnings.iter().any(|w| w.contains("locked.txt")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("closed")),
        "{warnings:?}"
    );
    let snaps = w.json(&[&"snapshots"]);
    assert_eq!(snaps[0]["partial"], Value::Bool(true), "{snaps}");
    assert!(stdout(&w.ok(&[&"snapshots"])).contains("(partial)"));
    // What could be read is in the snapshot.
    let t = w.path("restore");
    w.ok(&[&"restore", &"latest", &"--target", &t]);
    assert_eq!(
        std::fs::read(restored(&t, &src).join("readable.txt")).unwrap(),
        b"fine\n"
    );
    assert!(!restored(&t, &src).join("locked.txt").exists());
    // The unreadable directory is recorded (empty, mode 000); open it up so the tempdir can be removed.
    let closed = restored(&t, &src).join("closed");
    assert_eq!(closed.symlink_metadata().unwrap().mode() & 0o7777, 0);
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Text mode lists the warnings on stderr too.
    std::fs::set_permissions(
        src.join("locked.txt"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let mut cmd = if is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--bounding-set=-dac_override,-dac_read_search", BIN]);
        c
    } else {
        std::process::Command::new(BIN)
    };
    w.env(&mut cmd);
    let out = cmd.args(["backup", "--force"]).arg(&src).output().unwrap();
    restore_perms();
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        stderr(&out).contains("warning:") && stderr(&out).contains("locked.txt"),
        "{}",
        show(&out)
    );
    assert!(stdout(&out).contains("partial"), "{}", show(&out));
}

#[test]
fn stale_locks_are_ignored_and_live_exclusive_locks_block() {
    let w = World::new();
    let repo = w.init();
    let src = w.path("src");
    write(&src.join("f.txt"), b"data\n");
    let locks = w.repo().join("locks");

    // 1. A backup killed with SIGKILL while it holds its lock.
    let mut child = w
        .spawnable(&[&"backup", &"--stdin", &"--stdin-name", &"never-ends"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(&noise(5, 256 * 1024))
            .unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(60), || count_files(&locks) == 1),
        "the stdin backup never took its lock"
    );
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(
        count_files(&locks),
        1,
        "the killed backup's lock should remain"
    );
    let started = Instant::now();
    w.backup(&src);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the dead lock delayed the backup"
    );
    assert_eq!(w.json(&[&"unlock"])["removed"].as_u64(), Some(1));
    assert_eq!(count_files(&locks), 0);

    // 2. An exclusive lock of a process that has exited on this host is stale.
    let dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let lock = salvor_engine::format::lock::LockFile {
        exclusive: true,
        hostname: salvor_engine::repo::keys::hostname(),
        pid: dead_pid,
        refreshed: std::time::SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
        command: "prune".into(),
    };
    repo.write_doc(
        FileType::Lock,
        salvor_engine::format::ObjectKind::Lock,
        &serde_json::to_vec(&lock).unwrap(),
    )
    .unwrap();
    assert_eq!(count_files(&locks), 1);
    w.backup(&src);
    w.ok(&[&"check"]);
    assert_eq!(w.json(&[&"unlock"])["removed"].as_u64(), Some(1));
    assert_eq!(count_files(&locks), 0);

    // 3. A live exclusive lock (held by this test process) blocks with exit 11.
    let guard = w.open().lock(true, "test maintenance").unwrap();
    let out = w.fails(&[&"backup", &src], 11);
    let err = stderr(&out);
    assert!(
        err.contains("locked") && err.contains("test maintenance"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    w.fails(&[&"check"], 11);
    let out = w
        .cmd()
        .args(["backup", "--stdin"])
        .write_stdin("x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(11), "{}", show(&out));
    // `unlock` leaves a live lock alone; `--remove-all` removes it.
    assert_eq!(w.json(&[&"unlock"])["removed"].as_u64(), Some(0));
    assert_eq!(count_files(&locks), 1);
    drop(guard);
    assert_eq!(
        count_files(&locks),
        0,
        "dropping the guard releases the lock"
    );
    w.backup(&src);
    let _guard = w.open().lock(true, "test maintenance").unwrap();
    assert_eq!(
        w.json(&[&"unlock", &"--remove-all"])["removed"].as_u64(),
        Some(1)
    );
    w.backup(&src);
}

#[test]
fn key_add_list_remove_passwd() {
    let w = World::new();
    w.init();
    let keys = w.json(&[&"key", &"list"]);
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let first = keys[0]["id"].as_str().unwrap().to_string();
    assert_eq!(keys[0]["current"], Value::Bool(true));

    let out = w.ok_env(
        &[("SALVOR_NEW_PASSWORD", Some(&"second password"))],
        &[&"--json", &"key", &"add"],
    );
    let second = serde_json::from_slice::<Value>(&out.stdout).unwrap()["added"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first, second);

    // Both passwords open the repository; the list marks the key in use.
    let second_pw: &Env = &[("SALVOR_PASSWORD", Some(&"second password"))];
    let out = w.ok_env(second_pw, &[&"--json", &"key", &"list"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let current: Vec<&str> = list
        .iter()
        .filter(|k| k["current"] == Value::Bool(true))
        .filter_map(|k| k["id"].as_str())
        .collect();
    assert_eq!(current, vec![second.as_str()]);
    w.ok(&[&"snapshots"]);

    // The key in use cannot be removed.
    let out = w.run(&[&"key", &"remove", &&first[..8]]);
    assert!(
        !out.status.success() && stderr(&out).contains("refusing to remove the key in use"),
        "{}",
        show(&out)
    );
    // With the second password, remove the first key: the first password stops working.
    w.ok_env(second_pw, &[&"key", &"remove", &&first[..8]]);
    w.fails(&[&"snapshots"], 12);
    let out = w.run_env(second_pw, &[&"key", &"remove", &"ffff0000"]);
    assert!(
        !out.status.success() && stderr(&out).contains("no key matches"),
        "{}",
        show(&out)
    );

    // passwd replaces the key in use.
    w.ok_env(
        &[
            ("SALVOR_PASSWORD", Some(&"second password")),
            ("SALVOR_NEW_PASSWORD", Some(&"third password")),
        ],
        &[&"key", &"passwd"],
    );
    let out = w.run_env(second_pw, &[&"snapshots"]);
    assert_eq!(out.status.code(), Some(12), "{}", show(&out));
    let third_pw: &Env = &[("SALVOR_PASSWORD", Some(&"third password"))];
    let out = w.ok_env(third_pw, &[&"--json", &"key", &"list"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["current"], Value::Bool(true));
    // Data written under the old key is readable under the new one.
    let src = w.path("src");
    write(&src.join("f"), b"after passwd\n");
    w.ok_env(third_pw, &[&"backup", &src]);
}

#[test]
fn check_passes_on_a_good_repository_with_every_subset() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    rich_tree(&src);
    w.backup(&src);
    let out = w
        .cmd()
        .args(["backup", "--stdin", "--stdin-name", "s"])
        .write_stdin(noise(9, 1 << 20))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(stdout(&w.ok(&[&"check"])).contains("no errors found"));
    let all = w.json(&[&"check", &"--read-data"]);
    assert_eq!(all["errors"], Value::Array(vec![]), "{all}");
    assert_eq!(all["snapshots"].as_u64(), Some(2));
    let packs = all["packs"].as_u64().unwrap();
    assert!(packs >= 2, "{all}");
    assert_eq!(all["packs_read"].as_u64(), Some(packs));
    let p1 = w.json(&[&"check", &"--read-data-subset", &"1/2"]);
    let p2 = w.json(&[&"check", &"--read-data-subset", &"2/2"]);
    assert_eq!(p1["errors"], Value::Array(vec![]));
    assert_eq!(p2["errors"], Value::Array(vec![]));
    assert_eq!(
        p1["packs_read"].as_u64().unwrap() + p2["packs_read"].as_u64().unwrap(),
        packs,
        "1/2 and 2/2 must cover every pack once"
    );
    let pct = w.json(&[&"check", &"--read-data-subset", &"50%"]);
    assert_eq!(pct["errors"], Value::Array(vec![]));
    assert!(pct["packs_read"].as_u64().unwrap() <= packs);
    let hundred = w.json(&[&"check", &"--read-data-subset", &"100%"]);
    assert_eq!(hundred["packs_read"].as_u64(), Some(packs));
    for bad in ["0/2", "3/2", "0%", "150%", "half"] {
        let out = w.run(&[&"check", &"--read-data-subset", &bad]);
        assert!(
            !out.status.success() && stderr(&out).contains("invalid subset"),
            "{bad}: {}",
            show(&out)
        );
    }
}

/// The largest pack file: holds file data, not only trees.
fn largest_pack(w: &World) -> (PathBuf, String) {
    let p = w
        .pack_files()
        .into_iter()
        .max_by_key(|p| p.metadata().unwrap().len())
        .expect("a pack");
    let name = p.file_name().unwrap().to_str().unwrap().to_string();
    (p, name)
}

#[test]
fn flipped_bit_in_a_pack_is_found_and_never_restored_silently() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    write(&src.join("a.bin"), &noise(1, 3 << 20));
    write(&src.join("b.txt"), &text(2, 1 << 20));
    w.backup(&src);
    let (pack, name) = largest_pack(&w);
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x04;
    std::fs::write(&pack, &bytes).unwrap();

    let out = w.fails(&[&"check", &"--read-data"], 1);
    assert!(
        stderr(&out).contains(&name),
        "check does not name pack {name}:\n{}",
        show(&out)
    );
    let v: Value =
        serde_json::from_slice(&w.fails(&[&"--json", &"check", &"--read-data"], 1).stdout).unwrap();
    // Findings are typed: what kind, which object, and the sentence.
    assert!(
        v["errors"].as_array().unwrap().iter().any(|e| {
            e["kind"] == "damaged_pack"
                && e["object"] == format!("pack {name}")
                && e["message"].as_str().unwrap().contains(&name)
        }),
        "{v}"
    );
    // Exactly one half of a 1/2 + 2/2 split holds the damaged pack.
    let halves: Vec<i32> = ["1/2", "2/2"]
        .iter()
        .map(|s| {
            w.run(&[&"check", &"--read-data-subset", s])
                .status
                .code()
                .unwrap()
        })
        .collect();
    assert!(
        halves == vec![0, 1] || halves == vec![1, 0],
        "subset exit codes {halves:?}"
    );

    let out = w.run(&[&"restore", &"latest", &"--target", &w.path("restore")]);
    assert_no_panic(&out);
    assert!(
        !out.status.success(),
        "restore of damaged data succeeded:\n{}",
        show(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains(&name) || err.contains("blob "),
        "restore error names no pack or blob:\n{err}"
    );
    let out = w.run(&[&"dump", &"latest", &src.join("a.bin")]);
    assert_no_panic(&out);
    if out.status.success() {
        // a.bin may lie in an undamaged frame; then its bytes must be right.
        assert!(
            out.stdout == noise(1, 3 << 20),
            "dump returned wrong bytes with exit 0"
        );
    }
}

#[test]
fn truncated_pack_and_deleted_index_are_reported() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    write(&src.join("a.bin"), &noise(1, 2 << 20));
    write(&src.join("b.txt"), &text(2, 200_000));
    w.backup(&src);
    let (pack, name) = largest_pack(&w);
    let len = pack.metadata().unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = w.fails(&[&"check"], 1);
    assert!(stderr(&out).contains(&name), "{}", show(&out));
    let out = w.fails(&[&"check", &"--read-data"], 1);
    assert!(stderr(&out).contains(&name), "{}", show(&out));
    let out = w.run(&[&"restore", &"latest", &"--target", &w.path("restore")]);
    assert_no_panic(&out);
    assert!(
        !out.status.success(),
        "restore from a truncated pack succeeded:\n{}",
        show(&out)
    );

    // A fresh repository whose index files are deleted.
    let w = World::new();
    w.init();
    write(&w.path("src/a.txt"), &text(3, 100_000));
    w.backup(&w.path("src"));
    for f in walk_files(&w.repo().join("index")) {
        std::fs::remove_file(f).unwrap();
    }
    let out = w.fails(&[&"check"], 1);
    let err = stderr(&out);
    assert!(err.contains("not in the index"), "{err}");
    assert!(
        err.contains("not in any index"),
        "unindexed packs should be listed:\n{err}"
    );
    let v: Value = serde_json::from_slice(&w.fails(&[&"--json", &"check"], 1).stdout).unwrap();
    let kinds = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|f| f["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        kinds(&v["errors"]).iter().all(|k| k == "missing_blob"),
        "{v}"
    );
    assert!(
        kinds(&v["warnings"]).iter().all(|k| k == "unindexed_pack"),
        "{v}"
    );
    assert!(!kinds(&v["warnings"]).is_empty(), "{v}");
    let out = w.run(&[&"restore", &"latest", &"--target", &w.path("restore")]);
    assert_no_panic(&out);
    assert!(
        !out.status.success() && stderr(&out).contains("not in the index"),
        "{}",
        show(&out)
    );
}

#[test]
fn json_outputs_parse() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    write(&src.join("a.txt"), b"a\n");
    let b = w.backup(&src);
    for key in [
        "files_new",
        "files_changed",
        "files_unchanged",
        "bytes_read",
        "bytes_added",
        "bytes_stored",
        "total_bytes",
        "dirs",
        "warnings",
        "duration_secs",
    ] {
        assert!(
            b["summary"].get(key).is_some(),
            "backup --json lacks summary.{key}: {b}"
        );
    }
    write(&src.join("b.txt"), b"b\n");
    w.backup(&src);
    let r = w.json(&[&"restore", &"latest", &"--target", &w.path("t")]);
    assert_eq!(r["stats"]["files"].as_u64(), Some(2), "{r}");
    assert!(
        r["stats"]["bytes"].as_u64().is_some() && r["target"].is_string(),
        "{r}"
    );
    let c = w.json(&[&"check", &"--read-data"]);
    for key in [
        "errors",
        "warnings",
        "snapshots",
        "packs",
        "blobs",
        "packs_read",
    ] {
        assert!(c.get(key).is_some(), "check --json lacks {key}: {c}");
    }
    assert!(w.json(&[&"snapshots"]).is_array());
    assert!(w.json(&[&"ls", &"latest"]).is_array());
    assert!(w.json(&[&"diff", &snapshot_id(&b), &"latest"]).is_array());
    assert!(w.json(&[&"stats"]).is_object());
    assert!(w.json(&[&"key", &"list"]).is_array());
    assert!(w.json(&[&"unlock"]).is_object());
}

#[test]
fn demo_runs_cleanly() {
    let w = World::new();
    let out = w.ok_env(
        &[("SALVOR_REPO", None), ("SALVOR_PASSWORD", None)],
        &[&"demo", &"--dir", &w.path("demo")],
    );
    assert!(
        stdout(&out).contains("identical to the source"),
        "{}",
        show(&out)
    );
    assert!(
        stdout(&out).contains(r#"manifest rows: {"allocations":3000,"tenants":40}"#)
            && stdout(&out).contains("app.db rows match its manifest"),
        "{}",
        show(&out)
    );
}

/// Kill points for the crash test.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    After(Duration),
    /// As soon as this many new pack files are visible.
    Packs(usize),
    /// As soon as a new index file is visible (the backup is committing).
    IndexWritten,
}

fn generate_big_tree(root: &Path, total: usize) {
    let per = 2 << 20;
    for i in 0..total / per {
        let data = match i % 3 {
            0 => noise(i as u64, per),
            1 => text(i as u64, per),
            _ => mixed(i as u64, per),
        };
        write(&root.join(format!("d{}/f{i:03}.bin", i % 7)), &data);
    }
}

#[test]
fn kill_9_at_any_point_leaves_a_consistent_repository() {
    let w = World::new();
    w.init();
    let small = w.path("small");
    rich_tree(&small);
    let s0 = snapshot_id(&w.backup(&small));
    let big = w.path("big");
    generate_big_tree(&big, 100 << 20);
    let churn = w.path("churn");

    let points = [
        KillAt::After(Duration::from_millis(50)),
        KillAt::After(Duration::from_millis(200)),
        KillAt::After(Duration::from_millis(500)),
        KillAt::Packs(1),
        KillAt::After(Duration::from_secs(1)),
        KillAt::Packs(3),
        KillAt::IndexWritten,
    ];
    let mut killed_midway = 0;
    let mut last_churn = String::new();
    for (i, point) in points.iter().enumerate() {
        let (packs0, index0) = (
            count_files(&w.repo().join("data")),
            count_files(&w.repo().join("index")),
        );
        let mut child = w
            .spawnable(&[&"backup", &big])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut exited = || child.try_wait().unwrap().is_some();
        match point {
            KillAt::After(d) => {
                wait_for(*d, &mut exited);
            }
            KillAt::Packs(n) => {
                wait_for(TIMEOUT, || {
                    exited() || count_files(&w.repo().join("data")) >= packs0 + n
                });
            }
            KillAt::IndexWritten => {
                wait_for(TIMEOUT, || {
                    exited() || count_files(&w.repo().join("index")) > index0
                });
            }
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() {
            killed_midway += 1;
        }
        let ctx = format!(
            "after kill #{i} ({point:?}, backup exit {:?})",
            status.code()
        );
        eprintln!(
            "{ctx}: {} packs, {} index files",
            count_files(&w.repo().join("data")),
            count_files(&w.repo().join("index"))
        );

        let c = w.json(&[&"check"]);
        assert_eq!(c["errors"], Value::Array(vec![]), "{ctx}: {c}");
        let t = w.path(&format!("restore-{i}"));
        w.ok(&[&"restore", &s0, &"--target", &t]);
        assert_same_tree(&small, &restored(&t, &small));
        std::fs::remove_dir_all(&t).unwrap();
        write(&churn.join("round.txt"), format!("round {i}\n").as_bytes());
        let b = w.backup(&churn);
        assert_eq!(b["partial"], Value::Bool(false), "{ctx}: {b}");
        last_churn = snapshot_id(&b);
    }
    assert!(
        killed_midway >= 3,
        "only {killed_midway} kills landed before the backup finished; the test did not test much"
    );

    // After all that, the big backup completes and everything verifies.
    let b = w.backup(&big);
    let id = snapshot_id(&b);
    let c = w.json(&[&"check", &"--read-data"]);
    assert_eq!(c["errors"], Value::Array(vec![]), "{c}");
    let t = w.path("restore-big");
    w.ok(&[&"restore", &id, &"--target", &t]);
    assert_same_tree(&big, &restored(&t, &big));
    std::fs::remove_dir_all(&t).unwrap();
    let t = w.path("restore-small");
    w.ok(&[&"restore", &s0, &"--target", &t]);
    assert_same_tree(&small, &restored(&t, &small));
    let t = w.restore(&last_churn, "restore-churn", &churn);
    assert_eq!(
        std::fs::read(t.join("round.txt")).unwrap(),
        format!("round {}\n", points.len() - 1).as_bytes()
    );
}

#[test]
fn two_backups_at_once_into_one_repository() {
    let w = World::new();
    w.init();
    let (a, b) = (w.path("a"), w.path("b"));
    let shared = mixed(77, 4 << 20);
    for i in 0..4u64 {
        write(&a.join(format!("a{i}.bin")), &mixed(100 + i, 3 << 20));
        write(&b.join(format!("b{i}.bin")), &mixed(200 + i, 3 << 20));
    }
    write(&a.join("shared.bin"), &shared);
    write(&b.join("nested/shared-copy.bin"), &shared);
    let spawn = |src: &Path| {
        w.spawnable(&[&"--json", &"backup", &src])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    let (oa, ob) = (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    );
    assert!(oa.status.success(), "{}", show(&oa));
    assert!(ob.status.success(), "{}", show(&ob));
    let ida = snapshot_id(&serde_json::from_slice(&oa.stdout).unwrap());
    let idb = snapshot_id(&serde_json::from_slice(&ob.stdout).unwrap());
    assert_ne!(ida, idb);
    assert_eq!(w.json(&[&"snapshots"]).as_array().unwrap().len(), 2);
    let c = w.json(&[&"check", &"--read-data"]);
    assert_eq!(c["errors"], Value::Array(vec![]), "{c}");
    let ra = w.restore(&ida, "restore-a", &a);
    assert_same_tree(&a, &ra);
    let rb = w.restore(&idb, "restore-b", &b);
    assert_same_tree(&b, &rb);
}

// ---------------------------------------------------------------------------
// Regression tests for bugs found while writing this suite (all fixed).

/// A mistyped repository location must not be created by commands that only
/// open a repository (only `init` creates one).
#[test]
fn commands_on_a_missing_repository_create_nothing() {
    let w = World::new();
    let src = w.path("src");
    write(&src.join("f"), b"x");
    let missing = w.path("typo/repo");
    for args in [
        vec!["snapshots"],
        vec!["check"],
        vec!["backup", src.to_str().unwrap()],
    ] {
        let argv: Vec<&dyn AsRef<OsStr>> = args.iter().map(|a| a as _).collect();
        let out = w.run_env(&[("SALVOR_REPO", Some(&missing))], &argv);
        assert_eq!(out.status.code(), Some(10), "{args:?}: {}", show(&out));
        assert!(
            !w.path("typo").exists(),
            "`salvor {}` on a missing repository created {}",
            args.join(" "),
            w.path("typo").display()
        );
    }
}

/// `salvor backup src/../src` must back up `src`, not record a tree entry
/// named `..` (which makes the snapshot unreadable) or the wrong directory.
#[test]
fn backup_of_a_path_with_dot_dot_components() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    write(&src.join("sub/f.txt"), b"content\n");
    write(&w.path("other/g.txt"), b"other\n");
    let b = w.backup(Path::new("src/sub/../../src"));
    assert_eq!(b["summary"]["files_new"].as_u64(), Some(1), "{b}");
    w.ok(&[&"ls", &"latest"]);
    assert_eq!(w.json(&[&"check"])["errors"], Value::Array(vec![]));
    let t = w.restore("latest", "restore", &src);
    assert_same_tree(&src, &t);
    // A path that climbs out of the first directory names `other`.
    let b = w.backup(Path::new("src/sub/../../other"));
    assert_eq!(
        b["summary"]["files_new"].as_u64(),
        Some(1),
        "`other/g.txt` was not backed up: {b}"
    );
    let t = w.restore("latest", "restore-other", &w.path("other"));
    assert_eq!(std::fs::read(t.join("g.txt")).unwrap(), b"other\n");
}

/// A path below a symlinked directory (`/lib/...` on merged-/usr systems,
/// home directories behind a symlink) must restore.
#[test]
fn backup_below_a_symlinked_directory_restores() {
    let w = World::new();
    w.init();
    write(&w.path("real/src/f.txt"), b"through a link\n");
    std::os::unix::fs::symlink("real", w.path("link")).unwrap();
    let linked = w.path("link/src");
    w.backup(&linked);
    assert_eq!(w.json(&[&"check"])["errors"], Value::Array(vec![]));
    let t = w.path("restore");
    let out = w.run(&[&"restore", &"latest", &"--target", &t]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        std::fs::read(restored(&t, &linked).join("f.txt")).unwrap(),
        b"through a link\n"
    );
}

/// `salvor ls latest | head -1` must not panic or report an error.
#[test]
fn listing_into_a_closed_pipe_exits_cleanly() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    for i in 0..3000 {
        write(&src.join(format!("file-with-a-long-name-{i:05}.txt")), b"x");
    }
    w.backup(&src);
    for json in [false, true] {
        let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"ls", &"latest"];
        if json {
            args.insert(0, &"--json");
        }
        let mut child = w
            .spawnable(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut first,
        )
        .unwrap();
        assert!(!first.is_empty());
        let out = child.wait_with_output().unwrap();
        assert_no_panic(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "ls (json: {json}) into a closed pipe:\n{}",
            show(&out)
        );
    }
}

/// One damaged snapshot document must not stop new backups (the check hint
/// says "back up again to replace damaged data").
#[test]
fn a_damaged_snapshot_does_not_block_new_backups() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    write(&src.join("f.txt"), b"data\n");
    w.backup(&src);
    let out = w
        .cmd()
        .args(["--json", "backup", "--stdin", "--stdin-name", "x"])
        .write_stdin("abc")
        .output()
        .unwrap();
    let id = snapshot_id(&serde_json::from_slice(&out.stdout).unwrap());
    let path = w.repo().join("snapshots").join(&id);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let out = w.fails(&[&"check"], 1);
    assert!(stderr(&out).contains(&id), "{}", show(&out));
    write(&src.join("f.txt"), b"new data\n");
    let newest = snapshot_id(&w.backup(&src));
    // `latest` cannot be trusted while a snapshot is unreadable (the
    // hardening tests cover that); named by id, the new one restores.
    let t = w.restore(&newest, "restore", &src);
    assert_eq!(std::fs::read(t.join("f.txt")).unwrap(), b"new data\n");
}

/// `latest` in ls, dump and restore takes the newest snapshot of the
/// host, tags and paths asked for; a named snapshot that does not match
/// them is refused (exit 2), so nothing acts on a snapshot of another host.
#[test]
fn latest_takes_host_tag_and_path_filters() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    write(&src.join("a.txt"), b"from host one\n");
    let one = w.json(&[&"backup", &"--host", &"one", &"--tag", &"daily", &src]);
    write(&src.join("a.txt"), b"from host two\n");
    w.json(&[&"backup", &"--host", &"two", &src]);
    let file = src.join("a.txt");
    let dumped = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"dump", &"latest", &file];
        all.extend_from_slice(args);
        w.ok(&all).stdout
    };
    assert_eq!(dumped(&[]), b"from host two\n");
    assert_eq!(dumped(&[&"--host", &"one"]), b"from host one\n");
    assert_eq!(dumped(&[&"--tag", &"daily"]), b"from host one\n");
    assert_eq!(dumped(&[&"--path", &src]), b"from host two\n");
    let out = w.fails(&[&"ls", &"latest", &"--path", &"/elsewhere"], 1);
    assert!(
        stderr(&out).contains("no snapshot matches"),
        "{}",
        show(&out)
    );
    let target = w.path("r");
    w.ok(&[
        &"restore",
        &"latest",
        &"--host",
        &"one",
        &"--target",
        &target,
    ]);
    assert_eq!(
        std::fs::read(restored(&target, &src).join("a.txt")).unwrap(),
        b"from host one\n"
    );
    let id = one["snapshot"].as_str().unwrap();
    let out = w.fails(&[&"ls", &id, &"--host", &"two"], 2);
    assert!(stderr(&out).contains("not of the host"), "{}", show(&out));
}
