//! Hostile and broken input over real sockets into the real bridge (`camqtt::start`, a real
//! Mosquitto). After every case a normal post on the same connection (where the case leaves it
//! usable), a normal post from another, already connected camera, and a fresh connection all
//! still reach MQTT, and the counters and `camera/bridge/unparsed` say what happened.
//!
//! Each group of cases is a test of its own with its own bridge and broker (the bridge's
//! metrics belong to it); within a group the cases run one after the other against that
//! bridge (each checks that it still serves the next post), so every counter assertion is on a
//! delta.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use camqtt::telemetry::Telemetry;
use common::bridge::Bridge;
use common::camera::{
    self, REPLY, T, b64, big_jpeg, chunks, head, image, mac_slug, post, read_response, wait_closed,
};
use common::{Collector, Mosquitto, Msg};

/// Limits of the bridge under test: small, so that the timeouts are quick to hit.
const HEADER_TIMEOUT: f64 = 1.0;
const REQUEST_TIMEOUT: f64 = 2.0;
const IDLE_TIMEOUT: f64 = 4.0;
const MAX_CONNECTIONS: usize = 8;
const BODY_LIMIT: usize = 8 * 1024 * 1024;

const SAME_MAC: &str = "02:00:5e:77:00:01";
const OTHER_MAC: &str = "02:00:5e:77:00:02";

/// A normal licence-plate post with a small crop.
fn lpr(mac: &str, plate: &str) -> String {
    camera::ipc_lpr_b64(mac, plate, "", &b64(&image("plate1.jpg")))
}

/// A chunked post (5,000-byte chunks) with `extra_headers` before `Transfer-Encoding`.
fn chunked(path: &str, body: &[u8], extra_headers: &[&str]) -> Vec<u8> {
    let mut r = head(
        path,
        &[&["Host: x"], extra_headers, &["Transfer-Encoding: chunked"]].concat(),
    );
    r.extend(chunks(body, 5_000));
    r
}

/// Counter snapshot.
#[derive(Debug, Clone, Copy)]
struct Counts {
    http_errors: u64,
    unparsed: u64,
    events: u64,
    image_errors: u64,
    connections: u64,
}

fn counts(s: &Telemetry) -> Counts {
    Counts {
        http_errors: s.http_errors.get(),
        unparsed: s.unparsed.get(),
        events: s.events.get(),
        image_errors: s.image_errors.get(),
        connections: s.connections.get(),
    }
}

/// A camera with a persistent connection.
struct Camera {
    mac: &'static str,
    stream: TcpStream,
    last_used: Instant,
    /// A post was answered on this connection: it may then stay quiet for the idle timeout,
    /// before that only for the header timeout.
    posted: bool,
}

struct Harness {
    addr: SocketAddr,
    col: Collector,
    seq: u32,
    /// `camera/bridge/unparsed` messages seen so far.
    unparsed_seen: usize,
    bridge: Bridge,
    started: Instant,
    _broker: Mosquitto,
}

impl Harness {
    async fn connect(&self, mac: &'static str) -> Camera {
        Camera {
            mac,
            stream: TcpStream::connect(self.addr).await.expect("connect"),
            last_used: Instant::now(),
            posted: false,
        }
    }

    fn next_plate(&mut self) -> String {
        self.seq += 1;
        format!("HX{:05}", self.seq)
    }

