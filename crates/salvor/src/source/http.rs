//! `http`: a JSON export of an HTTP API (IPAM, DNS, inventory services ...),
//! replayed into the same or another instance of that API on restore.
//!
//! ```toml
//! [source.ipam]
//! type = "http"
//! base_url = "https://ipam.example.com"
//! token = { env = "IPAM_TOKEN" }                # sent as `Authorization: Bearer ...`
//! headers = { "X-Tenant" = "ops", "X-Api-Key" = { file = "/etc/salvor/ipam.key" } }
//! timeout_secs = 30                             # per request (default 30)
//! restore_url = "https://ipam-dr.example.com"   # restore target without --to (default base_url)
//!
//! [[source.ipam.endpoints]]
//! name = "pools"                                # stream pools.jsonl, counts.pools
//! path = "/api/v1/pools"
//! items = "data"                                # field holding the records (dotted); default: the body
//! id = "id"                                     # names records in messages (default "id")
//! pagination = { style = "page", page_param = "page", size_param = "per_page", size = 100 }
//! restore = { method = "PUT", path = "/api/v1/pools/{id}" }
//!
//! [[source.ipam.endpoints]]
//! name = "allocations"
//! path = "/api/v1/allocations?pool_id={pools.id}"   # fan-out: one listing per pool
//! items = "items"
//! pagination = { style = "cursor", param = "cursor", next = "next_cursor" }
//! restore = { method = "POST", path = "/api/v1/allocations" }
//!
//! [[source.ipam.endpoints]]
//! name = "tags"
//! path = "/api/v1/tags"
//! pagination = { style = "link" }               # RFC 8288 `Link: <...>; rel="next"`
//! # pagination = { style = "link", next = "links.next" }  # or a next URL in the body
//! restore = { method = "POST", path = "/api/v1/tags" }
//! ```
//!
//! Design choices:
//! - Each endpoint is one stream, `NAME.jsonl`: one record per line, compact
//!   JSON. Lines are written page by page as they arrive and read back line by
//!   line, so neither backup nor restore holds more than one page (plus the
//!   values fan-out placeholders need from parent records) in memory.
//! - Endpoints run in configuration order; `{pools.id}` in a path expands to
//!   one listing per record of the earlier endpoint `pools`. All placeholders of
//!   one path must name the same endpoint.
//! - Restore replays endpoints in the same order (parents first). It is
//!   idempotent: `PUT` answers 201 for created and 200/204 for an item that
//!   already existed (and was replaced); `POST` answers 2xx for created, and
//!   409 (or any 4xx whose body says the item "exists") for existing. The
//!   restore spec comes from the target source's endpoint of the same name, or
//!   else from the one the manifest recorded, so `--to` may name a source that
//!   only sets `base_url` and `token`. `--into URL` overrides the target URL.
//! - Any HTTP failure during backup (connection, 4xx, 5xx, non-JSON body)
//!   fails it with one line naming the method and URL (credentials in the URL
//!   are removed; tokens and headers never appear) and no snapshot is written.
//!   During restore a refused record counts as failed and the restore goes on;
//!   an unreachable target stops it.
//!
//! Manifest: `{ "type": "http", "base_url", "time", "counts": { ENDPOINT: records },
//! "endpoints": [{ "name", "stream", "records", "requests", "restore" }] }`;
//! `inspect` returns `type`, `base_url`, `time` and `counts` of the live API.

mod client;
mod config;
mod export;
mod restore;
mod template;

use std::io;

use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use salvor_engine::{Error, ErrorKind, Result};
use serde_json::{Value, json};

use super::{BackupContext, RestoreContext, RestoreReport, Source};
use client::Api;
use config::plan;
pub use config::{Endpoint, HeaderSetting, HttpConfig, Pagination, RestoreMethod, RestoreSpec};
use export::{counts, export};
use restore::{Tally, each_line, recorded, replay_stream, select};
use template::parse_template;

