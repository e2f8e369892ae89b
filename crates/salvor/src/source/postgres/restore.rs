//! The restore: which databases and tables `--only` and `--into` select,
//! how each target is prepared (create, recreate, drop tables), the load
//! through `psql`, roles and tablespaces from `globals.sql`, and the count
//! check that ends it.

use std::collections::{BTreeSet, HashSet};

use salvor_engine::{Error, ErrorKind, Result};
use serde_json::Value;

use super::conn::{Conn, ident};
use super::dump::{EntryFilter, PgScanner, Planner, select_entries};
use super::{Counts, GLOBALS, PostgresConfig};
use crate::source::lines::LineWriter;
use crate::source::sql::{manifest_counts, manifest_databases, verify_restored};
use crate::source::{RestoreContext, RestoreReport, process};

/// One database to restore.
#[derive(Debug)]
pub(super) struct DbPlan {
    source: String,
    target: String,
    stream: String,
    /// Chosen tables as (schema, table); `None` = the whole database.
    tables: Option<BTreeSet<(String, String)>>,
    /// Rows per restored table according to the manifest.
    expected: Counts,
}

/// Resolves `--only` (databases or tables, `table` or `schema.table`) and `--into`.
pub(super) fn plan(manifest: &Value, only: &[String], rename: Option<&str>) -> Result<Vec<DbPlan>> {
    let dbs = manifest_databases(manifest, "postgres")?;
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
                ctx.confirm(
                    &format!("database {} ({} relations)", p.target, existing.len()),
                    "--into NEWNAME or --to OTHER_SOURCE",
                )?;
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
                    ctx.confirm(
                        &format!(
                            "table(s) {} in database {}{}",
                            clash.join(", "),
                            p.target,
                            cascade_note(&dependents)
                        ),
                        "--into NEWNAME or --to OTHER_SOURCE",
                    )?;
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
    pub(super) fn restore_globals(
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

    pub(super) fn restore_db(
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
        let counts = verify_restored(t, &p.expected, &conn.counts(t)?)?;
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
