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

mod many;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
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
///
/// After `salvor key rotate` it is a keyring: `encrypt` seals what is
/// written from then on, and the encryption keys of earlier generations
/// open what they sealed. An object's generation is in its salt: a
/// rotated key has a random 8-byte id that starts the salt of every object
/// it seals, and a salt that starts with no known id belongs to the first
/// generation (whose salts are wholly random: a clash is a 2^-64 event per
/// object). The blob-id key and the chunker secret never rotate, so that
/// backups keep deduplicating against what is stored.
#[derive(Clone)]
pub struct MasterKey {
    encrypt: [u8; 32],
    /// Id of `encrypt`; all zero for the first generation.
    key_id: [u8; KEY_ID_LEN],
    /// Earlier generations, oldest first; the first has the zero id.
    older: Vec<OlderKey>,
    blob_id: [u8; 32],
    chunker_seed: u64,
}

/// Length of a rotated key's id at the start of the salts it seals.
pub const KEY_ID_LEN: usize = 8;

/// An encryption key of an earlier generation.
#[derive(Clone, Serialize, Deserialize)]
struct OlderKey {
    id: [u8; KEY_ID_LEN],
    #[serde(with = "serde_bytes")]
    encrypt: [u8; 32],
}

/// The wrapped plaintext of a key file of version 1: a key never rotated.
#[derive(Serialize, Deserialize)]
struct WrappedV1 {
    #[serde(with = "serde_bytes")]
    encrypt: [u8; 32],
    #[serde(with = "serde_bytes")]
    blob_id: [u8; 32],
    chunker_seed: u64,
}

/// The wrapped plaintext of a key file of version 2: a keyring.
#[derive(Serialize, Deserialize)]
struct WrappedV2 {
    #[serde(with = "serde_bytes")]
    encrypt: [u8; 32],
    #[serde(with = "serde_bytes")]
    blob_id: [u8; 32],
    chunker_seed: u64,
    key_id: [u8; KEY_ID_LEN],
    older: Vec<OlderKey>,
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
            key_id: [0; KEY_ID_LEN],
            older: Vec::new(),
            blob_id: rand::random(),
            chunker_seed: rand::random(),
        }
    }

    /// The next generation: a new random encryption key (with a random
    /// id) for everything sealed from now on, this one kept to open what it
    /// sealed.
    pub fn rotated(&self) -> Self {
        let mut older = self.older.clone();
        older.push(OlderKey {
            id: self.key_id,
            encrypt: self.encrypt,
        });
        let mut key_id: [u8; KEY_ID_LEN] = rand::random();
        // The zero id means the first generation; a random one is never it.
        key_id[0] |= 1;
        Self {
            encrypt: rand::random(),
            key_id,
            older,
            ..self.clone()
        }
    }

    /// How many times the key was rotated.
    pub fn generation(&self) -> usize {
        self.older.len()
    }

    /// This key without its earlier generations: what someone who held the
    /// key before the rotation lacks is the reverse; this is for tests that
    /// show a current key reads only what it sealed.
    pub fn current_only(&self) -> Self {
        Self {
            older: Vec::new(),
            ..self.clone()
        }
    }

    /// The key file version that holds this key: 1 unless rotated.
    pub fn key_file_version(&self) -> u8 {
        if self.older.is_empty() { 1 } else { 2 }
    }

    /// A random salt for a new object, starting with the key's id once it
    /// was rotated.
    pub fn new_salt(&self) -> [u8; SALT_LEN] {
        let mut salt: [u8; SALT_LEN] = rand::random();
        if self.key_id != [0; KEY_ID_LEN] {
            salt[..KEY_ID_LEN].copy_from_slice(&self.key_id);
        }
        salt
    }

    /// The encryption key of the generation that sealed the object with
    /// this salt.
    fn encrypt_key_for(&self, salt: &[u8; SALT_LEN]) -> &[u8; 32] {
        if self.older.is_empty() || salt[..KEY_ID_LEN] == self.key_id {
            return &self.encrypt;
        }
        let first = &self.older[0];
        self.older
            .iter()
            .skip(1)
            .find(|k| salt[..KEY_ID_LEN] == k.id)
            .map_or(&first.encrypt, |k| &k.encrypt)
    }

    /// The keyed BLAKE3 id of a blob's plaintext.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.blob_id, plaintext).as_bytes())
    }

    /// The keyed BLAKE3 ids of many blobs, computed side by side (see
    /// [`many`]): the same ids as [`MasterKey::blob_id`], faster for a batch
    /// of small chunks. `out` is cleared and refilled.
    pub fn blob_ids(&self, blobs: &[&[u8]], out: &mut Vec<BlobId>) {
        let mut hashes = Vec::with_capacity(blobs.len());
        many::keyed_hash_many(&self.blob_id, blobs, &mut hashes);
        out.clear();
        out.extend(hashes.into_iter().map(BlobId));
    }

    /// The secret seed for the content-defined chunker's gear table (v1).
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// What keys the chunkers of a repository of format `version`: v1 the
    /// 64-bit seed; v2 a 256-bit key derived from the blob-id key and the
    /// seed (`BLAKE3-derive_key("salvor v2 chunker", blob_id || seed LE)`),
    /// so existing key files need no new field.
    pub fn chunker_secret(&self, version: u8) -> crate::chunker::ChunkerSecret {
        if version == 1 {
            return crate::chunker::ChunkerSecret::Seed(self.chunker_seed);
        }
        let mut h = blake3::Hasher::new_derive_key("salvor v2 chunker");
        h.update(&self.blob_id)
            .update(&self.chunker_seed.to_le_bytes());
        crate::chunker::ChunkerSecret::Key(*h.finalize().as_bytes())
    }

    /// The key that authenticates what the local cache derives from the
    /// repository (the persisted index table): a cache is as writable as
    /// the user's home, and a forged table could make a backup skip data.
    pub fn cache_key(&self) -> [u8; 32] {
        blake3::derive_key("salvor v2 cache table key", &self.blob_id)
    }

    /// The cipher for the object whose salt is `salt`.
    pub fn object_cipher(&self, salt: &[u8; SALT_LEN]) -> ObjectCipher {
        let mut hasher = blake3::Hasher::new_derive_key("salvor v1 object subkey");
        hasher.update(self.encrypt_key_for(salt));
        hasher.update(salt);
        let subkey = hasher.finalize();
        ObjectCipher {
            aead: Gcm::new(subkey.as_bytes()),
        }
    }
}

