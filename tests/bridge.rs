//! End to end through the real parts: posts over real keep-alive TCP connections (plain,
//! chunked, absolute-form) into `camqtt::start`, a real Mosquitto, and an MQTT subscriber that
//! checks topics, retain flags, discovery JSON and JPEG bytes message by message.

mod common;

use std::time::Duration;

use tokio::net::TcpStream;

use common::bridge::Bridge;
use common::camera::{
    REPLY, T, b64, b64_wrapped, big_jpeg, exchange, image, post_chunked_absolute, post_with,
};
use common::{Collector, Mosquitto, retained};

/// An IPC (config 1.7) licence-plate post: overview item (image=0) and plate item (image=1).
fn ipc_lpr(mac: &str, plate: &str, list: Option<&str>, overview: &[u8], crop: &[u8]) -> String {
    let list = list
        .map(|l| format!("<vehicleListType type=\"string\"><![CDATA[{l}]]></vehicleListType>"))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<config version="1.7" xmlns="http://www.ipc.com/ver10">
<smartType type="openAlarmObj">VEHICE</smartType>
<currentTime type="tint64">1790000000250000</currentTime>
<mac type="string"><![CDATA[{mac}]]></mac>
<sn type="string"><![CDATA[SN-{plate}]]></sn>
<deviceName type="string"><![CDATA[Gate camera]]></deviceName>
<channelId type="uint32">1</channelId>
<plateCount type="uint32">1</plateCount>
<listInfo type="list" count="2">
<item><image type="uint32">0</image><vehiceId type="uint32">0</vehiceId><plateNumber type="string"></plateNumber>
<targetImageData><dataType type="uint32">0</dataType><targetBase64Data type="string">{ov}</targetBase64Data></targetImageData></item>
<item><image type="uint32">1</image><vehiceId type="uint32">7</vehiceId><plateNumber type="string"><![CDATA[{plate}]]></plateNumber>
<vehicleDirect type="string">approach</vehicleDirect>{list}
<PlateConfidence type="uint32" count="9650"/>
<carAttr><color type="string">blue</color><type type="string">suv</type><brand type="string">Volvo</brand><model type="string">XC60</model></carAttr>
<targetImageData><dataType type="uint32">0</dataType><targetType type="targetType">car</targetType><Width type="uint32">88</Width><Height type="uint32">50</Height>
<targetBase64Data type="string"><![CDATA[{crop}]]></targetBase64Data></targetImageData></item>
</listInfo>
</config>"#,
        ov = b64_wrapped(overview),
        crop = b64(crop),
    )
}

/// An NVR (config 2.0.0) face post for one channel.
fn nvr_face(mac: &str, channel: u32, overview: &[u8], crop: &[u8]) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<config version="2.0.0" xmlns="http://www.ipc.com/ver10">
<messageType>alarmData</messageType>
<deviceInfo><deviceName><![CDATA[Hall NVR]]></deviceName><ip><![CDATA[10.9.8.7]]></ip><mac><![CDATA[{mac}]]></mac><channelId>{channel}</channelId></deviceInfo>
<smartType>videoFaceDetect</smartType>
<currentTime>1790000100000000</currentTime>
<sourceDataInfo><dataType>0</dataType><width>1280</width><height>720</height><sourceBase64Data>{ov}</sourceBase64Data></sourceDataInfo>
<faceListInfo><item><targetId>12</targetId><rect><x1>10</x1><y1>20</y1><x2>30</x2><y2>40</y2></rect>
<age>middleAged</age><sex>male</sex><glasses>no</glasses><mask>no</mask>
<targetImageData><dataType>0</dataType><width>184</width><height>184</height><targetBase64Data>{crop}</targetBase64Data></targetImageData></item></faceListInfo>
</config>"#,
        ov = b64(overview),
        crop = b64(crop),
    )
}

