//! The command line: one module per command, each a thin layer that parses
//! options, calls the engine and renders text or `--json`.
//!
//! Exit codes (documented in the README and `salvor --help`):
//! 0 success · 1 error (incl. damage found by `check`) · 2 usage error ·
//! 3 backup saved but some files could not be read · 10 no repository ·
//! 11 repository locked · 12 wrong password · 130 interrupted.

mod backup;
mod check;
mod demo;
mod filter;
mod forget;
mod inspect;
mod key;
mod output;
mod password;
mod progress;
mod prune;
mod remedy;
mod restore;
mod signals;
mod sources;
mod tag;

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use output::outln;
use salvor_engine::format::config::{ChunkerParams, CutRule};
use salvor_engine::{Error, ErrorKind, Repository};

/// Exit code when a backup was saved but some files could not be read.
pub const EXIT_PARTIAL: i32 = 3;

const AFTER_HELP: &str = "\
Examples:
  export SALVOR_REPO=/srv/backup SALVOR_PASSWORD_FILE=/etc/salvor/pass
  salvor init
  salvor backup /etc /home --exclude '*.tmp' --tag nightly
  pg_dump mydb | salvor backup --stdin --stdin-name mydb.sql
  salvor snapshots
  salvor restore latest --target /tmp/restore --include '/etc/**'
  salvor dump latest mydb.sql | psql mydb
  salvor check --read-data-subset 10%
  salvor --config salvor.toml backup --source app_db
  salvor --config salvor.toml restore latest --source app_db --to scratch_db --yes
  salvor --config salvor.toml inspect --source app_db

Environment:
  SALVOR_REPO               repository location (--repo)
  SALVOR_PASSWORD           the repository password itself
  SALVOR_PASSWORD_FILE      file whose first line is the password (--password-file)
  SALVOR_PASSWORD_COMMAND   command that prints the password (--password-command)
  SALVOR_NEW_PASSWORD       new password for `key add` and `key passwd`
  SALVOR_CONFIG             configuration file with sources (--config)
  SALVOR_LOG                log filter, e.g. debug or salvor_engine=trace
  SALVOR_SFTP_KEY           private key file for sftp:// repositories
  SALVOR_SFTP_KNOWN_HOSTS   host key checking for sftp://: strict, accept-new or off
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL
                            credentials, region and endpoint for s3:// repositories
A typed --password-file or --password-command wins over the environment;
two password variables at once are an error.

Exit codes: 0 ok, 1 error, 2 usage, 3 partial backup (unreadable files),
10 no repository, 11 locked, 12 wrong password, 130 interrupted.";

/// Backup and disaster recovery: deduplicated, compressed, encrypted snapshots.
#[derive(Parser, Debug)]
#[command(name = "salvor", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalOptions,
    #[command(subcommand)]
    command: Command,
}

