//! `command`: the stdout of any command (`bpftool map dump -j`,
//! `kubectl get ... -o yaml`), restored by a command that reads it on stdin.
//!
//! ```toml
//! [source.bpf_maps]
//! type = "command"
//! command = "bpftool map dump -j id 42"
//! restore_command = "my-loader --from-stdin"
//! ```
//!
//! The manifest records the byte count and BLAKE3 of the output, so a
//! verification can tell whether a restored target still produces it.

use std::io::Read;
use std::process::Command;

use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use salvor_engine::{Error, Result};
use serde::Deserialize;
use serde_json::json;

use super::{BackupContext, HashingReader, RestoreContext, RestoreReport, Source, process};
use crate::config::bounded;

/// Configuration of a `command` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Run with `sh -c`; its stdout is the backup.
    #[serde(deserialize_with = "bounded::non_empty")]
    pub command: String,
    /// Run with `sh -c` on restore, reading the stream on stdin.
    #[serde(default, deserialize_with = "bounded::non_empty_opt")]
    pub restore_command: Option<String>,
    /// File name of the stream in the snapshot.
    #[serde(default = "default_stream")]
    pub stream: String,
}

fn default_stream() -> String {
    "stdout".into()
}

fn sh(script: &str) -> Command {
    let mut c = crate::source::process::command("sh");
    c.arg("-c").arg(script);
    c
}

fn summarize(reader: impl Read) -> std::io::Result<(u64, String)> {
    let mut h = HashingReader::new(reader);
    std::io::copy(&mut h, &mut std::io::sink())?;
    Ok((h.count(), h.hex()))
}

impl Source for &CommandConfig {
    fn backup(&self, ctx: &BackupContext) -> Result<(SnapshotId, Snapshot)> {
        let mut streams = ctx.streams()?;
        let child =
            process::spawn_reader(sh(&self.command), &format!("command {:?}", self.command))?
                .stop_on(streams.cancel());
        let mut h = HashingReader::new(child);
        streams.add(&self.stream, &mut h)?;
        let manifest = json!({
            "type": "command",
            "command": self.command,
            "stream": self.stream,
            "bytes": h.count(),
            "blake3": h.hex(),
        });
        streams.commit(manifest)
    }

    fn restore(&self, ctx: &RestoreContext) -> Result<RestoreReport> {
        if !ctx.only.is_empty() || ctx.rename.is_some() {
            return Err(Error::invalid(
                "a command source restores its whole stream: --only and --into do not apply",
            )
            .hint("drop them; restore_command decides where the stream goes"));
        }
        let cmd = self.restore_command.as_ref().ok_or_else(|| {
            Error::invalid("this command source has no restore_command")
                .hint("add restore_command to its configuration, or use `salvor dump`")
        })?;
        let stream = ctx.manifest()["stream"]
            .as_str()
            .unwrap_or("stdout")
            .to_string();
        let mut report = RestoreReport::default();
        report.actions.push(format!("pipe {stream} into {cmd:?}"));
        if ctx.dry_run {
            return Ok(report);
        }
        let mut bytes = 0;
        process::run_with_input(sh(cmd), &format!("restore command {cmd:?}"), &mut |w| {
            bytes = ctx.copy_stream(&stream, w)?;
            Ok(())
        })?;
        report.counts.insert("bytes".into(), bytes.into());
        Ok(report)
    }

    fn inspect(&self) -> Result<serde_json::Value> {
        let child =
            process::spawn_reader(sh(&self.command), &format!("command {:?}", self.command))?;
        let (bytes, hash) =
            summarize(child).map_err(|e| Error::io("cannot run", &self.command, e))?;
        Ok(json!({ "type": "command", "bytes": bytes, "blake3": hash }))
    }
}
