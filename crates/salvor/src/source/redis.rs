//! `redis`: an RDB snapshot taken over the network, as a replica would get it.
//!
//! ```toml
//! [source.cache]
//! type = "redis"
//! host = "127.0.0.1"                       # default
//! port = 6379                              # default
//! username = "backup"                      # optional (ACL user; default user otherwise)
//! password = { env = "REDIS_PASSWORD" }    # optional Secret
//! timeout_secs = 60                        # optional: connect and per-read timeout
//! redis_server = "redis-server"            # optional: binary for the restore's scratch server
//! ```
//!
//! # Backup
//!
//! salvor speaks the replication handshake itself: `AUTH`, `REPLCONF capa eof
//! capa psync2`, `REPLCONF rdb-only 1` (Redis 7+, ignored before), then `PSYNC
//! ? -1`. The server answers `+FULLRESYNC <replid> <offset>` and sends the RDB
//! either as `$<len>\r\n<bytes>` or, in diskless mode, as `$EOF:<40-byte
//! mark>\r\n<bytes><mark>`. The bytes go straight into the repository; the
//! connection is closed right after them. Because salvor advertises `capa
//! eof`, a server with `repl-diskless-sync yes` (the default since 7.0) forks
//! and streams the RDB to the socket without touching its disk; the manifest
//! records which form was used (`"transfer": "diskless"` or `"disk"`).
//! Alternatives: `redis-cli --rdb` needs a file (it cannot write to a pipe
//! portably before 7.2) and `BGSAVE` + copying `dump.rdb` needs access to the
//! server's disk.
//!
//! The key counts in the manifest come from `INFO keyspace`, read on the same
//! connection just before the fork: exact for a quiet server, approximate under
//! concurrent writes (the RDB itself is always one point in time).
//!
//! # Restore
//!
//! The RDB is written into a private directory (mode 0700) where a scratch
//! `redis-server` loads it, listening only on a unix socket there (no port,
//! nothing reachable from outside). Its keys are then copied into the target
//! (this source, or another configured with `--to`) with `DUMP` + `PTTL` and
//! `RESTORE`, keeping values, encodings and remaining TTLs. Existing target
//! keys are never overwritten without `--yes` (or an interactive yes):
//! `RESTORE ... REPLACE` is used only then. `--only PREFIX` (repeatable)
//! restores keys starting with a prefix; `--into N` puts every key into
//! database N. The scratch server is killed and its directory removed when
//! the restore ends. This works against any live target, including managed
//! ones where the data directory is out of reach; the price is one round trip
//! per batch of 500 keys and a scratch `redis-server` at least as new as the
//! one that wrote the RDB.
//!
//! Manifest (and `inspect`, without the transfer fields):
//!
//! ```json
//! { "type": "redis", "server": "127.0.0.1:6379", "redis_version": "7.0.15",
//!   "stream": "dump.rdb", "bytes": 12345, "rdb_version": "0010",
//!   "transfer": "diskless", "replid": "...", "offset": 1234,
//!   "keyspace": { "db0": { "keys": 10, "expires": 1 } }, "keys": 10 }
//! ```

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use salvor_engine::{Error, ErrorKind, Result};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::secret::{self, Secret};
use super::{BackupContext, RestoreContext, RestoreReport, Source};

/// The stream's name inside the snapshot.
const STREAM: &str = "dump.rdb";
/// Length of the diskless transfer's end mark.
const MARK_LEN: usize = 40;
/// Keys per pipelined batch on restore.
const BATCH: usize = 500;

/// Configuration of a `redis` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Host name or address.
    #[serde(default = "default_host")]
    pub host: String,
    /// TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// ACL user name; without it `AUTH` uses the default user.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (`requirepass` or the ACL user's).
    #[serde(default)]
    pub password: Option<Secret>,
    /// Connect and per-read timeout in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The `redis-server` binary used for the restore's scratch server.
    #[serde(default = "default_server")]
    pub redis_server: String,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    6379
}
fn default_timeout() -> u64 {
    60
}
fn default_server() -> String {
    "redis-server".into()
}

/// One RESP2 reply.
#[derive(Debug)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn text(&self) -> String {
        match self {
            Self::Status(s) | Self::Error(s) => s.clone(),
            Self::Int(i) => i.to_string(),
            Self::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Self::Bulk(None) | Self::Array(_) => String::new(),
        }
    }
}

