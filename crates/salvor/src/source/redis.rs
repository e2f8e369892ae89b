//! `redis`: an RDB snapshot taken over the network, as a replica would get it.
//!
//! ```toml
//! [source.cache]
//! type = "redis"
//! host = "127.0.0.1"                       # default
//! port = 6379                              # default
//! username = "backup"                      # optional (ACL user; default user otherwise)
//! password = { env = "REDIS_PASSWORD" }    # optional Secret
//! timeout_secs = 60                        # optional: connect and per-read timeout
//! redis_server = "redis-server"            # optional: binary for the restore's scratch server
//! ```
//!
//! # Backup
//!
//! salvor speaks the replication handshake itself: `AUTH`, `REPLCONF capa eof
//! capa psync2`, `REPLCONF rdb-only 1` (Redis 7+, ignored before), then `PSYNC
//! ? -1`. The server answers `+FULLRESYNC <replid> <offset>` and sends the RDB
//! either as `$<len>\r\n<bytes>` or, in diskless mode, as `$EOF:<40-byte
//! mark>\r\n<bytes><mark>`. The bytes go straight into the repository; the
//! connection is closed right after them. Because salvor advertises `capa
//! eof`, a server with `repl-diskless-sync yes` (the default since 7.0) forks
//! and streams the RDB to the socket without touching its disk; the manifest
//! records which form was used (`"transfer": "diskless"` or `"disk"`).
//! Alternatives: `redis-cli --rdb` needs a file (it cannot write to a pipe
//! portably before 7.2) and `BGSAVE` + copying `dump.rdb` needs access to the
//! server's disk.
//!
//! The key counts in the manifest come from `INFO keyspace`, read on the same
//! connection just before the fork: exact for a quiet server, approximate under
//! concurrent writes (the RDB itself is always one point in time).
//!
//! # Restore
//!
//! The RDB is written into a private directory (mode 0700) where a scratch
//! `redis-server` loads it, listening only on a unix socket there (no port,
//! nothing reachable from outside). Its keys are then copied into the target
//! (this source, or another configured with `--to`) with `DUMP` + `PTTL` and
//! `RESTORE`, keeping values, encodings and remaining TTLs. Existing target
//! keys are never overwritten without `--yes` (or an interactive yes):
//! `RESTORE ... REPLACE` is used only then. `--only PREFIX` (repeatable)
//! restores keys starting with a prefix; `--into N` puts every key into
//! database N. The scratch server is killed and its directory removed when
//! the restore ends. This works against any live target, including managed
//! ones where the data directory is out of reach; the price is one round trip
//! per batch of 500 keys and a scratch `redis-server` at least as new as the
//! one that wrote the RDB.
//!
//! Manifest (and `inspect`, without the transfer fields):
//!
//! ```json
//! { "type": "redis", "server": "127.0.0.1:6379", "redis_version": "7.0.15",
//!   "stream": "dump.rdb", "bytes": 12345, "rdb_version": "0010",
//!   "transfer": "diskless", "replid": "...", "offset": 1234,
//!   "keyspace": { "db0": { "keys": 10, "expires": 1 } }, "keys": 10 }
//! ```

pub(crate) mod protocol;
pub(crate) mod replication;
mod restore;

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use salvor_engine::{Error, ErrorKind, Result};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::secret::{self, Secret};
use super::{BackupContext, RestoreContext, RestoreReport, Source};
use crate::config::bounded;
use protocol::Conn;
use replication::{Framing, RdbBody, start_full_sync};
pub(super) use restore::private_dir;
use restore::{Scratch, copy_keys, existing, into_db, scan_keys};

/// The stream's name inside the snapshot.
const STREAM: &str = "dump.rdb";

/// Configuration of a `redis` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Host name or address.
    #[serde(default = "default_host")]
    pub host: String,
    /// TCP port.
    #[serde(default = "default_port", deserialize_with = "bounded::port")]
    pub port: u16,
    /// ACL user name; without it `AUTH` uses the default user.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (`requirepass` or the ACL user's).
    #[serde(default)]
    pub password: Option<Secret>,
    /// Connect and per-read timeout in seconds.
    #[serde(
        default = "default_timeout",
        deserialize_with = "bounded::timeout_secs"
    )]
    pub timeout_secs: u64,
    /// The `redis-server` binary used for the restore's scratch server.
    #[serde(default = "default_server")]
    pub redis_server: String,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    6379
}
fn default_timeout() -> u64 {
    60
}
fn default_server() -> String {
    "redis-server".into()
}

