//! Listing and choosing snapshots: by host, tag and source, and "the
//! latest of a source" as restore, verify and jobs need it.

use crate::error::{Error, ErrorKind, Remedy, Result};
use crate::format::snapshot::Snapshot;
use crate::repo::{Repository, SnapshotEntry};

/// Which snapshots an operation considers; empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Only snapshots of one of these hosts.
    pub hosts: Vec<String>,
    /// Only snapshots that carry every one of these tags.
    pub tags: Vec<String>,
    /// Only snapshots holding every one of these backed-up paths (a
    /// trailing `/` does not count).
    pub paths: Vec<String>,
    /// Only snapshots holding a backup of this configured source.
    pub source: Option<String>,
}

impl SnapshotFilter {
    /// Whether `s` passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.hostname))
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.paths.iter().all(|p| {
                let p = p.trim_end_matches('/');
                s.paths.iter().any(|q| q.trim_end_matches('/') == p)
            })
            && self
                .source
                .as_ref()
                .is_none_or(|name| s.manifests.contains_key(name))
    }
}

/// What [`list`] found.
#[derive(Debug, Default)]
pub struct SnapshotList {
    /// The readable snapshots that pass the filter, oldest first.
    pub snapshots: Vec<SnapshotEntry>,
    /// Why each unreadable snapshot could not be read (they may or may not
    /// pass the filter: nobody can tell).
    pub unreadable: Vec<Error>,
}

/// The snapshots that pass `filter`, oldest first; unreadable ones are
/// reported beside them, not hidden.
///
/// # Errors
/// Only when the snapshot list itself cannot be read.
pub fn list(repo: &Repository, filter: &SnapshotFilter) -> Result<SnapshotList> {
    let (all, unreadable) = repo.snapshots_lenient()?;
    Ok(SnapshotList {
        snapshots: all.into_iter().filter(|(_, s)| filter.matches(s)).collect(),
        unreadable,
    })
}

/// The snapshot `spec` names (`latest`, an id or a unique prefix) among
/// those that pass `filter`: `latest` is the newest that passes; a named
/// one that does not pass is an error, so that a restore never acts on a
/// snapshot of something else.
///
/// # Errors
/// [`ErrorKind::NotFound`] when none passes; [`ErrorKind::InvalidInput`]
/// when the named one does not pass; a damaged snapshot when `latest`
/// cannot be told; an unknown or ambiguous id.
pub fn select(repo: &Repository, spec: &str, filter: &SnapshotFilter) -> Result<SnapshotEntry> {
    if spec == "latest" {
        return repo.latest(|s| filter.matches(s))?.ok_or_else(|| {
            let what = match &filter.source {
                Some(name) => format!("no snapshot of source {name}"),
                None if *filter == SnapshotFilter::default() => {
                    "the repository has no snapshots".to_string()
                }
                None => "no snapshot matches the filter".to_string(),
            };
            Error::new(ErrorKind::NotFound, what).remedy(Remedy::BackupFirst)
        });
    }
    let (id, snap) = repo.find_snapshot(spec)?;
    if !filter.matches(&snap) {
        let e = match &filter.source {
            Some(name) if !snap.manifests.contains_key(name) => Error::invalid(format!(
                "snapshot {} holds no backup of source {name}",
                id.short()
            ))
            .hint("source snapshots are tagged source:NAME"),
            _ => Error::invalid(format!(
                "snapshot {} is not of the host, tags or paths asked for",
                id.short()
            )),
        };
        return Err(e.remedy(Remedy::ListSnapshots));
    }
    Ok((id, snap))
}