    /// A normal plate read on `cam`'s connection: replied with the exact success document,
    /// kept alive, and its event reaches MQTT.
    async fn normal(&mut self, cam: &mut Camera, what: &str) {
        let plate = self.next_plate();
        cam.stream
            .write_all(&post("/API", lpr(cam.mac, &plate).as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("{what}: write: {e}"));
        let r = read_response(&mut cam.stream, T)
            .await
            .unwrap_or_else(|e| panic!("{what}: normal post on {}: {e}", cam.mac));
        assert_eq!(r.status, "HTTP/1.1 200 OK", "{what}");
        assert_eq!(r.body, REPLY, "{what}");
        assert!(
            !r.head.to_ascii_lowercase().contains("connection: close"),
            "{what}: normal post must keep the connection"
        );
        cam.last_used = Instant::now();
        cam.posted = true;
        self.expect_plate(cam.mac, &plate, what).await;
    }

    /// Write `request` on `cam`'s connection (reconnected first if idle); the reply is the
    /// success document.
    async fn post_ok(&self, cam: &mut Camera, request: &[u8]) {
        self.reconnect_if_idle(cam).await;
        cam.stream.write_all(request).await.unwrap();
        assert_eq!(read_response(&mut cam.stream, T).await.unwrap().body, REPLY);
    }

    async fn expect_plate(&self, mac: &str, plate: &str, what: &str) -> serde_json::Value {
        let topic = format!("camera/{}/lpr/event", mac_slug(mac));
        let m = self
            .col
            .wait_for(
                |m| m.topic == topic && m.json()["plate"].as_str() == Some(plate),
                T,
            )
            .await
            .unwrap_or_else(|| panic!("{what}: plate {plate} of {mac} never reached MQTT"));
        m.json()
    }

    /// The idle timeout legitimately closes a connection that was quiet for that long (the
    /// discovery hold of a new category alone is 1.5 s), the header timeout one that never
    /// sent anything: reconnect such a camera.
    async fn reconnect_if_idle(&self, cam: &mut Camera) {
        let quiet = if cam.posted {
            IDLE_TIMEOUT - 1.0
        } else {
            HEADER_TIMEOUT - 0.5
        };
        if cam.last_used.elapsed() > Duration::from_secs_f64(quiet) {
            *cam = self.connect(cam.mac).await;
        }
    }

    /// The other camera, connected before the case, posts after it; a fresh connection does too.
    async fn others_still_work(&mut self, other: &mut Camera, what: &str) {
        self.reconnect_if_idle(other).await;
        self.normal(other, &format!("{what} (other camera)")).await;
        let mut fresh = self.connect(OTHER_MAC).await;
        self.normal(&mut fresh, &format!("{what} (fresh connection)"))
            .await;
    }

    /// After a case: a normal post on `same`'s connection, then the other camera and a fresh
    /// connection.
    async fn all_still_work(&mut self, same: &mut Camera, other: &mut Camera, what: &str) {
        self.normal(same, &format!("{what} (same connection)"))
            .await;
        self.others_still_work(other, what).await;
    }

    /// The next `camera/bridge/unparsed` message (exactly one new one).
    async fn next_unparsed(&mut self, what: &str) -> serde_json::Value {
        let n = self.unparsed_seen + 1;
        let got = self
            .col
            .wait_count(|m| m.topic == "camera/bridge/unparsed", n, T)
            .await;
        assert!(got.len() >= n, "{what}: no camera/bridge/unparsed entry");
        self.unparsed_seen = n;
        got[n - 1].json()
    }
}

impl Harness {
    /// A bridge with small limits against its own Mosquitto, and two cameras (two MACs, two
    /// persistent connections) that have posted already. `None` (skip) without Mosquitto.
    async fn start(name: &str) -> Option<(Harness, Camera, Camera)> {
        let broker = Mosquitto::try_start()?;
        // Log lines go to the test output (shown on failure; RUST_LOG to change the level).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "camqtt=info".into()),
            )
            .with_test_writer()
            .try_init();
        let col = Collector::start(broker.port, "camera/#").await;
        let toml = format!(
            "[viewtron]\nheader_timeout = {HEADER_TIMEOUT}\nrequest_timeout = {REQUEST_TIMEOUT}\n\
             idle_timeout = {IDLE_TIMEOUT}\nmax_connections = {MAX_CONNECTIONS}\nbody_limit = {BODY_LIMIT}\n"
        );
        let bridge = Bridge::start(&broker, &toml, &format!("hostile-{name}")).await;
        let mut h = Harness {
            addr: bridge.addr,
            col,
            seq: 0,
            unparsed_seen: 0,
            bridge,
            started: Instant::now(),
            _broker: broker,
        };
        h.col
            .wait_payload("camera/bridge/state", "online", T)
            .await
            .expect("bridge online");
        // Warm up: both devices known (discovery done), both connections in use. (A camera
        // posts as soon as it connects: a connection silent for the header timeout is closed.)
        let mut same = h.connect(SAME_MAC).await;
        h.normal(&mut same, "warm-up").await;
        let mut other = h.connect(OTHER_MAC).await;
        h.normal(&mut other, "warm-up").await;
        h.normal(&mut same, "warm-up").await;
        Some((h, same, other))
    }

