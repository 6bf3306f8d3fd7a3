//! Alarm-status posts end to end (issue 7, faults 4 and 5): the project's own fixtures posted
//! over real TCP into `camqtt::start`, a real Mosquitto, and a subscriber that checks every
//! topic, payload and retain flag.
//!
//! * A status drives only binary states and `alarm/<name>[_<id>]`; it never moves a plate,
//!   a list, `last`, images or the event topic (field case 03).
//! * An NVR's `perimeterAlarm` names no single detection (region intrusion or line crossing,
//!   `protocol.md` §7.2): it never turns `intrusion` on by itself, only holds the category a
//!   detection of the same channel shows (field case 15).

mod common;

use std::time::Duration;

use tokio::net::TcpStream;

use common::bridge::Bridge;
use common::camera::{REPLY, exchange, post};
use common::{Collector, Mosquitto, Msg, retained};

/// How long a single expected message may take.
const T: Duration = Duration::from_secs(10);

/// After the last post: how long to keep listening before asserting that something never came.
const QUIET: Duration = Duration::from_millis(1500);

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/viewtron")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Post one fixture on its own connection; the camera must get the success reply.
async fn send(bridge: &Bridge, name: &str) {
    let mut s = TcpStream::connect(bridge.addr).await.expect("connect");
    let r = exchange(&mut s, &post("/API", &fixture(name))).await;
    assert_eq!((r.code(), r.body.as_slice()), (200, REPLY), "{name}: reply");
}

/// Start a broker, a collector on `#` and the bridge with `toml`; `None` without Mosquitto.
async fn setup(toml: &str) -> Option<(Mosquitto, Collector, Bridge)> {
    let broker = Mosquitto::try_start()?;
    let col = Collector::start(broker.port, "#").await;
    let bridge = Bridge::start(&broker, toml, "camqtt-alarm").await;
    col.wait_payload("camera/bridge/state", "online", T)
        .await
        .expect("bridge online");
    Some((broker, col, bridge))
}

/// Payloads on `topic` so far, in order.
fn payloads(col: &Collector, topic: &str) -> Vec<String> {
    col.on(topic).iter().map(Msg::text).collect()
}

