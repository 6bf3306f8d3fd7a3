//! The device registry across restarts, through the whole bridge: real HTTP posts, a real
//! Mosquitto, the registry file in the state directory (`devices.json`), and camqtt 0.1.0's
//! `mqtt-devices.json` migrated, and the bridge-kept counts across a SIGKILL of the real
//! binary.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use common::camera::{REPLY, exchange, post};
use common::process::BridgeProcess;
use common::{Collector, Mosquitto};

const T: Duration = Duration::from_secs(15);
/// The NVR channel of [`counting_post`].
const CHANNEL: &str = "02_00_5e_01_02_03_ch3";
const COUNTER: &str = "counting_enter_person";

/// An NVR (config 2.0.0) line-counting detection on channel 3 with one person and no
/// counters of its own: the bridge counts it (`enter_person`).
fn counting_post() -> String {
    r#"<?xml version="1.0" encoding="UTF-8"?>
<config version="2.0.0" xmlns="http://www.ipc.com/ver10">
<messageType>alarmData</messageType>
<deviceInfo><deviceName><![CDATA[Depot NVR]]></deviceName><ip><![CDATA[10.4.4.4]]></ip><mac><![CDATA[02:00:5E:01:02:03]]></mac><channelId>3</channelId></deviceInfo>
<smartType>targetCountingByLine</smartType>
<currentTime>1790000900000000</currentTime>
<eventInfo><item><eventId>7</eventId><targetId>11</targetId><boundary>tripwire</boundary></item></eventInfo>
<targetListInfo><item><targetId>11</targetId><targetType>person</targetType></item></targetListInfo>
</config>"#
        .to_owned()
}

struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    running: camqtt::Running,
}

async fn start(broker: &Mosquitto, state: &Path, client_id: &str) -> Running {
    let toml = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"{client_id}-{}\"\n\
         [viewtron]\nlisten = \"127.0.0.1:0\"\n[spool]\ndir = \"{}\"\n",
        broker.url(),
        broker.port,
        state.display()
    );
    let cfg = camqtt::config::load_str(&toml).expect("config");
    let shutdown = CancellationToken::new();
    let running = camqtt::start(cfg, shutdown.clone()).await.expect("starts");
    Running {
        addr: running.viewtron_addr.expect("viewtron on"),
        shutdown,
        running,
    }
}

impl Running {
    async fn post(&self, body: &str) {
        send(self.addr, body).await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.running.wait())
            .await
            .expect("stops in time")
            .expect("clean stop");
    }
}

/// Post `body` to the receiver at `addr`; it must answer with the success document.
async fn send(addr: SocketAddr, body: &str) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let r = exchange(&mut s, &post("/API", body.as_bytes())).await;
    assert_eq!(r.body, REPLY);
}

fn registry(state: &Path) -> serde_json::Value {
    let bytes = std::fs::read(state.join("devices.json")).expect("devices.json written");
    serde_json::from_slice(&bytes).expect("registry is JSON")
}

