//! The whole configuration: a TOML file, overridden by environment variables and the command
//! line (both handled by clap in `main.rs`, applied with [`Overrides`]).
//!
//! Parsing is strict (`deny_unknown_fields`); [`Config::validate`] collects every semantic
//! problem instead of stopping at the first, and [`load_str`] reports each with its line.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::event::{Category, normalise_mac};

/// Default receiver address of the Viewtron source.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:5002";
/// Default address of the embedded broker.
pub const DEFAULT_EMBEDDED_BROKER: &str = "127.0.0.1:1883";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[derive(Default)]
pub struct Config {
    /// Broker connection and topic root.
    pub mqtt: MqttSection,
    /// Home Assistant discovery.
    pub homeassistant: HomeAssistantSection,
    /// Image topics.
    pub images: ImagesSection,
    /// The Viewtron / TVT HTTP push receiver.
    pub viewtron: ViewtronSection,
    /// The durable spool between the pipeline and the MQTT sink.
    pub spool: SpoolSection,
    /// Per-category settings, keyed by category name (`lpr`, `intrusion`, ...).
    pub categories: BTreeMap<String, CategorySection>,
    /// Friendly names and ids per device.
    pub devices: Vec<DeviceSection>,
}

/// `[mqtt]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// `mqtt://[user:pass@]host[:port]`. Empty: start the embedded broker.
    pub url: Option<String>,
    /// Client id; must be unique per bridge instance. Default: `camqtt-<hostname>-<receiver port>`.
    pub client_id: Option<String>,
    /// Root of every topic the bridge publishes.
    pub base_topic: String,
    /// MQTT keep-alive in seconds.
    pub keep_alive: u64,
    /// The broker's packet size limit in bytes (Mosquitto `max_packet_size`). Unset: taken from
    /// the broker's MQTT 5 CONNACK when it announces one. A publish that would exceed the limit
    /// is skipped before sending (counted in `images_oversize` / `messages_oversize`); the
    /// embedded broker uses it (default 64 MiB) as its own limit.
    pub max_packet_size: Option<usize>,
    /// MQTT version: `auto` (MQTT 5, falling back to 3.1.1 for brokers that refuse it), `5`, or
    /// `3.1.1`.
    pub protocol: MqttProtocol,
    /// Where the embedded broker listens when no `url` is given.
    pub embedded_listen: SocketAddr,
    /// User name (overrides one in `url`).
    pub username: Option<String>,
    /// Password (overrides one in `url`). Prefer `password_file` or `CAMQTT_MQTT_PASSWORD_FILE`.
    pub password: Option<Secret>,
    /// File holding the password (Docker / add-on secrets); trailing newlines are ignored.
    pub password_file: Option<PathBuf>,
    /// TLS settings; TLS is on for `mqtts://` URLs or when `tls.enabled` is true.
    pub tls: TlsSection,
}

/// `[mqtt] protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum MqttProtocol {
    /// MQTT 5, falling back to 3.1.1.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// MQTT 5 only.
    #[serde(rename = "5")]
    V5,
    /// MQTT 3.1.1 only.
    #[serde(rename = "3.1.1")]
    V311,
}

/// `[mqtt.tls]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// Use TLS even with an `mqtt://` URL.
    pub enabled: bool,
    /// PEM file with the CA certificate(s) to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
    /// Name to check the server certificate against (default: the URL's host).
    pub server_name: Option<String>,
}

/// A secret string: `Debug` and `Display` print `***`, and a wrongly typed value in the
/// file is rejected without echoing it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a quoted string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom("a secret must be a quoted string"))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom("a secret must be a quoted string"))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom("a secret must be a quoted string"))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom("a secret must be a quoted string"))
            }
        }
        d.deserialize_str(V)
    }
}

