//! The shared Viewtron field cases (`../shared/field/`, see its README) end to end: each case's
//! posts over real TCP into `camqtt::start`, a real Mosquitto, and every numbered fact of the
//! case's `expected.md` checked on what a subscriber receives.
//!
//! One test per case, each with its own broker and bridge, so the runner can take them in
//! parallel (case 14 replays 109 posts with their recorded timing, about 35 s). Without the
//! shared folder (or without Mosquitto) every test prints why and passes.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use common::bridge::Bridge;
use common::camera::{REPLY, Response, exchange, post_with, read_response_until, send_close};
use common::{Collector, Mosquitto, Msg, retained};

/// How long one expected message may take.
const T: Duration = Duration::from_secs(10);

/// After the last post: how long to keep listening before asserting that something never came.
const QUIET: Duration = Duration::from_millis(1500);

/// `../shared/field/<id>-…` relative to the repository root, or `None` (with a message) when
/// the shared folder is not there.
fn case(id: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/field");
    let Ok(entries) = std::fs::read_dir(&root) else {
        eprintln!(
            "SKIP field case {id}: shared field cases not found at {}",
            root.display()
        );
        return None;
    };
    let dir = entries.filter_map(Result::ok).map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!("{id}-")))
    });
    if dir.is_none() {
        eprintln!(
            "SKIP field case {id}: no folder {id}-* in {}",
            root.display()
        );
    }
    dir
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    let p = dir.join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A broker, a collector on `#` and the bridge with its defaults.
struct Env {
    broker: Mosquitto,
    col: Collector,
    bridge: Bridge,
}

async fn setup() -> Option<Env> {
    let broker = Mosquitto::try_start()?;
    let col = Collector::start(broker.port, "#").await;
    let bridge = Bridge::start(&broker, "", "camqtt-field").await;
    col.wait_payload("camera/bridge/state", "online", T)
        .await
        .expect("bridge online");
    Some(Env {
        broker,
        col,
        bridge,
    })
}

/// An HTTP/1.1 request as an IPC sends it.
fn request(body: &[u8], connection: &str) -> Vec<u8> {
    let conn = format!("Connection: {connection}");
    post_with(
        "/API",
        &[
            "Host: 127.0.0.1",
            "Content-Type: application/xml; charset=utf-8",
            &conn,
        ],
        body,
    )
}

/// Post `body` on a connection of its own; returns the reply.
async fn post_one(bridge: &Bridge, body: &[u8]) -> Response {
    let mut s = TcpStream::connect(bridge.addr).await.expect("connect");
    exchange(&mut s, &request(body, "close")).await
}

fn assert_success(r: &Response, what: &str) {
    assert_eq!((r.code(), r.body.as_slice()), (200, REPLY), "{what}: reply");
}

fn payloads(col: &Collector, topic: &str) -> Vec<String> {
    col.on(topic).iter().map(Msg::text).collect()
}

/// Messages on `topic` received after `t`.
fn after(col: &Collector, topic: &str, t: Instant) -> Vec<Msg> {
    col.on(topic).into_iter().filter(|m| m.at >= t).collect()
}

/// The newest discovery components of a device.
fn components(col: &Collector, hw: &str) -> Value {
    let topic = format!("homeassistant/device/camqtt_{hw}/config");
    let m = col
        .on(&topic)
        .into_iter()
        .next_back()
        .unwrap_or_else(|| panic!("no discovery on {topic}"));
    m.json()["components"].clone()
}

fn assert_nothing_unparsed(col: &Collector, case: &str) {
    let u = payloads(col, "camera/bridge/unparsed");
    assert!(u.is_empty(), "case {case}: bridge/unparsed: {u:?}");
}

