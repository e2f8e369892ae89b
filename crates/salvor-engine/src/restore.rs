//! Restoring a snapshot into a directory.
//!
//! Restore is driven by where data lies, not by file order (restic's approach):
//! 1. walk the trees, create directories, symlinks and special files, and
//!    create every regular file at its final size;
//! 2. group every needed blob by pack and frame; worker threads fetch each
//!    pack's needed span in one ranged read, decode each frame once, re-hash
//!    every blob against its id and write it at its offsets in every file that
//!    uses it;
//! 3. link hardlinks, then set ownership (as root), modes and times, deepest
//!    first, so writing into a directory never bumps its restored mtime.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::backup::ExcludeSet;
use crate::browse;
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::index::IdMap;
use crate::longpath;
use crate::repo::BlobReader;
use crate::repo::blobs::verify_blobs;

/// What to restore and where.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Only paths matching one of these globs (or below a match).
    pub includes: Vec<String>,
    /// Skip paths matching these globs (and everything below).
    pub excludes: Vec<String>,
}

/// Live counters for progress display.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    /// Bytes written.
    pub bytes: AtomicU64,
    /// Total bytes to write (known after planning).
    pub total_bytes: AtomicU64,
    /// Files to restore.
    pub total_files: AtomicU64,
}

/// What a restore did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreStats {
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks, devices, fifos.
    pub special: u64,
    /// Hardlinks recreated.
    pub hardlinks: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Metadata that could not be applied (e.g. ownership as non-root).
    pub warnings: Vec<String>,
}

struct Planned {
    path: PathBuf,
    node: Node,
}

fn to_path(target: &Path, p: &[u8]) -> PathBuf {
    target.join(std::ffi::OsStr::from_bytes(
        p.strip_prefix(b"/").unwrap_or(p),
    ))
}

fn io(what: &str, p: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let p = p.to_path_buf();
    let what = what.to_string();
    move |e| Error::io(&what, &p, e)
}

/// What a restore creates, in walk order.
struct Plan {
    dirs: Vec<Planned>,
    files: Vec<Planned>,
    others: Vec<Planned>,
}

/// Walks the snapshot and selects what `opts` asks for. With includes,
/// only directories on the way to a selected entry (or selected
/// themselves) are kept.
fn plan(reader: &BlobReader, snap: &Snapshot, opts: &RestoreOptions) -> Result<Plan> {
    let includes = (!opts.includes.is_empty())
        .then(|| ExcludeSet::new(&opts.includes))
        .transpose()?;
    let excludes = ExcludeSet::new(&opts.excludes)?;
    let (mut dirs, mut files, mut others) = (Vec::new(), Vec::new(), Vec::new());
    // Paths that matched an include: everything below them is selected.
    let mut included_prefixes: Vec<Vec<u8>> = Vec::new();
    browse::walk(reader, &snap.tree, b"/", &mut |p, n| {
        let path_os = std::ffi::OsStr::from_bytes(p);
        if excludes.is_excluded(Path::new(path_os), std::ffi::OsStr::from_bytes(&n.name)) {
            return Ok(false);
        }
        let under_include = included_prefixes
            .last()
            .is_some_and(|i| p.starts_with(i) && p.get(i.len()) == Some(&b'/'));
        let matched = includes.as_ref().is_none_or(|inc| {
            under_include
                || inc.is_excluded(Path::new(path_os), std::ffi::OsStr::from_bytes(&n.name))
        });
        if matched && !under_include && includes.is_some() {
            included_prefixes.push(p.to_vec());
        }
        let planned = Planned {
            path: to_path(&opts.target, p),
            node: n.clone(),
        };
        match n.kind {
            NodeKind::Dir => {
                dirs.push((planned, matched));
                Ok(true)
            }
            _ if !matched => Ok(false),
            NodeKind::File => {
                files.push(planned);
                Ok(false)
            }
            _ => {
                others.push(planned);
                Ok(false)
            }
        }
    })?;
    let dirs = if includes.is_some() {
        // Every ancestor of something selected, found once per path.
        let mut needed: std::collections::HashSet<&Path> = Default::default();
        for p in files.iter().chain(&others).map(|p| p.path.as_path()) {
            let mut cur = p.parent();
            while let Some(d) = cur {
                if !needed.insert(d) {
                    break;
                }
                cur = d.parent();
            }
        }
        let needed: std::collections::HashSet<PathBuf> =
            needed.into_iter().map(Path::to_path_buf).collect();
        dirs.into_iter()
            .filter(|(d, matched)| *matched || needed.contains(&d.path))
            .map(|(d, _)| d)
            .collect()
    } else {
        dirs.into_iter().map(|(d, _)| d).collect()
    };
    Ok(Plan {
        dirs,
        files,
        others,
    })
}

