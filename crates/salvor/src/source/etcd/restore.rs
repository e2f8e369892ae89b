//! Restore: `etcdctl snapshot restore` into a fresh data directory, and for
//! `--only` a scratch etcd serving the snapshot whose keys are replayed into
//! the live target.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use salvor_engine::{Error, ErrorKind, Result};
use serde_json::json;

use super::client::Client;
use super::{EtcdConfig, STREAM};
use crate::source::{RestoreContext, RestoreReport, process};

impl EtcdConfig {
    fn etcdctl(&self) -> Command {
        let mut c = crate::source::process::command(&self.etcdctl);
        c.env("ETCDCTL_API", "3");
        c
    }

    /// `etcdctl snapshot restore FILE` into `data` (which must not exist).
    fn restore_data_dir(&self, file: &Path, data: &Path, name: &str, peer: &str) -> Result<()> {
        let mut cmd = self.etcdctl();
        cmd.args(["snapshot", "restore"])
            .arg(file)
            .arg("--data-dir")
            .arg(data)
            .args([
                "--name",
                name,
                "--initial-cluster",
                &format!("{name}={peer}"),
            ])
            .args(["--initial-advertise-peer-urls", peer]);
        process::run(cmd, "etcdctl snapshot restore").map(drop)
    }

    /// Full restore: the snapshot becomes the data directory `dir`.
    pub(super) fn restore_dir(
        &self,
        ctx: &RestoreContext,
        dir: &Path,
        report: &mut RestoreReport,
    ) -> Result<()> {
        let occupied = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
        report.actions.push(format!(
            "{} etcd data directory {} (member {}, peer {})",
            if occupied { "replace" } else { "create" },
            dir.display(),
            self.restore_name,
            self.restore_peer_url
        ));
        if occupied {
            ctx.confirm(
                &format!("etcd data directory {}", dir.display()),
                "--into DIR",
            )?;
        }
        if ctx.dry_run {
            return Ok(());
        }
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io("cannot create", parent, e))?;
        let work = Work::new(parent, dir)?;
        let file = work.snapshot(ctx)?;
        let fresh = work.0.join("data");
        self.restore_data_dir(&file, &fresh, &self.restore_name, &self.restore_peer_url)?;
        if occupied {
            let old = PathBuf::from(format!("{}.salvor-old-{}", dir.display(), unix_time()));
            std::fs::rename(dir, &old).map_err(|e| Error::io("cannot move aside", dir, e))?;
            report
                .actions
                .push(format!("moved the old directory to {}", old.display()));
        } else if dir.exists() {
            std::fs::remove_dir(dir).map_err(|e| Error::io("cannot replace", dir, e))?;
        }
        std::fs::rename(&fresh, dir).map_err(|e| Error::io("cannot create", dir, e))?;
        Ok(())
    }

    /// Selective restore: keys under `ctx.only` replayed into the live target.
    pub(super) fn restore_prefixes(
        &self,
        ctx: &RestoreContext,
        report: &mut RestoreReport,
    ) -> Result<()> {
        let target = Client::new(self, &self.endpoint)?;
        let scratch = ScratchEtcd::start(self, ctx)?;
        let source = Client::new(
            &EtcdConfig {
                username: None,
                ..self.clone()
            },
            &scratch.endpoint,
        )?;
        let mut kvs = Vec::new();
        for p in ctx.only {
            let found = source.range_prefix(p.as_bytes())?;
            report.counts.insert(p.clone(), found.len().into());
            kvs.extend(found);
        }
        let mut clashes = 0;
        for p in ctx.only {
            let existing = target.range_prefix(p.as_bytes())?;
            let existing: std::collections::HashSet<_> =
                existing.into_iter().map(|(k, _)| k).collect();
            clashes += kvs.iter().filter(|(k, _)| existing.contains(k)).count();
        }
        report.actions.push(format!(
            "put {} keys under {} into etcd at {} ({clashes} existing)",
            kvs.len(),
            ctx.only.join(", "),
            target.endpoint
        ));
        if clashes > 0 {
            ctx.confirm(
                &format!("{clashes} existing keys in etcd at {}", target.endpoint),
                "--to OTHER_SOURCE",
            )?;
        }
        report.counts.insert("replaced".into(), clashes.into());
        if !ctx.dry_run {
            let n = target.put_all(&kvs)?;
            report.counts.insert("keys".into(), n.into());
        }
        Ok(())
    }
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A private working directory (mode 0700), removed on drop.
struct Work(PathBuf);