// ---- 04: an 8.3 MB NVR post with a 6 MB 4K overview, sent at about 2 MB/s -------------------

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_04_big_overview() {
    let Some(dir) = case("04") else { return };
    let logs = common::logs::Logs::capture();
    let Some(env) = setup().await else { return };
    let mut body = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(read(&dir, "post.xml.gz").as_slice()),
        &mut body,
    )
    .expect("gunzip post.xml.gz");
    assert_eq!(body.len(), 8_294_927);
    let sums = String::from_utf8(read(&dir, "overview.sha256")).unwrap();
    let sum = |what: &str| {
        sums.lines()
            .find(|l| l.contains(what))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("{what} in overview.sha256"))
            .to_owned()
    };
    // In 16 KiB pieces 8 ms apart (about 4 s).
    let req = request(&body, "close");
    let mut s = TcpStream::connect(env.bridge.addr).await.unwrap();
    let started = Instant::now();
    for piece in req.chunks(16 * 1024) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    // 1. 200 + success XML.
    let r = read_response_until(&mut s, Some(tokio::time::Instant::now() + T))
        .await
        .expect("reply");
    assert_success(&r, "04");
    assert!(started.elapsed() > Duration::from_secs(3), "sent slowly");
    // 2. Both images byte-exact (SHA-256) on the channel and category topics.
    let dev = "camera/02_f1_e1_d0_00_02_ch2";
    let (overview, crop) = (sum("overview"), sum("crop"));
    for (topic, want) in [
        (format!("{dev}/line_crossing/image"), &overview),
        ("camera/line_crossing/image".to_owned(), &overview),
        (format!("{dev}/line_crossing/target"), &crop),
    ] {
        let m = env
            .col
            .wait_for(|m| m.topic == topic, T)
            .await
            .unwrap_or_else(|| panic!("04: nothing on {topic}"));
        assert_eq!(&sha256_hex(&m.payload), want, "04: {topic}");
    }
    // 3. A small event JSON: no base64, sizes, every direction null.
    let ev = env
        .col
        .wait_for(|m| m.topic == format!("{dev}/line_crossing/event"), T)
        .await
        .expect("04: event");
    assert!(
        ev.payload.len() < 4096,
        "04: event JSON {} bytes",
        ev.payload.len()
    );
    let v = ev.json();
    assert_eq!(v["images"]["overview_bytes"], 6_000_000);
    assert_eq!(v["images"]["target_bytes"], 220_000);
    fn directions(v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "direction" {
                        out.push(x.clone());
                    }
                    directions(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| directions(x, out)),
            _ => {}
        }
    }
    let mut dirs = Vec::new();
    directions(&v, &mut dirs);
    assert!(
        !dirs.is_empty() && dirs.iter().all(Value::is_null),
        "04: {dirs:?}"
    );
    assert!(
        v["warnings"].as_array().is_none_or(Vec::is_empty),
        "04: {v}"
    );
    // 4. No warnings or errors logged, nothing unparsed.
    tokio::time::sleep(QUIET).await;
    assert_nothing_unparsed(&env.col, "04");
    let bad: Vec<String> = logs
        .text()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(str::to_owned)
        .collect();
    assert!(bad.is_empty(), "04: {bad:#?}");
    env.bridge.stop().await;
}