    /// The bridge is still up and says so; then stop it.
    async fn finish(self) {
        let state = self.col.on("camera/bridge/state");
        assert!(
            state.iter().all(|m| m.payload.as_ref() == b"online"),
            "bridge never went offline"
        );
        eprintln!(
            "hostile: {} unparsed entries, {} plates, {:.1} s",
            self.unparsed_seen,
            self.seq,
            self.started.elapsed().as_secs_f64()
        );
        self.bridge.stop().await;
    }
}

/// A case that breaks HTTP framing: the server answers (200 + `Connection: close`) or, with
/// `expect_reply` false, closes without sending a byte; either way it counts one HTTP error
/// and one unparsed post, and publishes `reason`.
async fn framing_case(
    h: &mut Harness,
    other: &mut Camera,
    what: &str,
    request: Vec<u8>,
    reason: &str,
    expect_reply: bool,
) {
    let before = counts(h.bridge.telemetry());
    let mut s = TcpStream::connect(h.addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    // Write in the background: the server may stop reading at any point.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut tmp = Vec::new();
    let r = tokio::time::timeout(T, rd.read_to_end(&mut tmp)).await;
    assert!(r.is_ok(), "{what}: connection not closed by the server");
    let wr = writer.await.expect("writer");
    s = rd.reunite(wr).expect("reunite");
    drop(s);
    let text = String::from_utf8_lossy(&tmp);
    if expect_reply {
        assert!(
            text.starts_with("HTTP/1.1 200 OK"),
            "{what}: reply {text:?}"
        );
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{what}: {text:?}"
        );
        assert!(
            tmp.ends_with(REPLY),
            "{what}: the reply is the success document"
        );
    } else {
        assert!(tmp.is_empty(), "{what}: no reply expected, got {text:?}");
    }
    let after = counts(h.bridge.telemetry());
    assert_eq!(
        after.http_errors,
        before.http_errors + 1,
        "{what}: http_errors"
    );
    assert_eq!(
        after.unparsed,
        before.unparsed + 1,
        "{what}: unparsed counter"
    );
    let u = h.next_unparsed(what).await;
    assert_eq!(u["reason"], reason, "{what}: {u}");
    assert_eq!(u["peer"], "127.0.0.1", "{what}");
    assert!(
        u["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}: {u}"
    );
    h.others_still_work(other, what).await;
}

/// A post that reaches the parser and is refused there: same reply, connection kept, one
/// unparsed entry with `reason` and the post's path, then a normal post on the same connection.
async fn parser_case(
    h: &mut Harness,
    same: &mut Camera,
    other: &mut Camera,
    what: &str,
    body: &[u8],
    reason: &str,
) -> serde_json::Value {
    h.reconnect_if_idle(same).await;
    let before = counts(h.bridge.telemetry());
    let path = format!("/hostile/{what}");
    same.stream
        .write_all(&post(&path, body))
        .await
        .expect("write");
    let r = read_response(&mut same.stream, T)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        (r.status.as_str(), r.body.as_slice()),
        ("HTTP/1.1 200 OK", REPLY),
        "{what}"
    );
    let u = h.next_unparsed(what).await;
    assert_eq!(u["reason"], reason, "{what}: {u}");
    assert_eq!(u["path"], path.as_str(), "{what}");
    assert_eq!(u["body_len"], body.len(), "{what}");
    assert!(
        u["body"].as_str().is_some_and(|b| b.len() <= 4096 * 3),
        "{what}: body copy is capped"
    );
    let after = counts(h.bridge.telemetry());
    assert_eq!(
        after.unparsed,
        before.unparsed + 1,
        "{what}: unparsed counter"
    );
    assert_eq!(after.events, before.events, "{what}: no event");
    assert_eq!(
        after.http_errors, before.http_errors,
        "{what}: not an HTTP error"
    );
    h.all_still_work(same, other, what).await;
    u
}

