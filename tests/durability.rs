//! A `200` means the event will be delivered — also when the broker is connected but not
//! answering (frozen, overloaded) and the bridge is then killed or stopped.
//!
//! While the broker does not acknowledge, the buffer's flow control holds the pipeline back,
//! the pipeline's queue fills and the cameras' replies wait: a post gets its `200` only once it
//! is stored. Here six cameras post unique plates for 12 s against a frozen Mosquitto
//! (SIGSTOP), the bridge process is then killed (SIGKILL) or stopped (SIGTERM, which must also
//! exit 0), Mosquitto resumes, and a second bridge on the same spool directory must deliver
//! every plate that was answered `200`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::camera::{self, image, post_keep_alive};
use common::process::BridgeProcess;
use common::{Collector, Mosquitto};
use tokio::net::TcpStream;

/// The bridge binary on `dir` (configuration and spool) and `http`, so that a second one
/// takes over the first one's port and spool; returns once it is connected to the broker.
fn start_bridge(dir: &Path, broker: &Mosquitto, http: SocketAddr) -> BridgeProcess {
    // A small max_bytes only makes the flow-control level (half of it) small, so the test
    // reaches it in a second instead of after 1,024 records; the default shows the same.
    let bridge = BridgeProcess::spawn(broker.url(), format!("camqtt-durable-{}", broker.port))
        .dir(dir)
        .listen(http)
        .toml("[homeassistant]\nenabled = false\n")
        .spool("max_bytes = 1048576")
        .start();
    bridge.wait_for_log("MQTT connected", Duration::from_secs(20));
    bridge
}

/// How the first bridge ends.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// SIGKILL: no shutdown code runs.
    Kill,
    /// SIGTERM: the documented graceful shutdown (README: "in-flight posts are answered ...
    /// whatever was not delivered stays in the spool for the next start", exit 0).
    Term,
}

/// Freeze the broker while six cameras post unique plates for 12 s, stop the bridge, resume
/// the broker, restart the bridge on the same spool; returns (plates answered 200, plates
/// delivered, 'replying anyway' warnings, exit status of the first bridge, both bridges' logs
/// without the lines of every post).
async fn frozen_broker_then(
    stop_how: Stop,
) -> (
    BTreeSet<String>,
    BTreeSet<String>,
    usize,
    Option<std::process::ExitStatus>,
    String,
) {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let http = common::free_addr();
    let mut first = start_bridge(dir.path(), &broker, http);
    // Connected, then the broker stops answering (the connection stays up).
    broker.pause();

    let overview = image("overview.jpg");
    let crop = image("crop.jpg");
    let replied: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut posters = Vec::new();
    for c in 0..6 {
        let (overview, crop, replied, stop) = (
            overview.clone(),
            crop.clone(),
            replied.clone(),
            stop.clone(),
        );
        posters.push(tokio::spawn(async move {
            let mac = format!("58:5b:69:fc:00:0{c}");
            let Ok(mut s) = TcpStream::connect(http).await else {
                return;
            };
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let plate = format!("D{c}N{i:05}");
                let body = camera::ipc_lpr(&mac, &plate, &overview, &crop);
                match post_keep_alive(&mut s, &body).await {
                    Ok(200) => replied.lock().unwrap().push(plate),
                    _ => break,
                }
            }
        }));
    }
    // Long enough for the flow-control level to be reached and for replies to be held for
    // a while, short of the MQTT keep-alive noticing the freeze.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let status = match stop_how {
        Stop::Kill => {
            first.kill();
            None
        }
        Stop::Term => {
            let status = tokio::task::block_in_place(|| first.terminate(Duration::from_secs(40)));
            first.kill();
            status
        }
    };
    stop.store(true, Ordering::SeqCst);
    for p in posters {
        let _ = p.await;
    }
    let replied: BTreeSet<String> = replied.lock().unwrap().iter().cloned().collect();
    let held_anyway = first.log().matches("replying anyway").count();
    assert_eq!(
        held_anyway, 0,
        "no reply may go out before the post is stored"
    );
    broker.resume();

    let col = Collector::start(broker.port, "camera/+/lpr/event").await;
    let second = start_bridge(dir.path(), &broker, http);
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let got: BTreeSet<String> = col
            .all()
            .iter()
            .filter_map(|m| m.json()["plate"].as_str().map(str::to_owned))
            .collect();
        if replied.is_subset(&got) || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Both logs, without the lines of every post, for a failure message.
    let log = format!("first:\n{}\nsecond:\n{}", first.log(), second.log())
        .lines()
        .filter(|l| !l.contains("handler: event") && !l.contains("replying anyway"))
        .collect::<Vec<_>>()
        .join("\n");
    (replied, got, held_anyway, status, log)
}

