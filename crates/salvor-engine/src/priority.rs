//! How a backup shares the CPU with the services it protects.
//!
//! A backup runs beside a live database, often on a host with few cores, and
//! streams from that database's own dump tool. Two rules keep it from slowing
//! the service (and, through it, the dump) down:
//! - the whole backup runs under `SCHED_BATCH`, Linux's policy for
//!   non-interactive CPU work: a waking backup thread no longer preempts the
//!   server process that is producing the dump, it waits for the next tick.
//!   Measured on the postgres bench (2 cores, six interleaved A/B runs of
//!   14–30 turns): the overhead over `pg_dump` alone fell from +7.3–11.5% to
//!   +2.7–8.2% (4–7 points in five runs, 1 in one), and salvor's own CPU by
//!   4–10%, from fewer context switches;
//! - the threads that compress frames run a few nice levels below the rest:
//!   frames can wait in their bounded queue while the dump tool gets a core.
//!
//! Both are best effort: where the kernel refuses, a backup runs as before.

/// How far below the process the compression threads run.
const PACK_THREAD_NICENESS: i32 = 5;

/// Puts the calling thread under `SCHED_BATCH`, keeping its nice value.
/// Threads it starts and processes it spawns afterwards (dump tools) inherit
/// the policy, so call it before the backup starts any.
///
/// Returns false where the policy cannot be set (not Linux, or refused).
pub fn run_as_batch() -> bool {
    #[cfg(target_os = "linux")]
    {
        set_batch_policy()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Written by hand: rustix and nix have no `sched_setscheduler`, and the
/// `thread-priority` crate resets the nice value whenever it sets a policy
/// (a backup started with `nice -n 10` would lose it).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_batch_policy() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread, and `param` is a valid
    // `sched_param` that lives across the call. SCHED_BATCH with priority 0
    // needs no privilege and leaves the nice value as it is.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) == 0 }
}

/// Lowers the calling thread's priority by [`PACK_THREAD_NICENESS`] from
/// where it is (never raising it, whatever the process was started with).
pub(crate) fn lower_pack_thread() {
    // Best effort: on Linux, PRIO_PROCESS with pid 0 is the calling thread.
    let now = rustix::process::getpriority_process(None).unwrap_or(0);
    let _ = rustix::process::setpriority_process(None, (now + PACK_THREAD_NICENESS).min(19));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn batch_policy_is_set_and_inherited_by_threads_and_children() {
        // A thread of its own, so the policy does not leak into other tests.
        std::thread::spawn(|| {
            assert!(run_as_batch(), "SCHED_BATCH needs no privilege");
            let policy = |stat: &str| -> u32 {
                // Field 41 of /proc/.../stat is the policy; the name (2) may
                // hold spaces but ends at the last ')'.
                let rest = &stat[stat.rfind(')').unwrap() + 2..];
                rest.split(' ').nth(41 - 3).unwrap().parse().unwrap()
            };
            let own = || std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            assert_eq!(policy(&own()), libc::SCHED_BATCH as u32);
            let thread = std::thread::spawn(own).join().unwrap();
            assert_eq!(policy(&thread), libc::SCHED_BATCH as u32, "{thread}");
            let child = std::process::Command::new("sh")
                .args(["-c", "cat /proc/$$/stat"])
                .output()
                .unwrap();
            let child = String::from_utf8(child.stdout).unwrap();
            assert_eq!(policy(&child), libc::SCHED_BATCH as u32, "{child}");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pack_threads_go_lower_never_higher() {
        std::thread::spawn(|| {
            let before = rustix::process::getpriority_process(None).unwrap();
            lower_pack_thread();
            let after = rustix::process::getpriority_process(None).unwrap();
            assert_eq!(after, (before + PACK_THREAD_NICENESS).min(19));
        })
        .join()
        .unwrap();
    }
}
