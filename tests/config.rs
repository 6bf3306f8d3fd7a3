//! The shipped example configuration and the valid/invalid fixture folders, as whole sets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use camqtt::config::{ConfigError, check_file, load_file, load_str};

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {}", dir.display());
    v
}

#[test]
fn example_config_parses_and_matches_the_defaults_it_documents() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/camqtt.example.toml");
    let c = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.mqtt.base_topic, "camera");
    assert_eq!(c.homeassistant.discovery_prefix, "homeassistant");
    assert_eq!(c.viewtron.listen.port(), 5002);
    assert_eq!(c.viewtron.body_limit, 16 * 1024 * 1024);
    assert_eq!(c.devices.len(), 3);
    assert_eq!(c.off_delays().get("lpr").map(|d| d.as_secs()), Some(10));
    // The documented defaults are the real defaults.
    let d = camqtt::config::Config::default();
    assert_eq!(c.mqtt.max_packet_size, d.mqtt.max_packet_size);
    assert_eq!(c.mqtt.protocol, d.mqtt.protocol);
    assert_eq!(
        c.homeassistant.discovery_settle,
        d.homeassistant.discovery_settle
    );
    assert_eq!(c.viewtron.idle_timeout, d.viewtron.idle_timeout);
    assert_eq!(c.viewtron.offline_after, d.viewtron.offline_after);
    assert_eq!(c.images.retain_device, d.images.retain_device);
    assert_eq!(c.spool.max_bytes, d.spool.max_bytes);
    assert_eq!(c.spool.image_max_age, d.spool.image_max_age);
    assert_eq!(c.spool.dir, d.spool.dir);
    // HTTPS on the receiver is documented, commented out: off by default.
    assert!(c.viewtron.tls.is_none() && d.viewtron.tls.is_none());
    let text = std::fs::read_to_string(&path).unwrap();
    for key in [
        "# [viewtron.tls]",
        "# cert_file",
        "# key_file",
        "# plain_http = true",
    ] {
        assert!(text.contains(key), "example lacks `{key}`");
    }
    // The other sources are documented, commented out: off by default. Uncommented, every
    // key they show is valid (the password file is only read by check-config, not here).
    assert!(c.ftp.listen.is_none() && c.smtp.listen.is_none() && c.poll.is_empty());
    let mut in_block = false;
    let uncommented: String = text
        .lines()
        .map(|l| {
            let header = [
                "# [ftp]",
                "# [smtp]",
                "# [[poll]]",
                "# [[devices]]",
                "# [archive]",
                "# [web]",
            ];
            in_block = header.contains(&l) || (in_block && l.starts_with("# "));
            if in_block {
                l[2..].to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let all =
        camqtt::config::load_str(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert_eq!(all.ftp.listen.map(|a| a.port()), Some(2121));
    assert_eq!(all.smtp.listen.map(|a| a.port()), Some(2525));
    assert_eq!(all.poll.len(), 1);
    assert_eq!(all.poll[0].id, "driveway");
    assert!(
        c.archive.dir.is_none() && c.web.listen.is_none(),
        "off by default"
    );
    assert_eq!(
        all.archive.naming, d.archive.naming,
        "the documented default"
    );
    assert_eq!(all.archive.max_age, d.archive.max_age);
    assert_eq!(all.archive.max_bytes, d.archive.max_bytes);
    assert_eq!(all.web.listen.map(|a| a.port()), Some(8099));
    let porch = all
        .devices
        .iter()
        .find(|d| d.ftp_user.as_deref() == Some("porchcam"));
    assert_eq!(
        porch.and_then(|d| d.expect_every),
        Some(Duration::from_secs(1800))
    );
}

#[test]
fn the_example_before_duration_strings_loads_the_same_configuration() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let now = load_file(&root.join("config/camqtt.example.toml")).unwrap_or_else(|e| panic!("{e}"));
    let old = load_file(&root.join("tests/fixtures/config/valid/example-0.1.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    // Numbers of seconds and strings with units give the same values (the example holds no
    // secret, so `Debug` shows everything).
    assert_eq!(format!("{old:?}"), format!("{now:?}"));
    assert_eq!(now.viewtron.idle_timeout, Duration::from_secs(300));
    assert_eq!(now.spool.max_age, Duration::from_secs(86_400));
}

#[test]
fn durations_as_numbers_and_strings() {
    let f =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/valid/durations.toml");
    let c = load_file(&f).unwrap_or_else(|e| panic!("{e}"));
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    assert_eq!(c.mqtt.keep_alive, s(60));
    assert_eq!(c.homeassistant.forget_after, s(14 * 86_400));
    assert_eq!(c.homeassistant.discovery_settle, ms(750));
    assert_eq!(c.viewtron.header_timeout, s(15));
    assert_eq!(c.viewtron.request_timeout, ms(60_500));
    assert_eq!(c.viewtron.idle_timeout, s(300));
    assert_eq!(c.viewtron.offline_after, s(150));
    assert_eq!(c.viewtron.traject_interval, ms(500));
    assert_eq!(c.spool.max_age, s(86_400));
    assert_eq!(c.spool.image_max_age, s(600));
    assert_eq!(c.off_delays()["lpr"], s(10));
    assert_eq!(c.off_delays()["face"], ms(12_500));
}

#[test]
fn bad_durations_are_rejected_with_their_key_and_line() {
    for (name, path, line) in [
        ("negative-duration.toml", "viewtron.offline_after", 4),
        ("bad-duration-string.toml", "spool.max_age", 3),
    ] {
        let f = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/config/invalid")
            .join(name);
        let Err(ConfigError::Invalid(p)) = load_file(&f) else {
            panic!("{name} accepted")
        };
        assert_eq!(
            (p[0].path.as_str(), p[0].line),
            (path, Some(line)),
            "{name}: {p:?}"
        );
    }
}

#[test]
fn every_valid_fixture_loads() {
    for f in files("tests/fixtures/config/valid") {
        if let Err(e) = load_file(&f) {
            panic!("{}: {e}", f.display());
        }
    }
}

#[test]
fn every_invalid_fixture_fails_with_located_problems() {
    for f in files("tests/fixtures/config/invalid") {
        match load_file(&f) {
            Ok(_) => panic!("{} should be rejected", f.display()),
            Err(ConfigError::Invalid(problems)) => {
                assert!(!problems.is_empty());
                for p in &problems {
                    assert!(
                        p.line.is_some(),
                        "{}: problem without a line: {p}",
                        f.display()
                    );
                }
            }
            Err(e) => panic!("{}: unexpected error {e}", f.display()),
        }
    }
}

#[test]
fn all_problems_are_reported_not_just_the_first() {
    let f =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/invalid/bad-values.toml");
    let Err(ConfigError::Invalid(problems)) = load_file(&f) else {
        panic!("should fail")
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "mqtt.base_topic",
        "mqtt.url",
        "viewtron.offline_after",
        "categories.lpr.off_delay",
        "devices[0]",
        "devices[1].mac",
        "devices[1].id",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
    let line = |path: &str| {
        problems
            .iter()
            .find(|p| p.path == path)
            .and_then(|p| p.line)
    };
    assert_eq!(line("mqtt.base_topic"), Some(2));
    assert_eq!(line("viewtron.offline_after"), Some(6));
    assert_eq!(line("devices[1].mac"), Some(15));
}

/// `check-config` reads the password files `camqtt run` reads: a missing `mqtt.password_file`
/// or `viewtron.auth.password_file` is a problem at its key and line (not "OK").
#[test]
fn check_file_reports_unreadable_password_files() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("camqtt.toml");
    std::fs::write(
        &conf,
        "[mqtt]\nurl = \"mqtt://bridge@127.0.0.1:1883\"\npassword_file = \"/nonexistent/mqtt-password\"\n\n[viewtron.auth]\nusername = \"cam\"\npassword_file = \"/nonexistent/cam-password\"\n",
    )
    .unwrap();
    let Err(ConfigError::Invalid(p)) = check_file(&conf) else {
        panic!("check-config says OK for password files that `camqtt run` cannot read")
    };
    let got: Vec<_> = p.iter().map(|p| (p.path.as_str(), p.line)).collect();
    assert!(got.contains(&("mqtt.password_file", Some(3))), "{p:?}");
    assert!(
        got.contains(&("viewtron.auth.password_file", Some(7))),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|p| p.message.contains("/nonexistent/mqtt-password"))
    );

    // Readable: OK, the secret filled and never shown.
    let secret = dir.path().join("pw");
    std::fs::write(&secret, "pw-from-file-77\n").unwrap();
    std::fs::write(
        &conf,
        format!("[mqtt]\nurl = \"mqtt://bridge@127.0.0.1:1883\"\npassword_file = {secret:?}\n"),
    )
    .unwrap();
    let c = check_file(&conf).expect("readable password file");
    assert!(c.mqtt.password.is_some());
    assert!(!format!("{c:?}").contains("pw-from-file-77"));
}

/// The broker URL's password never appears in `Debug` of the configuration (which logs and
/// error reports may print); the rest of the URL does.
#[test]
fn config_debug_never_shows_the_url_password() {
    let c = load_str("[mqtt]\nurl = \"mqtt://bridge:url-secret@broker:1883\"\n").unwrap();
    let text = format!("{c:?}");
    assert!(!text.contains("url-secret"), "{text}");
    assert!(text.contains("mqtt://bridge:***@broker:1883"), "{text}");
    assert!(!format!("{:?}", c.mqtt).contains("url-secret"));
    assert!(!format!("{:#?}", c.mqtt).contains("url-secret"));
}

/// `viewtron.max_connections` is bounded: a value the receiver cannot hold (its semaphore
/// panics beyond `MAX_PERMITS`) is refused at load with its key and line.
#[test]
fn max_connections_is_bounded() {
    for n in ["0", "65537", "9223372036854775807"] {
        match load_str(&format!("[viewtron]\nmax_connections = {n}\n")) {
            Err(ConfigError::Invalid(p)) => assert!(
                p.iter()
                    .any(|p| p.path == "viewtron.max_connections" && p.line == Some(2)),
                "{n}: {p:?}"
            ),
            Ok(c) => panic!("{n} accepted: {}", c.viewtron.max_connections),
            Err(e) => panic!("{n}: {e}"),
        }
    }
    for n in [1, 512, 65536] {
        let c = load_str(&format!("[viewtron]\nmax_connections = {n}\n")).expect("in range");
        assert_eq!(c.viewtron.max_connections, n);
    }
}

/// `[spool]` is validated like every other section: values that drop every record as soon as
/// it is read (`max_age = 0`), make no segment (`segment_bytes = 0`) or no spool
/// (`max_bytes = 0`), or that are too large to count in milliseconds, are refused with their
/// key and line — by `load_str` and so by `check-config` and `camqtt run`.
#[test]
fn spool_values_that_lose_events_are_refused_with_their_key_and_line() {
    for (toml, key) in [
        ("max_age = 0", "spool.max_age"),
        ("max_age = 59", "spool.max_age"),
        ("max_age = 18446744073709552", "spool.max_age"),
        ("max_age = \"11y\"", "spool.max_age"),
        (
            "max_age = \"1h\"\nimage_max_age = \"2h\"",
            "spool.image_max_age",
        ),
        ("segment_bytes = 0", "spool.segment_bytes"),
        ("segment_bytes = 65535", "spool.segment_bytes"),
        ("segment_bytes = 1073741825", "spool.segment_bytes"),
        ("max_bytes = 0", "spool.max_bytes"),
        ("max_bytes = 1048575", "spool.max_bytes"),
        ("max_bytes = 1099511627777", "spool.max_bytes"),
    ] {
        let src = format!("[spool]\n{toml}\n");
        match load_str(&src) {
            Err(ConfigError::Invalid(p)) => {
                let line = 1 + toml.lines().count();
                assert_eq!(
                    p.iter()
                        .map(|p| (p.path.as_str(), p.line))
                        .collect::<Vec<_>>(),
                    [(key, Some(line))],
                    "{src}"
                );
            }
            other => panic!("{src:?} accepted: {:?}", other.map(|c| c.spool)),
        }
    }
    let f =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/invalid/bad-spool.toml");
    let Err(ConfigError::Invalid(p)) = load_file(&f) else {
        panic!("bad-spool.toml accepted")
    };
    let got: Vec<_> = p.iter().map(|p| (p.path.as_str(), p.line)).collect();
    assert_eq!(
        got,
        [
            ("spool.max_age", Some(3)),
            ("spool.image_max_age", Some(4)),
            ("spool.segment_bytes", Some(5)),
            ("spool.max_bytes", Some(6)),
        ]
    );
}

/// The edges of the `[spool]` ranges are accepted; so is a small `max_bytes` with the default
/// `segment_bytes` (segments then roll at a quarter of `max_bytes`), and a short `max_age`
/// with the default `image_max_age`.
#[test]
fn spool_values_at_the_edges_of_their_ranges_are_accepted() {
    for toml in [
        "max_age = 60\nimage_max_age = 0",
        "max_age = \"10y\"\nimage_max_age = \"10y\"",
        "max_age = 315360000\nimage_max_age = 315360000",
        "max_age = \"5m\"",
        "max_age = \"1h\"\nimage_max_age = \"1h\"",
        "segment_bytes = 65536\nmax_bytes = 1048576",
        "segment_bytes = 1073741824\nmax_bytes = 1099511627776",
        "max_bytes = 16777216",
    ] {
        let src = format!("[spool]\n{toml}\n");
        if let Err(e) = load_str(&src) {
            panic!("{src:?} refused: {e}");
        }
    }
}
