//! The backup data path.
//!
//! ```text
//! walker ──jobs──▶ readers (N threads): read → chunk → hash → dedup ──▶ Packer
//!    │                                                                  (compress ∥ on rayon,
//!    └──events (in walk order)──▶ tree builder ──trees──▶ Packer         encrypt, pack) ──▶ Uploader
//! ```
//!
//! The walker emits one event per entry, in depth-first order, and queues a
//! read job for each changed file *before* emitting its event; the builder
//! waits for each file's result in order and assembles trees bottom-up. Every
//! queue is bounded, so memory stays flat whatever the input size. Files whose
//! size, mtime, ctime and inode match the parent snapshot are not read again.
//! Write order (packs, index, then snapshot) is the [`crate::pack`] contract.

mod builder;
mod exclude;
mod reader;
mod walker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::chunker::Chunker;
use crate::content::{Content, ListBuilder};
use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::format::snapshot::{BackupSummary, Manifest, Snapshot};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::{BlobId, SnapshotId};
use crate::index::Index;
use crate::pack::{Packer, Uploader};
use crate::repo::lock::LockGuard;
use crate::repo::{BlobReader, Repository};
use crate::spill::SpillSet;

pub use exclude::ExcludeSet;

/// Live counters for progress display.
#[derive(Debug, Default)]
pub struct BackupProgress {
    /// Files processed (read or reused).
    pub files: AtomicU64,
    /// Bytes processed (read or reused).
    pub bytes: AtomicU64,
    /// Total bytes expected, when a scan has measured it (0 = unknown).
    pub total_bytes: AtomicU64,
}

/// What to back up and how to label it.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Files and directories (made absolute).
    pub paths: Vec<PathBuf>,
    /// Glob patterns to skip; a pattern without `/` matches a name anywhere.
    pub excludes: Vec<String>,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Host name to record (default: this host).
    pub host: Option<String>,
    /// Parent snapshot: `None` picks the latest with the same host and paths.
    pub parent: Option<SnapshotId>,
    /// Read every file even if unchanged.
    pub force: bool,
    /// Job name to record.
    pub job: Option<String>,
    /// Reader threads (0 = automatic).
    pub read_threads: usize,
    /// A source manifest to record under this name; the backup adds the
    /// counts it saw (`files`, `dirs`, `bytes`) to the given JSON object.
    pub manifest: Option<(String, Manifest)>,
}

/// Options for a stream backup (stdin, dumps).
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// File name of the stream inside the snapshot.
    pub name: String,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// Host name to record.
    pub host: Option<String>,
    /// Job name to record.
    pub job: Option<String>,
}

/// Shared state of one backup run.
pub(crate) struct Session {
    pub repo: Repository,
    pub index: Arc<Index>,
    /// Blobs this run queued for storage (in memory up to a batch, then
    /// spilled: [`crate::spill`]).
    pub in_flight: Mutex<SpillSet>,
    pub data: Arc<Packer>,
    pub trees: Arc<Packer>,
    pub progress: Arc<BackupProgress>,
    pub bytes_read: AtomicU64,
    pub warnings: Mutex<Vec<String>>,
    /// Set when storage failed: stop reading, the commit reports the error.
    pub failed: Arc<std::sync::atomic::AtomicBool>,
    /// The run's shared lock, held until the session ends.
    pub lock: LockGuard,
}

impl Session {
    /// Stores `data` as a blob of `kind` unless already present; returns its id.
    pub fn store(&self, kind: BlobKind, data: &[u8]) -> BlobId {
        let id = self.repo.key().blob_id(data);
        self.store_as(kind, id, data);
        id
    }

    /// Stores a list blob ([`crate::content`]): kind Data, packed with the
    /// trees, since it is metadata a reader needs before any data (and
    /// counted with them in the summary).
    pub fn store_list(&self, data: &[u8]) -> BlobId {
        let id = self.repo.key().blob_id(data);
        if !self.index.reusable(&id) && self.in_flight.lock().unwrap().insert(id) {
            self.trees.add(BlobKind::Data, id, data);
        }
        id
    }

    /// Stores `data`, whose id the caller computed, unless already present.
    fn store_as(&self, kind: BlobKind, id: BlobId, data: &[u8]) {
        if !self.index.reusable(&id) && self.in_flight.lock().unwrap().insert(id) {
            let p = if kind == BlobKind::Tree {
                &self.trees
            } else {
                &self.data
            };
            p.add(kind, id, data);
        }
    }

