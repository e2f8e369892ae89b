//! RESP2, the protocol redis speaks to clients and replicas alike: replies,
//! commands and a connection that sends, pipelines and authenticates.

use std::io::{self, BufRead, BufReader, Read, Write};

use salvor_engine::{Error, ErrorKind, Result};
use serde_json::{Map, Value, json};

/// One RESP2 reply.
#[derive(Debug)]
pub(crate) enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn text(&self) -> String {
        match self {
            Self::Status(s) | Self::Error(s) => s.clone(),
            Self::Int(i) => i.to_string(),
            Self::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Self::Bulk(None) | Self::Array(_) => String::new(),
        }
    }
}

fn bad_data(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one line without its `\r\n`.
pub(crate) fn read_line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.by_ref().take(64 * 1024).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-reply",
        ));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(line)
}

fn parse_int(b: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad_data("malformed length in a redis reply"))
}

/// Deepest nesting of arrays accepted: the replies salvor asks for nest
/// one or two levels; a server sending thousands must not exhaust the stack.
const MAX_DEPTH: usize = 32;

/// Reads one reply.
pub(crate) fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    read_nested(r, 0)
}

fn read_nested(r: &mut impl BufRead, depth: usize) -> io::Result<Reply> {
    if depth > MAX_DEPTH {
        return Err(bad_data("a redis reply nests arrays too deeply"));
    }
    let line = read_line(r)?;
    let (kind, rest) = line
        .split_first()
        .ok_or_else(|| bad_data("empty redis reply"))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    Ok(match kind {
        b'+' => Reply::Status(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Int(parse_int(rest)?),
        b'$' => match u64::try_from(parse_int(rest)?) {
            Err(_) => Reply::Bulk(None),
            Ok(n) => {
                let mut v = Vec::new();
                r.by_ref().take(n + 2).read_to_end(&mut v)?;
                if v.len() as u64 != n + 2 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed mid-reply",
                    ));
                }
                v.truncate(n as usize);
                Reply::Bulk(Some(v))
            }
        },
        b'*' => match u64::try_from(parse_int(rest)?) {
            Err(_) => Reply::Array(None),
            Ok(n) => {
                // Grown as elements arrive: the count is the server's word.
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(read_nested(r, depth + 1)?);
                }
                Reply::Array(Some(items))
            }
        },
        _ => {
            return Err(bad_data(
                "unexpected data from redis (is this a redis server?)",
            ));
        }
    })
}

/// Encodes a command.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A connection speaking RESP2.
pub(crate) struct Conn<S> {
    pub(crate) io: BufReader<S>,
    pub(crate) peer: String,
}

impl<S: Read + Write> Conn<S> {
    pub(crate) fn new(stream: S, peer: String) -> Self {
        Self {
            io: BufReader::with_capacity(256 * 1024, stream),
            peer,
        }
    }

    pub(crate) fn lost(&self, e: io::Error) -> Error {
        Error::new(
            ErrorKind::Backend,
            format!("lost the connection to redis at {}", self.peer),
        )
        .source(e)
    }

    /// Sends one command without waiting for its reply (pipelining).
    pub(crate) fn send(&mut self, args: &[&[u8]]) -> Result<()> {
        let buf = encode(args);
        self.io.get_mut().write_all(&buf).map_err(|e| self.lost(e))
    }

    pub(crate) fn recv(&mut self) -> Result<Reply> {
        read_reply(&mut self.io).map_err(|e| self.lost(e))
    }

    /// Sends a command and returns its reply; an error reply is an error.
    pub(crate) fn call(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.send(args)?;
        match self.recv()? {
            Reply::Error(msg) => Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "redis at {} refused {}: {msg}",
                    self.peer,
                    String::from_utf8_lossy(args[0])
                ),
            )),
            r => Ok(r),
        }
    }

    pub(crate) fn call_str(&mut self, args: &[&str]) -> Result<Reply> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.call(&args)
    }

    /// Authenticates, or checks that no authentication is needed.
    pub(crate) fn auth(&mut self, user: Option<&str>, password: Option<&str>) -> Result<()> {
        let Some(pw) = password else {
            return match self.call_str(&["PING"]) {
                Err(e) if e.to_string().contains("NOAUTH") => Err(Error::invalid(format!(
                    "redis at {} requires a password",
                    self.peer
                ))
                .hint("set password = { env = \"VAR\" } in the source's configuration")),
                other => other.map(drop),
            };
        };
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        args.extend(user.map(str::as_bytes));
        args.push(pw.as_bytes());
        self.send(&args)?;
        match self.recv()? {
            Reply::Error(msg) => Err(Error::invalid(format!(
                "redis at {} rejected the credentials: {}",
                self.peer,
                msg.split_whitespace().next().unwrap_or("error")
            ))
            .hint("check username and the password secret in the source's configuration")),
            _ => Ok(()),
        }
    }

    /// `INFO section` as key/value pairs.
    pub(crate) fn info(&mut self, section: &str) -> Result<Vec<(String, String)>> {
        let text = self.call_str(&["INFO", section])?.text();
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect())
    }

    /// Keys and expiring keys per database, from `INFO keyspace`.
    pub(crate) fn keyspace(&mut self) -> Result<Map<String, Value>> {
        let mut out = Map::new();
        for (db, v) in self.info("keyspace")? {
            let field = |name: &str| {
                v.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| *k == name)
                    .and_then(|(_, n)| n.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            out.insert(
                db,
                json!({ "keys": field("keys"), "expires": field("expires") }),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        let mut r: &[u8] = b"*2\r\n$1\r\n0\r\n*1\r\n$3\r\nabc\r\n:-2\r\n$-1\r\n-ERR no\r\n";
        let Reply::Array(Some(a)) = read_reply(&mut r).unwrap() else {
            panic!()
        };
        assert_eq!(a.len(), 2);
        assert!(matches!(read_reply(&mut r).unwrap(), Reply::Int(-2)));
        assert!(matches!(read_reply(&mut r).unwrap(), Reply::Bulk(None)));
        assert!(matches!(read_reply(&mut r).unwrap(), Reply::Error(_)));
        assert!(read_reply(&mut r).is_err());
        let mut short: &[u8] = b"$10\r\nabc";
        assert!(read_reply(&mut short).is_err());
    }
}
