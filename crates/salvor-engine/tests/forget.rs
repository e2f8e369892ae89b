//! Retention policies, as pure decisions over snapshot times: every rule,
//! ties, groups, time zones and DST changes, the group that is never
//! emptied and the protected tag; then `forget` on a real repository.

mod common;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use salvor_engine::ops::forget::{GroupBy, KeepPolicy, Period, parse_span, plan};
use salvor_engine::repo::SnapshotEntry;

fn snap(time: &str, host: &str, tags: &[&str]) -> Snapshot {
    let tags: Vec<String> = tags.iter().map(ToString::to_string).collect();
    serde_json::from_value(serde_json::json!({
        "time": time, "hostname": host, "username": "u", "paths": ["/data"], "tags": tags,
        "tree": "00".repeat(32), "program_version": "test",
        "summary": {"files_new": 0, "files_changed": 0, "files_unchanged": 0, "dirs": 0,
            "bytes_read": 0, "total_bytes": 0, "data_blobs_added": 0, "tree_blobs_added": 0,
            "bytes_added": 0, "bytes_stored": 0, "warnings": [], "duration_secs": 0.0}
    }))
    .unwrap()
}

/// Snapshots at `times` (RFC 3339), ids in order of the list.
fn entries(times: &[&str]) -> Vec<SnapshotEntry> {
    times
        .iter()
        .enumerate()
        .map(|(i, t)| (id(i), snap(t, "h", &[])))
        .collect()
}

fn id(i: usize) -> SnapshotId {
    SnapshotId::from_hex(&format!("{i:064x}")).unwrap()
}

/// The times kept, newest first, with their reasons.
fn kept(snaps: &[SnapshotEntry], policy: &KeepPolicy, tz: &str) -> Vec<(String, String)> {
    let tz = TimeZone::get(tz).unwrap();
    let groups = plan(snaps, policy, GroupBy::default(), &tz).unwrap();
    assert_eq!(groups.len(), 1);
    groups[0]
        .snapshots
        .iter()
        .filter(|d| d.keep)
        .map(|d| (d.time.to_string(), d.reasons.join(",")))
        .collect()
}

fn times(kept: &[(String, String)]) -> Vec<&str> {
    kept.iter().map(|(t, _)| t.as_str()).collect()
}

#[test]
fn keep_last_keeps_the_newest_and_says_so() {
    let s = entries(&[
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
        "2026-01-03T00:00:00Z",
        "2026-01-04T00:00:00Z",
    ]);
    let policy = KeepPolicy {
        last: Some(2),
        ..Default::default()
    };
    let k = kept(&s, &policy, "UTC");
    assert_eq!(times(&k), ["2026-01-04T00:00:00Z", "2026-01-03T00:00:00Z"]);
    assert!(k.iter().all(|(_, r)| r == "last"), "{k:?}");
}

#[test]
fn daily_keeps_the_newest_of_each_of_the_newest_days_with_a_snapshot() {
    let s = entries(&[
        "2026-01-01T10:00:00Z",
        "2026-01-01T22:00:00Z",
        "2026-01-03T08:00:00Z",
        "2026-01-03T09:00:00Z",
        // No snapshot on the 4th: the days counted are days that have one.
        "2026-01-05T01:00:00Z",
    ]);
    let policy = KeepPolicy {
        periods: [(Period::Daily, 3)].into(),
        ..Default::default()
    };
    let k = kept(&s, &policy, "UTC");
    assert_eq!(
        times(&k),
        [
            "2026-01-05T01:00:00Z",
            "2026-01-03T09:00:00Z",
            "2026-01-01T22:00:00Z"
        ]
    );
    assert!(k.iter().all(|(_, r)| r == "daily"));
}

#[test]
fn days_are_days_of_the_policys_time_zone_across_dst_changes() {
    // New York, 2026-03-08: clocks go from 02:00 to 03:00 (a 23-hour day).
    // 00:30 and 23:30 local are 05:30Z on the 8th and 03:30Z on the 9th:
    // one day in New York, two in UTC.
    let spring = entries(&["2026-03-08T05:30:00Z", "2026-03-09T03:30:00Z"]);
    let daily = KeepPolicy {
        periods: [(Period::Daily, 5)].into(),
        ..Default::default()
    };
    assert_eq!(kept(&spring, &daily, "America/New_York").len(), 1);
    assert_eq!(kept(&spring, &daily, "UTC").len(), 2);
    // 2026-11-01: clocks go back at 02:00 (a 25-hour day). 00:10 and 23:50
    // local are 24 h 40 min apart and still one day.
    let autumn = entries(&["2026-11-01T04:10:00Z", "2026-11-02T04:50:00Z"]);
    assert_eq!(kept(&autumn, &daily, "America/New_York").len(), 1);
    // Hours are wall-clock hours: 01:30 EDT and 01:30 EST that night, an
    // hour apart, share the bucket "1 a.m.".
    let repeated = entries(&["2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"]);
    let hourly = KeepPolicy {
        periods: [(Period::Hourly, 5)].into(),
        ..Default::default()
    };
    assert_eq!(kept(&repeated, &hourly, "America/New_York").len(), 1);
}

