//! Sources: what salvor backs up besides plain paths.
//!
//! Each source type is one module with a config struct and an implementation of
//! [`Source`]: `backup` streams items into one new snapshot (no temporary files)
//! and records a manifest (server version, per-table counts, ...); `restore`
//! loads a snapshot back into a live target; `inspect` reads the same counts
//! from a live target, so verification can compare them with the manifest.
//!
//! Dump tools run as child processes ([`process`]); credentials reach them
//! through the environment or files ([`secret`]), never argv, never logs. A tool
//! that fails fails the backup with its own message and no snapshot is written.

mod blocks;
pub mod command;
pub mod etcd;
pub mod files;
pub mod http;
mod lines;
pub mod mongodb;
pub mod mysql;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod secret;
mod sql;
pub mod sqlite;

use std::io::Write;
use std::sync::Arc;

use salvor_engine::backup::{BackupProgress, StreamBackup, StreamOptions};
use salvor_engine::cancel::Cancel;
use salvor_engine::format::snapshot::{Manifest, Snapshot};
use salvor_engine::id::SnapshotId;
use salvor_engine::repo::BlobReader;
use salvor_engine::{Error, ErrorKind, Repository, Result, browse};
use serde::Deserialize;

/// A source's configuration, selected by its `type` key.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// The stdout of any command.
    Command(command::CommandConfig),
    /// Files and directories.
    Files(files::FilesConfig),
    /// PostgreSQL (pg_dump / pg_dumpall).
    Postgres(postgres::PostgresConfig),
    /// MySQL / MariaDB (mysqldump).
    Mysql(mysql::MysqlConfig),
    /// MongoDB (driver, or mongodump).
    Mongodb(mongodb::MongodbConfig),
    /// Redis (RDB over the network).
    Redis(redis::RedisConfig),
    /// etcd (v3 snapshot over the network).
    Etcd(etcd::EtcdConfig),
    /// SQLite (online backup API).
    Sqlite(sqlite::SqliteConfig),
    /// JSON export of an HTTP API.
    Http(http::HttpConfig),
}

/// The `type` values, for messages.
const TYPES: &[&str] = &[
    "command", "files", "postgres", "mysql", "mongodb", "redis", "etcd", "sqlite", "http",
];

/// Deserialized by hand, not as serde's internally tagged enum: that one
/// buffers the table before choosing the variant, and the buffered values
/// lose their positions, so a wrong value would be reported at line 1 with
/// no key. Here, when `type` comes first (as every example writes it), the
/// rest of the table goes straight to the chosen struct and every error
/// keeps its line; otherwise the table is buffered as before.
impl<'de> Deserialize<'de> for SourceConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_map(SourceVisitor)
    }
}

struct SourceVisitor;

impl SourceVisitor {
    fn build<'de, M: serde::de::MapAccess<'de>>(
        kind: &str,
        rest: M,
    ) -> std::result::Result<SourceConfig, M::Error> {
        use serde::de::value::MapAccessDeserializer;
        let d = MapAccessDeserializer::new(rest);
        Ok(match kind {
            "command" => SourceConfig::Command(Deserialize::deserialize(d)?),
            "files" => SourceConfig::Files(Deserialize::deserialize(d)?),
            "postgres" => SourceConfig::Postgres(Deserialize::deserialize(d)?),
            "mysql" => SourceConfig::Mysql(Deserialize::deserialize(d)?),
            "mongodb" => SourceConfig::Mongodb(Deserialize::deserialize(d)?),
            "redis" => SourceConfig::Redis(Deserialize::deserialize(d)?),
            "etcd" => SourceConfig::Etcd(Deserialize::deserialize(d)?),
            "sqlite" => SourceConfig::Sqlite(Deserialize::deserialize(d)?),
            "http" => SourceConfig::Http(Deserialize::deserialize(d)?),
            other => return Err(serde::de::Error::unknown_variant(other, TYPES)),
        })
    }
}

impl<'de> serde::de::Visitor<'de> for SourceVisitor {
    type Value = SourceConfig;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a source table with a `type` key")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(
        self,
        mut map: M,
    ) -> std::result::Result<SourceConfig, M::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Err(serde::de::Error::missing_field("type"));
        };
        if first == "type" {
            let kind: String = map.next_value()?;
            return Self::build(&kind, map);
        }
        let mut table = toml::Table::new();
        table.insert(first, map.next_value()?);
        while let Some((k, v)) = map.next_entry::<String, toml::Value>()? {
            table.insert(k, v);
        }
        let kind = match table.remove("type") {
            Some(toml::Value::String(k)) => k,
            Some(_) => return Err(serde::de::Error::custom("`type` must be a string")),
            None => return Err(serde::de::Error::missing_field("type")),
        };
        let rest = serde::de::value::MapDeserializer::new(table.into_iter());
        Self::build(&kind, rest).map_err(|e| {
            serde::de::Error::custom(format!(
                "{} (put `type` first in the table for the exact line)",
                e.message().trim()
            ))
        })
    }
}

