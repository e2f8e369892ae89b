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

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::options::ClientOptions;
use mongodb::sync::{Client, Collection, Cursor};
use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use salvor_engine::{Error, ErrorKind, Result};
use serde::Deserialize;
use serde_json::{Value, json};

use super::secret::Secret;
use super::{BackupContext, RestoreContext, RestoreReport, Source, process};

/// Databases never dumped when `databases` is empty.
const INTERNAL_DATABASES: [&str; 3] = ["admin", "config", "local"];
/// Bytes of documents per `insertMany` at most (the server's message limit is 48 MB).
const BATCH_BYTES: usize = 8 << 20;
/// Largest BSON document accepted from a stream (the server's limit is 16 MiB).
const MAX_DOCUMENT: usize = 48 << 20;
/// The stream of the mongodump method.
const ARCHIVE: &str = "dump.archive";

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
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Documents per insert on restore.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Directory holding `mongodump` and `mongorestore` (default: PATH).
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
}

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

// ------------------------------------------------------------------ connection

/// A connected client and the hosts it talks to (for messages).
struct Conn {
    client: Client,
    hosts: String,
}

/// One line of a driver error, at most 300 characters.
fn one_line(e: &mongodb::error::Error) -> String {
    let s: String = e
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if s.chars().count() > 300 {
        format!("{}...", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

impl Conn {
    fn open(cfg: &MongodbConfig) -> Result<Self> {
        let uri = cfg.uri.resolve()?;
        let mut opts = ClientOptions::parse(uri.as_str()).run().map_err(|_| {
            Error::invalid("the mongodb uri of this source is not a valid connection string")
                .hint("write it as mongodb://[user:password@]host[:port][/?options]")
        })?;
        let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        opts.server_selection_timeout = Some(timeout);
        opts.connect_timeout = Some(timeout);
        opts.app_name = Some("salvor".into());
        let hosts = opts
            .hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let client = Client::with_options(opts).map_err(|e| {
            Error::invalid(format!(
                "cannot set up a mongodb client for {hosts}: {}",
                one_line(&e)
            ))
        })?;
        Ok(Self { client, hosts })
    }

    /// Wraps a driver error: what failed, where, why.
    fn err(&self, what: &str, e: &mongodb::error::Error) -> Error {
        Error::new(
            ErrorKind::Io,
            format!(
                "{what} on mongodb at {} failed: {}",
                self.hosts,
                one_line(e)
            ),
        )
        .hint("check that the server is up and the source's uri and credentials are right")
    }

    fn server_version(&self) -> Option<String> {
        let info = self
            .client
            .database("admin")
            .run_command(doc! { "buildInfo": 1 })
            .run()
            .ok()?;
        info.get_str("version").ok().map(str::to_string)
    }

    fn is_replica_set(&self) -> Result<bool> {
        let hello = self
            .client
            .database("admin")
            .run_command(doc! { "hello": 1 })
            .run()
            .map_err(|e| self.err("hello", &e))?;
        Ok(hello.contains_key("setName"))
    }

    /// The configured databases, or every user database.
    fn databases(&self, cfg: &MongodbConfig) -> Result<Vec<String>> {
        if !cfg.databases.is_empty() {
            return Ok(cfg.databases.clone());
        }
        let mut names = self
            .client
            .list_database_names()
            .run()
            .map_err(|e| self.err("listing databases", &e))?;
        names.retain(|n| !INTERNAL_DATABASES.contains(&n.as_str()));
        names.sort();
        Ok(names)
    }

    /// A database's collections (not views, not `system.*`), sorted.
    ///
    /// Runs `listCollections` as a raw cursor command: typed collection
    /// specifications would also parse fields salvor does not need (the
    /// nx-27017 stand-in sends `info.uuid` as a string, for one).
    fn collections(&self, db: &str) -> Result<Vec<String>> {
        let what = format!("listing collections of {db}");
        let specs = self
            .client
            .database(db)
            .run_cursor_command(doc! { "listCollections": 1, "authorizedCollections": true })
            .run()
            .map_err(|e| self.err(&what, &e))?;
        let mut names = Vec::new();
        for spec in specs {
            let spec = spec.map_err(|e| self.err(&what, &e))?;
            let is_view = spec.get_str("type").is_ok_and(|t| t != "collection");
            match spec.get_str("name") {
                Ok(n) if !is_view && !n.starts_with("system.") => names.push(n.to_string()),
                _ => {}
            }
        }
        names.sort();
        Ok(names)
    }

    fn collection(&self, db: &str, coll: &str) -> Collection<RawDocumentBuf> {
        self.client.database(db).collection(coll)
    }

    fn count(&self, db: &str, coll: &str) -> Result<u64> {
        self.collection(db, coll)
            .count_documents(doc! {})
            .run()
            .map_err(|e| self.err(&format!("counting {db}.{coll}"), &e))
    }

    /// The `listIndexes` specs of a collection (empty if it does not exist).
    fn indexes(&self, db: &str, coll: &str) -> Result<Vec<Document>> {
        let what = format!("listing indexes of {db}.{coll}");
        let cursor = self
            .client
            .database(db)
            .collection::<Document>(coll)
            .list_indexes()
            .run();
        let cursor = match cursor {
            Ok(c) => c,
            Err(e) if is_namespace_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(&what, &e)),
        };
        let mut out = Vec::new();
        for model in cursor {
            let model = model.map_err(|e| self.err(&what, &e))?;
            let spec = mongodb::bson::to_document(&model).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("{what}: cannot encode an index: {e}"),
                )
            })?;
            out.push(spec);
        }
        Ok(out)
    }

    /// Live counts in the manifest's shape.
    fn counts(&self, cfg: &MongodbConfig) -> Result<serde_json::Map<String, Value>> {
        let mut dbs = serde_json::Map::new();
        for db in self.databases(cfg)? {
            let mut colls = serde_json::Map::new();
            for coll in self.collections(&db)? {
                let documents = self.count(&db, &coll)?;
                let indexes = self.indexes(&db, &coll)?.len();
                colls.insert(coll, json!({ "documents": documents, "indexes": indexes }));
            }
            dbs.insert(db, Value::Object(colls));
        }
        Ok(dbs)
    }
}

