//! `[smtp]`: the embedded SMTP server cameras e-mail their snapshots to, with `[[smtp.users]]`
//! (the accounts cameras log in with, RFC 4954 AUTH), `[smtp.tls]` (STARTTLS, RFC 3207) and
//! `[[smtp.rules]]` (subject / body text → category). Deserialised straight from the file
//! (serde, `deny_unknown_fields`, the defaults below); [`SmtpConfig::validate`] returns every
//! problem with its key path (`smtp.<key>`); files (passwords, certificate) are read when the
//! source is built ([`SmtpConfig::settings`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::config::{Problem, duration, secret};
use crate::event::Category;
use crate::sources::http_push::{ServerTls, TlsError};

/// Upper bound of every `[smtp]` duration: a day.
const MAX_DURATION: Duration = Duration::from_secs(86_400);
/// Upper bound of `smtp.max_connections`.
pub const MAX_CONNECTIONS: usize = 65_536;
/// Upper bound of `smtp.max_message_size`: 256 MiB (a mail is held in memory while it is
/// parsed).
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024 * 1024;

/// `[smtp]`. The source runs when `listen` is set (or `--smtp-listen` / `CAMQTT_SMTP_LISTEN`).
/// Durations are seconds (`30`, `0.5`) or strings (`"30s"`, `"5m"`), up to a day each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Listen address (`0.0.0.0:2525`); the source is off when absent.
    pub listen: Option<SocketAddr>,
    /// The name the server gives itself in its greeting and EHLO reply. Default `camqtt`.
    pub hostname: String,
    /// Accounts cameras log in with (`AUTH LOGIN` / `AUTH PLAIN`). Empty (the default): any
    /// login is accepted and becomes the device's handle.
    pub users: Vec<SmtpUser>,
    /// Refuse mail (`530`) from a session that did not log in. Default: `true` when `users`
    /// is not empty, `false` otherwise; `true` without `users` is an error.
    pub require_auth: Option<bool>,
    /// Largest mail accepted, in bytes (advertised as `SIZE`, RFC 1870), 1024 to
    /// [`MAX_MESSAGE_SIZE`]. Default 25 MiB.
    pub max_message_size: usize,
    /// Concurrent connections, 1 to [`MAX_CONNECTIONS`]; one more gets `421` and is closed.
    /// Default 64.
    pub max_connections: usize,
    /// Time allowed for each command line (RFC 5321 §4.5.3.2.7 suggests 5 minutes), at least
    /// 1 s. Default 300 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub command_timeout: Duration,
    /// Time allowed for one mail's whole content, `DATA` to the final `.` (RFC 5321
    /// §4.5.3.2.6 suggests 10 minutes), at least 1 s. Default 600 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub data_timeout: Duration,
    /// Longest body text kept in the event (`text`), in characters. Default 2000.
    pub body_text_cap: usize,
    /// Largest part of a mail copied to `bridge/unparsed`, bytes. Default 4096.
    pub unparsed_body_cap: usize,
    /// Apply the built-in vendor rules (Hikvision, Dahua, Reolink and generic wording) after
    /// `rules`. Default `true`.
    pub presets: bool,
    /// Own rules, tried in order before the presets: the first whose `contains` appears in
    /// the mail's event text (case-insensitive) sets the category.
    pub rules: Vec<SubjectRule>,
    /// STARTTLS; off when absent.
    pub tls: Option<SmtpTlsSection>,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            listen: None,
            hostname: "camqtt".into(),
            users: Vec::new(),
            require_auth: None,
            max_message_size: 25 * 1024 * 1024,
            max_connections: 64,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            body_text_cap: 2000,
            unparsed_body_cap: 4096,
            presets: true,
            rules: Vec::new(),
            tls: None,
        }
    }
}

/// `[[smtp.users]]`: one account (the RFC 4954 `AUTH` user name and its password).
pub type SmtpUser = secret::Login;

/// `[[smtp.rules]]`: text in a mail that names its category.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectRule {
    /// Text to look for (case-insensitive) in the event line of the body, the subject, then
    /// the body's other lines.
    pub contains: String,
    /// The category (`motion`, `intrusion`, `line_crossing`, ...; see the categories list).
    pub category: String,
}

/// `[smtp.tls]`: STARTTLS (RFC 3207) with this certificate (rustls, ring provider, TLS 1.2
/// and 1.3). Plain sessions and `AUTH` without TLS stay allowed: many cameras cannot do TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpTlsSection {
    /// PEM certificate chain, server certificate first (`fullchain.pem`).
    pub cert_file: PathBuf,
    /// PEM private key of the certificate (`privkey.pem`; PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// An account with its password read (from the file when one is named).
