//! `salvor demo`: the whole cycle on an embedded default, no servers needed.
//!
//! Creates a sample tree (config, a private key with mode 0600, JSON data, a
//! binary, a symlink, a hardlink, a non-UTF-8 name), a local repository, backs
//! up twice (the second is incremental), backs up a generated dump as a
//! stream and a live SQLite database through its source, checks every byte,
//! restores, and compares the restore with the source (the database by its
//! manifest's row counts). Exit 0 only if everything matched.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use salvor_engine::backup::{self, BackupOptions, StreamOptions};
use salvor_engine::check::{self, CheckOptions, Subset};
use salvor_engine::repo::BlobReader;
use salvor_engine::restore::{self, RestoreOptions};
use salvor_engine::{Repository, browse};

use super::{GlobalOptions, output};
use crate::source::sqlite::SqliteConfig;
use crate::source::{BackupContext, PendingRepo, RestoreContext, Source};

/// Arguments of `salvor demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Working directory for the sample tree, repository and restore (recreated).
    #[arg(long, default_value = "salvor-demo")]
    dir: PathBuf,
}

fn write(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(path.parent().expect("has parent"))?;
    std::fs::write(path, data).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn sample_tree(src: &Path) -> anyhow::Result<()> {
    write(
        &src.join("etc/app/config.toml"),
        b"[server]\nlisten = \"127.0.0.1:8080\"\nworkers = 4\n",
        0o644,
    )?;
    write(
        &src.join("etc/app/tls/server.key"),
        b"-----BEGIN PRIVATE KEY-----\nZGVtbyBrZXkgb25seQ==\n-----END PRIVATE KEY-----\n",
        0o600,
    )?;
    let pools: Vec<String> = (0..2000)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"cidr\":\"10.{}.{}.0/24\",\"tenant\":\"t{}\"}}",
                i / 256,
                i % 256,
                i % 17
            )
        })
        .collect();
    write(
        &src.join("var/lib/ipam/pools.json"),
        format!("[{}]\n", pools.join(",\n")).as_bytes(),
        0o640,
    )?;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let binary: Vec<u8> = (0..3 << 20)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 4096 < 1024 {
                (x & 0xff) as u8
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    write(&src.join("var/lib/store/blob.bin"), &binary, 0o644)?;
    write(&src.join("var/lib/store/empty"), b"", 0o644)?;
    std::os::unix::fs::symlink("../../etc/app/config.toml", src.join("var/lib/config-link"))?;
    std::fs::hard_link(
        src.join("var/lib/ipam/pools.json"),
        src.join("var/lib/ipam/pools.hardlink.json"),
    )?;
    let odd = src.join(std::ffi::OsStr::from_bytes(
        b"var/name-\xff\xfe-not-utf8.txt",
    ));
    write(&odd, b"file names are bytes\n", 0o644)?;
    Ok(())
}

/// Compares two trees: type, content, mode, symlink target, mtime.
/// An application database: tenants and their IP allocations.
fn sample_db(path: &Path) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "CREATE TABLE tenants (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE allocations (ip TEXT PRIMARY KEY, tenant INTEGER REFERENCES tenants(id));
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
           INSERT INTO tenants SELECT i, 'tenant-' || i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 2999)
           INSERT INTO allocations SELECT '10.0.' || (i / 256) || '.' || (i % 256), i % 40 + 1 FROM n;",
    )?;
    Ok(())
}

/// Entries compared: regular files and symlinks.
#[derive(Default)]
struct Compared {
    files: u64,
    links: u64,
}

fn compare(a: &Path, b: &Path, count: &mut Compared) -> anyhow::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(a)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let mut other: Vec<_> = std::fs::read_dir(b)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    other.sort();
    if names != other {
        bail!("{} and {} list different entries", a.display(), b.display());
    }
    for n in names {
        let (pa, pb) = (a.join(&n), b.join(&n));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa)?,
            std::fs::symlink_metadata(&pb)?,
        );
        if ma.file_type() != mb.file_type() || (!ma.is_symlink() && ma.mode() != mb.mode()) {
            bail!("{} differs in type or mode", pb.display());
        }
        if ma.is_dir() {
            compare(&pa, &pb, count)?;
            continue;
        }
        if ma.is_symlink() {
            if std::fs::read_link(&pa)? != std::fs::read_link(&pb)? {
                bail!("{} points elsewhere", pb.display());
            }
        } else if std::fs::read(&pa)? != std::fs::read(&pb)? {
            bail!("{} has different content", pb.display());
        }
        if ma.mtime() != mb.mtime() || ma.mtime_nsec() != mb.mtime_nsec() {
            bail!("{} has a different mtime", pb.display());
        }
        if ma.is_symlink() {
            count.links += 1;
        } else {
            count.files += 1;
        }
    }
    Ok(())
}

/// The file that marks a directory as the demo's own.
const DEMO_MARKER: &str = ".salvor-demo";

