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

impl Repository {
    /// Every readable lock with its name.
    ///
    /// # Errors
    /// Backend failures.
    pub fn locks(&self) -> Result<Vec<(String, LockFile)>> {
        let mut out = Vec::new();
        for (name, _) in self.backend().list(FileType::Lock)? {
            // A lock removed between list and read is simply gone; any other
            // failure must not be mistaken for "no lock".
            let plain = match self.read_doc(FileType::Lock, ObjectKind::Lock, &name) {
                Ok(p) => p,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e.context(format!("cannot read lock {name}"))),
            };
            let l = serde_json::from_slice::<LockFile>(&plain).map_err(|e| {
                Error::corrupt(format!("lock {name} does not decode: {e}"))
                    .hint("remove it with `salvor unlock --remove-all` once no salvor runs")
            })?;
            out.push((name, l));
        }
        Ok(out)
    }

    fn conflict(&self, exclusive: bool, except: Option<&str>) -> Result<Option<LockFile>> {
        Ok(self
            .locks()?
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
            name,
            stop: Some(tx),
            refresher: Some(refresher),
        })
    }

    /// Removes stale locks, or every lock with `all`; returns how many.
    ///
    /// # Errors
    /// Backend failures.
    pub fn unlock(&self, all: bool) -> Result<usize> {
        let mut n = 0;
        for (name, l) in self.locks()? {
            if all || l.is_stale() {
                self.backend().delete(FileType::Lock, &name)?;
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