// ---- 01: LPR post spelled VEHICLE ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_01_lpr_vehicle_spelling() {
    let Some(dir) = case("01") else { return };
    let Some(Env {
        broker: _broker,
        col,
        bridge,
    }) = setup().await
    else {
        return;
    };
    let body = read(&dir, "post.xml");
    // 1. Any path, Content-Length, one-shot connection: 200 + the success XML.
    let raw = send_close(
        bridge.addr,
        &post_with(
            "/any/path/lpr",
            &[
                "Host: 127.0.0.1",
                "Content-Type: application/xml",
                "Connection: close",
            ],
            &body,
        ),
    )
    .await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "01.1: {text}");
    assert!(raw.ends_with(REPLY), "01.1: {text}");

    // 3. The device id from the MAC.
    let dev = "camera/02_f1_e1_d0_00_01";
    // 2. A plate read.
    let ev = col
        .wait_for(|m| m.topic == format!("{dev}/lpr/event"), T)
        .await
        .expect("01.2: lpr/event")
        .json();
    assert_eq!(ev["event_type"], "plate_read", "01.2");
    assert_eq!(ev["category"], "lpr", "01.2");
    assert_eq!(ev["raw_type"], "VEHICLE", "01.2");
    assert_eq!(ev["plate"], "FLD0001", "01.2");
    assert_eq!(ev["list"], "whiteList", "01.2");
    assert_eq!(ev["time"], "2025-12-01T18:04:05.123456Z", "01.2");
    assert_eq!(ev["time_source"], "camera", "01.2");
    assert_eq!(ev["device"]["id"], "02_f1_e1_d0_00_01", "01.3");
    // 4. Images byte for byte.
    let overview = read(&dir, "overview.jpg");
    let plate = read(&dir, "plate.jpg");
    for (topic, want) in [
        ("camera/lpr/image".to_owned(), &overview),
        (format!("{dev}/lpr/image"), &overview),
        (format!("{dev}/lpr/target"), &plate),
    ] {
        let m = col
            .wait_for(|m| m.topic == topic, T)
            .await
            .unwrap_or_else(|| panic!("01.4: {topic}"));
        assert!(m.payload == want[..], "01.4: {topic} differs");
    }
    // 5. Plate, list, state.
    for (leaf, want) in [("plate", "FLD0001"), ("list", "whiteList"), ("state", "ON")] {
        col.wait_payload(&format!("{dev}/lpr/{leaf}"), want, T)
            .await
            .unwrap_or_else(|| panic!("01.5: lpr/{leaf} = {want}"));
    }
    // 6. Nothing unparsed.
    tokio::time::sleep(QUIET).await;
    assert_nothing_unparsed(&col, "01.6");
    bridge.stop().await;
}

// ---- 03: IPC alarm-status pair, 12-hour dataTime --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_03_ipc_alarm_status_ampm() {
    let Some(dir) = case("03") else { return };
    let Some(Env {
        broker,
        col,
        bridge,
    }) = setup().await
    else {
        return;
    };
    // 1. The device id.
    let dev = "camera/02_f1_e1_d0_00_03";
    let state = format!("{dev}/lpr/state");
    let alarm = format!("{dev}/alarm/vehiceAlarm_1");

    let on_sent = Instant::now();
    assert_success(&post_one(&bridge, &read(&dir, "1-on.xml")).await, "03 1-on");
    col.wait_payload(&state, "ON", T).await.expect("03.2: ON");
    col.wait_payload(&alarm, "ON", T).await.expect("03.3: ON");
    tokio::time::sleep_until((on_sent + Duration::from_secs(2)).into()).await;
    let off_sent = Instant::now();
    assert_success(
        &post_one(&bridge, &read(&dir, "2-off.xml")).await,
        "03 2-off",
    );
    col.wait_payload(&state, "OFF", T).await.expect("03.2: OFF");
    col.wait_payload(&alarm, "OFF", T).await.expect("03.3: OFF");
    tokio::time::sleep(QUIET).await;

    // 1. Both parsed.
    assert_nothing_unparsed(&col, "03.1");
    // 2. ON after 1-on (before 2-off), OFF after 2-off; OFF retained.
    let ons = col.on(&state);
    assert_eq!(payloads(&col, &state), ["ON", "OFF"], "03.2");
    assert!(
        ons[0].at >= on_sent && ons[0].at < off_sent,
        "03.2: ON in time"
    );
    assert!(ons[1].at >= off_sent, "03.2: OFF after 2-off");
    // 3. The alarm topic ON, then OFF.
    assert_eq!(payloads(&col, &alarm), ["ON", "OFF"], "03.3");
    let kept = retained(broker.port, &format!("{dev}/#"), Duration::from_millis(500)).await;
    assert_eq!(kept.get(&state).map(|b| &b[..]), Some(&b"OFF"[..]), "03.2");
    assert_eq!(kept.get(&alarm).map(|b| &b[..]), Some(&b"OFF"[..]), "03.3");
    // 4. No plate event, no plate.
    assert!(col.on(&format!("{dev}/lpr/event")).is_empty(), "03.4");
    assert!(col.on(&format!("{dev}/lpr/plate")).is_empty(), "03.4");
    // 6. "Last plate read" is not moved (never published, nothing retained).
    assert!(col.on(&format!("{dev}/lpr/last")).is_empty(), "03.6");
    assert!(!kept.contains_key(&format!("{dev}/lpr/last")), "03.6");
    let c = components(&col, "02f1e1d00003");
    assert_eq!(c["lpr_last"]["name"], "Last plate read", "03.6");
    // 5. No event JSON for alarm-status posts, so the normalised event of `camqtt parse`:
    //    receive time, raw text kept.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_camqtt"))
        .arg("parse")
        .arg(dir.join("1-on.xml"))
        .output()
        .expect("camqtt parse runs");
    assert!(out.status.success(), "03.5: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("03.5: JSON");
    let e = &v["events"][0];
    assert_eq!(e["time_source"], "receiver", "03.5");
    assert_eq!(e["time_raw"], "12-01-2025 12:15:11 PM", "03.5");
    assert_eq!(e["kind"], "status", "03.5");
    assert_eq!(e["device"]["mac"], "02:f1:e1:d0:00:03", "03.1");
    assert_eq!(e["device"]["device_no"], "1", "03.1");
    bridge.stop().await;
}