#[derive(Debug, Clone)]
pub struct Account {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: SecretString,
}

/// A rule with its category parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Lower-cased text to look for.
    pub contains: String,
    /// Category it gives.
    pub category: Category,
}

/// What the running source needs, with every file read: built by [`SmtpConfig::settings`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Greeting name.
    pub hostname: String,
    /// Accounts; empty: any login.
    pub accounts: Vec<Account>,
    /// Mail without a login is refused.
    pub require_auth: bool,
    /// Largest mail, bytes.
    pub max_message_size: usize,
    /// Concurrent connections.
    pub max_connections: usize,
    /// Per command line.
    pub command_timeout: Duration,
    /// Per mail content.
    pub data_timeout: Duration,
    /// Body text kept, characters.
    pub body_text_cap: usize,
    /// Raw mail kept on `bridge/unparsed`, bytes.
    pub unparsed_body_cap: usize,
    /// Use the vendor presets.
    pub presets: bool,
    /// Own rules.
    pub rules: Vec<Rule>,
    /// STARTTLS configuration.
    pub tls: Option<ServerTls>,
}

/// A category name as configured: a named category, else a topic-safe slug of it.
pub fn category_from_config(name: &str) -> Option<Category> {
    if let Some(c) = Category::from_name(name) {
        return Some(c);
    }
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    ok.then(|| Category::Other(name.to_string()))
}

impl SmtpConfig {
    /// Whether the source runs.
    pub fn enabled(&self) -> bool {
        self.listen.is_some()
    }

    /// `require_auth` with its default applied.
    pub fn auth_required(&self) -> bool {
        self.require_auth.unwrap_or(!self.users.is_empty())
    }

