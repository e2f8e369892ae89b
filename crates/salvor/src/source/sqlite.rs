//! `sqlite`: a consistent online copy of a SQLite database, taken while other
//! processes keep writing to it.
//!
//! ```toml
//! [source.app_db]
//! type = "sqlite"
//! path = "/var/lib/app/app.db"
//! restore_to = "/var/lib/app/restored.db"   # optional; default: `path` itself
//! busy_timeout_ms = 10000                    # optional; default 10 s
//! ```
//!
//! # Design
//!
//! The copy is made with SQLite's online backup API, in a single step
//! (`sqlite3_backup_step(-1)`): the whole database is copied under one read
//! transaction, so the copy is exactly one committed state. (Copying in small
//! steps would let a busy writer restart the backup forever.) In WAL mode the
//! writers are not blocked at all; in rollback-journal mode they wait for the
//! read lock, which is why `busy_timeout_ms` matters.
//!
//! The destination is a private in-memory database (SQLite's `memdb` VFS),
//! which is then serialized without a copy (`sqlite3_serialize` with
//! `SQLITE_SERIALIZE_NOCOPY`) and streamed into the repository. Nothing is
//! written to disk, nothing has to be cleaned up after a crash, and the counts
//! in the manifest are taken from the very bytes that are stored. The price is
//! memory: the copy needs as much RAM as the database is large.
//!
//! Alternatives considered: backing up into a private temporary file and
//! streaming that (no memory bound, but a full second copy on disk and a file
//! to clean up); reading the database file inside a read transaction (wrong in
//! WAL mode, where committed pages live in the `-wal` file); `VACUUM INTO`
//! (also a file, and it rewrites the database).
//!
//! Restore loads the stream into memory, checks it (`PRAGMA integrity_check`
//! and row counts against the manifest) and copies it into the target with the
//! backup API, so a target that other connections have open is replaced under
//! SQLite's own locking rather than by renaming a file underneath them.
//!
//! The manifest (also the shape of `inspect`):
//!
//! ```json
//! { "type": "sqlite", "path": "...", "stream": "db.sqlite", "bytes": 8192,
//!   "blake3": "...", "sqlite_version": "3.49.1", "page_size": 4096,
//!   "page_count": 2, "integrity_check": "ok", "tables": { "items": 10 } }
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, MAIN_DB, OpenFlags};
use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use salvor_engine::{Error, ErrorKind, Result};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{BackupContext, HashingReader, RestoreContext, RestoreReport, Source};
use crate::config::bounded;

/// The stream's name inside the snapshot.
const STREAM: &str = "db.sqlite";

/// Configuration of a `sqlite` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file.
    pub path: PathBuf,
    /// Where a restore writes when `--into` is not given (default: `path`).
    #[serde(default)]
    pub restore_to: Option<PathBuf>,
    /// How long to wait for a lock held by a writer, in milliseconds.
    #[serde(
        default = "default_busy_timeout",
        deserialize_with = "bounded::timeout_ms"
    )]
    pub busy_timeout_ms: u64,
}

fn default_busy_timeout() -> u64 {
    10_000
}

/// Maps a SQLite error on `path` to a one-line error.
fn sql_err(what: &str, path: &Path) -> impl FnOnce(rusqlite::Error) -> Error {
    let msg = format!("{what} sqlite database {}", path.display());
    move |e| Error::new(ErrorKind::Io, msg).source(e)
}

/// A private, empty in-memory database on the `memdb` VFS (serializable without a copy).
///
/// Exclusive locking mode lets it read a copy whose header says WAL mode
/// (`memdb` has no shared memory for a WAL index); the header is kept as is,
/// so a restored database comes back in the journal mode it had.
fn memdb() -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags("file:salvor-copy?vfs=memdb", flags)
        .and_then(|c| {
            c.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
            Ok(c)
        })
        .map_err(|e| {
            Error::new(ErrorKind::Io, "cannot create an in-memory sqlite database").source(e)
        })
}

