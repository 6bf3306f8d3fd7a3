//! The `poll` source end to end: a camera stand-in written here to RFC 7616 (Digest, MD5 and
//! SHA-256, `qop=auth`, nonces that go stale) and RFC 7617 (Basic) serves JPEGs over real
//! sockets; the real `camqtt` binary polls it and publishes to a real Mosquitto; every MQTT
//! message is checked (topic, bytes identical by SHA-256, availability, discovery, commands).
//!
//! The stand-in checks each Digest `response` by computing it itself (RFC 7616 §3.4.1) and
//! keeps a log of what it saw, so the tests can tell that the nonce was reused (`nc` going
//! up) and renegotiated when stale.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use md5::Md5;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use common::process::BridgeProcess;
use common::{Collector, Mosquitto, camera};

/// Generous: the bridge binary starts, polls and publishes on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// The camera stand-in.

/// How the stand-in authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Basic,
    /// RFC 7616 with `algorithm` `MD5` or `SHA-256`.
    Digest(&'static str),
}

/// What the stand-in answers with a valid request.
#[derive(Debug, Clone)]
enum Body {
    Image(Vec<u8>),
    /// 200 with this content type and body (not an image).
    Other(&'static str, Vec<u8>),
}

#[derive(Debug, Default)]
struct Seen {
    /// Requests received.
    requests: usize,
    /// 401s sent (challenges).
    challenges: usize,
    /// 401s with `stale=true`.
    stale: usize,
    /// Accepted Digest answers: (nonce, nc).
    accepted: Vec<(String, u32)>,
    /// Digest answers whose `response` did not match the stand-in's computation.
    bad_responses: usize,
    /// Most requests in progress at once.
    max_concurrent: usize,
}

struct State {
    scheme: Scheme,
    user: &'static str,
    password: &'static str,
    realm: &'static str,
    body: Mutex<Body>,
    /// Current nonce and how many requests it has authenticated.
    nonce: Mutex<(String, usize)>,
    /// A nonce authenticates this many requests, then it is stale.
    nonce_uses: usize,
    /// After this many accepted requests, refuse valid credentials with a fresh challenge
    /// (Dahua out of connections).
    busy_after: Option<usize>,
    next_nonce: AtomicUsize,
    in_progress: AtomicUsize,
    /// Time taken to answer (to make overlapping requests visible).
    delay: Duration,
    seen: Mutex<Seen>,
}

/// A camera on `127.0.0.1:<port>`, stoppable and restartable on the same port.
struct Cam {
    addr: SocketAddr,
    state: Arc<State>,
    task: Option<JoinHandle<()>>,
}

impl Cam {
    async fn start(scheme: Scheme, password: &'static str, body: Body) -> Cam {
        Cam::start_with(scheme, password, body, |_| {}).await
    }

    async fn start_with(
        scheme: Scheme,
        password: &'static str,
        body: Body,
        tune: impl FnOnce(&mut State),
    ) -> Cam {
        let mut state = State {
            scheme,
            user: "admin",
            password,
            realm: "IP Camera(12345)",
            body: Mutex::new(body),
            nonce: Mutex::new(("n0".into(), 0)),
            nonce_uses: 3,
            busy_after: None,
            next_nonce: AtomicUsize::new(1),
            in_progress: AtomicUsize::new(0),
            delay: Duration::ZERO,
            seen: Mutex::new(Seen::default()),
        };
        tune(&mut state);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let state = Arc::new(state);
        let task = Some(tokio::spawn(serve(l, state.clone())));
        Cam { addr, state, task }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn restart(&mut self) {
        self.stop();
        let l = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.task = Some(tokio::spawn(serve(l, self.state.clone())));
    }

    fn set_image(&self, image: Vec<u8>) {
        *self.state.body.lock().unwrap() = Body::Image(image);
    }

    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.state.seen.lock().unwrap())
    }
}

impl Drop for Cam {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(l: TcpListener, state: Arc<State>) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut b = [0u8; 2048];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&b[..n]),
                }
            }
            let now = state.in_progress.fetch_add(1, Ordering::SeqCst) + 1;
            {
                let mut seen = state.seen.lock().unwrap();
                seen.requests += 1;
                seen.max_concurrent = seen.max_concurrent.max(now);
            }
            tokio::time::sleep(state.delay).await;
            let reply = answer(&state, &String::from_utf8_lossy(&head));
            state.in_progress.fetch_sub(1, Ordering::SeqCst);
            let _ = s.write_all(&reply).await;
            let _ = s.shutdown().await;
        });
    }
}