/// An IPC perimeter-intrusion post (PEA with a perimeter block).
fn ipc_intrusion(mac: &str, status: &str) -> String {
    format!(
        r#"<config version="1.7" xmlns="http://www.ipc.com/ver10">
<smartType type="openAlramObj">PEA</smartType>
<currentTime type="tint64">1790000300000000</currentTime>
<mac type="string">{mac}</mac>
<perimeter><perInfo type="list" count="1"><item><eventId type="uint32">5</eventId><targetId type="uint32">9</targetId>
<status type="perStatus">{status}</status>
<boundary type="list" count="3"><item><point><x>100</x><y>100</y></point></item><item><point><x>900</x><y>100</y></point></item><item><point><x>500</x><y>900</y></point></item></boundary>
<rect><x1>200</x1><y1>200</y1><x2>400</x2><y2>800</y2></rect></item></perInfo></perimeter>
<listInfo type="list" count="1"><item><targetId type="tuint32">9</targetId><rect><x1>200</x1><y1>200</y1><x2>400</x2><y2>800</y2></rect>
<targetImageData><dataType type="uint32">0</dataType><targetType type="uint32">1</targetType><targetBase64Data type="string"></targetBase64Data></targetImageData></item></listInfo>
</config>"#
    )
}

/// A post as the IPCs send it: a charset parameter and an explicit keep-alive.
fn post(target: &str, body: &str) -> Vec<u8> {
    post_with(
        target,
        &[
            "Host: 127.0.0.1",
            "Content-Type: application/xml; charset=utf-8",
            "Connection: keep-alive",
        ],
        body.as_bytes(),
    )
}

