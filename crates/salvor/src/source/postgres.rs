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
//! - **One snapshot per database.** A `psql` session opens a `REPEATABLE READ`
//!   transaction and exports its snapshot (`pg_export_snapshot()`); `pg_dump
//!   --snapshot` dumps exactly that snapshot while clients keep writing.
//! - **Counts come from the dump.** The rows of every `COPY` block are counted
//!   as the stream goes by: they are exactly what a restore must load back, and
//!   cost no extra scan. `verify_counts = true` also counts every table with
//!   `count(*)` in the same snapshot, concurrently with the dump, and fails the
//!   backup on any difference.
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

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use salvor_engine::{Error, ErrorKind, Result};
use serde::Deserialize;
use serde_json::{Value, json};

use super::lines::{LineWriter, ScanReader};
use super::secret::{self, Secret};
use super::{BackupContext, RestoreContext, RestoreReport, Source, Streams, process};

mod dump;

use dump::{CopyCounter, EntryFilter, PgScanner, Planner, select_entries};

/// Configuration of a `postgres` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Server host name, IP address or socket directory (libpq default when unset).
    #[serde(default)]
    pub host: Option<String>,
    /// Server port (libpq default when unset).
    #[serde(default)]
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
type Counts = BTreeMap<String, u64>;

/// Counts the rows of every ordinary user table in one statement, as JSON.
const COUNT_SQL: &str = "SELECT coalesce(json_object_agg(k, n ORDER BY k), '{}') FROM ( \
  SELECT n.nspname || '.' || c.relname AS k, \
    (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', \
      n.nspname, c.relname), false, true, '')))[1]::text::bigint AS n \
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
  WHERE c.relkind = 'r' AND c.relpersistence <> 't' \
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
    AND n.nspname NOT LIKE 'pg\\_toast%' \
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
      AND d.objid = c.oid AND d.deptype = 'e')) t";

/// Lists every relation a restore would collide with.
const RELATIONS_SQL: &str = "SELECT n.nspname || '.' || c.relname FROM pg_class c \
  JOIN pg_namespace n ON n.oid = c.relnamespace \
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// A quoted SQL identifier.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A quoted SQL string literal (standard_conforming_strings is on since 9.1).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The connection settings and resolved password of one operation.
struct Conn<'a> {
    cfg: &'a PostgresConfig,
    password: Option<String>,
}

impl<'a> Conn<'a> {
    fn new(cfg: &'a PostgresConfig) -> Result<Self> {
        let password = secret::resolve(cfg.password.as_ref())?;
        Ok(Self { cfg, password })
    }

    /// A tool connecting to `db`, credentials in its environment.
    fn tool(&self, name: &str, db: &str) -> Command {
        let program = match &self.cfg.bin_dir {
            Some(dir) => dir.join(name),
            None => client_program(name),
        };
        let mut c = crate::source::process::command(program);
        c.env("PGDATABASE", db)
            .env("PGAPPNAME", "salvor")
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGPASSWORD");
        if let Some(h) = &self.cfg.host {
            c.env("PGHOST", h);
        }
        if let Some(p) = self.cfg.port {
            c.env("PGPORT", p.to_string());
        }
        if let Some(u) = &self.cfg.user {
            c.env("PGUSER", u);
        }
        if let Some(pw) = &self.password {
            c.env("PGPASSWORD", pw);
        }
        c
    }

