//! Key files: several passphrases can open one repository.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::Repository;
use crate::backend::{Backend, FileType, ObjectInfo};
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

/// Builds a key file wrapping `master` under `password`, stamped `created`;
/// returns (name, bytes).
///
/// # Errors
/// Invalid KDF parameters.
pub fn make_key_file(
    master: &MasterKey,
    created: jiff::Timestamp,
    password: &[u8],
    kdf: KdfParams,
) -> Result<(String, Vec<u8>)> {
    kdf.within_bounds().map_err(Error::invalid)?;
    let salt: [u8; 16] = rand::random();
    let kek = crypto::derive_kek(password, &salt, kdf)?;
    let file = KeyFile {
        version: master.key_file_version(),
        created: created.to_string(),
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

/// Reads and validates one key file: its name is the hash of its bytes,
/// it decodes, and its parameters are within [`KdfParams::within_bounds`].
/// Key files are not authenticated, so nothing in one is trusted before this.
///
/// # Errors
/// [`ErrorKind::Corrupt`] naming the key file and what is wrong with it.
pub fn read_key_file(backend: &dyn Backend, name: &str) -> Result<KeyFile> {
    let bytes = backend.read_at_most(FileType::Key, name, FileType::Key.max_document())?;
    parse_key_file(name, &bytes)
}

/// [`read_key_file`] on bytes already read.
///
/// # Errors
/// As [`read_key_file`].
pub fn parse_key_file(name: &str, bytes: &[u8]) -> Result<KeyFile> {
    let damaged = |why: String| Error::corrupt(format!("key file {name} is damaged: {why}"));
    if blake3::hash(bytes).to_hex().as_str() != name {
        return Err(damaged("it does not match its name".into()));
    }
    let file: KeyFile =
        serde_json::from_slice(bytes).map_err(|e| damaged(format!("it does not decode: {e}")))?;
    if !(1..=2).contains(&file.version) || file.kdf != "argon2id" {
        return Err(damaged(format!(
            "unsupported version {} or kdf {:?}",
            file.version, file.kdf
        )));
    }
    if let Err(why) = file.kdf_params.within_bounds() {
        return Err(damaged(why));
    }
    Ok(file)
}

fn try_key(name: &str, file: &KeyFile, password: &[u8]) -> Result<Option<MasterKey>> {
    let damaged = |why: &str| Error::corrupt(format!("key file {name} is damaged: {why}"));
    let salt = B64
        .decode(&file.salt)
        .map_err(|_| damaged("its salt is not base64"))?;
    let wrapped = B64
        .decode(&file.wrapped)
        .map_err(|_| damaged("its wrapped key is not base64"))?;
    let kek = crypto::derive_kek(password, &salt, file.kdf_params)
        .map_err(|e| damaged(&e.to_string()))?;
    Ok(crypto::unwrap_master(&kek, &wrapped, file.version))
}

/// Where the name of the key that opened a repository last is kept, so the
/// next run tries it first: one Argon2 derivation however many key files
/// someone has planted. The name is public (it is a file name in storage).
fn hint_path(location: &str) -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))?;
    let id = blake3::hash(location.as_bytes()).to_hex();
    Some(base.join("salvor").join("key-hints").join(&id[..32]))
}

fn remember_key(location: &str, name: &str) {
    if let Some(p) = hint_path(location) {
        // Best effort: a cache that cannot be written only costs time.
        let _ = std::fs::create_dir_all(p.parent().expect("has a parent"))
            .and_then(|()| std::fs::write(&p, name));
    }
}