/// How many of the entries (files, links, special files) a restore of
/// `snap` with `opts` would write already exist in the target, and how many
/// it would write in all: what a confirmation should name.
///
/// # Errors
/// Unreadable trees; invalid patterns.
pub fn existing_entries(
    reader: &BlobReader,
    snap: &Snapshot,
    opts: &RestoreOptions,
) -> Result<(u64, u64)> {
    let plan = plan(reader, snap, opts)?;
    let entries: Vec<&Planned> = plan.files.iter().chain(&plan.others).collect();
    let existing = entries
        .iter()
        .filter(|p| longpath::symlink_metadata(&p.path).is_ok())
        .count();
    Ok((existing as u64, entries.len() as u64))
}

/// Restores `snap` into `opts.target`.
///
/// # Errors
/// Corruption (named), target I/O errors. Metadata failures are warnings.
pub fn restore(
    reader: &BlobReader,
    snap: &Snapshot,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreStats> {
    let Plan {
        mut dirs,
        files,
        others,
    } = plan(reader, snap, opts)?;
    // Into an empty target nothing needs removing first: skip one unlink per file.
    let fresh = longpath::read_dir_names(&opts.target).map_or(true, |d| d.is_empty());
    longpath::create_dir_all(&opts.target).map_err(io("cannot create", &opts.target))?;
    let mut stats = RestoreStats::default();
    for d in &dirs {
        // In a non-empty target a path may already exist as a symlink (or a
        // file): replace it, or files below would be written through it,
        // possibly outside the target. Parents come before children, so
        // every directory on a path is checked before anything goes below it.
        if !fresh && longpath::symlink_metadata(&d.path).is_ok_and(|m| !m.is_dir()) {
            longpath::remove_file(&d.path).map_err(io("cannot replace", &d.path))?;
        }
        longpath::create_dir_all(&d.path).map_err(io("cannot create directory", &d.path))?;
        stats.dirs += 1;
    }
    for o in &others {
        create_special(o, fresh, &mut stats)?;
    }
    let meta = MetaContext::new();
    let links = write_files(reader, &files, fresh, &meta, progress, &mut stats)?;
    for (path, first) in links {
        let _ = longpath::remove_file(&path);
        longpath::hard_link(&first, &path).map_err(io("cannot create hard link", &path))?;
        stats.hardlinks += 1;
    }
    for p in others.iter() {
        meta.apply_path(p);
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.path.components().count()));
    for d in &dirs {
        meta.apply_path(d);
    }
    stats.warnings.extend(meta.warnings.into_inner().unwrap());
    stats.bytes = progress.bytes.load(Ordering::Relaxed);
    Ok(stats)
}

fn create_special(o: &Planned, fresh: bool, stats: &mut RestoreStats) -> Result<()> {
    use longpath::Special;
    if !fresh {
        let _ = longpath::remove_file(&o.path);
    }
    let res = match o.node.kind {
        NodeKind::Symlink => {
            longpath::symlink(std::ffi::OsStr::from_bytes(&o.node.link_target), &o.path)
                .map_err(io("cannot create symlink", &o.path))
        }
        NodeKind::Fifo => longpath::mknod(&o.path, Special::Fifo, o.node.mode, 0)
            .map_err(io("cannot create fifo", &o.path)),
        NodeKind::BlockDevice | NodeKind::CharDevice => {
            let k = if o.node.kind == NodeKind::BlockDevice {
                Special::Block
            } else {
                Special::Char
            };
            if let Err(e) = longpath::mknod(&o.path, k, o.node.mode, o.node.rdev) {
                stats
                    .warnings
                    .push(format!("{}: cannot create device: {e}", o.path.display()));
                return Ok(());
            }
            Ok(())
        }
        NodeKind::Socket => return Ok(()),
        NodeKind::File | NodeKind::Dir => unreachable!("handled by the caller"),
    };
    res?;
    stats.special += 1;
    Ok(())
}

/// Applies ownership (as root), mode and times; collects failures as warnings.
struct MetaContext {
    root: bool,
    warnings: Mutex<Vec<String>>,
}

