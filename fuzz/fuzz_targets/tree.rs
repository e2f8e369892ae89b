//! Decrypted tree blobs: decoded and checked for names that could escape a
//! restore target.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salvor_engine::format::{from_bytes, tree::Tree};
use salvor_engine::id::BlobId;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = from_bytes::<Tree>(data, &|| "fuzz".into()) {
        let _ = salvor_engine::repo::blobs::validate_tree(&BlobId([0; 32]), &t);
    }
});
