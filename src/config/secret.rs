//! Secrets in the configuration: passwords are [`secrecy::SecretString`] everywhere (`Debug`
//! prints `[REDACTED]`, the memory is zeroed on drop, reading needs an explicit
//! [`secrecy::ExposeSecret::expose_secret`]).
//!
//! [`optional`] deserialises one and rejects a value of another type (a password written as a
//! number) without echoing it. [`Config::resolve_secrets`] fills secrets from the environment
//! and from files, Docker-secrets style.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret as _, SecretString};
use serde::de::{Error, Visitor};
use serde::{Deserialize, Deserializer};

use super::{Config, Problem};
use crate::sources::viewtron::config::BasicAuthSection;

/// One login a device must present: a user name and its password, written in the file or
/// kept in a `password_file` (`[viewtron.auth]`, `[[ftp.users]]`, `[[smtp.users]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The user name, compared exactly.
    pub username: String,
    /// The password; prefer `password_file`. A value that is not a quoted string is refused
    /// without being echoed.
    #[serde(default, deserialize_with = "optional")]
    pub password: Option<SecretString>,
    /// File holding the password (trailing newlines ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// Problems of the logins listed at `key` (`ftp.users`), as `<key>[<i>].<field>`: a user name
/// that is empty, holds a control character or appears twice; a password that is empty,
/// missing (neither `password` nor `password_file`) or given twice (both).
pub fn check_logins(logins: &[Login], key: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for (i, l) in logins.iter().enumerate() {
        let at = |field: &str| format!("{key}[{i}].{field}");
        if l.username.is_empty() || l.username.chars().any(char::is_control) {
            problems.push(Problem::new(
                at("username"),
                "must be non-empty, without control characters",
            ));
        } else if !seen.insert(l.username.as_str()) {
            problems.push(Problem::new(at("username"), "appears twice"));
        }
        match (&l.password, &l.password_file) {
            (Some(p), None) if p.expose_secret().is_empty() => {
                problems.push(Problem::new(at("password"), "must not be empty"))
            }
            (Some(_), Some(_)) => problems.push(Problem::new(
                at("password"),
                "give password or password_file, not both",
            )),
            (None, None) => problems.push(Problem::new(
                at("password"),
                "needs a password or a password_file",
            )),
            _ => {}
        }
    }
    problems
}

/// The logins listed at `key` with their passwords, reading each `password_file` now.
/// Errors: an unreadable file (`<key>[<i>].password_file`, naming the file, never its
/// contents), a login without any password (`<key>[<i>].password`).
pub fn read_logins(logins: &[Login], key: &str) -> Result<Vec<(String, SecretString)>, Problem> {
    logins
        .iter()
        .enumerate()
        .map(|(i, l)| match (&l.password, &l.password_file) {
            (Some(p), _) => Ok((l.username.clone(), p.clone())),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map(|t| (l.username.clone(), from_file_text(t)))
                .map_err(|e| {
                    Problem::new(
                        format!("{key}[{i}].password_file"),
                        format!("cannot read {}: {e}", file.display()),
                    )
                }),
            (None, None) => Err(Problem::new(
                format!("{key}[{i}].password"),
                "needs a password or a password_file",
            )),
        })
        .collect()
}

struct SecretVisitor;

impl Visitor<'_> for SecretVisitor {
    type Value = SecretString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quoted string")
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<SecretString, E> {
        Ok(SecretString::from(v))
    }

    fn visit_string<E: Error>(self, v: String) -> Result<SecretString, E> {
        Ok(SecretString::from(v))
    }

    // The default implementations name the value in the message; a password must never be.
    fn visit_i64<E: Error>(self, _: i64) -> Result<SecretString, E> {
        Err(E::custom("a secret must be a quoted string"))
    }

    fn visit_u64<E: Error>(self, _: u64) -> Result<SecretString, E> {
        Err(E::custom("a secret must be a quoted string"))
    }

    fn visit_f64<E: Error>(self, _: f64) -> Result<SecretString, E> {
        Err(E::custom("a secret must be a quoted string"))
    }

    fn visit_bool<E: Error>(self, _: bool) -> Result<SecretString, E> {
        Err(E::custom("a secret must be a quoted string"))
    }
}

struct OptionVisitor;

impl<'de> Visitor<'de> for OptionVisitor {
    type Value = Option<SecretString>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quoted string")
    }

    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(SecretVisitor).map(Some)
    }
}

/// An optional password: `#[serde(default, deserialize_with = "secret::optional")]` on an
/// `Option<SecretString>`; JSON `null` is `None`. Anything but a string is an error that does
/// not contain the value.
pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    d.deserialize_option(OptionVisitor)
}

