//! Repository locks.
//!
//! Backups take shared locks, so many hosts can back up into one repository at
//! once; maintenance (prune) takes an exclusive lock. A lock is refreshed every
//! [`REFRESH_EVERY`] while held; one not refreshed for [`STALE_AFTER`], or held
//! by a process on this host that no longer exists, is stale and ignored, so a
//! `kill -9` never blocks the next run for long. `salvor unlock` removes stale
//! locks (or all, with `--remove-all`).
//!
//! A held lock is live, not assumed: a refresh that fails is retried every
//! [`RETRY_EVERY`], and a holder whose lock went unrefreshed for
//! [`LOST_AFTER`], or vanished from storage (removed by `unlock --remove-all`,
//! or by a process that judged it stale), has lost it. [`LockGuard::check`]
//! says so, and [`LockGuard::verify`] (which also looks the lock up in
//! storage) stands before every commit: an operation whose lock is lost
//! stops without recording anything, since a prune may already have acted as
//! if it were gone. All times come from the repository's clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
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
/// How soon a failed refresh is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(30);
/// Age after which a lock is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// Age after which the holder of a lock it could not refresh gives it up:
/// ten minutes before others may call it stale, a margin for clock skew
/// between hosts and for the time a commit takes.
pub const LOST_AFTER: Duration = Duration::from_secs(20 * 60);
/// How often the refresher looks at the clock (real time): time is the
/// repository's clock, which tests move, so the refresher cannot just sleep.
const POLL: Duration = Duration::from_secs(1);

/// A held lock; released on drop.
pub struct LockGuard {
    repo: Repository,
    /// When the lock was requested: anything a writer that started later
    /// made is younger than this.
    taken: std::time::SystemTime,
    state: Arc<LockState>,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

/// What the holder and its refresher share.
struct LockState {
    /// The lock's current object name. Held while the lock is replaced and
    /// while it is looked up, so a lookup never sees the gap between the
    /// new lock's write and the old one's removal.
    name: Mutex<String>,
    /// Unix seconds (repository clock) of the last successful write.
    refreshed: AtomicI64,
    /// Unix seconds (repository clock) when the lock was first written.
    started: i64,
    /// Why the last refresh failed, if it did.
    last_error: Mutex<Option<String>>,
    /// Set when the lock is known to be gone from storage.
    lost: Mutex<Option<String>>,
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// This process's PID namespace (`pid:[4026531836]`): two containers may
/// share a host name, but only processes of one namespace see each other's
/// pids.
pub fn pid_namespace() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

impl LockFile {
    /// Whether this lock no longer counts at `now` (Unix seconds): too old,
    /// or held by a process that this one can see is gone (same host name
    /// and PID namespace, no such pid).
    pub fn is_stale_at(&self, now: i64) -> bool {
        self.is_stale_by_age(now)
            || (self.hostname == hostname()
                && self
                    .pid_namespace
                    .as_deref()
                    .is_none_or(|ns| Some(ns) == pid_namespace().as_deref())
                && !process_alive(self.pid))
    }

    /// Whether this lock is older than [`STALE_AFTER`] at `now`.
    pub fn is_stale_by_age(&self, now: i64) -> bool {
        now - self.refreshed > STALE_AFTER.as_secs().cast_signed()
    }
}

fn lock_lost(why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::LockLost,
        format!("this run lost its repository lock: {why}; nothing was recorded"),
    )
    .hint("run it again; if locks keep being lost, check the storage connection and that nobody removes live locks")
}

impl LockGuard {
    /// The lock's current object name.
    pub fn name(&self) -> String {
        self.state.name.lock().unwrap().clone()
    }

    /// Whether the lock still holds, from what the refresher has seen.
    ///
    /// # Errors
    /// [`ErrorKind::LockLost`] when the lock vanished from storage or has
    /// gone unrefreshed for [`LOST_AFTER`].
    pub fn check(&self) -> Result<()> {
        if let Some(why) = &*self.state.lost.lock().unwrap() {
            return Err(lock_lost(why));
        }
        let now = self.repo.clock().now().as_second();
        let age = now - self.state.refreshed.load(Ordering::SeqCst);
        if age >= LOST_AFTER.as_secs().cast_signed() {
            let cause = self
                .state
                .last_error
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(|| "no refresh ran".into());
            return Err(lock_lost(format!(
                "it could not be refreshed for {} minutes ({cause})",
                age / 60
            )));
        }
        Ok(())
    }

    /// [`Self::check`], and the lock is looked up in storage: what a
    /// commit does before it records anything.
    ///
    /// # Errors
    /// [`ErrorKind::LockLost`]; backend failures of the lookup.
    pub fn verify(&self) -> Result<()> {
        self.check()?;
        let name = self.state.name.lock().unwrap();
        if !self.repo.backend().exists(FileType::Lock, &name)? {
            let why = "it was removed from storage by another process".to_string();
            *self.state.lost.lock().unwrap() = Some(why.clone());
            return Err(lock_lost(why));
        }
        Ok(())
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
        self.locks_except(None)
    }