    /// True once the run must stop: storage failed (full disk, lost
    /// credentials, ...), the caller cancelled, or the lock was lost.
    pub fn aborted(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
            || self.repo.cancel().is_cancelled()
            || self.lock.check().is_err()
    }

    /// Why the run stopped, when the cause is not storage (whose error the
    /// packers report): cancellation, or a lost lock.
    pub fn stop_error(&self) -> Option<Error> {
        if self.repo.cancel().is_cancelled() {
            return Some(Error::interrupted("no snapshot was recorded"));
        }
        self.lock.check().err()
    }

    pub fn warn(&self, w: String) {
        tracing::warn!("{w}");
        self.warnings.lock().unwrap().push(w);
    }

    /// Chunks and stores a whole reader; returns its content list, its
    /// length, and the buffer for the next one. The list is built as the
    /// chunks come ([`crate::content`]): flat in a v1 repository.
    pub fn store_stream(
        &self,
        reader: impl std::io::Read,
        chunker: &Chunker,
        buf: Vec<u8>,
    ) -> std::io::Result<(Content, u64, Vec<u8>)> {
        /// Chunks hashed side by side: enough to fill BLAKE3's SIMD lanes.
        const BATCH: usize = 64;
        let mut cr = crate::chunker::ChunkReader::new(reader, chunker, buf);
        let mut list = ListBuilder::new(self.repo.config().version == 1);
        let mut store_list = |d: &[u8]| self.store_list(d);
        let mut size = 0u64;
        let (mut lens, mut batch) = (Vec::new(), Vec::new());
        while let Some(run) = cr.next_chunks(BATCH, &mut lens)? {
            if self.aborted() {
                // A cancelled run or a lost lock is named by the caller
                // (`stop_error`); a storage failure here.
                return Err(std::io::Error::other(
                    if self.failed.load(Ordering::Relaxed) {
                        "stopped: writing to the repository failed"
                    } else {
                        "stopped before the stream's end"
                    },
                ));
            }
            let mut chunks = Vec::with_capacity(lens.len());
            let mut rest = run;
            for &len in &lens {
                let (chunk, tail) = rest.split_at(len);
                chunks.push(chunk);
                rest = tail;
            }
            self.repo.key().blob_ids(&chunks, &mut batch);
            for (&chunk, &id) in chunks.iter().zip(&batch) {
                self.store_as(BlobKind::Data, id, chunk);
            }
            for id in &batch {
                list.push(*id, &mut store_list);
            }
            size += run.len() as u64;
            self.progress
                .bytes
                .fetch_add(run.len() as u64, Ordering::Relaxed);
        }
        self.bytes_read.fetch_add(size, Ordering::Relaxed);
        Ok((list.finish(&mut store_list), size, cr.into_buffer()))
    }
}

struct Run {
    session: Arc<Session>,
    uploader: Uploader,
    start: Instant,
    time: jiff::Timestamp,
}

impl Run {
    fn new(
        repo: &Repository,
        (lock, index): (LockGuard, Arc<Index>),
        progress: Arc<BackupProgress>,
        level: i32,
    ) -> Self {
        let uploader = Uploader::new(repo, repo.backend().connections());
        let session = Arc::new(Session {
            repo: repo.clone(),
            index,
            in_flight: Mutex::new(SpillSet::new(Some(repo.spill_dir()))),
            data: Packer::new(repo, &uploader, level),
            // A stream's tree is mostly its list of chunk ids (incompressible):
            // it gets the stream's faster level, file trees the file level.
            trees: Packer::new(repo, &uploader, level.min(repo.config().compression_level)),
            progress,
            bytes_read: AtomicU64::new(0),
            warnings: Mutex::new(Vec::new()),
            failed: uploader.failed_flag(),
            lock,
        });
        Self {
            session,
            uploader,
            start: Instant::now(),
            time: repo.clock().now(),
        }
    }

