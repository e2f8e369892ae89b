//! The JSON inside sealed documents: config, snapshots and locks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salvor_engine::format::{config::RepoConfig, lock::LockFile, snapshot::Snapshot};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = serde_json::from_slice::<RepoConfig>(data) {
        let _ = c.file_chunker.validate();
        let _ = c.stream_chunker.validate();
    }
    let _ = serde_json::from_slice::<Snapshot>(data);
    let _ = serde_json::from_slice::<LockFile>(data);
});
