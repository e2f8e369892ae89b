//! Child processes as streams: dump tools write to stdout, restore tools read
//! stdin. stderr is captured (tail kept) for the error message, and the exit
//! status decides success: a dump whose tool fails at the very end is an error
//! at the end of the stream, so the backup fails and no snapshot is written.

use std::io::{self, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use salvor_engine::cancel::Cancel;
use salvor_engine::{Error, ErrorKind, Result};

/// salvor's own secrets, removed from every child's environment: a dump
/// tool or a user's command has no business seeing the repository password.
const OWN_SECRETS: [&str; 2] = ["SALVOR_PASSWORD", "SALVOR_NEW_PASSWORD"];

/// A `Command` for `program` that does not inherit salvor's own secrets.
/// Every child process salvor starts is built here.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    for v in OWN_SECRETS {
        c.env_remove(v);
    }
    c
}

/// The first executable file called `name` in a PATH directory.
pub(super) fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// How much of a tool's stderr is kept for messages.
const STDERR_TAIL: usize = 4096;

/// The error for a program that cannot start (missing, or not executable).
pub(super) fn spawn_error(what: &str, program: &str, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::new(
            ErrorKind::NotFound,
            format!("{program} is not installed (needed for {what})"),
        )
        .hint(format!("install {program} or put it on PATH"))
    } else {
        Error::new(ErrorKind::Io, format!("cannot start {program} for {what}")).source(e)
    }
}

/// Collects the tail of a child's stderr on a thread (for error messages).
pub(super) fn capture_stderr(child: &mut Child) -> (Arc<Mutex<Vec<u8>>>, Option<JoinHandle<()>>) {
    capture_stderr_up_to(child, STDERR_TAIL)
}

/// [`capture_stderr`] keeping the last `keep` bytes.
fn capture_stderr_up_to(
    child: &mut Child,
    keep: usize,
) -> (Arc<Mutex<Vec<u8>>>, Option<JoinHandle<()>>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let handle = child.stderr.take().map(|mut err| {
        let buf = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let mut b = buf.lock().unwrap();
                b.extend_from_slice(&chunk[..n]);
                if b.len() > 2 * keep {
                    let cut = b.len() - keep;
                    b.drain(..cut);
                }
            }
        })
    });
    (buf, handle)
}

fn tail(buf: &Mutex<Vec<u8>>) -> String {
    let b = buf.lock().unwrap();
    let s = String::from_utf8_lossy(&b[b.len().saturating_sub(STDERR_TAIL)..]).into_owned();
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A running command whose stdout is read as a stream.
pub struct ChildReader {
    child: Child,
    stdout: ChildStdout,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
    what: String,
    finished: bool,
    /// Set (under its lock) before the child is reaped, so a watcher
    /// ([`ChildReader::stop_on`]) never signals a pid that was reused.
    reaped: Arc<Mutex<bool>>,
}

/// Starts `cmd` with stdout and stderr piped and the given stdin; a missing
/// program gets the "is not installed" error.
///
/// # Errors
/// The program is missing or cannot start.
pub(super) fn spawn_piped(cmd: &mut Command, what: &str, stdin: Stdio) -> Result<Child> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(what, &program, e))
}

/// Starts `cmd` with stdout piped for reading.
///
/// # Errors
/// The program is missing or cannot start.
pub fn spawn_reader(mut cmd: Command, what: &str) -> Result<ChildReader> {
    let mut child = spawn_piped(&mut cmd, what, Stdio::null())?;
    let stdout = child.stdout.take().expect("piped stdout");
    widen_pipe(&stdout);
    let (stderr, stderr_thread) = capture_stderr(&mut child);
    Ok(ChildReader {
        child,
        stdout,
        stderr,
        stderr_thread,
        what: what.to_string(),
        finished: false,
        reaped: Arc::default(),
    })
}

/// Grows a dump tool's stdout pipe from 64 KiB to 1 MiB (the unprivileged
/// maximum), so the tool rarely blocks and we wake once per large read instead
/// of once per 4 KiB `fwrite`. Failure only costs speed, so it is ignored.
fn widen_pipe(pipe: &std::process::ChildStdout) {
    let _ = rustix::pipe::fcntl_setpipe_size(pipe, 1 << 20);
}

