//! `salvor prune` and `forget --prune` through the CLI, and prune beside
//! real backup processes: a stress test of rounds in which three backups
//! stream while a forget and a prune (some killed with SIGKILL part-way)
//! run; a backup stopped with SIGSTOP across a whole prune. Afterwards the
//! repository checks clean with `--read-data` and every snapshot restores
//! byte for byte. No clock is shortened: backups hold the sweep back while
//! they run, and the prune after them deletes what was marked.

mod common;

use std::io::Write;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::world::*;
use serde_json::Value;

fn ids(w: &World) -> Vec<String> {
    w.snapshot_ids()
}

fn assert_check_clean(w: &World) {
    let c = w.json(&[&"check", &"--read-data"]);
    assert_eq!(c["errors"], Value::Array(vec![]), "{c}");
}

#[test]
fn forget_prune_frees_the_space_and_what_is_left_restores() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write(&src.join("stays.bin"), &noise(1, 1_000_000));
    for i in 0..3 {
        write(&src.join("changes.bin"), &noise(10 + i, 2_000_000));
        w.backup(&src);
    }
    let before = w.repo_bytes();
    let dry = w.json(&[&"prune", &"--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        dry["packs_deleted"], 0,
        "nothing is unreferenced yet: {dry}"
    );

    let plan = w.json(&[&"forget", &"--keep-last", &"1", &"--prune", &"--dry-run"]);
    assert_eq!(plan["forget"]["removed"], 2, "{plan}");
    assert_eq!(plan["prune"]["dry_run"], true, "{plan}");
    assert!(
        plan["prune"]["bytes_deleted"].as_u64().unwrap() >= 4_000_000,
        "the dry run counts what the forget would remove as gone: {plan}"
    );
    assert_eq!(w.repo_bytes(), before, "a dry run changed the repository");
    assert_eq!(ids(&w).len(), 3);

    let r = w.json(&[&"forget", &"--keep-last", &"1", &"--prune"]);
    assert_eq!(r["forget"]["removed"], 2, "{r}");
    let p = &r["prune"];
    assert!(p["bytes_deleted"].as_u64().unwrap() >= 4_000_000, "{p}");
    assert_eq!(
        p["packs_pending"], 0,
        "a quiet repository is swept at once: {p}"
    );
    let after = w.repo_bytes();
    assert!(after + 3_900_000 < before, "{before} -> {after}");
    assert_check_clean(&w);
    let left = ids(&w);
    let restored = w.restore(&left[0], "r", &src);
    assert_same_tree(&src, &restored);

    // A second prune has nothing to do, and says so in words too.
    let out = w.ok(&[&"prune"]);
    let text = stdout(&out);
    assert!(
        text.contains("deleted 0 packs") && text.contains("1 snapshots keep their data"),
        "{text}"
    );
}

#[test]
fn prune_refuses_bad_options_and_a_damaged_repository() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    std::fs::create_dir_all(&src).unwrap();
    write(&src.join("a.bin"), &noise(2, 300_000));
    w.backup(&src);
    let out = w.fails(&[&"prune", &"--max-unused", &"150%"], 2);
    assert!(stderr(&out).contains("invalid share"), "{}", show(&out));
    let out = w.fails(&[&"prune", &"--max-repack-size", &"lots"], 2);
    assert!(stderr(&out).contains("invalid size"), "{}", show(&out));
    let out = w.fails(
        &[&"forget", &"--keep-last", &"1", &"--max-unused", &"5%"],
        2,
    );
    assert!(stderr(&out).contains("add --prune"), "{}", show(&out));

    // A pack the index names is lost: prune deletes nothing and says what to do.
    let victim = w
        .pack_files()
        .into_iter()
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap();
    std::fs::remove_file(&victim).unwrap();
    let packs = w.pack_files().len();
    let out = w.run(&[&"prune"]);
    assert!(!out.status.success(), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("prune changes nothing while the repository is damaged")
            && err.contains("salvor check"),
        "{err}"
    );
    assert_eq!(w.pack_files().len(), packs);
}

/// A `backup --stdin` whose input the test feeds: it takes its lock and
/// loads the index at once, and commits when its input ends.
struct Feeding {
    child: Child,
}

