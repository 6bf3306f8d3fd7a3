//! Fault tests of the durable spool with a real Mosquitto (skipped when it is not installed):
//!
//! (a) 1,000 posts with images over keep-alive connections while Mosquitto is stopped midway
//!     and restarted: every event reaches a subscriber, in order per device; duplicates are
//!     counted and printed.
//! (b) the bridge binary is SIGKILLed midway through a stream of posts and restarted: every
//!     post that got its reply before the kill is delivered after the restart.
//! (c) a spool with a truncated record, a flipped byte and appended garbage: the bridge
//!     starts, logs each damage, and delivers the intact records in order.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::{TcpListener, TcpStream};

use camqtt::event::{
    Attributes, Category, Device, DeviceInfo, Event, Phase, Plate, Routed, TimeSource,
};
use camqtt::spool::{Buffer, SpoolConfig};
use camqtt::telemetry::Telemetry;
use common::bridge::Bridge;
use common::camera::{self, big_jpeg, image, post_keep_alive};
use common::process::BridgeProcess;
use common::{Collector, Mosquitto, Msg};

/// Plates per device topic, in arrival order, from `camera/<device>/lpr/event`.
fn plates_by_device(msgs: &[Msg]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in msgs {
        if !m.topic.ends_with("/lpr/event") {
            continue;
        }
        let plate = m.json()["plate"].as_str().unwrap_or_default().to_string();
        if plate.is_empty() {
            continue;
        }
        out.entry(m.topic.clone()).or_default().push(plate);
    }
    out
}

/// First occurrences in arrival order, and the number of repeats.
fn dedup(seq: &[String]) -> (Vec<String>, usize) {
    let mut seen = BTreeSet::new();
    let mut firsts = Vec::new();
    for p in seq {
        if seen.insert(p.clone()) {
            firsts.push(p.clone());
        }
    }
    let dups = seq.len() - firsts.len();
    (firsts, dups)
}

/// A TCP proxy whose gate can be closed: while closed, new connections are dropped at once,
/// and closing it cuts the connections it carries. The bridge reaches Mosquitto through it:
/// in (a) so that after a broker restart the subscriber re-subscribes before the bridge
/// reconnects (a subscriber without a persistent session would otherwise miss what the
/// bridge replays in the first milliseconds); in (b) to build a backlog before the kill.
struct Gate {
    port: u16,
    open: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    async fn start(upstream: u16) -> Gate {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (o, c) = (open.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = l.accept().await else {
                    continue;
                };
                if !o.load(Ordering::SeqCst) {
                    drop(down);
                    continue;
                }
                c.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                }));
            }
        });
        Gate {
            port,
            open,
            conns,
            task,
        }
    }
    fn set(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
        if !open {
            for c in self.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
        self.set(false);
    }
}

