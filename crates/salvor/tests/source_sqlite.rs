//! The `sqlite` source against real SQLite files. Needs no server: always runs.
//!
//! A writer thread (its own connection, as another process would have) keeps
//! inserting rows while the backup runs; the restored copy must be one
//! committed state: integrity ok, counts equal to the manifest, and the rows a
//! gap-free prefix of what the writer inserted.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::Workspace;
use rusqlite::Connection;

fn snapshot_count(w: &Workspace) -> usize {
    w.json(&["snapshots"]).as_array().unwrap().len()
}

fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// A WAL-mode database with `items` (seeded with `n` rows) and `tags`.
fn seed(path: &Path, n: i64) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE items(id INTEGER PRIMARY KEY, payload TEXT NOT NULL);
         CREATE TABLE tags(name TEXT PRIMARY KEY);
         CREATE INDEX items_payload ON items(payload);
         INSERT INTO tags VALUES ('a'), ('b'), ('c');",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 1..=n {
        tx.execute(
            "INSERT INTO items(id, payload) VALUES (?1, ?2)",
            (i, format!("row {i} {}", "x".repeat(200))),
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// Inserts rows with consecutive ids, one small transaction at a time, until stopped.
fn writer(path: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<i64> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let c = Connection::open(path).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        let mut written = 0;
        while !stop.load(Ordering::Relaxed) {
            let tx = c.unchecked_transaction().unwrap();
            for _ in 0..10 {
                tx.execute(
                    "INSERT INTO items(payload) VALUES (?1)",
                    [format!("live {}", "y".repeat(300))],
                )
                .unwrap();
            }
            tx.commit().unwrap();
            written += 10;
        }
        written
    })
}

#[test]
fn sqlite_backup_while_writing_restores_a_consistent_copy() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    seed(&db, 2000);
    let w = Workspace::new(&format!(
        "[source.app]\ntype = \"sqlite\"\npath = \"{}\"\n",
        db.display()
    ));

    // Back up while a writer keeps committing.
    let stop = Arc::new(AtomicBool::new(false));
    let handle = writer(&db, stop.clone());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let first = w.json(&["backup", "--source", "app"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let written = handle.join().unwrap();
    assert!(written > 0, "the writer must have run during the backup");
    let m1 = w.manifest("app");
    assert_eq!(m1["type"], "sqlite");
    assert_eq!(m1["integrity_check"], "ok");
    assert_eq!(m1["tables"]["tags"], 3);
    let items1 = m1["tables"]["items"].as_i64().unwrap();
    assert!(
        items1 >= 2000 && items1 % 10 == 0,
        "items {items1} is not a committed state"
    );
    assert!(m1["page_count"].as_u64().unwrap() > 10);
    assert!(m1["sqlite_version"].as_str().unwrap().starts_with("3."));

    // Change the database, back up again: the second manifest sees the change.
    let c = Connection::open(&db).unwrap();
    c.execute("DELETE FROM items WHERE id > 100", []).unwrap();
    c.execute("INSERT INTO tags VALUES ('d')", []).unwrap();
    w.json(&["backup", "--source", "app"]);
    let m2 = w.manifest("app");
    assert_eq!(
        (
            m2["tables"]["items"].as_i64(),
            m2["tables"]["tags"].as_i64()
        ),
        (Some(100), Some(4))
    );

    // inspect of the live, quiet database equals the latest manifest.
    let live = w.json(&["inspect", "--source", "app"]);
    for k in [
        "tables",
        "integrity_check",
        "page_count",
        "page_size",
        "sqlite_version",
    ] {
        assert_eq!(live[k], m2[k], "inspect differs from the manifest in {k}");
    }

    // Restore the FIRST snapshot into a fresh file.
    let snap1 = first["snapshot"].as_str().unwrap();
    let restored = dir.path().join("out/restored.db");
    let r = restored.to_str().unwrap();
    w.salvor()
        .args([
            "restore",
            snap1,
            "--source",
            "app",
            "--into",
            r,
            "--dry-run",
        ])
        .assert()
        .success();
    assert!(!restored.exists(), "a dry run must not write");
    let rep = w.json(&["restore", snap1, "--source", "app", "--into", r]);
    assert_eq!(rep["report"]["counts"], m1["tables"]);
    let rc = Connection::open(&restored).unwrap();
    let ok: String = rc
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    assert_eq!(count(&rc, "items"), items1);
    assert_eq!(count(&rc, "tags"), 3);
    // A consistent copy holds a gap-free prefix of the writer's ids.
    let max: i64 = rc
        .query_row("SELECT max(id) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(max, items1);
    drop(rc);

    // Overwriting an existing file needs --yes; with it, the file is replaced.
    let o = w
        .salvor()
        .args(["restore", "latest", "--source", "app", "--into", r])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("would overwrite sqlite database"), "{err}");
    assert_eq!(
        count(&Connection::open(&restored).unwrap(), "items"),
        items1
    );
    w.salvor()
        .args(["restore", "latest", "--source", "app", "--into", r, "--yes"])
        .assert()
        .success();
    let rc = Connection::open(&restored).unwrap();
    assert_eq!((count(&rc, "items"), count(&rc, "tags")), (100, 4));
}

#[test]
fn sqlite_backup_of_a_missing_or_broken_database_fails_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
    let w = Workspace::new(&format!(
        "[source.missing]\ntype = \"sqlite\"\npath = \"{}\"\n\n[source.junk]\ntype = \"sqlite\"\npath = \"{}\"\n",
        dir.path().join("nope.db").display(),
        junk.display()
    ));
    for (name, expected) in [("missing", "does not exist"), ("junk", "junk.db")] {
        let o = w
            .salvor()
            .args(["backup", "--source", name])
            .output()
            .unwrap();
        assert!(!o.status.success(), "{name} must fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(expected) && err.contains("sqlite database"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    }
    assert_eq!(snapshot_count(&w), 0);
    // Unknown keys are rejected.
    let bad = Workspace::new("[source.x]\ntype = \"sqlite\"\npath = \"a.db\"\ncolour = 1\n");
    let o = bad
        .salvor()
        .args(["backup", "--source", "x"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("colour"));
}
