//! Read-only commands: `snapshots`, `ls`, `diff`, `stats`.

use clap::Args;
use salvor_engine::browse;
use salvor_engine::format::tree::NodeKind;
use salvor_engine::ops;

use super::filter::FilterArgs;
use salvor_engine::repo::BlobReader;

use super::output::outln;
use super::{GlobalOptions, output};

/// Arguments of `salvor snapshots`.
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Only snapshots holding a backup of this configured source.
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
}

/// Lists snapshots.
pub fn snapshots(g: &GlobalOptions, a: &SnapshotsArgs) -> anyhow::Result<i32> {
    let repo = g.open()?;
    let list = ops::snapshots::list(&repo, &a.filter.filter(a.source.clone()))?;
    for e in &list.unreadable {
        eprintln!("warning: {}", e.render(&super::remedy::say));
    }
    let snaps = list.snapshots;
    if g.json {
        let v: Vec<_> = snaps
            .iter()
            .map(|(id, s)| {
                let mut v = serde_json::to_value(s).expect("snapshot json");
                v["id"] = id.to_hex().into();
                v["short_id"] = id.short().into();
                v
            })
            .collect();
        output::json(&v)?;
        return Ok(0);
    }
    outln!(
        "{:<8}  {:<19}  {:<12}  {:<16}  {:>10}  paths",
        "id",
        "time",
        "host",
        "tags",
        "size"
    )?;
    for (id, s) in &snaps {
        outln!(
            "{:<8}  {:<19}  {:<12}  {:<16}  {:>10}  {}{}",
            id.short(),
            output::time(&s.time),
            s.hostname,
            s.tags.join(","),
            output::bytes(s.summary.total_bytes),
            s.paths.join(" "),
            if s.partial { "  (partial)" } else { "" }
        )?;
    }
    outln!("{} snapshots", snaps.len())?;
    Ok(0)
}

fn stdout_error(e: std::io::Error) -> salvor_engine::Error {
    salvor_engine::Error::io("cannot write", "standard output", e)
}

/// Arguments of `salvor ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id, prefix or `latest`.
    snapshot: String,
    /// Only below this path.
    path: Option<String>,
    /// Show mode, owner, size and time.
    #[arg(short, long)]
    long: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

fn mode_string(kind: NodeKind, mode: u32) -> String {
    let t = match kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::BlockDevice => 'b',
        NodeKind::CharDevice => 'c',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::File => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let b = (mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// Lists a snapshot's files.
pub fn ls(g: &GlobalOptions, a: &LsArgs) -> anyhow::Result<i32> {
    let repo = g.open()?;
    let (_, snap) = ops::snapshots::select(&repo, &a.snapshot, &a.filter.filter(None))?;
    let reader = BlobReader::open(&repo, "ls")?;
    let base = a.path.clone().unwrap_or_else(|| "/".into());
    let start = browse::find(&reader, &snap.tree, &base)?;
    let mut entries = Vec::new();
    let mut visit = |p: &[u8], n: &salvor_engine::format::tree::Node| {
        let path = String::from_utf8_lossy(p).into_owned();
        if g.json {
            entries.push(serde_json::json!({
                "path": path, "type": format!("{:?}", n.kind).to_lowercase(), "mode": n.mode,
                "uid": n.uid, "gid": n.gid, "size": n.size, "mtime_ns": n.mtime_ns,
                "link_target": (!n.link_target.is_empty()).then(|| String::from_utf8_lossy(&n.link_target).into_owned()),
            }));
        } else if a.long {
            let t = jiff::Timestamp::from_nanosecond(i128::from(n.mtime_ns))
                .map(|t| output::time(&t))
                .unwrap_or_default();
            let link = if n.link_target.is_empty() {
                String::new()
            } else {
                format!(" -> {}", String::from_utf8_lossy(&n.link_target))
            };
            outln!(
                "{} {:>5} {:>5} {:>12} {t} {path}{link}",
                mode_string(n.kind, n.mode),
                n.uid,
                n.gid,
                n.size
            )
            .map_err(stdout_error)?;
        } else {
            outln!("{path}").map_err(stdout_error)?;
        }
        Ok(true)
    };
    match start {
        None => browse::walk(&reader, &snap.tree, b"", &mut visit)?,
        Some(n) => {
            let p = format!("/{}", base.trim_matches('/'));
            visit(p.as_bytes(), &n)?;
            if let Some(sub) = n.subtree {
                browse::walk(&reader, &sub, p.as_bytes(), &mut visit)?;
            }
        }
    }
    if g.json {
        output::json(&entries)?;
    }
    Ok(0)
}

/// Arguments of `salvor diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The older snapshot.
    from: String,
    /// The newer snapshot.
    to: String,
}

/// Shows changes between two snapshots.
pub fn diff(g: &GlobalOptions, a: &DiffArgs) -> anyhow::Result<i32> {
    let d = ops::diff::diff(&g.open()?, &a.from, &a.to)?;
    if g.json {
        output::json(&d)?;
    } else {
        for e in &d {
            outln!("{}    {}", e.change, e.path)?;
        }
        let count = |c| d.iter().filter(|e| e.change == c).count();
        outln!(
            "{} added, {} removed, {} modified, {} metadata changed, {} type changed",
            count('+'),
            count('-'),
            count('M'),
            count('U'),
            count('T')
        )?;
    }
    Ok(0)
}

/// Arguments of `salvor stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Only these snapshots (default: all).
    snapshots: Vec<String>,
}

/// Repository size, deduplication and compression.
pub fn stats(g: &GlobalOptions, a: &StatsArgs) -> anyhow::Result<i32> {
    let opts = ops::stats::StatsOptions {
        snapshots: a.snapshots.clone(),
    };
    let s = ops::stats::stats(&g.open()?, &opts)?;
    if g.json {
        output::json(&s)?;
    } else {
        outln!("snapshots:         {}", s.snapshots)?;
        outln!("logical size:      {}", output::bytes(s.logical_bytes))?;
        outln!(
            "unique data:       {} in {} blobs",
            output::bytes(s.unique_bytes),
            s.unique_blobs
        )?;
        outln!(
            "stored (all packs): {} in {} packs",
            output::bytes(s.stored_bytes),
            s.packs
        )?;
        outln!("dedup ratio:       {:.2}x", s.dedup_ratio)?;
        outln!("compression ratio: {:.2}x", s.compression_ratio)?;
    }
    Ok(0)
}
