//! Regression tests for the defects a fault campaign and replays of the seed
//! runbooks found (the hardening issue); each test is named after its defect.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::world::*;

/// A chain of `depth` directories named `d` below `root`, made one level at
/// a time relative to an open directory (the whole path is longer than
/// Linux accepts in one call).
fn deep_chain(root: &Path, depth: usize) -> PathBuf {
    let mut p = root.to_path_buf();
    for _ in 0..depth {
        p.push("d");
        salvor_engine::longpath::create_dir(&p).unwrap();
    }
    p
}

#[test]
fn deep_trees_back_up_check_list_diff_and_restore() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    std::fs::create_dir(&src).unwrap();
    // 2,500 levels: past both the old stack overflow (2,048) and PATH_MAX.
    let bottom = deep_chain(&src, 2500);
    assert!(bottom.as_os_str().len() > 4096);
    {
        use std::io::Write;
        let mut f = salvor_engine::longpath::create_new(&bottom.join("leaf.txt")).unwrap();
        f.write_all(b"at the bottom\n").unwrap();
    }
    salvor_engine::longpath::symlink("leaf.txt".as_ref(), &bottom.join("link")).unwrap();
    let b = w.backup(&src);
    assert_eq!(b["partial"], false, "{b}");
    assert_eq!(b["summary"]["dirs"], 2501, "{b}");
    w.ok(&[&"check", &"--read-data"]);
    let ls = stdout(&w.ok(&[&"ls", &"latest"]));
    assert_eq!(ls.lines().count(), 2500 + 2 + src.components().count() - 1);
    assert!(ls.lines().any(|l| l.ends_with("/d/leaf.txt")), "{ls}");
    let diff = stdout(&w.ok(&[&"diff", &"latest", &"latest"]));
    assert!(diff.contains("0 added, 0 removed"), "{diff}");
    w.ok(&[&"stats"]);
    let target = w.path("restore");
    w.ok(&[&"restore", &"latest", &"--target", &target]);
    let got = restored(&target, &src).join(bottom.strip_prefix(&src).unwrap());
    let mut text = String::new();
    use std::io::Read;
    salvor_engine::longpath::open_read_nofollow(&got.join("leaf.txt"))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "at the bottom\n");
    assert_eq!(
        salvor_engine::longpath::read_link(&got.join("link")).unwrap(),
        Path::new("leaf.txt")
    );
}

#[test]
fn garbage_lock_blocks_nothing_and_unlock_removes_it() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    write(&src.join("a.txt"), b"a\n");
    let garbage = w.repo().join("locks").join("0".repeat(64));
    std::fs::write(&garbage, noise(7, 100)).unwrap();
    let out = w.ok(&[&"backup", &src]);
    assert!(
        stderr(&out).contains("unlock removes it"),
        "the backup should say what removes the lock:\n{}",
        show(&out)
    );
    w.ok(&[&"check"]);
    let v = w.json(&[&"unlock"]);
    assert_eq!(v["removed"], 1, "{v}");
    assert!(!garbage.exists());
    // A lock that opens but is not a lock document is garbage too.
    std::fs::write(&garbage, b"").unwrap();
    assert_eq!(w.json(&[&"unlock", &"--remove-all"])["removed"], 1);
}

#[test]
fn restore_latest_with_a_damaged_newest_snapshot_is_an_error() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    write(&src.join("f.txt"), b"old\n");
    w.backup(&src);
    write(&src.join("f.txt"), b"new\n");
    let id = snapshot_id(&w.backup(&src));
    let path = w.repo().join("snapshots").join(&id);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    for args in [
        vec!["restore", "latest", "--target", "t"],
        vec!["-q", "restore", "latest", "--target", "t"],
        vec!["--json", "restore", "latest", "--target", "t"],
        vec!["ls", "latest"],
        vec!["dump", "latest", "x"],
    ] {
        let a: Vec<&dyn AsRef<std::ffi::OsStr>> = args
            .iter()
            .map(|s| s as &dyn AsRef<std::ffi::OsStr>)
            .collect();
        let out = w.fails(&a, 1);
        let err = stderr(&out);
        assert!(
            err.contains(&id) && err.contains("latest"),
            "{args:?}: {err}"
        );
    }
    assert!(!w.path("t").exists(), "nothing may be restored");
    // Named by id, the older snapshot still restores.
    let snaps = w.json(&[&"snapshots"]);
    let old = snaps[0]["id"].as_str().unwrap();
    let t = w.restore(old, "older", &src);
    assert_eq!(std::fs::read(t.join("f.txt")).unwrap(), b"old\n");
}

