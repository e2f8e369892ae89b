//! The world of a CLI test: a temporary directory with sources, a
//! repository and restore targets, the `salvor` binary run against it, and
//! the helpers that build trees and compare restores byte for byte.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use assert_cmd::Command;
use salvor_engine::Repository;
use salvor_engine::crypto::KdfParams;
use salvor_engine::repo::InitOptions;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_salvor");
pub const PASSWORD: &str = "cli test password";
/// Generous cap so a hung command fails the test instead of the whole run.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// Environment changes for one command: `Some` sets a variable, `None` removes it.
pub type Env<'a> = [(&'a str, Option<&'a dyn AsRef<OsStr>>)];

/// One test's world: a temporary directory holding sources, the repository
/// (`repo/`) and restore targets.
pub struct World {
    pub dir: tempfile::TempDir,
}

pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn assert_no_panic(out: &Output) {
    assert_ne!(
        out.status.code(),
        Some(101),
        "salvor panicked:\n{}",
        show(out)
    );
    assert!(
        !stderr(out).contains("panicked"),
        "salvor panicked:\n{}",
        show(out)
    );
}

impl World {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    pub fn env(&self, c: &mut std::process::Command) {
        c.env("SALVOR_REPO", self.repo())
            .env("SALVOR_PASSWORD", PASSWORD)
            .env_remove("SALVOR_PASSWORD_FILE")
            .env_remove("SALVOR_PASSWORD_COMMAND")
            .env_remove("SALVOR_NEW_PASSWORD")
            .env_remove("SALVOR_LOG")
            .env_remove("SALVOR_CACHE_DIR")
            .env_remove("SALVOR_NO_CACHE")
            // Caches and key hints stay in the test's directory.
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .current_dir(self.dir.path());
    }

    /// The binary with this world's repository and password.
    pub fn cmd(&self) -> Command {
        let mut c = std::process::Command::new(BIN);
        self.env(&mut c);
        let mut c = Command::from_std(c);
        c.timeout(TIMEOUT);
        c
    }

    /// A `std` command, for tests that spawn, kill or run processes concurrently.
    pub fn spawnable(&self, args: &[&dyn AsRef<OsStr>]) -> std::process::Command {
        let mut c = std::process::Command::new(BIN);
        self.env(&mut c);
        for a in args {
            c.arg(a.as_ref());
        }
        c
    }

    pub fn run(&self, args: &[&dyn AsRef<OsStr>]) -> Output {
        self.run_env(&[], args)
    }

    /// `run` with this world's environment changed, for tests of how the
    /// password and repository are found.
    pub fn run_env(&self, env: &Env, args: &[&dyn AsRef<OsStr>]) -> Output {
        let mut c = self.cmd();
        for (k, v) in env {
            match v {
                Some(v) => c.env(k, v.as_ref()),
                None => c.env_remove(k),
            };
        }
        for a in args {
            c.arg(a.as_ref());
        }
        let out = c.output().expect("run salvor");
        assert_no_panic(&out);
        out
    }

    /// Runs and asserts exit 0.
    pub fn ok(&self, args: &[&dyn AsRef<OsStr>]) -> Output {
        self.ok_env(&[], args)
    }

    /// `ok` with the environment changed, as `run_env`.
    pub fn ok_env(&self, env: &Env, args: &[&dyn AsRef<OsStr>]) -> Output {
        let out = self.run_env(env, args);
        assert!(
            out.status.success(),
            "salvor {:?} failed:\n{}",
            os_args(args),
            show(&out)
        );
        out
    }