/// Finds the key `password` opens; returns the master key and the key's name.
///
/// Keys are tried one at a time: first the one that opened this location
/// last, then the rest cheapest first (Argon2 memory times passes), so a key
/// file planted with a high cost is tried last, if ever.
///
/// # Errors
/// [`ErrorKind::WrongPassword`] when no key opens and none is damaged;
/// [`ErrorKind::Corrupt`] naming the damaged key files when no key opens and
/// some cannot be read (the password may be right for one of them).
pub fn find_key(backend: &dyn Backend, password: &[u8]) -> Result<(MasterKey, String)> {
    let names = backend.list(FileType::Key)?;
    if names.is_empty() {
        return Err(Error::corrupt(format!(
            "the repository at {} has no key files",
            backend.location()
        )));
    }
    let hint = hint_path(backend.location()).and_then(|p| std::fs::read_to_string(p).ok());
    let mut damaged: Vec<Error> = Vec::new();
    let mut files = Vec::new();
    for ObjectInfo { name, .. } in &names {
        match read_key_file(backend, name) {
            Ok(f) => files.push((name.clone(), f)),
            // Removed since the listing (`key passwd` elsewhere): gone.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) if e.kind() == ErrorKind::Corrupt => damaged.push(e),
            Err(e) => return Err(e),
        }
    }
    files.sort_by_key(|(name, f)| (Some(name) != hint.as_ref(), f.kdf_params.cost()));
    for (name, f) in &files {
        match try_key(name, f, password) {
            Ok(Some(k)) => {
                if Some(name) != hint.as_ref() {
                    remember_key(backend.location(), name);
                }
                return Ok((k, name.clone()));
            }
            Ok(None) => {}
            Err(e) => damaged.push(e),
        }
    }
    if damaged.is_empty() {
        return Err(crypto::wrong_password());
    }
    let list: Vec<String> = damaged.iter().map(|e| e.clone_message()).collect();
    Err(Error::corrupt(format!(
        "no key opens with this password ({} readable key files tried); {}",
        files.len(),
        list.join("; ")
    ))
    .remedy(crate::Remedy::ReplaceDamagedKey))
}

/// Every key file's problems (damage, bad name, parameters out of range).
///
/// # Errors
/// Backend failures.
pub fn verify_key_files(backend: &dyn Backend) -> Result<Vec<(String, Error)>> {
    let mut out = Vec::new();
    for ObjectInfo { name, .. } in backend.list(FileType::Key)? {
        match read_key_file(backend, &name) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Corrupt => out.push((name, e)),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

impl Repository {
    /// Every key file.
    ///
    /// # Errors
    /// Unreadable or corrupt key files.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for ObjectInfo { name, .. } in self.backend().list(FileType::Key)? {
            let f = read_key_file(self.backend(), &name)?;
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
        let (name, bytes) = make_key_file(self.key(), self.clock().now(), password, kdf)?;
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
                        .remedy(crate::Remedy::ListKeys),
                );
            }
            _ => {
                return Err(Error::invalid(format!(
                    "key prefix {prefix:?} is ambiguous"
                )));
            }
        };
        if k.current {
            return Err(
                Error::invalid("refusing to remove the key in use").remedy(crate::Remedy::KeyInUse)
            );
        }
        self.backend().delete(FileType::Key, &k.id)?;
        Ok(k.id.clone())
    }

    /// Rotates the master key (see [`MasterKey::rotated`]): writes a key
    /// file for `password` holding the new keyring, then removes every
    /// other key file, since each holds only the old key and would let its
    /// holder keep sealing with it. Other passwords are added again with
    /// [`Repository::add_key`] once the rotation is done. Backups already
    /// running finish with the key they opened with; what they write stays
    /// readable. Returns the new key file's name and the removed ones.
    ///
    /// # Errors
    /// A v1 repository (salvor 0.1 must keep reading it); backend failures,
    /// after which the old key files that remain still open the repository.
    pub fn rotate_key(&self, password: &[u8], kdf: KdfParams) -> Result<(String, Vec<String>)> {
        if self.config().version < 2 {
            return Err(Error::invalid(
                "key rotation needs a format v2 repository; this one is v1",
            )
            .remedy(crate::Remedy::CopyToNewRepository));
        }
        if password.is_empty() {
            return Err(Error::invalid("empty password").hint("choose a non-empty password"));
        }
        let _lock = self.lock(false, "key rotate")?;
        let rotated = self.key().rotated();
        let (name, bytes) = make_key_file(&rotated, self.clock().now(), password, kdf)?;
        self.backend().write(FileType::Key, &name, &bytes)?;
        let mut removed = Vec::new();
        for ObjectInfo { name: other, .. } in self.backend().list(FileType::Key)? {
            if other != name {
                self.backend().delete(FileType::Key, &other)?;
                removed.push(other);
            }
        }
        Ok((name, removed))
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
