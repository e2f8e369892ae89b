//! `salvor key rotate` through the real binary: objects written after a
//! rotation cannot be opened with the old key file, backups keep running and
//! deduplicating, old snapshots stay restorable, other key files are removed
//! (asked for with --yes), and a v1 repository refuses.

mod common;

use std::path::Path;

use common::world::*;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn stdin_backup(w: &World, data: &[u8]) -> serde_json::Value {
    let out = w
        .cmd()
        .args(["--json", "backup", "--stdin", "--stdin-name", "db.sql"])
        .write_stdin(data.to_vec())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_rotated_key_seals_what_comes_next_and_reads_what_came_before() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    write(&src.join("a.txt"), &text(1, 200_000));
    let first = w.backup(&src);
    let first_id = snapshot_id(&first);
    let dump = text(2, 300_000);
    stdin_backup(&w, &dump);
    // A second password, and a copy of the key files as they were: what
    // someone who stole a key file and its password before the rotation has.
    let add = w
        .cmd()
        .args(["key", "add"])
        .env("SALVOR_NEW_PASSWORD", "second password")
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", show(&add));
    let stolen_keys = w.path("stolen-keys");
    copy_dir(&w.repo().join("keys"), &stolen_keys);

    let out = w.fails(&[&"key", &"rotate"], 2);
    assert!(
        stderr(&out).contains("other key file") && stderr(&out).contains("--yes"),
        "{}",
        show(&out)
    );
    let rotated = w.json(&[&"key", &"rotate", &"--yes"]);
    assert_eq!(rotated["generation"], 1);
    assert_eq!(rotated["removed"].as_array().unwrap().len(), 2);
    assert_eq!(count_files(&w.repo().join("keys")), 1);
    // The second password was removed with its key file.
    let out = w.run_env(
        &[("SALVOR_PASSWORD", Some(&"second password"))],
        &[&"snapshots"],
    );
    assert!(!out.status.success(), "{}", show(&out));

    // Backups keep deduplicating against what the old key sealed.
    let again = stdin_backup(&w, &dump);
    assert_eq!(again["summary"]["data_blobs_added"], 0, "{again}");
    let after_id = snapshot_id(&again);
    let out = w.ok(&[&"check", &"--read-data"]);
    assert!(stdout(&out).contains("no errors found"), "{}", show(&out));
    assert_same_tree(&src, &w.restore(&first_id, "r1", &src));
    let out = w.ok(&[&"dump", &after_id, &"db.sql"]);
    assert!(out.stdout == dump, "the dump after rotation differs");

    // A copy of the repository opened with the stolen key file reads what
    // came before, and nothing written after.
    let thief = World::new();
    copy_dir(&w.repo(), &thief.repo());
    std::fs::remove_dir_all(thief.repo().join("keys")).unwrap();
    copy_dir(&stolen_keys, &thief.repo().join("keys"));
    let old = thief.ok(&[&"dump", &first_id, &src.join("a.txt")]);
    assert!(old.stdout == text(1, 200_000));
    let out = thief.run(&[&"dump", &after_id, &"db.sql"]);
    assert!(!out.status.success(), "the old key opened a new snapshot");
    assert!(stderr(&out).contains(&after_id[..8]), "{}", show(&out));

    // Rotating again keeps every generation readable.
    w.json(&[&"key", &"rotate"]);
    let out = w.ok(&[&"dump", &after_id, &"db.sql"]);
    assert!(out.stdout == dump);
    assert_same_tree(&src, &w.restore(&first_id, "r2", &src));
}

#[test]
fn a_v1_repository_refuses_to_rotate() {
    let w = World::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1");
    copy_dir(&fixture, &w.repo());
    let out = w.run_env(
        &[("SALVOR_PASSWORD", Some(&"salvor fixture v1"))],
        &[&"key", &"rotate", &"--yes"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(stderr(&out).contains("v2"), "{}", show(&out));
}
