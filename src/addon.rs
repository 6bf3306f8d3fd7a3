//! Home Assistant add-on mode: the Supervisor's `/data/options.json` mapped onto [`Config`],
//! and the broker asked from the Supervisor's services API when the user left it empty.
//!
//! Pure parts (no I/O): [`parse_options`], [`AddonOptions::apply`], [`parse_mqtt_service`],
//! [`options_path`]. Thin async shell over [`crate::http_client`]:
//! [`fetch_mqtt_service_once`], [`fetch_mqtt_service`], [`load`].
//!
//! Precedence: explicit add-on option > the Supervisor's MQTT service > the base
//! configuration (a TOML file, if any) > defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use secrecy::{ExposeSecret as _, SecretString};

use crate::config::{Config, ConfigError, DeviceSection, Problem, secret};
use crate::http_client::{self, FetchError};
use crate::sources::viewtron::config::{BasicAuthSection, ReceiverTlsSection};
use crate::spool::SpoolConfig;

/// Where the Supervisor writes the validated options.
pub const DEFAULT_OPTIONS_PATH: &str = "/data/options.json";
/// Base URL of the Supervisor API inside an add-on container.
pub const DEFAULT_SUPERVISOR_URL: &str = "http://supervisor";
/// Optional full TOML configuration in the add-on's public config folder (`addon_config`
/// map), used as the base under the UI options.
pub const ADVANCED_CONFIG_PATH: &str = "/config/camqtt.toml";
/// Spool size limit in add-on mode (SD cards and small disks): 512 MiB.
pub const ADDON_SPOOL_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Where Home Assistant keeps certificates (`map: [ssl]`); `certfile` / `keyfile` are
/// relative to it.
pub const ADDON_SSL_DIR: &str = "/ssl";
/// Default `certfile`: Home Assistant's convention (Let's Encrypt / DuckDNS add-ons).
pub const DEFAULT_CERTFILE: &str = "fullchain.pem";
/// Default `keyfile`.
pub const DEFAULT_KEYFILE: &str = "privkey.pem";
/// The FTP server's port inside the add-on container (`ports: 21/tcp`; the host port is the
/// user's choice, off by default).
pub const ADDON_FTP_PORT: u16 = 21;
/// The passive FTP data ports inside the container, mapped one to one on the host (a
/// `227` reply names the port the camera must connect to, so host and container agree).
pub const ADDON_FTP_PASSIVE_PORTS: std::ops::RangeInclusive<u16> = 50100..=50109;
/// The SMTP server's port inside the add-on container (`ports: 25/tcp`, off by default).
pub const ADDON_SMTP_PORT: u16 = 25;
/// The web page's port inside the container: Home Assistant's ingress port (the Supervisor's
/// default `ingress_port`), also `ports: 8099/tcp`, unmapped by default.
pub const ADDON_WEB_PORT: u16 = 8099;
/// The Supervisor's ingress proxy: the only peer of the web port without `web_token`, and one
/// that needs no credentials (Home Assistant has authenticated the user).
pub const INGRESS_PROXY: &str = "172.30.32.2";
/// The archive's folder: Home Assistant's media folder (`map: media:rw`), so that HA's media
/// browser shows the pictures.
pub const ADDON_ARCHIVE_DIR: &str = "/media/camqtt";

/// The add-on options as the Supervisor stores them (`config.yaml` `options`/`schema`).
/// Empty strings count as "not set" (the UI stores cleared text fields as `""`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AddonOptions {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub log_level: Option<String>,
    /// Broker; empty: the MQTT service of the Supervisor (the Mosquitto add-on).
    pub mqtt: MqttOptions,
    /// Root of every published topic.
    pub base_topic: Option<String>,
    /// Home Assistant discovery prefix.
    pub discovery_prefix: Option<String>,
    /// Friendly names, ids and areas of cameras and NVR channels.
    pub cameras: Vec<CameraOption>,
    /// Seconds until a category's binary sensor turns off without a stop signal.
    pub off_delays: BTreeMap<String, f64>,
    /// Image retain flags.
    pub images: ImageOptions,
    /// The camera receiver: HTTP Basic auth and allow-list.
    pub receiver: ReceiverOptions,
    /// HTTPS on the receiver port (Home Assistant's `ssl` / `certfile` / `keyfile`
    /// convention); plain HTTP keeps working on the same port.
    pub ssl: Option<bool>,
    /// PEM certificate chain, relative to [`ADDON_SSL_DIR`]; default [`DEFAULT_CERTFILE`].
    pub certfile: Option<String>,
    /// PEM private key, relative to [`ADDON_SSL_DIR`]; default [`DEFAULT_KEYFILE`].
    pub keyfile: Option<String>,
    /// The FTP server cameras upload snapshots to.
    pub ftp: FtpOptions,
    /// FTP logins with passwords; empty: any login is accepted and names the camera.
    pub ftp_users: Vec<LoginOption>,
    /// The SMTP server cameras e-mail snapshots to.
    pub smtp: SmtpOptions,
    /// SMTP logins with passwords; empty: any login (or none) is accepted.
    pub smtp_users: Vec<LoginOption>,
    /// Cameras whose snapshot URL camqtt fetches.
    pub poll: Vec<PollOption>,
    /// The picture archive under [`ADDON_ARCHIVE_DIR`] (on unless switched off).
    pub archive: ArchiveOptions,
    /// A token that opens the web port to hosts other than the ingress proxy (Prometheus,
    /// a browser on the LAN once the port is mapped); empty: ingress only.
    #[serde(deserialize_with = "secret::optional")]
    pub web_token: Option<SecretString>,
    /// The object detector pictures are shown to.
    pub detector: DetectorOptions,
}

/// `detector` option group (`[detector]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DetectorOptions {
    /// Base URL of CodeProject.AI / DeepStack or DOODS2; empty: no detector.
    pub url: Option<String>,
    /// `deepstack` (also CodeProject.AI) or `doods`.
    pub kind: Option<String>,
    /// Wanted labels; empty: all.
    pub labels: Vec<String>,
    /// Minimum confidence, 0 to 1.
    pub min_confidence: Option<f64>,
    /// Drop pictures without a wanted object.
    pub suppress_unmatched: Option<bool>,
}

/// `archive` option group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ArchiveOptions {
    /// Keep pictures and event logs (default on).
    pub enabled: Option<bool>,
    /// Days pictures are kept.
    pub max_age_days: Option<f64>,
    /// Most gigabytes (10^9 bytes) the archive may take; 0: no size bound.
    pub max_size_gb: Option<f64>,
}

/// A login of the add-on's FTP or SMTP server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LoginOption {
    /// User name.
    pub username: Option<String>,
    /// Password. Not a string: refused without being echoed.
    #[serde(deserialize_with = "secret::optional")]
    pub password: Option<SecretString>,
}

/// `ftp` option group: the FTP server on [`ADDON_FTP_PORT`], passive data ports
/// [`ADDON_FTP_PASSIVE_PORTS`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FtpOptions {
    /// Run the FTP server.
    pub enabled: Option<bool>,
    /// IPv4 address of the Home Assistant host that cameras reach, advertised for passive
    /// mode; empty: asked from the Supervisor's network API ([`parse_network_info`]).
    pub passive_address: Option<String>,
    /// Refuse logins that are not in `ftp_users`.
    pub require_password: Option<bool>,
}

