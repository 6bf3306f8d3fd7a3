//! The whole configuration: a TOML file, overridden by environment variables and the command
//! line (both handled by clap in `main.rs`, applied with [`Overrides`]).
//!
//! Each component owns its section type, defined in its own module, and the file deserialises
//! straight into it (`deny_unknown_fields`, documented defaults); each section validates itself.
//! This module only composes them:
//!
//! | section | type | owner |
//! |---|---|---|
//! | `[mqtt]` (with `[mqtt.tls]`) | [`MqttSection`] | [`crate::sinks::mqtt::config`] |
//! | `[homeassistant]` | [`HomeAssistantSection`] | [`crate::sinks::mqtt::config`] |
//! | `[images]` | [`ImageConfig`] | [`crate::sinks::mqtt::config`] |
//! | `[viewtron]` (with `auth`, `tls`) | [`ViewtronConfig`] | [`crate::sources::viewtron::config`] |
//! | `[spool]` | [`SpoolConfig`] | [`crate::spool`] |
//! | `[categories.<name>]`, `[[devices]]` | [`CategorySection`], [`DeviceSection`] | the pipeline ([`crate::pipeline::config`]) |
//! | `[archive]` | [`crate::sinks::archive::ArchiveConfig`] | [`crate::sinks::archive`] |
//! | `[web]` (with `[web.auth]`) | [`crate::web::WebConfig`] | [`crate::web`] |
//! | `[detector]` (with `[detector.category.<name>]`) | [`crate::detect::DetectorConfig`] | [`crate::detect`] |
//!
//! Here: parsing with line numbers for `check-config` ([`load_str`], [`load_file`],
//! [`check_file`], [`locate`]), secrets from the environment and `*_FILE`s
//! ([`Config::resolve_secrets`], [`secret`]), and the shared helpers the sections use
//! ([`Problem`], [`duration`], [`secret`]).
//!
//! Parsing is strict; [`Config::validate`] collects every semantic problem instead of stopping
//! at the first, and [`load_str`] reports each with its line.

pub mod duration;
mod load;
pub mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::event::Category;
pub use crate::pipeline::config::{CategorySection, DeviceSection};
pub use crate::sinks::mqtt::config::{
    DEFAULT_EMBEDDED_BROKER, HomeAssistantSection, ImageConfig, MqttSection,
};
pub use crate::sources::viewtron::config::{DEFAULT_LISTEN, ViewtronConfig};
pub use crate::spool::SpoolConfig;
pub use load::{ConfigError, Problem, check_file, load_file, load_str, locate};

/// The whole configuration: one field per section, each of its component's type. An empty
/// file is the documented defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Broker connection and topic root.
    pub mqtt: MqttSection,
    /// Home Assistant discovery.
    pub homeassistant: HomeAssistantSection,
    /// Image topics.
    pub images: ImageConfig,
    /// The Viewtron / TVT HTTP push receiver.
    pub viewtron: ViewtronConfig,
    /// The FTP upload source (`[ftp]`), off unless `listen` is set.
    pub ftp: crate::sources::ftp::FtpConfig,
    /// The SMTP mail source (`[smtp]`), off unless `listen` is set.
    pub smtp: crate::sources::smtp::SmtpConfig,
    /// Snapshot URLs to poll (`[[poll]]`).
    pub poll: Vec<crate::sources::poll::PollConfig>,
    /// The durable spool between the pipeline and the MQTT sink.
    pub spool: SpoolConfig,
    /// Per-category settings, keyed by category name (`lpr`, `intrusion`, ...).
    pub categories: BTreeMap<String, CategorySection>,
    /// Friendly names and ids per device.
    pub devices: Vec<DeviceSection>,
    /// The archive of pictures and event logs on disk (`[archive]`), off unless `dir` is set.
    pub archive: crate::sinks::archive::ArchiveConfig,
    /// The web page, API and metrics (`[web]`), off unless `listen` is set.
    pub web: crate::web::WebConfig,
    /// The object detector pictures are handed to (`[detector]`), off unless `url` is set.
    pub detector: crate::detect::DetectorConfig,
}

