//! `snapshots/<id>`: one backup run. Sealed JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::{BlobId, SnapshotId};

/// What a backup did, stored in its snapshot and printed by the CLI.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BackupSummary {
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files whose metadata changed since the parent (re-read).
    pub files_changed: u64,
    /// Files taken from the parent without reading.
    pub files_unchanged: u64,
    /// Directories.
    pub dirs: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Logical size of everything in the snapshot.
    pub total_bytes: u64,
    /// New data blobs stored.
    pub data_blobs_added: u64,
    /// New tree blobs stored, and from v2 list blobs (content lists).
    pub tree_blobs_added: u64,
    /// Plaintext bytes of new data blobs (content read from the source).
    pub bytes_added: u64,
    /// Plaintext bytes of new tree and list blobs (directories, content
    /// lists). Absent from snapshots written before it was split out, whose
    /// `bytes_added` counts both.
    #[serde(default)]
    pub tree_bytes_added: u64,
    /// Bytes of new packs written to the backend.
    pub bytes_stored: u64,
    /// Per-file problems (unreadable, changed while read).
    pub warnings: Vec<String>,
    /// Wall time of the backup in seconds.
    pub duration_secs: f64,
}

/// A snapshot document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the backup started.
    pub time: jiff::Timestamp,
    /// Host that made it.
    pub hostname: String,
    /// User that made it.
    pub username: String,
    /// Backed-up paths (absolute) or the stdin name.
    pub paths: Vec<String>,
    /// User tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Root tree.
    pub tree: BlobId,
    /// Snapshot used for change detection.
    #[serde(default)]
    pub parent: Option<SnapshotId>,
    /// The job that made it, if any.
    #[serde(default)]
    pub job: Option<String>,
    /// Source manifests (server version, counts...), by source name.
    #[serde(default)]
    pub manifests: BTreeMap<String, serde_json::Value>,
    /// True when some files could not be read.
    #[serde(default)]
    pub partial: bool,
    /// salvor version that wrote it.
    pub program_version: String,
    /// Statistics.
    pub summary: BackupSummary,
}