// ---- 05: AVD scene change ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_05_avd_scene_change() {
    let Some(dir) = case("05") else { return };
    let Some(Env {
        broker,
        col,
        bridge,
    }) = setup().await
    else {
        return;
    };
    let dev = "camera/02_f1_e1_d0_00_05";
    let mut sent = Vec::new();
    for (i, name) in ["1-status-on.xml", "2-avd-data.xml", "3-status-off.xml"]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        sent.push(Instant::now());
        // 1. 200 + success XML for all three.
        assert_success(&post_one(&bridge, &read(&dir, name)).await, name);
    }
    let alarm = format!("{dev}/alarm/sceneChange_1");
    col.wait_payload(&alarm, "OFF", T).await.expect("05.3: OFF");

    // 2. A problem/tamper binary sensor of the camera, ON after 1, OFF after 3 (retained).
    let c = components(&col, "02f1e1d00005");
    let (key, sensor) = c
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, v)| {
            v["platform"] == "binary_sensor"
                && matches!(v["device_class"].as_str(), Some("problem" | "tamper"))
        })
        .expect("05.2: a problem/tamper binary_sensor");
    let state = sensor["state_topic"].as_str().unwrap().to_owned();
    col.wait_payload(&state, "OFF", T)
        .await
        .unwrap_or_else(|| panic!("05.2: {key} OFF"));
    tokio::time::sleep(QUIET).await;
    let msgs = col.on(&state);
    let first_on = msgs.iter().find(|m| m.text() == "ON").expect("05.2: ON");
    assert!(
        first_on.at >= sent[0] && first_on.at < sent[2],
        "05.2: ON after 1"
    );
    let last = msgs.last().unwrap();
    assert_eq!(last.text(), "OFF", "05.2");
    assert!(last.at >= sent[2], "05.2: OFF after 3");
    let kept = retained(broker.port, &format!("{dev}/#"), Duration::from_millis(500)).await;
    assert_eq!(kept.get(&state).map(|b| &b[..]), Some(&b"OFF"[..]), "05.2");
    // 3. The alarm topic ON, then OFF.
    assert_eq!(payloads(&col, &alarm), ["ON", "OFF"], "05.3");
    assert_eq!(kept.get(&alarm).map(|b| &b[..]), Some(&b"OFF"[..]), "05.3");
    // 4. Exactly one event message, raw_type AVD, saying what kind of abnormality.
    let events: Vec<Msg> = col
        .all()
        .into_iter()
        .filter(|m| m.topic.starts_with(dev) && m.topic.ends_with("/event"))
        .collect();
    assert_eq!(events.len(), 1, "05.4: {events:?}");
    let ev = events[0].json();
    assert_eq!(ev["raw_type"], "AVD", "05.4");
    assert!(
        ev["subtype"] == "tamper" || ev.to_string().contains("sceneChange"),
        "05.4: {ev}"
    );
    assert!(events[0].at >= sent[1], "05.4: from the data post");
    // 1. None unparsed.
    assert_nothing_unparsed(&col, "05.1");
    bridge.stop().await;
}

