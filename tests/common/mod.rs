//! Helpers shared by integration tests: a real Mosquitto on a free loopback port, an MQTT
//! collector that records everything it receives, the bridge in-process ([`bridge`]) or as a
//! child process with its log captured ([`process`]), a camera's HTTP side ([`camera`]), and a
//! headless Chromium for page tests ([`browser`]).
//!
//! Usage:
//! ```ignore
//! mod common;
//! let Some(mut broker) = common::Mosquitto::try_start() else { return }; // skips without mosquitto
//! let col = common::Collector::start(broker.port, "#").await;
//! let m = col.wait_for(|m| m.topic == "camera/bridge/state", Duration::from_secs(5)).await;
//! ```
#![allow(dead_code)]

pub mod bridge;
pub mod browser;
pub mod camera;
pub mod cluster;
pub mod detector;
pub mod logs;
pub mod process;
pub mod stream;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, PublishOptions, QoS};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Where the broker binary is expected.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A Mosquitto broker child process on `127.0.0.1:<port>`, killed on drop. No persistence:
/// a restart loses retained messages, like a real broker without `persistence true`.
pub struct Mosquitto {
    /// The TCP port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    /// True when the broker binary exists.
    pub fn available() -> bool {
        Path::new(MOSQUITTO).exists()
    }

    /// Start on a free port, or print a skip message and return `None` when Mosquitto is not
    /// installed.
    pub fn try_start() -> Option<Mosquitto> {
        if !Self::available() {
            eprintln!("skipping: {MOSQUITTO} not installed");
            return None;
        }
        Some(Self::start())
    }

