//! TLS and the Viewtron receiver, over real sockets, with the real `camqtt` binary (its log and
//! its `bridge/info` counters are its own) and a real Mosquitto.
//!
//! - A camera set to `https` posting to the plain-HTTP receiver (issue 7): a ClientHello built
//!   here from RFC 8446, and the shared field capture `07-vt-https-on-plain-port` when present.
//!   No `200`, no success document, closed within 5 s, one warning for two attempts, reason
//!   `tls-on-plain-port` on `bridge/unparsed`, counter `tls_on_plain_port`, and the next
//!   camera is served.
//! - `[viewtron.tls]`: HTTPS with a certificate chain made here (root → intermediate → server),
//!   two posts over one TLS connection (rustls client, and curl when installed), TLS 1.2,
//!   plain HTTP on the same port (served by default, refused with `plain_http = false`),
//!   `/healthz` over both, and failed handshakes (untrusted certificate, garbage, an SSL-era
//!   ClientHello, a stalled handshake) that are counted, warned about once, and disturb no one.
//! - `check-config` and `run` load the certificate and key and name the file on failure.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{
    self, ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};

use common::camera::{self, REPLY, T, intrusion, mac_slug};
use common::process::{BridgeProcess, repo_path};
use common::{Collector, Mosquitto, Msg};

/// The log line of a TLS handshake on the plain port: cause and fix.
const TLS_ON_PLAIN: &str = "is speaking TLS/HTTPS to the plain-HTTP receiver";
/// The log line of plain HTTP on an HTTPS-only port.
const PLAIN_ON_TLS: &str = "is speaking plain HTTP to the HTTPS-only receiver";
/// The log line of a failed handshake.
const HANDSHAKE_FAILED: &str = "TLS handshake with peer 127.0.0.1 failed";

/// How soon a connection that cannot be served must be closed.
const PROMPT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// A TLS ClientHello, byte by byte.

/// `items` as a vector with a 2-byte length (RFC 8446 §3.4), each item 2 bytes.
fn list16(items: &[u16]) -> Vec<u8> {
    let mut v = ((items.len() * 2) as u16).to_be_bytes().to_vec();
    v.extend(items.iter().flat_map(|i| i.to_be_bytes()));
    v
}

/// A ClientHello (RFC 8446 §4.1.2) in a handshake message (§4: type 1, 3-byte length) in a
/// handshake record (§5.1: type 22, `record_version`, 2-byte length).
fn client_hello(
    record_version: [u8; 2],
    legacy_version: [u8; 2],
    cipher_suites: &[u16],
    extensions: &[(u16, Vec<u8>)],
) -> Vec<u8> {
    let mut body = legacy_version.to_vec();
    body.extend((0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11))); // random
    body.push(32); // legacy_session_id<0..32>: 32 bytes (middlebox compatibility mode)
    body.extend([0x5a; 32]);
    body.extend(list16(cipher_suites));
    body.extend([1, 0]); // legacy_compression_methods: null only
    let mut ext = Vec::new();
    for (kind, data) in extensions {
        ext.extend(kind.to_be_bytes());
        ext.extend((data.len() as u16).to_be_bytes());
        ext.extend(data);
    }
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut handshake = vec![1]; // client_hello
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16];
    record.extend(record_version);
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// What a current TLS 1.3 client sends first (record version 0x0301, legacy_version 0x0303).
fn tls13_client_hello() -> Vec<u8> {
    let host = b"camqtt.test";
    let mut sni = ((host.len() + 3) as u16).to_be_bytes().to_vec(); // server_name_list
    sni.push(0); // host_name
    sni.extend((host.len() as u16).to_be_bytes());
    sni.extend(host);
    let mut key_share = 36u16.to_be_bytes().to_vec(); // client_shares
    key_share.extend(0x001du16.to_be_bytes()); // x25519
    key_share.extend(32u16.to_be_bytes());
    key_share.extend((0..32u8).map(|i| i ^ 0x9c));
    client_hello(
        [0x03, 0x01],
        [0x03, 0x03],
        &[0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f],
        &[
            (0, sni),                                // server_name
            (10, list16(&[0x001d, 0x0017])),         // supported_groups
            (13, list16(&[0x0403, 0x0804, 0x0401])), // signature_algorithms
            (43, vec![4, 0x03, 0x04, 0x03, 0x03]),   // supported_versions: 1.3, 1.2
            (51, key_share),                         // key_share
            (
                16,
                vec![0, 9, 8, b'h', b't', b't', b'p', b'/', b'1', b'.', b'1'],
            ), // ALPN
        ],
    )
}

