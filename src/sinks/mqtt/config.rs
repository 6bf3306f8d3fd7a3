//! Configuration of the MQTT sink: the sections it owns in the file, and the runtime
//! [`MqttSinkConfig`] it runs from.
//!
//! Sections (serde, `deny_unknown_fields`, defaults as documented in the README and
//! `config/camqtt.example.toml`): `[mqtt]` with `[mqtt.tls]` ([`MqttSection`]),
//! `[homeassistant]` ([`HomeAssistantSection`]) and `[images]` ([`ImageConfig`], used as it
//! is). Each section's `validate` returns every problem with the key path `check-config`
//! locates (`mqtt.base_topic`, `homeassistant.forget_after`, ...); the `off_delay` of
//! `[categories.<name>]` (a table shared with the pipeline) is checked by
//! [`check_off_delays`].
//!
//! [`MqttSection::broker`] resolves the broker to connect to; [`MqttSection::sink_config`]
//! assembles the [`MqttSinkConfig`]; [`MqttSinkConfig::validate`] checks what the sink relies
//! on when it is built in code (tests, embedding).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::link::ProtocolChoice;
use crate::config::{Problem, duration, secret};

pub use super::broker_addr::{BrokerAddr, TlsOptions, redact_url};

/// Default address of the embedded broker (`mqtt.embedded_listen`).
pub const DEFAULT_EMBEDDED_BROKER: &str = "127.0.0.1:1883";
/// Largest packet MQTT can express (variable byte integer maximum plus the fixed header).
const MQTT_MAX_PACKET: usize = 268_435_460;

/// `[mqtt]`: the broker connection and the topic root. `Debug` shows neither the password
/// nor the URL's ([`redact_url`]).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSection {
    /// The broker: `mqtt://[user:pass@]host[:port]` or `mqtts://…`. Several URLs (a TOML
    /// list, or one string with the URLs separated by commas, [`split_url_list`]) are the nodes
    /// of one broker cluster: the first is tried first, then the others in turn on every
    /// reconnect ([`MqttSinkConfig::failover`]). Empty: start the embedded broker. May hold a
    /// password: print it with [`redact_url`] only.
    #[serde(deserialize_with = "url_list")]
    pub url: Vec<String>,
    /// Client id; must be unique per bridge instance (1 to 128 characters). Default:
    /// `camqtt-<hostname>-<receiver port>`.
    pub client_id: Option<String>,
    /// Root of every topic the bridge publishes (no `+`, `#` or empty levels). Default `camera`.
    pub base_topic: String,
    /// MQTT keep-alive: seconds or `"30s"`, 5 to 65535 s. Default 30 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub keep_alive: Duration,
    /// The broker's packet size limit in bytes (Mosquitto `max_packet_size`), 1024 to the MQTT
    /// maximum. Unset: taken from the broker's MQTT 5 CONNACK when it announces one. A publish
    /// that would exceed the limit is skipped before sending (counted in `images_oversize` /
    /// `messages_oversize`); the embedded broker uses it (default 64 MiB) as its own limit.
    pub max_packet_size: Option<usize>,
    /// MQTT version: `auto` (MQTT 5, falling back to 3.1.1 for brokers that refuse it), `5`, or
    /// `3.1.1`. The embedded broker always speaks 3.1.1.
    pub protocol: MqttProtocol,
    /// Where the embedded broker listens when no `url` is given. Default
    /// [`DEFAULT_EMBEDDED_BROKER`].
    pub embedded_listen: SocketAddr,
    /// User name (overrides one in `url`).
    pub username: Option<String>,
    /// Password (overrides one in `url`). Prefer `password_file` or `CAMQTT_MQTT_PASSWORD_FILE`.
    /// A value that is not a quoted string is refused without being echoed.
    #[serde(deserialize_with = "secret::optional")]
    pub password: Option<SecretString>,
    /// File holding the password (Docker / add-on secrets); trailing newlines are ignored.
    pub password_file: Option<PathBuf>,
    /// TLS settings; TLS is on for `mqtts://` URLs or when `tls.enabled` is true.
    pub tls: TlsSection,
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            url: Vec::new(),
            client_id: None,
            base_topic: "camera".into(),
            keep_alive: Duration::from_secs(30),
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

/// The URL with its password replaced ([`redact_url`]), for `Debug`.
struct RedactedUrl<'a>(&'a str);

