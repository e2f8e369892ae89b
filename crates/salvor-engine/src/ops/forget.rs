//! Retention: which snapshots a policy keeps, and why each one is kept.
//!
//! The rules are restic's where they are sound: snapshots are grouped
//! (by host and paths unless told otherwise), and in each group, newest
//! first, `last N` keeps the N newest, `daily N` keeps the newest snapshot
//! of each of the N newest days that have one (and so on for hours,
//! weeks, months and years), `within D` keeps everything up to D older
//! than the group's newest snapshot, `within-daily D` the newest of each
//! day within D, and a tag keeps what carries it. A snapshot no rule
//! keeps is removed. Two things restic does not: buckets are calendar
//! periods in a time zone (local by default), so a DST change neither
//! merges nor splits a day; and a policy never empties a group (its
//! newest snapshot stays, with the reason said), nor removes a snapshot
//! tagged [`PROTECTED_TAG`].

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};

use crate::backend::FileType;
use crate::error::{Error, ErrorKind, Result};
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;
use crate::ops::snapshots::SnapshotFilter;
use crate::repo::{Repository, SnapshotEntry};

/// The tag that protects a snapshot from every policy and from removal
/// by id.
pub const PROTECTED_TAG: &str = "keep";

/// A calendar period snapshots are bucketed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// An hour of the local clock.
    Hourly,
    /// A calendar day.
    Daily,
    /// An ISO week (Monday to Sunday).
    Weekly,
    /// A calendar month.
    Monthly,
    /// A calendar year.
    Yearly,
}

impl Period {
    /// Every period, shortest first.
    pub const ALL: [Self; 5] = [
        Self::Hourly,
        Self::Daily,
        Self::Weekly,
        Self::Monthly,
        Self::Yearly,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
            Self::Yearly => "yearly",
        }
    }

    /// The bucket of `t`: equal for two times in the same period.
    fn bucket(self, t: &Zoned) -> (i32, i32, i32, i32) {
        let (y, m, d, h) = (
            i32::from(t.year()),
            i32::from(t.month()),
            i32::from(t.day()),
            i32::from(t.hour()),
        );
        match self {
            Self::Hourly => (y, m, d, h),
            Self::Daily => (y, m, d, 0),
            Self::Weekly => {
                let w = t.date().iso_week_date();
                (i32::from(w.year()), i32::from(w.week()), 0, 0)
            }
            Self::Monthly => (y, m, 0, 0),
            Self::Yearly => (y, 0, 0, 0),
        }
    }
}

/// What to keep. An empty policy keeps nothing and is refused.
#[derive(Debug, Clone, Default)]
pub struct KeepPolicy {
    /// The N newest snapshots.
    pub last: Option<u32>,
    /// The newest snapshot of each of the N newest periods that have one.
    pub periods: BTreeMap<Period, u32>,
    /// Every snapshot up to this much older than the group's newest.
    pub within: Option<Span>,
    /// The newest snapshot of each period within this of the group's newest.
    pub within_periods: BTreeMap<Period, Span>,
    /// Every snapshot carrying one of these tags.
    pub tags: Vec<String>,
}

impl KeepPolicy {
    /// True when no rule is set.
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
            && self.periods.is_empty()
            && self.within.is_none()
            && self.within_periods.is_empty()
            && self.tags.is_empty()
    }
}

/// What snapshots are grouped by; each group gets the policy on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    /// The host that made it.
    pub host: bool,
    /// The paths it holds.
    pub paths: bool,
    /// Its tags.
    pub tags: bool,
    /// The sources whose manifests it carries.
    pub source: bool,
    /// The job that made it.
    pub job: bool,
}

