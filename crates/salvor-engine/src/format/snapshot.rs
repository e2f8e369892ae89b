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

/// What a source recorded about itself in a snapshot: its type, where it
/// was read from, and the facts (server version, per-table counts) that a
/// verification later compares a restore with.
///
/// The JSON is one flat object: `type`, `identity` and the source's own
/// keys, so snapshots written before the type existed read as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// The source type (`postgres`, `files`, ...), which says what the other
    /// keys mean; empty in manifests that did not record it.
    #[serde(rename = "type", default)]
    pub source_type: String,
    /// Where the source was read from, without credentials
    /// (`postgres://db1:5432`, `/etc`): a job's restore and verification tell
    /// one database server from another by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The source's own facts, specified per type.
    #[serde(flatten)]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

impl Manifest {
    /// A manifest from a source's JSON object; its `type` and `identity`
    /// keys, if present, become the typed fields. A value that is not an
    /// object is kept under the key `value`.
    pub fn from_value(value: serde_json::Value) -> Self {
        match value {
            serde_json::Value::Object(mut detail) => {
                let take = |d: &mut serde_json::Map<_, _>, k: &str| match d.remove(k) {
                    Some(serde_json::Value::String(s)) => Some(s),
                    Some(other) => {
                        d.insert(k.to_string(), other);
                        None
                    }
                    None => None,
                };
                Self {
                    source_type: take(&mut detail, "type").unwrap_or_default(),
                    identity: take(&mut detail, "identity"),
                    detail,
                }
            }
            serde_json::Value::Null => Self::default(),
            other => {
                let mut detail = serde_json::Map::new();
                detail.insert("value".into(), other);
                Self {
                    detail,
                    ..Self::default()
                }
            }
        }
    }

    /// The flat JSON object, as stored.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("manifest json")
    }
}

static NULL: serde_json::Value = serde_json::Value::Null;

/// `manifest["tables"]`: a key of the source's facts, `null` when absent.
impl std::ops::Index<&str> for Manifest {
    type Output = serde_json::Value;
    fn index(&self, key: &str) -> &serde_json::Value {
        self.detail.get(key).unwrap_or(&NULL)
    }
}

/// A snapshot document.
///
/// Fields this build does not know (written by a later version) are kept
/// in `unknown` and written back when the snapshot is rewritten.
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
    /// For a snapshot copied from another repository, its id there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
    /// Source manifests, by source name.
    #[serde(default)]
    pub manifests: BTreeMap<String, Manifest>,
    /// True when some files could not be read.
    #[serde(default)]
    pub partial: bool,
    /// salvor version that wrote it.
    pub program_version: String,
    /// Statistics.
    pub summary: BackupSummary,
    /// Fields of later versions, kept as they are.
    #[serde(flatten)]
    pub unknown: serde_json::Map<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_stay_flat_and_unknown_fields_survive_a_rewrite() {
        let old = r#"{"time":"2026-01-02T03:04:05Z","hostname":"h","username":"u",
            "paths":["/pg"],"tree":"0000000000000000000000000000000000000000000000000000000000000000",
            "manifests":{"pg":{"type":"postgres","server_version":"16.2","databases":{}},
                         "old":{"tables":{"t":1}}},
            "program_version":"0.1.0","summary":{"files_new":0,"files_changed":0,
            "files_unchanged":0,"dirs":0,"bytes_read":0,"total_bytes":0,"data_blobs_added":0,
            "tree_blobs_added":0,"bytes_added":0,"bytes_stored":0,"warnings":[],"duration_secs":0.5},
            "from_the_future":{"x":[1,2]}}"#;
        let snap: Snapshot = serde_json::from_str(old).unwrap();
        assert_eq!(snap.manifests["pg"].source_type, "postgres");
        assert_eq!(snap.manifests["pg"]["server_version"], "16.2");
        assert_eq!(snap.manifests["old"].source_type, "");
        assert_eq!(snap.manifests["old"]["tables"]["t"], 1);
        assert!(snap.manifests["old"]["absent"].is_null());
        assert_eq!(snap.original, None);
        let back: serde_json::Value = serde_json::to_value(&snap).unwrap();
        assert_eq!(back["from_the_future"]["x"][1], 2);
        assert_eq!(back["manifests"]["pg"]["type"], "postgres");
        assert!(back["manifests"]["pg"].get("identity").is_none());
        assert!(back.get("original").is_none());
        let m = Manifest::from_value(
            serde_json::json!({"type":"redis","identity":"redis://h:6379","keys":3}),
        );
        assert_eq!(
            (m.source_type.as_str(), m.identity.as_deref()),
            ("redis", Some("redis://h:6379"))
        );
        assert_eq!(m.to_value()["keys"], 3);
        assert_eq!(Manifest::from_value(serde_json::json!(7))["value"], 7);
    }
}
