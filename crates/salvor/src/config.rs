//! `salvor.toml`: sources (and, later, jobs) in one file.
//!
//! ```toml
//! [source.app_db]
//! type = "postgres"
//! host = "127.0.0.1"
//! user = "backup"
//! password = { env = "APP_DB_PASSWORD" }   # or { file = "..." } or { command = "..." }
//! ```
//!
//! Unknown keys are errors (a typo must not silently disable a setting), and
//! every error names the file, line and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use salvor_engine::{Error, ErrorKind, Result};
use serde::Deserialize;

use crate::source::SourceConfig;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Sources by name.
    #[serde(default, rename = "source")]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Where the file was read from (for messages).
    #[serde(skip)]
    pub path: PathBuf,
}

impl Config {
    /// Reads and validates a configuration file.
    ///
    /// # Errors
    /// Unreadable file, TOML syntax, unknown or missing keys, invalid names.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io("cannot read config", path, e))?;
        Self::parse(&text, path)
    }

    /// Parses configuration text; `path` is used in messages.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut c: Config = toml::from_str(text).map_err(|e| {
            Error::invalid(format!("{}: {}", path.display(), describe(text, &e)))
                .hint("fix the configuration file")
        })?;
        for name in c.sources.keys() {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
            {
                return Err(Error::invalid(format!(
                    "{}: invalid source name {name:?}",
                    path.display()
                ))
                .hint("use letters, digits, '-' and '_'"));
            }
        }
        c.path = path.to_path_buf();
        Ok(c)
    }

    /// A source by name.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] listing the names that exist.
    pub fn source(&self, name: &str) -> Result<&SourceConfig> {
        self.sources.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
            Error::new(
                ErrorKind::NotFound,
                format!("no source {name:?} in {}", self.path.display()),
            )
            .hint(format!(
                "defined sources: {}",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ))
        })
    }
}

/// "line N: message", pointing at the offending key where toml only knows
/// its table (serde buffers internally tagged tables, losing key spans).
fn describe(text: &str, e: &toml::de::Error) -> String {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut line = e.span().map_or(0, |s| line_of(s.start));
    let msg = e.message().to_string();
    if let Some(key) = msg
        .split('`')
        .nth(1)
        .filter(|_| msg.starts_with("unknown field"))
    {
        let start = e.span().map_or(0, |s| s.start);
        if let Some(pos) = text[start..]
            .lines()
            .position(|l| l.trim_start().starts_with(key) && l.contains('='))
        {
            line += pos;
        }
    }
    if line == 0 {
        msg
    } else {
        format!("line {line}: {msg}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_line_and_key() {
        let e = Config::parse(
            "[source.a]\ntype = \"command\"\ncommand = \"true\"\nrestor_command = \"x\"\n",
            Path::new("s.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("s.toml") && e.contains("line 4") && e.contains("restor_command"),
            "{e}"
        );
        let e = Config::parse("[source.a]\ntype = \"nosuch\"\n", Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nosuch"), "{e}");
        let c = Config::parse(
            "[source.a]\ntype = \"command\"\ncommand = \"echo hi\"\n",
            Path::new("s.toml"),
        )
        .unwrap();
        assert!(c.source("a").is_ok());
        assert!(
            c.source("b")
                .unwrap_err()
                .to_string()
                .contains("defined sources: a")
        );
    }
}
