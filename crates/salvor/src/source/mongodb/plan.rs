//! The restore plan, shared by both methods: which collections of the
//! manifest `--only` and `--into` select, and the check of their targets.

use std::collections::BTreeMap;

use salvor_engine::{Error, ErrorKind, Result};
use serde_json::Value;

use super::connection::Conn;
use crate::source::RestoreContext;

/// One collection to restore.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Item {
    pub(super) db: String,
    pub(super) coll: String,
    pub(super) into: String,
    pub(super) documents: u64,
    pub(super) indexes: u64,
}

/// The collections of a manifest that `--only` selects, under `--into`'s name.
pub(super) fn restore_items(
    manifest: &Value,
    only: &[String],
    into: Option<&str>,
) -> Result<Vec<Item>> {
    let dbs = manifest["databases"]
        .as_object()
        .ok_or_else(|| Error::corrupt("the snapshot's mongodb manifest lists no databases"))?;
    let all: Vec<Item> = dbs
        .iter()
        .flat_map(|(db, colls)| {
            colls
                .as_object()
                .into_iter()
                .flatten()
                .map(move |(coll, c)| Item {
                    db: db.clone(),
                    coll: coll.clone(),
                    into: db.clone(),
                    documents: c["documents"].as_u64().unwrap_or(0),
                    indexes: c["indexes"].as_u64().unwrap_or(0),
                })
        })
        .collect();
    let matches =
        |o: &str, i: &Item| o == i.db || o == i.coll || o == format!("{}.{}", i.db, i.coll);
    if let Some(unknown) = only.iter().find(|o| !all.iter().any(|i| matches(o, i))) {
        let names: Vec<String> = all.iter().map(|i| format!("{}.{}", i.db, i.coll)).collect();
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("{unknown} is not in the snapshot"),
        )
        .hint(format!(
            "pass --only with a database or collection of: {}",
            names.join(", ")
        )));
    }
    let mut chosen: Vec<Item> = all
        .into_iter()
        .filter(|i| only.is_empty() || only.iter().any(|o| matches(o, i)))
        .collect();
    if let Some(name) = into {
        let mut dbs: Vec<&str> = chosen.iter().map(|i| i.db.as_str()).collect();
        dbs.dedup();
        if dbs.len() > 1 {
            return Err(Error::invalid(format!(
                "--into renames one database, but the selection holds {}",
                dbs.join(", ")
            ))
            .hint("pick one database with --only"));
        }
        check_db_name(name)?;
        for i in &mut chosen {
            i.into = name.to_string();
        }
    }
    Ok(chosen)
}

pub(super) fn check_db_name(name: &str) -> Result<()> {
    let bad =
        name.is_empty() || name.len() > 63 || name.contains(['/', '\\', '.', ' ', '"', '$', '\0']);
    if bad {
        return Err(
            Error::invalid(format!("{name:?} is not a valid mongodb database name"))
                .hint("use letters, digits, '-' and '_'"),
        );
    }
    Ok(())
}

/// Asks before replacing non-empty targets; returns each target's document count.
///
/// Only collections that exist are counted: counting a missing one may
/// create it on some servers (the nx-27017 stand-in does).
pub(super) fn check_targets(conn: &Conn, ctx: &RestoreContext, items: &[Item]) -> Result<Vec<u64>> {
    let mut present: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for i in items {
        if !present.contains_key(i.into.as_str()) {
            present.insert(&i.into, conn.collections(&i.into)?);
        }
    }
    let existing: Vec<u64> = items
        .iter()
        .map(|i| {
            if present[i.into.as_str()].contains(&i.coll) {
                conn.count(&i.into, &i.coll)
            } else {
                Ok(0)
            }
        })
        .collect::<Result<_>>()?;
    let full: Vec<String> = items
        .iter()
        .zip(&existing)
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| format!("{}.{} ({n} documents)", i.into, i.coll))
        .collect();
    if !full.is_empty() {
        ctx.confirm(
            &format!("non-empty collections {}", full.join(", ")),
            "--into NEWNAME or --to OTHER_SOURCE",
        )?;
    }
    Ok(existing)
}

pub(super) fn describe(i: &Item, existing: u64) -> String {
    let replace = if existing > 0 {
        format!(", replacing {existing} documents")
    } else {
        String::new()
    };
    format!(
        "{}.{} into {}.{} ({} documents, {} indexes{replace})",
        i.db, i.coll, i.into, i.coll, i.documents, i.indexes
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn manifest() -> Value {
        json!({ "databases": {
            "app": { "users": { "documents": 3, "indexes": 2 }, "orders": { "documents": 5, "indexes": 1 } },
            "auth": { "keys": { "documents": 1, "indexes": 1 } },
        }})
    }

    #[test]
    fn only_and_into_select_and_rename() {
        let all = restore_items(&manifest(), &[], None).unwrap();
        assert_eq!(all.len(), 3);
        let one = restore_items(&manifest(), &["app.users".into()], Some("copy")).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(
            (one[0].db.as_str(), one[0].into.as_str(), one[0].documents),
            ("app", "copy", 3)
        );
        let db = restore_items(&manifest(), &["app".into()], None).unwrap();
        assert_eq!(db.len(), 2);
        let err = restore_items(&manifest(), &[], Some("copy"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--into renames one database"), "{err}");
        let err = restore_items(&manifest(), &["nope".into()], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope is not in the snapshot") && err.contains("app.users"),
            "{err}"
        );
        assert!(restore_items(&manifest(), &["app".into()], Some("a.b")).is_err());
    }
}
