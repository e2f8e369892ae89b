//! SFTP repositories against the real sshd of scripts/services.sh, on a port
//! of its own (`sftp://USER@HOST:PORT/PATH`): init, file and stream backups,
//! a full check, a byte-for-byte restore; strict host-key checking refuses an
//! unknown server with ssh's own reason, and `accept-new` records its key.
//!
//! salvor's SFTP goes through the system `ssh`, which reads host keys from
//! the user's known_hosts. So that the test neither reads nor writes the home
//! directory, it puts an `ssh` first on PATH that runs the real one with the
//! test's own `UserKnownHostsFile`.

mod common;

use common::var;
use common::world::*;
use std::path::{Path, PathBuf};

/// A directory holding an `ssh` that uses `known_hosts` as the user's file.
fn ssh_with_known_hosts(w: &World, known_hosts: &Path) -> PathBuf {
    let real = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("ssh"))
        .find(|p| p.is_file())
        .expect("ssh is on PATH");
    let bin = w.path("ssh-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} -o UserKnownHostsFile={} \"$@\"\n",
            real.display(),
            known_hosts.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

struct Sftp {
    url: String,
    path: String,
}

impl Sftp {
    fn new(w: &World, known_hosts: &Path) -> Self {
        let bin = ssh_with_known_hosts(w, known_hosts);
        let path = std::env::join_paths(
            std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
        )
        .unwrap();
        let url = format!(
            "sftp://{}@{}:{}{}",
            var("SALVOR_TEST_SFTP_USER"),
            var("SALVOR_TEST_SFTP_HOST"),
            var("SALVOR_TEST_SFTP_PORT"),
            w.path("remote-repo").display()
        );
        Self {
            url,
            path: path.into_string().unwrap(),
        }
    }

    fn cmd(&self, w: &World, args: &[&str]) -> assert_cmd::Command {
        let mut c = w.cmd();
        c.env("SALVOR_REPO", &self.url)
            .env("SALVOR_SFTP_KEY", var("SALVOR_TEST_SFTP_KEY"))
            .env_remove("SALVOR_SFTP_KNOWN_HOSTS")
            .env("PATH", &self.path)
            .args(args);
        c
    }

    /// A `std` command, for tests that kill it.
    fn spawnable(&self, w: &World, args: &[&str]) -> std::process::Command {
        let mut c = w.spawnable(&[]);
        c.env("SALVOR_REPO", &self.url)
            .env("SALVOR_SFTP_KEY", var("SALVOR_TEST_SFTP_KEY"))
            .env_remove("SALVOR_SFTP_KNOWN_HOSTS")
            .env("PATH", &self.path)
            .args(args);
        c
    }

    fn ok(&self, w: &World, args: &[&str], stdin: Option<Vec<u8>>) -> std::process::Output {
        let mut c = self.cmd(w, args);
        if let Some(s) = stdin {
            c.write_stdin(s);
        }
        let out = c.output().unwrap();
        assert_no_panic(&out);
        assert!(out.status.success(), "salvor {args:?}:\n{}", show(&out));
        out
    }
}

#[test]
fn sftp_repository_on_a_port_init_backup_check_restore() {
    if !common::services("sftp_repository_on_a_port_init_backup_check_restore") {
        return;
    }
    let w = World::new();
    let sftp = Sftp::new(&w, Path::new(&var("SALVOR_TEST_SFTP_KNOWN_HOSTS")));
    sftp.ok(&w, &["init"], None);
    let src = w.path("src");
    rich_tree(&src);
    let src_arg = src.to_str().unwrap();
    sftp.ok(&w, &["backup", "-q", src_arg], None);
    let dump = text(11, 2 << 20);
    sftp.ok(
        &w,
        &["backup", "-q", "--stdin", "--stdin-name", "db.sql"],
        Some(dump.clone()),
    );
    let out = sftp.ok(&w, &["--json", "snapshots"], None);
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{snaps}");
    let out = sftp.ok(&w, &["check", "--read-data"], None);
    assert!(stdout(&out).contains("no errors found"), "{}", show(&out));
    let target = w.path("restore");
    let first = snaps[0]["id"].as_str().unwrap();
    sftp.ok(
        &w,
        &["restore", "-q", first, "--target", target.to_str().unwrap()],
        None,
    );
    assert_same_tree(&src, &restored(&target, &src));
    let out = sftp.ok(&w, &["dump", "latest", "db.sql"], None);
    assert!(out.stdout == dump, "the stream differs");
    // What the server holds is a repository like any other.
    assert!(w.path("remote-repo/config").is_file());
    assert!(w.path("remote-repo/keys").read_dir().unwrap().count() == 1);
}

#[test]
fn sftp_unknown_host_key_is_refused_with_ssh_reason_and_accept_new_records_it() {
    if !common::services(
        "sftp_unknown_host_key_is_refused_with_ssh_reason_and_accept_new_records_it",
    ) {
        return;
    }
    let w = World::new();
    let known_hosts = w.path("known_hosts");
    std::fs::write(&known_hosts, "").unwrap();
    let sftp = Sftp::new(&w, &known_hosts);
    let out = sftp.cmd(&w, &["init"]).output().unwrap();
    assert_no_panic(&out);
    assert!(!out.status.success(), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("Host key verification failed"), "{err}");
    assert!(err.contains("SALVOR_SFTP_KNOWN_HOSTS=accept-new"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!w.path("remote-repo").exists(), "nothing was written");

    let out = sftp
        .cmd(&w, &["init"])
        .env("SALVOR_SFTP_KNOWN_HOSTS", "accept-new")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let recorded = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(recorded.contains("ssh-ed25519"), "{recorded}");
    // Now known, strict checking (the default) connects.
    sftp.ok(&w, &["snapshots"], None);

    let out = sftp
        .cmd(&w, &["snapshots"])
        .env("SALVOR_SFTP_KNOWN_HOSTS", "sometimes")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("use strict, accept-new or off"),
        "{}",
        show(&out)
    );
}

/// kill -9 in the middle of uploads leaves a repository that `check
/// --read-data` passes, and the next backup completes.
#[test]
fn sftp_backups_killed_mid_upload_leave_a_repository_that_checks_clean() {
    if !common::services("sftp_backups_killed_mid_upload_leave_a_repository_that_checks_clean") {
        return;
    }
    let w = World::new();
    let sftp = Sftp::new(&w, Path::new(&var("SALVOR_TEST_SFTP_KNOWN_HOSTS")));
    killed_uploads_leave_a_clean_repository(&|args| sftp.spawnable(&w, args));
}

/// The backend contract (`salvor check-storage`) against the real sshd:
/// every check passes.
#[test]
fn sftp_store_passes_check_storage() {
    if !common::services("sftp_store_passes_check_storage") {
        return;
    }
    let w = World::new();
    let sftp = Sftp::new(&w, Path::new(&var("SALVOR_TEST_SFTP_KNOWN_HOSTS")));
    std::fs::create_dir_all(w.path("remote-repo")).unwrap();
    let out = sftp.ok(&w, &["--json", "check-storage"], None);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["failed"], 0, "{v:#}");
    // Every object is gone; SFTP keeps the empty directories.
    assert_eq!(count_files(&w.path("remote-repo")), 0);
}

