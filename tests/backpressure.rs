//! A 200 to a camera means the event will be delivered, also under load (issue 7, fault 2;
//! DESIGN §5): while the broker is connected but slower than the cameras, the bridge holds its
//! replies instead of dropping events, with the spool off (the MQTT outbox) and on (the spool's
//! size bound is for outages, not for load).
//!
//! The broker is made slow for real: Mosquitto is frozen with SIGSTOP for a few seconds while
//! cameras keep posting over keep-alive connections, then continued.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bridge::Bridge;
use common::camera::{self, REPLY};
use common::{Collector, Mosquitto};
use tokio::io::AsyncWriteExt;

/// What the cameras saw.
#[derive(Default)]
struct Seen {
    /// Plates whose post got its 200 + success XML.
    acknowledged: BTreeSet<String>,
    /// Longest wait for a reply.
    slowest: Duration,
    /// When each connection's post in flight was sent.
    waiting: std::collections::BTreeMap<usize, Instant>,
}

impl Seen {
    /// The longest a reply has been awaited so far, answered or not.
    fn longest_wait(&self) -> Duration {
        let open = self.waiting.values().map(Instant::elapsed).max();
        open.unwrap_or_default().max(self.slowest)
    }
}

/// Shared between the camera tasks and the test.
type Shared = Arc<Mutex<Seen>>;

/// `connections` cameras post LPR events with an `overview`-sized image in a closed loop
/// (next post when the reply came) until `stop` is set.
fn cameras(
    addr: std::net::SocketAddr,
    connections: usize,
    overview: Arc<Vec<u8>>,
    seen: Shared,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let crop = Arc::new(camera::image("plate1.jpg"));
    (0..connections)
        .map(|c| {
            let (seen, overview, crop, stop) =
                (seen.clone(), overview.clone(), crop.clone(), stop.clone());
            tokio::spawn(async move {
                let mac = format!("02:00:00:00:{:02x}:{:02x}", 0x70, c);
                let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let plate = format!("BP{c:02}X{n:05}");
                    n += 1;
                    let body = camera::ipc_lpr(&mac, &plate, &overview, &crop);
                    let sent = Instant::now();
                    seen.lock().unwrap().waiting.insert(c, sent);
                    s.write_all(&camera::post("/API", body.as_bytes()))
                        .await
                        .expect("write");
                    let r = camera::read_response(&mut s, Duration::from_secs(60))
                        .await
                        .expect("a reply");
                    assert_eq!((r.code(), r.body.as_slice()), (200, REPLY));
                    let mut g = seen.lock().unwrap();
                    g.waiting.remove(&c);
                    g.acknowledged.insert(plate);
                    g.slowest = g.slowest.max(sent.elapsed());
                }
            })
        })
        .collect()
}

/// Every acknowledged plate's event arrives (within `within`); returns the plates missing.
async fn missing(
    col: &Collector,
    acknowledged: &BTreeSet<String>,
    within: Duration,
) -> Vec<String> {
    let is_event = |m: &common::Msg| m.topic.ends_with("/lpr/event");
    let got = col.wait_count(is_event, acknowledged.len(), within).await;
    let delivered: BTreeSet<String> = got
        .iter()
        .filter_map(|m| m.json()["plate"].as_str().map(str::to_owned))
        .collect();
    acknowledged.difference(&delivered).cloned().collect()
}

fn counters(col: &Collector) -> serde_json::Value {
    col.on("camera/bridge/info")
        .last()
        .expect("bridge/info")
        .json()["counters"]
        .clone()
}

/// Cameras post in a closed loop; after 1 s the broker is frozen until some camera has waited
/// 2 s for a reply (the bridge's queues are full: it slows the cameras instead of dropping),
/// at most 20 s; then it continues, the cameras post 2 s more, and every acknowledged event
/// must arrive.
async fn slow_broker(toml: &str, id: &str, connections: usize, image_bytes: usize) {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let col = Collector::start(broker.port, "camera/#").await;
    let bridge = Bridge::start(&broker, toml, id).await;
    col.wait_payload("camera/bridge/state", "online", camera::T)
        .await
        .expect("online");
    let seen: Shared = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = cameras(
        bridge.addr,
        connections,
        Arc::new(camera::big_jpeg(image_bytes)),
        seen.clone(),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.pause();
    let frozen = Instant::now();
    while seen.lock().unwrap().longest_wait() < Duration::from_secs(2)
        && frozen.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.resume();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.expect("camera task");
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    // The broker's stall reached the cameras as held replies.
    assert!(
        seen.slowest >= Duration::from_secs(2),
        "replies were held while the broker was frozen (slowest {:?} after {:?} frozen)",
        seen.slowest,
        frozen.elapsed()
    );
    let lost = missing(&col, &seen.acknowledged, Duration::from_secs(60)).await;
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events never arrived, e.g. {:?}\n{}",
        lost.len(),
        seen.acknowledged.len(),
        &lost[..lost.len().min(5)],
        bridge.telemetry().values()
    );
    // A fresh bridge/info with the counters after the load: nothing dropped, and the bridge
    // says it held replies.
    col.clear();
    post_heartbeat(bridge.addr).await;
    col.wait_for(|m| m.topic == "camera/bridge/info", Duration::from_secs(70))
        .await
        .expect("bridge/info");
    let c = counters(&col);
    assert_eq!(c["dropped"], 0, "{c}");
    assert_eq!(c["spool_dropped"], 0, "{c}");
    assert!(c["backpressure_waits"].as_u64().unwrap() > 0, "{c}");
    bridge.stop().await;
}

/// A heartbeat from a new device (publishes `bridge/info` at once).
async fn post_heartbeat(addr: std::net::SocketAddr) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let r = camera::exchange(
        &mut s,
        &camera::post("/API", camera::intrusion("02:00:00:00:7f:ff").as_bytes()),
    )
    .await;
    assert_eq!(r.code(), 200);
}

#[tokio::test]
async fn without_spool_a_slow_broker_holds_replies_instead_of_dropping() {
    slow_broker("[spool]\nenabled = false\n", "bp-nospool", 8, 300_000).await;
}

#[tokio::test]
async fn with_spool_a_slow_broker_never_fills_the_size_bound() {
    // A small spool: without back-pressure the frozen broker would make it drop.
    slow_broker("[spool]\nmax_bytes = 16777216\n", "bp-spool", 32, 160_000).await;
}