fn is_namespace_not_found(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, mongodb::error::ErrorKind::Command(c) if c.code == 26)
}

// ------------------------------------------------------------------ streams

/// Percent-encodes `/` and `%` so a collection name is one path component.
fn encode_name(coll: &str) -> String {
    coll.replace('%', "%25").replace('/', "%2F")
}

fn documents_stream(db: &str, coll: &str) -> String {
    format!("{db}/{}.bson", encode_name(coll))
}

fn indexes_stream(db: &str, coll: &str) -> String {
    format!("{db}/{}.indexes.json", encode_name(coll))
}

/// A cursor read as concatenated BSON documents.
struct DocReader {
    cursor: Cursor<RawDocumentBuf>,
    doc: Vec<u8>,
    pos: usize,
    count: u64,
    error: Option<mongodb::error::Error>,
}

impl Read for DocReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.doc.len() {
            match self.cursor.next() {
                None => return Ok(0),
                Some(Ok(d)) => {
                    self.doc = d.into_bytes();
                    self.pos = 0;
                    self.count += 1;
                }
                Some(Err(e)) => {
                    let msg = one_line(&e);
                    self.error = Some(e);
                    return Err(io::Error::other(msg));
                }
            }
        }
        let n = out.len().min(self.doc.len() - self.pos);
        out[..n].copy_from_slice(&self.doc[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Index specs as canonical extended JSON.
fn indexes_json(specs: &[Document]) -> Vec<u8> {
    let list: Vec<Value> = specs
        .iter()
        .map(|d| Bson::Document(d.clone()).into_canonical_extjson())
        .collect();
    serde_json::to_vec_pretty(&list).unwrap_or_default()
}

/// Dumps one collection's documents and indexes; returns their counts.
fn dump_collection(
    conn: &Conn,
    streams: &mut super::Streams,
    db: &str,
    coll: &str,
) -> Result<Value> {
    let indexes = conn.indexes(db, coll)?;
    let cursor = conn
        .collection(db, coll)
        .find(doc! {})
        .run()
        .map_err(|e| conn.err(&format!("reading {db}.{coll}"), &e))?;
    let mut reader = DocReader {
        cursor,
        doc: Vec::new(),
        pos: 0,
        count: 0,
        error: None,
    };
    let res = streams.add(&documents_stream(db, coll), &mut reader);
    if let Some(e) = reader.error.take() {
        return Err(conn.err(&format!("reading {db}.{coll}"), &e));
    }
    res?;
    streams.add(&indexes_stream(db, coll), &indexes_json(&indexes)[..])?;
    Ok(json!({ "documents": reader.count, "indexes": indexes.len() }))
}

// ------------------------------------------------------------------ restore plan

/// One collection to restore.
#[derive(Debug, Clone, PartialEq)]
struct Item {
    db: String,
    coll: String,
    into: String,
    documents: u64,
    indexes: u64,
}

/// The collections of a manifest that `--only` selects, under `--into`'s name.
fn restore_items(manifest: &Value, only: &[String], into: Option<&str>) -> Result<Vec<Item>> {
    let dbs = manifest["databases"]
        .as_object()
        .ok_or_else(|| Error::corrupt("the snapshot's mongodb manifest lists no databases"))?;
    let all: Vec<Item> = dbs
        .iter()
        .flat_map(|(db, colls)| {
            colls
                .as_object()
                .into_iter()
                .flatten()
                .map(move |(coll, c)| Item {
                    db: db.clone(),
                    coll: coll.clone(),
                    into: db.clone(),
                    documents: c["documents"].as_u64().unwrap_or(0),
                    indexes: c["indexes"].as_u64().unwrap_or(0),
                })
        })
        .collect();
    let matches =
        |o: &str, i: &Item| o == i.db || o == i.coll || o == format!("{}.{}", i.db, i.coll);
    if let Some(unknown) = only.iter().find(|o| !all.iter().any(|i| matches(o, i))) {
        let names: Vec<String> = all.iter().map(|i| format!("{}.{}", i.db, i.coll)).collect();
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("{unknown} is not in the snapshot"),
        )
        .hint(format!(
            "pass --only with a database or collection of: {}",
            names.join(", ")
        )));
    }
    let mut chosen: Vec<Item> = all
        .into_iter()
        .filter(|i| only.is_empty() || only.iter().any(|o| matches(o, i)))
        .collect();
    if let Some(name) = into {
        let mut dbs: Vec<&str> = chosen.iter().map(|i| i.db.as_str()).collect();
        dbs.dedup();
        if dbs.len() > 1 {
            return Err(Error::invalid(format!(
                "--into renames one database, but the selection holds {}",
                dbs.join(", ")
            ))
            .hint("pick one database with --only"));
        }
        check_db_name(name)?;
        for i in &mut chosen {
            i.into = name.to_string();
        }
    }
    Ok(chosen)
}

