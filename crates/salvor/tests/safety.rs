//! Regression tests for review findings: restores never write through
//! symlinks already in the target, and child processes never see the
//! repository password.

mod common;

use common::Workspace;

#[test]
fn restore_into_a_target_holding_a_symlink_stays_inside_the_target() {
    let w = Workspace::new("");
    let outside = tempfile::tempdir().unwrap();
    let src = w.dir.path().join("src");
    // Snapshot A: `x` is a symlink pointing outside.
    std::fs::create_dir(&src).unwrap();
    std::os::unix::fs::symlink(outside.path(), src.join("x")).unwrap();
    w.salvor()
        .args(["backup", "-q"])
        .arg(&src)
        .assert()
        .success();
    let a = w.json(&["snapshots"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Snapshot B: `x` is a directory holding a file.
    std::fs::remove_file(src.join("x")).unwrap();
    std::fs::create_dir(src.join("x")).unwrap();
    std::fs::write(src.join("x/passwd"), b"from snapshot B\n").unwrap();
    w.salvor()
        .args(["backup", "-q"])
        .arg(&src)
        .assert()
        .success();
    let target = w.dir.path().join("target");
    w.salvor()
        .args(["restore", "-q", &a, "--target"])
        .arg(&target)
        .assert()
        .success();
    w.salvor()
        .args(["restore", "-q", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert!(
        std::fs::read_dir(outside.path()).unwrap().next().is_none(),
        "the restore wrote through the symlink into a directory outside the target"
    );
    let restored = target.join(src.strip_prefix("/").unwrap()).join("x/passwd");
    assert_eq!(std::fs::read(restored).unwrap(), b"from snapshot B\n");
}

#[test]
fn child_processes_do_not_inherit_the_repository_password() {
    let w = Workspace::new(
        "[source.env]\ntype = \"command\"\ncommand = \"printenv SALVOR_PASSWORD || echo unset\"\n",
    );
    w.salvor()
        .args(["backup", "-q", "--source", "env"])
        .assert()
        .success();
    let out = w
        .salvor()
        .args(["dump", "latest", "env/stdout"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "unset\n");
}
