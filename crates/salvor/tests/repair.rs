//! `repair packs` and `repair snapshots` through the CLI: a pack with a
//! flipped byte is named by `check`, its readable blobs are salvaged, the
//! snapshots that lost data are rewritten without it and name every lost
//! path; the repository then checks clean with `--read-data`, what was not
//! lost restores byte for byte, and the next backup stores the lost files
//! again.

mod common;

use common::world::*;
use serde_json::Value;

#[test]
fn a_damaged_pack_is_salvaged_and_the_snapshots_name_what_was_lost() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..24u64 {
        let dir = if i % 2 == 0 {
            src.clone()
        } else {
            src.join("sub")
        };
        write(&dir.join(format!("f{i:02}.bin")), &noise(i, 200_000));
    }
    let first = snapshot_id(&w.backup(&src));
    write(
        &src.join("later.txt"),
        b"a second snapshot shares the damaged data\n",
    );
    let second = snapshot_id(&w.backup(&src));

    // One byte in the middle of the largest pack flips on storage.
    let pack = w
        .pack_files()
        .into_iter()
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let mut perms = std::fs::metadata(&pack).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&pack, perms).unwrap();
    std::fs::write(&pack, &bytes).unwrap();
    let name = pack.file_name().unwrap().to_str().unwrap().to_string();

    let out = w.run(&[&"--json", &"check", &"--read-data"]);
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = c["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["kind"] == "damaged_pack" && e["object"].as_str().unwrap().contains(&name)),
        "{c}"
    );

    let dry = w.json(&[&"repair", &"packs", &"--dry-run"]);
    assert_eq!(dry["damaged"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(
        std::fs::read(&pack).unwrap(),
        bytes,
        "a dry run changed the pack"
    );
    let r = w.json(&[&"repair", &"packs"]);
    let d = &r["damaged"][0];
    assert!(d["id"].as_str().unwrap() == name, "{r}");
    let (salvaged, lost) = (d["salvaged"].as_u64().unwrap(), d["lost"].as_u64().unwrap());
    assert!(
        salvaged > 0 && lost > 0,
        "one frame lost, the rest salvaged: {r}"
    );
    assert!(!pack.exists(), "the damaged pack is still there");

    let s = w.json(&[&"repair", &"snapshots"]);
    let damaged = s["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 2, "both snapshots used the pack: {s}");
    let lost_paths: Vec<String> = damaged[0]["lost"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(!lost_paths.is_empty() && lost_paths.len() < 24, "{s}");
    assert!(
        lost_paths
            .iter()
            .all(|p| p.contains("/f") && p.ends_with(".bin")),
        "{lost_paths:?}"
    );
    let old: Vec<&str> = damaged.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert!(old.contains(&first.as_str()) && old.contains(&second.as_str()));
    let new = damaged.iter().find(|d| d["id"] == second.as_str()).unwrap()["replaced_by"]
        .as_str()
        .unwrap()
        .to_string();

    let c = w.json(&[&"check", &"--read-data"]);
    assert_eq!(c["errors"], Value::Array(vec![]), "{c}");
    let snaps = w.json(&[&"snapshots"]);
    let tagged = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == new.as_str())
        .unwrap();
    assert!(
        tagged["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "repaired"),
        "{snaps}"
    );

    // What was not lost restores exactly; the lost files are absent.
    let target = w.path("r");
    w.ok(&[&"restore", &new, &"--target", &target]);
    let got = restored(&target, &src);
    for i in 0..24u64 {
        let rel = if i % 2 == 0 {
            format!("f{i:02}.bin")
        } else {
            format!("sub/f{i:02}.bin")
        };
        let is_lost = lost_paths
            .iter()
            .any(|p| p.ends_with(&format!("f{i:02}.bin")));
        match std::fs::read(got.join(&rel)) {
            Ok(b) => assert!(!is_lost && b == noise(i, 200_000), "{rel}"),
            Err(_) => assert!(is_lost, "{rel} is missing but not reported lost"),
        }
    }
    // The next backup stores the lost files again, and restores whole.
    let fresh = snapshot_id(&w.json(&[&"backup", &"--force", &src]));
    let again = w.restore(&fresh, "r2", &src);
    assert_same_tree(&src, &again);
    let c = w.json(&[&"check", &"--read-data"]);
    assert_eq!(c["errors"], Value::Array(vec![]), "{c}");
}