fn check_db_name(name: &str) -> Result<()> {
    let bad =
        name.is_empty() || name.len() > 63 || name.contains(['/', '\\', '.', ' ', '"', '$', '\0']);
    if bad {
        return Err(
            Error::invalid(format!("{name:?} is not a valid mongodb database name"))
                .hint("use letters, digits, '-' and '_'"),
        );
    }
    Ok(())
}

/// Asks before replacing non-empty targets; returns each target's document count.
///
/// Only collections that exist are counted: counting a missing one may
/// create it on some servers (the nx-27017 stand-in does).
fn check_targets(conn: &Conn, ctx: &RestoreContext, items: &[Item]) -> Result<Vec<u64>> {
    let mut present: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for i in items {
        if !present.contains_key(i.into.as_str()) {
            present.insert(&i.into, conn.collections(&i.into)?);
        }
    }
    let existing: Vec<u64> = items
        .iter()
        .map(|i| {
            if present[i.into.as_str()].contains(&i.coll) {
                conn.count(&i.into, &i.coll)
            } else {
                Ok(0)
            }
        })
        .collect::<Result<_>>()?;
    let full: Vec<String> = items
        .iter()
        .zip(&existing)
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| format!("{}.{} ({n} documents)", i.into, i.coll))
        .collect();
    if !full.is_empty() {
        ctx.confirm(&format!("non-empty collections {}", full.join(", ")))?;
    }
    Ok(existing)
}

