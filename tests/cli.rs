//! The `camqtt` command line: help, check-config, parse, and the zero-configuration run with
//! the embedded broker.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

fn camqtt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_camqtt"))
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn help_lists_the_commands_and_env_vars() {
    let out = camqtt().arg("--help").output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "run",
        "parse",
        "check-config",
        "--mqtt-url",
        "CAMQTT_MQTT_URL",
        "--listen",
        "CAMQTT_LISTEN",
        "--base-topic",
        "--discovery-prefix",
    ] {
        assert!(text.contains(word), "help lacks {word}:\n{text}");
    }
}

#[test]
fn check_config_ok_and_every_problem_with_its_line() {
    let ok = camqtt()
        .args(["check-config"])
        .arg(fixture("config/valid/full.toml"))
        .output()
        .expect("runs");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(text.contains("OK"));
    assert!(
        !text.contains("p%40ss") && !text.contains("p@ss"),
        "password printed: {text}"
    );

    let bad = camqtt()
        .args(["check-config"])
        .arg(fixture("config/invalid/bad-values.toml"))
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(text.contains("line 2: mqtt.base_topic"), "{text}");
    assert!(text.contains("line 15: devices[1].mac"), "{text}");
    assert!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("line "))
            .count()
            >= 6,
        "{text}"
    );
}

#[test]
fn parse_prints_events_with_image_sizes_and_hashes_never_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg = std::fs::read(fixture("viewtron/images/plate1.jpg")).unwrap();
    use base64::Engine;
    let body = format!(
        "<config version=\"1.7\"><smartType>VEHICE</smartType><currentTime>1790000000000000</currentTime>\
         <listInfo><item><image>1</image><plateNumber>CLI123</plateNumber>\
         <targetImageData><targetBase64Data>{}</targetBase64Data></targetImageData></item></listInfo></config>",
        base64::engine::general_purpose::STANDARD.encode(&jpeg)
    );
    let post = dir.path().join("post.xml");
    std::fs::File::create(&post)
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"\x00\x01 not xml").unwrap();

    let out = camqtt()
        .arg("parse")
        .arg(&post)
        .arg(&junk)
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&text)
        .into_iter()
        .map(|v| v.unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{text}");
    let ev = &docs[0]["events"][0];
    assert_eq!(ev["category"], "lpr");
    assert_eq!(ev["attributes"]["plates"][0]["plate"], "CLI123");
    let img = &ev["images"][0];
    assert_eq!(img["bytes"], jpeg.len());
    let sha: String = Sha256::digest(&jpeg)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(img["sha256"], sha);
    assert!(!text.contains("/9j/"), "image bytes must not be printed");
    assert!(
        docs[1]["error"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{}",
        docs[1]
    );
}

/// `camqtt run` with no broker configured starts the embedded one and publishes to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_config_run_uses_the_embedded_broker() {
    let mqtt_port = common::free_port();
    let http_port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[mqtt]\nembedded_listen = \"127.0.0.1:{mqtt_port}\"\n[spool]\ndir = \"{}\"\n",
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let mut child = camqtt()
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{http_port}"),
            "--config",
        ])
        .arg(&cfg)
        .env_remove("CAMQTT_MQTT_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let mut guard = Kill(child);
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            log2.lock().unwrap().push_str(&line);
            log2.lock().unwrap().push('\n');
        }
    });
    let up = async {
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", http_port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), up)
        .await
        .expect("receiver up");
    let col = common::Collector::start(mqtt_port, "camera/#").await;
    col.wait_payload("camera/bridge/state", "online", Duration::from_secs(10))
        .await
        .expect("bridge online on embedded broker");
    assert!(
        log.lock().unwrap().contains("embedded"),
        "log says so: {}",
        log.lock().unwrap()
    );
    // stderr is a pipe, not a terminal: plain key=value lines, no colour codes.
    {
        let log = log.lock().unwrap();
        assert!(
            !log.contains('\u{1b}'),
            "ANSI escapes in a piped log:\n{log}"
        );
        assert!(
            log.lines()
                .any(|l| l.contains(" INFO ") && l.contains("broker=")),
            "{log}"
        );
    }

    // The Docker HEALTHCHECK command: receiver up, broker connected → exit 0 with the JSON.
    let health = camqtt()
        .arg("healthcheck")
        .env("CAMQTT_LISTEN", format!("0.0.0.0:{http_port}"))
        .output()
        .expect("healthcheck runs");
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&health.stdout).expect("healthz JSON");
    assert_eq!(report["mqtt_connected"], true);
    assert_eq!(report["receiver"], "up");
    let down = camqtt()
        .args([
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{}", common::free_port()),
        ])
        .output()
        .unwrap();
    assert!(
        !down.status.success(),
        "nothing listening must be unhealthy"
    );

    // SIGTERM → offline and exit 0.
    let pid = guard.0.id();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let s = guard.0.wait();
        (s, guard)
    })
    .await
    .unwrap();
    assert!(status.0.expect("wait").success());
}