impl Secret {
    /// The secret itself; never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// `[spool]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSection {
    /// Keep events on disk until the broker acknowledged them. Off: in memory only.
    pub enabled: bool,
    /// Directory of the segment files (created if missing).
    pub dir: PathBuf,
    /// Upper bound of the spool on disk, bytes; the oldest records go first (counted).
    pub max_bytes: u64,
    /// Records older than this many seconds are dropped (counted).
    pub max_age: f64,
    /// Images older than this many seconds are dropped from the backlog; their events and
    /// states are still delivered.
    pub image_max_age: f64,
    /// Size of one segment file, bytes.
    pub segment_bytes: u64,
    /// `fdatasync` after every append: survives a power cut too, at the cost of a disk
    /// flush per post (slow on SD cards). Without it the spool survives a crash or kill of
    /// the bridge, not of the machine.
    pub fsync: bool,
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection {
            enabled: true,
            dir: PathBuf::from("camqtt-spool"),
            // A busy LPR camera: ~1,500 reads a day at ~600 KB with images ≈ 0.9 GB.
            max_bytes: 2 * 1024 * 1024 * 1024,
            max_age: 86_400.0,
            image_max_age: 600.0,
            segment_bytes: 64 * 1024 * 1024,
            fsync: false,
        }
    }
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            url: None,
            client_id: None,
            base_topic: "camera".into(),
            keep_alive: 30,
            max_packet_size: None,
            protocol: MqttProtocol::Auto,
            embedded_listen: DEFAULT_EMBEDDED_BROKER.parse().expect("valid constant"),
            username: None,
            password: None,
            password_file: None,
            tls: TlsSection::default(),
        }
    }
}

/// `[homeassistant]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantSection {
    /// Publish discovery at all.
    pub enabled: bool,
    /// Discovery prefix configured in Home Assistant's MQTT integration.
    pub discovery_prefix: String,
    /// Home Assistant's birth/will topic. Default: `<discovery_prefix>/status`.
    pub status_topic: Option<String>,
    /// `device` (one config per device, HA 2024.11+) or `legacy` (one config per entity).
    pub discovery: DiscoveryMode,
    /// Days after which a device that posted nothing is forgotten: its discovery is cleared
    /// and it is dropped from the registry kept in the spool directory.
    pub forget_after: u32,
    /// Seconds a new entity's first non-retained messages (an event, an `ON`) wait after its
    /// discovery, so that Home Assistant has subscribed to them (it takes 0.1–0.5 s, more on a
    /// loaded machine).
    pub discovery_settle: f64,
}

impl Default for HomeAssistantSection {
    fn default() -> Self {
        HomeAssistantSection {
            enabled: true,
            discovery_prefix: "homeassistant".into(),
            status_topic: None,
            discovery: DiscoveryMode::Device,
            forget_after: 30,
            discovery_settle: 1.5,
        }
    }
}

/// Discovery style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryMode {
    /// `homeassistant/device/<id>/config`.
    Device,
    /// `homeassistant/<platform>/<id>/<key>/config`.
    Legacy,
}

/// `[images]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesSection {
    /// Retain `camera/<category>/image`.
    pub retain_category: bool,
    /// Retain `camera/<device>/<category>/image|target`.
    pub retain_device: bool,
    /// Also publish images as JSON with base64 (`…/image_json`).
    pub json_base64: bool,
}

impl Default for ImagesSection {
    fn default() -> Self {
        ImagesSection {
            retain_category: false,
            retain_device: true,
            json_base64: false,
        }
    }
}

