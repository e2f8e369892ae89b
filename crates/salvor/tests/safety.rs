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

#[test]
fn repair_index_after_a_lost_pack_lets_the_next_backup_store_the_data_again() {
    let w = Workspace::new("");
    let src = w.dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("big.bin"), &data).unwrap();
    std::fs::write(src.join("small.txt"), b"small\n").unwrap();
    w.salvor()
        .args(["backup", "-q"])
        .arg(&src)
        .assert()
        .success();
    // Lose the largest pack (the one holding big.bin's data).
    let packs: Vec<_> = walk(&w.repo().join("data"));
    let lost = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(lost).unwrap();
    let o = w.salvor().arg("check").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("repair index"));
    // Without repair, a new backup would dedup against the lost blobs; with it,
    // it reads and stores them again and the new snapshot restores exactly.
    let r = w.json(&["repair", "index"]);
    assert_eq!(r["packs_skipped"].as_array().unwrap().len(), 0);
    assert!(r["index_files_written"].as_u64().unwrap() >= 1);
    let b = w.json(&["backup", src.to_str().unwrap()]);
    assert!(
        b["summary"]["bytes_added"].as_u64().unwrap() >= data.len() as u64 / 2,
        "{b}"
    );
    let target = w.dir.path().join("t");
    w.salvor()
        .args(["restore", "-q", "latest", "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(
        std::fs::read(target.join(src.strip_prefix("/").unwrap()).join("big.bin")).unwrap(),
        data
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}