    /// `psql` for scripts: no psqlrc, unaligned tuples, stop at the first error.
    fn psql(&self, db: &str) -> Command {
        let mut c = self.tool("psql", db);
        c.args(["-X", "-q", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
        c
    }

    /// Runs one statement in `db` and returns its trimmed output.
    fn query(&self, db: &str, sql: &str) -> Result<String> {
        let mut c = self.psql(db);
        c.arg("-c").arg(sql);
        Ok(process::run(c, &format!("psql on database {db}"))?
            .trim()
            .to_string())
    }

    fn admin(&self, sql: &str) -> Result<String> {
        self.query(&self.cfg.maintenance_database, sql)
    }

    fn version(&self) -> Result<String> {
        self.admin("SHOW server_version")
    }

    fn list_databases(&self) -> Result<Vec<String>> {
        let out = self.admin(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
        )?;
        Ok(out.lines().map(str::to_string).collect())
    }

    fn database_exists(&self, db: &str) -> Result<bool> {
        let sql = format!("SELECT 1 FROM pg_database WHERE datname = {}", literal(db));
        Ok(self.admin(&sql)? == "1")
    }

    fn relations(&self, db: &str) -> Result<BTreeSet<String>> {
        Ok(self
            .query(db, RELATIONS_SQL)?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Objects outside `tables` that depend on them (views, foreign keys of
    /// other tables): what `DROP TABLE ... CASCADE` would also remove.
    fn dependents(&self, db: &str, tables: &[String]) -> Result<Vec<String>> {
        let oids: Vec<String> = tables
            .iter()
            .filter_map(|k| k.split_once('.'))
            .map(|(s, t)| {
                format!(
                    "{}::regclass",
                    literal(&format!("{}.{}", ident(s), ident(t)))
                )
            })
            .collect();
        let oids = oids.join(", ");
        let sql = format!(
            "SELECT DISTINCT pg_describe_object(d.classid, d.objid, 0) FROM pg_depend d \
             WHERE d.refclassid = 'pg_class'::regclass AND d.deptype = 'n' \
               AND d.refobjid IN ({oids}) \
               AND NOT (d.classid = 'pg_class'::regclass AND d.objid IN ({oids})) ORDER BY 1"
        );
        Ok(self.query(db, &sql)?.lines().map(str::to_string).collect())
    }

    fn counts(&self, db: &str) -> Result<Counts> {
        parse_counts(&self.query(db, COUNT_SQL)?, db)
    }
}

fn parse_counts(json: &str, db: &str) -> Result<Counts> {
    serde_json::from_str(json.trim()).map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("cannot read the row counts of database {db}"),
        )
        .source(e)
    })
}

/// `name` as found on PATH, looking through Debian's `pg_wrapper`: that Perl
/// script picks a client version on every call and costs ~0.1 s of startup,
/// several times per backup. The newest installed client is what it picks for
/// a remote server, and a newer `pg_dump` can dump any older server.
fn client_program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    let wrapped = on_path
        .as_ref()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .is_some_and(|p| p.ends_with("postgresql-common/pg_wrapper"));
    if wrapped {
        let newest = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
            .map(|(v, dir)| (v, dir.join("bin").join(name)))
            .filter(|(_, p)| p.is_file())
            .max_by_key(|(v, _)| *v);
        if let Some((_, p)) = newest {
            return p;
        }
    }
    on_path.unwrap_or_else(|| PathBuf::from(name))
}

/// A `psql` session kept open across statements, to hold a transaction.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<Vec<u8>>>,
    what: String,
}

const SENTINEL: &str = "__salvor_statement_done__";

impl Session {
    fn open(conn: &Conn, db: &str) -> Result<Self> {
        let what = format!("psql session on database {db}");
        let mut cmd = conn.psql(db);
        let mut child = process::spawn_piped(&mut cmd, &what, Stdio::piped())?;
        let (stderr, _) = process::capture_stderr(&mut child);
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Ok(Self {
            child,
            stdin,
            stdout,
            stderr,
            what,
        })
    }

    /// Runs `sql` and returns its output lines.
    fn ask(&mut self, sql: &str) -> Result<String> {
        self.send(sql)?;
        self.answer()
    }

    /// Starts `sql` without waiting for it: the server works on it while
    /// the caller does something else; [`Session::answer`] collects it.
    fn send(&mut self, sql: &str) -> Result<()> {
        let script = format!("{sql}\n\\echo {SENTINEL}\n");
        let sent = self
            .stdin
            .as_mut()
            .map(|s| s.write_all(script.as_bytes()).and_then(|()| s.flush()));
        if !matches!(sent, Some(Ok(()))) {
            return Err(self.failure());
        }
        Ok(())
    }

