//! Secrets never leak: the real `camqtt` binary runs at debug log level against a Mosquitto
//! that requires a password, with Basic auth on the receiver; cameras post with right and wrong
//! credentials; then every captured log line, the `check-config` output and every MQTT message
//! (including the retained `bridge/info`) are scanned for each password.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream as StdTcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::camera::{T, basic, intrusion, post_with};
use common::{Collector, MOSQUITTO, free_port};

/// The broker password, given in the configuration (overrides the URL's).
const MQTT_SECRET: &str = "Mq77-cfg-SECRET";
/// A different password written into the URL, which must not be logged either.
const URL_SECRET: &str = "UrlPw-SECRET-93";
/// The receiver's Basic auth password.
const CAM_SECRET: &str = "Cam-SECRET-pass:word";

struct Broker {
    auth_port: u16,
    open_port: u16,
    _broker: common::ConfiguredMosquitto,
}

/// Mosquitto with a password-protected listener (for the bridge) and an anonymous one (for the
/// test's subscriber).
fn broker() -> Option<Broker> {
    if !Path::new(MOSQUITTO).exists() {
        eprintln!("skipping: {MOSQUITTO} not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let passwd = common::password_file(dir.path(), "bridge", MQTT_SECRET);
    let broker = common::ConfiguredMosquitto::start(dir, 2, |p| {
        format!(
            "per_listener_settings true\npersistence false\nuser root\nlog_dest stderr\n\
             listener {} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
             listener {} 127.0.0.1\nallow_anonymous true\n",
            p[0],
            passwd.display(),
            p[1]
        )
    });
    Some(Broker {
        auth_port: broker.ports[0],
        open_port: broker.ports[1],
        _broker: broker,
    })
}

fn post(mac: &str, authorization: &str) -> Vec<u8> {
    let authorization = format!("Authorization: {authorization}");
    post_with(
        "/API",
        &["Host: x", &authorization, "Connection: close"],
        intrusion(mac).as_bytes(),
    )
}

fn send(port: u16, req: &[u8]) -> String {
    let mut s = StdTcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn assert_clean(what: &str, text: &str) {
    for secret in [MQTT_SECRET, URL_SECRET, CAM_SECRET] {
        assert!(!text.contains(secret), "{what} contains a secret:\n{text}");
    }
    // Nor the Basic token a camera sent.
    let token = basic("cam", CAM_SECRET);
    let token = token.trim_start_matches("Basic ");
    assert!(!text.contains(token), "{what} contains a Basic token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_reach_logs_check_config_or_mqtt() {
    let Some(broker) = broker() else {
        return;
    };
    let col = Collector::start(broker.open_port, "#").await;
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let cfg_path = dir.path().join("camqtt.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[mqtt]\nurl = \"mqtt://bridge:{URL_SECRET}@127.0.0.1:{port}\"\npassword = \"{MQTT_SECRET}\"\n\
             client_id = \"camqtt-secrets-{port}\"\n\
             [viewtron]\nlisten = \"127.0.0.1:{listen}\"\n\
             [viewtron.auth]\nusername = \"cam\"\npassword = \"{CAM_SECRET}\"\n\
             [spool]\ndir = {spool:?}\n",
            port = broker.auth_port,
            spool = dir.path().join("spool").display().to_string(),
        ),
    )
    .unwrap();

    // check-config prints a summary; no secret in it.
    let out = Command::new(env!("CARGO_BIN_EXE_camqtt"))
        .arg("check-config")
        .arg(&cfg_path)
        .output()
        .expect("check-config runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("OK"), "{text}");
    assert!(
        text.contains(&format!("mqtt://bridge:***@127.0.0.1:{}", broker.auth_port)),
        "the broker URL is shown with its password masked: {text}"
    );
    assert_clean("check-config output", &text);

    // And a broken configuration's problem list does not echo them either.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[mqtt]\nurl = \"mqtt://bridge:{URL_SECRET}@127.0.0.1:0\"\npassword = \"{MQTT_SECRET}\"\n\
             [viewtron]\nallow = [\"nope\"]\n[viewtron.auth]\nusername = \"\"\npassword = \"{CAM_SECRET}\"\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_camqtt"))
        .arg("check-config")
        .arg(&bad)
        .output()
        .expect("check-config runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("mqtt.url"), "{text}");
    assert_clean("check-config problems", &text);

    // Run the bridge at debug level and capture everything it logs.
    let log_path = dir.path().join("camqtt.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_camqtt"))
        .args(["run", "--log-level", "debug", "--config"])
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("camqtt runs");
    let online = col
        .wait_payload("camera/bridge/state", "online", T)
        .await
        .is_some();
    let logs = || {
        std::fs::read_to_string(&log_path).unwrap_or_default()
            + &std::fs::read_to_string(dir.path().join("stdout.log")).unwrap_or_default()
    };
    if !online {
        let _ = child.kill();
        panic!("bridge not online; log:\n{}", logs());
    }
    col.wait_for(|m| m.topic == "camera/bridge/info", T)
        .await
        .expect("bridge/info");

    // Wait until the receiver listens, then post right, wrong and garbage credentials.
    let end = Instant::now() + T;
    while StdTcpStream::connect(("127.0.0.1", listen)).is_err() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ok = tokio::task::spawn_blocking(move || {
        let good = send(
            listen,
            &post("58:5B:69:AB:00:01", &basic("cam", CAM_SECRET)),
        );
        let wrong = send(
            listen,
            &post(
                "58:5B:69:AB:00:02",
                &basic("cam", &format!("{CAM_SECRET}x")),
            ),
        );
        let swapped = send(
            listen,
            &post("58:5B:69:AB:00:03", &basic(CAM_SECRET, "cam")),
        );
        (good, wrong, swapped)
    })
    .await
    .unwrap();
    assert!(ok.0.starts_with("HTTP/1.1 200"), "{}", ok.0);
    assert!(ok.1.starts_with("HTTP/1.1 401"), "{}", ok.1);
    assert!(ok.2.starts_with("HTTP/1.1 401"), "{}", ok.2);
    col.wait_for(|m| m.topic == "camera/58_5b_69_ab_00_01/intrusion/event", T)
        .await
        .expect("authenticated event published");

    // Stop it the way an init system does, then scan.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("bridge did not stop on SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    col.wait_payload("camera/bridge/state", "offline", T)
        .await
        .expect("offline on shutdown");

    let log = logs();
    assert!(
        log.contains("DEBUG") || log.contains("debug"),
        "debug logging was on:\n{log}"
    );
    assert!(
        log.contains("wrong-credentials"),
        "the refused camera is logged with its reason:\n{log}"
    );
    assert_clean("the bridge's log", &log);
    let info = col.on("camera/bridge/info");
    assert!(!info.is_empty());
    for m in col.all() {
        assert_clean(&format!("MQTT message on {}", m.topic), &m.text());
    }
}
