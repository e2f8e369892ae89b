//! `mongodb`: every collection of the configured databases, through the
//! official Rust driver, so neither backup nor restore needs MongoDB's tools.
//!
//! ```toml
//! [source.app_mongo]
//! type = "mongodb"
//! uri = { env = "APP_MONGO_URI" }   # or { file = ... } / { command = ... } / a plain "mongodb://host:27017"
//! databases = ["app", "auth"]       # default: every database but admin, config and local
//! method = "driver"                 # default; or "mongodump" (see below)
//! timeout_secs = 10                 # server selection and connect timeout (default 10)
//! batch_size = 1000                 # documents per insert on restore (default 1000)
//! ```
//!
//! Design choices:
//! - Streams: `DB/COLL.bson`, the collection's documents as concatenated BSON,
//!   exactly as the server sent them (the driver's raw documents are copied
//!   byte for byte: no decoding, and every BSON type, including decimal128,
//!   binary subtypes and key order, survives; it is also mongodump's `.bson`
//!   layout), and `DB/COLL.indexes.json`, the `listIndexes` specs as canonical
//!   extended JSON (small and worth reading). Extended JSON lines for the
//!   documents would be readable but bigger, slower, and lossy for a few types
//!   in relaxed mode. `/` and `%` in collection names are percent-encoded.
//! - Documents are streamed from the cursor into the snapshot and from the
//!   snapshot into `insertMany` batches; neither side holds a collection.
//! - Collections are dumped one after another: with the driver there is no
//!   point-in-time view across collections (as with mongodump without
//!   `--oplog`). Views and `system.*` collections are skipped.
//! - Restore: `--into NAME` restores one database under another name;
//!   `--only ITEM` selects `db`, `db.coll` or `coll`; a non-empty target
//!   collection is refused unless `--yes`, and then dropped and replaced
//!   (all targets are checked before anything is written); `--dry-run` says
//!   what would be restored.
//! - The uri may hold a password, so it is a secret (a plain string is
//!   accepted too) and is never printed: messages name only its hosts.
//!
//! `method = "mongodump"` streams `mongodump --archive` (with `--oplog` when
//! the whole instance of a replica set is dumped) into one stream
//! `dump.archive`, and restores it with `mongorestore --archive` (`--drop`
//! with `--yes`, `--oplogReplay` for a full restore of an oplog dump,
//! `--nsInclude`/`--nsFrom`/`--nsTo` for `--only`/`--into`). The uri reaches
//! the tools through a private temporary `--config` file, never argv.
//! `bin_dir` points at the tools when they are not on PATH. No MongoDB tools
//! can be installed where salvor's tests run, so this method is tested only
//! against stand-in scripts (salvor's side: arguments, secrets, streaming,
//! failures), never against the real tools.
//!
//! Manifest: `{ "type": "mongodb", "method", "hosts", "server_version", "time",
//! "databases": { DB: { COLL: { "documents": N, "indexes": N } } } }` (plus
//! `"oplog"` for mongodump); `inspect` returns the same keys for the live server.

// The driver and everything built on it: the MongoDB driver is the largest
// dependency (about 150 crates), so it is a feature, off by default.
#[cfg(feature = "mongodb")]
mod connection;
#[cfg(feature = "mongodb")]
pub(crate) mod driver;
#[cfg(feature = "mongodb")]
mod mongodump;
#[cfg(feature = "mongodb")]
mod plan;

#[cfg(feature = "mongodb")]
use std::collections::BTreeMap;
use std::path::PathBuf;

use salvor_engine::Result;
use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use serde::Deserialize;
use serde_json::Value;
#[cfg(feature = "mongodb")]
use serde_json::json;

#[cfg(feature = "mongodb")]
use super::process;
use super::secret::Secret;
use super::{BackupContext, RestoreContext, RestoreReport, Source};
use crate::config::bounded;
#[cfg(feature = "mongodb")]
use connection::Conn;
#[cfg(feature = "mongodb")]
use driver::{dump_collection, restore_driver};
#[cfg(feature = "mongodb")]
use mongodump::{backup_mongodump, restore_mongodump};
#[cfg(feature = "mongodb")]
use plan::{check_db_name, restore_items};

/// Configuration of a `mongodb` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongodbConfig {
    /// Connection string.
    pub uri: Uri,
    /// Databases to dump; empty means all but admin, config and local.
    #[serde(default)]
    pub databases: Vec<String>,
    /// How to dump and restore.
    #[serde(default)]
    pub method: Method,
    /// Server selection and connect timeout, in seconds.
    #[serde(
        default = "default_timeout",
        deserialize_with = "bounded::timeout_secs"
    )]
    pub timeout_secs: u64,
    /// Documents per insert on restore.
    #[serde(default = "default_batch", deserialize_with = "bounded::batch_usize")]
    pub batch_size: usize,
    /// Directory holding `mongodump` and `mongorestore` (default: PATH).
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
}

