//! Reading what the user points salvor at: configuration, exclude lists,
//! password and secret files, and the output of password and secret
//! commands. Every read is capped, so `--config /dev/zero` or a command
//! that never stops writing is a one-line error, not a machine out of memory.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;

use salvor_engine::{Error, ErrorKind, Result};

/// Largest configuration file read.
pub const CONFIG_MAX: u64 = 16 << 20;
/// Largest exclude file read.
pub const EXCLUDE_FILE_MAX: u64 = 64 << 20;
/// Longest first line of a password or secret file, or of a command's output.
pub const SECRET_MAX: u64 = 64 << 10;

fn size(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{} KiB", n >> 10)
    }
}

/// The whole of a text file of at most `max` bytes.
///
/// # Errors
/// Unreadable, larger than `max`, or not UTF-8; `what` names it.
pub fn read_text(path: &Path, max: u64, what: &str) -> Result<String> {
    let f = std::fs::File::open(path)
        .map_err(|e| Error::io(&format!("cannot read {what}"), path, e))?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(&format!("cannot read {what}"), path, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::invalid(format!(
            "{what} {} is larger than {}",
            path.display(),
            size(max)
        ))
        .hint(format!("point salvor at the real {what}")));
    }
    String::from_utf8(bytes).map_err(|e| {
        Error::invalid(format!(
            "{what} {} is not UTF-8 text (byte {} is not)",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// The first line of `reader` (without its line end), reading at most
/// [`SECRET_MAX`] bytes; `None` when no line ends within them.
fn first_line(reader: &mut impl Read) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    BufReader::new(reader.take(SECRET_MAX + 1)).read_until(b'\n', &mut line)?;
    if line.len() as u64 > SECRET_MAX {
        return Ok(None);
    }
    if line.ends_with(b"\n") {
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

fn too_long(what: &str) -> Error {
    Error::invalid(format!(
        "the {what} has no line end in its first {}",
        size(SECRET_MAX)
    ))
    .hint("put the secret on the first line")
}

/// The first line of a password or secret file.
///
/// # Errors
/// Unreadable, or no line end within [`SECRET_MAX`] bytes.
pub fn secret_file(path: &Path, what: &str) -> Result<String> {
    let f = std::fs::File::open(path)
        .map_err(|e| Error::io(&format!("cannot read {what}"), path, e))?;
    first_line(&mut { f })
        .map_err(|e| Error::io(&format!("cannot read {what}"), path, e))?
        .ok_or_else(|| too_long(&format!("{what} {}", path.display())))
}

/// The first line of what `sh -c script` prints; `stderr` says where the
/// command's own messages go. The command is stopped once the line is read.
///
/// # Errors
/// The command cannot start, fails, or prints no line within [`SECRET_MAX`].
pub fn secret_command(script: &str, what: &str, stderr: Stdio) -> Result<String> {
    let mut child = crate::source::process::command("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| Error::invalid(format!("cannot run the {what}")).source(e))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut line = first_line(&mut stdout);
    // The rest is read (and dropped) so a command that prints more lines
    // is not killed by a closed pipe; one that never stops is stopped.
    if let Ok(Some(_)) = line {
        let mut rest = (&mut stdout).take(SECRET_MAX);
        match std::io::copy(&mut rest, &mut std::io::sink()) {
            Ok(n) if n >= SECRET_MAX => line = Ok(None),
            Ok(_) => {}
            Err(e) => line = Err(e),
        }
    }
    drop(stdout);
    // A command that keeps writing past its line is not waited for; one
    // that printed its line is given a while to exit with its status.
    let status = match &line {
        Ok(None) => {
            let _ = child.kill();
            None
        }
        _ => wait_up_to(&mut child, COMMAND_TIMEOUT),
    };
    let _ = child.kill();
    let _ = child.wait();
    match (line, status) {
        (Ok(Some(l)), Some(s)) if s.success() => Ok(l),
        (Ok(None), _) => Err(too_long(&format!("output of the {what}"))),
        (Ok(Some(_)), Some(s)) => Err(Error::invalid(format!("the {what} failed ({s})"))),
        (Ok(Some(_)), None) => Err(Error::invalid(format!(
            "the {what} did not finish within {} s",
            COMMAND_TIMEOUT.as_secs()
        ))),
        (Err(e), _) => Err(Error::new(
            ErrorKind::Io,
            format!("cannot read the output of the {what}"),
        )
        .source(e)),
    }
}

/// How long a password or secret command may take to exit after its line.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The child's exit status, or `None` when it is still running after `limit`.
fn wait_up_to(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if start.elapsed() < limit => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_capped() {
        let d = tempfile::tempdir().unwrap();
        let big = d.path().join("big");
        std::fs::write(&big, vec![b'x'; 2000]).unwrap();
        let e = read_text(&big, 1000, "configuration")
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than"), "{e}");
        assert_eq!(read_text(&big, 2000, "c").unwrap().len(), 2000);
        std::fs::write(&big, [0xff, 0xfe]).unwrap();
        assert!(
            read_text(&big, 10, "c")
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        let e = secret_file(Path::new("/dev/zero"), "password file")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no line end"), "{e}");
        std::fs::write(&big, b"pw\r\nsecond\n").unwrap();
        assert_eq!(secret_file(&big, "f").unwrap(), "pw");
        // A command that keeps printing after its line is stopped, and fails.
        let e = secret_command("yes", "password command", Stdio::null())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no line end"), "{e}");
        let e = secret_command("head -c 200000 /dev/zero", "c", Stdio::null())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no line end"), "{e}");
        assert_eq!(
            secret_command("echo s; echo t", "c", Stdio::null()).unwrap(),
            "s"
        );
        assert!(secret_command("echo s; exit 3", "c", Stdio::null()).is_err());
    }
}
