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

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::time::Duration;

use reqwest::Url;
use reqwest::blocking::{Client, Response};
use reqwest::header::{self, HeaderMap, HeaderName};
use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use salvor_engine::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::secret::Secret;
use super::{BackupContext, RestoreContext, RestoreReport, Source};

/// Pages fetched per endpoint listing before giving up on a server that
/// never says "last page".
const MAX_PAGES: u64 = 100_000;
/// Failures listed one by one in a restore report.
const FAILURES_SHOWN: usize = 10;

/// Configuration of a `http` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Scheme, host and optional path prefix of the API.
    pub base_url: String,
    /// Bearer token sent with every request.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Extra request headers: a plain value or a secret.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderSetting>,
    /// Timeout of one request, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Where a restore without `--to` sends the records (default `base_url`).
    #[serde(default)]
    pub restore_url: Option<String>,
    /// What to export, in order (a restore-only target may leave it empty).
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

fn default_timeout() -> u64 {
    30
}

/// A header value in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderSetting {
    /// Written as is.
    Plain(String),
    /// Resolved when needed, never printed.
    Secret(Secret),
}

/// One list endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Stream and count name.
    pub name: String,
    /// Path below `base_url`, with optional `{endpoint.field}` fan-out placeholders.
    pub path: String,
    /// Dotted path of the records array in the response; default: the body itself.
    #[serde(default)]
    pub items: Option<String>,
    /// Dotted path of a record's identifier (used in messages).
    #[serde(default = "default_id")]
    pub id: String,
    /// How the listing is paged.
    #[serde(default)]
    pub pagination: Pagination,
    /// How records are sent back on restore.
    #[serde(default)]
    pub restore: Option<RestoreSpec>,
}

fn default_id() -> String {
    "id".into()
}

/// How a listing is paged.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One response holds every record.
    #[default]
    None,
    /// `?page=N&per_page=S`; stops at the first page with fewer than `size` records.
    Page {
        /// Page number parameter.
        #[serde(default = "default_page_param")]
        page_param: String,
        /// Page size parameter.
        #[serde(default = "default_size_param")]
        size_param: String,
        /// Records per page.
        #[serde(default = "default_size")]
        size: u64,
        /// Number of the first page.
        #[serde(default = "default_first")]
        first: u64,
    },
    /// `?cursor=C` with the next cursor at a dotted path of the body; stops when it is absent.
    Cursor {
        /// Cursor parameter.
        #[serde(default = "default_cursor_param")]
        param: String,
        /// Dotted path of the next cursor in the body.
        next: String,
    },
    /// A next-page URL: at a dotted path of the body, or else the `Link` header.
    Link {
        /// Dotted path of the next URL in the body; default: `Link: <...>; rel="next"`.
        #[serde(default)]
        next: Option<String>,
    },
}

fn default_page_param() -> String {
    "page".into()
}
fn default_size_param() -> String {
    "per_page".into()
}
fn default_size() -> u64 {
    100
}
fn default_first() -> u64 {
    1
}
fn default_cursor_param() -> String {
    "cursor".into()
}

/// How a record is sent back.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreSpec {
    /// `POST` (409 = exists) or `PUT` (201 = created, 200/204 = existed).
    pub method: RestoreMethod,
    /// Path below the target URL, with `{field}` placeholders filled from the record.
    pub path: String,
}

/// The HTTP method of a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RestoreMethod {
    /// Create; a conflict means the record exists.
    Post,
    /// Create or replace at the item's URL.
    Put,
}

// ------------------------------------------------------------------ templates

/// A path split into literal text and `{placeholder}`s.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field(String),
}

/// Splits `path` at `{...}`; unbalanced braces are an error.
fn parse_template(path: &str) -> Result<Vec<Part>> {
    let bad = || {
        Error::invalid(format!("path {path:?} has an unbalanced brace"))
            .hint("write placeholders as {endpoint.field} or {field}")
    };
    let mut parts = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(bad());
        }
        let close = rest[open..].find('}').ok_or_else(bad)? + open;
        let name = &rest[open + 1..close];
        if name.is_empty() || name.contains('{') {
            return Err(bad());
        }
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        parts.push(Part::Field(name.to_string()));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Fills placeholders with encoded values from `lookup`; `None` names the missing one.
fn fill(parts: &[Part], lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Field(f) => out.push_str(&encode(&lookup(f).ok_or_else(|| f.clone())?)),
        }
    }
    Ok(out)
}

