//! The `http` source's configuration, and the plan that checks its endpoints
//! before any request is sent and works out which fan-out values to keep.

use std::collections::BTreeMap;

use salvor_engine::{Error, Result};
use serde::{Deserialize, Serialize};

use super::template::{Part, parse_template};
use crate::config::bounded;
use crate::source::secret::Secret;

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
    #[serde(
        default = "default_timeout",
        deserialize_with = "bounded::timeout_secs"
    )]
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

pub(super) fn default_id() -> String {
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
        #[serde(default = "default_size", deserialize_with = "bounded::batch")]
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

// ------------------------------------------------------------------ plan

/// An endpoint with its path parsed and its fan-out parent resolved.
pub(super) struct Planned<'a> {
    pub(super) ep: &'a Endpoint,
    pub(super) parts: Vec<Part>,
    /// The earlier endpoint whose records fan this one out.
    pub(super) parent: Option<String>,
    /// Fields of this endpoint's records that later endpoints' placeholders use.
    pub(super) collect: Vec<String>,
}

/// Validates names and placeholders, and works out which values to keep.
pub(super) fn plan(endpoints: &[Endpoint]) -> Result<Vec<Planned<'_>>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(toml_text: &str) -> Result<HttpConfig, toml::de::Error> {
        toml::from_str(toml_text)
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
}
