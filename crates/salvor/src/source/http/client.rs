//! The HTTP client of one base URL: credentials in default headers, failures
//! as one line that names method and URL but never a credential.

use std::time::Duration;

use reqwest::Url;
use reqwest::blocking::{Client, Response};
use reqwest::header::{self, HeaderMap, HeaderName};
use salvor_engine::{Error, ErrorKind, Result};
use serde_json::Value;

use super::{HeaderSetting, HttpConfig};

/// A configured HTTP client for one base URL.
pub(super) struct Api {
    client: Client,
    base: String,
}

/// `url` without user name and password, for messages and manifests.
pub(super) fn redact(url: &Url) -> String {
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
    pub(super) fn new(cfg: &HttpConfig, base: &str) -> Result<Self> {
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
    pub(super) fn url(&self, path: &str) -> Result<Url> {
        let full = format!("{}/{}", self.base, path.trim_start_matches('/'));
        Url::parse(&full).map_err(|e| Error::invalid(format!("invalid url {full:?}: {e}")))
    }

    /// Base URL without credentials.
    pub(super) fn shown_base(&self) -> String {
        Url::parse(&self.base).map_or_else(|_| self.base.clone(), |u| redact(&u))
    }

    /// Sends a request; only transport failures are errors.
    pub(super) fn send(
        &self,
        method: reqwest::Method,
        url: &Url,
        body: Option<Vec<u8>>,
    ) -> Result<Response> {
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
    pub(super) fn get_json(&self, url: &Url) -> Result<(Value, Option<String>)> {
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
pub(super) fn with_params(url: &Url, params: &[(&str, String)]) -> Url {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let h = r#"</x?page=1>; rel="prev", </x?page=3>; rel="next""#;
        assert_eq!(next_link(h).as_deref(), Some("/x?page=3"));
        assert_eq!(next_link(r#"</x?page=1>; rel="last""#), None);
    }

    #[test]
    fn params_are_replaced() {
        let u = Url::parse("http://h/a?page=9&keep=1").unwrap();
        let v = with_params(&u, &[("page", "2".into())]);
        assert_eq!(v.as_str(), "http://h/a?keep=1&page=2");
    }
}