/// `smtp` option group: the SMTP server on [`ADDON_SMTP_PORT`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SmtpOptions {
    /// Run the SMTP server.
    pub enabled: Option<bool>,
}

/// One entry of `poll` (a `[[poll]]` section, see `docs/sources/poll.md`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PollOption {
    /// Device id.
    pub id: Option<String>,
    /// Device name.
    pub name: Option<String>,
    /// Snapshot URL (or `preset` + `host` + `channel`).
    pub url: Option<String>,
    /// `hikvision`, `dahua`, `amcrest` or `generic`.
    pub preset: Option<String>,
    /// Camera host (`host[:port]`) for a preset.
    pub host: Option<String>,
    /// Channel for a preset.
    pub channel: Option<u32>,
    /// User name (Basic or Digest).
    pub username: Option<String>,
    /// Password. Not a string: refused without being echoed.
    #[serde(deserialize_with = "secret::optional")]
    pub password: Option<SecretString>,
    /// Seconds between snapshots; 0: only on command.
    pub interval: Option<u64>,
}

/// `mqtt` option group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MqttOptions {
    /// `mqtt://host[:port]`, `mqtts://host[:port]` or `host[:port]`.
    pub broker: Option<String>,
    /// User name (overrides the Supervisor's).
    pub username: Option<String>,
    /// Password (overrides the Supervisor's). Not a string: refused without being echoed.
    #[serde(deserialize_with = "secret::optional")]
    pub password: Option<SecretString>,
}

/// One entry of `cameras`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CameraOption {
    /// Home Assistant device name.
    pub name: Option<String>,
    /// Match by MAC.
    pub mac: Option<String>,
    /// Match by serial number.
    pub serial: Option<String>,
    /// Match by the address the device posts from.
    pub peer: Option<String>,
    /// NVR channel.
    pub channel: Option<u32>,
    /// Topic id.
    pub id: Option<String>,
    /// Suggested Home Assistant area.
    pub area: Option<String>,
    /// Match by the FTP login the camera uploads with.
    pub ftp_user: Option<String>,
    /// Match by the SMTP login the camera mails with.
    pub smtp_user: Option<String>,
    /// Match by the sender address of the camera's mails.
    pub smtp_from: Option<String>,
    /// Minutes without anything from the camera before it is unavailable.
    pub expect_every: Option<u64>,
}

/// `images` option group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ImageOptions {
    /// Publish `camera/<category>/image` at all.
    pub per_category: Option<bool>,
    /// Retain `camera/<device>/<category>/image|target`.
    pub retain_per_camera: Option<bool>,
    /// Retain `camera/<category>/image`.
    pub retain_per_category: Option<bool>,
    /// Also publish images as base64 JSON.
    pub json_base64: Option<bool>,
}

/// `receiver` option group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReceiverOptions {
    /// HTTP Basic user name the cameras must send.
    pub username: Option<String>,
    /// HTTP Basic password. Not a string: refused without being echoed.
    #[serde(deserialize_with = "secret::optional")]
    pub password: Option<SecretString>,
    /// Addresses or CIDR blocks allowed to post; empty: everyone.
    pub allow: Vec<String>,
}

/// What the Supervisor's services API says about the MQTT broker.
#[derive(Debug, Clone)]
pub struct MqttService {
    /// Providing add-on (`core_mosquitto`).
    pub addon: String,
    /// Host name (`core-mosquitto`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS.
    pub ssl: bool,
    /// MQTT protocol version (`3.1.1`).
    pub protocol: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password (never logged).
    pub password: Option<SecretString>,
}

/// Equal when every field is, the passwords compared in the clear (tests).
impl PartialEq for MqttService {
    fn eq(&self, other: &Self) -> bool {
        fn password(s: &MqttService) -> Option<&str> {
            s.password.as_ref().map(|p| p.expose_secret())
        }
        self.addon == other.addon
            && self.host == other.host
            && self.port == other.port
            && self.ssl == other.ssl
            && self.protocol == other.protocol
            && self.username == other.username
            && password(self) == password(other)
    }
}

impl Eq for MqttService {}

impl MqttService {
    /// `mqtt://host:port` or `mqtts://host:port` (no credentials).
    pub fn url(&self) -> String {
        let scheme = if self.ssl { "mqtts" } else { "mqtt" };
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Why add-on mode could not produce a configuration.
#[derive(Debug, thiserror::Error)]
pub enum AddonError {
    /// The options file could not be read or is not the expected JSON.
    #[error("add-on options {path}: {message}")]
    Options {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The options (or the base configuration) have problems.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// Talking to the Supervisor failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Outcomes of asking the Supervisor for the MQTT service, other than success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// `SUPERVISOR_TOKEN` is not set.
    #[error(
        "no MQTT broker configured and SUPERVISOR_TOKEN is not set, so the Supervisor cannot be asked for one; set the `mqtt.broker` option or run camqtt as a Home Assistant add-on"
    )]
    NoToken,
    /// The Supervisor rejected the token (401/403).
    #[error(
        "the Supervisor refused the request for the MQTT service (HTTP {status}: {message}); the add-on needs `services: [mqtt:want]`"
    )]
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// Supervisor's message.
        message: String,
    },
    /// No add-on provides MQTT (the Supervisor answers 400/404 or `result: error`).
    #[error(
        "no MQTT broker is available from the Supervisor ({message}); install and start the Mosquitto broker add-on, or set the `mqtt.broker` option"
    )]
    NoService {
        /// Supervisor's message.
        message: String,
    },
    /// The Supervisor could not be reached (connect, DNS, timeout, I/O).
    #[error("the Supervisor at {url} is unreachable: {message}")]
    Unreachable {
        /// Base URL.
        url: String,
        /// Cause.
        message: String,
    },
    /// The Supervisor answered something that is not the services API.
    #[error("unexpected answer from the Supervisor: {0}")]
    BadResponse(String),
}

impl ServiceError {
    /// Worth another attempt (the Supervisor may be restarting).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ServiceError::Unreachable { .. } | ServiceError::BadResponse(_)
        )
    }

    /// Short stable reason for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ServiceError::NoToken => "token_missing",
            ServiceError::Unauthorized { .. } => "unauthorized",
            ServiceError::NoService { .. } => "no_mqtt_service",
            ServiceError::Unreachable { .. } => "supervisor_unreachable",
            ServiceError::BadResponse(_) => "bad_response",
        }
    }
}

/// Is add-on mode on, and where are the options? `explicit` is `--addon-options` /
/// `CAMQTT_ADDON_OPTIONS`; otherwise add-on mode is on when `SUPERVISOR_TOKEN` is set and
/// [`DEFAULT_OPTIONS_PATH`] is a file.
pub fn options_path(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    is_file: &dyn Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let token = supervisor_token(env);
    let default = Path::new(DEFAULT_OPTIONS_PATH);
    (token.is_some() && is_file(default)).then(|| default.to_path_buf())
}

