//! Where the password comes from. An explicit `--password-file` or
//! `--password-command` wins; otherwise exactly one of `SALVOR_PASSWORD`,
//! `SALVOR_PASSWORD_FILE` and `SALVOR_PASSWORD_COMMAND` may be set (two are
//! an error rather than a silent choice); otherwise a prompt on a terminal.
//! Never from argv, never logged.

use std::io::IsTerminal;
use std::process::Stdio;

use salvor_engine::{Error, Result};

use super::GlobalOptions;
use crate::input;

/// Which password options were given on the command line (not through their
/// environment variables), as clap reports it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Explicit {
    /// `--password-file` was typed.
    pub file: bool,
    /// `--password-command` was typed.
    pub command: bool,
}

fn from_file(path: &std::path::Path) -> Result<String> {
    input::secret_file(path, "password file")
}

fn from_command(cmd: &str) -> Result<String> {
    input::secret_command(cmd, "password command", Stdio::inherit())
        .map_err(|e| e.hint("check --password-command / SALVOR_PASSWORD_COMMAND"))
}

/// Reads a password from the terminal; `confirm` asks twice.
pub fn prompt(what: &str, confirm: bool) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(
            Error::invalid(format!("no {what} given and no terminal to ask on"))
                .hint("set SALVOR_PASSWORD, SALVOR_PASSWORD_FILE or SALVOR_PASSWORD_COMMAND"),
        );
    }
    let read = |p: &str| {
        rpassword::prompt_password(p)
            .map_err(|e| Error::invalid("cannot read the password").source(e))
    };
    let first = read(&format!("enter {what}: "))?;
    if confirm && read(&format!("enter {what} again: "))? != first {
        return Err(Error::invalid("the passwords do not match").hint("run the command again"));
    }
    Ok(first)
}

/// The repository password; `confirm` (init) asks twice when prompting.
pub fn get(g: &GlobalOptions, confirm: bool) -> Result<String> {
    let x = g.explicit;
    let pw = match (&g.password_file, &g.password_command) {
        (Some(_), Some(_)) if x.file && x.command => {
            return Err(
                Error::invalid("--password-file and --password-command are both given")
                    .hint("pass only one of them"),
            );
        }
        (Some(f), _) if x.file => from_file(f)?,
        (_, Some(c)) if x.command => from_command(c)?,
        (file, command) => {
            let env = std::env::var("SALVOR_PASSWORD").ok();
            let set: Vec<&str> = [
                env.as_ref().map(|_| "SALVOR_PASSWORD"),
                file.as_ref().map(|_| "SALVOR_PASSWORD_FILE"),
                command.as_ref().map(|_| "SALVOR_PASSWORD_COMMAND"),
            ]
            .into_iter()
            .flatten()
            .collect();
            if set.len() > 1 {
                return Err(Error::invalid(format!(
                    "{} are all set: salvor will not guess which password to use",
                    set.join(" and ")
                ))
                .hint("unset all but one, or pass --password-file / --password-command"));
            }
            match (env, file, command) {
                (Some(p), _, _) => p,
                (_, Some(f), _) => from_file(f)?,
                (_, _, Some(c)) => from_command(c)?,
                _ => prompt("repository password", confirm)?,
            }
        }
    };
    if pw.is_empty() {
        return Err(Error::invalid("the password is empty").hint("set a non-empty password"));
    }
    Ok(pw)
}

/// A new password for `key add` / `key passwd`: `--new-password-file` wins
/// over `SALVOR_NEW_PASSWORD`, then a prompt.
pub fn new_password(file: Option<&std::path::Path>) -> Result<String> {
    match file {
        Some(f) => input::secret_file(f, "new password file"),
        None => match std::env::var("SALVOR_NEW_PASSWORD") {
            Ok(p) => Ok(p),
            Err(_) => prompt("new password", true),
        },
    }
}
