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

/// The sources' own password files (`[[ftp.users]]`, `[[smtp.users]]`, `[[poll]]`) are read by
/// `check-config` too: a missing one is a problem with its line, never "OK" followed by a
/// `run` that fails.
#[test]
fn check_config_reads_the_sources_password_files() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("camqtt.toml");
    std::fs::write(
        &conf,
        "[ftp]\nlisten = \"127.0.0.1:0\"\nrequire_password = true\n[[ftp.users]]\nusername = \"porch\"\npassword_file = \"/nonexistent/ftp-pw\"\n\n\
         [smtp]\nlisten = \"127.0.0.1:0\"\n[[smtp.users]]\nusername = \"mail\"\npassword_file = \"/nonexistent/smtp-pw\"\n\n\
         [[poll]]\nid = \"gate\"\nurl = \"http://192.0.2.1/snapshot.jpg\"\nusername = \"admin\"\npassword_file = \"/nonexistent/poll-pw\"\n",
    )
    .unwrap();
    let out = camqtt()
        .arg("check-config")
        .arg(&conf)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for (line, key, file) in [
        (6, "ftp.users[0].password_file", "/nonexistent/ftp-pw"),
        (12, "smtp.users[0].password_file", "/nonexistent/smtp-pw"),
        (18, "poll[0].password_file", "/nonexistent/poll-pw"),
    ] {
        assert!(
            text.contains(&format!("line {line}: {key}")),
            "{key}: {text}"
        );
        assert!(text.contains(file), "{text}");
    }
}

/// `check-config` reads the secrets the way `run` does: a `*_FILE` variable or a
/// `password_file` that cannot be read is a problem (with its key, and its line when the key
/// is in the file), not "OK"; a readable one is fine and never printed.
#[test]
fn check_config_reads_the_password_files_like_run() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("camqtt.toml");
    let check = |env: &[(&str, &str)]| {
        let mut cmd = camqtt();
        cmd.arg("check-config").arg(&conf);
        for var in [
            "CAMQTT_MQTT_URL",
            "CAMQTT_MQTT_URL_FILE",
            "CAMQTT_MQTT_PASSWORD",
            "CAMQTT_MQTT_PASSWORD_FILE",
            "CAMQTT_VIEWTRON_PASSWORD",
            "CAMQTT_VIEWTRON_PASSWORD_FILE",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    std::fs::write(
        &conf,
        "[mqtt]\nurl = \"mqtt://bridge@127.0.0.1:1883\"\npassword_file = \"/nonexistent/mqtt-pw\"\n\n[viewtron.auth]\nusername = \"cam\"\npassword_file = \"/nonexistent/cam-pw\"\n",
    )
    .unwrap();
    let (code, text) = check(&[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("line 3: mqtt.password_file"), "{text}");
    assert!(
        text.contains("line 7: viewtron.auth.password_file"),
        "{text}"
    );
    assert!(text.contains("/nonexistent/mqtt-pw"), "{text}");

    // A variable naming a missing file: the key it fills and the variable, no line.
    std::fs::write(&conf, "[mqtt]\nurl = \"mqtt://bridge@127.0.0.1:1883\"\n").unwrap();
    let (code, text) = check(&[("CAMQTT_MQTT_PASSWORD_FILE", "/nonexistent/env-pw")]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(
            "  mqtt.password: CAMQTT_MQTT_PASSWORD_FILE: cannot read /nonexistent/env-pw"
        ),
        "{text}"
    );

    // Readable files: OK, and the secrets are not printed.
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "file-pw-secret-31\n").unwrap();
    std::fs::write(
        &conf,
        format!(
            "[mqtt]\nurl = \"mqtt://bridge:url-pw-secret-32@127.0.0.1:1883\"\npassword_file = {pw:?}\n\n[viewtron.auth]\nusername = \"cam\"\npassword_file = {pw:?}\n"
        ),
    )
    .unwrap();
    let (code, text) = check(&[("CAMQTT_VIEWTRON_PASSWORD_FILE", pw.to_str().unwrap())]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("OK"), "{text}");
    assert!(
        !text.contains("secret-31") && !text.contains("secret-32"),
        "{text}"
    );
}

/// A reader that goes away (`camqtt check-config file | head -1`) ends the output quietly:
/// no "failed printing to stdout" panic, the command's own exit code.
#[test]
fn output_into_a_closed_pipe_is_not_a_panic() {
    let viewtron = fixture("viewtron");
    let post = std::fs::read_dir(&viewtron)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "xml"))
        .expect("a captured post");
    for (args, code) in [
        (
            vec![
                "check-config".into(),
                fixture("config/valid/full.toml").into_os_string(),
            ],
            0,
        ),
        (
            vec![
                "check-config".into(),
                fixture("config/invalid/bad-values.toml").into_os_string(),
            ],
            1,
        ),
        (vec!["parse".into(), post.into_os_string()], 0),
    ] {
        // The reading end is closed before the command writes a byte: every write fails with
        // EPIPE (Rust programs ignore SIGPIPE).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = camqtt()
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    }
}

/// `camqtt -c file healthcheck` asks the receiver where the file's `viewtron.listen` says.
#[test]
fn healthcheck_asks_the_listen_address_of_the_config_file() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::Read;
        let (mut s, _) = listener.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        let body = br#"{"receiver":"up","mqtt_connected":true}"#;
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(body);
        String::from_utf8_lossy(&req).into_owned()
    });
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("camqtt.toml");
    // An unspecified address is asked on the loopback.
    std::fs::write(&conf, format!("[viewtron]\nlisten = \"0.0.0.0:{port}\"\n")).unwrap();
    let out = camqtt()
        .arg("-c")
        .arg(&conf)
        .args(["healthcheck", "--timeout", "5"])
        .env_remove("CAMQTT_LISTEN")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let req = server.join().unwrap();
    assert!(req.starts_with("GET /healthz "), "{req}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("mqtt_connected"));
}

/// The embedded broker's port is taken: one clear line that says so once and names the two
/// ways out (`[mqtt] url`, `mqtt.embedded_listen`); the bridge does not start.
#[test]
fn embedded_broker_port_taken_is_one_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("camqtt.toml");
    std::fs::write(
        &conf,
        format!(
            "[mqtt]\nembedded_listen = \"127.0.0.1:{port}\"\n[viewtron]\nlisten = \"127.0.0.1:{}\"\n[spool]\ndir = {:?}\n",
            common::free_port(),
            dir.path().join("spool")
        ),
    )
    .unwrap();
    let mut child = camqtt()
        .args(["run", "--config"])
        .arg(&conf)
        .env_remove("CAMQTT_MQTT_URL")
        .env_remove("CAMQTT_LISTEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("camqtt run kept running with its broker port taken");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("camqtt: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(
        line.contains("[mqtt] url") && line.contains("mqtt.embedded_listen"),
        "{line}"
    );
    // The operating system's text for the cause ("Address already in use"), once.
    let os = std::net::TcpListener::bind(("127.0.0.1", port))
        .unwrap_err()
        .to_string();
    let cause = os.split(" (os error").next().unwrap_or(&os);
    assert_eq!(line.matches(cause).count(), 1, "{cause}: {line}");
    drop(taken);
}
