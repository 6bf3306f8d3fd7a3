//! The web port against a real bridge, a real Mosquitto and a real HTTP client (reqwest):
//! the JSON API as documented, the pictures, the archive on disk, `/metrics` parsed by a
//! Prometheus text-format parser, `/healthz`, access control and Home Assistant ingress.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Mosquitto;
use common::bridge::Bridge;
use common::camera::{image, ipc_lpr, mac_slug, post_ok};

const MAC: &str = "58:5b:69:40:f4:0d";

/// camqtt's own outbound client (reqwest with rustls and ring), so the tests need no other
/// TLS provider.
fn client() -> reqwest::Client {
    camqtt::http_client::client().expect("client")
}

async fn get(addr: SocketAddr, path: &str) -> reqwest::Response {
    client()
        .get(format!("http://{addr}/{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let r = get(addr, path).await;
    assert_eq!(r.status(), 200, "GET {path}");
    serde_json::from_slice(&r.bytes().await.expect("body")).expect("JSON")
}

/// Poll `path` until `ok` holds on its JSON (5 s).
async fn wait_json(
    addr: SocketAddr,
    path: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = json(addr, path).await;
        if ok(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never matched; last: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post_lpr(bridge: &Bridge, plate: &str, overview: &[u8], crop: &[u8]) {
    post_ok(bridge.addr, ipc_lpr(MAC, plate, overview, crop).as_bytes()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_pictures_archive_and_metrics_as_documented() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let archive = tempfile::tempdir().unwrap();
    let toml = format!(
        "[web]\nlisten = \"127.0.0.1:0\"\n[archive]\ndir = {:?}\n",
        archive.path()
    );
    let bridge = Bridge::start(&broker, &toml, "web-api").await;
    let web = bridge.addr_of("web").expect("web on");
    let id = mac_slug(MAC);

    // Nothing yet.
    assert_eq!(json(web, "api/devices").await, serde_json::json!([]));
    let r = get(web, &format!("api/devices/{id}/latest.jpg")).await;
    assert_eq!(r.status(), 404);

    let (overview, crop) = (image("overview.jpg"), image("crop.jpg"));
    post_lpr(&bridge, "AB123CD", &overview, &crop).await;
    post_lpr(&bridge, "XY987ZZ", &overview, &crop).await;

    let devices = wait_json(web, "api/devices", |v| {
        v[0]["last_event"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("XY987ZZ"))
    })
    .await;
    let d = &devices[0];
    assert_eq!(d["id"], id);
    assert_eq!(d["name"], "Gate camera");
    assert_eq!(d["available"], true);
    let url = d["latest"]["lpr"].as_str().expect("latest lpr picture");
    assert!(
        url.starts_with(&format!("api/devices/{id}/categories/lpr/latest.jpg?v=")),
        "{url}"
    );

    // The newest picture, by category and per device: the overview, byte for byte.
    for path in [url.to_string(), format!("api/devices/{id}/latest.jpg")] {
        let r = get(web, &path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], "image/jpeg");
        assert_eq!(r.bytes().await.unwrap(), overview.as_slice(), "{path}");
    }

    // Events, newest first, with their archive files; filters and limit.
    let events = json(web, &format!("api/events?device={id}&category=lpr")).await;
    let events = events.as_array().expect("list");
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(
        events[0]["description"]
            .as_str()
            .unwrap()
            .contains("XY987ZZ")
    );
    assert!(
        events[1]["description"]
            .as_str()
            .unwrap()
            .contains("AB123CD")
    );
    assert_eq!(
        json(web, "api/events?limit=1")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        json(web, "api/events?category=face").await,
        serde_json::json!([])
    );
    assert_eq!(
        json(web, "api/events?since=2999-01-01T00:00:00Z").await,
        serde_json::json!([])
    );
    let r = get(web, "api/events?since=tomorrow").await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(body["error"].as_str().unwrap().contains("since"), "{body}");

    // Each image file of the event log is served by its path and is on disk as posted.
    let images = events[0]["images"].as_array().expect("images");
    assert_eq!(images.len(), 2, "{images:?}");
    for img in images {
        let file = img["file"].as_str().unwrap();
        assert!(archive.path().join(file).is_file(), "{file} on disk");
        let r = get(web, &format!("archive/{file}")).await;
        assert_eq!(r.status(), 200, "{file}");
        let want = if img["role"] == "overview" {
            &overview
        } else {
            &crop
        };
        assert_eq!(r.bytes().await.unwrap(), want.as_slice(), "{file}");
    }
    for path in [
        "archive/../etc/passwd",
        "archive/%2e%2e/%2e%2e/etc/passwd",
        "archive/nope.jpg",
    ] {
        assert_eq!(get(web, path).await.status(), 404, "{path}");
    }

    // /metrics: valid Prometheus text with the documented series.
    let r = get(web, "metrics").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text format");
    let value = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("{name} {labels:?} missing:\n{text}"))
    };
    assert_eq!(
        value(
            "camqtt_events_by_category_total",
            &[("source", "viewtron"), ("category", "lpr")]
        ),
        2.0
    );
    assert_eq!(value("camqtt_http_requests_total", &[]), 2.0);
    assert_eq!(value("camqtt_archive_events_total", &[]), 2.0);
    assert_eq!(value("camqtt_archive_images_total", &[]), 4.0);
    assert!(value("camqtt_archive_bytes", &[]) >= (2 * (overview.len() + crop.len())) as f64);
    assert_eq!(value("camqtt_device_available", &[("device", &id)]), 1.0);
    assert!(
        value(
            "camqtt_device_last_seen_timestamp_seconds",
            &[("device", &id)]
        ) > 1.7e9
    );
    assert!(
        text.contains("camqtt_publish_seconds"),
        "publish latency:\n{text}"
    );
    assert!(text.contains("camqtt_spool_depth"), "{text}");
    assert!(text.contains("camqtt_unparsed_total"), "{text}");

    // /healthz.
    let h = json(web, "healthz").await;
    assert_eq!(
        (h["status"].as_str(), h["mqtt_connected"].as_bool()),
        (Some("ok"), Some(true)),
        "{h}"
    );

    // The page, and under Home Assistant ingress its <base>.
    let page = get(web, "").await.text().await.unwrap();
    assert!(page.contains("<section id=\"devices\"") && page.contains("<ol id=\"timeline\""));
    assert!(!page.contains("<base"));
    let page = client()
        .get(format!("http://{web}/"))
        .header("X-Ingress-Path", "/api/hassio_ingress/Tok3n")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<base href=\"/api/hassio_ingress/Tok3n/\">"),
        "{page}"
    );
    assert!(
        !page.contains("href=\"/") || page.contains("base href=\"/"),
        "only relative links"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_allow_list() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let toml = "[web]\nlisten = \"127.0.0.1:0\"\ntoken = \"t0ken\"\n[web.auth]\nusername = \"viewer\"\npassword = \"pw\"\n";
    let bridge = Bridge::start(&broker, toml, "web-auth").await;
    let web = bridge.addr_of("web").expect("web on");
    let c = client();
    let url = |p: &str| format!("http://{web}/{p}");

    let r = c.get(url("api/devices")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"camqtt\"");
    let r = c
        .get(url("api/devices"))
        .basic_auth("viewer", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(url("api/devices"))
        .basic_auth("viewer", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(url("metrics"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // `?token=` once: the cookie carries it for the page's own requests.
    let r = c.get(url("?token=t0ken")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("camqtt_token=t0ken;") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let r = c
        .get(url("api/stream"))
        .header("cookie", "camqtt_token=t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    drop(r);
    // /healthz never needs credentials (503 until the broker connection is up).
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.get(url("healthz")).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "healthz without credentials");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bridge.telemetry().web_refused.get(), 2);
    bridge.stop().await;

    // An allow-list that leaves the loopback out: 403, even with the right credentials.
    let toml = "[web]\nlisten = \"127.0.0.1:0\"\nallow = [\"192.0.2.0/24\"]\n";
    let bridge = Bridge::start(&broker, toml, "web-allow").await;
    let web = bridge.addr_of("web").expect("web on");
    let r = c
        .get(format!("http://{web}/api/devices"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    bridge.stop().await;
}
