//! What the broker can never take must not block the queue (issue 7, fault 1; DESIGN §5).
//!
//! Real Mosquitto with `max_packet_size`, real sockets, the bridge in-process:
//! * the broker announces its limit (MQTT 5 CONNACK), or `[mqtt] max_packet_size` says it: an
//!   image over the limit is skipped before sending — no reconnect, no `bridge/state` flap;
//! * nothing says it (MQTT 3.1.1, no setting): the broker drops the connection, the publish is
//!   retried alone once, then set aside (dead letter, `bridge/unparsed`) and the limit learned;
//! * the broker refuses a publish (MQTT 5 PUBACK "Not authorized" from an ACL): set aside,
//!   everything else delivered;
//! * a broker that only speaks MQTT 3.1.1: the bridge falls back to it;
//! * the shared field case `13-mqtt-broker-packet-limit` (skipped without `../shared`).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::bridge::Bridge;
use common::camera::{self, REPLY};
use common::logs::Logs;
use common::{Collector, ConfiguredMosquitto, Msg};

const LIMIT: usize = 131_072;

/// Mosquitto on one free port with `max_packet_size 131072`.
fn capped_broker() -> Option<ConfiguredMosquitto> {
    if !common::Mosquitto::available() {
        eprintln!("skipping: {} not installed", common::MOSQUITTO);
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    Some(ConfiguredMosquitto::start(dir, 1, |p| {
        format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_packet_size {LIMIT}\n",
            p[0]
        )
    }))
}

async fn post(addr: std::net::SocketAddr, body: &str) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let r = camera::exchange(&mut s, &camera::post("/API", body.as_bytes())).await;
    assert_eq!((r.code(), r.body.as_slice()), (200, REPLY));
}

/// The newest `bridge/info` JSON.
fn info(col: &Collector) -> serde_json::Value {
    col.on("camera/bridge/info")
        .last()
        .expect("bridge/info published")
        .json()
}

fn counter(col: &Collector, name: &str) -> u64 {
    info(col)["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {name} in bridge/info"))
}

fn offline_count(col: &Collector) -> usize {
    col.on("camera/bridge/state")
        .iter()
        .filter(|m| m.text() == "offline")
        .count()
}

/// The two posts of the scenario and what they must produce.
struct Scenario {
    big_mac: &'static str,
    small_mac: &'static str,
    big_overview: Vec<u8>,
    crop: Vec<u8>,
    small_overview: Vec<u8>,
    plate_crop: Vec<u8>,
    plate: &'static str,
}

impl Scenario {
    fn new(big_mac: &'static str, small_mac: &'static str, plate: &'static str) -> Scenario {
        Scenario {
            big_mac,
            small_mac,
            big_overview: camera::big_jpeg(160_000),
            crop: camera::image("crop.jpg"),
            small_overview: camera::image("overview.jpg"),
            plate_crop: camera::image("plate1.jpg"),
            plate,
        }
    }

    fn big(&self) -> String {
        camera::ipc_intrusion_with_images(self.big_mac, &self.big_overview, &self.crop)
    }

    fn small(&self) -> String {
        camera::ipc_lpr(
            self.small_mac,
            self.plate,
            &self.small_overview,
            &self.plate_crop,
        )
    }

    fn a(&self, leaf: &str) -> String {
        format!("camera/{}/{leaf}", camera::mac_slug(self.big_mac))
    }

    fn b(&self, leaf: &str) -> String {
        format!("camera/{}/{leaf}", camera::mac_slug(self.small_mac))
    }

