//! `[viewtron]`: the Viewtron / TVT push receiver, with `[viewtron.auth]` (HTTP Basic auth) and
//! `[viewtron.tls]` (HTTPS on the same port). Deserialised straight from the file (serde,
//! `deny_unknown_fields`, the defaults below); [`ViewtronConfig::validate`] returns every
//! problem with its key path (`viewtron.<key>`), [`ViewtronConfig::http_config`] builds the
//! receiver's [`HttpConfig`] (limits, [`Guard`], [`ServerTls`]) when the source is created.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use serde::Deserialize;

use crate::config::{Problem, duration, secret};
use crate::sources::http_push::{Cidr, Guard, HttpConfig, ServerTls, TlsError};

/// Default receiver address (`viewtron.listen`).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:5002";
/// Upper bound of every `[viewtron]` duration: a week.
const MAX_DURATION: Duration = Duration::from_secs(7 * 86_400);
/// Upper bound of `viewtron.max_connections`: far above what a site's cameras need, far below
/// what the receiver's connection semaphore can hold (and what a process has descriptors for).
pub const MAX_CONNECTIONS: usize = 65_536;

/// `[viewtron]`. Durations are seconds (`30`, `0.5`) or strings (`"30s"`, `"5m"`), up to a
/// week each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewtronConfig {
    /// Run the receiver. Default `true`.
    pub enabled: bool,
    /// Listen address. Default [`DEFAULT_LISTEN`].
    pub listen: SocketAddr,
    /// Largest accepted body in bytes, at least 1024. Default 16 MiB.
    pub body_limit: usize,
    /// Time allowed to send a request's headers, at least 0.1 s. Default 30 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub header_timeout: Duration,
    /// Time allowed for a whole request (headers and body), at least 0.1 s. Default 120 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub request_timeout: Duration,
    /// Time a persistent connection may stay idle (must outlive the longest heartbeat, 120 s),
    /// at least 1 s. Default 300 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub idle_timeout: Duration,
    /// Concurrent connections, 1 to [`MAX_CONNECTIONS`]. Default 512.
    pub max_connections: usize,
    /// No post at all for this long marks a device offline, at least 1 s. Default 300 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub offline_after: Duration,
    /// Minimum time between two published traject summaries of one device. Default 1 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub traject_interval: Duration,
    /// Largest part of a body copied to `bridge/unparsed`, bytes. Default 4096.
    pub unparsed_body_cap: usize,
    /// HTTP Basic auth the devices must send; off when absent.
    pub auth: Option<BasicAuthSection>,
    /// Addresses or CIDR blocks allowed to post (`192.168.1.0/24`, `10.0.0.5`, `fd00::/8`);
    /// empty: everyone. Kept as text so that every bad entry is reported
    /// (`viewtron.allow[<i>]`).
    pub allow: Vec<String>,
    /// HTTPS on the receiver port; off when absent.
    pub tls: Option<ReceiverTlsSection>,
}

impl Default for ViewtronConfig {
    fn default() -> Self {
        ViewtronConfig {
            enabled: true,
            listen: DEFAULT_LISTEN.parse().expect("valid constant"),
            body_limit: 16 * 1024 * 1024,
            header_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(300),
            max_connections: 512,
            offline_after: Duration::from_secs(300),
            traject_interval: Duration::from_secs(1),
            unparsed_body_cap: 4096,
            auth: None,
            allow: Vec::new(),
            tls: None,
        }
    }
}

/// `[viewtron.auth]`: the HTTP Basic login the devices must send; the user name must not
/// hold `:` (RFC 7617 §2).
pub type BasicAuthSection = secret::Login;

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
    pub fn load(&self) -> Result<ServerTls, TlsError> {
        ServerTls::from_pem_files(&self.cert_file, &self.key_file, self.plain_http)
    }
}

