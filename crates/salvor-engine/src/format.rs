//! Every persisted structure, and the envelope that seals them.
//!
//! `docs/FORMAT.md` is the normative description; this module is its
//! implementation. Binary structures (trees, pack headers, index files) use the
//! postcard 1.0 wire format, which is compact, deterministic and has a written
//! specification; snapshots are JSON so a decrypted snapshot is readable by a
//! human during an incident.
//!
//! Sealed object layout (config, index, snapshot, lock):
//! `"SLVR" | version u8 | kind u8 | salt[24] | AES-256-GCM(zstd(body))`, the
//! 30-byte prefix being the AEAD's associated data so a file cannot be passed
//! off as another kind or version.

pub mod config;
pub mod index;
pub mod key;
pub mod lock;
pub mod pack;
pub mod snapshot;
pub mod tree;

use crate::crypto::{MasterKey, NonceDomain, SALT_LEN};
use crate::error::{Error, Result};

/// A tagged field a later version added to a v2 record (tree node, index
/// file, pack record). Readers keep the extensions they do not know when
/// they rewrite a record; tags are assigned in docs/FORMAT.md.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Extension {
    /// What the field is.
    pub tag: u32,
    /// Its encoding, defined with the tag.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Magic bytes at the start of every sealed object and pack.
pub const MAGIC: &[u8; 4] = b"SLVR";
/// Repository format version this build gives new repositories. Into an
/// existing repository it writes that repository's version (1 or 2).
pub const FORMAT_VERSION: u8 = 2;
/// Highest repository format version this build reads.
pub const MAX_READ_VERSION: u8 = 2;
/// Length of the clear prefix of sealed objects and packs.
pub const PREFIX_LEN: usize = 4 + 1 + 1 + SALT_LEN;

/// The kind byte of a sealed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectKind {
    /// `config`.
    Config = 1,
    /// `index/<id>`.
    Index = 2,
    /// `snapshots/<id>`.
    Snapshot = 3,
    /// `locks/<id>`.
    Lock = 4,
    /// `data/<xx>/<id>`.
    Pack = 5,
}

/// Builds the clear prefix for a new object of a repository of format
/// `version`, with `salt` (from [`MasterKey::new_salt`]).
pub fn new_prefix(
    version: u8,
    kind: ObjectKind,
    salt: [u8; SALT_LEN],
) -> ([u8; PREFIX_LEN], [u8; SALT_LEN]) {
    let mut p = [0u8; PREFIX_LEN];
    p[..4].copy_from_slice(MAGIC);
    p[4] = version;
    p[5] = kind as u8;
    p[6..].copy_from_slice(&salt);
    (p, salt)
}

/// Validates a prefix and returns its salt.
///
/// # Errors
/// When the magic, version or kind do not match.
pub fn parse_prefix(
    data: &[u8],
    kind: ObjectKind,
    what: &dyn Fn() -> String,
) -> Result<[u8; SALT_LEN]> {
    if data.len() < PREFIX_LEN || &data[..4] != MAGIC {
        return Err(Error::corrupt(format!(
            "{} is not a salvor object (bad magic or truncated)",
            what()
        )));
    }
    if data[4] == 0 || data[4] > MAX_READ_VERSION {
        return Err(Error::invalid(format!(
            "{} has format version {}, this salvor reads up to {MAX_READ_VERSION}",
            what(),
            data[4]
        ))
        .hint("upgrade salvor"));
    }
    if data[5] != kind as u8 {
        return Err(Error::corrupt(format!(
            "{} has object kind {}, expected {}",
            what(),
            data[5],
            kind as u8
        )));
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&data[6..PREFIX_LEN]);
    Ok(salt)
}

/// Compresses and encrypts a document body into a sealed object of a
/// repository of format `version`.
pub fn seal(key: &MasterKey, version: u8, kind: ObjectKind, body: &[u8]) -> Vec<u8> {
    let (prefix, salt) = new_prefix(version, kind, key.new_salt());
    // Level 1: the large documents (index files) are mostly random ids, which
    // no level compresses; higher levels only cost time at every commit.
    let compressed = zstd::bulk::compress(body, 1).expect("zstd compress in memory");
    let ct = key
        .object_cipher(&salt)
        .seal(0, NonceDomain::Document, &compressed, &prefix);
    let mut out = Vec::with_capacity(PREFIX_LEN + ct.len());
    out.extend_from_slice(&prefix);
    out.extend(ct);
    out
}

/// Authenticates, decrypts and decompresses a sealed object.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] on any damage; `what` names the object.
pub fn open(
    key: &MasterKey,
    kind: ObjectKind,
    data: &[u8],
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    let salt = parse_prefix(data, kind, what)?;
    let compressed = key.object_cipher(&salt).open(
        0,
        NonceDomain::Document,
        &data[PREFIX_LEN..],
        &data[..PREFIX_LEN],
        what,
    )?;
    decompress(&compressed, what)
}

/// Largest document body accepted (index files of huge repositories stay far below).
pub const MAX_DOCUMENT: u64 = 1 << 30;

/// zstd decompression of a document, capped against decompression bombs.
///
/// # Errors
/// When the data is not a valid zstd frame or exceeds [`MAX_DOCUMENT`].
pub fn decompress(data: &[u8], what: &dyn Fn() -> String) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    let dec = zstd::stream::Decoder::new(data)
        .map_err(|e| Error::corrupt(format!("{} does not decompress: {e}", what())))?;
    dec.take(MAX_DOCUMENT + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::corrupt(format!("{} does not decompress: {e}", what())))?;
    if out.len() as u64 > MAX_DOCUMENT {
        return Err(Error::corrupt(format!(
            "{} is larger than {MAX_DOCUMENT} bytes",
            what()
        )));
    }
    Ok(out)
}

/// postcard encoding of a binary structure.
pub fn to_bytes<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Sized first: a stream's tree holds 32 bytes per chunk (megabytes for a
    // dump), and growing the Vec by doubling would hold up to three times that.
    let size = postcard::experimental::serialized_size(value).unwrap_or(0);
    postcard::to_extend(value, Vec::with_capacity(size))
        .expect("in-memory postcard encoding cannot fail")
}

/// postcard decoding; `what` names the object in the error.
///
/// # Errors
/// When the bytes do not decode.
pub fn from_bytes<'a, T: serde::Deserialize<'a>>(
    data: &'a [u8],
    what: &dyn Fn() -> String,
) -> Result<T> {
    postcard::from_bytes(data)
        .map_err(|e| Error::corrupt(format!("{} does not decode: {e}", what())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_round_trip_rejects_kind_swap_and_bit_flips() {
        let k = MasterKey::generate();
        let s = seal(&k, FORMAT_VERSION, ObjectKind::Snapshot, b"{\"a\":1}");
        assert_eq!(
            open(&k, ObjectKind::Snapshot, &s, &|| "s".into()).unwrap(),
            b"{\"a\":1}"
        );
        assert!(open(&k, ObjectKind::Index, &s, &|| "s".into()).is_err());
        for i in 0..s.len() {
            let mut bad = s.clone();
            bad[i] ^= 0x10;
            assert!(
                open(&k, ObjectKind::Snapshot, &bad, &|| "s".into()).is_err(),
                "flip at {i} accepted"
            );
        }
        assert!(open(&k, ObjectKind::Snapshot, &s[..s.len() - 1], &|| "s".into()).is_err());
        assert!(
            open(&MasterKey::generate(), ObjectKind::Snapshot, &s, &|| "s"
                .into())
            .is_err()
        );
    }
}