fn bad_data(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one line without its `\r\n`.
fn read_line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.by_ref().take(64 * 1024).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-reply",
        ));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(line)
}

fn parse_int(b: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad_data("malformed length in a redis reply"))
}

/// Reads one reply.
fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(r)?;
    let (kind, rest) = line
        .split_first()
        .ok_or_else(|| bad_data("empty redis reply"))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    Ok(match kind {
        b'+' => Reply::Status(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Int(parse_int(rest)?),
        b'$' => match u64::try_from(parse_int(rest)?) {
            Err(_) => Reply::Bulk(None),
            Ok(n) => {
                let mut v = Vec::new();
                r.by_ref().take(n + 2).read_to_end(&mut v)?;
                if v.len() as u64 != n + 2 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed mid-reply",
                    ));
                }
                v.truncate(n as usize);
                Reply::Bulk(Some(v))
            }
        },
        b'*' => match usize::try_from(parse_int(rest)?) {
            Err(_) => Reply::Array(None),
            Ok(n) => Reply::Array(Some(
                (0..n).map(|_| read_reply(r)).collect::<io::Result<_>>()?,
            )),
        },
        _ => {
            return Err(bad_data(
                "unexpected data from redis (is this a redis server?)",
            ));
        }
    })
}

/// Encodes a command.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A connection speaking RESP2.
struct Conn<S> {
    io: BufReader<S>,
    peer: String,
}

impl<S: Read + Write> Conn<S> {
    fn new(stream: S, peer: String) -> Self {
        Self {
            io: BufReader::with_capacity(256 * 1024, stream),
            peer,
        }
    }

    fn lost(&self, e: io::Error) -> Error {
        Error::new(
            ErrorKind::Backend,
            format!("lost the connection to redis at {}", self.peer),
        )
        .source(e)
    }

    /// Sends one command without waiting for its reply (pipelining).
    fn send(&mut self, args: &[&[u8]]) -> Result<()> {
        let buf = encode(args);
        self.io.get_mut().write_all(&buf).map_err(|e| self.lost(e))
    }

    fn recv(&mut self) -> Result<Reply> {
        read_reply(&mut self.io).map_err(|e| self.lost(e))
    }

    /// Sends a command and returns its reply; an error reply is an error.
    fn call(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.send(args)?;
        match self.recv()? {
            Reply::Error(msg) => Err(Error::new(
                ErrorKind::Backend,
                format!(
                    "redis at {} refused {}: {msg}",
                    self.peer,
                    String::from_utf8_lossy(args[0])
                ),
            )),
            r => Ok(r),
        }
    }

    fn call_str(&mut self, args: &[&str]) -> Result<Reply> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.call(&args)
    }

    /// Authenticates, or checks that no authentication is needed.
    fn auth(&mut self, user: Option<&str>, password: Option<&str>) -> Result<()> {
        let Some(pw) = password else {
            return match self.call_str(&["PING"]) {
                Err(e) if e.to_string().contains("NOAUTH") => Err(Error::invalid(format!(
                    "redis at {} requires a password",
                    self.peer
                ))
                .hint("set password = { env = \"VAR\" } in the source's configuration")),
                other => other.map(drop),
            };
        };
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        args.extend(user.map(str::as_bytes));
        args.push(pw.as_bytes());
        self.send(&args)?;
        match self.recv()? {
            Reply::Error(msg) => Err(Error::invalid(format!(
                "redis at {} rejected the credentials: {}",
                self.peer,
                msg.split_whitespace().next().unwrap_or("error")
            ))
            .hint("check username and the password secret in the source's configuration")),
            _ => Ok(()),
        }
    }

    /// `INFO section` as key/value pairs.
    fn info(&mut self, section: &str) -> Result<Vec<(String, String)>> {
        let text = self.call_str(&["INFO", section])?.text();
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect())
    }

    /// Keys and expiring keys per database, from `INFO keyspace`.
    fn keyspace(&mut self) -> Result<Map<String, Value>> {
        let mut out = Map::new();
        for (db, v) in self.info("keyspace")? {
            let field = |name: &str| {
                v.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| *k == name)
                    .and_then(|(_, n)| n.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            out.insert(
                db,
                json!({ "keys": field("keys"), "expires": field("expires") }),
            );
        }
        Ok(out)
    }
}