#[test]
fn weeks_are_iso_weeks_and_months_and_years_are_calendar_ones() {
    // Sunday 2026-01-04 and Monday 2026-01-05 are in different ISO weeks;
    // Monday and Sunday 2026-01-11 in the same.
    let s = entries(&[
        "2026-01-04T12:00:00Z",
        "2026-01-05T12:00:00Z",
        "2026-01-11T12:00:00Z",
    ]);
    let weekly = KeepPolicy {
        periods: [(Period::Weekly, 10)].into(),
        ..Default::default()
    };
    assert_eq!(
        times(&kept(&s, &weekly, "UTC")),
        ["2026-01-11T12:00:00Z", "2026-01-04T12:00:00Z"]
    );
    let s = entries(&[
        "2025-12-31T23:00:00Z",
        "2026-01-31T23:00:00Z",
        "2026-02-01T00:30:00Z",
    ]);
    let monthly = KeepPolicy {
        periods: [(Period::Monthly, 10)].into(),
        ..Default::default()
    };
    assert_eq!(kept(&s, &monthly, "UTC").len(), 3);
    // In Paris (UTC+1) 2026-01-31T23:00Z is already February 1st.
    assert_eq!(kept(&s, &monthly, "Europe/Paris").len(), 2);
    let yearly = KeepPolicy {
        periods: [(Period::Yearly, 10)].into(),
        ..Default::default()
    };
    assert_eq!(kept(&s, &yearly, "UTC").len(), 2);
    assert_eq!(kept(&s, &yearly, "Europe/Paris").len(), 1);
}

#[test]
fn within_is_measured_from_the_groups_newest_snapshot_not_from_now() {
    let s = entries(&[
        "2020-03-01T00:00:00Z",
        "2020-03-29T00:00:00Z",
        "2020-03-30T12:00:00Z",
        "2020-03-31T00:00:00Z",
    ]);
    let policy = KeepPolicy {
        within: Some(parse_span("2d").unwrap()),
        ..Default::default()
    };
    let k = kept(&s, &policy, "UTC");
    assert_eq!(
        times(&k),
        [
            "2020-03-31T00:00:00Z",
            "2020-03-30T12:00:00Z",
            "2020-03-29T00:00:00Z"
        ]
    );
    assert!(k.iter().all(|(_, r)| r == "within 2d"), "{k:?}");
    // A month back from March 31 is February's last day (29th in 2020).
    let month = KeepPolicy {
        within: Some(parse_span("1m").unwrap()),
        ..Default::default()
    };
    let s = entries(&[
        "2020-02-28T23:00:00Z",
        "2020-02-29T00:00:00Z",
        "2020-03-31T00:00:00Z",
    ]);
    assert_eq!(kept(&s, &month, "UTC").len(), 2);
}

#[test]
fn within_daily_keeps_one_a_day_inside_the_span_and_rules_combine() {
    let s = entries(&[
        "2026-01-01T10:00:00Z",
        "2026-01-08T09:00:00Z",
        "2026-01-08T21:00:00Z",
        "2026-01-09T09:00:00Z",
        "2026-01-10T09:00:00Z",
        "2026-01-10T10:00:00Z",
    ]);
    let policy = KeepPolicy {
        last: Some(1),
        within_periods: [(Period::Daily, parse_span("3d").unwrap())].into(),
        ..Default::default()
    };
    let k = kept(&s, &policy, "UTC");
    assert_eq!(
        k,
        [
            (
                "2026-01-10T10:00:00Z".to_string(),
                "last,daily within 3d".to_string()
            ),
            (
                "2026-01-09T09:00:00Z".to_string(),
                "daily within 3d".to_string()
            ),
            (
                "2026-01-08T21:00:00Z".to_string(),
                "daily within 3d".to_string()
            ),
        ]
    );
}