/// Options every command accepts.
#[derive(Args, Debug, Clone)]
pub struct GlobalOptions {
    /// Repository location: a path, s3://BUCKET/PREFIX or sftp://USER@HOST/PATH.
    #[arg(short = 'r', long, env = "SALVOR_REPO", global = true)]
    repo: Option<String>,
    /// Read the password from this file (first line).
    #[arg(long, env = "SALVOR_PASSWORD_FILE", global = true)]
    password_file: Option<PathBuf>,
    /// Run this shell command and use its output as the password.
    #[arg(long, env = "SALVOR_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// Configuration file with sources (salvor.toml).
    #[arg(short = 'c', long, env = "SALVOR_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Keep the local cache of index files and snapshots here (default for
    /// remote repositories: $XDG_CACHE_HOME/salvor, else ~/.cache/salvor;
    /// local repositories use none unless this is given).
    #[arg(long, env = "SALVOR_CACHE_DIR", global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Use no local cache: read everything from the repository.
    #[arg(long, env = "SALVOR_NO_CACHE", global = true)]
    no_cache: bool,
    /// A storage option KEY=VALUE (repeat for several): s3.endpoint,
    /// s3.region, s3.access-key-id, sftp.key, sftp.known-hosts, timeout,
    /// io-timeout, connections, attempts. Secrets come from the
    /// environment, never from here.
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE", global = true)]
    options: Vec<String>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// More log output (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Which password options were typed rather than taken from the environment.
    #[arg(skip)]
    explicit: password::Explicit,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up files and directories, a stream from stdin, or configured sources.
    ///
    /// The backup runs as batch work (Linux SCHED_BATCH, inherited by the dump
    /// tools it starts): a waking backup thread does not preempt the services
    /// it reads from. Start it under `nice` to make it yield further.
    #[command(after_help = "\
Examples:
  salvor backup /etc /var/lib/app --exclude '*.tmp'
  pg_dump -Fp app | salvor backup --stdin --stdin-name app.sql
  salvor backup --config salvor.toml --source pg --source etcd")]
    Backup(backup::BackupArgs),
    /// List snapshots.
    Snapshots(inspect::SnapshotsArgs),
    /// List files in a snapshot.
    Ls(inspect::LsArgs),
    /// Show what changed between two snapshots.
    Diff(inspect::DiffArgs),
    /// Show repository size, deduplication and compression.
    Stats(inspect::StatsArgs),
    /// Remove snapshots, by id or by a retention policy, saying why each one stays.
    ///
    /// Snapshots are grouped (by host and paths unless --group-by says
    /// otherwise) and each group keeps what any rule keeps; the rest is
    /// removed. Days, weeks, months and years are calendar periods in the
    /// local time zone (--time-zone). A group is never emptied, and a
    /// snapshot tagged `keep` is never removed. Only snapshot documents
    /// go; --prune then frees the data no snapshot references.
    #[command(after_help = "\
Examples:
  salvor forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run
  salvor forget --keep-within 30d --group-by source
  salvor forget 1a2b3c4d")]
    Forget(forget::ForgetArgs),
    /// Delete the data no snapshot references, beside running backups.
    ///
    /// Packs no snapshot needs are marked, then deleted once every backup
    /// that was running when they were marked has ended: at once in a quiet
    /// repository, else by the next prune. Packs mostly unused are repacked
    /// (--max-unused). Backups on other hosts keep running meanwhile.
    /// Nothing is deleted from a damaged repository.
    #[command(after_help = "\
Examples:
  salvor prune --dry-run
  salvor prune --max-unused 10% --max-repack-size 20G
  salvor forget --keep-daily 7 --keep-weekly 4 --prune")]
    Prune(prune::PruneCommand),
    /// Change snapshots' tags (`--add keep` protects a snapshot from forget).
    ///
    /// A snapshot is named by its hash, so a retagged snapshot gets a new
    /// id; the new one is written before the old one is removed.
    #[command(after_help = "\
Examples:
  salvor tag 1a2b3c4d --add keep
  salvor tag 1a2b3c4d 5e6f7a8b --remove nightly --add archive")]
    Tag(tag::TagArgs),
    /// Restore a snapshot into a directory.
    Restore(restore::RestoreArgs),
    /// Write one file or stream of a snapshot to stdout.
    Dump(restore::DumpArgs),
    /// Print a source's live counts (what a backup's manifest records).
    Inspect(sources::InspectArgs),
    /// Verify the repository's structure, and optionally its data.
    Check(check::CheckArgs),
    /// Manage passwords (keys) of the repository.
    Key(key::KeyArgs),
    /// Repair the repository (`repair index`: rebuild the index from the packs in storage).
    Repair(check::RepairArgs),
    /// Remove stale locks left by killed processes.
    Unlock(check::UnlockArgs),
    /// Check that a store behaves as a repository needs, before you trust it with one.
    ///
    /// Runs the backend contract (missing objects, listing after write, ranged
    /// reads, large objects written in pieces, concurrent writers, deletes,
    /// create-if-absent and, where the store claims it, its atomicity)
    /// in a new location `salvor-check-<random>` under --repo, and removes
    /// every object it wrote. Needs no password and no repository. SFTP
    /// servers may keep the empty directories.
    #[command(after_help = "\
Examples:
  salvor check-storage --repo s3://backups/salvor
  salvor --json check-storage --repo sftp://backup@nas/srv/salvor")]
    CheckStorage(check::CheckStorageArgs),
    /// Run the built-in demo: back up a sample tree into a local repository, check, restore, compare.
    Demo(demo::DemoArgs),
}

