//! Shared helpers for the source tests against real servers.
//!
//! The servers are started by `scripts/services.sh start` (CI and
//! `scripts/test.sh` do this) and described by `SALVOR_TEST_*` variables.
//! Without them a server test fails, saying how to start them: a test that
//! passes without running proves nothing. On a laptop without the servers,
//! `SALVOR_TEST_SKIP_SERVICES=1` skips them, each printing `SKIPPED`;
//! `scripts/test.sh` never sets it.
#![allow(dead_code)]

use std::path::PathBuf;

/// True when the real servers are up. Panics when they are not, unless
/// skipping was asked for explicitly.
pub fn services(test: &str) -> bool {
    if std::env::var("SALVOR_TEST_SERVICES").as_deref() == Ok("1") {
        return true;
    }
    let how = "run scripts/services.sh install && scripts/services.sh start, then source its env file (scripts/test.sh does all of this)";
    if std::env::var("SALVOR_TEST_SKIP_SERVICES").as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: no test servers ({how})");
        return false;
    }
    panic!(
        "{test} needs the real test servers and none are running: {how}; \
         or set SALVOR_TEST_SKIP_SERVICES=1 to skip the server tests"
    );
}

/// A required test variable.
pub fn var(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set; is scripts/services.sh's env file sourced?"))
}

/// A scratch directory with a repository and a config file.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// Creates the repository and writes `config` as salvor.toml.
    pub fn new(config: &str) -> Self {
        let w = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(w.config(), config).unwrap();
        w.salvor().arg("init").assert().success();
        w
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("salvor.toml")
    }

    /// The binary with repository, password and config in the environment.
    pub fn salvor(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("salvor").unwrap();
        c.env("SALVOR_REPO", self.repo())
            .env("SALVOR_PASSWORD", "test-password")
            .env("SALVOR_CONFIG", self.config())
            .env_remove("SALVOR_PASSWORD_FILE")
            .env_remove("SALVOR_PASSWORD_COMMAND")
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"));
        c
    }

    /// A `std` command of the binary with this workspace's environment,
    /// for tests that spawn it and signal it.
    pub fn spawnable(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_salvor"));
        c.env("SALVOR_REPO", self.repo())
            .env("SALVOR_PASSWORD", "test-password")
            .env("SALVOR_CONFIG", self.config())
            .env_remove("SALVOR_PASSWORD_FILE")
            .env_remove("SALVOR_PASSWORD_COMMAND")
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    }

    /// Runs salvor with `args` and `--json`, expecting success; returns the JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.salvor().arg("--json").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "salvor {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The manifest of the latest snapshot of `source`.
    pub fn manifest(&self, source: &str) -> serde_json::Value {
        let snaps = self.json(&["snapshots"]);
        let s = snaps
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s["manifests"].get(source).is_some())
            .expect("a snapshot of the source");
        s["manifests"][source].clone()
    }
}
pub mod world;
