//! Publishes the broker will never take, kept on disk for inspection.
//!
//! A publish the broker refused (MQTT 5 PUBACK reason code ≥ 0x80, e.g. `NotAuthorized` from an
//! ACL) or one that closed the connection twice in a row is set aside instead of blocking the
//! queue behind it (DESIGN §5). Each one is written to `<state dir>/dead-letter/` as two files
//! with a common stem `<unix ms>-<n>`:
//! * `<stem>.json` — `{"topic", "retain", "reason", "detail", "bytes", "record", "time"}`
//!   (`record` is the spool record number, when the publish came from the spool);
//! * `<stem>.payload` — the payload, byte for byte (a JPEG can be opened as it is).
//!
//! The folder is bounded: at most [`MAX_LETTERS`] letters and [`MAX_BYTES`] of payload; the
//! oldest go first. Writes happen off the async runtime; a failed write is logged once and
//! counted in `mqtt_errors`, it never stops delivery.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::json;
use tracing::warn;

use crate::telemetry::Telemetry;

/// Most letters kept.
pub const MAX_LETTERS: usize = 200;
/// Most payload bytes kept.
pub const MAX_BYTES: u64 = 256 * 1024 * 1024;

/// One publish set aside.
#[derive(Debug, Clone)]
pub struct Letter {
    /// Topic it was meant for.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// Retain flag.
    pub retain: bool,
    /// Short machine-readable reason (`refused-by-broker`, `kills-connection`).
    pub reason: &'static str,
    /// Human-readable detail (the broker's reason code, the sizes involved).
    pub detail: String,
    /// Spool record number, when there was one.
    pub record: Option<u64>,
}

/// The dead-letter folder (or none, when the bridge has no state directory).
#[derive(Debug, Clone)]
pub struct DeadLetters {
    dir: Option<PathBuf>,
    telemetry: Telemetry,
    seq: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
}

impl DeadLetters {
    /// Letters go to `<state_dir>/dead-letter`; `None` keeps none (they are still logged and
    /// reported on `bridge/unparsed`).
    pub fn new(state_dir: Option<&Path>, telemetry: Telemetry) -> DeadLetters {
        DeadLetters {
            dir: state_dir.map(|d| d.join("dead-letter")),
            telemetry,
            seq: Arc::new(AtomicU64::new(0)),
            failing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The folder, when letters are kept.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Write `letter` in the background.
    pub fn keep(&self, letter: Letter) {
        let Some(dir) = self.dir.clone() else { return };
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let failing = self.failing.clone();
        let telemetry = self.telemetry.clone();
        tokio::task::spawn_blocking(move || match write(&dir, n, &letter) {
            Ok(()) => failing.store(false, Ordering::Relaxed),
            Err(e) => {
                if !failing.swap(true, Ordering::Relaxed) {
                    telemetry.mqtt_errors.inc();
                    warn!(dir = %dir.display(), error = %e, "cannot keep a dead letter on disk");
                }
            }
        });
    }
}

fn write(dir: &Path, n: u64, l: &Letter) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let stem = format!("{ms:013}-{n:06}");
    let meta = json!({
        "topic": l.topic,
        "retain": l.retain,
        "reason": l.reason,
        "detail": l.detail,
        "bytes": l.payload.len(),
        "record": l.record,
        "time": crate::sinks::mqtt::payload::rfc3339(SystemTime::now()),
    });
    std::fs::write(dir.join(format!("{stem}.payload")), &l.payload)?;
    std::fs::write(
        dir.join(format!("{stem}.json")),
        serde_json::to_vec_pretty(&meta).unwrap_or_default(),
    )?;
    prune(dir)
}

/// Delete the oldest letters beyond the bounds.
fn prune(dir: &Path) -> std::io::Result<()> {
    let mut payloads: Vec<(String, u64)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".payload")?.to_owned();
            Some((stem, e.metadata().ok()?.len()))
        })
        .collect();
    payloads.sort();
    let mut total: u64 = payloads.iter().map(|(_, n)| n).sum();
    let mut count = payloads.len();
    for (stem, size) in payloads {
        if count <= MAX_LETTERS && total <= MAX_BYTES {
            break;
        }
        let _ = std::fs::remove_file(dir.join(format!("{stem}.payload")));
        let _ = std::fs::remove_file(dir.join(format!("{stem}.json")));
        count -= 1;
        total -= size;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(n: usize) -> Letter {
        Letter {
            topic: "camera/a/intrusion/image".into(),
            payload: Bytes::from(vec![0xFF; n]),
            retain: true,
            reason: "kills-connection",
            detail: "closed the connection twice".into(),
            record: Some(7),
        }
    }

    #[test]
    fn letters_are_written_and_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dead-letter");
        for i in 0..(MAX_LETTERS as u64 + 5) {
            write(&dir, i, &letter(10)).unwrap();
        }
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names.iter().filter(|n| n.ends_with(".payload")).count(),
            MAX_LETTERS
        );
        assert_eq!(
            names.iter().filter(|n| n.ends_with(".json")).count(),
            MAX_LETTERS
        );
        // The oldest went first.
        assert!(!names.iter().any(|n| n.ends_with("-000000.payload")));
        assert!(
            names
                .iter()
                .any(|n| n.contains(&format!("-{:06}.", MAX_LETTERS + 4)))
        );
        let json = names.iter().find(|n| n.ends_with(".json")).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(json)).unwrap()).unwrap();
        assert_eq!(v["topic"], "camera/a/intrusion/image");
        assert_eq!(v["bytes"], 10);
        assert_eq!(v["record"], 7);
    }
}
