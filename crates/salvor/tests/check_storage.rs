//! `salvor check-storage`: the backend contract against a local store,
//! needing no password; it leaves nothing behind, reports per check (and
//! in `--json`, with the requests it sent), and a store that cannot hold
//! a repository fails with exit 1 and the reason. S3 and SFTP run it in
//! `backend_s3.rs` and `backend_sftp.rs` against the real servers.

mod common;

use common::world::*;

#[test]
fn a_local_store_passes_every_check_and_is_left_as_it_was() {
    let w = World::new();
    let store = w.path("store");
    std::fs::create_dir(&store).unwrap();
    let out = w.ok_env(
        &[("SALVOR_PASSWORD", None)],
        &[&"check-storage", &"--repo", &store],
    );
    let text = stdout(&out);
    assert!(text.contains("8 of 8 checks passed"), "{text}");
    assert!(
        text.contains("ok    ranged reads return exactly the range"),
        "{text}"
    );
    assert_eq!(
        count_files(&store),
        0,
        "check-storage left {:?}",
        walk_files(&store)
    );
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 0);

    let v = w.json(&[&"check-storage", &"--repo", &store]);
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["checks"].as_array().unwrap().len(), 8, "{v}");
    assert!(v["requests"]["write"].as_u64().unwrap() > 8, "{v}");
    assert!(v["checks"][0]["took"].as_f64().is_some(), "{v}");
}

#[test]
fn a_store_that_cannot_be_written_fails_with_the_reason() {
    if is_root() {
        // root writes through a read-only directory mode.
        return;
    }
    let w = World::new();
    let store = w.path("read-only");
    std::fs::create_dir(&store).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o500)).unwrap();
    let out = w.run(&[&"check-storage", &"--repo", &store]);
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("salvor-check-"), "{}", show(&out));
}
