//! Talking to the server: the client tools found on PATH, the connection
//! options and password every tool runs with, SQL quoting, and the catalogue
//! queries (databases, character sets, tables, row counts).

use std::path::PathBuf;
use std::process::Command;

use salvor_engine::Result;

use super::{Counts, MysqlConfig};
use crate::source::process;
use crate::source::secret;

/// Databases that belong to the server itself.
const SYSTEM_DATABASES: [&str; 4] = ["information_schema", "performance_schema", "mysql", "sys"];

/// A quoted identifier.
pub(super) fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A quoted string literal (valid whatever `NO_BACKSLASH_ESCAPES` says).
pub(super) fn literal(s: &str) -> String {
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
    names
        .iter()
        .find_map(|n| process::find_on_path(n))
        .unwrap_or_else(|| PathBuf::from(names[0]))
}

/// The connection settings and resolved password of one operation.
pub(super) struct Conn<'a> {
    cfg: &'a MysqlConfig,
    password: Option<String>,
}

impl<'a> Conn<'a> {
    pub(super) fn new(cfg: &'a MysqlConfig) -> Result<Self> {
        let password = secret::resolve(cfg.password.as_ref())?;
        Ok(Self { cfg, password })
    }

    /// A tool with connection options; the password in its environment.
    pub(super) fn tool(&self, program: PathBuf) -> Command {
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

    pub(super) fn client(&self) -> Command {
        let mut c = self.tool(find_tool(self.cfg.client.as_ref(), ["mysql", "mariadb"]));
        c.arg("--connect-timeout=10");
        c
    }

    pub(super) fn dump_tool(&self) -> PathBuf {
        find_tool(self.cfg.dump_tool.as_ref(), ["mysqldump", "mariadb-dump"])
    }

    /// Runs SQL; returns the rows, tab-separated, without headers.
    pub(super) fn query(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        let mut c = self.client();
        c.args(["--batch", "--skip-column-names", "--raw", "-e", sql]);
        let out = process::run(c, "mysql client")?;
        Ok(out
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect())
    }

    /// Why the dump tool could not dump stored routines with this user, if
    /// it could not: MariaDB's `mysqldump --routines` reads `mysql.proc`,
    /// and a backup user without `SELECT` on it fails the whole dump.
    pub(super) fn routines_denied(&self) -> Result<Option<String>> {
        match self.query("SELECT 1 FROM mysql.proc LIMIT 0") {
            Ok(_) => Ok(None),
            Err(e) if e.to_string().contains("denied") => Ok(Some(format!(
                "user {} has no SELECT on mysql.proc",
                self.cfg.user.as_deref().unwrap_or("(default)")
            ))),
            // MySQL 8 keeps routines in its data dictionary: no such table,
            // and nothing to check here.
            Err(_) => Ok(None),
        }
    }

    pub(super) fn version(&self) -> Result<String> {
        let rows = self.query("SELECT VERSION()")?;
        Ok(rows.concat().concat())
    }

    pub(super) fn list_databases(&self) -> Result<Vec<String>> {
        Ok(self
            .query("SHOW DATABASES")?
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .filter(|d| !SYSTEM_DATABASES.contains(&d.as_str()))
            .collect())
    }

    /// Character set and collation; `None` when the database does not exist.
    pub(super) fn charset(&self, db: &str) -> Result<Option<(String, String)>> {
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
    pub(super) fn tables(&self, db: &str, views_too: bool) -> Result<Vec<String>> {
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
    pub(super) fn counts(&self, db: &str) -> Result<Counts> {
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
