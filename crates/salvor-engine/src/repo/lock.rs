//! Repository locks.
//!
//! Backups take shared locks, so many hosts can back up into one repository at
//! once; maintenance (prune) takes an exclusive lock. A lock is refreshed every
//! [`REFRESH_EVERY`] while held; one not refreshed for [`STALE_AFTER`], or held
//! by a process on this host that no longer exists, is stale and ignored, so a
//! `kill -9` never blocks the next run for long. `salvor unlock` removes stale
//! locks (or all, with `--remove-all`).

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::Repository;
use super::keys::hostname;
use crate::backend::FileType;
use crate::error::{Error, ErrorKind, Result};
use crate::format::ObjectKind;
use crate::format::lock::LockFile;

/// How often a held lock is rewritten.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// Age after which a lock is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// A held lock; released on drop.
pub struct LockGuard {
    repo: Repository,
    /// When the lock was requested: anything a writer that started later
    /// made is younger than this.
    taken: std::time::SystemTime,
    name: std::sync::Arc<std::sync::Mutex<String>>,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl LockFile {
    /// Whether this lock no longer counts.
    pub fn is_stale(&self) -> bool {
        let age = now() - self.refreshed;
        if age > STALE_AFTER.as_secs() as i64 {
            return true;
        }
        self.hostname == hostname() && !process_alive(self.pid)
    }
}

/// The locks in storage.
#[derive(Default)]
pub struct Locks {
    /// Locks that open, with their names.
    pub readable: Vec<(String, LockFile)>,
    /// Lock objects that do not open (damaged, or not written with this
    /// repository's key), with the reason. Such a lock cannot be proven to
    /// belong to a live process, so it counts as stale: it blocks nothing,
    /// and `unlock` removes it.
    pub unreadable: Vec<(String, Error)>,
}

impl Repository {
    /// Every lock in storage, readable or not.
    ///
    /// # Errors
    /// Backend failures other than a lock vanishing between list and read.
    pub fn locks(&self) -> Result<Locks> {
        let mut out = Locks::default();
        for (name, _) in self.backend().list(FileType::Lock)? {
            let plain = match self.read_doc(FileType::Lock, ObjectKind::Lock, &name) {
                Ok(p) => p,
                // Removed between list and read: simply gone.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    out.unreadable.push((name, e));
                    continue;
                }
                // Any other failure must not be mistaken for "no lock".
                Err(e) => return Err(e.context(format!("cannot read lock {name}"))),
            };
            match serde_json::from_slice::<LockFile>(&plain) {
                Ok(l) => out.readable.push((name, l)),
                Err(e) => {
                    let e = Error::corrupt(format!("lock {name} does not decode: {e}"));
                    out.unreadable.push((name, e));
                }
            }
        }
        Ok(out)
    }

    fn conflict(&self, exclusive: bool, except: Option<&str>) -> Result<Option<LockFile>> {
        let locks = self.locks()?;
        for (name, e) in &locks.unreadable {
            tracing::warn!(
                "ignoring lock {name}, which cannot be read ({e}); `salvor unlock` removes it"
            );
        }
        Ok(locks
            .readable
            .into_iter()
            .filter(|(n, l)| {
                Some(n.as_str()) != except && !l.is_stale() && (exclusive || l.exclusive)
            })
            .map(|(_, l)| l)
            .next())
    }

    fn write_lock(&self, exclusive: bool, command: &str) -> Result<String> {
        let lock = LockFile {
            exclusive,
            hostname: hostname(),
            pid: std::process::id(),
            refreshed: now(),
            command: command.into(),
        };
        let id = self.write_doc(
            FileType::Lock,
            ObjectKind::Lock,
            &serde_json::to_vec(&lock).expect("lock json"),
        )?;
        Ok(hex::encode(id))
    }

