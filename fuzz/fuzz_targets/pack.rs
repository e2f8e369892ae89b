//! Whole packs as `check --read-data` reads them (named by their hash, so the
//! name check passes and the prefix, trailer and header are reached), and
//! decrypted pack headers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salvor_engine::crypto::MasterKey;
use salvor_engine::format::{from_bytes, pack::PackHeader};
use salvor_engine::id::PackId;

fuzz_target!(|data: &[u8]| {
    static KEY: std::sync::OnceLock<MasterKey> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(MasterKey::generate);
    let _ = salvor_engine::pack::read_header(key, &PackId::hash_of(data), data);
    let _ = from_bytes::<PackHeader>(data, &|| "fuzz".into());
});
