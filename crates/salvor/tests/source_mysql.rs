//! The `mysql` source against a real MariaDB server (scripts/services.sh).
//!
//! Every test works in its own `myt_*` databases and drops them at the end.

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
    format!("myt_{tag}_{}_{nanos}", std::process::id())
}

/// Runs SQL as the test user (in `db` unless empty); returns trimmed output.
fn mysql(db: &str, sql: &str) -> String {
    let mut c = Command::new("mysql");
    c.arg(format!("--host={}", common::var("SALVOR_TEST_MYSQL_HOST")))
        .arg(format!("--port={}", common::var("SALVOR_TEST_MYSQL_PORT")))
        .arg(format!("--user={}", common::var("SALVOR_TEST_MYSQL_USER")))
        .args([
            "--batch",
            "--skip-column-names",
            "--default-character-set=utf8mb4",
        ])
        .env("MYSQL_PWD", common::var("SALVOR_TEST_MYSQL_PASSWORD"));
    if !db.is_empty() {
        c.arg(format!("--database={db}"));
    }
    let out = c
        .args([
            "-e",
            &format!("SET SESSION group_concat_max_len = 100000000; {sql}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mysql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Drops the listed databases when the test ends, even on failure.
struct Dbs(Vec<String>);

impl Drop for Dbs {
    fn drop(&mut self) {
        for db in &self.0 {
            let _ =
                std::panic::catch_unwind(|| mysql("", &format!("DROP DATABASE IF EXISTS `{db}`")));
        }
    }
}

const SEED: &str = "
SET SESSION max_recursive_iterations = 10000;
CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(250) NOT NULL, price DECIMAL(10,2));
INSERT INTO items (name, price)
  WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 3000)
  SELECT CONCAT('Ærøskøbing ünïcødé 🚀 item (', i, ')', REPEAT(' padding', 8)), i * 1.25 FROM s;
CREATE TABLE notes (id INT PRIMARY KEY, body TEXT, data BLOB);
INSERT INTO notes VALUES (1, 'tab\tand newline\ninside; (parens)', 0x00FF10),
  (2, 'back\\\\slash and it''s quoted', NULL), (3, '日本語のテキスト', ''), (4, NULL, NULL);
CREATE TABLE tags (id INT AUTO_INCREMENT PRIMARY KEY, item_id INT, tag VARCHAR(50),
  FOREIGN KEY (item_id) REFERENCES items(id));
INSERT INTO tags (item_id, tag) SELECT id, CONCAT('tag-', id) FROM items WHERE id <= 50;
CREATE TRIGGER notes_upper BEFORE INSERT ON notes FOR EACH ROW SET NEW.body = NEW.body;
CREATE VIEW cheap AS SELECT * FROM items WHERE price < 10;
";

/// A digest of a table's contents.
fn digest(db: &str, table: &str) -> String {
    let cols = mysql(
        db,
        &format!(
            "SELECT GROUP_CONCAT(CONCAT('QUOTE(HEX(`', COLUMN_NAME, '`))') ORDER BY ORDINAL_POSITION) \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME = '{table}'"
        ),
    );
    mysql(
        db,
        &format!(
            "SELECT MD5(COALESCE(GROUP_CONCAT(CONCAT_WS('|', {cols}) ORDER BY id SEPARATOR '\\n'), '')) FROM `{table}`"
        ),
    )
}

fn config(db: &str) -> String {
    let (host, port, user) = (
        common::var("SALVOR_TEST_MYSQL_HOST"),
        common::var("SALVOR_TEST_MYSQL_PORT"),
        common::var("SALVOR_TEST_MYSQL_USER"),
    );
    format!(
        r#"
[source.my]
type = "mysql"
host = "{host}"
port = {port}
user = "{user}"
password = {{ env = "SALVOR_TEST_MYSQL_PASSWORD" }}
databases = ["{db}"]

[source.my_down]
type = "mysql"
host = "127.0.0.1"
port = 1
user = "{user}"
password = {{ env = "SALVOR_TEST_MYSQL_PASSWORD" }}
databases = ["{db}"]

[source.my_badpw]
type = "mysql"
host = "{host}"
port = {port}
user = "{user}"
password = {{ env = "MYT_WRONG_PASSWORD" }}
databases = ["{db}"]
"#
    )
}

fn tables(m: &Value, db: &str) -> Value {
    m["databases"][db]["tables"].clone()
}

#[test]
fn backup_restore_selective_overwrite_and_dedup() {
    if !common::services("mysql backup_restore_selective_overwrite_and_dedup") {
        return;
    }
    let db = unique("rt");
    let (copy, part) = (format!("{db}_copy"), format!("{db}_part"));
    let _cleanup = Dbs(vec![db.clone(), copy.clone(), part.clone()]);
    mysql("", &format!("CREATE DATABASE `{db}` CHARACTER SET utf8mb4"));
    mysql(&db, SEED);
    let w = common::Workspace::new(&config(&db));

    // First backup: manifest counts are exact, inspect agrees.
    let first = w.json(&["backup", "--source", "my"]);
    let s1 = first["snapshot"].as_str().unwrap().to_string();
    let m1 = w.manifest("my");
    assert_eq!(
        tables(&m1, &db),
        json!({ "items": 3000, "notes": 4, "tags": 50 })
    );
    assert!(
        m1["server_version"].as_str().unwrap().contains("MariaDB"),
        "{m1}"
    );
    assert_eq!(m1["databases"][&db]["charset"], "utf8mb4");
    let live = w.json(&["inspect", "--source", "my"]);
    assert_eq!(tables(&live, &db), tables(&m1, &db));

    // Unchanged database: the second snapshot adds (almost) nothing.
    let second = w.json(&["backup", "--source", "my"]);
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

    let before: Vec<String> = ["items", "notes", "tags"]
        .iter()
        .map(|t| digest(&db, t))
        .collect();
    mysql(
        &db,
        "UPDATE items SET name = 'changed' WHERE id = 7; DELETE FROM notes WHERE id = 4; \
         INSERT INTO items (name) VALUES ('added later')",
    );
    w.json(&["backup", "--source", "my"]);
    assert_eq!(w.manifest("my")["databases"][&db]["tables"]["items"], 3001);

    // The first snapshot restored into a fresh name: its data, not the change.
    let r = w.json(&["restore", &s1, "--source", "my", "--into", &copy]);
    assert_eq!(r["report"]["counts"][&copy], tables(&m1, &db), "{r}");
    let after: Vec<String> = ["items", "notes", "tags"]
        .iter()
        .map(|t| digest(&copy, t))
        .collect();
    assert_eq!(after, before);
    assert_eq!(
        mysql(&copy, "SELECT COUNT(*) FROM items WHERE name = 'changed'"),
        "0"
    );
    assert_eq!(mysql(&copy, "SELECT COUNT(*) FROM cheap"), "7");
    assert_eq!(
        mysql(
            &copy,
            &format!(
                "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{copy}'"
            )
        ),
        "1"
    );

    // Selective restore: only the chosen table.
    let r = w.json(&[
        "restore", &s1, "--source", "my", "--into", &part, "--only", "notes",
    ]);
    assert_eq!(r["report"]["counts"][&part], json!({ "notes": 4 }));
    assert_eq!(mysql(&part, "SHOW TABLES"), "notes");
    assert_eq!(digest(&part, "notes"), before[1]);

    // Overwriting a non-empty database: refused without --yes, dry run is inert.
    mysql(&copy, "DELETE FROM notes");
    let out = w
        .salvor()
        .args(["restore", &s1, "--source", "my", "--into", &copy])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--yes"), "{err}");
    let dry = w.json(&[
        "restore",
        &s1,
        "--source",
        "my",
        "--into",
        &copy,
        "--yes",
        "--dry-run",
    ]);
    assert!(
        dry["report"]["actions"][0]
            .as_str()
            .unwrap()
            .contains("drop and recreate"),
        "{dry}"
    );
    assert_eq!(mysql(&copy, "SELECT COUNT(*) FROM notes"), "0");
    w.json(&["restore", &s1, "--source", "my", "--into", &copy, "--yes"]);
    assert_eq!(digest(&copy, "notes"), before[1]);

    // Selective restore into the live database replaces just that table.
    mysql(&db, "DELETE FROM notes");
    let out = w
        .salvor()
        .args(["restore", &s1, "--source", "my", "--only", "notes"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "overwrote notes without --yes");
    w.json(&[
        "restore",
        &s1,
        "--source",
        "my",
        "--only",
        &format!("{db}.notes"),
        "--yes",
    ]);
    assert_eq!(digest(&db, "notes"), before[1]);
    assert_eq!(mysql(&db, "SELECT COUNT(*) FROM items"), "3001");
}

#[test]
fn failures_fail_the_backup_and_record_no_snapshot() {
    if !common::services("mysql failures_fail_the_backup_and_record_no_snapshot") {
        return;
    }
    let db = unique("fail");
    let _cleanup = Dbs(vec![db.clone()]);
    mysql("", &format!("CREATE DATABASE `{db}`"));
    mysql(
        &db,
        "CREATE TABLE t (id INT); INSERT INTO t VALUES (1), (2)",
    );
    let w = common::Workspace::new(&config(&db));
    let password = common::var("SALVOR_TEST_MYSQL_PASSWORD");
    let wrong = "myt-Wrong-Secret-4711";
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
    let snapshots = || w.json(&["snapshots"]).as_array().unwrap().len();

    let (ok, text) = run(&["backup", "--source", "my_down"], &[]);
    assert!(!ok && text.contains("Can't connect"), "{text}");

    let (ok, text) = run(
        &["backup", "--source", "my_badpw"],
        &[("MYT_WRONG_PASSWORD", wrong)],
    );
    assert!(!ok && text.contains("Access denied"), "{text}");
    assert!(!text.contains(wrong) && !text.contains(&password), "{text}");

    // No client or dump tool at all.
    let empty = tempfile::tempdir().unwrap();
    let (ok, text) = run(
        &["backup", "--source", "my"],
        &[("PATH", empty.path().to_str().unwrap())],
    );
    assert!(!ok && text.contains("is not installed"), "{text}");

    // A client but no dump tool: the dump tool is named.
    let bin = tempfile::tempdir().unwrap();
    let client = which("mysql");
    std::os::unix::fs::symlink(&client, bin.path().join("mysql")).unwrap();
    let path = bin.path().to_str().unwrap().to_string();
    let (ok, text) = run(&["backup", "--source", "my"], &[("PATH", &path)]);
    assert!(!ok && text.contains("mysqldump is not installed"), "{text}");
    assert_eq!(snapshots(), 0, "a failed backup recorded a snapshot");

    // Only mariadb-dump: used instead of mysqldump.
    std::os::unix::fs::symlink(which("mariadb-dump"), bin.path().join("mariadb-dump")).unwrap();
    let (ok, text) = run(&["backup", "--source", "my"], &[("PATH", &path)]);
    assert!(ok, "{text}");
    assert_eq!(w.manifest("my")["tool"], "mariadb-dump");
    assert_eq!(tables(&w.manifest("my"), &db), json!({ "t": 2 }));
    assert_eq!(snapshots(), 1);
}

/// The absolute path of a program on PATH.
fn which(program: &str) -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH"))
}

/// A user limited to the `myt_*` databases: no SUPER (so it may not create a
/// trigger or view whose definer is another user) and no SELECT on
/// `mysql.proc`. Dropped when the test ends.
struct LimitedUser(String);

impl LimitedUser {
    fn new(password: &str) -> Self {
        let name = format!("myt_l{}", std::process::id());
        mysql("", &format!("DROP USER IF EXISTS '{name}'@'%'"));
        mysql(
            "",
            &format!(
                "CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'; \
                 GRANT ALL PRIVILEGES ON `myt\\_%`.* TO '{name}'@'%'"
            ),
        );
        Self(name)
    }
}

impl Drop for LimitedUser {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            mysql("", &format!("DROP USER IF EXISTS '{}'@'%'", self.0))
        });
    }
}

