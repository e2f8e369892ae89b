//! Decrypted index files, decoded and loaded into an index.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salvor_engine::format::{from_bytes, index::IndexFile};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = from_bytes::<IndexFile>(data, &|| "fuzz".into()) {
        let mut index = salvor_engine::index::Index::default();
        for p in &f.packs {
            index.add_pack(p);
        }
        index.finish();
        if let Some(p) = f.packs.first().and_then(|p| p.frames.first()).and_then(|f| f.blobs.first()) {
            assert!(index.contains(&p.id));
        }
    }
});
