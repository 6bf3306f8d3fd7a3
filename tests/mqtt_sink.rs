//! The MQTT sink against a real Mosquitto: retained flags, discovery, byte-identical images,
//! last will, graceful shutdown, HA birth re-publish, broker restart.
//!
//! Skips (with a message) when `/usr/sbin/mosquitto` is not installed.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use camqtt::event::{
    Attributes, Category, Device, DeviceCaps, DeviceInfo, DeviceKind, DeviceRecord, Event, Image,
    ImageRole, KnownDevices, Phase, Plate, Routed, TimeSource, Unparsed,
};
use camqtt::sinks::mqtt::{self, BrokerAddr, HaConfig, MqttSinkConfig, SinkError};
use camqtt::spool::{Buffer, MemoryConfig};
use camqtt::telemetry::Telemetry;
use common::{Collector, Mosquitto, retained};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEV: &str = "58_5b_69_40_f4_0d";
const T: Duration = Duration::from_secs(10);

fn cfg(port: u16, client_id: &str) -> MqttSinkConfig {
    let mut c = MqttSinkConfig::new(BrokerAddr::tcp("127.0.0.1", port));
    c.client_id = client_id.to_owned();
    c.homeassistant = Some(HaConfig {
        republish_delay: (Duration::from_millis(50), Duration::from_millis(150)),
        ..HaConfig::default()
    });
    c
}

struct Sink {
    tx: Feed,
    token: CancellationToken,
    task: JoinHandle<Result<(), SinkError>>,
}

/// The pipeline's side of the sink's buffer (a memory buffer, as with the spool off).
struct Feed(Buffer);

impl Feed {
    async fn send(&self, r: Routed) -> Result<(), std::convert::Infallible> {
        self.0.append(r).await;
        Ok(())
    }
}

fn start(cfg: MqttSinkConfig) -> Sink {
    start_known(cfg, KnownDevices::default())
}

/// Start with the devices the pipeline's registry would hand over.
fn start_known(cfg: MqttSinkConfig, known: KnownDevices) -> Sink {
    let telemetry = Telemetry::new();
    let buffer = Buffer::memory(MemoryConfig::default(), telemetry.clone());
    let token = CancellationToken::new();
    let reader = buffer.reader();
    let task = tokio::spawn(mqtt::run(cfg, known, reader, telemetry, token.clone()));
    Sink {
        tx: Feed(buffer),
        token,
        task,
    }
}

fn device() -> Device {
    Device {
        id: DEV.to_owned(),
        name: "Driveway".to_owned(),
        info: DeviceInfo {
            mac: Some("58:5b:69:40:f4:0d".into()),
            serial: Some("SN1".into()),
            ip: Some("192.168.1.50".into()),
            peer: Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 50))),
            kind: DeviceKind::Camera,
            manufacturer: Some("Viewtron".into()),
            ..DeviceInfo::default()
        },
        hw_key: "585b6940f40d".to_owned(),
        parent: None,
        area: None,
    }
}

/// A JPEG-like payload: SOI marker, pseudo-random body, EOI marker.
fn jpeg(len: usize, seed: u32) -> Bytes {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&[0xff, 0xd8]);
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    while v.len() < len - 2 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v.extend_from_slice(&[0xff, 0xd9]);
    Bytes::from(v)
}

fn image(role: ImageRole, data: Bytes) -> Image {
    Image {
        role,
        data,
        content_type: "image/jpeg".into(),
        width: None,
        height: None,
        target_id: None,
    }
}

/// A pulse event from the test device (received now, IPC envelope), routed.
fn pulse(category: Category, raw_type: &str, attrs: Attributes, images: Vec<Image>) -> Routed {
    let now = SystemTime::now();
    let e = Event {
        device: DeviceInfo::default(),
        category,
        phase: Phase::Pulse,
        time: now,
        time_source: TimeSource::Receiver,
        time_raw: None,
        received: now,
        source: "viewtron".into(),
        raw_type: raw_type.into(),
        envelope: Some("ipc".into()),
        config_version: None,
        attrs,
        images,
        warnings: vec![],
        provenance: None,
        detection: None,
    };
    Routed::Event {
        device: device(),
        event: Arc::new(e),
        counts: Default::default(),
    }
}

