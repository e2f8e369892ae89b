//! `salvor forget`: remove snapshots by id or by a retention policy.

use std::collections::BTreeMap;

use clap::Args;
use salvor_engine::Error;
use salvor_engine::ops::forget::{self, ForgetOptions, GroupBy, KeepPolicy, Period, parse_span};

use super::filter::FilterArgs;
use super::output::outln;
use super::{GlobalOptions, output};

/// Arguments of `salvor forget`.
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to remove, by id or unique prefix (instead of a policy).
    ids: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours that have one.
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest days that have one.
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one.
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest months that have one.
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest years that have one.
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot up to SPAN older than its group's newest (30d, 1y6m).
    #[arg(long, value_name = "SPAN")]
    keep_within: Option<String>,
    /// Keep the newest snapshot of each hour within SPAN of the group's newest.
    #[arg(long, value_name = "SPAN")]
    keep_within_hourly: Option<String>,
    /// Keep the newest snapshot of each day within SPAN of the group's newest.
    #[arg(long, value_name = "SPAN")]
    keep_within_daily: Option<String>,
    /// Keep the newest snapshot of each week within SPAN of the group's newest.
    #[arg(long, value_name = "SPAN")]
    keep_within_weekly: Option<String>,
    /// Keep the newest snapshot of each month within SPAN of the group's newest.
    #[arg(long, value_name = "SPAN")]
    keep_within_monthly: Option<String>,
    /// Keep the newest snapshot of each year within SPAN of the group's newest.
    #[arg(long, value_name = "SPAN")]
    keep_within_yearly: Option<String>,
    /// Keep every snapshot with this tag (repeat for several). Snapshots
    /// tagged `keep` are always kept.
    #[arg(long, value_name = "TAG")]
    keep_tag: Vec<String>,
    /// Apply the policy to each group of snapshots sharing these
    /// (host, paths, tags, source, job; comma-separated; "" for one group).
    #[arg(long, value_name = "FIELDS", default_value = "host,paths")]
    group_by: String,
    #[command(flatten)]
    filter: FilterArgs,
    /// Only snapshots holding a backup of this configured source.
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
    /// The time zone of the policy's days, weeks, months and years
    /// (default: this machine's).
    #[arg(long, value_name = "ZONE")]
    time_zone: Option<String>,
    /// Show what would be removed, remove nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Then prune: free the data no snapshot references any more.
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    prune_args: super::prune::PruneArgs,
}

impl ForgetArgs {
    fn policy(&self) -> salvor_engine::Result<KeepPolicy> {
        let mut policy = KeepPolicy {
            last: self.keep_last,
            tags: self.keep_tag.clone(),
            ..Default::default()
        };
        let counts = [
            (Period::Hourly, self.keep_hourly),
            (Period::Daily, self.keep_daily),
            (Period::Weekly, self.keep_weekly),
            (Period::Monthly, self.keep_monthly),
            (Period::Yearly, self.keep_yearly),
        ];
        policy.periods = counts
            .into_iter()
            .filter_map(|(p, n)| n.map(|n| (p, n)))
            .collect();
        if let Some(s) = &self.keep_within {
            policy.within = Some(parse_span(s)?);
        }
        let spans = [
            (Period::Hourly, &self.keep_within_hourly),
            (Period::Daily, &self.keep_within_daily),
            (Period::Weekly, &self.keep_within_weekly),
            (Period::Monthly, &self.keep_within_monthly),
            (Period::Yearly, &self.keep_within_yearly),
        ];
        let mut within = BTreeMap::new();
        for (p, s) in spans {
            if let Some(s) = s {
                within.insert(p, parse_span(s)?);
            }
        }
        policy.within_periods = within;
        Ok(policy)
    }
}

/// Runs `salvor forget`.
pub fn run(g: &GlobalOptions, a: &ForgetArgs) -> anyhow::Result<i32> {
    // A signal stops it between two removals: each is whole.
    super::signals::install();
    let policy = a.policy()?;
    if a.ids.is_empty() && policy.is_empty() {
        return Err(
            Error::invalid("nothing to forget: no snapshot ids and no keep rule")
                .hint("name snapshots by id, or give rules such as --keep-daily 7 --keep-weekly 4")
                .into(),
        );
    }
    let time_zone = match &a.time_zone {
        Some(z) => Some(jiff::tz::TimeZone::get(z).map_err(|e| {
            Error::invalid(format!("unknown time zone {z:?}: {e}"))
                .hint("use an IANA name such as Europe/Paris or UTC")
        })?),
        None => None,
    };
    let opts = ForgetOptions {
        ids: a.ids.clone(),
        policy,
        group_by: a.group_by.parse::<GroupBy>()?,
        filter: a.filter.filter(a.source.clone()),
        time_zone,
        dry_run: a.dry_run,
    };
    if !a.prune && a.prune_args.was_given() {
        return Err(
            Error::invalid("--max-unused and --max-repack-size apply only to a prune")
                .hint("add --prune, or leave them out")
                .into(),
        );
    }
    let repo = g.open()?;
    let r = forget::forget(&repo, &opts)?;
    let pruned = if a.prune {
        let mut opts = a.prune_args.options(a.dry_run);
        if a.dry_run {
            // Nothing was removed: the prune counts what the forget would
            // remove as gone.
            opts.assume_forgotten = r
                .groups
                .iter()
                .flat_map(|g| &g.snapshots)
                .filter(|d| !d.keep)
                .map(|d| d.id)
                .collect();
        }
        Some(super::prune::run_prune(g, &repo, &opts)?)
    } else {
        None
    };
    if g.json {
        match &pruned {
            Some(p) => output::json(&serde_json::json!({ "forget": r, "prune": p }))?,
            None => output::json(&r)?,
        }
        return Ok(0);
    }
    if !g.quiet {
        for group in &r.groups {
            outln!("{}:", group.key)?;
            for d in &group.snapshots {
                let verdict = match (d.keep, r.dry_run) {
                    (true, _) => "keep",
                    (false, true) => "would remove",
                    (false, false) => "remove",
                };
                outln!(
                    "  {verdict:<12}  {}  {}  {}",
                    d.id.short(),
                    output::time(&d.time),
                    d.reasons.join(", ")
                )?;
            }
        }
        let verb = if r.dry_run { "would remove" } else { "removed" };
        match &pruned {
            Some(p) => {
                outln!("{} snapshots kept, {verb} {}", r.kept, r.removed)?;
                super::prune::report(p)?;
            }
            None => outln!(
                "{} snapshots kept, {verb} {}; their data stays in the repository until `salvor prune`",
                r.kept,
                r.removed
            )?,
        }
    }
    Ok(0)
}
