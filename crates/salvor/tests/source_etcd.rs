//! The `etcd` source against the real etcd of scripts/services.sh. Restore
//! targets are etcd servers started by the tests themselves (own loopback
//! ports below 32768, own temp data dirs), killed by pid at the end. Seeded
//! keys live under a per-test prefix.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Workspace, var};
use serde_json::{Value, json};

/// An etcd started by a test on a given data dir; killed (by pid) on drop.
struct Etcd {
    child: Child,
    endpoint: String,
}

impl Etcd {
    fn start(data: &Path, name: &str, client: u16, peer: u16) -> Self {
        let c = format!("http://127.0.0.1:{client}");
        let p = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args([
                "--name",
                name,
                "--listen-client-urls",
                &c,
                "--advertise-client-urls",
                &c,
            ])
            .args([
                "--listen-peer-urls",
                &p,
                "--initial-advertise-peer-urls",
                &p,
            ])
            .args(["--initial-cluster", &format!("{name}={p}")])
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd on PATH");
        let e = Self { child, endpoint: c };
        let start = Instant::now();
        while post(&e.endpoint, "maintenance/status", json!({})).is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "etcd on {client} did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        e
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post(endpoint: &str, path: &str, body: Value) -> Option<Value> {
    let r = reqwest::blocking::Client::new()
        .post(format!("{endpoint}/v3/{path}"))
        .timeout(Duration::from_secs(5))
        .json(&body)
        .send()
        .ok()?;
    r.status().is_success().then(|| r.json().ok())?
}

fn put(endpoint: &str, pairs: &[(String, String)]) {
    for batch in pairs.chunks(100) {
        let ops: Vec<Value> = batch
            .iter()
            .map(
                |(k, v)| json!({ "request_put": { "key": B64.encode(k), "value": B64.encode(v) } }),
            )
            .collect();
        post(endpoint, "kv/txn", json!({ "success": ops })).expect("put");
    }
}

fn delete_prefix(endpoint: &str, prefix: &str) {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    post(
        endpoint,
        "kv/deleterange",
        json!({ "key": B64.encode(prefix), "range_end": B64.encode(end) }),
    )
    .expect("delete");
}

/// Key/value pairs under `prefix`, sorted.
fn get_prefix(endpoint: &str, prefix: &str) -> Vec<(String, String)> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    let r = post(
        endpoint,
        "kv/range",
        json!({ "key": B64.encode(prefix), "range_end": B64.encode(end) }),
    )
    .unwrap();
    let text =
        |v: &Value| String::from_utf8(B64.decode(v.as_str().unwrap_or("")).unwrap()).unwrap();
    r["kvs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|kv| (text(&kv["key"]), text(&kv["value"])))
                .collect()
        })
        .unwrap_or_default()
}

fn total_keys(endpoint: &str) -> u64 {
    let r = post(
        endpoint,
        "kv/range",
        json!({ "key": "AA==", "range_end": "AA==", "count_only": true }),
    )
    .unwrap();
    r["count"].as_str().map_or(0, |c| c.parse().unwrap())
}

fn snapshot_count(w: &Workspace) -> usize {
    w.json(&["snapshots"]).as_array().unwrap().len()
}

fn pairs(p: &str, sub: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("{p}{sub}/{i:03}"), format!("{sub}-value-{i}")))
        .collect()
}