// ------------------------------------------------------------------ restore (driver)

/// Parses concatenated BSON written to it and inserts it in batches.
struct Inserter<'c> {
    conn: &'c Conn,
    coll: Collection<RawDocumentBuf>,
    name: String,
    buf: Vec<u8>,
    batch: Vec<RawDocumentBuf>,
    batch_bytes: usize,
    batch_size: usize,
    inserted: u64,
    error: Option<Error>,
}

impl Inserter<'_> {
    fn fail(&mut self, e: Error) -> io::Error {
        let msg = e.to_string();
        self.error = Some(e);
        io::Error::other(msg)
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.coll
            .insert_many(&batch)
            .run()
            .map_err(|e| self.conn.err(&format!("inserting into {}", self.name), &e))?;
        self.inserted += batch.len() as u64;
        Ok(())
    }

    /// Moves every complete document of `buf` into the batch.
    fn take_documents(&mut self) -> Result<()> {
        let mut start = 0;
        while self.buf.len() - start >= 4 {
            let len_bytes: [u8; 4] = self.buf[start..start + 4].try_into().expect("4 bytes");
            let len = i32::from_le_bytes(len_bytes);
            let len = usize::try_from(len).unwrap_or(0);
            if !(5..=MAX_DOCUMENT).contains(&len) {
                return Err(Error::corrupt(format!(
                    "the stream of {} has a bad document length",
                    self.name
                )));
            }
            if self.buf.len() - start < len {
                break;
            }
            let doc =
                RawDocumentBuf::from_bytes(self.buf[start..start + len].to_vec()).map_err(|e| {
                    Error::corrupt(format!(
                        "the stream of {} holds an invalid document: {e}",
                        self.name
                    ))
                })?;
            start += len;
            self.batch_bytes += len;
            self.batch.push(doc);
            if self.batch.len() >= self.batch_size || self.batch_bytes >= BATCH_BYTES {
                self.flush_batch()?;
            }
        }
        self.buf.drain(..start);
        Ok(())
    }

    fn finish(&mut self) -> Result<u64> {
        if !self.buf.is_empty() {
            return Err(Error::corrupt(format!(
                "the stream of {} ends inside a document",
                self.name
            )));
        }
        self.flush_batch()?;
        Ok(self.inserted)
    }
}

impl Write for Inserter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.take_documents().map_err(|e| self.fail(e))?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads a collection's index specs from the snapshot.
fn recorded_indexes(ctx: &RestoreContext, i: &Item) -> Result<Vec<Document>> {
    let mut raw = Vec::new();
    ctx.copy_stream(&indexes_stream(&i.db, &i.coll), &mut raw)?;
    let bad = |why: String| {
        Error::corrupt(format!(
            "the index list of {}.{} is unreadable: {why}",
            i.db, i.coll
        ))
    };
    let list: Vec<Value> = serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))?;
    list.into_iter()
        .map(|v| match Bson::try_from(v) {
            Ok(Bson::Document(d)) => Ok(d),
            Ok(_) => Err(bad("an entry is not a document".into())),
            Err(e) => Err(bad(e.to_string())),
        })
        .collect()
}

/// Creates the recorded secondary indexes (`_id_` exists anyway); returns how many.
fn create_indexes(conn: &Conn, i: &Item, specs: Vec<Document>) -> Result<usize> {
    let specs: Vec<Document> = specs
        .into_iter()
        .filter(|s| s.get_str("name").ok() != Some("_id_"))
        .map(|mut s| {
            s.remove("ns");
            s
        })
        .collect();
    if specs.is_empty() {
        return Ok(0);
    }
    let n = specs.len();
    conn.client
        .database(&i.into)
        .run_command(doc! { "createIndexes": &i.coll, "indexes": specs })
        .run()
        .map_err(|e| conn.err(&format!("creating indexes on {}.{}", i.into, i.coll), &e))?;
    Ok(n)
}

