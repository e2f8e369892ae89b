//! `salvor restore` and `salvor dump`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::Args;
use salvor_engine::ops;
use salvor_engine::repo::BlobReader;
use salvor_engine::restore::{self, RestoreOptions, RestoreProgress};
use salvor_engine::{Error, browse};

use super::filter::FilterArgs;
use super::output::outln;
use super::progress::Ticker;
use super::{GlobalOptions, output};

/// Arguments of `salvor restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id, prefix or `latest`.
    pub snapshot: String,
    /// Directory to restore into (created if missing).
    #[arg(short, long, required_unless_present = "source")]
    target: Option<PathBuf>,
    /// Restore this source's backup into a live service (see --to).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// With --source: the configured source to restore into (a scratch instance,
    /// another server); a directory for `files` sources. Default: the source itself.
    #[arg(long, value_name = "TARGET", requires = "source")]
    pub to: Option<String>,
    /// With --source: restore under another name (e.g. another database).
    #[arg(long, value_name = "NAME", requires = "source")]
    pub into: Option<String>,
    /// With --source: only these tables, collections, key prefixes or endpoints (repeatable).
    #[arg(long, value_name = "ITEM", requires = "source")]
    pub only: Vec<String>,
    /// With --source: overwrite existing data without asking.
    #[arg(long, requires = "source")]
    pub yes: bool,
    /// With --source: when replacing single tables also drops what depends
    /// on them in the target (views, foreign keys of other tables), accept
    /// that they are gone for good; without it such a restore is refused.
    #[arg(long, requires = "source")]
    pub drop_dependents: bool,
    /// With --source: say what would be done, change nothing.
    #[arg(long, requires = "source")]
    pub dry_run: bool,
    /// Restore only paths matching this glob, with everything below them (repeatable).
    #[arg(short, long = "include", value_name = "GLOB")]
    includes: Vec<String>,
    /// Skip paths matching this glob (repeatable).
    #[arg(short, long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Runs `salvor restore`.
pub fn restore(g: &GlobalOptions, a: &RestoreArgs) -> anyhow::Result<i32> {
    super::signals::install();
    if let Some(name) = &a.source {
        // A flag that does not apply must never be dropped silently: with
        // --yes, a source restore ignoring --target or --include would
        // overwrite live data the user meant to keep.
        let misplaced = [
            (
                a.target.is_some(),
                "--target",
                "--to DIR (files sources) or --into",
            ),
            (!a.includes.is_empty(), "--include", "--only"),
            (!a.excludes.is_empty(), "--exclude", "--only"),
        ];
        if let Some((_, flag, instead)) = misplaced.iter().find(|(given, _, _)| *given) {
            return Err(Error::invalid(format!(
                "{flag} does not apply to a source restore (--source {name})"
            ))
            .hint(format!("use {instead} to choose what and where"))
            .into());
        }
        return super::sources::restore(g, a);
    }
    let target = a
        .target
        .clone()
        .expect("clap requires --target without --source");
    let repo = g.open()?;
    let (id, snap) = ops::snapshots::select(&repo, &a.snapshot, &a.filter.filter(None))?;
    let reader = BlobReader::open(&repo, "restore")?;
    let progress = Arc::new(RestoreProgress::default());
    let p = progress.clone();
    let ticker = Ticker::start(
        g.show_progress(),
        Box::new(move || {
            let files = p.total_files.load(Ordering::Relaxed);
            (
                p.bytes.load(Ordering::Relaxed),
                p.total_bytes.load(Ordering::Relaxed),
                format!("{files} files"),
            )
        }),
    );
    let opts = RestoreOptions {
        target: target.clone(),
        includes: a.includes.clone(),
        excludes: a.excludes.clone(),
    };
    let started = std::time::Instant::now();
    let stats = restore::restore(&reader, &snap, &opts, &progress)?;
    drop(ticker);
    if g.json {
        output::json(
            &serde_json::json!({ "snapshot": id.to_hex(), "target": target, "stats": stats }),
        )?;
        return Ok(0);
    }
    for w in &stats.warnings {
        eprintln!("warning: {w}");
    }
    if !g.quiet {
        outln!(
            "restored snapshot {} to {}: {} files, {} directories, {} links/special, {} in {:.1}s",
            id.short(),
            target.display(),
            stats.files,
            stats.dirs,
            stats.special + stats.hardlinks,
            output::bytes(stats.bytes),
            started.elapsed().as_secs_f64()
        )?;
    }
    Ok(0)
}

/// Arguments of `salvor dump`.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Snapshot id, prefix or `latest`.
    snapshot: String,
    /// Path of the file in the snapshot (for a stdin backup: its --stdin-name).
    path: String,
    #[command(flatten)]
    filter: FilterArgs,
}

/// Runs `salvor dump`.
pub fn dump(g: &GlobalOptions, a: &DumpArgs) -> anyhow::Result<i32> {
    super::signals::install();
    let repo = g.open()?;
    let (_, snap) = ops::snapshots::select(&repo, &a.snapshot, &a.filter.filter(None))?;
    let reader = BlobReader::open(&repo, "dump")?;
    let node = browse::find(&reader, &snap.tree, &a.path)?.ok_or_else(|| {
        Error::invalid("dump needs a file path")
            .hint("name a file, e.g. `salvor dump latest db.sql`")
    })?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    match browse::dump(&reader, &node, &mut out) {
        Err(e)
            if std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(0)
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(0),
    }
}
