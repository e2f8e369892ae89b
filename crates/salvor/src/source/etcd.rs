//! `etcd`: a v3 snapshot taken over the network.
//!
//! ```toml
//! [source.k8s]
//! type = "etcd"
//! endpoint = "http://127.0.0.1:2379"
//! prefixes = ["/registry/", "/config/"]   # optional: counted in the manifest
//! username = "root"                        # optional, with password
//! password = { file = "/etc/salvor/etcd.pw" }
//! restore_dir = "/var/lib/etcd-restored"   # optional: default target of a full restore
//! restore_name = "default"                 # optional: member name written by the restore
//! restore_peer_url = "http://127.0.0.1:2380"  # optional
//! timeout_secs = 60                        # optional
//! etcdctl = "etcdctl"                      # optional binaries
//! etcd = "etcd"
//! ```
//!
//! # Backup
//!
//! etcd's gRPC gateway (3.4+) serves the maintenance snapshot over HTTP/JSON:
//! `POST /v3/maintenance/snapshot` answers with a stream of JSON messages
//! `{"result":{"blob":"<base64>","remaining_bytes":"N"}}`. They are decoded as
//! they arrive and streamed into the repository, so no file is written
//! anywhere; the stream is the exact file `etcdctl snapshot save` would write
//! (bbolt database plus its trailing SHA-256), which `etcdctl snapshot
//! restore` verifies. This needs no gRPC stack (tonic/prost) and no etcdctl on
//! the backup host; the alternative, `etcdctl snapshot save`, only writes to a
//! file.
//!
//! The revision and key counts (all keys and per configured prefix, via
//! `count_only` ranges) are read at one revision just before the snapshot:
//! exact for a quiet cluster, approximate under concurrent writes.
//! With `username`/`password` the token from `/v3/auth/authenticate` is sent.
//!
//! # Restore
//!
//! Without `--only`, the snapshot becomes an etcd data directory: `--into DIR`
//! or `restore_dir`. `etcdctl snapshot restore` writes it into a fresh sibling
//! directory; a non-empty existing directory is only replaced after
//! confirmation (`--yes`), and then moved aside to `DIR.salvor-old-<time>`
//! rather than deleted.
//!
//! With `--only PREFIX` (repeatable), keys under those prefixes are replayed
//! into the live target etcd (this source's endpoint, or `--to` another): the
//! snapshot is restored into a private scratch directory, a scratch `etcd`
//! serves it on loopback ports below 32768, and its keys are read and put into
//! the target in transactions of 100. Target keys that already exist are only
//! overwritten after confirmation; target keys absent from the snapshot are
//! kept; leases are not carried over.
//!
//! Manifest (`inspect` has the same counts):
//!
//! ```json
//! { "type": "etcd", "endpoint": "http://...", "etcd_version": "3.4.23",
//!   "revision": 42, "keys": 17, "prefixes": { "/registry/": 12 },
//!   "db_size": 20480, "stream": "snapshot.db", "bytes": 20512 }
//! ```

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use salvor_engine::{Error, ErrorKind, Result};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::secret::{self, Secret};
use super::{BackupContext, RestoreContext, RestoreReport, Source, process};

/// The stream's name inside the snapshot.
const STREAM: &str = "snapshot.db";
/// Puts per transaction on a selective restore (etcd's default limit is 128).
const TXN_OPS: usize = 100;

/// Configuration of an `etcd` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URL, e.g. `http://127.0.0.1:2379`.
    pub endpoint: String,
    /// Key prefixes whose key counts the manifest records.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// User for etcd authentication (with `password`).
    #[serde(default)]
    pub username: Option<String>,
    /// Password for `username`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Data directory a full restore writes when `--into` is not given.
    #[serde(default)]
    pub restore_dir: Option<PathBuf>,
    /// Member name written into a restored data directory.
    #[serde(default = "default_name")]
    pub restore_name: String,
    /// Peer URL written into a restored data directory.
    #[serde(default = "default_peer_url")]
    pub restore_peer_url: String,
    /// Timeout for each request, and for a scratch etcd to start, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The `etcdctl` binary (restore).
    #[serde(default = "default_etcdctl")]
    pub etcdctl: String,
    /// The `etcd` binary (selective restore's scratch server).
    #[serde(default = "default_etcd")]
    pub etcd: String,
}