/// The value at a dotted path (`links.next`); the empty path is `v` itself.
fn at<'v>(v: &'v Value, dotted: &str) -> Option<&'v Value> {
    if dotted.is_empty() {
        return Some(v);
    }
    dotted.split('.').try_fold(v, |cur, key| match cur {
        Value::Object(m) => m.get(key),
        Value::Array(a) => a.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A scalar as placeholder text; objects, arrays and null have none.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

// ------------------------------------------------------------------ plan

/// An endpoint with its path parsed and its fan-out parent resolved.
struct Planned<'a> {
    ep: &'a Endpoint,
    parts: Vec<Part>,
    /// The earlier endpoint whose records fan this one out.
    parent: Option<String>,
    /// Fields of this endpoint's records that later endpoints' placeholders use.
    collect: Vec<String>,
}

/// Validates names and placeholders, and works out which values to keep.
fn plan(endpoints: &[Endpoint]) -> Result<Vec<Planned<'_>>> {
    if endpoints.is_empty() {
        return Err(Error::invalid("this http source has no endpoints")
            .hint("add [[source.NAME.endpoints]] entries with name and path"));
    }
    let mut out: Vec<Planned> = Vec::new();
    for ep in endpoints {
        check_name(&ep.name)?;
        if out.iter().any(|p| p.ep.name == ep.name) {
            return Err(Error::invalid(format!(
                "endpoint {:?} is defined twice",
                ep.name
            )));
        }
        let parts = parse_template(&ep.path)?;
        let mut parent: Option<String> = None;
        for part in &parts {
            let Part::Field(f) = part else { continue };
            let (p, field) = f.split_once('.').ok_or_else(|| {
                Error::invalid(format!(
                    "placeholder {{{f}}} in endpoint {} names no endpoint",
                    ep.name
                ))
                .hint("write fan-out placeholders as {endpoint.field}, e.g. {pools.id}")
            })?;
            if parent.as_deref().is_some_and(|q| q != p) {
                return Err(Error::invalid(format!(
                    "endpoint {} fans out over two endpoints",
                    ep.name
                ))
                .hint("use placeholders of one earlier endpoint per path"));
            }
            let earlier = out.iter_mut().find(|q| q.ep.name == p).ok_or_else(|| {
                Error::invalid(format!(
                    "placeholder {{{f}}} in endpoint {} names no earlier endpoint",
                    ep.name
                ))
                .hint("list the parent endpoint before the one that uses it")
            })?;
            if !earlier.collect.iter().any(|c| c == field) {
                earlier.collect.push(field.to_string());
            }
            parent = Some(p.to_string());
        }
        if let Some(r) = &ep.restore {
            parse_template(&r.path)?;
        }
        out.push(Planned {
            ep,
            parts,
            parent,
            collect: Vec::new(),
        });
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("invalid endpoint name {name:?}"))
            .hint("use letters, digits, '-', '_' and '.'"))
    }
}

fn stream_name(endpoint: &str) -> String {
    format!("{endpoint}.jsonl")
}

// ------------------------------------------------------------------ client

/// A configured HTTP client for one base URL.
struct Api {
    client: Client,
    base: String,
}

