//! The detector stage end to end: a real bridge, a real Mosquitto, and the stand-in detector
//! (`common::detector`, following the DeepStack / CodeProject.AI API): what the detector found
//! reaches the event JSON, pictures without a wanted object are suppressed when configured, and
//! a detector that fails never holds events up.

mod common;

use std::time::Duration;

use common::bridge::Bridge;
use common::camera::{ipc_intrusion_with_images, mac_slug, post_ok};
use common::detector::{Detector, Prediction, Reply, jpeg, sha256_hex};
use common::{Collector, Mosquitto};

const MAC: &str = "58:5b:69:40:f4:0e";
const T: Duration = Duration::from_secs(10);

async fn post_intrusion(bridge: &Bridge, overview: &[u8]) {
    let crop = jpeg(40, 80, [200, 200, 200]);
    post_ok(
        bridge.addr,
        ipc_intrusion_with_images(MAC, overview, &crop).as_bytes(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_reach_the_event_and_pictures_without_a_wanted_one_are_suppressed() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let det = Detector::start().await;
    det.set_reply(Reply::Objects(vec![
        Prediction::new("Person", 0.91, [40, 20, 120, 200]),
        Prediction::new("dog", 0.99, [200, 150, 260, 220]),
        Prediction::new("person", 0.30, [250, 10, 300, 60]),
    ]));
    let archive = tempfile::tempdir().unwrap();
    let toml = format!(
        "[detector]\nurl = \"{}\"\nlabels = [\"person\"]\nmin_confidence = 0.5\nunmatched = \"suppress\"\n[archive]\ndir = {:?}\n",
        det.url,
        archive.path()
    );
    let col = Collector::start(broker.port, "camera/#").await;
    let bridge = Bridge::start(&broker, &toml, "detect").await;
    let id = mac_slug(MAC);
    let overview = jpeg(320, 240, [90, 120, 160]);

    post_intrusion(&bridge, &overview).await;
    let event = col
        .wait_for(|m| m.topic == format!("camera/{id}/intrusion/event"), T)
        .await
        .expect("event published");
    let j = event.json();
    assert_eq!(j["detection"], "ok", "{j}");
    // Only the wanted label above the minimum confidence, labels lower case, boxes in pixels.
    assert_eq!(
        j["objects"],
        serde_json::json!([{"label": "person", "confidence": 0.91,
            "box": {"x_min": 40, "y_min": 20, "x_max": 120, "y_max": 200}}]),
        "{j}"
    );
    // The detector was shown the overview, byte for byte.
    let sent = det.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].image_sha256, sha256_hex(&overview));
    let t = bridge.telemetry();
    assert_eq!(
        (t.detector_requests.get(), t.detector_objects.get()),
        (1, 1)
    );
    // The annotated copy (archived beside the overview): the box's edge is drawn, the rest of
    // the picture is the camera's. (The archive is written beside MQTT delivery: wait.)
    let deadline = std::time::Instant::now() + T;
    let annotated = loop {
        let found = annotated_files(archive.path());
        if !found.is_empty() || std::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(annotated.len(), 1, "{annotated:?}");
    let img = image::load_from_memory(&std::fs::read(&annotated[0]).unwrap())
        .expect("a JPEG")
        .to_rgb8();
    assert_eq!(img.dimensions(), (320, 240));
    let background = [90i32, 120, 160];
    let distance = |x: u32, y: u32| {
        let p = img.get_pixel(x, y).0;
        (0..3)
            .map(|i| (i32::from(p[i]) - background[i]).abs())
            .sum::<i32>()
    };
    assert!(distance(40, 110) > 60, "the box's left edge is drawn");
    assert!(distance(80, 20) > 60, "the box's top edge is drawn");
    assert!(distance(80, 110) < 20, "inside the box is the picture");
    assert!(distance(250, 60) < 20, "outside the box is the picture");
    // The annotated picture went to MQTT too, beside the overview.
    let mqtt = col
        .wait_for(|m| m.topic == format!("camera/{id}/intrusion/annotated"), T)
        .await
        .expect("annotated picture published");
    assert_eq!(
        mqtt.payload.as_ref(),
        std::fs::read(&annotated[0]).unwrap().as_slice()
    );

    // Nothing wanted in the next picture: suppressed, never published.
    det.set_reply(Reply::Objects(vec![Prediction::new(
        "dog",
        0.99,
        [1, 1, 50, 50],
    )]));
    col.clear();
    post_intrusion(&bridge, &overview).await;
    assert_eq!(
        t.detector_suppressed.get(),
        1,
        "the reply came after the stage"
    );
    assert_eq!(det.requests().len(), 2);
    // A marker event after it, through the same ordered pipeline: once it is published, the
    // suppressed one would have been too.
    det.set_reply(Reply::Objects(vec![Prediction::new(
        "person",
        0.8,
        [1, 1, 50, 50],
    )]));
    post_intrusion(&bridge, &overview).await;
    col.wait_for(|m| m.topic == format!("camera/{id}/intrusion/event"), T)
        .await
        .expect("the marker event");
    let events = col.on(&format!("camera/{id}/intrusion/event"));
    assert_eq!(events.len(), 1, "the suppressed event was published");
    assert_eq!(events[0].json()["objects"][0]["confidence"], 0.8);
    bridge.stop().await;
}

/// Post an intrusion with `overview` and return the event JSON published on `topic`.
async fn post_and_read(
    bridge: &Bridge,
    col: &Collector,
    topic: &str,
    overview: &[u8],
) -> serde_json::Value {
    post_intrusion(bridge, overview).await;
    col.wait_for(|m| m.topic == topic, T)
        .await
        .expect("event")
        .json()
}

/// Every `*_annotated.jpg` under `dir`.
fn annotated_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(annotated_files(&p));
        } else if p.to_string_lossy().ends_with("_annotated.jpg") {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_detector_never_holds_events_and_is_left_alone_for_a_while() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let det = Detector::start().await;
    det.set_reply(Reply::Status(
        500,
        "{\"error\":\"model not loaded\"}".into(),
    ));
    // Suppression is configured, yet an unavailable detector never drops an event.
    let toml = format!(
        "[detector]\nurl = \"{}\"\nunmatched = \"suppress\"\nretry_after = \"1h\"\n",
        det.url
    );
    let col = Collector::start(broker.port, "camera/#").await;
    let bridge = Bridge::start(&broker, &toml, "detect-down").await;
    let id = mac_slug(MAC);
    let overview = jpeg(320, 240, [90, 120, 160]);
    let topic = format!("camera/{id}/intrusion/event");

    let j = post_and_read(&bridge, &col, &topic, &overview).await;
    assert_eq!(j["detection"], "unavailable", "{j}");
    assert_eq!(j["objects"], serde_json::json!([]));
    let why = j["detection_error"].as_str().expect("the reason");
    assert!(
        why.contains("500") && why.contains("model not loaded"),
        "{why}"
    );
    assert_eq!(det.requests().len(), 1);

    // Within retry_after: not asked, the event goes on at once.
    col.clear();
    let j = post_and_read(&bridge, &col, &topic, &overview).await;
    assert_eq!(j["detection"], "unavailable", "{j}");
    assert!(
        j["detection_error"]
            .as_str()
            .unwrap()
            .contains("asked again in"),
        "{j}"
    );
    assert_eq!(
        det.requests().len(),
        1,
        "the detector was asked while resting"
    );
    let t = bridge.telemetry();
    assert_eq!(
        (t.detector_failures.get(), t.detector_suppressed.get()),
        (1, 0)
    );
    bridge.stop().await;
}
