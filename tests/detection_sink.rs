//! What an object detector found, from the MQTT sink to a real Mosquitto (issue 12): the
//! annotated picture (`<base>/<device>/<category>/annotated`, retained, within the broker's
//! packet limit), and per device and label the "<Label> detected" binary sensor
//! (`objects/<label>/state`: `ON`, then `OFF` after the object off delay) and the
//! "<Label> count" sensor (`objects/<label>/count`), with their Home Assistant discovery; the
//! per-device label cap and hostile labels.
//!
//! The sink runs in-process and is fed `Routed::Event`s as the pipeline's detector stage
//! makes them (detection filled in, annotated image added). Skips (with a message) when
//! `/usr/sbin/mosquitto` is not installed.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use camqtt::event::{
    Attributes, Category, DetectedObject, Detection, DetectionState, Device, DeviceInfo,
    DeviceKind, Event, Image, ImageRole, KnownDevices, Phase, PixelBox, Routed, TimeSource,
};
use camqtt::sinks::mqtt::{self, BrokerAddr, HaConfig, MqttSinkConfig, SinkError};
use camqtt::spool::{Buffer, MemoryConfig};
use camqtt::telemetry::Telemetry;
use common::{Collector, ConfiguredMosquitto, Mosquitto, Msg, retained};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEV: &str = "gate_cam";
const DISCOVERY: &str = "homeassistant/device/camqtt_585b6940f40e/config";
const T: Duration = Duration::from_secs(10);
/// The object off delay of these tests: short, the tests wait for messages, not for time.
const OFF_DELAY: Duration = Duration::from_millis(1500);

fn cfg(port: u16, client_id: &str) -> MqttSinkConfig {
    let mut c = MqttSinkConfig::new(BrokerAddr::tcp("127.0.0.1", port));
    c.client_id = client_id.to_owned();
    c.homeassistant = Some(HaConfig {
        republish_delay: (Duration::from_millis(50), Duration::from_millis(150)),
        discovery_settle: Duration::from_millis(300),
        ..HaConfig::default()
    });
    c.object_off_delay = OFF_DELAY;
    c
}

struct Sink {
    buffer: Buffer,
    token: CancellationToken,
    task: JoinHandle<Result<(), SinkError>>,
}

impl Sink {
    /// A Mosquitto, a collector on `#` and a sink with client id `client_id` that is online
    /// (`camera/bridge/state`); `None` (the test skips) without Mosquitto.
    async fn online(client_id: &str) -> Option<(Mosquitto, Collector, Sink)> {
        let broker = Mosquitto::try_start()?;
        let col = Collector::start(broker.port, "#").await;
        let sink = Sink::start(cfg(broker.port, client_id));
        col.wait_payload("camera/bridge/state", "online", T)
            .await
            .expect("bridge online");
        Some((broker, col, sink))
    }

    fn start(cfg: MqttSinkConfig) -> Sink {
        let telemetry = Telemetry::new();
        let buffer = Buffer::memory(MemoryConfig::default(), telemetry.clone());
        let token = CancellationToken::new();
        let reader = buffer.reader();
        let task = tokio::spawn(mqtt::run(
            cfg,
            KnownDevices::default(),
            reader,
            telemetry,
            token.clone(),
        ));
        Sink {
            buffer,
            token,
            task,
        }
    }

    async fn send(&self, r: Routed) {
        self.buffer.append(r).await;
    }

    async fn stop(self) {
        self.token.cancel();
        let r = tokio::time::timeout(Duration::from_secs(6), self.task).await;
        assert!(
            matches!(r, Ok(Ok(Ok(())))),
            "sink did not stop cleanly: {r:?}"
        );
    }
}