/// (a) Broker outage in the middle of 1,000 posts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_midway_every_event_arrives_in_order() {
    let Some(mut broker) = Mosquitto::try_start() else {
        return;
    };
    let started = Instant::now();
    let col = Collector::start(broker.port, "camera/+/lpr/event").await;
    let gate = Gate::start(broker.port).await;
    let bridge = Bridge::start_with(
        "[homeassistant]\nenabled = false\n",
        Some(format!("mqtt://127.0.0.1:{}", gate.port)),
        format!("camqtt-fault-a-{}", broker.port),
    )
    .await;
    let addr = bridge.addr;

    const DEVICES: usize = 4;
    const PER_DEVICE: usize = 250;
    let small = image("overview.jpg");
    let crop = image("crop.jpg");
    let big = big_jpeg(300_000);
    let replied = Arc::new(AtomicUsize::new(0));
    let mut posters = Vec::new();
    for d in 0..DEVICES {
        let (small, crop, big, replied) =
            (small.clone(), crop.clone(), big.clone(), replied.clone());
        posters.push(tokio::spawn(async move {
            let mac = format!("58:5b:69:fa:00:0{d}");
            let mut s = TcpStream::connect(addr).await.unwrap();
            for i in 0..PER_DEVICE {
                let overview = if i % 50 == 25 { &big } else { &small };
                let body = camera::ipc_lpr(&mac, &format!("D{d}N{i:04}"), overview, &crop);
                assert_eq!(post_keep_alive(&mut s, &body).await.expect("reply"), 200);
                replied.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let total = DEVICES * PER_DEVICE;
    let wait_replied = |n: usize| {
        let r = replied.clone();
        async move {
            while r.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_replied(total * 3 / 10).await;
    gate.set(false);
    broker.stop();
    let stopped_at = replied.load(Ordering::SeqCst);
    wait_replied(total * 7 / 10).await;
    broker.restart();
    // The subscriber re-subscribes (its probe comes back), then the bridge may reconnect.
    let probe_deadline = Instant::now() + Duration::from_secs(20);
    loop {
        col.publish("camera/probe/lpr/event", "{}", false).await;
        if col
            .wait_for(
                |m| m.topic == "camera/probe/lpr/event",
                Duration::from_millis(300),
            )
            .await
            .is_some()
        {
            break;
        }
        assert!(
            Instant::now() < probe_deadline,
            "subscriber did not come back"
        );
    }
    gate.set(true);
    let restarted_at = replied.load(Ordering::SeqCst);
    for p in posters {
        p.await.unwrap();
    }
    let msgs = col
        .wait_count(
            |m| m.topic.ends_with("/lpr/event") && !m.topic.contains("/probe/"),
            total,
            Duration::from_secs(40),
        )
        .await;
    // Let late replays arrive so that duplicates are counted too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all: Vec<Msg> = col
        .all()
        .into_iter()
        .filter(|m| !m.topic.contains("/probe/"))
        .collect();
    let by_dev = plates_by_device(&all);
    let mut dups = 0;
    for d in 0..DEVICES {
        let topic = format!("camera/58_5b_69_fa_00_0{d}/lpr/event");
        let got = by_dev.get(&topic).cloned().unwrap_or_default();
        let (firsts, n) = dedup(&got);
        dups += n;
        let want: Vec<String> = (0..PER_DEVICE).map(|i| format!("D{d}N{i:04}")).collect();
        assert_eq!(
            firsts.len(),
            want.len(),
            "{topic}: {} of {PER_DEVICE} delivered",
            firsts.len()
        );
        assert_eq!(firsts, want, "{topic}: first deliveries out of order");
    }
    let stats = bridge.telemetry();
    eprintln!(
        "fault (a): {total} posts, {} events delivered, {dups} duplicates (bridge counted {}), \
         broker stopped after {stopped_at} replies and restarted after {restarted_at}, {:.1} s",
        msgs.len().min(total),
        stats.spool_duplicates.get(),
        started.elapsed().as_secs_f64()
    );
    assert!(all.len() >= total);
    assert_eq!(stats.spool_dropped.get(), 0);
    bridge.stop().await;
}

/// The bridge binary on `dir` (configuration and spool) and `http`, reaching the broker at
/// `127.0.0.1:<broker_port>`, so that a restarted one takes over the port and the spool.
fn start_bridge(dir: &Path, broker_port: u16, http: SocketAddr, name: &str) -> BridgeProcess {
    BridgeProcess::spawn(
        format!("mqtt://127.0.0.1:{broker_port}"),
        format!("camqtt-fault-{name}-{broker_port}"),
    )
    .dir(dir)
    .listen(http)
    .toml("[homeassistant]\nenabled = false\n")
    .start()
}

/// (b) SIGKILL in the middle of a stream of posts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_midway_every_replied_post_is_delivered_after_restart() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let started = Instant::now();
    let col = Collector::start(broker.port, "camera/+/lpr/event").await;
    let dir = tempfile::tempdir().unwrap();
    let http = common::free_addr();
    // The bridge reaches the broker through a gate: closed after 100 replies, so the kill
    // hits a backlog (waiting in the spool) as well as publishes in flight.
    let gate = Gate::start(broker.port).await;
    let mut first = start_bridge(dir.path(), gate.port, http, "first");

    const CONNS: usize = 3;
    let small = image("overview.jpg");
    let crop = image("crop.jpg");
    let big = big_jpeg(200_000);
    let replied: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut posters = Vec::new();
    for c in 0..CONNS {
        let (small, crop, big, replied, stop) = (
            small.clone(),
            crop.clone(),
            big.clone(),
            replied.clone(),
            stop.clone(),
        );
        posters.push(tokio::spawn(async move {
            let mac = format!("58:5b:69:fb:00:0{c}");
            let mut s = TcpStream::connect(http).await.unwrap();
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let plate = format!("K{c}N{i:05}");
                let overview = if i % 10 == 5 { &big } else { &small };
                let body = camera::ipc_lpr(&mac, &plate, overview, &crop);
                match post_keep_alive(&mut s, &body).await {
                    Ok(200) => replied.lock().unwrap().push(plate),
                    _ => break, // the bridge was killed under this post
                }
            }
        }));
    }
    while replied.lock().unwrap().len() < 100 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    gate.set(false);
    while replied.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.kill();
    let killed_at = replied.lock().unwrap().len();
    stop.store(true, Ordering::SeqCst);
    for p in posters {
        p.await.unwrap();
    }
    let before_restart: BTreeSet<String> = replied.lock().unwrap().iter().cloned().collect();
    let delivered_before_kill = plates_by_device(&col.all())
        .values()
        .map(|v| dedup(v).0.len())
        .sum::<usize>();

    gate.set(true);
    let second = start_bridge(dir.path(), gate.port, http, "second");
    let restarted = Instant::now();
    // Poll until every replied plate arrived (or time out).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (got, all_plates) = loop {
        let all_plates: Vec<String> = plates_by_device(&col.all())
            .into_values()
            .flatten()
            .collect();
        let got: BTreeSet<String> = all_plates.iter().cloned().collect();
        if before_restart.is_subset(&got) || Instant::now() > deadline {
            break (got, all_plates);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let missing: Vec<&String> = before_restart.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} of {} replied posts missing after restart (first: {:?}); log of the restart:\n{}",
        missing.len(),
        before_restart.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        second.log()
    );
    // Per connection, first deliveries are in posting order.
    for (topic, plates) in plates_by_device(&col.all()) {
        let (firsts, _) = dedup(&plates);
        let mut sorted = firsts.clone();
        sorted.sort();
        assert_eq!(firsts, sorted, "{topic}: out of order");
    }
    let dups = all_plates.len() - got.len();
    eprintln!(
        "fault (b): {} posts replied before the SIGKILL (kill after {killed_at}), {} delivered \
         before the kill, all {} delivered {:.2} s after the restart, {dups} duplicates, {:.1} s total",
        before_restart.len(),
        delivered_before_kill,
        before_restart.len(),
        restarted.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(second.log().contains("spool opened"), "{}", second.log());
}

fn spool_event(plate: &str) -> Routed {
    let info = DeviceInfo {
        mac: Some("58:5b:69:fc:00:01".into()),
        ..Default::default()
    };
    let mut attrs = Attributes::default();
    attrs.plates.push(Plate {
        plate: plate.into(),
        ..Default::default()
    });
    Routed::Event {
        device: Device {
            id: "58_5b_69_fc_00_01".into(),
            name: "Spooled camera".into(),
            info: info.clone(),
            hw_key: "585b69fc0001".into(),
            parent: None,
            area: None,
        },
        event: Arc::new(Event {
            device: info,
            category: Category::Lpr,
            phase: Phase::Pulse,
            time: SystemTime::now(),
            time_source: TimeSource::Receiver,
            time_raw: None,
            received: SystemTime::now(),
            source: "viewtron".into(),
            raw_type: "VEHICE".into(),
            envelope: Some("ipc".into()),
            config_version: Some("1.7".into()),
            attrs,
            images: vec![],
            warnings: vec![],
            provenance: None,
            detection: None,
        }),
        counts: Default::default(),
    }
}

/// (c) A damaged spool from a previous run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_spool_tail_is_survived() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    // Three segments (each open starts a new one) of five records.
    for seg in 0..3 {
        let (s, _) = Buffer::open(SpoolConfig::new(&spool_dir), Telemetry::new()).unwrap();
        for i in 0..5 {
            s.append(spool_event(&format!("C{seg}{i}"))).await;
        }
    }
    let mut segs: Vec<_> = std::fs::read_dir(&spool_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 3);
    // 1: truncated in the middle of its last record.
    let len = std::fs::metadata(&segs[0]).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segs[0])
        .unwrap()
        .set_len(len - 20)
        .unwrap();
    // 2: a flipped byte in its last record.
    let mut b = std::fs::read(&segs[1]).unwrap();
    let n = b.len();
    b[n - 5] ^= 0xA5;
    std::fs::write(&segs[1], b).unwrap();
    // 3: garbage appended.
    let mut b = std::fs::read(&segs[2]).unwrap();
    b.extend_from_slice(&[0xEE; 37]);
    std::fs::write(&segs[2], b).unwrap();

    let col = Collector::start(broker.port, "camera/+/lpr/event").await;
    let http = common::free_addr();
    let bridge = start_bridge(dir.path(), broker.port, http, "corrupt");
    let want = [
        "C00", "C01", "C02", "C03", "C10", "C11", "C12", "C13", "C20", "C21", "C22", "C23", "C24",
    ];
    let msgs = col
        .wait_count(
            |m| m.topic.ends_with("/lpr/event"),
            want.len(),
            Duration::from_secs(20),
        )
        .await;
    let plates: Vec<String> = msgs
        .iter()
        .map(|m| m.json()["plate"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(plates, want, "log:\n{}", bridge.log());
    let log = bridge.log();
    assert_eq!(
        log.matches("spool segment damaged").count(),
        3,
        "one line per damaged segment:\n{log}"
    );
    // Still serving posts after that.
    let mut s = TcpStream::connect(http).await.unwrap();
    let body = camera::ipc_lpr(
        "58:5b:69:fc:00:02",
        "AFTER1",
        &image("overview.jpg"),
        &image("crop.jpg"),
    );
    assert_eq!(post_keep_alive(&mut s, &body).await.unwrap(), 200);
    assert!(
        col.wait_for(
            |m| m.payload.windows(6).any(|w| w == b"AFTER1"),
            Duration::from_secs(10)
        )
        .await
        .is_some()
    );
    // The damaged records never show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = plates_by_device(&col.all());
    let all: Vec<&String> = all.values().flatten().collect();
    for gone in ["C04", "C14"] {
        assert!(
            !all.iter().any(|p| *p == gone),
            "{gone} was damaged: {all:?}"
        );
    }
    eprintln!(
        "fault (c): 3 damaged segments logged, {} intact records delivered in order",
        want.len()
    );
}
