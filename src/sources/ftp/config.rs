//! `[ftp]`: the embedded FTP server cameras upload their snapshots to, with `[[ftp.users]]`
//! (logins and passwords) and `[[ftp.rules]]` (file name / folder → category). Deserialised
//! straight from the file (serde, `deny_unknown_fields`, the defaults below);
//! [`FtpConfig::validate`] returns every problem with its key path (`ftp.<key>`).
//!
//! The source is on when `listen` is set (`[ftp] listen = "0.0.0.0:2121"` or `--ftp-listen`).

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::rules::{Field, Rule};
use crate::config::{Problem, duration, secret};
use crate::event::Category;

/// Upper bound of every `[ftp]` duration: a day.
const MAX_DURATION: Duration = Duration::from_secs(86_400);
/// Upper bound of `ftp.max_connections`.
pub const MAX_CONNECTIONS: usize = 4096;
/// Upper bound of `ftp.max_file_size`: 256 MiB (each upload is held in memory whole).
pub const MAX_FILE_SIZE: usize = 256 * 1024 * 1024;

/// `[ftp]`. Durations are seconds (`30`, `0.5`) or strings (`"30s"`, `"5m"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FtpConfig {
    /// Control-connection listen address (`0.0.0.0:2121`); the source is off when absent.
    pub listen: Option<SocketAddr>,
    /// Ports for passive-mode data connections (`PASV`/`EPSV`), `"50000-50100"`: publish this
    /// range too when the bridge runs in a container. Default `"50000-50100"`.
    pub passive_ports: String,
    /// The IPv4 address `PASV` advertises (RFC 959 §4.1.2 reply 227), the one cameras can
    /// reach (the host's address when the bridge runs in a container). Default: the address
    /// the camera's control connection came in on.
    pub passive_address: Option<Ipv4Addr>,
    /// Allow active mode (`PORT`, `EPRT`): the bridge connects back to the camera, to the
    /// camera's own address only (RFC 2577 §3, no "bounce"). Default `true`.
    pub active: bool,
    /// Require a password for every login. Without `[[ftp.users]]` and with this `false` (the
    /// default) any login is accepted and names the device (zero setup on a trusted LAN).
    pub require_password: bool,
    /// Logins with their passwords. When not empty, only these logins are accepted.
    pub users: Vec<FtpUserSection>,
    /// Where the device comes from: `"login"` (default: the FTP user name) or `"folder"` (the
    /// first folder of the upload path, for a login several cameras share). Anonymous logins
    /// (`anonymous`, `ftp`) use the folder when there is one.
    pub device_from: DeviceFrom,
    /// Largest accepted file in bytes (held in memory until it is stored), 1 KiB to 256 MiB.
    /// Default 16 MiB; a larger upload is refused with `552`.
    pub max_file_size: usize,
    /// Concurrent control connections, 1 to [`MAX_CONNECTIONS`]. Default 64.
    pub max_connections: usize,
    /// A control connection with no command for this long is closed (RFC 959 reply 421).
    /// 5 s to a day; default 120 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub idle_timeout: Duration,
    /// Time a data transfer may take from its first to its last byte; 5 s to a day; default
    /// 300 s. An upload that does not finish in time is reported as cut off.
    #[serde(deserialize_with = "duration::seconds")]
    pub transfer_timeout: Duration,
    /// Category of an image no rule matched. Default `motion`.
    pub default_category: String,
    /// Also apply the built-in rules for Hikvision, Dahua/Amcrest, Reolink and TVT file and
    /// folder names after `rules`. Default `true`.
    pub default_rules: bool,
    /// File name / folder rules, tried in order before the built-in ones.
    pub rules: Vec<RuleSection>,
    /// Largest part of a non-image file copied into `bridge/unparsed`, bytes. Default 512.
    pub unparsed_body_cap: usize,
}

impl Default for FtpConfig {
    fn default() -> Self {
        FtpConfig {
            listen: None,
            passive_ports: "50000-50100".into(),
            passive_address: None,
            active: true,
            require_password: false,
            users: Vec::new(),
            device_from: DeviceFrom::Login,
            max_file_size: 16 * 1024 * 1024,
            max_connections: 64,
            idle_timeout: Duration::from_secs(120),
            transfer_timeout: Duration::from_secs(300),
            default_category: "motion".into(),
            default_rules: true,
            rules: Vec::new(),
            unparsed_body_cap: 512,
        }
    }
}