impl SourceConfig {
    /// The implementation for this configuration.
    pub fn build(&self) -> Box<dyn Source + '_> {
        match self {
            Self::Command(c) => Box::new(c),
            Self::Files(c) => Box::new(c),
            Self::Postgres(c) => Box::new(c),
            Self::Mysql(c) => Box::new(c),
            Self::Mongodb(c) => Box::new(c),
            Self::Redis(c) => Box::new(c),
            Self::Etcd(c) => Box::new(c),
            Self::Sqlite(c) => Box::new(c),
            Self::Http(c) => Box::new(c),
        }
    }

    /// Where the source reads from, without credentials, recorded in its
    /// manifest: `postgres://db1:5432`, `/etc,/srv`, `command:pg_dumpall`.
    pub fn identity(&self) -> String {
        let host_port = |scheme: &str, host: &Option<String>, port: Option<u16>, default: u16| {
            let host = host.as_deref().unwrap_or("localhost");
            format!("{scheme}://{host}:{}", port.unwrap_or(default))
        };
        match self {
            // The first word only: arguments may carry secrets.
            Self::Command(c) => format!(
                "command:{}",
                c.command.split_whitespace().next().unwrap_or_default()
            ),
            Self::Files(c) => c
                .paths
                .iter()
                .map(|p| p.to_string_lossy())
                .collect::<Vec<_>>()
                .join(","),
            Self::Postgres(c) => host_port("postgres", &c.host, c.port, 5432),
            Self::Mysql(c) => match &c.socket {
                Some(sock) => format!("mysql://{}", sock.display()),
                None => host_port("mysql", &c.host, c.port, 3306),
            },
            Self::Mongodb(c) => match &c.uri {
                mongodb::Uri::Plain(u) => without_credentials(u),
                mongodb::Uri::Secret(_) => "mongodb (URI from a secret)".into(),
            },
            Self::Redis(c) => format!("redis://{}:{}", c.host, c.port),
            Self::Etcd(c) => without_credentials(&c.endpoint),
            Self::Sqlite(c) => c.path.to_string_lossy().into_owned(),
            Self::Http(c) => without_credentials(&c.base_url),
        }
    }

    /// The `type` key.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Command(_) => "command",
            Self::Files(_) => "files",
            Self::Postgres(_) => "postgres",
            Self::Mysql(_) => "mysql",
            Self::Mongodb(_) => "mongodb",
            Self::Redis(_) => "redis",
            Self::Etcd(_) => "etcd",
            Self::Sqlite(_) => "sqlite",
            Self::Http(_) => "http",
        }
    }
}

/// `url` without user information and query (either may hold a secret).
fn without_credentials(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

/// What every source can do.
pub trait Source {
    /// Backs the source up into one new snapshot.
    ///
    /// # Errors
    /// The dump tool's own error; no snapshot is written then.
    fn backup(&self, ctx: &BackupContext) -> Result<(SnapshotId, Snapshot)>;
    /// Restores a snapshot made by a source of the same type into this one.
    ///
    /// # Errors
    /// Target unreachable, refused overwrite, tool failure.
    fn restore(&self, ctx: &RestoreContext) -> Result<RestoreReport>;
    /// Live counts in the shape of the manifest.
    ///
    /// # Errors
    /// Target unreachable.
    fn inspect(&self) -> Result<serde_json::Value>;
}

/// Everything a backup needs.
pub struct BackupContext<'a> {
    /// The repository, perhaps still opening.
    pub repo: &'a PendingRepo,
    /// The source's name: snapshot streams live under `NAME/`, its manifest under `NAME`.
    pub name: &'a str,
    /// Where it reads from ([`SourceConfig::identity`]), for its manifest.
    pub identity: String,
    /// Extra tags.
    pub tags: Vec<String>,
    /// Host name to record.
    pub host: Option<String>,
    /// Progress counters.
    pub progress: Arc<BackupProgress>,
    /// Raised to stop the backup: dump tools are stopped with it, so a
    /// tool that sends nothing (waiting on a table lock) cannot hold a
    /// cancelled backup up.
    pub cancel: Cancel,
}

