//! The backend contract, checked against a live store (kopia's
//! `validate-provider`). Every provider and decorator is tested with it,
//! and `salvor check-storage` runs it against a user's own store before
//! they trust it with a repository: S3-compatible servers differ in
//! exactly the places listed here (ranged reads past the end, listing
//! after write, what a missing object looks like).
//!
//! The checks write only objects with random names and delete them again;
//! run them in a location of their own, not inside a live repository.

use std::path::Path;
use std::time::Duration;

use super::{Backend, FileType, ObjectInfo};
use crate::error::ErrorKind;

/// One check of the contract and how it went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// What was checked, in a few words.
    pub check: &'static str,
    /// `None` when the store behaved; otherwise what it did instead.
    pub failure: Option<String>,
    /// How long the check took.
    #[serde(serialize_with = "seconds")]
    pub took: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

type Check = fn(&dyn Backend, &Path) -> Result<(), String>;

const CHECKS: [(&str, Check); 9] = [
    ("missing objects are reported as missing", missing),
    ("written objects read back and are listed", write_read_list),
    ("ranged reads return exactly the range", ranged_reads),
    ("oversized documents are refused", at_most),
    ("objects written in pieces appear whole, at once", pieces),
    ("abandoned pieces leave nothing", abandoned),
    ("concurrent writers all land", concurrent),
    ("deleted objects are gone", deleted),
    ("create-if-absent never replaces an object", create_new),
];

/// Runs every check against `backend`; `spool_dir` holds what objects
/// written in pieces wait in. Outcomes come in a fixed order.
pub fn run(backend: &dyn Backend, spool_dir: &Path) -> Vec<Outcome> {
    CHECKS
        .iter()
        .map(|(check, f)| {
            let start = std::time::Instant::now();
            let failure = f(backend, spool_dir).err();
            Outcome {
                check,
                failure,
                took: start.elapsed(),
            }
        })
        .collect()
}

fn name() -> String {
    crate::id::random_hex()
}

/// Bytes that differ at every offset, so a wrong range cannot pass.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let [lo, hi, ..] = i.to_le_bytes();
            lo.wrapping_mul(31).wrapping_add(seed) ^ hi
        })
        .collect()
}

