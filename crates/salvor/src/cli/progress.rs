//! Progress bars (indicatif) fed from the engine's atomic counters. Shown only
//! on a terminal; hidden for `--json`, `--quiet` and pipes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar refreshed by a background thread until dropped.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    bar: ProgressBar,
}

/// Returns (position, total, message) each tick.
pub type Poll = Box<dyn Fn() -> (u64, u64, String) + Send>;

impl Ticker {
    /// Starts a byte-based bar when `enabled`.
    pub fn start(enabled: bool, poll: Poll) -> Self {
        let bar = if enabled {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}")
                .expect("valid template"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let thread = enabled.then(|| {
            let (bar, stop) = (bar.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (pos, total, msg) = poll();
                    bar.set_length(total.max(pos));
                    bar.set_position(pos);
                    bar.set_message(msg);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        });
        Self { stop, thread, bar }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}