#[test]
fn etcd_backup_restore_roundtrip() {
    if !common::services("etcd_backup_restore_roundtrip") {
        return;
    }
    let src = var("SALVOR_TEST_ETCD_ENDPOINT");
    let p = format!("/salvor-rt-{}/", std::process::id());
    delete_prefix(&src, &p);
    let (a, b) = (pairs(&p, "a", 30), pairs(&p, "b", 20));
    put(&src, &[a.clone(), b.clone()].concat());

    let tmp = tempfile::tempdir().unwrap();
    let target = Etcd::start(&tmp.path().join("target"), "target", 16483, 16484);
    let w = Workspace::new(&format!(
        r#"
[source.kv]
type = "etcd"
endpoint = "{src}"
prefixes = ["{p}a/", "{p}b/"]
restore_peer_url = "http://127.0.0.1:16482"

[source.target]
type = "etcd"
endpoint = "{}"
"#,
        target.endpoint
    ));

    let first = w.json(&["backup", "--source", "kv"]);
    let m1 = w.manifest("kv");
    assert_eq!(m1["type"], "etcd");
    assert!(m1["etcd_version"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        m1["prefixes"],
        json!({ format!("{p}a/"): 30, format!("{p}b/"): 20 })
    );
    assert_eq!(m1["keys"].as_u64().unwrap(), total_keys(&src));

    // The stored stream is a valid snapshot at the recorded revision.
    let snap1 = first["snapshot"].as_str().unwrap();
    let file = tmp.path().join("first.db");
    let dumped = w
        .salvor()
        .args(["dump", snap1, "kv/snapshot.db"])
        .output()
        .unwrap();
    assert_eq!(dumped.stdout.len() as u64, m1["bytes"].as_u64().unwrap());
    std::fs::write(&file, &dumped.stdout).unwrap();
    let status = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["revision"], m1["revision"]);

    // Change, back up again; inspect equals the new manifest.
    delete_prefix(&src, &format!("{p}a/00"));
    put(&src, &[(format!("{p}c/x"), "new".into())]);
    w.json(&["backup", "--source", "kv"]);
    let m2 = w.manifest("kv");
    assert_eq!(m2["prefixes"][format!("{p}a/")], 20);
    let live = w.json(&["inspect", "--source", "kv"]);
    for k in ["revision", "keys", "prefixes", "etcd_version"] {
        assert_eq!(live[k], m2[k], "inspect differs in {k}");
    }

    // Full restore of the FIRST snapshot into a data dir, served by a fresh etcd.
    let dir = tmp.path().join("restored");
    let d = dir.to_str().unwrap();
    let r = w.json(&["restore", snap1, "--source", "kv", "--into", d]);
    assert_eq!(r["report"]["counts"]["revision"], m1["revision"]);
    {
        let restored = Etcd::start(&dir, "default", 16481, 16482);
        assert_eq!(get_prefix(&restored.endpoint, &format!("{p}a/")), a);
        assert_eq!(get_prefix(&restored.endpoint, &format!("{p}b/")), b);
        assert_eq!(total_keys(&restored.endpoint), m1["keys"].as_u64().unwrap());
        assert!(get_prefix(&restored.endpoint, &format!("{p}c/")).is_empty());
    }
    // A non-empty data dir is replaced only with --yes (and moved aside, not deleted).
    let o = w
        .salvor()
        .args(["restore", snap1, "--source", "kv", "--into", d])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("would overwrite etcd data directory"));
    w.json(&["restore", snap1, "--source", "kv", "--into", d, "--yes"]);
    let aside = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("restored.salvor-old-")
        })
        .count();
    assert_eq!(aside, 1);
    assert!(dir.join("member").is_dir());

    // Selective restore of one prefix into a live etcd (via a scratch etcd).
    let only = format!("{p}a/");
    let r = w.json(&[
        "restore", snap1, "--source", "kv", "--to", "target", "--only", &only,
    ]);
    assert_eq!(r["report"]["counts"]["keys"], 30);
    assert_eq!(get_prefix(&target.endpoint, &only), a);
    assert!(get_prefix(&target.endpoint, &format!("{p}b/")).is_empty());
    put(&target.endpoint, &[(format!("{p}a/000"), "changed".into())]);
    let o = w
        .salvor()
        .args([
            "restore", snap1, "--source", "kv", "--to", "target", "--only", &only,
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("would overwrite 30 existing keys"));
    w.json(&[
        "restore", snap1, "--source", "kv", "--to", "target", "--only", &only, "--yes",
    ]);
    assert_eq!(get_prefix(&target.endpoint, &only), a);
    delete_prefix(&src, &p);
}

