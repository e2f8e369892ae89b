//! Writing and reading packs.
//!
//! Write side, in the order that keeps crashes harmless:
//! 1. [`Packer::add`] appends a blob to the open frame; a full frame is
//!    compressed on the rayon pool (bounded by a token channel, so memory stays
//!    flat however fast the producer is);
//! 2. a compressed frame is encrypted into the open pack (nonce = frame
//!    number); a full pack is finished (header, trailer) and sent to the
//!    [`Uploader`];
//! 3. the uploader writes packs durably, then index files naming only packs
//!    already written. The caller writes the snapshot last.
//!
//! A backup killed at any point therefore leaves only packs no index names, or
//! index entries whose packs exist: never a snapshot pointing at missing data.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::backend::ObjectSink;
use crate::crypto::{MasterKey, NonceDomain, ObjectCipher, SALT_LEN};
use crate::error::{Error, Result};
use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::{BlobEntry, BlobKind, Compression, FrameEntry, PackHeader};
use crate::format::{self, ObjectKind, PREFIX_LEN};
use crate::id::{BlobId, IndexId, PackId};
use crate::index::FrameLocation;
use crate::repo::Repository;

/// An index file is written once this many packs are pending...
const PACKS_PER_INDEX: usize = 64;
/// ...or this many blobs: a dump's small chunks fill few packs, and indexing
/// them during the backup keeps the commit, after the dump tool has
/// finished, from serializing all of them at once.
const BLOBS_PER_INDEX: usize = 32 * 1024;

/// Counters of what was stored.
#[derive(Debug, Default, Clone, Copy)]
pub struct PackStats {
    /// Blobs added.
    pub blobs: u64,
    /// Their plaintext bytes.
    pub bytes: u64,
    /// Bytes of pack files written.
    pub stored: u64,
}

struct FinishedPack {
    id: PackId,
    /// Its bytes, written as its frames were sealed ([`crate::backend::ObjectSink`]).
    sink: Box<dyn ObjectSink>,
    len: u64,
    entry: IndexPack,
}

/// Writes finished packs and then the index files that name them.
pub struct Uploader {
    tx: Option<Sender<FinishedPack>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<UploadShared>,
}

struct UploadShared {
    repo: Repository,
    pending: Mutex<Vec<IndexPack>>,
    written: Mutex<Vec<IndexId>>,
    error: Mutex<Option<Error>>,
    /// Set on the first storage failure: later packs are dropped, not
    /// written, and the whole pipeline stops early (the backup fails at commit).
    failed: Arc<std::sync::atomic::AtomicBool>,
    stored: std::sync::atomic::AtomicU64,
}

/// Buffers handed back for reuse. A fresh buffer faults in (and the kernel
/// zeroes) a page per 4 KiB written into it: fresh 1 MiB frames cost ~10% of
/// a stream backup's CPU, fresh 16 MiB packs half its page faults.
struct Spares {
    list: Mutex<Vec<Vec<u8>>>,
    /// Kept beyond this, a spare only adds to resident memory.
    max: usize,
}

impl Spares {
    fn new(max: usize) -> Self {
        Self {
            list: Mutex::new(Vec::new()),
            max,
        }
    }

    /// An empty buffer with room for `capacity` bytes.
    fn take(&self, capacity: usize) -> Vec<u8> {
        let mut buf = self.list.lock().unwrap().pop().unwrap_or_default();
        buf.clear();
        buf.reserve(capacity);
        buf
    }

    fn give(&self, buf: Vec<u8>) {
        let mut spares = self.list.lock().unwrap();
        if spares.len() < self.max && buf.capacity() > 0 {
            spares.push(buf);
        }
    }
}