impl std::fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&redact_url(self.0), f)
    }
}

impl std::fmt::Debug for MqttSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field: a new one must be added here (the destructuring does not compile
        // otherwise).
        let MqttSection {
            url,
            client_id,
            base_topic,
            keep_alive,
            max_packet_size,
            protocol,
            embedded_listen,
            username,
            password,
            password_file,
            tls,
        } = self;
        f.debug_struct("MqttSection")
            .field(
                "url",
                &url.iter().map(|u| RedactedUrl(u)).collect::<Vec<_>>(),
            )
            .field("client_id", client_id)
            .field("base_topic", base_topic)
            .field("keep_alive", keep_alive)
            .field("max_packet_size", max_packet_size)
            .field("protocol", protocol)
            .field("embedded_listen", embedded_listen)
            .field("username", username)
            .field("password", password)
            .field("password_file", password_file)
            .field("tls", tls)
            .finish()
    }
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
    /// PEM client certificate (chain) for mutual TLS; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
    /// Name to check the server certificate against (default: the URL's host).
    pub server_name: Option<String>,
}

/// `[homeassistant]`: MQTT discovery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantSection {
    /// Publish discovery at all. Default `true`.
    pub enabled: bool,
    /// Discovery prefix configured in Home Assistant's MQTT integration. Default
    /// `homeassistant`.
    pub discovery_prefix: String,
    /// Home Assistant's birth/will topic. Default: `<discovery_prefix>/status`.
    pub status_topic: Option<String>,
    /// `device` (one config per device, HA 2024.11+) or `legacy` (one config per entity).
    pub discovery: DiscoveryMode,
    /// A device that posted nothing for this long is forgotten: its discovery is cleared and
    /// it is dropped from the registry kept in the spool directory. A number of days, or a
    /// duration string (`"36h"`); 1 to 3650 days. Default 30 days.
    #[serde(deserialize_with = "duration::days")]
    pub forget_after: Duration,
    /// How long a new entity's first non-retained messages (an event, an `ON`) wait after its
    /// discovery, so that Home Assistant has subscribed to them (it takes 0.1–0.5 s, more on a
    /// loaded machine). Seconds or `"1500ms"`, 0 to 60 s. Default 1.5 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub discovery_settle: Duration,
}