impl Default for GroupBy {
    /// Host and paths, as restic groups.
    fn default() -> Self {
        Self {
            host: true,
            paths: true,
            tags: false,
            source: false,
            job: false,
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = Error;

    /// `host,paths`, `source`, `host,job`, ... or the empty string for one
    /// group of everything.
    fn from_str(s: &str) -> Result<Self> {
        let mut g = Self {
            host: false,
            paths: false,
            tags: false,
            source: false,
            job: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" | "path" => g.paths = true,
                "tags" | "tag" => g.tags = true,
                "source" => g.source = true,
                "job" => g.job = true,
                _ => {
                    return Err(
                        Error::invalid(format!("cannot group snapshots by {part:?}")).hint(
                            "group by host, paths, tags, source and job, separated by commas",
                        ),
                    );
                }
            }
        }
        Ok(g)
    }
}

/// A group's identity: what its snapshots share.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct GroupKey {
    /// The host, when grouped by host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The paths, when grouped by paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// The tags, when grouped by tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// The sources, when grouped by source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    /// The job, when grouped by job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

impl GroupBy {
    fn key(&self, s: &Snapshot) -> GroupKey {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        GroupKey {
            host: self.host.then(|| s.hostname.clone()),
            paths: self.paths.then(|| sorted(&s.paths)),
            tags: self.tags.then(|| sorted(&s.tags)),
            sources: self.source.then(|| s.manifests.keys().cloned().collect()),
            job: self.job.then(|| s.job.clone().unwrap_or_default()),
        }
    }
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = &self.paths {
            parts.push(format!("paths {}", p.join(" ")));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags {}", t.join(",")));
        }
        if let Some(s) = &self.sources {
            parts.push(format!("sources {}", s.join(",")));
        }
        if let Some(j) = &self.job {
            parts.push(format!("job {j}"));
        }
        if parts.is_empty() {
            return f.write_str("all snapshots");
        }
        f.write_str(&parts.join(", "))
    }
}

/// One snapshot's fate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// When it was taken.
    pub time: Timestamp,
    /// Whether it stays.
    pub keep: bool,
    /// Every rule that keeps it ("daily", "last", "within 30d", "tag
    /// keep", ...); empty for one removed.
    pub reasons: Vec<String>,
}

/// A group's decisions, newest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupPlan {
    /// What the group's snapshots share.
    pub key: GroupKey,
    /// Its snapshots, newest first.
    pub snapshots: Vec<Decision>,
}

/// Applies `policy` to `snapshots` in the time zone `tz`: the decisions,
/// by group (groups in key order). Pure: nothing is read or removed.
///
/// # Errors
/// An empty policy.
pub fn plan(
    snapshots: &[SnapshotEntry],
    policy: &KeepPolicy,
    group_by: GroupBy,
    tz: &TimeZone,
) -> Result<Vec<GroupPlan>> {
    if policy.is_empty() {
        return Err(Error::invalid("no keep rule given: the policy would keep nothing")
            .hint("give at least one rule (keep-last, keep-daily, keep-within, ...), or name the snapshots to forget"));
    }
    let mut groups: BTreeMap<GroupKey, Vec<&SnapshotEntry>> = BTreeMap::new();
    for entry in snapshots {
        groups
            .entry(group_by.key(&entry.1))
            .or_default()
            .push(entry);
    }
    Ok(groups
        .into_iter()
        .map(|(key, mut members)| {
            // Newest first; equal times in id order, so the plan is stable.
            members.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(a.0.cmp(&b.0)));
            GroupPlan {
                key,
                snapshots: decide(&members, policy, tz),
            }
        })
        .collect())
}

fn span_text(s: &Span) -> String {
    format!("{s:#}")
}