/// SFTP writes a file in place, so salvor writes each object under a
/// temporary name in `tmp/` and renames it: after a backup `tmp/` is
/// empty, and a part file a killed writer left there is removed by the
/// next backup that finds itself alone.
#[test]
fn sftp_writes_go_through_tmp_and_leftovers_are_removed() {
    if !common::services("sftp_writes_go_through_tmp_and_leftovers_are_removed") {
        return;
    }
    let w = World::new();
    let sftp = Sftp::new(&w, Path::new(&var("SALVOR_TEST_SFTP_KNOWN_HOSTS")));
    let remote = w.path("remote-repo");
    std::fs::create_dir_all(&remote).unwrap();
    sftp.ok(&w, &["init"], None);
    let dump = text(3, 2 << 20);
    sftp.ok(
        &w,
        &["backup", "-q", "--stdin", "--stdin-name", "db.sql"],
        Some(dump.clone()),
    );
    let tmp = remote.join("tmp");
    assert!(tmp.is_dir(), "no object went through tmp/");
    assert_eq!(count_files(&tmp), 0, "a temporary file was left");
    // A writer killed mid-upload left a part file an hour ago.
    let part = tmp.join("0123abcd.part");
    write(&part, b"half an object");
    set_mtime(&part, 1_700_000_000, 0);
    sftp.ok(
        &w,
        &["backup", "-q", "--stdin", "--stdin-name", "db.sql"],
        Some(dump.clone()),
    );
    assert!(!part.exists(), "the dead writer's part file is still there");
    let out = sftp.ok(&w, &["check", "--read-data"], None);
    assert!(stdout(&out).contains("no errors found"), "{}", show(&out));
    let out = sftp.ok(&w, &["dump", "latest", "db.sql"], None);
    assert!(out.stdout == dump);
}
