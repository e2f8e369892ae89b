//! The snapshot filter flags that `snapshots`, `forget`, `ls`, `dump` and
//! `restore` share.

use clap::Args;
use salvor_engine::ops::snapshots::SnapshotFilter;

/// Which snapshots a command considers. With `latest` the newest that
/// passes is taken; a snapshot named by id that does not pass is refused.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeat for any of several).
    #[arg(long, value_name = "HOST")]
    host: Vec<String>,
    /// Only snapshots with this tag (repeat: with every one of them).
    #[arg(long, value_name = "TAG")]
    tag: Vec<String>,
    /// Only snapshots holding this backed-up path (repeat: every one of them).
    // Its own id: `ls` and `dump` have a positional `path`.
    #[arg(long = "path", id = "filter_path", value_name = "PATH")]
    paths: Vec<String>,
}

impl FilterArgs {
    /// The filter, with the source a command names itself.
    pub fn filter(&self, source: Option<String>) -> SnapshotFilter {
        SnapshotFilter {
            hosts: self.host.clone(),
            tags: self.tag.clone(),
            paths: self.paths.clone(),
            source,
        }
    }
}
