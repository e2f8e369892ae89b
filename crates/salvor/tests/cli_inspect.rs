//! The read-only commands through the real binary: ls, diff, stats,
//! snapshot selectors and filters, --json output, a closed pipe.
//!
//! Every test works in its own temporary directory. Passwords only ever travel
//! in the environment (`SALVOR_PASSWORD`, `SALVOR_NEW_PASSWORD`), never argv.
//! Most repositories are created through the engine API with a cheap Argon2
//! cost so the suite stays fast; `init_*` tests create them through the binary.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::Arc;

use common::world::*;

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
