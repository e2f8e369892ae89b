//! The restore's machinery: a private scratch `redis-server` that loads the
//! snapshot's RDB, and the pipelined copy of its keys into the target.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use salvor_engine::{Error, ErrorKind, Result};

use super::RedisConfig;
use super::protocol::{Conn, Reply};
use crate::source::RestoreContext;

/// Keys per pipelined batch on restore.
const BATCH: usize = 500;

/// A private `redis-server` that loaded a snapshot's RDB; killed and removed on drop.
pub(super) struct Scratch {
    child: Child,
    dir: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new private (0700) directory under the system's temporary directory.
pub(in crate::source) fn private_dir(prefix: &str) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io("cannot create scratch directory", &dir, e))?;
    Ok(dir)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
}

impl Scratch {
    /// Writes the snapshot's RDB into a private directory and starts a server on it.
    pub(super) fn start(
        cfg: &RedisConfig,
        ctx: &RestoreContext,
        stream: &str,
    ) -> Result<(Self, Conn<UnixStream>)> {
        let dir = private_dir("salvor-redis")?;
        let rdb = dir.join("dump.rdb");
        let written = std::fs::File::create(&rdb)
            .map_err(|e| Error::io("cannot create", &rdb, e))
            .and_then(|f| {
                let mut w = io::BufWriter::new(f);
                ctx.copy_stream(stream, &mut w)?;
                w.flush().map_err(|e| Error::io("cannot write", &rdb, e))
            });
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let sock = dir.join("redis.sock");
        let mut cmd = crate::source::process::command(&cfg.redis_server);
        cmd.args([
            "--port",
            "0",
            "--unixsocketperm",
            "700",
            "--dbfilename",
            "dump.rdb",
        ])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--unixsocket")
        .arg(&sock)
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("cannot start {} for the restore", cfg.redis_server),
                )
                .source(e)
                .hint("install redis-server or set redis_server in the source's configuration"));
            }
        };
        let mut scratch = Self { child, dir };
        let conn = scratch.wait_ready(&sock, cfg.timeout())?;
        Ok((scratch, conn))
    }

    /// Waits until the server has loaded the RDB and answers on its socket.
    fn wait_ready(&mut self, sock: &Path, timeout: Duration) -> Result<Conn<UnixStream>> {
        let start = Instant::now();
        let failed = |dir: &Path, why: &str| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "scratch redis-server {why}: {}",
                    log_tail(&dir.join("redis.log"))
                ),
            )
            .hint("the rdb may be newer than this redis-server; set redis_server to a newer binary")
        };
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(failed(
                    &self.dir,
                    &format!("could not load the snapshot ({status})"),
                ));
            }
            if let Ok(s) = UnixStream::connect(sock) {
                let mut c = Conn::new(s, "scratch server".into());
                match c.call_str(&["PING"]) {
                    Ok(_) => return Ok(c),
                    Err(e) if e.to_string().contains("LOADING") => {}
                    Err(e) => return Err(e),
                }
            }
            if start.elapsed() > timeout {
                return Err(failed(&self.dir, "did not become ready"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Keys of `db` that start with one of `only` (all when empty), deduplicated.
pub(super) fn scan_keys(
    c: &mut Conn<UnixStream>,
    db: u32,
    only: &[String],
) -> Result<BTreeSet<Vec<u8>>> {
    c.call_str(&["SELECT", &db.to_string()])?;
    let mut keys = BTreeSet::new();
    let mut cursor = b"0".to_vec();
    loop {
        let reply = c.call(&[b"SCAN", &cursor, b"COUNT", b"1000"])?;
        let Reply::Array(Some(mut parts)) = reply else {
            return Err(Error::new(
                ErrorKind::Backend,
                "unexpected SCAN reply from the scratch server",
            ));
        };
        let batch = parts.pop();
        cursor = match parts.pop() {
            Some(Reply::Bulk(Some(c))) => c,
            _ => b"0".to_vec(),
        };
        if let Some(Reply::Array(Some(batch))) = batch {
            for k in batch {
                if let Reply::Bulk(Some(k)) = k
                    && (only.is_empty() || only.iter().any(|p| k.starts_with(p.as_bytes())))
                {
                    keys.insert(k);
                }
            }
        }
        if cursor == b"0" {
            return Ok(keys);
        }
    }
}

/// How many of `keys` exist in the target's current database, and one of them.
pub(super) fn existing(
    target: &mut Conn<TcpStream>,
    keys: &[Vec<u8>],
) -> Result<(u64, Option<String>)> {
    let mut n = 0;
    let mut example = None;
    for batch in keys.chunks(BATCH) {
        for k in batch {
            target.send(&[b"EXISTS", k])?;
        }
        for k in batch {
            if let Reply::Int(1) = target.recv()? {
                n += 1;
                example.get_or_insert_with(|| String::from_utf8_lossy(k).into_owned());
            }
        }
    }
    Ok((n, example))
}

/// Copies `keys` from the scratch server's to the target's current database.
pub(super) fn copy_keys(
    scratch: &mut Conn<UnixStream>,
    target: &mut Conn<TcpStream>,
    keys: &[Vec<u8>],
    replace: bool,
) -> Result<u64> {
    let mut copied = 0;
    for batch in keys.chunks(BATCH) {
        for k in batch {
            scratch.send(&[b"PTTL", k])?;
            scratch.send(&[b"DUMP", k])?;
        }
        let mut dumps = Vec::with_capacity(batch.len());
        for _ in batch {
            let ttl = match scratch.recv()? {
                Reply::Int(ms) => ms,
                _ => -2,
            };
            dumps.push((ttl, scratch.recv()?));
        }
        let mut sent = 0;
        for (k, (ttl, dump)) in batch.iter().zip(&dumps) {
            let (Reply::Bulk(Some(payload)), true) = (dump, *ttl != -2) else {
                continue; // expired since the scratch server loaded it
            };
            let ttl = ttl.max(&0).to_string();
            let mut args: Vec<&[u8]> = vec![b"RESTORE", k, ttl.as_bytes(), payload];
            if replace {
                args.push(b"REPLACE");
            }
            target.send(&args)?;
            sent += 1;
        }
        for _ in 0..sent {
            if let Reply::Error(msg) = target.recv()? {
                return Err(Error::new(
                    ErrorKind::Backend,
                    format!("redis at {} refused a key: {msg}", target.peer),
                )
                .hint(
                    "a key appeared in the target during the restore; pass --yes to replace keys",
                ));
            }
            copied += 1;
        }
    }
    Ok(copied)
}

/// The database number `--into` names, if any.
pub(super) fn into_db(ctx: &RestoreContext) -> Result<Option<u32>> {
    ctx.rename
        .map(|r| {
            r.parse().map_err(|_| {
                Error::invalid(format!("--into {r:?} is not a redis database number"))
                    .hint("for a redis source, --into N restores every key into database N")
            })
        })
        .transpose()
}
