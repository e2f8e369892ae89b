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
}

/// Runs `salvor key`.
pub fn run(g: &GlobalOptions, a: &KeyArgs) -> anyhow::Result<i32> {
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