fn device() -> Device {
    Device {
        id: DEV.to_owned(),
        name: "Gate".to_owned(),
        info: DeviceInfo {
            mac: Some("58:5b:69:40:f4:0e".into()),
            ip: Some("192.168.1.51".into()),
            peer: Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 51))),
            kind: DeviceKind::Camera,
            ..DeviceInfo::default()
        },
        hw_key: "585b6940f40e".to_owned(),
        parent: None,
        area: None,
    }
}

/// JPEG-like bytes: SOI, a body that depends on `seed`, EOI.
fn jpeg(len: usize, seed: u8) -> Bytes {
    let mut v = vec![seed; len];
    v[..2].copy_from_slice(&[0xff, 0xd8]);
    v[len - 2..].copy_from_slice(&[0xff, 0xd9]);
    Bytes::from(v)
}

fn image(role: ImageRole, data: Bytes) -> Image {
    Image {
        role,
        data,
        content_type: "image/jpeg".into(),
        width: Some(640),
        height: Some(360),
        target_id: None,
    }
}

/// An intrusion detection with its overview and annotated copy, and what the detector found
/// (`labels`, one object each).
fn detected(labels: &[&str], overview: Bytes, annotated: Bytes) -> Routed {
    let now = SystemTime::now();
    let bbox = PixelBox {
        x_min: 10,
        y_min: 20,
        x_max: 110,
        y_max: 220,
    };
    let e = Event {
        device: DeviceInfo::default(),
        category: Category::Intrusion,
        phase: Phase::Pulse,
        time: now,
        time_source: TimeSource::Receiver,
        time_raw: None,
        received: now,
        source: "viewtron".into(),
        raw_type: "PEA".into(),
        envelope: Some("ipc".into()),
        config_version: None,
        attrs: Attributes::default(),
        images: vec![
            image(ImageRole::Overview, overview),
            image(ImageRole::Annotated, annotated),
        ],
        warnings: vec![],
        provenance: None,
        detection: Some(Detection {
            state: DetectionState::Ok,
            detector: "deepstack".into(),
            objects: (labels.iter())
                .map(|l| DetectedObject {
                    label: (*l).to_owned(),
                    confidence: 0.91,
                    bbox,
                })
                .collect(),
            error: None,
        }),
    };
    Routed::Event {
        device: device(),
        event: Arc::new(e),
        counts: Default::default(),
    }
}

fn topic(leaf: &str) -> String {
    format!("camera/{DEV}/{leaf}")
}