/// `[viewtron]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewtronSection {
    /// Run the receiver.
    pub enabled: bool,
    /// Listen address.
    pub listen: SocketAddr,
    /// Largest accepted body in bytes.
    pub body_limit: usize,
    /// Seconds allowed to send a request's headers.
    pub header_timeout: f64,
    /// Seconds allowed for a whole request (headers and body).
    pub request_timeout: f64,
    /// Seconds a persistent connection may stay idle (must outlive the longest heartbeat).
    pub idle_timeout: f64,
    /// Concurrent connections.
    pub max_connections: usize,
    /// Seconds without any post after which a device is marked offline.
    pub offline_after: f64,
    /// Minimum seconds between two published traject summaries of one device.
    pub traject_interval: f64,
    /// Largest part of a body copied to `bridge/unparsed`.
    pub unparsed_body_cap: usize,
    /// HTTP Basic auth the devices must send; off when absent.
    pub auth: Option<BasicAuthSection>,
    /// Addresses or CIDR blocks allowed to post (`192.168.1.0/24`, `10.0.0.5`, `fd00::/8`);
    /// empty: everyone.
    pub allow: Vec<String>,
    /// HTTPS on the receiver port; off when absent.
    pub tls: Option<ReceiverTlsSection>,
}

/// `[viewtron.tls]`: HTTPS on the receiver port (rustls, ring provider, TLS 1.2 and 1.3).
/// Present: the port accepts HTTPS; a connection whose first byte is not a TLS handshake
/// record is plain HTTP, served too unless `plain_http = false`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverTlsSection {
    /// PEM certificate chain: the server certificate first, then intermediates
    /// (`fullchain.pem`).
    pub cert_file: PathBuf,
    /// PEM private key of the certificate (`privkey.pem`; PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Also serve plain HTTP on the same port (cameras set to `http`). Default `true`;
    /// `false`: plain HTTP gets `400`, one warn line per peer per 5 minutes, counted in
    /// `plain_http_on_tls_port`.
    #[serde(default = "yes")]
    pub plain_http: bool,
}

fn yes() -> bool {
    true
}

impl ReceiverTlsSection {
    /// Read the certificate and key and build the server's TLS configuration. Errors name
    /// the key (`cert_file` / `key_file`) and the file, never its contents.
    pub fn load(
        &self,
    ) -> Result<crate::sources::http_push::ServerTls, crate::sources::http_push::TlsError> {
        crate::sources::http_push::ServerTls::from_pem_files(
            &self.cert_file,
            &self.key_file,
            self.plain_http,
        )
    }
}

/// `[viewtron.auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthSection {
    /// User name.
    pub username: String,
    /// Password; prefer `password_file` or `CAMQTT_VIEWTRON_PASSWORD_FILE`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl Default for ViewtronSection {
    fn default() -> Self {
        ViewtronSection {
            enabled: true,
            listen: DEFAULT_LISTEN.parse().expect("valid constant"),
            body_limit: 16 * 1024 * 1024,
            header_timeout: 30.0,
            request_timeout: 120.0,
            idle_timeout: 300.0,
            max_connections: 512,
            offline_after: 300.0,
            traject_interval: 1.0,
            unparsed_body_cap: 4096,
            auth: None,
            allow: Vec::new(),
            tls: None,
        }
    }
}

/// `[categories.<name>]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CategorySection {
    /// Publish this category at all.
    pub enabled: bool,
    /// Seconds after the last detection before the binary sensor turns off.
    pub off_delay: Option<f64>,
}

impl Default for CategorySection {
    fn default() -> Self {
        CategorySection {
            enabled: true,
            off_delay: None,
        }
    }
}

/// `[[devices]]`: matches a device and gives it an id, a name and an area.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceSection {
    /// Match by MAC (any case, `:` or `-`).
    pub mac: Option<String>,
    /// Match by serial number.
    pub serial: Option<String>,
    /// Match by TCP peer address.
    pub peer: Option<IpAddr>,
    /// Together with a match above: only this NVR channel.
    pub channel: Option<u32>,
    /// Topic id to use instead of the derived one (`[a-z0-9_-]`).
    pub id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Home Assistant suggested area.
    pub area: Option<String>,
}