/// The bridge from `toml` against `broker`.
async fn start_bridge(broker: &Mosquitto, toml: &str) -> Bridge {
    Bridge::start(broker, toml, "camqtt-test").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_become_mqtt_messages_and_discovery() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let col = Collector::start(broker.port, "#").await;
    let bridge = start_bridge(&broker, "[categories.intrusion]\noff_delay = 1\n").await;
    col.wait_payload("camera/bridge/state", "online", T)
        .await
        .expect("bridge online");

    let overview = big_jpeg(700_000);
    let crop = image("plate1.jpg");
    let face_overview = image("overview.jpg");
    let face_crop = image("crop.jpg");
    let cam_mac = "58:5B:69:AA:10:01";
    let nvr_mac = "58-5b-69-aa-20-02";

    // One persistent connection carries a heartbeat, the LPR read, garbage, and the NVR post.
    let mut s = TcpStream::connect(bridge.addr).await.expect("connect");
    let r = exchange(&mut s, &post("/API", "")).await;
    assert_eq!(
        (r.status.as_str(), r.body.as_slice()),
        ("HTTP/1.1 200 OK", REPLY)
    );
    let r = exchange(
        &mut s,
        &post(
            "/API",
            &ipc_lpr(cam_mac, "KX55PLT", Some("whiteList"), &overview, &crop),
        ),
    )
    .await;
    assert_eq!(
        (r.status.as_str(), r.body.as_slice()),
        ("HTTP/1.1 200 OK", REPLY)
    );
    let r = exchange(
        &mut s,
        &post("/odd/path", "<config><smartType>VEHICE</smart"),
    )
    .await;
    assert_eq!(r.body, REPLY, "malformed posts get the same reply");
    let r = exchange(
        &mut s,
        &post_chunked_absolute(
            bridge.addr,
            nvr_face(nvr_mac, 3, &face_overview, &face_crop).as_bytes(),
            7_777,
        ),
    )
    .await;
    assert_eq!(r.body, REPLY);

    let cam = "58_5b_69_aa_10_01";
    // Images: byte-identical to what the camera encoded, on the device and category topics.
    let m = col
        .wait_for(|m| m.topic == format!("camera/{cam}/lpr/image"), T)
        .await
        .expect("overview");
    assert_eq!(m.payload.len(), overview.len());
    assert!(m.payload == overview.clone(), "overview bytes differ");
    let m = col
        .wait_for(|m| m.topic == "camera/lpr/image", T)
        .await
        .expect("category overview");
    assert!(m.payload == overview.clone());
    let m = col
        .wait_for(|m| m.topic == format!("camera/{cam}/lpr/target"), T)
        .await
        .expect("plate crop");
    assert_eq!(m.payload.as_ref(), crop.as_slice());

    // Event JSON.
    let ev = col
        .wait_for(|m| m.topic == format!("camera/{cam}/lpr/event"), T)
        .await
        .expect("lpr event")
        .json();
    assert_eq!(ev["event_type"], "plate_read");
    assert_eq!(ev["plate"], "KX55PLT");
    assert_eq!(ev["list"], "whiteList");
    assert_eq!(ev["direction"], "approach");
    assert_eq!(ev["confidence"], 96.5);
    assert_eq!(ev["raw_type"], "VEHICE");
    assert_eq!(ev["time"], "2026-09-21T14:13:20.250000Z");
    assert_eq!(ev["device"]["mac"], "58:5b:69:aa:10:01");
    assert!(
        !ev.to_string().contains("/9j/"),
        "no image data in event JSON"
    );
    col.wait_payload(&format!("camera/{cam}/lpr/plate"), "KX55PLT", T)
        .await
        .expect("plate sensor value");
    col.wait_payload(&format!("camera/{cam}/availability"), "online", T)
        .await
        .expect("availability");

    // Malformed post → bridge/unparsed, and the connection kept working (the NVR post after it).
    let u = col
        .wait_for(|m| m.topic == "camera/bridge/unparsed", T)
        .await
        .expect("unparsed")
        .json();
    assert_eq!(u["path"], "/odd/path");
    assert!(u["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(u["body"].as_str().unwrap().contains("VEHICE"));

    // NVR channel device: its own id with _ch3; face crop delivered.
    let ch = "58_5b_69_aa_20_02_ch3";
    let m = col
        .wait_for(|m| m.topic == format!("camera/{ch}/face/target"), T)
        .await
        .expect("face crop");
    assert_eq!(m.payload.as_ref(), face_crop.as_slice());
    let m = col
        .wait_for(|m| m.topic == format!("camera/{ch}/face/image"), T)
        .await
        .expect("face overview");
    assert_eq!(m.payload.as_ref(), face_overview.as_slice());
    col.wait_payload(&format!("camera/{ch}/face/state"), "ON", T)
        .await
        .expect("face on");

    // Intrusion: ON, then OFF after the configured off_delay (1 s) without a stop signal.
    let mut s2 = TcpStream::connect(bridge.addr)
        .await
        .expect("second camera");
    exchange(
        &mut s2,
        &post("/API", &ipc_intrusion("58:5b:69:aa:30:03", "SMART_START")),
    )
    .await;
    let on = col
        .wait_payload("camera/58_5b_69_aa_30_03/intrusion/state", "ON", T)
        .await
        .expect("on");
    let off = col
        .wait_for(
            |m| {
                m.topic == "camera/58_5b_69_aa_30_03/intrusion/state"
                    && m.payload.as_ref() == b"OFF"
                    && m.at > on.at
            },
            T,
        )
        .await
        .expect("off after on");
    let held = off.at.duration_since(on.at);
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_secs(4),
        "held {held:?}"
    );

    // Retained state after the fact: discovery, images, plate, availability; never events or ON.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kept = retained(broker.port, "#", Duration::from_millis(800)).await;
    let disc = kept
        .get("homeassistant/device/camqtt_585b69aa1001/config")
        .expect("camera discovery retained");
    let disc: serde_json::Value = serde_json::from_slice(disc).unwrap();
    assert!(
        !disc.to_string().contains("object_id"),
        "object_id must never be sent"
    );
    assert_eq!(disc["device"]["identifiers"][0], "camqtt_585b69aa1001");
    assert_eq!(disc["device"]["connections"][0][1], "58:5b:69:aa:10:01");
    assert_eq!(disc["availability_mode"], "all");
    assert!(disc["origin"]["name"].is_string());
    let cmps = disc["components"].as_object().expect("components");
    let by_platform = |p: &str| cmps.values().filter(|c| c["platform"] == p).count();
    assert!(by_platform("image") >= 2, "overview and plate images");
    assert!(
        by_platform("event") >= 1
            && by_platform("sensor") >= 2
            && by_platform("device_automation") >= 1
    );
    for c in cmps
        .values()
        .filter(|c| c["platform"] != "device_automation")
    {
        assert!(
            c["unique_id"]
                .as_str()
                .is_some_and(|u| u.starts_with("camqtt_585b69aa1001")),
            "{c}"
        );
        assert!(
            c["default_entity_id"]
                .as_str()
                .is_some_and(|u| u.contains(cam)),
            "{c}"
        );
    }
    let chd: serde_json::Value = serde_json::from_slice(
        kept.get("homeassistant/device/camqtt_585b69aa2002_ch3/config")
            .expect("channel discovery"),
    )
    .unwrap();
    assert!(
        chd["device"]
            .get("connections")
            .is_none_or(|c| c.as_array().is_none_or(|a| a.is_empty())),
        "channel must not repeat the NVR MAC"
    );
    assert_eq!(chd["device"]["via_device"], "camqtt_585b69aa2002");
    let nvr: serde_json::Value = serde_json::from_slice(
        kept.get("homeassistant/device/camqtt_585b69aa2002/config")
            .expect("nvr discovery"),
    )
    .unwrap();
    assert_eq!(nvr["device"]["connections"][0][1], "58:5b:69:aa:20:02");
    assert!(
        kept.get(&format!("camera/{cam}/lpr/image"))
            .is_some_and(|b| b.len() == overview.len())
    );
    assert!(
        !kept.contains_key("camera/lpr/image"),
        "category image not retained by default"
    );
    assert_eq!(
        kept.get(&format!("camera/{cam}/lpr/plate"))
            .map(|b| b.as_ref()),
        Some(&b"KX55PLT"[..])
    );
    assert_eq!(
        kept.get("camera/58_5b_69_aa_30_03/intrusion/state")
            .map(|b| b.as_ref()),
        Some(&b"OFF"[..])
    );
    assert_eq!(
        kept.get("camera/bridge/state").map(|b| b.as_ref()),
        Some(&b"online"[..])
    );
    assert!(
        kept.keys().all(|k| !k.ends_with("/event")),
        "events are never retained"
    );
    assert!(kept.contains_key("camera/bridge/info"));

    bridge.stop().await;
    col.wait_payload("camera/bridge/state", "offline", T)
        .await
        .expect("offline on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_status_drives_state_and_heartbeats_drive_availability() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let col = Collector::start(broker.port, "camera/#").await;
    let bridge = start_bridge(&broker, "[viewtron]\noffline_after = 2\n").await;
    // motionAlarm names one category; an NVR's perimeterAlarm would not (see alarm_status.rs).
    let nvr_status = |active: &str| {
        format!(
            "<config version=\"2.0.0\" xmlns=\"http://www.ipc.com/ver10\"><messageType>alarmStatus</messageType>\
             <deviceInfo><deviceName>Yard NVR</deviceName><ip>10.1.1.2</ip><mac>58:5B:69:AA:40:04</mac><channelId>1</channelId></deviceInfo>\
             <currentTime>1790000400000000</currentTime><alarmStatusInfo><motionAlarm><item id=\"1\">{active}</item></motionAlarm></alarmStatusInfo></config>"
        )
    };
    let mut s = TcpStream::connect(bridge.addr).await.unwrap();
    exchange(&mut s, &post("/API", &nvr_status("true"))).await;
    let dev = "58_5b_69_aa_40_04_ch1";
    col.wait_payload(&format!("camera/{dev}/motion/state"), "ON", T)
        .await
        .expect("alarm on");
    exchange(&mut s, &post("/API", &nvr_status("false"))).await;
    col.wait_payload(&format!("camera/{dev}/motion/state"), "OFF", T)
        .await
        .expect("alarm off");
    col.wait_payload(&format!("camera/{dev}/alarm/motionAlarm_1"), "OFF", T)
        .await
        .expect("alarm topic off");
    assert!(
        col.on(&format!("camera/{dev}/motion/event")).is_empty(),
        "alarm status is a state, not a detection"
    );

    // Silence → offline for the channel and its NVR; an NVR keepalive brings both back.
    col.wait_payload(
        &format!("camera/{dev}/availability"),
        "offline",
        Duration::from_secs(8),
    )
    .await
    .expect("offline");
    col.clear();
    let keepalive = "<config version=\"2.0.0\" xmlns=\"http://www.ipc.com/ver10\"><messageType>keepalive</messageType>\
                     <deviceInfo><deviceName>Yard NVR</deviceName><ip>10.1.1.2</ip><mac>58:5B:69:AA:40:04</mac></deviceInfo></config>";
    exchange(&mut s, &post("/API", keepalive)).await;
    col.wait_payload("camera/58_5b_69_aa_40_04/availability", "online", T)
        .await
        .expect("nvr online");
    col.wait_payload(&format!("camera/{dev}/availability"), "online", T)
        .await
        .expect("channel online");
    bridge.stop().await;
}
