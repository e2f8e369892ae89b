//! `salvor check` and `salvor unlock`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::Args;
use salvor_engine::check::{self, CheckOptions, CheckProgress, Subset};

use super::output::outln;
use super::progress::Ticker;
use super::{GlobalOptions, output};

/// Arguments of `salvor check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Also download, decrypt and re-hash every pack.
    #[arg(long)]
    read_data: bool,
    /// Read only part of the data: a percentage (10%) or a part (1/5).
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data")]
    read_data_subset: Option<String>,
}

/// Runs `salvor check`; exit 1 when damage is found.
pub fn check(g: &GlobalOptions, a: &CheckArgs) -> anyhow::Result<i32> {
    let read_data = match (&a.read_data_subset, a.read_data) {
        (Some(s), _) => Some(s.parse::<Subset>()?),
        (None, true) => Some(Subset::All),
        (None, false) => None,
    };
    let repo = g.open()?;
    let progress = Arc::new(CheckProgress::default());
    let p = progress.clone();
    let ticker = Ticker::start(
        g.show_progress() && read_data.is_some(),
        Box::new(move || {
            let msg = format!(
                "{}/{} packs",
                p.packs_done.load(Ordering::Relaxed),
                p.packs_total.load(Ordering::Relaxed)
            );
            (
                p.bytes_done.load(Ordering::Relaxed),
                p.bytes_total.load(Ordering::Relaxed),
                msg,
            )
        }),
    );
    let r = check::check(&repo, &CheckOptions { read_data }, &progress)?;
    drop(ticker);
    if g.json {
        output::json(&r)?;
    } else {
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
        for e in &r.errors {
            eprintln!("error: {e}");
        }
        if !g.quiet {
            outln!(
                "checked {} snapshots, {} packs, {} blobs{}",
                r.snapshots,
                r.packs,
                r.blobs,
                if read_data.is_some() {
                    format!("; read {} packs", r.packs_read)
                } else {
                    String::new()
                }
            )?;
        }
    }
    if r.errors.is_empty() {
        if !g.json && !g.quiet {
            outln!("no errors found")?;
        }
        Ok(0)
    } else {
        let packs_lost = r
            .errors
            .iter()
            .any(|e| e.kind == check::FindingKind::MissingPack);
        eprintln!(
            "salvor: the repository has {} error{} (listed above){}",
            r.errors.len(),
            if r.errors.len() == 1 { "" } else { "s" },
            if packs_lost {
                "; for missing packs, run `salvor repair index` and back up again, so their data is stored anew"
            } else {
                ""
            }
        );
        Ok(1)
    }
}

/// Arguments of `salvor repair`.
#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(subcommand)]
    what: RepairWhat,
}