/// Wait for a retained-style discovery of a device whose components include `component`.
async fn discovery_with(col: &Collector, component: &str) -> serde_json::Value {
    col.wait_for(
        |m| {
            m.topic.starts_with("homeassistant/device/")
                && !m.payload.is_empty()
                && m.json()["components"].get(component).is_some()
        },
        T,
    )
    .await
    .unwrap_or_else(|| panic!("no discovery with {component}"))
    .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_devices_and_their_counts_survive_a_restart() {
    let Some(first_broker) = Mosquitto::try_start() else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let col = Collector::start(first_broker.port, "camera/#").await;
    let bridge = start(&first_broker, state.path(), "registry").await;
    bridge.post(&counting_post()).await;
    bridge.post(&counting_post()).await;
    col.wait_payload(&format!("camera/{CHANNEL}/counting/enter_person"), "2", T)
        .await
        .expect("the bridge counts");
    bridge.stop().await;

    let file = registry(state.path());
    let ids: Vec<&str> = file["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["02_00_5e_01_02_03", CHANNEL],
        "the NVR and its channel"
    );
    assert_eq!(file["devices"][1]["counts"]["person"], 2);

    // A broker that kept nothing (a new one): the known devices are announced before they
    // post, offline, with the saved count.
    let broker = Mosquitto::start();
    let col = Collector::start(broker.port, "#").await;
    let bridge = start(&broker, state.path(), "registry").await;
    let disc = discovery_with(&col, COUNTER).await;
    assert_eq!(disc["device"]["name"], "Depot NVR channel 3");
    col.wait_payload(&format!("camera/{CHANNEL}/availability"), "offline", T)
        .await
        .expect("offline until it posts");
    col.wait_payload(&format!("camera/{CHANNEL}/counting/enter_person"), "2", T)
        .await
        .expect("saved count re-published");
    bridge.post(&counting_post()).await;
    col.wait_payload(&format!("camera/{CHANNEL}/availability"), "online", T)
        .await
        .expect("online once it posts");
    col.wait_payload(&format!("camera/{CHANNEL}/counting/enter_person"), "3", T)
        .await
        .expect("the count continues");
    bridge.stop().await;
    assert_eq!(registry(state.path())["devices"][1]["counts"]["person"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_file_of_0_1_is_migrated() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    // The file camqtt 0.1.0's MQTT sink wrote (format documented in src/pipeline/file.rs).
    let old = serde_json::json!({
        "version": 1,
        "saved": 1_790_000_000u64,
        "devices": [{
            "device": {
                "id": "02_00_5e_0a_0b_0c", "name": "Side gate",
                "info": {"name": "Side gate", "mac": "02:00:5e:0a:0b:0c", "serial": null,
                         "ip": null, "channel": null, "device_no": null, "peer": "10.1.1.9",
                         "kind": "camera", "manufacturer": "Viewtron", "model": null,
                         "sw_version": null},
                "hw_key": "02005e0a0b0c", "parent": null, "area": null
            },
            "last_seen": 4_000_000_000u64,
            "categories": {"lpr": {"overview": true, "target": true,
                                   "content_type": "image/jpeg", "counters": []}},
            "counts": {}
        }]
    });
    let old_path = state.path().join("mqtt-devices.json");
    std::fs::write(&old_path, old.to_string()).unwrap();
    let col = Collector::start(broker.port, "#").await;
    let bridge = start(&broker, state.path(), "migrate").await;
    let disc = discovery_with(&col, "lpr_last").await;
    assert_eq!(disc["device"]["name"], "Side gate");
    assert!(disc["components"].get("lpr_image").is_some(), "{disc}");
    col.wait_payload("camera/02_00_5e_0a_0b_0c/availability", "offline", T)
        .await
        .expect("a known device, offline until it posts");
    bridge.stop().await;
    let file = registry(state.path());
    assert_eq!(file["devices"][0]["device"]["id"], "02_00_5e_0a_0b_0c");
    assert_eq!(file["devices"][0]["categories"]["lpr"]["overview"], true);
    assert!(
        !old_path.exists(),
        "the old file is gone once the new one is written"
    );
}

/// The real `camqtt` binary on `state` (its configuration, and `spool/`: the spool and
/// registry directory), Home Assistant discovery off, its log kept for a failure message.
fn start_process(broker: &Mosquitto, state: &Path, client_id: &str) -> BridgeProcess {
    BridgeProcess::spawn(broker.url(), format!("{client_id}-{}", broker.port))
        .dir(state)
        .toml("[homeassistant]\nenabled = false\n")
        .start()
}

/// SIGKILL (no shutdown, no last save); the whole log.
fn kill(mut bridge: BridgeProcess) -> String {
    bridge.kill();
    bridge.log()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_kept_counts_never_go_backwards_after_a_sigkill() {
    // Review finding: the counts were saved at most once a second while the events that
    // advanced them were durable (and published) at once; a SIGKILL in that second restarted
    // them from the last save (1..6, then 3, 5, 6, 4): Home Assistant's `total_increasing`
    // read a meter reset.
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let topic = format!("camera/{CHANNEL}/counting/enter_person");
    let col = Collector::start(broker.port, &topic).await;
    let state = tempfile::tempdir().unwrap();
    let first = tokio::task::block_in_place(|| start_process(&broker, state.path(), "sigkill"));
    for _ in 0..3 {
        send(first.addr, &counting_post()).await;
    }
    col.wait_payload(&topic, "3", T).await.expect("count 3");
    tokio::time::sleep(Duration::from_millis(2500)).await; // a debounced save of 3
    for _ in 0..3 {
        send(first.addr, &counting_post()).await;
    }
    col.wait_payload(&topic, "6", T).await.expect("count 6");
    let log = tokio::task::block_in_place(|| kill(first)); // within the save debounce
    assert_eq!(
        registry(&state.path().join("spool"))["devices"][1]["counts"]["person"],
        6,
        "every count answered to the camera is in the registry file; log:\n{log}"
    );
    let second = tokio::task::block_in_place(|| start_process(&broker, state.path(), "sigkill"));
    send(second.addr, &counting_post()).await;
    let seven = col.wait_payload(&topic, "7", T).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // any late replay
    let log = tokio::task::block_in_place(|| kill(second));
    let seen: Vec<u64> = (col.on(&topic).iter())
        .filter_map(|m| m.text().parse().ok())
        .collect();
    assert!(
        seven.is_some() && seen.windows(2).all(|w| w[0] <= w[1]) && seen.last() == Some(&7),
        "{topic} as published: {seen:?} (expected 1..=7, never decreasing); log:\n{log}"
    );
}