    /// The output of the statement sent last.
    fn answer(&mut self) -> Result<String> {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return Err(self.failure()),
                Ok(_) if line.trim_end() == SENTINEL => return Ok(out),
                Ok(_) => out.push_str(&line),
            }
        }
    }

    /// The error of a session that died: its exit status and stderr.
    fn failure(&mut self) -> Error {
        self.stdin = None;
        let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
        // The stderr thread finishes right after the process exits.
        for _ in 0..50 {
            if !self.stderr.lock().map(|b| b.is_empty()).unwrap_or(false) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let err = self
            .stderr
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let err = err.split_whitespace().collect::<Vec<_>>().join(" ");
        Error::new(
            ErrorKind::Io,
            format!("{} failed ({status}): {err}", self.what),
        )
    }

    fn close(mut self) {
        self.stdin = None;
        let _ = self.child.wait();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------- backup

impl PostgresConfig {
    fn dump_database(&self, conn: &Conn, db: &str, streams: &mut Streams) -> Result<Value> {
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
        // Dump first: a table pg_dump cannot lock fails with pg_dump's own message.
        let mut cmd = conn.tool("pg_dump", db);
        cmd.args(["-w", "--format=plain", "--snapshot"])
            .arg(&snapshot)
            .args(
                self.lock_wait_timeout
                    .iter()
                    .map(|t| format!("--lock-wait-timeout={t}")),
            )
            .args(&self.dump_args);
        let child = process::spawn_reader(cmd, &format!("pg_dump of database {db}"))?;
        // The cross-check runs in the same snapshot while pg_dump streams,
        // so it describes the dump and adds no wall time of its own.
        if self.verify_counts {
            session.send(&format!("{COUNT_SQL};"))?;
        }
        let mut reader = ScanReader::new(child, CopyCounter::default());
        let stream = format!("{db}.sql");
        let bytes = streams.add(&stream, &mut reader)?;
        let counts = reader.sink.into_counts();
        if self.verify_counts {
            check_counts(db, &parse_counts(&session.answer()?, db)?, &counts)?;
        }
        session.ask("COMMIT;")?;
        session.close();
        Ok(json!({ "stream": stream, "bytes": bytes, "tables": counts }))
    }

    /// Roles and tablespaces, read into memory: a few KB to a few MB even
    /// for large clusters, so it can run beside the database dumps.
    fn read_globals(&self, conn: &Conn) -> Result<Vec<u8>> {
        let mut cmd = conn.tool("pg_dumpall", &self.maintenance_database);
        cmd.args(["-w", "--globals-only"]);
        if !self.role_passwords {
            cmd.arg("--no-role-passwords");
        }
        let mut sql = Vec::new();
        process::spawn_reader(cmd, "pg_dumpall --globals-only")
            .and_then(|mut child| {
                child
                    .read_to_end(&mut sql)
                    .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))
            })
            .map_err(|e| {
                e.context("cannot back up roles and tablespaces").hint(
                    "a non-superuser needs role_passwords = false, or set globals = false to skip them",
                )
            })?;
        Ok(sql)
    }
}

