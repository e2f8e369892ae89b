//! The `mongodb` source (driver method) against the server that
//! `scripts/services.sh start mongo` runs: **nx-27017, a pure-Python server
//! speaking the MongoDB wire protocol (SQLite-backed). It is a stand-in, not
//! MongoDB**: these tests show that salvor's driver-based dump and restore
//! work over the wire protocol, not that every MongoDB server behaves alike.
//! No MongoDB tools can be installed here either: the `mongodump` method is
//! tested against **stand-in `mongodump`/`mongorestore` scripts** that record
//! their arguments and pass an archive through, which checks salvor's side of
//! that contract (arguments, credentials, streaming, failures) only.
//!
//! Fails unless `SALVOR_TEST_SERVICES=1` (see tests/common).

// Built only with the `mongodb` feature (scripts/test.sh enables every
// feature): without it salvor has no MongoDB source to test.
#![cfg(feature = "mongodb")]

mod common;

use common::{Workspace, services, var};
use mongodb::bson::{Bson, DateTime, Document, doc, oid::ObjectId, spec::BinarySubtype};
use mongodb::sync::{Client, Database};
use serde_json::{Value, json};

const STANDIN: &str = "on the nx-27017 stand-in, not MongoDB";

fn client() -> Client {
    Client::with_uri_str(var("SALVOR_TEST_MONGO_URL")).expect("driver connects to the stand-in")
}

/// A database name unique to this test run.
fn db_name(tag: &str) -> String {
    format!("salvor_{tag}_{}", std::process::id())
}

/// Seeds `users` (3 documents, unique index on email) and `orders` (5 documents,
/// compound index) with a mix of BSON types.
fn seed(db: &Database) {
    let _ = db.drop().run();
    let users = db.collection::<Document>("users");
    users
        .insert_many([
            doc! { "_id": 1, "email": "a@example.com", "name": "Ann", "tags": ["x", "y"] },
            doc! { "_id": 2, "email": "b@example.com", "name": "Bob", "address": { "city": "Oslo", "zip": "0150" } },
            doc! { "_id": 3, "email": "c@example.com", "name": "Cy", "active": false, "score": 2.5 },
        ])
        .run()
        .unwrap();
    users
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "email": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .name("email_1".to_string())
                        .build(),
                )
                .build(),
        )
        .run()
        .unwrap();
    let orders = db.collection::<Document>("orders");
    let when = DateTime::from_millis(1_700_000_000_000);
    let orders_docs: Vec<Document> = (1..=5)
        .map(|i| {
            doc! {
                "_id": ObjectId::parse_str(format!("65000000000000000000000{i}")).unwrap(),
                "user": (i % 3) + 1,
                "total": i64::from(i) * 1_000_000_000_000,
                "at": when,
                "blob": Bson::Binary(mongodb::bson::Binary { subtype: BinarySubtype::Generic, bytes: vec![i as u8; 4] }),
            }
        })
        .collect();
    orders.insert_many(orders_docs).run().unwrap();
    orders
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "user": 1, "at": -1 })
                .build(),
        )
        .run()
        .unwrap();
}

