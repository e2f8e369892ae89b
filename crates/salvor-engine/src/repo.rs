//! An open repository: backend + master key + config.
//!
//! Opening is the only place a passphrase is used. Everything else reads and
//! writes sealed documents through [`Repository::read_doc`] and
//! [`Repository::write_doc`], which name each object in their errors.

pub mod blobs;
pub mod cache;
pub mod index_files;
pub mod keys;
pub mod lock;

use std::sync::Arc;

use rayon::prelude::*;

use cache::Cache;

use crate::backend::{Backend, FileType};
use crate::cancel::Cancel;
use crate::clock::Clock;
use crate::crypto::MasterKey;
use crate::error::{Error, ErrorKind, Result};
use crate::format::config::RepoConfig;
use crate::format::index::IndexFile;
use crate::format::snapshot::Snapshot;
use crate::format::{self, ObjectKind};
use crate::id::{IndexId, SnapshotId};

pub use blobs::BlobReader;
pub use index_files::{CompactStats, IndexRecords};

/// A snapshot with its id.
pub type SnapshotEntry = (SnapshotId, Snapshot);

/// A repository opened with a valid key.
#[derive(Clone)]
pub struct Repository {
    backend: Arc<dyn Backend>,
    key: MasterKey,
    config: Arc<RepoConfig>,
    key_name: Arc<str>,
    cache: Option<Arc<Cache>>,
    clock: Arc<dyn Clock>,
    cancel: Cancel,
}

/// Options for [`Repository::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Format and chunking parameters.
    pub config: RepoConfig,
    /// Argon2id cost for the first key.
    pub kdf: crate::crypto::KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            config: RepoConfig::new_default(),
            kdf: crate::crypto::KdfParams::default(),
        }
    }
}

fn not_found(location: &str) -> Error {
    Error::new(
        ErrorKind::RepositoryNotFound,
        format!("no repository at {location}"),
    )
    .remedy(crate::Remedy::NameOrCreateRepository)
}

impl Repository {
    /// Creates a new repository and returns it opened.
    ///
    /// # Errors
    /// [`ErrorKind::RepositoryExists`] when the location already holds one;
    /// backend failures.
    pub fn init(backend: Box<dyn Backend>, password: &[u8], opts: &InitOptions) -> Result<Self> {
        let backend: Arc<dyn Backend> = Arc::from(backend);
        let exists = || {
            Error::new(
                ErrorKind::RepositoryExists,
                format!("a repository already exists at {}", backend.location()),
            )
            .hint("use it as is, or choose another location")
        };
        if backend.exists(FileType::Config, "config")? {
            return Err(exists());
        }
        if password.is_empty() {
            return Err(Error::invalid("empty password").hint("choose a non-empty password"));
        }
        backend.create()?;
        let key = MasterKey::generate();
        // The repository's clock does not exist yet: the system's stamps
        // the first key (a label only; nothing compares it).
        let clock = crate::clock::system();
        let (name, bytes) = keys::make_key_file(&key, clock.now(), password, opts.kdf)?;
        // Key first, config last: a location with a config always has a key.
        backend.write(FileType::Key, &name, &bytes)?;
        let sealed = format::seal(
            &key,
            opts.config.version,
            ObjectKind::Config,
            &serde_json::to_vec(&opts.config).expect("config json"),
        );
        // Created only if absent: of two inits racing on one location, one
        // wins (atomically where the store can), and the other removes its
        // key file and says so, instead of leaving a config that opens
        // with nobody's key.
        if !backend.create_new(FileType::Config, "config", &sealed)? {
            let ours = backend
                .read_at_most(FileType::Config, "config", FileType::Config.max_document())
                .is_ok_and(|there| there == sealed);
            if !ours {
                let _ = backend.delete(FileType::Key, &name);
                return Err(exists());
            }
        }
        Ok(Self {
            backend,
            key,
            config: Arc::new(opts.config.clone()),
            key_name: name.into(),
            cache: None,
            clock,
            cancel: Cancel::new(),
        })
    }