    /// [`Self::locks`] without reading the lock named `except` (the
    /// caller's own: no need to fetch it back).
    fn locks_except(&self, except: Option<&str>) -> Result<Locks> {
        let mut out = Locks::default();
        for crate::backend::ObjectInfo { name, .. } in self.backend().list(FileType::Lock)? {
            if Some(name.as_str()) == except {
                continue;
            }
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
        let locks = self.locks_except(except)?;
        let now = self.clock().now().as_second();
        for (name, e) in &locks.unreadable {
            tracing::warn!("ignoring lock {name}, which cannot be read ({e}); unlock removes it");
        }
        Ok(locks
            .readable
            .into_iter()
            .filter(|(n, l)| {
                Some(n.as_str()) != except && !l.is_stale_at(now) && (exclusive || l.exclusive)
            })
            .map(|(_, l)| l)
            .next())
    }

    /// Writes a lock stamped `refreshed`, of a session that began at
    /// `started`; returns its name.
    fn write_lock(
        &self,
        exclusive: bool,
        command: &str,
        refreshed: i64,
        started: i64,
    ) -> Result<String> {
        let lock = LockFile {
            exclusive,
            hostname: hostname(),
            pid: std::process::id(),
            refreshed,
            command: command.into(),
            started: Some(started),
            pid_namespace: pid_namespace(),
        };
        let id = self.write_doc(
            FileType::Lock,
            ObjectKind::Lock,
            &serde_json::to_vec(&lock).expect("lock json"),
        )?;
        Ok(hex::encode(id))
    }

    /// One refresh: the held lock must still be in storage (else it is
    /// lost, and is not written again: a prune may have acted on its
    /// absence); a new lock is written, then the old one removed.
    fn refresh_lock(&self, state: &LockState, exclusive: bool, command: &str) -> Result<()> {
        let mut name = state.name.lock().unwrap();
        // A holder that went unrefreshed for LOST_AFTER (its host was
        // suspended, the process stopped) has lost the lock even if the
        // lock is still in storage: others may have judged it stale
        // meanwhile and acted on its absence, so it is not written again.
        let since = self.clock().now().as_second() - state.refreshed.load(Ordering::SeqCst);
        if since >= LOST_AFTER.as_secs().cast_signed() {
            let cause = state.last_error.lock().unwrap().clone().unwrap_or_else(|| {
                "no refresh ran: was this process stopped, or its host suspended?".into()
            });
            *state.lost.lock().unwrap() = Some(format!(
                "it could not be refreshed for {} minutes ({cause})",
                since / 60
            ));
            return Ok(());
        }
        if !self.backend().exists(FileType::Lock, &name)? {
            *state.lost.lock().unwrap() =
                Some("it was removed from storage by another process".into());
            return Ok(());
        }
        let now = self.clock().now().as_second();
        let new = self.write_lock(exclusive, command, now, state.started)?;
        let old = std::mem::replace(&mut *name, new);
        state.refreshed.store(now, Ordering::SeqCst);
        *state.last_error.lock().unwrap() = None;
        // A leftover old lock is harmless: it goes stale.
        let _ = self.backend().delete(FileType::Lock, &old);
        Ok(())
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
            .remedy(crate::Remedy::RemoveStaleLock)
        };
        let taken = self.clock().system_time();
        if let Some(l) = self.conflict(exclusive, None)? {
            return Err(locked(l));
        }
        let refreshed = self.clock().now().as_second();
        let name = self.write_lock(exclusive, command, refreshed, refreshed)?;
        // Re-check after writing: two processes may have raced past the first check.
        if let Some(l) = self.conflict(exclusive, Some(&name))? {
            let _ = self.backend().delete(FileType::Lock, &name);
            return Err(locked(l));
        }
        let state = Arc::new(LockState {
            name: Mutex::new(name),
            refreshed: AtomicI64::new(refreshed),
            started: refreshed,
            last_error: Mutex::new(None),
            lost: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel::<()>();
        let (repo, shared, cmd) = (self.clone(), state.clone(), command.to_string());
        let refresher = std::thread::spawn(move || {
            let mut due = refreshed + REFRESH_EVERY.as_secs().cast_signed();
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(POLL) {
                let now = repo.clock().now().as_second();
                if now < due {
                    continue;
                }
                match repo.refresh_lock(&shared, exclusive, &cmd) {
                    Ok(()) if shared.lost.lock().unwrap().is_some() => {
                        tracing::error!(
                            "the repository lock of `{cmd}` is lost: {}",
                            shared.lost.lock().unwrap().clone().unwrap_or_default()
                        );
                        return;
                    }
                    Ok(()) => due = now + REFRESH_EVERY.as_secs().cast_signed(),
                    Err(e) => {
                        tracing::warn!("cannot refresh the repository lock (retrying): {e}");
                        *shared.last_error.lock().unwrap() = Some(e.to_string());
                        due = now + RETRY_EVERY.as_secs().cast_signed();
                    }
                }
            }
        });
        Ok(LockGuard {
            repo: self.clone(),
            taken,
            state,
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
        if !self.backend().capabilities().temporaries {
            // Object stores write whole objects and keep no temporaries:
            // no need to list the locks, a request saved.
            return Ok(0);
        }
        let ours = held.name();
        let locks = self.locks()?;
        let now = self.clock().now().as_second();
        let alone = locks
            .readable
            .iter()
            .all(|(n, l)| *n == ours || l.is_stale_at(now));
        // A margin for file times that come from a file server's clock; a
        // remote store's times come from its own clock, which may be
        // behind ours by minutes, so there only the stale age counts.
        let cutoff = if alone && self.backend().is_local() {
            held.taken - Duration::from_secs(2)
        } else {
            self.clock().system_time() - STALE_AFTER
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
        let now = self.clock().now().as_second();
        let mut n = 0;
        for (name, _) in &locks.unreadable {
            self.backend().delete(FileType::Lock, name)?;
            n += 1;
        }
        for (name, l) in &locks.readable {
            if all || l.is_stale_at(now) {
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
        let name = self.name();
        let _ = self.repo.backend().delete(FileType::Lock, &name);
    }
}