impl UploadShared {
    fn flush_index(&self, all: bool) -> Result<()> {
        let packs = {
            let mut p = self.pending.lock().unwrap();
            let blobs = || -> usize {
                p.iter()
                    .flat_map(|pack| &pack.frames)
                    .map(|f| f.blobs.len())
                    .sum()
            };
            if p.is_empty() || (!all && p.len() < PACKS_PER_INDEX && blobs() < BLOBS_PER_INDEX) {
                return Ok(());
            }
            std::mem::take(&mut *p)
        };
        let id = self.repo.write_index(&IndexFile {
            packs,
            ..Default::default()
        })?;
        self.written.lock().unwrap().push(id);
        Ok(())
    }
}

impl Uploader {
    /// Starts `threads` upload workers.
    pub fn new(repo: &Repository, threads: usize) -> Self {
        // Rendezvous: a finished pack waits in its packer until an upload
        // thread is free, so at most `threads` + open packs are in memory.
        let (tx, rx): (Sender<FinishedPack>, Receiver<FinishedPack>) = bounded(0);
        let shared = Arc::new(UploadShared {
            repo: repo.clone(),
            pending: Mutex::new(Vec::new()),
            written: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            stored: Default::default(),
            failed: Arc::default(),
        });
        let threads = (0..threads.max(1))
            .map(|_| {
                let rx = rx.clone();
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name("salvor-upload".into())
                    .spawn(move || {
                        for p in rx {
                            if shared.failed.load(std::sync::atomic::Ordering::Relaxed) {
                                continue;
                            }
                            let res = p.sink.commit(
                                shared.repo.backend(),
                                crate::backend::FileType::Pack,
                                &p.id.to_hex(),
                            );
                            let res = res.and_then(|()| {
                                shared
                                    .stored
                                    .fetch_add(p.len, std::sync::atomic::Ordering::Relaxed);
                                shared.pending.lock().unwrap().push(p.entry);
                                shared.flush_index(false)
                            });
                            if let Err(e) = res {
                                shared
                                    .failed
                                    .store(true, std::sync::atomic::Ordering::Relaxed);
                                shared.error.lock().unwrap().get_or_insert(e);
                            }
                        }
                    })
                    .expect("spawn upload thread")
            })
            .collect();
        Self {
            tx: Some(tx),
            threads,
            shared,
        }
    }

    /// Adds entries of packs already in storage (left unindexed by an
    /// interrupted run) to the next index file this uploader writes.
    pub fn adopt(&self, packs: Vec<IndexPack>) {
        if !packs.is_empty() {
            self.shared.pending.lock().unwrap().extend(packs);
        }
    }

    /// True once writing to storage has failed; the caller should stop
    /// feeding data, the commit will return the error.
    pub fn failed_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.shared.failed.clone()
    }

    fn sender(&self) -> Sender<FinishedPack> {
        self.tx.clone().expect("uploader still open")
    }

    /// Bytes of packs written so far.
    pub fn stored_bytes(&self) -> u64 {
        self.shared
            .stored
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits for every pack, writes the last index file, and returns the ids of
    /// all index files written. Packers must have been finished first.
    ///
    /// # Errors
    /// The first upload or index failure.
    pub fn finish(mut self) -> Result<Vec<IndexId>> {
        drop(self.tx.take());
        let mut panicked = false;
        for t in self.threads.drain(..) {
            panicked |= t.join().is_err();
        }
        if panicked {
            // Its pack may be neither written nor indexed: no snapshot may follow.
            return Err(Error::new(
                crate::ErrorKind::Backend,
                "a pack upload thread crashed; nothing was committed",
            ));
        }
        if let Some(e) = self.shared.error.lock().unwrap().take() {
            return Err(e);
        }
        self.shared.flush_index(true)?;
        Ok(std::mem::take(&mut *self.shared.written.lock().unwrap()))
    }
}

struct OpenPack {
    prefix: [u8; PREFIX_LEN],
    salt: [u8; SALT_LEN],
    cipher: ObjectCipher,
    /// Where its bytes go as they are sealed: no pack is held in memory
    /// (except by a backend that can only write whole objects).
    sink: Box<dyn ObjectSink>,
    /// BLAKE3 of the bytes so far: the pack's name.
    hasher: blake3::Hasher,
    len: u64,
    frames: Vec<FrameEntry>,
}

