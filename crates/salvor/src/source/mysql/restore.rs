//! The restore: which databases and tables `--only` and `--into` select,
//! how each target is prepared (create, recreate or keep), the load through
//! the client, and the count check that ends it.

use std::collections::{BTreeMap, BTreeSet};

use salvor_engine::{Error, Result};
use serde_json::Value;

use super::conn::{Conn, ident};
use super::dump::SectionFilter;
use super::{Counts, MysqlConfig};
use crate::source::lines::LineWriter;
use crate::source::sql::{
    failed_load, manifest_counts, manifest_databases, scratch_name, verify_restored,
};
use crate::source::{RestoreContext, RestoreReport, process};

/// One database to restore.
pub(super) struct DbPlan {
    source: String,
    target: String,
    stream: String,
    charset: Option<(String, String)>,
    /// Chosen tables; `None` = the whole database.
    tables: Option<BTreeSet<String>>,
    expected: Counts,
}

/// Resolves `--only` (databases, `table` or `db.table`) and `--into`.
pub(super) fn plan(manifest: &Value, only: &[String], rename: Option<&str>) -> Result<Vec<DbPlan>> {
    let dbs = manifest_databases(manifest, "mysql")?;
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

/// What happens to a target database.
#[derive(PartialEq, Eq)]
enum Prepare {
    /// It does not exist: create, load, drop again on failure.
    Create,
    /// It holds tables the load replaces: load a trial copy into a new
    /// database first, so that what would fail (a trigger's definer, a
    /// missing privilege) fails before anything of the target is touched.
    Replace { recreate: bool },
    /// Nothing of it is replaced.
    Load,
}

impl MysqlConfig {
    /// Confirms and describes what happens to the target.
    fn prepare(
        &self,
        conn: &Conn,
        ctx: &RestoreContext,
        p: &DbPlan,
        report: &mut RestoreReport,
    ) -> Result<Prepare> {
        let t = &p.target;
        if conn.charset(t)?.is_none() {
            report.actions.push(format!("create database {t}"));
            return Ok(Prepare::Create);
        }
        let existing = conn.tables(t, true)?;
        let trial = "after a trial load into a new database succeeded";
        match &p.tables {
            None if existing.is_empty() => {
                report.actions.push(format!("use empty database {t}"));
                Ok(Prepare::Load)
            }
            None => {
                ctx.confirm(
                    &format!("database {t} ({} tables)", existing.len()),
                    "--into NEWNAME or --to OTHER_SOURCE",
                )?;
                report
                    .actions
                    .push(format!("drop and recreate database {t}, {trial}"));
                Ok(Prepare::Replace { recreate: true })
            }
            Some(set) => {
                let clash: Vec<&String> = existing.iter().filter(|e| set.contains(*e)).collect();
                if clash.is_empty() {
                    return Ok(Prepare::Load);
                }
                let names = clash.iter().map(|s| s.as_str()).collect::<Vec<_>>();
                ctx.confirm(
                    &format!("table(s) {} in database {t}", names.join(", ")),
                    "--into NEWNAME or --to OTHER_SOURCE",
                )?;
                report.actions.push(format!(
                    "replace table(s) {} in database {t}, {trial}",
                    names.join(", ")
                ));
                Ok(Prepare::Replace { recreate: false })
            }
        }
    }

    fn create(&self, conn: &Conn, p: &DbPlan, name: &str) -> Result<()> {
        let t = ident(name);
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

    fn drop_db(&self, conn: &Conn, name: &str) -> Result<()> {
        conn.query(&format!("DROP DATABASE IF EXISTS {}", ident(name)))
            .map(drop)
    }

    fn load(&self, conn: &Conn, ctx: &RestoreContext, p: &DbPlan, db: &str) -> Result<()> {
        let mut cmd = conn.client();
        cmd.arg(format!("--database={db}"));
        let what = format!("mysql client loading {} into database {db}", p.stream);
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

    /// Loads into a database this restore created, dropping it again when
    /// the load or the count check fails.
    fn load_created(
        &self,
        conn: &Conn,
        ctx: &RestoreContext,
        p: &DbPlan,
        db: &str,
        left: &str,
    ) -> Result<serde_json::Map<String, Value>> {
        let res = self
            .load(conn, ctx, p, db)
            .and_then(|()| verify_restored(&p.target, &p.expected, &conn.counts(db)?));
        res.map_err(|e| failed_load(e, self.drop_db(conn, db), db, left))
    }

    pub(super) fn restore_db(
        &self,
        conn: &Conn,
        ctx: &RestoreContext,
        p: &DbPlan,
        report: &mut RestoreReport,
    ) -> Result<()> {
        let prep = self.prepare(conn, ctx, p, report)?;
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
        let t = &p.target;
        let counts = match prep {
            Prepare::Create => {
                self.create(conn, p, t)?;
                self.load_created(
                    conn,
                    ctx,
                    p,
                    t,
                    &format!(
                        "database {t}, which it had created, was dropped again: nothing is left"
                    ),
                )?
            }
            Prepare::Replace { recreate } => {
                // MySQL has no transactional DDL and no RENAME DATABASE: a
                // failed load into the target would leave it half replaced.
                // A trial copy proves the load first (at the cost of loading twice).
                let trial = scratch_name(t, "trial", 64);
                self.create(conn, p, &trial)?;
                self.load_created(
                    conn,
                    ctx,
                    p,
                    &trial,
                    &format!("database {t} was left as it was"),
                )?;
                self.drop_db(conn, &trial)?;
                if recreate {
                    self.create(conn, p, t)?;
                }
                self.load(conn, ctx, p, t)?;
                verify_restored(t, &p.expected, &conn.counts(t)?)?
            }
            Prepare::Load => {
                self.load(conn, ctx, p, t)?;
                verify_restored(t, &p.expected, &conn.counts(t)?)?
            }
        };
        report.counts.insert(t.clone(), Value::Object(counts));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::conn::literal;
    use super::*;

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