/// `url` without user name and password, for messages and manifests.
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// The innermost cause of a transport error, on one line.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl Api {
    /// Builds a client with the source's token, headers and timeout.
    fn new(cfg: &HttpConfig, base: &str) -> Result<Self> {
        let parsed = Url::parse(base).map_err(|e| {
            Error::invalid(format!("invalid url {base:?} in http source: {e}"))
                .hint("write it as https://host[:port][/prefix]")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid(format!(
                "url {} is not http(s)",
                redact(&parsed)
            )));
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            header::HeaderValue::from_static("application/json"),
        );
        if let Some(t) = &cfg.token {
            headers.insert(
                header::AUTHORIZATION,
                header_value("authorization", &format!("Bearer {}", t.resolve()?))?,
            );
        }
        for (name, setting) in &cfg.headers {
            let value = match setting {
                HeaderSetting::Plain(v) => v.clone(),
                HeaderSetting::Secret(s) => s.resolve()?,
            };
            let hname = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::invalid(format!("invalid header name {name:?}")))?;
            headers.insert(hname, header_value(name, &value)?);
        }
        let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        let client = Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| Error::new(ErrorKind::Io, "cannot set up an http client").source(e))?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// `base` joined with a path (which may carry a query).
    fn url(&self, path: &str) -> Result<Url> {
        let full = format!("{}/{}", self.base, path.trim_start_matches('/'));
        Url::parse(&full).map_err(|e| Error::invalid(format!("invalid url {full:?}: {e}")))
    }

    /// Base URL without credentials.
    fn shown_base(&self) -> String {
        Url::parse(&self.base).map_or_else(|_| self.base.clone(), |u| redact(&u))
    }

    /// Sends a request; only transport failures are errors.
    fn send(&self, method: reqwest::Method, url: &Url, body: Option<Vec<u8>>) -> Result<Response> {
        let mut req = self.client.request(method.clone(), url.clone());
        if let Some(b) = body {
            req = req.header(header::CONTENT_TYPE, "application/json").body(b);
        }
        req.send().map_err(|e| {
            let why = if e.is_timeout() {
                "timed out".to_string()
            } else {
                root_cause(&e)
            };
            Error::new(
                ErrorKind::Io,
                format!("{method} {} failed: {why}", redact(url)),
            )
            .hint("check that the server is up and the url is right")
        })
    }

    /// GETs a JSON page; any non-2xx status or non-JSON body is an error.
    fn get_json(&self, url: &Url) -> Result<(Value, Option<String>)> {
        let resp = self.send(reqwest::Method::GET, url, None)?;
        let status = resp.status();
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 | 403 => "check the source's token and headers",
                404 => "check the endpoint's path",
                s if s >= 500 => "the server failed; try again later or ask its operators",
                _ => "check the endpoint's configuration",
            };
            return Err(Error::new(
                ErrorKind::Io,
                format!("GET {} failed: {status}", redact(url)),
            )
            .hint(hint));
        }
        let link = resp
            .headers()
            .get_all(header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link);
        let body: Value = resp.json().map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "GET {} returned no valid json: {}",
                    redact(url),
                    root_cause(&e)
                ),
            )
        })?;
        Ok((body, link))
    }
}

fn header_value(name: &str, value: &str) -> Result<header::HeaderValue> {
    header::HeaderValue::from_str(value)
        .map(|mut v| {
            v.set_sensitive(true);
            v
        })
        .map_err(|_| {
            Error::invalid(format!(
                "header {name} has a value that is not valid in http"
            ))
        })
}

/// The `rel="next"` target of one `Link` header value.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|link| {
        let (target, params) = link.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let t = target.trim();
        (is_next && t.starts_with('<') && t.ends_with('>')).then(|| t[1..t.len() - 1].to_string())
    })
}

/// Replaces (or adds) query parameters.
fn with_params(url: &Url, params: &[(&str, String)]) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !params.iter().any(|(p, _)| p == k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut u = url.clone();
    u.set_query(None);
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in &kept {
            q.append_pair(k, v);
        }
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    u
}

// ------------------------------------------------------------------ export

/// Where the next page of one listing comes from.
enum Next {
    /// The listing URL as configured.
    Start,
    Page(u64),
    Cursor(String),
    Url(Url),
    Done,
}

/// Reads one endpoint (all of its fan-out listings) as JSON lines, a page at a time.
struct RecordReader<'a> {
    api: &'a Api,
    ep: &'a Endpoint,
    /// Listings not started yet.
    pending: std::vec::IntoIter<Url>,
    /// The listing being read and where its next page is.
    current: Option<(Url, Next)>,
    buf: Vec<u8>,
    pos: usize,
    records: u64,
    requests: u64,
    /// Fields to keep from each record for later fan-out.
    collect: &'a [String],
    collected: Vec<HashMap<String, String>>,
    /// The first failure, kept with its kind and hint.
    error: Option<Error>,
}

impl<'a> RecordReader<'a> {
    fn new(api: &'a Api, ep: &'a Endpoint, urls: Vec<Url>, collect: &'a [String]) -> Self {
        Self {
            api,
            ep,
            pending: urls.into_iter(),
            current: None,
            buf: Vec::new(),
            pos: 0,
            records: 0,
            requests: 0,
            collect,
            collected: Vec::new(),
            error: None,
        }
    }

