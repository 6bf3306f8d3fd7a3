//! The SMTP source end to end: the real `camqtt` binary with `[smtp]`, a real Mosquitto, and
//! real clients — curl (`--mail-from … --mail-rcpt … --upload-file`, AUTH LOGIN and PLAIN,
//! STARTTLS) and scripted sessions over TCP for what curl does not do (AUTH after `HELO`, a
//! connection dropped in the middle of a mail). Every MQTT message is checked: topic, image
//! bytes (sha256) identical to the attachment, event JSON, `motion/state`.
//!
//! The mail is our own, written from the RFCs: a folded `Content-Type` (RFC 5322 §2.2.3), a
//! boundary holding `=?`, `+` and `:` (RFC 2046 §5.1.1 `bcharsnospace`), a subject of two
//! encoded words, Q and B (RFC 2047 §4, §6.2: the space between them is dropped), a nested
//! `multipart/alternative` with a quoted-printable body (RFC 2045 §6.7 soft breaks), an RFC
//! 2231 `filename*`, and base64 lines of uneven lengths (RFC 2045 §6.8 decoders ignore line
//! breaks).
//!
//! Field case 12 (`../shared/field/12-*`, third-party data, not copied here) runs in
//! `field_case_12_*`, which skips when the folder is absent.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use common::camera::{b64, big_jpeg, image};
use common::process::BridgeProcess;
use common::{Collector, Mosquitto, free_addr};

const T: Duration = Duration::from_secs(20);
const PASSWORD: &str = "s3cret pass";

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

fn curl_available() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// base64 of `data` in lines of uneven lengths (57, 76, 4, 100, 13, ...).
fn b64_uneven(data: &[u8]) -> String {
    let s = b64(data);
    let widths = [57usize, 76, 4, 100, 13, 1, 72];
    let mut out = Vec::new();
    let mut rest = s.as_str();
    let mut i = 0;
    while !rest.is_empty() {
        let w = widths[i % widths.len()].min(rest.len());
        out.push(&rest[..w]);
        rest = &rest[w..];
        i += 1;
    }
    out.join("\r\n")
}

/// The test mail (see the module docs); its subject decodes to "Bewegungsalarm » Hof · CH1".
fn fixture_mail(jpeg: &[u8]) -> Vec<u8> {
    let outer = "=?+_cam.boundary:0042+?=";
    let inner = "alt+=?inner";
    format!(
        "Date: Mon, 01 Dec 2025 13:20:05 +0100\r\n\
         From: \"Hof IPC\" <yard-cam@cams.example>\r\n\
         To: <alarm@bridge.example>\r\n\
         Subject: =?UTF-8?Q?Bewegungsalarm_=C2=BB_?=\r\n =?utf-8?B?SG9mIMK3IENIMQ==?=\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed;\r\n\tboundary=\"{outer}\"\r\n\
         \r\n\
         Preamble, ignored (RFC 2046 5.1.1).\r\n\
         --{outer}\r\n\
         Content-Type: multipart/alternative; boundary=\"{inner}\"\r\n\
         \r\n\
         --{inner}\r\n\
         Content-Type: text/plain; charset=\"UTF-8\"\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\
         \r\n\
         This is an automatically generated e-mail from your camera.\r\n\
         \r\n\
         EVENT TYPE:    Motion Detected\r\n\
         EVENT TIME:    2025-12-01,13:20:03\r\n\
         CAMERA NAME(NUM):   Hof(D1)\r\n\
         NOTE:          a soft line br=\r\neak and =C2=B7 a dot\r\n\
         .leading dot line\r\n\
         --{inner}\r\n\
         Content-Type: text/html; charset=\"UTF-8\"\r\n\
         \r\n\
         <p>EVENT TYPE: Motion Detected</p>\r\n\
         --{inner}--\r\n\
         --{outer}\r\n\
         Content-Type: image/jpeg;\r\n name=\"CH1_20251201132003.jpg\"\r\n\
         Content-Disposition: attachment;\r\n filename*=UTF-8''CH1_20251201132003.jpg\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {}\r\n\
         --{outer}--\r\n\
         Epilogue, ignored.\r\n",
        b64_uneven(jpeg)
    )
    .into_bytes()
}

