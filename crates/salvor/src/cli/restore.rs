//! `salvor restore` and `salvor dump`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::Args;
use salvor_engine::repo::BlobReader;
use salvor_engine::restore::{self, RestoreOptions, RestoreProgress};
use salvor_engine::{Error, browse};

use super::output::outln;
use super::progress::Ticker;
use super::{GlobalOptions, output};

/// Arguments of `salvor restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id, prefix or `latest`.
    snapshot: String,
    /// Directory to restore into (created if missing).
    #[arg(short, long)]
    target: PathBuf,
    /// Restore only paths matching this glob, with everything below them (repeatable).
    #[arg(short, long = "include", value_name = "GLOB")]
    includes: Vec<String>,
    /// Skip paths matching this glob (repeatable).
    #[arg(short, long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
}

/// Runs `salvor restore`.
pub fn restore(g: &GlobalOptions, a: &RestoreArgs) -> anyhow::Result<i32> {
    let repo = g.open()?;
    let (id, snap) = repo.find_snapshot(&a.snapshot)?;
    let reader = BlobReader::new(&repo, Arc::new(repo.load_index()?));
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
        target: a.target.clone(),
        includes: a.includes.clone(),
        excludes: a.excludes.clone(),
    };
    let started = std::time::Instant::now();
    let stats = restore::restore(&reader, &snap, &opts, &progress)?;
    drop(ticker);
    if g.json {
        output::json(
            &serde_json::json!({ "snapshot": id.to_hex(), "target": a.target, "stats": stats }),
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
            a.target.display(),
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
}

/// Runs `salvor dump`.
pub fn dump(g: &GlobalOptions, a: &DumpArgs) -> anyhow::Result<i32> {
    let repo = g.open()?;
    let (_, snap) = repo.find_snapshot(&a.snapshot)?;
    let reader = BlobReader::new(&repo, Arc::new(repo.load_index()?));
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