    /// Flushes packs, then index, then writes the snapshot: the commit
    /// point, reached only by a run that was not cancelled and whose lock
    /// is still in storage.
    fn commit(
        self,
        mut snap: Snapshot,
        mut summary: BackupSummary,
    ) -> Result<(SnapshotId, Snapshot)> {
        if let Some(e) = self.session.stop_error() {
            return Err(e);
        }
        let data = self.session.data.finish()?;
        let trees = self.session.trees.finish()?;
        self.uploader.finish()?;
        if let Some(e) = self.session.stop_error() {
            return Err(e);
        }
        self.session.lock.verify()?;
        summary.data_blobs_added = data.blobs;
        summary.tree_blobs_added = trees.blobs;
        summary.bytes_added = data.bytes;
        summary.tree_bytes_added = trees.bytes;
        summary.bytes_stored = data.stored + trees.stored;
        summary.bytes_read = self.session.bytes_read.load(Ordering::Relaxed);
        summary.warnings = std::mem::take(&mut *self.session.warnings.lock().unwrap());
        summary.duration_secs = self.start.elapsed().as_secs_f64();
        snap.partial = !summary.warnings.is_empty();
        snap.summary = summary;
        let id = self.session.repo.write_snapshot(&snap)?;
        // Housekeeping after the commit point, still under the lock: a
        // failure costs only a later retry, never the backup.
        match self.session.repo.compact_index(&self.session.index) {
            Ok(c) if c.files_removed > 0 => tracing::info!(
                "compacted {} index files into {}",
                c.files_removed,
                c.files_written
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("index compaction failed (retried by the next backup): {e}"),
        }
        Ok((id, snap))
    }

    fn snapshot(
        &self,
        tree: BlobId,
        paths: Vec<String>,
        tags: &[String],
        host: Option<&String>,
        job: Option<&String>,
    ) -> Snapshot {
        Snapshot {
            time: self.time,
            hostname: host.cloned().unwrap_or_else(crate::repo::keys::hostname),
            username: crate::repo::keys::username(),
            paths,
            tags: tags.to_vec(),
            tree,
            parent: None,
            job: job.cloned(),
            original: None,
            manifests: Default::default(),
            partial: false,
            program_version: env!("CARGO_PKG_VERSION").to_string(),
            summary: BackupSummary::default(),
            unknown: Default::default(),
        }
    }
}

/// Backs up files and directories; returns the new snapshot.
///
/// # Errors
/// Fatal errors only (backend, repository, no readable path). Unreadable
/// files are warnings recorded in the summary; the snapshot is then `partial`.
pub fn backup_paths(
    repo: &Repository,
    opts: &BackupOptions,
    progress: Arc<BackupProgress>,
) -> Result<(SnapshotId, Snapshot)> {
    if opts.paths.is_empty() {
        return Err(Error::invalid("nothing to back up").remedy(crate::Remedy::NameWhatToBackUp));
    }
    let excludes = ExcludeSet::new(&opts.excludes)?;
    let mut paths = Vec::new();
    for p in &opts.paths {
        let abs =
            normalize(&std::path::absolute(p).map_err(|e| Error::io("cannot resolve", p, e))?);
        std::fs::symlink_metadata(&abs).map_err(|e| Error::io("cannot back up", &abs, e))?;
        paths.push(abs);
    }
    paths.sort();
    paths.dedup();
    let (lock, index, adopted) = begin(repo)?;
    let path_strings: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let host = opts
        .host
        .clone()
        .unwrap_or_else(crate::repo::keys::hostname);
    let parent = find_parent(repo, opts, &host, &path_strings)?;
    let reader = Arc::new(BlobReader::new(repo, index.clone()));
    let parent_tree = match &parent {
        // An unreadable parent only costs reading everything again.
        Some((id, s)) if !opts.force => reader
            .read_tree(&s.tree)
            .map_err(|e| {
                tracing::warn!(
                    "the parent snapshot {} cannot be read, so every file is read again: {e}",
                    id.short()
                );
            })
            .ok(),
        _ => None,
    };
    let run = Run::new(
        repo,
        (lock, index),
        progress,
        repo.config().compression_level,
    );
    run.uploader.adopt(adopted);
    let chunker = Chunker::new(
        repo.config().file_chunker,
        repo.key().chunker_secret(repo.config().version),
    );
    let threads = if opts.read_threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
    } else {
        opts.read_threads
    };
    let (root, summary) = builder::build(
        &run.session,
        &reader,
        &chunker,
        &paths,
        &excludes,
        parent_tree,
        threads,
    )?;
    let mut snap = run.snapshot(
        root,
        path_strings,
        &opts.tags,
        Some(&host),
        opts.job.as_ref(),
    );
    snap.parent = parent.map(|(id, _)| id);
    if let Some((name, mut manifest)) = opts.manifest.clone() {
        let files = summary.files_new + summary.files_changed + summary.files_unchanged;
        let m = &mut manifest.detail;
        m.insert("files".into(), files.into());
        m.insert("dirs".into(), summary.dirs.into());
        m.insert("bytes".into(), summary.total_bytes.into());
        snap.manifests.insert(name, manifest);
    }
    run.commit(snap, summary)
}

