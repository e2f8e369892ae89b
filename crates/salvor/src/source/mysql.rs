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

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use salvor_engine::{Error, ErrorKind, Result};
use serde::Deserialize;
use serde_json::{Value, json};

use super::lines::{LineSink, LineWriter, ScanReader};
use super::secret::{self, Secret};
use super::{BackupContext, RestoreContext, RestoreReport, Source, Streams, process};

/// Configuration of a `mysql` source (MySQL or MariaDB).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// Server host name or IP address (client default when unset).
    #[serde(default)]
    pub host: Option<String>,
    /// Server port (client default when unset).
    #[serde(default)]
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

/// Databases that belong to the server itself.
const SYSTEM_DATABASES: [&str; 4] = ["information_schema", "performance_schema", "mysql", "sys"];

/// Rows per table.
type Counts = BTreeMap<String, u64>;

/// A quoted identifier.
fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A quoted string literal (valid whatever `NO_BACKSLASH_ESCAPES` says).
fn literal(s: &str) -> String {
    if s.contains('\\') {
        return format!("CONVERT(0x{} USING utf8mb4)", hex::encode(s));
    }
    format!("'{}'", s.replace('\'', "''"))
}

/// The first of `names` found on PATH, or the first name (to fail clearly).
fn find_tool(configured: Option<&PathBuf>, names: [&str; 2]) -> PathBuf {
    if let Some(p) = configured {
        return p.clone();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = names
        .iter()
        .find(|n| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(n))));
    PathBuf::from(found.unwrap_or(&names[0]))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The connection settings and resolved password of one operation.
struct Conn<'a> {
    cfg: &'a MysqlConfig,
    password: Option<String>,
}

impl<'a> Conn<'a> {
    fn new(cfg: &'a MysqlConfig) -> Result<Self> {
        let password = secret::resolve(cfg.password.as_ref())?;
        Ok(Self { cfg, password })
    }

    /// A tool with connection options; the password in its environment.
    fn tool(&self, program: PathBuf) -> Command {
        let mut c = crate::source::process::command(program);
        c.env_remove("MYSQL_PWD");
        if let Some(pw) = &self.password {
            c.env("MYSQL_PWD", pw);
        }
        if let Some(h) = &self.cfg.host {
            c.arg(format!("--host={h}"));
        }
        if let Some(p) = self.cfg.port {
            c.arg(format!("--port={p}"));
        }
        if let Some(s) = &self.cfg.socket {
            c.arg(format!("--socket={}", s.display()));
        }
        if let Some(u) = &self.cfg.user {
            c.arg(format!("--user={u}"));
        }
        c.arg("--default-character-set=utf8mb4");
        c
    }

    fn client(&self) -> Command {
        let mut c = self.tool(find_tool(self.cfg.client.as_ref(), ["mysql", "mariadb"]));
        c.arg("--connect-timeout=10");
        c
    }

    fn dump_tool(&self) -> PathBuf {
        find_tool(self.cfg.dump_tool.as_ref(), ["mysqldump", "mariadb-dump"])
    }

    /// Runs SQL; returns the rows, tab-separated, without headers.
    fn query(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        let mut c = self.client();
        c.args(["--batch", "--skip-column-names", "--raw", "-e", sql]);
        let out = process::run(c, "mysql client")?;
        Ok(out
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect())
    }

    fn version(&self) -> Result<String> {
        let rows = self.query("SELECT VERSION()")?;
        Ok(rows.concat().concat())
    }

    fn list_databases(&self) -> Result<Vec<String>> {
        Ok(self
            .query("SHOW DATABASES")?
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .filter(|d| !SYSTEM_DATABASES.contains(&d.as_str()))
            .collect())
    }

