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

mod client;
mod restore;

use std::path::PathBuf;

use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use salvor_engine::{Error, ErrorKind, Result};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::secret::Secret;
use super::{BackupContext, RestoreContext, RestoreReport, Source};
use crate::config::bounded;
use client::{Client, SnapshotBody, num, prefix_end};

/// The stream's name inside the snapshot.
const STREAM: &str = "snapshot.db";

/// Configuration of an `etcd` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URL, e.g. `http://127.0.0.1:2379` or `https://etcd.internal:2379`.
    pub endpoint: String,
    /// CA certificate (PEM) that signed the server's certificate, for an
    /// `https://` endpoint (`etcdctl --cacert`); default: the system's roots.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (`etcdctl --cert`), with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of `cert` (`etcdctl --key`).
    #[serde(default)]
    pub key: Option<PathBuf>,
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
    #[serde(
        default = "default_timeout",
        deserialize_with = "bounded::timeout_secs"
    )]
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