fn total_keys(keyspace: &Map<String, Value>) -> u64 {
    keyspace.values().filter_map(|v| v["keys"].as_u64()).sum()
}

/// How the RDB payload is delimited.
enum Framing {
    /// `$<len>`: this many bytes are left.
    Length(u64),
    /// `$EOF:<mark>`: the payload ends at the mark.
    Mark([u8; MARK_LEN]),
}

/// The RDB payload of a full resynchronisation, as a reader.
struct RdbBody<'a, R> {
    inner: &'a mut R,
    framing: Framing,
    /// Mark framing: bytes read but not yet returned (may hold a partial mark).
    held: Vec<u8>,
    /// Mark framing: the mark was found; `held` is all that is left.
    ended: bool,
    /// The first bytes, for the `REDISnnnn` header check.
    head: Vec<u8>,
    bytes: u64,
}

impl<'a, R: BufRead> RdbBody<'a, R> {
    fn new(inner: &'a mut R, framing: Framing) -> Self {
        Self {
            inner,
            framing,
            held: Vec::new(),
            ended: false,
            head: Vec::new(),
            bytes: 0,
        }
    }

    fn read_length(&mut self, left: u64, out: &mut [u8]) -> io::Result<usize> {
        if left == 0 {
            return Ok(0);
        }
        let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut out[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "redis closed the connection before the end of the rdb",
            ));
        }
        self.framing = Framing::Length(left - n as u64);
        Ok(n)
    }

    fn read_marked(&mut self, mark: [u8; MARK_LEN], out: &mut [u8]) -> io::Result<usize> {
        loop {
            // Bytes that cannot be part of a mark not yet found are safe to return.
            let safe = if self.ended {
                self.held.len()
            } else {
                self.held.len().saturating_sub(MARK_LEN - 1)
            };
            if safe > 0 || self.ended {
                let n = safe.min(out.len());
                out[..n].copy_from_slice(&self.held[..n]);
                self.held.drain(..n);
                return Ok(n);
            }
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "redis closed the connection before the end of the rdb",
                ));
            }
            let len = chunk.len();
            self.held.extend_from_slice(chunk);
            self.inner.consume(len);
            if let Some(at) = self.held.windows(MARK_LEN).position(|w| w == mark) {
                // What follows the mark is the replication stream: not ours.
                self.held.truncate(at);
                self.ended = true;
            }
        }
    }
}

