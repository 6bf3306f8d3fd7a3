//! Loading a configuration file: TOML syntax, then the structure (serde, every section
//! `deny_unknown_fields`), then the components' semantic checks ([`Config::validate`]), each
//! problem with the line of its key.

use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::Config;

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the offending key (`devices[1].mac`); `(syntax)` for a TOML syntax
    /// error, `(structure)` when a type error could not be tied to a key.
    pub path: String,
    /// 1-based line, when it could be located.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem at `path`, not yet located (the loader fills [`Problem::line`]).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            line: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for Problem {}

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

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Read and validate a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    load_str(&read(path)?)
}

/// [`load_file`], then what `camqtt run` does with it before starting: fill the secrets from
/// the process environment and the files named there or in the configuration
/// ([`Config::resolve_secrets`]: `CAMQTT_MQTT_PASSWORD_FILE`, `mqtt.password_file`, ...), and
/// load the other files the configuration names ([`Config::check_files`]). What
/// `check-config` runs; [`check_file_with`] with the process environment and the real file
/// system. Returns the configuration with its secrets filled.
///
/// Problems carry their key, and their line when the key is in the file (a file named by an
/// environment variable has none). Messages name the variable or file, never a secret.
pub fn check_file(path: &Path) -> Result<Config, ConfigError> {
    check_file_with(path, &|k| std::env::var(k).ok(), &|p| {
        std::fs::read_to_string(p)
    })
}

/// [`check_file`] with the environment and the secret-file reader injected.
fn check_file_with(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    read_secret: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Config, ConfigError> {
    let src = read(path)?;
    let mut config = load_str(&src)?;
    let mut problems = Vec::new();
    for p in config.resolve_secrets_located(env, read_secret) {
        let mut problem = p.problem;
        if p.in_file {
            problem.line = locate(&src, &problem.path);
        }
        problems.push(problem);
    }
    for mut p in config.check_files() {
        p.line = locate(&src, &p.path);
        problems.push(p);
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Parse and validate configuration text. Syntax errors are all reported; a structure error
/// (unknown key, wrong type, bad duration, missing required key) stops at the first, named by
/// its key where it can be found; otherwise every semantic problem of every section is
/// reported. Each problem carries its line where possible.
pub fn load_str(src: &str) -> Result<Config, ConfigError> {
    let (_, syntax) = DeTable::parse_recoverable(src);
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
        let at = e.span().map(|s| s.start);
        ConfigError::Invalid(vec![Problem {
            path: at
                .and_then(|at| path_at(src, at))
                .unwrap_or_else(|| "(structure)".into()),
            line: at.map(|at| line_of(src, at)),
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

/// Find the line of a dotted path like `devices[1].mac` or `categories.lpr.off_delay`: the
/// deepest key of the path that exists in the file.
pub fn locate(src: &str, path: &str) -> Option<usize> {
    let parsed = DeTable::parse(src).ok()?;
    let mut span = parsed.span();
    let mut table = Some(parsed.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let current = match (table, value) {
            (Some(t), _) => t,
            (None, Some(DeValue::Table(t))) => t,
            _ => break,
        };
        let Some((k, v)) = current.iter().find(|(k, _)| k.get_ref().as_ref() == key) else {
            break;
        };
        span = k.span();
        let mut v = v;
        if let (Some(i), DeValue::Array(items)) = (index, v.get_ref()) {
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

/// The dotted path of the key at byte `offset` (the key itself or its value), the reverse of
/// [`locate`]; `None` when the offset is on no key (a table header, say).
fn path_at(src: &str, offset: usize) -> Option<String> {
    let parsed = DeTable::parse(src).ok()?;
    let mut best: Option<(usize, String)> = None;
    walk(parsed.get_ref(), "", offset, &mut best);
    best.map(|(_, path)| path)
}

/// Keep in `best` the key (with the shortest span) whose key or value span holds `offset`.
fn walk(table: &DeTable<'_>, prefix: &str, offset: usize, best: &mut Option<(usize, String)>) {
    for (k, v) in table.iter() {
        let path = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        for span in [k.span(), v.span()] {
            if span.contains(&offset) && best.as_ref().is_none_or(|(len, _)| span.len() < *len) {
                *best = Some((span.len(), path.clone()));
            }
        }
        match v.get_ref() {
            DeValue::Table(t) => walk(t, &path, offset, best),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{path}[{i}]");
                    if let DeValue::Table(t) = item.get_ref() {
                        walk(t, &path, offset, best);
                    } else if item.span().contains(&offset)
                        && best
                            .as_ref()
                            .is_none_or(|(len, _)| item.span().len() < *len)
                    {
                        *best = Some((item.span().len(), path));
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn fs(p: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(p)
    }

    /// `check-config` reads the password files `run` reads: a missing one is a problem at its
    /// key and line; a readable one fills the secret (never shown).
    #[test]
    fn password_files_are_read_and_located() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("camqtt.toml");
        let missing = dir.path().join("missing-password");
        std::fs::write(
            &conf,
            format!(
                "[mqtt]\nurl = \"mqtt://bridge@127.0.0.1:1883\"\npassword_file = {missing:?}\n\n[viewtron.auth]\nusername = \"cam\"\npassword_file = {missing:?}\n"
            ),
        )
        .unwrap();
        let Err(ConfigError::Invalid(p)) = check_file_with(&conf, &no_env, &fs) else {
            panic!("missing password files accepted")
        };
        let got: Vec<_> = p.iter().map(|p| (p.path.as_str(), p.line)).collect();
        assert_eq!(
            got,
            [
                ("mqtt.password_file", Some(3)),
                ("viewtron.auth.password_file", Some(7))
            ]
        );
        assert!(p[0].message.contains("missing-password"), "{}", p[0]);

        let secret = dir.path().join("password");
        std::fs::write(&secret, "file-secret-42\n").unwrap();
        std::fs::write(
            &conf,
            format!("[mqtt]\nurl = \"mqtt://bridge@127.0.0.1:1883\"\npassword_file = {secret:?}\n"),
        )
        .unwrap();
        let c = check_file_with(&conf, &no_env, &fs).expect("readable password file");
        assert!(c.mqtt.password.is_some());
        assert!(!format!("{c:?}").contains("file-secret-42"));
    }

    /// A `*_FILE` variable naming a missing file is a problem at the key it fills, without a
    /// line (it is not in the file); the variable wins over the file's `password_file`, as in
    /// `run`.
    #[test]
    fn secret_variables_are_checked_without_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("camqtt.toml");
        std::fs::write(&conf, "[mqtt]\npassword = \"in-file\"\n").unwrap();
        let env = |k: &str| (k == "CAMQTT_MQTT_PASSWORD_FILE").then(|| "/nonexistent/pw".into());
        let Err(ConfigError::Invalid(p)) = check_file_with(&conf, &env, &fs) else {
            panic!("CAMQTT_MQTT_PASSWORD_FILE=/nonexistent accepted")
        };
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].path.as_str(), p[0].line), ("mqtt.password", None));
        assert!(
            p[0].message.contains("CAMQTT_MQTT_PASSWORD_FILE")
                && p[0].message.contains("/nonexistent/pw"),
            "{}",
            p[0]
        );
        assert!(!p[0].to_string().contains("in-file"));

        // The environment's password makes a missing password_file irrelevant (run ignores it).
        std::fs::write(&conf, "[mqtt]\npassword_file = \"/nonexistent/pw\"\n").unwrap();
        let env = |k: &str| (k == "CAMQTT_MQTT_PASSWORD").then(|| "from-env".into());
        assert!(check_file_with(&conf, &env, &fs).is_ok());
    }
}