impl Default for HomeAssistantSection {
    fn default() -> Self {
        HomeAssistantSection {
            enabled: true,
            discovery_prefix: "homeassistant".into(),
            status_topic: None,
            discovery: DiscoveryMode::Device,
            forget_after: Duration::from_secs(30 * 86_400),
            discovery_settle: Duration::from_millis(1500),
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

impl MqttSection {
    /// Every problem of `[mqtt]` and `[mqtt.tls]` (paths `mqtt.<key>`).
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Err(m) = check_topic_root(&self.base_topic) {
            problems.push(Problem::new("mqtt.base_topic", m));
        }
        problems.extend(self.url_problems());
        if let Some(id) = &self.client_id
            && (id.is_empty() || id.len() > 128)
        {
            problems.push(Problem::new("mqtt.client_id", "must be 1..=128 characters"));
        }
        if let Some(n) = self.max_packet_size
            && !(1024..=MQTT_MAX_PACKET).contains(&n)
        {
            problems.push(Problem::new(
                "mqtt.max_packet_size",
                format!("must be between 1024 and {MQTT_MAX_PACKET} bytes (the MQTT maximum)"),
            ));
        }
        // MQTT carries the keep-alive as 16-bit seconds.
        duration::check_range(
            &mut problems,
            "mqtt.keep_alive",
            self.keep_alive,
            Duration::from_secs(5),
            Duration::from_secs(u64::from(u16::MAX)),
        );
        problems.extend(self.tls.validate());
        problems
    }

    /// Problems of `url`: every URL must parse ([`BrokerAddr::from_url`]), and no node may be
    /// listed twice. Paths `mqtt.url`, or `mqtt.url[<i>]` when there are several.
    fn url_problems(&self) -> Vec<Problem> {
        let key = |i: usize| {
            if self.url.len() > 1 {
                format!("mqtt.url[{i}]")
            } else {
                "mqtt.url".to_owned()
            }
        };
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        for (i, url) in self.url.iter().enumerate() {
            match BrokerAddr::from_url(url) {
                Ok(b) => {
                    let node = b.endpoint();
                    if seen.contains(&node) {
                        problems.push(Problem::new(key(i), format!("{node} is listed twice")));
                    }
                    seen.push(node);
                }
                Err(e) => problems.push(Problem::new(key(i), e.to_string())),
            }
        }
        problems
    }

    /// The broker nodes named by `url`, in order, each with `username` / `password` overriding
    /// the URL's and the `[mqtt.tls]` settings applied; empty without a URL (the embedded
    /// broker). Builds each node's TLS client configuration now ([`BrokerAddr::prepare_tls`]:
    /// the TLS files are read once, errors at `mqtt.tls`), so that a bad file stops the start
    /// instead of failing in the sink, and the sink's connections reuse it. Blocking file I/O:
    /// call it off the async runtime.
    pub fn brokers(&self) -> Result<Vec<BrokerAddr>, Problem> {
        if let Some(p) = self.url_problems().into_iter().next() {
            return Err(p);
        }
        let mut out = Vec::with_capacity(self.url.len());
        for url in &self.url {
            let mut b =
                BrokerAddr::from_url(url).map_err(|e| Problem::new("mqtt.url", e.to_string()))?;
            if let Some(u) = &self.username {
                b.username = Some(u.clone());
            }
            if let Some(p) = &self.password {
                b.password = Some(p.clone());
            }
            b.tls |= self.tls.enabled;
            b.tls_options = TlsOptions {
                ca_file: self.tls.ca_file.clone(),
                cert_file: self.tls.cert_file.clone(),
                key_file: self.tls.key_file.clone(),
                server_name: self.tls.server_name.clone(),
            };
            b.prepare_tls()
                .map_err(|e| Problem::new("mqtt.tls", e.to_string()))?;
            out.push(b);
        }
        Ok(out)
    }

    /// The sink's runtime configuration: this section, the broker nodes to use (`broker`
    /// first, then `failover`: from [`MqttSection::brokers`], or the embedded broker alone)
    /// and what the sink reads from elsewhere. The embedded broker (no `url`) is always spoken
    /// to in MQTT 3.1.1.
    pub fn sink_config(
        &self,
        broker: BrokerAddr,
        failover: Vec<BrokerAddr>,
        inputs: SinkInputs<'_>,
    ) -> MqttSinkConfig {
        let mut off_delay = default_off_delays();
        off_delay.extend(inputs.off_delays);
        MqttSinkConfig {
            broker,
            failover,
            client_id: self.client_id.clone().unwrap_or(inputs.default_client_id),
            base_topic: self.base_topic.clone(),
            keep_alive: self.keep_alive,
            max_packet_size: self.max_packet_size,
            protocol: match (self.protocol, !self.url.is_empty()) {
                // The embedded broker (rumqttd) listens for MQTT 3.1.1.
                (_, false) => ProtocolChoice::V311,
                (MqttProtocol::Auto, true) => ProtocolChoice::Auto,
                (MqttProtocol::V5, true) => ProtocolChoice::V5,
                (MqttProtocol::V311, true) => ProtocolChoice::V311,
            },
            homeassistant: inputs.homeassistant.ha_config(),
            images: inputs.images.clone(),
            off_delay,
            default_off_delay: Duration::from_secs(30),
            object_off_delay: inputs.object_off_delay,
            alarm_max_hold: Duration::from_secs(600),
            bridge_name: bridge_name(&self.base_topic),
            state_dir: inputs.state_dir,
        }
    }
}

/// What [`MqttSection::sink_config`] takes from outside `[mqtt]`.
#[derive(Debug)]
pub struct SinkInputs<'a> {
    /// `[homeassistant]`.
    pub homeassistant: &'a HomeAssistantSection,
    /// `[images]`.
    pub images: &'a ImageConfig,
    /// `off_delay` per category name (`[categories.<name>]`), over [`default_off_delays`].
    pub off_delays: BTreeMap<String, Duration>,
    /// `off_delay` of the object labels' "<Label> detected" sensors (`[detector] off_delay`).
    pub object_off_delay: Duration,
    /// Directory of the device registry file (the spool directory when the spool is on);
    /// `None`: kept in memory only.
    pub state_dir: Option<PathBuf>,
    /// The client id when `mqtt.client_id` is unset.
    pub default_client_id: String,
}

impl TlsSection {
    /// Problems of `[mqtt.tls]`: a client certificate needs its key, and the server name must
    /// be a name.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.cert_file.is_some() != self.key_file.is_some() {
            problems.push(Problem::new(
                "mqtt.tls.cert_file",
                "cert_file and key_file go together (mutual TLS)",
            ));
        }
        if let Some(name) = &self.server_name
            && (name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            problems.push(Problem::new(
                "mqtt.tls.server_name",
                "must be a DNS name or IP address",
            ));
        }
        problems
    }
}