/// What every backup does first: take a shared lock, load the index, and
/// take over what killed runs left.
///
/// A run killed before it wrote its index leaves packs no index names: their
/// blobs would be stored again by every later run, and a full disk stayed
/// full. Their headers are read (three small reads each) and added to the
/// index, so this run deduplicates against them, and the returned entries are
/// written into this run's index files. A pack another live backup wrote but
/// has not indexed yet is adopted the same way: indexing a pack twice is
/// harmless. Temporary files of dead writers are removed (see
/// [`Repository::remove_dead_temporaries`]).
fn begin(
    repo: &Repository,
) -> Result<(LockGuard, Arc<Index>, Vec<crate::format::index::IndexPack>)> {
    let lock = repo.lock(false, "backup")?;
    let mut index = repo.load_index()?;
    repo.remove_dead_temporaries(&lock)?;
    let mut adopted = Vec::new();
    for crate::backend::ObjectInfo { name, size, .. } in
        repo.backend().list(crate::backend::FileType::Pack)?
    {
        let Ok(id) = crate::id::PackId::from_hex(&name) else {
            continue;
        };
        if index.has_pack(&id) {
            continue;
        }
        match crate::repair::read_pack_entry(repo, &name, size) {
            Ok(entry) => {
                index.add_pack(&entry);
                adopted.push(entry);
            }
            Err(e) => tracing::debug!("not adopting unindexed pack {name}: {e}"),
        }
    }
    if !adopted.is_empty() {
        tracing::info!(
            "adopting {} pack(s) that interrupted backups left unindexed",
            adopted.len()
        );
    }
    index.finish();
    Ok((lock, Arc::new(index), adopted))
}

