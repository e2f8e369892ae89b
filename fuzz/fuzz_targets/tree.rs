//! Decrypted tree blobs of both format versions: decoded and checked for
//! names that could escape a restore target; and list blobs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salvor_engine::format::tree::decode;
use salvor_engine::id::BlobId;

fuzz_target!(|data: &[u8]| {
    let id = BlobId([0; 32]);
    for version in [1, 2] {
        if let Ok(t) = decode(data, version, &|| "fuzz".into()) {
            let _ = salvor_engine::repo::blobs::validate_tree(&id, &t);
        }
    }
    let _ = salvor_engine::content::decode(&id, data);
});