    /// Opens an existing repository with `password`.
    ///
    /// # Errors
    /// [`ErrorKind::RepositoryNotFound`], [`ErrorKind::WrongPassword`],
    /// corrupt config, backend failures.
    pub fn open(backend: Box<dyn Backend>, password: &[u8]) -> Result<Self> {
        let backend: Arc<dyn Backend> = Arc::from(backend);
        let config_bytes =
            match backend.read_at_most(FileType::Config, "config", FileType::Config.max_document())
            {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(not_found(backend.location()));
                }
                Err(e) => return Err(e),
            };
        let (key, key_name) = keys::find_key(backend.as_ref(), password)?;
        let plain = format::open(&key, ObjectKind::Config, &config_bytes, &|| "config".into())?;
        let config: RepoConfig = serde_json::from_slice(&plain)
            .map_err(|e| Error::corrupt(format!("config does not decode: {e}")))?;
        config.file_chunker.validate()?;
        config.stream_chunker.validate()?;
        if config.frame_target == 0 || config.pack_target == 0 {
            return Err(Error::corrupt("config has zero frame or pack size"));
        }
        if config.version > format::MAX_READ_VERSION {
            return Err(Error::invalid(format!(
                "repository format version {} is newer than this salvor reads ({})",
                config.version,
                format::MAX_READ_VERSION
            ))
            .hint("upgrade salvor"));
        }
        Ok(Self {
            backend,
            key,
            config: Arc::new(config),
            key_name: key_name.into(),
            cache: None,
            clock: crate::clock::system(),
            cancel: Cancel::new(),
        })
    }

    /// The storage backend.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The master key.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// Repository parameters.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Name of the key file this repository was opened with.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// This repository reading time from `clock` (tests move time instead
    /// of sleeping; see [`crate::clock`]).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The clock every time this repository records or compares comes from.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// This repository with operations stopping when `cancel` is raised.
    #[must_use]
    pub fn with_cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }

    /// The cancellation token operations on this handle poll.
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// This repository with a local cache of its index files and
    /// snapshots under `base` (see [`cache`]).
    ///
    /// # Errors
    /// When the cache directory cannot be created.
    pub fn with_cache(mut self, base: &std::path::Path) -> Result<Self> {
        self.cache = Some(Arc::new(Cache::open(base, &self.config.id)?));
        Ok(self)
    }

    /// Uses a local cache under `base` only for what is derived from the
    /// repository (the persisted index), not for copies of its files: the
    /// default for a local repository.
    ///
    /// # Errors
    /// When the cache directory cannot be created.
    pub fn with_derived_cache(mut self, base: &std::path::Path) -> Result<Self> {
        self.cache = Some(Arc::new(Cache::open(base, &self.config.id)?.derived_only()));
        Ok(self)
    }

    /// This repository read and written directly, bypassing any cache:
    /// `check` verifies what the repository holds, not a local copy.
    pub fn without_cache(&self) -> Self {
        Self {
            cache: None,
            ..self.clone()
        }
    }

    /// Where the index and a backup's set of queued blobs spill beyond what
    /// they keep in memory: the cache directory (on disk, by the XDG
    /// conventions) when there is one, else the system's temporary directory.
    /// Spill files are unlinked as they are made, so nothing outlives the
    /// process. A `/tmp` on tmpfs is memory: give such hosts a cache.
    pub fn spill_dir(&self) -> std::path::PathBuf {
        self.cache
            .as_ref()
            .map_or_else(std::env::temp_dir, |c| c.dir().to_path_buf())
    }

    /// The local cache, if one is used.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_deref()
    }

    /// Reads and opens a sealed document, from the cache when it holds it.
    ///
    /// # Errors
    /// Missing or corrupt object.
    pub fn read_doc(&self, ft: FileType, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        let cached = self
            .cache
            .as_ref()
            .and_then(|c| c.get(ft, name, ft.max_document()));
        let data = match cached {
            Some(d) => d,
            None => {
                let d = self.backend.read_at_most(ft, name, ft.max_document())?;
                if blake3::hash(&d).to_hex().as_str() != name {
                    return Err(Error::corrupt(format!(
                        "{} {name} does not match its name (damaged, or renamed)",
                        ft.noun()
                    )));
                }
                if let Some(c) = &self.cache {
                    c.put(ft, name, &d);
                }
                d
            }
        };
        format::open(&self.key, kind, &data, &|| format!("{} {name}", ft.noun()))
    }

    /// Seals and writes a document under the hash of its sealed bytes.
    ///
    /// # Errors
    /// Backend failures.
    pub fn write_doc(&self, ft: FileType, kind: ObjectKind, body: &[u8]) -> Result<[u8; 32]> {
        let sealed = format::seal(&self.key, self.config.version, kind, body);
        let id = *blake3::hash(&sealed).as_bytes();
        let name = hex::encode(id);
        self.backend.write(ft, &name, &sealed)?;
        if let Some(c) = &self.cache {
            c.put(ft, &name, &sealed);
        }
        Ok(id)
    }

    /// Deletes a document from the repository and the cache.
    ///
    /// # Errors
    /// Backend failures.
    pub fn delete_doc(&self, ft: FileType, name: &str) -> Result<()> {
        self.backend.delete(ft, name)?;
        if let Some(c) = &self.cache {
            c.remove(ft, name);
        }
        Ok(())
    }

    /// Writes an index file.
    ///
    /// # Errors
    /// Backend failures.
    pub fn write_index(&self, file: &IndexFile) -> Result<IndexId> {
        let body = format::index::encode(file, self.config.version);
        self.write_doc(FileType::Index, ObjectKind::Index, &body)
            .map(IndexId)
    }

    /// Reads one index file.
    ///
    /// # Errors
    /// Missing or corrupt.
    pub fn read_index_file(&self, name: &str) -> Result<IndexFile> {
        let plain = self.read_doc(FileType::Index, ObjectKind::Index, name)?;
        format::index::decode(&plain, self.config.version, &|| {
            format!("index file {name}")
        })
    }

    /// Writes a snapshot document. Call only after its data and index are durable.
    ///
    /// # Errors
    /// Backend failures.
    pub fn write_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let body = serde_json::to_vec(snap).expect("snapshot json");
        self.write_doc(FileType::Snapshot, ObjectKind::Snapshot, &body)
            .map(SnapshotId)
    }

    /// Reads one snapshot.
    ///
    /// # Errors
    /// Missing or corrupt.
    pub fn read_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let name = id.to_hex();
        let plain = self.read_doc(FileType::Snapshot, ObjectKind::Snapshot, &name)?;
        serde_json::from_slice(&plain)
            .map_err(|e| Error::corrupt(format!("snapshot {name} does not decode: {e}")))
    }

    /// Every snapshot, oldest first.
    ///
    /// # Errors
    /// Any unreadable snapshot, named.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let (ok, mut damaged) = self.snapshots_lenient()?;
        match damaged.pop() {
            Some(e) => Err(e),
            None => Ok(ok),
        }
    }

    /// Every readable snapshot (oldest first) and the errors of unreadable ones.
    ///
    /// # Errors
    /// Only when the snapshot list itself cannot be read.
    pub fn snapshots_lenient(&self) -> Result<(Vec<SnapshotEntry>, Vec<Error>)> {
        let names = self.backend.list(FileType::Snapshot)?;
        if let Some(c) = &self.cache {
            c.retain(
                FileType::Snapshot,
                &names.iter().map(|o| o.name.as_str()).collect(),
            );
        }
        let results: Vec<Result<(SnapshotId, Snapshot)>> = names
            .par_iter()
            .map(|o| {
                let id = SnapshotId::from_hex(&o.name)?;
                Ok((id, self.read_snapshot(&id)?))
            })
            .collect();
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        for r in results {
            match r {
                Ok(s) => ok.push(s),
                Err(e) => bad.push(e),
            }
        }
        ok.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((ok, bad))
    }

    /// The newest snapshot that `matches`, or `None` when none does.
    ///
    /// A snapshot that cannot be read might be the newest one: choosing an
    /// older one instead would silently restore stale data, so any damaged
    /// snapshot makes this an error that names it.
    ///
    /// # Errors
    /// A damaged snapshot; backend failures.
    pub fn latest(&self, matches: impl Fn(&Snapshot) -> bool) -> Result<Option<SnapshotEntry>> {
        let (ok, damaged) = self.snapshots_lenient()?;
        if let Some(first) = damaged.into_iter().next() {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "cannot tell which snapshot is the latest: {}",
                    first.without_hint()
                ),
            )
            .remedy(crate::Remedy::NameReadableSnapshot));
        }
        Ok(ok.into_iter().rev().find(|(_, s)| matches(s)))
    }

    /// Resolves `latest`, a full id or a unique prefix.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] or an ambiguous prefix.
    pub fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        if spec == "latest" {
            return self.latest(|_| true)?.ok_or_else(|| {
                Error::new(ErrorKind::NotFound, "the repository has no snapshots")
                    .remedy(crate::Remedy::BackupFirst)
            });
        }
        let names = self.backend.list(FileType::Snapshot)?;
        let matches: Vec<&String> = names
            .iter()
            .map(|o| &o.name)
            .filter(|n| n.starts_with(spec))
            .collect();
        match matches.as_slice() {
            [one] if !spec.is_empty() => {
                let id = SnapshotId::from_hex(one)?;
                Ok((id, self.read_snapshot(&id)?))
            }
            [] | [_] => Err(Error::new(
                ErrorKind::NotFound,
                format!("no snapshot matches {spec:?}"),
            )
            .remedy(crate::Remedy::ListSnapshots)),
            _ => Err(Error::invalid(format!(
                "snapshot prefix {spec:?} is ambiguous ({} matches)",
                matches.len()
            ))
            .hint("give more characters of the id")),
        }
    }
}