impl OpenPack {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.len += data.len() as u64;
        self.sink.write(data)
    }
}

struct PackerState {
    frame: Vec<u8>,
    blobs: Vec<BlobEntry>,
    pack: Option<OpenPack>,
}

struct CompressedFrame {
    payload: Vec<u8>,
    raw_length: u32,
    compression: Compression,
    blobs: Vec<BlobEntry>,
}

/// Collects blobs of one kind into frames and packs.
pub struct Packer {
    key: MasterKey,
    /// The repository's format version (the prefix byte of its packs).
    version: u8,
    frame_target: usize,
    pack_target: usize,
    level: i32,
    state: Mutex<PackerState>,
    /// Taken (closed) by [`Packer::finish`], so the uploader sees the end.
    upload: Mutex<Option<Sender<FinishedPack>>>,
    /// The uploader's failure flag: once set, new blobs are not packed.
    failed: Arc<std::sync::atomic::AtomicBool>,
    tokens: (Sender<()>, Receiver<()>),
    repo: Repository,
    /// Frame buffers, handed back after compression.
    spare_frames: Spares,
    error: Mutex<Option<Error>>,
    stats: Mutex<PackStats>,
}

/// The threads that compress and encrypt frames. They run at a lower
/// priority than the rest of the process and than a dump tool it reads: a
/// source backup is limited by its dump tool (and the server behind it), and
/// frames can wait in the bounded queue while the tool gets a core first.
fn compress_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("salvor-pack-{i}"))
            .start_handler(|_| crate::priority::lower_pack_thread())
            .build()
            .expect("compression thread pool")
    })
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// `data` compressed, or `None` when that is not smaller (the frame is then
/// stored as it is, without a copy).
fn compress(data: &[u8], level: i32) -> Option<Vec<u8>> {
    let out = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((
                level,
                zstd::bulk::Compressor::new(level).expect("zstd context"),
            ));
        }
        c.as_mut()
            .unwrap()
            .1
            .compress(data)
            .expect("zstd compress in memory")
    });
    (out.len() < data.len()).then_some(out)
}

impl Packer {
    /// A packer feeding `uploader`, compressing frames at zstd `level`.
    pub fn new(repo: &Repository, uploader: &Uploader, level: i32) -> Arc<Self> {
        let cfg = repo.config();
        let in_flight = 2 * compress_pool().current_num_threads() + 2;
        let tokens = bounded(in_flight);
        for _ in 0..in_flight {
            tokens.0.send(()).expect("fresh channel");
        }
        Arc::new(Self {
            key: repo.key().clone(),
            version: cfg.version,
            frame_target: cfg.frame_target as usize,
            pack_target: cfg.pack_target as usize,
            level,
            state: Mutex::new(PackerState {
                frame: Vec::new(),
                blobs: Vec::new(),
                pack: None,
            }),
            upload: Mutex::new(Some(uploader.sender())),
            failed: uploader.failed_flag(),
            tokens,
            // Never more frames than tokens exist at once.
            spare_frames: Spares::new(in_flight + 1),
            repo: repo.clone(),
            error: Mutex::new(None),
            stats: Mutex::new(PackStats::default()),
        })
    }

    /// Adds a blob the caller has checked is not yet stored.
    pub fn add(self: &Arc<Self>, kind: BlobKind, id: BlobId, data: &[u8]) {
        if self.failed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let full = {
            let mut st = self.state.lock().unwrap();
            let mut taken = None;
            if !st.frame.is_empty() && st.frame.len() + data.len() > self.frame_target {
                taken = Some(self.take_frame(&mut st));
            }
            let offset = u32::try_from(st.frame.len()).expect("frames stay near frame_target");
            st.frame.extend_from_slice(data);
            st.blobs.push(BlobEntry {
                kind,
                id,
                offset,
                length: u32::try_from(data.len()).expect("blobs are at most a chunk"),
            });
            taken
        };
        {
            let mut s = self.stats.lock().unwrap();
            s.blobs += 1;
            s.bytes += data.len() as u64;
        }
        if let Some((frame, blobs)) = full {
            self.spawn_frame(frame, blobs);
        }
    }