/// Values from the command line / environment that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<SocketAddr>,
    /// `--mqtt-url`
    pub mqtt_url: Option<String>,
    /// `--base-topic`
    pub base_topic: Option<String>,
    /// `--discovery-prefix`
    pub discovery_prefix: Option<String>,
    /// `--client-id`
    pub client_id: Option<String>,
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the offending key (`devices[1].mac`).
    pub path: String,
    /// 1-based line, when it could be located.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file has problems.
    #[error("{} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// Read and validate a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load_str(&src)
}

/// [`load_file`], then load the files the configuration names ([`Config::check_files`]):
/// what `check-config` runs. Every problem carries its line where possible.
pub fn check_file(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let config = load_str(&src)?;
    let mut problems = config.check_files();
    if problems.is_empty() {
        return Ok(config);
    }
    for p in &mut problems {
        p.line = locate(&src, &p.path);
    }
    Err(ConfigError::Invalid(problems))
}

/// Parse and validate configuration text; every problem carries its line where possible.
pub fn load_str(src: &str) -> Result<Config, ConfigError> {
    let (_, syntax) = toml::de::DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        return Err(ConfigError::Invalid(
            syntax
                .iter()
                .map(|e| Problem {
                    path: "(syntax)".into(),
                    line: e.span().map(|s| line_of(src, s.start)),
                    message: e.message().trim().to_string(),
                })
                .collect(),
        ));
    }
    let config: Config = toml::from_str(src).map_err(|e| {
        ConfigError::Invalid(vec![Problem {
            path: "(structure)".into(),
            line: e.span().map(|s| line_of(src, s.start)),
            message: e.message().trim().to_string(),
        }])
    })?;
    let mut problems = config.validate();
    if problems.is_empty() {
        return Ok(config);
    }
    for p in &mut problems {
        p.line = locate(src, &p.path);
    }
    Err(ConfigError::Invalid(problems))
}

fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Find the line of a dotted path like `devices[1].mac` or `categories.lpr.off_delay`.
fn locate(src: &str, path: &str) -> Option<usize> {
    let parsed = toml::de::DeTable::parse(src).ok()?;
    let mut span = parsed.span();
    let mut table = Some(parsed.get_ref());
    let mut value: Option<&toml::de::DeValue<'_>> = None;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let current = match (table, value) {
            (Some(t), _) => t,
            (None, Some(toml::de::DeValue::Table(t))) => t,
            _ => break,
        };
        let Some((k, v)) = current.iter().find(|(k, _)| k.get_ref().as_ref() == key) else {
            break;
        };
        span = k.span();
        let mut v = v;
        if let (Some(i), toml::de::DeValue::Array(items)) = (index, v.get_ref()) {
            match items.get(i) {
                Some(item) => {
                    span = item.span();
                    v = item;
                }
                None => break,
            }
        }
        table = None;
        value = Some(v.get_ref());
    }
    Some(line_of(src, span.start))
}

