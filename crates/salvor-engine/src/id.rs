//! Typed 32-byte identifiers.
//!
//! Blob ids are keyed BLAKE3 hashes of plaintext; every other id is the plain
//! BLAKE3 hash of the stored object's bytes, so storage-level integrity can be
//! checked without the key. Distinct types keep a pack id from ever being used
//! as a blob id. In human-readable formats (JSON) ids are lower-case hex; in
//! binary formats (postcard) they are 32 raw bytes.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Lower-case hex of all 32 bytes.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// The 8-character prefix shown in tables.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
            /// Parses 64 hex characters.
            ///
            /// # Errors
            /// When the text is not 64 hex digits.
            pub fn from_hex(s: &str) -> Result<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out)
                    .map_err(|_| Error::invalid(format!("{s:?} is not a valid {}", stringify!($name))))?;
                Ok(Self(out))
            }
            /// The BLAKE3 hash of `data` as this id type.
            pub fn hash_of(data: &[u8]) -> Self {
                Self(*blake3::hash(data).as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                if s.is_human_readable() { s.serialize_str(&self.to_hex()) } else { self.0.serialize(s) }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    Self::from_hex(&s).map_err(serde::de::Error::custom)
                } else {
                    <[u8; 32]>::deserialize(d).map(Self)
                }
            }
        }
    };
}

define_id!(
    /// A data or tree blob: keyed BLAKE3 of its plaintext.
    BlobId
);
define_id!(
    /// A pack file: BLAKE3 of the whole stored file.
    PackId
);
define_id!(
    /// A snapshot document: BLAKE3 of the stored file.
    SnapshotId
);
define_id!(
    /// An index file: BLAKE3 of the stored file.
    IndexId
);
define_id!(
    /// A key file: BLAKE3 of the stored file.
    KeyId
);

/// A random 32-byte hex id (repository ids).
pub fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_json_is_hex() {
        let id = BlobId::hash_of(b"x");
        assert_eq!(BlobId::from_hex(&id.to_hex()).unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{}\"", id.to_hex()));
        let bin = postcard::to_allocvec(&id).unwrap();
        assert_eq!(bin.len(), 32);
        assert_eq!(postcard::from_bytes::<BlobId>(&bin).unwrap(), id);
        assert!(BlobId::from_hex("zz").is_err());
    }
}
