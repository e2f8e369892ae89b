//! The `redis` source against the real Redis of scripts/services.sh (which has
//! `requirepass`). Restore targets are scratch `redis-server`s started by the
//! tests themselves (own loopback port below 32768, own temp dir, own
//! password), killed by pid at the end.
//!
//! The seeded data lives in databases 5 and 6 of the shared server, under a
//! per-test key prefix; the tests assert counts of those databases only.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Workspace, var};

/// A `redis-server` started by a test; killed (by pid) on drop.
struct Server {
    child: Child,
    port: u16,
    password: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(port: u16, password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--requirepass", password])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let s = Self {
            child,
            port,
            password: password.into(),
            _dir: dir,
        };
        let start = Instant::now();
        while cli(&s.endpoint(), 0, &["PING"]) != "PONG" {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "scratch redis on {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn endpoint(&self) -> (String, u16, String) {
        ("127.0.0.1".into(), self.port, self.password.clone())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shared server from scripts/services.sh.
fn shared() -> (String, u16, String) {
    (
        var("SALVOR_TEST_REDIS_HOST"),
        var("SALVOR_TEST_REDIS_PORT").parse().unwrap(),
        var("SALVOR_TEST_REDIS_PASSWORD"),
    )
}

/// Runs one redis-cli command (password through the environment) and returns its trimmed output.
fn cli(ep: &(String, u16, String), db: u32, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .env("REDISCLI_AUTH", &ep.2)
        .args(["-h", &ep.0, "-p", &ep.1.to_string(), "-n", &db.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Feeds commands (one per line) to redis-cli.
fn pipe(ep: &(String, u16, String), db: u32, commands: &str) {
    use std::io::Write;
    let mut c = Command::new("redis-cli")
        .env("REDISCLI_AUTH", &ep.2)
        .args(["-h", &ep.0, "-p", &ep.1.to_string(), "-n", &db.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(commands.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success());
}

fn dbsize(ep: &(String, u16, String), db: u32) -> u64 {
    cli(ep, db, &["DBSIZE"]).parse().unwrap()
}

/// Removes the test's keys from the shared server.
fn clear(ep: &(String, u16, String), prefix: &str) {
    for db in [5, 6] {
        let keys = cli(ep, db, &["--scan", "--pattern", &format!("{prefix}*")]);
        let dels: String = keys.lines().map(|k| format!("DEL {k}\n")).collect();
        pipe(ep, db, &dels);
    }
}

fn keys_in(m: &serde_json::Value, db: &str) -> u64 {
    m["keyspace"][db]["keys"].as_u64().unwrap_or(0)
}

fn snapshot_count(w: &Workspace) -> usize {
    w.json(&["snapshots"]).as_array().unwrap().len()
}

fn config(name: &str, port: u16, password: &str, dir: &Path) -> String {
    let file = dir.join(format!("{name}.pw"));
    std::fs::write(&file, format!("{password}\n")).unwrap();
    format!(
        "[source.{name}]\ntype = \"redis\"\nport = {port}\npassword = {{ file = \"{}\" }}\ntimeout_secs = 10\n\n",
        file.display()
    )
}

#[test]
fn redis_backup_restore_roundtrip() {
    if !common::services("redis_backup_restore_roundtrip") {
        return;
    }
    let src = shared();
    let p = format!("salvor-rt-{}:", std::process::id());
    clear(&src, &p);
    let mut seed: String = (0..200)
        .map(|i| format!("SET {p}s:{i} value-{i}\n"))
        .collect();
    seed += &format!("HSET {p}h f1 v1 f2 v2\nRPUSH {p}l a b c\nSADD {p}set x y\n");
    seed += &format!("ZADD {p}z 1 one 2 two\nSET {p}ttl soon EX 3600\n");
    pipe(&src, 5, &seed);
    let db6: String = (0..10).map(|i| format!("SET {p}other:{i} {i}\n")).collect();
    pipe(&src, 6, &db6);
    let (n5, n6) = (dbsize(&src, 5), dbsize(&src, 6));

    let target = Server::start(16391, "target-secret");
    let tmp = tempfile::tempdir().unwrap();
    let mut toml = format!(
        "[source.cache]\ntype = \"redis\"\nhost = \"{}\"\nport = {}\npassword = {{ env = \"SALVOR_TEST_REDIS_PASSWORD\" }}\n\n",
        src.0, src.1
    );
    toml += &config("target", target.port, &target.password, tmp.path());
    let w = Workspace::new(&toml);

    let first = w.json(&["backup", "--source", "cache"]);
    let m1 = w.manifest("cache");
    assert_eq!(m1["type"], "redis");
    assert!(
        m1["redis_version"].as_str().unwrap().starts_with("7."),
        "{m1}"
    );
    assert_eq!(
        m1["transfer"], "diskless",
        "services.sh runs redis with diskless sync"
    );
    assert_eq!((keys_in(&m1, "db5"), keys_in(&m1, "db6")), (n5, n6));
    assert!(m1["bytes"].as_u64().unwrap() > 1000);
    assert_eq!(m1["rdb_version"].as_str().unwrap().len(), 4);

    // The stored RDB is a valid RDB file.
    let rdb = tmp.path().join("first.rdb");
    let dumped = w
        .salvor()
        .args([
            "dump",
            first["snapshot"].as_str().unwrap(),
            "cache/dump.rdb",
        ])
        .output()
        .unwrap();
    std::fs::write(&rdb, &dumped.stdout).unwrap();
    assert_eq!(dumped.stdout.len() as u64, m1["bytes"].as_u64().unwrap());
    let check = Command::new("redis-check-rdb").arg(&rdb).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // Change the data and back up again.
    let dels: String = (0..100).map(|i| format!("DEL {p}s:{i}\n")).collect();
    pipe(
        &src,
        5,
        &(dels + &format!("SET {p}new 1\nHSET {p}h f1 changed\n")),
    );
    w.json(&["backup", "--source", "cache"]);
    let m2 = w.manifest("cache");
    assert_eq!(keys_in(&m2, "db5"), n5 - 99);
    let live = w.json(&["inspect", "--source", "cache"]);
    assert_eq!(
        live["keyspace"]["db5"]["keys"],
        m2["keyspace"]["db5"]["keys"]
    );
    assert_eq!(live["keyspace"]["db6"], m2["keyspace"]["db6"]);
    assert_eq!(live["redis_version"], m2["redis_version"]);

    // Restore the FIRST snapshot into the fresh target.
    let snap1 = first["snapshot"].as_str().unwrap();
    let dry = w.json(&[
        "restore",
        snap1,
        "--source",
        "cache",
        "--to",
        "target",
        "--dry-run",
    ]);
    assert_eq!(
        dry["report"]["counts"]["db5"].as_u64(),
        Some(keys_in(&m1, "db5"))
    );
    assert_eq!(dbsize(&target.endpoint(), 5), 0, "a dry run must not write");
    let r = w.json(&["restore", snap1, "--source", "cache", "--to", "target"]);
    assert_eq!(r["report"]["counts"]["replaced"], 0);
    let t = target.endpoint();
    assert_eq!((dbsize(&t, 5), dbsize(&t, 6)), (n5, n6));
    let inspect = w.json(&["inspect", "--source", "target"]);
    assert_eq!(
        inspect["keyspace"]["db5"]["keys"],
        m1["keyspace"]["db5"]["keys"]
    );
    assert_eq!(
        inspect["keyspace"]["db6"]["keys"],
        m1["keyspace"]["db6"]["keys"]
    );
    assert_eq!(cli(&t, 5, &["GET", &format!("{p}s:7")]), "value-7");
    assert_eq!(cli(&t, 5, &["HGET", &format!("{p}h"), "f1"]), "v1");
    assert_eq!(
        cli(&t, 5, &["LRANGE", &format!("{p}l"), "0", "-1"]),
        "a\nb\nc"
    );
    assert_eq!(cli(&t, 5, &["SCARD", &format!("{p}set")]), "2");
    assert_eq!(cli(&t, 5, &["ZSCORE", &format!("{p}z"), "two"]), "2");
    let ttl: i64 = cli(&t, 5, &["TTL", &format!("{p}ttl")]).parse().unwrap();
    assert!((3000..=3600).contains(&ttl), "ttl kept: {ttl}");
    assert_eq!(cli(&t, 5, &["EXISTS", &format!("{p}new")]), "0");

    // Restoring over existing keys needs --yes, which replaces them.
    cli(&t, 5, &["SET", &format!("{p}s:7"), "local-change"]);
    let o = w
        .salvor()
        .args(["restore", snap1, "--source", "cache", "--to", "target"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("would overwrite") && err.contains("existing keys"),
        "{err}"
    );
    assert_eq!(cli(&t, 5, &["GET", &format!("{p}s:7")]), "local-change");
    let r = w.json(&[
        "restore", snap1, "--source", "cache", "--to", "target", "--yes",
    ]);
    assert!(r["report"]["counts"]["replaced"].as_u64().unwrap() >= n5);
    assert_eq!(cli(&t, 5, &["GET", &format!("{p}s:7")]), "value-7");

    // Selective restore by key prefix into another database.
    let only = format!("{p}s:1");
    let r = w.json(&[
        "restore", snap1, "--source", "cache", "--to", "target", "--only", &only, "--into", "9",
    ]);
    // s:1, s:10..s:19, s:100..s:199
    assert_eq!(r["report"]["counts"]["keys"], 111);
    assert_eq!(dbsize(&t, 9), 111);
    clear(&src, &p);
}

#[test]
fn redis_failures_are_clear_and_record_nothing() {
    if !common::services("redis_failures_are_clear_and_record_nothing") {
        return;
    }
    let (host, port, password) = shared();
    let tmp = tempfile::tempdir().unwrap();
    let mut toml = config("wrong", port, "not-the-password", tmp.path());
    toml += &config("down", 1, &password, tmp.path());
    toml += &format!("[source.nopass]\ntype = \"redis\"\nhost = \"{host}\"\nport = {port}\n");
    let w = Workspace::new(&toml);
    for (name, expected) in [
        ("wrong", "rejected the credentials"),
        ("down", "cannot connect to redis at 127.0.0.1:1"),
        ("nopass", "requires a password"),
    ] {
        let o = w
            .salvor()
            .args(["backup", "--source", name])
            .output()
            .unwrap();
        assert!(!o.status.success(), "{name} must fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(expected), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            !err.contains(&password) && !err.contains("not-the-password"),
            "secret leaked: {err}"
        );
    }
    assert_eq!(
        snapshot_count(&w),
        0,
        "a failed backup must not record a snapshot"
    );
}