    fn take_frame(&self, st: &mut PackerState) -> (Vec<u8>, Vec<BlobEntry>) {
        let spare = self.spare_frames.take(0);
        (
            std::mem::replace(&mut st.frame, spare),
            std::mem::take(&mut st.blobs),
        )
    }

    fn spawn_frame(self: &Arc<Self>, frame: Vec<u8>, blobs: Vec<BlobEntry>) {
        // Blocks when enough frames are already being compressed: backpressure.
        self.tokens
            .1
            .recv()
            .expect("token channel lives as long as the packer");
        let me = self.clone();
        compress_pool().spawn(move || {
            let raw_length = u32::try_from(frame.len()).expect("frames stay near frame_target");
            let (payload, compression) = match compress(&frame, me.level) {
                Some(out) => {
                    me.spare_frames.give(frame);
                    (out, Compression::Zstd)
                }
                None => (frame, Compression::None),
            };
            if let Err(e) = me.place(CompressedFrame {
                payload,
                raw_length,
                compression,
                blobs,
            }) {
                // Storage failed (a full disk): stop feeding the pipeline.
                me.failed.store(true, std::sync::atomic::Ordering::Relaxed);
                me.error.lock().unwrap().get_or_insert(e);
            }
            me.tokens.0.send(()).expect("token channel");
        });
    }

    fn place(&self, f: CompressedFrame) -> Result<()> {
        let finished = {
            let mut st = self.state.lock().unwrap();
            if st.pack.is_none() {
                let (prefix, salt) =
                    format::new_prefix(self.version, ObjectKind::Pack, self.key.new_salt());
                let mut pack = OpenPack {
                    prefix,
                    salt,
                    cipher: self.key.object_cipher(&salt),
                    sink: self.repo.backend().sink(&self.repo.spill_dir())?,
                    hasher: blake3::Hasher::new(),
                    len: 0,
                    frames: Vec::new(),
                };
                pack.append(&prefix)?;
                st.pack = Some(pack);
            }
            let pack = st.pack.as_mut().expect("opened above");
            let nonce = pack.frames.len() as u64;
            let offset = pack.len;
            let mut sealed = self
                .spare_frames
                .take(f.payload.len() + crate::crypto::TAG_LEN);
            pack.cipher
                .seal_into(nonce, NonceDomain::Frame, &f.payload, &[], &mut sealed);
            pack.append(&sealed)?;
            pack.frames.push(FrameEntry {
                offset,
                length: u32::try_from(sealed.len()).expect("frames are far below 4 GiB"),
                raw_length: f.raw_length,
                compression: f.compression,
                blobs: f.blobs,
            });
            self.spare_frames.give(sealed);
            if pack.len >= self.pack_target as u64 {
                st.pack.take()
            } else {
                None
            }
        };
        if let Some(p) = finished {
            self.send_pack(p)?;
        }
        Ok(())
    }

    fn send_pack(&self, mut p: OpenPack) -> Result<()> {
        let header = format::to_bytes(&PackHeader {
            frames: p.frames.clone(),
        });
        let ct = p
            .cipher
            .seal(0, NonceDomain::PackHeader, &header, &p.prefix);
        p.append(&ct)?;
        p.append(
            &u32::try_from(ct.len())
                .expect("headers are far below 4 GiB")
                .to_le_bytes(),
        )?;
        let id = PackId(*p.hasher.finalize().as_bytes());
        self.stats.lock().unwrap().stored += p.len;
        let written = self.repo.clock().now().as_second();
        let entry = IndexPack::new(id, p.len, p.salt, p.frames, written);
        let tx = self.upload.lock().unwrap().clone();
        tx.ok_or_else(|| {
            Error::new(
                crate::ErrorKind::Backend,
                "pack added after the packer finished",
            )
        })?
        .send(FinishedPack {
            id,
            sink: p.sink,
            len: p.len,
            entry,
        })
        .map_err(|_| Error::new(crate::ErrorKind::Backend, "the pack uploader stopped"))
    }

