//! Receiver access control over real sockets: HTTP Basic auth and the address allow-list in
//! front of the Viewtron receiver, with `camqtt::start`, a real Mosquitto and a subscriber.
//!
//! Refused posts get `401`/`403`, are counted, and never reach MQTT (not even
//! `bridge/unparsed`: they are not input to process); a refused client does not disturb an
//! authenticated camera's persistent connection.

mod common;

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use camqtt::config;
use common::bridge::Bridge;
use common::camera::{self, Response, T, basic, mac_slug, post_with, wait_closed};
use common::{Collector, Mosquitto};

const USER: &str = "gatecam";
const PASSWORD: &str = "Zq7-very:secret pass";

/// An IPC perimeter-intrusion post from `mac` (no images).
fn intrusion(mac: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<config version="1.7" xmlns="http://www.ipc.com/ver10">
<smartType type="openAlramObj">PEA</smartType>
<currentTime type="tint64">1790000300000000</currentTime>
<mac type="string">{mac}</mac>
<perimeter><perInfo type="list" count="1"><item><eventId type="uint32">5</eventId><targetId type="uint32">9</targetId>
<status type="perStatus">SMART_START</status>
<rect><x1>200</x1><y1>200</y1><x2>400</x2><y2>800</y2></rect></item></perInfo></perimeter>
</config>"#
    )
}

/// A post to `/API` with an optional `Authorization` header.
fn post(body: &str, authorization: Option<&str>) -> Vec<u8> {
    let auth = authorization.map(|a| format!("Authorization: {a}"));
    let mut headers = vec!["Host: 127.0.0.1", "Content-Type: application/xml"];
    headers.extend(auth.as_deref());
    post_with("/API", &headers, body.as_bytes())
}

/// Write a request and read the response, status line and head lower-cased.
async fn exchange(s: &mut TcpStream, req: &[u8]) -> Response {
    camera::exchange(s, req).await.lowercased()
}

/// Read a response, status line and head lower-cased.
async fn read_response(s: &mut TcpStream) -> Response {
    camera::reply(s).await.lowercased()
}

/// The server closes the connection (EOF or reset) within `T`.
async fn assert_closed(s: &mut TcpStream) {
    assert!(
        wait_closed(s, T).await.is_some(),
        "connection not closed after a refusal"
    );
}

