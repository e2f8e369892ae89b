//! The `command` and `files` sources, and the config/CLI plumbing every
//! source shares (selection, failures, manifests, inspect). No servers needed.

mod common;

use common::Workspace;

fn snapshot_count(w: &Workspace) -> usize {
    w.json(&["snapshots"]).as_array().unwrap().len()
}

#[test]
fn command_source_backs_up_restores_and_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("restored.txt");
    let w = Workspace::new(&format!(
        r#"
[source.maps]
type = "command"
command = "seq 1 50000"
restore_command = "cat > '{}'"
stream = "maps.txt"

[source.broken]
type = "command"
command = "echo partial; echo 'cannot open map 42' >&2; exit 3"
"#,
        out.display()
    ));
    let r = w.json(&["backup", "--source", "maps"]);
    assert_eq!(r["partial"], false);
    let m = w.manifest("maps");
    let expected: String = (1..=50000).map(|i| format!("{i}\n")).collect();
    assert_eq!(m["type"], "command");
    assert_eq!(m["bytes"], expected.len() as u64);
    assert_eq!(
        m["blake3"],
        blake3::hash(expected.as_bytes()).to_hex().to_string()
    );
    // inspect reports the same shape and, for a deterministic command, the same values.
    let live = w.json(&["inspect", "--source", "maps"]);
    assert_eq!(
        (live["bytes"].clone(), live["blake3"].clone()),
        (m["bytes"].clone(), m["blake3"].clone())
    );
    // dump finds the stream under the source's directory.
    let dumped = w
        .salvor()
        .args(["dump", "latest", "maps/maps.txt"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(dumped.stdout).unwrap(), expected);
    // dry run changes nothing; a real restore pipes the stream into restore_command.
    w.salvor()
        .args(["restore", "latest", "--source", "maps", "--dry-run"])
        .assert()
        .success();
    assert!(!out.exists());
    w.salvor()
        .args(["restore", "latest", "--source", "maps"])
        .assert()
        .success();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), expected);
    // A failing command fails the backup with its own message and records nothing.
    let before = snapshot_count(&w);
    let o = w
        .salvor()
        .args(["backup", "--source", "broken"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot open map 42") && err.contains("exit status: 3"),
        "{err}"
    );
    assert_eq!(
        snapshot_count(&w),
        before,
        "a failed source backup must not record a snapshot"
    );
    // With several sources, one failing does not stop the others.
    let before = snapshot_count(&w);
    let o = w
        .salvor()
        .args(["backup", "--source", "broken", "--source", "maps"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("1 of the sources failed: broken"));
    assert_eq!(
        snapshot_count(&w),
        before + 1,
        "maps must still be backed up"
    );
    // The key is derived while the command already runs: a wrong password
    // still exits 12 with one line, whichever source or sources were asked.
    for args in [
        &["backup", "--source", "maps"][..],
        &["backup", "--source", "maps", "--source", "broken"][..],
    ] {
        let before = snapshot_count(&w);
        let o = w
            .salvor()
            .args(args)
            .env("SALVOR_PASSWORD", "not-the-password")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(12), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert_eq!(err.matches("check SALVOR_PASSWORD").count(), 1, "{err}");
        assert_eq!(snapshot_count(&w), before);
    }
    // A source without restore_command says what to add.
    let o = w
        .salvor()
        .args(["restore", "latest", "--source", "broken"])
        .output()
        .unwrap();
    assert!(!o.status.success());
}

#[test]
fn files_source_keeps_exact_modes_and_restores_into_a_directory() {
    use std::os::unix::fs::PermissionsExt;
    let src = tempfile::tempdir().unwrap();
    let certs = src.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(certs.join("server.key"), b"-----BEGIN PRIVATE KEY-----\n").unwrap();
    std::fs::set_permissions(
        certs.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(certs.join("server.crt"), b"-----BEGIN CERTIFICATE-----\n").unwrap();
    std::fs::write(certs.join("scratch.tmp"), b"skip me").unwrap();
    let w = Workspace::new(&format!(
        "[source.certs]\ntype = \"files\"\npaths = [\"{}\"]\nexclude = [\"*.tmp\"]\n",
        certs.display()
    ));
    w.json(&["backup", "--source", "certs"]);
    let m = w.manifest("certs");
    assert_eq!(
        (m["type"].as_str(), m["files"].as_u64(), m["bytes"].as_u64()),
        (Some("files"), Some(2), Some(56))
    );
    let target = w.dir.path().join("restored");
    let t = target.to_str().unwrap();
    w.salvor()
        .args(["restore", "latest", "--source", "certs", "--to", t])
        .assert()
        .success();
    let key = target
        .join(certs.strip_prefix("/").unwrap())
        .join("server.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert!(!key.with_file_name("scratch.tmp").exists());
    // Restoring over a non-empty directory asks first; without a terminal it refuses.
    let o = w
        .salvor()
        .args(["restore", "latest", "--source", "certs", "--to", t])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--yes"));
    w.salvor()
        .args(["restore", "latest", "--source", "certs", "--to", t, "--yes"])
        .assert()
        .success();
    let live = w.json(&["inspect", "--source", "certs"]);
    assert_eq!(
        live["files"], 3,
        "inspect walks the paths as they are now (excludes are a backup setting)"
    );
}

#[test]
fn config_errors_name_file_line_and_key() {
    let w = Workspace::new("[source.a]\ntype = \"command\"\ncommand = \"true\"\n");
    std::fs::write(
        w.config(),
        "[source.a]\ntype = \"command\"\ncommand = \"true\"\nrestor_command = \"x\"\n",
    )
    .unwrap();
    let o = w
        .salvor()
        .args(["backup", "--source", "a"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("salvor.toml") && err.contains("line 4") && err.contains("restor_command"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    std::fs::write(
        w.config(),
        "[source.a]\ntype = \"command\"\ncommand = \"true\"\n",
    )
    .unwrap();
    let o = w
        .salvor()
        .args(["backup", "--source", "nosuch"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("defined sources: a"));
    let o = w
        .salvor()
        .args(["backup", "--source", "a"])
        .env_remove("SALVOR_CONFIG")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("--config"));
}

/// A backup is batch work: its dump tools inherit SCHED_BATCH (policy 3,
/// field 41 of /proc/PID/stat), so they do not preempt the service they read.
#[test]
#[cfg(target_os = "linux")]
fn dump_tools_run_as_batch_work() {
    let w = Workspace::new(
        r#"
[source.policy]
type = "command"
command = "awk '{ print $41 }' /proc/self/stat"
stream = "policy.txt"
"#,
    );
    w.json(&["backup", "--source", "policy"]);
    let dumped = w
        .salvor()
        .args(["dump", "latest", "policy/policy.txt"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(dumped.stdout).unwrap(), "3\n");
}

/// `snapshots` filters by source, host and tags (every tag given), and a
/// source restore of `latest` takes the newest snapshot of that source
/// even when another source's is newer.
#[test]
fn snapshots_filter_by_source_host_and_tags() {
    let w = Workspace::new(
        r#"
[source.one]
type = "command"
command = "echo one"
restore_command = "cat > /dev/null"

[source.two]
type = "command"
command = "echo two"
"#,
    );
    let one = w.json(&[
        "backup", "--source", "one", "--tag", "daily", "--tag", "critical",
    ]);
    w.json(&[
        "backup",
        "--source",
        "two",
        "--tag",
        "daily",
        "--host",
        "elsewhere",
    ]);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["snapshots"];
        all.extend_from_slice(args);
        w.json(&all)
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let first = one["snapshot"].as_str().unwrap().to_string();
    assert_eq!(ids(&[]).len(), 2);
    assert_eq!(ids(&["--source", "one"]), vec![first.clone()]);
    assert_eq!(
        ids(&["--tag", "daily", "--tag", "critical"]),
        vec![first.clone()]
    );
    assert_eq!(ids(&["--tag", "daily"]).len(), 2);
    assert_eq!(ids(&["--host", "elsewhere"]).len(), 1);
    assert!(ids(&["--source", "three"]).is_empty());
    let r = w.json(&["restore", "latest", "--source", "one", "--dry-run"]);
    assert_eq!(r["snapshot"].as_str(), Some(first.as_str()), "{r}");
}
