//! The restore: records read back line by line from the snapshot and sent
//! to the target one request each, counted as created, existing or failed.

use std::io::{self, Write};

use salvor_engine::{Error, ErrorKind, Result};
use serde_json::{Value, json};

use super::client::{Api, redact};
use super::config::default_id;
use super::template::{Part, at, fill, scalar};
use super::{HttpConfig, RestoreMethod, RestoreSpec, stream_name};
use crate::source::RestoreContext;

/// Failures listed one by one in a restore report.
const FAILURES_SHOWN: usize = 10;

/// What the manifest says about one endpoint.
pub(super) struct Recorded {
    pub(super) name: String,
    pub(super) stream: String,
    spec: Option<RestoreSpec>,
}

pub(super) fn recorded(manifest: &Value) -> Result<Vec<Recorded>> {
    let entries = manifest["endpoints"]
        .as_array()
        .ok_or_else(|| Error::corrupt("the snapshot's http manifest lists no endpoints"))?;
    Ok(entries
        .iter()
        .filter_map(|e| {
            let name = e["name"].as_str()?.to_string();
            Some(Recorded {
                stream: e["stream"]
                    .as_str()
                    .map_or_else(|| stream_name(&name), str::to_string),
                spec: serde_json::from_value(e["restore"].clone()).ok(),
                name,
            })
        })
        .collect())
}

/// The endpoints `--only` selects, in backup order; unknown names are an error.
pub(super) fn select<'r>(all: &'r [Recorded], only: &[String]) -> Result<Vec<&'r Recorded>> {
    if let Some(unknown) = only.iter().find(|o| !all.iter().any(|r| &r.name == *o)) {
        let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("endpoint {unknown} is not in the snapshot"),
        )
        .hint(format!("endpoints in the snapshot: {}", names.join(", "))));
    }
    Ok(all
        .iter()
        .filter(|r| only.is_empty() || only.contains(&r.name))
        .collect())
}

/// Outcome counts of one endpoint's replay.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) records: u64,
    pub(super) created: u64,
    pub(super) existing: u64,
    pub(super) failed: u64,
    pub(super) failures: Vec<String>,
    /// POSTed records the target answered 409 Conflict: they exist there,
    /// perhaps with other content, and were left as they are.
    pub(super) conflicts: u64,
    pub(super) conflict_ids: Vec<String>,
}

impl Tally {
    /// Adds another worker's counts.
    pub(super) fn merge(&mut self, o: Tally) {
        self.records += o.records;
        self.created += o.created;
        self.existing += o.existing;
        self.failed += o.failed;
        self.conflicts += o.conflicts;
        for f in o.failures {
            if self.failures.len() < FAILURES_SHOWN {
                self.failures.push(f);
            }
        }
        for c in o.conflict_ids {
            if self.conflict_ids.len() < FAILURES_SHOWN {
                self.conflict_ids.push(c);
            }
        }
    }

    fn fail(&mut self, why: String) {
        self.failed += 1;
        if self.failures.len() < FAILURES_SHOWN {
            self.failures.push(why);
        }
    }

    pub(super) fn to_json(&self, dry_run: bool) -> Value {
        if dry_run {
            json!({ "records": self.records })
        } else {
            json!({ "records": self.records, "created": self.created, "existing": self.existing, "conflicts": self.conflicts, "failed": self.failed })
        }
    }
}

/// Sends one record back; transport failures (target down) are errors.
pub(super) fn replay(
    api: &Api,
    spec: &RestoreSpec,
    parts: &[Part],
    id_field: &str,
    line: &[u8],
    tally: &mut Tally,
) -> Result<()> {
    tally.records += 1;
    let record: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            tally.fail(format!("record {} is not valid json: {e}", tally.records));
            return Ok(());
        }
    };
    let id = at(&record, id_field)
        .and_then(scalar)
        .unwrap_or_else(|| format!("#{}", tally.records));
    let path = match fill(parts, &|f| at(&record, f).and_then(scalar)) {
        Ok(p) => p,
        Err(f) => {
            tally.fail(format!("record {id} has no field {f} for the restore path"));
            return Ok(());
        }
    };
    let url = api.url(&path)?;
    let method = match spec.method {
        RestoreMethod::Post => reqwest::Method::POST,
        RestoreMethod::Put => reqwest::Method::PUT,
    };
    let resp = api.send(method.clone(), &url, Some(line.to_vec()))?;
    let status = resp.status().as_u16();
    match (spec.method, status) {
        (RestoreMethod::Put, 201) => tally.created += 1,
        (RestoreMethod::Put, 200..=299) => tally.existing += 1,
        (RestoreMethod::Post, 200..=299) => tally.created += 1,
        (RestoreMethod::Post, 409) => {
            tally.conflicts += 1;
            if tally.conflict_ids.len() < FAILURES_SHOWN {
                tally.conflict_ids.push(id);
            }
        }
        (RestoreMethod::Post, 400..=499) => {
            let body = resp.text().unwrap_or_default();
            if body.to_ascii_lowercase().contains("exist") {
                tally.existing += 1;
            } else {
                tally.fail(format!(
                    "{method} {} for record {id}: {status} {}",
                    redact(&url),
                    snippet(&body)
                ));
            }
        }
        _ => {
            let body = resp.text().unwrap_or_default();
            tally.fail(format!(
                "{method} {} for record {id}: {status} {}",
                redact(&url),
                snippet(&body)
            ));
        }
    }
    Ok(())
}