#[test]
fn repair_index_keeps_the_entries_of_a_truncated_pack() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    write(&src.join("a.bin"), &noise(1, 3 << 20));
    w.backup(&src);
    for pack in w.pack_files() {
        let len = pack.metadata().unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
        f.set_len(len - 1).unwrap();
    }
    // The data is still readable...
    let t = w.restore("latest", "before", &src);
    assert_eq!(std::fs::read(t.join("a.bin")).unwrap(), noise(1, 3 << 20));
    // ...and stays readable after the repair.
    let out = w.ok(&[&"repair", &"index"]);
    assert!(stderr(&out).contains("kept its entries"), "{}", show(&out));
    let t = w.restore("latest", "after", &src);
    assert_eq!(std::fs::read(t.join("a.bin")).unwrap(), noise(1, 3 << 20));
}

fn modes_below(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        out.push((
            d.clone(),
            d.metadata().unwrap().permissions().mode() & 0o777,
        ));
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), e.metadata().unwrap().permissions().mode() & 0o777));
            }
        }
    }
    out
}

#[test]
fn repository_files_are_private_under_umask_022() {
    let w = World::new();
    // Through the binary, under the usual umask (inherited by the child).
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("umask 022 && exec {BIN} init"))
        .env("SALVOR_REPO", w.repo())
        .env("SALVOR_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let src = w.path("src");
    write(&src.join("a.txt"), b"a\n");
    w.backup(&src);
    for (p, mode) in modes_below(&w.repo()) {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", p.display());
    }
    // A repository directory made group-readable shares new files with the group.
    let shared = w.path("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o750)).unwrap();
    let out = w.run_env(&[("SALVOR_REPO", Some(&shared))], &[&"init"]);
    assert!(out.status.success(), "{}", show(&out));
    for (p, mode) in modes_below(&shared) {
        let want = if p.is_dir() { 0o750 } else { 0o640 };
        assert_eq!(mode, want, "{} is {mode:o}", p.display());
    }
}

#[test]
fn check_runs_on_a_read_only_repository() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    write(&src.join("a.txt"), b"a\n");
    w.backup(&src);
    let repo = w.repo();
    // A read-only bind mount in a private mount namespace (root ignores
    // file modes, so a chmod would prove nothing); other users get a
    // directory they cannot write.
    let mut c = if is_root() {
        let mut c = std::process::Command::new("unshare");
        c.arg("-m").arg("sh").arg("-c").arg(format!(
            "mount --bind '{r}' '{r}' && mount -o remount,bind,ro '{r}' && exec {BIN} check --read-data",
            r = repo.display()
        ));
        c
    } else {
        for (p, _) in modes_below(&repo) {
            let m = if p.is_dir() { 0o500 } else { 0o400 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
        }
        let mut c = std::process::Command::new(BIN);
        c.args(["check", "--read-data"]);
        c
    };
    let out = c
        .env("SALVOR_REPO", &repo)
        .env("SALVOR_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(stderr(&out).contains("without a lock"), "{}", show(&out));
    assert!(stdout(&out).contains("no errors found"), "{}", show(&out));
}

#[test]
fn unbounded_reads_of_config_password_and_exclude_files_are_capped() {
    let w = World::new();
    w.init();
    let start = std::time::Instant::now();
    let out = w.fails(
        &[&"--config", &"/dev/zero", &"inspect", &"--source", &"x"],
        2,
    );
    assert!(
        stderr(&out).contains("larger than 16 MiB"),
        "{}",
        show(&out)
    );
    let out = w.run_env(
        &[("SALVOR_PASSWORD", None)],
        &[&"--password-file", &"/dev/zero", &"snapshots"],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("no line end"),
        "{}",
        show(&out)
    );
    let src = w.path("src");
    write(&src.join("a"), b"a");
    let out = w.fails(&[&"backup", &src, &"--exclude-file", &"/dev/zero"], 2);
    assert!(stderr(&out).contains("larger than"), "{}", show(&out));
    let out = w.run_env(
        &[
            ("SALVOR_PASSWORD", None),
            ("SALVOR_PASSWORD_COMMAND", Some(&"cat /dev/zero")),
        ],
        &[&"snapshots"],
    );
    assert!(stderr(&out).contains("no line end"), "{}", show(&out));
    assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());
}

#[test]
fn absurd_numbers_are_refused_with_their_range() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    write(&src.join("a"), b"a");
    for n in ["99999999999", "0", "-1", "257"] {
        let out = w.fails(&[&"backup", &src, &format!("--read-threads={n}")], 2);
        assert!(stderr(&out).contains("1..=256"), "{n}: {}", show(&out));
    }
    w.ok(&[&"backup", &src, &"--read-threads", &"3"]);
    for (key, value, range) in [
        ("timeout_secs", "0", "1 to 86400"),
        ("timeout_secs", "99999999999", "1 to 86400"),
        ("port", "0", "1 to 65535"),
        ("port", "70000", "1 to 65535"),
    ] {
        let cfg = w.path("c.toml");
        std::fs::write(
            &cfg,
            format!("[source.r]\ntype = \"redis\"\n{key} = {value}\n"),
        )
        .unwrap();
        let out = w.fails(&[&"--config", &cfg, &"inspect", &"--source", &"r"], 2);
        let err = stderr(&out);
        assert!(
            err.contains("line 3") && err.contains(key) && err.contains(range),
            "{key} = {value}: {err}"
        );
    }
}