impl BackupContext<'_> {
    /// A snapshot of named streams for this source. It begins (takes its
    /// lock, loads the index) with the first stream added, so a source can
    /// start its dump tool first and the repository opens meanwhile.
    ///
    /// # Errors
    /// None yet; kept fallible for sources that check more up front.
    pub fn streams(&self) -> Result<Streams> {
        let mut tags = self.tags.clone();
        tags.push(format!("source:{}", self.name));
        let opts = StreamOptions {
            name: self.name.to_string(),
            tags,
            host: self.host.clone(),
            job: None,
        };
        Ok(Streams {
            inner: None,
            start: Some((self.repo.clone(), opts, self.progress.clone())),
            name: self.name.to_string(),
            identity: self.identity.clone(),
            cancel: self.cancel.clone(),
        })
    }
}

/// A repository that opens in the background while a source starts.
///
/// Opening means deriving the key (Argon2id, ~60 ms by design) and reading
/// the index; a dump tool spends about as long connecting and reading its
/// catalog before the first byte. Doing both at once takes that time off
/// every source backup.
#[derive(Clone)]
pub struct PendingRepo {
    state: Arc<std::sync::Mutex<RepoState>>,
}

enum RepoState {
    Opening(std::thread::JoinHandle<Result<Repository>>),
    Open(Repository),
    /// The failure, to hand out again ([`Error::duplicate`]).
    Failed(Error),
}

impl PendingRepo {
    /// Starts opening a repository with `open` on another thread.
    pub fn opening(open: impl FnOnce() -> Result<Repository> + Send + 'static) -> Self {
        let handle = std::thread::Builder::new()
            .name("salvor-open".into())
            .spawn(open)
            .expect("spawn repository opening thread");
        Self {
            state: Arc::new(std::sync::Mutex::new(RepoState::Opening(handle))),
        }
    }

    /// A repository that is already open.
    pub fn ready(repo: Repository) -> Self {
        Self {
            state: Arc::new(std::sync::Mutex::new(RepoState::Open(repo))),
        }
    }

    /// The open repository (a cheap handle), waiting for it if needed.
    ///
    /// # Errors
    /// Why it failed to open (same kind and text every time asked).
    pub fn get(&self) -> Result<Repository> {
        let mut state = self.state.lock().unwrap();
        let placeholder = RepoState::Failed(Error::new(ErrorKind::Io, String::new()));
        let done = match std::mem::replace(&mut *state, placeholder) {
            RepoState::Opening(handle) => handle.join().unwrap_or_else(|_| {
                Err(Error::new(ErrorKind::Io, "opening the repository panicked"))
            }),
            RepoState::Open(repo) => Ok(repo),
            RepoState::Failed(e) => Err(e.duplicate()),
        };
        match done {
            Ok(repo) => {
                *state = RepoState::Open(repo.clone());
                Ok(repo)
            }
            Err(e) => {
                *state = RepoState::Failed(e.duplicate());
                Err(e)
            }
        }
    }
}

/// A snapshot being filled with one source's streams.
pub struct Streams {
    inner: Option<StreamBackup>,
    /// What `inner` begins with, until it has.
    start: Option<(PendingRepo, StreamOptions, Arc<BackupProgress>)>,
    name: String,
    identity: String,
    cancel: Cancel,
}

impl Streams {
    /// The backup's cancellation token, for the dump tools a source starts
    /// ([`process::ChildReader::stop_on`]).
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    fn begun(&mut self) -> Result<&mut StreamBackup> {
        if let Some((repo, opts, progress)) = self.start.take() {
            self.inner = Some(StreamBackup::begin(&repo.get()?, &opts, progress)?);
        }
        Ok(self.inner.as_mut().expect("begun above"))
    }

    /// Stores a stream at `NAME/rel`; returns its size.
    ///
    /// # Errors
    /// Read errors, including a dump tool's failure at the end of its output.
    pub fn add(&mut self, rel: &str, reader: impl std::io::Read) -> Result<u64> {
        let path = format!("{}/{rel}", self.name);
        self.begun()?.add_stream(&path, reader)
    }

    /// Records the manifest and makes the snapshot durable.
    ///
    /// # Errors
    /// Backend failures.
    pub fn commit(mut self, manifest: serde_json::Value) -> Result<(SnapshotId, Snapshot)> {
        self.begun()?;
        let mut inner = self.inner.take().expect("begun above");
        let mut manifest = Manifest::from_value(manifest);
        manifest.identity = Some(std::mem::take(&mut self.identity));
        inner.add_manifest(&self.name, manifest);
        inner.commit()
    }
}