/// Copies all of `from` into `to` in one backup step, retrying while locked.
fn copy_all(from: &Connection, to: &mut Connection, timeout: Duration) -> rusqlite::Result<()> {
    let backup = Backup::new(from, to)?;
    let start = Instant::now();
    loop {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            _ if start.elapsed() >= timeout => {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some("database stayed locked".into()),
                ));
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Quotes an identifier for SQL.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Version, page counts, integrity check and rows per table of one database.
fn stats(conn: &Connection) -> rusqlite::Result<Map<String, Value>> {
    let int = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
    let version: String = conn.query_row("SELECT sqlite_version()", [], |r| r.get(0))?;
    let mut out = Map::new();
    out.insert("sqlite_version".into(), version.into());
    out.insert("page_size".into(), int("PRAGMA page_size")?.into());
    out.insert("page_count".into(), int("PRAGMA page_count")?.into());
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    out.insert("integrity_check".into(), problems.join("; ").into());
    out.insert("tables".into(), Value::Object(table_counts(conn)?));
    Ok(out)
}

/// Rows per ordinary table (virtual tables are skipped: their module may be missing).
fn table_counts(conn: &Connection) -> rusqlite::Result<Map<String, Value>> {
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             AND coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL%' ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Map::new();
    for name in names {
        let n: i64 =
            conn.query_row(&format!("SELECT count(*) FROM {}", quote(&name)), [], |r| {
                r.get(0)
            })?;
        out.insert(name, n.into());
    }
    Ok(out)
}

impl SqliteConfig {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.busy_timeout_ms)
    }

    /// Opens the live database read-only (never creates it).
    fn open_source(&self) -> Result<Connection> {
        if !self.path.is_file() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("sqlite database {} does not exist", self.path.display()),
            )
            .hint("check `path` in the source's configuration"));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)
            .map_err(sql_err("cannot open", &self.path))?;
        conn.busy_timeout(self.timeout())
            .map_err(sql_err("cannot open", &self.path))?;
        Ok(conn)
    }

    /// A consistent in-memory copy of the live database.
    fn online_copy(&self) -> Result<Connection> {
        let src = self.open_source()?;
        let mut copy = memdb()?;
        copy_all(&src, &mut copy, self.timeout()).map_err(sql_err("cannot copy", &self.path))?;
        Ok(copy)
    }

    /// Where a restore writes.
    fn target(&self, ctx: &RestoreContext) -> PathBuf {
        ctx.rename
            .map(PathBuf::from)
            .or_else(|| self.restore_to.clone())
            .unwrap_or_else(|| self.path.clone())
    }
}

/// Loads a snapshot's database into memory and checks it against the manifest.
fn load_checked(ctx: &RestoreContext) -> Result<(Connection, Map<String, Value>)> {
    let manifest = ctx.manifest();
    let stream = manifest["stream"].as_str().unwrap_or(STREAM);
    let mut bytes = Vec::with_capacity(manifest["bytes"].as_u64().unwrap_or(0) as usize);
    ctx.copy_stream(stream, &mut bytes)?;
    let mut mem = memdb()?;
    let len = bytes.len();
    mem.deserialize_read_exact(MAIN_DB, &bytes[..], len, false)
        .map_err(|e| Error::corrupt(format!("stream {stream} is not a sqlite database: {e}")))?;
    drop(bytes);
    let found = stats(&mem).map_err(|e| {
        Error::corrupt(format!(
            "stream {stream} is not a readable sqlite database: {e}"
        ))
    })?;
    if found["integrity_check"] != "ok" {
        return Err(Error::corrupt(format!(
            "the backed-up sqlite database fails integrity_check: {}",
            found["integrity_check"]
        )));
    }
    if manifest.get("tables").is_some() && found["tables"] != manifest["tables"] {
        return Err(Error::corrupt(format!(
            "row counts of the backed-up sqlite database differ from its manifest: {} vs {}",
            found["tables"], manifest["tables"]
        )));
    }
    Ok((mem, found))
}

