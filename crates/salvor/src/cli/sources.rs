//! Commands on configured sources: `backup --source`, `restore --source`, `inspect`.

use std::sync::Arc;

use clap::Args;
use salvor_engine::backend::metered::Requests;
use salvor_engine::repo::BlobReader;
use salvor_engine::{Error, ErrorKind};

use super::output::{self, outln};
use super::restore::RestoreArgs;
use super::{EXIT_PARTIAL, GlobalOptions};
use crate::source::{BackupContext, RestoreContext};

/// Backs up each named source into its own snapshot.
pub fn backup(
    g: &GlobalOptions,
    names: &[String],
    tags: &[String],
    host: Option<&String>,
) -> anyhow::Result<i32> {
    let config = g.load_config()?;
    // Validate every name before touching the repository.
    let sources: Vec<_> = names
        .iter()
        .map(|n| config.source(n).map(|s| (n, s)))
        .collect::<Result<_, _>>()?;
    let repo = g.open_in_background()?;
    let mut code = 0;
    // One failing source must not cost the others their backup: go on, and
    // fail the command at the end.
    let mut failed = Vec::new();
    let single = sources.len() == 1;
    // Each report counts the requests sent since the one before.
    let mut requests_before = Requests::default();
    for (name, cfg) in sources {
        let ctx = BackupContext {
            repo: &repo,
            name,
            identity: cfg.identity(),
            tags: tags.to_vec(),
            host: host.cloned(),
            progress: Arc::default(),
            cancel: super::signals::cancel(),
        };
        let (id, snap) = match cfg.build().backup(&ctx) {
            Ok(r) => r,
            // Cancelled: stop here, the later sources must not start.
            Err(e) if super::signals::received() => {
                return Err(e.context(format!("source {name}")).into());
            }
            Err(e) => {
                // A repository that cannot open (wrong password, ...) is the
                // cause to report, whatever the source ran into meanwhile.
                repo.get()?;
                if single {
                    return Err(e.context(format!("source {name}")).into());
                }
                eprintln!("salvor: source {name}: {}", e.render(&super::remedy::say));
                failed.push(name.as_str());
                continue;
            }
        };
        if !g.quiet && !g.json {
            outln!("source {name} ({}):", cfg.kind())?;
        }
        let requests = repo.get()?.backend().requests();
        let sent = requests.map(|r| r.since(&requests_before));
        requests_before = requests.unwrap_or_default();
        super::backup::report(g, &id, &snap, sent)?;
        if snap.partial {
            code = EXIT_PARTIAL;
        }
    }
    if !failed.is_empty() {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "{} of the sources failed: {}",
                failed.len(),
                failed.join(", ")
            ),
        )
        .hint("see the errors above; the other sources were backed up")
        .into());
    }
    Ok(code)
}

/// Restores a source's snapshot into a live target.
pub fn restore(g: &GlobalOptions, a: &RestoreArgs) -> anyhow::Result<i32> {
    let name = a.source.as_deref().expect("called with --source");
    let config = g.load_config()?;
    let source = config.source(name)?;
    // `--to` names another configured source of the same type, or (files) a directory.
    let (target, dir) = match &a.to {
        Some(t) if config.sources.contains_key(t) => (config.source(t)?, None),
        Some(t) if source.kind() == "files" => (source, Some(t.as_str())),
        Some(t) => return Err(config.source(t).unwrap_err().into()),
        None => (source, None),
    };
    if target.kind() != source.kind() {
        return Err(Error::invalid(format!(
            "cannot restore a {} backup into a {} source",
            source.kind(),
            target.kind()
        ))
        .into());
    }
    let repo = g.open()?;
    let filter = a.filter.filter(Some(name.to_string()));
    let (id, snap) = salvor_engine::ops::snapshots::select(&repo, &a.snapshot, &filter)?;
    let reader = BlobReader::open(&repo, "restore")?;
    let ctx = RestoreContext {
        reader: &reader,
        snapshot: &snap,
        source_name: name,
        only: &a.only,
        rename: a.into.as_deref().or(dir),
        dry_run: a.dry_run,
        yes: a.yes,
        drop_dependents: a.drop_dependents,
    };
    let report = target.build().restore(&ctx)?;
    // Records a target rejected (http) leave a partial restore: say so in the exit code.
    let failed = report
        .counts
        .get("failed")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if g.json {
        output::json(
            &serde_json::json!({ "snapshot": id.to_hex(), "source": name, "dry_run": a.dry_run, "report": report }),
        )?;
    } else if !g.quiet {
        let verb = if a.dry_run {
            "would restore"
        } else {
            "restored"
        };
        outln!("{verb} snapshot {} of source {name}:", id.short())?;
        for action in &report.actions {
            outln!("  {action}")?;
        }
        if !report.counts.is_empty() {
            outln!("  {}", serde_json::Value::Object(report.counts.clone()))?;
        }
    }
    if failed > 0 {
        eprintln!(
            "salvor: {failed} records were not restored (listed above); fix the target and run the restore again: it is idempotent"
        );
        return Ok(EXIT_PARTIAL);
    }
    Ok(0)
}

/// Arguments of `salvor inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The configured source to inspect.
    #[arg(long, value_name = "NAME")]
    source: String,
}

/// Prints a source's live counts as JSON.
pub fn inspect(g: &GlobalOptions, a: &InspectArgs) -> anyhow::Result<i32> {
    let config = g.load_config()?;
    let counts = config.source(&a.source)?.build().inspect()?;
    output::json(&counts)?;
    Ok(0)
}
