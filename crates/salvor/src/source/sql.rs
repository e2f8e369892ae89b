//! What the SQL-dump sources (postgres, mysql) share: per-table row counts in
//! their manifests, the check that a restore loaded every row back, and the
//! scratch databases a restore loads into before it touches the target.

use std::collections::BTreeMap;

use salvor_engine::{Error, ErrorKind, Result};
use serde_json::{Map, Value};

/// Rows per table (`schema.table` for postgres, `table` for mysql).
pub(super) type Counts = BTreeMap<String, u64>;

/// The `databases` object of a `kind` manifest.
///
/// # Errors
/// The snapshot was not made by a source of this kind.
pub(super) fn manifest_databases<'m>(
    manifest: &'m Value,
    kind: &str,
) -> Result<&'m Map<String, Value>> {
    manifest["databases"].as_object().ok_or_else(|| {
        Error::invalid(format!("the snapshot has no {kind} manifest"))
            .hint("restore it with the source type that made it")
    })
}

/// The row counts one database's manifest entry records.
pub(super) fn manifest_counts(db: &Value) -> Counts {
    serde_json::from_value(db["tables"].clone()).unwrap_or_default()
}

/// The first table of `want` whose rows in `got` differ (missing counts as
/// 0): (table, wanted, got).
pub(super) fn first_difference<'w>(want: &'w Counts, got: &Counts) -> Option<(&'w str, u64, u64)> {
    want.iter().find_map(|(table, n)| {
        let g = got.get(table).copied().unwrap_or(0);
        (g != *n).then_some((table.as_str(), *n, g))
    })
}

/// Checks each expected table against the rows restored into database `db`;
/// returns the restored counts of those tables, for the report.
///
/// # Errors
/// The first table whose rows differ from the manifest.
pub(super) fn verify_restored(
    db: &str,
    expected: &Counts,
    restored: &Counts,
) -> Result<Map<String, Value>> {
    if let Some((table, n, got)) = first_difference(expected, restored) {
        return Err(Error::new(
            ErrorKind::Io,
            format!("restored table {table} in database {db} has {got} rows, the snapshot has {n}"),
        )
        .hint("check the target for triggers (or rules) that change rows on insert"));
    }
    Ok(expected
        .iter()
        .map(|(table, n)| (table.clone(), (*n).into()))
        .collect())
}

/// A name beside `target` for a restore's scratch database (`what`: "new",
/// "old", "trial"), within `max` bytes (PostgreSQL 63, MySQL 64).
pub(super) fn scratch_name(target: &str, what: &str, max: usize) -> String {
    let suffix = format!("_salvor_{what}_{}", &salvor_engine::id::random_hex()[..8]);
    let mut base = target.to_string();
    while base.len() + suffix.len() > max {
        base.pop();
    }
    base + &suffix
}

/// The error of a load that failed into database `db`, which the restore
/// created and then tried to drop (`dropped`): it says what is left
/// (`left`), or that `db` must be dropped by hand.
pub(super) fn failed_load(e: Error, dropped: Result<()>, db: &str, left: &str) -> Error {
    match dropped {
        Ok(()) => e.context(format!("the restore failed and {left}")),
        Err(d) => e.context(format!(
            "the restore failed, and the database {db} it created could not be dropped ({}): drop it by hand",
            d.clone_message()
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn restored_counts_must_match_the_manifest() {
        let want = Counts::from([("a".into(), 2), ("b".into(), 0)]);
        let same = Counts::from([("a".into(), 2), ("c".into(), 9)]);
        assert_eq!(
            verify_restored("d", &want, &same).unwrap(),
            *json!({ "a": 2, "b": 0 }).as_object().unwrap()
        );
        let short = Counts::from([("a".into(), 1)]);
        let e = verify_restored("d", &want, &short).unwrap_err().to_string();
        assert!(
            e.contains("table a in database d has 1 rows, the snapshot has 2"),
            "{e}"
        );
        assert!(manifest_databases(&json!({}), "mysql").is_err());
        assert_eq!(
            manifest_counts(&json!({ "tables": { "t": 3 } })),
            Counts::from([("t".into(), 3)])
        );
    }
}