fn default_name() -> String {
    "default".into()
}
fn default_peer_url() -> String {
    "http://127.0.0.1:2380".into()
}
fn default_timeout() -> u64 {
    60
}
fn default_etcdctl() -> String {
    "etcdctl".into()
}
fn default_etcd() -> String {
    "etcd".into()
}

/// An int64/uint64 field: the gateway writes them as strings and omits zeros.
fn num(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// The first key after every key starting with `prefix` (`"\0"`: no end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The innermost cause of an error ("connection refused"), for one-line messages.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A client of one etcd's JSON gateway.
struct Client {
    http: reqwest::blocking::Client,
    endpoint: String,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// Connects to `endpoint` (authenticating if a user is configured).
    fn new(cfg: &EtcdConfig, endpoint: &str) -> Result<Self> {
        let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(timeout)
            .timeout(None)
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Backend, "cannot create an http client").source(e)
            })?;
        let mut c = Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: None,
            timeout,
        };
        if let Some(user) = &cfg.username {
            let password = secret::resolve(cfg.password.as_ref())?.unwrap_or_default();
            let r = c.call(
                "auth/authenticate",
                &json!({ "name": user, "password": password }),
            )?;
            c.token = r["token"].as_str().map(String::from);
        }
        Ok(c)
    }

    /// POSTs `body` to `/v3/{path}`; a non-2xx answer is an error.
    fn post(
        &self,
        path: &str,
        body: &Value,
        timeout: Option<Duration>,
    ) -> Result<reqwest::blocking::Response> {
        let mut req = self
            .http
            .post(format!("{}/v3/{path}", self.endpoint))
            .json(body);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(token) = &self.token {
            req = req.header("Authorization", token);
        }
        let resp = req.send().map_err(|e| {
            Error::new(
                ErrorKind::Backend,
                format!("cannot reach etcd at {}: {}", self.endpoint, root_cause(&e)),
            )
            .hint("check endpoint in the source's configuration and that etcd is running")
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v["message"]
                    .as_str()
                    .or(v["error"].as_str())
                    .map(String::from)
            })
            .unwrap_or_else(|| status.to_string());
        let mut e = Error::new(
            ErrorKind::Backend,
            format!("etcd at {} refused {path}: {msg}", self.endpoint),
        );
        if status == reqwest::StatusCode::UNAUTHORIZED
            || msg.contains("auth")
            || msg.contains("permission")
        {
            e = e.hint("check username and the password secret in the source's configuration");
        }
        Err(e)
    }

    /// POSTs and parses the JSON answer.
    fn call(&self, path: &str, body: &Value) -> Result<Value> {
        self.post(path, body, Some(self.timeout))?
            .json()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Backend,
                    format!(
                        "etcd at {} sent an unreadable answer to {path}",
                        self.endpoint
                    ),
                )
                .source(e)
            })
    }

    /// (revision, number of keys) in `[key, end)`, at `revision` (0 = now).
    fn count(&self, key: &[u8], end: &[u8], revision: u64) -> Result<(u64, u64)> {
        let r = self.call(
            "kv/range",
            &json!({ "key": B64.encode(key), "range_end": B64.encode(end),
                     "count_only": true, "revision": revision }),
        )?;
        Ok((num(&r["header"]["revision"]), num(&r["count"])))
    }

    /// Key/value pairs under `prefix`, read in pages.
    fn range_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = prefix_end(prefix);
        let mut from = prefix.to_vec();
        let mut out = Vec::new();
        loop {
            let r = self.call(
                "kv/range",
                &json!({ "key": B64.encode(&from), "range_end": B64.encode(&end), "limit": 1000 }),
            )?;
            let kvs = r["kvs"].as_array().cloned().unwrap_or_default();
            for kv in &kvs {
                let decode = |f: &str| B64.decode(kv[f].as_str().unwrap_or("")).unwrap_or_default();
                out.push((decode("key"), decode("value")));
            }
            match (r["more"].as_bool(), out.last()) {
                (Some(true), Some((last, _))) => {
                    from = last.clone();
                    from.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    /// Puts pairs in transactions of [`TXN_OPS`].
    fn put_all(&self, kvs: &[(Vec<u8>, Vec<u8>)]) -> Result<u64> {
        for batch in kvs.chunks(TXN_OPS) {
            let ops: Vec<Value> = batch
                .iter()
                .map(|(k, v)| json!({ "request_put": { "key": B64.encode(k), "value": B64.encode(v) } }))
                .collect();
            self.call("kv/txn", &json!({ "success": ops }))?;
        }
        Ok(kvs.len() as u64)
    }
}

/// The snapshot stream: JSON messages decoded into the bytes they carry.
struct SnapshotBody<R: Read> {
    messages: serde_json::StreamDeserializer<'static, serde_json::de::IoRead<R>, Value>,
    chunk: Vec<u8>,
    pos: usize,
    /// `remaining_bytes` of the last message (0 = complete).
    remaining: Option<u64>,
    bytes: u64,
}

impl<R: Read> SnapshotBody<R> {
    fn new(r: R) -> Self {
        Self {
            messages: serde_json::Deserializer::from_reader(r).into_iter(),
            chunk: Vec::new(),
            pos: 0,
            remaining: None,
            bytes: 0,
        }
    }

    /// Decodes the next message into `chunk`; false at the end of the stream.
    fn next_chunk(&mut self) -> io::Result<bool> {
        let Some(msg) = self.messages.next() else {
            return match self.remaining {
                Some(0) => Ok(false),
                _ => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "etcd ended the snapshot stream early",
                )),
            };
        };
        let msg = msg.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Some(err) = msg.get("error") {
            let text = err["message"].as_str().unwrap_or("unknown error");
            return Err(io::Error::other(format!(
                "etcd aborted the snapshot: {text}"
            )));
        }
        let result = &msg["result"];
        self.chunk = B64
            .decode(result["blob"].as_str().unwrap_or(""))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.pos = 0;
        self.remaining = Some(num(&result["remaining_bytes"]));
        Ok(true)
    }
}