/// Runs the demo.
pub fn run(g: &GlobalOptions, a: &DemoArgs) -> anyhow::Result<i32> {
    let dir = std::path::absolute(&a.dir)?;
    // Only a directory an earlier demo made (it holds the marker) is cleared:
    // anything else the user keeps there must survive a mistyped --dir.
    let marker = dir.join(DEMO_MARKER);
    // Demos before the marker left exactly these entries.
    let only_demo_entries = std::fs::read_dir(&dir).map_or(true, |d| {
        d.flatten().all(|e| {
            ["source", "repo", "restore", "app.db", DEMO_MARKER]
                .iter()
                .any(|n| e.file_name() == *n)
        })
    });
    if !only_demo_entries && !marker.exists() {
        return Err(salvor_engine::Error::invalid(format!(
            "{} is not empty and was not made by `salvor demo`",
            dir.display()
        ))
        .hint("pass --dir with a new or empty directory")
        .into());
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        &marker,
        b"made by salvor demo; the next demo run clears this directory\n",
    )?;
    let (src, repo_dir, target) = (dir.join("source"), dir.join("repo"), dir.join("restore"));
    let say = |s: String| {
        if !g.quiet {
            println!("{s}");
        }
    };
    sample_tree(&src)?;
    say(format!("1. sample tree written to {}", src.display()));
    // A fixed password is fine for a throwaway demo repository; real use takes
    // it from SALVOR_PASSWORD, a file or a command.
    let backend = g.backend_at(&repo_dir.to_string_lossy())?;
    let repo = Repository::init(backend, b"salvor-demo-password", &Default::default())?;
    say(format!("2. repository created at {}", repo_dir.display()));
    let opts = BackupOptions {
        paths: vec![src.clone()],
        ..Default::default()
    };
    let (id1, s1) = backup::backup_paths(&repo, &opts, Arc::default())?;
    say(format!(
        "3. backup {}: {} files, {} read, {} stored",
        id1.short(),
        s1.summary.files_new,
        output::bytes(s1.summary.bytes_read),
        output::bytes(s1.summary.bytes_stored)
    ));
    write(
        &src.join("etc/app/config.toml"),
        b"[server]\nlisten = \"127.0.0.1:8080\"\nworkers = 8\n",
        0o644,
    )?;
    let (id2, s2) = backup::backup_paths(&repo, &opts, Arc::default())?;
    say(format!(
        "4. backup {} after editing one file: {} changed, {} unchanged (not read again), {} stored",
        id2.short(),
        s2.summary.files_changed,
        s2.summary.files_unchanged,
        output::bytes(s2.summary.bytes_stored)
    ));
    let dump: Vec<u8> = (0..50_000)
        .flat_map(|i| format!("INSERT INTO t VALUES ({i}, 'row {i}');\n").into_bytes())
        .collect();
    let sopts = StreamOptions {
        name: "demo.sql".into(),
        ..Default::default()
    };
    let (id3, _) = backup::backup_stream(&repo, dump.as_slice(), &sopts, Arc::default())?;
    say(format!(
        "5. stream backup {} of a {} generated dump",
        id3.short(),
        output::bytes(dump.len() as u64)
    ));
    let db_path = dir.join("app.db");
    sample_db(&db_path)?;
    let sqlite = SqliteConfig {
        path: db_path.clone(),
        restore_to: None,
        busy_timeout_ms: 10_000,
    };
    let pending = PendingRepo::ready(repo.clone());
    let ctx = BackupContext {
        repo: &pending,
        name: "app_db",
        identity: crate::source::SourceConfig::Sqlite(sqlite.clone()).identity(),
        tags: Vec::new(),
        host: None,
        progress: Arc::default(),
        cancel: repo.cancel().clone(),
    };
    let (id4, snap_db) = (&sqlite).backup(&ctx)?;
    let tables = snap_db.manifests["app_db"]["tables"].clone();
    say(format!(
        "6. sqlite source backup {} of {} (online backup API), manifest rows: {tables}",
        id4.short(),
        db_path.display()
    ));
    let r = check::check(
        &repo,
        &CheckOptions {
            read_data: Some(Subset::All),
        },
        &Default::default(),
    )?;
    if !r.errors.is_empty() {
        let errors: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
        bail!("check found errors: {}", errors.join("; "));
    }
    say(format!(
        "7. check --read-data: {} snapshots, {} packs read, no errors",
        r.snapshots, r.packs_read
    ));
    let reader = BlobReader::open(&repo, "demo restore")?;
    restore::restore(
        &reader,
        &s2,
        &RestoreOptions {
            target: target.clone(),
            ..Default::default()
        },
        &Default::default(),
    )?;
    let mut compared = Compared::default();
    compare(
        &src,
        &target.join(src.strip_prefix("/").unwrap_or(&src)),
        &mut compared,
    )?;
    let snap3 = repo.read_snapshot(&id3)?;
    let node = browse::find(&reader, &snap3.tree, "demo.sql")?.context("demo.sql missing")?;
    let mut back = Vec::new();
    browse::dump(&reader, &node, &mut back)?;
    if back != dump {
        bail!("the restored stream differs from the original");
    }
    let restored_db = target.join("app.db");
    let restored_name = restored_db.to_string_lossy().into_owned();
    let report = (&sqlite).restore(&RestoreContext {
        reader: &reader,
        snapshot: &snap_db,
        source_name: "app_db",
        only: &[],
        rename: Some(&restored_name),
        dry_run: false,
        yes: false,
        drop_dependents: false,
    })?;
    if serde_json::Value::Object(report.counts) != tables {
        bail!("the restored database's row counts differ from the manifest");
    }
    say(format!(
        "8. restored to {}: {} files and {} symlink(s) identical to the source (content, modes, hardlinks, mtimes); stream identical; app.db rows match its manifest",
        target.display(),
        compared.files,
        compared.links
    ));
    say(format!(
        "\nnext: export SALVOR_REPO={} and SALVOR_PASSWORD=salvor-demo-password, then try `salvor snapshots`, `salvor ls latest`, `salvor diff {} {}`",
        repo_dir.display(),
        id1.short(),
        id2.short()
    ));
    Ok(0)
}
