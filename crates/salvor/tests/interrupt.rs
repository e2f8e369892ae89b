//! SIGINT and SIGTERM during a backup: salvor stops at its next unit of
//! work, exits with 130 saying nothing was recorded, leaves no snapshot and
//! no lock, and the repository passes `check --read-data`; the next backup
//! completes. (The postgres source's case, a dump tool waiting on a table
//! lock, is in `source_postgres.rs`.)

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::world::*;

fn assert_interrupted(out: &std::process::Output) {
    assert_no_panic(out);
    assert_eq!(out.status.code(), Some(130), "{}", show(out));
    let err = stderr(out);
    assert!(
        err.contains("interrupted") && err.contains("no snapshot was recorded"),
        "{err}"
    );
}

fn assert_nothing_recorded(w: &World) {
    assert_eq!(w.json(&[&"snapshots"]), serde_json::json!([]));
    assert!(!has_lock(&w.repo()), "the interrupted backup left its lock");
    let v = w.json(&[&"check", &"--read-data"]);
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
}

#[test]
fn sigint_during_a_stream_backup_records_nothing() {
    let w = World::new();
    w.ok(&[&"init"]);
    let mut child = w
        .spawnable(&[&"backup", &"--stdin", &"--stdin-name", &"db.sql"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    // A dump that keeps coming, as a slow database sends it.
    let feeder = std::thread::spawn(move || {
        let mut seed = 0;
        loop {
            seed += 1;
            if pipe.write_all(&text(seed, 256 << 10)).is_err() {
                return seed;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    assert!(wait_for(Duration::from_secs(30), || has_lock(&w.repo())));
    std::thread::sleep(Duration::from_millis(300));
    let out = signal_and_wait(child, libc::SIGINT);
    let fed = feeder.join().unwrap();
    assert!(fed > 1, "the backup read nothing before the signal");
    assert_interrupted(&out);
    assert_nothing_recorded(&w);
    // The next one completes, byte for byte.
    let dump = text(7, 4 << 20);
    let src = w.path("db.sql");
    write(&src, &dump);
    w.ok(&[&"backup", &"-q", &src]);
    let restored = w.restore("latest", "r", &src);
    assert!(std::fs::read(restored).unwrap() == dump);
}

#[test]
fn sigterm_during_a_file_backup_records_nothing() {
    let w = World::new();
    w.ok(&[&"init"]);
    let src = w.path("src");
    for i in 0..96 {
        write(
            &src.join(format!("d{}/f{i}.bin", i % 8)),
            &noise(i, 2 << 20),
        );
    }
    let child = w
        .spawnable(&[&"backup", &"--read-threads", &"1", &src])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(30), || has_lock(&w.repo())));
    std::thread::sleep(Duration::from_millis(200));
    let out = signal_and_wait(child, libc::SIGTERM);
    assert_interrupted(&out);
    assert_nothing_recorded(&w);
    // What the interrupted run uploaded is reused, and the tree comes back whole.
    let b = w.backup(&src);
    assert_eq!(b["partial"], false);
    let target = w.restore("latest", "r", &src);
    assert_same_tree(&src, &target);
}
