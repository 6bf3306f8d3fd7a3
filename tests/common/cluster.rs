//! A real clustered MQTT broker on loopback: two Aedes nodes (`tests/cluster/node.js`, Node.js)
//! that share one `redis-server`, so they act as one broker: a message published on one node
//! reaches subscribers on the other, retained messages and sessions live in Redis, and a
//! surviving node publishes the wills of a crashed node's clients (after about 1–3.5 s: three
//! missed heartbeats of 500 ms, checked every 2 s).
//!
//! Usage:
//! ```ignore
//! let Some(mut cluster) = common::cluster::Cluster::try_start() else { return }; // skips
//! let col = common::Collector::start(cluster.port(0), "a/#").await;      // node A
//! // ... publish to cluster.url(1) (node B); col sees it
//! cluster.kill(1);    // node B crashes (SIGKILL): its clients see the connection drop
//! cluster.restart(1); // node B again, same port, fresh broker id
//! let status = cluster.stop(1); // clean stop (SIGTERM): wills published at once, exit 0
//! ```
//!
//! Shapes: `port(i) -> u16`, `url(i) -> String` (`mqtt://127.0.0.1:<port>`), `log(i) -> String`,
//! `kill(i)`, `stop(i) -> Option<ExitStatus>`, `restart(i)`, `running(i) -> bool`,
//! `node_id(i) -> String`, `redis_port() -> u16`, `redis_log() -> String`; `i` is `0` (A) or `1`
//! (B). Setup failures panic with the process's log.
//!
//! Needs `node` (>= 20), `redis-server` and `tests/cluster/node_modules` (all three installed by
//! `tests/cluster/install.sh`). Without one of them [`Cluster::try_start`] prints
//! `skipping: <why>` and returns `None`, unless `CAMQTT_REQUIRE_CLUSTER=1` (CI, set by
//! `scripts/test.sh`) makes that a panic. The brokers speak MQTT 3.1 and 3.1.1 only: an MQTT 5
//! CONNECT is answered with CONNACK return code 1 and the connection closed.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// How many broker nodes a [`Cluster`] runs.
pub const NODES: usize = 2;

/// The variable that turns a missing prerequisite from a skip into a failure.
pub const REQUIRE_VAR: &str = "CAMQTT_REQUIRE_CLUSTER";

/// Each node's heartbeat (`--heartbeat-ms`): a node silent for 3 of these counts as dead and
/// its clients' wills are published by a surviving node at its next check (every 4).
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// Each node logs `received <client> <topic> <payload>` for the PUBLISHes whose topic ends with
/// this (`--log-received`), before it acknowledges them: [`Cluster::received`] reads them.
pub const LOG_RECEIVED: &str = "/event";

/// True when `CAMQTT_REQUIRE_CLUSTER=1`: the cluster tests must run, not skip.
pub fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1")
}

/// `tests/cluster`: `node.js`, `package-lock.json`, `node_modules`.
pub fn cluster_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster")
}

/// The first executable `name` on `PATH`, or in `/usr/sbin` and `/usr/bin` (a PATH without them).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Why the cluster cannot run here, or the paths of `node` and `redis-server`.
fn prerequisites() -> Result<(PathBuf, PathBuf), String> {
    let node = which("node").ok_or("node (Node.js >= 20) not installed")?;
    let version = Command::new(&node)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: {e}", node.display()))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        return Err(format!("node {version} is older than 20 (Aedes needs 20)"));
    }
    let redis = which("redis-server").ok_or("redis-server not installed")?;
    let aedes = cluster_dir().join("node_modules/aedes/package.json");
    if !aedes.is_file() {
        return Err(format!(
            "{} missing (run tests/cluster/install.sh)",
            aedes.display()
        ));
    }
    Ok((node, redis))
}

/// One Aedes node: its port, its process while it runs, how often it was started (part of its
/// broker id, which must change at each start).
struct Node {
    port: u16,
    child: Option<Child>,
    starts: u32,
}