/// `SUPERVISOR_TOKEN` (or the older `HASSIO_TOKEN`), when non-empty.
pub fn supervisor_token(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    env("SUPERVISOR_TOKEN")
        .or_else(|| env("HASSIO_TOKEN"))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// Parse the options JSON.
pub fn parse_options(json: &str) -> Result<AddonOptions, String> {
    serde_json::from_str(json).map_err(|e| e.to_string())
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_ref()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn non_empty_secret(s: &Option<SecretString>) -> Option<SecretString> {
    s.as_ref()
        .filter(|s| !s.expose_secret().is_empty())
        .cloned()
}

/// Broker text from the UI → URL: a bare `host[:port]` gets `mqtt://`.
pub fn broker_url(broker: &str) -> String {
    let b = broker.trim();
    if b.contains("://") {
        b.to_owned()
    } else {
        format!("mqtt://{b}")
    }
}

impl AddonOptions {
    /// True when the user left the broker empty (ask the Supervisor).
    pub fn needs_service(&self) -> bool {
        non_empty(&self.mqtt.broker).is_none()
    }

    /// The configured log level, if any.
    pub fn log_level(&self) -> Option<String> {
        non_empty(&self.log_level)
    }

    /// Map the options onto `base` (defaults or a TOML file). `data_dir` holds the spool
    /// (`/data` → `/data/spool`); `service` is the Supervisor's broker when the user left
    /// `mqtt.broker` empty. Problems name the add-on option (`cameras[0].mac`).
    pub fn apply(
        &self,
        base: Config,
        data_dir: &Path,
        service: Option<&MqttService>,
    ) -> Result<Config, Vec<Problem>> {
        self.apply_with(base, data_dir, service, None)
    }

    /// [`AddonOptions::apply`] with the host's address from the Supervisor's network API
    /// ([`parse_network_info`]), advertised for passive FTP when `ftp.passive_address` is
    /// empty.
    pub fn apply_with(
        &self,
        mut base: Config,
        data_dir: &Path,
        service: Option<&MqttService>,
        network: Option<std::net::Ipv4Addr>,
    ) -> Result<Config, Vec<Problem>> {
        let mut problems = Vec::new();
        self.apply_mqtt(&mut base, service);
        self.apply_topics(&mut base, &mut problems);
        self.apply_receiver(&mut base, &mut problems);
        self.apply_cameras(&mut base, &mut problems);
        self.apply_sources(&mut base, network, &mut problems);
        self.apply_archive_and_web(&mut base, &mut problems);
        self.apply_detector(&mut base, &mut problems);
        if base.spool.dir == SpoolConfig::default().dir {
            base.spool.dir = data_dir.join("spool");
            base.spool.max_bytes = base.spool.max_bytes.min(ADDON_SPOOL_MAX_BYTES);
        }
        problems.extend(base.validate().into_iter().map(|mut p| {
            p.path = option_name(&p.path);
            p
        }));
        if problems.is_empty() {
            Ok(base)
        } else {
            Err(problems)
        }
    }

    /// Broker: explicit option > Supervisor service > base configuration; credentials of the
    /// options win over the service's.
    fn apply_mqtt(&self, base: &mut Config, service: Option<&MqttService>) {
        if let Some(b) = non_empty(&self.mqtt.broker) {
            base.mqtt.url = vec![broker_url(&b)];
        } else if let Some(s) = service {
            base.mqtt.url = vec![s.url()];
            base.mqtt.username = s.username.clone().filter(|u| !u.is_empty());
            base.mqtt.password = non_empty_secret(&s.password);
            base.mqtt.password_file = None;
        }
        if let Some(u) = non_empty(&self.mqtt.username) {
            base.mqtt.username = Some(u);
        }
        if let Some(p) = non_empty_secret(&self.mqtt.password) {
            base.mqtt.password = Some(p);
            base.mqtt.password_file = None;
        }
    }

    /// Topic roots, off delays (seconds; a negative or non-finite one is a problem at
    /// `off_delays.<category>`) and image flags.
    fn apply_topics(&self, base: &mut Config, problems: &mut Vec<Problem>) {
        if let Some(t) = non_empty(&self.base_topic) {
            base.mqtt.base_topic = t;
        }
        if let Some(p) = non_empty(&self.discovery_prefix) {
            base.homeassistant.discovery_prefix = p;
        }
        for (name, secs) in &self.off_delays {
            match Duration::try_from_secs_f64(*secs) {
                Ok(d) => base.categories.entry(name.clone()).or_default().off_delay = Some(d),
                Err(_) => problems.push(Problem::new(
                    format!("off_delays.{name}"),
                    "must be between 0 and 86400 seconds",
                )),
            }
        }
        let i = &self.images;
        if let Some(v) = i.retain_per_camera {
            base.images.retain_device = v;
        }
        if let Some(v) = i.per_category {
            base.images.category_topic = v;
        }
        if let Some(v) = i.retain_per_category {
            base.images.retain_category = v;
        }
        if let Some(v) = i.json_base64 {
            base.images.json_base64 = v;
        }
    }

    /// The receiver: Basic auth (user and password together), allow-list, HTTPS under
    /// [`ADDON_SSL_DIR`] with plain HTTP kept for the health check.
    fn apply_receiver(&self, base: &mut Config, problems: &mut Vec<Problem>) {
        let r = &self.receiver;
        match (non_empty(&r.username), non_empty_secret(&r.password)) {
            (Some(username), Some(password)) => {
                base.viewtron.auth = Some(BasicAuthSection {
                    username,
                    password: Some(password),
                    password_file: None,
                })
            }
            (None, None) => {}
            (Some(_), None) => problems.push(Problem::new(
                "receiver.password",
                "receiver.username needs receiver.password",
            )),
            (None, Some(_)) => problems.push(Problem::new(
                "receiver.username",
                "receiver.password needs receiver.username",
            )),
        }
        let allow: Vec<String> = r
            .allow
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if !allow.is_empty() {
            base.viewtron.allow = allow;
        }
        if self.ssl == Some(true) {
            let ssl = Path::new(ADDON_SSL_DIR);
            let certfile = non_empty(&self.certfile).unwrap_or_else(|| DEFAULT_CERTFILE.into());
            let keyfile = non_empty(&self.keyfile).unwrap_or_else(|| DEFAULT_KEYFILE.into());
            base.viewtron.tls = Some(ReceiverTlsSection {
                cert_file: ssl.join(certfile),
                key_file: ssl.join(keyfile),
                plain_http: true,
            });
        }
        if base.viewtron.tls.as_ref().is_some_and(|t| !t.plain_http) {
            // `camqtt healthcheck` (the image's HEALTHCHECK) asks /healthz over plain HTTP;
            // refusing it would make the Supervisor restart the add-on over and over.
            problems.push(Problem::new(
                "viewtron.tls.plain_http",
                "must stay true in the add-on: its health check uses plain HTTP",
            ));
        }
    }

    /// The FTP and SMTP servers on their fixed container ports ([`ADDON_FTP_PORT`],
    /// [`ADDON_SMTP_PORT`], passive data ports [`ADDON_FTP_PASSIVE_PORTS`]; the host ports are
    /// the add-on's network settings), and `poll` entries appended to the base's `[[poll]]`.
    /// `network`: the host's address from the Supervisor, for passive FTP when the option is
    /// empty.
    fn apply_sources(
        &self,
        base: &mut Config,
        network: Option<std::net::Ipv4Addr>,
        problems: &mut Vec<Problem>,
    ) {
        let logins = |users: &[LoginOption], key: &str, problems: &mut Vec<Problem>| {
            let mut out = Vec::new();
            for (n, u) in users.iter().enumerate() {
                match (non_empty(&u.username), non_empty_secret(&u.password)) {
                    (Some(name), Some(pw)) => out.push((name, pw)),
                    _ => problems.push(Problem::new(
                        format!("{key}[{n}]"),
                        "needs a user name and a password",
                    )),
                }
            }
            out
        };
        let f = &self.ftp;
        if f.enabled == Some(true) {
            let ftp = &mut base.ftp;
            ftp.listen = Some(std::net::SocketAddr::from(([0, 0, 0, 0], ADDON_FTP_PORT)));
            ftp.passive_ports = format!(
                "{}-{}",
                ADDON_FTP_PASSIVE_PORTS.start(),
                ADDON_FTP_PASSIVE_PORTS.end()
            );
            match non_empty(&f.passive_address).map(|a| a.parse::<std::net::Ipv4Addr>()) {
                Some(Ok(a)) => ftp.passive_address = Some(a),
                Some(Err(_)) => problems.push(Problem::new(
                    "ftp.passive_address",
                    "must be the IPv4 address of the Home Assistant host",
                )),
                None if ftp.passive_address.is_none() => ftp.passive_address = network,
                None => {}
            }
            if let Some(r) = f.require_password {
                ftp.require_password = r;
            }
            for (username, password) in logins(&self.ftp_users, "ftp_users", problems) {
                ftp.users.push(crate::sources::ftp::config::FtpUserSection {
                    username,
                    password: Some(password),
                    password_file: None,
                });
            }
        }
        let m = &self.smtp;
        if m.enabled == Some(true) {
            base.smtp.listen = Some(std::net::SocketAddr::from(([0, 0, 0, 0], ADDON_SMTP_PORT)));
            for (username, password) in logins(&self.smtp_users, "smtp_users", problems) {
                base.smtp
                    .users
                    .push(crate::sources::smtp::config::SmtpUser {
                        username,
                        password: Some(password),
                        password_file: None,
                    });
            }
        }
        for (n, p) in self.poll.iter().enumerate() {
            let mut entry = crate::sources::poll::PollConfig {
                id: non_empty(&p.id).unwrap_or_default(),
                name: non_empty(&p.name),
                url: non_empty(&p.url),
                host: non_empty(&p.host),
                username: non_empty(&p.username),
                password: non_empty_secret(&p.password),
                ..Default::default()
            };
            if let Some(preset) = non_empty(&p.preset) {
                use serde::de::IntoDeserializer as _;
                let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
                    preset.as_str().into_deserializer();
                match crate::sources::poll::preset::Preset::deserialize(de) {
                    Ok(v) => entry.preset = Some(v),
                    Err(_) => problems.push(Problem::new(
                        format!("poll[{n}].preset"),
                        "must be hikvision, dahua, amcrest or generic",
                    )),
                }
            }
            if let Some(c) = p.channel {
                entry.channel = c;
            }
            if let Some(i) = p.interval {
                entry.interval = Duration::from_secs(i);
            }
            base.poll.push(entry);
        }
    }

    /// `cameras` replace the base's `[[devices]]` when given.
    fn apply_cameras(&self, base: &mut Config, problems: &mut Vec<Problem>) {
        if !self.cameras.is_empty() {
            base.devices.clear();
        }
        for (n, c) in self.cameras.iter().enumerate() {
            let peer = non_empty(&c.peer).and_then(|p| match p.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    problems.push(Problem::new(
                        format!("cameras[{n}].peer"),
                        format!("`{p}` is not an IP address"),
                    ));
                    None
                }
            });
            base.devices.push(DeviceSection {
                mac: non_empty(&c.mac),
                serial: non_empty(&c.serial),
                peer,
                channel: c.channel,
                id: non_empty(&c.id),
                name: non_empty(&c.name),
                area: non_empty(&c.area),
                ftp_user: non_empty(&c.ftp_user),
                smtp_user: non_empty(&c.smtp_user),
                smtp_from: non_empty(&c.smtp_from),
                expect_every: c
                    .expect_every
                    .map(|m| Duration::from_secs(m.saturating_mul(60))),
                ..DeviceSection::default()
            });
        }
    }
}