fn lpr_event(plate: &str, overview: Bytes, target: Bytes) -> Routed {
    let attrs = Attributes {
        plates: vec![Plate {
            plate: plate.into(),
            list: Some("whiteList".into()),
            ..Plate::default()
        }],
        ..Attributes::default()
    };
    let images = vec![
        image(ImageRole::Overview, overview),
        image(ImageRole::Target, target),
    ];
    pulse(Category::Lpr, "VEHICE", attrs, images)
}

fn topic(leaf: &str) -> String {
    format!("camera/{DEV}/{leaf}")
}

const DEV_DISCOVERY: &str = "homeassistant/device/camqtt_585b6940f40d/config";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_images_events_retained_flags_and_clean_shutdown() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let col = Collector::start(broker.port, "#").await;
    let sink = start(cfg(broker.port, "sink-a"));

    let online = col
        .wait_payload("camera/bridge/state", "online", T)
        .await
        .expect("bridge online");
    let bridge = col
        .wait_for(
            |m| m.topic == "homeassistant/device/camqtt_bridge_sink_a/config",
            T,
        )
        .await
        .expect("bridge discovery");
    let b = bridge.json();
    assert_eq!(
        b["components"]["connectivity"]["state_topic"],
        "camera/bridge/state"
    );
    assert!(!bridge.text().contains("\"object_id\""));
    let info = col
        .wait_for(|m| m.topic == "camera/bridge/info", T)
        .await
        .expect("bridge info")
        .json();
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["client_id"], "sink-a");

    // A ~600 KB overview and a crop.
    let overview = jpeg(600 * 1024, 1);
    let target = jpeg(20 * 1024, 2);
    sink.tx
        .send(lpr_event("AIDRIVE", overview.clone(), target.clone()))
        .await
        .unwrap();

    let disc = col
        .wait_for(|m| m.topic == DEV_DISCOVERY, T)
        .await
        .expect("device discovery");
    let d = disc.json();
    assert!(!disc.text().contains("\"object_id\""));
    assert_eq!(d["availability_mode"], "all");
    assert_eq!(d["device"]["connections"][0][1], "58:5b:69:40:f4:0d");
    assert_eq!(d["components"]["lpr_event"]["event_types"][0], "plate_read");
    assert_eq!(d["components"]["lpr_image"]["content_type"], "image/jpeg");
    assert_eq!(d["components"]["lpr"]["off_delay"], 10);
    assert!(disc.at >= online.at);

    let cat_img = col
        .wait_for(|m| m.topic == "camera/lpr/image", T)
        .await
        .expect("category image");
    let dev_img = col
        .wait_for(|m| m.topic == topic("lpr/image"), T)
        .await
        .expect("device image");
    let dev_tgt = col
        .wait_for(|m| m.topic == topic("lpr/target"), T)
        .await
        .expect("target image");
    assert_eq!(cat_img.payload.len(), 600 * 1024);
    assert!(cat_img.payload == overview, "category image differs");
    assert!(dev_img.payload == overview, "device image differs");
    assert!(dev_tgt.payload == target, "target differs");

    let ev = col
        .wait_for(|m| m.topic == topic("lpr/event"), T)
        .await
        .expect("event");
    let j = ev.json();
    assert_eq!(j["event_type"], "plate_read");
    assert_eq!(j["plate"], "AIDRIVE");
    assert_eq!(j["images"]["overview_bytes"], 600 * 1024);
    assert!(ev.payload.len() < 4096, "no image data in the event JSON");
    // The event waited for HA to subscribe to the new entity.
    let waited = ev.at.duration_since(disc.at);
    assert!(
        waited >= Duration::from_millis(1300),
        "event only {waited:?} after discovery"
    );
    let on = col
        .wait_payload(&topic("lpr/state"), "ON", T)
        .await
        .expect("state ON");
    assert!(on.at.duration_since(disc.at) >= Duration::from_millis(1300));
    assert_eq!(
        col.wait_for(|m| m.topic == topic("lpr/plate"), T)
            .await
            .unwrap()
            .text(),
        "AIDRIVE"
    );
    assert_eq!(
        col.wait_for(|m| m.topic == topic("lpr/list"), T)
            .await
            .unwrap()
            .text(),
        "whiteList"
    );

    // What the broker keeps.
    let kept = retained(broker.port, "#", Duration::from_millis(700)).await;
    assert_eq!(
        kept.get("camera/bridge/state").map(|b| b.as_ref()),
        Some(&b"online"[..])
    );
    assert!(kept.contains_key(DEV_DISCOVERY));
    assert!(kept.contains_key("homeassistant/device/camqtt_bridge_sink_a/config"));
    assert!(kept.contains_key("camera/bridge/info"));
    assert_eq!(
        kept.get(&topic("availability")).map(|b| b.as_ref()),
        Some(&b"online"[..])
    );
    assert_eq!(
        kept.get(&topic("lpr/image")),
        Some(&overview),
        "device image retained, byte-identical"
    );
    assert_eq!(kept.get(&topic("lpr/target")), Some(&target));
    assert_eq!(
        kept.get(&topic("lpr/plate")).map(|b| b.as_ref()),
        Some(&b"AIDRIVE"[..])
    );
    assert!(kept.contains_key(&topic("lpr/last")));
    assert!(
        !kept.contains_key(&topic("lpr/event")),
        "events are never retained"
    );
    assert!(
        !kept.contains_key(&topic("lpr/state")),
        "ON is never retained"
    );
    assert!(
        !kept.contains_key("camera/lpr/image"),
        "category image not retained by default"
    );

    // Unparsed input goes to the bridge topic, not retained.
    sink.tx
        .send(Routed::Unparsed(Unparsed {
            peer: "10.1.2.3".into(),
            source: "viewtron".into(),
            reason: "not-xml".into(),
            detail: "garbage".into(),
            path: None,
            body: "xx".into(),
            body_len: 2,
        }))
        .await
        .unwrap();
    let Some(u) = col
        .wait_for(|m| m.topic == "camera/bridge/unparsed", T)
        .await
    else {
        let seen: Vec<_> = col
            .all()
            .iter()
            .map(|m| (m.topic.clone(), m.payload.len(), m.at))
            .collect();
        panic!("no unparsed; seen {seen:#?}\nbroker log:\n{}", broker.log());
    };
    assert_eq!(u.json()["reason"], "not-xml");

    // Graceful shutdown: offline (retained) and run returns Ok.
    sink.token.cancel();
    col.wait_payload("camera/bridge/state", "offline", T)
        .await
        .expect("offline on shutdown");
    let r = tokio::time::timeout(Duration::from_secs(6), sink.task)
        .await
        .expect("run returned")
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    let kept = retained(
        broker.port,
        "camera/bridge/state",
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(
        kept.get("camera/bridge/state").map(|b| b.as_ref()),
        Some(&b"offline"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_when_the_sink_dies() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let col = Collector::start(broker.port, "camera/bridge/state").await;
    let sink = start(cfg(broker.port, "sink-b"));
    col.wait_payload("camera/bridge/state", "online", T)
        .await
        .expect("online");
    col.clear();
    sink.task.abort();
    let m = col
        .wait_payload("camera/bridge/state", "offline", T)
        .await
        .expect("last will");
    assert_eq!(m.text(), "offline");
    let kept = retained(
        broker.port,
        "camera/bridge/state",
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(
        kept.get("camera/bridge/state").map(|b| b.as_ref()),
        Some(&b"offline"[..]),
        "LWT is retained"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_birth_triggers_republish_of_discovery_and_states() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let col = Collector::start(broker.port, "#").await;
    let sink = start(cfg(broker.port, "sink-c"));
    col.wait_payload("camera/bridge/state", "online", T)
        .await
        .expect("online");
    sink.tx
        .send(Routed::Seen {
            device: device(),
            caps: Default::default(),
        })
        .await
        .unwrap();
    col.wait_for(|m| m.topic == DEV_DISCOVERY, T)
        .await
        .expect("discovery");
    col.wait_payload(&topic("availability"), "online", T)
        .await
        .expect("availability");
    // Let the subscription to the HA status topic settle, then simulate HA's birth.
    tokio::time::sleep(Duration::from_millis(300)).await;
    col.clear();
    col.publish("homeassistant/status", "online", false).await;
    let again = col
        .wait_for(|m| m.topic == DEV_DISCOVERY, T)
        .await
        .expect("discovery re-published");
    assert_eq!(
        again.json()["components"]["connectivity"]["device_class"],
        "connectivity"
    );
    col.wait_for(
        |m| m.topic == "homeassistant/device/camqtt_bridge_sink_c/config",
        T,
    )
    .await
    .expect("bridge discovery");
    col.wait_payload(&topic("availability"), "online", T)
        .await
        .expect("availability re-published");
    assert!(col.all().iter().all(|m| !m.topic.ends_with("/event")));
    // 'offline' from HA does nothing.
    col.clear();
    col.publish("homeassistant/status", "offline", false).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(col.on(DEV_DISCOVERY).is_empty());
    sink.token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(6), sink.task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_reconnects_republishes_and_delivers_queued_events() {
    let Some(mut broker) = Mosquitto::try_start() else {
        return;
    };
    let sink = start(cfg(broker.port, "sink-d"));
    {
        let col = Collector::start(broker.port, "#").await;
        col.wait_payload("camera/bridge/state", "online", T)
            .await
            .expect("online");
        sink.tx
            .send(lpr_event("FIRST", jpeg(4096, 3), jpeg(512, 4)))
            .await
            .unwrap();
        col.wait_for(|m| m.topic == topic("lpr/event"), T)
            .await
            .expect("first event");
    }
    broker.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Sent while the broker is down: the event waits in the buffer.
    sink.tx
        .send(lpr_event("DURING", jpeg(4096, 5), jpeg(512, 6)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.restart();
    let col = Collector::start(broker.port, "#").await;
    // Retained data died with the broker; the sink re-publishes it after reconnecting.
    col.wait_payload("camera/bridge/state", "online", Duration::from_secs(40))
        .await
        .expect("online after restart");
    col.wait_for(|m| m.topic == DEV_DISCOVERY, T)
        .await
        .expect("discovery after restart");
    col.wait_for(
        |m| m.topic == "homeassistant/device/camqtt_bridge_sink_d/config",
        T,
    )
    .await
    .expect("bridge discovery");
    // The retained plate is re-published on connect, then the buffered event moves it on.
    col.wait_payload(&topic("lpr/plate"), "DURING", T)
        .await
        .expect("plate after restart");
    assert_eq!(
        col.on(&topic("lpr/plate"))
            .last()
            .map(|m| m.text())
            .as_deref(),
        Some("DURING")
    );
    let ev = col
        .wait_for(
            |m| m.topic == topic("lpr/event") && m.json()["plate"] == "DURING",
            T,
        )
        .await
        .expect("event queued during the outage");
    assert!(!ev.retain);
    let kept = retained(broker.port, "camera/#", Duration::from_millis(500)).await;
    assert_eq!(
        kept.get(&topic("availability")).map(|b| b.as_ref()),
        Some(&b"online"[..])
    );
    assert!(kept.contains_key(&topic("lpr/image")));
    sink.token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(6), sink.task)
        .await
        .expect("run returned")
        .unwrap();
    assert!(r.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_does_not_block_the_pipeline() {
    // Nothing listens on this port.
    let port = common::free_port();
    let sink = start(cfg(port, "sink-e"));
    // The channel holds 64; sending far more must not block: the sink keeps receiving.
    let sent = tokio::time::timeout(Duration::from_secs(10), async {
        for i in 0..500 {
            sink.tx
                .send(lpr_event(&format!("P{i}"), jpeg(1024, i), jpeg(256, i + 1)))
                .await
                .unwrap();
        }
    })
    .await;
    assert!(sent.is_ok(), "sending blocked while the broker is away");
    sink.token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(6), sink.task)
        .await
        .expect("run returned")
        .unwrap();
    assert!(r.is_ok());
}

#[tokio::test]
async fn invalid_config_is_an_error() {
    let mut c = cfg(1883, "x");
    c.base_topic = "camera/#".into();
    let t = Telemetry::new();
    let buffer = Buffer::memory(MemoryConfig::default(), t.clone());
    let r = mqtt::run(
        c,
        KnownDevices::default(),
        buffer.reader(),
        t,
        CancellationToken::new(),
    )
    .await;
    assert!(matches!(r, Err(SinkError::Config(_))), "{r:?}");
}

/// A counting detection without device counters: the bridge counts one person.
fn counting_event() -> Routed {
    pulse(
        Category::Counting,
        "PASSLINE",
        Attributes::default(),
        vec![],
    )
}

/// A retained device-discovery payload of `id` hanging off `via`.
fn disc_of(id: &str, via: Option<&str>) -> String {
    let mut dev = serde_json::json!({"identifiers": [id], "name": id});
    if let Some(v) = via {
        dev["via_device"] = serde_json::json!(v);
    }
    serde_json::json!({"device": dev, "origin": {"name": "camqtt"}, "components": {}}).to_string()
}

async fn stop(sink: Sink) {
    sink.token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(8), sink.task)
        .await
        .expect("sink stopped")
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_discovery_is_cleared_and_known_devices_come_back() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };

    const BRIDGE: &str = "camqtt_bridge_sink_s";
    let d = |id: &str| format!("homeassistant/device/{id}/config");
    let stale_cam = d("camqtt_stalecam");
    let stale_cam_legacy = "homeassistant/sensor/camqtt_stalecam/lpr_last/config".to_owned();
    let stale_nvr = d("camqtt_stalenvr");
    let stale_ch = d("camqtt_stalenvr_ch1");
    let late_cam = d("camqtt_aabbcc000002");
    let preset: Vec<(String, String)> = vec![
        // (a) our stale camera, in both layouts
        (stale_cam.clone(), disc_of("camqtt_stalecam", Some(BRIDGE))),
        (
            stale_cam_legacy.clone(),
            disc_of("camqtt_stalecam", Some(BRIDGE)),
        ),
        // (b) our stale NVR and its channel
        (stale_nvr.clone(), disc_of("camqtt_stalenvr", Some(BRIDGE))),
        (
            stale_ch.clone(),
            disc_of("camqtt_stalenvr_ch1", Some("camqtt_stalenvr")),
        ),
        // (c) another instance's bridge, camera, NVR and channel
        (
            d("camqtt_bridge_other"),
            disc_of("camqtt_bridge_other", None),
        ),
        (
            d("camqtt_othercam"),
            disc_of("camqtt_othercam", Some("camqtt_bridge_other")),
        ),
        (
            d("camqtt_othernvr"),
            disc_of("camqtt_othernvr", Some("camqtt_bridge_other")),
        ),
        (
            d("camqtt_othernvr_ch1"),
            disc_of("camqtt_othernvr_ch1", Some("camqtt_othernvr")),
        ),
        // (d) configs of other integrations
        (d("zigbee_0x1234"), disc_of("zigbee_0x1234", Some(BRIDGE))),
        (
            "homeassistant/sensor/0x1234/temperature/config".to_owned(),
            disc_of("0x1234", Some(BRIDGE)),
        ),
        // ours from an earlier run: the camera that posts in the first run, and one that
        // posts only during the second run's scan
        (
            DEV_DISCOVERY.to_owned(),
            disc_of("camqtt_585b6940f40d", Some(BRIDGE)),
        ),
        (
            late_cam.clone(),
            disc_of("camqtt_aabbcc000002", Some(BRIDGE)),
        ),
    ];
    let untouched = &preset[4..10];
    let cleared = [&stale_cam, &stale_cam_legacy, &stale_nvr, &stale_ch];
    let col = Collector::start(broker.port, "#").await;
    for (t, p) in &preset {
        col.publish(t, p.clone(), true).await;
    }
    let mut kept = BTreeMap::new();
    for _ in 0..50 {
        kept = retained(broker.port, "homeassistant/#", Duration::from_millis(200)).await;
        if preset.iter().all(|(t, _)| kept.contains_key(t)) {
            break;
        }
    }
    assert!(preset.iter().all(|(t, _)| kept.contains_key(t)), "{kept:?}");
    let emptied = |col: &Collector, t: &str| col.on(t).iter().any(|m| m.payload.is_empty());

    // Run 1, no registry file (first start, or an unreadable one): nothing of an unknown
    // device may be cleared (it may just not have posted yet). The camera posts.
    col.clear();
    let c = cfg(broker.port, "sink-s");
    let sink = start(c.clone());
    col.wait_payload("camera/bridge/state", "online", T)
        .await
        .expect("bridge online");
    sink.tx.send(counting_event()).await.unwrap();
    sink.tx.send(counting_event()).await.unwrap();
    col.wait_payload(&topic("counting/enter_person"), "2", T)
        .await
        .expect("bridge-kept counter");
    tokio::time::sleep(mqtt::stale::SCAN_WINDOW + Duration::from_millis(700)).await;
    for (t, _) in &preset {
        assert!(!emptied(&col, t), "{t} cleared without a registry");
    }
    stop(sink).await;

    // Run 2 with the registry's records: the known camera is there before it posts; stale
    // devices of this bridge are cleared; a device posting during the scan is kept.
    col.clear();
    let Routed::Event { event: counted, .. } = counting_event() else {
        unreachable!()
    };
    let mut caps = DeviceCaps::default();
    caps.record(&counted);
    let record = DeviceRecord {
        device: device(),
        last_seen: SystemTime::now(),
        caps,
        counts: [("person".to_owned(), 2)].into(),
    };
    let known = KnownDevices {
        records: vec![record],
        authoritative: true,
    };
    let sink = start_known(c, known);
    // A camera the registry does not know posts while the scan runs.
    let mut late = device();
    late.id = "late_cam".into();
    late.hw_key = "aabbcc000002".into();
    late.info.mac = Some("aa:bb:cc:00:00:02".into());
    sink.tx
        .send(Routed::Seen {
            device: late,
            caps: Default::default(),
        })
        .await
        .unwrap();
    let disc = col
        .wait_for(|m| m.topic == DEV_DISCOVERY && !m.payload.is_empty(), T)
        .await
        .expect("known device's discovery re-published on connect");
    assert!(
        disc.json()["components"]
            .get("counting_enter_person")
            .is_some()
    );
    col.wait_payload(&topic("availability"), "offline", T)
        .await
        .expect("offline until it posts");
    col.wait_payload(&topic("counting/enter_person"), "2", T)
        .await
        .expect("saved counter re-published");

    // (a) and (b) are cleared with an empty retained message.
    for t in cleared {
        col.wait_for(|m| m.topic == *t && m.payload.is_empty(), T)
            .await
            .unwrap_or_else(|| panic!("{t} not cleared"));
    }
    let kept = retained(broker.port, "homeassistant/#", Duration::from_millis(700)).await;
    for t in cleared {
        assert!(!kept.contains_key(t), "{t} still retained");
    }
    // (c), (d) untouched, byte for byte.
    for (t, p) in untouched {
        assert_eq!(kept.get(t).map(|b| b.as_ref()), Some(p.as_bytes()), "{t}");
        assert!(!emptied(&col, t), "{t} was touched");
    }
    // The known camera, the late one and the bridge are current.
    for t in [DEV_DISCOVERY, late_cam.as_str(), d(BRIDGE).as_str()] {
        assert!(!emptied(&col, t), "{t} cleared");
        let p = kept.get(t).unwrap_or_else(|| panic!("{t} not retained"));
        let j: serde_json::Value = serde_json::from_slice(p).unwrap();
        assert!(j["components"]["connectivity"].is_object(), "{t}: {j}");
    }
    // Its counter continues from the saved value.
    sink.tx.send(counting_event()).await.unwrap();
    col.wait_payload(&topic("availability"), "online", T)
        .await
        .expect("online once it posts");
    col.wait_payload(&topic("counting/enter_person"), "3", T)
        .await
        .expect("counter continues from the saved value");
    stop(sink).await;
}
