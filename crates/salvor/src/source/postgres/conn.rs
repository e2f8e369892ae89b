//! Talking to the server: the environment every tool runs with, a `psql`
//! session that holds a transaction open across statements, SQL quoting, and
//! the catalogue queries (databases, relations, row counts).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use salvor_engine::{Error, ErrorKind, Result};

use super::{Counts, PostgresConfig};
use crate::source::process;
use crate::source::secret;

/// Counts the rows of every ordinary user table in one statement, as JSON.
pub(super) const COUNT_SQL: &str = "SELECT coalesce(json_object_agg(k, n ORDER BY k), '{}') FROM ( \
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
pub(super) fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A quoted SQL string literal (standard_conforming_strings is on since 9.1).
pub(super) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The connection settings and resolved password of one operation.
pub(super) struct Conn<'a> {
    cfg: &'a PostgresConfig,
    password: Option<String>,
}

impl<'a> Conn<'a> {
    pub(super) fn new(cfg: &'a PostgresConfig) -> Result<Self> {
        let password = secret::resolve(cfg.password.as_ref())?;
        Ok(Self { cfg, password })
    }

    /// A tool connecting to `db`, credentials in its environment.
    pub(super) fn tool(&self, name: &str, db: &str) -> Command {
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
    pub(super) fn psql(&self, db: &str) -> Command {
        let mut c = self.tool("psql", db);
        c.args(["-X", "-q", "-w", "-A", "-t", "-v", "ON_ERROR_STOP=1"]);
        c
    }

    /// Runs one statement in `db` and returns its trimmed output.
    pub(super) fn query(&self, db: &str, sql: &str) -> Result<String> {
        let mut c = self.psql(db);
        c.arg("-c").arg(sql);
        Ok(process::run(c, &format!("psql on database {db}"))?
            .trim()
            .to_string())
    }

    pub(super) fn admin(&self, sql: &str) -> Result<String> {
        self.query(&self.cfg.maintenance_database, sql)
    }

    pub(super) fn version(&self) -> Result<String> {
        self.admin("SHOW server_version")
    }

    pub(super) fn list_databases(&self) -> Result<Vec<String>> {
        let out = self.admin(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
        )?;
        Ok(out.lines().map(str::to_string).collect())
    }

    pub(super) fn database_exists(&self, db: &str) -> Result<bool> {
        let sql = format!("SELECT 1 FROM pg_database WHERE datname = {}", literal(db));
        Ok(self.admin(&sql)? == "1")
    }

    /// The owner of database `db`.
    pub(super) fn owner(&self, db: &str) -> Result<String> {
        self.admin(&format!(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = {}",
            literal(db)
        ))
    }

    /// Whether the connecting role may create a database owned by `role`:
    /// `None` when no such role exists.
    pub(super) fn may_own_for(&self, role: &str) -> Result<Option<bool>> {
        let out = self.admin(&format!(
            "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
               OR pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = {}",
            literal(role)
        ))?;
        Ok(match out.as_str() {
            "" => None,
            v => Some(v == "t"),
        })
    }

    pub(super) fn relations(&self, db: &str) -> Result<BTreeSet<String>> {
        Ok(self
            .query(db, RELATIONS_SQL)?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Objects outside `tables` that depend on them (views, foreign keys of
    /// other tables): what `DROP TABLE ... CASCADE` would also remove.
    pub(super) fn dependents(&self, db: &str, tables: &[String]) -> Result<Vec<String>> {
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

    pub(super) fn counts(&self, db: &str) -> Result<Counts> {
        parse_counts(&self.query(db, COUNT_SQL)?, db)
    }
}

pub(super) fn parse_counts(json: &str, db: &str) -> Result<Counts> {
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
    let on_path = process::find_on_path(name);
    let wrapped = on_path
        .as_ref()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .is_some_and(|p| p.ends_with("postgresql-common/pg_wrapper"));
    match newest_client_dir() {
        Some(dir) if wrapped && dir.join(name).is_file() => dir.join(name),
        _ => on_path.unwrap_or_else(|| PathBuf::from(name)),
    }
}

/// The `bin` directory of the newest client under /usr/lib/postgresql,
/// looked up once per process.
fn newest_client_dir() -> Option<&'static PathBuf> {
    static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
            .max_by_key(|(v, _)| *v)
            .map(|(_, dir)| dir.join("bin"))
    })
    .as_ref()
}

/// A `psql` session kept open across statements, to hold a transaction.
pub(super) struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<Vec<u8>>>,
    what: String,
}

const SENTINEL: &str = "__salvor_statement_done__";

impl Session {
    pub(super) fn open(conn: &Conn, db: &str) -> Result<Self> {
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
    pub(super) fn ask(&mut self, sql: &str) -> Result<String> {
        self.send(sql)?;
        self.answer()
    }

    /// Starts `sql` without waiting for it: the server works on it while
    /// the caller does something else; [`Session::answer`] collects it.
    pub(super) fn send(&mut self, sql: &str) -> Result<()> {
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
    pub(super) fn answer(&mut self) -> Result<String> {
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

    pub(super) fn close(mut self) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_quote() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
