//! The seam, demonstrated: a source that lives only in `tests/webhook_source/` plugs into the
//! topology with one registration line, and its events reach a real Mosquitto and Home
//! Assistant discovery like Viewtron's do — no file under `src/` knows it. Posts are sent
//! with curl.

mod common;
mod webhook_source;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use common::camera::{b64, image};
use common::{Collector, Mosquitto};
use webhook_source::{MANUFACTURER, NAME, WebhookSource};

const T: Duration = Duration::from_secs(15);
const DEVICE: &str = "02_00_5e_77_00_01";

fn curl_available() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// POST `body` with curl; returns the response body.
async fn curl_post(url: &str, body: &str) -> String {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--fail-with-body",
            "-H",
            "Content-Type: application/json",
        ])
        .args(["--data-binary", body, url])
        .output()
        .await
        .expect("run curl");
    assert!(out.status.success(), "curl: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_from_the_tests_reaches_mqtt_and_discovery() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    if !curl_available() {
        eprintln!("skipping: curl not installed");
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let toml = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"seam-{}\"\n[viewtron]\nenabled = false\n\
         [spool]\ndir = \"{}\"\n",
        broker.url(),
        broker.port,
        state.path().display()
    );
    let config = camqtt::config::load_str(&toml).expect("config");
    let col = Collector::start(broker.port, "#").await;
    let shutdown = CancellationToken::new();
    // The one registration line.
    let sources: Vec<Box<dyn camqtt::sources::Source>> =
        vec![Box::new(WebhookSource::new("127.0.0.1:0".parse().unwrap()))];
    let running = camqtt::topology::start_with(config, sources, shutdown.clone())
        .await
        .expect("bridge starts with the test source");
    let addr = running
        .sources
        .iter()
        .find(|(name, _)| *name == NAME)
        .and_then(|(_, a)| *a)
        .expect("the webhook listens");
    assert!(running.viewtron_addr.is_none(), "only the test source runs");
    let url = format!("http://{addr}/hook");

    let jpeg = image("overview.jpg");
    let body = serde_json::json!({
        "mac": "02:00:5E:77:00:01",
        "category": "motion",
        "image": b64(&jpeg),
    })
    .to_string();
    assert_eq!(curl_post(&url, &body).await, r#"{"ok":true}"#);

    // Its event, image and availability, on the same topics as any camera's.
    let event = col
        .wait_for(|m| m.topic == format!("camera/{DEVICE}/motion/event"), T)
        .await
        .expect("event JSON")
        .json();
    assert_eq!(event["source"], NAME);
    let img = col
        .wait_for(|m| m.topic == format!("camera/{DEVICE}/motion/image"), T)
        .await
        .expect("image");
    assert_eq!(img.payload.as_ref(), jpeg.as_slice());
    col.wait_payload(&format!("camera/{DEVICE}/availability"), "online", T)
        .await
        .expect("availability");

    // Home Assistant discovery: the device with the motion entities, named after the
    // source's manufacturer (it sent no name).
    let disc = col
        .wait_for(
            |m| m.topic == "homeassistant/device/camqtt_02005e770001/config",
            T,
        )
        .await
        .expect("device discovery")
        .json();
    assert_eq!(disc["device"]["manufacturer"], MANUFACTURER);
    assert_eq!(disc["device"]["name"], format!("{MANUFACTURER} 127.0.0.1"));
    for key in ["motion", "motion_image", "motion_event", "connectivity"] {
        assert!(disc["components"].get(key).is_some(), "{key} in {disc}");
    }
    assert_eq!(
        disc["components"]["motion"]["state_topic"],
        format!("camera/{DEVICE}/motion/state")
    );

    // Bad input: a clear report on the bridge's own topic, counted, the bridge carries on.
    assert_eq!(curl_post(&url, "{not json").await, r#"{"ok":true}"#);
    let unparsed = col
        .wait_for(|m| m.topic == "camera/bridge/unparsed", T)
        .await
        .expect("unparsed report")
        .json();
    assert_eq!(
        (unparsed["source"].as_str(), unparsed["reason"].as_str()),
        (Some(NAME), Some("bad-json"))
    );
    assert_eq!(running.telemetry.values()["unparsed"], 1);

    shutdown.cancel();
    running.wait().await.expect("clean stop");
}
