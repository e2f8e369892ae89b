//! The restore: which databases and tables `--only` and `--into` select,
//! how each target is prepared (create, recreate, drop tables), the load
//! through `psql`, roles and tablespaces from `globals.sql`, and the count
//! check that ends it.

use std::collections::{BTreeSet, HashSet};

use salvor_engine::{Error, ErrorKind, Result};
use serde_json::Value;

use super::conn::{Conn, ident, literal};
use super::dump::{EntryFilter, PgScanner, Planner, select_entries};
use super::{Counts, GLOBALS, PostgresConfig};
use crate::source::lines::LineWriter;
use crate::source::sql::{
    failed_load, manifest_counts, manifest_databases, scratch_name, verify_restored,
};
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
    /// The database's owner when it was backed up (older manifests: none).
    owner: Option<String>,
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
                    owner: dbs[db]["owner"].as_str().map(String::from),
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
    /// It does not exist: create it, load, and drop it again on failure.
    Create,
    /// It holds relations: load into a new database beside it, check the
    /// counts, then swap names, so a failure leaves it as it was.
    Recreate,
    /// Replace these tables, dropping them (and, accepted, what depends on
    /// them) in the load's own transaction.
    DropTables(Vec<String>, Vec<String>),
    /// It exists and is empty: load into it (one transaction).
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
                let mut dependents = Vec::new();
                let clash: Vec<String> = set
                    .iter()
                    .map(|(s, t)| format!("{s}.{t}"))
                    .filter(|k| existing.contains(k))
                    .collect();
                if !clash.is_empty() {
                    dependents = conn.dependents(&p.target, &clash)?;
                    if !dependents.is_empty() && !ctx.drop_dependents {
                        return Err(Error::invalid(format!(
                            "replacing {} in database {} would drop, for good, what depends on {}: {}",
                            clash.join(", "),
                            p.target,
                            if clash.len() == 1 { "it" } else { "them" },
                            dependents.join(", ")
                        ))
                        .hint("restore those tables too with --only, restore the whole database, restore --into a new database, or accept the loss with --drop-dependents"));
                    }
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

    /// `CREATE DATABASE`, owned by the backed-up owner where that role exists
    /// and the restoring role may create databases for it; otherwise by the
    /// restoring role, which `note` then says.
    fn create_db(&self, conn: &Conn, name: &str, p: &DbPlan, note: &mut Vec<String>) -> Result<()> {
        let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", ident(name));
        if let Some(owner) = &p.owner {
            match conn.may_own_for(owner)? {
                Some(true) => sql.push_str(&format!(" OWNER {}", ident(owner))),
                Some(false) => note.push(format!(
                    "database {} is owned by the restoring role: it may not create databases for {owner} (grant it membership in {owner})",
                    p.target
                )),
                None => note.push(format!(
                    "database {} is owned by the restoring role: role {owner}, its owner when backed up, does not exist here",
                    p.target
                )),
            }
        }
        conn.admin(&sql).map(drop)
    }

    /// Drops a database this restore created; a failure to do so is added
    /// to `e` rather than hiding it.
    fn drop_created(&self, conn: &Conn, name: &str, e: Error, left: &str) -> Error {
        let dropped = conn
            .admin(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                ident(name)
            ))
            .map(drop);
        failed_load(e, dropped, name, left)
    }

    /// Puts `scratch` in `target`'s place: the old one is renamed aside,
    /// the new one renamed in, and the old one dropped.
    fn swap(&self, conn: &Conn, target: &str, scratch: &str) -> Result<()> {
        let old = scratch_name(target, "old", 63);
        let mut last = None;
        // Clients reconnecting between the terminate and the rename make it
        // fail; a few tries get through.
        for _ in 0..5 {
            let _ = conn.admin(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = {} AND pid <> pg_backend_pid()",
                literal(target)
            ));
            match conn.admin(&format!(
                "ALTER DATABASE {} RENAME TO {}",
                ident(target),
                ident(&old)
            )) {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        if let Some(e) = last {
            let e = e.context(format!(
                "cannot move database {target} aside to put the restored copy in its place"
            ));
            return Err(self.drop_created(
                conn,
                scratch,
                e,
                &format!("database {target} was left as it was"),
            ));
        }
        if let Err(e) = conn.admin(&format!(
            "ALTER DATABASE {} RENAME TO {}",
            ident(scratch),
            ident(target)
        )) {
            // Put the original back.
            let _ = conn.admin(&format!(
                "ALTER DATABASE {} RENAME TO {}",
                ident(&old),
                ident(target)
            ));
            return Err(self.drop_created(
                conn,
                scratch,
                e,
                &format!("database {target} was left as it was"),
            ));
        }
        conn.admin(&format!("DROP DATABASE {} WITH (FORCE)", ident(&old)))
            .map(drop)
            .map_err(|e| e.context(format!("the restore is in place, but the previous database, now {old}, could not be dropped")))
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
            Prepare::Recreate => format!(
                "load into a new database beside {t}, check it, then swap it in for {t} (which is left as it was if anything fails)"
            ),
            Prepare::DropTables(l, deps) if !l.is_empty() => format!(
                "replace table(s) {} in database {t} (dropped and loaded in one transaction){}",
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
        let fresh = matches!(prep, Prepare::Create | Prepare::Recreate);
        let keep = match &p.tables {
            Some(set) => Some(self.plan_entries(ctx, &p.stream, set, fresh, report)?),
            None => None,
        };
        let mut notes = Vec::new();
        let counts = match &prep {
            Prepare::Create => {
                self.create_db(conn, t, p, &mut notes)?;
                self.load_checked(conn, ctx, p, t, keep.as_ref(), &[])
                    .map_err(|e| self.drop_created(conn, t, e, &format!("database {t}, which it had created, was dropped again: nothing is left")))?
            }
            Prepare::Recreate => {
                let scratch = scratch_name(t, "new", 63);
                self.create_db(conn, &scratch, p, &mut notes)?;
                let counts = self
                    .load_checked(conn, ctx, p, &scratch, keep.as_ref(), &[])
                    .map_err(|e| {
                        self.drop_created(
                            conn,
                            &scratch,
                            e,
                            &format!("database {t} was left as it was"),
                        )
                    })?;
                self.swap(conn, t, &scratch)?;
                counts
            }
            Prepare::DropTables(list, _) => {
                self.load_checked(conn, ctx, p, t, keep.as_ref(), list)?
            }
            Prepare::Nothing => self.load_checked(conn, ctx, p, t, keep.as_ref(), &[])?,
        };
        report.actions.extend(notes);
        report.counts.insert(t.clone(), Value::Object(counts));
        Ok(())
    }

    /// Loads into `db` (after dropping `drop_first` in the same transaction)
    /// and compares the counts with the manifest.
    fn load_checked(
        &self,
        conn: &Conn,
        ctx: &RestoreContext,
        p: &DbPlan,
        db: &str,
        keep: Option<&HashSet<usize>>,
        drop_first: &[String],
    ) -> Result<serde_json::Map<String, Value>> {
        self.load(conn, ctx, p, db, keep, drop_first)?;
        verify_restored(&p.target, &p.expected, &conn.counts(db)?)
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
        db: &str,
        keep: Option<&HashSet<usize>>,
        drop_first: &[String],
    ) -> Result<()> {
        let mut cmd = conn.psql(db);
        cmd.arg("--single-transaction");
        let what = format!("psql loading {} into database {db}", p.stream);
        let prelude = if drop_first.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = drop_first
                .iter()
                .filter_map(|k| k.split_once('.'))
                .map(|(s, t)| format!("{}.{}", ident(s), ident(t)))
                .collect();
            format!("DROP TABLE IF EXISTS {} CASCADE;\n", names.join(", "))
        };
        process::run_with_input(cmd, &what, &mut |w| {
            w.write_all(prelude.as_bytes())
                .map_err(|e| Error::io("cannot write to", "psql", e))?;
            match keep {
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