/// Maps an engine error kind to the documented exit code.
pub fn exit_code(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::RepositoryNotFound => 10,
        ErrorKind::Locked | ErrorKind::LockLost => 11,
        ErrorKind::WrongPassword => 12,
        // A flag, argument or configuration value that makes no sense is a
        // usage error, as clap's own are.
        ErrorKind::InvalidInput => 2,
        ErrorKind::Interrupted => 130,
        _ => 1,
    }
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (mut cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let typed = |id: &str| {
        // Global options typed after the subcommand are recorded there.
        let mut m = Some(&matches);
        while let Some(cur) = m {
            if cur.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
                return true;
            }
            m = cur.subcommand().map(|(_, sub)| sub);
        }
        false
    };
    cli.global.explicit = password::Explicit {
        file: typed("password_file"),
        command: typed("password_command"),
    };
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SALVOR_LOG")
                // Libraries' own logs (rustls, OpenDAL, drivers) stay out of
                // the way: salvor reports their failures in its own errors.
                // SALVOR_LOG=debug shows everything.
                .unwrap_or_else(|_| format!("off,salvor={level},salvor_engine={level}").into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return 0;
            }
            let kind = e.downcast_ref::<Error>().map(Error::kind);
            if signals::received() && kind != Some(ErrorKind::Interrupted) {
                // The signal also reached the process group's dump tools, which
                // may have failed first: the cause is still the signal.
                eprintln!("salvor: interrupted: {}", one_line(&e));
                return exit_code(ErrorKind::Interrupted);
            }
            eprintln!("salvor: {}", one_line(&e));
            kind.map_or(1, exit_code)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn one_line(e: &anyhow::Error) -> String {
    // Engine errors already carry their cause and hint; others get their chain.
    if let Some(err) = e.downcast_ref::<Error>() {
        return err.render(&remedy::say);
    }
    e.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let g = &cli.global;
    match cli.command {
        Command::Init(a) => init(g, &a),
        Command::Backup(a) => backup::run(g, &a),
        Command::Snapshots(a) => inspect::snapshots(g, &a),
        Command::Ls(a) => inspect::ls(g, &a),
        Command::Diff(a) => inspect::diff(g, &a),
        Command::Stats(a) => inspect::stats(g, &a),
        Command::Forget(a) => forget::run(g, &a),
        Command::Prune(a) => prune::run(g, &a),
        Command::Tag(a) => tag::run(g, &a),
        Command::Restore(a) => restore::restore(g, &a),
        Command::Dump(a) => restore::dump(g, &a),
        Command::Check(a) => check::check(g, &a),
        Command::Inspect(a) => sources::inspect(g, &a),
        Command::Key(a) => key::run(g, &a),
        Command::Unlock(a) => check::unlock(g, &a),
        Command::CheckStorage(a) => check::check_storage(g, &a),
        Command::Repair(a) => check::repair(g, &a),
        Command::Demo(a) => demo::run(g, &a),
    }
}

/// Which local cache a command uses.
enum CacheChoice {
    /// None: `--no-cache`, or no place for one.
    None,
    /// The directory the user named: it must work.
    Named(PathBuf),
    /// The XDG default for a remote repository: copies of its files and what
    /// is derived from them. An optimisation, so a failure only costs speed.
    Default(PathBuf),
    /// The XDG default for a local repository: only what is derived from it
    /// (the persisted index), since its files are already one read away.
    DerivedOnly(PathBuf),
}

/// The opened repository with the process's cancellation token and the
/// cache chosen by [`GlobalOptions::cache_choice`].
fn with_cache(repo: Repository, cache: CacheChoice) -> salvor_engine::Result<Repository> {
    let repo = repo.with_cancel(signals::cancel());
    let attached = match &cache {
        CacheChoice::None => return Ok(repo),
        CacheChoice::Named(dir) => return repo.with_cache(dir),
        CacheChoice::Default(dir) => repo.clone().with_cache(dir),
        CacheChoice::DerivedOnly(dir) => repo.clone().with_derived_cache(dir),
    };
    attached.or_else(|e| {
        tracing::warn!("working without a local cache: {e}");
        Ok(repo)
    })
}

impl GlobalOptions {
    /// The backend of `--repo`, with the environment's settings and `-o`'s.
    fn backend(&self) -> salvor_engine::Result<Box<dyn salvor_engine::backend::Backend>> {
        self.backend_at(self.location()?)
    }

    /// The backend at `url`, with the environment's settings and `-o`'s.
    fn backend_at(
        &self,
        url: &str,
    ) -> salvor_engine::Result<Box<dyn salvor_engine::backend::Backend>> {
        let mut opts = salvor_engine::backend::options::BackendOptions::from_env();
        for o in &self.options {
            let (key, value) = o.split_once('=').ok_or_else(|| {
                Error::invalid(format!("invalid option {o:?}")).hint("write it as -o KEY=VALUE")
            })?;
            opts.set(key.trim(), value.trim())?;
        }
        salvor_engine::backend::open_url_with(url, &opts)
    }

