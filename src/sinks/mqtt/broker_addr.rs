//! Where the broker is: host, port, credentials and TLS, parsed from a broker URL
//! (`mqtt://user:password@host:1883`, `mqtts://…`) with the `url` crate. The password is a
//! [`SecretString`]: never printed, zeroed when dropped.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use secrecy::{ExposeSecret, SecretString};
use url::{Host, Url};

use super::SinkError;
use super::config::ConfigError;
use rumqttc::tokio_rustls::rustls::ClientConfig;

/// Broker address and credentials. `Debug`/`Display` never show the password.
#[derive(Clone)]
pub struct BrokerAddr {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name, if any.
    pub username: Option<String>,
    /// Password, if any. Never logged (`Debug` and `Display` print `***`).
    pub password: Option<SecretString>,
    /// TLS (`mqtts://`).
    pub tls: bool,
    /// CA, client certificate and server name for TLS; ignored without [`BrokerAddr::tls`].
    pub tls_options: TlsOptions,
    /// The TLS client configuration built by [`BrokerAddr::prepare_tls`], with the options it
    /// was built from (used only while they are still [`BrokerAddr::tls_options`]).
    prepared_tls: Option<(TlsOptions, Arc<ClientConfig>)>,
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
            prepared_tls: None,
        }
    }

    /// `mqtt://host:port` or `mqtts://host:port` (IPv6 in brackets): which node this is,
    /// without the user name or password; for logs, `bridge/info` and comparing nodes.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    /// Build the TLS client configuration now and keep it for every connection to this broker
    /// (reconnects, the MQTT 3.1.1 fallback): reads the CA file or the system's roots and the
    /// client certificate and key, once. Blocking file I/O: call it at start, off the async
    /// runtime. A no-op without TLS. Errors name the file, never its contents.
    pub fn prepare_tls(&mut self) -> Result<(), SinkError> {
        self.prepared_tls = None;
        if self.tls {
            let config = super::tls::client_config(&self.tls_options)?;
            self.prepared_tls = Some((self.tls_options.clone(), Arc::new(config)));
        }
        Ok(())
    }

    /// The TLS client configuration: the one [`BrokerAddr::prepare_tls`] built for the current
    /// options, else built now (reading the files; a broker address made in code).
    pub(crate) fn tls_client_config(&self) -> Result<Arc<ClientConfig>, SinkError> {
        match &self.prepared_tls {
            Some((options, config)) if *options == self.tls_options => Ok(config.clone()),
            _ => Ok(Arc::new(super::tls::client_config(&self.tls_options)?)),
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
            password: password.map(SecretString::from),
            tls,
            tls_options: TlsOptions::default(),
            prepared_tls: None,
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

/// Equal when every field is, the passwords compared in the clear (tests, change detection).
impl PartialEq for BrokerAddr {
    fn eq(&self, other: &Self) -> bool {
        fn password(b: &BrokerAddr) -> Option<&str> {
            b.password.as_ref().map(|p| p.expose_secret())
        }
        self.host == other.host
            && self.port == other.port
            && self.username == other.username
            && password(self) == password(other)
            && self.tls == other.tls
            && self.tls_options == other.tls_options
    }
}

impl Eq for BrokerAddr {}

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
            .field("tls_prepared", &self.prepared_tls.is_some())
            .finish()
    }
}

/// A broker URL fit for logs and `Debug`: the password (if any) replaced by `***` (the `url`
/// crate's `set_password`), `mqtt://user:secret@host` → `mqtt://user:***@host`. A URL
/// without an authority (`user:secret@host`, no scheme) or that does not parse is not shown
/// at all: whatever it holds could be a password.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url.trim()) {
        Ok(mut u) if u.has_authority() && u.has_host() => {
            if u.password().is_some() && u.set_password(Some("***")).is_err() {
                return "(URL hidden)".into();
            }
            u.into()
        }
        Ok(_) => "(URL hidden)".into(),
        Err(_) => "(unparseable URL, hidden)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_urls_never_show_the_password() {
        assert_eq!(
            redact_url("mqtt://user:s3cr3t@host:1883"),
            "mqtt://user:***@host:1883"
        );
        assert_eq!(redact_url("mqtt://u:p@ss@h"), "mqtt://u:***@h");
        assert_eq!(redact_url("mqtts://host"), "mqtts://host");
        assert_eq!(redact_url("mqtt://user@host"), "mqtt://user@host");
        for bad in [
            "user:s3cr3t@host",
            "mqtt://user:s3cr3t@[::1",
            "mqtt://user:s3/cr3t@host",
            "mqtt://user:s3\tcr3t@host",
            "mqtt://:s3cr3t@host",
            "mailto:s3cr3t@host",
        ] {
            let r = redact_url(bad);
            assert!(!r.contains("s3cr3t") && !r.contains("cr3t"), "{bad}: {r}");
        }
    }

    fn pw(b: &BrokerAddr) -> Option<&str> {
        b.password.as_ref().map(|p| p.expose_secret())
    }

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
        assert_eq!(pw(&b), Some("p:ss@w"));
        assert_eq!(b.host, "host");
        assert_eq!(b.port, 1999);
        let b = BrokerAddr::from_url("mqtt://onlyuser@host").unwrap();
        assert_eq!(b.username.as_deref(), Some("onlyuser"));
        assert_eq!(pw(&b), None);
        // An empty password is no password (the URL standard serialises both alike).
        let b = BrokerAddr::from_url("mqtt://onlyuser:@host").unwrap();
        assert_eq!(pw(&b), None);
        let b = BrokerAddr::from_url("mqtt://:pw@host").unwrap();
        assert_eq!((b.username.as_deref(), pw(&b)), (Some(""), Some("pw")));
        let b = BrokerAddr::from_url("MQTTS://%C3%BCser:p%C3%A4ss@Broker.lan").unwrap();
        assert_eq!(b.username.as_deref(), Some("üser"));
        assert_eq!(pw(&b), Some("päss"));
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
}
