//! Per-repository backend settings. Each starts from the environment
//! (the standard AWS variables, `SALVOR_SFTP_*`) and can be set one by one
//! by a caller (the CLI's `-o KEY=VALUE`, later a `[repository.NAME]`
//! section), so that a process serving several repositories does not
//! depend on one process environment.

use std::time::Duration;

use crate::error::{Error, Result};

/// How a repository's storage is reached. `None` means the provider's
/// default.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BackendOptions {
    /// S3 endpoint URL (MinIO, Garage, ...); AWS's when unset.
    pub s3_endpoint: Option<String>,
    /// S3 region; `us-east-1` when unset.
    pub s3_region: Option<String>,
    /// S3 access key id.
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key: from the environment only, never from a
    /// command line (it would sit in `ps` and shell histories).
    pub s3_secret_access_key: Option<String>,
    /// Private key file for SFTP.
    pub sftp_key: Option<String>,
    /// SFTP host key checking: `strict`, `accept-new` or `off`.
    pub sftp_known_hosts: Option<String>,
    /// Longest a request without data transfer may take (a listing, a
    /// delete, the start of a read).
    pub timeout: Option<Duration>,
    /// Longest a transfer may go without progress.
    pub io_timeout: Option<Duration>,
    /// Parallel transfers (uploads, restore reads) worth running.
    pub connections: Option<usize>,
    /// Attempts per request, the first included, for transient failures.
    pub attempts: Option<u32>,
    /// The keys [`Self::set`] was given, to refuse those that do not
    /// apply to the repository's scheme.
    explicit: Vec<&'static str>,
}

impl std::fmt::Debug for BackendOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendOptions")
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field(
                "s3_secret_access_key",
                &self.s3_secret_access_key.as_ref().map(|_| "(set)"),
            )
            .field("sftp_key", &self.sftp_key)
            .field("sftp_known_hosts", &self.sftp_known_hosts)
            .field("timeout", &self.timeout)
            .field("io_timeout", &self.io_timeout)
            .field("connections", &self.connections)
            .field("attempts", &self.attempts)
            .finish()
    }
}

/// The keys [`BackendOptions::set`] takes, with the scheme each applies to
/// (`None`: every remote store).
pub const KEYS: [(&str, Option<&str>); 9] = [
    ("s3.endpoint", Some("s3")),
    ("s3.region", Some("s3")),
    ("s3.access-key-id", Some("s3")),
    ("sftp.key", Some("sftp")),
    ("sftp.known-hosts", Some("sftp")),
    ("timeout", None),
    ("io-timeout", None),
    ("connections", None),
    ("attempts", None),
];

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_duration(key: &str, value: &str) -> Result<Duration> {
    let secs = value.parse::<u64>().map(Duration::from_secs);
    let friendly = || {
        value
            .parse::<jiff::SignedDuration>()
            .ok()
            .and_then(|d| Duration::try_from(d).ok())
    };
    secs.ok()
        .or_else(friendly)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Error::invalid(format!("invalid {key} {value:?}"))
                .hint("give a duration such as 30s, 2m or 90 (seconds), more than zero")
        })
}

fn parse_count<T: std::str::FromStr + PartialOrd + From<u8>>(key: &str, value: &str) -> Result<T> {
    value
        .parse::<T>()
        .ok()
        .filter(|n| *n >= T::from(1) && *n <= T::from(64))
        .ok_or_else(|| {
            Error::invalid(format!("invalid {key} {value:?}"))
                .hint("give a whole number from 1 to 64")
        })
}

impl BackendOptions {
    /// What the environment says: `AWS_ENDPOINT_URL`, `AWS_REGION` (or
    /// `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `SALVOR_SFTP_KEY`, `SALVOR_SFTP_KNOWN_HOSTS`.
    pub fn from_env() -> Self {
        Self {
            s3_endpoint: env("AWS_ENDPOINT_URL"),
            s3_region: env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")),
            s3_access_key_id: env("AWS_ACCESS_KEY_ID"),
            s3_secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
            sftp_key: env("SALVOR_SFTP_KEY"),
            sftp_known_hosts: env("SALVOR_SFTP_KNOWN_HOSTS"),
            ..Self::default()
        }
    }