impl RedisConfig {
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// Connects and authenticates.
    fn connect(&self) -> Result<Conn<TcpStream>> {
        let addr = self.addr();
        let unreachable = |e: io::Error| {
            Error::new(
                ErrorKind::Backend,
                format!("cannot connect to redis at {addr}"),
            )
            .source(e)
            .hint("check host and port in the source's configuration and that redis is running")
        };
        let sock = addr
            .to_socket_addrs()
            .map_err(unreachable)?
            .next()
            .ok_or_else(|| unreachable(io::Error::other("no address")))?;
        let stream = TcpStream::connect_timeout(&sock, self.timeout()).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(self.timeout()))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout())))
            .map_err(unreachable)?;
        let mut c = Conn::new(stream, addr.clone());
        let password = secret::resolve(self.password.as_ref())?;
        c.auth(self.username.as_deref(), password.as_deref())?;
        Ok(c)
    }

    /// Version and keyspace of a live server.
    fn live(&self, c: &mut Conn<TcpStream>) -> Result<Map<String, Value>> {
        let version = c
            .info("server")?
            .into_iter()
            .find(|(k, _)| k == "redis_version")
            .map(|(_, v)| v)
            .unwrap_or_default();
        let keyspace = c.keyspace()?;
        let mut out = Map::new();
        out.insert("type".into(), "redis".into());
        out.insert("server".into(), self.addr().into());
        out.insert("redis_version".into(), version.into());
        out.insert("keys".into(), total_keys(&keyspace).into());
        out.insert("keyspace".into(), keyspace.into());
        Ok(out)
    }
}

fn total_keys(keyspace: &Map<String, Value>) -> u64 {
    keyspace.values().filter_map(|v| v["keys"].as_u64()).sum()
}

impl Source for &RedisConfig {
    fn backup(&self, ctx: &BackupContext) -> Result<(SnapshotId, Snapshot)> {
        let mut c = self.connect()?;
        let mut manifest = self.live(&mut c)?;
        let sync = start_full_sync(&mut c)?;
        let transfer = match sync.framing {
            Framing::Mark(_) => "diskless",
            Framing::Length(_) => "disk",
        };
        let mut streams = ctx.streams()?;
        let mut body = RdbBody::new(&mut c.io, sync.framing);
        streams.add(STREAM, &mut body)?;
        if !body.head.starts_with(b"REDIS") {
            return Err(Error::new(
                ErrorKind::Backend,
                format!("redis at {} sent something that is not an rdb", self.addr()),
            ));
        }
        let rdb_version = String::from_utf8_lossy(&body.head[5..]).into_owned();
        manifest.insert("stream".into(), STREAM.into());
        manifest.insert("bytes".into(), body.bytes.into());
        manifest.insert("rdb_version".into(), rdb_version.into());
        manifest.insert("transfer".into(), transfer.into());
        manifest.insert("replid".into(), sync.replid.into());
        manifest.insert("offset".into(), sync.offset.into());
        streams.commit(Value::Object(manifest))
    }

    fn restore(&self, ctx: &RestoreContext) -> Result<RestoreReport> {
        let into = into_db(ctx)?;
        let stream = ctx.manifest()["stream"]
            .as_str()
            .unwrap_or(STREAM)
            .to_string();
        let mut target = self.connect()?;
        let (_scratch, mut sc) = Scratch::start(self, ctx, &stream)?;
        let mut report = RestoreReport::default();
        report
            .actions
            .push(format!("loaded {stream} into a scratch redis-server"));
        // Plan: keys per source database, and how many already exist in the target.
        let mut plan = Vec::new();
        let mut clashes = (0, None);
        for db in sc.keyspace()?.keys() {
            let Some(n) = db.strip_prefix("db").and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let keys: Vec<Vec<u8>> = scan_keys(&mut sc, n, ctx.only)?.into_iter().collect();
            let to = into.unwrap_or(n);
            target.call_str(&["SELECT", &to.to_string()])?;
            let (found, example) = existing(&mut target, &keys)?;
            clashes.0 += found;
            if clashes.1.is_none() {
                clashes.1 = example.map(|k| format!("{k:?} in db{to}"));
            }
            plan.push((n, to, keys));
        }
        if clashes.0 > 0 {
            ctx.confirm(
                &format!(
                    "{} existing keys in redis at {} (e.g. {})",
                    clashes.0,
                    self.addr(),
                    clashes.1.unwrap_or_default()
                ),
                "--to OTHER_SOURCE or --into DB_NUMBER",
            )?;
        }
        let mut total = 0;
        for (from, to, keys) in &plan {
            report.actions.push(format!(
                "copy {} keys of db{from} into db{to} of redis at {}",
                keys.len(),
                self.addr()
            ));
            let n = if ctx.dry_run {
                keys.len() as u64
            } else {
                sc.call_str(&["SELECT", &from.to_string()])?;
                target.call_str(&["SELECT", &to.to_string()])?;
                copy_keys(&mut sc, &mut target, keys, ctx.yes || clashes.0 > 0)?
            };
            total += n;
            report.counts.insert(format!("db{from}"), n.into());
        }
        report.counts.insert("keys".into(), total.into());
        report.counts.insert("replaced".into(), clashes.0.into());
        Ok(report)
    }

    fn inspect(&self) -> Result<Value> {
        let mut c = self.connect()?;
        Ok(Value::Object(self.live(&mut c)?))
    }
}
