//! Keys, authenticated encryption and keyed hashing.
//!
//! The repository has one random master key made of three independent secrets:
//! an encryption key, a blob-id key (so blob ids reveal nothing about content to
//! someone without the key) and a 64-bit chunker seed (so chunk boundaries do not
//! fingerprint known files). Each passphrase wraps the master key through
//! Argon2id; see `docs/FORMAT.md` for the byte layout.
//!
//! Every stored object gets a fresh 24-byte random salt and its own AES-256-GCM
//! subkey `BLAKE3-derive_key("salvor v1 object subkey", enc_key || salt)`. Within
//! one object, nonces are a counter plus a domain byte, so a nonce never repeats
//! under one subkey and random 96-bit nonces (with their 2^32-message bound per
//! key) are never needed. AES-256-GCM was chosen over XChaCha20-Poly1305 because
//! it runs at several GB/s with AES-NI, and the subkey scheme removes the nonce
//! size concern that usually motivates XChaCha.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::id::BlobId;

/// Length of the AEAD tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;
/// Length of the per-object random salt.
pub const SALT_LEN: usize = 24;

/// Nonce domains: the 12th byte of the nonce, so frames, pack headers and
/// documents can never share a nonce even at the same counter.
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum NonceDomain {
    /// A frame of blobs inside a pack; counter = frame number.
    Frame = 0,
    /// The pack header; counter = 0.
    PackHeader = 1,
    /// A whole document (config, index, snapshot, lock); counter = 0.
    Document = 2,
}

/// The repository master key.
#[derive(Clone, Serialize, Deserialize)]
pub struct MasterKey {
    #[serde(with = "serde_bytes")]
    encrypt: [u8; 32],
    #[serde(with = "serde_bytes")]
    blob_id: [u8; 32],
    chunker_seed: u64,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Self {
        Self {
            encrypt: rand::random(),
            blob_id: rand::random(),
            chunker_seed: rand::random(),
        }
    }

    /// The keyed BLAKE3 id of a blob's plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.blob_id, plaintext).as_bytes())
    }

    /// The secret seed for the content-defined chunker's gear table.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// The cipher for the object whose salt is `salt`.
    pub fn object_cipher(&self, salt: &[u8; SALT_LEN]) -> ObjectCipher {
        let mut hasher = blake3::Hasher::new_derive_key("salvor v1 object subkey");
        hasher.update(&self.encrypt);
        hasher.update(salt);
        let subkey = hasher.finalize();
        ObjectCipher {
            aead: Aes256Gcm::new(subkey.as_bytes().into()),
        }
    }
}

/// AES-256-GCM under one object's subkey.
pub struct ObjectCipher {
    aead: Aes256Gcm,
}

fn nonce(counter: u64, domain: NonceDomain) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&counter.to_le_bytes());
    n[11] = domain as u8;
    n
}

