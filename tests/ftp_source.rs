//! The `ftp` source end to end: the real `camqtt` binary with `[ftp]` on, a real Mosquitto,
//! and real FTP clients — `curl` (passive with PASV and EPSV, active with EPRT and PORT,
//! `ALLO` by `-Q`, `--ftp-create-dirs` date trees, `--append`) and scripted control sessions
//! over TCP for what curl cannot do (the Dahua dialogue of field case 11, an upload cut off
//! mid-file). Every MQTT message that matters is checked: image bytes identical (SHA-256) to
//! the file, the event JSON with its provenance, `motion/state` ON, `bridge/unparsed`.
//!
//! Skips (with a message) when Mosquitto or curl is not installed; the shared field case
//! (`../shared/field/11-ftp-allo-passive`) is skipped when that folder is absent.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::process::BridgeProcess;
use common::{Collector, Mosquitto, Msg};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const T: Duration = Duration::from_secs(20);
/// The Dahua snapshot name of field case 11, percent-encoded for a URL (curl decodes it).
const DAHUA_NAME: &str = "07[M][0@0][0].jpg";
const DAHUA_NAME_URL: &str = "07%5BM%5D%5B0%400%5D%5B0%5D.jpg";
const DATE_TREE: &str = "/2025-12-01/001/jpg/13/11";

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

fn curl_available() -> bool {
    if Path::new("/usr/bin/curl").exists() {
        true
    } else {
        eprintln!("skipping: /usr/bin/curl not installed");
        false
    }
}

/// A broker, a collector on `camera/#`, and the bridge with `[ftp]` (`extra` lines added to
/// the section); `None` (skipped) without Mosquitto or curl.
async fn setup(extra: &str, id: &str) -> Option<(Mosquitto, Collector, BridgeProcess, SocketAddr)> {
    if !curl_available() {
        return None;
    }
    let broker = Mosquitto::try_start()?;
    let col = Collector::start(broker.port, "camera/#").await;
    // A wide range: tests run in parallel and each passive listener takes a port of it.
    let ports = if extra.contains("passive_ports") {
        ""
    } else {
        "passive_ports = \"41000-41999\"\n"
    };
    let toml = format!("[ftp]\nlisten = \"127.0.0.1:0\"\n{ports}{extra}\n");
    let bridge = BridgeProcess::start(&broker, &toml, id);
    let addr = ftp_addr(&bridge);
    Some((broker, col, bridge, addr))
}

/// The FTP listener's address from the `camqtt running` line (`ftp=127.0.0.1:PORT`).
fn ftp_addr(bridge: &BridgeProcess) -> SocketAddr {
    let log = bridge.log();
    log.lines()
        .filter(|l| l.contains("camqtt running"))
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("ftp=")))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no ftp= address in the log:\n{log}"))
}

