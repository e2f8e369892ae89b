//! `mysql`: MySQL and MariaDB backups with `mysqldump` (or `mariadb-dump`),
//! restored with `mysql` (or `mariadb`).
//!
//! ```toml
//! [source.shop_db]
//! type = "mysql"
//! host = "db.internal"
//! port = 3306
//! user = "backup"
//! password = { file = "/etc/salvor/shop-db.pw" }
//! databases = ["shop"]   # default: every database except the system ones
//! ```
//!
//! Design choices:
//! - **One plain SQL stream per database** (`<db>.sql`), dumped with
//!   `--single-transaction --routines --triggers --events --hex-blob
//!   --skip-dump-date`: a consistent InnoDB snapshot without locking writers,
//!   binary data as hex (safe through any client), and no timestamp, so an
//!   unchanged database dumps byte-identical and deduplicates completely. The
//!   dump has no `CREATE DATABASE`/`USE`, so it restores under any name.
//! - **Counts from the dump itself.** `mysqldump` opens its own snapshot that
//!   salvor cannot share, so the manifest's per-table row counts are counted in
//!   the stream as it passes (the tuples of each `INSERT`): they are exactly
//!   what the snapshot holds. `inspect` counts live tables with `COUNT(*)`.
//! - **Credentials** reach the tools as `MYSQL_PWD` (never argv).
//! - **Restore** pipes the stream into the client. A database holding tables is
//!   dropped and recreated (with its recorded character set) only after
//!   confirmation (`--yes`). `--only` keeps the dump's sections of the chosen
//!   tables (`-- Table structure for table` and `-- Dumping data for table`,
//!   which also carries the table's triggers); each begins with `DROP TABLE IF
//!   EXISTS`, so chosen tables are replaced and the rest is left alone.
//!   Counts are read back and must equal the manifest.

mod conn;
mod dump;
mod restore;

use std::path::PathBuf;

use salvor_engine::Result;
use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::lines::ScanReader;
use super::secret::Secret;
use super::{BackupContext, RestoreContext, RestoreReport, Source, Streams, process};
use crate::config::bounded;
use conn::Conn;
use dump::InsertCounter;
use restore::plan;

/// Configuration of a `mysql` source (MySQL or MariaDB).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// Server host name or IP address (client default when unset).
    #[serde(default)]
    pub host: Option<String>,
    /// Server port (client default when unset).
    #[serde(default, deserialize_with = "bounded::port_opt")]
    pub port: Option<u16>,
    /// Unix socket path, instead of host and port.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// User to connect as.
    #[serde(default)]
    pub user: Option<String>,
    /// Password, passed to the tools as `MYSQL_PWD`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Databases to back up; empty means all but the system databases.
    #[serde(default)]
    pub databases: Vec<String>,
    /// The dump tool (default: `mysqldump`, else `mariadb-dump`, from PATH).
    #[serde(default)]
    pub dump_tool: Option<PathBuf>,
    /// The client (default: `mysql`, else `mariadb`, from PATH).
    #[serde(default)]
    pub client: Option<PathBuf>,
    /// Extra arguments for the dump tool (e.g. `["--set-gtid-purged=OFF"]`).
    #[serde(default)]
    pub dump_args: Vec<String>,
}

/// Rows per table.
use super::sql::Counts;

// ---------------------------------------------------------------- backup

impl MysqlConfig {
    fn dump_database(
        &self,
        conn: &Conn,
        db: &str,
        routines: bool,
        streams: &mut Streams,
    ) -> Result<Value> {
        let charset = conn.charset(db)?;
        let mut cmd = conn.tool(conn.dump_tool());
        cmd.args([
            "--single-transaction",
            "--triggers",
            "--events",
            "--hex-blob",
            "--skip-dump-date",
        ])
        .arg(if routines {
            "--routines"
        } else {
            "--skip-routines"
        })
        .args(&self.dump_args)
        .arg(db);
        let tool = cmd.get_program().to_string_lossy().into_owned();
        let child = process::spawn_reader(cmd, &format!("{tool} of database {db}"))?
            .stop_on(streams.cancel());
        let mut reader = ScanReader::new(child, InsertCounter::default());
        let stream = format!("{db}.sql");
        let bytes = streams.add(&stream, &mut reader)?;
        let (cs, coll) = charset.unzip();
        Ok(json!({
            "stream": stream,
            "bytes": bytes,
            "charset": cs,
            "collation": coll,
            "tables": reader.sink.counts,
        }))
    }
}

impl MysqlConfig {
    /// The configured databases, or every database the server lists.
    fn selected_databases(&self, conn: &Conn) -> Result<Vec<String>> {
        if self.databases.is_empty() {
            conn.list_databases()
        } else {
            Ok(self.databases.clone())
        }
    }
}

impl Source for &MysqlConfig {
    fn backup(&self, ctx: &BackupContext) -> Result<(SnapshotId, Snapshot)> {
        let conn = Conn::new(self)?;
        let version = conn.version()?;
        let dbs = self.selected_databases(&conn)?;
        let tool = conn.dump_tool();
        let denied = conn.routines_denied()?;
        if let Some(why) = &denied {
            tracing::warn!(
                "stored procedures and functions are not backed up: {why} (GRANT SELECT ON mysql.proc TO the backup user to include them)"
            );
        }
        let mut streams = ctx.streams()?;
        let mut databases = serde_json::Map::new();
        for db in &dbs {
            let entry = self.dump_database(&conn, db, denied.is_none(), &mut streams)?;
            databases.insert(db.clone(), entry);
        }
        streams.commit(json!({
            "type": "mysql",
            "routines": match &denied {
                None => Value::from(true),
                Some(why) => Value::from(format!("skipped: {why}")),
            },
            "server_version": version,
            "format": "sql",
            "tool": tool.file_name().map(|n| n.to_string_lossy().into_owned()),
            "consistency": "single transaction per database",
            "databases": databases,
        }))
    }

    fn restore(&self, ctx: &RestoreContext) -> Result<RestoreReport> {
        let plans = plan(&ctx.manifest(), ctx.only, ctx.rename)?;
        let conn = Conn::new(self)?;
        let mut report = RestoreReport::default();
        for p in &plans {
            self.restore_db(&conn, ctx, p, &mut report)?;
        }
        Ok(report)
    }

    fn inspect(&self) -> Result<Value> {
        let conn = Conn::new(self)?;
        let version = conn.version()?;
        let dbs = self.selected_databases(&conn)?;
        let mut databases = serde_json::Map::new();
        for db in &dbs {
            databases.insert(db.clone(), json!({ "tables": conn.counts(db)? }));
        }
        Ok(json!({ "type": "mysql", "server_version": version, "databases": databases }))
    }
}
