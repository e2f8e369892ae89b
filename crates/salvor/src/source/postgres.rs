//! `postgres`: logical backups with `pg_dump`, restored with `psql`.
//!
//! ```toml
//! [source.app_db]
//! type = "postgres"
//! host = "db.internal"
//! port = 5432
//! user = "backup"
//! password = { env = "APP_DB_PASSWORD" }
//! databases = ["app", "billing"]   # default: every database that accepts connections
//! ```
//!
//! Design choices:
//! - **Plain SQL, streamed.** Each database is dumped with `pg_dump
//!   --format=plain` straight into the repository as `<db>.sql`; cluster-wide
//!   objects (roles, tablespaces) go to `globals.sql` via `pg_dumpall
//!   --globals-only`. Plain text deduplicates well between snapshots, where a
//!   compressed custom-format archive changes everywhere after a small edit.
//! - **One snapshot per database.** `pg_dump` dumps each database in one
//!   repeatable-read snapshot while clients keep writing.
//! - **Counts come from the dump.** The rows of every `COPY` block are counted
//!   as the stream goes by: they are exactly what a restore must load back, and
//!   cost no extra scan. `verify_counts = true` also counts every table with
//!   `count(*)` in the same snapshot (a `psql` session exports it with
//!   `pg_export_snapshot()` and `pg_dump --snapshot` imports it), concurrently
//!   with the dump, and fails the backup on any difference.
//! - **Tools** are looked up on PATH, past Debian's `pg_wrapper` (see
//!   `client_program`); the version query and `pg_dumpall` run beside the
//!   database dumps, so a backup costs little more than its `pg_dump`s.
//! - **Credentials** reach the tools as `PGPASSWORD` (never argv); every tool
//!   runs with `-w`, so a missing password fails instead of prompting. The
//!   database name travels in `PGDATABASE`, which libpq never parses as a
//!   connection string.
//! - **Restore** pipes the stream into `psql --single-transaction -v
//!   ON_ERROR_STOP=1`: a failed restore leaves nothing half-loaded. A target
//!   database that holds tables is dropped and recreated only after
//!   confirmation (`--yes`). `--only` restores chosen tables by filtering the
//!   SQL stream by its `-- Name: ...; Type: ...` entry headers: a first pass
//!   finds the sequences the tables own, a second pass loads the selection.
//!   `globals.sql` (roles, tablespaces) is applied only with `--only globals`
//!   or `restore_globals = true`, since roles usually exist on the target; it
//!   runs statement by statement, keeping the roles that already exist.
//! - **Counts** are per table (`schema.table`). `inspect` and the check after
//!   a restore read them live with `count(*)` through `query_to_xml`, so one
//!   statement counts every table; a restore fails if they differ from the
//!   manifest.

mod conn;
mod dump;
mod restore;

use std::path::PathBuf;

use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use salvor_engine::{Error, ErrorKind, Result};
use serde::Deserialize;
use serde_json::{Value, json};

use super::lines::ScanReader;
use super::secret::Secret;
use super::{BackupContext, RestoreContext, RestoreReport, Source, Streams, process};
use crate::config::bounded;
use conn::{COUNT_SQL, Conn, Session, literal, parse_counts};
use dump::CopyCounter;
use restore::plan;

/// Configuration of a `postgres` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Server host name, IP address or socket directory (libpq default when unset).
    #[serde(default)]
    pub host: Option<String>,
    /// Server port (libpq default when unset).
    #[serde(default, deserialize_with = "bounded::port_opt")]
    pub port: Option<u16>,
    /// Role to connect as (libpq default when unset).
    #[serde(default)]
    pub user: Option<String>,
    /// Password, passed to the tools as `PGPASSWORD`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Databases to back up; empty means every non-template database.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Database used to list, create and drop databases.
    #[serde(default = "default_maintenance")]
    pub maintenance_database: String,
    /// Directory holding `pg_dump`, `pg_dumpall` and `psql` (default: PATH).
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// Also back up roles and tablespaces (`pg_dumpall --globals-only`).
    #[serde(default = "yes")]
    pub globals: bool,
    /// Include role passwords in `globals.sql` (needs a superuser; set to
    /// false for a non-superuser backup role).
    #[serde(default = "yes")]
    pub role_passwords: bool,
    /// Give up when a table stays locked this long (e.g. `"30s"`); by
    /// default the backup waits like `pg_dump` does.
    #[serde(default)]
    pub lock_wait_timeout: Option<String>,
    /// Apply `globals.sql` (roles, tablespaces) in a full restore too, not
    /// only when asked for with `--only globals`.
    #[serde(default)]
    pub restore_globals: bool,
    /// Extra arguments for `pg_dump` (e.g. `["--exclude-table-data=logs"]`).
    #[serde(default)]
    pub dump_args: Vec<String>,
    /// Also count every table with `count(*)` in the dump's snapshot and fail
    /// when the dump's `COPY` rows differ (costs a full scan of every table).
    #[serde(default)]
    pub verify_counts: bool,
}

fn default_maintenance() -> String {
    "postgres".into()
}

fn yes() -> bool {
    true
}

/// The `--only` name of the roles and tablespaces stream.
const GLOBALS: &str = "globals";

/// Rows per `schema.table`.
use super::sql::Counts;

// ---------------------------------------------------------------- backup

