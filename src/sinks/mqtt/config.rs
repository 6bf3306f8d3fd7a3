//! Runtime configuration of the MQTT sink.
//!
//! Plain structs, no serde: the top-level configuration (TOML, environment, command line)
//! builds them. [`MqttSinkConfig::validate`] checks what the sink relies on.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use url::{Host, Url};

/// Everything the MQTT sink needs.
#[derive(Debug, Clone)]
pub struct MqttSinkConfig {
    /// Where the broker is.
    pub broker: BrokerAddr,
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
            client_id: "camqtt".to_owned(),
            base_topic: "camera".to_owned(),
            keep_alive: Duration::from_secs(30),
            max_packet_size: None,
            protocol: super::link::ProtocolChoice::Auto,
            homeassistant: Some(HaConfig::default()),
            images: ImageConfig::default(),
            off_delay: default_off_delays(),
            default_off_delay: Duration::from_secs(30),
            alarm_max_hold: Duration::from_secs(600),
            bridge_name: "camqtt".to_owned(),
            state_dir: None,
        }
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

/// Image topic settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
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

/// Broker address and credentials. `Debug`/`Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name, if any.
    pub username: Option<String>,
    /// Password, if any. Never logged.
    pub password: Option<String>,
    /// TLS (`mqtts://`).
    pub tls: bool,
    /// CA, client certificate and server name for TLS; ignored without [`BrokerAddr::tls`].
    pub tls_options: TlsOptions,
}

/// TLS settings of the broker connection (rustls with ring).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA certificate(s) to trust; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs [`TlsOptions::key_file`].
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the client certificate.
    pub key_file: Option<PathBuf>,
    /// Name the server certificate must carry (and SNI); `None`: the broker host. The TCP
    /// connection still goes to the broker host.
    pub server_name: Option<String>,
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

impl BrokerAddr {
    /// Plain TCP, no credentials.
    pub fn tcp(host: impl Into<String>, port: u16) -> BrokerAddr {
        BrokerAddr {
            host: host.into(),
            port,
            username: None,
            password: None,
            tls: false,
            tls_options: TlsOptions::default(),
        }
    }

    /// Parse `mqtt://[user[:pass]@]host[:port]` (default port 1883) or `mqtts://…` (TLS,
    /// default port 8883); `tcp://` and `ssl://` / `tls://` are accepted as aliases. Parsing is
    /// the `url` crate's (RFC 3986 syntax, WHATWG rules); `mqtt` is not one of its special
    /// schemes, so the default ports are ours. User and password are percent-decoded (RFC 3986
    /// §2.1; a malformed `%` escape is an error, and an empty password is no password); the
    /// last `@` separates them from the host, so a password may contain a raw `@`. IPv6 hosts
    /// are written in brackets (`mqtt://[::1]:1883`). A trailing `/` is accepted; paths,
    /// queries and fragments are not. Error messages never contain the password.
    pub fn from_url(url: &str) -> Result<BrokerAddr, ConfigError> {
        let bad = |m: &str| ConfigError::BadUrl(m.to_owned());
        let url = url.trim();
        // The URL parser silently drops tabs and line breaks, which would change a password.
        if url.contains(['\t', '\n', '\r']) {
            return Err(bad("contains a tab or line break"));
        }
        let parsed = Url::parse(url).map_err(|e| match e {
            url::ParseError::RelativeUrlWithoutBase => {
                bad("expected mqtt://host[:port] or mqtts://host[:port]")
            }
            url::ParseError::EmptyHost => {
                bad("missing host (IPv6 hosts must be written in brackets: mqtt://[::1]:1883)")
            }
            // The parser's messages are fixed texts: they never echo the input.
            e => ConfigError::BadUrl(e.to_string()),
        })?;
        if !parsed.has_authority() {
            return Err(bad("expected mqtt://host[:port] or mqtts://host[:port]"));
        }
        let (tls, default_port) = match parsed.scheme() {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" | "tls" => (true, 8883),
            other => {
                return Err(ConfigError::BadUrl(format!(
                    "unsupported scheme {other:?} (use mqtt:// or mqtts://)"
                )));
            }
        };
        if !matches!(parsed.path(), "" | "/")
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(bad("a broker URL has no path, query or fragment"));
        }
        let host = match parsed.host() {
            Some(Host::Ipv6(ip)) => ip.to_string(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            // An opaque host (any host of a non-special scheme) comes back percent-encoded.
            Some(Host::Domain(d)) => percent_decode_str(d).decode_utf8_lossy().into_owned(),
            None => String::new(),
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("host contains whitespace or control characters"));
        }
        let port = match parsed.port() {
            None => default_port,
            Some(0) => return Err(bad("bad port \"0\"")),
            Some(p) => p,
        };
        let user =
            userinfo(parsed.username()).ok_or_else(|| bad("bad percent-encoding in user name"))?;
        let password = match parsed.password() {
            Some(p) => Some(userinfo(p).ok_or_else(|| bad("bad percent-encoding in password"))?),
            None => None,
        };
        let (username, password) = if user.is_empty() && password.is_none() {
            (None, None)
        } else {
            (Some(user), password)
        };
        Ok(BrokerAddr {
            host,
            port,
            username,
            password,
            tls,
            tls_options: TlsOptions::default(),
        })
    }
}