#[test]
fn etcd_unreachable_endpoint_fails_cleanly() {
    if !common::services("etcd_unreachable_endpoint_fails_cleanly") {
        return;
    }
    let w = Workspace::new(
        "[source.down]\ntype = \"etcd\"\nendpoint = \"http://127.0.0.1:1\"\ntimeout_secs = 5\n",
    );
    let o = w
        .salvor()
        .args(["backup", "--source", "down"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot reach etcd at http://127.0.0.1:1") && err.contains("refused"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(snapshot_count(&w), 0);
    // A full restore without a directory says what to pass.
    let o = w
        .salvor()
        .args(["restore", "latest", "--source", "down"])
        .output()
        .unwrap();
    assert!(!o.status.success());
}

#[test]
fn etcd_with_authentication_needs_the_right_password() {
    if !common::services("etcd_with_authentication_needs_the_right_password") {
        return;
    }
    // A private etcd, so enabling auth leaves the shared one alone.
    let tmp = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(&tmp.path().join("auth"), "auth", 16485, 16486);
    let e = &etcd.endpoint;
    let p = "/salvor-auth/";
    let keys = pairs(p, "k", 12);
    put(e, &keys);
    let secret = "etcd-Root-Secret-9157";
    for (path, body) in [
        ("auth/role/add", json!({ "name": "root" })),
        (
            "auth/user/add",
            json!({ "name": "root", "password": secret }),
        ),
        ("auth/user/grant", json!({ "user": "root", "role": "root" })),
        ("auth/enable", json!({})),
    ] {
        post(e, path, body).unwrap_or_else(|| panic!("{path} on the private etcd"));
    }
    assert!(
        post(e, "kv/range", json!({ "key": B64.encode(p) })).is_none(),
        "auth is on: anonymous reads are refused"
    );
    let source = |name: &str, password_var: &str| {
        format!(
            "[source.{name}]\ntype = \"etcd\"\nendpoint = \"{e}\"\nusername = \"root\"\n\
             password = {{ env = \"{password_var}\" }}\nprefixes = [\"{p}\"]\ntimeout_secs = 5\n"
        )
    };
    let w = Workspace::new(&format!(
        "{}{}[source.anon]\ntype = \"etcd\"\nendpoint = \"{e}\"\ntimeout_secs = 5\n",
        source("kv", "SALVOR_TEST_ETCD_ROOT_PW"),
        source("wrong", "SALVOR_TEST_ETCD_WRONG_PW"),
    ));
    let run = |name: &str| {
        w.salvor()
            .args(["--json", "backup", "--source", name])
            .env("SALVOR_TEST_ETCD_ROOT_PW", secret)
            .env("SALVOR_TEST_ETCD_WRONG_PW", "not-the-Secret-4242")
            .output()
            .unwrap()
    };

    let ok = run("kv");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let m = w.manifest("kv");
    assert_eq!(m["prefixes"][p], keys.len() as u64, "{m}");

    for name in ["wrong", "anon"] {
        let o = run(name);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{name} backed up: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains(secret) && !err.contains("4242"), "{err}");
        assert!(
            err.contains("username and"),
            "the hint names the fix: {err}"
        );
    }
    assert_eq!(snapshot_count(&w), 1, "failed backups record no snapshot");
}

/// `etcdctl` against the TLS etcd of scripts/services.sh, with its client certificate.
fn etcdctl_tls(args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!(
            "--endpoints={}",
            var("SALVOR_TEST_ETCD_TLS_ENDPOINT")
        ))
        .arg(format!("--cacert={}", var("SALVOR_TEST_ETCD_TLS_CA")))
        .arg(format!("--cert={}", var("SALVOR_TEST_ETCD_TLS_CERT")))
        .arg(format!("--key={}", var("SALVOR_TEST_ETCD_TLS_KEY")))
        .args(args)
        .output()
        .expect("etcdctl on PATH");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn etcd_over_tls_with_client_certificates_backs_up_and_restores() {
    if !common::services("etcd_over_tls_with_client_certificates_backs_up_and_restores") {
        return;
    }
    let tls = |extra: &str| {
        format!(
            "[source.e]\ntype = \"etcd\"\nendpoint = \"{}\"\nprefixes = [\"/tls-test/\"]\n{extra}",
            var("SALVOR_TEST_ETCD_TLS_ENDPOINT")
        )
    };
    let full = format!(
        "ca_cert = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        var("SALVOR_TEST_ETCD_TLS_CA"),
        var("SALVOR_TEST_ETCD_TLS_CERT"),
        var("SALVOR_TEST_ETCD_TLS_KEY")
    );
    let w = Workspace::new(&tls(&full));
    etcdctl_tls(&["del", "--prefix", "/tls-test/"]);
    for i in 0..20 {
        etcdctl_tls(&["put", &format!("/tls-test/k{i:02}"), &format!("v{i}")]);
    }
    w.salvor()
        .args(["backup", "-q", "--source", "e"])
        .assert()
        .success();
    let m = w.manifest("e");
    assert_eq!(m["prefixes"]["/tls-test/"], 20, "{m}");
    etcdctl_tls(&["del", "--prefix", "/tls-test/"]);
    w.salvor()
        .args([
            "restore",
            "latest",
            "--source",
            "e",
            "--only",
            "/tls-test/",
            "--yes",
        ])
        .assert()
        .success();
    let keys = etcdctl_tls(&["get", "--prefix", "/tls-test/", "--keys-only"]);
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 20, "{keys}");
    assert_eq!(
        etcdctl_tls(&["get", "/tls-test/k07", "--print-value-only"]).trim(),
        "v7"
    );

    // Without the CA the server's certificate is not trusted; without the
    // client certificate the server refuses: each a clear one-line error.
    std::fs::write(
        w.config(),
        tls(&format!(
            "cert = \"{}\"\nkey = \"{}\"\n",
            var("SALVOR_TEST_ETCD_TLS_CERT"),
            var("SALVOR_TEST_ETCD_TLS_KEY")
        )),
    )
    .unwrap();
    let out = w
        .salvor()
        .args(["inspect", "--source", "e"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.lines().count() == 1, "{err}");
    std::fs::write(
        w.config(),
        tls(&format!(
            "ca_cert = \"{}\"\n",
            var("SALVOR_TEST_ETCD_TLS_CA")
        )),
    )
    .unwrap();
    let out = w
        .salvor()
        .args(["inspect", "--source", "e"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.lines().count() == 1, "{err}");
    // A certificate without https is a configuration error.
    std::fs::write(
        w.config(),
        format!("[source.e]\ntype = \"etcd\"\nendpoint = \"http://127.0.0.1:1\"\n{full}"),
    )
    .unwrap();
    let out = w
        .salvor()
        .args(["inspect", "--source", "e"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("https://"));
}
