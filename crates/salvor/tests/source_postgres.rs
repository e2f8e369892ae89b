//! The `postgres` source against a real PostgreSQL server (scripts/services.sh).
//!
//! Every test works in its own `pgt_*` databases and drops them at the end.

mod common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// A database name unique to this test run.
fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("pgt_{tag}_{}_{nanos}", std::process::id())
}

/// Runs SQL as the test role in `db`; returns trimmed unaligned output.
fn psql(db: &str, sql: &str) -> String {
    psql_as("SALVOR_TEST_PG_USER", "SALVOR_TEST_PG_PASSWORD", db, sql)
}

/// Runs SQL as the superuser in `db`.
fn su_in(db: &str, sql: &str) -> String {
    psql_as(
        "SALVOR_TEST_PG_SUPERUSER",
        "SALVOR_TEST_PG_SUPERUSER_PASSWORD",
        db,
        sql,
    )
}

/// Runs SQL as the role and password named by two environment variables.
fn psql_as(user_var: &str, password_var: &str, db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-w",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .env("PGHOST", common::var("SALVOR_TEST_PG_HOST"))
        .env("PGPORT", common::var("SALVOR_TEST_PG_PORT"))
        .env("PGUSER", common::var(user_var))
        .env("PGPASSWORD", common::var(password_var))
        .env("PGDATABASE", db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Drops the listed databases when the test ends, even on failure.
struct Dbs(Vec<String>);

impl Drop for Dbs {
    fn drop(&mut self) {
        for db in &self.0 {
            let _ = std::panic::catch_unwind(|| {
                psql(
                    "postgres",
                    &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
                )
            });
        }
    }
}

const SEED: &str = "
CREATE SCHEMA app;
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price numeric(10,2));
INSERT INTO items (name, price)
  SELECT 'Ærøskøbing ünïcødé 🚀 item number ' || i || repeat(' padding', 8), i * 1.25
  FROM generate_series(1, 3000) i;
CREATE TABLE notes (id int PRIMARY KEY, body text);
INSERT INTO notes VALUES (1, 'tab	and newline
inside'), (2, 'back\\slash'), (3, '日本語のテキスト'), (4, NULL);
CREATE TABLE app.tags (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  item_id int REFERENCES items(id), tag text);
INSERT INTO app.tags (item_id, tag) SELECT i, 'tag-' || i FROM generate_series(1, 50) i;
CREATE INDEX items_name_idx ON items (name);
CREATE VIEW cheap AS SELECT * FROM items WHERE price < 10;
";

/// A digest of a table's contents.
fn digest(db: &str, table: &str) -> String {
    psql(
        db,
        &format!(
            "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
        ),
    )
}

fn config(db: &str) -> String {
    let (host, port, user) = (
        common::var("SALVOR_TEST_PG_HOST"),
        common::var("SALVOR_TEST_PG_PORT"),
        common::var("SALVOR_TEST_PG_USER"),
    );
    format!(
        r#"
[source.pg]
type = "postgres"
host = "{host}"
port = {port}
user = "{user}"
password = {{ env = "SALVOR_TEST_PG_PASSWORD" }}
databases = ["{db}"]
role_passwords = false

[source.pg_checked]
type = "postgres"
host = "{host}"
port = {port}
user = "{user}"
password = {{ env = "SALVOR_TEST_PG_PASSWORD" }}
databases = ["{db}"]
globals = false
verify_counts = true
dump_args = ["--exclude-table-data=app.tags"]

[source.pg_down]
type = "postgres"
host = "127.0.0.1"
port = 1
user = "{user}"
password = {{ env = "SALVOR_TEST_PG_PASSWORD" }}
databases = ["{db}"]

[source.pg_badpw]
type = "postgres"
host = "{host}"
port = {port}
user = "{user}"
password = {{ env = "PGT_WRONG_PASSWORD" }}
databases = ["{db}"]
role_passwords = false
"#
    )
}

fn tables(m: &Value, db: &str) -> Value {
    m["databases"][db]["tables"].clone()
}

fn snapshot_count(w: &common::Workspace) -> usize {
    w.json(&["snapshots"]).as_array().unwrap().len()
}

#[test]
fn backup_restore_selective_overwrite_and_dedup() {
    if !common::services("postgres backup_restore_selective_overwrite_and_dedup") {
        return;
    }
    let db = unique("rt");
    let (copy, part) = (format!("{db}_copy"), format!("{db}_part"));
    let _cleanup = Dbs(vec![db.clone(), copy.clone(), part.clone()]);
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    psql(&db, SEED);
    let w = common::Workspace::new(&config(&db));

    // First backup: manifest counts are exact, inspect agrees.
    let first = w.json(&["backup", "--source", "pg"]);
    let s1 = first["snapshot"].as_str().unwrap().to_string();
    let m1 = w.manifest("pg");
    assert_eq!(
        tables(&m1, &db),
        json!({ "app.tags": 50, "public.items": 3000, "public.notes": 4 })
    );
    assert_eq!(m1["format"], "plain");
    assert!(
        m1["server_version"]
            .as_str()
            .unwrap()
            .starts_with(char::is_numeric)
    );
    assert_eq!(m1["databases"][&db]["stream"], format!("{db}.sql"));
    assert_eq!(m1["globals"], "globals.sql");
    let live = w.json(&["inspect", "--source", "pg"]);
    assert_eq!(tables(&live, &db), tables(&m1, &db));

    // Counts come from the dump itself: a table whose data is left out is
    // not in the manifest, and the snapshot cross-check agrees with the rest.
    w.json(&["backup", "--source", "pg_checked"]);
    assert_eq!(
        tables(&w.manifest("pg_checked"), &db),
        json!({ "public.items": 3000, "public.notes": 4 })
    );

    // Unchanged database: the second snapshot adds little.
    let second = w.json(&["backup", "--source", "pg"]);
    let (added, read) = (
        second["summary"]["bytes_added"].as_u64().unwrap(),
        second["summary"]["bytes_read"].as_u64().unwrap(),
    );
    eprintln!("unchanged second backup added {added} of {read} bytes read");
    assert!(read > 200_000, "dump unexpectedly small: {read}");
    assert!(
        added * 10 < read,
        "unchanged backup added {added} of {read} bytes"
    );

    // Change the data and back up again.
    let before_items = digest(&db, "items");
    let before_notes = digest(&db, "notes");
    psql(
        &db,
        "UPDATE items SET name = 'changed' WHERE id = 7; DELETE FROM notes WHERE id = 4; \
         INSERT INTO items (name) VALUES ('added later')",
    );
    w.json(&["backup", "--source", "pg"]);
    assert_eq!(
        w.manifest("pg")["databases"][&db]["tables"]["public.items"],
        3001
    );

    // The first snapshot restored into a fresh name: its data, not the change.
    let r = w.json(&["restore", &s1, "--source", "pg", "--into", &copy]);
    assert_eq!(
        r["report"]["counts"][&copy],
        tables(&m1, &db),
        "restore report: {r}"
    );
    assert_eq!(digest(&copy, "items"), before_items);
    assert_eq!(digest(&copy, "notes"), before_notes);
    assert_eq!(
        psql(&copy, "SELECT count(*) FROM items WHERE name = 'changed'"),
        "0"
    );
    assert_eq!(psql(&copy, "SELECT count(*) FROM cheap"), "7");
    // Sequences come back where they were: the next id follows the old maximum.
    assert_eq!(
        psql(&copy, "INSERT INTO items (name) VALUES ('x') RETURNING id"),
        "3001"
    );

    // Selective restore: only the chosen table (with its sequence and index).
    let r = w.json(&[
        "restore", &s1, "--source", "pg", "--into", &part, "--only", "items",
    ]);
    assert_eq!(
        r["report"]["counts"][&part],
        json!({ "public.items": 3000 })
    );
    assert_eq!(
        psql(
            &part,
            "SELECT string_agg(table_schema || '.' || table_name, ',') FROM information_schema.tables WHERE table_schema IN ('public', 'app')"
        ),
        "public.items"
    );
    assert_eq!(
        psql(
            &part,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'items_name_idx'"
        ),
        "1"
    );
    assert_eq!(digest(&part, "items"), before_items);

    // Overwriting a non-empty database: refused without --yes, dry run is inert.
    psql(&copy, "DELETE FROM notes");
    let out = w
        .salvor()
        .args(["restore", &s1, "--source", "pg", "--into", &copy])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--yes"), "{err}");
    let dry = w.json(&[
        "restore",
        &s1,
        "--source",
        "pg",
        "--into",
        &copy,
        "--yes",
        "--dry-run",
    ]);
    assert_eq!(dry["dry_run"], true);
    assert!(
        dry["report"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().contains("then swap it in")),
        "{dry}"
    );
    assert_eq!(psql(&copy, "SELECT count(*) FROM notes"), "0");
    assert_eq!(psql(&copy, "SELECT count(*) FROM items"), "3001");
    w.json(&["restore", &s1, "--source", "pg", "--into", &copy, "--yes"]);
    assert_eq!(psql(&copy, "SELECT count(*) FROM notes"), "4");
    assert_eq!(digest(&copy, "items"), before_items);

    // Selective restore into a live database replaces just that table.
    psql(&db, "DELETE FROM notes");
    let out = w
        .salvor()
        .args(["restore", &s1, "--source", "pg", "--only", "notes"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "overwrote notes without --yes");
    w.json(&["restore", &s1, "--source", "pg", "--only", "notes", "--yes"]);

    // Replacing a table others depend on is refused, naming what CASCADE
    // would take with it for good (the hardening issue: it used to drop a
    // foreign key and a view and never recreate them)...
    let out = w
        .salvor()
        .args(["restore", &s1, "--source", "pg", "--only", "items", "--yes"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("view cheap")
            && err.contains("on table app.tags")
            && err.contains("--drop-dependents"),
        "{err}"
    );
    assert_eq!(psql(&db, "SELECT count(*) FROM items"), "3001");
    // ...unless accepted, which the dry run then describes.
    let dry = w.json(&[
        "restore",
        &s1,
        "--source",
        "pg",
        "--only",
        "items",
        "--yes",
        "--drop-dependents",
        "--dry-run",
    ]);
    let drop = dry["report"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.starts_with("replace table(s) public.items"))
        .unwrap_or_else(|| panic!("no replace action: {dry}"))
        .to_string();
    assert!(drop.contains("CASCADE also drops"), "{drop}");
    assert!(drop.contains("view cheap"), "{drop}");
    assert!(drop.contains("on table app.tags"), "{drop}");
    assert_eq!(digest(&db, "notes"), before_notes);
    assert_eq!(psql(&db, "SELECT count(*) FROM items"), "3001");
}

#[test]
fn failures_fail_the_backup_and_record_no_snapshot() {
    if !common::services("postgres failures_fail_the_backup_and_record_no_snapshot") {
        return;
    }
    let db = unique("fail");
    let _cleanup = Dbs(vec![db.clone()]);
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    psql(&db, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
    let w = common::Workspace::new(&config(&db));
    let password = common::var("SALVOR_TEST_PG_PASSWORD");
    let wrong = "pgt-Wrong-Secret-4711";

    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = w
            .salvor()
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };

    let (ok, text) = run(&["backup", "--source", "pg_down"], &[]);
    assert!(
        !ok && text.contains("127.0.0.1") && text.contains("port 1"),
        "{text}"
    );

    let (ok, text) = run(
        &["backup", "--source", "pg_badpw"],
        &[("PGT_WRONG_PASSWORD", wrong)],
    );
    assert!(
        !ok && text.contains("password authentication failed"),
        "{text}"
    );
    assert!(!text.contains(wrong) && !text.contains(&password), "{text}");

    let (ok, text) = run(&["backup", "--source", "pg_badpw"], &[]);
    assert!(
        !ok && text.contains("PGT_WRONG_PASSWORD is not set"),
        "{text}"
    );

    let empty = tempfile::tempdir().unwrap();
    let path = empty.path().to_str().unwrap();
    let (ok, text) = run(&["backup", "--source", "pg"], &[("PATH", path)]);
    assert!(!ok && text.contains("is not installed"), "{text}");

    // A table locked elsewhere fails the backup once lock_wait_timeout passes.
    let locker = TableLock::take(&db, "t", "pgt_locker");
    let locked = format!(
        "{}\n[source.pg_locked]\ntype = \"postgres\"\nhost = \"{}\"\nport = {}\nuser = \"{}\"\n\
         password = {{ env = \"SALVOR_TEST_PG_PASSWORD\" }}\ndatabases = [\"{db}\"]\nglobals = false\n\
         lock_wait_timeout = \"1s\"\n",
        config(&db),
        common::var("SALVOR_TEST_PG_HOST"),
        common::var("SALVOR_TEST_PG_PORT"),
        common::var("SALVOR_TEST_PG_USER"),
    );
    std::fs::write(w.config(), locked).unwrap();
    let (ok, text) = run(&["backup", "--source", "pg_locked"], &[]);
    drop(locker);
    assert!(
        !ok && text.contains("pg_dump") && text.contains("lock"),
        "{text}"
    );

    assert_eq!(snapshot_count(&w), 0, "a failed backup recorded a snapshot");
    // The same workspace still backs up fine.
    w.json(&["backup", "--source", "pg"]);
    assert_eq!(snapshot_count(&w), 1);
}

/// An ACCESS EXCLUSIVE lock on a table, held by another session (named
/// `app`) until dropped.
struct TableLock {
    db: String,
    app: String,
    psql: std::process::Child,
}

impl TableLock {
    fn take(db: &str, table: &str, app: &str) -> Self {
        let mut session = std::process::Command::new("psql")
            .args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=1"])
            .env("PGHOST", common::var("SALVOR_TEST_PG_HOST"))
            .env("PGPORT", common::var("SALVOR_TEST_PG_PORT"))
            .env("PGUSER", common::var("SALVOR_TEST_PG_USER"))
            .env("PGPASSWORD", common::var("SALVOR_TEST_PG_PASSWORD"))
            .env("PGDATABASE", db)
            .env("PGAPPNAME", app)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            // It is terminated on drop: its "terminating connection" is noise.
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let stdin = session.stdin.as_mut().unwrap();
            writeln!(
                stdin,
                "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);"
            )
            .unwrap();
        }
        let held = format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = '{app}' AND l.mode = 'AccessExclusiveLock' AND l.granted"
        );
        assert!(
            common::world::wait_for(std::time::Duration::from_secs(10), || psql(db, &held)
                != "0"),
            "the lock on {table} was not taken"
        );
        Self {
            db: db.into(),
            app: app.into(),
            psql: session,
        }
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            psql(
                &self.db,
                &format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{}'",
                    self.app
                ),
            )
        });
        let _ = self.psql.kill();
        let _ = self.psql.wait();
    }
}