impl MetaContext {
    fn new() -> Self {
        Self {
            root: nix::unistd::geteuid().is_root(),
            warnings: Mutex::new(Vec::new()),
        }
    }

    fn warn(&self, path: &Path, what: &str, e: impl std::fmt::Display) {
        self.warnings
            .lock()
            .unwrap()
            .push(format!("{}: cannot set {what}: {e}", path.display()));
    }

    /// Through an open descriptor: three syscalls, no path lookups.
    fn apply_file(&self, f: &std::fs::File, p: &Planned) {
        let n = &p.node;
        if self.root
            && let Err(e) = std::os::unix::fs::fchown(f, Some(n.uid), Some(n.gid))
        {
            self.warn(&p.path, "owner", e);
        }
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = f.set_permissions(std::fs::Permissions::from_mode(n.mode)) {
            self.warn(&p.path, "mode", e);
        }
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(n.mtime_ns.max(0) as u64);
        if let Err(e) = f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t)) {
            self.warn(&p.path, "times", e);
        }
    }

    /// By path, not following symlinks (directories, links, special files).
    fn apply_path(&self, p: &Planned) {
        let n = &p.node;
        if self.root
            && let Err(e) = longpath::lchown(&p.path, n.uid, n.gid)
        {
            self.warn(&p.path, "owner", e);
        }
        if n.kind != NodeKind::Symlink
            && let Err(e) = longpath::chmod(&p.path, n.mode)
        {
            self.warn(&p.path, "mode", e);
        }
        if let Err(e) = longpath::set_times_nofollow(&p.path, n.mtime_ns) {
            self.warn(&p.path, "times", e);
        }
    }
}

/// A file being written: created at its first write, finished (metadata set,
/// descriptor closed) at its last.
struct Slot {
    /// Open while a pack writes to it; closed at the end of that pack, so
    /// files spread over many packs never exhaust file descriptors.
    file: Option<std::fs::File>,
    created: bool,
    remaining: u64,
}

/// Unfinished files one pack worker may keep open before closing them early.
const OPEN_PER_WORKER: usize = 64;

struct Target {
    file: u32,
    offset: u64,
    blob_offset: u32,
    length: u32,
}

type FrameTargets = IdMap<u32, Vec<(crate::id::BlobId, Target)>>;

fn create_file(p: &Planned, fresh: bool) -> Result<std::fs::File> {
    if !fresh {
        let _ = longpath::remove_file(&p.path);
    }
    longpath::create_new(&p.path).map_err(io("cannot create", &p.path))
}

/// Writes all file content; returns hardlinks to make (path, first path).
fn write_files(
    reader: &BlobReader,
    files: &[Planned],
    fresh: bool,
    meta: &MetaContext,
    progress: &RestoreProgress,
    stats: &mut RestoreStats,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    let index = reader.index();
    let mut first_link: std::collections::HashMap<(u64, u64), usize> = Default::default();
    let mut links = Vec::new();
    let mut by_pack: BTreeMap<u32, FrameTargets> = BTreeMap::new();
    let mut slots: Vec<Mutex<Slot>> = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for (i, f) in files.iter().enumerate() {
        slots.push(Mutex::new(Slot {
            file: None,
            created: false,
            remaining: 0,
        }));
        if f.node.links > 1 {
            if let Some(&first) = first_link.get(&(f.node.device, f.node.inode)) {
                links.push((f.path.clone(), files[first].path.clone()));
                continue;
            }
            first_link.insert((f.node.device, f.node.inode), i);
        }
        stats.files += 1;
        let mut offset = 0u64;
        // The whole file's data ids (32 bytes a chunk), read from its lists.
        let ids = crate::content::data_ids(reader, &f.node.content, f.node.content_levels)
            .map_err(|e| e.context(format!("content list of {}", f.path.display())))?;
        for id in &ids {
            let loc = index
                .get(id)
                .ok_or_else(|| index.missing(id, &format!(" of {}", f.path.display())))?;
            let frame = index.frame(loc.frame);
            by_pack
                .entry(frame.pack)
                .or_default()
                .entry(loc.frame)
                .or_default()
                .push((
                    *id,
                    Target {
                        file: u32::try_from(i).expect("fewer than 2^32 files to restore"),
                        offset,
                        blob_offset: loc.offset,
                        length: loc.length,
                    },
                ));
            offset += u64::from(loc.length);
        }
        if offset == 0 {
            meta.apply_file(&create_file(f, fresh)?, f);
        }
        slots[i].get_mut().unwrap().remaining = offset;
        total += offset;
    }
    progress.total_bytes.store(total, Ordering::Relaxed);
    progress.total_files.store(stats.files, Ordering::Relaxed);
    let ctx = WriteContext {
        reader,
        files,
        slots: &slots,
        fresh,
        meta,
        progress,
    };
    crate::backend::with_reader_pool(reader.repo().backend(), || {
        by_pack
            .into_par_iter()
            .try_for_each(|(pack, frames)| ctx.restore_pack(pack, frames))
    })?;
    Ok(links)
}