impl HomeAssistantSection {
    /// Every problem of `[homeassistant]` (paths `homeassistant.<key>`).
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Err(m) = check_topic_root(&self.discovery_prefix) {
            problems.push(Problem::new("homeassistant.discovery_prefix", m));
        }
        if let Some(t) = &self.status_topic
            && (t.is_empty() || t.contains(['+', '#', '\0']))
        {
            problems.push(Problem::new(
                "homeassistant.status_topic",
                "must be a topic without wildcards",
            ));
        }
        const DAY: Duration = Duration::from_secs(86_400);
        if !(DAY..=DAY * 3650).contains(&self.forget_after) {
            problems.push(Problem::new(
                "homeassistant.forget_after",
                "must be between 1 and 3650 days",
            ));
        }
        duration::check_range(
            &mut problems,
            "homeassistant.discovery_settle",
            self.discovery_settle,
            Duration::ZERO,
            Duration::from_secs(60),
        );
        problems
    }

    /// The sink's discovery settings; `None` when discovery is off.
    pub fn ha_config(&self) -> Option<HaConfig> {
        self.enabled.then(|| HaConfig {
            discovery_prefix: self.discovery_prefix.clone(),
            status_topic: self
                .status_topic
                .clone()
                .unwrap_or_else(|| format!("{}/status", self.discovery_prefix)),
            legacy: self.discovery == DiscoveryMode::Legacy,
            republish_delay: (Duration::from_secs(1), Duration::from_secs(5)),
            discovery_settle: self.discovery_settle,
        })
    }
}

/// Problems of the `off_delay` of `[categories.<name>]` (`categories.<name>.off_delay`):
/// 0 to 86400 s. Takes `(category name, off_delay)` pairs.
pub fn check_off_delays<'a>(
    off_delays: impl IntoIterator<Item = (&'a str, Option<Duration>)>,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (name, delay) in off_delays {
        if let Some(d) = delay {
            duration::check_range(
                &mut problems,
                &format!("categories.{name}.off_delay"),
                d,
                Duration::ZERO,
                Duration::from_secs(86_400),
            );
        }
    }
    problems
}

/// The bridge's name in Home Assistant: `camqtt` with the default base topic, else `camqtt
/// <base topic>`, so that instances side by side (each with its own base topic, README
/// "Scaling out") are told apart in HA's device list ("camqtt site-b bridge").
fn bridge_name(base_topic: &str) -> String {
    if base_topic == MqttSection::default().base_topic {
        "camqtt".to_owned()
    } else {
        format!("camqtt {base_topic}")
    }
}