/// The decisions for one group, newest first.
fn decide(members: &[&SnapshotEntry], policy: &KeepPolicy, tz: &TimeZone) -> Vec<Decision> {
    let zoned: Vec<Zoned> = members
        .iter()
        .map(|(_, s)| s.time.to_zoned(tz.clone()))
        .collect();
    let newest = zoned.first().cloned();
    // The oldest time a within rule reaches, per rule.
    let reach = |span: &Span| newest.as_ref().and_then(|n| n.checked_sub(*span).ok());
    let within = policy.within.as_ref().map(|s| (reach(s), span_text(s)));
    let within_periods: Vec<(Period, Option<Zoned>, String)> = policy
        .within_periods
        .iter()
        .map(|(p, s)| (*p, reach(s), span_text(s)))
        .collect();
    let mut left: BTreeMap<Period, u32> = policy.periods.clone();
    let mut last_bucket: BTreeMap<Period, (i32, i32, i32, i32)> = BTreeMap::new();
    let mut last_within_bucket: BTreeMap<Period, (i32, i32, i32, i32)> = BTreeMap::new();
    let mut out = Vec::with_capacity(members.len());
    for (i, ((id, snap), t)) in members.iter().map(|e| (&e.0, &e.1)).zip(&zoned).enumerate() {
        let mut reasons = Vec::new();
        if policy.last.is_some_and(|n| (i as u64) < u64::from(n)) {
            reasons.push("last".to_string());
        }
        for p in Period::ALL {
            let Some(n) = left.get_mut(&p) else { continue };
            let b = p.bucket(t);
            if *n > 0 && last_bucket.get(&p) != Some(&b) {
                *n -= 1;
                last_bucket.insert(p, b);
                reasons.push(p.name().to_string());
            }
        }
        if let Some((Some(from), text)) = &within
            && t >= from
        {
            reasons.push(format!("within {text}"));
        }
        for (p, from, text) in &within_periods {
            let b = p.bucket(t);
            if from.as_ref().is_some_and(|f| t >= f) && last_within_bucket.get(p) != Some(&b) {
                last_within_bucket.insert(*p, b);
                reasons.push(format!("{} within {text}", p.name()));
            }
        }
        for tag in &policy.tags {
            if snap.tags.contains(tag) {
                reasons.push(format!("tag {tag}"));
            }
        }
        if snap.tags.iter().any(|t| t == PROTECTED_TAG)
            && !policy.tags.iter().any(|t| t == PROTECTED_TAG)
        {
            reasons.push(format!("protected (tag {PROTECTED_TAG})"));
        }
        out.push(Decision {
            id: *id,
            time: snap.time,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    let none_kept = !out.iter().any(|d| d.keep);
    if let Some(first) = out.first_mut()
        && none_kept
    {
        // Never empty a group: a policy that keeps none of it is more
        // likely a mistake than a wish to lose the host's last backup.
        first.keep = true;
        first
            .reasons
            .push("newest of its group (no rule kept any)".into());
    }
    out
}

/// What [`forget`] is to do.
#[derive(Debug, Clone, Default)]
pub struct ForgetOptions {
    /// Snapshots to remove by id (or prefix); when given, no policy.
    pub ids: Vec<String>,
    /// The policy, when no ids are given.
    pub policy: KeepPolicy,
    /// How snapshots are grouped for the policy.
    pub group_by: GroupBy,
    /// Only these snapshots are considered (the others stay).
    pub filter: SnapshotFilter,
    /// The zone the policy's calendar periods are in; `None`: the system's.
    pub time_zone: Option<TimeZone>,
    /// Decide and report, remove nothing.
    pub dry_run: bool,
}

/// What [`forget`] decided, and did unless it was a dry run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ForgetResults {
    /// The decisions by group (one group of the named ones for ids).
    pub groups: Vec<GroupPlan>,
    /// Snapshots removed (or, in a dry run, to be removed).
    pub removed: usize,
    /// Snapshots kept.
    pub kept: usize,
    /// Whether nothing was removed because it was a dry run.
    pub dry_run: bool,
}

/// Removes the snapshots `opts` names, or those its policy does not keep.
/// Only snapshot documents go: the data they alone reference stays in
/// the packs until a prune. A run killed half-way has removed some of
/// them; running it again removes the rest.
///
/// # Errors
/// Ids and a policy at once, or neither; an unknown id, or a protected
/// snapshot named by id; an unreadable snapshot (it might be the newest of
/// a group, so a policy cannot be applied safely); lock conflicts; backend
/// failures.
pub fn forget(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetResults> {
    let _lock = repo.lock(false, "forget")?;
    let groups = if opts.ids.is_empty() {
        let list = crate::ops::snapshots::list(repo, &opts.filter)?;
        if let Some(first) = list.unreadable.into_iter().next() {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "cannot apply a retention policy while a snapshot cannot be read: {}",
                    first.without_hint()
                ),
            )
            .remedy(crate::Remedy::NameReadableSnapshot));
        }
        let tz = opts.time_zone.clone().unwrap_or_else(TimeZone::system);
        plan(&list.snapshots, &opts.policy, opts.group_by, &tz)?
    } else {
        if !opts.policy.is_empty() {
            return Err(
                Error::invalid("snapshots named by id and a keep policy at once")
                    .hint("name the snapshots to forget, or give the rules, not both"),
            );
        }
        by_id(repo, &opts.ids, &opts.filter)?
    };
    let doomed: Vec<SnapshotId> = groups
        .iter()
        .flat_map(|g| &g.snapshots)
        .filter(|d| !d.keep)
        .map(|d| d.id)
        .collect();
    let kept = groups
        .iter()
        .flat_map(|g| &g.snapshots)
        .filter(|d| d.keep)
        .count();
    if !opts.dry_run {
        for id in &doomed {
            repo.cancel().check()?;
            repo.backend().delete(FileType::Snapshot, &id.to_hex())?;
        }
    }
    Ok(ForgetResults {
        groups,
        removed: doomed.len(),
        kept,
        dry_run: opts.dry_run,
    })
}