/// Values from the command line / environment that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<SocketAddr>,
    /// `--mqtt-url` (repeatable; each value may itself be a comma-separated list of URLs).
    /// `None`: not given.
    pub mqtt_url: Option<Vec<String>>,
    /// `--base-topic`
    pub base_topic: Option<String>,
    /// `--discovery-prefix`
    pub discovery_prefix: Option<String>,
    /// `--client-id`
    pub client_id: Option<String>,
    /// `--ftp-listen`
    pub ftp_listen: Option<SocketAddr>,
    /// `--smtp-listen`
    pub smtp_listen: Option<SocketAddr>,
    /// `--web-listen`
    pub web_listen: Option<SocketAddr>,
    /// `--archive-dir`
    pub archive_dir: Option<std::path::PathBuf>,
    /// `--detector-url`
    pub detector_url: Option<String>,
}

impl Config {
    /// Apply command-line / environment overrides. `--mqtt-url` replaces the file's URLs
    /// ([`crate::sinks::mqtt::config::split_url_list`] on each value); an empty one clears
    /// them (the embedded broker).
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(listen) = o.listen {
            self.viewtron.listen = listen;
        }
        if let Some(urls) = &o.mqtt_url {
            self.mqtt.url = urls
                .iter()
                .flat_map(|u| crate::sinks::mqtt::config::split_url_list(u))
                .collect();
        }
        if let Some(t) = &o.base_topic {
            self.mqtt.base_topic = t.clone();
        }
        if let Some(p) = &o.discovery_prefix {
            self.homeassistant.discovery_prefix = p.clone();
        }
        if let Some(id) = &o.client_id {
            self.mqtt.client_id = Some(id.clone());
        }
        if let Some(a) = o.ftp_listen {
            self.ftp.listen = Some(a);
        }
        if let Some(a) = o.smtp_listen {
            self.smtp.listen = Some(a);
        }
        if let Some(a) = o.web_listen {
            self.web.listen = Some(a);
        }
        if let Some(d) = &o.archive_dir {
            self.archive.dir = Some(d.clone());
        }
        if let Some(u) = &o.detector_url {
            self.detector.url = (!u.trim().is_empty()).then(|| u.clone());
        }
    }

    /// Every semantic problem of every section, not just the first (each section's own
    /// `validate`). No I/O: the files the configuration names are [`Config::check_files`].
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = self.mqtt.validate();
        problems.extend(self.homeassistant.validate());
        problems.extend(self.viewtron.validate());
        problems.extend(self.ftp.validate());
        problems.extend(self.smtp.validate());
        problems.extend(crate::sources::poll::PollConfig::validate_all(&self.poll));
        problems.extend(self.spool.validate());
        problems.extend(crate::pipeline::config::check_categories(&self.categories));
        problems.extend(crate::sinks::mqtt::config::check_off_delays(
            self.categories
                .iter()
                .map(|(name, c)| (name.as_str(), c.off_delay)),
        ));
        problems.extend(crate::pipeline::config::check_devices(&self.devices));
        problems.extend(self.archive.validate());
        problems.extend(self.web.validate());
        problems.extend(self.detector.validate());
        for (i, d) in self.devices.iter().enumerate() {
            if let Some(o) = &d.detect {
                problems.extend(crate::detect::config::check_override(
                    &format!("devices[{i}].detect"),
                    o,
                ));
            }
        }
        problems
    }

    /// Problems with the files the configuration names, found by loading them the way
    /// [`crate::start`] does: the receiver's TLS certificate and key (`viewtron.tls`) and the
    /// broker's CA and client certificate (`mqtt.tls`). Used by `check-config` (after
    /// [`Config::resolve_secrets`], which reads the password files); [`Config::validate`]
    /// itself does no I/O. Messages name the file, never its contents.
    pub fn check_files(&self) -> Vec<Problem> {
        let mut problems = self.viewtron.check_files();
        if self.ftp.listen.is_some() {
            problems.extend(self.ftp.logins().err());
        }
        problems.extend(self.smtp.check_files());
        problems.extend(self.mqtt.brokers().err());
        if self.web.listen.is_some() {
            problems.extend(self.web.access().err());
        }
        problems
    }

    /// Is this category published (`[categories.<name>] enabled`, default yes)?
    pub fn category_enabled(&self, category: &Category) -> bool {
        self.categories
            .get(category.as_str())
            .is_none_or(|c| c.enabled)
    }

    /// Configured off delays (`[categories.<name>] off_delay`) by category name.
    pub fn off_delays(&self) -> BTreeMap<String, Duration> {
        self.categories
            .iter()
            .filter_map(|(k, c)| c.off_delay.map(|d| (k.clone(), d)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use secrecy::ExposeSecret as _;

    use super::*;
    use crate::event::normalise_mac;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = load_str("").expect("valid");
        assert_eq!(c.mqtt.base_topic, "camera");
        assert_eq!(c.viewtron.listen.port(), 5002);
        assert_eq!(c.viewtron.body_limit, 16 * 1024 * 1024);
        assert!(c.mqtt.url.is_empty());
    }

    #[test]
    fn every_problem_with_its_line() {
        let src = "[mqtt]\nbase_topic = \"a/#\"\n\n[categories.bogus]\noff_delay = 3\n\n[[devices]]\nmac = \"zz\"\nid = \"Bad Id\"\n";
        let Err(ConfigError::Invalid(problems)) = load_str(src) else {
            panic!("should fail")
        };
        let lines: Vec<(String, Option<usize>)> =
            problems.iter().map(|p| (p.path.clone(), p.line)).collect();
        assert!(
            lines.contains(&("mqtt.base_topic".into(), Some(2))),
            "{lines:?}"
        );
        assert!(
            lines.contains(&("categories.bogus".into(), Some(4))),
            "{lines:?}"
        );
        assert!(
            lines.contains(&("devices[0].mac".into(), Some(8))),
            "{lines:?}"
        );
        assert!(
            lines.contains(&("devices[0].id".into(), Some(9))),
            "{lines:?}"
        );
    }

    #[test]
    fn devices_match_by_source_handles_and_sources_are_off_by_default() {
        let c = load_str("").expect("valid");
        assert!(c.ftp.listen.is_none() && c.smtp.listen.is_none() && c.poll.is_empty());
        let c = load_str(
            "[ftp]\nlisten = \"0.0.0.0:2121\"\n\n[[devices]]\nftp_user = \"porch\"\nexpect_every = \"30m\"\n\n[[devices]]\nsmtp_to = \"cam@example.com\"\n",
        )
        .expect("valid");
        assert_eq!(c.ftp.listen.map(|a| a.port()), Some(2121));
        assert_eq!(c.devices[0].ftp_user.as_deref(), Some("porch"));
        assert_eq!(c.devices[0].expect_every, Some(Duration::from_secs(1800)));
        let Err(ConfigError::Invalid(p)) = load_str(
            "[[devices]]\nname = \"x\"\n\n[[devices]]\nsmtp_user = \"\"\nexpect_every = \"8 days\"\n",
        ) else {
            panic!("should fail")
        };
        let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "devices[0]",
                "devices[1].smtp_user",
                "devices[1].expect_every"
            ]
        );
        assert!(p[0].message.contains("ftp_user"), "{}", p[0].message);
    }

    #[test]
    fn unknown_key_and_syntax_errors_have_lines() {
        let Err(ConfigError::Invalid(p)) = load_str("[mqtt]\nbase_topik = \"x\"\n") else {
            panic!()
        };
        assert_eq!(p[0].line, Some(2));
        assert!(p[0].message.contains("base_topik"), "{}", p[0].message);
        let Err(ConfigError::Invalid(p)) = load_str("[mqtt\nx=1\n") else {
            panic!()
        };
        assert_eq!(p[0].line, Some(1));
    }

    #[test]
    fn secrets_from_env_and_files() {
        let mut c = load_str("[mqtt]\npassword_file = \"/run/secrets/mqtt\"\n[viewtron.auth]\nusername = \"cam\"\npassword_file = \"/run/secrets/cam\"\n").expect("valid");
        let env = |k: &str| match k {
            "CAMQTT_MQTT_URL_FILE" => Some("/run/secrets/url".to_string()),
            "CAMQTT_MQTT_USERNAME" => Some("bridge".to_string()),
            _ => None,
        };
        let read = |p: &Path| match p.to_str() {
            Some("/run/secrets/url") => {
                Ok("mqtt://broker:1883, mqtt://broker-2:1883\n".to_string())
            }
            Some("/run/secrets/mqtt") => Ok("s3cret\n".to_string()),
            Some("/run/secrets/cam") => Ok("campass".to_string()),
            _ => Err(std::io::Error::other("missing")),
        };
        assert!(c.resolve_secrets(&env, &read).is_empty());
        assert_eq!(c.mqtt.url, ["mqtt://broker:1883", "mqtt://broker-2:1883"]);
        assert_eq!(c.mqtt.username.as_deref(), Some("bridge"));
        assert_eq!(
            c.mqtt.password.as_ref().map(|p| p.expose_secret()),
            Some("s3cret")
        );
        assert_eq!(
            c.viewtron
                .auth
                .as_ref()
                .and_then(|a| a.password.as_ref())
                .map(|p| p.expose_secret()),
            Some("campass")
        );
        assert_eq!(
            format!("{:?}", c.mqtt.password),
            "Some(SecretBox<str>([REDACTED]))"
        );
        assert!(!format!("{c:?}").contains("s3cret") && !format!("{c:?}").contains("campass"));

        let mut c = Config::default();
        let env = |k: &str| (k == "CAMQTT_MQTT_PASSWORD_FILE").then(|| "/nope".to_string());
        let problems = c.resolve_secrets(&env, &read);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("CAMQTT_MQTT_PASSWORD_FILE"));
    }

    #[test]
    fn receiver_tls_section() {
        let c = load_str(
            "[viewtron.tls]\ncert_file = \"/ssl/fullchain.pem\"\nkey_file = \"/ssl/privkey.pem\"\n",
        )
        .expect("valid");
        let t = c.viewtron.tls.as_ref().expect("tls on");
        assert_eq!(t.cert_file, PathBuf::from("/ssl/fullchain.pem"));
        assert_eq!(t.key_file, PathBuf::from("/ssl/privkey.pem"));
        assert!(t.plain_http, "plain HTTP is served too by default");
        assert!(Config::default().viewtron.tls.is_none());
        // Both files are required; unknown keys and empty paths are problems with lines.
        let Err(ConfigError::Invalid(p)) =
            load_str("[viewtron.tls]\ncert_file = \"/ssl/fullchain.pem\"\n")
        else {
            panic!("key_file missing")
        };
        assert!(p[0].message.contains("key_file"), "{p:?}");
        let Err(ConfigError::Invalid(p)) =
            load_str("[viewtron.tls]\ncert_file = \"a\"\nkey_file = \"b\"\nplain_https = false\n")
        else {
            panic!("unknown key")
        };
        assert_eq!(p[0].line, Some(4), "{p:?}");
        let Err(ConfigError::Invalid(p)) =
            load_str("[viewtron.tls]\ncert_file = \"\"\nkey_file = \"b\"\n")
        else {
            panic!("empty path")
        };
        assert_eq!(
            (p[0].path.as_str(), p[0].line),
            ("viewtron.tls.cert_file", Some(2))
        );
    }

    #[test]
    fn check_file_loads_the_receiver_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("camqtt.toml");
        let missing = dir.path().join("nope.pem");
        std::fs::write(
            &conf,
            format!(
                "[viewtron]\nlisten = \"127.0.0.1:5002\"\n\n[viewtron.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
                missing, missing
            ),
        )
        .unwrap();
        // `load_file` does no I/O beyond the configuration itself ...
        assert!(load_file(&conf).is_ok());
        // ... `check_file` loads the certificate, names the key, the file and the line.
        let Err(ConfigError::Invalid(p)) = check_file(&conf) else {
            panic!("missing certificate accepted")
        };
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].path, "viewtron.tls.cert_file");
        assert_eq!(p[0].line, Some(5));
        assert!(p[0].message.contains("nope.pem"), "{}", p[0]);
    }

    #[test]
    fn a_mistyped_secret_is_not_echoed() {
        let Err(ConfigError::Invalid(p)) = load_str("[mqtt]\npassword = 987654321\n") else {
            panic!("should fail")
        };
        let text = format!("{p:?}");
        assert!(!text.contains("987654321"), "{text}");
        assert_eq!(p[0].line, Some(2));
    }

    #[test]
    fn overrides_win() {
        let mut c = load_str("[mqtt]\nurl = \"mqtt://a\"\n").expect("valid");
        c.apply(&Overrides {
            mqtt_url: Some(vec!["mqtt://b:1884".into()]),
            base_topic: Some("cams".into()),
            ..Default::default()
        });
        assert_eq!(c.mqtt.url, ["mqtt://b:1884"]);
        assert_eq!(c.mqtt.base_topic, "cams");
        // `--mqtt-url` repeated, each value possibly a comma-separated list; "" clears.
        c.apply(&Overrides {
            mqtt_url: Some(vec!["mqtt://n1,mqtt://n2".into(), "mqtt://n3".into()]),
            ..Default::default()
        });
        assert_eq!(c.mqtt.url, ["mqtt://n1", "mqtt://n2", "mqtt://n3"]);
        c.apply(&Overrides {
            mqtt_url: Some(vec![String::new()]),
            ..Default::default()
        });
        assert!(c.mqtt.url.is_empty());
    }

    #[test]
    fn durations_as_seconds_or_strings() {
        let c = load_str(
            "[mqtt]\nkeep_alive = \"1m\"\n[homeassistant]\ndiscovery_settle = \"500ms\"\nforget_after = 7\n\
             [viewtron]\nheader_timeout = 30\nrequest_timeout = 30.5\nidle_timeout = \"30s\"\noffline_after = \"1m 30s\"\n\
             [spool]\nmax_age = \"1day\"\nimage_max_age = 600.0\n[categories.lpr]\noff_delay = \"2.5s\"\n",
        )
        .expect("valid");
        let s = Duration::from_secs;
        assert_eq!(c.mqtt.keep_alive, s(60));
        assert_eq!(c.homeassistant.discovery_settle, Duration::from_millis(500));
        assert_eq!(c.homeassistant.forget_after, s(7 * 86_400));
        assert_eq!(c.viewtron.header_timeout, s(30));
        assert_eq!(c.viewtron.request_timeout, Duration::from_millis(30_500));
        assert_eq!(c.viewtron.idle_timeout, s(30));
        assert_eq!(c.viewtron.offline_after, s(90));
        assert_eq!(c.spool.max_age, s(86_400));
        assert_eq!(c.spool.image_max_age, s(600));
        assert_eq!(c.off_delays()["lpr"], Duration::from_millis(2500));
    }

    #[test]
    fn bad_durations_name_their_key_and_line() {
        for (src, path, line) in [
            (
                "[viewtron]\nlisten = \"0.0.0.0:1\"\nidle_timeout = \"5 fortnights\"\n",
                "viewtron.idle_timeout",
                3,
            ),
            ("[spool]\nmax_age = -1\n", "spool.max_age", 2),
            (
                "\n[categories.lpr]\noff_delay = \"soon\"\n",
                "categories.lpr.off_delay",
                3,
            ),
            ("[mqtt]\nkeep_alive = nan\n", "mqtt.keep_alive", 2),
        ] {
            let Err(ConfigError::Invalid(p)) = load_str(src) else {
                panic!("{src} accepted")
            };
            assert_eq!((p[0].path.as_str(), p[0].line), (path, Some(line)), "{p:?}");
        }
        // In range: checked by the section, every problem reported.
        let Err(ConfigError::Invalid(p)) =
            load_str("[viewtron]\nheader_timeout = \"10ms\"\noffline_after = \"8 days\"\n")
        else {
            panic!("out of range accepted")
        };
        let got: Vec<_> = p.iter().map(|p| (p.path.as_str(), p.line)).collect();
        assert_eq!(
            got,
            [
                ("viewtron.header_timeout", Some(2)),
                ("viewtron.offline_after", Some(3))
            ]
        );
        assert_eq!(p[0].message, "must be between 0.1 and 604800 seconds");
    }

    #[test]
    fn secrets_are_masked_everywhere() {
        let c = load_str(
            "[mqtt]\nurl = \"mqtt://u:url-secret@h\"\npassword = \"mqtt-secret\"\n[viewtron.auth]\nusername = \"cam\"\npassword = \"cam-secret\"\n",
        )
        .expect("valid");
        let text = format!("{c:?}");
        assert!(
            !text.contains("mqtt-secret") && !text.contains("cam-secret"),
            "{text}"
        );
        let broker = c.mqtt.brokers().unwrap().remove(0);
        assert_eq!(broker.to_string(), "mqtt://u:***@h:1883");
        let text = format!("{broker:?}");
        assert!(!text.contains("secret"), "{text}");
        // The configured password replaced the URL's.
        assert_eq!(
            broker.password.as_ref().map(|p| p.expose_secret()),
            Some("mqtt-secret")
        );
        let Err(ConfigError::Invalid(p)) =
            load_str("[viewtron.auth]\nusername = \"cam\"\npassword = 1234567\n")
        else {
            panic!("a number accepted as a password")
        };
        assert!(!format!("{p:?}").contains("1234567"), "{p:?}");
        assert_eq!(
            (p[0].path.as_str(), p[0].line),
            ("viewtron.auth.password", Some(3))
        );
    }

    #[test]
    fn macs() {
        assert_eq!(
            normalise_mac("58-5B-69-40-F4-0D").as_deref(),
            Some("58:5b:69:40:f4:0d")
        );
        assert_eq!(
            normalise_mac("585b6940f40d").as_deref(),
            Some("58:5b:69:40:f4:0d")
        );
        assert_eq!(normalise_mac("58:5b:69"), None);
    }
}
