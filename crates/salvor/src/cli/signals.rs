//! SIGINT and SIGTERM stop a running backup or restore cleanly.
//!
//! The first signal raises the [`Cancel`] flag that every repository opened
//! by this process polls: the operation stops at its next unit of work,
//! records nothing half-done, releases its lock, and the process exits with
//! 130. A second signal exits at once, like an uncaught one (what a user who
//! presses Ctrl-C twice expects). Commands that only read and stop quickly
//! do not install the handlers, so Ctrl-C keeps its usual effect there,
//! including at a password prompt.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use salvor_engine::cancel::Cancel;

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(Arc::default)
}

/// Makes SIGINT and SIGTERM cancel this process's operations.
pub fn install() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        // Order matters: the exit applies only once the flag is already up,
        // so the first signal only raises it.
        let registered = signal_hook::flag::register_conditional_shutdown(sig, 130, flag().clone())
            .and_then(|_| signal_hook::flag::register(sig, flag().clone()));
        if let Err(e) = registered {
            tracing::warn!("cannot handle signal {sig} (it will kill salvor at once): {e}");
        }
    }
}

/// The token repositories opened by this process poll.
pub fn cancel() -> Cancel {
    Cancel::from_flag(flag().clone())
}

/// Whether a handled signal arrived.
pub fn received() -> bool {
    flag().load(Ordering::SeqCst)
}
