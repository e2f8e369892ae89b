//! Entry points for the fuzz targets in the project's `fuzz/` directory: each
//! feeds untrusted bytes to the decoder salvor really uses, and must return
//! (an error is fine) without panicking, hanging or allocating without bound.
//! Not an API: the targets live outside this crate and need a way in.

use std::io::{BufReader, Read, Write};
use std::path::Path;

use crate::source::redis::protocol::{Conn, read_reply};
use crate::source::redis::replication::{RdbBody, start_full_sync};

/// Every RESP2 reply in `data`, one after another.
pub fn redis_replies(data: &[u8]) {
    let mut r = BufReader::new(data);
    while read_reply(&mut r).is_ok() {}
}

/// A server's side of a full resynchronisation: the handshake replies, the
/// `+FULLRESYNC` line, the framing header and the RDB payload.
pub fn redis_full_sync(data: &[u8]) {
    /// Reads the server's bytes from `data`, swallows what salvor sends.
    struct Server<'a>(&'a [u8]);
    impl Read for Server<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl Write for Server<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Conn::new(Server(data), "fuzz".into());
    if let Ok(sync) = start_full_sync(&mut c) {
        let mut body = RdbBody::new(&mut c.io, sync.framing);
        let _ = std::io::copy(&mut body, &mut std::io::sink());
    }
}

/// A snapshot stream of MongoDB documents, as a restore reads it back.
#[cfg(feature = "mongodb")]
pub fn mongodb_documents(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((_, len))) = crate::source::mongodb::driver::next_document(rest, "fuzz") {
        rest = &rest[len..];
    }
}

/// A configuration file.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse(text, Path::new("fuzz.toml"));
    }
}