/// Loads one collection: drop if it held documents (confirmed), insert, index.
fn restore_collection(
    cfg: &MongodbConfig,
    conn: &Conn,
    ctx: &RestoreContext,
    i: &Item,
    existing: u64,
) -> Result<(u64, usize)> {
    let target = conn.collection(&i.into, &i.coll);
    let name = format!("{}.{}", i.into, i.coll);
    if existing > 0 {
        target
            .drop()
            .run()
            .map_err(|e| conn.err(&format!("dropping {name}"), &e))?;
    }
    let specs = recorded_indexes(ctx, i)?;
    let mut ins = Inserter {
        conn,
        coll: target,
        name,
        buf: Vec::new(),
        batch: Vec::new(),
        batch_bytes: 0,
        batch_size: cfg.batch_size.max(1),
        inserted: 0,
        error: None,
    };
    let res = ctx.copy_stream(&documents_stream(&i.db, &i.coll), &mut ins);
    if let Some(e) = ins.error.take() {
        return Err(e);
    }
    res?;
    let inserted = ins.finish()?;
    let indexes = create_indexes(conn, i, specs)?;
    Ok((inserted, indexes))
}

fn describe(i: &Item, existing: u64) -> String {
    let replace = if existing > 0 {
        format!(", replacing {existing} documents")
    } else {
        String::new()
    };
    format!(
        "{}.{} into {}.{} ({} documents, {} indexes{replace})",
        i.db, i.coll, i.into, i.coll, i.documents, i.indexes
    )
}

fn restore_driver(
    cfg: &MongodbConfig,
    ctx: &RestoreContext,
    items: &[Item],
) -> Result<RestoreReport> {
    let conn = Conn::open(cfg)?;
    let existing = check_targets(&conn, ctx, items)?;
    let mut report = RestoreReport::default();
    for (i, &n) in items.iter().zip(&existing) {
        if ctx.dry_run {
            report
                .actions
                .push(format!("would restore {}", describe(i, n)));
            report
                .counts
                .insert(format!("{}.{}", i.into, i.coll), i.documents.into());
            continue;
        }
        let (inserted, indexes) = restore_collection(cfg, &conn, ctx, i, n)?;
        report.actions.push(format!(
            "restored {}.{} into {}.{}: {inserted} documents, {indexes} secondary indexes",
            i.db, i.coll, i.into, i.coll
        ));
        report
            .counts
            .insert(format!("{}.{}", i.into, i.coll), inserted.into());
    }
    Ok(report)
}

// ------------------------------------------------------------------ mongodump method

/// A private temporary `--config` file holding the uri, removed on drop.
///
/// mongodump and mongorestore (100.3+) read `uri:` from it, which keeps the
/// password out of argv and the environment of other processes.
struct UriFile(PathBuf);

impl UriFile {
    fn new(uri: &str) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path =
            std::env::temp_dir().join(format!("salvor-mongo-{}-{nanos}.yaml", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("cannot create", &path, e))?;
        // A YAML double-quoted scalar accepts JSON string escapes.
        let line = format!("uri: {}\n", serde_json::Value::String(uri.to_string()));
        f.write_all(line.as_bytes())
            .map_err(|e| Error::io("cannot write", &path, e))?;
        Ok(Self(path))
    }

    fn arg(&self) -> String {
        format!("--config={}", self.0.display())
    }
}

