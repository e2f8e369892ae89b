//! The CLI's repository life cycle through the real binary: init, passwords
//! (environment, file, command; never argv), keys, locks, usage errors, a
//! missing repository, two backups at once, and the demo.
//!
//! Every test works in its own temporary directory. Passwords only ever travel
//! in the environment (`SALVOR_PASSWORD`, `SALVOR_NEW_PASSWORD`), never argv.
//! Most repositories are created through the engine API with a cheap Argon2
//! cost so the suite stays fast; `init_*` tests create them through the binary.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use common::world::*;
use salvor_engine::backend::FileType;
use serde_json::Value;

#[test]
fn init_creates_a_repository_and_refuses_to_overwrite_it() {
    let w = World::new();
    let v = w.json(&[&"init"]);
    assert_eq!(v["id"].as_str().map(str::len), Some(64), "{v}");
    assert!(w.repo().join("config").is_file());
    assert_eq!(count_files(&w.repo().join("keys")), 1);
    let out = w.run(&[&"init"]);
    assert!(
        !out.status.success(),
        "second init succeeded:\n{}",
        show(&out)
    );
    assert!(stderr(&out).contains("exists"), "{}", show(&out));
    // The first repository is untouched and opens with its password.
    assert_eq!(count_files(&w.repo().join("keys")), 1);
    assert_eq!(w.json(&[&"snapshots"]), Value::Array(vec![]));
}

#[test]
fn init_picks_the_stream_cut_rule_and_both_round_trip() {
    use salvor_engine::format::config::{ChunkerParams, CutRule};
    let data = mixed(5, 3 << 20);
    for (args, want) in [
        (
            vec!["init"],
            ChunkerParams::for_streams(4096, CutRule::Lines),
        ),
        (
            vec!["init", "--stream-cut", "gear", "--stream-chunk-size", "8K"],
            ChunkerParams::for_streams(8192, CutRule::Gear),
        ),
    ] {
        let w = World::new();
        let args: Vec<&dyn AsRef<OsStr>> = args.iter().map(|a| a as &dyn AsRef<OsStr>).collect();
        w.ok(&args);
        assert_eq!(w.open().config().stream_chunker, want.unwrap());
        let out = w
            .cmd()
            .args(["backup", "--stdin", "--stdin-name", "db.sql"])
            .write_stdin(data.clone())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", show(&out));
        assert!(w.ok(&[&"dump", &"latest", &"db.sql"]).stdout == data);
    }
    let w = World::new();
    let out = w.fails(&[&"init", &"--stream-cut", &"bytes"], 2);
    assert!(stderr(&out).contains("lines"), "{}", show(&out));
}

#[test]
fn wrong_password_missing_repo_and_no_password() {
    let w = World::new();
    w.init();
    let out = w.run_env(
        &[("SALVOR_PASSWORD", Some(&"not the password"))],
        &[&"snapshots"],
    );
    assert_eq!(out.status.code(), Some(12), "{}", show(&out));
    let err = stderr(&out);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "not a one-line message:\n{err}"
    );
    assert!(err.contains("wrong password"), "{err}");
    assert!(
        !err.contains("not the password"),
        "the password leaked into the message: {err}"
    );

    let out = w.run_env(
        &[("SALVOR_REPO", Some(&w.path("nothing-here")))],
        &[&"snapshots"],
    );
    assert_eq!(out.status.code(), Some(10), "{}", show(&out));
    assert!(stderr(&out).contains("no repository"), "{}", show(&out));
    assert_eq!(stderr(&out).trim_end().lines().count(), 1, "{}", show(&out));

    // No password anywhere and stdin is not a terminal: a clear error, not a hang.
    let out = w.run_env(&[("SALVOR_PASSWORD", None)], &[&"snapshots"]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(stderr(&out).contains("SALVOR_PASSWORD"), "{}", show(&out));

    // No repository at all: usage-level error naming the option.
    let out = w.run_env(&[("SALVOR_REPO", None)], &[&"snapshots"]);
    assert!(
        !out.status.success() && stderr(&out).contains("SALVOR_REPO"),
        "{}",
        show(&out)
    );
}