/// `ftp.device_from`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceFrom {
    /// The FTP login names the device.
    #[default]
    Login,
    /// The first folder of the upload path names the device.
    Folder,
}

/// `[[ftp.users]]`: one login (the FTP user name, RFC 959 `USER`, and its password).
pub type FtpUserSection = secret::Login;

/// `[[ftp.rules]]`: `match` found in the file name or folder gives `category`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    /// Text to find, case-insensitively, not inside a longer word (`"[M]"`, `"LINE_CROSSING"`,
    /// `"person"`).
    #[serde(rename = "match")]
    pub pattern: String,
    /// Where to look: `"name"` (the file name), `"path"` (the folders) or `"any"` (default).
    #[serde(default)]
    pub field: Field,
    /// The event category (`motion`, `intrusion`, `line_crossing`, ... or any slug).
    pub category: String,
}

impl FtpConfig {
    /// Every problem of `[ftp]` (paths `ftp.<key>`). No I/O: password files are read by
    /// [`FtpConfig::logins`].
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Err(e) = parse_port_range(&self.passive_ports) {
            problems.push(Problem::new("ftp.passive_ports", e));
        }
        if self
            .passive_address
            .is_some_and(|a| a.is_unspecified() || a.is_broadcast() || a.is_multicast())
        {
            problems.push(Problem::new(
                "ftp.passive_address",
                "must be an address cameras can connect to (not 0.0.0.0, broadcast or multicast)",
            ));
        }
        if !(1024..=MAX_FILE_SIZE).contains(&self.max_file_size) {
            problems.push(Problem::new(
                "ftp.max_file_size",
                format!("must be between 1024 and {MAX_FILE_SIZE} bytes"),
            ));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            problems.push(Problem::new(
                "ftp.max_connections",
                format!("must be between 1 and {MAX_CONNECTIONS}"),
            ));
        }
        let s = Duration::from_secs;
        for (name, value) in [
            ("ftp.idle_timeout", self.idle_timeout),
            ("ftp.transfer_timeout", self.transfer_timeout),
        ] {
            duration::check_range(&mut problems, name, value, s(5), MAX_DURATION);
        }
        if category(&self.default_category).is_none() {
            problems.push(Problem::new(
                "ftp.default_category",
                "must be a category name (letters, digits, `_`)",
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            if r.pattern.trim().is_empty() {
                problems.push(Problem::new(
                    format!("ftp.rules[{i}].match"),
                    "must not be empty",
                ));
            }
            if category(&r.category).is_none() {
                problems.push(Problem::new(
                    format!("ftp.rules[{i}].category"),
                    "must be a category name (letters, digits, `_`)",
                ));
            }
        }
        problems.extend(secret::check_logins(&self.users, "ftp.users"));
        if self.require_password && self.users.is_empty() {
            problems.push(Problem::new(
                "ftp.require_password",
                "needs at least one [[ftp.users]] entry",
            ));
        }
        problems
    }

    /// The passive port range. Errors: not `"<first>-<last>"` with `1024 <= first <= last`.
    pub fn passive_range(&self) -> Result<RangeInclusive<u16>, Problem> {
        parse_port_range(&self.passive_ports).map_err(|e| Problem::new("ftp.passive_ports", e))
    }

    /// The logins with their passwords, reading `password_file`s now. Errors: an unreadable
    /// file (`ftp.users[<i>].password_file`), a user without any password.
    pub fn logins(&self) -> Result<Vec<(String, SecretString)>, Problem> {
        secret::read_logins(&self.users, "ftp.users")
    }

    /// The configured rules followed (with `default_rules`) by the built-in ones. Rules whose
    /// category is not a valid name are left out ([`FtpConfig::validate`] reports them).
    pub fn rule_list(&self) -> Vec<Rule> {
        let mut out: Vec<Rule> = self
            .rules
            .iter()
            .filter_map(|r| Some(Rule::new(&r.pattern, r.field, category(&r.category)?)))
            .collect();
        if self.default_rules {
            out.extend(super::rules::default_rules());
        }
        out
    }

    /// `default_category` as a [`Category`] (`motion` when invalid; validation reports it).
    pub fn fallback_category(&self) -> Category {
        category(&self.default_category).unwrap_or(Category::Motion)
    }
}

/// A category name from the configuration: a named one (`line_crossing`) or another slug of
/// ASCII letters, digits and `_` (at most 64). `None` otherwise.
pub fn category(name: &str) -> Option<Category> {
    let name = name.trim().to_ascii_lowercase();
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return None;
    }
    Some(
        Category::NAMED
            .iter()
            .find(|c| c.as_str() == name)
            .cloned()
            .unwrap_or(Category::Other(name)),
    )
}