impl AddonOptions {
    /// The archive under [`ADDON_ARCHIVE_DIR`] (on by default, unless the base configuration
    /// names another folder) and the web page on [`ADDON_WEB_PORT`] for ingress: the ingress
    /// proxy needs no credentials; with `web_token` other hosts may read with it, without it
    /// only the proxy may connect.
    fn apply_archive_and_web(&self, base: &mut Config, problems: &mut Vec<Problem>) {
        let a = &self.archive;
        if a.enabled.unwrap_or(true) {
            if base.archive.dir.is_none() {
                base.archive.dir = Some(PathBuf::from(ADDON_ARCHIVE_DIR));
            }
            if let Some(days) = a.max_age_days {
                match Duration::try_from_secs_f64(days * 86_400.0) {
                    Ok(d) => base.archive.max_age = d,
                    Err(_) => problems.push(Problem::new(
                        "archive.max_age_days",
                        "must be a positive number of days",
                    )),
                }
            }
            if let Some(gb) = a.max_size_gb {
                if gb.is_finite() && gb >= 0.0 {
                    base.archive.max_bytes = (gb * 1e9) as u64;
                } else {
                    problems.push(Problem::new(
                        "archive.max_size_gb",
                        "must be 0 (no bound) or a positive number",
                    ));
                }
            }
        } else {
            base.archive.dir = None;
        }
        if base.web.listen.is_none() {
            base.web.listen = Some(std::net::SocketAddr::from(([0, 0, 0, 0], ADDON_WEB_PORT)));
        }
        base.web.trusted.push(INGRESS_PROXY.to_owned());
        match non_empty_secret(&self.web_token) {
            Some(t) => {
                base.web.token = Some(t);
                base.web.token_file = None;
            }
            None if base.web.token.is_none()
                && base.web.token_file.is_none()
                && base.web.auth.is_none() =>
            {
                base.web.allow = vec![INGRESS_PROXY.to_owned()];
            }
            None => {}
        }
    }
}

impl AddonOptions {
    /// The `detector` options onto `[detector]` (only what is set).
    fn apply_detector(&self, base: &mut Config, problems: &mut Vec<Problem>) {
        let d = &self.detector;
        if let Some(url) = non_empty(&d.url) {
            base.detector.url = Some(url);
        }
        match non_empty(&d.kind).as_deref() {
            None => {}
            Some("deepstack") => base.detector.kind = crate::detect::DetectorKind::Deepstack,
            Some("doods") => base.detector.kind = crate::detect::DetectorKind::Doods,
            Some(_) => problems.push(Problem::new("detector.kind", "must be deepstack or doods")),
        }
        let labels: Vec<String> = d
            .labels
            .iter()
            .filter(|l| !l.trim().is_empty())
            .cloned()
            .collect();
        if !labels.is_empty() {
            base.detector.labels = labels;
        }
        if let Some(c) = d.min_confidence {
            base.detector.min_confidence = c;
        }
        if let Some(s) = d.suppress_unmatched {
            base.detector.unmatched = if s {
                crate::detect::Unmatched::Suppress
            } else {
                crate::detect::Unmatched::Publish
            };
        }
    }
}