impl Feeding {
    fn start(w: &World, name: &str, tag: &str) -> Self {
        let child = w
            .spawnable(&[
                &"--json",
                &"backup",
                &"--stdin",
                &"--stdin-name",
                &name,
                &"--tag",
                &tag,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self { child }
    }

    fn feed(&mut self, data: &[u8]) {
        self.child.stdin.as_mut().unwrap().write_all(data).unwrap();
    }

    /// Closes the input and waits for the commit; returns the snapshot id.
    fn finish(mut self) -> String {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        assert!(out.status.success(), "backup failed:\n{}", show(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        snapshot_id(&v)
    }
}

fn lock_count(w: &World) -> usize {
    count_files(&w.repo().join("locks"))
}

/// Data of writer `writer`'s own in round `round`.
fn own(writer: u64, round: u64) -> Vec<u8> {
    noise(10 * round + writer, 500_000)
}

/// The stream of writer `writer` in round `round`, in two parts: first
/// what its stream of two rounds before held of its own (the round's forget
/// removes that snapshot, so this backup deduplicates against packs the
/// concurrent prune marks), then data of its own.
fn stream(writer: u64, round: u64) -> (Vec<u8>, Vec<u8>) {
    let old = match round.checked_sub(2) {
        Some(r) => own(writer, r),
        None => noise(5000 + writer, 500_000),
    };
    (old, own(writer, round))
}

#[test]
fn backups_forget_and_prune_at_once_never_lose_a_snapshot() {
    let w = World::new();
    w.init();
    let rounds = 8u64;
    let mut expected: Vec<(String, String, Vec<u8>)> = Vec::new();
    let (mut pending_seen, mut rescued) = (false, 0);
    for round in 0..rounds {
        // Three backups begin and send the first part of their streams.
        let mut running: Vec<(Feeding, Vec<u8>)> = (0..3u64)
            .map(|writer| {
                let (shared, own) = stream(writer, round);
                let mut f = Feeding::start(&w, &format!("w{writer}.dat"), &format!("r{round}"));
                f.feed(&shared);
                (f, own)
            })
            .collect();
        assert!(
            wait_for(Duration::from_secs(60), || lock_count(&w) >= 3),
            "the backups did not lock"
        );
        // Meanwhile: a forget of all but the newest snapshot of each
        // stream, and a prune; every other round one is killed part-way.
        w.ok(&[&"forget", &"--keep-last", &"1"]);
        if round % 2 == 1 {
            let child = w
                .spawnable(&[&"prune"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(40 * round));
            signal_and_wait(child, libc::SIGKILL);
        }
        let p = w.json(&[&"prune"]);
        rescued += p["packs_rescued"].as_u64().unwrap();
        if p["packs_pending"].as_u64().unwrap() > 0 {
            pending_seen = true;
            assert!(p["holders"].as_array().unwrap().len() >= 3, "{p}");
        }
        assert_eq!(p["packs_deleted"], 0, "deleted while backups ran: {p}");
        for (writer, (mut f, own)) in running.drain(..).enumerate() {
            f.feed(&own);
            let id = f.finish();
            let (shared, own) = stream(writer as u64, round);
            expected.push((id, format!("w{writer}.dat"), [shared, own].concat()));
        }
        let c = w.json(&[&"check"]);
        assert_eq!(c["errors"], Value::Array(vec![]), "round {round}: {c}");
    }

    // Quiet now: one prune sweeps everything marked.
    let p = w.json(&[&"prune"]);
    rescued += p["packs_rescued"].as_u64().unwrap();
    assert_eq!(p["packs_pending"], 0, "{p}");
    assert!(p["packs_deleted"].as_u64().unwrap() > 0, "{p}");
    assert!(pending_seen, "no prune ever ran beside a backup");
    assert!(rescued > 0, "no backup ever reused what a prune had marked");
    assert_check_clean(&w);
    let left = ids(&w);
    // Each stream keeps what the last forget kept and the last round's backup.
    assert_eq!(left.len(), 6, "{left:?}");
    assert!(left.iter().all(|id| expected.iter().any(|(e, ..)| e == id)));
    for (id, name, data) in expected.iter().filter(|(id, ..)| left.contains(id)) {
        let out = w.ok(&[&"dump", id, name]);
        assert!(
            out.stdout == *data,
            "snapshot {id} does not restore its stream"
        );
    }
}

#[test]
fn a_backup_stopped_across_a_whole_prune_resumes_and_commits() {
    let w = World::new();
    w.init();
    let data = noise(77, 1_500_000);
    let first = {
        let mut f = Feeding::start(&w, "db.dump", "first");
        f.feed(&data);
        f.finish()
    };
    // A backup begins, reads half its input and is stopped.
    let mut f = Feeding::start(&w, "db.dump", "second");
    f.feed(&data[..700_000]);
    assert!(wait_for(Duration::from_secs(60), || lock_count(&w) >= 1));
    let pid = i32::try_from(f.child.id()).unwrap();
    // SAFETY: kill(2) on our own child.
    #[allow(unsafe_code)]
    unsafe {
        assert_eq!(libc::kill(pid, libc::SIGSTOP), 0);
    }
    // The snapshot whose data it deduplicates against is forgotten and
    // pruned while it is stopped: the data is marked, not deleted.
    w.ok(&[&"forget", &first]);
    let p = w.json(&[&"prune"]);
    assert_eq!(p["packs_deleted"], 0, "{p}");
    assert!(p["packs_pending"].as_u64().unwrap() > 0, "{p}");
    #[allow(unsafe_code)]
    unsafe {
        assert_eq!(libc::kill(pid, libc::SIGCONT), 0);
    }
    f.feed(&data[700_000..]);
    let second = f.finish();
    // The next prune finds the marked data in use again and keeps it.
    let p = w.json(&[&"prune"]);
    assert!(p["packs_rescued"].as_u64().unwrap() > 0, "{p}");
    assert_eq!(p["packs_pending"], 0, "{p}");
    assert_check_clean(&w);
    let out = w.ok(&[&"dump", &second, &"db.dump"]);
    assert!(out.stdout == data, "the resumed backup does not restore");
}