struct WriteContext<'a> {
    reader: &'a BlobReader,
    files: &'a [Planned],
    slots: &'a [Mutex<Slot>],
    fresh: bool,
    meta: &'a MetaContext,
    progress: &'a RestoreProgress,
}

impl WriteContext<'_> {
    fn restore_pack(&self, pack: u32, frames: FrameTargets) -> Result<()> {
        self.reader.check_live()?;
        let index = self.reader.index();
        let info = index.pack(pack);
        let start = frames
            .keys()
            .map(|f| index.frame(*f).offset)
            .min()
            .unwrap_or(0);
        let end = frames
            .keys()
            .map(|f| index.frame(*f).offset + u64::from(index.frame(*f).length))
            .max()
            .unwrap_or(0);
        let span = self.reader.repo().backend().read_range(
            crate::backend::FileType::Pack,
            &info.id.to_hex(),
            start,
            end - start,
        )?;
        let mut order: Vec<_> = frames.into_iter().collect();
        order.sort_by_key(|(f, _)| index.frame(*f).offset);
        let mut left_open: Vec<u32> = Vec::new();
        for (f, targets) in order {
            let loc = index.frame(f);
            let s = usize::try_from(loc.offset - start).expect("a frame lies within its read");
            let plain = crate::pack::decode_frame(
                self.reader.repo().key(),
                &info.salt,
                loc,
                &span[s..s + loc.length as usize],
                &info.id,
            )?;
            let data: Vec<&[u8]> = targets
                .iter()
                .map(|(id, t)| {
                    plain
                        .get(t.blob_offset as usize..t.blob_offset as usize + t.length as usize)
                        .ok_or_else(|| {
                            Error::corrupt(format!(
                                "blob {id} lies outside its frame in pack {}",
                                info.id
                            ))
                        })
                })
                .collect::<Result<_>>()?;
            // Every distinct blob once (a blob repeated in a row is hashed once).
            let (mut ids, mut unique) = (Vec::new(), Vec::new());
            for ((id, _), d) in targets.iter().zip(&data) {
                if ids.last() != Some(id) {
                    ids.push(*id);
                    unique.push(*d);
                }
            }
            verify_blobs(self.reader.repo().key(), &ids, &unique)?;
            for ((_, t), data) in targets.iter().zip(data) {
                if self.write(t, data)? {
                    left_open.push(t.file);
                    if left_open.len() >= OPEN_PER_WORKER {
                        self.close(&mut left_open);
                    }
                }
            }
        }
        self.close(&mut left_open);
        Ok(())
    }

    /// Writes one blob occurrence; returns true when it left the file open
    /// (unfinished), so the caller can close it when its pack is done.
    fn write(&self, t: &Target, data: &[u8]) -> Result<bool> {
        let p = &self.files[t.file as usize];
        let mut slot = self.slots[t.file as usize].lock().unwrap();
        let opened = slot.file.is_none();
        if opened {
            slot.file = Some(if slot.created {
                longpath::open_write(&p.path).map_err(io("cannot open", &p.path))?
            } else {
                create_file(p, self.fresh)?
            });
            slot.created = true;
        }
        let f = slot.file.as_ref().expect("just opened");
        f.write_all_at(data, t.offset)
            .map_err(io("cannot write", &p.path))?;
        slot.remaining -= u64::from(t.length);
        if slot.remaining == 0 {
            let f = slot.file.take().expect("open");
            self.meta.apply_file(&f, p);
        }
        self.progress
            .bytes
            .fetch_add(u64::from(t.length), Ordering::Relaxed);
        Ok(opened && slot.file.is_some())
    }

    /// Closes files this worker opened that are still unfinished.
    fn close(&self, files: &mut Vec<u32>) {
        for f in files.drain(..) {
            self.slots[f as usize].lock().unwrap().file = None;
        }
    }
}