/// Configuration key → add-on option name, for messages the user can act on in the UI.
pub fn option_name(config_path: &str) -> String {
    const MAP: &[(&str, &str)] = &[
        ("devices", "cameras"),
        ("viewtron.allow", "receiver.allow"),
        ("viewtron.auth.", "receiver."),
        ("mqtt.base_topic", "base_topic"),
        ("homeassistant.discovery_prefix", "discovery_prefix"),
        ("mqtt.url", "mqtt.broker"),
        ("viewtron.tls.cert_file", "certfile"),
        ("viewtron.tls.key_file", "keyfile"),
        ("archive.max_age", "archive.max_age_days"),
        ("archive.max_bytes", "archive.max_size_gb"),
        ("web.token", "web_token"),
    ];
    for (from, to) in MAP {
        if let Some(rest) = config_path.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    if let Some(rest) = config_path.strip_prefix("categories.") {
        let cat = rest.strip_suffix(".off_delay").unwrap_or(rest);
        return format!("off_delays.{cat}");
    }
    config_path.to_owned()
}

/// Interpret the Supervisor's answer to `GET /services/mqtt`.
pub fn parse_mqtt_service(status: u16, body: &[u8]) -> Result<MqttService, ServiceError> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = json
        .as_ref()
        .and_then(|j| j.get("message"))
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(200).collect();
            if text.trim().is_empty() {
                format!("HTTP {status}")
            } else {
                text.trim().to_owned()
            }
        });
    if status == 401 || status == 403 {
        return Err(ServiceError::Unauthorized { status, message });
    }
    let result = json
        .as_ref()
        .and_then(|j| j.get("result"))
        .and_then(|r| r.as_str());
    if status == 400 || status == 404 || (result == Some("error") && status < 500) {
        return Err(ServiceError::NoService { message });
    }
    if status != 200 {
        return Err(ServiceError::BadResponse(format!(
            "HTTP {status}: {message}"
        )));
    }
    let Some(json) = json.as_ref() else {
        return Err(ServiceError::BadResponse("body is not JSON".into()));
    };
    if result != Some("ok") {
        return Err(ServiceError::BadResponse(format!(
            "result is {:?}, expected \"ok\"",
            result.unwrap_or("missing")
        )));
    }
    let data = json
        .get("data")
        .filter(|d| d.is_object())
        .ok_or_else(|| ServiceError::BadResponse("no `data` object".into()))?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .filter(|s| !s.is_empty())
    };
    let host = text("host").ok_or_else(|| ServiceError::BadResponse("no `data.host`".into()))?;
    // The documentation shows the port as a string, Mosquitto publishes a number.
    let port = match data.get("port") {
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(serde_json::Value::String(s)) => s.trim().parse::<u16>().ok(),
        _ => None,
    }
    .filter(|p| *p != 0)
    .ok_or_else(|| ServiceError::BadResponse("no valid `data.port`".into()))?;
    let ssl = match data.get("ssl") {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    Ok(MqttService {
        addon: text("addon").unwrap_or_else(|| "unknown".into()),
        host,
        port,
        ssl,
        protocol: text("protocol"),
        username: text("username"),
        password: text("password").map(SecretString::from),
    })
}

/// How to reach the Supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    /// Base URL (`SUPERVISOR_URL`, default [`DEFAULT_SUPERVISOR_URL`]).
    pub url: String,
    /// `SUPERVISOR_TOKEN` (or `HASSIO_TOKEN`); never logged.
    pub token: Option<SecretString>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts while the Supervisor is unreachable (1 = no retry).
    pub attempts: u32,
    /// Delay before the second attempt; doubles each time.
    pub backoff: Duration,
}

impl SupervisorSettings {
    /// From the environment: `SUPERVISOR_URL`, `SUPERVISOR_TOKEN` / `HASSIO_TOKEN`; 5 attempts
    /// 1, 2, 4, 8 s apart, 10 s per request.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Self {
        SupervisorSettings {
            url: env("SUPERVISOR_URL")
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| DEFAULT_SUPERVISOR_URL.into()),
            token: supervisor_token(env).map(SecretString::from),
            timeout: Duration::from_secs(10),
            attempts: 5,
            backoff: Duration::from_secs(1),
        }
    }
}

/// `GET <supervisor>/services/mqtt` once, with `Authorization: Bearer <token>`.
pub async fn fetch_mqtt_service_once(s: &SupervisorSettings) -> Result<MqttService, ServiceError> {
    let token = s.token.as_ref().ok_or(ServiceError::NoToken)?;
    let answer = supervisor_get(s, token, "/services/mqtt");
    let (status, body) = answer.await.map_err(|e| ServiceError::Unreachable {
        url: s.url.clone(),
        message: e.to_string(),
    })?;
    parse_mqtt_service(status, &body)
}