/// How often a watcher looks at its cancellation token.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl ChildReader {
    /// Sends the tool SIGTERM once `cancel` is raised: its output ends, and
    /// the backup reading it stops even when the tool was sending nothing
    /// (waiting on a lock, or on a slow server).
    #[must_use]
    pub fn stop_on(self, cancel: &Cancel) -> Self {
        let (cancel, reaped) = (cancel.clone(), self.reaped.clone());
        let pid = rustix::process::Pid::from_raw(self.child.id().cast_signed());
        std::thread::spawn(move || {
            loop {
                {
                    let reaped = reaped.lock().unwrap();
                    if *reaped {
                        return;
                    }
                    if cancel.is_cancelled() {
                        if let Some(pid) = pid {
                            let _ =
                                rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                        }
                        return;
                    }
                }
                std::thread::sleep(WATCH_EVERY);
            }
        });
        self
    }

    fn finish(&mut self) -> io::Result<()> {
        self.finished = true;
        *self.reaped.lock().unwrap() = true;
        let status = self.child.wait()?;
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        if status.success() {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "{} failed ({status}): {}",
            self.what,
            tail(&self.stderr)
        )))
    }
}

impl Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.finished {
            return Ok(0);
        }
        let mut n = self.stdout.read(buf)?;
        if n == 0 {
            self.finish()?;
        } else if n < SMALL_READ && buf.len() >= 4 * SMALL_READ {
            // We are ahead of the tool, which writes in 4 KiB `fwrite`s:
            // reading each one as it comes costs two context switches per
            // 4 KiB (tens of thousands per GB, on both sides). A short nap
            // lets the 1 MiB pipe fill while neither side waits on the other.
            std::thread::sleep(COALESCE_NAP);
            match self.stdout.read(&mut buf[n..]) {
                Ok(0) => self.finish()?,
                Ok(m) => n += m,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

/// A read shorter than this means the tool is slower than we are.
const SMALL_READ: usize = 64 * 1024;
/// How long to let a slow tool's output gather (~300 KB of a fast `pg_dump`).
const COALESCE_NAP: std::time::Duration = std::time::Duration::from_millis(1);

impl Drop for ChildReader {
    fn drop(&mut self) {
        if !self.finished {
            *self.reaped.lock().unwrap() = true;
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `cmd`, feeding its stdin from `feed`; returns its stdout.
///
/// # Errors
/// The program is missing, `feed` fails, or the command exits non-zero
/// (its stderr tail is in the message).
pub fn run_with_input(
    cmd: Command,
    what: &str,
    feed: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<Vec<u8>> {
    run_with_input_keeping_stderr(cmd, what, feed, STDERR_TAIL).map(|(out, _)| out)
}

/// [`run_with_input`] that also returns the last `keep` bytes of stderr,
/// for tools that report per-statement errors and still exit 0.
///
/// # Errors
/// As [`run_with_input`].
pub fn run_with_input_keeping_stderr(
    mut cmd: Command,
    what: &str,
    feed: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    keep: usize,
) -> Result<(Vec<u8>, String)> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = spawn_piped(&mut cmd, what, Stdio::piped())?;
    let (stderr, stderr_thread) = capture_stderr_up_to(&mut child, keep);
    let mut stdout = child.stdout.take().expect("piped stdout");
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let mut stdin =
        std::io::BufWriter::with_capacity(1 << 20, child.stdin.take().expect("piped stdin"));
    let fed = feed(&mut stdin).and_then(|()| {
        stdin
            .flush()
            .map_err(|e| Error::io("cannot write to", &program, e))
    });
    drop(stdin);
    let status = child
        .wait()
        .map_err(|e| Error::io("cannot wait for", &program, e))?;
    if let Some(t) = stderr_thread {
        let _ = t.join();
    }
    let out = out_thread.join().unwrap_or_default();
    if !status.success() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("{what} failed ({status}): {}", tail(&stderr)),
        ));
    }
    fed?;
    let err = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
    Ok((out, err))
}

/// Runs a short command and returns its stdout as text.
///
/// # Errors
/// As [`run_with_input`].
pub fn run(cmd: Command, what: &str) -> Result<String> {
    let out = run_with_input(cmd, what, &mut |_| Ok(()))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn reader_streams_output_and_fails_on_exit_status() {
        let mut r = spawn_reader(sh("printf hello"), "test").unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        let mut r = spawn_reader(sh("printf partial; echo boom >&2; exit 3"), "the dump").unwrap();
        let err = r.read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(
            err.contains("the dump failed") && err.contains("boom"),
            "{err}"
        );
        let err = spawn_reader(Command::new("no-such-tool-xyz"), "x")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not installed"), "{err}");
    }

    #[test]
    fn input_is_fed_and_output_returned() {
        let out = run_with_input(sh("tr a-z A-Z"), "t", &mut |w| {
            w.write_all(b"abc").map_err(|e| Error::io("w", "x", e))
        })
        .unwrap();
        assert_eq!(out, b"ABC");
        assert!(run(sh("exit 1"), "t").is_err());
    }
}
