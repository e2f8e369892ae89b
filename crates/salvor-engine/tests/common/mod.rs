//! What the engine's integration tests share: a repository that opens in
//! milliseconds, and a full check that must come out clean.
// Each test binary uses part of this module.
#![allow(dead_code)]

use salvor_engine::Repository;
use salvor_engine::check::{CheckOptions, CheckProgress, CheckResults, Subset, check};
use salvor_engine::crypto::KdfParams;
use salvor_engine::format::config::RepoConfig;
use salvor_engine::repo::InitOptions;

/// Argon2 at its cheapest: tests open many repositories.
pub fn cheap_kdf() -> KdfParams {
    KdfParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    }
}

/// The default configuration with [`cheap_kdf`].
pub fn init_options() -> InitOptions {
    InitOptions {
        config: RepoConfig::new_default(),
        kdf: cheap_kdf(),
    }
}

/// `check --read-data`.
pub fn check_data(repo: &Repository) -> CheckResults {
    let opts = CheckOptions {
        read_data: Some(Subset::All),
    };
    check(repo, &opts, &CheckProgress::default()).unwrap()
}

/// `check --read-data` finds nothing.
pub fn assert_clean(repo: &Repository) {
    let r = check_data(repo);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}