fn want<T>(what: &str, r: crate::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn is_missing<T>(what: &str, r: crate::Result<T>) -> Result<(), String> {
    match r {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{what}: not reported as missing but {e}")),
        Ok(_) => Err(format!("{what}: succeeded on a missing object")),
    }
}

fn listed(b: &dyn Backend, kind: FileType, name: &str) -> Result<Option<ObjectInfo>, String> {
    let all = want(&format!("listing {}", kind.dir()), b.list(kind))?;
    Ok(all.into_iter().find(|o| o.name == name))
}

fn missing(b: &dyn Backend, _: &Path) -> Result<(), String> {
    let n = name();
    is_missing("read", b.read(FileType::Snapshot, &n))?;
    is_missing("ranged read", b.read_range(FileType::Pack, &n, 0, 16))?;
    is_missing("bounded read", b.read_at_most(FileType::Key, &n, 1 << 20))?;
    if want("exists", b.exists(FileType::Index, &n))? {
        return Err("exists: true for a missing object".into());
    }
    want("delete of a missing object", b.delete(FileType::Lock, &n))
}

fn write_read_list(b: &dyn Backend, _: &Path) -> Result<(), String> {
    let n = name();
    let data = pattern(5000, 1);
    let before = jiff::Timestamp::now();
    want("write", b.write(FileType::Snapshot, &n, &data))?;
    let result = (|| {
        if want("read", b.read(FileType::Snapshot, &n))? != data {
            return Err("read: other bytes than were written".into());
        }
        if !want("exists", b.exists(FileType::Snapshot, &n))? {
            return Err("exists: false right after the write".into());
        }
        let info =
            listed(b, FileType::Snapshot, &n)?.ok_or("listing: a written object is not listed")?;
        if info.size != data.len() as u64 {
            return Err(format!(
                "listing: size {} for {} bytes",
                info.size,
                data.len()
            ));
        }
        // The store's clock, not ours: allow for skew, but not for nonsense.
        if let Some(t) = info.modified {
            let skew = jiff::SignedDuration::from_hours(24);
            if t < before - skew || t > jiff::Timestamp::now() + skew {
                return Err(format!("listing: modification time {t} is not near now"));
            }
        }
        // Writing the same object again (a retried upload) is harmless.
        want("second write", b.write(FileType::Snapshot, &n, &data))?;
        let empty = name();
        want("empty write", b.write(FileType::Lock, &empty, &[]))?;
        let back = want("empty read", b.read(FileType::Lock, &empty));
        let _ = b.delete(FileType::Lock, &empty);
        if !back?.is_empty() {
            return Err("empty read: bytes in an empty object".into());
        }
        Ok(())
    })();
    let _ = b.delete(FileType::Snapshot, &n);
    result
}

fn ranged_reads(b: &dyn Backend, _: &Path) -> Result<(), String> {
    let n = name();
    let data = pattern(1 << 20, 2);
    want("write", b.write(FileType::Pack, &n, &data))?;
    let result = (|| {
        let len = data.len() as u64;
        for (offset, length) in [(0, 1), (0, 4096), (1000, 77), (len - 10, 10), (0, len)] {
            let got = want(
                &format!("range {offset}+{length}"),
                b.read_range(FileType::Pack, &n, offset, length),
            )?;
            let (o, l) = (
                usize::try_from(offset).unwrap_or(usize::MAX),
                usize::try_from(length).unwrap_or(usize::MAX),
            );
            if got != data[o..o + l] {
                return Err(format!("range {offset}+{length}: other bytes"));
            }
        }
        // A range past the end must fail, not come back short.
        for (offset, length) in [(len - 10, 20), (len + 5, 5)] {
            if b.read_range(FileType::Pack, &n, offset, length).is_ok() {
                return Err(format!("range {offset}+{length} past the end succeeded"));
            }
        }
        Ok(())
    })();
    let _ = b.delete(FileType::Pack, &n);
    result
}

fn at_most(b: &dyn Backend, _: &Path) -> Result<(), String> {
    let n = name();
    want("write", b.write(FileType::Key, &n, &pattern(300, 3)))?;
    let result = (|| {
        want(
            "read within the bound",
            b.read_at_most(FileType::Key, &n, 300),
        )?;
        match b.read_at_most(FileType::Key, &n, 299) {
            Err(e) if e.kind() == ErrorKind::Corrupt => Ok(()),
            Err(e) => Err(format!("read past the bound: the wrong error: {e}")),
            Ok(_) => Err("read past the bound: succeeded".into()),
        }
    })();
    let _ = b.delete(FileType::Key, &n);
    result
}

/// Larger than one multipart part on S3 (5-16 MiB), written in 1 MiB pieces.
const LARGE: usize = 20 << 20;

fn pieces(b: &dyn Backend, spool: &Path) -> Result<(), String> {
    let n = name();
    let data = pattern(LARGE, 4);
    let mut sink = want("sink", b.sink(spool))?;
    for piece in data.chunks(1 << 20) {
        want("piece", sink.write(piece))?;
    }
    if listed(b, FileType::Pack, &n)?.is_some() || want("exists", b.exists(FileType::Pack, &n))? {
        return Err("an object being written is visible before its commit".into());
    }
    want("commit", sink.commit(b, FileType::Pack, &n))?;
    let result = (|| {
        let info = listed(b, FileType::Pack, &n)?.ok_or("a committed object is not listed")?;
        if info.size != LARGE as u64 {
            return Err(format!("listed with {} bytes of {LARGE}", info.size));
        }
        let tail = want(
            "tail",
            b.read_range(FileType::Pack, &n, LARGE as u64 - 4096, 4096),
        )?;
        if tail != data[LARGE - 4096..] || want("read", b.read(FileType::Pack, &n))? != data {
            return Err("other bytes than were written".into());
        }
        Ok(())
    })();
    let _ = b.delete(FileType::Pack, &n);
    result
}

fn abandoned(b: &dyn Backend, spool: &Path) -> Result<(), String> {
    let before = want("listing", b.list(FileType::Pack))?.len();
    let mut sink = want("sink", b.sink(spool))?;
    want("piece", sink.write(&pattern(1 << 20, 5)))?;
    drop(sink);
    let after = want("listing", b.list(FileType::Pack))?.len();
    if after != before {
        return Err(format!("{} objects appeared", after - before));
    }
    Ok(())
}

fn concurrent(b: &dyn Backend, _: &Path) -> Result<(), String> {
    const WRITERS: u8 = 8;
    const EACH: u8 = 4;
    let shared = name();
    let names: Vec<Vec<String>> = (0..WRITERS)
        .map(|_| (0..EACH).map(|_| name()).collect())
        .collect();
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(w, mine)| {
                let shared = &shared;
                s.spawn(move || {
                    for (i, n) in mine.iter().enumerate() {
                        let data = pattern(2000 + i, u8::try_from(w).unwrap_or(0));
                        want("write", b.write(FileType::Index, n, &data))?;
                    }
                    // Everyone writes the same bytes under one name, as
                    // two hosts storing the same pack do.
                    want("shared write", b.write(FileType::Index, shared, b"same"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a writer panicked".into())))
            .collect()
    });
    let result = (|| {
        results.into_iter().collect::<Result<Vec<()>, String>>()?;
        let all = want("listing", b.list(FileType::Index))?;
        for (w, mine) in names.iter().enumerate() {
            for (i, n) in mine.iter().enumerate() {
                let size = all.iter().find(|o| &o.name == n).map(|o| o.size);
                if size != Some(2000 + i as u64) {
                    return Err(format!("writer {w}'s object {i} is listed as {size:?}"));
                }
                if want("read", b.read(FileType::Index, n))?
                    != pattern(2000 + i, u8::try_from(w).unwrap_or(0))
                {
                    return Err(format!("writer {w}'s object {i} holds other bytes"));
                }
            }
        }
        if want("shared read", b.read(FileType::Index, &shared))? != b"same" {
            return Err("the object all writers wrote holds other bytes".into());
        }
        Ok(())
    })();
    for n in names.iter().flatten().chain([&shared]) {
        let _ = b.delete(FileType::Index, n);
    }
    result
}

fn deleted(b: &dyn Backend, _: &Path) -> Result<(), String> {
    let n = name();
    want("write", b.write(FileType::Lock, &n, b"lock"))?;
    want("delete", b.delete(FileType::Lock, &n))?;
    is_missing("read after delete", b.read(FileType::Lock, &n))?;
    if want("exists", b.exists(FileType::Lock, &n))? {
        return Err("exists: true after delete".into());
    }
    if listed(b, FileType::Lock, &n)?.is_some() {
        return Err("listing: a deleted object is still listed".into());
    }
    want("second delete", b.delete(FileType::Lock, &n))
}

fn create_new(b: &dyn Backend, _: &Path) -> Result<(), String> {
    let n = name();
    let result = (|| {
        if !want("create", b.create_new(FileType::Snapshot, &n, b"first"))? {
            return Err("a new name was reported as taken".into());
        }
        if want(
            "second create",
            b.create_new(FileType::Snapshot, &n, b"second"),
        )? {
            return Err("an existing object was reported as created".into());
        }
        if want("read", b.read(FileType::Snapshot, &n))? != b"first" {
            return Err("an existing object was replaced".into());
        }
        if !b.capabilities().atomic_create {
            return Ok(());
        }
        // Where the store promises atomicity: of eight racing writers,
        // exactly one creates the object, and its bytes are what it holds.
        let raced = name();
        let won: Vec<(u8, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u8)
                .map(|w| {
                    let raced = &raced;
                    s.spawn(move || {
                        let made = b
                            .create_new(FileType::Lock, raced, &[w; 64])
                            .unwrap_or(false);
                        (w, made)
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let winners: Vec<u8> = won.iter().filter(|(_, m)| *m).map(|(w, _)| *w).collect();
        let held = want("raced read", b.read(FileType::Lock, &raced));
        let _ = b.delete(FileType::Lock, &raced);
        match winners.as_slice() {
            [w] if held? == [*w; 64] => Ok(()),
            [_] => Err("the racing writer that won does not hold the object".into()),
            _ => Err(format!(
                "{} of 8 racing writers created one object",
                winners.len()
            )),
        }
    })();
    let _ = b.delete(FileType::Snapshot, &n);
    result
}