// ---- 06: traject burst on one keep-alive connection ----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_06_traject_burst() {
    let Some(dir) = case("06") else { return };
    let Some(Env {
        broker,
        col,
        bridge,
    }) = setup().await
    else {
        return;
    };
    let dev = "camera/02_f1_e1_d0_00_06";
    let bodies: Vec<Vec<u8>> = (0..20)
        .map(|i| read(&dir, &format!("post-{i:02}.xml")))
        .collect();
    let s = TcpStream::connect(bridge.addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let start = tokio::time::Instant::now();
    // Write every 100 ms without waiting for replies; the last one says close.
    let writer = tokio::spawn(async move {
        let mut sent = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            tokio::time::sleep_until(start + Duration::from_millis(100 * i as u64)).await;
            let conn = if i == 19 { "close" } else { "keep-alive" };
            sent.push(Instant::now());
            wr.write_all(&request(body, conn)).await.expect("write");
        }
        sent
    });
    let mut replies = Vec::new();
    let end = start + Duration::from_secs(10);
    for i in 0..20 {
        let r = read_response_until(&mut rd, Some(end))
            .await
            .unwrap_or_else(|e| panic!("06.1: reply {i}: {e}"));
        replies.push((Instant::now(), r));
    }
    let sent = writer.await.unwrap();
    let last_post = sent[19];
    // 1. 20 prompt replies on that connection.
    for (i, (at, r)) in replies.iter().enumerate() {
        assert_success(r, &format!("06.1 reply {i}"));
        let took = at.saturating_duration_since(sent[i]);
        assert!(
            took < Duration::from_secs(1),
            "06.1: reply {i} took {took:?}"
        );
    }
    // 4. traject OFF on its own within 8 s of the last post.
    let state = format!("{dev}/traject/state");
    let off = col
        .wait_for(
            |m| m.topic == state && m.text() == "OFF" && m.at >= last_post,
            Duration::from_secs(8),
        )
        .await
        .expect("06.4: traject OFF within 8 s");
    assert!(
        off.at.duration_since(last_post) <= Duration::from_secs(8),
        "06.4"
    );
    assert!(
        payloads(&col, &state).contains(&"ON".to_owned()),
        "06.4: was ON"
    );
    tokio::time::sleep(QUIET).await;
    // 2. 1 to 3 rate-limited summaries, each listing both targets; no image topics.
    let summaries = col.on(&format!("{dev}/traject/event"));
    assert!(
        (1..=3).contains(&summaries.len()),
        "06.2: {} summaries",
        summaries.len()
    );
    for m in &summaries {
        let v = m.json();
        let targets: BTreeMap<u64, String> = v["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["target_id"].as_u64().unwrap(),
                    t["object"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            targets,
            BTreeMap::from([(301, "person".to_owned()), (302, "car".to_owned())]),
            "06.2"
        );
    }
    let images: Vec<String> = col
        .all()
        .into_iter()
        .map(|m| m.topic)
        .filter(|t| {
            (t.starts_with(dev) && (t.ends_with("/image") || t.ends_with("/target")))
                || t == "camera/traject/image"
        })
        .collect();
    assert!(images.is_empty(), "06.2: {images:?}");
    // 3. targets = 2, retained.
    let kept = retained(broker.port, &format!("{dev}/#"), Duration::from_millis(500)).await;
    assert_eq!(
        kept.get(&format!("{dev}/traject/targets")).map(|b| &b[..]),
        Some(&b"2"[..]),
        "06.3"
    );
    bridge.stop().await;
}