impl Config {
    /// Apply command-line / environment overrides.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(listen) = o.listen {
            self.viewtron.listen = listen;
        }
        if let Some(url) = &o.mqtt_url {
            self.mqtt.url = (!url.trim().is_empty()).then(|| url.clone());
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
    }

    /// Fill secrets from the environment and from files, Docker-secrets style: for each of
    /// `CAMQTT_MQTT_URL`, `CAMQTT_MQTT_USERNAME`, `CAMQTT_MQTT_PASSWORD`,
    /// `CAMQTT_VIEWTRON_USERNAME` and `CAMQTT_VIEWTRON_PASSWORD`, the variable itself or
    /// `<NAME>_FILE` naming a file that holds the value (trailing newlines ignored). The
    /// `password_file` keys of the file are read the same way. Environment wins over the file.
    /// `env` and `read` are injected so that this stays testable without touching the process.
    pub fn resolve_secrets(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
        read: &dyn Fn(&Path) -> std::io::Result<String>,
    ) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut value = |name: &str, key: &str| -> Option<String> {
            if let Some(v) = env(name) {
                return Some(v);
            }
            let file = env(&format!("{name}_FILE"))?;
            match read(Path::new(&file)) {
                Ok(v) => Some(v.trim_end_matches(['\n', '\r']).to_string()),
                Err(e) => {
                    problems.push(Problem {
                        path: key.into(),
                        line: None,
                        message: format!("{name}_FILE: cannot read {file}: {e}"),
                    });
                    None
                }
            }
        };
        let url = value("CAMQTT_MQTT_URL", "mqtt.url");
        let user = value("CAMQTT_MQTT_USERNAME", "mqtt.username");
        let pass = value("CAMQTT_MQTT_PASSWORD", "mqtt.password");
        let vuser = value("CAMQTT_VIEWTRON_USERNAME", "viewtron.auth.username");
        let vpass = value("CAMQTT_VIEWTRON_PASSWORD", "viewtron.auth.password");
        if url.is_some() {
            self.mqtt.url = url.filter(|u| !u.trim().is_empty());
        }
        if user.is_some() {
            self.mqtt.username = user;
        }
        if let Some(p) = pass {
            self.mqtt.password = Some(Secret(p));
        } else if self.mqtt.password.is_none()
            && let Some(f) = self.mqtt.password_file.clone()
        {
            match read(&f) {
                Ok(v) => {
                    self.mqtt.password = Some(Secret(v.trim_end_matches(['\n', '\r']).to_string()))
                }
                Err(e) => problems.push(Problem {
                    path: "mqtt.password_file".into(),
                    line: None,
                    message: format!("cannot read {}: {e}", f.display()),
                }),
            }
        }
        if vuser.is_some() || vpass.is_some() {
            let auth = self.viewtron.auth.get_or_insert_with(|| BasicAuthSection {
                username: String::new(),
                password: None,
                password_file: None,
            });
            if let Some(u) = vuser {
                auth.username = u;
            }
            if let Some(p) = vpass {
                auth.password = Some(Secret(p));
            }
        }
        if let Some(auth) = self.viewtron.auth.as_mut()
            && auth.password.is_none()
            && let Some(f) = auth.password_file.clone()
        {
            match read(&f) {
                Ok(v) => auth.password = Some(Secret(v.trim_end_matches(['\n', '\r']).to_string())),
                Err(e) => problems.push(Problem {
                    path: "viewtron.auth.password_file".into(),
                    line: None,
                    message: format!("cannot read {}: {e}", f.display()),
                }),
            }
        }
        problems
    }

    /// Every semantic problem, not just the first.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad = |path: String, message: String| {
            problems.push(Problem {
                path,
                line: None,
                message,
            })
        };
        for (name, value) in [
            ("mqtt.base_topic", &self.mqtt.base_topic),
            (
                "homeassistant.discovery_prefix",
                &self.homeassistant.discovery_prefix,
            ),
        ] {
            if let Err(m) = check_topic_root(value) {
                bad(name.into(), m);
            }
        }
        if let Some(t) = &self.homeassistant.status_topic
            && (t.is_empty() || t.contains(['+', '#', '\0']))
        {
            bad(
                "homeassistant.status_topic".into(),
                "must be a topic without wildcards".into(),
            );
        }
        if !(1..=3650).contains(&self.homeassistant.forget_after) {
            bad(
                "homeassistant.forget_after".into(),
                "must be between 1 and 3650 days".into(),
            );
        }
        if let Some(url) = &self.mqtt.url
            && let Err(e) = crate::sinks::mqtt::config::BrokerAddr::from_url(url)
        {
            bad("mqtt.url".into(), e.to_string());
        }
        if let Some(id) = &self.mqtt.client_id
            && (id.is_empty() || id.len() > 128)
        {
            bad("mqtt.client_id".into(), "must be 1..=128 characters".into());
        }
        if !(0.0..=60.0).contains(&self.homeassistant.discovery_settle) {
            bad(
                "homeassistant.discovery_settle".into(),
                "must be between 0 and 60 seconds".into(),
            );
        }
        if let Some(n) = self.mqtt.max_packet_size
            && !(1024..=268_435_460).contains(&n)
        {
            bad(
                "mqtt.max_packet_size".into(),
                "must be between 1024 and 268435460 bytes (the MQTT maximum)".into(),
            );
        }
        if self.mqtt.keep_alive < 5 {
            bad(
                "mqtt.keep_alive".into(),
                "must be at least 5 seconds".into(),
            );
        }
        let v = &self.viewtron;
        if v.body_limit < 1024 {
            bad(
                "viewtron.body_limit".into(),
                "must be at least 1024 bytes".into(),
            );
        }
        for (name, secs, min) in [
            ("viewtron.header_timeout", v.header_timeout, 0.1),
            ("viewtron.request_timeout", v.request_timeout, 0.1),
            ("viewtron.idle_timeout", v.idle_timeout, 1.0),
            ("viewtron.offline_after", v.offline_after, 1.0),
            ("viewtron.traject_interval", v.traject_interval, 0.0),
        ] {
            if !secs.is_finite() || secs < min || secs > 86_400.0 * 7.0 {
                bad(
                    name.into(),
                    format!("must be between {min} and 604800 seconds"),
                );
            }
        }
        if v.idle_timeout < 240.0 && v.idle_timeout >= 1.0 {
            tracing::debug!(
                idle_timeout = v.idle_timeout,
                "idle timeout below 2 x 120 s heartbeat"
            );
        }
        if v.max_connections == 0 {
            bad(
                "viewtron.max_connections".into(),
                "must be at least 1".into(),
            );
        }
        for (i, a) in v.allow.iter().enumerate() {
            if let Err(e) = a.parse::<crate::sources::http_push::Cidr>() {
                bad(format!("viewtron.allow[{i}]"), e.to_string());
            }
        }
        if let Some(auth) = &v.auth {
            if auth.username.is_empty() || auth.username.contains([':', '\0']) {
                bad(
                    "viewtron.auth.username".into(),
                    "must be non-empty and without `:`".into(),
                );
            }
            match &auth.password {
                Some(p) if p.expose().is_empty() => {
                    bad("viewtron.auth.password".into(), "must not be empty".into())
                }
                None if auth.password_file.is_none() => bad(
                    "viewtron.auth.password".into(),
                    "auth needs a password or a password_file".into(),
                ),
                _ => {}
            }
        }
        if let Some(tls) = &v.tls {
            for (key, path) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
                if path.as_os_str().is_empty() {
                    bad(format!("viewtron.tls.{key}"), "must name a PEM file".into());
                }
            }
        }
        let tls = &self.mqtt.tls;
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            bad(
                "mqtt.tls.cert_file".into(),
                "cert_file and key_file go together (mutual TLS)".into(),
            );
        }
        if let Some(name) = &tls.server_name
            && (name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            bad(
                "mqtt.tls.server_name".into(),
                "must be a DNS name or IP address".into(),
            );
        }
        for (name, c) in &self.categories {
            if Category::from_name(name).is_none() {
                let known: Vec<&str> = Category::NAMED.iter().map(|c| c.as_str()).collect();
                bad(
                    format!("categories.{name}"),
                    format!("unknown category; known: {}", known.join(", ")),
                );
            }
            if let Some(d) = c.off_delay
                && (!d.is_finite() || !(0.0..=86_400.0).contains(&d))
            {
                bad(
                    format!("categories.{name}.off_delay"),
                    "must be between 0 and 86400 seconds".into(),
                );
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            if d.mac.is_none() && d.serial.is_none() && d.peer.is_none() {
                bad(
                    format!("devices[{i}]"),
                    "needs at least one of mac, serial, peer".into(),
                );
            }
            if let Some(mac) = &d.mac
                && normalise_mac(mac).is_none()
            {
                bad(
                    format!("devices[{i}].mac"),
                    format!("`{mac}` is not a MAC address"),
                );
            }
            if let Some(id) = &d.id {
                if id.is_empty()
                    || id.len() > 64
                    || !id.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                    })
                {
                    bad(
                        format!("devices[{i}].id"),
                        "must be 1..=64 characters of a-z, 0-9, _ and -".into(),
                    );
                } else if !ids.insert(id.clone()) {
                    bad(format!("devices[{i}].id"), format!("`{id}` is used twice"));
                }
            }
            if let Some(name) = &d.name
                && (name.trim().is_empty() || name.chars().any(char::is_control))
            {
                bad(
                    format!("devices[{i}].name"),
                    "must be non-empty text without control characters".into(),
                );
            }
        }
        problems
    }

    /// Problems with the files the configuration names, found by loading them the way
    /// [`crate::start`] does: the receiver's TLS certificate and key (`viewtron.tls`). Used by
    /// `check-config`; [`Config::validate`] itself does no I/O. Messages name the file, never
    /// its contents.
    pub fn check_files(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(tls) = self.viewtron.tls.as_ref().filter(|_| self.viewtron.enabled)
            && let Err(e) = tls.load()
        {
            problems.push(Problem {
                path: format!("viewtron.tls.{}", e.config_key()),
                line: None,
                message: e.to_string(),
            });
        }
        problems
    }

    /// Is this category published?
    pub fn category_enabled(&self, category: &Category) -> bool {
        self.categories
            .get(category.as_str())
            .is_none_or(|c| c.enabled)
    }

    /// Configured off delays (seconds → Duration) by category name.
    pub fn off_delays(&self) -> BTreeMap<String, Duration> {
        self.categories
            .iter()
            .filter_map(|(k, c)| c.off_delay.map(|d| (k.clone(), Duration::from_secs_f64(d))))
            .collect()
    }
}

