//! Shared helpers for the source tests against real servers.
//!
//! The servers are started by `scripts/services.sh start` (CI and
//! `scripts/test.sh` do this) and described by `SALVOR_TEST_*` variables. When
//! they are absent (a plain `cargo test` on a laptop) these tests print why
//! and pass without running: CI always runs them.
#![allow(dead_code)]

use std::path::PathBuf;

/// True when the real servers are up; otherwise prints the reason once.
pub fn services(test: &str) -> bool {
    if std::env::var("SALVOR_TEST_SERVICES").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "skipped {test}: no test servers (run scripts/services.sh start and source its env file, or scripts/test.sh)"
    );
    false
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
            .env_remove("SALVOR_PASSWORD_COMMAND");
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