impl PostgresConfig {
    fn dump_database(&self, conn: &Conn, db: &str, streams: &mut Streams) -> Result<Value> {
        // pg_dump reads one snapshot of its own. Only the count cross-check
        // needs a second session in that same snapshot: it exports one and
        // hands it to pg_dump.
        let mut session = self
            .verify_counts
            .then(|| self.snapshot_session(conn, db))
            .transpose()?;
        // The owner, so that a restore can create the database as it was.
        let owner = conn.owner(db)?;
        let mut cmd = conn.tool("pg_dump", db);
        cmd.args(["-w", "--format=plain"]);
        if let Some((_, snapshot)) = &session {
            cmd.arg("--snapshot").arg(snapshot);
        }
        cmd.args(
            self.lock_wait_timeout
                .iter()
                .map(|t| format!("--lock-wait-timeout={t}")),
        )
        .args(&self.dump_args);
        let child = process::spawn_reader(cmd, &format!("pg_dump of database {db}"))?
            .stop_on(streams.cancel());
        // Dump first (a table pg_dump cannot lock fails with pg_dump's own
        // message); the counts run beside it, so they add no wall time.
        if let Some((s, _)) = &mut session {
            s.send(&format!("{COUNT_SQL};"))?;
        }
        let mut reader = ScanReader::new(child, CopyCounter::default());
        let stream = format!("{db}.sql");
        let bytes = streams.add(&stream, &mut reader)?;
        let counts = reader.sink.into_counts();
        if let Some((mut s, _)) = session {
            check_counts(db, &parse_counts(&s.answer()?, db)?, &counts)?;
            s.ask("COMMIT;")?;
            s.close();
        }
        Ok(json!({ "stream": stream, "bytes": bytes, "owner": owner, "tables": counts }))
    }

    /// A session holding a repeatable-read transaction, and its exported snapshot.
    fn snapshot_session(&self, conn: &Conn, db: &str) -> Result<(Session, String)> {
        let mut session = Session::open(conn, db)?;
        session.ask(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
             SET LOCAL idle_in_transaction_session_timeout = 0;",
        )?;
        if let Some(t) = &self.lock_wait_timeout {
            session.ask(&format!("SET LOCAL lock_timeout = {};", literal(t)))?;
        }
        let snapshot = session
            .ask("SELECT pg_export_snapshot();")?
            .trim()
            .to_string();
        Ok((session, snapshot))
    }

    /// Roles and tablespaces, read into memory: a few KB to a few MB even
    /// for large clusters, so it can run beside the database dumps.
    fn read_globals(&self, conn: &Conn) -> Result<Vec<u8>> {
        let mut cmd = conn.tool("pg_dumpall", &self.maintenance_database);
        cmd.args(["-w", "--globals-only"]);
        if !self.role_passwords {
            cmd.arg("--no-role-passwords");
        }
        process::run_with_input(cmd, "pg_dumpall --globals-only", &mut |_| Ok(())).map_err(|e| {
            e.context("cannot back up roles and tablespaces").hint(
                "a non-superuser needs role_passwords = false, or set globals = false to skip them",
            )
        })
    }
}

/// Fails when the rows streamed differ from the counts taken in the snapshot.
/// A table whose data pg_dump was told to leave out is not compared.
fn check_counts(db: &str, snapshot: &Counts, streamed: &Counts) -> Result<()> {
    match super::sql::first_difference(streamed, snapshot) {
        Some((table, n, m)) => Err(Error::new(
            ErrorKind::Io,
            format!("pg_dump of database {db} wrote {n} rows of {table}, its snapshot holds {m}"),
        )
        .hint("run the backup again; report this if it repeats")),
        None => Ok(()),
    }
}

impl PostgresConfig {
    /// The configured databases, or every database the server lists.
    fn selected_databases(&self, conn: &Conn) -> Result<Vec<String>> {
        if self.databases.is_empty() {
            conn.list_databases()
        } else {
            Ok(self.databases.clone())
        }
    }
}

impl Source for &PostgresConfig {
    fn backup(&self, ctx: &BackupContext) -> Result<(SnapshotId, Snapshot)> {
        let conn = Conn::new(self)?;
        let dbs = self.selected_databases(&conn)?;
        // The version query and the (small) globals dump run beside the
        // database dumps instead of adding their start-up time in series.
        std::thread::scope(|scope| {
            let version = scope.spawn(|| conn.version());
            let globals = self
                .globals
                .then(|| scope.spawn(|| self.read_globals(&conn)));
            let mut streams = ctx.streams()?;
            let mut databases = serde_json::Map::new();
            for db in &dbs {
                let entry = self.dump_database(&conn, db, &mut streams)?;
                databases.insert(db.clone(), entry);
            }
            let globals = match globals {
                Some(t) => {
                    let sql = t.join().expect("globals thread")?;
                    streams.add("globals.sql", sql.as_slice())?;
                    Value::from("globals.sql")
                }
                None => Value::Null,
            };
            streams.commit(json!({
                "type": "postgres",
                "server_version": version.join().expect("version thread")?,
                "format": "plain",
                "consistency": "one pg_dump snapshot per database (repeatable read)",
                "databases": databases,
                "globals": globals,
            }))
        })
    }

    fn restore(&self, ctx: &RestoreContext) -> Result<RestoreReport> {
        let plans = plan(&ctx.manifest(), ctx.only, ctx.rename)?;
        let conn = Conn::new(self)?;
        let mut report = RestoreReport::default();
        let has_globals = ctx.manifest()["globals"].is_string();
        let asked = ctx.only.iter().any(|i| i == GLOBALS);
        // Roles first: the databases' objects name them as owners.
        if has_globals && (asked || (ctx.only.is_empty() && self.restore_globals)) {
            self.restore_globals(&conn, ctx, &mut report)?;
        } else if has_globals {
            report.actions.push(
                "leave globals.sql (roles, tablespaces) unapplied: restore it with --only globals"
                    .into(),
            );
        }
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
        Ok(json!({ "type": "postgres", "server_version": version, "databases": databases }))
    }
}