impl<R: Read> Read for SnapshotBody<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if !self.next_chunk()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        self.bytes += n as u64;
        Ok(n)
    }
}

impl EtcdConfig {
    /// Version, revision and key counts of the live cluster.
    fn live(&self, c: &Client) -> Result<Map<String, Value>> {
        let status = c.call("maintenance/status", &json!({}))?;
        let (revision, keys) = c.count(b"\0", b"\0", 0)?;
        let mut prefixes = Map::new();
        for p in &self.prefixes {
            let (_, n) = c.count(p.as_bytes(), &prefix_end(p.as_bytes()), revision)?;
            prefixes.insert(p.clone(), n.into());
        }
        let mut out = Map::new();
        out.insert("type".into(), "etcd".into());
        out.insert("endpoint".into(), c.endpoint.clone().into());
        out.insert("etcd_version".into(), status["version"].clone());
        out.insert("db_size".into(), num(&status["dbSize"]).into());
        out.insert("revision".into(), revision.into());
        out.insert("keys".into(), keys.into());
        out.insert("prefixes".into(), prefixes.into());
        Ok(out)
    }

    fn etcdctl(&self) -> Command {
        let mut c = crate::source::process::command(&self.etcdctl);
        c.env("ETCDCTL_API", "3");
        c
    }

    /// `etcdctl snapshot restore FILE` into `data` (which must not exist).
    fn restore_data_dir(&self, file: &Path, data: &Path, name: &str, peer: &str) -> Result<()> {
        let mut cmd = self.etcdctl();
        cmd.args(["snapshot", "restore"])
            .arg(file)
            .arg("--data-dir")
            .arg(data)
            .args([
                "--name",
                name,
                "--initial-cluster",
                &format!("{name}={peer}"),
            ])
            .args(["--initial-advertise-peer-urls", peer]);
        process::run(cmd, "etcdctl snapshot restore").map(drop)
    }

    /// Full restore: the snapshot becomes the data directory `dir`.
    fn restore_dir(
        &self,
        ctx: &RestoreContext,
        dir: &Path,
        report: &mut RestoreReport,
    ) -> Result<()> {
        let occupied = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
        report.actions.push(format!(
            "{} etcd data directory {} (member {}, peer {})",
            if occupied { "replace" } else { "create" },
            dir.display(),
            self.restore_name,
            self.restore_peer_url
        ));
        if occupied {
            ctx.confirm(&format!("etcd data directory {}", dir.display()))?;
        }
        if ctx.dry_run {
            return Ok(());
        }
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
        let work = Work::new(parent, dir)?;
        let file = work.snapshot(ctx)?;
        let fresh = work.0.join("data");
        self.restore_data_dir(&file, &fresh, &self.restore_name, &self.restore_peer_url)?;
        if occupied {
            let old = PathBuf::from(format!("{}.salvor-old-{}", dir.display(), unix_time()));
            std::fs::rename(dir, &old).map_err(|e| Error::io("cannot move aside", dir, e))?;
            report
                .actions
                .push(format!("moved the old directory to {}", old.display()));
        } else if dir.exists() {
            std::fs::remove_dir(dir).map_err(|e| Error::io("cannot replace", dir, e))?;
        }
        std::fs::rename(&fresh, dir).map_err(|e| Error::io("cannot create", dir, e))?;
        Ok(())
    }

