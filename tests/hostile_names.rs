//! Device-provided names never reach a topic unsanitised: posts whose MAC, serial, device name,
//! raw event type, NVR channel and alarm names are path traversals, MQTT wildcards, separators,
//! control characters, NUL or very long go through the real receiver into a real Mosquitto;
//! every topic the bridge publishes (events, states, images, discovery) is then checked level
//! by level.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::bridge::Bridge;
use common::camera::{T, post_with, send_close};
use common::{Collector, Mosquitto};

fn ipc(mac: &str, serial: &str, name: &str, smart_type: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<config version="1.7" xmlns="http://www.ipc.com/ver10">
<smartType type="openAlramObj">{smart_type}</smartType>
<currentTime type="tint64">1790000300000000</currentTime>
<mac type="string"><![CDATA[{mac}]]></mac>
<sn type="string"><![CDATA[{serial}]]></sn>
<deviceName type="string"><![CDATA[{name}]]></deviceName>
<perimeter><perInfo type="list" count="1"><item><eventId type="uint32">5</eventId><targetId type="uint32">9</targetId>
<status type="perStatus">SMART_START</status></item></perInfo></perimeter>
</config>"#
    )
}

fn nvr(mac: &str, name: &str, channel: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<config version="2.0.0" xmlns="http://www.ipc.com/ver10">
<messageType>alarmData</messageType>
<deviceInfo><deviceName><![CDATA[{name}]]></deviceName><ip><![CDATA[../../10.0.0.1]]></ip><mac><![CDATA[{mac}]]></mac><channelId>{channel}</channelId></deviceInfo>
<smartType>videoFaceDetect</smartType>
<currentTime>1790000100000000</currentTime>
<faceListInfo><item><targetId>12</targetId><rect><x1>10</x1><y1>20</y1><x2>30</x2><y2>40</y2></rect></item></faceListInfo>
</config>"#
    )
}

async fn send(addr: SocketAddr, body: &[u8]) {
    let request = post_with(
        "/../../etc/passwd?x=/+#",
        &["Host: x", "Connection: close"],
        body,
    );
    let reply = send_close(addr, &request).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 200 OK"),
        "hostile names still get the normal reply"
    );
}

/// Every level of a topic the bridge publishes is safe.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.len() > 1024 {
        return Err(format!("topic is {} bytes long", topic.len()));
    }
    for level in topic.split('/') {
        if level.is_empty() {
            return Err("empty level".into());
        }
        if level == "." || level == ".." {
            return Err("dot level".into());
        }
        if level.contains(['+', '#']) || level.chars().any(char::is_control) {
            return Err(format!("wildcard or control character in level {level:?}"));
        }
        if level.chars().count() > 128 {
            return Err(format!("level of {} characters", level.chars().count()));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_device_names_never_reach_topics_unsanitised() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let col = Collector::start(broker.port, "#").await;
    let bridge = Bridge::start(&broker, "", "camqtt-names").await;
    let addr = bridge.addr;
    col.wait_payload("camera/bridge/state", "online", T)
        .await
        .expect("online");

    let errors_before = bridge.telemetry().mqtt_errors.get();
    let long = "A/".repeat(5000);
    let hostile_name = "../../etc/passwd+#/\u{1}\u{7f}";
    // 1. Not a MAC at all, a serial full of separators, a traversal name, a known type.
    send(
        addr,
        ipc(
            "../../etc/passwd",
            &format!("/../{long}"),
            hostile_name,
            "PEA",
        )
        .as_bytes(),
    )
    .await;
    // 2. Wildcards as MAC and serial, a hostile raw event type (unknown: published under its
    //    sanitised raw type).
    send(
        addr,
        ipc("+/#", "#", "$SYS/broker", "../+#/Évil\u{7}Type").as_bytes(),
    )
    .await;
    // 3. A very long MAC-like string and raw NUL bytes in the name.
    let mut p3 = ipc(&"58:5B:69".repeat(2000), "sn", "nul\u{0}name", "PEA").into_bytes();
    p3.push(0);
    send(addr, &p3).await;
    // 4. An NVR with a wildcard name, a traversal IP and channels that are not numbers.
    for ch in ["../1", "+", "4294967296", "-1", "3"] {
        send(addr, nvr("58:5B:69:0D:0D:0D", "#", ch).as_bytes()).await;
    }
    // 5. Alarm-status with hostile element content.
    send(
        addr,
        br#"<config version="1.7" xmlns="http://www.ipc.com/ver10"><mac>../..</mac><alarmStatusInfo><perimeterAlarm id="../+#">true</perimeterAlarm><a..b>true</a..b></alarmStatusInfo></config>"#,
    )
    .await;

    // The first post is published (under the peer-derived id), with its name in the JSON only.
    let ev = col
        .wait_for(
            |m| m.topic.ends_with("/event") && m.text().contains("etc/passwd+#"),
            T,
        )
        .await
        .expect("the hostile-named camera's event is still published");
    let name = ev.json()["device"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        name,
        hostile_name.replace(char::is_control, ""),
        "the name stays in the payload (JSON-escaped), without control characters"
    );
    // The NVR channel 3 post arrives (its siblings may be unparsed or folded; never unsafe).
    col.wait_for(
        |m| m.topic.contains("58_5b_69_0d_0d_0d") && m.topic.ends_with("/event"),
        T,
    )
    .await
    .expect("NVR event");
    // Let discovery, states and settle-delayed messages arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let all = col.all();
    assert!(
        all.len() > 10,
        "the bridge published something: {}",
        all.len()
    );
    let mut bad = Vec::new();
    for m in &all {
        if let Err(why) = check_topic(&m.topic) {
            bad.push(format!("{:?}: {why}", m.topic));
        }
        // Discovery payloads name topics too; every `*_topic` value must be safe.
        if m.topic.starts_with("homeassistant/") && !m.payload.is_empty() {
            let mut stack = vec![m.json()];
            while let Some(v) = stack.pop() {
                match v {
                    serde_json::Value::Object(o) => {
                        for (k, v) in o {
                            if (k.ends_with("_topic") || k == "topic")
                                && let Some(t) = v.as_str()
                                && let Err(why) = check_topic(t)
                            {
                                bad.push(format!("{} in {}: {t:?}: {why}", k, m.topic));
                            }
                            stack.push(v);
                        }
                    }
                    serde_json::Value::Array(a) => stack.extend(a),
                    _ => {}
                }
            }
        }
    }
    assert!(bad.is_empty(), "unsafe topics:\n{}", bad.join("\n"));
    // A broker drops (or disconnects on) a PUBLISH with a wildcard, so "nothing unsafe was
    // received" alone proves little: the hostile alarm id must arrive, sanitised, and the
    // bridge must not have had a publish refused.
    assert!(
        all.iter().any(|m| m
            .topic
            .starts_with("camera/127_0_0_1/alarm/perimeterAlarm_")),
        "the alarm with a hostile id is published under a sanitised level"
    );
    assert_eq!(
        bridge.telemetry().mqtt_errors.get(),
        errors_before,
        "no publish was refused"
    );
    // Device ids (the level after the base topic) are plain slugs.
    for m in all.iter().filter(|m| m.topic.starts_with("camera/")) {
        let id = m.topic.split('/').nth(1).unwrap_or_default();
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "device id level {id:?} of {}",
            m.topic
        );
    }
    bridge.stop().await;
}