impl ObjectCipher {
    /// Encrypts `plaintext`, returning ciphertext with the tag appended.
    pub fn seal(&self, counter: u64, domain: NonceDomain, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let n = nonce(counter, domain);
        self.aead
            .encrypt(
                Nonce::from_slice(&n),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption cannot fail for in-memory buffers")
    }

    /// Decrypts and authenticates; `what` names the object in the error.
    ///
    /// # Errors
    /// [`ErrorKind::Corrupt`] when authentication fails.
    pub fn open(
        &self,
        counter: u64,
        domain: NonceDomain,
        ciphertext: &[u8],
        aad: &[u8],
        what: &dyn Fn() -> String,
    ) -> Result<Vec<u8>> {
        let n = nonce(counter, domain);
        self.aead
            .decrypt(
                Nonce::from_slice(&n),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| {
                Error::corrupt(format!(
                    "{} failed authentication (damaged or tampered with)",
                    what()
                ))
            })
    }
}

/// Argon2id cost parameters, stored in each key file.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 32 MiB, 3 passes: above OWASP's Argon2id minimum (19 MiB, 2 passes), and
    /// cheap enough that every command's start-up and peak memory stay small.
    fn default() -> Self {
        Self {
            memory_kib: 32 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

/// Derives the key-encryption key from a passphrase.
///
/// # Errors
/// When the parameters are outside Argon2's limits (a malformed key file).
pub fn derive_kek(password: &[u8], salt: &[u8], params: KdfParams) -> Result<[u8; 32]> {
    let p = argon2::Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|e| Error::corrupt(format!("key file has invalid argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| Error::corrupt(format!("argon2 failed: {e}")))?;
    Ok(out)
}

/// Wraps the master key under a key-encryption key: `nonce(12) || AES-256-GCM(master)`.
pub fn wrap_master(kek: &[u8; 32], master: &MasterKey) -> Vec<u8> {
    let aead = Aes256Gcm::new(kek.into());
    let n: [u8; 12] = rand::random();
    let plain = postcard::to_allocvec(master).expect("master key serializes");
    let mut out = n.to_vec();
    out.extend(
        aead.encrypt(Nonce::from_slice(&n), plain.as_slice())
            .expect("encrypt"),
    );
    out
}

/// Unwraps a master key; `None` when the passphrase (and so the KEK) is wrong.
pub fn unwrap_master(kek: &[u8; 32], wrapped: &[u8]) -> Option<MasterKey> {
    if wrapped.len() < 12 + TAG_LEN {
        return None;
    }
    let aead = Aes256Gcm::new(kek.into());
    let plain = aead
        .decrypt(Nonce::from_slice(&wrapped[..12]), &wrapped[12..])
        .ok()?;
    postcard::from_bytes(&plain).ok()
}

/// Error for a passphrase that opens no key.
pub fn wrong_password() -> Error {
    Error::new(
        ErrorKind::WrongPassword,
        "wrong password: no key in the repository opens with it",
    )
    .hint("check SALVOR_PASSWORD, --password-file or --password-command")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = MasterKey::generate();
        let salt = [7u8; SALT_LEN];
        let c = k.object_cipher(&salt);
        let ct = c.seal(3, NonceDomain::Frame, b"hello", b"aad");
        assert_eq!(
            c.open(3, NonceDomain::Frame, &ct, b"aad", &|| "x".into())
                .unwrap(),
            b"hello"
        );
        // Wrong counter, domain, aad, salt or a flipped bit are all rejected.
        assert!(
            c.open(4, NonceDomain::Frame, &ct, b"aad", &|| "x".into())
                .is_err()
        );
        assert!(
            c.open(3, NonceDomain::Document, &ct, b"aad", &|| "x".into())
                .is_err()
        );
        assert!(
            c.open(3, NonceDomain::Frame, &ct, b"aae", &|| "x".into())
                .is_err()
        );
        let other = k.object_cipher(&[8u8; SALT_LEN]);
        assert!(
            other
                .open(3, NonceDomain::Frame, &ct, b"aad", &|| "x".into())
                .is_err()
        );
        for bit in 0..ct.len() * 8 {
            let mut bad = ct.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                c.open(3, NonceDomain::Frame, &bad, b"aad", &|| "x".into())
                    .is_err()
            );
        }
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert_eq!(a.blob_id(b"x"), a.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x").0, *blake3::hash(b"x").as_bytes());
    }

    #[test]
    fn wrap_unwrap_and_wrong_password() {
        let m = MasterKey::generate();
        let params = KdfParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        let kek = derive_kek(b"pw", b"saltsaltsaltsalt", params).unwrap();
        let w = wrap_master(&kek, &m);
        let back = unwrap_master(&kek, &w).unwrap();
        assert_eq!(back.blob_id(b"q"), m.blob_id(b"q"));
        let bad = derive_kek(b"pw2", b"saltsaltsaltsalt", params).unwrap();
        assert!(unwrap_master(&bad, &w).is_none());
    }
}