/// The device's discovery components (the newest discovery message).
fn components(col: &Collector, hw: &str) -> serde_json::Value {
    let topic = format!("homeassistant/device/camqtt_{hw}/config");
    let m = col
        .on(&topic)
        .into_iter()
        .next_back()
        .unwrap_or_else(|| panic!("no discovery on {topic}"));
    m.json()["components"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_status_pair_moves_only_the_state_and_its_alarm_topic() {
    let Some((broker, col, bridge)) = setup("").await else {
        return;
    };
    let dev = "camera/02_00_5e_10_30_01";
    let lpr = |leaf: &str| format!("{dev}/lpr/{leaf}");

    // 1. The status pair alone (a read the bridge never saw, field case 03).
    send(&bridge, "ipc-alarm-status-vehice-on-12h.xml").await;
    col.wait_payload(&lpr("state"), "ON", T)
        .await
        .expect("lpr ON after the status true");
    col.wait_payload(&format!("{dev}/alarm/vehiceAlarm_1"), "ON", T)
        .await
        .expect("alarm topic ON");
    send(&bridge, "ipc-alarm-status-vehice-off-12h.xml").await;
    col.wait_payload(&lpr("state"), "OFF", T)
        .await
        .expect("lpr OFF after the status false");
    col.wait_payload(&format!("{dev}/alarm/vehiceAlarm_1"), "OFF", T)
        .await
        .expect("alarm topic OFF");
    tokio::time::sleep(QUIET).await;
    assert_eq!(payloads(&col, &lpr("state")), ["ON", "OFF"]);
    assert_eq!(
        payloads(&col, &format!("{dev}/alarm/vehiceAlarm_1")),
        ["ON", "OFF"]
    );
    for leaf in ["event", "plate", "list", "last", "image", "target"] {
        assert!(
            col.on(&lpr(leaf)).is_empty(),
            "no plate was read: nothing on lpr/{leaf}"
        );
    }
    assert!(col.on("camera/lpr/image").is_empty());
    assert!(col.on("camera/bridge/unparsed").is_empty());
    // The status announced the lpr entities early ("Last plate read" included) ...
    let c = components(&col, "02005e103001");
    assert_eq!(c["lpr_last"]["name"], "Last plate read");
    assert_eq!(c["lpr_last"]["state_topic"], lpr("last"));
    assert!(
        c.get("lpr_image").is_none(),
        "no image entity from a status"
    );
    // ... and the final OFFs are retained.
    let kept = retained(broker.port, &format!("{dev}/#"), Duration::from_millis(500)).await;
    assert_eq!(kept.get(&lpr("state")).map(|b| &b[..]), Some(&b"OFF"[..]));
    assert_eq!(
        kept.get(&format!("{dev}/alarm/vehiceAlarm_1"))
            .map(|b| &b[..]),
        Some(&b"OFF"[..])
    );
    assert!(!kept.contains_key(&lpr("last")));

    // 2. A read, then its status pair: the read's values stay as they were.
    col.clear();
    send(&bridge, "ipc-lpr-test123.xml").await;
    let ev = col
        .wait_for(|m| m.topic == lpr("event"), T)
        .await
        .expect("plate read event")
        .json();
    assert_eq!(ev["plate"], "TEST123");
    let read_time = ev["time"].as_str().unwrap().to_owned();
    col.wait_payload(&lpr("last"), &read_time, T)
        .await
        .expect("last = the read's time");
    send(&bridge, "ipc-alarm-status-vehice-on-12h.xml").await;
    col.wait_payload(&format!("{dev}/alarm/vehiceAlarm_1"), "ON", T)
        .await
        .expect("alarm ON");
    send(&bridge, "ipc-alarm-status-vehice-off-12h.xml").await;
    col.wait_payload(&lpr("state"), "OFF", T)
        .await
        .expect("lpr OFF");
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        payloads(&col, &lpr("last")),
        std::slice::from_ref(&read_time)
    );
    assert_eq!(payloads(&col, &lpr("plate")), ["TEST123"]);
    assert_eq!(payloads(&col, &lpr("list")), ["whiteList"]);
    assert_eq!(col.on(&lpr("event")).len(), 1);
    assert_eq!(col.on(&lpr("image")).len(), 1);
    assert_eq!(col.on("camera/lpr/image").len(), 1);
    let kept = retained(
        broker.port,
        &format!("{dev}/lpr/#"),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(
        kept.get(&lpr("last"))
            .map(|b| String::from_utf8_lossy(b).into_owned()),
        Some(read_time)
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nvr_perimeter_alarm_around_a_line_crossing_never_claims_intrusion() {
    // A short line_crossing off_delay, so that "held by the alarm" is visible quickly.
    let Some((broker, col, bridge)) = setup("[categories.line_crossing]\noff_delay = 1\n").await
    else {
        return;
    };
    let ch = "camera/02_00_5e_aa_30_04_ch4";
    let alarm = format!("{ch}/alarm/perimeterAlarm_1");
    let lc_state = format!("{ch}/line_crossing/state");

    send(&bridge, "nvr-alarm-status-perimeter-on.xml").await;
    col.wait_payload(&alarm, "ON", T).await.expect("alarm ON");
    // The alarm is an entity of its own; no category was claimed.
    let c = components(&col, "02005eaa3004_ch4");
    let a = &c["alarm_status_perimeteralarm_1"];
    assert_eq!(a["platform"], "binary_sensor");
    assert_eq!(a["name"], "Perimeter alarm 1");
    assert_eq!(a["state_topic"], alarm);
    assert_eq!(
        a["unique_id"],
        "camqtt_02005eaa3004_ch4_alarm_status_perimeteralarm_1"
    );
    assert!(c.get("intrusion").is_none() && c.get("line_crossing").is_none());

    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&bridge, "nvr-line-crossing-tripwire.xml").await;
    let ev = col
        .wait_for(|m| m.topic == format!("{ch}/line_crossing/event"), T)
        .await
        .expect("line crossing event")
        .json();
    assert_eq!(ev["event_type"], "line_crossed");
    col.wait_payload(&lc_state, "ON", T)
        .await
        .expect("line_crossing ON");
    // Past its 1 s off_delay: the alarm holds it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !payloads(&col, &lc_state).contains(&"OFF".to_owned()),
        "line_crossing held while perimeterAlarm is true: {:?}",
        payloads(&col, &lc_state)
    );
    send(&bridge, "nvr-alarm-status-perimeter-off.xml").await;
    col.wait_payload(&alarm, "OFF", T).await.expect("alarm OFF");
    col.wait_payload(&lc_state, "OFF", T)
        .await
        .expect("line_crossing OFF with the alarm's false");
    tokio::time::sleep(QUIET).await;

    assert_eq!(col.on(&format!("{ch}/line_crossing/event")).len(), 1);
    assert_eq!(payloads(&col, &alarm), ["ON", "OFF"]);
    let states = payloads(&col, &lc_state);
    assert_eq!(states.first().map(String::as_str), Some("ON"));
    assert_eq!(states.last().map(String::as_str), Some("OFF"));
    assert_eq!(states.iter().filter(|p| *p == "OFF").count(), 1);
    assert!(
        !col.all().iter().any(|m| m.topic.contains("/intrusion/")),
        "intrusion never published"
    );
    assert!(col.on("camera/bridge/unparsed").is_empty());
    let kept = retained(broker.port, &format!("{ch}/#"), Duration::from_millis(500)).await;
    assert_eq!(kept.get(&alarm).map(|b| &b[..]), Some(&b"OFF"[..]));
    assert_eq!(kept.get(&lc_state).map(|b| &b[..]), Some(&b"OFF"[..]));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nvr_line_crossing_then_perimeter_alarm_holds_it_until_false() {
    // The status after the data post (the order IP cameras use): evidence still ON.
    let Some((_broker, col, bridge)) = setup("[categories.line_crossing]\noff_delay = 4\n").await
    else {
        return;
    };
    let ch = "camera/02_00_5e_aa_30_04_ch4";
    let alarm = format!("{ch}/alarm/perimeterAlarm_1");
    let lc_state = format!("{ch}/line_crossing/state");
    send(&bridge, "nvr-line-crossing-tripwire.xml").await;
    col.wait_payload(&lc_state, "ON", T)
        .await
        .expect("line_crossing ON");
    send(&bridge, "nvr-alarm-status-perimeter-on.xml").await;
    col.wait_payload(&alarm, "ON", T).await.expect("alarm ON");
    // Past the 4 s off_delay of the detection.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        !payloads(&col, &lc_state).contains(&"OFF".to_owned()),
        "{:?}",
        payloads(&col, &lc_state)
    );
    send(&bridge, "nvr-alarm-status-perimeter-off.xml").await;
    col.wait_payload(&lc_state, "OFF", T)
        .await
        .expect("line_crossing OFF with the false");
    tokio::time::sleep(QUIET).await;
    assert_eq!(payloads(&col, &alarm), ["ON", "OFF"]);
    assert!(!col.all().iter().any(|m| m.topic.contains("/intrusion/")));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_intrusion_then_its_perimeter_alarm_holds_intrusion() {
    // On an IP camera perimeterAlarm is intrusion; it comes after the data post.
    let Some((broker, col, bridge)) = setup("[categories.intrusion]\noff_delay = 2\n").await else {
        return;
    };
    let dev = "camera/02_00_5e_10_30_02";
    let state = format!("{dev}/intrusion/state");
    let alarm = format!("{dev}/alarm/perimeterAlarm_1");
    send(&bridge, "ipc-pea-intrusion-start.xml").await;
    let ev = col
        .wait_for(|m| m.topic == format!("{dev}/intrusion/event"), T)
        .await
        .expect("intrusion event")
        .json();
    assert_eq!(ev["rules"][0]["event_id"], 7101);
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(&bridge, "ipc-alarm-status-perimeter-on.xml").await;
    col.wait_payload(&alarm, "ON", T).await.expect("alarm ON");
    // Past the 2 s off_delay: still ON.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !payloads(&col, &state).contains(&"OFF".to_owned()),
        "{:?}",
        payloads(&col, &state)
    );
    send(&bridge, "ipc-alarm-status-perimeter-off.xml").await;
    col.wait_payload(&state, "OFF", T)
        .await
        .expect("intrusion OFF with the false");
    tokio::time::sleep(QUIET).await;
    assert_eq!(payloads(&col, &alarm), ["ON", "OFF"]);
    // One detection: one event, its images once; the status added none.
    assert_eq!(col.on(&format!("{dev}/intrusion/event")).len(), 1);
    assert_eq!(col.on(&format!("{dev}/intrusion/image")).len(), 1);
    assert_eq!(col.on(&format!("{dev}/intrusion/target")).len(), 1);
    assert_eq!(col.on("camera/intrusion/image").len(), 1);
    assert_eq!(col.on(&format!("{dev}/intrusion/last")).len(), 1);
    let kept = retained(broker.port, &format!("{dev}/#"), Duration::from_millis(500)).await;
    assert_eq!(kept.get(&state).map(|b| &b[..]), Some(&b"OFF"[..]));
    assert_eq!(kept.get(&alarm).map(|b| &b[..]), Some(&b"OFF"[..]));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avd_scene_change_status_pair_around_its_data_post() {
    let Some((broker, col, bridge)) = setup("").await else {
        return;
    };
    let dev = "camera/02_00_5e_10_30_03";
    let state = format!("{dev}/alarm/state");
    let alarm = format!("{dev}/alarm/sceneChange_1");
    send(&bridge, "ipc-alarm-status-scene-change-on.xml").await;
    col.wait_payload(&state, "ON", T).await.expect("tamper ON");
    col.wait_payload(&alarm, "ON", T).await.expect("alarm ON");
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(&bridge, "ipc-avd-scene-change.xml").await;
    let ev = col
        .wait_for(|m| m.topic == format!("{dev}/alarm/event"), T)
        .await
        .expect("AVD event")
        .json();
    assert_eq!(ev["raw_type"], "AVD");
    assert_eq!(ev["subtype"], "tamper");
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(&bridge, "ipc-alarm-status-scene-change-off.xml").await;
    col.wait_payload(&alarm, "OFF", T).await.expect("alarm OFF");
    col.wait_payload(&state, "OFF", T)
        .await
        .expect("tamper OFF");
    tokio::time::sleep(QUIET).await;
    assert_eq!(col.on(&format!("{dev}/alarm/event")).len(), 1, "one event");
    assert_eq!(
        col.on(&format!("{dev}/alarm/last")).len(),
        1,
        "only the data post sets last"
    );
    assert_eq!(payloads(&col, &alarm), ["ON", "OFF"]);
    assert_eq!(
        payloads(&col, &state).last().map(String::as_str),
        Some("OFF")
    );
    let c = components(&col, "02005e103003");
    assert_eq!(c["alarm"]["platform"], "binary_sensor");
    assert_eq!(c["alarm"]["device_class"], "problem");
    assert_eq!(c["alarm"]["state_topic"], state);
    assert!(col.on("camera/bridge/unparsed").is_empty());
    let kept = retained(broker.port, &format!("{dev}/#"), Duration::from_millis(500)).await;
    assert_eq!(kept.get(&state).map(|b| &b[..]), Some(&b"OFF"[..]));
    assert_eq!(kept.get(&alarm).map(|b| &b[..]), Some(&b"OFF"[..]));
    bridge.stop().await;
}
