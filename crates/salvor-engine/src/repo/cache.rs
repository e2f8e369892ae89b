//! A local cache of a remote repository's index files, snapshots and the
//! frames of its tree packs.
//!
//! Index files and snapshots are immutable and named by the BLAKE3 hash of
//! their bytes, so a cached copy is verified exactly as a downloaded one
//! (the hash against the name, then the seal), and a copy that fails the
//! hash is removed and fetched again. Frames of tree packs (trees and
//! content lists, what a re-backup reads of its parent and `ls` of a
//! snapshot) are kept as the ciphertext read from the pack, so they are
//! authenticated by the same AEAD check as a ranged read, and one that fails
//! it is removed and read again. Against S3 this is what keeps an unchanged re-backup to a
//! handful of requests: without it every command downloads every index
//! file. Layout: `<base>/<repository id>/{index,snapshots}/<name>` and
//! `frames/<pack id>.<frame number>`, with a
//! `CACHEDIR.TAG` at the base (the convention backup tools, borg and restic
//! among them, follow to skip caches). Many processes may share it: files
//! appear by rename from a unique temporary name, so a reader sees a whole
//! file or none, and two writers of one name write the same bytes.
//!
//! The cache is an optimisation only: any failure to read or write it is
//! logged and the repository is used directly.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::backend::FileType;
use crate::error::{Error, Result};
use crate::id::PackId;

/// The cache of one repository.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    /// Whether copies of index files and snapshots are kept: not for a
    /// local repository, whose own files are one read away; the index
    /// table ([`Cache::table_path`]) is kept either way.
    documents: bool,
}

/// The directory of cached frames.
const FRAMES: &str = "frames";

/// Largest cached frame read back (frames are a few MiB at most).
const MAX_FRAME: u64 = 64 << 20;

const TAG: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by salvor.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

/// The default base directory: `$XDG_CACHE_HOME/salvor`, else
/// `~/.cache/salvor`; `None` when neither is known.
pub fn default_base() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty());
    xdg.map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .map(|d| d.join("salvor"))
}

