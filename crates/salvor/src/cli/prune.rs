//! `salvor prune`: free the space of data no snapshot references.

use clap::Args;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use salvor_engine::Repository;
use salvor_engine::ops::prune::{self, PruneOptions, PruneProgress, PruneResults};

use super::progress::Ticker;

use super::output::{bytes, outln};
use super::{GlobalOptions, output};

/// Arguments of `salvor prune` (and of `forget --prune`).
#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    /// Unused data that may stay in partly used packs, as a share of the
    /// used data (default 5%; `0%`: repack everything, `unlimited`: never repack).
    #[arg(long, value_name = "SHARE", value_parser = parse_share)]
    max_unused: Option<f64>,
    /// Repack at most this much in one run (e.g. 10G; K, M, G, T).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    max_repack_size: Option<u64>,
}

/// `5%`, `0.5%`, `unlimited`.
fn parse_share(s: &str) -> Result<f64, String> {
    if s == "unlimited" {
        return Ok(f64::INFINITY);
    }
    let bad = || format!("invalid share {s:?} (use e.g. 5%, 0% or unlimited)");
    let v: f64 = s
        .strip_suffix('%')
        .ok_or_else(bad)?
        .trim()
        .parse()
        .map_err(|_| bad())?;
    if (0.0..=100.0).contains(&v) {
        Ok(v / 100.0)
    } else {
        Err(bad())
    }
}

/// `500M`, `10G`, `1T`, `4096`.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let shift = match s.chars().last() {
        Some('k' | 'K') => 10,
        Some('m' | 'M') => 20,
        Some('g' | 'G') => 30,
        Some('t' | 'T') => 40,
        _ => 0,
    };
    let num = if shift == 0 { s } else { &s[..s.len() - 1] };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("invalid size {s:?} (use e.g. 500M or 10G)"))
}

impl PruneArgs {
    /// Whether any of these was given (they need a prune to apply to).
    pub fn was_given(&self) -> bool {
        self.max_unused.is_some() || self.max_repack_size.is_some()
    }

    /// The engine's options.
    pub fn options(&self, dry_run: bool) -> PruneOptions {
        let share = self
            .max_unused
            .unwrap_or(PruneOptions::default().max_unused);
        PruneOptions {
            // "unlimited": no share of unused data is too much.
            max_unused: share.min(1.0),
            max_repack_bytes: if share.is_infinite() {
                Some(0)
            } else {
                self.max_repack_size
            },
            dry_run,
            assume_forgotten: Vec::new(),
        }
    }
}

/// Arguments of the `salvor prune` command.
#[derive(Args, Debug)]
pub struct PruneCommand {
    #[command(flatten)]
    prune: PruneArgs,
    /// Show what would be deleted and repacked; change nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
}

/// Runs `salvor prune`.
pub fn run(g: &GlobalOptions, a: &PruneCommand) -> anyhow::Result<i32> {
    super::signals::install();
    let repo = g.open()?;
    let r = run_prune(g, &repo, &a.prune.options(a.dry_run))?;
    if g.json {
        output::json(&r)?;
    } else if !g.quiet {
        report(&r)?;
    }
    Ok(0)
}

/// Prunes with a progress bar on a terminal.
pub fn run_prune(
    g: &GlobalOptions,
    repo: &Repository,
    opts: &PruneOptions,
) -> salvor_engine::Result<PruneResults> {
    let progress = Arc::new(PruneProgress::default());
    let p = progress.clone();
    let _bar = Ticker::start(
        g.show_progress(),
        Box::new(move || {
            (
                p.done.load(Ordering::Relaxed),
                p.total.load(Ordering::Relaxed),
                (*p.step.lock().unwrap()).to_string(),
            )
        }),
    );
    prune::prune_with(repo, opts, &progress)
}

/// Prints what a prune did.
pub fn report(r: &PruneResults) -> anyhow::Result<()> {
    let (deleted, repacked) = if r.dry_run {
        ("would delete", "would repack")
    } else {
        ("deleted", "repacked")
    };
    outln!(
        "{} snapshots keep their data; the repository held {} packs ({})",
        r.snapshots,
        r.packs_before,
        bytes(r.bytes_before)
    )?;
    outln!(
        "{deleted} {} packs ({}); {repacked} {} packs ({}{})",
        r.packs_deleted,
        bytes(r.bytes_deleted),
        r.packs_repacked,
        bytes(r.bytes_repacked),
        if r.dry_run || r.packs_repacked == 0 {
            String::new()
        } else {
            format!(", {} written", bytes(r.bytes_repack_written))
        }
    )?;
    if r.packs_adopted > 0 || r.packs_rescued > 0 {
        outln!(
            "{} packs left by interrupted backups taken in; {} marked packs found in use again and kept",
            r.packs_adopted,
            r.packs_rescued
        )?;
    }
    if r.packs_pending > 0 {
        let holders: Vec<String> = r
            .holders
            .iter()
            .map(|h| {
                let since = h
                    .started
                    .and_then(|s| jiff::Timestamp::from_second(s).ok())
                    .map_or_else(
                        || "an older salvor".into(),
                        |t| format!("started {}", output::time(&t)),
                    );
                format!("`{}` on {} (pid {}, {since})", h.command, h.hostname, h.pid)
            })
            .collect();
        outln!(
            "{} packs ({}) are marked for deletion; the next prune deletes them once these, which \
             may still use them, have ended: {}",
            r.packs_pending,
            bytes(r.bytes_pending),
            holders.join(", ")
        )?;
    }
    for u in &r.unreadable {
        eprintln!("warning: left alone, cannot be read: {u}");
    }
    if r.exclusive {
        outln!("(a v1 repository: the prune held an exclusive lock)")?;
    }
    Ok(())
}