/// Sessions of `app` in `db`, as `psql` counts them.
fn sessions(db: &str, app: &str, extra: &str) -> String {
    psql(
        db,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
             AND application_name = '{app}' {extra}"
        ),
    )
}

#[test]
fn sigterm_while_pg_dump_waits_on_a_lock_stops_the_dump_and_records_nothing() {
    if !common::services("postgres sigterm_while_pg_dump_waits_on_a_lock") {
        return;
    }
    let db = unique("sig");
    let _cleanup = Dbs(vec![db.clone()]);
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    psql(&db, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
    let w = common::Workspace::new(&config(&db));
    let locker = TableLock::take(&db, "t", "pgt_sig_locker");
    // SIGTERM to salvor alone (what Kubernetes sends a pod's main
    // process): pg_dump, waiting on the lock, sends nothing and gets no
    // signal of its own; salvor must stop it.
    let child = w.spawnable(&["backup", "--source", "pg"]).spawn().unwrap();
    // Salvor's sessions are named `salvor`; pg_dump's first statement on
    // a table is its LOCK TABLE ... IN ACCESS SHARE MODE.
    let waiting = || {
        sessions(
            &db,
            "salvor",
            "AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'",
        ) != "0"
    };
    assert!(
        common::world::wait_for(std::time::Duration::from_secs(30), waiting),
        "pg_dump never waited on the lock"
    );
    let out = common::world::signal_and_wait(child, libc::SIGTERM);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(text.contains("interrupted"), "{text}");
    assert!(
        common::world::wait_for(std::time::Duration::from_secs(10), || {
            sessions(&db, "salvor", "") == "0"
        }),
        "pg_dump (or another session of salvor's) is still running"
    );
    assert_eq!(
        snapshot_count(&w),
        0,
        "an interrupted backup recorded a snapshot"
    );
    assert!(
        !common::world::has_lock(&w.repo()),
        "the repository lock was left"
    );
    drop(locker);
    w.json(&["backup", "--source", "pg"]);
    assert_eq!(snapshot_count(&w), 1);
}

/// A workspace whose source `pg_su` dumps `db` as the superuser (plus
/// `extra` TOML), and the id of its first backup.
fn superuser_backup(db: &str, extra: &str) -> (common::Workspace, String) {
    let config = format!(
        "[source.pg_su]\ntype = \"postgres\"\nhost = \"{}\"\nport = {}\nuser = \"{}\"\n\
         password = {{ env = \"SALVOR_TEST_PG_SUPERUSER_PASSWORD\" }}\ndatabases = [\"{db}\"]\n{extra}",
        common::var("SALVOR_TEST_PG_HOST"),
        common::var("SALVOR_TEST_PG_PORT"),
        common::var("SALVOR_TEST_PG_SUPERUSER"),
    );
    let w = common::Workspace::new(&config);
    let snap = w.json(&["backup", "--source", "pg_su"])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    (w, snap)
}

#[test]
fn globals_restore_recreates_missing_roles_and_keeps_existing_ones() {
    if !common::services("postgres globals_restore_recreates_missing_roles_and_keeps_existing_ones")
    {
        return;
    }
    let su = |sql: &str| su_in("postgres", sql);
    let role = unique("role");
    let role_exists = || {
        su(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"
        ))
    };
    let db = unique("gl");
    let _cleanup = Dbs(vec![db.clone()]);
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    su(&format!(
        "CREATE ROLE \"{role}\" NOLOGIN CONNECTION LIMIT 3"
    ));
    let (w, snap) = superuser_backup(&db, "");
    su(&format!("DROP ROLE \"{role}\""));
    assert_eq!(role_exists(), "0");

    // A full restore leaves roles alone unless asked (the database is new).
    // The copy belongs to the superuser that restored it, who drops it at the end.
    let copy = format!("{db}_copy");
    let full = w.json(&["restore", &snap, "--source", "pg_su", "--into", &copy]);
    assert!(full.to_string().contains("leave globals.sql"), "{full}");
    assert_eq!(role_exists(), "0");

    let dry = w.json(&[
        "restore",
        &snap,
        "--source",
        "pg_su",
        "--only",
        "globals",
        "--dry-run",
    ]);
    assert!(dry.to_string().contains("apply globals.sql"), "{dry}");
    assert_eq!(role_exists(), "0");

    let done = w.json(&[
        "restore", &snap, "--source", "pg_su", "--only", "globals", "--yes",
    ]);
    assert_eq!(role_exists(), "1", "{done}");
    assert_eq!(
        su(&format!(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = '{role}'"
        )),
        "3"
    );
    // The roles that were there (the superuser, the test role) were kept.
    assert!(done.to_string().contains("already existed"), "{done}");
    su(&format!("DROP ROLE \"{role}\""));
    su(&format!("DROP DATABASE \"{copy}\" WITH (FORCE)"));
}