    fn first(&self) -> Next {
        match &self.ep.pagination {
            Pagination::Page { first, .. } => Next::Page(*first),
            _ => Next::Start,
        }
    }

    /// Fills `buf` with the next non-empty page; false at the end.
    fn refill(&mut self) -> Result<bool> {
        loop {
            let Some((listing, next)) = self.current.take() else {
                match self.pending.next() {
                    Some(u) => self.current = Some((u, self.first())),
                    None => return Ok(false),
                }
                continue;
            };
            let url = match &next {
                Next::Done => continue,
                Next::Page(n) => self.page_url(&listing, *n),
                Next::Start => listing.clone(),
                Next::Cursor(c) => self.cursor_url(&listing, c),
                Next::Url(u) => u.clone(),
            };
            self.requests += 1;
            if self.requests > MAX_PAGES {
                return Err(Error::invalid(format!(
                    "endpoint {} returned more than {MAX_PAGES} pages",
                    self.ep.name
                ))
                .hint("check its pagination settings"));
            }
            let (body, link) = self.api.get_json(&url)?;
            let records = self.records_of(&body, &url)?;
            let after = self.after(&next, &url, &body, link, records.len())?;
            self.current = Some((listing, after));
            if self.take(records)? {
                return Ok(true);
            }
        }
    }

    fn page_url(&self, listing: &Url, n: u64) -> Url {
        match &self.ep.pagination {
            Pagination::Page {
                page_param,
                size_param,
                size,
                ..
            } => with_params(
                listing,
                &[(page_param, n.to_string()), (size_param, size.to_string())],
            ),
            _ => listing.clone(),
        }
    }

    fn cursor_url(&self, listing: &Url, cursor: &str) -> Url {
        match &self.ep.pagination {
            Pagination::Cursor { param, .. } => with_params(listing, &[(param, cursor.into())]),
            _ => listing.clone(),
        }
    }

    /// The records of one response.
    fn records_of(&self, body: &Value, url: &Url) -> Result<Vec<Value>> {
        let field = self.ep.items.as_deref().unwrap_or("");
        match at(body, field) {
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(Value::Null) => Ok(Vec::new()),
            Some(v @ Value::Object(_)) if self.ep.items.is_some() || !body.is_array() => {
                Ok(vec![v.clone()])
            }
            _ => Err(Error::invalid(format!(
                "GET {} returned no records at {:?}",
                redact(url),
                field
            ))
            .hint(format!(
                "set items of endpoint {} to the field that holds the records",
                self.ep.name
            ))),
        }
    }

    /// Where the page after this one is.
    fn after(
        &self,
        this: &Next,
        url: &Url,
        body: &Value,
        link: Option<String>,
        got: usize,
    ) -> Result<Next> {
        Ok(match (&self.ep.pagination, this) {
            (Pagination::None, _) => Next::Done,
            (Pagination::Page { size, .. }, Next::Page(n)) => {
                if got == 0 || (got as u64) < *size {
                    Next::Done
                } else {
                    Next::Page(n + 1)
                }
            }
            (Pagination::Cursor { next, .. }, prev) => match at(body, next).and_then(scalar) {
                Some(c) if !c.is_empty() && c != "false" => {
                    if matches!(prev, Next::Cursor(p) if *p == c) {
                        return Err(self.loop_error(url));
                    }
                    Next::Cursor(c)
                }
                _ => Next::Done,
            },
            (Pagination::Link { next }, _) => {
                let target = match next {
                    Some(path) => at(body, path).and_then(Value::as_str).map(str::to_string),
                    None => link,
                };
                match target.filter(|t| !t.is_empty()) {
                    Some(t) => {
                        let u = url.join(&t).map_err(|e| {
                            Error::invalid(format!("bad next link {t:?} from {}: {e}", redact(url)))
                        })?;
                        if u == *url {
                            return Err(self.loop_error(url));
                        }
                        Next::Url(u)
                    }
                    None => Next::Done,
                }
            }
            _ => Next::Done,
        })
    }

    fn loop_error(&self, url: &Url) -> Error {
        Error::invalid(format!(
            "GET {} pointed to itself as the next page",
            redact(url)
        ))
        .hint(format!("check the pagination of endpoint {}", self.ep.name))
    }