fn check_topic_root(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("must not be empty".into());
    }
    if t.contains(['+', '#', '\0']) || t.chars().any(char::is_control) {
        return Err("must not contain +, # or control characters".into());
    }
    if t.starts_with('/') || t.ends_with('/') || t.contains("//") {
        return Err("must not start or end with / or contain empty levels".into());
    }
    Ok(())
}

/// Seconds as a Duration (config values are validated to be finite and non-negative).
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = load_str("").expect("valid");
        assert_eq!(c.mqtt.base_topic, "camera");
        assert_eq!(c.viewtron.listen.port(), 5002);
        assert_eq!(c.viewtron.body_limit, 16 * 1024 * 1024);
        assert!(c.mqtt.url.is_none());
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
            Some("/run/secrets/url") => Ok("mqtt://broker:1883\n".to_string()),
            Some("/run/secrets/mqtt") => Ok("s3cret\n".to_string()),
            Some("/run/secrets/cam") => Ok("campass".to_string()),
            _ => Err(std::io::Error::other("missing")),
        };
        assert!(c.resolve_secrets(&env, &read).is_empty());
        assert_eq!(c.mqtt.url.as_deref(), Some("mqtt://broker:1883"));
        assert_eq!(c.mqtt.username.as_deref(), Some("bridge"));
        assert_eq!(c.mqtt.password.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(
            c.viewtron
                .auth
                .as_ref()
                .and_then(|a| a.password.as_ref())
                .map(Secret::expose),
            Some("campass")
        );
        assert_eq!(format!("{:?}", c.mqtt.password), "Some(***)");
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
            mqtt_url: Some("mqtt://b:1884".into()),
            base_topic: Some("cams".into()),
            ..Default::default()
        });
        assert_eq!(c.mqtt.url.as_deref(), Some("mqtt://b:1884"));
        assert_eq!(c.mqtt.base_topic, "cams");
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