/// Fails when the rows streamed differ from the counts taken in the snapshot.
/// A table whose data pg_dump was told to leave out is not compared.
fn check_counts(db: &str, snapshot: &Counts, streamed: &Counts) -> Result<()> {
    for (table, n) in streamed {
        let m = snapshot.get(table).copied().unwrap_or_default();
        if m != *n {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "pg_dump of database {db} wrote {n} rows of {table}, its snapshot holds {m}"
                ),
            )
            .hint("run the backup again; report this if it repeats"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- restore

/// One database to restore.
#[derive(Debug)]
struct DbPlan {
    source: String,
    target: String,
    stream: String,
    /// Chosen tables as (schema, table); `None` = the whole database.
    tables: Option<BTreeSet<(String, String)>>,
    /// Rows per restored table according to the manifest.
    expected: Counts,
}

fn manifest_counts(db: &Value) -> Counts {
    serde_json::from_value(db["tables"].clone()).unwrap_or_default()
}

/// Resolves `--only` (databases or tables, `table` or `schema.table`) and `--into`.
fn plan(manifest: &Value, only: &[String], rename: Option<&str>) -> Result<Vec<DbPlan>> {
    let dbs = manifest["databases"].as_object().ok_or_else(|| {
        Error::invalid("the snapshot has no postgres manifest")
            .hint("restore it with the source type that made it")
    })?;
    let mut plans: Vec<DbPlan> = Vec::new();
    let mut add = |db: &str, table: Option<(String, String)>| {
        let p = match plans.iter_mut().position(|p| p.source == db) {
            Some(i) => &mut plans[i],
            None => {
                plans.push(DbPlan {
                    source: db.into(),
                    target: db.into(),
                    stream: dbs[db]["stream"].as_str().unwrap_or_default().into(),
                    tables: Some(BTreeSet::new()),
                    expected: Counts::new(),
                });
                plans.last_mut().expect("just pushed")
            }
        };
        match table {
            None => p.tables = None,
            Some(t) => {
                if let Some(set) = &mut p.tables {
                    set.insert(t);
                }
            }
        }
    };
    for item in only {
        let mut found = false;
        if item == GLOBALS && manifest["globals"].is_string() {
            continue;
        }
        if dbs.contains_key(item) {
            add(item, None);
            found = true;
        }
        for (db, v) in dbs {
            for key in manifest_counts(v).keys() {
                let Some((s, t)) = key.split_once('.') else {
                    continue;
                };
                if *item == *key || *item == *t {
                    add(db, Some((s.into(), t.into())));
                    found = true;
                }
            }
        }
        if !found {
            return Err(Error::invalid(format!(
                "the snapshot holds no database, table or {GLOBALS} named {item}"
            ))
            .hint(
                "name a database, a table, or schema.table as listed in the snapshot's manifest",
            ));
        }
    }
    if only.is_empty() {
        for db in dbs.keys() {
            add(db, None);
        }
    }
    if let Some(new) = rename {
        if plans.len() != 1 {
            return Err(Error::invalid(format!(
                "--into {new} needs exactly one database, the snapshot selection has {}",
                plans.len()
            ))
            .hint("choose one database with --only DB"));
        }
        plans[0].target = new.to_string();
    }
    for p in &mut plans {
        let all = manifest_counts(&dbs[&p.source]);
        p.expected = all
            .into_iter()
            .filter(|(k, _)| {
                p.tables.as_ref().is_none_or(|set| {
                    k.split_once('.')
                        .is_some_and(|(s, t)| set.contains(&(s.into(), t.into())))
                })
            })
            .collect();
    }
    Ok(plans)
}

/// ", which also drops: ..." for the objects a `DROP TABLE ... CASCADE` takes.
fn cascade_note(dependents: &[String]) -> String {
    if dependents.is_empty() {
        return String::new();
    }
    format!(
        " (CASCADE also drops what depends on them: {})",
        dependents.join(", ")
    )
}

/// How a target database is prepared.
enum Prepare {
    Create,
    Recreate,
    /// The tables, and what `DROP ... CASCADE` takes with them.
    DropTables(Vec<String>, Vec<String>),
    Nothing,
}

impl PostgresConfig {
    fn prepare(&self, conn: &Conn, ctx: &RestoreContext, p: &DbPlan) -> Result<Prepare> {
        if !conn.database_exists(&p.target)? {
            return Ok(Prepare::Create);
        }
        let existing = conn.relations(&p.target)?;
        match &p.tables {
            None if existing.is_empty() => Ok(Prepare::Nothing),
            None => {
                ctx.confirm(&format!(
                    "database {} ({} relations)",
                    p.target,
                    existing.len()
                ))?;
                Ok(Prepare::Recreate)
            }
            Some(set) => {
                let clash: Vec<String> = set
                    .iter()
                    .map(|(s, t)| format!("{s}.{t}"))
                    .filter(|k| existing.contains(k))
                    .collect();
                let mut dependents = Vec::new();
                if !clash.is_empty() {
                    dependents = conn.dependents(&p.target, &clash)?;
                    ctx.confirm(&format!(
                        "table(s) {} in database {}{}",
                        clash.join(", "),
                        p.target,
                        cascade_note(&dependents)
                    ))?;
                }
                Ok(Prepare::DropTables(clash, dependents))
            }
        }
    }

    fn apply(&self, conn: &Conn, target: &str, prep: &Prepare) -> Result<()> {
        let create = format!("CREATE DATABASE {} TEMPLATE template0", ident(target));
        match prep {
            Prepare::Create => conn.admin(&create).map(drop),
            Prepare::Recreate => {
                conn.admin(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    ident(target)
                ))?;
                conn.admin(&create).map(drop)
            }
            Prepare::DropTables(list, _) if !list.is_empty() => {
                let names: Vec<String> = list
                    .iter()
                    .filter_map(|k| k.split_once('.'))
                    .map(|(s, t)| format!("{}.{}", ident(s), ident(t)))
                    .collect();
                conn.query(
                    target,
                    &format!("DROP TABLE IF EXISTS {} CASCADE", names.join(", ")),
                )
                .map(drop)
            }
            Prepare::DropTables(..) | Prepare::Nothing => Ok(()),
        }
    }

    /// Applies `globals.sql` statement by statement: roles that already
    /// exist fail alone ("already exists") and are reported, the rest apply.
    fn restore_globals(
        &self,
        conn: &Conn,
        ctx: &RestoreContext,
        report: &mut RestoreReport,
    ) -> Result<()> {
        let db = &self.maintenance_database;
        report.actions.push(format!(
            "apply globals.sql (roles, tablespaces) through database {db}"
        ));
        if ctx.dry_run {
            return Ok(());
        }
        let mut cmd = conn.tool("psql", db);
        cmd.args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=0"]);
        let (_, errors) = process::run_with_input_keeping_stderr(
            cmd,
            "psql applying globals.sql",
            &mut |w| ctx.copy_stream("globals.sql", w).map(drop),
            16 << 20,
        )?;
        let failed: Vec<&str> = errors.lines().filter(|l| l.contains("ERROR:")).collect();
        let existing = failed
            .iter()
            .filter(|l| l.contains("already exists"))
            .count();
        report.actions.push(format!(
            "globals.sql: {existing} role(s) or tablespace(s) already existed and were kept"
        ));
        if existing < failed.len() {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{} statement(s) of globals.sql failed; first: {}",
                    failed.len() - existing,
                    failed
                        .iter()
                        .find(|l| !l.contains("already exists"))
                        .unwrap_or(&"")
                ),
            )
            .hint("restoring roles needs a superuser (or CREATEROLE); see the statement above"));
        }
        Ok(())
    }

    fn restore_db(
        &self,
        conn: &Conn,
        ctx: &RestoreContext,
        p: &DbPlan,
        report: &mut RestoreReport,
    ) -> Result<()> {
        let prep = self.prepare(conn, ctx, p)?;
        let t = &p.target;
        report.actions.push(match &prep {
            Prepare::Create => format!("create database {t}"),
            Prepare::Recreate => format!("drop and recreate database {t}"),
            Prepare::DropTables(l, deps) if !l.is_empty() => format!(
                "drop table(s) {} in database {t}{}",
                l.join(", "),
                cascade_note(deps)
            ),
            _ => format!("use existing database {t}"),
        });
        let what = match &p.tables {
            None => "all tables".to_string(),
            Some(_) => format!("table(s) {}", keys(&p.expected)),
        };
        report.actions.push(format!(
            "load {what} of {} from {} into {t}",
            p.source, p.stream
        ));
        if ctx.dry_run {
            return Ok(());
        }
        self.apply(conn, t, &prep)?;
        let fresh = matches!(prep, Prepare::Create | Prepare::Recreate);
        let keep = match &p.tables {
            Some(set) => Some(self.plan_entries(ctx, &p.stream, set, fresh, report)?),
            None => None,
        };
        self.load(conn, ctx, p, keep)?;
        let restored = conn.counts(t)?;
        verify_counts(t, &p.expected, &restored)?;
        let counts: serde_json::Map<String, Value> = p
            .expected
            .keys()
            .map(|k| (k.clone(), restored.get(k).copied().unwrap_or(0).into()))
            .collect();
        report.counts.insert(t.clone(), Value::Object(counts));
        Ok(())
    }

    /// First pass over the stream: which entries make up the chosen tables.
    fn plan_entries(
        &self,
        ctx: &RestoreContext,
        stream: &str,
        tables: &BTreeSet<(String, String)>,
        fresh: bool,
        report: &mut RestoreReport,
    ) -> Result<HashSet<usize>> {
        let mut w = LineWriter::new(Planner::default());
        ctx.copy_stream(stream, &mut w)?;
        let planner = w
            .finish()
            .map_err(|e| Error::io("cannot scan", stream, e))?;
        let (keep, notes) = select_entries(&planner.entries, tables, fresh);
        report.actions.extend(notes);
        Ok(keep)
    }

    fn load(
        &self,
        conn: &Conn,
        ctx: &RestoreContext,
        p: &DbPlan,
        keep: Option<HashSet<usize>>,
    ) -> Result<()> {
        let mut cmd = conn.psql(&p.target);
        cmd.arg("--single-transaction");
        let what = format!("psql loading {} into database {}", p.stream, p.target);
        process::run_with_input(cmd, &what, &mut |w| match &keep {
            None => ctx.copy_stream(&p.stream, w).map(drop),
            Some(keep) => {
                let mut lines = LineWriter::new(EntryFilter {
                    scan: PgScanner::default(),
                    keep: keep.clone(),
                    out: w,
                });
                ctx.copy_stream(&p.stream, &mut lines)?;
                lines
                    .finish()
                    .map(drop)
                    .map_err(|e| Error::io("cannot write to", "psql", e))
            }
        })?;
        Ok(())
    }
}