impl Cache {
    /// Opens (creating it, private to the user) the cache of repository
    /// `repo_id` under `base`.
    ///
    /// # Errors
    /// When the directories cannot be created.
    pub fn open(base: &Path, repo_id: &str) -> Result<Self> {
        if repo_id.is_empty() || !repo_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::corrupt(format!(
                "repository id {repo_id:?} is not hex"
            )));
        }
        let dir = base.join(repo_id);
        for sub in [FileType::Index.dir(), FileType::Snapshot.dir(), FRAMES] {
            create_private(&dir.join(sub))?;
        }
        let tag = base.join("CACHEDIR.TAG");
        if !tag.exists() {
            // Best effort: a missing tag only means other tools back it up.
            let _ = std::fs::write(&tag, TAG);
        }
        Ok(Self {
            dir,
            documents: true,
        })
    }

    /// This cache keeping only what is derived from the repository (the
    /// index table), not copies of its files.
    pub fn derived_only(mut self) -> Self {
        self.documents = false;
        self
    }

    /// Where the persisted index lives ([`crate::index::Index::persist`]).
    pub fn table_path(&self) -> PathBuf {
        self.dir.join("index.table")
    }

    /// A new unique temporary name beside the table, which stale
    /// temporaries of killed processes are cleaned from.
    pub fn table_tmp_path(&self) -> PathBuf {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if is_stale_tmp(&e) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        self.dir.join(format!(
            ".tmp-table-{}",
            hex::encode(rand::random::<[u8; 8]>())
        ))
    }

    /// The directory of this repository's cache.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, ft: FileType, name: &str) -> Option<PathBuf> {
        let cached = self.documents && matches!(ft, FileType::Index | FileType::Snapshot);
        let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit());
        (cached && plain).then(|| self.dir.join(ft.dir()).join(name))
    }

    /// A cached object whose bytes hash to its name, or `None`; a copy that
    /// does not is removed.
    pub fn get(&self, ft: FileType, name: &str, max: u64) -> Option<Vec<u8>> {
        let path = self.path(ft, name)?;
        let data = match read_at_most(&path, max) {
            Ok(d) => d?,
            Err(e) => {
                tracing::debug!("cache read {}: {e}", path.display());
                return None;
            }
        };
        if blake3::hash(&data).to_hex().as_str() == name {
            Some(data)
        } else {
            tracing::warn!(
                "cached {} {name} is damaged; it is removed and read from the repository",
                ft.noun()
            );
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    /// Stores a copy of an object just read from or written to the repository.
    pub fn put(&self, ft: FileType, name: &str, data: &[u8]) {
        let Some(path) = self.path(ft, name) else {
            return;
        };
        if path.exists() {
            return;
        }
        if let Err(e) = write_new(&path, data) {
            tracing::debug!("cache write {}: {e}", path.display());
        }
    }

    /// Removes a cached copy (the object was deleted from the repository).
    pub fn remove(&self, ft: FileType, name: &str) {
        if let Some(path) = self.path(ft, name) {
            let _ = std::fs::remove_file(path);
        }
    }

    fn frame_path(&self, pack: &PackId, nonce: u32) -> Option<PathBuf> {
        self.documents.then(|| {
            self.dir
                .join(FRAMES)
                .join(format!("{}.{nonce}", pack.to_hex()))
        })
    }

    /// The cached ciphertext of frame `nonce` of `pack`, unverified: the
    /// caller authenticates it and calls [`Cache::remove_frame`] if it fails.
    pub fn frame(&self, pack: &PackId, nonce: u32) -> Option<Vec<u8>> {
        let path = self.frame_path(pack, nonce)?;
        match read_at_most(&path, MAX_FRAME) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!("cache read {}: {e}", path.display());
                None
            }
        }
    }

    /// Keeps the ciphertext of a frame just read from a tree pack.
    pub fn put_frame(&self, pack: &PackId, nonce: u32, ct: &[u8]) {
        let Some(path) = self.frame_path(pack, nonce) else {
            return;
        };
        if let Err(e) = write_new(&path, ct) {
            tracing::debug!("cache write {}: {e}", path.display());
        }
    }

    /// Removes a cached frame that failed authentication.
    pub fn remove_frame(&self, pack: &PackId, nonce: u32) {
        tracing::warn!(
            "cached frame {nonce} of pack {pack} is damaged; it is removed and read from the repository"
        );
        if let Some(path) = self.frame_path(pack, nonce) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Removes cached frames of packs `indexed` says are gone (deleted from
    /// the repository since), and temporaries left by killed processes.
    pub fn retain_frames(&self, indexed: &dyn Fn(&PackId) -> bool) {
        if !self.documents {
            return;
        }
        let Ok(entries) = std::fs::read_dir(self.dir.join(FRAMES)) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let gone = match name.split_once('.') {
                Some((pack, _)) if !name.starts_with(".tmp-") => {
                    PackId::from_hex(pack).map_or(true, |id| !indexed(&id))
                }
                _ => is_stale_tmp(&e),
            };
            if gone {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Removes every cached object of `ft` not in `listed` (deleted from the
    /// repository since), and temporaries left by killed processes.
    pub fn retain(&self, ft: FileType, listed: &HashSet<&str>) {
        if !self.documents {
            return;
        }
        let Ok(entries) = std::fs::read_dir(self.dir.join(ft.dir())) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if is_stale_tmp(&e) || (!name.starts_with(".tmp-") && !listed.contains(name.as_ref())) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// A temporary file (`.tmp-*`) untouched for an hour: left by a killed
/// process, since writers rename theirs within seconds.
fn is_stale_tmp(e: &std::fs::DirEntry) -> bool {
    e.file_name().to_string_lossy().starts_with(".tmp-")
        && e.metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|a| a.as_secs() > 3600))
}

fn create_private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            Error::io("cannot create the cache directory", dir, e)
                .remedy(crate::Remedy::ChooseCache)
        })
}

/// `Ok(None)` when the file is absent or larger than `max`.
fn read_at_most(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut data = Vec::new();
    f.take(max + 1).read_to_end(&mut data)?;
    Ok((data.len() as u64 <= max).then_some(data))
}

/// Writes to a unique temporary name and renames into place. No fsync: a
/// copy lost in a crash is fetched again, and a torn one fails its hash.
fn write_new(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().expect("cache paths have a parent");
    let tmp = dir.join(format!(".tmp-{}", hex::encode(rand::random::<[u8; 8]>())));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let done = f.write_all(data).and_then(|()| std::fs::rename(&tmp, path));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_by_name_removes_damage_and_forgets_deleted_objects() {
        let base = tempfile::tempdir().unwrap();
        let c = Cache::open(base.path(), "abcd").unwrap();
        let data = b"sealed bytes".to_vec();
        let name = blake3::hash(&data).to_hex().to_string();
        assert!(c.get(FileType::Index, &name, 1 << 20).is_none());
        c.put(FileType::Index, &name, &data);
        assert_eq!(c.get(FileType::Index, &name, 1 << 20).unwrap(), data);
        assert!(c.get(FileType::Index, &name, 4).is_none(), "over the cap");
        // Packs, keys and odd names are never cached.
        c.put(FileType::Pack, &name, &data);
        assert!(c.get(FileType::Pack, &name, 1 << 20).is_none());
        c.put(FileType::Index, "../x", &data);
        assert!(!base.path().join("abcd/x").exists());
        // A damaged copy is dropped.
        let path = c.dir().join("index").join(&name);
        std::fs::write(&path, b"other bytes").unwrap();
        assert!(c.get(FileType::Index, &name, 1 << 20).is_none());
        assert!(!path.exists());
        // retain drops what the repository no longer lists.
        c.put(FileType::Index, &name, &data);
        c.retain(FileType::Index, &HashSet::new());
        assert!(!path.exists());
        assert!(base.path().join("CACHEDIR.TAG").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(c.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(Cache::open(base.path(), "../etc").is_err());
    }

    #[test]
    fn frames_of_packs_no_longer_indexed_are_removed() {
        let base = tempfile::tempdir().unwrap();
        let c = Cache::open(base.path(), "abcd").unwrap();
        let (kept, gone) = (PackId([1; 32]), PackId([2; 32]));
        c.put_frame(&kept, 0, b"ct");
        c.put_frame(&gone, 3, b"ct");
        assert_eq!(c.frame(&gone, 3).as_deref(), Some(&b"ct"[..]));
        c.retain_frames(&|id| *id == kept);
        assert_eq!(c.frame(&kept, 0).as_deref(), Some(&b"ct"[..]));
        assert_eq!(c.frame(&gone, 3), None);
        c.remove_frame(&kept, 0);
        assert_eq!(c.frame(&kept, 0), None);
        // A derived-only cache keeps no frames.
        let d = Cache::open(base.path(), "abcd").unwrap().derived_only();
        d.put_frame(&kept, 1, b"ct");
        assert_eq!(d.frame(&kept, 1), None);
    }
}
