//! The detector clients (`camqtt::detect::client`) against the stand-in detector
//! (`common::detector`) over real loopback sockets: both APIs, what camqtt sends, the
//! conversion of answers to pixel boxes, and every way a detector can fail.

mod common;

use std::time::Duration;

use bytes::Bytes;
use camqtt::detect::client::{Client, DetectError};
use camqtt::detect::{DetectorConfig, DetectorKind};
use camqtt::event::DetectedObject;
use common::detector::{Api, Detector, Prediction, Reply, jpeg, sha256_hex};
use secrecy::SecretString;

const GREY: [u8; 3] = [128, 128, 128];

fn config(kind: DetectorKind, url: &str) -> DetectorConfig {
    DetectorConfig {
        kind,
        url: Some(url.to_owned()),
        min_confidence: 0.6,
        timeout: Duration::from_secs(10),
        ..DetectorConfig::default()
    }
}

fn object(label: &str, confidence: f64, b: [u32; 4]) -> DetectedObject {
    DetectedObject::new(label, confidence, b)
}

async fn detect(cfg: &DetectorConfig, picture: &[u8]) -> Result<Vec<DetectedObject>, DetectError> {
    Client::new(cfg)
        .unwrap()
        .detect(Bytes::copy_from_slice(picture))
        .await
}

#[tokio::test]
async fn deepstack_objects_and_the_fields_sent() {
    let det = Detector::start().await;
    det.set_reply(Reply::Objects(vec![
        Prediction::new("Car", 0.71, [10, 20, 300, 200]),
        Prediction::new("Person", 0.93, [400, 100, 480, 420]),
    ]));
    let mut cfg = config(DetectorKind::Deepstack, &det.url);
    cfg.api_key = Some(SecretString::from("s3cret-key"));
    let picture = jpeg(640, 480, GREY);
    let objects = detect(&cfg, &picture).await.unwrap();
    assert_eq!(
        objects,
        vec![
            object("person", 0.93, [400, 100, 480, 420]),
            object("car", 0.71, [10, 20, 300, 200]),
        ]
    );
    let reqs = det.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.api, Api::Deepstack);
    assert!(
        r.content_type.starts_with("multipart/form-data; boundary="),
        "{}",
        r.content_type
    );
    assert_eq!(r.image_len, picture.len());
    assert_eq!(r.image_sha256, sha256_hex(&picture));
    assert_eq!(r.image_file_name.as_deref(), Some("image.jpg"));
    assert_eq!(r.image_content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(r.min_confidence.as_deref(), Some("0.6"));
    assert_eq!(r.api_key.as_deref(), Some("s3cret-key"));
    assert!(r.other_fields.is_empty(), "{:?}", r.other_fields);
}

#[tokio::test]
async fn deepstack_without_api_key_sends_no_key_and_the_lowest_threshold() {
    let det = Detector::start().await;
    let mut cfg = config(DetectorKind::Deepstack, &det.url);
    cfg.by_category.insert(
        "snapshot".into(),
        camqtt::detect::DetectOverride {
            min_confidence: Some(0.35),
            ..Default::default()
        },
    );
    let objects = detect(&cfg, &jpeg(64, 48, GREY)).await.unwrap();
    assert!(objects.is_empty());
    let r = &det.requests()[0];
    assert_eq!(r.api_key, None);
    assert_eq!(r.min_confidence.as_deref(), Some("0.35"));
}

#[tokio::test]
async fn deepstack_boxes_are_clamped_to_the_picture() {
    let det = Detector::start().await;
    det.set_reply(Reply::Objects(vec![Prediction::new(
        "truck",
        0.8,
        [600, 300, 5000, 9000],
    )]));
    let cfg = config(DetectorKind::Deepstack, &det.url);
    let objects = detect(&cfg, &jpeg(640, 480, GREY)).await.unwrap();
    assert_eq!(objects, vec![object("truck", 0.8, [600, 300, 639, 479])]);
}

#[tokio::test]
async fn doods_fractions_and_percent_become_pixels_and_fractions() {
    let det = Detector::start().await;
    det.set_doods_detectors(&["default", "tensorflow"]);
    det.set_reply(Reply::Objects(vec![
        Prediction::new("person", 0.875, [160, 48, 320, 432]),
        Prediction::new("DOG", 0.5, [0, 0, 639, 479]),
        Prediction::new("car", 0.64, [17, 33, 211, 97]),
    ]));
    let mut cfg = config(DetectorKind::Doods, &det.url);
    cfg.doods_detector = "tensorflow".into();
    cfg.api_key = Some(SecretString::from("doods-key"));
    let picture = jpeg(640, 480, GREY);
    let objects = detect(&cfg, &picture).await.unwrap();
    assert_eq!(
        objects,
        vec![
            object("person", 0.875, [160, 48, 320, 432]),
            object("car", 0.64, [17, 33, 211, 97]),
            object("dog", 0.5, [0, 0, 639, 479]),
        ]
    );
    let r = &det.requests()[0];
    assert_eq!(r.api, Api::Doods);
    assert_eq!(r.content_type, "application/json");
    assert_eq!(r.detector_name.as_deref(), Some("tensorflow"));
    assert_eq!(r.detect, Some(serde_json::json!({"*": 60.0})));
    assert_eq!(r.image_len, picture.len());
    assert_eq!(r.image_sha256, sha256_hex(&picture));
    assert_eq!(r.api_key.as_deref(), Some("doods-key"));
}

