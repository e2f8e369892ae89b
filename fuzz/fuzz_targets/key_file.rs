//! Key files (not authenticated: anyone with storage access can write one):
//! parsing and parameter bounds, and the unwrapping of a master key.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = salvor_engine::id::PackId::hash_of(data).to_hex();
    let _ = salvor_engine::repo::keys::parse_key_file(&name, data);
    for version in [1, 2] {
        let _ = salvor_engine::crypto::unwrap_master(&[7; 32], data, version);
    }
});
