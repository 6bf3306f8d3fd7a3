//! `[[poll]]`: one entry per camera whose snapshot URL the bridge polls. Deserialised straight
//! from the file (serde, `deny_unknown_fields`, the defaults below); [`PollConfig::validate`]
//! returns every problem with its key path (`poll[<i>].<key>`); [`PollConfig::target`] builds
//! the URL (given, or from a [`Preset`]).
//!
//! ```toml
//! [[poll]]
//! id = "driveway"                 # device id in topics: camera/driveway/snapshot/image
//! name = "Driveway"
//! preset = "hikvision"            # or url = "http://192.168.1.64/ISAPI/Streaming/channels/101/picture"
//! host = "192.168.1.64"
//! channel = 1
//! username = "admin"
//! password_file = "/run/secrets/driveway"
//! interval = "10s"
//! ```

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use super::auth::Credentials;
use super::preset::{self, Preset};
use crate::config::{Problem, duration, secret};
use crate::event::Category;

/// Longest accepted `interval`, `timeout`, `max_backoff`, `command_interval`: a day.
const MAX_DURATION: Duration = Duration::from_secs(86_400);
/// Largest accepted `max_size`: 64 MiB.
pub const MAX_SIZE_LIMIT: usize = 64 * 1024 * 1024;

/// One `[[poll]]` entry. Durations are seconds (`10`, `0.5`) or strings (`"10s"`, `"1m"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    /// The device's name for the bridge: 1 to 64 lower-case letters, digits, `_` or `-`.
    /// Its device id in topics is the same with `-` as `_` (`front-door` →
    /// `camera/front_door/snapshot/image`, command topic `camera/front_door/snapshot/take`).
    /// Required.
    pub id: String,
    /// Display name (Home Assistant device name). Default: the id.
    pub name: Option<String>,
    /// Snapshot URL (`http://` or `https://`, no user information). Either this or `preset`.
    pub url: Option<String>,
    /// Vendor URL layout (`hikvision`, `dahua`, `amcrest`, `generic`), with `host` and
    /// `channel`. Either this or `url`.
    pub preset: Option<Preset>,
    /// `host`, `host:port`, `[IPv6]:port` for `preset`.
    pub host: Option<String>,
    /// Channel for `preset`, from 1. Default 1.
    pub channel: u32,
    /// User name for Basic or Digest auth (whichever the camera asks for).
    pub username: Option<String>,
    /// Password; prefer `password_file`. A value that is not a quoted string is refused
    /// without being echoed.
    #[serde(deserialize_with = "secret::optional")]
    pub password: Option<SecretString>,
    /// File holding the password (trailing newlines ignored).
    pub password_file: Option<PathBuf>,
    /// Time between snapshots; `0`: only on command. Default 10 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub interval: Duration,
    /// Time allowed for one request, connection to last byte; at least 1 s. Default 10 s
    /// (6 MP snapshots take more than a second to encode).
    #[serde(deserialize_with = "duration::seconds")]
    pub timeout: Duration,
    /// Event category of the pictures. Default `snapshot`.
    pub category: String,
    /// Largest accepted picture in bytes (1 KiB to 64 MiB). Default 16 MiB.
    pub max_size: usize,
    /// Requests at a time to this entry's host (all `[[poll]]` entries of one `host:port`
    /// share them; the smallest value among them applies), 1 to 16. Default 1: Dahua firmware
    /// answers 401 when its connection limit is used up.
    pub host_connections: usize,
    /// Failed snapshots in a row after which the camera is reported unavailable, at least 1.
    /// Default 3.
    pub unreachable_after: u32,
    /// Longest wait between attempts while the camera fails (the wait doubles from
    /// `interval`). Default 300 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub max_backoff: Duration,
    /// Shortest time between two command-triggered snapshots; commands arriving sooner are
    /// counted and dropped. Default 2 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub command_interval: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            id: String::new(),
            name: None,
            url: None,
            preset: None,
            host: None,
            channel: 1,
            username: None,
            password: None,
            password_file: None,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            category: "snapshot".into(),
            max_size: 16 * 1024 * 1024,
            host_connections: 1,
            unreachable_after: 3,
            max_backoff: Duration::from_secs(300),
            command_interval: Duration::from_secs(2),
        }
    }
}