/// Write `data` to a fresh file and return its path (kept with the directory).
fn file(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Run curl with `args`; (exit code, stderr with `-v` trace).
async fn curl(args: &[&str]) -> (i32, String) {
    let out = tokio::time::timeout(
        T,
        tokio::process::Command::new("/usr/bin/curl")
            .args(["-sS", "-v", "--max-time", "15"])
            .args(args)
            .output(),
    )
    .await
    .expect("curl finished in time")
    .expect("curl ran");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn url(addr: SocketAddr, user: &str, pass: &str, path: &str) -> String {
    format!("ftp://{user}:{pass}@{addr}{path}")
}

/// The image on `camera/<dev>/<cat>/image` and the event JSON, after one upload.
async fn event_of(col: &Collector, dev: &str, cat: &str) -> (Msg, serde_json::Value) {
    let image = col
        .wait_for(|m| m.topic == format!("camera/{dev}/{cat}/image"), T)
        .await
        .unwrap_or_else(|| panic!("no camera/{dev}/{cat}/image; got {:?}", topics(col)));
    let event = col
        .wait_for(|m| m.topic == format!("camera/{dev}/{cat}/event"), T)
        .await
        .expect("event JSON")
        .json();
    (image, event)
}

fn topics(col: &Collector) -> Vec<String> {
    col.all().into_iter().map(|m| m.topic).collect()
}

fn assert_provenance(event: &serde_json::Value, name: &str, path: &str) {
    let p = &event["provenance"];
    assert_eq!(p["via"], "ftp", "{event}");
    assert_eq!(p["name"], name, "{event}");
    assert_eq!(p["path"], path, "{event}");
    assert!(
        p["captured"].as_str().is_some_and(|s| s.len() >= 20),
        "{event}"
    );
}

#[tokio::test]
async fn passive_pasv_date_tree_upload_publishes_image_event_and_state() {
    let Some((_b, col, _bridge, addr)) = setup("", "camqtt-ftp-pasv").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let jpeg = common::camera::big_jpeg(5000);
    let f = file(&dir, "snap.jpg", &jpeg);
    let target = url(
        addr,
        "porchcam",
        "any",
        &format!("{DATE_TREE}/{DAHUA_NAME_URL}"),
    );
    let (code, trace) = curl(&[
        "--ftp-pasv",
        "--disable-epsv",
        "--ftp-create-dirs",
        "-T",
        f.to_str().unwrap(),
        &target,
    ])
    .await;
    assert_eq!(code, 0, "curl failed:\n{trace}");
    assert!(trace.contains("PASV"), "{trace}");
    assert!(
        trace.contains("< 227 Entering Passive Mode (127,0,0,1,"),
        "{trace}"
    );
    assert!(trace.contains("< 226"), "{trace}");
    let (image, event) = event_of(&col, "porchcam", "motion").await;
    assert_eq!(sha(&image.payload), sha(&jpeg));
    assert_eq!(event["source"], "ftp", "{event}");
    assert_eq!(event["category"], "motion", "{event}");
    assert_provenance(&event, DAHUA_NAME, DATE_TREE);
    let on = col
        .wait_for(|m| m.topic == "camera/porchcam/motion/state", T)
        .await
        .expect("motion state");
    assert_eq!(on.text(), "ON");
    // The simple per-category topic carries the same bytes.
    let simple = col
        .wait_for(|m| m.topic == "camera/motion/image", T)
        .await
        .expect("camera/motion/image");
    assert_eq!(sha(&simple.payload), sha(&jpeg));
}

#[tokio::test]
async fn epsv_upload_with_allo_by_curl_quote() {
    let Some((_b, col, _bridge, addr)) = setup("", "camqtt-ftp-epsv").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let jpeg = common::camera::image("overview.jpg");
    let f = file(&dir, "x.jpg", &jpeg);
    let (code, trace) = curl(&[
        "-Q",
        &format!("ALLO {}", jpeg.len()),
        "-T",
        f.to_str().unwrap(),
        &url(
            addr,
            "gatecam",
            "x",
            "/192.168.1.64_01_20251201132003123_LINE_CROSSING_DETECTION.jpg",
        ),
    ])
    .await;
    assert_eq!(code, 0, "curl failed:\n{trace}");
    assert!(trace.contains("< 200 ALLO command successful"), "{trace}");
    assert!(trace.contains("EPSV") && trace.contains("< 229"), "{trace}");
    let (image, event) = event_of(&col, "gatecam", "line_crossing").await;
    assert_eq!(sha(&image.payload), sha(&jpeg));
    assert_provenance(
        &event,
        "192.168.1.64_01_20251201132003123_LINE_CROSSING_DETECTION.jpg",
        "/",
    );
}

#[tokio::test]
async fn active_mode_with_eprt_and_with_port() {
    let Some((_b, col, _bridge, addr)) = setup("", "camqtt-ftp-active").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = common::camera::big_jpeg(3000);
    let b = common::camera::big_jpeg(7000);
    let (fa, fb) = (file(&dir, "a.jpg", &a), file(&dir, "b.jpg", &b));
    // curl -P sends EPRT first (which libunftp lacks; the source turns it into PORT).
    let (code, trace) = curl(&[
        "-P",
        "127.0.0.1",
        "-T",
        fa.to_str().unwrap(),
        &url(addr, "yardcam", "x", "/a.jpg"),
    ])
    .await;
    assert_eq!(code, 0, "curl failed:\n{trace}");
    assert!(trace.contains("EPRT |1|127.0.0.1|"), "{trace}");
    assert!(trace.contains("< 200 EPRT command successful"), "{trace}");
    let (image, event) = event_of(&col, "yardcam", "motion").await;
    assert_eq!(sha(&image.payload), sha(&a));
    assert_provenance(&event, "a.jpg", "/");
    col.clear();
    let (code, trace) = curl(&[
        "-P",
        "-",
        "--disable-eprt",
        "-T",
        fb.to_str().unwrap(),
        &url(addr, "yardcam", "x", "/b.jpg"),
    ])
    .await;
    assert_eq!(code, 0, "curl failed:\n{trace}");
    assert!(trace.contains("PORT 127,0,0,1,"), "{trace}");
    assert!(trace.contains("< 200 PORT command successful"), "{trace}");
    let (image, event) = event_of(&col, "yardcam", "motion").await;
    assert_eq!(sha(&image.payload), sha(&b));
    assert_provenance(&event, "b.jpg", "/");
}

/// A camera on another host than the bridge: libunftp accepts data connections only from
/// its client's address, which behind the relay is the relay's own, so every data connection
/// goes through the source too. Here the camera is 127.0.0.2 (curl `--interface`) and the
/// bridge 127.0.0.1: passive (EPSV and PASV) and active (EPRT and PORT) uploads all arrive.
#[tokio::test]
async fn a_camera_on_another_address_uploads_in_every_mode() {
    let Some((_b, col, _bridge, addr)) = setup("", "camqtt-ftp-remote").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let modes: [&[&str]; 4] = [
        &[],
        &["--disable-epsv"],
        &["-P", "-"],
        &["-P", "-", "--disable-eprt"],
    ];
    for (i, mode) in modes.iter().enumerate() {
        let jpeg = common::camera::big_jpeg(4000 + 1000 * i);
        let name = format!("r{i}.jpg");
        let f = file(&dir, &name, &jpeg);
        let target = url(addr, "farcam", "x", &format!("/{name}"));
        let mut args = vec!["--interface", "127.0.0.2", "-T", f.to_str().unwrap()];
        args.extend_from_slice(mode);
        args.push(&target);
        let (code, trace) = curl(&args).await;
        assert_eq!(code, 0, "mode {mode:?}: curl failed:\n{trace}");
        if mode.is_empty() {
            assert!(trace.contains("< 229 "), "{trace}");
        } else if mode == &["--disable-epsv"] {
            // The advertised address is the one the camera reached, never the internal one.
            assert!(
                trace.contains("< 227 Entering Passive Mode (127,0,0,1,"),
                "{trace}"
            );
        }
        let (image, event) = event_of(&col, "farcam", "motion").await;
        assert_eq!(sha(&image.payload), sha(&jpeg), "mode {mode:?}");
        assert_provenance(&event, &name, "/");
        col.clear();
    }
}

#[tokio::test]
async fn appe_to_a_new_file_is_treated_like_stor() {
    let Some((_b, col, _bridge, addr)) = setup("", "camqtt-ftp-appe").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let jpeg = common::camera::big_jpeg(6000);
    let f = file(&dir, "p.jpg", &jpeg);
    let (code, trace) = curl(&[
        "--append",
        "-T",
        f.to_str().unwrap(),
        &url(addr, "porch", "x", "/Porch_01_20251201132003.jpg"),
    ])
    .await;
    assert_eq!(code, 0, "curl failed:\n{trace}");
    assert!(
        trace.contains("APPE Porch_01_20251201132003.jpg"),
        "{trace}"
    );
    let (image, event) = event_of(&col, "porch", "motion").await;
    assert_eq!(sha(&image.payload), sha(&jpeg));
    assert_provenance(&event, "Porch_01_20251201132003.jpg", "/");
}

#[tokio::test]
async fn non_jpeg_upload_gets_226_and_is_reported_never_published() {
    let Some((_b, col, _bridge, addr)) = setup("", "camqtt-ftp-other").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let clip: Vec<u8> = b"\0\0\0\x18ftypmp42"
        .iter()
        .copied()
        .chain((0..5000u32).map(|i| (i * 7) as u8))
        .collect();
    let f = file(&dir, "c.mp4", &clip);
    let (code, trace) = curl(&[
        "-T",
        f.to_str().unwrap(),
        &url(addr, "drive", "x", "/clip.mp4"),
    ])
    .await;
    assert_eq!(code, 0, "curl failed:\n{trace}");
    assert!(trace.contains("< 226"), "{trace}");
    let u = col
        .wait_for(|m| m.topic == "camera/bridge/unparsed", T)
        .await
        .expect("unparsed report")
        .json();
    assert_eq!(u["source"], "ftp", "{u}");
    assert_eq!(u["reason"], "not-an-image", "{u}");
    assert_eq!(u["path"], "/clip.mp4", "{u}");
    assert_eq!(u["body_len"], clip.len(), "{u}");
    // A heartbeat-like text file is accepted too, and marks the device alive.
    let t = file(&dir, "alive.txt", b"camera alive\n");
    let (code, trace) = curl(&[
        "-T",
        t.to_str().unwrap(),
        &url(addr, "drive", "x", "/alive.txt"),
    ])
    .await;
    assert_eq!(code, 0, "curl failed:\n{trace}");
    col.wait_payload("camera/drive/availability", "online", T)
        .await
        .expect("device online");
    // Then a real picture: its image is the only one ever published.
    let jpeg = common::camera::image("overview.jpg");
    let j = file(&dir, "j.jpg", &jpeg);
    let (code, _) = curl(&[
        "-T",
        j.to_str().unwrap(),
        &url(addr, "drive", "x", "/j.jpg"),
    ])
    .await;
    assert_eq!(code, 0);
    let (image, _) = event_of(&col, "drive", "motion").await;
    assert_eq!(sha(&image.payload), sha(&jpeg));
    let images: Vec<Msg> = col
        .all()
        .into_iter()
        .filter(|m| m.topic.ends_with("/image"))
        .collect();
    assert!(
        images.iter().all(|m| sha(&m.payload) == sha(&jpeg)),
        "{:?}",
        topics(&col)
    );
}

#[tokio::test]
async fn passwords_required_refuse_a_wrong_one() {
    let pw_dir = tempfile::tempdir().unwrap();
    let pw = file(&pw_dir, "pw", b"other-secret\n");
    let extra = format!(
        "require_password = true\n[[ftp.users]]\nusername = \"porchcam\"\npassword = \"field-only\"\n[[ftp.users]]\nusername = \"gate\"\npassword_file = {:?}\n",
        pw.to_str().unwrap()
    );
    let Some((_b, col, bridge, addr)) = setup(&extra, "camqtt-ftp-auth").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let jpeg = common::camera::image("overview.jpg");
    let f = file(&dir, "a.jpg", &jpeg);
    let (code, trace) = curl(&[
        "-T",
        f.to_str().unwrap(),
        &url(addr, "porchcam", "Wr0ngPass", "/a.jpg"),
    ])
    .await;
    assert_eq!(code, 67, "login must be denied:\n{trace}");
    assert!(trace.contains("< 530"), "{trace}");
    let (code, _) = curl(&[
        "-T",
        f.to_str().unwrap(),
        &url(addr, "nobody", "x", "/a.jpg"),
    ])
    .await;
    assert_eq!(code, 67);
    let end = tokio::time::Instant::now() + T;
    while bridge.log().matches("FTP login refused").count() < 2 {
        assert!(tokio::time::Instant::now() < end, "{}", bridge.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !bridge.log().contains("Wr0ngPass"),
        "a password reached the log"
    );
    let (code, trace) = curl(&[
        "-T",
        f.to_str().unwrap(),
        &url(addr, "gate", "other-secret", "/a.jpg"),
    ])
    .await;
    assert_eq!(code, 0, "{trace}");
    let (image, _) = event_of(&col, "gate", "motion").await;
    assert_eq!(sha(&image.payload), sha(&jpeg));
    assert!(
        col.all()
            .iter()
            .all(|m| !m.topic.starts_with("camera/porchcam/"))
    );
}

/// A scripted FTP client for the dialogues curl cannot play.
struct Session {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Session {
    async fn connect(addr: SocketAddr) -> (Session, u16, String) {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, w) = s.into_split();
        let mut s = Session {
            r: BufReader::new(r),
            w,
        };
        let (code, text) = s.reply().await;
        (s, code, text)
    }

    /// One reply (multi-line aware): its code and full text.
    async fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        let mut code = None;
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(T, self.r.read_line(&mut line))
                .await
                .expect("reply in time")
                .unwrap();
            assert!(n > 0, "connection closed; so far: {text:?}");
            text.push_str(&line);
            let c = code.get_or_insert_with(|| line[..3].to_string()).clone();
            if line.len() >= 4 && line.starts_with(&c) && line.as_bytes()[3] == b' ' {
                return (c.parse().unwrap(), text);
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    /// `PASV`, and the data address from its 227 reply.
    async fn pasv(&mut self) -> (String, SocketAddr) {
        let (code, text) = self.cmd("PASV").await;
        assert_eq!(code, 227, "{text}");
        (text.clone(), pasv_addr(&text))
    }
}

/// `(h1,h2,h3,h4,p1,p2)` of a 227 reply.
fn pasv_addr(text: &str) -> SocketAddr {
    let inner = &text[text.find('(').unwrap() + 1..text.find(')').unwrap()];
    let n: Vec<u16> = inner
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    SocketAddr::from((
        [n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u8],
        n[4] * 256 + n[5],
    ))
}

/// Transcript A of field case 11 (the Dahua dialogue) with `data` as the STOR payload, up to
/// and including the 226; asserts every reply.
async fn dahua_upload(addr: SocketAddr, user: &str, pass: &str, data: &[u8]) {
    let (mut s, code, _) = Session::connect(addr).await;
    assert_eq!(code, 220);
    assert_eq!(s.cmd(&format!("USER {user}")).await.0, 331);
    assert_eq!(s.cmd(&format!("PASS {pass}")).await.0, 230);
    let (code, text) = s.cmd("SYST").await;
    assert_eq!(code, 215, "{text}");
    let (code, text) = s.cmd("PWD").await;
    assert_eq!(code, 257, "{text}");
    assert!(text.contains("\"/\""), "{text}");
    assert_eq!(s.cmd("TYPE I").await.0, 200);
    let (code, _) = s.cmd(&format!("CWD {DATE_TREE}")).await;
    assert!(code == 250 || code == 550, "{code}");
    let mut level = String::new();
    for part in DATE_TREE.split('/').filter(|p| !p.is_empty()) {
        level.push('/');
        level.push_str(part);
        let (code, text) = s.cmd(&format!("MKD {level}")).await;
        assert_eq!(code, 257, "MKD {level}: {text}");
    }
    assert_eq!(s.cmd(&format!("CWD {DATE_TREE}")).await.0, 250);
    let (_, data_addr) = s.pasv().await;
    let (code, text) = s.cmd(&format!("ALLO {}", data.len())).await;
    assert_eq!(
        (code, text.as_str()),
        (200, "200 ALLO command successful\r\n")
    );
    let mut dc = TcpStream::connect(data_addr).await.unwrap();
    let (code, text) = s.cmd(&format!("STOR {DAHUA_NAME}")).await;
    assert_eq!(code, 150, "{text}");
    dc.write_all(data).await.unwrap();
    dc.shutdown().await.unwrap();
    drop(dc);
    let (code, text) = s.reply().await;
    assert_eq!(code, 226, "{text}");
    assert_eq!(s.cmd("QUIT").await.0, 221);
}

#[tokio::test]
async fn scripted_dahua_dialogue_with_allo_and_advertised_address() {
    let Some((_b, col, _bridge, addr)) =
        setup("passive_address = \"127.0.0.1\"", "camqtt-ftp-dahua").await
    else {
        return;
    };
    let jpeg = common::camera::big_jpeg(5000);
    dahua_upload(addr, "porchcam", "field-only", &jpeg).await;
    let (image, event) = event_of(&col, "porchcam", "motion").await;
    assert_eq!(sha(&image.payload), sha(&jpeg));
    assert_provenance(&event, DAHUA_NAME, DATE_TREE);
    col.wait_payload("camera/porchcam/motion/state", "ON", T)
        .await
        .expect("motion ON");
}

#[tokio::test]
async fn pasv_advertises_the_configured_address_and_range() {
    let Some((_b, _col, _bridge, addr)) = setup(
        "passive_address = \"192.0.2.10\"\npassive_ports = \"50000-50000\"",
        "camqtt-ftp-advertise",
    )
    .await
    else {
        return;
    };
    let (mut s, _, _) = Session::connect(addr).await;
    s.cmd("USER porchcam").await;
    s.cmd("PASS x").await;
    let (text, data) = s.pasv().await;
    assert!(text.starts_with("227 "), "{text}");
    assert_eq!(
        data,
        "192.0.2.10:50000".parse::<SocketAddr>().unwrap(),
        "{text}"
    );
    // (EPSV is checked with curl: the range's one port is held by this PASV's listener.)
    assert_eq!(s.cmd("QUIT").await.0, 221);
}

#[tokio::test]
async fn port_to_another_host_is_refused() {
    let Some((_b, _col, _bridge, addr)) = setup("", "camqtt-ftp-bounce").await else {
        return;
    };
    let (mut s, _, _) = Session::connect(addr).await;
    s.cmd("USER a").await;
    s.cmd("PASS b").await;
    assert_eq!(s.cmd("PORT 192,0,2,99,0,80").await.0, 504);
    assert_eq!(s.cmd("EPRT |1|192.0.2.99|80|").await.0, 504);
    assert_eq!(s.cmd("EPRT |2|::1|80|").await.0, 522);
    assert_eq!(s.cmd("NOOP").await.0, 200);
}

/// Variant B: the data connection closes after 2048 bytes and the control connection drops
/// without reading the reply. Nothing reaches `…/image`; `bridge/unparsed` says why. A whole
/// upload afterwards is the only image published.
async fn cut_off_then_whole(addr: SocketAddr, col: &Collector, user: &str, jpeg: &[u8]) {
    let (mut s, _, _) = Session::connect(addr).await;
    s.cmd(&format!("USER {user}")).await;
    s.cmd("PASS field-only").await;
    s.cmd("TYPE I").await;
    let (_, data_addr) = s.pasv().await;
    assert_eq!(s.cmd(&format!("ALLO {}", jpeg.len())).await.0, 200);
    let mut dc = TcpStream::connect(data_addr).await.unwrap();
    assert_eq!(s.cmd(&format!("STOR {DAHUA_NAME}")).await.0, 150);
    dc.write_all(&jpeg[..2048]).await.unwrap();
    dc.shutdown().await.unwrap();
    drop(dc);
    drop(s);
    let u = col
        .wait_for(|m| m.topic == "camera/bridge/unparsed", T)
        .await
        .expect("cut-off upload reported")
        .json();
    assert_eq!(u["source"], "ftp", "{u}");
    assert_eq!(u["reason"], "upload-cut-off", "{u}");
    assert_eq!(u["body_len"], 2048, "{u}");
    assert_eq!(u["peer"], "127.0.0.1", "{u}");
    assert!(u["path"].as_str().unwrap().ends_with(DAHUA_NAME), "{u}");
    assert!(
        col.all().iter().all(|m| !m.topic.ends_with("/image")),
        "{:?}",
        topics(col)
    );
    dahua_upload(addr, user, "field-only", jpeg).await;
    let (image, _) = event_of(col, user, "motion").await;
    assert_eq!(sha(&image.payload), sha(jpeg));
    let images: Vec<Msg> = col
        .all()
        .into_iter()
        .filter(|m| m.topic.ends_with("/image"))
        .collect();
    assert!(!images.is_empty());
    assert!(
        images.iter().all(|m| sha(&m.payload) == sha(jpeg)),
        "a half image was published"
    );
}

#[tokio::test]
async fn upload_cut_off_mid_file_is_reported_not_published() {
    let Some((_b, col, bridge, addr)) = setup("", "camqtt-ftp-cut").await else {
        return;
    };
    let jpeg = common::camera::big_jpeg(5000);
    cut_off_then_whole(addr, &col, "porchcam", &jpeg).await;
    bridge.wait_for_log("upload-cut-off", T);
}

/// Field case 11 with its own files (`../shared/field/11-ftp-allo-passive`): transcript A
/// with `snapshot.jpg`, variant B (cut at 2048 of 5000 bytes), variant C (`APPE`, flat name).
#[tokio::test]
async fn field_case_11_allo_passive() {
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/field/11-ftp-allo-passive");
    let Ok(snapshot) = std::fs::read(root.join("snapshot.jpg")) else {
        eprintln!("SKIP: shared field case 11 not found at {}", root.display());
        return;
    };
    assert_eq!(snapshot.len(), 5000);
    let extra = "passive_address = \"127.0.0.1\"\n[[ftp.users]]\nusername = \"porchcam\"\npassword = \"field-only\"\n";
    let Some((_b, col, _bridge, addr)) = setup(extra, "camqtt-ftp-field11").await else {
        return;
    };
    // B first, so that "no image" is checked before any image exists.
    cut_off_then_whole(addr, &col, "porchcam", &snapshot).await;
    // A: the whole dialogue has run inside `cut_off_then_whole`; check its event.
    let event = col
        .wait_for(|m| m.topic == "camera/porchcam/motion/event", T)
        .await
        .unwrap()
        .json();
    assert_provenance(&event, DAHUA_NAME, DATE_TREE);
    col.wait_payload("camera/porchcam/motion/state", "ON", T)
        .await
        .expect("motion ON");
    // C: APPE to a new flat name.
    col.clear();
    let (mut s, _, _) = Session::connect(addr).await;
    s.cmd("USER porchcam").await;
    assert_eq!(s.cmd("PASS field-only").await.0, 230);
    s.cmd("TYPE I").await;
    let (_, data_addr) = s.pasv().await;
    let mut dc = TcpStream::connect(data_addr).await.unwrap();
    assert_eq!(s.cmd("APPE Porch_01_20251201132003.jpg").await.0, 150);
    dc.write_all(&snapshot).await.unwrap();
    dc.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = dc.read_to_end(&mut rest).await;
    assert_eq!(s.reply().await.0, 226);
    let (image, event) = event_of(&col, "porchcam", "motion").await;
    assert_eq!(sha(&image.payload), sha(&snapshot));
    assert_provenance(&event, "Porch_01_20251201132003.jpg", "/");
    assert_eq!(s.cmd("QUIT").await.0, 221);
}

#[tokio::test]
async fn limits_connections_file_size_and_idle_time() {
    let extra = "max_connections = 1\nmax_file_size = 2048\nidle_timeout = 5\n";
    let Some((_b, col, bridge, addr)) = setup(extra, "camqtt-ftp-limits").await else {
        return;
    };
    // One connection at a time: the second gets 421 and is closed.
    let (first, code, _) = Session::connect(addr).await;
    assert_eq!(code, 220);
    let (mut second, code, text) = Session::connect(addr).await;
    assert_eq!(code, 421, "{text}");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(T, second.r.read_to_end(&mut rest)).await;
    drop(first);
    bridge.wait_for_log("ftp.max_connections reached", T);
    // A file over max_file_size: 552, reported, nothing published. The slot frees once the
    // first session's relay has ended: retry while the bridge still says 421.
    let dir = tempfile::tempdir().unwrap();
    let big = file(&dir, "big.jpg", &common::camera::big_jpeg(5000));
    let end = tokio::time::Instant::now() + T;
    let trace = loop {
        let (code, trace) = curl(&[
            "-T",
            big.to_str().unwrap(),
            &url(addr, "cam", "x", "/big.jpg"),
        ])
        .await;
        assert_ne!(code, 0, "{trace}");
        if !trace.contains("< 421") || tokio::time::Instant::now() > end {
            break trace;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(trace.contains("< 552"), "{trace}");
    let u = col
        .wait_for(|m| m.topic == "camera/bridge/unparsed", T)
        .await
        .expect("too-large upload reported")
        .json();
    assert_eq!(u["reason"], "file-too-large", "{u}");
    assert!(col.all().iter().all(|m| !m.topic.ends_with("/image")));
    // A session that says nothing is closed by the idle timeout (421).
    let (mut idle, code, _) = Session::connect(addr).await;
    assert_eq!(code, 220);
    assert_eq!(idle.cmd("USER cam").await.0, 331);
    let (code, text) = idle.reply().await;
    assert_eq!(code, 421, "{text}");
}

#[tokio::test]
async fn devices_from_configured_ftp_user_and_from_folders() {
    let extra = "device_from = \"folder\"\n\n[[devices]]\nftp_user = \"garage\"\nid = \"garage_cam\"\nname = \"Garage\"\n";
    let Some((_b, col, _bridge, addr)) = setup(extra, "camqtt-ftp-devices").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let jpeg = common::camera::image("overview.jpg");
    let f = file(&dir, "a.jpg", &jpeg);
    let (code, trace) = curl(&[
        "--ftp-create-dirs",
        "-T",
        f.to_str().unwrap(),
        &url(addr, "shared", "x", "/garage/2025-12-01/a.jpg"),
    ])
    .await;
    assert_eq!(code, 0, "{trace}");
    let (image, event) = event_of(&col, "garage_cam", "motion").await;
    assert_eq!(sha(&image.payload), sha(&jpeg));
    assert_provenance(&event, "a.jpg", "/garage/2025-12-01");
    let (code, trace) = curl(&[
        "-T",
        f.to_str().unwrap(),
        &url(addr, "shared", "x", "/drive/a.jpg"),
    ])
    .await;
    assert_eq!(code, 0, "{trace}");
    let (image, _) = event_of(&col, "drive", "motion").await;
    assert_eq!(sha(&image.payload), sha(&jpeg));
}

/// The bridge's process id: the `camqtt` whose command line names its configuration file.
fn bridge_pid(bridge: &BridgeProcess) -> u32 {
    let config = bridge.path("camqtt.toml");
    let config = config.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == config.as_bytes()))
        })
        .expect("the bridge's process in /proc")
}

/// How many sockets the process `pid` has open.
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Wait (up to `max`) until the process `pid` has at most `n` sockets open; the last count.
async fn sockets_down_to(pid: u32, n: usize, max: Duration) -> usize {
    let end = tokio::time::Instant::now() + max;
    loop {
        let now = open_sockets(pid);
        if now <= n || tokio::time::Instant::now() > end {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Log in, `PASV`, connect the data connection and send a byte on it: a passive data
/// connection libunftp has accepted that no transfer command has used. Returns both.
async fn unused_data_connection(addr: SocketAddr) -> (Session, TcpStream) {
    let (mut s, code, _) = Session::connect(addr).await;
    assert_eq!(code, 220);
    assert_eq!(s.cmd("USER cam").await.0, 331);
    assert_eq!(s.cmd("PASS x").await.0, 230);
    let (_, data_addr) = s.pasv().await;
    let mut dc = TcpStream::connect(data_addr).await.unwrap();
    dc.write_all(b"x").await.unwrap();
    (s, dc)
}

#[tokio::test]
async fn session_ending_with_an_unused_data_connection_closes_it() {
    let Some((_b, _col, mut bridge, addr)) = setup("", "camqtt-ftp-unused-data").await else {
        return;
    };
    if !Path::new("/proc/self/fd").exists() {
        eprintln!("skipping: no /proc");
        return;
    }
    let pid = bridge_pid(&bridge);
    let before = open_sockets(pid);
    const ROUNDS: usize = 15;
    // Every session's sockets are closed again once it ended (libunftp kept the data
    // connection for 5 minutes, the session's storage and with it the event channel too).
    let all_closed = |what: &'static str| async move {
        let left = sockets_down_to(pid, before + 2, Duration::from_secs(60)).await;
        assert!(
            left <= before + 2,
            "{what}: {left} sockets open after {ROUNDS} sessions ended, {before} before"
        );
    };
    // The camera drops the control connection, then the data connection.
    for _ in 0..ROUNDS {
        let (s, dc) = unused_data_connection(addr).await;
        drop(s);
        drop(dc);
    }
    all_closed("control connection dropped").await;
    // The camera says QUIT, then drops the data connection.
    for _ in 0..ROUNDS {
        let (mut s, dc) = unused_data_connection(addr).await;
        assert_eq!(s.cmd("QUIT").await.0, 221);
        drop(dc);
    }
    all_closed("QUIT").await;
    // A transfer command libunftp refuses (STOR without a name) leaves it unused too.
    for _ in 0..ROUNDS {
        let (mut s, dc) = unused_data_connection(addr).await;
        let (code, text) = s.cmd("STOR").await;
        assert!(code >= 500, "{text}");
        drop(s);
        drop(dc);
    }
    all_closed("STOR refused").await;
    // The bridge stops promptly and cleanly while such a session is still open.
    let (_s, _dc) = unused_data_connection(addr).await;
    let status = bridge.terminate(Duration::from_secs(60));
    let log = bridge.log();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}; log:\n{log}"
    );
    assert!(!log.contains("did not stop in time"), "{log}");
}