/// Ask the Supervisor for the MQTT service, retrying while it is unreachable; logs one line
/// per outcome (never the password).
pub async fn fetch_mqtt_service(s: &SupervisorSettings) -> Result<MqttService, ServiceError> {
    let mut delay = s.backoff;
    let mut attempt = 1;
    loop {
        match fetch_mqtt_service_once(s).await {
            Ok(svc) => {
                tracing::info!(
                    addon = %svc.addon,
                    host = %svc.host,
                    port = svc.port,
                    ssl = svc.ssl,
                    username = svc.username.as_deref().unwrap_or(""),
                    password = if svc.password.is_some() { "set" } else { "none" },
                    "using the MQTT broker provided by the Supervisor"
                );
                return Ok(svc);
            }
            Err(e) if e.is_transient() && attempt < s.attempts.max(1) => {
                tracing::warn!(
                    reason = e.reason(),
                    attempt,
                    of = s.attempts,
                    retry_in_s = delay.as_secs_f64(),
                    error = %e,
                    "asking the Supervisor for the MQTT service failed; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
                attempt += 1;
            }
            Err(e) => {
                tracing::error!(reason = e.reason(), error = %e, "no MQTT broker from the Supervisor");
                return Err(e);
            }
        }
    }
}

/// The IPv4 address of the Home Assistant host from the Supervisor's `GET /network/info`
/// (`data.interfaces[]`, each with `primary`, `connected` and `ipv4.address` as
/// `["192.168.1.72/24"]`): the primary interface's first address, else the first connected
/// interface's. `None` for any other status or shape.
pub fn parse_network_info(status: u16, body: &[u8]) -> Option<std::net::Ipv4Addr> {
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let interfaces = v.pointer("/data/interfaces")?.as_array()?;
    let first_v4 = |i: &serde_json::Value| -> Option<std::net::Ipv4Addr> {
        (i.pointer("/ipv4/address")?.as_array()?.iter())
            .filter_map(|a| a.as_str()?.split('/').next()?.parse().ok())
            .next()
    };
    let flag = |i: &serde_json::Value, k: &str| i.get(k).and_then(|b| b.as_bool()) == Some(true);
    (interfaces.iter().filter(|i| flag(i, "primary")))
        .chain(interfaces.iter().filter(|i| flag(i, "connected")))
        .find_map(first_v4)
}

/// `GET <supervisor><path>` with the add-on's token: the status and the body (JSON, capped at
/// [`http_client::MAX_JSON_BODY`]).
async fn supervisor_get(
    s: &SupervisorSettings,
    token: &SecretString,
    path: &str,
) -> Result<(u16, Vec<u8>), FetchError> {
    let url = format!("{}{path}", s.url.trim().trim_end_matches('/'));
    let resp = http_client::client()?
        .get(url)
        .bearer_auth(token.expose_secret())
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(s.timeout)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((
        status,
        http_client::read_body(resp, http_client::MAX_JSON_BODY).await?,
    ))
}

/// Ask the Supervisor for the host's address ([`parse_network_info`]); one attempt, one log
/// line either way.
pub async fn fetch_host_address(s: &SupervisorSettings) -> Option<std::net::Ipv4Addr> {
    let token = s.token.as_ref()?;
    match supervisor_get(s, token, "/network/info").await {
        Ok((status, body)) => {
            let found = parse_network_info(status, &body);
            match found {
                Some(a) => {
                    tracing::info!(address = %a, "passive FTP advertises the host address from the Supervisor")
                }
                None => tracing::warn!(
                    status,
                    "the Supervisor's network info has no host address: set the ftp passive_address option, or passive FTP uploads fail"
                ),
            }
            found
        }
        Err(e) => {
            tracing::warn!(error = %e, "asking the Supervisor for the host address failed: set the ftp passive_address option, or passive FTP uploads fail");
            None
        }
    }
}

/// Add-on mode: read the options at `options`, ask the Supervisor when the broker is empty,
/// and map everything onto `base`. The spool goes next to the options file
/// (`/data/options.json` → `/data/spool`).
pub async fn load(
    options: &Path,
    base: Config,
    supervisor: &SupervisorSettings,
) -> Result<Config, AddonError> {
    let opts = read_options(options)?;
    let service = if opts.needs_service() {
        Some(fetch_mqtt_service(supervisor).await?)
    } else {
        tracing::info!("add-on mode: using the broker set in the add-on options");
        None
    };
    let data_dir = options
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let host = if opts.ftp.enabled == Some(true)
        && non_empty(&opts.ftp.passive_address).is_none()
        && base.ftp.passive_address.is_none()
    {
        fetch_host_address(supervisor).await
    } else {
        None
    };
    let config = opts
        .apply_with(base, data_dir, service.as_ref(), host)
        .map_err(ConfigError::Invalid)?;
    tracing::info!(
        options = %options.display(),
        cameras = opts.cameras.len(),
        spool = %config.spool.dir.display(),
        "add-on options loaded"
    );
    Ok(config)
}

/// Read and parse the options file.
pub fn read_options(path: &Path) -> Result<AddonOptions, AddonError> {
    let err = |message: String| AddonError::Options {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse_options(&text).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(json: &str) -> AddonOptions {
        parse_options(json).expect("valid options")
    }

    fn svc() -> MqttService {
        MqttService {
            addon: "core_mosquitto".into(),
            host: "core-mosquitto".into(),
            port: 1883,
            ssl: false,
            protocol: Some("3.1.1".into()),
            username: Some("addons".into()),
            password: Some("s3cret".into()),
        }
    }

    #[test]
    fn add_on_mode_detection() {
        let env_tok = |k: &str| (k == "SUPERVISOR_TOKEN").then(|| "abc".to_string());
        let env_none = |_: &str| None;
        let yes = |_: &Path| true;
        let no = |_: &Path| false;
        assert_eq!(
            options_path(None, &env_tok, &yes),
            Some(PathBuf::from(DEFAULT_OPTIONS_PATH))
        );
        assert_eq!(options_path(None, &env_tok, &no), None);
        assert_eq!(options_path(None, &env_none, &yes), None);
        assert_eq!(
            options_path(Some(Path::new("/tmp/o.json")), &env_none, &no),
            Some(PathBuf::from("/tmp/o.json"))
        );
        let legacy = |k: &str| (k == "HASSIO_TOKEN").then(|| "x".to_string());
        assert_eq!(supervisor_token(&legacy).as_deref(), Some("x"));
        let blank = |k: &str| (k == "SUPERVISOR_TOKEN").then(|| "  ".to_string());
        assert_eq!(supervisor_token(&blank), None);
    }

    #[test]
    fn full_options_map_onto_the_config() {
        let o = opts(
            r#"{"log_level":"debug","mqtt":{"broker":"","username":"","password":""},
            "base_topic":"cams","discovery_prefix":"ha",
            "cameras":[{"name":"Gate","mac":"58-5B-69-40-F4-0D","id":"gate","area":"Drive"},
                       {"name":"NVR ch 2","serial":"N123","channel":2},
                       {"name":"Yard","peer":"192.168.1.50"}],
            "off_delays":{"lpr":15,"intrusion":45},
            "images":{"retain_per_camera":false,"per_category":false,"retain_per_category":true},
            "receiver":{"username":"cam","password":"pw","allow":["192.168.1.0/24"," "]}}"#,
        );
        assert!(o.needs_service());
        assert_eq!(o.log_level().as_deref(), Some("debug"));
        let c = o
            .apply(Config::default(), Path::new("/data"), Some(&svc()))
            .expect("valid");
        assert_eq!(c.mqtt.url, ["mqtt://core-mosquitto:1883"]);
        assert_eq!(c.mqtt.username.as_deref(), Some("addons"));
        assert_eq!(
            c.mqtt.password.as_ref().map(|p| p.expose_secret()),
            Some("s3cret")
        );
        assert_eq!(c.mqtt.base_topic, "cams");
        assert_eq!(c.homeassistant.discovery_prefix, "ha");
        assert_eq!(c.devices.len(), 3);
        assert_eq!(c.devices[0].mac.as_deref(), Some("58-5B-69-40-F4-0D"));
        assert_eq!(c.devices[0].area.as_deref(), Some("Drive"));
        assert_eq!(c.devices[1].channel, Some(2));
        assert_eq!(c.devices[2].peer, Some("192.168.1.50".parse().unwrap()));
        assert_eq!(c.categories["lpr"].off_delay, Some(Duration::from_secs(15)));
        assert_eq!(
            c.categories["intrusion"].off_delay,
            Some(Duration::from_secs(45))
        );
        assert!(!c.images.retain_device && c.images.retain_category);
        assert!(!c.images.category_topic);
        let auth = c.viewtron.auth.as_ref().expect("auth");
        assert_eq!(auth.username, "cam");
        assert_eq!(
            auth.password.as_ref().map(|p| p.expose_secret()),
            Some("pw")
        );
        assert_eq!(c.viewtron.allow, vec!["192.168.1.0/24".to_string()]);
        assert_eq!(c.spool.dir, PathBuf::from("/data/spool"));
        assert!(c.spool.max_bytes <= ADDON_SPOOL_MAX_BYTES);
    }

    #[test]
    fn explicit_broker_and_credentials_win_over_the_service() {
        let o = opts(r#"{"mqtt":{"broker":"10.0.0.2:1884","username":"me","password":"mine"}}"#);
        assert!(!o.needs_service());
        let c = o
            .apply(Config::default(), Path::new("/data"), Some(&svc()))
            .expect("valid");
        assert_eq!(c.mqtt.url, ["mqtt://10.0.0.2:1884"]);
        assert_eq!(c.mqtt.username.as_deref(), Some("me"));
        assert_eq!(
            c.mqtt.password.as_ref().map(|p| p.expose_secret()),
            Some("mine")
        );
        // Service broker with the user's own credentials.
        let o = opts(r#"{"mqtt":{"username":"me","password":"mine"}}"#);
        let c = o
            .apply(Config::default(), Path::new("/d"), Some(&svc()))
            .expect("valid");
        assert_eq!(c.mqtt.url, ["mqtt://core-mosquitto:1883"]);
        assert_eq!(c.mqtt.username.as_deref(), Some("me"));
        let tls = MqttService {
            ssl: true,
            port: 8883,
            ..svc()
        };
        assert_eq!(tls.url(), "mqtts://core-mosquitto:8883");
        let v6 = MqttService {
            host: "fd00::1".into(),
            ..svc()
        };
        assert_eq!(v6.url(), "mqtt://[fd00::1]:1883");
    }

    #[test]
    fn problems_name_the_add_on_option() {
        let o = opts(
            r#"{"base_topic":"a/#","cameras":[{"name":"x","mac":"zz"},{"name":"y","peer":"nope"}],
            "off_delays":{"lpr":-1},"receiver":{"username":"cam","allow":["300.1.1.1"]}}"#,
        );
        let problems = o
            .apply(Config::default(), Path::new("/data"), None)
            .expect_err("invalid");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "base_topic",
            "cameras[0].mac",
            "cameras[1].peer",
            "off_delays.lpr",
            "receiver.password",
            "receiver.allow[0]",
        ] {
            assert!(paths.contains(&want), "{want} missing in {paths:?}");
        }
        assert!(parse_options("{\"cameras\": 3}").is_err());
        assert!(parse_options("{}").is_ok());
    }

    #[test]
    fn services_api_answers() {
        let ok = br#"{"result":"ok","data":{"addon":"core_mosquitto","host":"core-mosquitto","port":1883,"ssl":false,"protocol":"3.1.1","username":"addons","password":"pw"}}"#;
        let s = parse_mqtt_service(200, ok).expect("ok");
        assert_eq!(s.host, "core-mosquitto");
        assert_eq!(s.port, 1883);
        assert_eq!(s.password.as_ref().map(|p| p.expose_secret()), Some("pw"));
        assert!(!format!("{s:?}").contains("pw\""));
        // Port as a string, as in the Supervisor documentation.
        let doc = br#"{"result":"ok","data":{"host":"h","port":"8883","ssl":true}}"#;
        let s = parse_mqtt_service(200, doc).expect("ok");
        assert_eq!((s.port, s.ssl, s.username), (8883, true, None));
        assert!(matches!(
            parse_mqtt_service(400, br#"{"result":"error","message":"Service not enabled"}"#),
            Err(ServiceError::NoService { message }) if message == "Service not enabled"
        ));
        assert!(matches!(
            parse_mqtt_service(200, br#"{"result":"error","message":"No mqtt"}"#),
            Err(ServiceError::NoService { .. })
        ));
        assert!(matches!(
            parse_mqtt_service(401, b"401: Unauthorized"),
            Err(ServiceError::Unauthorized { status: 401, .. })
        ));
        assert!(matches!(
            parse_mqtt_service(403, br#"{"result":"error","message":"Not allowed"}"#),
            Err(ServiceError::Unauthorized { status: 403, .. })
        ));
        assert!(matches!(
            parse_mqtt_service(502, b"bad gateway"),
            Err(ServiceError::BadResponse(_))
        ));
        assert!(matches!(
            parse_mqtt_service(200, br#"{"result":"ok","data":{"port":1883}}"#),
            Err(ServiceError::BadResponse(_))
        ));
        assert!(matches!(
            parse_mqtt_service(200, br#"{"result":"ok","data":{"host":"h","port":70000}}"#),
            Err(ServiceError::BadResponse(_))
        ));
        assert!(matches!(
            parse_mqtt_service(200, b"<html>"),
            Err(ServiceError::BadResponse(_))
        ));
    }

    #[test]
    fn ssl_options_map_onto_the_receiver_tls() {
        // Off by default, and when off the certificate options are ignored.
        let c = opts(r#"{"ssl":false,"certfile":"x.pem","keyfile":"y.pem"}"#)
            .apply(Config::default(), Path::new("/data"), Some(&svc()))
            .expect("valid");
        assert!(c.viewtron.tls.is_none());
        let c = opts("{}")
            .apply(Config::default(), Path::new("/data"), Some(&svc()))
            .expect("valid");
        assert!(c.viewtron.tls.is_none());
        // On: files under /ssl, plain HTTP still served (health check, cameras set to http).
        let c = opts(r#"{"ssl":true,"certfile":"fullchain.pem","keyfile":"privkey.pem"}"#)
            .apply(Config::default(), Path::new("/data"), Some(&svc()))
            .expect("valid");
        let t = c.viewtron.tls.as_ref().expect("tls");
        assert_eq!(t.cert_file, PathBuf::from("/ssl/fullchain.pem"));
        assert_eq!(t.key_file, PathBuf::from("/ssl/privkey.pem"));
        assert!(t.plain_http);
        // Empty names fall back to the convention; sub-folders of /ssl work.
        let c = opts(r#"{"ssl":true,"certfile":" ","keyfile":"cams/key.pem"}"#)
            .apply(Config::default(), Path::new("/data"), Some(&svc()))
            .expect("valid");
        let t = c.viewtron.tls.as_ref().expect("tls");
        assert_eq!(t.cert_file, PathBuf::from("/ssl/fullchain.pem"));
        assert_eq!(t.key_file, PathBuf::from("/ssl/cams/key.pem"));
        // An advanced camqtt.toml that refuses plain HTTP would break the health check.
        let base = crate::config::load_str(
            "[viewtron.tls]\ncert_file = \"/ssl/a.pem\"\nkey_file = \"/ssl/b.pem\"\nplain_http = false\n",
        )
        .unwrap();
        let problems = opts("{}")
            .apply(base, Path::new("/data"), Some(&svc()))
            .expect_err("plain_http = false");
        assert_eq!(problems[0].path, "viewtron.tls.plain_http");
    }

    #[test]
    fn option_names() {
        assert_eq!(option_name("devices[2].id"), "cameras[2].id");
        assert_eq!(option_name("categories.lpr.off_delay"), "off_delays.lpr");
        assert_eq!(option_name("viewtron.auth.username"), "receiver.username");
        assert_eq!(option_name("mqtt.url"), "mqtt.broker");
        assert_eq!(option_name("mqtt.keep_alive"), "mqtt.keep_alive");
        assert_eq!(option_name("viewtron.tls.cert_file"), "certfile");
    }

    #[test]
    fn detector_options_map_onto_the_detector_section() {
        let c = opts(
            r#"{"detector":{"url":"http://172.30.33.5:32168","kind":"deepstack","labels":["person","", "car"],
            "min_confidence":0.7,"suppress_unmatched":true}}"#,
        )
        .apply(Config::default(), Path::new("/data"), Some(&svc()))
        .expect("valid");
        assert_eq!(c.detector.url.as_deref(), Some("http://172.30.33.5:32168"));
        assert_eq!(c.detector.labels, ["person", "car"]);
        assert_eq!(c.detector.min_confidence, 0.7);
        assert_eq!(c.detector.unmatched, crate::detect::Unmatched::Suppress);
        let c = opts(r#"{"detector":{"url":""}}"#)
            .apply(Config::default(), Path::new("/data"), Some(&svc()))
            .expect("valid");
        assert!(c.detector.url.is_none(), "an empty URL is no detector");
        let problems = opts(r#"{"detector":{"url":"ftp://x","kind":"yolo","min_confidence":3}}"#)
            .apply(Config::default(), Path::new("/data"), Some(&svc()))
            .expect_err("invalid");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["detector.kind", "detector.url", "detector.min_confidence"]
        );
    }

    #[test]
    fn archive_on_by_default_and_web_page_for_ingress() {
        let c = opts("{}")
            .apply(Config::default(), Path::new("/data"), Some(&svc()))
            .expect("valid");
        assert_eq!(c.archive.dir.as_deref(), Some(Path::new(ADDON_ARCHIVE_DIR)));
        assert_eq!(c.web.listen.map(|a| a.port()), Some(ADDON_WEB_PORT));
        assert_eq!(c.web.trusted, [INGRESS_PROXY]);
        assert_eq!(
            c.web.allow,
            [INGRESS_PROXY],
            "without a token: ingress only"
        );
        assert!(c.web.token.is_none());
        let c = opts(
            r#"{"archive":{"enabled":true,"max_age_days":7,"max_size_gb":2.5},"web_token":"s3cret"}"#,
        )
        .apply(Config::default(), Path::new("/data"), Some(&svc()))
        .expect("valid");
        assert_eq!(c.archive.max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(c.archive.max_bytes, 2_500_000_000);
        assert!(
            c.web.allow.is_empty(),
            "a token opens the port to other hosts"
        );
        assert_eq!(
            c.web.token.as_ref().map(|t| t.expose_secret()),
            Some("s3cret")
        );
        let c = opts(r#"{"archive":{"enabled":false},"web_token":""}"#)
            .apply(Config::default(), Path::new("/data"), Some(&svc()))
            .expect("valid");
        assert!(c.archive.dir.is_none());
        assert_eq!(c.web.allow, [INGRESS_PROXY], "an empty token is no token");
        let problems = opts(r#"{"archive":{"max_age_days":-1,"max_size_gb":-2}}"#)
            .apply(Config::default(), Path::new("/data"), Some(&svc()))
            .expect_err("invalid");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["archive.max_age_days", "archive.max_size_gb"]);
    }

    #[test]
    fn sources_options_map_onto_the_ftp_smtp_and_poll_sections() {
        let o = opts(
            r#"{"ftp":{"enabled":true,"passive_address":"","require_password":true},
            "ftp_users":[{"username":"porch","password":"pw1"}],
            "smtp":{"enabled":true},"smtp_users":[{"username":"mailcam","password":"pw2"}],
            "poll":[{"id":"drive","name":"Drive","preset":"dahua","host":"192.168.1.70","channel":2,
                     "username":"admin","password":"pw3","interval":30},
                    {"id":"gate","url":"http://192.168.1.71/snapshot.jpg","interval":0}],
            "cameras":[{"name":"Porch","ftp_user":"porch","expect_every":90}]}"#,
        );
        let host: std::net::Ipv4Addr = "192.168.1.72".parse().unwrap();
        let c = o
            .apply_with(
                Config::default(),
                Path::new("/data"),
                Some(&svc()),
                Some(host),
            )
            .expect("valid");
        assert_eq!(c.ftp.listen.map(|a| a.port()), Some(ADDON_FTP_PORT));
        assert_eq!(c.ftp.passive_ports, "50100-50109");
        assert_eq!(
            c.ftp.passive_address,
            Some(host),
            "the Supervisor's host address"
        );
        assert!(c.ftp.require_password);
        assert_eq!(c.ftp.users[0].username, "porch");
        assert_eq!(c.smtp.listen.map(|a| a.port()), Some(ADDON_SMTP_PORT));
        assert_eq!(c.smtp.users[0].username, "mailcam");
        assert_eq!(c.poll.len(), 2);
        assert_eq!(
            (c.poll[0].preset.map(|p| p.as_str()), c.poll[0].channel),
            (Some("dahua"), 2)
        );
        assert_eq!(c.poll[0].interval, Duration::from_secs(30));
        assert_eq!(c.poll[1].interval, Duration::ZERO);
        assert_eq!(c.devices[0].ftp_user.as_deref(), Some("porch"));
        assert_eq!(
            c.devices[0].expect_every,
            Some(Duration::from_secs(90 * 60))
        );
        // An address in the option wins over the Supervisor's; off by default.
        let o = opts(r#"{"ftp":{"enabled":true,"passive_address":"10.0.0.2"}}"#);
        let c = o
            .apply_with(
                Config::default(),
                Path::new("/data"),
                Some(&svc()),
                Some(host),
            )
            .expect("valid");
        assert_eq!(c.ftp.passive_address, Some("10.0.0.2".parse().unwrap()));
        let c = opts("{}")
            .apply(Config::default(), Path::new("/data"), Some(&svc()))
            .expect("valid");
        assert!(c.ftp.listen.is_none() && c.smtp.listen.is_none() && c.poll.is_empty());
        // Problems name the option.
        let o = opts(
            r#"{"ftp":{"enabled":true,"passive_address":"host.local"},"ftp_users":[{"username":"a"}],
            "poll":[{"id":"x","preset":"axis","host":"h"}]}"#,
        );
        let problems = o
            .apply(Config::default(), Path::new("/data"), Some(&svc()))
            .expect_err("invalid");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in ["ftp.passive_address", "ftp_users[0]", "poll[0].preset"] {
            assert!(paths.contains(&want), "{want} missing in {paths:?}");
        }
    }

    #[test]
    fn network_api_answers() {
        let body = br#"{"result":"ok","data":{"interfaces":[
            {"interface":"docker0","primary":false,"connected":true,"ipv4":{"address":["172.30.32.1/23"]}},
            {"interface":"eth0","primary":true,"connected":true,"ipv4":{"method":"auto","address":["192.168.1.72/24"]}}]}}"#;
        assert_eq!(
            parse_network_info(200, body),
            Some("192.168.1.72".parse().unwrap())
        );
        let no_primary = br#"{"data":{"interfaces":[{"interface":"wlan0","connected":true,"ipv4":{"address":["10.1.2.3/8"]}}]}}"#;
        assert_eq!(
            parse_network_info(200, no_primary),
            Some("10.1.2.3".parse().unwrap())
        );
        let none = br#"{"data":{"interfaces":[{"interface":"eth0","primary":true,"ipv4":{"address":[]}}]}}"#;
        assert_eq!(parse_network_info(200, none), None);
        assert_eq!(parse_network_info(403, body), None);
        assert_eq!(parse_network_info(200, b"<html>"), None);
    }
}