#[derive(clap::Subcommand, Debug)]
enum RepairWhat {
    /// Rebuild the index from the packs in storage, so blobs of lost packs
    /// are forgotten and the next backup stores them again.
    Index,
    /// Read packs and salvage every readable blob of the damaged ones into
    /// new packs; the damaged packs are deleted. Then run `repair snapshots`.
    #[command(after_help = "\
Examples:
  salvor repair packs --dry-run         # read every pack, say what is damaged
  salvor repair packs 1a2b3c4d          # only the packs `check --read-data` named")]
    Packs {
        /// Packs to read, by id or prefix (default: every pack).
        packs: Vec<String>,
        /// Say what is damaged and what could be salvaged; change nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
    /// Rewrite the snapshots that reference lost data without it (tagged
    /// `repaired`), naming every file and directory lost.
    #[command(after_help = "\
Examples:
  salvor repair snapshots --dry-run     # which snapshots and paths lost data
  salvor repair snapshots --forget      # remove damaged snapshots instead")]
    Snapshots {
        /// Remove the damaged snapshots instead of rewriting them.
        #[arg(long)]
        forget: bool,
        /// Say what was lost; change nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
}

/// Runs `salvor repair`.
pub fn repair(g: &GlobalOptions, a: &RepairArgs) -> anyhow::Result<i32> {
    match &a.what {
        RepairWhat::Index => repair_index(g),
        RepairWhat::Packs { packs, dry_run } => repair_packs(g, packs, *dry_run),
        RepairWhat::Snapshots { forget, dry_run } => repair_snapshots(g, *forget, *dry_run),
    }
}

fn repair_packs(g: &GlobalOptions, packs: &[String], dry_run: bool) -> anyhow::Result<i32> {
    let repo = g.open()?;
    let r = salvor_engine::repair::repair_packs(&repo, packs, dry_run)?;
    if g.json {
        output::json(&r)?;
        return Ok(0);
    }
    if !g.quiet {
        for d in &r.damaged {
            outln!(
                "pack {}: {}; {} blobs {}, {} lost",
                d.id.short(),
                d.reason,
                d.salvaged,
                if dry_run {
                    "can be salvaged"
                } else {
                    "salvaged"
                },
                d.lost
            )?;
        }
        outln!("read {} packs, {} damaged", r.packs_read, r.damaged.len())?;
        if r.damaged.iter().any(|d| d.lost > 0) {
            outln!(
                "some data is lost: `salvor repair snapshots{}` names the snapshots and paths",
                if dry_run { " --dry-run" } else { "" }
            )?;
        }
    }
    Ok(0)
}

fn repair_snapshots(g: &GlobalOptions, forget: bool, dry_run: bool) -> anyhow::Result<i32> {
    let repo = g.open()?;
    let opts = salvor_engine::repair::RepairSnapshotsOptions { forget, dry_run };
    let r = salvor_engine::repair::repair_snapshots(&repo, &opts)?;
    if g.json {
        output::json(&r)?;
        return Ok(0);
    }
    if !g.quiet {
        for d in &r.damaged {
            let fate = match (&d.replaced_by, d.forgotten) {
                (Some(new), _) => format!("rewritten as {}", new.short()),
                (None, true) => "removed".into(),
                (None, false) if dry_run => "would be rewritten (or removed with --forget)".into(),
                (None, false) => "its root is lost: remove it with --forget".into(),
            };
            outln!(
                "snapshot {} lost {} paths, {fate}:",
                d.id.short(),
                d.lost.len()
            )?;
            for p in &d.lost {
                outln!("  {p}")?;
            }
        }
        outln!(
            "read {} snapshots, {} lost data",
            r.snapshots,
            r.damaged.len()
        )?;
    }
    Ok(0)
}

fn repair_index(g: &GlobalOptions) -> anyhow::Result<i32> {
    let repo = g.open()?;
    let stats = salvor_engine::repair::repair_index(&repo)?;
    if g.json {
        output::json(&stats)?;
        return Ok(0);
    }
    for s in &stats.packs_skipped {
        eprintln!("warning: left out {s}");
    }
    for s in &stats.packs_kept_from_index {
        eprintln!(
            "warning: damaged pack {s}; run `salvor check --read-data` to see what is readable"
        );
    }
    if !g.quiet {
        outln!(
            "indexed {} packs ({} blobs): wrote {} index files, removed {}; {} packs left out",
            stats.packs_indexed,
            stats.blobs,
            stats.index_files_written,
            stats.index_files_removed,
            stats.packs_skipped.len()
        )?;
        outln!("run `salvor backup` again: data that was in lost packs will be stored anew")?;
    }
    Ok(0)
}

/// Arguments of `salvor unlock`.
#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones (only when no salvor is running).
    #[arg(long)]
    remove_all: bool,
}

/// Runs `salvor unlock`.
pub fn unlock(g: &GlobalOptions, a: &UnlockArgs) -> anyhow::Result<i32> {
    let repo = g.open()?;
    let n = repo.unlock(a.remove_all)?;
    if g.json {
        output::json(&serde_json::json!({ "removed": n }))?;
    } else if !g.quiet {
        outln!("removed {n} lock{}", if n == 1 { "" } else { "s" })?;
    }
    Ok(0)
}

/// Arguments of `salvor check-storage`.
#[derive(Args, Debug)]
pub struct CheckStorageArgs {}

/// Runs `salvor check-storage`: the backend contract against the store
/// `--repo` names, in a location of its own beside (or inside) it, which
/// is removed again. Exit 1 when the store fails a check.
pub fn check_storage(g: &GlobalOptions, _: &CheckStorageArgs) -> anyhow::Result<i32> {
    let base = g.location()?.trim_end_matches('/');
    let scratch = format!("salvor-check-{}", &salvor_engine::id::random_hex()[..12]);
    let url = format!("{base}/{scratch}");
    let backend = g.backend_at(&url)?;
    backend.create()?;
    // Pieces wait in unlinked files there: nothing to clean up.
    let spool = std::env::temp_dir();
    let outcomes = salvor_engine::backend::conformance::run(backend.as_ref(), &spool);
    let requests = backend.requests().unwrap_or_default();
    if backend.is_local() {
        // The directories `create` made; the checks removed every object.
        let dir = std::path::Path::new(url.strip_prefix("file://").unwrap_or(&url));
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!("cannot remove {}: {e}", dir.display());
        }
    }
    let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
    if g.json {
        output::json(&serde_json::json!({
            "location": url,
            "checks": outcomes,
            "failed": failed,
            "capabilities": backend.capabilities(),
            "requests": requests,
        }))?;
    } else {
        for o in &outcomes {
            match &o.failure {
                None if g.quiet => {}
                None => outln!("ok    {} ({:.2} s)", o.check, o.took.as_secs_f64())?,
                Some(f) => outln!("FAIL  {}: {f}", o.check)?,
            }
        }
        if !g.quiet {
            outln!(
                "{} of {} checks passed at {url}, {} requests",
                outcomes.len() - failed,
                outcomes.len(),
                requests.total()
            )?;
        }
    }
    if failed > 0 {
        eprintln!(
            "salvor: the storage at {base} does not behave as salvor needs; a repository there is not safe \
             (report the failed checks to its vendor, or use another store)"
        );
        return Ok(1);
    }
    Ok(0)
}