fn payloads(col: &Collector, t: &str) -> Vec<String> {
    col.on(t).iter().map(Msg::text).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_picture_and_label_sensors_turn_on_count_and_off() {
    let Some((broker, col, sink)) = Sink::online("detect-a").await else {
        return;
    };

    let (overview, annotated) = (jpeg(30_000, 1), jpeg(31_000, 2));
    sink.send(detected(
        &["person", "car", "person"],
        overview.clone(),
        annotated.clone(),
    ))
    .await;

    // Discovery: the annotated image entity and the label sensors, HA conventions.
    let d = col
        .wait_for(|m| m.topic == DISCOVERY, T)
        .await
        .expect("device discovery")
        .json();
    assert_eq!(d["device"]["identifiers"][0], "camqtt_585b6940f40e");
    assert_eq!(d["device"]["name"], "Gate");
    assert_eq!(d["availability_mode"], "all");
    let avail: Vec<&str> = (d["availability"].as_array().unwrap().iter())
        .filter_map(|a| a["topic"].as_str())
        .collect();
    assert_eq!(avail, ["camera/bridge/state", &topic("availability")]);
    let c = &d["components"];
    let img = &c["intrusion_annotated"];
    assert_eq!(img["platform"], "image");
    assert_eq!(img["name"], "Intrusion annotated");
    assert_eq!(img["image_topic"], topic("intrusion/annotated"));
    assert_eq!(img["unique_id"], "camqtt_585b6940f40e_intrusion_annotated");
    for (label, name) in [("person", "Person"), ("car", "Car")] {
        let b = &c[format!("{label}_detected").as_str()];
        assert_eq!(b["platform"], "binary_sensor");
        assert_eq!(b["name"], format!("{name} detected"));
        assert_eq!(b["device_class"], "occupancy");
        assert_eq!(b["off_delay"], 1, "whole seconds, at least 1");
        assert_eq!(b["state_topic"], topic(&format!("objects/{label}/state")));
        assert_eq!(
            (b["payload_on"].as_str(), b["payload_off"].as_str()),
            (Some("ON"), Some("OFF"))
        );
        assert_eq!(
            b["unique_id"],
            format!("camqtt_585b6940f40e_{label}_detected")
        );
        assert_eq!(
            b["default_entity_id"],
            format!("binary_sensor.{DEV}_{label}_detected")
        );
        let n = &c[format!("{label}_count").as_str()];
        assert_eq!(n["platform"], "sensor");
        assert_eq!(n["name"], format!("{name} count"));
        assert_eq!(n["state_class"], "measurement");
        assert_eq!(n["state_topic"], topic(&format!("objects/{label}/count")));
        assert_eq!(
            n["default_entity_id"],
            format!("sensor.{DEV}_{label}_count")
        );
    }

    // The annotated picture, byte for byte, beside the overview.
    let got = col
        .wait_for(|m| m.topic == topic("intrusion/annotated"), T)
        .await
        .expect("annotated picture");
    assert!(got.payload == annotated, "annotated picture differs");
    let got = col
        .wait_for(|m| m.topic == topic("intrusion/image"), T)
        .await
        .expect("overview");
    assert!(got.payload == overview);

    // Counts, then ON; then, without another picture, count 0 and OFF.
    col.wait_payload(&topic("objects/person/state"), "ON", T)
        .await
        .expect("person ON");
    col.wait_payload(&topic("objects/car/state"), "ON", T)
        .await
        .expect("car ON");
    let kept = retained(broker.port, "camera/#", Duration::from_millis(500)).await;
    let kept_text = |t: &str| {
        kept.get(&topic(t))
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    assert_eq!(kept_text("objects/person/count").as_deref(), Some("2"));
    assert_eq!(kept_text("objects/car/count").as_deref(), Some("1"));
    assert_eq!(
        kept_text("objects/person/state"),
        None,
        "ON is never retained"
    );
    assert_eq!(kept.get(&topic("intrusion/annotated")), Some(&annotated));

    col.wait_payload(&topic("objects/person/state"), "OFF", T)
        .await
        .expect("person OFF after the off delay");
    col.wait_payload(&topic("objects/car/state"), "OFF", T)
        .await
        .expect("car OFF after the off delay");
    assert_eq!(payloads(&col, &topic("objects/person/count")), ["2", "0"]);
    assert_eq!(
        payloads(&col, &topic("objects/person/state")),
        ["ON", "OFF"]
    );
    assert_eq!(payloads(&col, &topic("objects/car/count")), ["1", "0"]);
    let pos = |t: &str, p: &str| {
        col.all()
            .iter()
            .position(|m| m.topic == topic(t) && m.text() == p)
            .unwrap()
    };
    assert!(pos("objects/person/count", "2") < pos("objects/person/state", "ON"));
    assert!(pos("objects/person/count", "0") < pos("objects/person/state", "OFF"));
    let event_at = col
        .all()
        .iter()
        .position(|m| m.topic == topic("intrusion/event"))
        .expect("event");
    assert!(
        pos("objects/person/state", "ON") < event_at,
        "ON before the event"
    );
    let kept = retained(broker.port, "camera/#", Duration::from_millis(500)).await;
    let kept_text = |t: &str| {
        kept.get(&topic(t))
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    assert_eq!(kept_text("objects/person/state").as_deref(), Some("OFF"));
    assert_eq!(kept_text("objects/person/count").as_deref(), Some("0"));

    // A second picture with one person: only the person sensors move, no new discovery.
    col.clear();
    sink.send(detected(&["person"], overview.clone(), annotated.clone()))
        .await;
    col.wait_payload(&topic("objects/person/state"), "ON", T)
        .await
        .expect("person ON again");
    col.wait_payload(&topic("objects/person/state"), "OFF", T)
        .await
        .expect("person OFF again");
    assert_eq!(payloads(&col, &topic("objects/person/count")), ["1", "0"]);
    assert!(col.on(&topic("objects/car/state")).is_empty());
    assert!(col.on(DISCOVERY).is_empty(), "nothing new to announce");
    // The event JSON carries what the detector found.
    let ev = col
        .wait_for(|m| m.topic == topic("intrusion/event"), T)
        .await
        .expect("event")
        .json();
    assert_eq!(ev["detection"], "ok");
    assert_eq!(ev["objects"][0]["label"], "person");
    assert_eq!(ev["objects"][0]["box"]["x_max"], 110);
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_labels_are_capped_and_stay_single_level() {
    let Some((_broker, col, sink)) = Sink::online("detect-b").await else {
        return;
    };
    let mut labels: Vec<String> = vec![
        "../../#".into(),
        "+/+".into(),
        "$SYS/x".into(),
        "Traffic Light".into(),
        "人".into(),
        "a\u{0}b\nc".into(),
        "x".repeat(10_000),
    ];
    labels.extend((0..60).map(|i| format!("thing {i:02}")));
    let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
    sink.send(detected(&refs, jpeg(2_000, 3), jpeg(2_100, 4)))
        .await;

    let d = col
        .wait_for(|m| m.topic == DISCOVERY, T)
        .await
        .expect("device discovery")
        .json();
    let comps = d["components"].as_object().unwrap();
    let sensors: Vec<&String> = comps.keys().filter(|k| k.ends_with("_detected")).collect();
    assert_eq!(sensors.len(), 32, "{sensors:?}");
    assert_eq!(comps.keys().filter(|k| k.ends_with("_count")).count(), 32);
    for (key, comp) in comps {
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "component key {key}"
        );
        if let Some(uid) = comp["unique_id"].as_str() {
            assert!(uid.len() <= 80, "{uid}");
        }
    }
    assert_eq!(
        comps["traffic_light_detected"]["name"],
        "Traffic Light detected"
    );
    assert_eq!(comps["a_b_c_count"]["name"], "A b c count");
    assert!(comps.contains_key("sys_x_detected"));

    // Exactly the capped labels get topics, one level each under objects/.
    let counts = col
        .wait_count(
            |m| m.topic.starts_with(&topic("objects/")) && m.topic.ends_with("/state"),
            32,
            T,
        )
        .await;
    assert_eq!(counts.len(), 32);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let object_topics: Vec<String> = (col.all().into_iter())
        .map(|m| m.topic)
        .filter(|t| t.contains("/objects/"))
        .collect();
    for t in &object_topics {
        let levels: Vec<&str> = t.split('/').collect();
        assert_eq!(levels.len(), 5, "{t}");
        assert!(
            levels[3]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{t}"
        );
        assert!(levels[3].len() <= 32, "{t}");
    }
    let keys: std::collections::BTreeSet<&str> = object_topics
        .iter()
        .map(|t| t.split('/').nth(3).unwrap())
        .collect();
    assert_eq!(keys.len(), 32, "{keys:?}");
    assert!(!col.all().iter().any(|m| m.topic.starts_with("$")));

    // A label beyond the cap, later: nothing at all.
    col.clear();
    sink.send(detected(&["zebra"], jpeg(2_000, 5), jpeg(2_100, 6)))
        .await;
    col.wait_for(|m| m.topic == topic("intrusion/event"), T)
        .await
        .expect("event");
    assert!(!col.all().iter().any(|m| m.topic.contains("zebra")));
    assert!(col.on(DISCOVERY).is_empty());
    sink.stop().await;
}

/// Mosquitto with `max_packet_size` 64 KiB, announced in its MQTT 5 CONNACK.
fn capped_broker() -> Option<ConfiguredMosquitto> {
    if !Mosquitto::available() {
        eprintln!("skipping: {} not installed", common::MOSQUITTO);
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    Some(ConfiguredMosquitto::start(dir, 1, |p| {
        format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_packet_size 65536\n",
            p[0]
        )
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_annotated_picture_over_the_broker_limit_is_left_out_not_the_event() {
    let Some(broker) = capped_broker() else {
        return;
    };
    let port = broker.ports[0];
    let col = Collector::start(port, "#").await;
    let sink = Sink::start(cfg(port, "detect-c"));
    col.wait_payload("camera/bridge/state", "online", T)
        .await
        .expect("bridge online");
    let (overview, annotated) = (jpeg(20_000, 7), jpeg(90_000, 8));
    sink.send(detected(&["person"], overview.clone(), annotated))
        .await;
    let ev = col
        .wait_for(|m| m.topic == topic("intrusion/event"), T)
        .await
        .expect("event")
        .json();
    let warnings = ev["warnings"].to_string();
    assert!(
        warnings.contains("annotated image of 90000 bytes not published"),
        "{warnings}"
    );
    col.wait_payload(&topic("objects/person/state"), "ON", T)
        .await
        .expect("person ON");
    col.wait_payload(&topic("objects/person/count"), "1", T)
        .await
        .expect("person count");
    let got = col
        .wait_for(|m| m.topic == topic("intrusion/image"), T)
        .await
        .expect("overview");
    assert!(got.payload == overview);
    assert!(col.on(&topic("intrusion/annotated")).is_empty());
    assert!(
        !col.on("camera/bridge/state")
            .iter()
            .any(|m| m.text() == "offline"),
        "no reconnect"
    );
    sink.stop().await;
}

/// As the pipeline sends them: the registry's capabilities (without labels) and right after
/// it the event the detector stage filled in. The label sensors come in a second discovery
/// message, spaced from the first (Home Assistant drops what arrives while it still sets up
/// the previous one), and their ON only after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_added_right_after_the_registry_announce_come_in_a_later_discovery() {
    let Some((_broker, col, sink)) = Sink::online("detect-d").await else {
        return;
    };
    let routed = detected(&["person"], jpeg(3_000, 9), jpeg(3_100, 10));
    let Routed::Event { event, .. } = &routed else {
        unreachable!()
    };
    let mut caps = camqtt::event::DeviceCaps::default();
    caps.record(&Event {
        detection: None,
        images: vec![image(ImageRole::Overview, jpeg(3_000, 9))],
        ..(**event).clone()
    });
    sink.send(Routed::Seen {
        device: device(),
        caps: Arc::new(caps),
    })
    .await;
    sink.send(routed).await;
    let on = col
        .wait_payload(&topic("objects/person/state"), "ON", T)
        .await
        .expect("person ON");
    let discoveries = col.on(DISCOVERY);
    assert_eq!(discoveries.len(), 2, "announce, then the labels");
    let first = discoveries[0].json();
    let second = discoveries[1].json();
    assert!(first["components"].get("person_detected").is_none());
    assert!(second["components"].get("person_detected").is_some());
    assert!(second["components"].get("intrusion_annotated").is_some());
    assert!(discoveries[1].at >= discoveries[0].at);
    assert!(
        on.at >= discoveries[1].at,
        "ON only after its entity was announced"
    );
    let all = col.all();
    let at = |pred: &dyn Fn(&Msg) -> bool| all.iter().position(pred).unwrap();
    assert!(
        at(&|m| m.topic == DISCOVERY && m.json()["components"].get("person_detected").is_some())
            < at(&|m| m.topic == topic("objects/person/state"))
    );
    sink.stop().await;
}