    /// Serializes records into `buf`, keeping fan-out values; true if any.
    fn take(&mut self, records: Vec<Value>) -> Result<bool> {
        self.buf.clear();
        self.pos = 0;
        for r in &records {
            if !self.collect.is_empty() {
                self.keep(r)?;
            }
            serde_json::to_writer(&mut self.buf, r).expect("json values serialize");
            self.buf.push(b'\n');
        }
        self.records += records.len() as u64;
        Ok(!records.is_empty())
    }

    fn keep(&mut self, record: &Value) -> Result<()> {
        let mut values = HashMap::new();
        for f in self.collect {
            let v = at(record, f).and_then(scalar).ok_or_else(|| {
                Error::invalid(format!(
                    "a record of endpoint {} has no scalar field {f}",
                    self.ep.name
                ))
                .hint(format!(
                    "fix the {{{}.{f}}} placeholder that fans out over it",
                    self.ep.name
                ))
            })?;
            values.insert(f.clone(), v);
        }
        self.collected.push(values);
        Ok(())
    }
}

impl Read for RecordReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            match self.refill() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => {
                    let msg = e.to_string();
                    self.error = Some(e);
                    return Err(io::Error::other(msg));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The listing URLs of one endpoint: one, or one per parent record.
fn listings(
    api: &Api,
    p: &Planned,
    kept: &HashMap<String, Vec<HashMap<String, String>>>,
) -> Result<Vec<Url>> {
    let Some(parent) = &p.parent else {
        return Ok(vec![api.url(&p.ep.path)?]);
    };
    let rows = kept.get(parent).map(Vec::as_slice).unwrap_or_default();
    rows.iter()
        .map(|row| {
            let lookup = |f: &str| {
                f.split_once('.')
                    .and_then(|(_, field)| row.get(field).cloned())
            };
            let path = fill(&p.parts, &lookup)
                .map_err(|f| Error::invalid(format!("placeholder {{{f}}} has no value")))?;
            api.url(&path)
        })
        .collect()
}

/// Totals of one endpoint's export.
struct Exported {
    records: u64,
    requests: u64,
}

/// Runs every endpoint in order, handing each one's JSON lines to `sink`.
fn export(
    cfg: &HttpConfig,
    api: &Api,
    sink: &mut dyn FnMut(&str, &mut dyn Read) -> Result<()>,
) -> Result<Vec<(String, Exported)>> {
    let planned = plan(&cfg.endpoints)?;
    let mut kept: HashMap<String, Vec<HashMap<String, String>>> = HashMap::new();
    let mut out = Vec::new();
    for p in &planned {
        let urls = listings(api, p, &kept)?;
        let mut reader = RecordReader::new(api, p.ep, urls, &p.collect);
        let res = sink(&p.ep.name, &mut reader);
        if let Some(e) = reader.error.take() {
            return Err(e);
        }
        res?;
        if !p.collect.is_empty() {
            kept.insert(p.ep.name.clone(), std::mem::take(&mut reader.collected));
        }
        out.push((
            p.ep.name.clone(),
            Exported {
                records: reader.records,
                requests: reader.requests,
            },
        ));
    }
    Ok(out)
}

fn counts(exported: &[(String, Exported)]) -> serde_json::Map<String, Value> {
    exported
        .iter()
        .map(|(n, e)| (n.clone(), e.records.into()))
        .collect()
}

// ------------------------------------------------------------------ restore

/// What the manifest says about one endpoint.
struct Recorded {
    name: String,
    stream: String,
    spec: Option<RestoreSpec>,
}

fn recorded(manifest: &Value) -> Result<Vec<Recorded>> {
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
fn select<'r>(all: &'r [Recorded], only: &[String]) -> Result<Vec<&'r Recorded>> {
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
struct Tally {
    records: u64,
    created: u64,
    existing: u64,
    failed: u64,
    failures: Vec<String>,
}

impl Tally {
    fn fail(&mut self, why: String) {
        self.failed += 1;
        if self.failures.len() < FAILURES_SHOWN {
            self.failures.push(why);
        }
    }