/// Split a list of broker URLs written as one string (`CAMQTT_MQTT_URL`, `--mqtt-url`, a
/// string `url`): at each comma that is followed (after optional spaces) by a URL scheme
/// (`mqtt://`, `mqtts://`, …), by another comma, or ends the text, so a comma inside a password
/// stays part of its URL. Parts are trimmed; empty parts are dropped (an empty string is an empty list: the
/// embedded broker).
pub fn split_url_list(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in text.match_indices(',') {
        let rest = text[i + 1..].trim_start();
        if rest.is_empty() || rest.starts_with(',') || starts_with_scheme(rest) {
            out.push(&text[start..i]);
            start = i + 1;
        }
    }
    out.push(&text[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `scheme://` at the start of `s` (RFC 3986 §3.1: a letter, then letters, digits, `+`, `-`,
/// `.`).
fn starts_with_scheme(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `[mqtt] url`: a string (one URL, or several separated by commas, [`split_url_list`]) or a
/// list of strings. The error never echoes a value (it may hold a password).
fn url_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct UrlList;
    impl<'de> serde::de::Visitor<'de> for UrlList {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a broker URL or a list of broker URLs")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(split_url_list(v))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(u) = seq.next_element::<String>()? {
                out.extend(split_url_list(&u));
            }
            Ok(out)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(UrlList)
}

/// A topic root (`mqtt.base_topic`, `homeassistant.discovery_prefix`): not empty, no
/// wildcards or control characters, no empty levels.
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

/// Everything the MQTT sink needs.
#[derive(Debug, Clone)]
pub struct MqttSinkConfig {
    /// Where the broker is: the node tried first.
    pub broker: BrokerAddr,
    /// Further nodes of the same broker (a cluster), tried in turn after [`Self::broker`]
    /// whenever a connection attempt fails or the connection drops; empty for one broker.
    /// The nodes must share retained messages and sessions (one cluster, DESIGN §7): the
    /// bridge re-publishes its states and discovery on every connect, but does not copy
    /// retained messages from one node to another.
    pub failover: Vec<BrokerAddr>,
    /// MQTT client id; must be unique per bridge instance (a duplicate kicks the other
    /// connection and fires its last will).
    pub client_id: String,
    /// Base topic (`camera`). May contain `/` levels, never `+`, `#` or empty levels.
    pub base_topic: String,
    /// MQTT keep alive.
    pub keep_alive: Duration,
    /// The broker's packet size limit in bytes, when known from configuration (`None`: learn
    /// it from the broker's MQTT 5 CONNACK, else only the MQTT maximum applies). Publishes
    /// that would exceed it are skipped before sending.
    pub max_packet_size: Option<usize>,
    /// MQTT protocol version to speak.
    pub protocol: super::link::ProtocolChoice,
    /// Home Assistant discovery; `None` disables discovery.
    pub homeassistant: Option<HaConfig>,
    /// Image topics.
    pub images: ImageConfig,
    /// `off_delay` per category name (`lpr`, `intrusion`, ...).
    pub off_delay: BTreeMap<String, Duration>,
    /// `off_delay` for categories not in [`MqttSinkConfig::off_delay`].
    pub default_off_delay: Duration,
    /// Time after the last picture showing an object label until its "<Label> detected"
    /// sensor turns `OFF` and its count goes back to 0 (`[detector] off_delay`; at least
    /// 1 s is used).
    pub object_off_delay: Duration,
    /// Safety cap for an alarm-status ON that never gets its OFF.
    pub alarm_max_hold: Duration,
    /// Name of the bridge (HA device name, `origin`).
    pub bridge_name: String,
    /// Directory for the dead letters (`<state_dir>/dead-letter`); `None`: they are only
    /// logged and reported.
    pub state_dir: Option<PathBuf>,
}

impl MqttSinkConfig {
    /// A configuration with the documented defaults for the given broker.
    pub fn new(broker: BrokerAddr) -> MqttSinkConfig {
        MqttSinkConfig {
            broker,
            failover: Vec::new(),
            client_id: "camqtt".to_owned(),
            base_topic: "camera".to_owned(),
            keep_alive: Duration::from_secs(30),
            max_packet_size: None,
            protocol: super::link::ProtocolChoice::Auto,
            homeassistant: Some(HaConfig::default()),
            images: ImageConfig::default(),
            off_delay: default_off_delays(),
            default_off_delay: Duration::from_secs(30),
            object_off_delay: super::discovery::DEFAULT_OBJECT_OFF_DELAY,
            alarm_max_hold: Duration::from_secs(600),
            bridge_name: "camqtt".to_owned(),
            state_dir: None,
        }
    }

    /// Every broker node, in the order they are tried: [`Self::broker`], then
    /// [`Self::failover`].
    pub fn nodes(&self) -> impl Iterator<Item = &BrokerAddr> {
        std::iter::once(&self.broker).chain(&self.failover)
    }

    /// The `off_delay` for a category name.
    pub fn off_delay_for(&self, category: &str) -> Duration {
        self.off_delay
            .get(category)
            .copied()
            .unwrap_or(self.default_off_delay)
    }

    /// Check the values the sink relies on; returns every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.client_id.is_empty() {
            problems.push("mqtt client id is empty".to_owned());
        }
        if let Err(e) = check_topic_prefix("base topic", &self.base_topic) {
            problems.push(e);
        }
        if let Some(ha) = &self.homeassistant {
            if let Err(e) = check_topic_prefix("discovery prefix", &ha.discovery_prefix) {
                problems.push(e);
            }
            if let Err(e) = check_topic_prefix("homeassistant status topic", &ha.status_topic) {
                problems.push(e);
            }
            if ha.republish_delay.0 > ha.republish_delay.1 {
                problems.push("republish delay: minimum is larger than maximum".to_owned());
            }
        }
        if let Some(n) = self.max_packet_size {
            if n < 1024 {
                problems.push(format!(
                    "max packet size {n} is too small (the event JSON alone takes up to a few KiB)"
                ));
            }
            if n > super::link::PROTOCOL_MAX_PACKET {
                problems.push(format!(
                    "max packet size {n} exceeds the MQTT maximum of {}",
                    super::link::PROTOCOL_MAX_PACKET
                ));
            }
        }
        if self.keep_alive.as_secs() > u64::from(u16::MAX) {
            problems.push("keep alive is longer than 65535 s".to_owned());
        }
        if self.default_off_delay.is_zero() || self.off_delay.values().any(Duration::is_zero) {
            problems.push("off_delay must be at least 1 s".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("; ")))
        }
    }
}

fn check_topic_prefix(what: &str, t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if t.contains(['+', '#', '\0']) {
        return Err(format!("{what} {t:?} contains a wildcard or NUL"));
    }
    if t.split('/').any(str::is_empty) {
        return Err(format!(
            "{what} {t:?} has an empty level (leading, trailing or double /)"
        ));
    }
    Ok(())
}

/// Home Assistant discovery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// Discovery prefix (`homeassistant`).
    pub discovery_prefix: String,
    /// HA birth/will topic (`homeassistant/status`).
    pub status_topic: String,
    /// Per-entity discovery (`homeassistant/<platform>/…/config`) instead of device discovery.
    pub legacy: bool,
    /// Random delay range before re-publishing after HA's `online` (1–5 s).
    pub republish_delay: (Duration, Duration),
    /// How long a new entity's first non-retained messages wait after its discovery (Home
    /// Assistant subscribes to a new entity's topics shortly after creating it; earlier
    /// messages are lost to it).
    pub discovery_settle: Duration,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            discovery_prefix: "homeassistant".to_owned(),
            status_topic: "homeassistant/status".to_owned(),
            legacy: false,
            republish_delay: (Duration::from_secs(1), Duration::from_secs(5)),
            discovery_settle: Duration::from_millis(1500),
        }
    }
}