/// The stand-in's answer to one request head.
fn answer(st: &State, head: &str) -> Vec<u8> {
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let auth = headers.get("authorization").map(String::as_str);
    match st.scheme {
        Scheme::Basic => {
            let want = camera::basic(st.user, st.password);
            if auth != Some(want.as_str()) {
                st.seen.lock().unwrap().challenges += 1;
                return unauthorized(&format!("Basic realm=\"{}\"", st.realm));
            }
        }
        Scheme::Digest(alg) => {
            if let Err(stale) = check_digest(st, alg, auth, &target) {
                let mut seen = st.seen.lock().unwrap();
                seen.challenges += 1;
                if stale {
                    seen.stale += 1;
                }
                drop(seen);
                let nonce = format!("n{}", st.next_nonce.fetch_add(1, Ordering::SeqCst));
                *st.nonce.lock().unwrap() = (nonce.clone(), 0);
                return unauthorized(&format!(
                    "Digest realm=\"{}\", qop=\"auth\", algorithm={alg}, nonce=\"{nonce}\", opaque=\"op4\", stale={}",
                    st.realm,
                    if stale { "true" } else { "false" }
                ));
            }
        }
    }
    let (ctype, body) = match st.body.lock().unwrap().clone() {
        Body::Image(b) => ("image/jpeg", b),
        Body::Other(t, b) => (t, b),
    };
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

fn unauthorized(challenge: &str) -> Vec<u8> {
    format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn h(alg: &str, s: &str) -> String {
    match alg {
        "MD5" => hex(&Md5::digest(s.as_bytes())),
        "SHA-256" => hex(&Sha256::digest(s.as_bytes())),
        other => panic!("stand-in has no {other}"),
    }
}

/// The `key=value` / `key="value"` parameters of an `Authorization: Digest` value.
fn digest_params(v: &str) -> Option<HashMap<String, String>> {
    let mut rest = v.strip_prefix("Digest ")?.trim();
    let mut out = HashMap::new();
    while !rest.is_empty() {
        let (k, r) = rest.split_once('=')?;
        let (val, r) = if let Some(r) = r.strip_prefix('"') {
            let end = r.find('"')?;
            (r[..end].to_owned(), &r[end + 1..])
        } else {
            let end = r.find(',').unwrap_or(r.len());
            (r[..end].trim().to_owned(), &r[end..])
        };
        out.insert(k.trim().to_owned(), val);
        rest = r.trim_start_matches([',', ' ']);
    }
    Some(out)
}

/// `Ok` when `auth` is a correct RFC 7616 answer for the current nonce; `Err(stale)` else.
fn check_digest(st: &State, alg: &str, auth: Option<&str>, target: &str) -> Result<(), bool> {
    let p = auth.and_then(digest_params).ok_or(false)?;
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    let (nonce, nc_hex, cnonce) = (get("nonce"), get("nc"), get("cnonce"));
    let ha1 = h(alg, &format!("{}:{}:{}", st.user, st.realm, st.password));
    let ha2 = h(alg, &format!("GET:{target}"));
    let want = h(alg, &format!("{ha1}:{nonce}:{nc_hex}:{cnonce}:auth:{ha2}"));
    let fields_ok = get("username") == st.user
        && get("realm") == st.realm
        && get("uri") == target
        && get("qop") == "auth"
        && get("algorithm") == alg
        && get("opaque") == "op4";
    if !fields_ok || get("response") != want {
        // A wrong password gives a wrong response: count it only when the password is right
        // (a real computation error of the client).
        if fields_ok && st.password != "wrong" {
            st.seen.lock().unwrap().bad_responses += 1;
        }
        return Err(false);
    }
    let nc = u32::from_str_radix(nc_hex, 16).map_err(|_| false)?;
    let mut cur = st.nonce.lock().unwrap();
    if nonce != cur.0 {
        return Err(true); // an old nonce: stale (RFC 7616 §3.3)
    }
    if cur.1 >= st.nonce_uses {
        return Err(true);
    }
    let mut seen = st.seen.lock().unwrap();
    if let Some(limit) = st.busy_after
        && seen.accepted.len() >= limit
    {
        return Err(false);
    }
    cur.1 += 1;
    seen.accepted.push((nonce.to_owned(), nc));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn sha(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// A distinct valid JPEG for `n`: the fixture with a comment segment (`FF FE`) naming `n`
/// after SOI.
fn jpeg(n: usize) -> Vec<u8> {
    let base = camera::big_jpeg(70_000);
    let text = format!("picture {n}");
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xFE];
    out.extend_from_slice(&((text.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&base[2..]);
    out
}

fn poll_entry(id: &str, cam: &Cam, extra: &str) -> String {
    format!(
        "[[poll]]\nid = \"{id}\"\nname = \"{id} camera\"\npreset = \"hikvision\"\nhost = \"{}\"\nusername = \"admin\"\npassword = \"s3cret\"\n{extra}\n",
        cam.host()
    )
}

async fn images_on(col: &Collector, topic: &str, n: usize) -> Vec<String> {
    col.wait_count(|m| m.topic == topic, n, WAIT)
        .await
        .into_iter()
        .map(|m| sha(&m.payload))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Tests.

/// Digest MD5 with a nonce that goes stale every 3 requests: the picture arrives byte for
/// byte, unchanged pictures are skipped, a changed one is published; the client's responses
/// are right, the nonce is reused (nc 1, 2, 3) and renegotiated when stale; the event JSON
/// carries the provenance; Home Assistant gets an image entity and the "Take snapshot" button.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_md5_picture_identical_unchanged_skipped_nonce_reused() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let col = Collector::start(broker.port, "#").await;
    let first = jpeg(1);
    let cam = Cam::start(Scheme::Digest("MD5"), "s3cret", Body::Image(first.clone())).await;
    let bridge = BridgeProcess::start(
        &broker,
        &poll_entry("gate", &cam, "interval = 1"),
        "camqtt-poll-md5",
    );
    let topic = "camera/gate/snapshot/image";
    assert_eq!(images_on(&col, topic, 1).await, [sha(&first)]);

    // Several more polls of the same picture: nothing new is published.
    let end = tokio::time::Instant::now() + WAIT;
    while cam.seen(|s| s.accepted.len()) < 8 {
        assert!(tokio::time::Instant::now() < end, "too few polls");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(col.on(topic).len(), 1, "an unchanged picture was published");

    let second = jpeg(2);
    cam.set_image(second.clone());
    assert_eq!(images_on(&col, topic, 2).await, [sha(&first), sha(&second)]);

    cam.seen(|s| {
        assert_eq!(s.bad_responses, 0, "a Digest response did not match");
        // One challenge for the first request, then one per stale nonce (every 3 uses).
        assert!(s.stale >= 2, "{s:?}");
        assert_eq!(s.challenges, 1 + s.stale, "{s:?}");
        // The nonce was reused with increasing nc.
        assert!(s.accepted.iter().any(|(_, nc)| *nc == 3), "{s:?}");
        for w in s.accepted.windows(2) {
            if w[0].0 == w[1].0 {
                assert_eq!(w[1].1, w[0].1 + 1, "{s:?}");
            }
        }
        assert_eq!(s.max_concurrent, 1);
    });

    let ev = col
        .wait_for(|m| m.topic == "camera/gate/snapshot/event", WAIT)
        .await
        .expect("event JSON")
        .json();
    assert_eq!(ev["provenance"]["via"], "poll", "{ev}");
    assert_eq!(
        ev["provenance"]["name"], "/ISAPI/Streaming/channels/101/picture",
        "{ev}"
    );
    assert_eq!(ev["provenance"]["path"], cam.host(), "{ev}");
    assert_eq!(ev["source"], "poll", "{ev}");

    // Discovery: the image entity on the image topic, the button on the command topic.
    let cfg = col
        .wait_for(
            |m| {
                m.topic.starts_with("homeassistant/device/")
                    && m.text().contains("snapshot_take")
                    && m.text().contains("snapshot/image")
            },
            WAIT,
        )
        .await
        .expect("device discovery with the button")
        .json();
    let cmps = cfg["components"]
        .as_object()
        .or(cfg["cmps"].as_object())
        .unwrap();
    let image = cmps
        .values()
        .find(|c| c["platform"] == "image" || c["p"] == "image")
        .expect("image entity");
    assert_eq!(image["image_topic"], topic, "{image}");
    assert_eq!(image["name"], "Snapshot", "{image}");
    let button = cmps
        .values()
        .find(|c| c["platform"] == "button" || c["p"] == "button")
        .expect("button");
    assert_eq!(
        button["command_topic"], "camera/gate/snapshot/take",
        "{button}"
    );
    assert_eq!(button["name"], "Take snapshot", "{button}");
    assert_eq!(
        col.on("camera/gate/availability").last().map(|m| m.text()),
        Some("online".into())
    );
    // The newest picture is retained for Home Assistant's image entity.
    let kept = common::retained(broker.port, topic, Duration::from_secs(1)).await;
    assert_eq!(kept.get(topic).map(|b| sha(b)), Some(sha(&second)));
    drop(bridge);
}

/// Digest SHA-256 and Basic cameras side by side, two entries on one host (its requests one at
/// a time), pictures identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_sha256_and_basic_one_request_per_host() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let col = Collector::start(broker.port, "camera/#").await;
    let (a, b) = (jpeg(3), jpeg(4));
    let sha_cam = Cam::start_with(
        Scheme::Digest("SHA-256"),
        "s3cret",
        Body::Image(a.clone()),
        |s| s.delay = Duration::from_millis(300),
    )
    .await;
    let basic_cam = Cam::start(Scheme::Basic, "s3cret", Body::Image(b.clone())).await;
    let toml = format!(
        "{}{}{}",
        poll_entry("sha_one", &sha_cam, "interval = 1"),
        poll_entry("sha_two", &sha_cam, "interval = 1\nchannel = 2"),
        poll_entry("basic", &basic_cam, "interval = 1"),
    );
    let _bridge = BridgeProcess::start(&broker, &toml, "camqtt-poll-sha");
    for (dev, want) in [("sha_one", &a), ("sha_two", &a), ("basic", &b)] {
        let topic = format!("camera/{dev}/snapshot/image");
        assert_eq!(images_on(&col, &topic, 1).await, [sha(want)], "{dev}");
    }
    // Both entries of the SHA-256 camera keep polling, never at once.
    let end = tokio::time::Instant::now() + WAIT;
    while sha_cam.seen(|s| s.accepted.len()) < 6 {
        assert!(tokio::time::Instant::now() < end, "too few polls");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sha_cam.seen(|s| {
        assert_eq!(s.bad_responses, 0, "{s:?}");
        assert_eq!(s.max_concurrent, 1, "{s:?}");
    });
    basic_cam.seen(|s| assert_eq!(s.challenges, 1, "Basic is sent again without a 401: {s:?}"));
}

/// The camera stops answering: `availability` goes `offline` after `unreachable_after`
/// failures; it answers again: `online`, with the picture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_stopping_goes_offline_and_back_online() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let col = Collector::start(broker.port, "camera/#").await;
    let mut cam = Cam::start(Scheme::Digest("MD5"), "s3cret", Body::Image(jpeg(5))).await;
    let _bridge = BridgeProcess::start(
        &broker,
        &poll_entry(
            "porch",
            &cam,
            "interval = 1\nunreachable_after = 2\nmax_backoff = 2\ntimeout = 3",
        ),
        "camqtt-poll-avail",
    );
    let avail = "camera/porch/availability";
    col.wait_payload(avail, "online", WAIT)
        .await
        .expect("online first");
    cam.stop();
    col.wait_payload(avail, "offline", WAIT)
        .await
        .expect("offline after the camera stopped");
    col.clear();
    cam.set_image(jpeg(6));
    cam.restart().await;
    col.wait_payload(avail, "online", WAIT)
        .await
        .expect("online again");
    assert_eq!(
        images_on(&col, "camera/porch/snapshot/image", 1).await,
        [sha(&jpeg(6))]
    );
}

/// `camera/<device>/snapshot/take` takes a snapshot even when unchanged; commands closer than
/// `command_interval` are dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_topic_takes_a_snapshot_rate_limited() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let col = Collector::start(broker.port, "camera/#").await;
    let pic = jpeg(7);
    let cam = Cam::start(
        Scheme::Digest("SHA-256"),
        "s3cret",
        Body::Image(pic.clone()),
    )
    .await;
    // `interval = 0`: one snapshot at start (it announces the device and its button), then
    // only on command.
    let bridge = BridgeProcess::start(
        &broker,
        &poll_entry("yard", &cam, "interval = 0\ncommand_interval = 3"),
        "camqtt-poll-cmd",
    );
    let topic = "camera/yard/snapshot/image";
    images_on(&col, topic, 1).await;
    let take = "camera/yard/snapshot/take";
    // A burst: one taken, the rest dropped by the limit.
    for _ in 0..5 {
        col.publish(take, "PRESS", false).await;
    }
    let got = images_on(&col, topic, 2).await;
    assert_eq!(
        got,
        [sha(&pic), sha(&pic)],
        "the commanded picture is published unchanged"
    );
    let ev = col
        .wait_count(|m| m.topic == "camera/yard/snapshot/event", 2, WAIT)
        .await;
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[1].json()["provenance"]["via"], "on_demand");
    bridge.wait_for_log("rate limit", WAIT);
    // Only one extra request reached the camera for the burst.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        col.on(topic).len(),
        2,
        "the burst took more than one snapshot"
    );
    // After the interval, a command works again; a command for another device takes nothing
    // and says so.
    tokio::time::sleep(Duration::from_secs(3)).await;
    col.publish("camera/other/snapshot/take", "", false).await;
    bridge.wait_for_log("not a [[poll]] camera", WAIT);
    col.publish(take, "", false).await;
    assert_eq!(images_on(&col, topic, 3).await.len(), 3);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(col.on(topic).len(), 3);
    let accepted = cam.seen(|s| s.accepted.len());
    assert_eq!(accepted, 3, "camera requests");
}

/// A wrong password is logged as such and never published; credentials that worked refused
/// later (Dahua out of connections) are not called a wrong password; a 200 that is not an image
/// goes to `bridge/unparsed`, never to the image topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_busy_camera_and_non_image_answer() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let col = Collector::start(broker.port, "camera/#").await;
    let wrong = Cam::start(Scheme::Digest("MD5"), "wrong", Body::Image(jpeg(8))).await;
    let busy = Cam::start_with(Scheme::Digest("MD5"), "s3cret", Body::Image(jpeg(9)), |s| {
        s.busy_after = Some(1);
        s.nonce_uses = 1000;
    })
    .await;
    let html = Cam::start(
        Scheme::Basic,
        "s3cret",
        Body::Other(
            "text/html",
            b"<html><body>Please log in</body></html>".to_vec(),
        ),
    )
    .await;
    let toml = format!(
        "{}{}{}",
        poll_entry("wrongpw", &wrong, "interval = 1"),
        poll_entry("busy", &busy, "interval = 1\nunreachable_after = 50"),
        poll_entry("html", &html, "interval = 1"),
    );
    let bridge = BridgeProcess::start(&broker, &toml, "camqtt-poll-errors");

    let unparsed = col
        .wait_for(
            |m| m.topic == "camera/bridge/unparsed" && m.text().contains("not-an-image"),
            WAIT,
        )
        .await
        .expect("non-image answer reported")
        .json();
    assert_eq!(unparsed["source"], "poll", "{unparsed}");
    assert_eq!(unparsed["path"], "/ISAPI/Streaming/channels/101/picture");
    assert!(unparsed["body"].as_str().unwrap().contains("Please log in"));

    bridge.wait_for_log("wrong user name or password", WAIT);
    bridge.wait_for_log("worked before", WAIT);
    let wrong_lines = bridge.warn_lines("wrong user name or password");
    assert!(
        wrong_lines.iter().all(|l| l.contains("wrongpw")),
        "{wrong_lines:?}"
    );
    assert!(!bridge.log().contains("s3cret"), "a password in the log");
    // The busy camera's first picture came through; the others never published one.
    images_on(&col, "camera/busy/snapshot/image", 1).await;
    for dev in ["wrongpw", "html"] {
        assert!(
            col.on(&format!("camera/{dev}/snapshot/image")).is_empty(),
            "{dev} published an image"
        );
    }
    // A camera that never gave a picture is announced as unavailable once its failures
    // count as an outage (HA shows the device, greyed out), and never as online.
    assert!(
        col.wait_payload(
            "camera/wrongpw/availability",
            "offline",
            Duration::from_secs(30)
        )
        .await
        .is_some(),
        "the camera with the wrong password was not announced as offline"
    );
    assert!(
        col.on("camera/wrongpw/availability")
            .iter()
            .all(|m| m.text() != "online"),
        "a camera that never answered was announced online"
    );
}