fn keys(c: &Counts) -> String {
    c.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// Fails when a restored table's rows differ from the manifest.
fn verify_counts(db: &str, expected: &Counts, restored: &Counts) -> Result<()> {
    for (table, n) in expected {
        let got = restored.get(table).copied().unwrap_or(0);
        if got != *n {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "restored table {table} in database {db} has {got} rows, the snapshot has {n}"
                ),
            )
            .hint("check the target for triggers or rules that change rows on insert"));
        }
    }
    Ok(())
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
                "consistency": "exported snapshot per database (repeatable read)",
                "databases": databases,
                "globals": globals,
            }))
        })
    }

    fn restore(&self, ctx: &RestoreContext) -> Result<RestoreReport> {
        let plans = plan(ctx.manifest(), ctx.only, ctx.rename)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_quote() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn plan_resolves_tables_databases_and_into() {
        let m = json!({ "databases": {
            "a": { "stream": "a.sql", "tables": { "public.t": 3, "public.u": 1 } },
            "b": { "stream": "b.sql", "tables": { "s.t": 2 } } } });
        let all = plan(&m, &[], None).unwrap();
        assert_eq!(all.len(), 2);
        assert!(plan(&m, &[], Some("x")).is_err());
        let one = plan(&m, &["public.u".into()], Some("x")).unwrap();
        assert_eq!(one[0].target, "x");
        assert_eq!(one[0].expected, Counts::from([("public.u".into(), 1)]));
        assert_eq!(plan(&m, &["t".into()], None).unwrap().len(), 2);
        assert!(plan(&m, &["nope".into()], None).is_err());
        assert!(plan(&m, &["b".into()], None).unwrap()[0].tables.is_none());
    }
}