#[test]
fn config_type_errors_name_the_line_and_the_key() {
    let w = World::new();
    let cfg = w.path("c.toml");
    std::fs::write(
        &cfg,
        "# a comment\n[source.db]\ntype = \"postgres\"\nhost = \"x\"\nport = \"5432\"\n",
    )
    .unwrap();
    let out = w.fails(&[&"--config", &cfg, &"inspect", &"--source", &"db"], 2);
    let err = stderr(&out);
    assert!(err.contains("c.toml: line 5: port:"), "{err}");
    std::fs::write(&cfg, "[source.c]\ntype = \"command\"\ncommand = \"\"\n").unwrap();
    let out = w.fails(&[&"--config", &cfg, &"inspect", &"--source", &"c"], 2);
    assert!(
        stderr(&out).contains("line 3: command: must not be empty"),
        "{}",
        show(&out)
    );
}

/// Writes a key file under its own hash (as salvor names them).
fn plant_key(repo: &Path, json: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec_pretty(json).unwrap();
    let name = blake3::hash(&bytes).to_hex().to_string();
    std::fs::write(repo.join("keys").join(&name), bytes).unwrap();
    name
}

fn the_key(repo: &Path) -> (PathBuf, serde_json::Value) {
    let p = std::fs::read_dir(repo.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let v = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    (p, v)
}

#[test]
fn damaged_key_file_is_named_not_called_a_wrong_password() {
    let w = World::new();
    w.init();
    let (path, mut key) = the_key(&w.repo());
    key["wrapped"] = "not base64 !".into();
    std::fs::remove_file(&path).unwrap();
    let name = plant_key(&w.repo(), &key);
    let out = w.fails(&[&"snapshots"], 1);
    let err = stderr(&out);
    assert!(err.contains(&name) && err.contains("damaged"), "{err}");
    // A key file whose bytes changed no longer matches its name.
    let p = w.repo().join("keys").join(&name);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[5] ^= 1;
    std::fs::write(&p, bytes).unwrap();
    let err = stderr(&w.fails(&[&"snapshots"], 1));
    assert!(err.contains("does not match its name"), "{err}");
}

#[test]
fn planted_costly_key_file_is_refused_without_running_argon2() {
    let w = World::new();
    w.init();
    let (_, key) = the_key(&w.repo());
    let mut costly = key.clone();
    costly["kdf_params"] =
        serde_json::json!({ "memory_kib": 4 * 1024 * 1024, "iterations": 50, "parallelism": 1 });
    let bad = plant_key(&w.repo(), &costly);
    // Many planted keys of the legitimate cost are tried after the real one.
    for i in 0..20 {
        let mut k = key.clone();
        k["created"] = format!("planted {i}").into();
        k["salt"] = "AAAAAAAAAAAAAAAAAAAAAA==".into();
        plant_key(&w.repo(), &k);
    }
    let start = std::time::Instant::now();
    w.ok(&[&"snapshots"]);
    w.ok(&[&"snapshots"]);
    assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
    let out = w.fails(&[&"check"], 1);
    let err = stderr(&out);
    assert!(err.contains(&bad) && err.contains("argon2"), "{err}");
}

#[test]
fn explicit_password_flags_win_and_ambiguous_sources_are_errors() {
    let w = World::new();
    w.init();
    let pw = w.path("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    // A typed --password-file wins over a wrong SALVOR_PASSWORD.
    w.ok_env(
        &[("SALVOR_PASSWORD", Some(&"wrong"))],
        &[&"--password-file", &pw, &"snapshots"],
    );
    w.ok_env(
        &[("SALVOR_PASSWORD", Some(&"wrong"))],
        &[
            &"snapshots",
            &"--password-command",
            &format!("cat {}", pw.display()),
        ],
    );
    // A typed file that cannot be read is an error even when another source is set.
    let out = w.run(&[&"--password-file", &"/nonexistent", &"snapshots"]);
    assert!(
        !out.status.success() && stderr(&out).contains("/nonexistent"),
        "{}",
        show(&out)
    );
    // Two sources in the environment: no silent choice.
    let out = w.run_env(&[("SALVOR_PASSWORD_FILE", Some(&pw))], &[&"snapshots"]);
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("SALVOR_PASSWORD and SALVOR_PASSWORD_FILE"),
        "{}",
        show(&out)
    );
    let out = w.run(&[
        &"--password-file",
        &pw,
        &"--password-command",
        &"true",
        &"snapshots",
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("both given"),
        "{}",
        show(&out)
    );
}

#[test]
fn leftovers_of_killed_backups_are_reused_and_their_temporaries_removed() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    for i in 0..4 {
        write(&src.join(format!("f{i}.bin")), &noise(i, 12 << 20));
    }
    let total = 48u64 << 20;
    let pack_bytes = || -> u64 {
        w.pack_files()
            .iter()
            .map(|p| p.metadata().unwrap().len())
            .sum()
    };
    // Kill two backups as soon as each has written a new pack: no index
    // file yet (one comes every 64 packs), so those packs are unindexed.
    for _ in 0..2 {
        let before = w.pack_files().len();
        let mut child = w
            .spawnable(&[&"backup", &"-q", &src])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        assert!(wait_for(std::time::Duration::from_secs(60), || w
            .pack_files()
            .len()
            > before));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert_eq!(
        w.json(&[&"snapshots"]),
        serde_json::json!([]),
        "a run finished"
    );
    let left = pack_bytes();
    assert!(
        left >= 16 << 20,
        "the killed runs left {left} bytes of packs"
    );
    // A dead writer's temporary file, untouched for an hour.
    let tmp = w.repo().join("tmp").join("leftover");
    std::fs::write(&tmp, noise(99, 1000)).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let b = w.backup(&src);
    assert!(
        !tmp.exists(),
        "the dead writer's temporary file is still there"
    );
    // What the killed runs uploaded is reused, not stored again.
    let stored = b["summary"]["bytes_stored"].as_u64().unwrap();
    assert!(
        stored + left <= total + (2 << 20),
        "stored {stored} bytes although killed runs had left {left} of {total}"
    );
    w.ok(&[&"check", &"--read-data"]);
    let out = w.ok(&[&"check"]);
    assert!(!stderr(&out).contains("not in any index"), "{}", show(&out));
    let t = w.restore("latest", "restore", &src);
    for i in 0..4 {
        assert!(std::fs::read(t.join(format!("f{i}.bin"))).unwrap() == noise(i, 12 << 20));
    }
}

#[test]
fn one_bad_index_file_does_not_stop_restores() {
    let w = World::new();
    w.init();
    let a = w.path("a");
    write(&a.join("one.txt"), &text(1, 100_000));
    w.backup(&a);
    let first: Vec<_> = walk_files(&w.repo().join("index"));
    let b = w.path("b");
    write(&b.join("two.txt"), &text(2, 100_000));
    let second = snapshot_id(&w.backup(&b));
    let bad = &first[0];
    let mut bytes = std::fs::read(bad).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 4;
    std::fs::write(bad, bytes).unwrap();
    // The second snapshot's blobs are in the other index file: it restores.
    let out = w.ok(&[&"restore", &second, &"--target", &w.path("t2")]);
    assert!(stderr(&out).contains("repair index"), "{}", show(&out));
    let out = w.ok(&[&"dump", &second, &b.join("two.txt")]);
    assert_eq!(out.stdout, text(2, 100_000));
    // The first one's are not: the error says what fixes it.
    let snaps = w.json(&[&"snapshots"]);
    let first_id = snaps[0]["id"].as_str().unwrap();
    let out = w.fails(&[&"restore", &first_id, &"--target", &w.path("t1")], 1);
    assert!(
        stderr(&out).contains("salvor repair index"),
        "{}",
        show(&out)
    );
    w.ok(&[&"repair", &"index"]);
    let t = w.restore(first_id, "t1b", &a);
    assert_eq!(std::fs::read(t.join("one.txt")).unwrap(), text(1, 100_000));
}

#[test]
fn a_streams_bytes_added_never_exceeds_its_bytes_read() {
    let w = World::new();
    w.init();
    let out = w
        .cmd()
        .args(["--json", "backup", "--stdin", "--stdin-name", "d.sql"])
        .write_stdin(noise(5, 3 << 20))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["summary"];
    let (read, added, trees) = (
        s["bytes_read"].as_u64().unwrap(),
        s["bytes_added"].as_u64().unwrap(),
        s["tree_bytes_added"].as_u64().unwrap(),
    );
    assert_eq!(read, 3 << 20);
    assert!(added <= read && added > read / 2, "{s}");
    assert!(trees > 0, "{s}");
}

#[test]
fn a_hundred_thousand_exclude_patterns_back_up_quickly() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    for i in 0..46 {
        write(&src.join(format!("build{i}/f{i}.o")), b"object\n");
    }
    let list = w.path("excludes");
    let mut text: String = (0..50_000).map(|i| format!("**/build{i}/*.o\n")).collect();
    text.extend((0..50_000).map(|i| format!("*tmp{i}*\n")));
    std::fs::write(&list, text).unwrap();
    let start = std::time::Instant::now();
    let b = w.json(&[&"backup", &src, &"--exclude-file", &list]);
    assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
    // Every file matched one of the patterns.
    assert_eq!(b["summary"]["files_new"], 0, "{b}");
}

/// A `World` whose configuration file holds `config`.
fn with_config(config: &str) -> (World, PathBuf) {
    let w = World::new();
    w.init();
    let cfg = w.path("salvor.toml");
    std::fs::write(&cfg, config).unwrap();
    (w, cfg)
}

#[test]
fn a_source_restore_refuses_flags_that_do_not_apply() {
    let (w, cfg) = with_config("");
    let data = w.path("data");
    write(&data.join("keep.txt"), b"original\n");
    std::fs::write(
        &cfg,
        format!(
            "[source.pv]\ntype = \"files\"\npaths = [\"{}\"]\n\n[source.cmd]\ntype = \"command\"\ncommand = \"echo hi\"\nrestore_command = \"cat > {}\"\n",
            data.display(),
            w.path("restored-cmd").display()
        ),
    )
    .unwrap();
    let c: &dyn AsRef<std::ffi::OsStr> = &cfg;
    w.ok(&[&"-c", c, &"backup", &"--source", &"pv", &"--source", &"cmd"]);
    write(&data.join("keep.txt"), b"changed live\n");
    for extra in [
        vec!["--target", "elsewhere"],
        vec!["--include", "/x/**"],
        vec!["--exclude", "*.txt"],
    ] {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"-c",
            c,
            &"restore",
            &"latest",
            &"--source",
            &"pv",
            &"--yes",
        ];
        args.extend(extra.iter().map(|s| s as &dyn AsRef<std::ffi::OsStr>));
        let out = w.fails(&args, 2);
        assert!(
            stderr(&out).contains(extra[0]) && stderr(&out).contains("does not apply"),
            "{extra:?}: {}",
            show(&out)
        );
    }
    assert_eq!(
        std::fs::read(data.join("keep.txt")).unwrap(),
        b"changed live\n"
    );
    assert!(!w.path("elsewhere").exists());
    let out = w.fails(
        &[
            &"-c",
            c,
            &"restore",
            &"latest",
            &"--source",
            &"cmd",
            &"--only",
            &"x",
            &"--yes",
        ],
        2,
    );
    assert!(stderr(&out).contains("do not apply"), "{}", show(&out));
    assert!(!w.path("restored-cmd").exists());
}