    /// Post both (3 s apart) and check that everything that fits arrives within 10 s of the
    /// second post and the oversize overview never does. With `known_limit` the event JSON
    /// names the left-out overview (without, the first event JSON may go out before the
    /// limit is learned).
    async fn run(&self, bridge: &Bridge, col: &Collector, known_limit: bool) {
        assert!(self.big_overview.len() > LIMIT);
        post(bridge.addr, &self.big()).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        post(bridge.addr, &self.small()).await;
        let t = Duration::from_secs(10);
        let bytes = |topic: String, want: Vec<u8>| {
            move |m: &Msg| m.topic == topic && m.payload.as_ref() == want.as_slice()
        };
        for (what, found) in [
            (
                "intrusion event",
                col.wait_for(|m| m.topic == self.a("intrusion/event"), t)
                    .await,
            ),
            (
                "intrusion ON",
                col.wait_payload(&self.a("intrusion/state"), "ON", t).await,
            ),
            (
                "intrusion crop",
                col.wait_for(bytes(self.a("intrusion/target"), self.crop.clone()), t)
                    .await,
            ),
            (
                "plate",
                col.wait_payload(&self.b("lpr/plate"), self.plate, t).await,
            ),
            (
                "plate event",
                col.wait_for(|m| m.topic == self.b("lpr/event"), t).await,
            ),
            (
                "plate overview",
                col.wait_for(bytes(self.b("lpr/image"), self.small_overview.clone()), t)
                    .await,
            ),
            (
                "plate crop",
                col.wait_for(bytes(self.b("lpr/target"), self.plate_crop.clone()), t)
                    .await,
            ),
        ] {
            assert!(found.is_some(), "{what} not published: {:?}", topics(col));
        }
        let ev = col.on(&self.a("intrusion/event"))[0].json();
        assert_eq!(ev["images"]["overview_bytes"], self.big_overview.len());
        if known_limit {
            assert!(
                ev["warnings"].to_string().contains("packet limit"),
                "the event says its overview was left out: {ev}"
            );
        }
        // Watch a while for a reconnect loop.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(
            !col.all()
                .iter()
                .any(|m| m.payload.len() == self.big_overview.len()),
            "the oversize overview was never published"
        );
    }
}

fn topics(col: &Collector) -> Vec<String> {
    col.all().into_iter().map(|m| m.topic).collect()
}

/// The log lines about skipping this scenario's oversize image.
fn skip_lines(logs: &Logs, s: &Scenario) -> Vec<String> {
    let dev = camera::mac_slug(s.big_mac);
    logs.text()
        .lines()
        .filter(|l| {
            l.contains(&dev)
                && l.contains("packet limit")
                && (l.contains("skipped") || l.contains("set aside"))
        })
        .map(str::to_owned)
        .collect()
}

async fn start(broker: &ConfiguredMosquitto, toml: &str, id: &str) -> (Bridge, Collector) {
    let port = broker.ports[0];
    let col = Collector::start(port, "camera/#").await;
    let bridge = Bridge::start_with(
        toml,
        Some(format!("mqtt://127.0.0.1:{port}")),
        id.to_owned(),
    )
    .await;
    col.wait_payload("camera/bridge/state", "online", camera::T)
        .await
        .expect("bridge online");
    (bridge, col)
}

#[tokio::test]
async fn mqtt5_broker_announces_its_limit_and_the_oversize_image_is_skipped() {
    let Some(broker) = capped_broker() else {
        return;
    };
    let logs = Logs::capture();
    let (bridge, col) = start(&broker, "", "limits-announced").await;
    let s = Scenario::new("02:00:00:00:13:01", "02:00:00:00:13:02", "LIM0001");
    s.run(&bridge, &col, true).await;
    assert_eq!(offline_count(&col), 0, "bridge/state never flaps");
    assert_eq!(counter(&col, "mqtt_connects"), 1, "no reconnect");
    assert_eq!(counter(&col, "images_oversize"), 1);
    let v = info(&col);
    assert_eq!(v["mqtt"]["protocol"], "5");
    assert_eq!(v["mqtt"]["max_packet_size"], LIMIT);
    let lines = skip_lines(&logs, &s);
    assert_eq!(lines.len(), 1, "one line: {lines:#?}");
    assert!(lines[0].contains("max_packet_size"), "{}", lines[0]);
    assert!(
        lines[0].contains(&s.big_overview.len().to_string()),
        "{}",
        lines[0]
    );
    bridge.stop().await;
}

#[tokio::test]
async fn configured_limit_is_enough_on_mqtt_3_1_1() {
    let Some(broker) = capped_broker() else {
        return;
    };
    let logs = Logs::capture();
    let toml = format!("[mqtt]\nprotocol = \"3.1.1\"\nmax_packet_size = {LIMIT}\n");
    let (bridge, col) = start(&broker, &toml, "limits-configured").await;
    let s = Scenario::new("02:00:00:00:13:03", "02:00:00:00:13:04", "LIM0002");
    s.run(&bridge, &col, true).await;
    assert_eq!(offline_count(&col), 0);
    assert_eq!(counter(&col, "mqtt_connects"), 1);
    assert_eq!(counter(&col, "images_oversize"), 1);
    assert_eq!(info(&col)["mqtt"]["protocol"], "3.1.1");
    assert_eq!(skip_lines(&logs, &s).len(), 1, "{}", logs.text());
    bridge.stop().await;
}