/// Everything a restore needs.
pub struct RestoreContext<'a> {
    /// Reads the snapshot's data.
    pub reader: &'a BlobReader,
    /// The snapshot being restored.
    pub snapshot: &'a Snapshot,
    /// The source name the snapshot was made under.
    pub source_name: &'a str,
    /// Only these items (tables, collections, key prefixes, endpoints); empty = all.
    pub only: &'a [String],
    /// Restore under this name (e.g. another database name).
    pub rename: Option<&'a str>,
    /// Say what would happen, change nothing.
    pub dry_run: bool,
    /// Overwrite existing data without asking.
    pub yes: bool,
    /// Accept that replacing chosen tables drops, for good, objects of the
    /// target that depend on them (views, other tables' foreign keys).
    pub drop_dependents: bool,
}

impl RestoreContext<'_> {
    /// The manifest the backup recorded, as its JSON object (`null` when
    /// the snapshot has none for this source).
    pub fn manifest(&self) -> serde_json::Value {
        self.snapshot
            .manifests
            .get(self.source_name)
            .map_or(serde_json::Value::Null, Manifest::to_value)
    }

    /// Paths of the snapshot's streams, relative to the source's directory.
    ///
    /// # Errors
    /// Unreadable trees.
    pub fn streams(&self) -> Result<Vec<String>> {
        let prefix = format!("/{}/", self.source_name);
        let mut out = Vec::new();
        browse::walk(self.reader, &self.snapshot.tree, b"", &mut |p, n| {
            let p = String::from_utf8_lossy(p);
            if n.kind == salvor_engine::format::tree::NodeKind::File
                && let Some(rel) = p.strip_prefix(&prefix)
            {
                out.push(rel.to_string());
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Writes one stream into `out`, verifying every blob.
    ///
    /// # Errors
    /// Missing stream, corruption, write errors.
    pub fn copy_stream(&self, rel: &str, out: &mut dyn Write) -> Result<u64> {
        let path = format!("{}/{rel}", self.source_name);
        let node = browse::find(self.reader, &self.snapshot.tree, &path)?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("{path} is not in the snapshot"),
            )
        })?;
        browse::dump(self.reader, &node, out)
    }

    /// Asks before overwriting `what` unless `--yes`; refuses without a
    /// terminal. `elsewhere` names the flag that restores somewhere else
    /// for this source ("--into DIR", "--to OTHER").
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when not confirmed.
    pub fn confirm(&self, what: &str, elsewhere: &str) -> Result<()> {
        if self.yes || self.dry_run {
            return Ok(());
        }
        let refuse = || {
            Error::invalid(format!("restore would overwrite {what}")).hint(format!(
                "pass --yes to overwrite, or restore elsewhere with {elsewhere}"
            ))
        };
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return Err(refuse());
        }
        eprint!("restore would overwrite {what}; continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .map_err(|e| Error::io("cannot read", "standard input", e))?;
        if answer.trim().eq_ignore_ascii_case("y") || answer.trim().eq_ignore_ascii_case("yes") {
            Ok(())
        } else {
            Err(refuse())
        }
    }
}

/// Counts and BLAKE3-hashes the bytes that pass through a reader, so a
/// manifest can record exactly what was stored.
pub struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<R: std::io::Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: blake3::Hasher::new(),
            bytes: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.bytes
    }

    /// Hex BLAKE3 of the bytes read so far.
    pub fn hex(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// What a restore did (or, with `--dry-run`, would do).
#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    /// One line per action, in order.
    pub actions: Vec<String>,
    /// Counts by outcome or item (created/existing/failed, rows per table ...).
    pub counts: serde_json::Map<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_never_carry_credentials() {
        assert_eq!(
            without_credentials("https://u:pw@api.example:8443/v1?token=x#f"),
            "https://api.example:8443/v1"
        );
        assert_eq!(
            without_credentials("mongodb://a:b@h1:27017,h2/db?authSource=admin"),
            "mongodb://h1:27017,h2/db"
        );
        assert_eq!(without_credentials("127.0.0.1:2379"), "127.0.0.1:2379");
        let cfg: SourceConfig =
            toml::from_str("type = \"command\"\ncommand = \"pg_dumpall --password=s3cret\"\n")
                .unwrap();
        assert_eq!(cfg.identity(), "command:pg_dumpall");
    }
}