/// A `redis-server` and [`NODES`] Aedes nodes on `127.0.0.1`, each on a free port, all killed on
/// drop. Node `0` is "A", node `1` is "B". Logs (stdout and stderr of each process, appended over
/// restarts) and Redis's working directory are in a temporary directory.
///
/// Every method taking a node index `i` panics when `i >= NODES`.
pub struct Cluster {
    node: PathBuf,
    redis_port: u16,
    redis: Option<Child>,
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Start Redis and both nodes and wait until each accepts connections. `None` (after
    /// printing `skipping: <why>`) when `node` (>= 20), `redis-server` or
    /// `tests/cluster/node_modules` is missing; with `CAMQTT_REQUIRE_CLUSTER=1` that panics
    /// instead. Panics when a process does not start (with its log).
    pub fn try_start() -> Option<Cluster> {
        match prerequisites() {
            Ok((node, redis)) => Some(Self::start_with(node, redis)),
            Err(why) if required() => panic!("{REQUIRE_VAR}=1 but {why}"),
            Err(why) => {
                eprintln!("skipping: {why}");
                None
            }
        }
    }

    fn start_with(node: PathBuf, redis: PathBuf) -> Cluster {
        let mut c = Cluster {
            node,
            redis_port: 0,
            redis: None,
            nodes: (0..NODES)
                .map(|_| Node {
                    port: 0,
                    child: None,
                    starts: 0,
                })
                .collect(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        // Another test may take a free port between probe and bind: try a few.
        c.redis = (0..5).find_map(|_| {
            c.redis_port = free_port();
            c.spawn_redis(&redis)
        });
        if c.redis.is_none() {
            panic!("redis-server did not start; log:\n{}", c.redis_log());
        }
        for i in 0..NODES {
            let started = (0..5).any(|_| {
                c.nodes[i].port = free_port();
                c.spawn_node(i, Duration::from_secs(10))
            });
            assert!(
                started,
                "cluster node {i} did not start; log:\n{}",
                c.log(i)
            );
        }
        c
    }

    /// Node `i`'s MQTT port on 127.0.0.1 (kept over [`Cluster::restart`]).
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// `mqtt://127.0.0.1:<port>` of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("mqtt://127.0.0.1:{}", self.port(i))
    }

    /// Node `i`'s broker id as of its latest start: `node<i>.<n>` for its `n`-th start. Its
    /// clients' wills are stored under this id in Redis.
    pub fn node_id(&self, i: usize) -> String {
        format!("node{i}.{}", self.nodes[i].starts)
    }

    /// Node `i`'s log so far (all its starts): `listening on ...`, connects, disconnects,
    /// subscriptions, errors, one line each.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.node_log(i)).unwrap_or_default()
    }

    /// `redis-server`'s log so far.
    pub fn redis_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Redis's port on 127.0.0.1 (for a test that inspects the shared state).
    pub fn redis_port(&self) -> u16 {
        self.redis_port
    }

    /// True while node `i`'s process runs.
    pub fn running(&mut self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Crash node `i` (SIGKILL): its clients see their connections drop, without a clean close.
    /// Its clients' wills stay in Redis for the other node to publish. No-op when not running.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop node `i` cleanly (SIGTERM): it closes its clients' connections (publishing their
    /// wills, as a broker that shuts down does) and exits. Returns its exit status (`0` on a
    /// clean exit), or `None` when it was not running. A node still running after 5 s is killed.
    pub fn stop(&mut self, i: usize) -> Option<ExitStatus> {
        let mut c = self.nodes[i].child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    /// Start node `i` again on the same port with a fresh broker id ([`Cluster::node_id`]),
    /// stopping it first (SIGTERM) when it runs. Returns once it accepts connections; the old
    /// socket may linger briefly, so it retries for 10 s, then panics with the log.
    pub fn restart(&mut self, i: usize) {
        self.stop(i);
        let end = Instant::now() + Duration::from_secs(10);
        while !self.spawn_node(i, Duration::from_secs(5)) {
            assert!(
                Instant::now() < end,
                "cluster node {i} did not restart on port {}; log:\n{}",
                self.port(i),
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn node_log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}.log"))
    }

    fn append(&self, path: &Path) -> std::fs::File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    }

    /// `redis-server` on `self.redis_port`, or `None` when it did not listen within 5 s.
    fn spawn_redis(&self, redis: &Path) -> Option<Child> {
        let log = self.append(&self.dir.path().join("redis.log"));
        let mut child = Command::new(redis)
            .args([
                "--port",
                &self.redis_port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            // No persistence: the state lives and dies with the test.
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            // No limit on a subscriber's pending output (default: cut at 32 MiB, or 8 MiB for a
            // minute): a burst of megabyte payloads to a node that reads slowly must not cut
            // the node off the cluster.
            .args(["--client-output-buffer-limit", "pubsub 0 0 0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server");
        // Redis answers PING with +PONG: another server that took the port in the meantime
        // does not.
        let port = self.redis_port;
        if wait_until(&mut child, Duration::from_secs(5), || redis_pong(port)) {
            Some(child)
        } else {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }

    /// The payloads (as text, at most 2 KiB each) of the PUBLISHes node `i` received on topics
    /// ending with [`LOG_RECEIVED`], in order, over all its starts. A node acknowledges a
    /// message after logging it: what it received before a crash is what it may have
    /// acknowledged.
    pub fn received(&self, i: usize) -> Vec<String> {
        self.log(i)
            .lines()
            .filter_map(|l| l.split_once("] received ").map(|(_, rest)| rest))
            .filter_map(|rest| rest.splitn(3, ' ').nth(2))
            .map(str::to_owned)
            .collect()
    }

    /// Start node `i` on its port; false when it did not listen within `max` (port busy).
    fn spawn_node(&mut self, i: usize, max: Duration) -> bool {
        self.nodes[i].starts += 1;
        let log = self.append(&self.node_log(i));
        let mut child = Command::new(&self.node)
            .arg(cluster_dir().join("node.js"))
            .args(["--port", &self.port(i).to_string()])
            .args(["--redis", &self.redis_port.to_string()])
            .args(["--id", &self.node_id(i)])
            .args(["--heartbeat-ms", &HEARTBEAT.as_millis().to_string()])
            .args(["--log-received", LOG_RECEIVED])
            .current_dir(cluster_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn node");
        // The line node.js prints once it listens, naming this start's id: a port taken by
        // another process in the meantime cannot pass for this node.
        let ready = format!(
            "listening on 127.0.0.1:{} as {}",
            self.port(i),
            self.node_id(i)
        );
        let path = self.node_log(i);
        let up = wait_until(&mut child, max, || {
            std::fs::read_to_string(&path).is_ok_and(|l| l.contains(&ready))
        });
        if up {
            self.nodes[i].child = Some(child);
            true
        } else {
            let _ = child.kill();
            let _ = child.wait();
            false
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..NODES {
            self.kill(i);
        }
        if let Some(mut r) = self.redis.take() {
            let _ = r.kill();
            let _ = r.wait();
        }
    }
}

/// Poll `ready` until it holds; false when `child` exits first or `max` passes.
fn wait_until(child: &mut Child, max: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + max;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// True when a Redis on `127.0.0.1:<port>` answers `PING`.
fn redis_pong(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
