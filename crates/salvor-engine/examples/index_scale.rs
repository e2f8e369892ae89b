//! How the index scales: writes a repository whose index names N synthetic
//! blobs (no packs: only the index is measured), then opens it as a backup
//! would and reports the time, peak RSS and anonymous memory. Run by
//! `bench/index.sh`; figures in bench/README.md.
//!
//!   cargo run --release -p salvor-engine --example index_scale -- DIR BLOBS

use salvor_engine::Repository;
use salvor_engine::crypto::KdfParams;
use salvor_engine::format::index::{IndexFile, IndexPack};
use salvor_engine::format::pack::{BlobEntry, BlobKind, Compression, FrameEntry};
use salvor_engine::id::{BlobId, PackId};
use salvor_engine::repo::InitOptions;

fn status(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (dir, blobs): (&str, u64) = (&args[1], args[2].parse().expect("BLOBS"));
    let url = format!("{dir}/repo");
    if !std::path::Path::new(&url).exists() {
        std::fs::create_dir_all(&url).unwrap();
        let opts = InitOptions {
            kdf: KdfParams {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
            ..Default::default()
        };
        let repo = Repository::init(
            salvor_engine::backend::open_url(&url).unwrap(),
            b"pw",
            &opts,
        )
        .unwrap();
        // 4,000 blobs a pack in 16 frames, 8 packs (32,000 blobs) an index
        // file, as a backup writes them: what
        // 4 KiB chunks in 16 MiB packs make.
        let t = std::time::Instant::now();
        let (per_pack, per_frame) = (4_000u64, 250u64);
        let mut n = 0u64;
        let mut pack_no = 0u64;
        while n < blobs {
            let mut packs = Vec::new();
            while packs.len() < 8 && n < blobs {
                let frames = (0..per_pack / per_frame)
                    .map(|f| FrameEntry {
                        offset: 30 + f * 1_000_000,
                        length: 1_000_000,
                        raw_length: 1_000_000,
                        compression: Compression::Zstd,
                        blobs: (0..per_frame)
                            .map(|b| {
                                n += 1;
                                BlobEntry {
                                    kind: BlobKind::Data,
                                    id: BlobId(*blake3::hash(&n.to_le_bytes()).as_bytes()),
                                    offset: u32::try_from(b * 4_000).unwrap(),
                                    length: 4_000,
                                }
                            })
                            .collect(),
                    })
                    .collect();
                pack_no += 1;
                packs.push(IndexPack::new(
                    PackId(*blake3::hash(&pack_no.to_be_bytes()).as_bytes()),
                    16_000_000,
                    [0; 24],
                    frames,
                    jiff::Timestamp::now().as_second(),
                ));
            }
            repo.write_index(&IndexFile {
                packs,
                ..Default::default()
            })
            .unwrap();
        }
        eprintln!("wrote {n} blobs in {:.1} s", t.elapsed().as_secs_f64());
    }
    // With a cache (as the CLI opens every repository), the first open
    // reads every index file and persists the table, which later opens map.
    let cache = format!("{dir}/cache");
    let cached = std::path::Path::new(&cache).join("");
    let open = || {
        let t = std::time::Instant::now();
        let repo = Repository::open(salvor_engine::backend::open_url(&url).unwrap(), b"pw")
            .unwrap()
            .with_derived_cache(&cached)
            .unwrap();
        let index = repo.load_index().unwrap();
        (index, t.elapsed().as_secs_f64())
    };
    let first_table = std::fs::read_dir(&cache).is_ok_and(|mut d| d.next().is_some());
    let base = (status("VmHWM:"), status("RssAnon:"));
    let (index, first) = open();
    drop(index);
    let (index, secs) = open();
    println!(
        "first open {first:.2} s ({}), open from the cached table {secs:.2} s",
        if first_table {
            "a table was cached already"
        } else {
            "from the index files, then persisted"
        }
    );
    // A backup's lookups: absent ids (new chunks) and present ones.
    let t = std::time::Instant::now();
    let mut hits = 0;
    for k in 0..1_000_000u64 {
        let id = BlobId(*blake3::hash(&(k * 7_919 % (2 * blobs)).to_le_bytes()).as_bytes());
        hits += usize::from(index.contains(&id));
    }
    let lookup_ns = t.elapsed().as_nanos() as f64 / 1e6;
    println!(
        "blobs {} open_s {secs:.2} peak_rss_MiB {} anon_MiB {} (before open: {} / {}) lookup_ns {lookup_ns:.0} hits {hits}",
        index.blob_count(),
        status("VmHWM:") / 1024,
        status("RssAnon:") / 1024,
        base.0 / 1024,
        base.1 / 1024,
    );
}