#[test]
fn password_file_and_password_command() {
    let w = World::new();
    w.init();
    let pw = w.path("pw.txt");
    std::fs::write(&pw, format!("{PASSWORD}\nsecond line ignored\n")).unwrap();
    w.ok_env(
        &[("SALVOR_PASSWORD", None)],
        &[&"--password-file", &pw, &"snapshots"],
    );
    w.ok_env(
        &[
            ("SALVOR_PASSWORD", None),
            ("SALVOR_PASSWORD_FILE", Some(&pw)),
        ],
        &[&"snapshots"],
    );
    let cat = format!("cat '{}'", pw.display());
    w.ok_env(
        &[
            ("SALVOR_PASSWORD", None),
            ("SALVOR_PASSWORD_COMMAND", Some(&cat)),
        ],
        &[&"snapshots"],
    );
    let out = w.run_env(
        &[
            ("SALVOR_PASSWORD", None),
            ("SALVOR_PASSWORD_COMMAND", Some(&"exit 3")),
        ],
        &[&"snapshots"],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("password command failed"),
        "{}",
        show(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    let w = World::new();
    w.fails(&[&"backup", &"--no-such-flag"], 2);
    w.fails(&[&"no-such-command"], 2);
    w.fails(&[], 2);
    w.fails(&[&"restore", &"latest"], 2);
    w.fails(&[&"backup", &"--stdin", &"some/path"], 2);
    let out = w.ok(&[&"--help"]);
    assert!(stdout(&out).contains("Exit codes"), "{}", show(&out));
}

#[test]
fn key_add_list_remove_passwd() {
    let w = World::new();
    w.init();
    let keys = w.json(&[&"key", &"list"]);
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let first = keys[0]["id"].as_str().unwrap().to_string();
    assert_eq!(keys[0]["current"], Value::Bool(true));

    let out = w.ok_env(
        &[("SALVOR_NEW_PASSWORD", Some(&"second password"))],
        &[&"--json", &"key", &"add"],
    );
    let second = serde_json::from_slice::<Value>(&out.stdout).unwrap()["added"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first, second);

    // Both passwords open the repository; the list marks the key in use.
    let second_pw: &Env = &[("SALVOR_PASSWORD", Some(&"second password"))];
    let out = w.ok_env(second_pw, &[&"--json", &"key", &"list"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let current: Vec<&str> = list
        .iter()
        .filter(|k| k["current"] == Value::Bool(true))
        .filter_map(|k| k["id"].as_str())
        .collect();
    assert_eq!(current, vec![second.as_str()]);
    w.ok(&[&"snapshots"]);

    // The key in use cannot be removed.
    let out = w.run(&[&"key", &"remove", &&first[..8]]);
    assert!(
        !out.status.success() && stderr(&out).contains("refusing to remove the key in use"),
        "{}",
        show(&out)
    );
    // With the second password, remove the first key: the first password stops working.
    w.ok_env(second_pw, &[&"key", &"remove", &&first[..8]]);
    w.fails(&[&"snapshots"], 12);
    let out = w.run_env(second_pw, &[&"key", &"remove", &"ffff0000"]);
    assert!(
        !out.status.success() && stderr(&out).contains("no key matches"),
        "{}",
        show(&out)
    );

    // passwd replaces the key in use.
    w.ok_env(
        &[
            ("SALVOR_PASSWORD", Some(&"second password")),
            ("SALVOR_NEW_PASSWORD", Some(&"third password")),
        ],
        &[&"key", &"passwd"],
    );
    let out = w.run_env(second_pw, &[&"snapshots"]);
    assert_eq!(out.status.code(), Some(12), "{}", show(&out));
    let third_pw: &Env = &[("SALVOR_PASSWORD", Some(&"third password"))];
    let out = w.ok_env(third_pw, &[&"--json", &"key", &"list"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["current"], Value::Bool(true));
    // Data written under the old key is readable under the new one.
    let src = w.path("src");
    write(&src.join("f"), b"after passwd\n");
    w.ok_env(third_pw, &[&"backup", &src]);
}

#[test]
fn stale_locks_are_ignored_and_live_exclusive_locks_block() {
    let w = World::new();
    let repo = w.init();
    let src = w.path("src");
    write(&src.join("f.txt"), b"data\n");
    let locks = w.repo().join("locks");

    // 1. A backup killed with SIGKILL while it holds its lock.
    let mut child = w
        .spawnable(&[&"backup", &"--stdin", &"--stdin-name", &"never-ends"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(&noise(5, 256 * 1024))
            .unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(60), || count_files(&locks) == 1),
        "the stdin backup never took its lock"
    );
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(
        count_files(&locks),
        1,
        "the killed backup's lock should remain"
    );
    let started = Instant::now();
    w.backup(&src);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the dead lock delayed the backup"
    );
    assert_eq!(w.json(&[&"unlock"])["removed"].as_u64(), Some(1));
    assert_eq!(count_files(&locks), 0);

    // 2. An exclusive lock of a process that has exited on this host is stale.
    let dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let lock = salvor_engine::format::lock::LockFile {
        exclusive: true,
        hostname: salvor_engine::repo::keys::hostname(),
        pid: dead_pid,
        refreshed: std::time::SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
        command: "prune".into(),
        started: None,
        pid_namespace: None,
    };
    repo.write_doc(
        FileType::Lock,
        salvor_engine::format::ObjectKind::Lock,
        &serde_json::to_vec(&lock).unwrap(),
    )
    .unwrap();
    assert_eq!(count_files(&locks), 1);
    w.backup(&src);
    w.ok(&[&"check"]);
    assert_eq!(w.json(&[&"unlock"])["removed"].as_u64(), Some(1));
    assert_eq!(count_files(&locks), 0);

    // 3. A live exclusive lock (held by this test process) blocks with exit 11.
    let guard = w.open().lock(true, "test maintenance").unwrap();
    let out = w.fails(&[&"backup", &src], 11);
    let err = stderr(&out);
    assert!(
        err.contains("locked") && err.contains("test maintenance"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    w.fails(&[&"check"], 11);
    let out = w
        .cmd()
        .args(["backup", "--stdin"])
        .write_stdin("x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(11), "{}", show(&out));
    // `unlock` leaves a live lock alone; `--remove-all` removes it.
    assert_eq!(w.json(&[&"unlock"])["removed"].as_u64(), Some(0));
    assert_eq!(count_files(&locks), 1);
    drop(guard);
    assert_eq!(
        count_files(&locks),
        0,
        "dropping the guard releases the lock"
    );
    w.backup(&src);
    let _guard = w.open().lock(true, "test maintenance").unwrap();
    assert_eq!(
        w.json(&[&"unlock", &"--remove-all"])["removed"].as_u64(),
        Some(1)
    );
    w.backup(&src);
}

/// A mistyped repository location must not be created by commands that only
/// open a repository (only `init` creates one).
#[test]
fn commands_on_a_missing_repository_create_nothing() {
    let w = World::new();
    let src = w.path("src");
    write(&src.join("f"), b"x");
    let missing = w.path("typo/repo");
    for args in [
        vec!["snapshots"],
        vec!["check"],
        vec!["backup", src.to_str().unwrap()],
    ] {
        let argv: Vec<&dyn AsRef<OsStr>> = args.iter().map(|a| a as _).collect();
        let out = w.run_env(&[("SALVOR_REPO", Some(&missing))], &argv);
        assert_eq!(out.status.code(), Some(10), "{args:?}: {}", show(&out));
        assert!(
            !w.path("typo").exists(),
            "`salvor {}` on a missing repository created {}",
            args.join(" "),
            w.path("typo").display()
        );
    }
}

#[test]
fn two_backups_at_once_into_one_repository() {
    let w = World::new();
    w.init();
    let (a, b) = (w.path("a"), w.path("b"));
    let shared = mixed(77, 4 << 20);
    for i in 0..4u64 {
        write(&a.join(format!("a{i}.bin")), &mixed(100 + i, 3 << 20));
        write(&b.join(format!("b{i}.bin")), &mixed(200 + i, 3 << 20));
    }
    write(&a.join("shared.bin"), &shared);
    write(&b.join("nested/shared-copy.bin"), &shared);
    let spawn = |src: &Path| {
        w.spawnable(&[&"--json", &"backup", &src])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    let (oa, ob) = (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    );
    assert!(oa.status.success(), "{}", show(&oa));
    assert!(ob.status.success(), "{}", show(&ob));
    let ida = snapshot_id(&serde_json::from_slice(&oa.stdout).unwrap());
    let idb = snapshot_id(&serde_json::from_slice(&ob.stdout).unwrap());
    assert_ne!(ida, idb);
    assert_eq!(w.json(&[&"snapshots"]).as_array().unwrap().len(), 2);
    let c = w.json(&[&"check", &"--read-data"]);
    assert_eq!(c["errors"], Value::Array(vec![]), "{c}");
    let ra = w.restore(&ida, "restore-a", &a);
    assert_same_tree(&a, &ra);
    let rb = w.restore(&idb, "restore-b", &b);
    assert_same_tree(&b, &rb);
}

#[test]
fn demo_runs_cleanly() {
    let w = World::new();
    let out = w.ok_env(
        &[("SALVOR_REPO", None), ("SALVOR_PASSWORD", None)],
        &[&"demo", &"--dir", &w.path("demo")],
    );
    assert!(
        stdout(&out).contains("identical to the source"),
        "{}",
        show(&out)
    );
    assert!(
        stdout(&out).contains(r#"manifest rows: {"allocations":3000,"tenants":40}"#)
            && stdout(&out).contains("app.db rows match its manifest"),
        "{}",
        show(&out)
    );
}
