//! The real `camqtt` binary as a child process, with its log (stderr) captured: for tests that
//! count log lines or read `bridge/info` counters, which must not be shared with other tests
//! running in the same process.
//!
//! Usage:
//! ```ignore
//! let bridge = common::process::BridgeProcess::start(&broker, "[viewtron]\nheader_timeout = 2.0\n", "camqtt-x");
//! // ... post to bridge.addr ...
//! assert_eq!(bridge.warn_lines("speaking TLS").len(), 1);
//! ```

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Mosquitto;

/// A running `camqtt run`, killed on drop.
pub struct BridgeProcess {
    /// The Viewtron receiver's address (bound to a free loopback port).
    pub addr: SocketAddr,
    /// Scratch directory: configuration and spool.
    pub dir: tempfile::TempDir,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl BridgeProcess {
    /// Start `camqtt run` with `toml` (which must not have a `[spool]` section: the helper adds
    /// one in its own directory) against `broker`, as MQTT client `<client_id>-<broker port>`,
    /// listening on `127.0.0.1:0`. Waits until it says it is running; panics with its log when
    /// it does not within 30 s.
    pub fn start(broker: &Mosquitto, toml: &str, client_id: &str) -> BridgeProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("camqtt.toml");
        let spool = dir.path().join("spool");
        std::fs::write(&config, format!("{toml}\n[spool]\ndir = {:?}\n", spool))
            .expect("write configuration");
        let mut child = Command::new(env!("CARGO_BIN_EXE_camqtt"))
            .env_clear()
            .env("NO_COLOR", "1")
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0", "--log-level", "info"])
            .args(["--mqtt-url", &broker.url()])
            .args(["--client-id", &format!("{client_id}-{}", broker.port)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn camqtt");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut l = sink.lock().unwrap();
                l.push_str(&strip_ansi(&line));
                l.push('\n');
            }
        });
        let end = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let text = log.lock().unwrap().clone();
            if let Some(addr) = text
                .lines()
                .filter(|l| l.contains("camqtt running"))
                .find_map(|l| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix("viewtron="))
                })
                .and_then(|a| a.parse::<SocketAddr>().ok())
            {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("camqtt exited with {status} before running; log:\n{text}");
            }
            assert!(
                Instant::now() < end,
                "camqtt did not start within 30 s; log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        BridgeProcess {
            addr,
            dir,
            child,
            log,
        }
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The log so far (colour codes removed).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Log lines at WARN level that contain `needle`.
    pub fn warn_lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// `true` while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then wait up to `max` for the exit status (`None`: still running).
    pub fn terminate(&mut self, max: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + max;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `line` without terminal colour codes (CSI sequences).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `path` relative to the repository root (`CARGO_MANIFEST_DIR`).
pub fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}