fn stream_name(endpoint: &str) -> String {
    format!("{endpoint}.jsonl")
}

impl Source for &HttpConfig {
    fn backup(&self, ctx: &BackupContext) -> Result<(SnapshotId, Snapshot)> {
        let api = Api::new(self, &self.base_url)?;
        plan(&self.endpoints)?;
        let mut streams = ctx.streams()?;
        let exported = export(self, &api, &mut |name, reader| {
            streams.add(&stream_name(name), reader).map(|_| ())
        })?;
        let endpoints: Vec<Value> = exported
            .iter()
            .map(|(name, e)| {
                let restore = self
                    .endpoints
                    .iter()
                    .find(|x| &x.name == name)
                    .and_then(|x| x.restore.as_ref());
                json!({
                    "name": name,
                    "stream": stream_name(name),
                    "records": e.records,
                    "requests": e.requests,
                    "restore": restore,
                })
            })
            .collect();
        let manifest = json!({
            "type": "http",
            "base_url": api.shown_base(),
            "time": jiff::Timestamp::now().to_string(),
            "counts": counts(&exported),
            "endpoints": endpoints,
        });
        streams.commit(manifest)
    }

    fn restore(&self, ctx: &RestoreContext) -> Result<RestoreReport> {
        let all = recorded(&ctx.manifest())?;
        let chosen = select(&all, ctx.only)?;
        let specs: Vec<(RestoreSpec, String)> = chosen
            .iter()
            .map(|r| self.spec_for(r))
            .collect::<Result<_>>()?;
        let api = Api::new(self, self.restore_base(ctx)?)?;
        let mut report = RestoreReport::default();
        let mut per_endpoint = serde_json::Map::new();
        let mut total = Tally::default();
        for (r, (spec, id)) in chosen.iter().zip(&specs) {
            let parts = parse_template(&spec.path)?;
            let tally = if ctx.dry_run {
                let mut t = Tally::default();
                each_line(ctx, &r.stream, &mut |_| {
                    t.records += 1;
                    Ok(())
                })?;
                t
            } else {
                replay_stream(ctx, &r.stream, &api, spec, &parts, id)?
            };
            let verb = if ctx.dry_run { "would send" } else { "sent" };
            report.actions.push(format!(
                "{verb} {} records of {} as {:?} {}{}",
                tally.records,
                r.name,
                spec.method,
                api.shown_base().trim_end_matches('/'),
                spec.path
            ));
            report
                .actions
                .extend(tally.failures.iter().map(|f| format!("failed: {f}")));
            if tally.conflicts > 0 {
                report.actions.push(format!(
                    "{} records of {} already exist on the target (409 Conflict) and were left as they are, perhaps with other content: {}{}; restore them with a PUT restore spec to overwrite",
                    tally.conflicts,
                    r.name,
                    tally.conflict_ids.join(", "),
                    if tally.conflicts > tally.conflict_ids.len() as u64 { ", ..." } else { "" }
                ));
            }
            per_endpoint.insert(r.name.clone(), tally.to_json(ctx.dry_run));
            total.records += tally.records;
            total.created += tally.created;
            total.existing += tally.existing;
            total.failed += tally.failed;
            total.conflicts += tally.conflicts;
        }
        if let Value::Object(m) = total.to_json(ctx.dry_run) {
            report.counts = m;
        }
        report
            .counts
            .insert("endpoints".into(), Value::Object(per_endpoint));
        Ok(report)
    }

    fn inspect(&self) -> Result<Value> {
        let api = Api::new(self, &self.base_url)?;
        let exported = export(self, &api, &mut |_, reader| {
            io::copy(reader, &mut io::sink())
                .map(|_| ())
                .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))
        })?;
        Ok(json!({
            "type": "http",
            "base_url": api.shown_base(),
            "time": jiff::Timestamp::now().to_string(),
            "counts": counts(&exported),
        }))
    }
}
