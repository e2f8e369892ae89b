//! What the engine's integration tests share: a repository that opens in
//! milliseconds, and a full check that must come out clean.
// Each test binary uses part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use salvor_engine::Repository;
use salvor_engine::backend::fault::FaultyBackend;
use salvor_engine::backend::opendal::OpendalBackend;
use salvor_engine::check::{CheckOptions, CheckProgress, CheckResults, Subset, check};
use salvor_engine::clock::ManualClock;
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

/// A local backend that injects failures on request.
pub type Faulty = Arc<FaultyBackend<OpendalBackend>>;

/// A repository of format `version` at `dir` behind a [`Faulty`] backend,
/// on a clock the test moves.
pub fn faulty_repo(dir: &Path, version: u8) -> (Faulty, Repository, Arc<ManualClock>) {
    let mut opts = init_options();
    opts.config.version = version;
    let backend: Faulty = Arc::new(FaultyBackend::new(
        OpendalBackend::from_url(dir.to_str().unwrap()).unwrap(),
    ));
    let clock = ManualClock::starting_now();
    let repo = Repository::init(Box::new(backend.clone()), b"pw", &opts)
        .unwrap()
        .with_clock(clock.clone());
    (backend, repo, clock)
}