/// Every document of a collection, sorted by `_id`.
fn docs(db: &Database, coll: &str) -> Vec<Document> {
    db.collection::<Document>(coll)
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .run()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Index specs of a collection (`listIndexes` output), sorted by name.
fn indexes(db: &Database, coll: &str) -> Vec<Document> {
    let mut specs: Vec<Document> = db
        .run_cursor_command(doc! { "listIndexes": coll })
        .run()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    specs.sort_by_key(|d| d.get_str("name").unwrap_or_default().to_string());
    specs
}

fn config(name: &str, uri: &str, databases: &[&str]) -> String {
    format!(
        "[source.{name}]\ntype = \"mongodb\"\nuri = {{ command = \"echo {uri}\" }}\ndatabases = {}\ntimeout_secs = 3\nbatch_size = 2\n",
        serde_json::to_string(databases).unwrap()
    )
}

fn snapshot_ids(w: &Workspace) -> Vec<String> {
    w.json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Runs salvor expecting failure; returns stderr.
fn fails(w: &Workspace, args: &[&str]) -> String {
    let out = w.salvor().args(args).output().unwrap();
    assert!(
        !out.status.success(),
        "salvor {args:?} should fail {STANDIN}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn backup_change_restore_into_new_database() {
    if !services("mongodb backup_change_restore_into_new_database") {
        return;
    }
    let client = client();
    let (src, copy) = (db_name("src"), db_name("copy"));
    let (sdb, cdb) = (client.database(&src), client.database(&copy));
    seed(&sdb);
    let _ = cdb.drop().run();
    let (users0, orders0) = (docs(&sdb, "users"), docs(&sdb, "orders"));
    let (uidx0, oidx0) = (indexes(&sdb, "users"), indexes(&sdb, "orders"));
    assert!(
        uidx0
            .iter()
            .any(|i| i.get_document("key").ok() == Some(&doc! { "email": 1 })
                && i.get_bool("unique") == Ok(true)),
        "seeded a unique email index {STANDIN}: {uidx0:?}"
    );
    let w = Workspace::new(&config("app", &var("SALVOR_TEST_MONGO_URL"), &[&src]));

    w.json(&["backup", "--source", "app"]);
    let m1 = w.manifest("app");
    assert_eq!(m1["type"], "mongodb");
    assert_eq!(m1["method"], "driver");
    assert_eq!(
        m1["databases"][&src],
        json!({ "orders": { "documents": 5, "indexes": 2 }, "users": { "documents": 3, "indexes": 2 } }),
        "manifest counts documents and indexes (_id_ included) {STANDIN}"
    );
    let live = w.json(&["inspect", "--source", "app"]);
    assert_eq!(
        live["databases"], m1["databases"],
        "inspect matches the manifest {STANDIN}"
    );
    let snap1 = snapshot_ids(&w)[0].clone();

    // The stream is the raw documents, concatenated.
    let out = w
        .salvor()
        .args(["dump", &snap1, &format!("app/{src}/users.bson")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bytes = &out.stdout[..];
    let mut parsed = Vec::new();
    while !bytes.is_empty() {
        let d = Document::from_reader(&mut bytes).expect("concatenated BSON documents");
        parsed.push(d);
    }
    assert_eq!(
        parsed, users0,
        "users.bson holds the documents byte for byte {STANDIN}"
    );

    // Change the data, back up again.
    let users = sdb.collection::<Document>("users");
    users
        .insert_one(doc! { "_id": 4, "email": "d@example.com", "name": "Di" })
        .run()
        .unwrap();
    users
        .update_one(doc! { "_id": 1 }, doc! { "$set": { "name": "Anne" } })
        .run()
        .unwrap();
    sdb.collection::<Document>("orders")
        .delete_one(doc! {})
        .run()
        .unwrap();
    w.json(&["backup", "--source", "app"]);
    let m2 = w.manifest("app");
    assert_eq!(m2["databases"][&src]["users"]["documents"], 4);
    assert_eq!(m2["databases"][&src]["orders"]["documents"], 4);

    // Restore the FIRST snapshot under a new database name.
    let r = w.json(&["restore", &snap1, "--source", "app", "--into", &copy]);
    assert_eq!(r["report"]["counts"][format!("{copy}.users")], 3, "{r}");
    assert_eq!(r["report"]["counts"][format!("{copy}.orders")], 5, "{r}");
    assert_eq!(
        docs(&cdb, "users"),
        users0,
        "restored users equal the first snapshot {STANDIN}"
    );
    assert_eq!(
        docs(&cdb, "orders"),
        orders0,
        "restored orders equal the first snapshot {STANDIN}"
    );
    // Compared as listIndexes specs: the stand-in names indexes idx_COLL_FIELD
    // whatever name is asked for, so names are compared between the two sides.
    assert_eq!(
        indexes(&cdb, "users"),
        uidx0,
        "index specs came back {STANDIN}"
    );
    assert_eq!(
        indexes(&cdb, "orders"),
        oidx0,
        "index specs came back {STANDIN}"
    );
    let unique = cdb
        .collection::<Document>("users")
        .insert_one(doc! { "_id": 9, "email": "a@example.com" })
        .run();
    assert!(unique.is_err(), "the unique index came back {STANDIN}");
    // Counts of the copy equal the first manifest's.
    let w2 = Workspace::new(&config("copy", &var("SALVOR_TEST_MONGO_URL"), &[&copy]));
    let live = w2.json(&["inspect", "--source", "copy"]);
    assert_eq!(live["databases"][&copy], m1["databases"][&src], "{STANDIN}");

    // The original database still holds the changed data.
    assert_eq!(docs(&sdb, "users").len(), 4);
    let _ = sdb.drop().run();
    let _ = cdb.drop().run();
}

#[test]
fn selective_dry_run_and_overwrite_refusal() {
    if !services("mongodb selective_dry_run_and_overwrite_refusal") {
        return;
    }
    let client = client();
    let (src, part) = (db_name("sel"), db_name("part"));
    let (sdb, pdb) = (client.database(&src), client.database(&part));
    seed(&sdb);
    let _ = pdb.drop().run();
    let users0 = docs(&sdb, "users");
    let w = Workspace::new(&config("app", &var("SALVOR_TEST_MONGO_URL"), &[&src]));
    w.json(&["backup", "--source", "app"]);
    let snap = snapshot_ids(&w)[0].clone();

    // --dry-run changes nothing.
    let r = w.json(&[
        "restore",
        &snap,
        "--source",
        "app",
        "--into",
        &part,
        "--dry-run",
    ]);
    assert_eq!(r["report"]["counts"][format!("{part}.orders")], 5, "{r}");
    assert!(
        pdb.list_collection_names().run().unwrap().is_empty(),
        "--dry-run creates nothing {STANDIN}"
    );

    // --only one collection.
    let r = w.json(&[
        "restore", &snap, "--source", "app", "--into", &part, "--only", "users",
    ]);
    assert_eq!(r["report"]["counts"].as_object().unwrap().len(), 1, "{r}");
    assert_eq!(
        pdb.list_collection_names().run().unwrap(),
        ["users"],
        "{STANDIN}"
    );
    assert_eq!(docs(&pdb, "users"), users0);

    // Restoring into the (changed, non-empty) original needs --yes.
    sdb.collection::<Document>("users")
        .delete_many(doc! { "_id": { "$gt": 1 } })
        .run()
        .unwrap();
    let err = fails(&w, &["restore", &snap, "--source", "app"]);
    assert!(
        err.contains("restore would overwrite")
            && err.contains(&format!("{src}.users (1 documents)")),
        "{err}"
    );
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(
        docs(&sdb, "users").len(),
        1,
        "a refused restore writes nothing {STANDIN}"
    );
    let r = w.json(&["restore", &snap, "--source", "app", "--yes"]);
    assert!(
        r["report"]["actions"]
            .to_string()
            .contains(&format!("{src}.users")),
        "{r}"
    );
    assert_eq!(
        docs(&sdb, "users"),
        users0,
        "--yes replaces the collection {STANDIN}"
    );

    let err = fails(&w, &["restore", &snap, "--source", "app", "--only", "nope"]);
    assert!(err.contains("nope is not in the snapshot"), "{err}");
    let _ = sdb.drop().run();
    let _ = pdb.drop().run();
}

#[test]
fn server_down_fails_without_snapshot_or_uri() {
    if !services("mongodb server_down_fails_without_snapshot_or_uri") {
        return;
    }
    // Nothing listens on port 9 of loopback (discard, never run here).
    let w = Workspace::new(&config(
        "gone",
        "mongodb://salvor:hunter2@127.0.0.1:9/",
        &["x"],
    ));
    let start = std::time::Instant::now();
    let err = fails(&w, &["backup", "--source", "gone"]);
    assert!(err.contains("on mongodb at 127.0.0.1:9 failed"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the uri's password never shows: {err}"
    );
    assert!(
        start.elapsed().as_secs() < 30,
        "timeout_secs bounds the wait"
    );
    let snaps: Value = w.json(&["snapshots"]);
    assert_eq!(snaps, json!([]), "a failed backup writes no snapshot");
}

/// Writes stand-in `mongodump` and `mongorestore` scripts into `dir`. They
/// log their arguments and `--config` file into `$STANDIN_LOG`; mongodump
/// writes a fixed archive-like stream (or fails when `$STANDIN_FAIL` is set),
/// mongorestore keeps what it reads.
fn standin_tools(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let log = r#"printf '%s\n' "$@" > "$STANDIN_LOG/$(basename "$0").args"
for a; do case "$a" in --config=*) cp "${a#--config=}" "$STANDIN_LOG/$(basename "$0").config";; esac; done
"#;
    let tools = [
        (
            "mongodump",
            format!(
                "#!/bin/sh\n{log}if [ -n \"$STANDIN_FAIL\" ]; then echo 'Failed: stand-in mongodump cannot connect' >&2; exit 1; fi\nseq 1 300000\n"
            ),
        ),
        (
            "mongorestore",
            format!("#!/bin/sh\n{log}cat > \"$STANDIN_LOG/restored.archive\"\n"),
        ),
    ];
    for (name, body) in tools {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn mongodump_method_against_standin_tools() {
    if !services("mongodb mongodump_method_against_standin_tools") {
        return;
    }
    let db_name = db_name("dumptool");
    let db = client().database(&db_name);
    seed(&db);
    let tools = tempfile::tempdir().unwrap();
    let log = tempfile::tempdir().unwrap();
    standin_tools(tools.path());
    let config = format!(
        "{}method = \"mongodump\"\nbin_dir = \"{}\"\n",
        config("md", &var("SALVOR_TEST_MONGO_URL"), &[&db_name]),
        tools.path().display()
    );
    let w = Workspace::new(&config);
    let run = |args: &[&str], fail: bool| {
        let mut c = w.salvor();
        c.args(args).env("STANDIN_LOG", log.path());
        if fail {
            c.env("STANDIN_FAIL", "1");
        }
        c.output().unwrap()
    };
    let read = |name: &str| std::fs::read_to_string(log.path().join(name)).unwrap();

    // Backup: counts from the server (the archive is opaque), the archive
    // streamed as is, the uri only in a private config file that is gone after.
    let out = run(&["--json", "backup", "--source", "md"], false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = w.manifest("md");
    assert_eq!(m["method"], "mongodump");
    assert_eq!(m["oplog"], false, "the stand-in server is no replica set");
    assert_eq!(m["databases"][&db_name]["users"]["documents"], 3, "{m}");
    assert_eq!(m["databases"][&db_name]["orders"]["documents"], 5, "{m}");
    let args = read("mongodump.args");
    assert!(args.contains("--archive\n"), "{args}");
    assert!(args.contains(&format!("--nsInclude={db_name}.*")), "{args}");
    assert!(
        !args.contains("mongodb://"),
        "the uri stays out of argv: {args}"
    );
    let cfg_arg = args.lines().find(|l| l.starts_with("--config=")).unwrap();
    assert!(
        !std::path::Path::new(&cfg_arg["--config=".len()..]).exists(),
        "the uri file is removed"
    );
    assert!(read("mongodump.config").starts_with("uri: \"mongodb://"));
    let dumped = w
        .salvor()
        .args(["dump", "latest", "md/dump.archive"])
        .output()
        .unwrap();
    let want: String = (1..=300_000).map(|i| format!("{i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&dumped.stdout), want);

    // A failing tool fails the backup with its own message; no snapshot.
    let out = run(&["backup", "--source", "md"], true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("stand-in mongodump cannot connect"),
        "{err}"
    );
    assert_eq!(snapshot_ids(&w).len(), 1);

    // Restore into another database: the archive reaches mongorestore whole,
    // renamed with --nsFrom/--nsTo, and --only picks collections.
    let into = format!("{db_name}_copy");
    let out = run(
        &[
            "--json", "restore", "latest", "--source", "md", "--into", &into, "--only", "users",
        ],
        false,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read("restored.archive"), want);
    let args = read("mongorestore.args");
    for a in [
        "--archive".to_string(),
        format!("--nsInclude={db_name}.users"),
        format!("--nsFrom={db_name}.*"),
        format!("--nsTo={into}.*"),
    ] {
        assert!(args.lines().any(|l| l == a), "{a} missing: {args}");
    }
    assert!(!args.contains("--drop"), "no --drop without --yes: {args}");
    assert!(!args.contains("mongodb://"), "{args}");
    let _ = db.drop().run();
}
