//! The web page (issue 11) in a real browser: Debian's headless Chromium, driven over
//! WebDriver, opens the bridge's page; a camera then posts a licence-plate event, and the open
//! page must show its picture and timeline entry live, without a reload; the timeline entry
//! opens the image viewer. The run keeps a screenshot (`target/screenshots/web-page.png`, and
//! in `CAMQTT_SCREENSHOT_DIR` when set).
//!
//! Skips (prints `skipping: ...`) without Mosquitto, or without Chromium and chromedriver
//! unless `CAMQTT_REQUIRE_BROWSER=1`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::TcpStream;

use common::Mosquitto;
use common::bridge::Bridge;
use common::browser::{Browser, screenshot_dir};
use common::camera::{self, REPLY};

/// How long the page may take to show what the bridge received.
const LIVE: Duration = Duration::from_secs(15);

/// A decoded, displayed picture: the `<img>` matching `arguments[0]` exists, finished loading
/// and has pixels (`naturalWidth` > 0 only when the browser decoded the image); its
/// `[naturalWidth, naturalHeight]`, else `false`.
const IMG_LOADED: &str = "const img = document.querySelector(arguments[0]);\
     return !!img && img.complete && img.naturalWidth > 0 \
         ? [img.naturalWidth, img.naturalHeight] : false;";

/// The sizes of the posted pictures: `overview.jpg` (64×40) and `plate1.jpg` (32×12). A
/// picture of another size on the page is not one the camera sent.
const POSTED_SIZES: [[u64; 2]; 2] = [[64, 40], [32, 12]];

/// Panics unless `size` (from [`IMG_LOADED`]) is one of [`POSTED_SIZES`].
async fn assert_posted_picture(browser: &Browser, what: &str, size: &serde_json::Value) {
    let size: Option<[u64; 2]> = serde_json::from_value(size.clone()).ok();
    assert!(
        size.is_some_and(|s| POSTED_SIZES.contains(&s)),
        "{what} is {size:?} pixels, not one of the posted pictures ({POSTED_SIZES:?})\n{}",
        browser.report().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_a_new_camera_picture_live_without_reload() {
    let started = Instant::now();
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let Some(browser) = Browser::try_start().await else {
        return;
    };
    let archive = tempfile::tempdir().expect("archive dir");
    let toml = format!(
        "[web]\nlisten = \"127.0.0.1:0\"\n[archive]\ndir = \"{}\"\n",
        archive.path().display()
    );
    let bridge = Bridge::start(&broker, &toml, "camqtt-web-page").await;
    let web = bridge
        .addr_of("web")
        .expect("the web server runs (`[web] listen`)");
    let page = format!("http://{web}/");

    // The page, with its event stream open.
    browser.goto(&page).await;
    browser.wait_css("body[data-live=connected]", LIVE).await;
    browser.wait_css("section#devices", LIVE).await;
    browser.wait_css("ol#timeline", LIVE).await;
    let mac = "58:5b:69:40:f4:0d";
    let plate = "WEB11PG";
    let device = camera::mac_slug(mac);
    let latest = format!(
        r#"section#devices article.device[data-device="{device}"] img.latest[data-category="lpr"]"#
    );
    let entry = format!(r#"ol#timeline li.event[data-device="{device}"][data-category="lpr"]"#);
    // Nothing of this camera yet: what appears below was brought by the live stream.
    let before = browser
        .js(
            "return document.querySelectorAll(arguments[0] + ', ' + arguments[1]).length",
            vec![json!(latest), json!(entry)],
        )
        .await;
    assert_eq!(
        before,
        json!(0),
        "the page shows camera {device} before it posted anything\n{}",
        browser.report().await
    );
    // A reload would lose this.
    browser
        .js("window.__camqttMarker = 42; return true", vec![])
        .await;

    // The camera posts a plate read with its overview and plate crop (real JPEGs).
    let overview = camera::image("overview.jpg");
    let crop = camera::image("plate1.jpg");
    let body = camera::ipc_lpr(mac, plate, &overview, &crop);
    let mut s = TcpStream::connect(bridge.addr).await.expect("connect");
    let posted = Instant::now();
    let r = camera::exchange(&mut s, &camera::post("/API", body.as_bytes())).await;
    assert_eq!(
        (r.status.as_str(), r.body.as_slice()),
        ("HTTP/1.1 200 OK", REPLY),
        "the receiver refused the post"
    );

    // The newest picture of the camera's `lpr` category, decoded by the browser.
    let size = browser
        .wait_js(
            &format!("a loaded picture at `{latest}`"),
            LIVE,
            IMG_LOADED,
            vec![json!(latest)],
        )
        .await;
    let picture_after = posted.elapsed();
    assert_posted_picture(&browser, "the newest lpr picture", &size).await;
    // Its timeline entry, with the plate.
    browser
        .wait_js(
            &format!("a timeline entry `{entry}` that shows {plate}"),
            LIVE,
            "return [...document.querySelectorAll(arguments[0])]\
                 .some(li => li.textContent.includes(arguments[1]));",
            vec![json!(entry), json!(plate)],
        )
        .await;
    let entry_after = posted.elapsed();
    let marker = browser.js("return window.__camqttMarker", vec![]).await;
    assert_eq!(
        marker,
        json!(42),
        "the page was reloaded (its window lost the marker) instead of updating live\n{}",
        browser.report().await
    );

    let shot = save_screenshot(&browser, "web-page.png").await;

    // The timeline entry opens the image viewer on the same page.
    let item = browser.wait_css(&entry, LIVE).await;
    if let Err(e) = item.click().await {
        panic!("clicking {entry}: {e}\n{}", browser.report().await);
    }
    let size = browser
        .wait_js(
            "the image viewer `dialog#viewer[open]` with a loaded picture",
            LIVE,
            IMG_LOADED,
            vec![json!("dialog#viewer[open] img")],
        )
        .await;
    assert_posted_picture(&browser, "the viewer's picture", &size).await;
    let marker = browser.js("return window.__camqttMarker", vec![]).await;
    assert_eq!(
        marker,
        json!(42),
        "opening the viewer left the page\n{}",
        browser.report().await
    );
    let viewer_shot = save_screenshot(&browser, "web-page-viewer.png").await;

    println!(
        "page {page}: picture shown {picture_after:?} and timeline entry {entry_after:?} after \
         the post; whole test (broker, browser and bridge started) {:?}\nscreenshots: {}",
        started.elapsed(),
        [shot, viewer_shot]
            .iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    browser.close().await;
    bridge.stop().await;
}

/// Save a screenshot as `name` in `target/screenshots` and, when `CAMQTT_SCREENSHOT_DIR` is
/// set, there too; returns the paths written.
async fn save_screenshot(browser: &Browser, name: &str) -> Vec<PathBuf> {
    let mut dirs = vec![screenshot_dir()];
    if let Some(d) = std::env::var_os("CAMQTT_SCREENSHOT_DIR") {
        dirs.push(PathBuf::from(d));
    }
    let mut saved = Vec::new();
    for d in dirs {
        saved.push(browser.screenshot(&d.join(name)).await);
    }
    saved
}