impl<R: BufRead> Read for RdbBody<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = match self.framing {
            Framing::Length(left) => self.read_length(left, out)?,
            Framing::Mark(mark) => self.read_marked(mark, out)?,
        };
        if self.head.len() < 9 {
            let take = (9 - self.head.len()).min(n);
            self.head.extend_from_slice(&out[..take]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// What `PSYNC` started.
struct FullSync {
    replid: String,
    offset: i64,
    framing: Framing,
}

/// Reads the next line that is not a keep-alive newline.
fn next_line<S: Read + Write>(c: &mut Conn<S>) -> Result<String> {
    loop {
        let line = read_line(&mut c.io).map_err(|e| c.lost(e))?;
        if !line.is_empty() {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
    }
}

/// Runs the replication handshake up to the first byte of the RDB.
fn start_full_sync<S: Read + Write>(c: &mut Conn<S>) -> Result<FullSync> {
    c.call_str(&["REPLCONF", "capa", "eof", "capa", "psync2"])?;
    // Redis 7+: no replication stream after the RDB; older servers refuse it.
    let _ = c.call_str(&["REPLCONF", "rdb-only", "1"]);
    c.send(&[b"PSYNC", b"?", b"-1"])?;
    let peer = c.peer.clone();
    let refused = |what: &str| {
        Error::new(
            ErrorKind::Backend,
            format!("redis at {peer} refused the replication request: {what}"),
        )
        .hint("the user needs replication rights (ACL: +psync +replconf +sync)")
    };
    let line = next_line(c)?;
    let mut words = line.split_whitespace();
    if words.next() != Some("+FULLRESYNC") {
        return Err(refused(line.trim_start_matches('-')));
    }
    let replid = words.next().unwrap_or_default().to_string();
    let offset = words.next().and_then(|o| o.parse().ok()).unwrap_or(0);
    let header = next_line(c)?;
    let framing = match header.strip_prefix("$EOF:") {
        Some(m) if m.len() == MARK_LEN => {
            let mut mark = [0; MARK_LEN];
            mark.copy_from_slice(m.as_bytes());
            Framing::Mark(mark)
        }
        _ => match header.strip_prefix('$').and_then(|n| n.parse().ok()) {
            Some(n) => Framing::Length(n),
            None => return Err(refused(header.trim_start_matches('-'))),
        },
    };
    Ok(FullSync {
        replid,
        offset,
        framing,
    })
}

impl RedisConfig {
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// Connects and authenticates.
    fn connect(&self) -> Result<Conn<TcpStream>> {
        let addr = self.addr();
        let unreachable = |e: io::Error| {
            Error::new(
                ErrorKind::Backend,
                format!("cannot connect to redis at {addr}"),
            )
            .source(e)
            .hint("check host and port in the source's configuration and that redis is running")
        };
        let sock = addr
            .to_socket_addrs()
            .map_err(unreachable)?
            .next()
            .ok_or_else(|| unreachable(io::Error::other("no address")))?;
        let stream = TcpStream::connect_timeout(&sock, self.timeout()).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(self.timeout()))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout())))
            .map_err(unreachable)?;
        let mut c = Conn::new(stream, addr.clone());
        let password = secret::resolve(self.password.as_ref())?;
        c.auth(self.username.as_deref(), password.as_deref())?;
        Ok(c)
    }

    /// Version and keyspace of a live server.
    fn live(&self, c: &mut Conn<TcpStream>) -> Result<Map<String, Value>> {
        let version = c
            .info("server")?
            .into_iter()
            .find(|(k, _)| k == "redis_version")
            .map(|(_, v)| v)
            .unwrap_or_default();
        let keyspace = c.keyspace()?;
        let mut out = Map::new();
        out.insert("type".into(), "redis".into());
        out.insert("server".into(), self.addr().into());
        out.insert("redis_version".into(), version.into());
        out.insert("keys".into(), total_keys(&keyspace).into());
        out.insert("keyspace".into(), keyspace.into());
        Ok(out)
    }
}