/// Removes `.` and `..` components and trailing slashes without touching the
/// file system, so `src/../src/` is recorded (and finds its parent) as `src`.
pub fn normalize(path: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn find_parent(
    repo: &Repository,
    opts: &BackupOptions,
    host: &str,
    paths: &[String],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    if let Some(id) = &opts.parent {
        return Ok(Some((*id, repo.read_snapshot(id)?)));
    }
    // A damaged snapshot must not stop new backups: skip it (check reports it).
    let (snaps, damaged) = repo.snapshots_lenient()?;
    for e in damaged {
        tracing::warn!("ignoring a damaged snapshot while looking for a parent: {e}");
    }
    Ok(snaps
        .into_iter()
        .rev()
        .find(|(_, s)| s.hostname == host && s.paths == paths))
}

/// A snapshot made of named streams (stdin, database dumps), each stored as a
/// file at its path; sources add the manifests that later prove a restore
/// complete. Nothing is visible until [`StreamBackup::commit`]; dropping the
/// value instead abandons the run, leaving only unreferenced packs.
pub struct StreamBackup {
    run: Run,
    chunker: Chunker,
    files: std::collections::BTreeMap<Vec<u8>, Node>,
    manifests: std::collections::BTreeMap<String, Manifest>,
    opts: StreamOptions,
}

impl StreamBackup {
    /// Locks the repository (shared) and loads the index.
    ///
    /// # Errors
    /// Lock conflicts, unreadable index.
    pub fn begin(
        repo: &Repository,
        opts: &StreamOptions,
        progress: Arc<BackupProgress>,
    ) -> Result<Self> {
        let (lock, index, adopted) = begin(repo)?;
        let run = Run::new(
            repo,
            (lock, index),
            progress,
            repo.config().stream_compression_level,
        );
        run.uploader.adopt(adopted);
        Ok(Self {
            run,
            chunker: Chunker::new(
                repo.config().stream_chunker,
                repo.key().chunker_secret(repo.config().version),
            ),
            files: Default::default(),
            manifests: Default::default(),
            opts: opts.clone(),
        })
    }

    /// Stores a whole stream as the file `path` ("db.sql", "pg/main.sql").
    ///
    /// # Errors
    /// An invalid path or a read error: a half-read stream must fail the backup.
    pub fn add_stream(&mut self, path: &str, reader: impl std::io::Read) -> Result<u64> {
        let clean: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        if clean.is_empty() || clean.iter().any(|c| *c == "." || *c == "..") {
            return Err(Error::invalid(format!("invalid stream name {path:?}"))
                .hint("use a plain name such as db.sql"));
        }
        let key = clean.join("/").into_bytes();
        let conflicts =
            |a: &[u8], b: &[u8]| a == b || (a.starts_with(b) && a.get(b.len()) == Some(&b'/'));
        if self
            .files
            .keys()
            .any(|k| conflicts(k, &key) || conflicts(&key, k))
        {
            return Err(Error::invalid(format!(
                "stream {path:?} clashes with a stream already added"
            )));
        }
        let session = &self.run.session;
        let (content, size, _) = session
            .store_stream(reader, &self.chunker, Vec::new())
            .map_err(|e| {
                session
                    .stop_error()
                    .unwrap_or_else(|| Error::io("cannot read stream", path, e))
            })?;
        let mut node = Node::new(
            clean.last().expect("non-empty").as_bytes().to_vec(),
            NodeKind::File,
        );
        node.mode = 0o600;
        node.size = size;
        let now = self.run.session.repo.clock().now();
        node.mtime_ns = i64::try_from(now.as_nanosecond()).unwrap_or(i64::MAX);
        node.content = content.ids;
        node.content_levels = content.levels;
        self.run
            .session
            .progress
            .files
            .fetch_add(1, Ordering::Relaxed);
        self.files.insert(key, node);
        Ok(size)
    }

    /// Records a source's manifest (server version, counts, ...).
    pub fn add_manifest(&mut self, source: &str, manifest: Manifest) {
        self.manifests.insert(source.to_string(), manifest);
    }

    /// Builds the trees, makes everything durable, and writes the snapshot.
    ///
    /// # Errors
    /// Backend failures; no snapshot is written then.
    pub fn commit(self) -> Result<(SnapshotId, Snapshot)> {
        let session = &self.run.session;
        let mut summary = BackupSummary {
            files_new: self.files.len() as u64,
            ..Default::default()
        };
        summary.total_bytes = self.files.values().map(|n| n.size).sum();
        let paths: Vec<String> = self
            .files
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        let root = store_nested(session, self.files.into_iter().collect(), &mut summary.dirs);
        let mut snap = self.run.snapshot(
            root,
            paths,
            &self.opts.tags,
            self.opts.host.as_ref(),
            self.opts.job.as_ref(),
        );
        snap.manifests = self.manifests;
        self.run.commit(snap, summary)
    }
}

/// Stores files keyed by relative path as nested trees; returns the root id.
fn store_nested(session: &Session, files: Vec<(Vec<u8>, Node)>, dirs: &mut u64) -> BlobId {
    let mut here: Vec<Node> = Vec::new();
    let mut sub: std::collections::BTreeMap<Vec<u8>, Vec<(Vec<u8>, Node)>> = Default::default();
    for (path, node) in files {
        match path.iter().position(|b| *b == b'/') {
            None => here.push(node),
            Some(i) => sub
                .entry(path[..i].to_vec())
                .or_default()
                .push((path[i + 1..].to_vec(), node)),
        }
    }
    for (name, children) in sub {
        *dirs += 1;
        let mut d = Node::new(name.clone(), NodeKind::Dir);
        d.mode = 0o700;
        d.subtree = Some(store_nested(session, children, dirs));
        here.push(d);
    }
    here.sort_by(|a, b| a.name.cmp(&b.name));
    // Encoded in its own statement, so the nodes (for a stream, its list of
    // chunk ids: 32 bytes a chunk) are freed before the tree is packed.
    let tree = crate::format::tree::encode(&Tree { nodes: here }, session.repo.config().version);
    session.store(BlobKind::Tree, &tree)
}

/// Backs up one stream (stdin, a dump) as a file named `opts.name`.
///
/// # Errors
/// Read errors of the stream are fatal: a half-read dump must not look complete.
pub fn backup_stream(
    repo: &Repository,
    reader: impl std::io::Read,
    opts: &StreamOptions,
    progress: Arc<BackupProgress>,
) -> Result<(SnapshotId, Snapshot)> {
    if opts.name.is_empty() || opts.name.contains('/') {
        return Err(
            Error::invalid(format!("invalid stream name {:?}", opts.name))
                .remedy(crate::Remedy::PlainStreamName),
        );
    }
    let mut b = StreamBackup::begin(repo, opts, progress)?;
    b.add_stream(&opts.name, reader)?;
    b.commit()
}
