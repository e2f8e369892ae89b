//! `mongodb`: work in progress (being implemented now; not yet usable).

use salvor_engine::format::snapshot::Snapshot;
use salvor_engine::id::SnapshotId;
use salvor_engine::{Error, Result};
use serde::Deserialize;

use super::{BackupContext, RestoreContext, RestoreReport, Source};

/// Configuration of a `mongodb` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongodbConfig {}

fn pending() -> Error {
    Error::invalid("the mongodb source is not available in this build")
}

impl Source for &MongodbConfig {
    fn backup(&self, _ctx: &BackupContext) -> Result<(SnapshotId, Snapshot)> {
        Err(pending())
    }

    fn restore(&self, _ctx: &RestoreContext) -> Result<RestoreReport> {
        Err(pending())
    }

    fn inspect(&self) -> Result<serde_json::Value> {
        Err(pending())
    }
}
