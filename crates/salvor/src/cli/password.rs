//! Where the password comes from: `SALVOR_PASSWORD`, a file, a command, or a
//! prompt on a terminal. Never from argv, never logged.

use std::io::IsTerminal;

use salvor_engine::{Error, Result};

use super::GlobalOptions;

fn from_file(path: &std::path::Path) -> Result<String> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| Error::io("cannot read password file", path, e))?;
    Ok(s.lines().next().unwrap_or("").to_string())
}

fn from_command(cmd: &str) -> Result<String> {
    let out = crate::source::process::command("sh")
        .arg("-c")
        .arg(cmd)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Error::invalid("cannot run the password command").source(e))?;
    if !out.status.success() {
        return Err(
            Error::invalid(format!("the password command failed ({})", out.status))
                .hint("check --password-command / SALVOR_PASSWORD_COMMAND"),
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
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
    let pw = if let Ok(p) = std::env::var("SALVOR_PASSWORD") {
        p
    } else if let Some(f) = &g.password_file {
        from_file(f)?
    } else if let Some(c) = &g.password_command {
        from_command(c)?
    } else {
        prompt("repository password", confirm)?
    };
    if pw.is_empty() {
        return Err(Error::invalid("the password is empty").hint("set a non-empty password"));
    }
    Ok(pw)
}

/// A new password for `key add` / `key passwd`.
pub fn new_password(file: Option<&std::path::Path>) -> Result<String> {
    if let Ok(p) = std::env::var("SALVOR_NEW_PASSWORD") {
        return Ok(p);
    }
    match file {
        Some(f) => from_file(f),
        None => prompt("new password", true),
    }
}