/// The parts of a snapshot URL the source needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The whole URL.
    pub url: String,
    /// `host:port` (port made explicit): the key of the per-host connection budget, and the
    /// provenance `path`.
    pub authority: String,
    /// Path and query: the Digest `uri` (RFC 7616 §3.4) and the provenance `name`.
    pub request_target: String,
}

impl PollConfig {
    /// Every problem of entry `i` (paths `poll[<i>].<key>`). No I/O.
    pub fn validate(&self, i: usize) -> Vec<Problem> {
        let key = |k: &str| format!("poll[{i}].{k}");
        let mut problems = Vec::new();
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
            || self.id.len() > 64
        {
            problems.push(Problem::new(
                key("id"),
                "must be 1 to 64 lower-case letters, digits, `_` or `-` (it names the device in topics)",
            ));
        }
        if let Err(p) = self.target() {
            problems.push(Problem::new(key(p.0), p.1));
        }
        if let Some(u) = &self.username
            && (u.is_empty() || u.contains(['\0', '\r', '\n']))
        {
            problems.push(Problem::new(key("username"), "must not be empty"));
        }
        let has_password = self.password.is_some() || self.password_file.is_some();
        if self.username.is_some() != has_password {
            problems.push(Problem::new(
                key("password"),
                "username and password (or password_file) go together",
            ));
        }
        if self
            .password
            .as_ref()
            .is_some_and(|p| p.expose_secret().is_empty())
        {
            problems.push(Problem::new(key("password"), "must not be empty"));
        }
        let s = Duration::from_secs;
        if !self.interval.is_zero() {
            duration::check_range(
                &mut problems,
                &key("interval"),
                self.interval,
                s(1),
                MAX_DURATION,
            );
        }
        duration::check_range(
            &mut problems,
            &key("timeout"),
            self.timeout,
            s(1),
            MAX_DURATION,
        );
        duration::check_range(
            &mut problems,
            &key("max_backoff"),
            self.max_backoff,
            s(1),
            MAX_DURATION,
        );
        duration::check_range(
            &mut problems,
            &key("command_interval"),
            self.command_interval,
            Duration::ZERO,
            MAX_DURATION,
        );
        if self.category().is_none() {
            problems.push(Problem::new(
                key("category"),
                "must be a category name: lower-case letters, digits or `_`",
            ));
        }
        if !(1024..=MAX_SIZE_LIMIT).contains(&self.max_size) {
            problems.push(Problem::new(
                key("max_size"),
                format!("must be between 1024 and {MAX_SIZE_LIMIT} bytes"),
            ));
        }
        if !(1..=16).contains(&self.host_connections) {
            problems.push(Problem::new(
                key("host_connections"),
                "must be between 1 and 16",
            ));
        }
        if self.unreachable_after == 0 {
            problems.push(Problem::new(key("unreachable_after"), "must be at least 1"));
        }
        problems
    }

    /// Every problem of every entry, and ids that name the same device twice
    /// (`poll[<i>].id`).
    pub fn validate_all(entries: &[PollConfig]) -> Vec<Problem> {
        let mut problems: Vec<Problem> = entries
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.validate(i))
            .collect();
        let device = |p: &PollConfig| crate::pipeline::slug(&p.id);
        for (i, p) in entries.iter().enumerate() {
            if entries[..i].iter().any(|q| device(q) == device(p)) {
                problems.push(Problem::new(
                    format!("poll[{i}].id"),
                    format!("`{}` is used by an earlier [[poll]] entry", p.id),
                ));
            }
        }
        problems
    }

    /// The configured category (`snapshot` by default): a named one, or any other slug.
    pub fn category(&self) -> Option<Category> {
        let c = self.category.as_str();
        if let Some(named) = Category::from_name(c) {
            return Some(named);
        }
        let ok = !c.is_empty()
            && c.len() <= 64
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
        ok.then(|| Category::Other(c.to_owned()))
    }

    /// The credentials, once the password is known (`password`, or the file read by
    /// [`crate::config::Config::resolve_secrets`]).
    pub fn credentials(&self) -> Option<Credentials> {
        Some(Credentials {
            username: self.username.clone()?,
            password: self.password.clone()?,
        })
    }

    /// The snapshot URL and its parts. Errors: the key (`url`, `preset`, `host`, `channel`)
    /// and what is wrong.
    pub fn target(&self) -> Result<Target, (&'static str, String)> {
        let url = match (&self.url, self.preset) {
            (Some(_), Some(_)) => {
                return Err((
                    "url",
                    "give either url or preset (with host), not both".into(),
                ));
            }
            (None, None) => return Err(("url", "needs url, or preset and host".into())),
            (Some(u), None) => u.clone(),
            (None, Some(p)) => {
                let Some(host) = &self.host else {
                    return Err(("host", format!("preset `{}` needs a host", p.as_str())));
                };
                preset::url(p, host, self.channel).map_err(|e| match e {
                    preset::PresetError::BadHost(_) => ("host", e.to_string()),
                    preset::PresetError::BadChannel => ("channel", e.to_string()),
                })?
            }
        };
        if self.url.is_some() && self.host.is_some() {
            return Err(("host", "host goes with preset; url carries its own".into()));
        }
        split(&url).map_err(|m| ("url", m))
    }
}