fn snippet(body: &str) -> String {
    let one: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    one.chars().take(120).collect()
}

/// Requests in flight at once during a replay: enough to hide a round trip,
/// few enough not to overload the API being restored.
pub(super) const REPLAY_CONCURRENCY: usize = 8;
/// Records read from the snapshot before a batch is replayed.
const REPLAY_BATCH: usize = 1024;

/// Replays one endpoint's records with [`REPLAY_CONCURRENCY`] requests in
/// flight. Endpoints are replayed one after another, in backup order, so
/// records that others refer to (pools before their allocations) exist first.
pub(super) fn replay_stream(
    ctx: &RestoreContext,
    stream: &str,
    api: &Api,
    spec: &RestoreSpec,
    parts: &[Part],
    id_field: &str,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let run = |batch: &mut Vec<Vec<u8>>, tally: &mut Tally| -> Result<()> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Result<Tally>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..REPLAY_CONCURRENCY.min(batch.len()))
                .map(|_| {
                    s.spawn(|| {
                        let mut t = Tally::default();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(line) = batch.get(i) else {
                                return Ok(t);
                            };
                            replay(api, spec, parts, id_field, line, &mut t)?;
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("replay worker"))
                .collect()
        });
        batch.clear();
        for r in results {
            tally.merge(r?);
        }
        Ok(())
    };
    each_line(ctx, stream, &mut |line| {
        batch.push(line.to_vec());
        if batch.len() >= REPLAY_BATCH {
            run(&mut batch, &mut tally)?;
        }
        Ok(())
    })?;
    run(&mut batch, &mut tally)?;
    Ok(tally)
}

/// Splits written bytes into lines and hands each to a callback.
struct Lines<'f> {
    partial: Vec<u8>,
    on_line: &'f mut dyn FnMut(&[u8]) -> Result<()>,
    error: Option<Error>,
}

impl Lines<'_> {
    fn emit(&mut self, line: &[u8]) -> io::Result<()> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        (self.on_line)(line).map_err(|e| {
            let msg = e.to_string();
            self.error = Some(e);
            io::Error::other(msg)
        })
    }

    /// Handles a last line without a newline.
    fn finish(&mut self) -> Result<()> {
        let rest = std::mem::take(&mut self.partial);
        self.emit(&rest).map_err(|e| {
            self.error
                .take()
                .unwrap_or_else(|| Error::new(ErrorKind::Io, e.to_string()))
        })
    }
}

impl Write for Lines<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.emit(&rest[..nl])?;
            } else {
                self.partial.extend_from_slice(&rest[..nl]);
                let line = std::mem::take(&mut self.partial);
                self.emit(&line)?;
            }
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Feeds every line of a snapshot stream to `on_line`.
pub(super) fn each_line(
    ctx: &RestoreContext,
    stream: &str,
    on_line: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut lines = Lines {
        partial: Vec::new(),
        on_line,
        error: None,
    };
    let res = ctx.copy_stream(stream, &mut lines);
    if let Some(e) = lines.error.take() {
        return Err(e);
    }
    res?;
    lines.finish()
}

impl HttpConfig {
    /// The restore spec and record id field for an endpoint recorded in a snapshot.
    pub(super) fn spec_for(&self, r: &Recorded) -> Result<(RestoreSpec, String)> {
        let own = self.endpoints.iter().find(|e| e.name == r.name);
        let id = own.map_or_else(default_id, |e| e.id.clone());
        own.and_then(|e| e.restore.clone())
            .or_else(|| r.spec.clone())
            .map(|s| (s, id))
            .ok_or_else(|| {
                Error::invalid(format!("endpoint {} has no restore method", r.name)).hint(
                    "add restore = { method = \"PUT\", path = \"/items/{id}\" } to the endpoint",
                )
            })
    }

    /// The base URL records are sent to.
    pub(super) fn restore_base<'a>(&'a self, ctx: &'a RestoreContext) -> Result<&'a str> {
        match ctx.rename {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => Ok(u),
            Some(other) => Err(
                Error::invalid(format!("--into {other:?} is not a url")).hint(
                    "an http restore takes --into https://host/..., or --to another http source",
                ),
            ),
            None => Ok(self.restore_url.as_deref().unwrap_or(&self.base_url)),
        }
    }
}