// ---- 14: IPC httpPostV2 timeline replay ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_14_ipc_v2_timeline_replay() {
    let Some(dir) = case("14") else { return };
    let Some(Env {
        broker: _broker,
        col,
        bridge,
    }) = setup().await
    else {
        return;
    };
    let dev = "camera/02_f1_e1_d0_00_14";
    let schedule: Vec<Value> =
        serde_json::from_slice(&read(&dir, "schedule.json")).expect("schedule.json");
    assert_eq!(schedule.len(), 109);
    let addr = bridge.addr;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for item in &schedule {
        let at = Duration::from_secs_f64(item["at_s"].as_f64().unwrap());
        let name = item["post"].as_str().unwrap().to_owned();
        let body = read(&dir, &name);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + at).await;
            let sent = Instant::now();
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let r = exchange(&mut s, &request(&body, "close")).await;
            (name, sent, r)
        }));
    }
    let mut sent: BTreeMap<String, Instant> = BTreeMap::new();
    for t in tasks {
        let (name, at, r) = t.await.unwrap();
        // 1. Every post answered 200 + success XML.
        assert_success(&r, &format!("14.1 {name}"));
        sent.insert(name, at);
    }
    let at = |n: &str| sent[&format!("posts/{n}.xml")];
    let traject = |stream: char| -> Vec<Instant> {
        sent.iter()
            .filter(|(n, _)| n.starts_with(&format!("posts/traject-{stream}-")))
            .map(|(_, t)| *t)
            .collect()
    };
    let (a, b) = (traject('a'), traject('b'));
    let (a_first, a_last) = (*a.iter().min().unwrap(), *a.iter().max().unwrap());
    let (b_first, b_last) = (*b.iter().min().unwrap(), *b.iter().max().unwrap());
    let state = format!("{dev}/intrusion/state");
    col.wait_for(
        |m| m.topic == state && m.text() == "OFF",
        Duration::from_secs(5),
    )
    .await
    .expect("14.2: intrusion OFF");
    let tstate = format!("{dev}/traject/state");
    col.wait_for(
        |m| m.topic == tstate && m.text() == "OFF" && m.at > b_last,
        Duration::from_secs(8),
    )
    .await
    .expect("14.5: traject OFF after the second stream");
    tokio::time::sleep(QUIET).await;
    let all = col.all();

    // 2. Intrusion ON within 3 s of pea-1; no OFF before status-false; OFF within 1 s after.
    let msgs = col.on(&state);
    let first_on = msgs.iter().find(|m| m.text() == "ON").expect("14.2: ON");
    let took = first_on.at.saturating_duration_since(at("pea-1"));
    assert!(took <= Duration::from_secs(3), "14.2: ON after {took:?}");
    let offs: Vec<&Msg> = msgs.iter().filter(|m| m.text() == "OFF").collect();
    assert_eq!(offs.len(), 1, "14.2: {:?}", payloads(&col, &state));
    assert!(offs[0].at >= at("status-false"), "14.2: premature OFF");
    let took = offs[0].at.duration_since(at("status-false"));
    assert!(
        took <= Duration::from_secs(1),
        "14.2: OFF {took:?} after status-false"
    );

    // 3. Exactly 4 events, each preceded by its own overview (and crop).
    let idx = |m: &Msg| {
        all.iter()
            .position(|x| x.at == m.at && x.topic == m.topic)
            .unwrap()
    };
    let events = col.on(&format!("{dev}/intrusion/event"));
    assert_eq!(events.len(), 4, "14.3");
    let mut prev = 0;
    for (n, ev) in events.iter().enumerate() {
        let v = ev.json();
        let rule = &v["rules"][0];
        assert_eq!(rule["event_id"], 4101 + n as u64, "14.3");
        assert_eq!(rule["status"], "SMART_START", "14.3");
        let target = if n < 2 { 2157 } else { 2160 };
        assert_eq!(rule["target_id"], target, "14.3");
        assert_eq!(v["targets"][0]["target_id"], target, "14.3");
        let i = idx(ev);
        for (leaf, file) in [("image", "overview"), ("target", "crop")] {
            let want = read(&dir, &format!("{file}_{n}.jpg"));
            let img = all[prev..i]
                .iter()
                .rev()
                .find(|m| m.topic == format!("{dev}/intrusion/{leaf}"))
                .unwrap_or_else(|| panic!("14.3: no {leaf} before event {n}"));
            assert!(
                img.payload == want[..],
                "14.3: event {n}: not its own {file}"
            );
        }
        prev = i + 1;
    }

    // 4. The alarm topic ON after status-true, OFF after status-false.
    let alarm = col.on(&format!("{dev}/alarm/perimeterAlarm_1"));
    assert_eq!(
        alarm.iter().map(Msg::text).collect::<Vec<_>>(),
        ["ON", "OFF"],
        "14.4"
    );
    assert!(alarm[0].at >= at("status-true"), "14.4");
    assert!(alarm[1].at >= at("status-false"), "14.4");

    // 5. Traject: ~1 summary per second per stream; OFF in the gap, ON again, OFF at the end.
    let summaries = col.on(&format!("{dev}/traject/event"));
    for (target, first, last) in [(2157, a_first, a_last), (2160, b_first, b_last)] {
        let n = summaries
            .iter()
            .filter(|m| m.json()["targets"][0]["target_id"] == target)
            .count();
        let limit = last.duration_since(first).as_secs_f64() + 2.0;
        assert!(
            n >= 1 && n as f64 <= limit,
            "14.5: {n} summaries for {target}"
        );
    }
    let tmsgs = col.on(&tstate);
    assert!(
        tmsgs
            .iter()
            .any(|m| m.text() == "OFF" && m.at > a_last && m.at < b_first),
        "14.5: OFF in the gap: {:?}",
        tmsgs.iter().map(|m| (m.text(), m.at)).collect::<Vec<_>>()
    );
    assert!(
        tmsgs.iter().any(|m| m.text() == "ON" && m.at >= b_first),
        "14.5: ON with target 2160"
    );
    assert_eq!(tmsgs.last().map(Msg::text).as_deref(), Some("OFF"), "14.5");

    // 6. Online throughout.
    let avail = payloads(&col, &format!("{dev}/availability"));
    assert!(
        !avail.is_empty() && avail.iter().all(|p| p == "online"),
        "14.6: {avail:?}"
    );
    bridge.stop().await;
}