#[tokio::test]
async fn unknown_limit_costs_at_most_two_reconnects_then_the_image_is_set_aside() {
    let Some(broker) = capped_broker() else {
        return;
    };
    let logs = Logs::capture();
    let (bridge, col) = start(&broker, "[mqtt]\nprotocol = \"3.1.1\"\n", "limits-unknown").await;
    let s = Scenario::new("02:00:00:00:13:05", "02:00:00:00:13:06", "LIM0003");
    s.run(&bridge, &col, false).await;
    let offline = offline_count(&col);
    assert!(
        offline <= 2,
        "at most two offline, got {offline}\n{}",
        logs.text()
    );
    assert!(counter(&col, "mqtt_connects") <= 3);
    assert_eq!(counter(&col, "mqtt_set_aside"), 1);
    assert_eq!(
        col.on("camera/bridge/state")
            .last()
            .map(Msg::text)
            .as_deref(),
        Some("online")
    );
    // Reported on bridge/unparsed, kept on disk.
    let report = col
        .wait_for(
            |m| m.topic == "camera/bridge/unparsed" && m.text().contains("kills-connection"),
            camera::T,
        )
        .await
        .expect("set-aside report");
    let r = report.json();
    assert_eq!(r["source"], "mqtt");
    assert!(
        r["path"].as_str().unwrap().ends_with("/intrusion/image"),
        "{r}"
    );
    assert_eq!(r["body_len"], s.big_overview.len());
    let kept = dead_letters(bridge.state_dir());
    assert!(
        kept.iter()
            .any(|p| std::fs::read(p).unwrap() == s.big_overview),
        "the overview is kept in the dead-letter folder: {kept:?}"
    );
    let lines = skip_lines(&logs, &s);
    assert!(
        (1..=3).contains(&lines.len()) && lines.iter().any(|l| l.contains("max_packet_size")),
        "{lines:#?}"
    );

    // Learned: the next oversize image is skipped before sending.
    let connects = counter(&col, "mqtt_connects");
    let before = offline_count(&col);
    let big2 = camera::big_jpeg(170_000);
    post(
        bridge.addr,
        &camera::ipc_intrusion_with_images("02:00:00:00:13:07", &big2, &s.crop),
    )
    .await;
    let dev = camera::mac_slug("02:00:00:00:13:07");
    col.wait_for(
        |m| m.topic == format!("camera/{dev}/intrusion/event"),
        camera::T,
    )
    .await
    .expect("event of the second oversize post");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(offline_count(&col), before, "no more flaps");
    assert_eq!(counter(&col, "mqtt_connects"), connects);
    assert!(counter(&col, "images_oversize") >= 1);
    assert!(!col.all().iter().any(|m| m.payload.len() == big2.len()));
    bridge.stop().await;
}