/// AES-256-GCM, through ring rather than RustCrypto's `aes-gcm`: ring's
/// stitched AES-NI/VAES and carry-less-multiply code seals 8.2 GB/s on one core
/// of the benchmark machine against 1.2 GB/s, and every frame a backup writes or
/// a restore reads passes through here. ring is already linked (rustls uses it).
struct Gcm(LessSafeKey);

impl Gcm {
    fn new(key: &[u8; 32]) -> Self {
        Self(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key suits AES-256"),
        ))
    }

    /// Appends `ciphertext || tag` of `plaintext` to `out`, encrypting in place.
    fn seal_append(&self, nonce: [u8; 12], aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[start..],
            )
            .expect("AES-GCM seals any in-memory buffer (limit 64 GiB)");
        out.extend_from_slice(tag.as_ref());
    }

    /// The plaintext, or `None` when authentication fails.
    fn open(&self, nonce: [u8; 12], aad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
        let mut buf = ciphertext.to_vec();
        let len = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .ok()?
            .len();
        buf.truncate(len);
        Some(buf)
    }
}

/// AES-256-GCM under one object's subkey.
pub struct ObjectCipher {
    aead: Gcm,
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
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        self.seal_into(counter, domain, plaintext, aad, &mut out);
        out
    }

    /// Like [`ObjectCipher::seal`], appending to `out` (a pack being
    /// assembled) instead of allocating.
    pub fn seal_into(
        &self,
        counter: u64,
        domain: NonceDomain,
        plaintext: &[u8],
        aad: &[u8],
        out: &mut Vec<u8>,
    ) {
        self.aead
            .seal_append(nonce(counter, domain), aad, plaintext, out);
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
        self.aead
            .open(nonce(counter, domain), aad, ciphertext)
            .ok_or_else(|| {
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

impl KdfParams {
    /// The most a key file may demand: 4 times the default memory, 10
    /// passes, 4 lanes. Key files are not authenticated, so anyone who can
    /// write to storage could otherwise plant one that makes every command
    /// spend gigabytes and minutes in Argon2 before it even fails.
    pub const MAX: Self = Self {
        memory_kib: 128 * 1024,
        iterations: 10,
        parallelism: 4,
    };

    /// Whether these parameters are ones salvor writes and accepts.
    ///
    /// # Errors
    /// Which parameter is out of range, and the range.
    pub fn within_bounds(&self) -> std::result::Result<(), String> {
        let m = Self::MAX;
        if self.parallelism == 0 || self.parallelism > m.parallelism {
            return Err(format!(
                "argon2 parallelism {} is not 1 to {}",
                self.parallelism, m.parallelism
            ));
        }
        if self.iterations == 0 || self.iterations > m.iterations {
            return Err(format!(
                "argon2 iterations {} is not 1 to {}",
                self.iterations, m.iterations
            ));
        }
        if self.memory_kib < 8 * self.parallelism || self.memory_kib > m.memory_kib {
            return Err(format!(
                "argon2 memory {} KiB is not {} to {} KiB",
                self.memory_kib,
                8 * self.parallelism,
                m.memory_kib
            ));
        }
        Ok(())
    }

    /// What deriving a key costs, for ordering: memory times passes.
    pub fn cost(&self) -> u64 {
        u64::from(self.memory_kib) * u64::from(self.iterations)
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
    let n: [u8; 12] = rand::random();
    let m = master.clone();
    let plain = if master.key_file_version() == 1 {
        postcard::to_allocvec(&WrappedV1 {
            encrypt: m.encrypt,
            blob_id: m.blob_id,
            chunker_seed: m.chunker_seed,
        })
    } else {
        postcard::to_allocvec(&WrappedV2 {
            encrypt: m.encrypt,
            blob_id: m.blob_id,
            chunker_seed: m.chunker_seed,
            key_id: m.key_id,
            older: m.older,
        })
    }
    .expect("master key serializes");
    let mut out = n.to_vec();
    Gcm::new(kek).seal_append(n, &[], &plain, &mut out);
    out
}

/// Unwraps the master key of a key file of `version` (1 or 2); `None` when
/// the passphrase (and so the KEK) is wrong.
pub fn unwrap_master(kek: &[u8; 32], wrapped: &[u8], version: u8) -> Option<MasterKey> {
    if wrapped.len() < 12 + TAG_LEN {
        return None;
    }
    let nonce = wrapped[..12].try_into().expect("12 bytes");
    let plain = Gcm::new(kek).open(nonce, &[], &wrapped[12..])?;
    if version == 1 {
        let k: WrappedV1 = whole(&plain)?;
        return Some(MasterKey {
            encrypt: k.encrypt,
            key_id: [0; KEY_ID_LEN],
            older: Vec::new(),
            blob_id: k.blob_id,
            chunker_seed: k.chunker_seed,
        });
    }
    let k: WrappedV2 = whole(&plain)?;
    // A keyring's first generation has the zero id, and only it.
    let ids_ok = k.older.first().is_some_and(|o| o.id == [0; KEY_ID_LEN])
        && k.older.iter().skip(1).all(|o| o.id != [0; KEY_ID_LEN])
        && k.key_id != [0; KEY_ID_LEN];
    ids_ok.then_some(MasterKey {
        encrypt: k.encrypt,
        key_id: k.key_id,
        older: k.older,
        blob_id: k.blob_id,
        chunker_seed: k.chunker_seed,
    })
}

/// postcard decoding that rejects trailing bytes, so a keyring cannot be
/// read as a plain key.
fn whole<'a, T: Deserialize<'a>>(plain: &'a [u8]) -> Option<T> {
    match postcard::take_from_bytes(plain) {
        Ok((v, [])) => Some(v),
        _ => None,
    }
}

/// Error for a passphrase that opens no key.
pub fn wrong_password() -> Error {
    Error::new(
        ErrorKind::WrongPassword,
        "wrong password: no key in the repository opens with it",
    )
    .remedy(crate::Remedy::CheckPassword)
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
        let back = unwrap_master(&kek, &w, 1).unwrap();
        assert_eq!(back.blob_id(b"q"), m.blob_id(b"q"));
        let bad = derive_kek(b"pw2", b"saltsaltsaltsalt", params).unwrap();
        assert!(unwrap_master(&bad, &w, 1).is_none());
    }

    /// Ciphertexts made before the switch from RustCrypto's `aes-gcm` to
    /// ring: existing repositories must still open, byte for byte.
    #[test]
    fn ciphertexts_match_the_format() {
        let k = MasterKey {
            encrypt: [1u8; 32],
            key_id: [0; KEY_ID_LEN],
            older: Vec::new(),
            blob_id: [2u8; 32],
            chunker_seed: 3,
        };
        let c = k.object_cipher(&[7u8; SALT_LEN]);
        let ct = c.seal(3, NonceDomain::Frame, b"salvor frame", b"aad");
        let golden = "291d45ef9508603d379da236eb0d6939bd9855d1fdcee2a2a09881aa";
        assert_eq!(hex::encode(&ct), golden);
        let mut appended = b"prefix".to_vec();
        c.seal_into(
            3,
            NonceDomain::Frame,
            b"salvor frame",
            b"aad",
            &mut appended,
        );
        assert_eq!(&appended[6..], ct.as_slice());
        let mut wrapped = vec![9u8; 12];
        Gcm::new(&[5u8; 32]).seal_append([9u8; 12], &[], b"wrapped", &mut wrapped);
        assert_eq!(
            hex::encode(&wrapped[12..]),
            "a4fb44c00f8219a757eb99c25c80fbc2c6cc31d0991eed"
        );
        assert_eq!(
            Gcm::new(&[5u8; 32])
                .open([9u8; 12], &[], &wrapped[12..])
                .unwrap(),
            b"wrapped"
        );
    }

    #[test]
    fn a_rotated_key_seals_under_a_new_key_and_opens_every_generation() {
        let g0 = MasterKey::generate();
        let g1 = g0.rotated();
        let g2 = g1.rotated();
        assert_eq!((g2.generation(), g2.key_file_version()), (2, 2));
        let seal = |k: &MasterKey| {
            let salt = k.new_salt();
            (
                salt,
                k.object_cipher(&salt)
                    .seal(0, NonceDomain::Document, b"x", b""),
            )
        };
        let objects = [seal(&g0), seal(&g1), seal(&g2)];
        for (salt, ct) in &objects {
            let open = |k: &MasterKey| {
                k.object_cipher(salt)
                    .open(0, NonceDomain::Document, ct, b"", &|| "o".into())
                    .is_ok()
            };
            assert!(open(&g2), "the newest ring opens every generation");
        }
        // What g2 seals, an earlier key cannot open; ids and dedup keys stay.
        let (salt, ct) = &objects[2];
        for old in [&g0, &g1] {
            assert!(
                old.object_cipher(salt)
                    .open(0, NonceDomain::Document, ct, b"", &|| "o".into())
                    .is_err()
            );
        }
        assert_eq!(g2.blob_id(b"q"), g0.blob_id(b"q"));
        assert_eq!(g2.chunker_seed(), g0.chunker_seed());
        // The ring survives a key file.
        let params = KdfParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        let kek = derive_kek(b"pw", b"saltsaltsaltsalt", params).unwrap();
        let back = unwrap_master(&kek, &wrap_master(&kek, &g2), 2).unwrap();
        assert_eq!(back.generation(), 2);
        assert_eq!(back.new_salt()[..KEY_ID_LEN], g2.new_salt()[..KEY_ID_LEN]);
        assert!(unwrap_master(&kek, &wrap_master(&kek, &g2), 1).is_none());
    }
}