    /// Selective restore: keys under `ctx.only` replayed into the live target.
    fn restore_prefixes(&self, ctx: &RestoreContext, report: &mut RestoreReport) -> Result<()> {
        let target = Client::new(self, &self.endpoint)?;
        let scratch = ScratchEtcd::start(self, ctx)?;
        let source = Client::new(
            &EtcdConfig {
                username: None,
                ..self.clone()
            },
            &scratch.endpoint,
        )?;
        let mut kvs = Vec::new();
        for p in ctx.only {
            let found = source.range_prefix(p.as_bytes())?;
            report.counts.insert(p.clone(), found.len().into());
            kvs.extend(found);
        }
        let mut clashes = 0;
        for p in ctx.only {
            let existing = target.range_prefix(p.as_bytes())?;
            let existing: std::collections::HashSet<_> =
                existing.into_iter().map(|(k, _)| k).collect();
            clashes += kvs.iter().filter(|(k, _)| existing.contains(k)).count();
        }
        report.actions.push(format!(
            "put {} keys under {} into etcd at {} ({clashes} existing)",
            kvs.len(),
            ctx.only.join(", "),
            target.endpoint
        ));
        if clashes > 0 {
            ctx.confirm(&format!(
                "{clashes} existing keys in etcd at {}",
                target.endpoint
            ))?;
        }
        report.counts.insert("replaced".into(), clashes.into());
        if !ctx.dry_run {
            let n = target.put_all(&kvs)?;
            report.counts.insert("keys".into(), n.into());
        }
        Ok(())
    }
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A private working directory (mode 0700), removed on drop.
struct Work(PathBuf);

impl Work {
    /// Creates `parent/.NAME.salvor-restore-PID` next to `dir`.
    fn new(parent: &Path, dir: &Path) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let work = parent.join(format!(".{name}.salvor-restore-{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&work)
            .map_err(|e| Error::io("cannot create", &work, e))?;
        Ok(Self(work))
    }

    /// Writes the snapshot's stream into the directory and returns its path.
    fn snapshot(&self, ctx: &RestoreContext) -> Result<PathBuf> {
        let stream = ctx.manifest()["stream"].as_str().unwrap_or(STREAM);
        let file = self.0.join("snapshot.db");
        let f = std::fs::File::create(&file).map_err(|e| Error::io("cannot create", &file, e))?;
        let mut w = io::BufWriter::new(f);
        ctx.copy_stream(stream, &mut w)?;
        w.flush().map_err(|e| Error::io("cannot write", &file, e))?;
        Ok(file)
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port below 32768 that is free right now.
fn free_port(avoid: u16) -> Result<u16> {
    let seed = (std::process::id() as u64 + unix_time()) % 10_000;
    (0..200u64)
        .map(|i| (20_000 + (seed + i * 37) % 12_000) as u16)
        .find(|&p| p != avoid && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .ok_or_else(|| Error::new(ErrorKind::Io, "no free loopback port for a scratch etcd"))
}

/// A private etcd serving a snapshot on loopback; killed and removed on drop.
struct ScratchEtcd {
    child: Child,
    endpoint: String,
    work: Work,
}

impl Drop for ScratchEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ScratchEtcd {
    fn start(cfg: &EtcdConfig, ctx: &RestoreContext) -> Result<Self> {
        let work = Work(super::redis::private_dir("salvor-etcd")?);
        let file = work.snapshot(ctx)?;
        let data = work.0.join("data");
        let client = free_port(0)?;
        let peer = free_port(client)?;
        let peer_url = format!("http://127.0.0.1:{peer}");
        let endpoint = format!("http://127.0.0.1:{client}");
        cfg.restore_data_dir(&file, &data, "salvor-scratch", &peer_url)?;
        let log = std::fs::File::create(work.0.join("etcd.log"))
            .map_err(|e| Error::io("cannot create", &work.0, e))?;
        let child = crate::source::process::command(&cfg.etcd)
            .args([
                "--name",
                "salvor-scratch",
                "--listen-client-urls",
                &endpoint,
            ])
            .args([
                "--advertise-client-urls",
                &endpoint,
                "--listen-peer-urls",
                &peer_url,
            ])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("salvor-scratch={peer_url}")])
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("cannot start {} for the restore", cfg.etcd),
                )
                .source(e)
                .hint("install etcd or set etcd in the source's configuration")
            })?;
        let mut s = Self {
            child,
            endpoint,
            work,
        };
        s.wait_ready(cfg)?;
        Ok(s)
    }

