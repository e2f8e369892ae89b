//! What a user can do about an error, as an action rather than words.
//!
//! The engine is driven by the CLI today and by a daemon and a web page
//! later; each names its commands differently (`salvor unlock`, a button,
//! an API call). So an error names the remedy, and each front end says it
//! in its own terms: the engine's own wording ([`Remedy::neutral`]) names
//! no command, flag or environment variable.

/// An action that resolves or explains an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Remedy {
    /// Read and verify all data, to find every damaged object.
    CheckData,
    /// Check the repository's structure: the index or a pack may be missing.
    Check,
    /// Rebuild the index from the packs in storage.
    RepairIndex,
    /// Wait for the lock's holder, or remove its lock if it is dead.
    RemoveStaleLock,
    /// Point at the right repository location, or create a repository there.
    NameOrCreateRepository,
    /// Say which repository to use.
    NameRepository,
    /// Give the right password.
    CheckPassword,
    /// List the snapshots to find the one meant.
    ListSnapshots,
    /// Name a snapshot that can be read, and check what is damaged.
    NameReadableSnapshot,
    /// Make a first backup.
    BackupFirst,
    /// List the snapshot's contents to find the path meant.
    ListContents,
    /// Restore a directory instead of dumping it.
    RestoreDirectory,
    /// Name something to back up: a path or a stream.
    NameWhatToBackUp,
    /// Name a stream with a plain file name.
    PlainStreamName,
    /// List the repository's keys to find the one meant.
    ListKeys,
    /// The password may be that of a damaged key file: remove or restore it.
    ReplaceDamagedKey,
    /// Open with another key to remove this one, or change its password.
    KeyInUse,
    /// Copy the snapshots into a new repository instead.
    CopyToNewRepository,
    /// Use another cache directory, or none.
    ChooseCache,
    /// Free space, or put the cache on a larger file system.
    MoreCacheSpace,
    /// Find and repair the damage first; pruning waits until then.
    RepairBeforePrune,
}

impl Remedy {
    /// The engine's own wording: no command, flag or variable names.
    pub fn neutral(self) -> &'static str {
        match self {
            Self::CheckData => "check all of the repository's data to find every damaged object",
            Self::Check => "check the repository; the index or a pack may be missing",
            Self::RepairIndex => "rebuild the index from the packs in storage",
            Self::RemoveStaleLock => {
                "wait for it to finish; if that process is dead, remove its stale lock"
            }
            Self::NameOrCreateRepository => {
                "check the repository location, or create a repository there"
            }
            Self::NameRepository => "say which repository to use",
            Self::CheckPassword => "check the password given",
            Self::ListSnapshots => "list the snapshots to find the one meant",
            Self::NameReadableSnapshot => {
                "name the snapshot to use by its id (the snapshot list shows the readable ones), \
                 and check the repository to see what is damaged"
            }
            Self::BackupFirst => "make a backup first",
            Self::ListContents => "list the snapshot's contents to find the path",
            Self::RestoreDirectory => "restore directories instead of dumping them",
            Self::NameWhatToBackUp => "name at least one path, or back up a stream",
            Self::PlainStreamName => "name the stream with a plain file name, e.g. db.sql",
            Self::ListKeys => "list the repository's keys to find the one meant",
            Self::ReplaceDamagedKey => {
                "if the password is right, it was for the damaged key: open with another key \
                 and remove it, or restore that file from a copy"
            }
            Self::KeyInUse => {
                "open the repository with another key to remove this one, or change this key's password"
            }
            Self::CopyToNewRepository => "copy the snapshots into a new repository instead",
            Self::ChooseCache => "use another cache directory, or none",
            Self::MoreCacheSpace => "free space there, or put the cache on a larger file system",
            Self::RepairBeforePrune => {
                "check the repository and repair what it finds (the index, or the snapshots \
                 that lost data), then prune again"
            }
        }
    }

    /// Every remedy, for front ends that test their wording of each.
    pub const ALL: [Self; 21] = [
        Self::CheckData,
        Self::Check,
        Self::RepairIndex,
        Self::RemoveStaleLock,
        Self::NameOrCreateRepository,
        Self::NameRepository,
        Self::CheckPassword,
        Self::ListSnapshots,
        Self::NameReadableSnapshot,
        Self::BackupFirst,
        Self::ListContents,
        Self::RestoreDirectory,
        Self::NameWhatToBackUp,
        Self::PlainStreamName,
        Self::ListKeys,
        Self::ReplaceDamagedKey,
        Self::KeyInUse,
        Self::CopyToNewRepository,
        Self::ChooseCache,
        Self::MoreCacheSpace,
        Self::RepairBeforePrune,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_wording_names_no_command_flag_or_variable() {
        for r in Remedy::ALL {
            let text = r.neutral();
            assert!(
                !text.contains("salvor") && !text.contains("--") && !text.contains("SALVOR_"),
                "{r:?}: {text}"
            );
        }
    }
}