/// An SSL-era ClientHello: TLS 1.0 at most, one RSA-CBC suite. No server of ours speaks it.
fn tls10_client_hello() -> Vec<u8> {
    client_hello([0x03, 0x01], [0x03, 0x01], &[0x002f, 0x000a], &[])
}

#[test]
fn the_client_hello_follows_the_record_layout() {
    let h = tls13_client_hello();
    assert_eq!(&h[..3], &[0x16, 0x03, 0x01]);
    assert_eq!(usize::from(u16::from_be_bytes([h[3], h[4]])), h.len() - 5);
    assert_eq!(h[5], 1, "handshake type client_hello");
    let len = u32::from_be_bytes([0, h[6], h[7], h[8]]) as usize;
    assert_eq!(len, h.len() - 9);
    assert_eq!(&h[9..11], &[0x03, 0x03]);
    assert_eq!(
        camqtt::sources::http_push::sniff_tls(&h),
        camqtt::sources::http_push::TlsSniff::Tls
    );
}

// ---------------------------------------------------------------------------------------------
// Certificates: root CA → intermediate CA → server; and an unrelated CA.

struct Pki {
    dir: tempfile::TempDir,
    /// The root the cameras trust (PEM).
    ca: String,
    /// A CA that signed nothing of ours (PEM).
    other_ca: String,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let root_key = KeyPair::generate().expect("key");
        let root_params = ca_params("camqtt test root");
        let root = root_params.self_signed(&root_key).expect("root");
        let root_issuer = Issuer::new(root_params, root_key);

        let inter_key = KeyPair::generate().expect("key");
        let inter_params = ca_params("camqtt test intermediate");
        let inter = inter_params
            .clone()
            .signed_by(&inter_key, &root_issuer)
            .expect("intermediate");
        let inter_issuer = Issuer::new(inter_params, inter_key);

        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec![
            "camqtt.test".to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "camqtt receiver");
        p.distinguished_name = dn;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let leaf = p
            .signed_by(&key, &inter_issuer)
            .expect("server certificate");

        let other_key = KeyPair::generate().expect("key");
        let other = ca_params("someone else")
            .self_signed(&other_key)
            .expect("other CA");

        let pki = Pki {
            dir,
            ca: root.pem(),
            other_ca: other.pem(),
        };
        for (name, text) in [
            ("fullchain.pem", format!("{}{}", leaf.pem(), inter.pem())),
            ("privkey.pem", key.serialize_pem()),
            ("other-key.pem", other_key.serialize_pem()),
            ("ca.pem", pki.ca.clone()),
            ("other-ca.pem", pki.other_ca.clone()),
        ] {
            std::fs::write(pki.path(name), text).expect("write pem");
        }
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `[viewtron.tls]` section for these files, plus `extra` lines. Without Home
    /// Assistant discovery: a new device's events are not held back for discovery to settle.
    fn toml(&self, extra: &str) -> String {
        format!(
            "[homeassistant]\nenabled = false\n\n[viewtron]\nheader_timeout = 2.0\n\n[viewtron.tls]\ncert_file = {:?}\nkey_file = {:?}\n{extra}\n",
            self.path("fullchain.pem"),
            self.path("privkey.pem")
        )
    }
}

/// A rustls client trusting `ca_pem` (TLS 1.2 and 1.3, or only `versions`).
fn connector(
    ca_pem: &str,
    versions: Option<&[&'static rustls::SupportedProtocolVersion]>,
) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()));
    let builder = match versions {
        Some(v) => builder.with_protocol_versions(v),
        None => builder.with_safe_default_protocol_versions(),
    }
    .expect("protocol versions");
    let mut cfg = builder.with_root_certificates(roots).with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(cfg))
}

