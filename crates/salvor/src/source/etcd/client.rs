//! A client of etcd's v3 JSON gateway (authentication, counts, key ranges,
//! transactions), and the decoder of the streamed maintenance snapshot.

use std::io::{self, Read};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use salvor_engine::{Error, ErrorKind, Result};
use serde_json::{Value, json};

use super::EtcdConfig;
use crate::source::secret;

/// Puts per transaction on a selective restore (etcd's default limit is 128).
const TXN_OPS: usize = 100;

/// An int64/uint64 field: the gateway writes them as strings and omits zeros.
pub(super) fn num(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// The first key after every key starting with `prefix` (`"\0"`: no end).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The innermost cause of an error ("connection refused"), for one-line messages.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A client of one etcd's JSON gateway.
pub(super) struct Client {
    http: reqwest::blocking::Client,
    pub(super) endpoint: String,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// Connects to `endpoint` (authenticating if a user is configured).
    pub(super) fn new(cfg: &EtcdConfig, endpoint: &str) -> Result<Self> {
        let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        let mut builder = reqwest::blocking::Client::builder()
            .connect_timeout(timeout)
            .timeout(None);
        let tls = cfg.ca_cert.is_some() || cfg.cert.is_some() || cfg.key.is_some();
        let https = endpoint.starts_with("https://");
        if tls && !https && endpoint == cfg.endpoint {
            return Err(Error::invalid(format!(
                "ca_cert, cert and key need an https:// endpoint, not {endpoint}"
            ))
            .hint("write the endpoint as https://HOST:PORT"));
        }
        // The certificates are the configured cluster's; a scratch etcd a
        // restore starts on loopback speaks plain http.
        if https {
            builder = Self::tls(builder, cfg)?;
        }
        let http = builder.build().map_err(|e| {
            Error::new(ErrorKind::Backend, "cannot create an http client").source(e)
        })?;
        let mut c = Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: None,
            timeout,
        };
        if let Some(user) = &cfg.username {
            let password = secret::resolve(cfg.password.as_ref())?.unwrap_or_default();
            let r = c.call(
                "auth/authenticate",
                &json!({ "name": user, "password": password }),
            )?;
            c.token = r["token"].as_str().map(String::from);
        }
        Ok(c)
    }

    /// The CA and client certificate of `cfg`, as `etcdctl --cacert --cert --key` takes them.
    fn tls(
        mut builder: reqwest::blocking::ClientBuilder,
        cfg: &EtcdConfig,
    ) -> Result<reqwest::blocking::ClientBuilder> {
        let read_pem = |p: &std::path::Path, what: &str| {
            crate::input::read_text(p, 1 << 20, what).map(String::into_bytes)
        };
        if let Some(ca) = &cfg.ca_cert {
            let pem = read_pem(ca, "CA certificate")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::invalid(format!("{} holds no PEM certificate", ca.display())).source(e)
            })?;
            // Only this CA: a private cluster's certificate must not be
            // accepted because some public root signed another one.
            builder = builder.tls_certs_only(certs);
        }
        match (&cfg.cert, &cfg.key) {
            (Some(cert), Some(key)) => {
                let mut pem = read_pem(cert, "client certificate")?;
                pem.push(b'\n');
                pem.extend(read_pem(key, "client key")?);
                let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    Error::invalid(format!(
                        "{} and {} are not a PEM certificate and its key",
                        cert.display(),
                        key.display()
                    ))
                    .source(e)
                })?;
                builder = builder.identity(id);
            }
            (None, None) => {}
            _ => {
                return Err(Error::invalid("cert and key must be given together")
                    .hint("set both, as for etcdctl --cert and --key"));
            }
        }
        Ok(builder)
    }

    /// POSTs `body` to `/v3/{path}`; a non-2xx answer is an error.
    pub(super) fn post(
        &self,
        path: &str,
        body: &Value,
        timeout: Option<Duration>,
    ) -> Result<reqwest::blocking::Response> {
        let mut req = self
            .http
            .post(format!("{}/v3/{path}", self.endpoint))
            .json(body);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(token) = &self.token {
            req = req.header("Authorization", token);
        }
        let resp = req.send().map_err(|e| {
            Error::new(
                ErrorKind::Backend,
                format!("cannot reach etcd at {}: {}", self.endpoint, root_cause(&e)),
            )
            .hint("check endpoint in the source's configuration and that etcd is running")
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v["message"]
                    .as_str()
                    .or(v["error"].as_str())
                    .map(String::from)
            })
            .unwrap_or_else(|| status.to_string());
        let mut e = Error::new(
            ErrorKind::Backend,
            format!("etcd at {} refused {path}: {msg}", self.endpoint),
        );
        if msg.contains("user name is empty") {
            e = e.hint("this etcd has authentication on: set username and password in the source's configuration");
        } else if status == reqwest::StatusCode::UNAUTHORIZED
            || msg.contains("auth")
            || msg.contains("permission")
        {
            e = e.hint("check username and the password secret in the source's configuration");
        }
        Err(e)
    }

    /// POSTs and parses the JSON answer.
    pub(super) fn call(&self, path: &str, body: &Value) -> Result<Value> {
        self.post(path, body, Some(self.timeout))?
            .json()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Backend,
                    format!(
                        "etcd at {} sent an unreadable answer to {path}",
                        self.endpoint
                    ),
                )
                .source(e)
            })
    }

    /// (revision, number of keys) in `[key, end)`, at `revision` (0 = now).
    pub(super) fn count(&self, key: &[u8], end: &[u8], revision: u64) -> Result<(u64, u64)> {
        let r = self.call(
            "kv/range",
            &json!({ "key": B64.encode(key), "range_end": B64.encode(end),
                     "count_only": true, "revision": revision }),
        )?;
        Ok((num(&r["header"]["revision"]), num(&r["count"])))
    }

    /// Key/value pairs under `prefix`, read in pages.
    pub(super) fn range_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = prefix_end(prefix);
        let mut from = prefix.to_vec();
        let mut out = Vec::new();
        loop {
            let r = self.call(
                "kv/range",
                &json!({ "key": B64.encode(&from), "range_end": B64.encode(&end), "limit": 1000 }),
            )?;
            let kvs = r["kvs"].as_array().cloned().unwrap_or_default();
            for kv in &kvs {
                let decode = |f: &str| B64.decode(kv[f].as_str().unwrap_or("")).unwrap_or_default();
                out.push((decode("key"), decode("value")));
            }
            match (r["more"].as_bool(), out.last()) {
                (Some(true), Some((last, _))) => {
                    from = last.clone();
                    from.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    /// Puts pairs in transactions of [`TXN_OPS`].
    pub(super) fn put_all(&self, kvs: &[(Vec<u8>, Vec<u8>)]) -> Result<u64> {
        for batch in kvs.chunks(TXN_OPS) {
            let ops: Vec<Value> = batch
                .iter()
                .map(|(k, v)| json!({ "request_put": { "key": B64.encode(k), "value": B64.encode(v) } }))
                .collect();
            self.call("kv/txn", &json!({ "success": ops }))?;
        }
        Ok(kvs.len() as u64)
    }
}

/// The snapshot stream: JSON messages decoded into the bytes they carry.
pub(super) struct SnapshotBody<R: Read> {
    messages: serde_json::StreamDeserializer<'static, serde_json::de::IoRead<R>, Value>,
    chunk: Vec<u8>,
    pos: usize,
    /// `remaining_bytes` of the last message (0 = complete).
    remaining: Option<u64>,
    pub(super) bytes: u64,
}

impl<R: Read> SnapshotBody<R> {
    pub(super) fn new(r: R) -> Self {
        Self {
            messages: serde_json::Deserializer::from_reader(r).into_iter(),
            chunk: Vec::new(),
            pos: 0,
            remaining: None,
            bytes: 0,
        }
    }

    /// Decodes the next message into `chunk`; false at the end of the stream.
    fn next_chunk(&mut self) -> io::Result<bool> {
        let Some(msg) = self.messages.next() else {
            return match self.remaining {
                Some(0) => Ok(false),
                _ => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "etcd ended the snapshot stream early",
                )),
            };
        };
        let msg = msg.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Some(err) = msg.get("error") {
            let text = err["message"].as_str().unwrap_or("unknown error");
            return Err(io::Error::other(format!(
                "etcd aborted the snapshot: {text}"
            )));
        }
        let result = &msg["result"];
        self.chunk = B64
            .decode(result["blob"].as_str().unwrap_or(""))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.pos = 0;
        self.remaining = Some(num(&result["remaining_bytes"]));
        Ok(true)
    }
}

impl<R: Read> Read for SnapshotBody<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if !self.next_chunk()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn snapshot_messages_decode_and_must_complete() {
        let wire = format!(
            "{}\n{}\n",
            json!({"result": {"blob": B64.encode(b"hello "), "remaining_bytes": "5"}}),
            json!({"result": {"blob": B64.encode(b"world")}})
        );
        let mut out = String::new();
        SnapshotBody::new(wire.as_bytes())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello world");
        let cut = json!({"result": {"blob": B64.encode(b"x"), "remaining_bytes": "9"}}).to_string();
        assert!(
            SnapshotBody::new(cut.as_bytes())
                .read_to_end(&mut Vec::new())
                .is_err()
        );
        let err = json!({"error": {"message": "too many requests"}}).to_string();
        let e = SnapshotBody::new(err.as_bytes())
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("too many requests"));
    }
}