fn auth_toml() -> String {
    format!("[viewtron.auth]\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_refuses_without_credentials_and_admits_with_them() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let col = Collector::start(broker.port, "#").await;
    let bridge = Bridge::start(&broker, &auth_toml(), "camqtt-auth-basic").await;
    col.wait_payload("camera/bridge/state", "online", T)
        .await
        .expect("bridge online");
    let failures_before = bridge.telemetry().auth_failures.get();

    // An authenticated camera with a persistent connection.
    let good_mac = "58:5B:69:AA:30:01";
    let mut good = TcpStream::connect(bridge.addr).await.unwrap();
    let r = exchange(
        &mut good,
        &post(&intrusion(good_mac), Some(&basic(USER, PASSWORD))),
    )
    .await;
    assert_eq!(r.status, "http/1.1 200 ok");
    assert!(
        r.body.starts_with(b"<?xml"),
        "the devices' success document"
    );
    let event_topic = format!("camera/{}/intrusion/event", mac_slug(good_mac));
    col.wait_for(|m| m.topic == event_topic, T)
        .await
        .expect("authenticated post published");

    // Refused: no header, wrong password, wrong user, malformed base64, another scheme, and
    // `Expect: 100-continue` without credentials (must not get `100 Continue`).
    let bad_macs = [
        "58:5B:69:BB:00:01",
        "58:5B:69:BB:00:02",
        "58:5B:69:BB:00:03",
        "58:5B:69:BB:00:04",
        "58:5B:69:BB:00:05",
    ];
    let wrong_pw = basic(USER, "Zq7-very:secret pasS");
    let wrong_user = basic("gatecaM", PASSWORD);
    let attempts: [(&str, Option<&str>); 5] = [
        (bad_macs[0], None),
        (bad_macs[1], Some(&wrong_pw)),
        (bad_macs[2], Some(&wrong_user)),
        (bad_macs[3], Some("Basic ****not-base64****")),
        (bad_macs[4], Some("Bearer abc.def")),
    ];
    for (mac, auth) in attempts {
        let mut s = TcpStream::connect(bridge.addr).await.unwrap();
        let r = exchange(&mut s, &post(&intrusion(mac), auth)).await;
        assert_eq!(r.status, "http/1.1 401 unauthorized", "{mac} {auth:?}");
        assert!(
            r.head
                .contains("www-authenticate: basic realm=\"camqtt\"\r\n"),
            "{}",
            r.head
        );
        assert!(r.head.contains("connection: close"), "{}", r.head);
        assert_closed(&mut s).await;
    }
    {
        let body = intrusion("58:5B:69:BB:00:06");
        let mut s = TcpStream::connect(bridge.addr).await.unwrap();
        let head = format!(
            "POST /API HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let r = read_response(&mut s).await;
        assert_eq!(r.status, "http/1.1 401 unauthorized");
        assert_closed(&mut s).await;
    }
    // Pipelined: a bad request ahead of a good one on the same connection; the connection is
    // closed at the refusal, the good one behind it is not processed.
    {
        let mut s = TcpStream::connect(bridge.addr).await.unwrap();
        let mut both = post(&intrusion("58:5B:69:BB:00:07"), None);
        both.extend(post(
            &intrusion("58:5B:69:BB:00:08"),
            Some(&basic(USER, PASSWORD)),
        ));
        let r = exchange(&mut s, &both).await;
        assert_eq!(r.status, "http/1.1 401 unauthorized");
        assert_closed(&mut s).await;
    }
    // A request that cannot even be framed, from a client that never authenticated: `401`,
    // and it is not handed to the receiver (no `bridge/unparsed`; checked below).
    {
        let mut s = TcpStream::connect(bridge.addr).await.unwrap();
        let r = exchange(&mut s, b"\x01\x02 GARBAGE\r\n\r\n").await;
        assert_eq!(r.status, "http/1.1 401 unauthorized");
        assert_closed(&mut s).await;
    }
    assert!(
        bridge.telemetry().auth_failures.get() >= failures_before + 7,
        "every refusal is counted"
    );

    // The authenticated camera's connection is undisturbed.
    let good2 = "58:5B:69:AA:30:02";
    let r = exchange(
        &mut good,
        &post(&intrusion(good2), Some(&basic(USER, PASSWORD))),
    )
    .await;
    assert_eq!(r.status, "http/1.1 200 ok");
    let topic2 = format!("camera/{}/intrusion/event", mac_slug(good2));
    col.wait_for(|m| m.topic == topic2, T)
        .await
        .expect("second authenticated post published");
    // A moment for anything that (wrongly) got through to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = col.all();
    for mac in bad_macs.iter().copied().chain([
        "58:5B:69:BB:00:06",
        "58:5B:69:BB:00:07",
        "58:5B:69:BB:00:08",
    ]) {
        let slug = mac_slug(mac);
        let leaked: Vec<_> = all
            .iter()
            .filter(|m| m.topic.contains(&slug) || m.text().to_ascii_lowercase().contains(&slug))
            .map(|m| m.topic.clone())
            .collect();
        assert!(
            leaked.is_empty(),
            "refused post from {mac} reached MQTT: {leaked:?}"
        );
    }
    assert!(
        all.iter().all(|m| m.topic != "camera/bridge/unparsed"),
        "refused posts are not published as unparsed"
    );
    assert!(
        all.iter().all(|m| !m.text().contains(PASSWORD)),
        "the password never reaches MQTT"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_refuses_peers_outside_it() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let col = Collector::start(broker.port, "#").await;

    // 127.0.0.1 is not in 10.0.0.0/8: refused with 403 even with the right credentials.
    let toml = format!(
        "[viewtron]\nallow = [\"10.0.0.0/8\", \"fd00::/8\"]\n{}",
        auth_toml()
    );
    let closed = Bridge::start(&broker, &toml, "camqtt-auth-deny").await;
    col.wait_payload("camera/bridge/state", "online", T)
        .await
        .expect("bridge online");
    let forbidden_before = closed.telemetry().forbidden.get();
    let denied_mac = "58:5B:69:CC:00:01";
    for _ in 0..3 {
        let mut s = TcpStream::connect(closed.addr).await.unwrap();
        let r = exchange(
            &mut s,
            &post(&intrusion(denied_mac), Some(&basic(USER, PASSWORD))),
        )
        .await;
        assert_eq!(r.status, "http/1.1 403 forbidden");
        assert!(r.head.contains("connection: close"));
        assert_closed(&mut s).await;
    }
    assert!(closed.telemetry().forbidden.get() >= forbidden_before + 3);
    closed.stop().await;

    // 127.0.0.0/8 includes it: admitted.
    let open = Bridge::start(
        &broker,
        "[viewtron]\nallow = [\"192.168.0.0/16\", \"127.0.0.0/8\"]\n",
        "camqtt-auth-allow",
    )
    .await;
    let ok_mac = "58:5B:69:CC:00:02";
    let mut s = TcpStream::connect(open.addr).await.unwrap();
    let r = exchange(&mut s, &post(&intrusion(ok_mac), None)).await;
    assert_eq!(r.status, "http/1.1 200 ok");
    let topic = format!("camera/{}/intrusion/event", mac_slug(ok_mac));
    col.wait_for(|m| m.topic == topic, T)
        .await
        .expect("allowed peer's post published");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let denied = mac_slug(denied_mac);
    assert!(
        col.all().iter().all(|m| !m.topic.contains(&denied)
            && !m.text().contains(&denied)
            && m.topic != "camera/bridge/unparsed"),
        "a refused peer's post reached MQTT"
    );
    open.stop().await;
}

#[test]
fn bad_allow_entries_and_auth_without_password_are_config_problems() {
    let e = config::load_str(
        "[viewtron]\nallow = [\"10.0.0.0/8\", \"10.0.0.0/33\", \"gate.lan\"]\n[viewtron.auth]\nusername = \"u\"\n",
    )
    .expect_err("invalid");
    let text = e.to_string();
    assert!(text.contains("viewtron.allow[1]"), "{text}");
    assert!(text.contains("viewtron.allow[2]"), "{text}");
    assert!(!text.contains("viewtron.allow[0]"), "{text}");
    assert!(text.contains("viewtron.auth.password"), "{text}");
    assert!(text.contains("line 2"), "problems carry their line: {text}");
}