fn dead_letters(state_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state_dir.join("dead-letter"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "payload"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_publish_the_broker_refuses_is_set_aside_and_the_rest_flows() {
    let Some(broker) = broker_with_acl() else {
        return;
    };
    let (bridge, col) = start(&broker, "", "limits-acl").await;
    let mac = "02:00:00:00:13:08";
    let dev = camera::mac_slug(mac);
    let overview = camera::image("overview.jpg");
    let crop = camera::image("crop.jpg");
    post(
        bridge.addr,
        &camera::ipc_intrusion_with_images(mac, &overview, &crop),
    )
    .await;
    let t = camera::T;
    let report = col
        .wait_for(
            |m| m.topic == "camera/bridge/unparsed" && m.text().contains("refused-by-broker"),
            t,
        )
        .await
        .expect("refusal reported");
    let r = report.json();
    assert_eq!(r["path"], format!("camera/{dev}/intrusion/target"));
    assert!(
        r["detail"].as_str().unwrap().contains("NotAuthorized"),
        "{r}"
    );
    assert!(
        col.wait_for(|m| m.topic == format!("camera/{dev}/intrusion/event"), t)
            .await
            .is_some()
    );
    assert!(
        col.wait_for(
            |m| m.topic == format!("camera/{dev}/intrusion/image") && m.payload == overview,
            t
        )
        .await
        .is_some()
    );
    // Delivery goes on: the next camera's plate arrives.
    post(
        bridge.addr,
        &camera::ipc_lpr("02:00:00:00:13:09", "ACL0001", &overview, &crop),
    )
    .await;
    let plate_topic = format!("camera/{}/lpr/plate", camera::mac_slug("02:00:00:00:13:09"));
    assert!(col.wait_payload(&plate_topic, "ACL0001", t).await.is_some());
    assert!(col.on(&format!("camera/{dev}/intrusion/target")).is_empty());
    assert_eq!(counter(&col, "mqtt_refused"), 1);
    assert_eq!(counter(&col, "mqtt_connects"), 1);
    assert_eq!(offline_count(&col), 0);
    let kept = dead_letters(bridge.state_dir());
    assert!(
        kept.iter().any(|p| std::fs::read(p).unwrap() == crop),
        "{kept:?}"
    );
    bridge.stop().await;
}

/// Mosquitto (no size cap) whose ACL denies writing `camera/+/intrusion/target`.
fn broker_with_acl() -> Option<ConfiguredMosquitto> {
    if !common::Mosquitto::available() {
        eprintln!("skipping: {} not installed", common::MOSQUITTO);
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "topic readwrite #\ntopic deny camera/+/intrusion/target\n",
    )
    .unwrap();
    Some(ConfiguredMosquitto::start(dir, 1, |p| {
        format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nacl_file {}\n",
            p[0],
            acl.display()
        )
    }))
}

#[tokio::test]
async fn a_broker_without_mqtt5_gets_mqtt_3_1_1() {
    if !cfg!(feature = "broker") {
        eprintln!("skipping: built without the embedded broker");
        return;
    }
    // rumqttd (the embedded broker) listens for MQTT 3.1.1 only.
    let port = common::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    camqtt::broker::start(addr, 1 << 20).await.expect("rumqttd");
    let logs = Logs::capture();
    let col = Collector::start(port, "camera/#").await;
    let started = Instant::now();
    let bridge = Bridge::start_with("", Some(format!("mqtt://{addr}")), "fallback".into()).await;
    if col
        .wait_payload("camera/bridge/state", "online", camera::T)
        .await
        .is_none()
    {
        panic!("not online over 3.1.1:\n{}", logs.text());
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    post(bridge.addr, &camera::intrusion("02:00:00:00:13:10")).await;
    let dev = camera::mac_slug("02:00:00:00:13:10");
    assert!(
        col.wait_payload(&format!("camera/{dev}/intrusion/state"), "ON", camera::T)
            .await
            .is_some()
    );
    col.wait_for(|m| m.topic == "camera/bridge/info", camera::T)
        .await
        .unwrap();
    assert_eq!(info(&col)["mqtt"]["protocol"], "3.1.1");
    bridge.stop().await;
}

/// `../shared/field/13-mqtt-broker-packet-limit`, run as its expected.md says: once with the
/// default configuration and once with `[mqtt] max_packet_size = 131072`.
#[tokio::test]
async fn field_13_broker_packet_limit() {
    let case =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/field/13-mqtt-broker-packet-limit");
    if !case.exists() {
        eprintln!(
            "skipping: {} not found (../shared is absent)",
            case.display()
        );
        return;
    }
    let read = |n: &str| std::fs::read(case.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
    let conf = String::from_utf8(read("mosquitto-cap.conf")).unwrap();
    let logs = Logs::capture();
    for (run, toml) in [
        ("default", String::new()),
        ("configured", format!("[mqtt]\nmax_packet_size = {LIMIT}\n")),
    ] {
        if !common::Mosquitto::available() {
            eprintln!("skipping: {} not installed", common::MOSQUITTO);
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let broker = ConfiguredMosquitto::start(dir, 1, |p| {
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n{conf}\n",
                p[0]
            )
        });
        let (bridge, col) = start(&broker, &toml, &format!("field13-{run}")).await;
        // The counters are the process's: this test runs two bridges one after the other.
        col.wait_for(|m| m.topic == "camera/bridge/info", camera::T)
            .await
            .expect("bridge/info");
        let connects = counter(&col, "mqtt_connects");
        let oversize = counter(&col, "images_oversize");
        let big = read("1-big-intrusion.xml");
        let small = read("2-small-plate.xml");
        let mut s = tokio::net::TcpStream::connect(bridge.addr).await.unwrap();
        let r = camera::exchange(&mut s, &camera::post("/API", &big)).await;
        assert_eq!((r.code(), r.body.as_slice()), (200, REPLY), "{run}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut s = tokio::net::TcpStream::connect(bridge.addr).await.unwrap();
        let r = camera::exchange(&mut s, &camera::post("/API", &small)).await;
        assert_eq!((r.code(), r.body.as_slice()), (200, REPLY), "{run}");
        let t = Duration::from_secs(10);
        let a = |leaf: &str| format!("camera/02_f1_e1_d0_00_13/{leaf}");
        let b = |leaf: &str| format!("camera/02_f1_e1_d0_00_14/{leaf}");
        // 1. Everything that fits, within 10 s of the second post.
        let crop = read("crop.jpg");
        let small_overview = read("small_overview.jpg");
        let small_plate = read("small_plate.jpg");
        assert!(
            col.wait_for(|m| m.topic == a("intrusion/event"), t)
                .await
                .is_some(),
            "{run}"
        );
        assert!(
            col.wait_payload(&a("intrusion/state"), "ON", t)
                .await
                .is_some(),
            "{run}"
        );
        assert!(
            col.wait_for(|m| m.topic == a("intrusion/target") && m.payload == crop, t)
                .await
                .is_some(),
            "{run}"
        );
        assert!(
            col.wait_payload(&b("lpr/plate"), "FLD0013", t)
                .await
                .is_some(),
            "{run}"
        );
        assert!(
            col.wait_for(|m| m.topic == b("lpr/event"), t)
                .await
                .is_some(),
            "{run}"
        );
        assert!(
            col.wait_for(
                |m| m.topic == b("lpr/image") && m.payload == small_overview,
                t
            )
            .await
            .is_some(),
            "{run}"
        );
        assert!(
            col.wait_for(
                |m| m.topic == b("lpr/target") && m.payload == small_plate,
                t
            )
            .await
            .is_some(),
            "{run}"
        );
        // Watch the rest of the 20 s after the big post.
        tokio::time::sleep(Duration::from_secs(7)).await;
        // 2. The 160,000-byte overview is never published; one log line; counted.
        let big_overview = read("big_overview.jpg");
        assert!(
            !col.all().iter().any(|m| m.payload == big_overview),
            "{run}"
        );
        assert_eq!(counter(&col, "images_oversize"), oversize + 1, "{run}");
        let lines: Vec<String> = logs
            .text()
            .lines()
            .filter(|l| l.contains("02_f1_e1_d0_00_13") && l.contains("max_packet_size"))
            .map(str::to_owned)
            .collect();
        assert!((1..=2).contains(&lines.len()), "{run}: {lines:#?}");
        // 3. No reconnect loop, no bridge/state flap: Mosquitto 2 announces its limit over
        //    MQTT 5, so neither run reconnects at all.
        assert_eq!(counter(&col, "mqtt_connects"), connects, "{run}");
        assert_eq!(offline_count(&col), 0, "{run}");
        assert_eq!(
            col.on("camera/bridge/state")
                .last()
                .map(Msg::text)
                .as_deref(),
            Some("online")
        );
        bridge.stop().await;
        logs.clear();
    }
}

/// A broker that takes one unacknowledged publish at a time (Mosquitto
/// `max_inflight_messages 1`: MQTT 5 Receive Maximum 1 in its CONNACK, §3.2.2.3.3). The sink
/// reads it (logged on connect) and, with a window of one, still delivers every event of a
/// burst from several cameras at once, each camera answered 200, without a reconnect. (The
/// window's value itself: `client::tests`; the client library keeps within the broker's
/// number too, so the sink's own window cannot be told apart from outside.)
#[tokio::test]
async fn receive_maximum_one_every_event_of_a_burst_is_delivered() {
    if !common::Mosquitto::available() {
        eprintln!("skipping: {} not installed", common::MOSQUITTO);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = ConfiguredMosquitto::start(dir, 1, |p| {
        format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_inflight_messages 1\n",
            p[0]
        )
    });
    let logs = Logs::capture();
    let (bridge, col) = start(&broker, "", "receive-max-one").await;
    let connected = logs.lines_with(&["MQTT connected", "broker_receive_maximum=1"]);
    assert_eq!(connected.len(), 1, "{}", logs.text());
    let (overview, crop) = (camera::big_jpeg(200_000), camera::image("crop.jpg"));
    let cameras = 4;
    let per_camera = 5;
    let mut posts = Vec::new();
    for c in 0..cameras {
        let body = camera::ipc_lpr(&format!("02:00:00:00:1f:0{c}"), "RCV1", &overview, &crop);
        let addr = bridge.addr;
        posts.push(tokio::spawn(async move {
            for _ in 0..per_camera {
                post(addr, &body).await;
            }
        }));
    }
    for p in posts {
        p.await.expect("camera task");
    }
    let events = col
        .wait_count(
            |m| m.topic.ends_with("/lpr/event"),
            cameras * per_camera,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(events.len(), cameras * per_camera, "every event delivered");
    let images = col.on("camera/lpr/image");
    assert_eq!(images.len(), cameras * per_camera);
    assert!(images.iter().all(|m| m.payload[..] == overview[..]));
    assert_eq!(counter(&col, "mqtt_connects"), 1, "no reconnect");
    bridge.stop().await;
}
