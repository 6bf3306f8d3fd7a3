//! MQTT over TLS against a real Mosquitto: a test CA, server and client certificates made here
//! with rcgen, a broker with a TLS listener (password file or required client certificate) and
//! a plain listener for the test's own subscriber, and `camqtt::start` in-process.
//!
//! Positive: server-authenticated TLS with user/password (the config's password overrides the
//! URL's), mutual TLS, and a `server_name` override. Negative: wrong CA, wrong server name,
//! wrong password, missing client certificate: the bridge is not connected, says so in its
//! log, keeps retrying (the broker sees repeated connection attempts), keeps answering cameras
//! and stops cleanly.

mod common;

use std::net::TcpStream as StdTcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};
use tokio_util::sync::CancellationToken;

use camqtt::config::{self, Config};
use common::bridge::Bridge;
use common::camera::{T, intrusion, post_with, send_close};
use common::{Collector, MOSQUITTO, free_port};

const USER: &str = "bridge";
const PASSWORD: &str = "tls-Pa55word-xyz";

// ---------------------------------------------------------------------------------------------
// Log capture: every test in this binary logs into one buffer; lines are told apart by the
// broker port they name.

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = Capture(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("camqtt=debug,info")
            .with_ansi(false)
            .with_writer(move || w.clone())
            .try_init();
        buf
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Certificates.

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).expect("self-signed CA");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// (certificate PEM, key PEM) for `cn` with `sans`, signed by `ca`.
fn leaf(ca: &Ca, cn: &str, sans: &[&str], eku: ExtendedKeyUsagePurpose) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.extended_key_usages = vec![eku];
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let cert = p.signed_by(&key, &ca.issuer).expect("signed leaf");
    (cert.pem(), key.serialize_pem())
}