    /// Character set and collation; `None` when the database does not exist.
    fn charset(&self, db: &str) -> Result<Option<(String, String)>> {
        let rows = self.query(&format!(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME \
             FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
            literal(db)
        ))?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|r| Some((r.first()?.clone(), r.get(1)?.clone()))))
    }

    /// Tables (`BASE TABLE`) or all relations incl. views of `db`.
    fn tables(&self, db: &str, views_too: bool) -> Result<Vec<String>> {
        let filter = if views_too {
            ""
        } else {
            " AND TABLE_TYPE = 'BASE TABLE'"
        };
        let rows = self.query(&format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = {}{filter} ORDER BY TABLE_NAME",
            literal(db)
        ))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect())
    }

    /// Exact row counts of every table of `db`, in one statement.
    fn counts(&self, db: &str) -> Result<Counts> {
        let tables = self.tables(db, false)?;
        if tables.is_empty() {
            return Ok(Counts::new());
        }
        let sql = tables
            .iter()
            .enumerate()
            .map(|(i, t)| format!("SELECT {i}, COUNT(*) FROM {}.{}", ident(db), ident(t)))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let mut counts = Counts::new();
        for row in self.query(&sql)? {
            let i: usize = row[0].parse().unwrap_or(usize::MAX);
            let n: u64 = row.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
            if let Some(t) = tables.get(i) {
                counts.insert(t.clone(), n);
            }
        }
        Ok(counts)
    }
}

// ---------------------------------------------------------------- dump scanning

/// A backquoted name at the start of `s`; returns it and the bytes it spans.
fn backquoted(s: &[u8]) -> Option<(String, usize)> {
    let rest = s.strip_prefix(b"`")?;
    let mut name = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        match (rest[i], rest.get(i + 1)) {
            (b'`', Some(b'`')) => {
                name.push(b'`');
                i += 2;
            }
            (b'`', _) => return Some((String::from_utf8_lossy(&name).into_owned(), i + 2)),
            (b, _) => {
                name.push(b);
                i += 1;
            }
        }
    }
    None
}

/// What a section header of a mysqldump file introduces.
#[derive(Debug, PartialEq, Eq)]
enum Section {
    Table(String),
    View(String),
    Other,
}

fn section(l: &[u8]) -> Option<Section> {
    const TABLE: [&[u8]; 2] = [
        b"-- Table structure for table ",
        b"-- Dumping data for table ",
    ];
    const VIEW: [&[u8]; 2] = [
        b"-- Temporary table structure for view ",
        b"-- Final view structure for view ",
    ];
    const OTHER: [&[u8]; 3] = [
        b"-- Dumping events for database ",
        b"-- Dumping routines for database ",
        b"-- Dump completed",
    ];
    let named = |prefixes: [&[u8]; 2]| {
        prefixes
            .iter()
            .find_map(|p| l.strip_prefix(*p))
            .and_then(backquoted)
            .map(|(n, _)| n)
    };
    if let Some(n) = named(TABLE) {
        return Some(Section::Table(n));
    }
    if let Some(n) = named(VIEW) {
        return Some(Section::View(n));
    }
    OTHER
        .iter()
        .any(|p| l.starts_with(p))
        .then_some(Section::Other)
}

/// Counts the row tuples of every `INSERT` as the dump streams by.
#[derive(Default)]
struct InsertCounter {
    counts: Counts,
    table: Option<String>,
    in_string: bool,
    escaped: bool,
    depth: u32,
}

impl InsertCounter {
    /// Starts an `INSERT`; returns the part after `VALUES`.
    fn start<'l>(&mut self, l: &'l [u8]) -> Option<&'l [u8]> {
        let rest = [
            &b"INSERT INTO "[..],
            b"INSERT IGNORE INTO ",
            b"REPLACE INTO ",
        ]
        .iter()
        .find_map(|p| l.strip_prefix(*p))?;
        let (name, used) = backquoted(rest)?;
        let rest = &rest[used..];
        let at = rest.windows(6).position(|w| w == b"VALUES")?;
        self.counts.entry(name.clone()).or_default();
        self.table = Some(name);
        Some(&rest[at + 6..])
    }

    /// Follows tuples, strings and escapes until the statement's `;`.
    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'\'') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'\'' => self.in_string = true,
                b'(' => {
                    if self.depth == 0
                        && let Some(n) = self.table.as_ref().and_then(|t| self.counts.get_mut(t))
                    {
                        *n += 1;
                    }
                    self.depth += 1;
                }
                b')' => self.depth = self.depth.saturating_sub(1),
                b';' if self.depth == 0 => {
                    self.table = None;
                    return;
                }
                _ => {}
            }
        }
    }
}

