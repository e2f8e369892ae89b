//! One structured error for the whole engine.
//!
//! Every error carries a [`ErrorKind`] (which the CLI maps to an exit code in one
//! place), a lower-case message naming the offending object, and optionally
//! what the user can do next: a hint in words that fit any front end, and a
//! typed [`Remedy`] each front end words itself (the CLI names its
//! commands; the engine names none). Following rustic_core's policy we never
//! downgrade an error: context is attached, the kind is kept.

mod remedy;

use std::fmt;

pub use remedy::Remedy;

/// What went wrong, coarse enough to choose an exit code and a retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No repository at the given location.
    RepositoryNotFound,
    /// `init` on a location that already holds a repository.
    RepositoryExists,
    /// No key file opens with the given passphrase.
    WrongPassword,
    /// Another process holds a conflicting lock.
    Locked,
    /// This run's own lock vanished or went unrefreshed, so it stopped
    /// before recording anything.
    LockLost,
    /// Data read back failed authentication, hashing or parsing.
    Corrupt,
    /// The storage backend failed (network, permissions, full disk).
    Backend,
    /// A local file-system operation failed.
    Io,
    /// A flag, argument or configuration value makes no sense.
    InvalidInput,
    /// A snapshot, path or key the user named does not exist.
    NotFound,
    /// The operation was interrupted by the user.
    Interrupted,
}

/// The engine's error type.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
    remedy: Option<Remedy>,
    /// Whether trying the same request again may succeed (see [`Error::is_transient`]).
    transient: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Shorthand used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a message naming the offending object.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            hint: None,
            remedy: None,
            transient: false,
            source: None,
        }
    }

    /// Marks the error as transient: the same request may succeed if sent
    /// again (a timeout, a reset connection, a 5xx or a throttling reply).
    #[must_use]
    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    /// Whether the same request may succeed if sent again. Only backends
    /// say so, for what the store itself reports as temporary or for a
    /// connection that broke; everything else (a missing object, a refused
    /// permission, a full disk, corrupt data) is permanent, and retrying it
    /// would only delay the error.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// Adds the sentence that tells the user what to do next.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Names the action that resolves the error (shown after the hint).
    #[must_use]
    pub fn remedy(mut self, remedy: Remedy) -> Self {
        self.remedy = Some(remedy);
        self
    }

    /// Keeps the underlying cause (shown after the message).
    #[must_use]
    pub fn source(mut self, err: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(err));
        self
    }

    /// An I/O failure on `path` while doing `what`.
    pub fn io(what: &str, path: impl AsRef<std::path::Path>, err: std::io::Error) -> Self {
        let kind = if err.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Io
        };
        let mut e = Self::new(kind, format!("{what} {}", path.as_ref().display())).source(err);
        if e.is_no_space() {
            e = e.hint("free space on that file system, then run the command again");
        }
        e
    }

    /// A corrupt object; the remedy is always a check of all data.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, message).remedy(Remedy::CheckData)
    }

    /// The operation was cancelled (a signal, or its caller gave up)
    /// before it finished; `left` says what that leaves undone.
    pub fn interrupted(left: &str) -> Self {
        Self::new(ErrorKind::Interrupted, format!("interrupted: {left}"))
    }

    /// An invalid argument or configuration value.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// The message and cause without the hint, for quoting inside another error.
    pub fn clone_message(&self) -> String {
        match &self.source {
            Some(src) => format!("{}: {src}", self.message),
            None => self.message.clone(),
        }
    }

    /// A copy to hand out again, its cause kept as text: the same kind,
    /// message, hint, remedy and transient status.
    #[must_use]
    pub fn duplicate(&self) -> Self {
        Self {
            kind: self.kind,
            message: self.clone_message(),
            hint: self.hint.clone(),
            remedy: self.remedy,
            transient: self.transient,
            source: None,
        }
    }

    /// The same error without its hint and remedy, for when a caller
    /// gives a better one.
    #[must_use]
    pub fn without_hint(mut self) -> Self {
        self.hint = None;
        self.remedy = None;
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The hint, if any.
    pub fn hint_text(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// The remedy, if any.
    pub fn remedy_kind(&self) -> Option<Remedy> {
        self.remedy
    }

    /// The error on one line, with the remedy worded by `say`: message,
    /// cause, hint and remedy, separated by `: ` and `; `. [`Display`] is
    /// this with the engine's own wording ([`Remedy::neutral`]).
    ///
    /// [`Display`]: fmt::Display
    pub fn render(&self, say: &dyn Fn(Remedy) -> &'static str) -> String {
        let mut out = self.message.clone();
        if let Some(src) = &self.source {
            out.push_str(&format!(": {src}"));
        }
        for part in self.hint.as_deref().into_iter().chain(self.remedy.map(say)) {
            out.push_str("; ");
            out.push_str(part);
        }
        out
    }

    /// True when the root cause is ENOSPC.
    pub fn is_no_space(&self) -> bool {
        self.has_os_error(&[libc::ENOSPC])
    }

    /// True when the storage refused a write because it is read-only here
    /// (a read-only mount, or no write permission).
    pub fn is_read_only(&self) -> bool {
        self.has_os_error(&[libc::EROFS, libc::EACCES, libc::EPERM])
    }

    /// True when the root cause is one of these `errno` values. Causes that
    /// crossed a library boundary as text (OpenDAL keeps the I/O error's
    /// message only) are matched by the system's message for the code.
    fn has_os_error(&self, codes: &[i32]) -> bool {
        let texts: Vec<String> = codes
            .iter()
            .map(|&c| std::io::Error::from_raw_os_error(c).to_string())
            .map(|t| t.split(" (os error").next().unwrap_or_default().to_string())
            .collect();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = self
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.raw_os_error().is_some_and(|c| codes.contains(&c))
            {
                return true;
            }
            let msg = e.to_string();
            if texts.iter().any(|t| msg.contains(t.as_str())) {
                return true;
            }
            cur = e.source();
        }
        false
    }

    /// Prefixes the message with more context ("while backing up /etc: ...").
    #[must_use]
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(&Remedy::neutral))
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
