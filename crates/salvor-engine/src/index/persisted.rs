//! An index persisted in the local cache, so that opening a large
//! repository maps one file instead of decoding every index file again
//! (10M blobs: seconds of decryption, decompression and sorting).
//!
//! The file is what [`super::Index`] holds, in its own layout: the packs,
//! the frames and the sorted blob records, which are mapped as the base run
//! of the blob table and never loaded into memory. It names the index files
//! it was made from; a reader uses it only when they are all still listed,
//! and loads any others on top. Layout (FORMAT.md section 15):
//!
//! ```text
//! "SALVORIT" | version u32 LE (1) | 0u32 | mac [32] | meta_len u64 LE
//!   | meta (postcard) | records (48 bytes each, ascending by id)
//! ```
//!
//! `mac` is the keyed BLAKE3 hash (key: [`crate::crypto::MasterKey::cache_key`])
//! of every byte after it, checked on every open: a damaged or forged file
//! is ignored and made again.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::table::{BlobTable, REC};
use super::{FrameLocation, Index, PackInfo};
use crate::error::{Error, ErrorKind, Result};
use crate::spill::Run;

const MAGIC: &[u8; 8] = b"SALVORIT";
const VERSION: u32 = 1;
/// Magic, version, reserved word, mac.
const MAC_END: usize = 8 + 4 + 4 + 32;
const HEADER: usize = MAC_END + 8;

#[derive(Serialize, Deserialize)]
struct Meta {
    /// The index files this index was made from, sorted.
    files: Vec<String>,
    packs: Vec<PackInfo>,
    frames: Vec<FrameLocation>,
}

/// Feeds everything written after the mac into the keyed hash.
struct Macced<'a, W: Write> {
    out: W,
    mac: &'a mut blake3::Hasher,
}

impl<W: Write> Write for Macced<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.mac.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(what, path, e)
}

impl Index {
    /// Writes this index, made from the index files `files`, to `path`
    /// (a new file; the caller renames it into place).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn persist(&self, path: &Path, key: &[u8; 32], files: &[String]) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        let mut files = files.to_vec();
        files.sort_unstable();
        let meta = postcard::to_allocvec(&Meta {
            files,
            packs: self.packs.clone(),
            frames: self.frames.clone(),
        })
        .map_err(|e| {
            Error::new(
                ErrorKind::Backend,
                format!("cannot encode the index table: {e}"),
            )
        })?;
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| io("cannot create", path, e))?
        };
        let mut mac = blake3::Hasher::new_keyed(key);
        {
            let mut head = [0u8; MAC_END];
            head[..8].copy_from_slice(MAGIC);
            head[8..12].copy_from_slice(&VERSION.to_le_bytes());
            let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut file);
            out.write_all(&head)
                .map_err(|e| io("cannot write", path, e))?;
            let mut w = Macced { out, mac: &mut mac };
            w.write_all(&(meta.len() as u64).to_le_bytes())
                .and_then(|()| w.write_all(&meta))
                .map_err(|e| io("cannot write", path, e))?;
            self.blobs.write_sorted(&mut w)?;
            w.flush().map_err(|e| io("cannot write", path, e))?;
        }
        file.seek(SeekFrom::Start(16))
            .and_then(|_| file.write_all(mac.finalize().as_bytes()))
            .map_err(|e| io("cannot write", path, e))
    }

    /// Opens an index written by [`Index::persist`]; what is added to it
    /// later spills into `spill_dir`. Returns the index and the index
    /// files it was made from, or `None` for a file that is damaged, forged
    /// or of another version (the caller makes it again).
    ///
    /// # Errors
    /// When the file cannot be read or mapped.
    pub fn open_persisted(
        file: &std::fs::File,
        key: &[u8; 32],
        spill_dir: std::path::PathBuf,
    ) -> Result<Option<(Index, Vec<String>)>> {
        let map_err = |e: std::io::Error| {
            Error::new(ErrorKind::Backend, "cannot map the cached index table").source(e)
        };
        let len = file.metadata().map_err(map_err)?.len();
        if len < HEADER as u64 {
            return Ok(None);
        }
        // SAFETY: table files are never written once renamed into place
        // (they are replaced by rename), and this handle keeps its inode.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(file) }.map_err(map_err)?;
        let version = u32::from_le_bytes(map[8..12].try_into().expect("4 bytes"));
        if &map[..8] != MAGIC || version != VERSION {
            return Ok(None);
        }
        let mut mac = blake3::Hasher::new_keyed(key);
        mac.update(&map[MAC_END..]);
        if mac.finalize() != blake3::Hash::from_bytes(map[16..MAC_END].try_into().expect("32")) {
            tracing::warn!("the cached index table is damaged; it is made again");
            return Ok(None);
        }
        let meta_len = u64::from_le_bytes(map[MAC_END..HEADER].try_into().expect("8 bytes"));
        let records_at = (HEADER as u64).checked_add(meta_len).filter(|&e| e <= len);
        let Some(records_at) = records_at else {
            return Ok(None);
        };
        let meta_end =
            usize::try_from(records_at).map_err(|_| Error::corrupt("index table too large"))?;
        let Ok(meta) = postcard::from_bytes::<Meta>(&map[HEADER..meta_end]) else {
            return Ok(None);
        };
        let body = len - records_at;
        if body % REC as u64 != 0 {
            return Ok(None);
        }
        drop(map);
        let n = usize::try_from(body / REC as u64)
            .map_err(|_| Error::corrupt("index table too large"))?;
        let run = Run::map_file(file, records_at, REC, n)?;
        let pack_numbers = meta
            .packs
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id, u32::try_from(i).expect("fewer than 2^32 packs")))
            .collect();
        let index = Index {
            packs: meta.packs,
            pack_numbers,
            frames: meta.frames,
            blobs: BlobTable::with_base(spill_dir, run),
            ..Index::default()
        };
        Ok(Some((index, meta.files)))
    }
}