    fn location(&self) -> salvor_engine::Result<&str> {
        self.repo
            .as_deref()
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                Error::invalid("no repository given").hint("pass --repo PATH or set SALVOR_REPO")
            })
    }

    /// Opens the repository named by the options.
    fn open(&self) -> salvor_engine::Result<Repository> {
        self.open_with(&password::get(self, false)?)
    }

    /// [`GlobalOptions::open`] with a password already read.
    fn open_with(&self, pw: &str) -> salvor_engine::Result<Repository> {
        let backend = self.backend()?;
        let cache = self.cache_choice(backend.as_ref())?;
        with_cache(Repository::open(backend, pw.as_bytes())?, cache)
    }

    /// [`GlobalOptions::open`] with the password read now and the key
    /// derived on another thread, for work that can start meanwhile.
    fn open_in_background(&self) -> salvor_engine::Result<crate::source::PendingRepo> {
        let backend = self.backend()?;
        let pw = password::get(self, false)?;
        let cache = self.cache_choice(backend.as_ref())?;
        Ok(crate::source::PendingRepo::opening(move || {
            with_cache(Repository::open(backend, pw.as_bytes())?, cache)
        }))
    }

    /// Where the local cache goes: `--cache-dir` if given, else the XDG
    /// default (only derived data for a local repository), and nowhere with
    /// `--no-cache`.
    fn cache_choice(
        &self,
        backend: &dyn salvor_engine::backend::Backend,
    ) -> salvor_engine::Result<CacheChoice> {
        let default = salvor_engine::repo::cache::default_base;
        Ok(match (&self.cache_dir, self.no_cache) {
            (Some(_), true) => {
                return Err(
                    Error::invalid("--cache-dir and --no-cache contradict each other")
                        .hint("keep one of them (check SALVOR_CACHE_DIR and SALVOR_NO_CACHE too)"),
                );
            }
            (_, true) => CacheChoice::None,
            (Some(dir), false) => CacheChoice::Named(dir.clone()),
            (None, false) => match default() {
                None => CacheChoice::None,
                Some(dir) if backend.is_local() => CacheChoice::DerivedOnly(dir),
                Some(dir) => CacheChoice::Default(dir),
            },
        })
    }

    fn load_config(&self) -> salvor_engine::Result<crate::config::Config> {
        let path = self.config.as_deref().ok_or_else(|| {
            Error::invalid("no configuration file given")
                .hint("pass --config salvor.toml or set SALVOR_CONFIG")
        })?;
        crate::config::Config::load(path)
    }

    fn show_progress(&self) -> bool {
        !self.quiet && !self.json && std::io::IsTerminal::is_terminal(&std::io::stderr())
    }
}

/// Arguments of `salvor init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Average chunk size for files, e.g. 512K (fixed for the repository's life).
    #[arg(long, value_parser = parse_size)]
    file_chunk_size: Option<u32>,
    /// Average chunk size for streams and dumps, e.g. 16K: smaller finds more
    /// unchanged data between two days' dumps.
    #[arg(long, value_parser = parse_size)]
    stream_chunk_size: Option<u32>,
    /// Where streams may be cut: `lines` (default) only at line ends, which
    /// suits SQL and JSON dumps; `gear` anywhere, for binary streams.
    #[arg(long, value_enum, default_value_t = StreamCut::Lines)]
    stream_cut: StreamCut,
    /// zstd level for new data (1 fastest … 19 smallest; default 3).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=19))]
    compression: Option<i32>,
}

/// Cut rule for streams, as `init --stream-cut` spells it.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum StreamCut {
    Lines,
    Gear,
}

/// Parses `4096`, `16K`, `1M`.
fn parse_size(s: &str) -> Result<u32, String> {
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1024),
        Some('m' | 'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size {s:?} (use e.g. 16K or 1M)"))
}

fn init(g: &GlobalOptions, a: &InitArgs) -> anyhow::Result<i32> {
    let backend = g.backend()?;
    let mut opts = salvor_engine::repo::InitOptions::default();
    if let Some(avg) = a.file_chunk_size {
        opts.config.file_chunker = ChunkerParams::for_files(avg)?;
    }
    let cut = match a.stream_cut {
        StreamCut::Lines => CutRule::Lines,
        StreamCut::Gear => CutRule::Gear,
    };
    let stream_avg = a
        .stream_chunk_size
        .unwrap_or(opts.config.stream_chunker.avg);
    opts.config.stream_chunker = ChunkerParams::for_streams(stream_avg, cut)?;
    if let Some(level) = a.compression {
        opts.config.compression_level = level;
    }
    let pw = password::get(g, true)?;
    let repo = Repository::init(backend, pw.as_bytes(), &opts)?;
    if g.json {
        output::json(&serde_json::json!({ "id": repo.config().id, "location": g.location()? }))?;
    } else if !g.quiet {
        outln!(
            "created repository {} at {}",
            &repo.config().id[..8],
            g.location()?
        )?;
        outln!("keep the password safe: without it the data cannot be restored")?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks a command's arguments only when that command is parsed
    /// (two arguments named alike panic then): check every one up front.
    #[test]
    fn every_command_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