    /// Runs and asserts exit `code`.
    pub fn fails(&self, args: &[&dyn AsRef<OsStr>], code: i32) -> Output {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "salvor {:?}: wrong exit code:\n{}",
            os_args(args),
            show(&out)
        );
        out
    }

    /// Runs with `--json`, asserts exit 0 and returns the parsed stdout.
    pub fn json(&self, args: &[&dyn AsRef<OsStr>]) -> Value {
        let mut all: Vec<&dyn AsRef<OsStr>> = vec![&"--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("--json output does not parse ({e}):\n{}", show(&out)))
    }

    /// Creates the repository through the engine with a cheap KDF.
    pub fn init(&self) -> Repository {
        let opts = InitOptions {
            kdf: KdfParams {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            ..Default::default()
        };
        let backend = salvor_engine::backend::open_url(self.repo().to_str().unwrap()).unwrap();
        Repository::init(backend, PASSWORD.as_bytes(), &opts).expect("init through the engine")
    }

    pub fn open(&self) -> Repository {
        let backend = salvor_engine::backend::open_url(self.repo().to_str().unwrap()).unwrap();
        Repository::open(backend, PASSWORD.as_bytes()).expect("open through the engine")
    }

    /// The ids of the repository's snapshots, oldest first.
    pub fn snapshot_ids(&self) -> Vec<String> {
        self.json(&[&"snapshots"])
            .as_array()
            .expect("snapshots --json is a list")
            .iter()
            .map(|s| s["id"].as_str().expect("an id").to_string())
            .collect()
    }

    /// `backup PATH --json`, asserting exit 0; returns the summary document.
    pub fn backup(&self, src: &Path) -> Value {
        self.json(&[&"backup", &src])
    }

    /// Restores `snapshot` into a fresh directory `name`; returns where `src` landed.
    pub fn restore(&self, snapshot: &str, name: &str, src: &Path) -> PathBuf {
        let target = self.path(name);
        self.ok(&[&"restore", &snapshot, &"--target", &target]);
        restored(&target, src)
    }

    /// Bytes of every repository object (locks and temporary files excluded).
    pub fn repo_bytes(&self) -> u64 {
        walk_files(&self.repo())
            .into_iter()
            .filter(|p| {
                !p.starts_with(self.repo().join("locks")) && !p.starts_with(self.repo().join("tmp"))
            })
            .map(|p| p.metadata().unwrap().len())
            .sum()
    }

    pub fn pack_files(&self) -> Vec<PathBuf> {
        walk_files(&self.repo().join("data"))
    }
}

pub fn os_args(args: &[&dyn AsRef<OsStr>]) -> Vec<String> {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect()
}

pub fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

pub fn count_files(dir: &Path) -> usize {
    walk_files(dir).len()
}

/// Where `src` lands inside a restore target (snapshots keep absolute paths).
pub fn restored(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").expect("absolute source path"))
}

/// Deterministic incompressible bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Deterministic compressible text.
pub fn text(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!("{seed}: record {i} value={} status=ok\n", i * 7919 % 1000).as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// Half noise, half text: realistic compression.
pub fn mixed(seed: u64, len: usize) -> Vec<u8> {
    let mut v = noise(seed, len / 2);
    v.extend(text(seed, len - len / 2));
    v
}

pub fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

pub fn write_mode(path: &Path, data: &[u8], mode: u32) {
    write(path, data);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let t = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
    let f = std::fs::File::open(path).unwrap();
    f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

/// A tree with everything a restore must reproduce: modes (incl. setuid and
/// sticky), nanosecond mtimes, relative/absolute/dangling symlinks, a hardlink
/// pair, empty files, a non-UTF-8 and a unicode name, a 40-level deep path,
/// and a multi-MiB file.
pub fn rich_tree(root: &Path) {
    write_mode(
        &root.join("etc/app.conf"),
        b"[server]\nport = 8080\n",
        0o644,
    );
    write_mode(
        &root.join("etc/secret.key"),
        b"-----BEGIN KEY-----\nabc\n",
        0o600,
    );
    write_mode(&root.join("bin/tool"), &noise(1, 300_000), 0o755);
    write_mode(&root.join("bin/suid-tool"), &noise(2, 1000), 0o4755);
    write_mode(&root.join("data/big.bin"), &mixed(3, 3 << 20), 0o640);
    write_mode(&root.join("data/empty"), b"", 0o644);
    write_mode(&root.join("data/also-empty"), b"", 0o600);
    write_mode(&root.join("data/readonly.txt"), b"read only\n", 0o444);
    write(&root.join("data/hard-a.txt"), &text(4, 50_000));
    std::fs::hard_link(root.join("data/hard-a.txt"), root.join("etc/hard-b.txt")).unwrap();
    write(
        &root.join(OsStr::from_bytes(b"names/not-utf8-\xff\xfe.txt")),
        b"bytes, not text\n",
    );
    write(
        &root.join("names/unicod\u{e9}-\u{65e5}\u{672c}.txt"),
        b"unicode\n",
    );
    write(&root.join("names/with space & 'quote'.txt"), b"spaces\n");
    let mut deep = root.join("deep");
    for i in 0..40 {
        deep.push(format!("d{i}"));
    }
    write(&deep.join("bottom.txt"), b"deep down\n");
    std::fs::create_dir_all(root.join("links")).unwrap();
    std::os::unix::fs::symlink("../etc/app.conf", root.join("links/relative")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("links/absolute")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", root.join("links/dangling")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::create_dir_all(root.join("private")).unwrap();
    write(&root.join("private/diary.txt"), b"dear diary\n");
    std::fs::create_dir_all(root.join("shared")).unwrap();
    // Times last: files, then directories deepest first.
    let mut n = 0u64;
    for f in walk_files(root) {
        if !f.symlink_metadata().unwrap().is_symlink() {
            n += 1;
            set_mtime(
                &f,
                1_500_000_000 + n * 3600,
                ((n * 123_456_789) % 1_000_000_000) as u32,
            );
        }
    }
    std::fs::set_permissions(root.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(root.join("shared"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        for e in std::fs::read_dir(&dirs[i]).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            }
        }
        i += 1;
    }
    for (k, d) in dirs.iter().rev().enumerate() {
        set_mtime(d, 1_400_000_000 + k as u64 * 60, 987_654_321);
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub mtime: (i64, i64),
    pub data: Vec<u8>,
}

pub type Scan = (BTreeMap<Vec<u8>, Entry>, BTreeSet<BTreeSet<Vec<u8>>>);

/// Relative path → type, mode, mtime, content (or link target); plus the
/// groups of paths that share an inode.
pub fn scan(root: &Path) -> Scan {
    let mut entries = BTreeMap::new();
    let mut inodes: BTreeMap<u64, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m =
            std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let ft = m.file_type();
        let (kind, data) = if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            ("dir", Vec::new())
        } else if ft.is_symlink() {
            (
                "symlink",
                std::fs::read_link(&p).unwrap().into_os_string().into_vec(),
            )
        } else {
            inodes.entry(m.ino()).or_default().insert(rel.clone());
            ("file", std::fs::read(&p).unwrap())
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            m.mode() & 0o7777
        };
        entries.insert(
            rel,
            Entry {
                kind,
                mode,
                mtime: (m.mtime(), m.mtime_nsec()),
                data,
            },
        );
    }
    (
        entries,
        inodes.into_values().filter(|g| g.len() > 1).collect(),
    )
}

/// Asserts `restored` reproduces `src`: names, types, modes, mtimes, bytes,
/// link targets and hardlink groups.
pub fn assert_same_tree(src: &Path, restored: &Path) {
    let (a, la) = scan(src);
    let (b, lb) = scan(restored);
    let lossy = |m: &BTreeMap<Vec<u8>, Entry>| {
        m.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        lossy(&a),
        lossy(&b),
        "restored tree {} lists different paths",
        restored.display()
    );
    for (p, ea) in &a {
        let eb = &b[p];
        let shown = String::from_utf8_lossy(p);
        assert_eq!(ea.kind, eb.kind, "type of {shown}");
        assert_eq!(
            ea.mode, eb.mode,
            "mode of {shown}: {:o} vs {:o}",
            ea.mode, eb.mode
        );
        assert_eq!(ea.mtime, eb.mtime, "mtime of {shown}");
        assert!(
            ea.data == eb.data,
            "content of {shown} differs ({} vs {} bytes)",
            ea.data.len(),
            eb.data.len()
        );
    }
    assert_eq!(la, lb, "hardlink groups differ");
}

pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .is_some_and(|euid| euid == "0")
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

/// Sends `signal` to `child` and waits (up to a minute) for it to end;
/// returns its output. Panics when it does not end.
pub fn signal_and_wait(mut child: std::process::Child, signal: i32) -> Output {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) on our own child, which has not been waited for.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0, "kill failed");
    let ended = wait_for(Duration::from_secs(60), || {
        child.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = child.kill();
        panic!("salvor did not stop within a minute of signal {signal}");
    }
    child.wait_with_output().unwrap()
}

/// True once a process holds a lock in the local repository at `repo`.
pub fn has_lock(repo: &Path) -> bool {
    count_files(&repo.join("locks")) > 0
}

pub fn snapshot_id(backup: &Value) -> String {
    backup["snapshot"]
        .as_str()
        .expect("backup --json names the snapshot")
        .to_string()
}

/// Starts `backup --stdin` of `data` with `command` (a salvor command with
/// its repository set) once per delay, and kills it with SIGKILL after that
/// delay unless it has finished. Returns how many were killed.
pub fn kill_stream_backups(
    command: &dyn Fn(&[&str]) -> std::process::Command,
    data: &[u8],
    delays: &[Duration],
) -> usize {
    let mut killed = 0;
    for delay in delays {
        let mut child = command(&["backup", "--stdin", "--stdin-name", "db.sql"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start salvor");
        let mut pipe = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        let feeder = std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&data);
        });
        let finished = wait_for(*delay, || child.try_wait().unwrap().is_some());
        let _ = child.kill();
        let _ = child.wait();
        let _ = feeder.join();
        killed += usize::from(!finished);
    }
    killed
}

/// kill -9 of stream backups at several points of their uploads, then
/// `check --read-data` finds no error, and a backup that completes dumps
/// byte for byte. `command` makes a salvor command for the repository.
pub fn killed_uploads_leave_a_clean_repository(command: &dyn Fn(&[&str]) -> std::process::Command) {
    let ok = |args: &[&str], stdin: Option<&[u8]>| {
        let mut c = command(args);
        let out = if let Some(data) = stdin {
            let mut child = c
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(data).unwrap();
            child.wait_with_output().unwrap()
        } else {
            c.output().unwrap()
        };
        assert_no_panic(&out);
        assert!(out.status.success(), "salvor {args:?}:\n{}", show(&out));
        out
    };
    ok(&["init"], None);
    let dump = noise(5, 64 << 20);
    let delays: Vec<std::time::Duration> = [150, 400, 700, 1100, 1600]
        .into_iter()
        .map(std::time::Duration::from_millis)
        .collect();
    let killed = kill_stream_backups(command, &dump, &delays);
    assert!(killed >= 2, "only {killed} backups were killed mid-way");
    let clean = |ctx: &str| {
        let out = ok(&["--json", "check", "--read-data"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["errors"], serde_json::json!([]), "{ctx}: {v}");
    };
    clean("after the kills");
    ok(
        &["backup", "-q", "--stdin", "--stdin-name", "db.sql"],
        Some(&dump),
    );
    let out = ok(&["dump", "latest", "db.sql"], None);
    assert!(out.stdout == dump, "the stream differs");
    clean("after a backup that completed");
}