/// Every file a test needs, in one temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = ca("camqtt test CA");
        let other = ca("someone else's CA");
        let (srv, srv_key) = leaf(
            &root,
            "test broker",
            &["localhost", "127.0.0.1", "broker.test"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (cli, cli_key) = leaf(
            &root,
            "camqtt-client",
            &["camqtt-client"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let (rogue, rogue_key) = leaf(
            &other,
            "camqtt-client",
            &["camqtt-client"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        for (name, text) in [
            ("ca.pem", root.pem.as_str()),
            ("other-ca.pem", other.pem.as_str()),
            ("server.pem", srv.as_str()),
            ("server.key", srv_key.as_str()),
            ("client.pem", cli.as_str()),
            ("client.key", cli_key.as_str()),
            ("rogue.pem", rogue.as_str()),
            ("rogue.key", rogue_key.as_str()),
        ] {
            std::fs::write(dir.path().join(name), text).expect("write pem");
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

// ---------------------------------------------------------------------------------------------
// A Mosquitto with a TLS listener and a plain one.

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Server certificate only; clients authenticate with the password file.
    Password,
    /// Clients must present a certificate from the test CA (its CN is the user name).
    ClientCert,
}

struct TlsBroker {
    tls_port: u16,
    plain_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TlsBroker {
    fn start(pki: &Pki, mode: Mode) -> Option<TlsBroker> {
        if !Path::new(MOSQUITTO).exists() {
            eprintln!("skipping: {MOSQUITTO} not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let passwd = dir.path().join("passwd");
        if mode == Mode::Password {
            let out = Command::new("mosquitto_passwd")
                .arg("-c")
                .arg("-b")
                .arg(&passwd)
                .arg(USER)
                .arg(PASSWORD)
                .output()
                .expect("mosquitto_passwd (package mosquitto) runs");
            assert!(out.status.success(), "mosquitto_passwd: {out:?}");
        }
        let mut b = TlsBroker {
            tls_port: 0,
            plain_port: 0,
            dir,
            child: None,
        };
        for _ in 0..5 {
            b.tls_port = free_port();
            b.plain_port = free_port();
            let auth = match mode {
                Mode::Password => format!(
                    "require_certificate false\npassword_file {}\n",
                    passwd.display()
                ),
                Mode::ClientCert => {
                    "require_certificate true\nuse_identity_as_username true\n".into()
                }
            };
            let conf = format!(
                "per_listener_settings true\npersistence false\nlog_dest stderr\nlog_type all\n\
                 user root\n\
                 listener {plain} 127.0.0.1\nallow_anonymous true\n\
                 listener {tls} 127.0.0.1\nallow_anonymous false\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n{auth}",
                plain = b.plain_port,
                tls = b.tls_port,
                ca = pki.path("ca.pem").display(),
                cert = pki.path("server.pem").display(),
                key = pki.path("server.key").display(),
            );
            let conf_path = b.dir.path().join("mosquitto.conf");
            std::fs::write(&conf_path, conf).expect("write conf");
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(b.log_path())
                .expect("log");
            b.child = Some(
                Command::new(MOSQUITTO)
                    .arg("-c")
                    .arg(&conf_path)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("spawn mosquitto"),
            );
            if b.wait_listening() {
                return Some(b);
            }
            b.stop();
        }
        panic!("TLS mosquitto did not start; log:\n{}", b.log());
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Connection attempts the broker saw on its TLS port: completed handshakes ("New
    /// connection from … on port N") and failed ones ("Client connection from … failed: <TLS
    /// error>"; only the TLS listener can fail that way). The readiness probe's bare
    /// connect-and-close ("unexpected eof") is not counted.
    fn tls_attempts(&self) -> usize {
        let needle = format!("on port {}", self.tls_port);
        self.log()
            .lines()
            .filter(|l| {
                (l.contains("New connection from") && l.contains(&needle))
                    || (l.contains("Client connection from")
                        && l.contains("failed")
                        && !l.contains("unexpected eof"))
            })
            .count()
    }

    fn wait_listening(&mut self) -> bool {
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return false;
            }
            if StdTcpStream::connect(("127.0.0.1", self.tls_port)).is_ok()
                && StdTcpStream::connect(("127.0.0.1", self.plain_port)).is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// The bridge.

/// The bridge from `toml` (its URL names the TLS broker), logging into the capture.
async fn start_bridge(toml: &str, id: &str) -> Bridge {
    logs();
    Bridge::start_with(
        toml,
        None,
        format!("camqtt-tls-{id}-{}", std::process::id()),
    )
    .await
}

/// Post an intrusion event from `mac`; the camera must get `200` at once.
async fn post(bridge: &Bridge, mac: &str) {
    let request = post_with(
        "/API",
        &["Host: x", "Connection: close"],
        intrusion(mac).as_bytes(),
    );
    let reply = send_close(bridge.addr, &request).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

fn tls_toml(url: &str, extra_mqtt: &str, tls: &str) -> String {
    format!("[mqtt]\nurl = \"{url}\"\n{extra_mqtt}\n[mqtt.tls]\n{tls}\n")
}

fn q(p: PathBuf) -> String {
    format!("{:?}", p.display().to_string())
}

/// The bridge connects over TLS: `bridge/state` online and a post's event arrive at a
/// subscriber on the plain listener.
async fn assert_connected(broker: &TlsBroker, bridge: &Bridge, mac_slug: &str, mac: &str) {
    let col = Collector::start(broker.plain_port, "camera/#").await;
    col.wait_payload("camera/bridge/state", "online", T)
        .await
        .unwrap_or_else(|| panic!("bridge online over TLS; broker log:\n{}", broker.log()));
    post(bridge, mac).await;
    col.wait_for(
        |m| m.topic == format!("camera/{mac_slug}/intrusion/event"),
        T,
    )
    .await
    .expect("event delivered over TLS");
}

/// The bridge is not connected, logs why, retries, and keeps answering cameras.
async fn assert_refused(broker: &TlsBroker, bridge: &Bridge, expect_in_log: &[&str]) {
    let col = Collector::start(broker.plain_port, "camera/#").await;
    // Backoff starts at 250 ms and doubles: 3.5 s gives several attempts.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        col.on("camera/bridge/state").is_empty(),
        "bridge must not be connected; got {:?}",
        col.on("camera/bridge/state")
    );
    let attempts = broker.tls_attempts();
    assert!(
        attempts >= 2,
        "the bridge keeps retrying (saw {attempts}); broker log:\n{}",
        broker.log()
    );
    // Still serving cameras.
    post(bridge, "58:5B:69:EE:00:01").await;
    let port = format!(":{}", broker.tls_port);
    let text = log_text();
    let line = text
        .lines()
        .find(|l| l.contains("MQTT broker unavailable") && l.contains(&port))
        .unwrap_or_else(|| panic!("no 'MQTT broker unavailable' line for {port} in:\n{text}"));
    for needle in expect_in_log {
        assert!(
            line.to_ascii_lowercase()
                .contains(&needle.to_ascii_lowercase()),
            "log line lacks {needle:?}: {line}"
        );
    }
    assert!(!text.contains(PASSWORD), "the password appeared in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_password_connects_and_the_config_password_overrides_the_url() {
    let pki = Pki::new();
    let Some(broker) = TlsBroker::start(&pki, Mode::Password) else {
        return;
    };
    // The URL carries a wrong password; `mqtt.password` must win.
    let toml = tls_toml(
        &format!("mqtts://{USER}:not-it@127.0.0.1:{}", broker.tls_port),
        &format!("password = \"{PASSWORD}\""),
        &format!("ca_file = {}", q(pki.path("ca.pem"))),
    );
    let bridge = start_bridge(&toml, "pw").await;
    assert_connected(&broker, &bridge, "58_5b_69_dd_00_01", "58:5B:69:DD:00:01").await;
    bridge.stop().await;
    assert!(!log_text().contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_and_server_name_override_connect() {
    let pki = Pki::new();
    let Some(broker) = TlsBroker::start(&pki, Mode::ClientCert) else {
        return;
    };
    // `tls.enabled` with an mqtt:// URL, a client certificate, and a server name that only
    // the certificate knows (the TCP connection still goes to 127.0.0.1).
    let toml = tls_toml(
        &format!("mqtt://127.0.0.1:{}", broker.tls_port),
        "",
        &format!(
            "enabled = true\nca_file = {}\ncert_file = {}\nkey_file = {}\nserver_name = \"broker.test\"",
            q(pki.path("ca.pem")),
            q(pki.path("client.pem")),
            q(pki.path("client.key")),
        ),
    );
    let bridge = start_bridge(&toml, "mtls").await;
    assert_connected(&broker, &bridge, "58_5b_69_dd_00_02", "58:5B:69:DD:00:02").await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_is_refused_and_retried() {
    let pki = Pki::new();
    let Some(broker) = TlsBroker::start(&pki, Mode::Password) else {
        return;
    };
    let toml = tls_toml(
        &format!("mqtts://{USER}:{PASSWORD}@localhost:{}", broker.tls_port),
        "",
        &format!("ca_file = {}", q(pki.path("other-ca.pem"))),
    );
    let bridge = start_bridge(&toml, "wrongca").await;
    assert_refused(&broker, &bridge, &["certificate"]).await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_server_name_is_refused_and_retried() {
    let pki = Pki::new();
    let Some(broker) = TlsBroker::start(&pki, Mode::Password) else {
        return;
    };
    let toml = tls_toml(
        &format!("mqtts://{USER}:{PASSWORD}@127.0.0.1:{}", broker.tls_port),
        "",
        &format!(
            "ca_file = {}\nserver_name = \"not-the-broker.test\"",
            q(pki.path("ca.pem"))
        ),
    );
    let bridge = start_bridge(&toml, "wrongname").await;
    assert_refused(&broker, &bridge, &["certificate"]).await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_and_retried() {
    let pki = Pki::new();
    let Some(broker) = TlsBroker::start(&pki, Mode::Password) else {
        return;
    };
    let toml = tls_toml(
        &format!("mqtts://127.0.0.1:{}", broker.tls_port),
        &format!("username = \"{USER}\"\npassword = \"{PASSWORD}-wrong\""),
        &format!("ca_file = {}", q(pki.path("ca.pem"))),
    );
    let bridge = start_bridge(&toml, "wrongpw").await;
    assert_refused(&broker, &bridge, &[]).await;
    assert!(!log_text().contains("-wrong\""), "no password in the log");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_foreign_client_certificate_is_refused() {
    let pki = Pki::new();
    let Some(broker) = TlsBroker::start(&pki, Mode::ClientCert) else {
        return;
    };
    let toml = tls_toml(
        &format!("mqtts://127.0.0.1:{}", broker.tls_port),
        "",
        &format!("ca_file = {}", q(pki.path("ca.pem"))),
    );
    let bridge = start_bridge(&toml, "nocert").await;
    assert_refused(&broker, &bridge, &[]).await;
    bridge.stop().await;

    // A certificate from another CA is no better.
    let before = broker.tls_attempts();
    let toml = tls_toml(
        &format!("mqtts://127.0.0.1:{}", broker.tls_port),
        "",
        &format!(
            "ca_file = {}\ncert_file = {}\nkey_file = {}",
            q(pki.path("ca.pem")),
            q(pki.path("rogue.pem")),
            q(pki.path("rogue.key")),
        ),
    );
    let bridge = start_bridge(&toml, "rogue").await;
    let col = Collector::start(broker.plain_port, "camera/#").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(col.on("camera/bridge/state").is_empty());
    assert!(broker.tls_attempts() > before);
    bridge.stop().await;
}

#[test]
fn unreadable_tls_files_fail_at_start_with_the_file_name() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let toml = tls_toml(
            "mqtts://127.0.0.1:1",
            "",
            "ca_file = \"/nonexistent/camqtt-ca.pem\"",
        );
        let mut cfg: Config = config::load_str(&toml).expect("config");
        cfg.viewtron.listen = "127.0.0.1:0".parse().unwrap();
        let spool = tempfile::tempdir().unwrap();
        cfg.spool.dir = spool.path().to_path_buf();
        let err = match camqtt::start(cfg, CancellationToken::new()).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a missing CA file must fail at start"),
        };
        assert!(err.contains("camqtt-ca.pem"), "{err}");
    });
}