fn lost(replied: &BTreeSet<String>, got: &BTreeSet<String>) -> Vec<String> {
    replied.difference(got).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_post_answered_200_is_lost_to_a_sigkill_while_the_broker_is_frozen() {
    if !Mosquitto::available() {
        return;
    }
    let (replied, got, held_anyway, _, log) = frozen_broker_then(Stop::Kill).await;
    assert!(replied.len() >= 6, "the cameras posted: {}", replied.len());
    let missing = lost(&replied, &got);
    assert!(
        missing.is_empty(),
        "{} of {} posts answered 200 were lost after the SIGKILL ({held_anyway} 'replying \
         anyway' warnings before the kill); first missing: {:?}\nrestart log:\n{}",
        missing.len(),
        replied.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        log
    );
}

/// The same with a graceful SIGTERM: the buffer stops holding the pipeline back when the
/// shutdown starts, so the pipeline stores everything queued (and those cameras get their
/// `200`) although the sink cannot deliver; the bridge exits 0 and the next start delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_frozen_broker_exits_0_and_loses_no_post_answered_200() {
    if !Mosquitto::available() {
        return;
    }
    let (replied, got, held_anyway, status, log) = frozen_broker_then(Stop::Term).await;
    assert!(replied.len() >= 6, "the cameras posted: {}", replied.len());
    let missing = lost(&replied, &got);
    assert!(
        missing.is_empty() && status.is_some_and(|s| s.success()),
        "exit status {status:?}; {} of {} posts answered 200 were lost after a graceful \
         SIGTERM ({held_anyway} 'replying anyway' warnings); first missing: {:?}\nlogs:\n{log}",
        missing.len(),
        replied.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
    );
}

/// With a broker that keeps up, the disk is out of the way (README "Performance"): every post
/// answered `200` is delivered, and records the broker acknowledged within the spool's
/// write-behind time were never written to its files (`spool_writes_saved`). The frozen-broker
/// tests above show the other side: what the broker does not acknowledge is written before
/// the camera hears `200`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_broker_that_keeps_up_delivered_records_skip_the_disk() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = camqtt::config::load_str("[homeassistant]\nenabled = false\n").unwrap();
    cfg.apply(&camqtt::config::Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        mqtt_url: Some(vec![broker.url()]),
        client_id: Some(format!("write-behind-{}", broker.port)),
        ..Default::default()
    });
    cfg.spool.dir = dir.path().to_path_buf();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = camqtt::start(cfg, shutdown.clone()).await.expect("starts");
    let addr = running.viewtron_addr.unwrap();
    let events = Collector::start(broker.port, "camera/+/lpr/event").await;
    const POSTS: usize = 10;
    for _ in 0..POSTS {
        tokio::task::block_in_place(|| camera::curl_fixture(addr, "ipc-lpr-test123.xml"));
    }
    let got = events
        .wait_count(|_| true, POSTS, Duration::from_secs(20))
        .await;
    assert_eq!(got.len(), POSTS, "every post answered 200 is delivered");
    let t = running.telemetry.clone();
    let (saved, written) = (t.spool_writes_saved.get(), t.spool_appended.get());
    println!("records delivered without a disk write: {saved}; written: {written}");
    assert!(
        saved >= 1,
        "each post waited for its PUBACK one at a time, yet every record was written to disk \
         ({written})"
    );
    shutdown.cancel();
    running.wait().await.unwrap();
}