impl ViewtronConfig {
    /// Every problem of `[viewtron]`, `[viewtron.auth]` and `[viewtron.tls]` (paths
    /// `viewtron.<key>`). No I/O: the TLS files are [`ViewtronConfig::check_files`].
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = self.check_limits();
        problems.extend(self.check_access());
        problems
    }

    /// Sizes, counts and durations.
    fn check_limits(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.body_limit < 1024 {
            problems.push(Problem::new(
                "viewtron.body_limit",
                "must be at least 1024 bytes",
            ));
        }
        let ms = Duration::from_millis;
        for (name, value, min) in [
            ("viewtron.header_timeout", self.header_timeout, ms(100)),
            ("viewtron.request_timeout", self.request_timeout, ms(100)),
            ("viewtron.idle_timeout", self.idle_timeout, ms(1000)),
            ("viewtron.offline_after", self.offline_after, ms(1000)),
            ("viewtron.traject_interval", self.traject_interval, ms(0)),
        ] {
            duration::check_range(&mut problems, name, value, min, MAX_DURATION);
        }
        if self.idle_timeout < Duration::from_secs(240) {
            tracing::debug!(
                idle_timeout_s = self.idle_timeout.as_secs_f64(),
                "idle timeout below 2 x 120 s heartbeat"
            );
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            problems.push(Problem::new(
                "viewtron.max_connections",
                format!("must be between 1 and {MAX_CONNECTIONS}"),
            ));
        }
        problems
    }

    /// The allow-list, the credentials and the TLS file names.
    fn check_access(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (i, a) in self.allow.iter().enumerate() {
            if let Err(e) = a.parse::<Cidr>() {
                problems.push(Problem::new(format!("viewtron.allow[{i}]"), e.to_string()));
            }
        }
        if let Some(auth) = &self.auth {
            if auth.username.is_empty() || auth.username.contains([':', '\0']) {
                problems.push(Problem::new(
                    "viewtron.auth.username",
                    "must be non-empty and without `:`",
                ));
            }
            match &auth.password {
                Some(p) if p.expose_secret().is_empty() => {
                    problems.push(Problem::new("viewtron.auth.password", "must not be empty"))
                }
                None if auth.password_file.is_none() => problems.push(Problem::new(
                    "viewtron.auth.password",
                    "auth needs a password or a password_file",
                )),
                _ => {}
            }
        }
        if let Some(tls) = &self.tls {
            for (key, path) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
                if path.as_os_str().is_empty() {
                    problems.push(Problem::new(
                        format!("viewtron.tls.{key}"),
                        "must name a PEM file",
                    ));
                }
            }
        }
        problems
    }

    /// Problems loading the receiver's TLS certificate and key (`viewtron.tls.cert_file` /
    /// `key_file`), when the receiver is on and HTTPS configured. Messages name the file, never
    /// its contents.
    pub fn check_files(&self) -> Vec<Problem> {
        self.load_tls().err().into_iter().collect()
    }

    fn load_tls(&self) -> Result<Option<ServerTls>, Problem> {
        match &self.tls {
            Some(t) if self.enabled => t.load().map(Some).map_err(|e| {
                Problem::new(format!("viewtron.tls.{}", e.config_key()), e.to_string())
            }),
            _ => Ok(None),
        }
    }

    /// The receiver's limits, access guard and TLS. Reads the certificate, key and password
    /// files now, so that a bad file stops the start before anything listens. Errors: the
    /// TLS files (`viewtron.tls.<key>`), the allow-list or credentials (`viewtron`).
    pub fn http_config(&self) -> Result<HttpConfig, Problem> {
        let tls = self.load_tls()?;
        let guard = Guard::from_settings(
            self.auth.as_ref().map(|a| {
                (
                    a.username.as_str(),
                    a.password.as_ref(),
                    a.password_file.as_deref(),
                )
            }),
            &self.allow,
        )
        .map_err(|e| Problem::new("viewtron", e.to_string()))?;
        Ok(HttpConfig {
            body_limit: self.body_limit,
            header_timeout: self.header_timeout,
            request_timeout: self.request_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            guard,
            tls,
            ..HttpConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_numbers_or_strings() {
        let c: ViewtronConfig = toml::from_str(
            "header_timeout = 30\nrequest_timeout = 30.5\nidle_timeout = \"5m\"\noffline_after = \"1m 30s\"\ntraject_interval = \"500ms\"\n",
        )
        .unwrap();
        assert_eq!(c.header_timeout, Duration::from_secs(30));
        assert_eq!(c.request_timeout, Duration::from_millis(30_500));
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.offline_after, Duration::from_secs(90));
        assert_eq!(c.traject_interval, Duration::from_millis(500));
        assert!(c.validate().is_empty());
        let http = c.http_config().unwrap();
        assert_eq!(http.request_timeout, Duration::from_millis(30_500));
        assert!(http.guard.is_open() && http.tls.is_none());
    }

    #[test]
    fn ranges_are_checked() {
        let c = ViewtronConfig {
            header_timeout: Duration::from_millis(50),
            idle_timeout: Duration::from_secs(8 * 86_400),
            max_connections: 0,
            ..ViewtronConfig::default()
        };
        let paths: Vec<String> = c.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "viewtron.header_timeout",
                "viewtron.idle_timeout",
                "viewtron.max_connections"
            ]
        );
    }
}