#[cfg(feature = "mongodb")]
impl MongodbConfig {
    /// `mongodump` or `mongorestore`, from `bin_dir` or PATH.
    fn tool(&self, name: &str) -> std::process::Command {
        let program = self
            .bin_dir
            .as_ref()
            .map_or_else(|| PathBuf::from(name), |d| d.join(name));
        process::command(program)
    }
}

fn default_timeout() -> u64 {
    10
}

fn default_batch() -> usize {
    1000
}

/// The connection string: plain or a secret. Never shown, either way.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum Uri {
    /// Written in the configuration.
    Plain(String),
    /// Read when needed.
    Secret(Secret),
}

impl std::fmt::Debug for Uri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plain(_) => f.write_str("Uri(hidden)"),
            Self::Secret(s) => write!(f, "Uri({s:?})"),
        }
    }
}

#[cfg(feature = "mongodb")]
impl Uri {
    fn resolve(&self) -> Result<String> {
        match self {
            Self::Plain(s) => Ok(s.clone()),
            Self::Secret(s) => s.resolve(),
        }
    }
}

/// How a `mongodb` source dumps and restores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The Rust driver; no tools needed.
    #[default]
    Driver,
    /// `mongodump --archive` / `mongorestore --archive` (tested against
    /// stand-in scripts only: no MongoDB tools can be installed here).
    Mongodump,
}

#[cfg(feature = "mongodb")]
impl MongodbConfig {
    fn manifest(&self, conn: &Conn, databases: serde_json::Map<String, Value>) -> Value {
        json!({
            "type": "mongodb",
            "method": match self.method { Method::Driver => "driver", Method::Mongodump => "mongodump" },
            "hosts": conn.hosts,
            "server_version": conn.server_version(),
            "time": jiff::Timestamp::now().to_string(),
            "databases": databases,
        })
    }
}

#[cfg(not(feature = "mongodb"))]
impl Source for &MongodbConfig {
    fn backup(&self, _: &BackupContext) -> Result<(SnapshotId, Snapshot)> {
        Err(without_driver())
    }
    fn restore(&self, _: &RestoreContext) -> Result<RestoreReport> {
        Err(without_driver())
    }
    fn inspect(&self) -> Result<Value> {
        Err(without_driver())
    }
}

/// The error of a build without the `mongodb` feature.
#[cfg(not(feature = "mongodb"))]
fn without_driver() -> salvor_engine::Error {
    salvor_engine::Error::invalid("this salvor was built without MongoDB support")
        .hint("build it with `cargo build --release --features mongodb`")
}

#[cfg(feature = "mongodb")]
impl Source for &MongodbConfig {
    fn backup(&self, ctx: &BackupContext) -> Result<(SnapshotId, Snapshot)> {
        let conn = Conn::open(self)?;
        let dbs = conn.databases(self)?;
        for db in &dbs {
            check_db_name(db)?;
        }
        let mut streams = ctx.streams()?;
        if self.method == Method::Mongodump {
            // Counts first: the archive is opaque to salvor.
            let counts = conn.counts(self)?;
            let oplog = backup_mongodump(self, &conn, &mut streams)?;
            let mut manifest = self.manifest(&conn, counts);
            manifest["oplog"] = oplog.into();
            return streams.commit(manifest);
        }
        let mut databases = serde_json::Map::new();
        for db in dbs {
            let mut colls = BTreeMap::new();
            for coll in conn.collections(&db)? {
                let counts = dump_collection(&conn, &mut streams, &db, &coll)?;
                colls.insert(coll, counts);
            }
            databases.insert(db, json!(colls));
        }
        let manifest = self.manifest(&conn, databases);
        streams.commit(manifest)
    }

    fn restore(&self, ctx: &RestoreContext) -> Result<RestoreReport> {
        let items = restore_items(&ctx.manifest(), ctx.only, ctx.rename)?;
        // The snapshot's format decides, not the target's configured method.
        if ctx.manifest()["method"] == "mongodump" {
            restore_mongodump(self, ctx, &items)
        } else {
            restore_driver(self, ctx, &items)
        }
    }

    fn inspect(&self) -> Result<Value> {
        let conn = Conn::open(self)?;
        let counts = conn.counts(self)?;
        let mut m = self.manifest(&conn, counts);
        if let Value::Object(o) = &mut m {
            o.remove("method");
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_secrets() {
        let cfg: MongodbConfig =
            toml::from_str("uri = \"mongodb://u:hunter2@h/\"\ndatabases = [\"app\"]\n").unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
        assert!(toml::from_str::<MongodbConfig>("uri = \"x\"\nmethod = \"tar\"\n").is_err());
        assert!(toml::from_str::<MongodbConfig>("uri = \"x\"\ndatabse = \"a\"\n").is_err());
    }
}
