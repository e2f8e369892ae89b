//! The `http` source against a real HTTP server started by each test:
//! `fixtures/http_api.py`, a small IPAM-like JSON API (Python stdlib) with
//! page-style, cursor-style and `Link`-header pagination and a bearer token
//! check. Each test starts its own servers on loopback ports below 32768 and
//! kills them by their own child handle at the end. Needs `python3` on PATH
//! (fails otherwise, unless SALVOR_TEST_SKIP_SERVICES=1).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};

use common::Workspace;
use serde_json::{Value, json};

const TOKEN: &str = "s3cret-token-for-tests";

/// A running `http_api.py`, killed on drop.
struct Api {
    child: Child,
    port: u16,
}

static NEXT_RANGE: AtomicU16 = AtomicU16::new(0);

impl Api {
    /// Starts the fixture server (seeded with 5 pools, 15 allocations, 3 tags, or empty).
    fn start(seeded: bool) -> Self {
        Self::start_with(seeded, 0)
    }

    /// Like [`Api::start`], holding each write for `write_delay_ms` so that
    /// concurrent ones overlap and `/_stats` sees them.
    fn start_with(seeded: bool, write_delay_ms: u32) -> Self {
        // Spread tests (and concurrent runs) over 20000..32000; the script probes upwards.
        let slot =
            (std::process::id() as u16 % 20) * 3 + NEXT_RANGE.fetch_add(1, Ordering::Relaxed);
        let from = 20000 + (slot % 60) * 200;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/http_api.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(["--port-from", &from.to_string(), "--token", TOKEN])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if seeded {
            cmd.arg("--seed");
        }
        cmd.args(["--write-delay-ms", &write_delay_ms.to_string()]);
        let mut child = cmd.spawn().expect("python3 runs the fixture server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("fixture server did not start: {line:?}"));
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sends one request with the right token; returns the status and JSON body.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let client = reqwest::blocking::Client::new();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = client
            .request(method, format!("{}{path}", self.url()))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// Every record the server holds, by kind.
    fn dump(&self) -> Value {
        self.call("GET", "/api/v1/_dump", None).1
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    // Like the other servers: missing is a failure, unless skipping was asked for.
    if ok {
        return true;
    }
    if std::env::var("SALVOR_TEST_SKIP_SERVICES").as_deref() == Ok("1") {
        eprintln!("SKIPPED: python3 is needed for the http fixture server");
        return false;
    }
    panic!(
        "python3 is needed for the http fixture server: install it (scripts/services.sh install does)"
    );
}

const ENDPOINTS: &str = r#"
[[source.NAME.endpoints]]
name = "pools"
path = "/api/v1/pools"
items = "data"
pagination = { style = "page", page_param = "page", size_param = "per_page", size = 2 }
restore = { method = "PUT", path = "/api/v1/pools/{id}" }

[[source.NAME.endpoints]]
name = "allocations"
path = "/api/v1/allocations?pool_id={pools.id}"
items = "items"
pagination = { style = "cursor", param = "cursor", next = "next_cursor" }
restore = { method = "POST", path = "/api/v1/allocations" }

[[source.NAME.endpoints]]
name = "tags"
path = "/api/v1/tags"
pagination = { style = "link" }
restore = { method = "POST", path = "/api/v1/tags" }
"#;

/// A `[source.NAME]` table for a server; `endpoints` is TOML with NAME for the source name.
fn source(name: &str, url: &str, token_file: &Path, endpoints: &str) -> String {
    format!(
        "[source.{name}]\ntype = \"http\"\nbase_url = {url:?}\ntimeout_secs = 5\ntoken = {{ file = {} }}\nheaders = {{ \"X-Client\" = \"salvor-test\" }}\n{}",
        serde_json::to_string(token_file).unwrap(),
        endpoints.replace("NAME", name)
    )
}

/// A workspace whose `token` file holds `token`; `sources` gets that file's path.
fn workspace(token: &str, sources: &dyn Fn(&Path) -> String) -> Workspace {
    let w = Workspace::new("");
    let token_file = w.dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::write(w.config(), sources(&token_file)).unwrap();
    w
}

fn snapshot_ids(w: &Workspace) -> Vec<String> {
    w.json(&["snapshots"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn counts(v: &Value) -> Value {
    v["counts"].clone()
}

#[test]
fn backup_change_restore_first_snapshot_into_fresh_server() {
    if !python() {
        return;
    }
    let origin = Api::start(true);
    let fresh = Api::start(false);
    let (ou, fu) = (origin.url(), fresh.url());
    let w = workspace(TOKEN, &|t| {
        source("ipam", &ou, t, ENDPOINTS) + &source("ipam_dr", &fu, t, ENDPOINTS)
    });
    let original = origin.dump();

    w.json(&["backup", "--source", "ipam"]);
    let m1 = w.manifest("ipam");
    assert_eq!(m1["type"], "http");
    assert_eq!(m1["base_url"], format!("{ou}/"));
    assert!(
        m1["time"].as_str().is_some(),
        "manifest records the time: {m1}"
    );
    assert_eq!(
        counts(&m1),
        json!({ "pools": 5, "allocations": 15, "tags": 3 })
    );
    let pools = &m1["endpoints"][0];
    assert_eq!(pools["stream"], "pools.jsonl");
    assert_eq!(pools["requests"], 3, "5 pools at 2 per page take 3 pages");
    assert_eq!(
        m1["endpoints"][1]["requests"], 9,
        "allocations: one cursor listing per pool, 2 per page (1+1+2+2+3)"
    );
    assert_eq!(
        m1["endpoints"][2]["requests"], 2,
        "tags follow one Link header"
    );
    assert_eq!(
        counts(&w.json(&["inspect", "--source", "ipam"])),
        counts(&m1)
    );

    // The snapshot holds the records as JSON lines.
    let snap1 = snapshot_ids(&w)[0].clone();
    let out = w
        .salvor()
        .args(["dump", &snap1, "ipam/tags.jsonl"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        &lines,
        original["tags"].as_array().unwrap(),
        "one record per line"
    );

    // Change the data, back up again.
    origin.call(
        "POST",
        "/api/v1/pools",
        Some(json!({ "id": 6, "cidr": "10.6.0.0/16", "name": "pool-6" })),
    );
    origin.call(
        "POST",
        "/api/v1/allocations",
        Some(json!({ "id": 16, "pool_id": 6, "ip": "10.6.0.1" })),
    );
    origin.call(
        "POST",
        "/api/v1/tags",
        Some(json!({ "id": 4, "label": "tag 4" })),
    );
    assert_eq!(origin.call("DELETE", "/api/v1/tags/1", None).0, 204);
    w.json(&["backup", "--source", "ipam"]);
    assert_eq!(
        counts(&w.manifest("ipam")),
        json!({ "pools": 6, "allocations": 16, "tags": 3 })
    );
    assert_eq!(snapshot_ids(&w).len(), 2);

    // Restore the FIRST snapshot into the fresh, empty server.
    let r = w.json(&["restore", &snap1, "--source", "ipam", "--to", "ipam_dr"]);
    let c = &r["report"]["counts"];
    assert_eq!(
        (
            c["created"].as_u64(),
            c["existing"].as_u64(),
            c["failed"].as_u64()
        ),
        (Some(23), Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(c["endpoints"]["allocations"]["created"], 15, "{r}");
    assert_eq!(
        fresh.dump(),
        original,
        "the fresh server holds exactly the first snapshot's records"
    );
    assert_eq!(
        counts(&w.json(&["inspect", "--source", "ipam_dr"])),
        counts(&m1)
    );

    // A second restore changes nothing and says so.
    let r = w.json(&["restore", &snap1, "--source", "ipam", "--to", "ipam_dr"]);
    let c = &r["report"]["counts"];
    assert_eq!(
        (
            c["created"].as_u64(),
            c["existing"].as_u64(),
            c["conflicts"].as_u64(),
            c["failed"].as_u64()
        ),
        (Some(0), Some(8), Some(15), Some(0)),
        "{r}"
    );
    assert_eq!(
        c["endpoints"]["tags"]["existing"], 3,
        "POST answered 400 'already exists': {r}"
    );
    assert_eq!(fresh.dump(), original);
}

/// The hardening issue, item 26: replay sent one request at a time (10,010
/// records took 11 s). It sends several at once per endpoint, bounded, and
/// finishes one endpoint before the next (pools before their allocations).
#[test]
fn replay_is_concurrent_bounded_and_in_endpoint_order() {
    if !python() {
        return;
    }
    let origin = Api::start(true);
    let fresh = Api::start_with(false, 40);
    let (ou, fu) = (origin.url(), fresh.url());
    let w = workspace(TOKEN, &|t| {
        source("ipam", &ou, t, ENDPOINTS) + &source("ipam_dr", &fu, t, ENDPOINTS)
    });
    let snap = w.json(&["backup", "--source", "ipam"])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let r = w.json(&["restore", &snap, "--source", "ipam", "--to", "ipam_dr"]);
    assert_eq!(r["report"]["counts"]["created"], 23, "{r}");
    assert_eq!(fresh.dump(), origin.dump());
    let stats = fresh.call("GET", "/api/v1/_stats", None).1;
    let most = stats["max_in_flight"].as_u64().unwrap();
    assert!((2..=8).contains(&most), "writes at once: {stats}");
    let order: Vec<&str> = stats["writes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let rank = |k: &str| {
        ["pools", "allocations", "tags"]
            .iter()
            .position(|e| *e == k)
    };
    assert_eq!(order.len(), 23, "{stats}");
    assert!(
        order.windows(2).all(|p| rank(p[0]) <= rank(p[1])),
        "one endpoint finishes before the next starts: {order:?}"
    );
}

#[test]
fn selective_dry_run_and_manifest_restore_specs() {
    if !python() {
        return;
    }
    let origin = Api::start(true);
    let target = Api::start(false);
    let (ou, tu) = (origin.url(), target.url());
    // `bare` has no endpoints: the restore specs come from the manifest.
    let w = workspace(TOKEN, &|t| {
        source("ipam", &ou, t, ENDPOINTS) + &source("bare", &tu, t, "")
    });
    w.json(&["backup", "--source", "ipam"]);
    let snap = snapshot_ids(&w)[0].clone();
    let empty = json!({ "pools": [], "allocations": [], "tags": [] });

    let r = w.json(&[
        "restore",
        &snap,
        "--source",
        "ipam",
        "--to",
        "bare",
        "--dry-run",
    ]);
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["report"]["counts"]["records"], 23, "{r}");
    assert_eq!(
        r["report"]["counts"]["endpoints"]["pools"]["records"], 5,
        "{r}"
    );
    assert_eq!(target.dump(), empty, "--dry-run sends nothing");

    let r = w.json(&[
        "restore", &snap, "--source", "ipam", "--to", "bare", "--only", "pools", "--only", "tags",
    ]);
    assert_eq!(r["report"]["counts"]["created"], 8, "{r}");
    assert!(
        r["report"]["counts"]["endpoints"]
            .get("allocations")
            .is_none(),
        "{r}"
    );
    let d = target.dump();
    assert_eq!(d["pools"], origin.dump()["pools"]);
    assert_eq!(d["tags"].as_array().unwrap().len(), 3);
    assert_eq!(
        d["allocations"],
        json!([]),
        "--only leaves other endpoints alone"
    );

    let out = w
        .salvor()
        .args([
            "restore", &snap, "--source", "ipam", "--to", "bare", "--only", "nope",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("endpoint nope is not in the snapshot")
            && err.contains("pools, allocations, tags"),
        "{err}"
    );

    // --into URL overrides the target; a restore into the origin finds everything there.
    // PUT records and POSTs answered "exists" count as existing; POSTs
    // answered 409 Conflict are reported apart (the content may differ).
    let r = w.json(&["restore", &snap, "--source", "ipam", "--into", &ou]);
    let c = &r["report"]["counts"];
    assert_eq!(
        (c["existing"].as_u64(), c["conflicts"].as_u64()),
        (Some(8), Some(15)),
        "{r}"
    );
    let said = r["report"]["actions"].to_string();
    assert!(
        said.contains("409 Conflict") && said.contains("left as they are"),
        "{r}"
    );
}

/// Runs a backup expected to fail; returns its stderr.
fn failing_backup(w: &Workspace, source: &str) -> String {
    let out = w
        .salvor()
        .args(["backup", "--source", source])
        .output()
        .unwrap();
    assert!(!out.status.success(), "backup of {source} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn failures_name_the_url_and_leave_no_snapshot() {
    if !python() {
        return;
    }
    let api = Api::start(true);
    let down = Api::start(false);
    let (au, du) = (api.url(), down.url());
    down.stop();
    let broken = "[[source.NAME.endpoints]]\nname = \"b\"\npath = \"/api/v1/broken\"\n";
    let w = workspace("wrong-token", &|t| {
        source("ipam", &au, t, ENDPOINTS)
            + &source("gone", &du, t, ENDPOINTS)
            + &source("broken", &au, t, broken)
    });

    let err = failing_backup(&w, "ipam");
    assert!(
        err.contains(&format!(
            "GET {au}/api/v1/pools?page=1&per_page=2 failed: 401"
        )),
        "{err}"
    );
    assert!(err.contains("check the source's token"), "{err}");
    assert!(
        !err.contains("wrong-token") && !err.contains(TOKEN),
        "no token in messages: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");

    let err = failing_backup(&w, "gone");
    assert!(
        err.contains(&format!("GET {du}/api/v1/pools")) && err.contains("failed"),
        "{err}"
    );
    assert!(
        err.to_lowercase().contains("refused"),
        "connection refused is named: {err}"
    );

    std::fs::write(w.dir.path().join("token"), TOKEN).unwrap();
    let err = failing_backup(&w, "broken");
    assert!(
        err.contains(&format!("GET {au}/api/v1/broken failed: 500")),
        "{err}"
    );

    assert!(
        snapshot_ids(&w).is_empty(),
        "failed backups write no snapshot"
    );
    // The same token works once fixed.
    w.json(&["backup", "--source", "ipam"]);
    assert_eq!(snapshot_ids(&w).len(), 1);
}