impl LineSink for InsertCounter {
    fn line(&mut self, l: &[u8]) -> io::Result<()> {
        if self.table.is_some() {
            self.scan(l);
        } else if let Some(Section::Table(t)) = section(l) {
            self.counts.entry(t).or_default();
        } else if let Some(rest) = self.start(l) {
            self.scan(rest);
        }
        Ok(())
    }
}

/// Forwards the preamble and the sections of the chosen tables.
struct SectionFilter<'w> {
    tables: BTreeSet<String>,
    keep: bool,
    out: &'w mut dyn Write,
}

impl LineSink for SectionFilter<'_> {
    fn line(&mut self, l: &[u8]) -> io::Result<()> {
        if let Some(s) = section(l) {
            self.keep = matches!(s, Section::Table(t) if self.tables.contains(&t));
        }
        if self.keep {
            self.out.write_all(l)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- backup

impl MysqlConfig {
    fn dump_database(&self, conn: &Conn, db: &str, streams: &mut Streams) -> Result<Value> {
        let charset = conn.charset(db)?;
        let mut cmd = conn.tool(conn.dump_tool());
        cmd.args([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--skip-dump-date",
        ])
        .args(&self.dump_args)
        .arg(db);
        let tool = cmd.get_program().to_string_lossy().into_owned();
        let child = process::spawn_reader(cmd, &format!("{tool} of database {db}"))?;
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

// ---------------------------------------------------------------- restore

/// One database to restore.
struct DbPlan {
    source: String,
    target: String,
    stream: String,
    charset: Option<(String, String)>,
    /// Chosen tables; `None` = the whole database.
    tables: Option<BTreeSet<String>>,
    expected: Counts,
}

fn manifest_counts(db: &Value) -> Counts {
    serde_json::from_value(db["tables"].clone()).unwrap_or_default()
}

/// Resolves `--only` (databases, `table` or `db.table`) and `--into`.
fn plan(manifest: &Value, only: &[String], rename: Option<&str>) -> Result<Vec<DbPlan>> {
    let dbs = manifest["databases"].as_object().ok_or_else(|| {
        Error::invalid("the snapshot has no mysql manifest")
            .hint("restore it with the source type that made it")
    })?;
    let mut chosen: BTreeMap<&str, Option<BTreeSet<String>>> = BTreeMap::new();
    for item in only {
        let mut found = dbs.contains_key(item);
        if found {
            chosen.insert(item, None);
        }
        for (db, v) in dbs {
            let t = item
                .strip_prefix(&format!("{db}."))
                .unwrap_or(item.as_str());
            if manifest_counts(v).contains_key(t) {
                found = true;
                if let Some(set) = chosen.entry(db).or_insert_with(|| Some(BTreeSet::new())) {
                    set.insert(t.to_string());
                }
            }
        }
        if !found {
            return Err(Error::invalid(format!(
                "the snapshot holds no database or table named {item}"
            ))
            .hint("name a database, a table, or db.table as listed in the snapshot's manifest"));
        }
    }
    if only.is_empty() {
        chosen = dbs.keys().map(|d| (d.as_str(), None)).collect();
    }
    if let Some(new) = rename
        && chosen.len() != 1
    {
        return Err(Error::invalid(format!(
            "--into {new} needs exactly one database, the snapshot selection has {}",
            chosen.len()
        ))
        .hint("choose one database with --only DB"));
    }
    Ok(chosen
        .into_iter()
        .map(|(db, tables)| {
            let v = &dbs[db];
            let expected = manifest_counts(v)
                .into_iter()
                .filter(|(t, _)| tables.as_ref().is_none_or(|s| s.contains(t)))
                .collect();
            let charset = v["charset"]
                .as_str()
                .zip(v["collation"].as_str())
                .map(|(a, b)| (a.to_string(), b.to_string()));
            DbPlan {
                source: db.to_string(),
                target: rename.unwrap_or(db).to_string(),
                stream: v["stream"].as_str().unwrap_or_default().to_string(),
                charset,
                tables,
                expected,
            }
        })
        .collect())
}

impl MysqlConfig {
    /// Confirms and describes what happens to the target; true = (re)create it.
    fn prepare(
        &self,
        conn: &Conn,
        ctx: &RestoreContext,
        p: &DbPlan,
        report: &mut RestoreReport,
    ) -> Result<bool> {
        let t = &p.target;
        if conn.charset(t)?.is_none() {
            report.actions.push(format!("create database {t}"));
            return Ok(true);
        }
        let existing = conn.tables(t, true)?;
        match &p.tables {
            None if existing.is_empty() => {
                report.actions.push(format!("use empty database {t}"));
                Ok(false)
            }
            None => {
                ctx.confirm(&format!("database {t} ({} tables)", existing.len()))?;
                report
                    .actions
                    .push(format!("drop and recreate database {t}"));
                Ok(true)
            }
            Some(set) => {
                let clash: Vec<&String> = existing.iter().filter(|e| set.contains(*e)).collect();
                if !clash.is_empty() {
                    let names = clash.iter().map(|s| s.as_str()).collect::<Vec<_>>();
                    ctx.confirm(&format!("table(s) {} in database {t}", names.join(", ")))?;
                    report.actions.push(format!(
                        "replace table(s) {} in database {t}",
                        names.join(", ")
                    ));
                }
                Ok(false)
            }
        }
    }

    fn recreate(&self, conn: &Conn, p: &DbPlan) -> Result<()> {
        let t = ident(&p.target);
        let charset = p
            .charset
            .as_ref()
            .map(|(cs, coll)| format!(" CHARACTER SET {} COLLATE {}", ident(cs), ident(coll)))
            .unwrap_or_default();
        conn.query(&format!(
            "DROP DATABASE IF EXISTS {t}; CREATE DATABASE {t}{charset}"
        ))?;
        Ok(())
    }

    fn load(&self, conn: &Conn, ctx: &RestoreContext, p: &DbPlan) -> Result<()> {
        let mut cmd = conn.client();
        cmd.arg(format!("--database={}", p.target));
        let what = format!(
            "mysql client loading {} into database {}",
            p.stream, p.target
        );
        process::run_with_input(cmd, &what, &mut |w| match &p.tables {
            None => ctx.copy_stream(&p.stream, w).map(drop),
            Some(tables) => {
                let mut lines = LineWriter::new(SectionFilter {
                    tables: tables.clone(),
                    keep: true,
                    out: w,
                });
                ctx.copy_stream(&p.stream, &mut lines)?;
                lines
                    .finish()
                    .map(drop)
                    .map_err(|e| Error::io("cannot write to", "the mysql client", e))
            }
        })?;
        Ok(())
    }

    fn restore_db(
        &self,
        conn: &Conn,
        ctx: &RestoreContext,
        p: &DbPlan,
        report: &mut RestoreReport,
    ) -> Result<()> {
        let create = self.prepare(conn, ctx, p, report)?;
        let what = match &p.tables {
            None => "all tables".to_string(),
            Some(t) => format!(
                "table(s) {}",
                t.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        report.actions.push(format!(
            "load {what} of {} from {} into {}",
            p.source, p.stream, p.target
        ));
        if ctx.dry_run {
            return Ok(());
        }
        if create {
            self.recreate(conn, p)?;
        }
        self.load(conn, ctx, p)?;
        let restored = conn.counts(&p.target)?;
        let mut counts = serde_json::Map::new();
        for (table, n) in &p.expected {
            let got = restored.get(table).copied().unwrap_or(0);
            if got != *n {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "restored table {table} in database {} has {got} rows, the snapshot has {n}",
                        p.target
                    ),
                )
                .hint("check the target for triggers that change rows on insert"));
            }
            counts.insert(table.clone(), got.into());
        }
        report
            .counts
            .insert(p.target.clone(), Value::Object(counts));
        Ok(())
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
        let mut streams = ctx.streams()?;
        let mut databases = serde_json::Map::new();
        for db in &dbs {
            let entry = self.dump_database(&conn, db, &mut streams)?;
            databases.insert(db.clone(), entry);
        }
        streams.commit(json!({
            "type": "mysql",
            "server_version": version,
            "format": "sql",
            "tool": tool.file_name().map(|n| n.to_string_lossy().into_owned()),
            "consistency": "single transaction per database",
            "databases": databases,
        }))
    }

    fn restore(&self, ctx: &RestoreContext) -> Result<RestoreReport> {
        let plans = plan(ctx.manifest(), ctx.only, ctx.rename)?;
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

#[cfg(test)]
mod tests {
    use super::super::lines::feed_in_chunks;
    use super::*;

    const DUMP: &str = "/*!40101 SET NAMES utf8mb4 */;\n\
--\n-- Table structure for table `a``b`\n--\n\nDROP TABLE IF EXISTS `a``b`;\nCREATE TABLE `a``b` (id int);\n\
--\n-- Dumping data for table `a``b`\n--\n\nLOCK TABLES `a``b` WRITE;\n\
INSERT INTO `a``b` VALUES (1,'x(y'),(2,'it\\'s; (ok)'),\n(3,NULL);\nUNLOCK TABLES;\n\
--\n-- Table structure for table `empty`\n--\n\nCREATE TABLE `empty` (id int);\n\
--\n-- Dumping data for table `empty`\n--\n\n\
--\n-- Table structure for table `c`\n--\n\nCREATE TABLE `c` (id int);\n\
--\n-- Dumping data for table `c`\n--\n\nINSERT INTO `c` VALUES\n(1),\n(2);\nINSERT INTO `c` VALUES (3);\n\
--\n-- Dumping routines for database 'd'\n--\nCREATE PROCEDURE p() SELECT 1;\n";

    fn feed<S: LineSink>(sink: S, chunk: usize) -> S {
        feed_in_chunks(sink, DUMP, chunk)
    }

    #[test]
    fn counts_insert_tuples_with_quotes_parens_and_line_breaks() {
        for chunk in [1, 5, 4096] {
            let c = feed(InsertCounter::default(), chunk);
            let want: Counts = [("a`b".into(), 3), ("c".into(), 3), ("empty".into(), 0)].into();
            assert_eq!(c.counts, want, "chunk {chunk}");
        }
    }

    #[test]
    fn filter_keeps_preamble_and_chosen_table_sections() {
        let mut out = Vec::new();
        feed(
            SectionFilter {
                tables: ["c".to_string()].into(),
                keep: true,
                out: &mut out,
            },
            3,
        );
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("/*!40101 SET NAMES"), "{out}");
        assert!(
            out.contains("CREATE TABLE `c`") && out.contains("VALUES (3)"),
            "{out}"
        );
        for unwanted in ["`a``b`", "`empty`", "PROCEDURE"] {
            assert!(!out.contains(unwanted), "{unwanted} kept: {out}");
        }
    }

    #[test]
    fn quoting_and_plans() {
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(literal("it's"), "'it''s'");
        assert!(literal("a\\b").starts_with("CONVERT(0x615c62"));
        let m = json!({ "databases": {
            "x": { "stream": "x.sql", "tables": { "t": 1, "u": 2 } },
            "y": { "stream": "y.sql", "tables": { "t": 3 } } } });
        assert_eq!(plan(&m, &[], None).unwrap().len(), 2);
        assert!(plan(&m, &[], Some("z")).is_err());
        let p = plan(&m, &["x.u".into()], Some("z")).unwrap();
        assert_eq!((p[0].target.as_str(), p[0].expected.len()), ("z", 1));
        assert_eq!(plan(&m, &["t".into()], None).unwrap().len(), 2);
        assert!(plan(&m, &["nope".into()], None).is_err());
    }
}
