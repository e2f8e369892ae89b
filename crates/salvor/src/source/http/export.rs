//! The export: every endpoint's listings, page by page, as JSON lines, with
//! fan-out values kept from parent records for the endpoints after them.

use std::collections::HashMap;
use std::io::Read;

use reqwest::Url;
use salvor_engine::{Error, Result};
use serde_json::Value;

use super::client::{Api, redact, with_params};
use super::config::{Planned, plan};
use super::template::{at, fill, scalar};
use super::{Endpoint, HttpConfig, Pagination};
use crate::source::blocks::{BlockReader, BlockSource};

/// Pages fetched per endpoint listing before giving up on a server that
/// never says "last page".
const MAX_PAGES: u64 = 100_000;

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
    records: u64,
    requests: u64,
    /// Fields to keep from each record for later fan-out.
    collect: &'a [String],
    collected: Vec<HashMap<String, String>>,
}

impl<'a> RecordReader<'a> {
    fn new(api: &'a Api, ep: &'a Endpoint, urls: Vec<Url>, collect: &'a [String]) -> Self {
        Self {
            api,
            ep,
            pending: urls.into_iter(),
            current: None,
            records: 0,
            requests: 0,
            collect,
            collected: Vec::new(),
        }
    }

    fn first(&self) -> Next {
        match &self.ep.pagination {
            Pagination::Page { first, .. } => Next::Page(*first),
            _ => Next::Start,
        }
    }

    /// Fills `block` with the next non-empty page; false at the end.
    fn refill(&mut self, block: &mut Vec<u8>) -> Result<bool> {
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
            if self.take(records, block)? {
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

    /// Serializes records into `block`, keeping fan-out values; true if any.
    fn take(&mut self, records: Vec<Value>, block: &mut Vec<u8>) -> Result<bool> {
        block.clear();
        for r in &records {
            if !self.collect.is_empty() {
                self.keep(r)?;
            }
            serde_json::to_writer(&mut *block, r).expect("json values serialize");
            block.push(b'\n');
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

impl BlockSource for RecordReader<'_> {
    type Error = Error;

    fn next_block(&mut self, block: &mut Vec<u8>) -> Result<bool> {
        self.refill(block)
    }

    fn message(e: &Error) -> String {
        e.to_string()
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
pub(super) struct Exported {
    pub(super) records: u64,
    pub(super) requests: u64,
}

/// Runs every endpoint in order, handing each one's JSON lines to `sink`.
pub(super) fn export(
    cfg: &HttpConfig,
    api: &Api,
    sink: &mut dyn FnMut(&str, &mut dyn Read) -> Result<()>,
) -> Result<Vec<(String, Exported)>> {
    let planned = plan(&cfg.endpoints)?;
    let mut kept: HashMap<String, Vec<HashMap<String, String>>> = HashMap::new();
    let mut out = Vec::new();
    for p in &planned {
        let urls = listings(api, p, &kept)?;
        let mut reader = BlockReader::new(RecordReader::new(api, p.ep, urls, &p.collect));
        let res = sink(&p.ep.name, &mut reader);
        if let Some(e) = reader.error.take() {
            return Err(e);
        }
        res?;
        let reader = reader.source;
        if !p.collect.is_empty() {
            kept.insert(p.ep.name.clone(), reader.collected);
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

pub(super) fn counts(exported: &[(String, Exported)]) -> serde_json::Map<String, Value> {
    exported
        .iter()
        .map(|(n, e)| (n.clone(), e.records.into()))
        .collect()
}