/// The hardening issue, items 23 and 26: a restore that failed on a
/// trigger's definer left 1 of 6 tables, and a backup user without SELECT on
/// mysql.proc could not back up at all.
#[test]
fn failed_replace_leaves_the_target_as_it_was_and_routines_without_privilege_are_skipped() {
    if !common::services(
        "mysql failed_replace_leaves_the_target_as_it_was_and_routines_without_privilege_are_skipped",
    ) {
        return;
    }
    let db = unique("def");
    let fresh = format!("{db}_fresh");
    let _cleanup = Dbs(vec![db.clone(), fresh.clone()]);
    mysql("", &format!("CREATE DATABASE `{db}` CHARACTER SET utf8mb4"));
    mysql(&db, SEED);
    mysql(&db, "CREATE PROCEDURE hello() SELECT 'hello'");
    let password = format!("limited-{}", std::process::id());
    let limited = LimitedUser::new(&password);
    let config = format!(
        "{}\n[source.my_limited]\ntype = \"mysql\"\nhost = \"{}\"\nport = {}\nuser = \"{}\"\n\
         password = {{ env = \"MYT_LIMITED_PASSWORD\" }}\ndatabases = [\"{db}\"]\n",
        config(&db),
        common::var("SALVOR_TEST_MYSQL_HOST"),
        common::var("SALVOR_TEST_MYSQL_PORT"),
        limited.0,
    );
    let w = common::Workspace::new(&config);
    let json = |args: &[&str]| {
        let out = w
            .salvor()
            .env("MYT_LIMITED_PASSWORD", &password)
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        (out.status.success(), out)
    };

    // The full user's backup holds the procedure.
    let (ok, out) = json(&["backup", "--source", "my"]);
    assert!(ok, "{}", String::from_utf8_lossy(&out.stderr));
    let snap: Value = serde_json::from_slice(&out.stdout).unwrap();
    let snap = snap["snapshot"].as_str().unwrap().to_string();
    assert_eq!(w.manifest("my")["routines"], json!(true));

    // The limited user backs up everything it may read, and says what not.
    let (ok, out) = json(&["backup", "--source", "my_limited"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(ok, "{err}");
    assert!(
        err.contains("mysql.proc") && err.contains("GRANT SELECT"),
        "{err}"
    );
    let routines = w.manifest("my_limited")["routines"].clone();
    assert!(
        routines.as_str().is_some_and(|r| r.starts_with("skipped")),
        "{routines}"
    );
    assert_eq!(tables(&w.manifest("my_limited"), &db)["items"], 3000);

    // Restored over the live database by the limited user, the dump's
    // definers (the full user) are refused: the trial copy fails, the target
    // is untouched, and no trial database is left.
    mysql(&db, "DELETE FROM tags WHERE id > 10");
    let before = digest(&db, "tags");
    let trial_dbs = || {
        mysql(
            "",
            &format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '{db}\\_salvor\\_trial%'"
            ),
        )
    };
    let (ok, out) = json(&[
        "restore",
        &snap,
        "--source",
        "my",
        "--to",
        "my_limited",
        "--yes",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!ok, "the restore should fail: {err}");
    assert!(
        err.contains(&format!("database {db} was left as it was")),
        "{err}"
    );
    assert!(
        err.to_lowercase().contains("super"),
        "names the privilege: {err}"
    );
    assert_eq!(digest(&db, "tags"), before);
    assert_eq!(mysql(&db, "SELECT COUNT(*) FROM tags"), "10");
    assert_eq!(trial_dbs(), "0");

    // Into a new database: what it created is dropped again.
    let (ok, out) = json(&[
        "restore",
        &snap,
        "--source",
        "my",
        "--to",
        "my_limited",
        "--into",
        &fresh,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!ok, "{err}");
    assert!(err.contains("nothing is left"), "{err}");
    assert_eq!(
        mysql(
            "",
            &format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{fresh}'"
            )
        ),
        "0"
    );

    // The full user restores it, procedure and all.
    let (ok, out) = json(&["restore", &snap, "--source", "my", "--yes"]);
    assert!(ok, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mysql(&db, "SELECT COUNT(*) FROM tags"), "50");
    assert_eq!(mysql(&db, "CALL hello()"), "hello");
}