#[test]
fn tags_keep_protected_snapshots_stay_and_no_group_is_emptied() {
    let s = vec![
        (
            id(0),
            snap("2026-01-01T00:00:00Z", "a", &["monthly-archive"]),
        ),
        (id(1), snap("2026-01-02T00:00:00Z", "a", &["keep"])),
        (id(2), snap("2026-01-03T00:00:00Z", "a", &[])),
        (id(3), snap("2026-01-01T00:00:00Z", "b", &[])),
        (id(4), snap("2026-01-02T00:00:00Z", "b", &[])),
    ];
    let policy = KeepPolicy {
        tags: vec!["monthly-archive".into()],
        ..Default::default()
    };
    let groups = plan(&s, &policy, GroupBy::default(), &TimeZone::UTC).unwrap();
    assert_eq!(groups.len(), 2, "one group per host");
    let reasons = |g: usize| -> Vec<(bool, String)> {
        groups[g]
            .snapshots
            .iter()
            .map(|d| (d.keep, d.reasons.join(",")))
            .collect()
    };
    assert_eq!(groups[0].key.host.as_deref(), Some("a"));
    assert_eq!(
        reasons(0),
        [
            (false, String::new()),
            (true, "protected (tag keep)".into()),
            (true, "tag monthly-archive".into()),
        ]
    );
    // Host b: no rule keeps any, so its newest stays, saying why.
    assert_eq!(
        reasons(1),
        [
            (true, "newest of its group (no rule kept any)".into()),
            (false, String::new()),
        ]
    );
    // One group of everything.
    let all = plan(&s, &policy, "".parse().unwrap(), &TimeZone::UTC).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].snapshots.len(), 5);
}

#[test]
fn ties_are_decided_by_id_and_an_empty_policy_is_refused() {
    let s = entries(&["2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"]);
    let policy = KeepPolicy {
        last: Some(1),
        ..Default::default()
    };
    let g = plan(&s, &policy, GroupBy::default(), &TimeZone::UTC).unwrap();
    assert_eq!(g[0].snapshots[0].id, id(0), "the lower id first");
    assert!(g[0].snapshots[0].keep && !g[0].snapshots[1].keep);
    assert!(
        plan(
            &s,
            &KeepPolicy::default(),
            GroupBy::default(),
            &TimeZone::UTC
        )
        .is_err()
    );
    assert!(
        plan(&[], &policy, GroupBy::default(), &TimeZone::UTC)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn spans_are_written_as_restic_writes_them() {
    for (text, days) in [("30d", 30), ("2w", 14), ("2w3d", 17)] {
        assert_eq!(
            parse_span(text).unwrap().get_days() + 7 * parse_span(text).unwrap().get_weeks(),
            days,
            "{text}"
        );
    }
    let s = parse_span("1y6m12h").unwrap();
    assert_eq!((s.get_years(), s.get_months(), s.get_hours()), (1, 6, 12));
    for bad in ["", "0d", "5x", "d", "12", "-3d"] {
        assert!(parse_span(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn forget_removes_what_the_policy_does_not_keep_and_a_dry_run_nothing() {
    use salvor_engine::backup::{BackupProgress, StreamOptions, backup_stream};
    use salvor_engine::clock::ManualClock;
    use salvor_engine::ops::forget::{ForgetOptions, forget};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new("2026-01-01T12:00:00Z".parse().unwrap());
    let repo = salvor_engine::Repository::init(
        salvor_engine::backend::open_url(dir.path().to_str().unwrap()).unwrap(),
        b"pw",
        &common::init_options(),
    )
    .unwrap()
    .with_clock(clock.clone());
    // One backup a day for five days, and a second one on the last day.
    let opts = StreamOptions {
        name: "db.sql".into(),
        host: Some("h".into()),
        ..Default::default()
    };
    for day in 0..6 {
        if day < 5 {
            clock.set(Timestamp::from_second(1_767_268_800 + day * 86_400).unwrap());
        } else {
            clock.advance(std::time::Duration::from_secs(3600));
        }
        let data = format!("day {day}\n").repeat(1000);
        backup_stream(
            &repo,
            data.as_bytes(),
            &opts,
            std::sync::Arc::new(BackupProgress::default()),
        )
        .unwrap();
    }
    assert_eq!(repo.snapshots().unwrap().len(), 6);
    let mut f = ForgetOptions {
        policy: KeepPolicy {
            periods: [(Period::Daily, 3)].into(),
            ..Default::default()
        },
        time_zone: Some(TimeZone::UTC),
        dry_run: true,
        ..Default::default()
    };
    let r = forget(&repo, &f).unwrap();
    assert_eq!((r.kept, r.removed), (3, 3));
    assert_eq!(
        repo.snapshots().unwrap().len(),
        6,
        "a dry run removes nothing"
    );
    f.dry_run = false;
    let r = forget(&repo, &f).unwrap();
    assert_eq!((r.kept, r.removed), (3, 3));
    let left = repo.snapshots().unwrap();
    assert_eq!(left.len(), 3);
    let days: Vec<String> = left.iter().map(|(_, s)| s.time.to_string()).collect();
    assert_eq!(
        days,
        [
            "2026-01-03T12:00:00Z",
            "2026-01-04T12:00:00Z",
            "2026-01-05T13:00:00Z"
        ]
    );
    common::assert_clean(&repo);
    // Again: nothing more to remove.
    assert_eq!(forget(&repo, &f).unwrap().removed, 0);
}
