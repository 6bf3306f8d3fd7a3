//! The bridge's log lines, captured in memory for assertions.
//!
//! One global subscriber per process: nextest runs every test in its own process; under plain
//! `cargo test` the tests of a binary share it, so look for lines of your own test's devices
//! (or use [`Logs::capture_thread`] when the code under test logs on the test's thread).
//!
//! Usage:
//! ```ignore
//! let logs = common::logs::Logs::capture();
//! // ... run the bridge in-process ...
//! assert_eq!(logs.lines_with("packet limit").len(), 1, "{}", logs.text());
//! ```

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::util::SubscriberInitExt;

/// Captured log output (plain text, no ANSI colours, one line per event).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// The process's captured log (level `camqtt=debug`), installing the subscriber on the
    /// first call.
    pub fn capture() -> Logs {
        static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let _ = logs.subscriber().try_init();
            logs
        })
        .clone()
    }

    /// This thread's log only (level `camqtt=debug`), while the guard lives: also under
    /// `cargo test`, no other test's lines. For code that logs on the test's thread (a
    /// `#[tokio::test]` on its current-thread runtime).
    pub fn capture_thread() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let guard = logs.subscriber().set_default();
        (logs, guard)
    }

    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        let buf = self.0.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("camqtt=debug"))
            .with_ansi(false)
            .with_writer(move || Sink(buf.clone()))
            .finish()
    }

    /// Forget what was logged so far.
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines containing every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }
}
