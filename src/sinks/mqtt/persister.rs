//! Keeps the sink's device registry on disk: loaded at start, written (atomically, off the
//! runtime thread) at most once per [`persist::SAVE_DEBOUNCE`] and on shutdown. The file
//! format is [`persist`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use super::persist;
use super::state::SinkState;
use crate::telemetry::Telemetry;

/// Writes the device registry file, debounced, on a blocking thread.
pub(super) struct Persister {
    path: PathBuf,
    telemetry: Telemetry,
    last: Option<Instant>,
    writing: Option<tokio::task::JoinHandle<()>>,
    /// A write failed and was logged; later failures go to debug until one succeeds.
    failing: Arc<AtomicBool>,
}

impl Persister {
    /// Load the registry file of `dir` into `st` (a missing or corrupt file is logged and
    /// ignored) and return the writer for it.
    pub(super) fn load(
        dir: &Path,
        st: &mut SinkState,
        forget_after: Duration,
        telemetry: Telemetry,
    ) -> Persister {
        let path = persist::path_in(dir);
        load_registry(st, &path, forget_after);
        Persister {
            path,
            telemetry,
            last: None,
            writing: None,
            failing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// When the next write is due (`None`: nothing to write).
    pub(super) fn due(&self, st: &SinkState) -> Option<Instant> {
        st.is_dirty().then(|| {
            self.last
                .map_or_else(Instant::now, |l| l + persist::SAVE_DEBOUNCE)
        })
    }

    /// Start a write when the registry changed and the debounce time has passed.
    pub(super) fn poll(&mut self, st: &mut SinkState, now: Instant) {
        if !st.is_dirty() || self.last.is_some_and(|l| now < l + persist::SAVE_DEBOUNCE) {
            return;
        }
        self.last = Some(now);
        if self.writing.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let bytes = persist::encode(&st.snapshot(SystemTime::now()));
        let path = self.path.clone();
        let (failing, telemetry) = (self.failing.clone(), self.telemetry.clone());
        self.writing = Some(tokio::task::spawn_blocking(move || {
            write_logged(&path, &bytes, &failing, &telemetry);
        }));
    }

    /// Shutdown: wait for a running write, then write what is still unsaved.
    pub(super) async fn finish(&mut self, st: &mut SinkState) {
        if let Some(h) = self.writing.take() {
            let _ = h.await;
        }
        if st.is_dirty() {
            let bytes = persist::encode(&st.snapshot(SystemTime::now()));
            let path = self.path.clone();
            let (failing, telemetry) = (self.failing.clone(), self.telemetry.clone());
            let _ = tokio::task::spawn_blocking(move || {
                write_logged(&path, &bytes, &failing, &telemetry)
            })
            .await;
        }
    }
}

fn write_logged(path: &Path, bytes: &[u8], failing: &AtomicBool, telemetry: &Telemetry) {
    match persist::write_atomic(path, bytes) {
        Ok(()) => {
            if failing.swap(false, Ordering::Relaxed) {
                info!(path = %path.display(), "device registry written again");
            }
        }
        Err(e) => {
            if failing.swap(true, Ordering::Relaxed) {
                debug!(error = %e, "device registry write failed");
            } else {
                telemetry.mqtt_errors.inc();
                warn!(error = %e, "device registry write failed; known devices may be forgotten on restart");
            }
        }
    }
}

/// Load the registry file into the state machine; a missing or corrupt file is logged and
/// ignored.
fn load_registry(st: &mut SinkState, path: &Path, forget_after: Duration) {
    let bytes = match persist::read(path) {
        Ok(Some(b)) => b,
        Ok(None) => {
            debug!(path = %path.display(), "no device registry yet");
            return;
        }
        Err(e) => {
            warn!(error = %e, "device registry unreadable, starting with no known devices");
            return;
        }
    };
    match persist::decode(&bytes, SystemTime::now(), forget_after) {
        Ok(loaded) => {
            info!(
                path = %path.display(),
                devices = loaded.devices.len(),
                forgotten = loaded.forgotten.len(),
                "device registry loaded"
            );
            for id in &loaded.forgotten {
                info!(device = %id, "device silent for forget_after, forgotten; its discovery will be cleared");
            }
            st.restore(loaded.devices);
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "device registry ignored, starting with no known devices");
        }
    }
}