async fn tls_connect(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("127.0.0.1").expect("IP server name");
    tokio::time::timeout(T, connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

// ---------------------------------------------------------------------------------------------
// HTTP over any stream.

/// One Content-Length framed response: (status line, head, body).
async fn read_reply<S: AsyncRead + Unpin>(s: &mut S) -> (String, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let end = tokio::time::Instant::now() + T;
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tokio::time::timeout_at(end, s.read(&mut tmp)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&tmp[..n]),
            other => panic!(
                "no reply head: {other:?}, got {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .and_then(|v| v.trim().parse().ok())
        })
        .expect("content-length");
    while buf.len() < head_end + len {
        match tokio::time::timeout_at(end, s.read(&mut tmp)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&tmp[..n]),
            other => panic!("reply body cut: {other:?}"),
        }
    }
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, head, buf[head_end..head_end + len].to_vec())
}

/// Write `request`, read the reply.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    request: &[u8],
) -> (String, String, Vec<u8>) {
    s.write_all(request).await.expect("write");
    s.flush().await.expect("flush");
    read_reply(s).await
}

/// Read until the peer closes (EOF or reset) or `within` passes: (bytes received, when it
/// closed).
async fn read_until_closed<S: AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let t0 = Instant::now();
    let end = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(end, s.read(&mut tmp)).await {
            Err(_) => return (got, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(t0.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&tmp[..n]),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `GET /healthz`.
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: camqtt\r\n\r\n";

/// Wait for the event of `mac`'s intrusion post.
async fn expect_event(col: &Collector, mac: &str, what: &str) -> Msg {
    let topic = format!("camera/{}/intrusion/event", mac_slug(mac));
    col.wait_for(|m| m.topic == topic, T)
        .await
        .unwrap_or_else(|| panic!("{what}: no event on {topic}"))
}

/// The first `bridge/info` whose counters satisfy `pred` (published when a new device is
/// seen, so post from a new device after the counted occurrences).
async fn info_where(
    col: &Collector,
    pred: impl Fn(&serde_json::Value) -> bool,
    what: &str,
) -> serde_json::Value {
    let m = col
        .wait_for(
            |m| m.topic == "camera/bridge/info" && pred(&m.json()["counters"]),
            T,
        )
        .await;
    match m {
        Some(m) => m.json()["counters"].clone(),
        None => {
            let last = col.on("camera/bridge/info").last().map(Msg::json);
            panic!("{what}: no bridge/info with the expected counters; last: {last:?}")
        }
    }
}

/// The `bridge/unparsed` messages so far, as JSON.
fn unparsed(col: &Collector) -> Vec<serde_json::Value> {
    col.on("camera/bridge/unparsed")
        .iter()
        .map(Msg::json)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A TLS client on the plain-HTTP port.

/// Send `hello` twice from 127.0.0.1 (each on a fresh connection, our side left open), then an
/// ordinary camera post; check every fact of field case 07.
async fn tls_on_the_plain_port(hello: &[u8], what: &str) {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let col = Collector::start(broker.port, "camera/#").await;
    let mut bridge = BridgeProcess::start(&broker, "", &format!("camqtt-{what}"));
    col.wait_payload("camera/bridge/state", "online", T)
        .await
        .expect("bridge online");

    // Fact 4: no `200`, no success document; closed within 5 s, though we keep our side open.
    for attempt in 1..=2 {
        let mut s = TcpStream::connect(bridge.addr).await.expect("connect");
        s.write_all(hello).await.expect("write the ClientHello");
        let (got, closed) = read_until_closed(&mut s, PROMPT).await;
        let closed = closed
            .unwrap_or_else(|| panic!("{what} #{attempt}: connection still open after {PROMPT:?}"));
        assert!(
            closed < PROMPT,
            "{what} #{attempt}: closed after {closed:?}"
        );
        assert!(
            !contains(&got, b"200") && !contains(&got, REPLY),
            "{what} #{attempt}: answered {:?}",
            String::from_utf8_lossy(&got)
        );
        // Decided and documented: no HTTP reply at all (it means nothing to a TLS client).
        assert!(got.is_empty(), "{what} #{attempt}: got {got:?}");
    }

    // Fact 1: still running, and the next camera is answered and published.
    let mac = "58:5B:69:07:00:01";
    let mut cam = TcpStream::connect(bridge.addr).await.expect("connect");
    let r = camera::exchange(&mut cam, &camera::post("/API", intrusion(mac).as_bytes())).await;
    assert_eq!(
        (r.status.as_str(), r.body.as_slice()),
        ("HTTP/1.1 200 OK", REPLY),
        "{what}: the ordinary post"
    );
    let ev = expect_event(&col, mac, what).await.json();
    assert_eq!(ev["category"], "intrusion", "{ev}");

    // Fact 3: `bridge/unparsed` says TLS, twice; `bridge/info` counts it under a TLS name.
    let u = col
        .wait_count(|m| m.topic == "camera/bridge/unparsed", 2, T)
        .await;
    assert_eq!(u.len(), 2, "{what}: two unparsed reports");
    for u in unparsed(&col) {
        assert_eq!(u["reason"], "tls-on-plain-port", "{u}");
        assert_eq!(u["peer"], "127.0.0.1", "{u}");
        assert_eq!(u["source"], "viewtron", "{u}");
        assert!(
            u["detail"].as_str().is_some_and(|d| d.contains("TLS")),
            "{u}"
        );
    }
    let counters = info_where(&col, |c| c["tls_on_plain_port"] == 2, what).await;
    assert_eq!(counters["http_requests"], 1, "{counters}");
    assert_eq!(counters["tls_handshake_errors"], 0, "{counters}");

    // Fact 2: one warning for the two attempts, naming the peer, the cause and the fix.
    let lines = bridge.warn_lines(TLS_ON_PLAIN);
    assert_eq!(
        lines.len(),
        1,
        "{what}: warnings {lines:#?}\nlog:\n{}",
        bridge.log()
    );
    let line = &lines[0];
    for want in [
        "peer 127.0.0.1 is speaking TLS/HTTPS to the plain-HTTP receiver",
        "set the camera's HTTP POST protocol to http",
        "[viewtron.tls]",
        "reason=\"tls-on-plain-port\"",
    ] {
        assert!(line.contains(want), "{what}: `{want}` missing in {line}");
    }
    // Not reported as anything else (the old "bad request" / "invalid token" line).
    let log = bridge.log();
    assert!(
        !log.contains("HTTP request refused") && !log.contains("invalid token"),
        "{what}: generic error lines:\n{log}"
    );
    assert!(bridge.is_running(), "{what}: the bridge keeps running");
    assert!(
        bridge
            .terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "{what}: clean stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hello_on_the_plain_port_is_named_counted_and_closed() {
    tls_on_the_plain_port(&tls13_client_hello(), "rfc8446-hello").await;
}

/// The shared field case `07-vt-https-on-plain-port`: its capture, its expected facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_case_07_https_camera_on_the_plain_port() {
    let path = repo_path("../shared/field/07-vt-https-on-plain-port/clienthello.bin");
    let Ok(hello) = std::fs::read(&path) else {
        eprintln!("skipping: {} not present", path.display());
        return;
    };
    assert_eq!(
        &hello[..3],
        &[0x16, 0x03, 0x01],
        "the capture is a TLS record"
    );
    tls_on_the_plain_port(&hello, "field-07").await;
}

// ---------------------------------------------------------------------------------------------
// HTTPS on the receiver.

fn curl_available() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn curl(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .await
        .expect("run curl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receiver_serves_tls_and_plain_http_and_survives_failed_handshakes() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let pki = Pki::new();
    let col = Collector::start(broker.port, "camera/#").await;
    let mut bridge = BridgeProcess::start(&broker, &pki.toml(""), "camqtt-https");
    col.wait_payload("camera/bridge/state", "online", T)
        .await
        .expect("bridge online");
    let addr = bridge.addr;
    let trusted = connector(&pki.ca, None);
    let mut handshake_errors = 0u64;

    // A camera with a persistent HTTPS connection, kept open through everything below.
    let mut cam = tls_connect(addr, &trusted).await.expect("TLS handshake");
    let m1 = "58:5B:69:07:10:01";
    let (status, head, body) =
        exchange(&mut cam, &camera::post("/API", intrusion(m1).as_bytes())).await;
    assert_eq!(
        (status.as_str(), body.as_slice()),
        ("HTTP/1.1 200 OK", REPLY),
        "{head}"
    );
    assert_eq!(body.len(), 126);
    assert!(
        head.to_ascii_lowercase().contains("connection: keep-alive"),
        "{head}"
    );
    expect_event(&col, m1, "first HTTPS post").await;

    // Failed handshakes, each on its own connection; none disturbs the camera above.
    // 1. A client that does not trust the certificate.
    let untrusted = connector(&pki.other_ca, None);
    let e = tls_connect(addr, &untrusted)
        .await
        .expect_err("an untrusted certificate must fail the handshake");
    assert!(e.to_string().contains("certificate"), "{e}");
    handshake_errors += 1;
    // 2. Garbage after the handshake record byte, 3. an SSL-era ClientHello (TLS 1.0, RSA-CBC),
    // 4. a handshake that stalls after 3 bytes (bounded by header_timeout = 2 s).
    for (what, bytes) in [
        (
            "garbage",
            b"\x16\x03\x01\x00\x05hello, not TLS\r\n\r\n".to_vec(),
        ),
        ("tls-1.0 hello", tls10_client_hello()),
        ("stalled", vec![0x16, 0x03, 0x01]),
    ] {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&bytes).await.expect("write");
        let (got, closed) = read_until_closed(&mut s, PROMPT).await;
        assert!(closed.is_some(), "{what}: still open after {PROMPT:?}");
        assert!(
            !contains(&got, REPLY) && !contains(&got, b"HTTP/1.1"),
            "{what}: {got:?}"
        );
        handshake_errors += 1;
    }
    // 5. curl with a CA that did not sign our certificate (when curl is installed).
    let have_curl = curl_available();
    let url = format!("https://127.0.0.1:{}/API", addr.port());
    let other_ca = pki.path("other-ca.pem").display().to_string();
    if have_curl {
        let out = curl(&["--cacert", &other_ca, "--data-binary", "x", &url]).await;
        assert!(
            !out.status.success(),
            "curl trusted a certificate it must not: {out:?}"
        );
        assert!(!contains(&out.stdout, REPLY));
        handshake_errors += 1;
    } else {
        eprintln!("curl not installed: skipping the curl parts (apt-get install curl)");
    }

    // The persistent camera carries on: a second post over the same TLS connection.
    let m2 = "58:5B:69:07:10:02";
    let (status, _, body) =
        exchange(&mut cam, &camera::post("/API", intrusion(m2).as_bytes())).await;
    assert_eq!(
        (status.as_str(), body.as_slice()),
        ("HTTP/1.1 200 OK", REPLY)
    );
    expect_event(&col, m2, "second post on the same TLS connection").await;
    // `/healthz` over TLS.
    let (status, _, body) = exchange(&mut cam, HEALTHZ).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let health: serde_json::Value = serde_json::from_slice(&body).expect("health JSON");
    assert_eq!(health["mqtt_connected"], true, "{health}");

    // One warning line for all the failures from this peer (counted below).
    let lines = bridge.warn_lines(HANDSHAKE_FAILED);
    assert_eq!(
        lines.len(),
        1,
        "warnings {lines:#?}\nlog:\n{}",
        bridge.log()
    );
    assert!(
        lines[0].contains("trust the receiver's certificate"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("reason=\"tls-handshake-failed\""),
        "{}",
        lines[0]
    );

    // A TLS 1.2-only client (older camera firmware).
    let tls12 = connector(&pki.ca, Some(&[&rustls::version::TLS12]));
    let mut old = tls_connect(addr, &tls12).await.expect("TLS 1.2 handshake");
    assert_eq!(
        old.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let m3 = "58:5B:69:07:10:03";
    let (status, _, body) =
        exchange(&mut old, &camera::post("/API", intrusion(m3).as_bytes())).await;
    assert_eq!(
        (status.as_str(), body.as_slice()),
        ("HTTP/1.1 200 OK", REPLY)
    );
    expect_event(&col, m3, "TLS 1.2 post").await;

    // Plain HTTP on the same port (plain_http defaults to true): served as usual.
    let m4 = "58:5B:69:07:10:04";
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    let r = camera::exchange(&mut plain, &camera::post("/API", intrusion(m4).as_bytes())).await;
    assert_eq!(
        (r.status.as_str(), r.body.as_slice()),
        ("HTTP/1.1 200 OK", REPLY)
    );
    expect_event(&col, m4, "plain HTTP on the TLS port").await;
    let r = camera::exchange(&mut plain, HEALTHZ).await;
    assert_eq!(r.status, "HTTP/1.1 200 OK", "plain /healthz");

    // curl, a real TLS client: two posts over one keep-alive connection.
    if have_curl {
        let (m5, m6) = ("58:5B:69:07:10:05", "58:5B:69:07:10:06");
        let (a, b) = (pki.path("a.xml"), pki.path("b.xml"));
        std::fs::write(&a, intrusion(m5)).unwrap();
        std::fs::write(&b, intrusion(m6)).unwrap();
        let ca = pki.path("ca.pem").display().to_string();
        let (a, b) = (format!("@{}", a.display()), format!("@{}", b.display()));
        let w = "|%{http_code}|%{num_connects}\n";
        let one = |data: &str| -> Vec<String> {
            [
                "--cacert",
                &ca,
                "-H",
                "Content-Type: application/xml",
                "--data-binary",
                data,
                "-w",
                w,
                &url,
            ]
            .map(str::to_owned)
            .to_vec()
        };
        let mut args = one(&a);
        args.push("--next".into());
        args.extend(one(&b));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = curl(&args).await;
        assert!(out.status.success(), "curl: {out:?}");
        let expected = [REPLY, b"|200|1\n", REPLY, b"|200|0\n"].concat();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&expected),
            "two 126-byte success documents, the second over the reused connection"
        );
        expect_event(&col, m5, "curl post 1").await;
        expect_event(&col, m6, "curl post 2").await;
        let healthz = format!("https://127.0.0.1:{}/healthz", addr.port());
        let out = curl(&["--cacert", &ca, "-w", "|%{http_code}", &healthz]).await;
        assert!(
            String::from_utf8_lossy(&out.stdout).ends_with("|200"),
            "curl /healthz: {out:?}"
        );
    }

    // Nothing of the above reached bridge/unparsed or broke the first camera's connection.
    assert!(unparsed(&col).is_empty(), "unparsed: {:?}", unparsed(&col));
    let m7 = "58:5B:69:07:10:07";
    let (status, _, _) = exchange(&mut cam, &camera::post("/API", intrusion(m7).as_bytes())).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    expect_event(&col, m7, "third post on the first TLS connection").await;
    // Every failed handshake counted; completed ones: the camera, the TLS 1.2 client, and
    // curl's two connections (the two posts, then /healthz).
    let connections = if have_curl { 4 } else { 2 };
    let counters = info_where(
        &col,
        |c| c["tls_handshake_errors"] == handshake_errors && c["tls_connections"] == connections,
        "handshake counters",
    )
    .await;
    assert_eq!(counters["tls_on_plain_port"], 0, "{counters}");
    assert_eq!(counters["plain_http_on_tls_port"], 0, "{counters}");
    assert!(bridge.warn_lines(TLS_ON_PLAIN).is_empty());
    assert!(bridge.is_running());
    assert!(
        bridge
            .terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "clean stop with a TLS connection open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_only_port_refuses_plain_http_with_400_and_says_why() {
    let Some(broker) = Mosquitto::try_start() else {
        return;
    };
    let pki = Pki::new();
    let col = Collector::start(broker.port, "camera/#").await;
    let bridge = BridgeProcess::start(
        &broker,
        &pki.toml("plain_http = false"),
        "camqtt-https-only",
    );
    col.wait_payload("camera/bridge/state", "online", T)
        .await
        .expect("bridge online");

    for attempt in 1..=2 {
        let mac = format!("58:5B:69:07:20:0{attempt}");
        let mut s = TcpStream::connect(bridge.addr).await.expect("connect");
        let r = camera::exchange(&mut s, &camera::post("/API", intrusion(&mac).as_bytes())).await;
        assert_eq!(r.status, "HTTP/1.1 400 Bad Request", "#{attempt}");
        assert!(
            String::from_utf8_lossy(&r.body).contains("HTTPS only"),
            "{:?}",
            r.body
        );
        assert!(r.head.to_ascii_lowercase().contains("connection: close"));
        let (_, closed) = read_until_closed(&mut s, PROMPT).await;
        assert!(closed.is_some(), "#{attempt}: still open");
    }
    // HTTPS works, and brings a new device (so bridge/info is refreshed).
    let mut cam = tls_connect(bridge.addr, &connector(&pki.ca, None))
        .await
        .expect("TLS handshake");
    let m = "58:5B:69:07:20:10";
    let (status, _, body) =
        exchange(&mut cam, &camera::post("/API", intrusion(m).as_bytes())).await;
    assert_eq!(
        (status.as_str(), body.as_slice()),
        ("HTTP/1.1 200 OK", REPLY)
    );
    expect_event(&col, m, "HTTPS post").await;

    let counters = info_where(&col, |c| c["plain_http_on_tls_port"] == 2, "refusals").await;
    assert_eq!(counters["tls_connections"], 1, "{counters}");
    let u = unparsed(&col);
    assert_eq!(u.len(), 2, "{u:?}");
    assert!(
        u.iter().all(|u| u["reason"] == "plain-http-on-tls-port"),
        "{u:?}"
    );
    // The refused posts were not processed.
    let all = col.all();
    assert!(
        !all.iter()
            .any(|m| m.topic.contains("07_20_01") || m.topic.contains("07_20_02")),
        "a refused plain post was published"
    );
    let lines = bridge.warn_lines(PLAIN_ON_TLS);
    assert_eq!(lines.len(), 1, "{lines:#?}\n{}", bridge.log());
    assert!(
        lines[0].contains("set the camera's HTTP POST protocol to https"),
        "{}",
        lines[0]
    );
}

// ---------------------------------------------------------------------------------------------
// The certificate files at check-config and at start.

fn camqtt(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_camqtt"))
        .env_clear()
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .expect("run camqtt")
}

fn write_config(dir: &Path, name: &str, cert: &Path, key: &Path) -> PathBuf {
    let p = dir.join(name);
    let spool = dir.join("spool");
    std::fs::write(
        &p,
        format!(
            "[viewtron]\nlisten = \"127.0.0.1:0\"\n\n[viewtron.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n\n[spool]\ndir = {spool:?}\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn check_config_and_run_load_the_receiver_certificate() {
    let pki = Pki::new();
    let dir = pki.dir.path();
    let good = write_config(
        dir,
        "good.toml",
        &pki.path("fullchain.pem"),
        &pki.path("privkey.pem"),
    );
    let out = camqtt(&["check-config", good.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("(https and http)"), "{text}");

    let key_text = std::fs::read_to_string(pki.path("other-key.pem")).unwrap();
    let cases = [
        (
            "missing.toml",
            pki.path("nope.pem"),
            pki.path("privkey.pem"),
            "viewtron.tls.cert_file",
            "nope.pem",
        ),
        (
            "mismatch.toml",
            pki.path("fullchain.pem"),
            pki.path("other-key.pem"),
            "viewtron.tls.key_file",
            "other-key.pem",
        ),
        (
            "swapped.toml",
            pki.path("privkey.pem"),
            pki.path("fullchain.pem"),
            "viewtron.tls.cert_file",
            "no PEM certificate",
        ),
    ];
    for (name, cert, key, path, needle) in cases {
        let conf = write_config(dir, name, &cert, &key);
        let out = camqtt(&["check-config", conf.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{name}: accepted\n{text}");
        let line = if path.ends_with("cert_file") { 5 } else { 6 };
        assert!(
            text.contains(&format!("line {line}: {path}")),
            "{name}: {text}"
        );
        assert!(text.contains(needle), "{name}: {text}");
        for secret in key_text.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!text.contains(secret), "{name}: key material in the output");
        }
    }
    // `run` refuses to start with it, naming the file.
    let conf = dir.join("mismatch.toml");
    let out = camqtt(&[
        "run",
        "--config",
        conf.to_str().unwrap(),
        "--mqtt-url",
        "mqtt://127.0.0.1:9",
    ]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("viewtron.tls.key_file") && text.contains("other-key.pem"),
        "{text}"
    );
}
