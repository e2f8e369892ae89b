//! Secrets in the configuration: `{ env = "VAR" }`, `{ file = "PATH" }` or
//! `{ command = "CMD" }`. The value is read only when needed and never
//! printed: `Debug` shows where it comes from, not what it is.

use std::path::PathBuf;

use salvor_engine::{Error, Result};
use serde::Deserialize;

/// Where a secret comes from.
#[derive(Clone, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Secret {
    /// An environment variable.
    Env {
        /// Its name.
        env: String,
    },
    /// The first line of a file.
    File {
        /// Its path.
        file: PathBuf,
    },
    /// The first line of a command's output.
    Command {
        /// Run with `sh -c`.
        command: String,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env { env } => write!(f, "Secret(env {env})"),
            Self::File { file } => write!(f, "Secret(file {})", file.display()),
            Self::Command { .. } => f.write_str("Secret(command)"),
        }
    }
}

impl Secret {
    /// The secret's value.
    ///
    /// # Errors
    /// Unset variable, unreadable file, failing command: each named, value never shown.
    pub fn resolve(&self) -> Result<String> {
        match self {
            Self::Env { env } => std::env::var(env).map_err(|_| {
                Error::invalid(format!("environment variable {env} is not set"))
                    .hint("export it before running salvor")
            }),
            Self::File { file } => crate::input::secret_file(file, "secret file"),
            Self::Command { command } => {
                crate::input::secret_command(command, "secret command", std::process::Stdio::null())
            }
        }
    }
}

/// Resolves an optional secret.
///
/// # Errors
/// As [`Secret::resolve`].
pub fn resolve(s: Option<&Secret>) -> Result<Option<String>> {
    s.map(Secret::resolve).transpose()
}