impl Drop for UriFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `mongodump --archive` into one stream.
fn backup_mongodump(
    cfg: &MongodbConfig,
    conn: &Conn,
    streams: &mut super::Streams,
) -> Result<bool> {
    let file = UriFile::new(&cfg.uri.resolve()?)?;
    let mut cmd = cfg.tool("mongodump");
    cmd.arg(file.arg()).arg("--archive").arg("--quiet");
    for db in &cfg.databases {
        cmd.arg(format!("--nsInclude={db}.*"));
    }
    // --oplog only works on full dumps of a replica set member.
    let oplog = cfg.databases.is_empty() && conn.is_replica_set()?;
    if oplog {
        cmd.arg("--oplog");
    }
    let child = process::spawn_reader(cmd, "mongodump")?;
    streams.add(ARCHIVE, child)?;
    Ok(oplog)
}

/// `mongorestore --archive` from the stream.
fn restore_mongodump(
    cfg: &MongodbConfig,
    ctx: &RestoreContext,
    items: &[Item],
) -> Result<RestoreReport> {
    let conn = Conn::open(cfg)?;
    check_targets(&conn, ctx, items)?;
    let mut report = RestoreReport::default();
    for i in items {
        report.actions.push(format!(
            "{} {}",
            if ctx.dry_run {
                "would restore"
            } else {
                "mongorestore"
            },
            describe(i, 0)
        ));
        report
            .counts
            .insert(format!("{}.{}", i.into, i.coll), i.documents.into());
    }
    if ctx.dry_run {
        return Ok(report);
    }
    let file = UriFile::new(&cfg.uri.resolve()?)?;
    let mut cmd = cfg.tool("mongorestore");
    cmd.arg(file.arg()).arg("--archive").arg("--quiet");
    if ctx.yes {
        cmd.arg("--drop");
    }
    let partial = !ctx.only.is_empty() || ctx.rename.is_some();
    if ctx.manifest()["oplog"] == true && !partial {
        cmd.arg("--oplogReplay");
    }
    if !ctx.only.is_empty() {
        for i in items {
            cmd.arg(format!("--nsInclude={}.{}", i.db, i.coll));
        }
    }
    if let (Some(into), Some(first)) = (ctx.rename, items.first()) {
        cmd.arg(format!("--nsFrom={}.*", first.db))
            .arg(format!("--nsTo={into}.*"));
    }
    process::run_with_input(cmd, "mongorestore", &mut |w| {
        ctx.copy_stream(ARCHIVE, w).map(|_| ())
    })?;
    Ok(report)
}

// ------------------------------------------------------------------ Source

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
        let items = restore_items(ctx.manifest(), ctx.only, ctx.rename)?;
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

    fn manifest() -> Value {
        json!({ "databases": {
            "app": { "users": { "documents": 3, "indexes": 2 }, "orders": { "documents": 5, "indexes": 1 } },
            "auth": { "keys": { "documents": 1, "indexes": 1 } },
        }})
    }

    #[test]
    fn only_and_into_select_and_rename() {
        let all = restore_items(&manifest(), &[], None).unwrap();
        assert_eq!(all.len(), 3);
        let one = restore_items(&manifest(), &["app.users".into()], Some("copy")).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(
            (one[0].db.as_str(), one[0].into.as_str(), one[0].documents),
            ("app", "copy", 3)
        );
        let db = restore_items(&manifest(), &["app".into()], None).unwrap();
        assert_eq!(db.len(), 2);
        let err = restore_items(&manifest(), &[], Some("copy"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--into renames one database"), "{err}");
        let err = restore_items(&manifest(), &["nope".into()], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope is not in the snapshot") && err.contains("app.users"),
            "{err}"
        );
        assert!(restore_items(&manifest(), &["app".into()], Some("a.b")).is_err());
    }

    #[test]
    fn names_and_secrets() {
        assert_eq!(documents_stream("app", "a/b%c"), "app/a%2Fb%25c.bson");
        assert_eq!(indexes_stream("app", "x"), "app/x.indexes.json");
        let cfg: MongodbConfig =
            toml::from_str("uri = \"mongodb://u:hunter2@h/\"\ndatabases = [\"app\"]\n").unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
        assert!(toml::from_str::<MongodbConfig>("uri = \"x\"\nmethod = \"tar\"\n").is_err());
        assert!(toml::from_str::<MongodbConfig>("uri = \"x\"\ndatabse = \"a\"\n").is_err());
    }
}