#[test]
fn a_files_restore_asks_only_about_files_that_exist() {
    let (w, cfg) = with_config("");
    let data = w.path("data");
    write(&data.join("a.txt"), b"a\n");
    write(&data.join("b.txt"), b"b\n");
    std::fs::write(
        &cfg,
        format!(
            "[source.pv]\ntype = \"files\"\npaths = [\"{}\"]\n",
            data.display()
        ),
    )
    .unwrap();
    let c: &dyn AsRef<std::ffi::OsStr> = &cfg;
    w.ok(&[&"-c", c, &"backup", &"--source", &"pv"]);
    // A target holding other things: nothing of the snapshot exists there,
    // so there is nothing to confirm (no terminal here, so a question fails).
    let target = w.path("target");
    write(&target.join("unrelated.txt"), b"mine\n");
    let t: &dyn AsRef<std::ffi::OsStr> = &target;
    w.ok(&[
        &"-c",
        c,
        &"restore",
        &"latest",
        &"--source",
        &"pv",
        &"--to",
        t,
    ]);
    assert_eq!(
        std::fs::read(target.join("unrelated.txt")).unwrap(),
        b"mine\n"
    );
    // Again: now both files exist, and the refusal counts them.
    let out = w.fails(
        &[
            &"-c",
            c,
            &"restore",
            &"latest",
            &"--source",
            &"pv",
            &"--to",
            t,
        ],
        2,
    );
    assert!(
        stderr(&out).contains("2 of the snapshot's 2 files"),
        "{}",
        show(&out)
    );
}

#[test]
fn demo_refuses_a_directory_it_did_not_make() {
    let w = World::new();
    let dir = w.path("mine");
    write(&dir.join("precious.txt"), b"keep me\n");
    let out = w.fails(&[&"demo", &"--dir", &dir], 2);
    assert!(stderr(&out).contains("not made by"), "{}", show(&out));
    assert_eq!(
        std::fs::read(dir.join("precious.txt")).unwrap(),
        b"keep me\n"
    );
    // Its own directory it runs in again, and it counts what it compares.
    let own = w.path("demo");
    w.ok(&[&"demo", &"--dir", &own]);
    let out = w.ok(&[&"demo", &"--dir", &own]);
    let text = stdout(&out);
    assert!(text.contains("7 files,"), "{text}");
    assert!(
        text.contains("7 files and 1 symlink(s) identical"),
        "{text}"
    );
}

#[test]
fn help_names_every_environment_variable() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let mut vars: Vec<&str> = readme
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()))
        .filter(|w| w.starts_with("SALVOR_") && w.len() > 7)
        .collect();
    vars.sort();
    vars.dedup();
    assert!(!vars.is_empty());
    for v in vars {
        assert!(help.contains(v), "--help does not name {v}");
    }
}