    /// Every problem of `[smtp]` (paths `smtp.<key>`). No I/O.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.hostname.is_empty()
            || self.hostname.len() > 255
            || !self
                .hostname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        {
            problems.push(Problem::new(
                "smtp.hostname",
                "must be a host name (letters, digits, `.`, `-`, `_`; up to 255)",
            ));
        }
        if !(1024..=MAX_MESSAGE_SIZE).contains(&self.max_message_size) {
            problems.push(Problem::new(
                "smtp.max_message_size",
                format!("must be between 1024 and {MAX_MESSAGE_SIZE} bytes"),
            ));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            problems.push(Problem::new(
                "smtp.max_connections",
                format!("must be between 1 and {MAX_CONNECTIONS}"),
            ));
        }
        let s = Duration::from_secs;
        for (name, value) in [
            ("smtp.command_timeout", self.command_timeout),
            ("smtp.data_timeout", self.data_timeout),
        ] {
            duration::check_range(&mut problems, name, value, s(1), MAX_DURATION);
        }
        if self.require_auth == Some(true) && self.users.is_empty() {
            problems.push(Problem::new(
                "smtp.require_auth",
                "needs at least one [[smtp.users]] account",
            ));
        }
        problems.extend(secret::check_logins(&self.users, "smtp.users"));
        for (i, r) in self.rules.iter().enumerate() {
            if r.contains.trim().is_empty() {
                problems.push(Problem::new(
                    format!("smtp.rules[{i}].contains"),
                    "must not be empty",
                ));
            }
            if category_from_config(&r.category).is_none() {
                problems.push(Problem::new(
                    format!("smtp.rules[{i}].category"),
                    "must be a category name (lower-case letters, digits, `_`)",
                ));
            }
        }
        if let Some(tls) = &self.tls {
            for (key, path) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
                if path.as_os_str().is_empty() {
                    problems.push(Problem::new(
                        format!("smtp.tls.{key}"),
                        "must name a PEM file",
                    ));
                }
            }
        }
        problems
    }

    /// Problems loading the STARTTLS certificate and key or reading password files, when the
    /// source is on. Messages name the file, never its contents.
    pub fn check_files(&self) -> Vec<Problem> {
        if !self.enabled() {
            return Vec::new();
        }
        let mut problems: Vec<Problem> = self.load_tls().err().into_iter().collect();
        if let Err(p) = self.accounts() {
            problems.push(p);
        }
        problems
    }

    fn load_tls(&self) -> Result<Option<ServerTls>, Problem> {
        match &self.tls {
            Some(t) => ServerTls::from_pem_files(&t.cert_file, &t.key_file, true)
                .map(|t| Some(t.without_alpn()))
                .map_err(|e: TlsError| {
                    Problem::new(format!("smtp.tls.{}", e.config_key()), e.to_string())
                }),
            None => Ok(None),
        }
    }

    fn accounts(&self) -> Result<Vec<Account>, Problem> {
        Ok(secret::read_logins(&self.users, "smtp.users")?
            .into_iter()
            .map(|(username, password)| Account { username, password })
            .collect())
    }

    /// The running source's settings, reading the password and TLS files now so that a bad
    /// file stops the start before anything listens. `None` when the source is off. Errors:
    /// the first problem of [`SmtpConfig::validate`], a password file, the TLS files.
    pub fn settings(&self) -> Result<Option<Settings>, Problem> {
        let Some(listen) = self.listen else {
            return Ok(None);
        };
        if let Some(p) = self.validate().into_iter().next() {
            return Err(p);
        }
        let rules = self
            .rules
            .iter()
            .filter_map(|r| {
                Some(Rule {
                    contains: r.contains.trim().to_lowercase(),
                    category: category_from_config(&r.category)?,
                })
            })
            .collect();
        Ok(Some(Settings {
            listen,
            hostname: self.hostname.clone(),
            accounts: self.accounts()?,
            require_auth: self.auth_required(),
            max_message_size: self.max_message_size,
            max_connections: self.max_connections,
            command_timeout: self.command_timeout,
            data_timeout: self.data_timeout,
            body_text_cap: self.body_text_cap,
            unparsed_body_cap: self.unparsed_body_cap,
            presets: self.presets,
            rules,
            tls: self.load_tls()?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    fn parse(toml_text: &str) -> SmtpConfig {
        #[derive(Deserialize)]
        struct Wrap {
            smtp: SmtpConfig,
        }
        toml::from_str::<Wrap>(toml_text).expect("parses").smtp
    }

    fn paths(c: &SmtpConfig) -> Vec<String> {
        c.validate().into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn defaults_are_valid_and_off() {
        let c = SmtpConfig::default();
        assert!(c.validate().is_empty());
        assert!(!c.enabled());
        assert!(!c.auth_required());
        assert!(c.settings().unwrap().is_none());
    }

    #[test]
    fn users_make_auth_required_unless_switched_off() {
        let c = parse(
            "[smtp]\nlisten = \"127.0.0.1:2525\"\n[[smtp.users]]\nusername = \"porchcam\"\npassword = \"pw\"\n",
        );
        assert!(c.validate().is_empty());
        assert!(c.auth_required());
        let s = c.settings().unwrap().unwrap();
        assert_eq!(s.accounts.len(), 1);
        assert_eq!(s.accounts[0].password.expose_secret(), "pw");
        let c = parse(
            "[smtp]\nrequire_auth = false\n[[smtp.users]]\nusername = \"a\"\npassword = \"pw\"\n",
        );
        assert!(!c.auth_required());
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let c = parse(
            "[smtp]\nhostname = \"bad name\"\nmax_message_size = 10\nmax_connections = 0\n\
             command_timeout = 0\nrequire_auth = true\n\
             [[smtp.rules]]\ncontains = \" \"\ncategory = \"Not A Category\"\n",
        );
        let p = paths(&c);
        for want in [
            "smtp.hostname",
            "smtp.max_message_size",
            "smtp.max_connections",
            "smtp.command_timeout",
            "smtp.require_auth",
            "smtp.rules[0].contains",
            "smtp.rules[0].category",
        ] {
            assert!(p.iter().any(|x| x == want), "{want} missing from {p:?}");
        }
        let c = parse(
            "[smtp]\n[[smtp.users]]\nusername = \"\"\npassword = \"\"\n\
             [[smtp.users]]\nusername = \"b\"\n",
        );
        assert_eq!(
            paths(&c),
            [
                "smtp.users[0].username",
                "smtp.users[0].password",
                "smtp.users[1].password"
            ]
        );
    }

    #[test]
    fn a_password_file_is_read_and_a_missing_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let c = parse(&format!(
            "[smtp]\nlisten = \"127.0.0.1:0\"\n[[smtp.users]]\nusername = \"a\"\npassword_file = \"{}\"\n",
            file.display()
        ));
        let s = c.settings().unwrap().unwrap();
        assert_eq!(s.accounts[0].password.expose_secret(), "from-file");
        std::fs::remove_file(&file).unwrap();
        let e = c.settings().unwrap_err();
        assert_eq!(e.path, "smtp.users[0].password_file");
        assert_eq!(c.check_files().len(), 1);
    }

    #[test]
    fn own_categories_are_slugs() {
        assert_eq!(category_from_config("motion"), Some(Category::Motion));
        assert_eq!(
            category_from_config("doorbell"),
            Some(Category::Other("doorbell".into()))
        );
        assert_eq!(category_from_config("a/b"), None);
        assert_eq!(category_from_config(""), None);
    }
}
