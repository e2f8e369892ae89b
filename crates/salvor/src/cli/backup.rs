//! `salvor backup`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::Args;
use salvor_engine::Error;
use salvor_engine::backend::metered::Requests;
use salvor_engine::backup::{self, BackupOptions, BackupProgress, StreamOptions};
use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;

use super::output::outln;
use super::progress::Ticker;
use super::{EXIT_PARTIAL, GlobalOptions, output};

/// Arguments of `salvor backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up.
    paths: Vec<PathBuf>,
    /// Skip paths matching this glob (repeatable); without `/` it matches names anywhere.
    #[arg(short = 'e', long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Read exclude globs from a file, one per line (`#` starts a comment).
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_files: Vec<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Host name to record instead of this machine's.
    #[arg(long)]
    host: Option<String>,
    /// Snapshot to compare against for change detection (default: latest with same host and paths).
    #[arg(long)]
    parent: Option<String>,
    /// Read every file even when unchanged.
    #[arg(long)]
    force: bool,
    /// Back up standard input as one file.
    #[arg(long, conflicts_with = "paths")]
    stdin: bool,
    /// File name of the stdin stream in the snapshot.
    #[arg(long, default_value = "stdin", requires = "stdin")]
    stdin_name: String,
    /// Back up this source from the configuration file (repeatable).
    #[arg(long = "source", value_name = "NAME", conflicts_with_all = ["paths", "stdin"])]
    sources: Vec<String>,
    /// Reader threads, 1 to 256 (default: number of CPUs).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    read_threads: Option<u16>,
}

fn read_exclude_file(path: &std::path::Path) -> salvor_engine::Result<Vec<String>> {
    let text = crate::input::read_text(path, crate::input::EXCLUDE_FILE_MAX, "exclude file")?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Runs `salvor backup`.
pub fn run(g: &GlobalOptions, a: &BackupArgs) -> anyhow::Result<i32> {
    super::signals::install();
    // First, so every thread and dump tool of the backup inherits it.
    if !salvor_engine::priority::run_as_batch() {
        tracing::debug!("SCHED_BATCH not available; backing up at normal priority");
    }
    if !a.sources.is_empty() {
        return super::sources::backup(g, &a.sources, &a.tags, a.host.as_ref());
    }
    if !a.stdin && a.paths.is_empty() {
        return Err(Error::invalid("nothing to back up")
            .hint("name at least one path, or use --stdin")
            .into());
    }
    let repo = g.open()?;
    let progress = Arc::new(BackupProgress::default());
    let p = progress.clone();
    let _ticker = Ticker::start(
        g.show_progress(),
        Box::new(move || {
            let files = p.files.load(Ordering::Relaxed);
            (
                p.bytes.load(Ordering::Relaxed),
                p.total_bytes.load(Ordering::Relaxed),
                format!("{files} files"),
            )
        }),
    );
    let (id, snap) = if a.stdin {
        let opts = StreamOptions {
            name: a.stdin_name.clone(),
            tags: a.tags.clone(),
            host: a.host.clone(),
            job: None,
        };
        backup::backup_stream(&repo, std::io::stdin().lock(), &opts, progress)?
    } else {
        let mut excludes = a.excludes.clone();
        for f in &a.exclude_files {
            excludes.extend(read_exclude_file(f)?);
        }
        let parent = match &a.parent {
            Some(p) => Some(repo.find_snapshot(p)?.0),
            None => None,
        };
        if g.show_progress() {
            spawn_scan(a.paths.clone(), progress.clone());
        }
        let opts = BackupOptions {
            paths: a.paths.clone(),
            excludes,
            tags: a.tags.clone(),
            host: a.host.clone(),
            parent,
            force: a.force,
            job: None,
            read_threads: a.read_threads.map_or(0, usize::from),
            manifest: None,
        };
        backup::backup_paths(&repo, &opts, progress)?
    };
    drop(_ticker);
    report(g, &id, &snap, repo.backend().requests())?;
    Ok(if snap.partial { EXIT_PARTIAL } else { 0 })
}

/// Measures the total size in the background so the bar can show an ETA.
fn spawn_scan(paths: Vec<PathBuf>, progress: Arc<BackupProgress>) {
    std::thread::spawn(move || {
        let mut total = 0;
        for p in paths {
            for e in walkdir::WalkDir::new(p).into_iter().flatten() {
                if let Ok(m) = e.metadata()
                    && m.is_file()
                {
                    total += m.len();
                }
            }
            progress.total_bytes.store(total, Ordering::Relaxed);
        }
    });
}

/// Prints what a backup recorded; `requests` are those it sent to the
/// repository's storage (object stores bill them), in `--json` only.
pub(super) fn report(
    g: &GlobalOptions,
    id: &SnapshotId,
    snap: &Snapshot,
    requests: Option<Requests>,
) -> anyhow::Result<()> {
    let s = &snap.summary;
    if g.json {
        return output::json(&serde_json::json!({
            "snapshot": id.to_hex(),
            "partial": snap.partial,
            "summary": s,
            "requests": requests,
        }));
    }
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    if g.quiet {
        return Ok(());
    }
    outln!(
        "snapshot {} saved{}",
        id.short(),
        if snap.partial {
            " (partial: some files could not be read)"
        } else {
            ""
        }
    )?;
    outln!(
        "  files: {} new, {} changed, {} unchanged; {} directories",
        s.files_new,
        s.files_changed,
        s.files_unchanged,
        s.dirs
    )?;
    outln!(
        "  read {}, added {} of data and {} of metadata ({} stored) of {} total in {:.1}s",
        output::bytes(s.bytes_read),
        output::bytes(s.bytes_added),
        output::bytes(s.tree_bytes_added),
        output::bytes(s.bytes_stored),
        output::bytes(s.total_bytes),
        s.duration_secs
    )?;
    if !s.warnings.is_empty() {
        outln!("  {} warnings (listed above)", s.warnings.len())?;
    }
    Ok(())
}