/// Writes `mem` into the database at `target` and returns the target's stats.
fn write_target(mem: &Connection, target: &Path, timeout: Duration) -> Result<Map<String, Value>> {
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
    }
    let mut out = Connection::open(target).map_err(sql_err("cannot open", target))?;
    out.busy_timeout(timeout)
        .map_err(sql_err("cannot open", target))?;
    copy_all(mem, &mut out, timeout).map_err(sql_err("cannot write", target))?;
    stats(&out).map_err(sql_err("cannot read back", target))
}

impl Source for &SqliteConfig {
    fn backup(&self, ctx: &BackupContext) -> Result<(SnapshotId, Snapshot)> {
        let mut copy = self.online_copy()?;
        let mut manifest = stats(&copy).map_err(sql_err("cannot check the copy of", &self.path))?;
        let data = copy
            .serialize(MAIN_DB)
            .map_err(sql_err("cannot serialize the copy of", &self.path))?;
        let mut streams = ctx.streams()?;
        let mut h = HashingReader::new(&data[..]);
        streams.add(STREAM, &mut h)?;
        manifest.insert("type".into(), "sqlite".into());
        manifest.insert("path".into(), self.path.display().to_string().into());
        manifest.insert("stream".into(), STREAM.into());
        manifest.insert("bytes".into(), h.count().into());
        manifest.insert("blake3".into(), h.hex().into());
        streams.commit(Value::Object(manifest))
    }

    fn restore(&self, ctx: &RestoreContext) -> Result<RestoreReport> {
        if !ctx.only.is_empty() {
            return Err(
                Error::invalid("the sqlite source restores whole databases").hint(
                    "drop --only; restore elsewhere with --into PATH and copy the tables you need",
                ),
            );
        }
        let target = self.target(ctx);
        let (mem, found) = load_checked(ctx)?;
        let mut report = RestoreReport::default();
        let exists = target.exists();
        let verb = if exists { "overwrite" } else { "create" };
        report.actions.push(format!(
            "{verb} sqlite database {} ({} pages, integrity ok)",
            target.display(),
            found["page_count"]
        ));
        if exists {
            ctx.confirm(
                &format!("sqlite database {}", target.display()),
                "--into PATH",
            )?;
        }
        if ctx.dry_run {
            report.counts = found["tables"].as_object().cloned().unwrap_or_default();
            return Ok(report);
        }
        let written = write_target(&mem, &target, self.timeout())?;
        if written["integrity_check"] != "ok" || written["tables"] != found["tables"] {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "restored sqlite database {} does not match the backup",
                    target.display()
                ),
            )
            .hint("check that no other process writes to it during the restore"));
        }
        report
            .actions
            .push("integrity_check ok, row counts match the manifest".into());
        report.counts = written["tables"].as_object().cloned().unwrap_or_default();
        Ok(report)
    }

    fn inspect(&self) -> Result<Value> {
        let mut conn = self.open_source()?;
        let tx = conn
            .transaction()
            .map_err(sql_err("cannot read", &self.path))?;
        let mut out = stats(&tx).map_err(sql_err("cannot read", &self.path))?;
        drop(tx);
        out.insert("type".into(), "sqlite".into());
        out.insert("path".into(), self.path.display().to_string().into());
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn copy_of_memory_database_has_counts() {
        let src = Connection::open_in_memory().unwrap();
        src.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
            .unwrap();
        let mut copy = memdb().unwrap();
        copy_all(&src, &mut copy, Duration::from_secs(1)).unwrap();
        let s = stats(&copy).unwrap();
        assert_eq!(s["integrity_check"], "ok");
        assert_eq!(s["tables"], json!({ "t": 2 }));
    }
}
