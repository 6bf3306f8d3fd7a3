//! The bridge's log lines, captured in memory for assertions.
//!
//! One global subscriber per process: nextest runs every test in its own process; under plain
//! `cargo test` the tests of a binary share it, so look for lines of your own test's devices.
//!
//! Usage:
//! ```ignore
//! let logs = common::logs::Logs::capture();
//! // ... run the bridge in-process ...
//! assert_eq!(logs.lines_with("packet limit").len(), 1, "{}", logs.text());
//! ```

use std::io::Write;
use std::sync::{Arc, Mutex};

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
            let buf = logs.0.clone();
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("camqtt=debug"))
                .with_ansi(false)
                .with_writer(move || Sink(buf.clone()))
                .try_init();
            logs
        })
        .clone()
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