    fn to_json(&self, dry_run: bool) -> Value {
        if dry_run {
            json!({ "records": self.records })
        } else {
            json!({ "records": self.records, "created": self.created, "existing": self.existing, "failed": self.failed })
        }
    }
}

/// Sends one record back; transport failures (target down) are errors.
fn replay(
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
        (RestoreMethod::Post, 409) => tally.existing += 1,
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
fn each_line(
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
    fn spec_for(&self, r: &Recorded) -> Result<(RestoreSpec, String)> {
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
    fn restore_base<'a>(&'a self, ctx: &'a RestoreContext) -> Result<&'a str> {
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
        let all = recorded(ctx.manifest())?;
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
            let mut tally = Tally::default();
            each_line(ctx, &r.stream, &mut |line| {
                if ctx.dry_run {
                    tally.records += 1;
                    Ok(())
                } else {
                    replay(&api, spec, &parts, id, line, &mut tally)
                }
            })?;
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
            per_endpoint.insert(r.name.clone(), tally.to_json(ctx.dry_run));
            total.records += tally.records;
            total.created += tally.created;
            total.existing += tally.existing;
            total.failed += tally.failed;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(toml_text: &str) -> Result<HttpConfig, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn templates_split_and_fill() {
        let parts = parse_template("/a?pool={pools.id}&x=1").unwrap();
        assert_eq!(
            parts,
            vec![
                Part::Text("/a?pool=".into()),
                Part::Field("pools.id".into()),
                Part::Text("&x=1".into())
            ]
        );
        assert!(parse_template("/a/{id").is_err());
        assert!(parse_template("/a/id}").is_err());
        let filled = fill(&parts, &|_| Some("a b/c".into())).unwrap();
        assert_eq!(filled, "/a?pool=a%20b%2Fc&x=1");
        assert_eq!(fill(&parts, &|_| None).unwrap_err(), "pools.id");
    }

    #[test]
    fn link_headers_and_dotted_paths() {
        let h = r#"</x?page=1>; rel="prev", </x?page=3>; rel="next""#;
        assert_eq!(next_link(h).as_deref(), Some("/x?page=3"));
        assert_eq!(next_link(r#"</x?page=1>; rel="last""#), None);
        let v = json!({ "links": { "next": "/n" }, "data": [ { "id": 7 } ] });
        assert_eq!(at(&v, "links.next"), Some(&json!("/n")));
        assert_eq!(at(&v, "data.0.id").and_then(scalar).as_deref(), Some("7"));
        assert_eq!(at(&v, "nope.x"), None);
    }

    #[test]
    fn config_is_checked() {
        let base = "base_url = \"http://h\"\n";
        let bad_key = format!("{base}[[endpoints]]\nname = \"a\"\npath = \"/a\"\nitemz = \"x\"\n");
        assert!(endpoints(&bad_key).is_err(), "unknown keys are rejected");
        let bad_style = format!(
            "{base}[[endpoints]]\nname = \"a\"\npath = \"/a\"\npagination = {{ style = \"page\", sise = 3 }}\n"
        );
        assert!(
            endpoints(&bad_style).is_err(),
            "unknown pagination keys are rejected"
        );
        let later = format!(
            "{base}[[endpoints]]\nname = \"a\"\npath = \"/a?p={{b.id}}\"\n[[endpoints]]\nname = \"b\"\npath = \"/b\"\n"
        );
        let cfg = endpoints(&later).unwrap();
        let err = plan(&cfg.endpoints).err().unwrap().to_string();
        assert!(err.contains("no earlier endpoint"), "{err}");
        let ok = format!(
            "{base}[[endpoints]]\nname = \"b\"\npath = \"/b\"\n[[endpoints]]\nname = \"a\"\npath = \"/a?p={{b.id}}\"\nrestore = {{ method = \"PUT\", path = \"/a/{{id}}\" }}\n"
        );
        let cfg = endpoints(&ok).unwrap();
        let p = plan(&cfg.endpoints).unwrap();
        assert_eq!(p[0].collect, vec!["id".to_string()]);
        assert_eq!(p[1].parent.as_deref(), Some("b"));
    }

    #[test]
    fn params_are_replaced() {
        let u = Url::parse("http://h/a?page=9&keep=1").unwrap();
        let v = with_params(&u, &[("page", "2".into())]);
        assert_eq!(v.as_str(), "http://h/a?keep=1&page=2");
    }
}
