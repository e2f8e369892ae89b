//! `files`: config files, certificates (restored with their exact modes) and
//! embedded stores such as a Badger or sled directory, through the engine's
//! file pipeline.
//!
//! ```toml
//! [source.certs]
//! type = "files"
//! paths = ["/etc/ssl/private", "/etc/app"]
//! exclude = ["*.tmp"]
//! ```

use std::path::PathBuf;

use salvor_engine::backup::{self, BackupOptions};
use salvor_engine::format::snapshot::{Manifest, Snapshot};
use salvor_engine::id::SnapshotId;
use salvor_engine::restore::{self, RestoreOptions};
use salvor_engine::{Error, Result};
use serde::Deserialize;
use serde_json::json;

use super::{BackupContext, RestoreContext, RestoreReport, Source};

/// Configuration of a `files` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Files and directories.
    pub paths: Vec<PathBuf>,
    /// Globs to skip.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Directory a restore writes into when `--to` is not given.
    #[serde(default)]
    pub restore_to: Option<PathBuf>,
}

impl Source for &FilesConfig {
    fn backup(&self, ctx: &BackupContext) -> Result<(SnapshotId, Snapshot)> {
        let mut tags = ctx.tags.clone();
        tags.push(format!("source:{}", ctx.name));
        let opts = BackupOptions {
            paths: self.paths.clone(),
            excludes: self.exclude.clone(),
            tags,
            host: ctx.host.clone(),
            manifest: Some((
                ctx.name.to_string(),
                Manifest {
                    source_type: "files".into(),
                    identity: Some(ctx.identity.clone()),
                    detail: json!({ "paths": self.paths })
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                },
            )),
            ..Default::default()
        };
        backup::backup_paths(&ctx.repo.get()?, &opts, ctx.progress.clone())
    }

    fn restore(&self, ctx: &RestoreContext) -> Result<RestoreReport> {
        let target = ctx
            .rename
            .map(PathBuf::from)
            .or_else(|| self.restore_to.clone())
            .ok_or_else(|| Error::invalid("no directory to restore into").hint("pass --to DIR"))?;
        let opts = RestoreOptions {
            target: target.clone(),
            includes: ctx.only.to_vec(),
            excludes: Vec::new(),
        };
        let (existing, total) = restore::existing_entries(ctx.reader, ctx.snapshot, &opts)?;
        let mut report = RestoreReport::default();
        report.actions.push(format!(
            "restore {total} files, links and special files into {}{}",
            target.display(),
            if existing > 0 {
                format!(", replacing the {existing} of them that exist there")
            } else {
                String::new()
            }
        ));
        if ctx.dry_run {
            return Ok(report);
        }
        if existing > 0 {
            ctx.confirm(
                &format!(
                    "{existing} of the snapshot's {total} files in {}",
                    target.display()
                ),
                "--to DIR",
            )?;
        }
        let stats = restore::restore(ctx.reader, ctx.snapshot, &opts, &Default::default())?;
        report.counts.insert("files".into(), stats.files.into());
        report.counts.insert("bytes".into(), stats.bytes.into());
        Ok(report)
    }

    fn inspect(&self) -> Result<serde_json::Value> {
        let (mut files, mut dirs, mut bytes) = (0u64, 0u64, 0u64);
        for p in &self.paths {
            for e in walkdir::WalkDir::new(p) {
                let e =
                    e.map_err(|e| Error::invalid(format!("cannot walk {}: {e}", p.display())))?;
                let m = e
                    .metadata()
                    .map_err(|e| Error::invalid(format!("cannot stat {}: {e}", e)))?;
                if m.is_dir() {
                    dirs += 1;
                } else if m.is_file() {
                    files += 1;
                    bytes += m.len();
                }
            }
        }
        Ok(json!({ "type": "files", "files": files, "dirs": dirs, "bytes": bytes }))
    }
}