    /// Takes a shared or exclusive lock, refreshed in the background.
    ///
    /// # Errors
    /// [`ErrorKind::Locked`] naming the holder.
    pub fn lock(&self, exclusive: bool, command: &str) -> Result<LockGuard> {
        let locked = |l: LockFile| {
            let since = jiff::Timestamp::from_second(l.refreshed)
                .map(|t| t.to_string())
                .unwrap_or_default();
            Error::new(
                ErrorKind::Locked,
                format!(
                    "the repository is locked {}by `{}` on {} (pid {}, refreshed {since})",
                    if l.exclusive { "exclusively " } else { "" },
                    l.command,
                    l.hostname,
                    l.pid
                ),
            )
            .hint("wait for it to finish; if that process is dead, run `salvor unlock`")
        };
        let taken = std::time::SystemTime::now();
        if let Some(l) = self.conflict(exclusive, None)? {
            return Err(locked(l));
        }
        let name = self.write_lock(exclusive, command)?;
        // Re-check after writing: two processes may have raced past the first check.
        if let Some(l) = self.conflict(exclusive, Some(&name))? {
            let _ = self.backend().delete(FileType::Lock, &name);
            return Err(locked(l));
        }
        let name = std::sync::Arc::new(std::sync::Mutex::new(name));
        let (tx, rx) = mpsc::channel::<()>();
        let (repo, shared, cmd) = (self.clone(), name.clone(), command.to_string());
        let refresher = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(REFRESH_EVERY) {
                if let Ok(new) = repo.write_lock(exclusive, &cmd) {
                    let old = std::mem::replace(&mut *shared.lock().unwrap(), new);
                    let _ = repo.backend().delete(FileType::Lock, &old);
                }
            }
        });
        Ok(LockGuard {
            repo: self.clone(),
            taken,
            name,
            stop: Some(tx),
            refresher: Some(refresher),
        })
    }

    /// A shared lock for a command that only reads; `None`, with a warning,
    /// when the storage refuses writes (a read-only mount or a read-only
    /// credential), so that checking and restoring still work there.
    ///
    /// # Errors
    /// Lock conflicts and other backend failures.
    pub fn lock_for_reading(&self, command: &str) -> Result<Option<LockGuard>> {
        match self.lock(false, command) {
            Ok(g) => Ok(Some(g)),
            Err(e) if e.is_read_only() => {
                tracing::warn!(
                    "the repository is read-only here, so `{command}` runs without a lock: {e}"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the temporary files (local storage: `tmp/`) of writers that
    /// are dead, and returns how many. While `held` is the only live lock,
    /// every writer that could own a temporary file older than it is gone
    /// (a writer locks before it writes); otherwise only files untouched for
    /// [`STALE_AFTER`] are removed, like stale locks.
    ///
    /// # Errors
    /// Backend failures.
    pub fn remove_dead_temporaries(&self, held: &LockGuard) -> Result<u64> {
        let ours = held.name.lock().unwrap().clone();
        let locks = self.locks()?;
        let alone = locks
            .readable
            .iter()
            .all(|(n, l)| *n == ours || l.is_stale());
        // A margin for file times that come from a file server's clock.
        let cutoff = if alone {
            held.taken - Duration::from_secs(2)
        } else {
            std::time::SystemTime::now() - STALE_AFTER
        };
        self.backend().remove_temporaries(cutoff)
    }

    /// Removes stale and unreadable locks, or every lock with `all`;
    /// returns how many.
    ///
    /// # Errors
    /// Backend failures.
    pub fn unlock(&self, all: bool) -> Result<usize> {
        let locks = self.locks()?;
        let mut n = 0;
        for (name, _) in &locks.unreadable {
            self.backend().delete(FileType::Lock, name)?;
            n += 1;
        }
        for (name, l) in &locks.readable {
            if all || l.is_stale() {
                self.backend().delete(FileType::Lock, name)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let name = self.name.lock().unwrap().clone();
        let _ = self.repo.backend().delete(FileType::Lock, &name);
    }
}