impl Work {
    /// Creates `parent/.NAME.salvor-restore-PID` next to `dir`.
    fn new(parent: &Path, dir: &Path) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let work = parent.join(format!(".{name}.salvor-restore-{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&work)
            .map_err(|e| Error::io("cannot create", &work, e))?;
        Ok(Self(work))
    }

    /// Writes the snapshot's stream into the directory and returns its path.
    fn snapshot(&self, ctx: &RestoreContext) -> Result<PathBuf> {
        let manifest = ctx.manifest();
        let stream = manifest["stream"].as_str().unwrap_or(STREAM);
        let file = self.0.join("snapshot.db");
        let f = std::fs::File::create(&file).map_err(|e| Error::io("cannot create", &file, e))?;
        let mut w = io::BufWriter::new(f);
        ctx.copy_stream(stream, &mut w)?;
        w.flush().map_err(|e| Error::io("cannot write", &file, e))?;
        Ok(file)
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port below 32768 that is free right now.
fn free_port(avoid: u16) -> Result<u16> {
    let seed = (std::process::id() as u64 + unix_time()) % 10_000;
    (0..200u64)
        .map(|i| (20_000 + (seed + i * 37) % 12_000) as u16)
        .find(|&p| p != avoid && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .ok_or_else(|| Error::new(ErrorKind::Io, "no free loopback port for a scratch etcd"))
}

/// A private etcd serving a snapshot on loopback; killed and removed on drop.
struct ScratchEtcd {
    child: Child,
    endpoint: String,
    work: Work,
}

impl Drop for ScratchEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ScratchEtcd {
    fn start(cfg: &EtcdConfig, ctx: &RestoreContext) -> Result<Self> {
        let work = Work(crate::source::redis::private_dir("salvor-etcd")?);
        let file = work.snapshot(ctx)?;
        let data = work.0.join("data");
        let client = free_port(0)?;
        let peer = free_port(client)?;
        let peer_url = format!("http://127.0.0.1:{peer}");
        let endpoint = format!("http://127.0.0.1:{client}");
        cfg.restore_data_dir(&file, &data, "salvor-scratch", &peer_url)?;
        let log = std::fs::File::create(work.0.join("etcd.log"))
            .map_err(|e| Error::io("cannot create", &work.0, e))?;
        let child = crate::source::process::command(&cfg.etcd)
            .args([
                "--name",
                "salvor-scratch",
                "--listen-client-urls",
                &endpoint,
            ])
            .args([
                "--advertise-client-urls",
                &endpoint,
                "--listen-peer-urls",
                &peer_url,
            ])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("salvor-scratch={peer_url}")])
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("cannot start {} for the restore", cfg.etcd),
                )
                .source(e)
                .hint("install etcd or set etcd in the source's configuration")
            })?;
        let mut s = Self {
            child,
            endpoint,
            work,
        };
        s.wait_ready(cfg)?;
        Ok(s)
    }

    /// An error with the last line of the scratch server's log.
    fn failed(&self, why: &str) -> Error {
        let log = std::fs::read_to_string(self.work.0.join("etcd.log")).unwrap_or_default();
        let last = log.lines().last().unwrap_or("no log").to_string();
        Error::new(ErrorKind::Io, format!("scratch etcd {why}: {last}")).hint(
            "check that the etcd binary can serve this snapshot (set etcd in the configuration)",
        )
    }

    /// Waits until the scratch server answers.
    fn wait_ready(&mut self, cfg: &EtcdConfig) -> Result<()> {
        let start = Instant::now();
        let probe = Client::new(
            &EtcdConfig {
                username: None,
                timeout_secs: 2,
                ..cfg.clone()
            },
            &self.endpoint,
        )?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failed(&format!("exited ({status})")));
            }
            if probe.call("maintenance/status", &json!({})).is_ok() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(cfg.timeout_secs.max(1)) {
                return Err(self.failed("did not become ready"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
