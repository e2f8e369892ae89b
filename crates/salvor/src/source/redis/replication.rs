//! The replica's side of a full resynchronisation: the `PSYNC` handshake and
//! the RDB payload that follows it, read as a stream in either framing.

use std::io::{self, BufRead, Read, Write};

use salvor_engine::{Error, ErrorKind, Result};

use super::protocol::{Conn, read_line};

/// Length of the diskless transfer's end mark.
const MARK_LEN: usize = 40;

/// How the RDB payload is delimited.
pub(crate) enum Framing {
    /// `$<len>`: this many bytes are left.
    Length(u64),
    /// `$EOF:<mark>`: the payload ends at the mark.
    Mark([u8; MARK_LEN]),
}

/// The RDB payload of a full resynchronisation, as a reader.
pub(crate) struct RdbBody<'a, R> {
    inner: &'a mut R,
    framing: Framing,
    /// Mark framing: bytes read but not yet returned (may hold a partial mark).
    held: Vec<u8>,
    /// Mark framing: the mark was found; `held` is all that is left.
    ended: bool,
    /// The first bytes, for the `REDISnnnn` header check.
    pub(crate) head: Vec<u8>,
    pub(crate) bytes: u64,
}

impl<'a, R: BufRead> RdbBody<'a, R> {
    pub(crate) fn new(inner: &'a mut R, framing: Framing) -> Self {
        Self {
            inner,
            framing,
            held: Vec::new(),
            ended: false,
            head: Vec::new(),
            bytes: 0,
        }
    }

    fn read_length(&mut self, left: u64, out: &mut [u8]) -> io::Result<usize> {
        if left == 0 {
            return Ok(0);
        }
        let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut out[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "redis closed the connection before the end of the rdb",
            ));
        }
        self.framing = Framing::Length(left - n as u64);
        Ok(n)
    }

    fn read_marked(&mut self, mark: [u8; MARK_LEN], out: &mut [u8]) -> io::Result<usize> {
        loop {
            // Bytes that cannot be part of a mark not yet found are safe to return.
            let safe = if self.ended {
                self.held.len()
            } else {
                self.held.len().saturating_sub(MARK_LEN - 1)
            };
            if safe > 0 || self.ended {
                let n = safe.min(out.len());
                out[..n].copy_from_slice(&self.held[..n]);
                self.held.drain(..n);
                return Ok(n);
            }
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "redis closed the connection before the end of the rdb",
                ));
            }
            let len = chunk.len();
            self.held.extend_from_slice(chunk);
            self.inner.consume(len);
            if let Some(at) = self.held.windows(MARK_LEN).position(|w| w == mark) {
                // What follows the mark is the replication stream: not ours.
                self.held.truncate(at);
                self.ended = true;
            }
        }
    }
}

impl<R: BufRead> Read for RdbBody<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = match self.framing {
            Framing::Length(left) => self.read_length(left, out)?,
            Framing::Mark(mark) => self.read_marked(mark, out)?,
        };
        if self.head.len() < 9 {
            let take = (9 - self.head.len()).min(n);
            self.head.extend_from_slice(&out[..take]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// What `PSYNC` started.
pub(crate) struct FullSync {
    pub(crate) replid: String,
    pub(crate) offset: i64,
    pub(crate) framing: Framing,
}

/// Reads the next line that is not a keep-alive newline.
fn next_line<S: Read + Write>(c: &mut Conn<S>) -> Result<String> {
    loop {
        let line = read_line(&mut c.io).map_err(|e| c.lost(e))?;
        if !line.is_empty() {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
    }
}

/// Runs the replication handshake up to the first byte of the RDB.
pub(crate) fn start_full_sync<S: Read + Write>(c: &mut Conn<S>) -> Result<FullSync> {
    c.call_str(&["REPLCONF", "capa", "eof", "capa", "psync2"])?;
    // Redis 7+: no replication stream after the RDB; older servers refuse it.
    let _ = c.call_str(&["REPLCONF", "rdb-only", "1"]);
    c.send(&[b"PSYNC", b"?", b"-1"])?;
    let peer = c.peer.clone();
    let refused = |what: &str| {
        Error::new(
            ErrorKind::Backend,
            format!("redis at {peer} refused the replication request: {what}"),
        )
        .hint("the user needs replication rights (ACL: +psync +replconf +sync)")
    };
    let line = next_line(c)?;
    let mut words = line.split_whitespace();
    if words.next() != Some("+FULLRESYNC") {
        return Err(refused(line.trim_start_matches('-')));
    }
    let replid = words.next().unwrap_or_default().to_string();
    let offset = words.next().and_then(|o| o.parse().ok()).unwrap_or(0);
    let header = next_line(c)?;
    let framing = match header.strip_prefix("$EOF:") {
        Some(m) if m.len() == MARK_LEN => {
            let mut mark = [0; MARK_LEN];
            mark.copy_from_slice(m.as_bytes());
            Framing::Mark(mark)
        }
        _ => match header.strip_prefix('$').and_then(|n| n.parse().ok()) {
            Some(n) => Framing::Length(n),
            None => return Err(refused(header.trim_start_matches('-'))),
        },
    };
    Ok(FullSync {
        replid,
        offset,
        framing,
    })
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;

    #[test]
    fn marked_payload_stops_at_the_mark_across_reads() {
        let mark = [b'm'; MARK_LEN];
        let mut wire = b"REDIS0010payload".to_vec();
        wire.extend_from_slice(&mark);
        wire.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        // A tiny buffer splits the mark across reads.
        let mut r = BufReader::with_capacity(7, &wire[..]);
        let mut body = RdbBody::new(&mut r, Framing::Mark(mark));
        let mut out = Vec::new();
        body.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"REDIS0010payload");
        assert_eq!(&body.head, b"REDIS0010");
        let mut cut = BufReader::new(&b"REDIS0010pay"[..]);
        let err = RdbBody::new(&mut cut, Framing::Mark(mark)).read_to_end(&mut Vec::new());
        assert!(err.is_err());
        let mut short = BufReader::new(&b"REDIS"[..]);
        let err = RdbBody::new(&mut short, Framing::Length(9)).read_to_end(&mut Vec::new());
        assert!(err.is_err());
    }
}
