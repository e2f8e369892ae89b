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
    assert!(text.contains("9 of 9 checks passed"), "{text}");
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
    assert_eq!(v["checks"].as_array().unwrap().len(), 9, "{v}");
    assert!(v["requests"]["write"].as_u64().unwrap() > 8, "{v}");
    assert!(v["checks"][0]["took"].as_f64().is_some(), "{v}");
    assert_eq!(v["capabilities"]["atomic_create"], true, "{v}");
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

#[test]
fn storage_options_that_do_not_apply_or_hold_secrets_are_refused() {
    let w = World::new();
    w.ok(&[&"init"]);
    let out = w.fails(&[&"snapshots", &"-o", &"s3.region=eu-west-3"], 2);
    assert!(
        stderr(&out).contains("s3.region does not apply"),
        "{}",
        show(&out)
    );
    let out = w.fails(&[&"snapshots", &"-o", &"s3.secret-access-key=hunter2"], 2);
    let err = stderr(&out);
    assert!(
        err.contains("AWS_SECRET_ACCESS_KEY") && !err.contains("hunter2"),
        "{err}"
    );
    let out = w.fails(&[&"snapshots", &"-o", &"bogus=1"], 2);
    assert!(
        stderr(&out).contains("the options are s3.endpoint"),
        "{}",
        show(&out)
    );
    let out = w.fails(&[&"snapshots", &"-o", &"timeout"], 2);
    assert!(stderr(&out).contains("KEY=VALUE"), "{}", show(&out));
}

/// A store that accepts connections and never answers: with short
/// timeouts and two attempts, the command fails in seconds, saying why,
/// instead of hanging until someone notices.
#[test]
fn a_store_that_stops_answering_fails_in_bounded_time() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            keep.lock().unwrap().push(conn);
        }
    });
    let w = World::new();
    let start = std::time::Instant::now();
    let out = w
        .cmd()
        .env("SALVOR_REPO", "s3://bucket/repo")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_ENDPOINT_URL")
        .args(["-o", &format!("s3.endpoint=http://127.0.0.1:{port}")])
        .args([
            "-o",
            "timeout=2s",
            "-o",
            "io-timeout=2s",
            "-o",
            "attempts=2",
        ])
        .arg("snapshots")
        .output()
        .unwrap();
    let took = start.elapsed();
    assert_no_panic(&out);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
    let err = stderr(&out);
    assert!(
        err.contains("timeout") || err.contains("timed out"),
        "{err}"
    );
    assert!(!held.lock().unwrap().is_empty(), "salvor never connected");
}