/// The hardening issue, items 22 and 23: a restored database got a new owner,
/// and a restore that failed (a role missing) left an empty database behind.
#[test]
fn restore_keeps_the_owner_and_a_failed_restore_leaves_the_target_as_it_was() {
    if !common::services(
        "postgres restore_keeps_the_owner_and_a_failed_restore_leaves_the_target_as_it_was",
    ) {
        return;
    }
    let su = |sql: &str| su_in("postgres", sql);
    let owner = unique("owner");
    let db = unique("own");
    let copy = format!("{db}_copy");
    let fresh = format!("{db}_fresh");
    let _cleanup = Dbs(vec![db.clone(), copy.clone(), fresh.clone()]);
    su(&format!("CREATE ROLE \"{owner}\" NOLOGIN"));
    su(&format!("CREATE DATABASE \"{db}\" OWNER \"{owner}\""));
    su_in(
        &db,
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10);
             ALTER TABLE t OWNER TO \"{owner}\""
        ),
    );
    let (w, snap) = superuser_backup(&db, "globals = false\n");
    let db_owner = |name: &str| {
        su(&format!(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{name}'"
        ))
    };

    // The copy is owned by the role that owned the original, and so is its table.
    w.json(&["restore", &snap, "--source", "pg_su", "--into", &copy]);
    assert_eq!(db_owner(&copy), owner);
    assert_eq!(
        su_in(
            &copy,
            "SELECT tableowner FROM pg_tables WHERE tablename = 't'"
        ),
        owner
    );
    su(&format!("DROP DATABASE \"{copy}\" WITH (FORCE)"));

    // The owner role goes away and the live database changes; a restore over
    // it then fails (the dump's ALTER ... OWNER TO names the missing role).
    su_in(&db, "INSERT INTO t SELECT generate_series(11, 15)");
    let me = common::var("SALVOR_TEST_PG_SUPERUSER");
    su_in(&db, &format!("REASSIGN OWNED BY \"{owner}\" TO \"{me}\""));
    su(&format!("ALTER DATABASE \"{db}\" OWNER TO \"{me}\""));
    su(&format!("DROP ROLE \"{owner}\""));
    let leftovers = || {
        su(&format!(
            "SELECT count(*) FROM pg_database WHERE datname LIKE '{}%' AND datname <> '{db}'",
            db.replace('_', "\\_")
        ))
    };
    let out = w
        .salvor()
        .args(["restore", &snap, "--source", "pg_su", "--yes"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the restore should fail: {err}");
    assert!(
        err.contains(&owner),
        "the error names the missing role: {err}"
    );
    assert!(
        err.contains(&format!("database {db} was left as it was")),
        "{err}"
    );
    assert_eq!(
        su_in(&db, "SELECT count(*) FROM t"),
        "15",
        "the original is intact"
    );
    assert_eq!(leftovers(), "0", "no scratch database is left");

    // Into a new name: what the restore created is dropped again.
    let out = w
        .salvor()
        .args(["restore", &snap, "--source", "pg_su", "--into", &fresh])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("nothing is left"), "{err}");
    assert_eq!(db_owner(&fresh), "", "{fresh} was dropped");
    assert_eq!(leftovers(), "0");
}
