//! Upgrade: a spool directory written by camqtt 0.1.0 (`tests/fixtures/spool/v0.1`, see its
//! README) is delivered by the current bridge — every record, in order, images byte for byte —
//! to a real Mosquitto.

mod common;

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use common::camera::image;
use common::{Collector, Mosquitto};

const CAMERA: &str = "02_00_5e_10_20_30";
const NVR: &str = "02_00_5e_aa_bb_01";
const T: Duration = Duration::from_secs(20);

fn fixture_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spool/v0.1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_written_by_0_1_is_delivered_after_the_upgrade() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            std::fs::copy(&path, state.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let col = Collector::start(broker.port, "camera/#").await;
    // The records were written on 2026-11-29: keep them (and their images) however old they
    // are by the time this runs.
    let toml = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"upgrade-{}\"\n\
         [viewtron]\nlisten = \"127.0.0.1:0\"\n\
         [spool]\ndir = \"{}\"\nmax_age = 315360000\nimage_max_age = 315360000\n",
        broker.url(),
        broker.port,
        state.path().display()
    );
    let cfg = camqtt::config::load_str(&toml).expect("config");
    let shutdown = CancellationToken::new();
    let running = camqtt::start(cfg, shutdown.clone()).await.expect("starts");

    let plate = col
        .wait_payload(&format!("camera/{CAMERA}/lpr/plate"), "KA 123 Z", T)
        .await;
    assert!(plate.is_some(), "plate from the old spool not delivered");
    let event = col
        .wait_for(|m| m.topic == format!("camera/{CAMERA}/lpr/event"), T)
        .await
        .expect("event JSON delivered")
        .json();
    let plates: Vec<&str> = event["plates"]
        .as_array()
        .expect("plates")
        .iter()
        .map(|p| p["plate"].as_str().unwrap())
        .collect();
    assert_eq!(plates, ["KA 123 Z", "XY-9876"]);
    assert_eq!(event["time"], "2026-09-21T14:13:20.123456Z");

    let overview = col
        .wait_for(|m| m.topic == format!("camera/{CAMERA}/lpr/image"), T)
        .await
        .expect("overview image delivered");
    assert_eq!(overview.payload.as_ref(), image("overview.jpg").as_slice());
    let target = col
        .wait_for(|m| m.topic == format!("camera/{CAMERA}/lpr/target"), T)
        .await
        .expect("target crop delivered");
    assert_eq!(target.payload.as_ref(), image("plate1.jpg").as_slice());

    let nvr = col
        .wait_payload(&format!("camera/{NVR}/availability"), "online", T)
        .await;
    assert!(nvr.is_some(), "the NVR's Seen record not delivered");
    let unparsed = col
        .wait_for(|m| m.topic == "camera/bridge/unparsed", T)
        .await
        .expect("unparsed record delivered")
        .json();
    assert_eq!(unparsed["reason"], "not-xml");

    // Delivered once: after the acknowledgements, a restart has nothing left to replay.
    let telemetry = running.telemetry.clone();
    for _ in 0..100 {
        if telemetry.values()["spool_depth"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        telemetry.values()["spool_depth"],
        0,
        "records left unacknowledged"
    );
    shutdown.cancel();
    running.wait().await.expect("clean stop");
}