/// `"50000-50100"` (or a single port `"50000"`) as a range. Errors: a message for the user.
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let bad = || format!("`{text}` is not a port range such as \"50000-50100\"");
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (text.trim(), text.trim()),
    };
    let first: u16 = a.parse().map_err(|_| bad())?;
    let last: u16 = b.parse().map_err(|_| bad())?;
    if first < 1024 || first > last {
        return Err(format!(
            "`{text}`: ports must be 1024 or above, the first not above the last"
        ));
    }
    Ok(first..=last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn defaults_are_valid_and_off() {
        let c = FtpConfig::default();
        assert!(c.listen.is_none());
        assert!(c.validate().is_empty());
        assert_eq!(c.passive_range().unwrap(), 50000..=50100);
        assert_eq!(c.fallback_category(), Category::Motion);
    }

    #[test]
    fn parses_a_full_section() {
        let c: FtpConfig = toml::from_str(
            r#"
listen = "0.0.0.0:2121"
passive_ports = "51000-51010"
passive_address = "192.0.2.10"
active = false
require_password = true
device_from = "folder"
max_file_size = 2048
idle_timeout = "1m"
[[users]]
username = "porchcam"
password = "field-only"
[[rules]]
match = "person"
field = "name"
category = "intrusion"
"#,
        )
        .unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.passive_range().unwrap(), 51000..=51010);
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.device_from, DeviceFrom::Folder);
        let logins = c.logins().unwrap();
        assert_eq!(logins[0].0, "porchcam");
        assert_eq!(logins[0].1.expose_secret(), "field-only");
        let rules = c.rule_list();
        assert_eq!(rules[0].category, Category::Intrusion);
        assert!(rules.len() > 1);
    }

    #[test]
    fn problems_have_paths() {
        let c = FtpConfig {
            passive_ports: "80-90".into(),
            passive_address: Some(Ipv4Addr::UNSPECIFIED),
            max_file_size: 10,
            max_connections: 0,
            idle_timeout: Duration::from_secs(1),
            default_category: "no/slash".into(),
            require_password: true,
            rules: vec![RuleSection {
                pattern: " ".into(),
                field: Field::Any,
                category: "".into(),
            }],
            ..FtpConfig::default()
        };
        let paths: Vec<String> = c.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "ftp.passive_ports",
                "ftp.passive_address",
                "ftp.max_file_size",
                "ftp.max_connections",
                "ftp.idle_timeout",
                "ftp.default_category",
                "ftp.rules[0].match",
                "ftp.rules[0].category",
                "ftp.require_password"
            ]
        );
    }

    #[test]
    fn users_need_a_password_and_unique_names() {
        let c: FtpConfig = toml::from_str(
            "[[users]]\nusername = \"a\"\n[[users]]\nusername = \"a\"\npassword = \"x\"\n",
        )
        .unwrap();
        let paths: Vec<String> = c.validate().into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["ftp.users[0].password", "ftp.users[1].username"]);
        assert!(
            toml::from_str::<FtpConfig>("[[users]]\nusername = \"a\"\npassword = 5\n").is_err()
        );
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("50000").unwrap(), 50000..=50000);
        assert_eq!(parse_port_range(" 50000 - 50001 ").unwrap(), 50000..=50001);
        assert!(parse_port_range("5-1").is_err());
        assert!(parse_port_range("x").is_err());
        assert!(parse_port_range("60000-50000").is_err());
    }

    #[test]
    fn category_names() {
        assert_eq!(category("Line_Crossing"), Some(Category::LineCrossing));
        assert_eq!(category("person"), Some(Category::Other("person".into())));
        assert_eq!(category("a b"), None);
        assert_eq!(category(""), None);
    }
}