/// A secret read from a file: the content without trailing CR / LF.
pub fn from_file_text(text: String) -> SecretString {
    let mut text = text;
    let keep = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(keep);
    SecretString::from(text)
}

/// The environment variables [`Config::resolve_secrets`] reads, with the key they fill.
const VARIABLES: [(&str, &str); 5] = [
    ("CAMQTT_MQTT_URL", "mqtt.url"),
    ("CAMQTT_MQTT_USERNAME", "mqtt.username"),
    ("CAMQTT_MQTT_PASSWORD", "mqtt.password"),
    ("CAMQTT_VIEWTRON_USERNAME", "viewtron.auth.username"),
    ("CAMQTT_VIEWTRON_PASSWORD", "viewtron.auth.password"),
];

/// A problem found while resolving secrets, and whether it is about a key of the file (a
/// `password_file`, which has a line) rather than an environment variable (which has none).
pub(super) struct SecretProblem {
    pub(super) problem: Problem,
    pub(super) in_file: bool,
}

/// The injected process environment and file reader of [`Config::resolve_secrets`].
struct Sources<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    read: &'a dyn Fn(&Path) -> std::io::Result<String>,
    problems: Vec<SecretProblem>,
}

impl Sources<'_> {
    /// `name` itself, else the file named by `<name>_FILE` (trailing newlines dropped).
    fn value(&mut self, name: &str, key: &str) -> Option<String> {
        if let Some(v) = (self.env)(name) {
            return Some(v);
        }
        let file = (self.env)(&format!("{name}_FILE"))?;
        match (self.read)(Path::new(&file)) {
            Ok(v) => Some(v.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => {
                self.problems.push(SecretProblem {
                    problem: Problem::new(key, format!("{name}_FILE: cannot read {file}: {e}")),
                    in_file: false,
                });
                None
            }
        }
    }

    /// The secret in `file` (a `password_file` key), or a problem at `key`.
    fn file(&mut self, file: &Path, key: &str) -> Option<SecretString> {
        match (self.read)(file) {
            Ok(v) => Some(from_file_text(v)),
            Err(e) => {
                self.problems.push(SecretProblem {
                    problem: Problem::new(key, format!("cannot read {}: {e}", file.display())),
                    in_file: true,
                });
                None
            }
        }
    }
}

impl Config {
    /// Fill secrets from the environment and from files, Docker-secrets style: for each of
    /// `CAMQTT_MQTT_URL`, `CAMQTT_MQTT_USERNAME`, `CAMQTT_MQTT_PASSWORD`,
    /// `CAMQTT_VIEWTRON_USERNAME` and `CAMQTT_VIEWTRON_PASSWORD`, the variable itself or
    /// `<NAME>_FILE` naming a file that holds the value (trailing newlines ignored). The
    /// `password_file` keys of the file are read the same way. Environment wins over the file.
    /// `env` and `read` are injected so that this stays testable without touching the process.
    /// Returns a problem (key, variable or file, and the I/O error; never a value) for every
    /// file that could not be read.
    pub fn resolve_secrets(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
        read: &dyn Fn(&Path) -> std::io::Result<String>,
    ) -> Vec<Problem> {
        self.resolve_secrets_located(env, read)
            .into_iter()
            .map(|p| p.problem)
            .collect()
    }

    /// [`Config::resolve_secrets`], each problem marked with whether its key is in the file
    /// (for `check-config`, which gives those a line).
    pub(super) fn resolve_secrets_located(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
        read: &dyn Fn(&Path) -> std::io::Result<String>,
    ) -> Vec<SecretProblem> {
        let mut src = Sources {
            env,
            read,
            problems: Vec::new(),
        };
        let [url, user, pass, vuser, vpass] = VARIABLES.map(|(name, key)| src.value(name, key));
        let m = &mut self.mqtt;
        if let Some(u) = url {
            m.url = crate::sinks::mqtt::config::split_url_list(&u);
        }
        if user.is_some() {
            m.username = user;
        }
        if let Some(p) = pass {
            m.password = Some(SecretString::from(p));
        } else if m.password.is_none()
            && let Some(f) = m.password_file.clone()
        {
            m.password = src.file(&f, "mqtt.password_file");
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
                auth.password = Some(SecretString::from(p));
            }
        }
        if let Some(auth) = self.viewtron.auth.as_mut()
            && auth.password.is_none()
            && let Some(f) = auth.password_file.clone()
        {
            auth.password = src.file(&f, "viewtron.auth.password_file");
        }
        for (i, p) in self.poll.iter_mut().enumerate() {
            if p.password.is_none()
                && let Some(f) = p.password_file.clone()
            {
                p.password = src.file(&f, &format!("poll[{i}].password_file"));
            }
        }
        src.problems
    }
}
