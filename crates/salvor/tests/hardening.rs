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
        stderr(&out).contains("salvor unlock"),
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
