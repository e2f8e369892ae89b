//! Key files: several passphrases can open one repository.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rayon::prelude::*;

use super::Repository;
use crate::backend::{Backend, FileType};
use crate::crypto::{self, KdfParams, MasterKey};
use crate::error::{Error, ErrorKind, Result};
use crate::format::key::KeyFile;

/// A key as listed by `salvor key list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// Key file name.
    pub id: String,
    /// The key this session opened the repository with.
    pub current: bool,
    /// When added.
    pub created: String,
    /// Host that added it.
    pub hostname: String,
    /// User that added it.
    pub username: String,
}

/// The local host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The local user name.
pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Builds a key file wrapping `master` under `password`; returns (name, bytes).
///
/// # Errors
/// Invalid KDF parameters.
pub fn make_key_file(
    master: &MasterKey,
    password: &[u8],
    kdf: KdfParams,
) -> Result<(String, Vec<u8>)> {
    let salt: [u8; 16] = rand::random();
    let kek = crypto::derive_kek(password, &salt, kdf)?;
    let file = KeyFile {
        version: 1,
        created: jiff::Timestamp::now().to_string(),
        hostname: hostname(),
        username: username(),
        kdf: "argon2id".into(),
        kdf_params: kdf,
        salt: B64.encode(salt),
        wrapped: B64.encode(crypto::wrap_master(&kek, master)),
    };
    let bytes = serde_json::to_vec_pretty(&file).expect("key json");
    Ok((blake3::hash(&bytes).to_hex().to_string(), bytes))
}

fn parse(name: &str, bytes: &[u8]) -> Result<KeyFile> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::corrupt(format!("key {name} does not decode: {e}")))
}

fn try_key(file: &KeyFile, password: &[u8]) -> Result<Option<MasterKey>> {
    if file.version != 1 || file.kdf != "argon2id" {
        return Err(Error::corrupt(format!(
            "unsupported key file (version {}, kdf {:?})",
            file.version, file.kdf
        )));
    }
    // Key files are not authenticated: bound the cost a forged one can demand.
    let p = file.kdf_params;
    if p.memory_kib > 4 * 1024 * 1024 || p.iterations > 64 || p.parallelism > 16 {
        return Err(Error::corrupt(format!(
            "key file demands excessive argon2 cost {p:?}"
        )));
    }
    let salt = B64
        .decode(&file.salt)
        .map_err(|_| Error::corrupt("key salt is not base64"))?;
    let wrapped = B64
        .decode(&file.wrapped)
        .map_err(|_| Error::corrupt("wrapped key is not base64"))?;
    let kek = crypto::derive_kek(password, &salt, file.kdf_params)?;
    Ok(crypto::unwrap_master(&kek, &wrapped))
}

/// Finds the key `password` opens; returns the master key and the key's name.
///
/// # Errors
/// [`ErrorKind::WrongPassword`] when none opens.
pub fn find_key(backend: &dyn Backend, password: &[u8]) -> Result<(MasterKey, String)> {
    let names = backend.list(FileType::Key)?;
    if names.is_empty() {
        return Err(Error::corrupt(format!(
            "the repository at {} has no key files",
            backend.location()
        )));
    }
    // Argon2 dominates: try keys in parallel.
    let found = names
        .par_iter()
        .map(|(name, _)| {
            let bytes = backend.read(FileType::Key, name)?;
            Ok(try_key(&parse(name, &bytes)?, password)?.map(|k| (k, name.clone())))
        })
        .collect::<Vec<Result<Option<(MasterKey, String)>>>>();
    let mut first_err = None;
    for r in found {
        match r {
            Ok(Some(k)) => return Ok(k),
            Ok(None) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err
        .filter(|e| e.kind() != ErrorKind::Corrupt)
        .unwrap_or_else(crypto::wrong_password))
}

impl Repository {
    /// Every key file.
    ///
    /// # Errors
    /// Unreadable or corrupt key files.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for (name, _) in self.backend().list(FileType::Key)? {
            let f = parse(&name, &self.backend().read(FileType::Key, &name)?)?;
            out.push(KeyInfo {
                current: name == self.key_name(),
                id: name,
                created: f.created,
                hostname: f.hostname,
                username: f.username,
            });
        }
        out.sort_by(|a, b| a.created.cmp(&b.created));
        Ok(out)
    }

    /// Adds a key for `password`; returns its name.
    ///
    /// # Errors
    /// Empty password, backend failures.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<String> {
        if password.is_empty() {
            return Err(Error::invalid("empty password").hint("choose a non-empty password"));
        }
        let (name, bytes) = make_key_file(self.key(), password, kdf)?;
        self.backend().write(FileType::Key, &name, &bytes)?;
        Ok(name)
    }

    /// Removes the key whose name starts with `prefix`.
    ///
    /// # Errors
    /// No or several matches, the current key, the last key.
    pub fn remove_key(&self, prefix: &str) -> Result<String> {
        let keys = self.list_keys()?;
        let m: Vec<&KeyInfo> = keys
            .iter()
            .filter(|k| k.id.starts_with(prefix) && !prefix.is_empty())
            .collect();
        let k = match m.as_slice() {
            [k] => *k,
            [] => {
                return Err(
                    Error::new(ErrorKind::NotFound, format!("no key matches {prefix:?}"))
                        .hint("list keys with `salvor key list`"),
                );
            }
            _ => {
                return Err(Error::invalid(format!(
                    "key prefix {prefix:?} is ambiguous"
                )));
            }
        };
        if k.current {
            return Err(Error::invalid("refusing to remove the key in use")
                .hint("open the repository with another key to remove this one, or use `salvor key passwd`"));
        }
        self.backend().delete(FileType::Key, &k.id)?;
        Ok(k.id.clone())
    }

    /// Replaces the current key by one for `new_password`; returns the new name.
    ///
    /// # Errors
    /// Backend failures; the old key stays when adding the new one fails.
    pub fn change_password(&self, new_password: &[u8], kdf: KdfParams) -> Result<String> {
        let name = self.add_key(new_password, kdf)?;
        self.backend().delete(FileType::Key, self.key_name())?;
        Ok(name)
    }
}