// ---- 15: NVR perimeterAlarm around a line crossing ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_15_nvr_perimeter_alarm_line_crossing() {
    let Some(dir) = case("15") else { return };
    let Some(Env {
        broker,
        col,
        bridge,
    }) = setup().await
    else {
        return;
    };
    let ch = "camera/02_f1_e1_d0_00_02_ch4";
    assert_success(
        &post_one(&bridge, &read(&dir, "1-status-true.xml")).await,
        "15 1",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_success(
        &post_one(&bridge, &read(&dir, "2-linecrossing.xml")).await,
        "15 2",
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    let false_sent = Instant::now();
    assert_success(
        &post_one(&bridge, &read(&dir, "3-status-false.xml")).await,
        "15 3",
    );
    let alarm = format!("{ch}/alarm/perimeterAlarm_1");
    let state = format!("{ch}/line_crossing/state");
    col.wait_payload(&alarm, "OFF", T).await.expect("15.3: OFF");
    col.wait_payload(&state, "OFF", T).await.expect("15.1: OFF");
    tokio::time::sleep(QUIET).await;

    // 1. One line-crossing event; state ON, later OFF (retained).
    let events = col.on(&format!("{ch}/line_crossing/event"));
    assert_eq!(events.len(), 1, "15.1");
    assert_eq!(events[0].json()["event_type"], "line_crossed", "15.1");
    let states = payloads(&col, &state);
    assert_eq!(states.first().map(String::as_str), Some("ON"), "15.1");
    assert_eq!(states.last().map(String::as_str), Some("OFF"), "15.1");
    assert!(
        after(&col, &state, false_sent)
            .iter()
            .any(|m| m.text() == "OFF"),
        "15.1: OFF with the status false"
    );
    let kept = retained(broker.port, &format!("{ch}/#"), Duration::from_millis(500)).await;
    assert_eq!(kept.get(&state).map(|b| &b[..]), Some(&b"OFF"[..]), "15.1");
    // 2. Intrusion never ON (nothing at all on it).
    let intrusion = payloads(&col, &format!("{ch}/intrusion/state"));
    assert!(!intrusion.contains(&"ON".to_owned()), "15.2: {intrusion:?}");
    // 3. The alarm ON, then OFF (retained).
    assert_eq!(payloads(&col, &alarm), ["ON", "OFF"], "15.3");
    assert_eq!(kept.get(&alarm).map(|b| &b[..]), Some(&b"OFF"[..]), "15.3");
    assert_nothing_unparsed(&col, "15");
    bridge.stop().await;
}
