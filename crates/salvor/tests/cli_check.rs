//! check through the real binary: every subset of a good repository, a
//! flipped bit, a truncated pack and deleted index files.
//!
//! Every test works in its own temporary directory. Passwords only ever travel
//! in the environment (`SALVOR_PASSWORD`, `SALVOR_NEW_PASSWORD`), never argv.
//! Most repositories are created through the engine API with a cheap Argon2
//! cost so the suite stays fast; `init_*` tests create them through the binary.

mod common;

use std::path::PathBuf;

use common::world::*;
use serde_json::Value;

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