    /// Start on a free port and wait until it accepts connections. Panics when it cannot.
    pub fn start() -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = Mosquitto {
            port: free_port(),
            dir,
            child: None,
        };
        // Another test may grab the same free port between probe and bind: try a few ports.
        for _ in 0..5 {
            if m.try_spawn(Duration::from_secs(2)) {
                return m;
            }
            m.port = free_port();
        }
        panic!("mosquitto did not start; log:\n{}", m.log());
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// Start on `self.port`; false when it did not listen within `max` (port busy, ...).
    fn try_spawn(&mut self, max: Duration) -> bool {
        let conf = self.dir.path().join("mosquitto.conf");
        let text = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n\
             log_type error\nlog_type warning\nlog_type notice\nmax_queued_messages 10000\n",
            self.port
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open mosquitto log");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        if self.wait_listening(max) {
            return true;
        }
        self.stop();
        false
    }

    /// Start again on the same port; the old socket may linger briefly, so retry for 10 s.
    fn spawn_same_port(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.try_spawn(Duration::from_secs(2)) {
            if Instant::now() > deadline {
                panic!(
                    "mosquitto did not restart on port {}; log:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_listening(&mut self, max: Duration) -> bool {
        let end = Instant::now() + max;
        while Instant::now() < end {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return false; // exited (port busy, bad config)
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kill the broker (like a crash: clients see the connection drop).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freeze the broker (SIGSTOP): connections stay open, nothing is answered, like a broker
    /// that is up but cannot keep up. [`Mosquitto::resume`] continues it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Continue a paused broker (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("broker running").id();
        let ok = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Stop and start again on the same port (retained messages are gone).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_same_port();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free TCP port on 127.0.0.1 (bind port 0, read it back, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A loopback address on a free port ([`free_port`]), for a bridge that must listen on the
/// same address again after a restart.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Topic.
    pub topic: String,
    /// Payload, byte for byte.
    pub payload: Bytes,
    /// Retain flag as delivered: true only for messages replayed from the broker's retained
    /// store when subscribing (MQTT 3.1.1 clears it on live forwarding).
    pub retain: bool,
    /// When the collector received it.
    pub at: Instant,
}

impl Msg {
    /// Payload as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// Payload as JSON (panics on invalid JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", self.topic))
    }
}

/// Subscribes to a filter and records every message; re-subscribes after reconnects.
pub struct Collector {
    msgs: Arc<Mutex<Vec<Msg>>>,
    notify: Arc<Notify>,
    client: AsyncClient,
    task: JoinHandle<()>,
}

impl Collector {
    /// Connect to `127.0.0.1:<port>`, subscribe to `filter` (QoS 1) and wait for the SUBACK.
    pub async fn start(port: u16, filter: &str) -> Collector {
        Collector::start_session(port, filter, false).await
    }

    /// [`Collector::start`] with a clean session: for brokers whose persistent sessions lose
    /// messages under load (Aedes with its Redis persistence, `tests/scale_out.rs`); the
    /// collector's own connection must then stay up for the whole test.
    pub async fn start_clean(port: u16, filter: &str) -> Collector {
        Collector::start_session(port, filter, true).await
    }

    async fn start_session(port: u16, filter: &str, clean: bool) -> Collector {
        // Unique per process and call: a duplicate client id makes the broker kick the other
        // connection.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("collector-{}-{n}", std::process::id());
        let mut opts = MqttOptions::new(id, ("127.0.0.1".to_owned(), port));
        opts.set_max_packet_size(64 << 20, 64 << 20);
        opts.set_keep_alive(5);
        // A persistent session: when the collector's own connection drops (its keep-alive
        // runs out while a test freezes the broker), the broker keeps its QoS 1 messages for
        // it instead of losing them; the collector measures, it must not lose anything.
        opts.set_clean_session(clean);
        let (client, mut el) = AsyncClient::builder(opts).capacity(1000).build();
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let notify = Arc::new(Notify::new());
        let subscribed = Arc::new(Notify::new());
        let (m2, n2, s2, c2, f2) = (
            msgs.clone(),
            notify.clone(),
            subscribed.clone(),
            client.clone(),
            filter.to_owned(),
        );
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c2.try_subscribe(f2.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => s2.notify_one(),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        m2.lock().unwrap().push(Msg {
                            topic,
                            payload: p.payload,
                            retain: p.retain,
                            at: Instant::now(),
                        });
                        n2.notify_waiters();
                    }
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::RequestsDone) => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed.notified())
            .await
            .expect("collector: no SUBACK within 10 s");
        Collector {
            msgs,
            notify,
            client,
            task,
        }
    }

    /// Everything received so far.
    pub fn all(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// Messages on one topic so far.
    pub fn on(&self, topic: &str) -> Vec<Msg> {
        self.all()
            .into_iter()
            .filter(|m| m.topic == topic)
            .collect()
    }

    /// Forget everything received so far.
    pub fn clear(&self) {
        self.msgs.lock().unwrap().clear();
    }

    /// The first message (received so far or later) matching `pred`, or `None` after `timeout`.
    pub async fn wait_for(&self, pred: impl Fn(&Msg) -> bool, timeout: Duration) -> Option<Msg> {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(m) = self.msgs.lock().unwrap().iter().find(|m| pred(m)).cloned() {
                return Some(m);
            }
            if tokio::time::timeout_at(end, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Wait for a message on `topic` with exactly `payload`.
    pub async fn wait_payload(&self, topic: &str, payload: &str, timeout: Duration) -> Option<Msg> {
        self.wait_for(
            |m| m.topic == topic && m.payload.as_ref() == payload.as_bytes(),
            timeout,
        )
        .await
    }

    /// Wait until `n` messages match `pred`; returns them (fewer on timeout).
    pub async fn wait_count(
        &self,
        pred: impl Fn(&Msg) -> bool,
        n: usize,
        timeout: Duration,
    ) -> Vec<Msg> {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got: Vec<Msg> = self
                .msgs
                .lock()
                .unwrap()
                .iter()
                .filter(|m| pred(m))
                .cloned()
                .collect();
            if got.len() >= n || tokio::time::timeout_at(end, notified).await.is_err() {
                return got;
            }
        }
    }

    /// Publish through the collector's own connection (QoS 1).
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>, retain: bool) {
        let opts = PublishOptions::at_least_once().retain(retain);
        self.client
            .publish(topic.to_owned(), payload.into(), opts)
            .await
            .expect("collector publish");
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The retained messages currently held by the broker under `filter`: a fresh client
/// subscribes and collects what arrives within `settle`.
pub async fn retained(port: u16, filter: &str, settle: Duration) -> BTreeMap<String, Bytes> {
    let c = Collector::start(port, filter).await;
    tokio::time::sleep(settle).await;
    c.all()
        .into_iter()
        .filter(|m| m.retain)
        .map(|m| (m.topic, m.payload))
        .collect()
}

/// A Mosquitto with a configuration of the test's own (listeners, password files, TLS),
/// killed on drop.
pub struct ConfiguredMosquitto {
    /// The free ports handed to the configuration, in order.
    pub ports: Vec<u16>,
    /// Scratch directory (configuration, password file, certificates).
    pub dir: tempfile::TempDir,
    child: Child,
}

impl ConfiguredMosquitto {
    /// Start Mosquitto with `conf(ports)` for `n` fresh free ports; retries with new ports
    /// when a port was taken in between. Returns once every port accepts connections.
    pub fn start(
        dir: tempfile::TempDir,
        n: usize,
        conf: impl Fn(&[u16]) -> String,
    ) -> ConfiguredMosquitto {
        for _ in 0..5 {
            let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
            let path = dir.path().join("mosquitto.conf");
            std::fs::write(&path, conf(&ports)).expect("write mosquitto.conf");
            let mut child = Command::new(MOSQUITTO)
                .arg("-c")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn mosquitto");
            let end = Instant::now() + Duration::from_secs(3);
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if ports
                    .iter()
                    .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
                {
                    return ConfiguredMosquitto { ports, dir, child };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("mosquitto with a custom configuration did not start");
    }
}

impl Drop for ConfiguredMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write a Mosquitto password file for one user into `dir` (needs `mosquitto_passwd`).
pub fn password_file(dir: &Path, user: &str, password: &str) -> PathBuf {
    let path = dir.join("passwd");
    let out = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&path)
        .args([user, password])
        .output()
        .expect("mosquitto_passwd runs");
    assert!(out.status.success(), "{out:?}");
    path
}
