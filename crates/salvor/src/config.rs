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
        let text = crate::input::read_text(path, crate::input::CONFIG_MAX, "configuration file")?;
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

/// "line N: key: message", pointing at the offending key: toml knows the
/// span of the bad value (or, for an unknown key, of its table), so the key
/// is read from the text before it.
fn describe(text: &str, e: &toml::de::Error) -> String {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let msg = e.message().trim().to_string();
    let Some(span) = e.span() else {
        return msg;
    };
    let start = span.start.min(text.len());
    if let Some(key) = msg
        .split('`')
        .nth(1)
        .filter(|_| msg.starts_with("unknown field"))
    {
        // The span is the table's: find the key's own line within it.
        let line = text[start..]
            .lines()
            .position(|l| l.trim_start().starts_with(key) && l.contains('='))
            .map_or(line_of(start), |i| line_of(start) + i);
        return format!("line {line}: {msg}");
    }
    // The key is the name before the last `=` ahead of the value on its line.
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let key = text[line_start..start]
        .rsplit_once('=')
        .map(|(before, _)| {
            before
                .trim_end()
                .rsplit(|c: char| c.is_whitespace() || c == '{' || c == ',')
                .next()
                .unwrap_or("")
                .trim_matches('"')
        })
        .filter(|k| !k.is_empty());
    match key {
        Some(k) => format!("line {}: {k}: {msg}", line_of(start)),
        None => format!("line {}: {msg}", line_of(start)),
    }
}

/// Deserializers that refuse values out of range where they are read, so
/// the message names the line and key; an absurd timeout or batch size
/// otherwise shows up much later as a hang or a failed allocation.
pub mod bounded {
    use serde::{Deserialize, Deserializer, de::Error};

    fn range<'de, D: Deserializer<'de>>(
        d: D,
        min: u64,
        max: u64,
        unit: &str,
    ) -> Result<u64, D::Error> {
        let v = u64::deserialize(d)?;
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(D::Error::custom(format!(
                "{v} is out of range: use {min} to {max}{unit}"
            )))
        }
    }

    /// A timeout in seconds: 1 s to 1 day.
    pub fn timeout_secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        range(d, 1, 86_400, " seconds")
    }

    /// A timeout in milliseconds: 0 to 1 hour.
    pub fn timeout_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        range(d, 0, 3_600_000, " milliseconds")
    }

    /// Records or documents per request: 1 to 100,000.
    pub fn batch<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        range(d, 1, 100_000, "")
    }

    /// Records or documents per request, as a `usize`.
    pub fn batch_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        batch(d).map(|v| usize::try_from(v).expect("at most 100,000"))
    }

    /// A TCP port: 1 to 65535.
    pub fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        range(d, 1, 65_535, "").map(|v| u16::try_from(v).expect("at most 65535"))
    }

    /// An optional TCP port.
    pub fn port_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        port(d).map(Some)
    }

    /// A string that must not be empty (a command, a name).
    pub fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            Err(D::Error::custom("must not be empty"))
        } else {
            Ok(s)
        }
    }

    /// An optional string that, when given, must not be empty.
    pub fn non_empty_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        non_empty(d).map(Some)
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
