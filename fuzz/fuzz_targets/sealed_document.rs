//! Sealed documents (config, index, snapshot, lock): prefix checks and
//! authentication under a fixed key; the first byte picks the kind.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salvor_engine::crypto::MasterKey;
use salvor_engine::format::{ObjectKind, open};

fuzz_target!(|data: &[u8]| {
    static KEY: std::sync::OnceLock<MasterKey> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(MasterKey::generate);
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let kind = match k % 5 {
        0 => ObjectKind::Config,
        1 => ObjectKind::Index,
        2 => ObjectKind::Snapshot,
        3 => ObjectKind::Lock,
        _ => ObjectKind::Pack,
    };
    let _ = open(key, kind, rest, &|| "fuzz".into());
});