/// A private `redis-server` that loaded a snapshot's RDB; killed and removed on drop.
struct Scratch {
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
pub(super) fn private_dir(prefix: &str) -> Result<PathBuf> {
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
    fn start(
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
fn scan_keys(c: &mut Conn<UnixStream>, db: u32, only: &[String]) -> Result<BTreeSet<Vec<u8>>> {
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
fn existing(target: &mut Conn<TcpStream>, keys: &[Vec<u8>]) -> Result<(u64, Option<String>)> {
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
fn copy_keys(
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
fn into_db(ctx: &RestoreContext) -> Result<Option<u32>> {
    ctx.rename
        .map(|r| {
            r.parse().map_err(|_| {
                Error::invalid(format!("--into {r:?} is not a redis database number"))
                    .hint("for a redis source, --into N restores every key into database N")
            })
        })
        .transpose()
}

impl Source for &RedisConfig {
    fn backup(&self, ctx: &BackupContext) -> Result<(SnapshotId, Snapshot)> {
        let mut c = self.connect()?;
        let mut manifest = self.live(&mut c)?;
        let sync = start_full_sync(&mut c)?;
        let transfer = match sync.framing {
            Framing::Mark(_) => "diskless",
            Framing::Length(_) => "disk",
        };
        let mut streams = ctx.streams()?;
        let mut body = RdbBody::new(&mut c.io, sync.framing);
        streams.add(STREAM, &mut body)?;
        if !body.head.starts_with(b"REDIS") {
            return Err(Error::new(
                ErrorKind::Backend,
                format!("redis at {} sent something that is not an rdb", self.addr()),
            ));
        }
        let rdb_version = String::from_utf8_lossy(&body.head[5..]).into_owned();
        manifest.insert("stream".into(), STREAM.into());
        manifest.insert("bytes".into(), body.bytes.into());
        manifest.insert("rdb_version".into(), rdb_version.into());
        manifest.insert("transfer".into(), transfer.into());
        manifest.insert("replid".into(), sync.replid.into());
        manifest.insert("offset".into(), sync.offset.into());
        streams.commit(Value::Object(manifest))
    }

    fn restore(&self, ctx: &RestoreContext) -> Result<RestoreReport> {
        let into = into_db(ctx)?;
        let stream = ctx.manifest()["stream"]
            .as_str()
            .unwrap_or(STREAM)
            .to_string();
        let mut target = self.connect()?;
        let (_scratch, mut sc) = Scratch::start(self, ctx, &stream)?;
        let mut report = RestoreReport::default();
        report
            .actions
            .push(format!("loaded {stream} into a scratch redis-server"));
        // Plan: keys per source database, and how many already exist in the target.
        let mut plan = Vec::new();
        let mut clashes = (0, None);
        for db in sc.keyspace()?.keys() {
            let Some(n) = db.strip_prefix("db").and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let keys: Vec<Vec<u8>> = scan_keys(&mut sc, n, ctx.only)?.into_iter().collect();
            let to = into.unwrap_or(n);
            target.call_str(&["SELECT", &to.to_string()])?;
            let (found, example) = existing(&mut target, &keys)?;
            clashes.0 += found;
            if clashes.1.is_none() {
                clashes.1 = example.map(|k| format!("{k:?} in db{to}"));
            }
            plan.push((n, to, keys));
        }
        if clashes.0 > 0 {
            ctx.confirm(&format!(
                "{} existing keys in redis at {} (e.g. {})",
                clashes.0,
                self.addr(),
                clashes.1.unwrap_or_default()
            ))?;
        }
        let mut total = 0;
        for (from, to, keys) in &plan {
            report.actions.push(format!(
                "copy {} keys of db{from} into db{to} of redis at {}",
                keys.len(),
                self.addr()
            ));
            let n = if ctx.dry_run {
                keys.len() as u64
            } else {
                sc.call_str(&["SELECT", &from.to_string()])?;
                target.call_str(&["SELECT", &to.to_string()])?;
                copy_keys(&mut sc, &mut target, keys, ctx.yes || clashes.0 > 0)?
            };
            total += n;
            report.counts.insert(format!("db{from}"), n.into());
        }
        report.counts.insert("keys".into(), total.into());
        report.counts.insert("replaced".into(), clashes.0.into());
        Ok(report)
    }

    fn inspect(&self) -> Result<Value> {
        let mut c = self.connect()?;
        Ok(Value::Object(self.live(&mut c)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        let mut r: &[u8] = b"*2\r\n$1\r\n0\r\n*1\r\n$3\r\nabc\r\n:-2\r\n$-1\r\n-ERR no\r\n";
        let Reply::Array(Some(a)) = read_reply(&mut r).unwrap() else {
            panic!()
        };
        assert_eq!(a.len(), 2);
        assert!(matches!(read_reply(&mut r).unwrap(), Reply::Int(-2)));
        assert!(matches!(read_reply(&mut r).unwrap(), Reply::Bulk(None)));
        assert!(matches!(read_reply(&mut r).unwrap(), Reply::Error(_)));
        assert!(read_reply(&mut r).is_err());
        let mut short: &[u8] = b"$10\r\nabc";
        assert!(read_reply(&mut short).is_err());
    }

    #[test]
    fn marked_payload_stops_at_the_mark_across_reads() {
        let mark = [b'm'; MARK_LEN];
        let mut wire = b"REDIS0010payload".to_vec();
        wire.extend_from_slice(&mark);
        wire.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        // A tiny buffer splits the mark across reads.
        let mut r = BufReader::with_capacity(7, &wire[..]);
        let mut body = RdbBody::new(&mut r, Framing::Mark(mark));
        let mut out = Vec::new();
        body.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"REDIS0010payload");
        assert_eq!(&body.head, b"REDIS0010");
        let mut cut = BufReader::new(&b"REDIS0010pay"[..]);
        let err = RdbBody::new(&mut cut, Framing::Mark(mark)).read_to_end(&mut Vec::new());
        assert!(err.is_err());
        let mut short = BufReader::new(&b"REDIS"[..]);
        let err = RdbBody::new(&mut short, Framing::Length(9)).read_to_end(&mut Vec::new());
        assert!(err.is_err());
    }
}