    /// Compresses the last frame, waits for all frames, and sends the open pack.
    ///
    /// # Errors
    /// The first failure of any frame.
    pub fn finish(self: &Arc<Self>) -> Result<PackStats> {
        let last = {
            let mut st = self.state.lock().unwrap();
            (!st.frame.is_empty()).then(|| self.take_frame(&mut st))
        };
        if let Some((frame, blobs)) = last {
            self.spawn_frame(frame, blobs);
        }
        // Drain every token: all frames are placed once we hold them all.
        let n = self.tokens.0.capacity().unwrap_or(1);
        for _ in 0..n {
            self.tokens.1.recv().expect("token");
        }
        for _ in 0..n {
            self.tokens.0.send(()).expect("token");
        }
        if let Some(e) = self.error.lock().unwrap().take() {
            return Err(e);
        }
        let pack = self.state.lock().unwrap().pack.take();
        if let Some(p) = pack {
            self.send_pack(p)?;
        }
        drop(self.upload.lock().unwrap().take());
        Ok(*self.stats.lock().unwrap())
    }
}

/// Decrypts and decompresses one frame's ciphertext.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] when authentication or decompression fails.
pub fn decode_frame(
    key: &MasterKey,
    salt: &[u8; SALT_LEN],
    loc: &FrameLocation,
    ct: &[u8],
    pack: &PackId,
) -> Result<Vec<u8>> {
    let what = || {
        format!(
            "frame {} at offset {} of pack {}",
            loc.nonce, loc.offset, pack
        )
    };
    let payload =
        key.object_cipher(salt)
            .open(u64::from(loc.nonce), NonceDomain::Frame, ct, &[], &what)?;
    let plain = match loc.compression {
        Compression::None => payload,
        Compression::Zstd => zstd::bulk::decompress(&payload, loc.raw_length as usize)
            .map_err(|e| Error::corrupt(format!("{} does not decompress: {e}", what())))?,
    };
    if plain.len() != loc.raw_length as usize {
        return Err(Error::corrupt(format!(
            "{} has {} bytes, expected {}",
            what(),
            plain.len(),
            loc.raw_length
        )));
    }
    Ok(plain)
}

/// Parses a whole pack file: checks its hash, decrypts its header.
///
/// # Errors
/// [`crate::ErrorKind::Corrupt`] on any mismatch.
pub fn read_header(
    key: &MasterKey,
    id: &PackId,
    data: &[u8],
) -> Result<([u8; SALT_LEN], PackHeader)> {
    let what = || format!("pack {id}");
    if PackId::hash_of(data) != *id {
        return Err(Error::corrupt(format!(
            "pack {id} does not match its hash (damaged on storage)"
        )));
    }
    let salt = format::parse_prefix(data, ObjectKind::Pack, &what)?;
    if data.len() < PREFIX_LEN + 4 {
        return Err(Error::corrupt(format!("pack {id} is truncated")));
    }
    let hl = u32::from_le_bytes(data[data.len() - 4..].try_into().unwrap()) as usize;
    let end = data.len() - 4;
    if hl > end - PREFIX_LEN {
        return Err(Error::corrupt(format!(
            "pack {id} has an invalid header length"
        )));
    }
    let plain = key.object_cipher(&salt).open(
        0,
        NonceDomain::PackHeader,
        &data[end - hl..end],
        &data[..PREFIX_LEN],
        &what,
    )?;
    Ok((salt, format::from_bytes(&plain, &what)?))
}