/// Check a snapshot URL and split it into its [`Target`].
fn split(url: &str) -> Result<Target, String> {
    let u = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(
            "must not carry a user or password; use username and password (or password_file)"
                .into(),
        );
    }
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("has no host")?;
    let port = u.port_or_known_default().ok_or("has no port")?;
    let authority = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request_target = u.path().to_owned();
    if let Some(q) = u.query() {
        request_target.push('?');
        request_target.push_str(q);
    }
    let mut clean = u.clone();
    clean.set_fragment(None);
    Ok(Target {
        url: clean.into(),
        authority,
        request_target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<PollConfig> {
        #[derive(Deserialize)]
        struct F {
            poll: Vec<PollConfig>,
        }
        toml::from_str::<F>(text).unwrap().poll
    }

    #[test]
    fn defaults_preset_and_durations() {
        let p = parse(
            "[[poll]]\nid = \"gate\"\npreset = \"dahua\"\nhost = \"10.0.0.7\"\nchannel = 2\nusername = \"admin\"\npassword = \"pw\"\ninterval = \"30s\"\n",
        );
        let p = &p[0];
        assert!(PollConfig::validate_all(std::slice::from_ref(p)).is_empty());
        assert_eq!(p.interval, Duration::from_secs(30));
        assert_eq!(p.timeout, Duration::from_secs(10));
        assert_eq!(p.category(), Some(Category::Snapshot));
        let t = p.target().unwrap();
        assert_eq!(t.url, "http://10.0.0.7/cgi-bin/snapshot.cgi?channel=2");
        assert_eq!(t.authority, "10.0.0.7:80");
        assert_eq!(t.request_target, "/cgi-bin/snapshot.cgi?channel=2");
        assert_eq!(p.credentials().unwrap().username, "admin");
    }

    #[test]
    fn problems_have_their_keys() {
        let p = parse(
            "[[poll]]\nid = \"Bad Id\"\nurl = \"http://u:p@cam/x.jpg\"\nusername = \"a\"\ninterval = 0.5\ntimeout = 0\ncategory = \"No\"\nmax_size = 10\nhost_connections = 0\nunreachable_after = 0\n[[poll]]\nid = \"a\"\npreset = \"hikvision\"\n[[poll]]\nid = \"a\"\nurl = \"ftp://cam/x\"\ninterval = 0\n",
        );
        let paths: Vec<String> = PollConfig::validate_all(&p)
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(
            paths,
            [
                "poll[0].id",
                "poll[0].url",
                "poll[0].password",
                "poll[0].interval",
                "poll[0].timeout",
                "poll[0].category",
                "poll[0].max_size",
                "poll[0].host_connections",
                "poll[0].unreachable_after",
                "poll[1].host",
                "poll[2].url",
                "poll[2].id",
            ]
        );
    }

    #[test]
    fn url_parts() {
        let t = split("https://[fd00::5]/snap.jpg?a=1&b=2#frag").unwrap();
        assert_eq!(t.authority, "[fd00::5]:443");
        assert_eq!(t.request_target, "/snap.jpg?a=1&b=2");
        assert_eq!(t.url, "https://[fd00::5]/snap.jpg?a=1&b=2");
        assert!(split("http://").is_err());
        assert!(split("file:///x.jpg").is_err());
        assert!(split("cam/x.jpg").is_err());
    }
}