/// `[images]`: image topic settings, deserialised straight from the section and used by the
/// sink as they are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageConfig {
    /// Publish `<base>/<category>/image`, the newest overview of a category from any device
    /// (default yes). Each image event then carries its overview twice: off halves the image
    /// bytes for a bridge whose consumers all use the per-device topics (Home Assistant does).
    pub category_topic: bool,
    /// Retain `<base>/<category>/image` (default no).
    pub retain_category: bool,
    /// Retain `<base>/<device>/<category>/image` and `/target` (default yes).
    pub retain_device: bool,
    /// Also publish `<base>/<device>/<category>/image_json` with base64 (default no).
    pub json_base64: bool,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            category_topic: true,
            retain_category: false,
            retain_device: true,
            json_base64: false,
        }
    }
}

/// Default `off_delay` per category name.
pub fn default_off_delays() -> BTreeMap<String, Duration> {
    [
        ("lpr", 10),
        ("face", 10),
        ("intrusion", 30),
        ("line_crossing", 5),
        ("zone_entry", 5),
        ("zone_exit", 5),
        ("loitering", 30),
        ("parking", 60),
        ("counting", 5),
        ("motion", 30),
        ("traject", 2),
        ("alarm", 30),
        ("crowd", 30),
        ("object", 30),
    ]
    .into_iter()
    .map(|(k, s)| (k.to_owned(), Duration::from_secs(s)))
    .collect()
}

