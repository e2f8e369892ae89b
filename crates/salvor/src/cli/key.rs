//! `salvor key list|add|remove|passwd`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use salvor_engine::crypto::KdfParams;

use super::output::outln;
use super::{GlobalOptions, output, password};

/// Arguments of `salvor key`.
#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// List keys.
    List,
    /// Add a key for a new password (from SALVOR_NEW_PASSWORD, --new-password-file or a prompt).
    Add {
        /// File holding the new password.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
    /// Remove a key by id prefix (not the one in use).
    Remove {
        /// Key id or unique prefix.
        id: String,
    },
    /// Change the password of the key in use.
    Passwd {
        /// File holding the new password.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
    /// Rotate the master key after a suspected compromise.
    ///
    /// Everything written from now on is encrypted with a new key that the
    /// old key files cannot open; earlier snapshots stay restorable (the
    /// new key file keeps the old keys to read them) and backups keep
    /// deduplicating. The new key file uses the password in use. Every other
    /// key file holds only the old key, so all are removed: add the other
    /// passwords again with `salvor key add`.
    #[command(after_help = "\
Examples:
  salvor key rotate --yes
  salvor key add --new-password-file /etc/salvor/host2.pass")]
    Rotate {
        /// Remove the other key files without asking (required when there are any).
        #[arg(long)]
        yes: bool,
    },
}

/// Runs `salvor key`.
pub fn run(g: &GlobalOptions, a: &KeyArgs) -> anyhow::Result<i32> {
    if let KeyCommand::Rotate { yes } = &a.command {
        return rotate(g, *yes);
    }
    let repo = g.open()?;
    let say = |msg: String, v: serde_json::Value| -> anyhow::Result<()> {
        if g.json {
            output::json(&v)
        } else {
            if !g.quiet {
                outln!("{msg}")?;
            }
            Ok(())
        }
    };
    match &a.command {
        KeyCommand::List => {
            let keys = repo.list_keys()?;
            if g.json {
                output::json(&keys)?;
            } else {
                outln!("  {:<8}  {:<12}  {:<16}  created", "id", "user", "host")?;
                for k in keys {
                    outln!(
                        "{} {:<8}  {:<12}  {:<16}  {}",
                        if k.current { '*' } else { ' ' },
                        &k.id[..8],
                        k.username,
                        k.hostname,
                        k.created
                    )?;
                }
            }
        }
        KeyCommand::Add { new_password_file } => {
            let pw = password::new_password(new_password_file.as_deref())?;
            let id = repo.add_key(pw.as_bytes(), KdfParams::default())?;
            say(
                format!("added key {}", &id[..8]),
                serde_json::json!({ "added": id }),
            )?;
        }
        KeyCommand::Remove { id } => {
            let removed = repo.remove_key(id)?;
            say(
                format!("removed key {}", &removed[..8]),
                serde_json::json!({ "removed": removed }),
            )?;
        }
        KeyCommand::Rotate { .. } => unreachable!("handled above"),
        KeyCommand::Passwd { new_password_file } => {
            let pw = password::new_password(new_password_file.as_deref())?;
            let id = repo.change_password(pw.as_bytes(), KdfParams::default())?;
            say(
                format!("password changed; new key {}", &id[..8]),
                serde_json::json!({ "key": id }),
            )?;
        }
    }
    Ok(0)
}

/// `salvor key rotate`: the password is read once, for opening and for the
/// new key file.
fn rotate(g: &GlobalOptions, yes: bool) -> anyhow::Result<i32> {
    let pw = password::get(g, false)?;
    let repo = g.open_with(&pw)?;
    let others: Vec<String> = repo
        .list_keys()?
        .into_iter()
        .filter(|k| !k.current)
        .map(|k| k.id[..8].to_string())
        .collect();
    if !others.is_empty() && !yes {
        return Err(salvor_engine::Error::invalid(format!(
            "rotation removes the {} other key file(s) ({}): they hold only the old key",
            others.len(),
            others.join(", ")
        ))
        .hint("pass --yes, then add their passwords again with `salvor key add`")
        .into());
    }
    let (id, removed) = repo.rotate_key(pw.as_bytes(), KdfParams::default())?;
    let generation = repo.key().generation() + 1;
    if g.json {
        output::json(&serde_json::json!({
            "key": id, "removed": removed, "generation": generation,
        }))?;
    } else if !g.quiet {
        outln!(
            "rotated the master key (generation {generation}); new key {}",
            &id[..8]
        )?;
        if removed.len() > 1 {
            outln!(
                "removed {} other key file(s): add their passwords again with `salvor key add`",
                removed.len() - 1
            )?;
        }
        outln!("backups that were already running finish with the old key")?;
    }
    Ok(0)
}
