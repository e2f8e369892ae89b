//! Decrypted index files, decoded and loaded into an index.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salvor_engine::format::index::decode;

fuzz_target!(|data: &[u8]| {
    // Both layouts: v1 files (frozen) and v2 files (supersedes, extensions).
    for f in [1, 2]
        .into_iter()
        .filter_map(|v| decode(data, v, &|| "fuzz".into()).ok())
    {
        let mut index = salvor_engine::index::Index::default();
        for p in &f.packs {
            index.add_pack(p);
        }
        index.finish();
        if let Some(p) = f
            .packs
            .first()
            .and_then(|p| p.frames.first())
            .and_then(|f| f.blobs.first())
        {
            assert!(index.contains(&p.id));
        }
    }
});