/// A configuration value the sink cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The broker URL could not be parsed.
    #[error("invalid broker URL: {0}")]
    BadUrl(String),
    /// Another value is invalid.
    #[error("invalid MQTT configuration: {0}")]
    Invalid(String),
}
#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> MqttSection {
        toml::from_str(toml_text).expect("valid [mqtt]")
    }

    #[test]
    fn url_lists_split_at_a_comma_before_a_scheme_only() {
        assert_eq!(
            split_url_list("mqtt://a:1883, mqtts://b,tcp://c:1"),
            ["mqtt://a:1883", "mqtts://b", "tcp://c:1"]
        );
        // A comma inside a password is part of its URL.
        assert_eq!(
            split_url_list("mqtt://u:p,w@a,mqtt://b"),
            ["mqtt://u:p,w@a", "mqtt://b"]
        );
        assert_eq!(
            split_url_list("mqtt://u:p,mqtt://x@a"),
            ["mqtt://u:p", "mqtt://x@a"]
        );
        assert!(split_url_list("").is_empty());
        assert!(split_url_list(" , ").is_empty());
        assert_eq!(split_url_list("mqtt://a,"), ["mqtt://a"]);
        assert_eq!(
            split_url_list("mqtt://a,,mqtt://b"),
            ["mqtt://a", "mqtt://b"]
        );
    }

    #[test]
    fn url_is_a_string_a_comma_list_or_a_toml_list() {
        assert_eq!(section("url = \"mqtt://a\"").url, ["mqtt://a"]);
        assert_eq!(
            section("url = \"mqtt://a,mqtt://b:1884\"").url,
            ["mqtt://a", "mqtt://b:1884"]
        );
        assert_eq!(
            section("url = [\"mqtt://a\", \"mqtts://b\"]").url,
            ["mqtt://a", "mqtts://b"]
        );
        assert!(section("").url.is_empty());
        assert!(section("url = \"\"").url.is_empty());
        let e = toml::from_str::<MqttSection>("url = 5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a broker URL or a list of broker URLs"), "{e}");
    }

    #[test]
    fn brokers_keep_the_order_and_share_credentials_and_tls() {
        let s =
            section("url = [\"mqtt://a:1\", \"mqtt://b:2\"]\nusername = \"u\"\npassword = \"p\"\n");
        let nodes = s.brokers().expect("valid");
        let ends: Vec<_> = nodes.iter().map(BrokerAddr::endpoint).collect();
        assert_eq!(ends, ["mqtt://a:1", "mqtt://b:2"]);
        assert!(nodes.iter().all(|b| b.username.as_deref() == Some("u")));
        assert!(nodes.iter().all(|b| b.password.is_some()));
        let cfg = s.sink_config(
            nodes[0].clone(),
            nodes[1..].to_vec(),
            SinkInputs {
                homeassistant: &HomeAssistantSection::default(),
                images: &ImageConfig::default(),
                off_delays: BTreeMap::new(),
                object_off_delay: Duration::from_secs(30),
                state_dir: None,
                default_client_id: "id".into(),
            },
        );
        let order: Vec<_> = cfg.nodes().map(BrokerAddr::endpoint).collect();
        assert_eq!(order, ["mqtt://a:1", "mqtt://b:2"]);
        assert!(section("").brokers().unwrap().is_empty());
    }

    #[test]
    fn each_bad_or_repeated_node_is_a_problem_at_its_index() {
        let p = section("url = [\"mqtt://a\", \"http://b\", \"mqtt://a:1883\"]").validate();
        let keys: Vec<_> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(keys, ["mqtt.url[1]", "mqtt.url[2]"], "{p:?}");
        assert!(p[1].message.contains("listed twice"), "{p:?}");
        // One URL: the key is the plain one.
        let p = section("url = \"http://b\"").validate();
        assert_eq!(p[0].path, "mqtt.url");
    }

    #[test]
    fn instances_with_their_own_base_topic_get_their_own_bridge_name() {
        assert_eq!(bridge_name("camera"), "camqtt");
        assert_eq!(bridge_name("camera/site-b"), "camqtt camera/site-b");
    }

    #[test]
    fn validate_catches_problems() {
        let mut c = MqttSinkConfig::new(BrokerAddr::tcp("h", 1883));
        assert!(c.validate().is_ok());
        c.base_topic = "camera/#".into();
        c.max_packet_size = Some(10);
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("base topic") && e.contains("max packet size"),
            "{e}"
        );
        c.base_topic = "a//b".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn off_delays() {
        let c = MqttSinkConfig::new(BrokerAddr::tcp("h", 1883));
        assert_eq!(c.off_delay_for("lpr"), Duration::from_secs(10));
        assert_eq!(c.off_delay_for("parking"), Duration::from_secs(60));
        assert_eq!(c.off_delay_for("fire"), Duration::from_secs(30));
        assert_eq!(default_off_delays().len(), 14);
    }
}
