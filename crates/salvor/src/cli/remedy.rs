//! The CLI's wording of the engine's remedies: the commands, flags and
//! variables that carry them out. The engine names the action
//! ([`Remedy`]); only the CLI knows it is spelled `salvor unlock`.

use salvor_engine::Remedy;

/// What to tell a CLI user to do.
pub fn say(r: Remedy) -> &'static str {
    match r {
        Remedy::CheckData => "run `salvor check --read-data` to find every damaged object",
        Remedy::Check => "run `salvor check`; the index or a pack may be missing",
        Remedy::RepairIndex => "run `salvor repair index` to rebuild the index from the packs",
        Remedy::RemoveStaleLock => {
            "wait for it to finish; if that process is dead, run `salvor unlock`"
        }
        Remedy::NameOrCreateRepository => {
            "check --repo / SALVOR_REPO, or create one with `salvor init`"
        }
        Remedy::NameRepository => "pass --repo PATH or set SALVOR_REPO",
        Remedy::CheckPassword => "check SALVOR_PASSWORD, --password-file or --password-command",
        Remedy::ListSnapshots => "list snapshots with `salvor snapshots`",
        Remedy::NameReadableSnapshot => {
            "name the snapshot to use by its id (`salvor snapshots` lists the readable ones), \
             and run `salvor check` to see what is damaged"
        }
        Remedy::BackupFirst => "run `salvor backup` first",
        Remedy::ListContents => "list its contents with `salvor ls SNAPSHOT`",
        Remedy::RestoreDirectory => "use `salvor restore --include` for directories",
        Remedy::NameWhatToBackUp => "name at least one path, or use --stdin",
        Remedy::PlainStreamName => "use a plain file name, e.g. --stdin-name db.sql",
        Remedy::ListKeys => "list keys with `salvor key list`",
        Remedy::ReplaceDamagedKey => {
            "if the password is right, it was for the damaged key: open with another key and \
             remove it with `salvor key remove`, or restore that file from a copy"
        }
        Remedy::KeyInUse => {
            "open the repository with another key to remove this one, or use `salvor key passwd`"
        }
        Remedy::CopyToNewRepository => {
            "copy the snapshots into a new repository made by `salvor init` instead"
        }
        Remedy::ChooseCache => "pass --cache-dir DIR, or --no-cache",
        Remedy::MoreCacheSpace => "free space there, or pass --cache-dir on a larger file system",
        Remedy::RepairBeforePrune => {
            "run `salvor check` and repair what it finds (`salvor repair index`, `salvor repair \
             packs`, `salvor repair snapshots`), then prune again"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salvor_engine::Error;

    /// Engine errors as the CLI shows them, and as the engine words them
    /// for any other front end: the whole line, so a change is seen.
    #[test]
    fn rendered_error_text() {
        let cases: Vec<(Error, &str, &str)> = vec![
            (
                salvor_engine::crypto::wrong_password(),
                "wrong password: no key in the repository opens with it; \
                 check SALVOR_PASSWORD, --password-file or --password-command",
                "wrong password: no key in the repository opens with it; check the password given",
            ),
            (
                salvor_engine::backend::open_url("").err().unwrap(),
                "no repository given; pass --repo PATH or set SALVOR_REPO",
                "no repository given; say which repository to use",
            ),
            (
                Error::corrupt("pack 1234abcd is truncated"),
                "pack 1234abcd is truncated; run `salvor check --read-data` to find every damaged object",
                "pack 1234abcd is truncated; check all of the repository's data to find every damaged object",
            ),
            (
                salvor_engine::Repository::open(
                    salvor_engine::backend::open_url("/nonexistent/salvor-test-repo").unwrap(),
                    b"pw",
                )
                .err()
                .unwrap(),
                "no repository at /nonexistent/salvor-test-repo; \
                 check --repo / SALVOR_REPO, or create one with `salvor init`",
                "no repository at /nonexistent/salvor-test-repo; \
                 check the repository location, or create a repository there",
            ),
            (
                Error::io(
                    "cannot read",
                    "/x",
                    std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                )
                .hint("a hint in words any front end can show")
                .remedy(Remedy::RemoveStaleLock),
                "cannot read /x: permission denied; a hint in words any front end can show; \
                 wait for it to finish; if that process is dead, run `salvor unlock`",
                "cannot read /x: permission denied; a hint in words any front end can show; \
                 wait for it to finish; if that process is dead, remove its stale lock",
            ),
        ];
        for (e, cli, neutral) in cases {
            assert_eq!(e.render(&say), cli);
            assert_eq!(e.to_string(), neutral);
        }
    }

    #[test]
    fn every_remedy_is_said_differently_from_the_engine_and_names_a_way_to_do_it() {
        for r in Remedy::ALL {
            let text = say(r);
            assert_ne!(text, r.neutral(), "{r:?}");
            assert!(
                text.contains("salvor") || text.contains("--") || text.contains("SALVOR_"),
                "{r:?}: {text}"
            );
        }
    }
}