    /// An error with the last line of the scratch server's log.
    fn failed(&self, why: &str) -> Error {
        let log = std::fs::read_to_string(self.work.0.join("etcd.log")).unwrap_or_default();
        let last = log.lines().last().unwrap_or("no log").to_string();
        Error::new(ErrorKind::Io, format!("scratch etcd {why}: {last}")).hint(
            "check that the etcd binary can serve this snapshot (set etcd in the configuration)",
        )
    }

    /// Waits until the scratch server answers.
    fn wait_ready(&mut self, cfg: &EtcdConfig) -> Result<()> {
        let start = Instant::now();
        let probe = Client::new(
            &EtcdConfig {
                username: None,
                timeout_secs: 2,
                ..cfg.clone()
            },
            &self.endpoint,
        )?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failed(&format!("exited ({status})")));
            }
            if probe.call("maintenance/status", &json!({})).is_ok() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(cfg.timeout_secs.max(1)) {
                return Err(self.failed("did not become ready"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Source for &EtcdConfig {
    fn backup(&self, ctx: &BackupContext) -> Result<(SnapshotId, Snapshot)> {
        let c = Client::new(self, &self.endpoint)?;
        let mut manifest = self.live(&c)?;
        let resp = c.post("maintenance/snapshot", &json!({}), None)?;
        let mut streams = ctx.streams()?;
        let mut body = SnapshotBody::new(resp);
        streams.add(STREAM, &mut body)?;
        if body.bytes == 0 {
            return Err(Error::new(
                ErrorKind::Backend,
                format!("etcd at {} sent an empty snapshot", c.endpoint),
            ));
        }
        manifest.insert("stream".into(), STREAM.into());
        manifest.insert("bytes".into(), body.bytes.into());
        streams.commit(Value::Object(manifest))
    }

    fn restore(&self, ctx: &RestoreContext) -> Result<RestoreReport> {
        let mut report = RestoreReport::default();
        if !ctx.only.is_empty() {
            if ctx.rename.is_some() {
                return Err(Error::invalid(
                    "--only replays keys into a live etcd; --into is for a data directory",
                )
                .hint("use one of them"));
            }
            self.restore_prefixes(ctx, &mut report)?;
            return Ok(report);
        }
        let dir = ctx
            .rename
            .map(PathBuf::from)
            .or_else(|| self.restore_dir.clone())
            .ok_or_else(|| {
                Error::invalid("no etcd data directory to restore into").hint(
                    "pass --into DIR, set restore_dir, or restore key prefixes with --only PREFIX",
                )
            })?;
        self.restore_dir(ctx, &dir, &mut report)?;
        let m = ctx.manifest();
        report
            .counts
            .insert("revision".into(), m["revision"].clone());
        report.counts.insert("keys".into(), m["keys"].clone());
        Ok(report)
    }

    fn inspect(&self) -> Result<Value> {
        let c = Client::new(self, &self.endpoint)?;
        Ok(Value::Object(self.live(&c)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn snapshot_messages_decode_and_must_complete() {
        let wire = format!(
            "{}\n{}\n",
            json!({"result": {"blob": B64.encode(b"hello "), "remaining_bytes": "5"}}),
            json!({"result": {"blob": B64.encode(b"world")}})
        );
        let mut out = String::new();
        SnapshotBody::new(wire.as_bytes())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello world");
        let cut = json!({"result": {"blob": B64.encode(b"x"), "remaining_bytes": "9"}}).to_string();
        assert!(
            SnapshotBody::new(cut.as_bytes())
                .read_to_end(&mut Vec::new())
                .is_err()
        );
        let err = json!({"error": {"message": "too many requests"}}).to_string();
        let e = SnapshotBody::new(err.as_bytes())
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("too many requests"));
    }
}
