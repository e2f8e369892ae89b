//! `salvor forget` through the CLI: a dry run changes nothing and says
//! what would go and why the rest stays; the real run removes exactly
//! that and the repository still checks clean and restores; removal by id;
//! protected snapshots and bad input are refused with the reason.

mod common;

use common::world::*;
use serde_json::Value;

fn snapshot_ids(w: &World) -> Vec<String> {
    w.snapshot_ids()
}

#[test]
fn forget_by_policy_and_by_id() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    for i in 0..3 {
        write(&src.join("a.txt"), format!("version {i}\n").as_bytes());
        w.backup(&src);
    }
    let tagged = w.json(&[&"backup", &"--tag", &"keep", &src]);
    let protected = tagged["snapshot"].as_str().unwrap().to_string();
    let before = snapshot_ids(&w);
    assert_eq!(before.len(), 4);

    let plan: Value = w.json(&[&"forget", &"--keep-last", &"2", &"--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        (plan["kept"].as_u64(), plan["removed"].as_u64()),
        (Some(2), Some(2)),
        "{plan}"
    );
    let decisions = plan["groups"][0]["snapshots"].as_array().unwrap();
    assert_eq!(
        decisions[0]["id"],
        protected.as_str(),
        "newest first: {plan}"
    );
    let reasons: Vec<String> = decisions
        .iter()
        .map(|d| {
            d["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    assert_eq!(reasons[0], "last,protected (tag keep)", "{plan}");
    assert_eq!(reasons[1], "last", "{plan}");
    assert_eq!(reasons[2], "", "{plan}");
    assert_eq!(snapshot_ids(&w), before, "a dry run removes nothing");
    let out = w.ok(&[&"forget", &"--keep-last", &"2", &"--dry-run"]);
    let text = stdout(&out);
    assert!(
        text.contains("would remove") && text.contains("protected (tag keep)"),
        "{text}"
    );

    // The protected snapshot counts as one of the last two: the oldest
    // two go.
    let r = w.json(&[&"forget", &"--keep-last", &"2"]);
    assert_eq!(r["removed"], 2, "{r}");
    let left = snapshot_ids(&w);
    assert_eq!(left, [before[2].clone(), protected.clone()]);
    let c = w.json(&[&"check", &"--read-data"]);
    assert_eq!(c["errors"], Value::Array(vec![]), "{c}");
    let restored = w.restore(&left[0], "r", &src);
    assert_eq!(
        std::fs::read(restored.join("a.txt")).unwrap(),
        b"version 2\n"
    );

    // By id; a protected one is refused.
    let out = w.fails(&[&"forget", &protected[..12].to_string()], 2);
    assert!(stderr(&out).contains("is protected"), "{}", show(&out));
    w.ok(&[&"forget", &left[0][..12].to_string()]);
    assert_eq!(snapshot_ids(&w), [protected]);
}

#[test]
fn forget_refuses_what_makes_no_sense() {
    let w = World::new();
    w.init();
    let out = w.fails(&[&"forget"], 2);
    assert!(stderr(&out).contains("nothing to forget"), "{}", show(&out));
    let out = w.fails(&[&"forget", &"--keep-within", &"soon"], 2);
    assert!(
        stderr(&out).contains("invalid retention span"),
        "{}",
        show(&out)
    );
    let out = w.fails(
        &[
            &"forget",
            &"--keep-last",
            &"1",
            &"--time-zone",
            &"Mars/Olympus",
        ],
        2,
    );
    assert!(stderr(&out).contains("unknown time zone"), "{}", show(&out));
    let out = w.fails(
        &[&"forget", &"--keep-last", &"1", &"--group-by", &"color"],
        2,
    );
    assert!(
        stderr(&out).contains("cannot group snapshots by"),
        "{}",
        show(&out)
    );
    let out = w.fails(&[&"forget", &"latest"], 2);
    assert!(stderr(&out).contains("not latest"), "{}", show(&out));
    let out = w.fails(&[&"forget", &"abcdef12", &"--keep-last", &"2"], 2);
    assert!(stderr(&out).contains("not both"), "{}", show(&out));
}

#[test]
fn tag_protects_a_snapshot_and_gives_it_a_new_id() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    write(&src.join("a.txt"), b"a\n");
    let first = w.backup(&src)["snapshot"].as_str().unwrap().to_string();
    w.backup(&src);
    let changed = w.json(&[&"tag", &first[..12].to_string(), &"--add", &"keep"]);
    let new = changed[0]["new"].as_str().unwrap().to_string();
    assert_ne!(new, first);
    assert_eq!(changed[0]["tags"], serde_json::json!(["keep"]));
    let ids = snapshot_ids(&w);
    assert!(ids.contains(&new) && !ids.contains(&first), "{ids:?}");
    let snaps = w.json(&[&"snapshots", &"--tag", &"keep"]);
    assert_eq!(snaps[0]["original"], first.as_str(), "{snaps}");
    // Protected now: the policy keeps it beside the newest.
    let r = w.json(&[&"forget", &"--keep-last", &"1"]);
    assert_eq!(r["removed"], 0, "{r}");
    // Tagging again to the same tags changes nothing.
    assert_eq!(
        w.json(&[&"tag", &new, &"--add", &"keep"]),
        serde_json::json!([])
    );
    let out = w.fails(&[&"tag", &new], 2);
    assert!(stderr(&out).contains("no tag change"), "{}", show(&out));
    let out = w.fails(&[&"tag", &new, &"--add", &"a,b"], 2);
    assert!(stderr(&out).contains("comma"), "{}", show(&out));
    let v = w.json(&[&"check"]);
    assert_eq!(v["errors"], Value::Array(vec![]), "{v}");
}