#[tokio::test]
async fn doods_unknown_detector_is_an_error_status_with_its_text() {
    let det = Detector::start().await;
    let mut cfg = config(DetectorKind::Doods, &det.url);
    cfg.doods_detector = "yolo".into();
    let err = detect(&cfg, &jpeg(64, 48, GREY)).await.unwrap_err();
    assert_eq!(
        err,
        DetectError::Status {
            code: 400,
            body: "unknown detector name: yolo".into()
        }
    );
    assert_eq!(err.to_string(), "HTTP 400: unknown detector name: yolo");
}

#[tokio::test]
async fn doods_picture_without_a_size_is_not_sent() {
    let det = Detector::start().await;
    let cfg = config(DetectorKind::Doods, &det.url);
    let err = detect(&cfg, b"GIF89a not a jpeg").await.unwrap_err();
    assert!(matches!(err, DetectError::Answer(_)), "{err:?}");
    assert!(det.requests().is_empty());
}

#[tokio::test]
async fn failures_the_detector_reports() {
    let det = Detector::start().await;
    let picture = jpeg(64, 48, GREY);
    let deepstack = config(DetectorKind::Deepstack, &det.url);
    let doods = config(DetectorKind::Doods, &det.url);

    det.set_reply(Reply::Failure("Unable to load model".into()));
    let err = detect(&deepstack, &picture).await.unwrap_err();
    assert_eq!(
        err,
        DetectError::Answer("detector failed: Unable to load model".into())
    );
    // DOODS2 answers its errors with 400.
    let err = detect(&doods, &picture).await.unwrap_err();
    assert_eq!(
        err,
        DetectError::Status {
            code: 400,
            body: "Unable to load model".into()
        }
    );

    det.set_reply(Reply::Status(500, "Internal Server Error".into()));
    for cfg in [&deepstack, &doods] {
        let err = detect(cfg, &picture).await.unwrap_err();
        assert_eq!(
            err,
            DetectError::Status {
                code: 500,
                body: "Internal Server Error".into()
            }
        );
    }
    det.set_reply(Reply::Status(
        503,
        r#"{"success":false,"error":"Server busy","code":503}"#.into(),
    ));
    let err = detect(&deepstack, &picture).await.unwrap_err();
    assert_eq!(err.to_string(), "HTTP 503: Server busy");
    assert_eq!(det.requests().len(), 5);
}

#[tokio::test]
async fn garbage_and_oversized_answers() {
    let det = Detector::start().await;
    let picture = jpeg(64, 48, GREY);
    for kind in [DetectorKind::Deepstack, DetectorKind::Doods] {
        let cfg = config(kind, &det.url);
        for garbage in [
            &b"<html><body>Bad Gateway</body></html>"[..],
            b"{\"success\":true,\"predictions\":",
            b"",
            b"\xff\xfe\x00garbage",
            b"[1,2,3]",
        ] {
            det.set_reply(Reply::Garbage(garbage.to_vec()));
            let err = detect(&cfg, &picture).await.unwrap_err();
            assert!(
                matches!(err, DetectError::Answer(_)),
                "{kind:?} {:?}: {err:?}",
                String::from_utf8_lossy(garbage)
            );
        }
        // 2 MiB of valid JSON is refused by size, not read whole.
        let mut big = b"{\"success\":true,\"predictions\":[],\"pad\":\"".to_vec();
        big.resize(2 * 1024 * 1024, b'x');
        big.extend_from_slice(b"\"}");
        det.set_reply(Reply::Garbage(big));
        let err = detect(&cfg, &picture).await.unwrap_err();
        assert_eq!(
            err,
            DetectError::Answer("answer larger than 1048576 bytes".into()),
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn connection_closed_without_an_answer() {
    let det = Detector::start().await;
    det.set_reply(Reply::Close);
    let picture = jpeg(64, 48, GREY);
    for kind in [DetectorKind::Deepstack, DetectorKind::Doods] {
        let err = detect(&config(kind, &det.url), &picture).await.unwrap_err();
        assert!(matches!(err, DetectError::Connect(_)), "{kind:?}: {err:?}");
    }
    assert_eq!(det.closed(), 2);
}

#[tokio::test]
async fn slow_detector_times_out() {
    let det = Detector::start().await;
    det.set_delay(Duration::from_secs(120));
    det.set_reply(Reply::Objects(vec![Prediction::new(
        "person",
        0.9,
        [1, 1, 2, 2],
    )]));
    let picture = jpeg(64, 48, GREY);
    for kind in [DetectorKind::Deepstack, DetectorKind::Doods] {
        let mut cfg = config(kind, &det.url);
        cfg.timeout = Duration::from_millis(300);
        let err = detect(&cfg, &picture).await.unwrap_err();
        assert_eq!(err, DetectError::Timeout, "{kind:?}");
        assert_eq!(err.to_string(), "timed out");
    }
    // Both requests arrived: the client gave up waiting for the answer.
    assert_eq!(det.requests().len(), 2);
}

#[tokio::test]
async fn refused_connection_names_no_secret() {
    let port = common::free_port();
    let picture = jpeg(64, 48, GREY);
    for kind in [DetectorKind::Deepstack, DetectorKind::Doods] {
        let mut cfg = config(kind, &format!("http://user:url-pass@127.0.0.1:{port}"));
        cfg.api_key = Some(SecretString::from("api-key-secret"));
        let err = detect(&cfg, &picture).await.unwrap_err();
        let DetectError::Connect(text) = &err else {
            panic!("{kind:?}: {err:?}");
        };
        let shown = err.to_string();
        assert!(shown.starts_with("connection failed: "), "{shown}");
        assert!(text.to_lowercase().contains("connect"), "{text}");
        for secret in ["url-pass", "api-key-secret", "127.0.0.1"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
