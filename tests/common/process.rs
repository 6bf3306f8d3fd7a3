//! The real `camqtt` binary as a child process, with its log (stderr) captured: for tests that
//! count log lines or read `bridge/info` counters, which must not be shared with other tests
//! running in the same process, and for tests that kill or restart the bridge.
//!
//! Usage:
//! ```ignore
//! let bridge = common::process::BridgeProcess::start(&broker, "[viewtron]\nheader_timeout = 2.0\n", "camqtt-x");
//! // ... post to bridge.addr ...
//! assert_eq!(bridge.warn_lines("speaking TLS").len(), 1);
//!
//! // A bridge that is restarted on the same port and spool:
//! let dir = tempfile::tempdir().unwrap();
//! let http = common::free_addr();
//! let spawn = || BridgeProcess::spawn(broker.url(), "camqtt-restart").dir(dir.path()).listen(http);
//! let mut first = spawn().start();
//! first.kill();
//! let second = spawn().start();
//! ```

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Mosquitto;

/// A running `camqtt run`, killed on drop.
pub struct BridgeProcess {
    /// The Viewtron receiver's address.
    pub addr: SocketAddr,
    /// Scratch directory: configuration and spool.
    pub dir: PathBuf,
    /// The temporary directory behind `dir` when the bridge made its own.
    _scratch: Option<tempfile::TempDir>,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

/// How to start a [`BridgeProcess`]: [`BridgeProcess::spawn`], then the settings that differ
/// from the defaults, then [`Spawn::start`].
pub struct Spawn<'a> {
    mqtt_url: String,
    client_id: String,
    dir: Option<&'a Path>,
    listen: SocketAddr,
    toml: &'a str,
    spool: &'a str,
}

impl<'a> Spawn<'a> {
    /// Keep the configuration and `spool/` in `dir` (default: a fresh temporary directory), so
    /// that a bridge started again with the same `dir` reuses the spool.
    pub fn dir(mut self, dir: &'a Path) -> Self {
        self.dir = Some(dir);
        self
    }

    /// The receiver's address (default `127.0.0.1:0`, a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The configuration file's text (default empty). It must not have a `[spool]` section:
    /// the helper writes one, with [`Spawn::spool`]'s lines.
    pub fn toml(mut self, toml: &'a str) -> Self {
        self.toml = toml;
        self
    }

    /// More lines for the `[spool]` section, after its `dir`.
    pub fn spool(mut self, lines: &'a str) -> Self {
        self.spool = lines;
        self
    }

    /// Start `camqtt run` and wait until it says it is running; panics with its log when it
    /// does not within 30 s.
    pub fn start(self) -> BridgeProcess {
        let (dir, scratch) = match self.dir {
            Some(dir) => (dir.to_path_buf(), None),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                (t.path().to_path_buf(), Some(t))
            }
        };
        let config = dir.join("camqtt.toml");
        let spool = dir.join("spool");
        std::fs::write(
            &config,
            format!("{}\n[spool]\ndir = {spool:?}\n{}\n", self.toml, self.spool),
        )
        .expect("write configuration");
        let mut child = Command::new(env!("CARGO_BIN_EXE_camqtt"))
            .env_clear()
            .env("NO_COLOR", "1")
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--listen", &self.listen.to_string(), "--log-level", "info"])
            .args(["--mqtt-url", &self.mqtt_url])
            .args(["--client-id", &self.client_id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn camqtt");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut l = sink.lock().unwrap();
                l.push_str(&strip_ansi(&line));
                l.push('\n');
            }
        });
        let mut bridge = BridgeProcess {
            addr: self.listen,
            dir,
            _scratch: scratch,
            child: Some(child),
            log,
            reader: Some(reader),
        };
        let end = Instant::now() + Duration::from_secs(30);
        bridge.addr = loop {
            let text = bridge.log();
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
            if let Some(Ok(Some(status))) = bridge.child.as_mut().map(Child::try_wait) {
                panic!("camqtt exited with {status} before running; log:\n{text}");
            }
            assert!(
                Instant::now() < end,
                "camqtt did not start within 30 s; log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        bridge
    }
}

impl BridgeProcess {
    /// Start `camqtt run` with `toml` (which must not have a `[spool]` section: the helper adds
    /// one in its own directory) against `broker`, as MQTT client `<client_id>-<broker port>`,
    /// listening on `127.0.0.1:0`. Waits until it says it is running; panics with its log when
    /// it does not within 30 s.
    pub fn start(broker: &Mosquitto, toml: &str, client_id: &str) -> BridgeProcess {
        Self::spawn(broker.url(), format!("{client_id}-{}", broker.port))
            .toml(toml)
            .start()
    }

    /// A bridge against the broker at `mqtt_url`, as MQTT client `client_id` (as is); see
    /// [`Spawn`] for the rest.
    pub fn spawn<'a>(mqtt_url: impl Into<String>, client_id: impl Into<String>) -> Spawn<'a> {
        Spawn {
            mqtt_url: mqtt_url.into(),
            client_id: client_id.into(),
            dir: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            toml: "",
            spool: "",
        }
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The log so far (colour codes removed); all of it once the bridge was killed.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait up to `max` until the log has a line containing `needle`; panics with the log when
    /// it has none by then.
    pub fn wait_for_log(&self, needle: &str, max: Duration) {
        let end = Instant::now() + max;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < end,
                "no {needle:?} in the bridge's log within {max:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// SIGTERM, then wait up to `max` for the exit status (`None`: still running, or already
    /// killed).
    pub fn terminate(&mut self, max: Duration) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let end = Instant::now() + max;
        while Instant::now() < end {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL (no shutdown code runs) and wait for the exit and the whole log; nothing when
    /// it was killed already.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        self.kill();
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