/// Percent-decode a user name or password as the `url` crate returns it; `None` when a `%` is
/// not followed by two hex digits (which `url` passes through unchanged) or the result is not
/// UTF-8.
fn userinfo(encoded: &str) -> Option<String> {
    let well_formed = encoded
        .split('%')
        .skip(1)
        .all(|t| t.len() >= 2 && t.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit));
    if !well_formed {
        return None;
    }
    percent_decode_str(encoded)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

impl fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://")?;
        if let Some(u) = &self.username {
            write!(f, "{u}")?;
            if self.password.is_some() {
                write!(f, ":***")?;
            }
            write!(f, "@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerAddr")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("tls_options", &self.tls_options)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_defaults() {
        let b = BrokerAddr::from_url("mqtt://broker.lan").unwrap();
        assert_eq!(b, BrokerAddr::tcp("broker.lan", 1883));
        let b = BrokerAddr::from_url("mqtts://broker.lan").unwrap();
        assert!(b.tls);
        assert_eq!(b.port, 8883);
        let b = BrokerAddr::from_url("mqtt://10.0.0.2:1884/").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("10.0.0.2", 1884));
    }

    #[test]
    fn url_credentials_percent_decoded() {
        let b = BrokerAddr::from_url("mqtt://us%40er:p%3Ass@w@host:1999").unwrap();
        assert_eq!(b.username.as_deref(), Some("us@er"));
        assert_eq!(b.password.as_deref(), Some("p:ss@w"));
        assert_eq!(b.host, "host");
        assert_eq!(b.port, 1999);
        let b = BrokerAddr::from_url("mqtt://onlyuser@host").unwrap();
        assert_eq!(b.username.as_deref(), Some("onlyuser"));
        assert_eq!(b.password, None);
        // An empty password is no password (the URL standard serialises both alike).
        let b = BrokerAddr::from_url("mqtt://onlyuser:@host").unwrap();
        assert_eq!(b.password, None);
        let b = BrokerAddr::from_url("mqtt://:pw@host").unwrap();
        assert_eq!(
            (b.username.as_deref(), b.password.as_deref()),
            (Some(""), Some("pw"))
        );
        let b = BrokerAddr::from_url("MQTTS://%C3%BCser:p%C3%A4ss@Broker.lan").unwrap();
        assert_eq!(b.username.as_deref(), Some("üser"));
        assert_eq!(b.password.as_deref(), Some("päss"));
        assert_eq!((b.host.as_str(), b.port, b.tls), ("Broker.lan", 8883, true));
        let b = BrokerAddr::from_url("tcp://[2001:db8::1]/").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("2001:db8::1", 1883));
    }

    #[test]
    fn url_ipv6() {
        let b = BrokerAddr::from_url("mqtt://[::1]:1884").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 1884));
        let b = BrokerAddr::from_url("mqtt://[fe80::1]").unwrap();
        assert_eq!(b.port, 1883);
        assert_eq!(b.to_string(), "mqtt://[fe80::1]:1883");
        assert!(BrokerAddr::from_url("mqtt://::1:1883").is_err());
        assert!(BrokerAddr::from_url("mqtt://[nothex]:1").is_err());
    }

    #[test]
    fn url_errors() {
        for bad in [
            "broker:1883",
            "http://broker",
            "mqtt://",
            "mqtt://host:0",
            "mqtt://host:99999",
            "mqtt://host:abc",
            "mqtt://host/path",
            "mqtt://u:%zz@host",
            "mqtt://host?x=1",
            "mqtt://host#f",
            "mqtt://a b",
            "mqtt://ho\tst",
            "mqtts://u:p@",
        ] {
            assert!(BrokerAddr::from_url(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn password_never_printed() {
        let b = BrokerAddr::from_url("mqtt://user:s3cr3t@host").unwrap();
        assert_eq!(b.to_string(), "mqtt://user:***@host:1883");
        let dbg = format!("{b:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(dbg.contains("***"));
        for bad in [
            "mqtt://user:s3cr3t%zz@host",
            "mqtt://user:s3cr3t@host:0",
            "mqtt://user:s3cr3t@host:99999",
            "mqtt://user:s3cr3t@host/path",
            "mqtt://user:s3/cr3t@host",
            "mqtt://user:s3cr3t@[::1",
            "mqtt://user:s3\tcr3t@host",
            "mqtt://user:s3cr3t@",
            "user:s3cr3t@host",
            "http://user:s3cr3t@host",
        ] {
            let err = BrokerAddr::from_url(bad).unwrap_err().to_string();
            assert!(
                !err.contains("s3cr3t") && !err.contains("cr3t"),
                "{bad}: {err}"
            );
        }
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