/// A post whose event is kept with an image problem: the event arrives with warnings.
async fn image_case(
    h: &mut Harness,
    same: &mut Camera,
    other: &mut Camera,
    what: &str,
    overview_b64: &str,
    crop_b64: &str,
    warnings: bool,
) -> serde_json::Value {
    h.reconnect_if_idle(same).await;
    let before = counts(h.bridge.telemetry());
    let plate = h.next_plate();
    let body = camera::ipc_lpr_b64(same.mac, &plate, overview_b64, crop_b64);
    same.stream
        .write_all(&post("/API", body.as_bytes()))
        .await
        .expect("write");
    let r = read_response(&mut same.stream, T)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.body, REPLY, "{what}");
    same.last_used = Instant::now();
    let ev = h.expect_plate(same.mac, &plate, what).await;
    let after = counts(h.bridge.telemetry());
    assert_eq!(after.events, before.events + 1, "{what}: events");
    assert_eq!(after.unparsed, before.unparsed, "{what}: the event is kept");
    let w = ev["warnings"].as_array().map(Vec::len).unwrap_or(0);
    if warnings {
        assert!(w >= 1, "{what}: warning in the event JSON: {ev}");
        assert!(
            after.image_errors > before.image_errors,
            "{what}: image_errors counter"
        );
    } else {
        assert_eq!(w, 0, "{what}: {ev}");
    }
    h.all_still_work(same, other, what).await;
    ev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parser_refusals_keep_the_connection_and_everyone_else_served() {
    let Some((mut h, mut same, mut other)) = Harness::start("parser_refusals_keep_the").await
    else {
        return;
    };
    // ---- Posts that reach the parser: the connection carries on. ----
    let deep = format!(
        "<config version=\"1.7\">{}{}</config>",
        "<a>".repeat(100_000),
        "</a>".repeat(100_000)
    );
    parser_case(
        &mut h,
        &mut same,
        &mut other,
        "deep-nesting",
        deep.as_bytes(),
        "too-complex",
    )
    .await;

    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<config version="1.7"><smartType>VEHICE</smartType><mac>02:00:5e:77:00:01</mac><listInfo><item><image>1</image><plateNumber>&lol9;</plateNumber></item></listInfo></config>"#;
    parser_case(
        &mut h,
        &mut same,
        &mut other,
        "billion-laughs",
        laughs.as_bytes(),
        "forbidden-dtd",
    )
    .await;

    let xxe = r#"<?xml version="1.0"?><!DOCTYPE config [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<config version="1.7"><smartType>VEHICE</smartType><mac>02:00:5e:77:00:01</mac><listInfo><item><image>1</image><plateNumber>&xxe;</plateNumber></item></listInfo></config>"#;
    let u = parser_case(
        &mut h,
        &mut same,
        &mut other,
        "external-entity",
        xxe.as_bytes(),
        "forbidden-dtd",
    )
    .await;
    assert!(
        !u.to_string().contains("root:x:0:0"),
        "no file content leaks: {u}"
    );

    let mut bad_utf8 = lpr(SAME_MAC, "UTF8BAD").into_bytes();
    let at = bad_utf8.windows(7).position(|w| w == b"UTF8BAD").unwrap();
    bad_utf8[at + 2] = 0xFF;
    bad_utf8[at + 3] = 0xC0;
    parser_case(
        &mut h,
        &mut same,
        &mut other,
        "invalid-utf8",
        &bad_utf8,
        "parse-error",
    )
    .await;

    let full = lpr(SAME_MAC, "TRUNC01");
    let truncated = &full.as_bytes()[..full.len() / 2];
    parser_case(
        &mut h,
        &mut same,
        &mut other,
        "truncated",
        truncated,
        "parse-error",
    )
    .await;

    parser_case(
        &mut h,
        &mut same,
        &mut other,
        "nul-bytes",
        &[0u8; 4096],
        "not-xml",
    )
    .await;

    let items = "<item><image>1</image></item>".repeat(50_000);
    let many = format!(
        "<config version=\"1.7\"><smartType>VEHICE</smartType><mac>{SAME_MAC}</mac><listInfo>{items}</listInfo>{}</config>",
        "<x/>".repeat(100_001)
    );
    parser_case(
        &mut h,
        &mut same,
        &mut other,
        "node-flood",
        many.as_bytes(),
        "too-complex",
    )
    .await;

    {
        // 50,000 plate items (under the node limit): one event, the first 256 plates kept.
        let before = counts(h.bridge.telemetry());
        let plate = h.next_plate();
        let items = format!(
            "<item><image>1</image><plateNumber>{plate}</plateNumber></item>{}",
            "<item><image>1</image><plateNumber>P</plateNumber></item>".repeat(49_999)
        );
        let body = format!(
            "<config version=\"1.7\"><smartType>VEHICE</smartType><mac>{SAME_MAC}</mac><listInfo>{items}</listInfo></config>"
        );
        h.post_ok(&mut same, &post("/API", body.as_bytes())).await;
        let ev = h.expect_plate(SAME_MAC, &plate, "50k-items").await;
        assert_eq!(
            ev["plates"].as_array().map(Vec::len),
            Some(256),
            "plates capped"
        );
        assert!(
            ev.to_string().contains("49744 plates dropped"),
            "{}",
            ev["warnings"]
        );
        assert_eq!(counts(h.bridge.telemetry()).events, before.events + 1);
        h.all_still_work(&mut same, &mut other, "50k-items").await;
    }

    parser_case(
        &mut h,
        &mut same,
        &mut other,
        "unknown-root",
        b"<html><body>hi</body></html>",
        "unknown-root",
    )
    .await;
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_broken_parts_are_kept_with_warnings() {
    let Some((mut h, mut same, mut other)) = Harness::start("events_with_broken_parts").await
    else {
        return;
    };
    // ---- Posts whose event is kept: control characters, big lists, broken images. ----
    {
        let before = counts(h.bridge.telemetry());
        let plate = h.next_plate();
        let body = lpr(SAME_MAC, &plate)
            .replace(
                &plate,
                &format!("{}\u{0}\u{1b}[2J{}", &plate[..3], &plate[3..]),
            )
            .replace("Gate camera", "Evil\u{0}\u{7f}cam");
        h.post_ok(&mut same, &post("/API", body.as_bytes())).await;
        // The control characters are gone: the plate arrives as the clean text plus "[2J".
        let want = format!("{}[2J{}", &plate[..3], &plate[3..]);
        let ev = h.expect_plate(SAME_MAC, &want, "nul-in-text").await;
        assert_eq!(ev["device"]["name"], "Evilcam");
        assert!(counts(h.bridge.telemetry()).events > before.events);
        h.all_still_work(&mut same, &mut other, "nul-in-text").await;
    }

    {
        // 10,000 targets in one intrusion post: the event keeps the first 256, says so, and
        // stays a reasonable size.
        let before = counts(h.bridge.telemetry());
        let items: String = (0..10_000)
            .map(|i| format!("<item><targetId>{i}</targetId><rect><x1>1</x1><y1>1</y1><x2>2</x2><y2>2</y2></rect><targetImageData><targetType>1</targetType><targetBase64Data></targetBase64Data></targetImageData></item>"))
            .collect();
        let body = format!(
            "<config version=\"1.7\"><smartType>PEA</smartType><currentTime>1790000300000000</currentTime><mac>{SAME_MAC}</mac>\
             <perimeter><perInfo><item><eventId>5</eventId><targetId>9</targetId><status>SMART_START</status></item></perInfo></perimeter>\
             <listInfo>{items}</listInfo></config>"
        );
        h.post_ok(&mut same, &post("/API", body.as_bytes())).await;
        let topic = format!("camera/{}/intrusion/event", mac_slug(SAME_MAC));
        let m: Msg = h
            .col
            .wait_for(|m| m.topic == topic, T)
            .await
            .expect("intrusion event");
        let ev = m.json();
        assert_eq!(
            ev["targets"].as_array().map(Vec::len),
            Some(256),
            "targets capped"
        );
        assert!(
            m.payload.len() < 200_000,
            "event JSON {} bytes",
            m.payload.len()
        );
        assert!(
            ev.to_string().contains("9744 targets dropped"),
            "the cut is reported: {}",
            ev["warnings"]
        );
        assert_eq!(counts(h.bridge.telemetry()).events, before.events + 1);
        h.all_still_work(&mut same, &mut other, "10k-targets").await;
    }

    let crop = b64(&image("plate1.jpg"));
    image_case(
        &mut h,
        &mut same,
        &mut other,
        "invalid-base64",
        "",
        "!!!@@@ not base64 ###",
        true,
    )
    .await;
    let png = b64(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0");
    image_case(
        &mut h,
        &mut same,
        &mut other,
        "non-jpeg-base64",
        &png,
        &crop,
        true,
    )
    .await;
    let ev = image_case(&mut h, &mut same, &mut other, "empty-image", "", "", false).await;
    assert_eq!(ev["images"]["target"], false, "{ev}");
    {
        // A 5 MB overview (6.7 MB of base64): delivered byte for byte.
        let huge = big_jpeg(5_000_000);
        let ev = image_case(
            &mut h,
            &mut same,
            &mut other,
            "huge-image",
            &b64(&huge),
            &crop,
            false,
        )
        .await;
        assert_eq!(ev["images"]["overview_bytes"], huge.len(), "{ev}");
        let topic = format!("camera/{}/lpr/image", mac_slug(SAME_MAC));
        let img = h
            .col
            .wait_for(|m| m.topic == topic && m.payload.len() == huge.len(), T)
            .await
            .expect("huge overview on MQTT");
        assert!(
            img.payload.as_ref() == huge.as_slice(),
            "huge overview bytes differ"
        );
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_errors_close_only_that_connection() {
    let Some((mut h, mut same, mut other)) = Harness::start("framing_errors_close_onl").await
    else {
        return;
    };
    // ---- Framing errors: the connection is closed; everyone else carries on. ----
    let over = BODY_LIMIT + 1;
    framing_case(
        &mut h,
        &mut other,
        "body-over-limit-content-length",
        format!("POST /API HTTP/1.1\r\nHost: x\r\nContent-Length: {over}\r\n\r\n<config>")
            .into_bytes(),
        "body-too-large",
        true,
    )
    .await;
    {
        // 1 MiB chunks, two more than the limit holds.
        let chunk = 1 << 20;
        let mut req = head("/API", &["Host: x", "Transfer-Encoding: chunked"]);
        req.extend(chunks(&vec![b'A'; (BODY_LIMIT / chunk + 2) * chunk], chunk));
        framing_case(
            &mut h,
            &mut other,
            "body-over-limit-chunked",
            req,
            "body-too-large",
            true,
        )
        .await;
    }
    framing_case(
        &mut h,
        &mut other,
        "header-section-over-limit",
        format!(
            "POST /API HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "b".repeat(70 * 1024)
        )
        .into_bytes(),
        "header-too-large",
        true,
    )
    .await;
    framing_case(
        &mut h,
        &mut other,
        "too-many-headers",
        format!(
            "POST /API HTTP/1.1\r\n{}Content-Length: 0\r\n\r\n",
            (0..150)
                .map(|i| format!("X-H{i}: v\r\n"))
                .collect::<String>()
        )
        .into_bytes(),
        "too-many-headers",
        true,
    )
    .await;
    framing_case(
        &mut h,
        &mut other,
        "garbage-request-line",
        b"\x16\x01\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage\r\n\r\n".to_vec(),
        "bad-request",
        true,
    )
    .await;
    // A camera set to `https`: a TLS ClientHello gets no HTTP reply at all (a `200` would look
    // like success), and says what it is.
    framing_case(
        &mut h,
        &mut other,
        "tls-client-hello",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage\r\n\r\n".to_vec(),
        "tls-on-plain-port",
        false,
    )
    .await;
    framing_case(
        &mut h,
        &mut other,
        "unknown-transfer-coding-with-length",
        b"POST /API HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\nhello".to_vec(),
        "bad-request",
        true,
    )
    .await;
    framing_case(
        &mut h,
        &mut other,
        "conflicting-content-lengths",
        b"POST /API HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            .to_vec(),
        "bad-request",
        true,
    )
    .await;
    framing_case(
        &mut h,
        &mut other,
        "negative-content-length",
        b"POST /API HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        "bad-request",
        true,
    )
    .await;
    framing_case(
        &mut h,
        &mut other,
        "overflowing-content-length",
        b"POST /API HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999999\r\n\r\n"
            .to_vec(),
        "body-too-large",
        true,
    )
    .await;
    framing_case(
        &mut h,
        &mut other,
        "bad-chunk-size",
        b"POST /API HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(),
        "bad-request",
        true,
    )
    .await;
    {
        // Content-Length and chunked together (what some firmware sends): chunked wins, the
        // post is an event and the connection carries on.
        let plate = h.next_plate();
        let req = chunked(
            "/API",
            lpr(SAME_MAC, &plate).as_bytes(),
            &["Content-Length: 3"],
        );
        h.post_ok(&mut same, &req).await;
        h.expect_plate(SAME_MAC, &plate, "length-and-chunked").await;
        h.normal(&mut same, "length-and-chunked (same connection)")
            .await;
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_time_out_alone() {
    let Some((mut h, _, mut other)) = Harness::start("slow").await else {
        return;
    };
    // ---- Slowloris: header trickle, body trickle, silence. ----
    for (what, head, reason, limit) in [
        (
            "header-trickle",
            b"POST /API HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec(),
            "header-timeout",
            HEADER_TIMEOUT,
        ),
        (
            "body-trickle",
            b"POST /API HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n<config>".to_vec(),
            "body-timeout",
            REQUEST_TIMEOUT,
        ),
    ] {
        let before = counts(h.bridge.telemetry());
        let s = TcpStream::connect(h.addr).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let t0 = Instant::now();
        let trickle = tokio::spawn(async move {
            if wr.write_all(&head).await.is_err() {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if wr.write_all(b"a").await.is_err() {
                    return;
                }
            }
        });
        let mut got = Vec::new();
        let closed = tokio::time::timeout(T, rd.read_to_end(&mut got)).await;
        let held = t0.elapsed();
        trickle.abort();
        assert!(closed.is_ok(), "{what}: never closed");
        assert!(
            held >= Duration::from_secs_f64(limit - 0.2)
                && held < Duration::from_secs_f64(limit + 1.5),
            "{what}: closed after {held:?}, limit {limit} s"
        );
        assert!(got.ends_with(REPLY), "{what}: reply before closing");
        let after = counts(h.bridge.telemetry());
        assert_eq!(after.http_errors, before.http_errors + 1, "{what}");
        assert_eq!(after.unparsed, before.unparsed + 1, "{what}");
        let u = h.next_unparsed(what).await;
        assert_eq!(u["reason"], reason, "{what}: {u}");
        h.others_still_work(&mut other, what).await;
    }
    {
        // A new connection that never sends a byte is closed after the header timeout (not
        // the idle timeout of keep-alive connections between requests), quietly (not an
        // error, nothing published).
        let before = counts(h.bridge.telemetry());
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        let t0 = Instant::now();
        let at = wait_closed(&mut s, Duration::from_secs_f64(IDLE_TIMEOUT + 3.0))
            .await
            .expect("silent connection closed");
        let held = at - t0;
        assert!(
            held >= Duration::from_secs_f64(HEADER_TIMEOUT - 0.2)
                && held < Duration::from_secs_f64(HEADER_TIMEOUT + 1.5),
            "silent connection closed after {held:?}, header timeout {HEADER_TIMEOUT} s"
        );
        let after = counts(h.bridge.telemetry());
        assert_eq!(
            after.http_errors, before.http_errors,
            "a silent close is not an error"
        );
        assert_eq!(after.unparsed, before.unparsed, "nothing to publish");
        let mut same = h.connect(SAME_MAC).await;
        h.normal(&mut same, "after a silent connection").await;
        h.others_still_work(&mut other, "silent-connection").await;
    }

    {
        // A flood of silent connections fills every slot: they give them back after the
        // header timeout, and a real camera waiting behind them is served then (not only
        // after the idle timeout).
        let before = counts(h.bridge.telemetry());
        let mut silent = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            silent.push(TcpStream::connect(h.addr).await.unwrap());
        }
        let t0 = Instant::now();
        let mut cam = h.connect(OTHER_MAC).await;
        let plate = h.next_plate();
        cam.stream
            .write_all(&post("/API", lpr(OTHER_MAC, &plate).as_bytes()))
            .await
            .unwrap();
        let r = read_response(&mut cam.stream, Duration::from_secs_f64(IDLE_TIMEOUT + 3.0))
            .await
            .expect("served once the silent connections were closed");
        let waited = t0.elapsed();
        assert_eq!(r.body, REPLY);
        assert!(
            waited < Duration::from_secs_f64(HEADER_TIMEOUT + 1.5),
            "served after {waited:?}: silent connections held their slots beyond the header timeout ({HEADER_TIMEOUT} s)"
        );
        h.expect_plate(OTHER_MAC, &plate, "behind silent connections")
            .await;
        for mut s in silent {
            wait_closed(&mut s, Duration::from_secs_f64(HEADER_TIMEOUT + 3.0))
                .await
                .expect("silent connection closed");
        }
        let after = counts(h.bridge.telemetry());
        assert_eq!(after.http_errors, before.http_errors, "silent closes");
        assert_eq!(after.unparsed, before.unparsed, "silent closes");
        h.others_still_work(&mut other, "silent-flood").await;
    }

    {
        // Blank lines between requests are allowed, but an endless trickle of them is a request
        // preamble, not idleness: the header timeout closes it (counted and published), long
        // before the idle timeout would.
        let before = counts(h.bridge.telemetry());
        let s = TcpStream::connect(h.addr).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let t0 = Instant::now();
        let trickle = tokio::spawn(async move {
            loop {
                if wr.write_all(b"\r\n").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let mut got = Vec::new();
        let closed = tokio::time::timeout(
            Duration::from_secs_f64(IDLE_TIMEOUT + 3.0),
            rd.read_to_end(&mut got),
        )
        .await;
        trickle.abort();
        let held = t0.elapsed();
        assert!(
            closed.is_ok(),
            "a CRLF trickle held the connection ({held:?})"
        );
        assert!(
            held < Duration::from_secs_f64(IDLE_TIMEOUT),
            "CRLF trickle closed only after {held:?}"
        );
        assert_eq!(
            counts(h.bridge.telemetry()).http_errors,
            before.http_errors + 1
        );
        let u = h.next_unparsed("crlf-trickle").await;
        assert_eq!(u["reason"], "header-timeout", "{u}");
        h.others_still_work(&mut other, "crlf-trickle").await;
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_new_clients_wait_for_a_free_slot() {
    let Some((mut h, _, _)) = Harness::start("limit").await else {
        return;
    };
    // ---- Connection limit: at the cap new clients wait; a freed slot serves them. ----
    {
        // Every earlier connection of this test is gone except `same` and `other`; let the
        // server finish lingering ones.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // `same` and `other` were idle that long; use them again so they are fresh.
        let mut same = h.connect(SAME_MAC).await;
        h.normal(&mut same, "before cap").await;
        let mut other = h.connect(OTHER_MAC).await;
        h.normal(&mut other, "before cap").await;
        let mut fillers = Vec::new();
        for _ in 0..MAX_CONNECTIONS - 2 {
            let mut f = TcpStream::connect(h.addr).await.unwrap();
            f.write_all(&post("/API", b"")).await.unwrap();
            read_response(&mut f, T)
                .await
                .expect("filler served (heartbeat)");
            fillers.push(f);
        }
        let before = counts(h.bridge.telemetry());
        let mut waiting = h.connect(OTHER_MAC).await;
        let plate = h.next_plate();
        waiting
            .stream
            .write_all(&post("/API", lpr(OTHER_MAC, &plate).as_bytes()))
            .await
            .unwrap();
        assert!(
            read_response(&mut waiting.stream, Duration::from_millis(600))
                .await
                .is_err(),
            "connection {} served beyond max_connections",
            MAX_CONNECTIONS + 1
        );
        assert_eq!(
            counts(h.bridge.telemetry()).connections,
            before.connections,
            "not accepted at the cap"
        );
        // Connections already served keep working at the cap.
        h.normal(&mut same, "at the cap (same connection)").await;
        // Free a slot: the waiting camera is served and its plate arrives.
        drop(fillers.pop());
        let r = read_response(&mut waiting.stream, T)
            .await
            .expect("served once a slot is free");
        assert_eq!(r.body, REPLY);
        h.expect_plate(OTHER_MAC, &plate, "after a slot was freed")
            .await;
        assert_eq!(
            counts(h.bridge.telemetry()).connections,
            before.connections + 1
        );

        // At the cap again, nobody leaves: idle fillers are closed after the idle timeout, so a
        // connection flood cannot hold the receiver for longer than that.
        let mut waiting2 = TcpStream::connect(h.addr).await.unwrap();
        let plate2 = h.next_plate();
        let t0 = Instant::now();
        waiting2
            .write_all(&post("/API", lpr(OTHER_MAC, &plate2).as_bytes()))
            .await
            .unwrap();
        let r = read_response(&mut waiting2, Duration::from_secs_f64(IDLE_TIMEOUT + 3.0))
            .await
            .expect("served after idle connections timed out");
        assert_eq!(r.body, REPLY);
        assert!(t0.elapsed() < Duration::from_secs_f64(IDLE_TIMEOUT + 2.0));
        h.expect_plate(OTHER_MAC, &plate2, "after idle fillers were closed")
            .await;
        drop(fillers);
        let mut fresh = h.connect(SAME_MAC).await;
        h.normal(&mut fresh, "after the connection limit").await;
    }
    h.finish().await;
}
