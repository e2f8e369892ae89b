//! The mongodump method: `mongodump --archive` streamed into one stream and
//! fed back to `mongorestore --archive`, the uri passed in a private file.

use std::io::Write;
use std::path::PathBuf;

use salvor_engine::{Error, Result};

use super::MongodbConfig;
use super::connection::Conn;
use super::plan::{Item, check_targets, describe};
use crate::source::{RestoreContext, RestoreReport, Streams, process};

/// The stream of the mongodump method.
const ARCHIVE: &str = "dump.archive";

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
pub(super) fn backup_mongodump(
    cfg: &MongodbConfig,
    conn: &Conn,
    streams: &mut Streams,
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
    let child = process::spawn_reader(cmd, "mongodump")?.stop_on(streams.cancel());
    streams.add(ARCHIVE, child)?;
    Ok(oplog)
}

/// `mongorestore --archive` from the stream.
pub(super) fn restore_mongodump(
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