    /// Sets the option users call `key` (one of [`KEYS`]) to `value`.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidInput`] for an unknown key, a secret
    /// (which belongs in the environment or a file, not on a command
    /// line) or a value out of range.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let Some(&(known, _)) = KEYS.iter().find(|(k, _)| *k == key) else {
            if key.contains("secret") {
                return Err(Error::invalid(format!("{key} cannot be given as an option"))
                    .hint("secrets go in the environment (AWS_SECRET_ACCESS_KEY), never on a command line"));
            }
            let names: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
            return Err(Error::invalid(format!("unknown backend option {key:?}"))
                .hint(format!("the options are {}", names.join(", "))));
        };
        let text = || Some(value.to_string());
        match known {
            "s3.endpoint" => self.s3_endpoint = text(),
            "s3.region" => self.s3_region = text(),
            "s3.access-key-id" => self.s3_access_key_id = text(),
            "sftp.key" => self.sftp_key = text(),
            "sftp.known-hosts" => {
                crate::backend::opendal::known_hosts_strategy(value)?;
                self.sftp_known_hosts = text();
            }
            "timeout" => self.timeout = Some(parse_duration(key, value)?),
            "io-timeout" => self.io_timeout = Some(parse_duration(key, value)?),
            "connections" => self.connections = Some(parse_count(key, value)?),
            "attempts" => self.attempts = Some(parse_count(key, value)?),
            _ => unreachable!("every key in KEYS is handled"),
        }
        if !self.explicit.contains(&known) {
            self.explicit.push(known);
        }
        Ok(())
    }

    /// Refuses options set for another kind of store than `url`'s: an
    /// option that does not apply is an error, not silently ignored.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidInput`] naming the option.
    pub fn check_applies(&self, url: &str) -> Result<()> {
        let scheme = url.split_once("://").map_or("file", |(s, _)| s);
        let remote = matches!(scheme, "s3" | "sftp");
        for key in &self.explicit {
            let applies = match KEYS.iter().find(|(k, _)| k == key).and_then(|(_, s)| *s) {
                Some(s) => s == scheme,
                None => remote,
            };
            if !applies {
                return Err(Error::invalid(format!(
                    "backend option {key} does not apply to {url}"
                ))
                .hint("leave it out, or point at the kind of store it is for"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_refuse_secrets_and_must_apply() {
        let mut o = BackendOptions::default();
        o.set("s3.region", "eu-west-3").unwrap();
        o.set("timeout", "2m").unwrap();
        o.set("io-timeout", "45").unwrap();
        o.set("connections", "12").unwrap();
        assert_eq!(o.s3_region.as_deref(), Some("eu-west-3"));
        assert_eq!(o.timeout, Some(Duration::from_secs(120)));
        assert_eq!(o.io_timeout, Some(Duration::from_secs(45)));
        assert_eq!(o.connections, Some(12));
        assert!(o.check_applies("s3://bucket/x").is_ok());
        let e = o.check_applies("sftp://host/x").unwrap_err();
        assert!(e.to_string().contains("s3.region does not apply"), "{e}");
        let e = o.check_applies("/srv/repo").unwrap_err();
        assert!(e.to_string().contains("does not apply"), "{e}");

        for (k, v) in [
            ("connections", "0"),
            ("timeout", "soon"),
            ("timeout", "0s"),
            ("sftp.known-hosts", "maybe"),
            ("s3.bucket", "x"),
        ] {
            assert!(BackendOptions::default().set(k, v).is_err(), "{k}={v}");
        }
        let e = BackendOptions::default()
            .set("s3.secret-access-key", "hunter2")
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{e}");
        let with_secret = BackendOptions {
            s3_secret_access_key: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{with_secret:?}").contains("hunter2"));
    }
}