const SUBJECT: &str = "Bewegungsalarm » Hof · CH1";

/// A bridge with `[smtp]` on a free port (and the Viewtron receiver too, as the helper
/// needs); waits until the SMTP listener is up.
fn bridge(broker: &Mosquitto, smtp_toml: &str, name: &str) -> (BridgeProcess, SocketAddr) {
    let addr = free_addr();
    let toml = format!("[smtp]\nlisten = \"{addr}\"\n{smtp_toml}");
    let b = BridgeProcess::start(broker, &toml, name);
    b.wait_for_log("SMTP source listening", T);
    (b, addr)
}

fn users_toml() -> String {
    format!("[[smtp.users]]\nusername = \"porchcam\"\npassword = \"{PASSWORD}\"\n")
}

/// Run curl against the SMTP listener; returns (success, stderr).
async fn curl(addr: SocketAddr, mail: &Path, extra: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .arg(format!("smtp://{addr}"))
        .args(["--mail-from", "yard-cam@cams.example"])
        .args(["--mail-rcpt", "alarm@bridge.example"])
        .arg("--upload-file")
        .arg(mail)
        .args(extra)
        .output()
        .await
        .expect("run curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_mail(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Wait for the event, image and state of `device`'s `category`; checks the image bytes.
async fn expect_published(
    col: &Collector,
    device: &str,
    category: &str,
    jpeg: &[u8],
) -> serde_json::Value {
    let image_topic = format!("camera/{device}/{category}/image");
    let img = col
        .wait_for(|m| m.topic == image_topic, T)
        .await
        .unwrap_or_else(|| panic!("no {image_topic}; got {:?}", topics(col)));
    assert_eq!(sha(&img.payload), sha(jpeg), "image bytes differ");
    let ev = col
        .wait_for(
            |m| m.topic == format!("camera/{device}/{category}/event"),
            T,
        )
        .await
        .expect("event JSON")
        .json();
    col.wait_payload(&format!("camera/{device}/{category}/state"), "ON", T)
        .await
        .expect("state ON");
    ev
}

fn topics(col: &Collector) -> Vec<String> {
    col.all().into_iter().map(|m| m.topic).collect()
}

/// A scripted SMTP client.
struct Client {
    io: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).await.expect("connect");
        let mut c = Client {
            io: BufReader::new(s),
        };
        let greeting = c.reply().await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        c
    }

    /// Read one reply, all its lines ("250-..." up to "250 ...").
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(T, self.io.read_line(&mut line))
                .await
                .expect("reply in time")
                .expect("read");
            assert!(n > 0, "connection closed; so far: {all:?}");
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    async fn expect(&mut self, line: &str, code: &str) -> String {
        let r = self.cmd(line).await;
        assert!(r.starts_with(code), "{line} -> {r}");
        r
    }

    /// The content, dot-stuffed, then the final `.`; returns the reply to it.
    async fn data(&mut self, mail: &[u8]) -> String {
        self.expect("DATA", "354").await;
        self.send(&stuff(mail)).await;
        self.cmd(".").await
    }

    /// True when the server closed the connection (EOF within the timeout).
    async fn closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(
            tokio::time::timeout(T, self.io.read_line(&mut line)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// RFC 5321 §4.5.2 dot-stuffing, with a final CRLF.
fn stuff(mail: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in mail.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_auth_login_publishes_image_event_and_state() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    if !curl_available() {
        eprintln!("skipping: curl not installed");
        return;
    }
    let (_bridge, addr) = bridge(&broker, &users_toml(), "smtp-login");
    let col = Collector::start(broker.port, "camera/#").await;
    let jpeg = image("overview.jpg");
    let dir = tempfile::tempdir().unwrap();
    let mail = write_mail(dir.path(), "mail.eml", &fixture_mail(&jpeg));
    let (ok, err) = curl(
        addr,
        &mail,
        &[
            "--user",
            &format!("porchcam:{PASSWORD}"),
            "--login-options",
            "AUTH=LOGIN",
        ],
    )
    .await;
    assert!(ok, "curl: {err}");
    let ev = expect_published(&col, "porchcam", "motion", &jpeg).await;
    assert_eq!(ev["source"], "smtp");
    assert_eq!(ev["category"], "motion");
    assert_eq!(ev["phase"], "pulse");
    assert_eq!(ev["raw_type"], "Motion Detected");
    assert_eq!(ev["device"]["channel"], 1);
    assert_eq!(ev["provenance"]["via"], "smtp");
    assert_eq!(ev["provenance"]["name"], SUBJECT);
    assert_eq!(ev["provenance"]["path"], "yard-cam@cams.example");
    assert_eq!(ev["provenance"]["file"], "CH1_20251201132003.jpg");
    let text = ev["text"].as_str().expect("text");
    assert!(text.contains("EVENT TYPE:    Motion Detected"), "{text}");
    // The quoted-printable soft break is joined, the encoded character decoded, the
    // dot-stuffed line restored.
    assert!(text.contains("a soft line break and · a dot"), "{text}");
    assert!(text.contains("\n.leading dot line"), "{text}");
    assert_eq!(ev["time_raw"], "Mon, 01 Dec 2025 13:20:05 +0100");
    assert!(ev["warnings"].as_array().unwrap().is_empty(), "{ev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_auth_plain_with_a_configured_device_and_rule() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    if !curl_available() {
        eprintln!("skipping: curl not installed");
        return;
    }
    // The sender is mapped to a configured device (matched case-insensitively, before the
    // login), and an own rule makes "Bewegungsalarm" an intrusion.
    let toml = format!(
        "{}[[smtp.rules]]\ncontains = \"bewegungsalarm\"\ncategory = \"intrusion\"\n\
         [[devices]]\nsmtp_from = \"Yard-Cam@CAMS.example\"\nid = \"yard\"\nname = \"Yard\"\n",
        users_toml()
    );
    let (_bridge, addr) = bridge(&broker, &toml, "smtp-plain");
    let col = Collector::start(broker.port, "camera/#").await;
    let jpeg = image("overview.jpg");
    let dir = tempfile::tempdir().unwrap();
    let mail = write_mail(dir.path(), "mail.eml", &fixture_mail(&jpeg));
    let (ok, err) = curl(
        addr,
        &mail,
        &[
            "--user",
            &format!("porchcam:{PASSWORD}"),
            "--login-options",
            "AUTH=PLAIN",
        ],
    )
    .await;
    assert!(ok, "curl: {err}");
    let ev = expect_published(&col, "yard", "intrusion", &jpeg).await;
    assert_eq!(ev["category"], "intrusion");
    assert_eq!(ev["device"]["name"], "Yard");
    assert!(
        !topics(&col)
            .iter()
            .any(|t| t.starts_with("camera/porchcam/")),
        "{:?}",
        topics(&col)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_535_and_nothing_published() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    if !curl_available() {
        eprintln!("skipping: curl not installed");
        return;
    }
    let (bridge, addr) = bridge(&broker, &users_toml(), "smtp-535");
    let col = Collector::start(broker.port, "camera/#").await;
    let jpeg = image("overview.jpg");
    let dir = tempfile::tempdir().unwrap();
    let mail = write_mail(dir.path(), "mail.eml", &fixture_mail(&jpeg));
    for mech in ["AUTH=LOGIN", "AUTH=PLAIN"] {
        let (ok, err) = curl(
            addr,
            &mail,
            &["--user", "porchcam:wrong", "--login-options", mech],
        )
        .await;
        assert!(!ok, "{mech}: curl should fail");
        assert!(err.contains("(67)"), "{mech}: login denied expected: {err}");
    }
    // The same over a scripted session: 535, then MAIL without a login is refused (530).
    let mut c = Client::connect(addr).await;
    c.expect("EHLO cam", "250").await;
    c.expect("AUTH PLAIN AHBvcmNoY2FtAHdyb25n", "535").await;
    c.expect("MAIL FROM:<yard-cam@cams.example>", "530").await;
    c.expect("QUIT", "221").await;
    assert!(c.closed().await);
    // Nothing reached MQTT: a good mail afterwards is the first device message.
    let (ok, err) = curl(addr, &mail, &["--user", &format!("porchcam:{PASSWORD}")]).await;
    assert!(ok, "{err}");
    expect_published(&col, "porchcam", "motion", &jpeg).await;
    let events: Vec<_> = col
        .all()
        .into_iter()
        .filter(|m| m.topic.ends_with("/event"))
        .collect();
    assert_eq!(events.len(), 1, "{:?}", topics(&col));
    assert_eq!(
        bridge.warn_lines("auth-failed").len(),
        3,
        "{}",
        bridge.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helo_then_auth_login_and_a_dropped_connection_publishes_nothing() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let (bridge, addr) = bridge(&broker, &users_toml(), "smtp-helo");
    let col = Collector::start(broker.port, "camera/#").await;
    let jpeg = image("overview.jpg");
    let mail = fixture_mail(&jpeg);

    // A connection dropped in the middle of the content.
    let mut c = Client::connect(addr).await;
    c.expect("HELO localhost", "250").await;
    c.expect("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    c.expect(&b64(b"porchcam"), "334 UGFzc3dvcmQ6").await;
    c.expect(&b64(PASSWORD.as_bytes()), "235").await;
    c.expect("MAIL FROM:<dropped@cams.example>", "250").await;
    c.expect("RCPT TO:<alarm@bridge.example>", "250").await;
    c.expect("DATA", "354").await;
    c.send(&stuff(&mail)[..mail.len() / 2]).await;
    drop(c);
    bridge.wait_for_log("ended before the final `.`", T);

    // The field camera's order: EHLO, HELO, then AUTH LOGIN with the user on the line.
    let mut c = Client::connect(addr).await;
    let ehlo = c.expect("EHLO localhost", "250").await;
    assert!(ehlo.contains("250-AUTH LOGIN PLAIN\r\n"), "{ehlo}");
    assert!(ehlo.contains("SIZE 26214400"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.expect("HELO localhost", "250").await;
    c.expect(
        &format!("AUTH LOGIN {}", b64(b"porchcam")),
        "334 UGFzc3dvcmQ6",
    )
    .await;
    c.expect(&b64(PASSWORD.as_bytes()), "235").await;
    c.expect("MAIL FROM: <yard-cam@cams.example>", "250").await;
    c.expect("RCPT TO: <alarm@bridge.example>", "250").await;
    let r = c.data(&mail).await;
    assert!(r.starts_with("250 "), "{r}");
    c.expect("QUIT", "221").await;
    assert!(c.closed().await, "closed after 221");

    let ev = expect_published(&col, "porchcam", "motion", &jpeg).await;
    assert_eq!(ev["provenance"]["path"], "yard-cam@cams.example");
    let events: Vec<_> = col
        .all()
        .into_iter()
        .filter(|m| m.topic.ends_with("/event"))
        .collect();
    assert_eq!(
        events.len(),
        1,
        "only the complete mail: {:?}",
        topics(&col)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_cap_declared_and_actual() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let (bridge, addr) = bridge(&broker, "max_message_size = 4096\n", "smtp-size");
    let col = Collector::start(broker.port, "camera/#").await;
    let big = big_jpeg(20_000);
    let mail = fixture_mail(&big);

    if curl_available() {
        // curl declares SIZE= (RFC 1870) and gets 552 at MAIL FROM.
        let dir = tempfile::tempdir().unwrap();
        let p = write_mail(dir.path(), "big.eml", &mail);
        let (ok, err) = curl(addr, &p, &[]).await;
        assert!(!ok && err.contains("552"), "{err}");
    }
    // Without SIZE=: the content is read and dropped, 552 after the final `.`, and the
    // session goes on.
    let mut c = Client::connect(addr).await;
    let ehlo = c.expect("EHLO cam", "250").await;
    assert!(ehlo.contains("SIZE 4096"), "{ehlo}");
    c.expect("MAIL FROM:<big@cams.example>", "250").await;
    c.expect("RCPT TO:<alarm@bridge.example>", "250").await;
    let r = c.data(&mail).await;
    assert!(r.starts_with("552 "), "{r}");
    // No login configured: the sender names the device; a mail without an image still is
    // an event.
    c.expect("MAIL FROM:<small@cams.example>", "250").await;
    c.expect("RCPT TO:<alarm@bridge.example>", "250").await;
    let r = c
        .data(b"From: small@cams.example\r\nSubject: Person detected\r\n\r\nno picture\r\n")
        .await;
    assert!(r.starts_with("250 "), "{r}");
    let ev = col
        .wait_for(|m| m.topic == "camera/small_cams_example/motion/event", T)
        .await
        .unwrap_or_else(|| panic!("{:?}", topics(&col)))
        .json();
    assert_eq!(ev["images"]["overview"], false);
    assert_eq!(ev["targets"][0]["object"], "person");
    assert!(
        !topics(&col).iter().any(|t| t.contains("big_cams")),
        "{:?}",
        topics(&col)
    );
    let refused = if curl_available() { 2 } else { 1 };
    assert_eq!(
        bridge.warn_lines("message-too-large").len(),
        refused,
        "{}",
        bridge.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_curl() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    if !curl_available() {
        eprintln!("skipping: curl not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let toml = format!(
        "{}[smtp.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        users_toml(),
        cert_file,
        key_file
    );
    let (_bridge, addr) = bridge(&broker, &toml, "smtp-tls");
    let col = Collector::start(broker.port, "camera/#").await;
    let jpeg = image("overview.jpg");
    let mail = write_mail(dir.path(), "mail.eml", &fixture_mail(&jpeg));
    let (ok, err) = curl(
        addr,
        &mail,
        &[
            "--ssl-reqd",
            "--cacert",
            cert_file.to_str().unwrap(),
            "--user",
            &format!("porchcam:{PASSWORD}"),
        ],
    )
    .await;
    assert!(ok, "curl: {err}");
    expect_published(&col, "porchcam", "motion", &jpeg).await;
    // A plain session on the same port is still served (cameras without TLS).
    let mut c = Client::connect(addr).await;
    let ehlo = c.expect("EHLO cam", "250").await;
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
}

/// `../shared/field/12-smtp-auth-login-mail`, if present.
fn field_case() -> Option<PathBuf> {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/field/12-smtp-auth-login-mail");
    if p.join("mail.eml").is_file() {
        Some(p)
    } else {
        eprintln!("SKIP: field case 12 not found at {}", p.display());
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_case_12_every_auth_variant() {
    let Some(dir) = field_case() else {
        return;
    };
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let mail = std::fs::read(dir.join("mail.eml")).unwrap();
    let snapshot = std::fs::read(dir.join("snapshot.jpg")).unwrap();
    let toml = "[[smtp.users]]\nusername = \"porchcam\"\npassword = \"field-only\"\n";
    let (_bridge, addr) = bridge(&broker, toml, "smtp-field12");
    let col = Collector::start(broker.port, "camera/#").await;
    let check = |ev: &serde_json::Value| {
        assert_eq!(ev["category"], "motion");
        assert_eq!(ev["device"]["channel"], 1);
        assert_eq!(
            ev["provenance"]["name"],
            "Motion Detection alarm · Porch · CH1"
        );
        assert_eq!(ev["provenance"]["file"], "CH1_20251201132003.jpg");
        assert_eq!(ev["provenance"]["path"], "porch-cam@cams.example");
    };

    // The transcript: EHLO, AUTH LOGIN with two prompts.
    let mut c = Client::connect(addr).await;
    let ehlo = c.expect("EHLO localhost", "250").await;
    assert!(ehlo.contains("AUTH LOGIN PLAIN"), "{ehlo}");
    c.expect("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    c.expect("cG9yY2hjYW0=", "334 UGFzc3dvcmQ6").await;
    c.expect("ZmllbGQtb25seQ==", "235").await;
    c.expect("MAIL FROM:<porch-cam@cams.example>", "250").await;
    c.expect("RCPT TO:<alarm@bridge.example>", "250").await;
    let r = c.data(&mail).await;
    assert!(r.starts_with("250"), "{r}");
    c.expect("QUIT", "221").await;
    assert!(c.closed().await);
    check(&expect_published(&col, "porchcam", "motion", &snapshot).await);

    // The variants: AUTH PLAIN in one line, AUTH LOGIN <user>, HELO then AUTH LOGIN.
    for (hello, auth) in [
        (
            "EHLO localhost",
            &["AUTH PLAIN cG9yY2hjYW0AcG9yY2hjYW0AZmllbGQtb25seQ=="][..],
        ),
        (
            "EHLO localhost",
            &["AUTH LOGIN cG9yY2hjYW0=", "ZmllbGQtb25seQ=="][..],
        ),
        (
            "HELO localhost",
            &["AUTH LOGIN", "cG9yY2hjYW0=", "ZmllbGQtb25seQ=="][..],
        ),
    ] {
        col.clear();
        let mut c = Client::connect(addr).await;
        c.expect(hello, "250").await;
        let mut last = String::new();
        for l in auth {
            last = c.cmd(l).await;
        }
        assert!(last.starts_with("235"), "{hello} {auth:?}: {last}");
        c.expect("MAIL FROM:<porch-cam@cams.example>", "250").await;
        c.expect("RCPT TO:<alarm@bridge.example>", "250").await;
        assert!(c.data(&mail).await.starts_with("250"));
        c.expect("QUIT", "221").await;
        check(&expect_published(&col, "porchcam", "motion", &snapshot).await);
    }

    // A wrong password: 535.
    let mut c = Client::connect(addr).await;
    c.expect("EHLO localhost", "250").await;
    c.expect(
        &format!("AUTH PLAIN {}", b64(b"porchcam\0porchcam\0nope")),
        "535",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_case_12_with_curl_and_without_credentials() {
    let Some(dir) = field_case() else {
        return;
    };
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    if !curl_available() {
        eprintln!("skipping: curl not installed");
        return;
    }
    let snapshot = std::fs::read(dir.join("snapshot.jpg")).unwrap();
    // No accounts configured: any login is accepted and names the device; no login at all
    // names it by the sender.
    let (_bridge, addr) = bridge(&broker, "", "smtp-field12-open");
    let col = Collector::start(broker.port, "camera/#").await;
    let (ok, err) = curl(
        addr,
        &dir.join("mail.eml"),
        &[
            "--user",
            "porchcam:anything",
            "--login-options",
            "AUTH=LOGIN",
        ],
    )
    .await;
    assert!(ok, "{err}");
    expect_published(&col, "porchcam", "motion", &snapshot).await;
    let (ok, err) = curl(addr, &dir.join("mail.eml"), &[]).await;
    assert!(ok, "{err}");
    expect_published(&col, "yard_cam_cams_example", "motion", &snapshot).await;
}