/// The snapshots named, as one group to remove; protected ones refused.
fn by_id(repo: &Repository, ids: &[String], filter: &SnapshotFilter) -> Result<Vec<GroupPlan>> {
    let mut snapshots = Vec::new();
    for spec in ids {
        if spec == "latest" {
            return Err(Error::invalid("forget takes snapshot ids, not latest")
                .hint("name the snapshot by its id, so that the one removed is the one meant"));
        }
        let (id, snap) = crate::ops::snapshots::select(repo, spec, filter)?;
        if snap.tags.iter().any(|t| t == PROTECTED_TAG) {
            return Err(Error::invalid(format!(
                "snapshot {} is protected (tag {PROTECTED_TAG})",
                id.short()
            ))
            .hint("remove its keep tag first if it really is to go"));
        }
        if !snapshots.iter().any(|d: &Decision| d.id == id) {
            snapshots.push(Decision {
                id,
                time: snap.time,
                keep: false,
                reasons: Vec::new(),
            });
        }
    }
    Ok(vec![GroupPlan {
        key: GroupKey::default(),
        snapshots,
    }])
}

/// Parses a retention span as restic writes it: numbers with `y`
/// (years), `m` (months), `w` (weeks), `d` (days) and `h` (hours), such
/// as `30d`, `1y6m` or `2w3d12h`. Calendar units are applied in the
/// policy's time zone: a month back from March 31 is February's last day.
///
/// # Errors
/// Anything else, or a span of zero.
pub fn parse_span(text: &str) -> Result<Span> {
    let bad = || {
        Error::invalid(format!("invalid retention span {text:?}"))
            .hint("write it as restic does: 30d, 12h, 2w, 6m (months), 1y6m")
    };
    let mut span = Span::new();
    let mut digits = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        let add = |span: Span| -> Result<Span> {
            let s = match c {
                'y' => span.try_years(n),
                'm' => span.try_months(n),
                'w' => span.try_weeks(n),
                'd' => span.try_days(n),
                'h' => span.try_hours(n),
                _ => return Err(bad()),
            };
            s.map_err(|_| bad())
        };
        span = add(span)?;
        any |= n > 0;
    }
    if !digits.is_empty() || !any {
        return Err(bad());
    }
    Ok(span)
}
