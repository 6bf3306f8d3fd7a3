//! `[web]`: the bridge's own web port (page, JSON API, `/metrics`, `/healthz`), separate
//! from the camera receiver. Off unless `listen` is set (`--web-listen`, `CAMQTT_WEB_LISTEN`).

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::config::Problem;
use crate::config::secret::{self, Login};
use crate::sources::http_push::guard::{BasicAuth, Cidr, Guard};

/// The `[web]` section.
///
/// ```toml
/// [web]
/// listen = "0.0.0.0:8099"
/// allow = ["192.168.1.0/24"]        # who may connect at all (default: everyone)
/// trusted = ["172.30.32.2"]         # who needs no credentials (Home Assistant ingress)
/// token_file = "/run/secrets/web"   # `Authorization: Bearer <token>` or `?token=<token>`
/// [web.auth]                        # HTTP Basic (RFC 7617), for browsers
/// username = "viewer"
/// password_file = "/run/secrets/web-password"
/// ```
///
/// With neither `auth` nor `token`, everyone the allow-list lets in may read; `/healthz`
/// never needs credentials.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address and port of the web server; `None`: off.
    pub listen: Option<SocketAddr>,
    /// Addresses or CIDR blocks allowed to connect (`192.168.1.0/24`, `fd00::/8`); empty:
    /// everyone. Others get `403`.
    pub allow: Vec<String>,
    /// Addresses or blocks whose requests need no credentials (the Home Assistant ingress
    /// proxy, `172.30.32.2`, which has authenticated the user already).
    pub trusted: Vec<String>,
    /// HTTP Basic credentials.
    pub auth: Option<Login>,
    /// A bearer token (`Authorization: Bearer`, or `?token=` once, which sets a cookie for
    /// the page's own requests); prefer `token_file`.
    #[serde(deserialize_with = "secret::optional")]
    pub token: Option<SecretString>,
    /// File holding the token (trailing newlines ignored).
    pub token_file: Option<PathBuf>,
}

/// Who may use the web server: [`WebConfig`] with its files read.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Allow-list and Basic credentials.
    pub guard: Guard,
    /// Peers that need no credentials.
    pub trusted: Vec<Cidr>,
    /// SHA-256 of the bearer token, compared in constant time.
    pub token: Option<[u8; 32]>,
}

impl WebConfig {
    /// Problems of the section, as `web.<key>`: bad allow/trusted entries, a bad login, an
    /// empty token or both `token` and `token_file`.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (key, list) in [("web.allow", &self.allow), ("web.trusted", &self.trusted)] {
            for (i, a) in list.iter().enumerate() {
                if let Err(e) = a.parse::<Cidr>() {
                    problems.push(Problem::new(format!("{key}[{i}]"), e.to_string()));
                }
            }
        }
        if let Some(login) = &self.auth {
            problems.extend(
                secret::check_logins(std::slice::from_ref(login), "web.auth")
                    .into_iter()
                    .map(|p| Problem::new(p.path.replace("web.auth[0]", "web.auth"), p.message)),
            );
        }
        match (&self.token, &self.token_file) {
            (Some(t), None) if t.expose_secret().trim().is_empty() => {
                problems.push(Problem::new("web.token", "must not be empty"))
            }
            (Some(_), Some(_)) => problems.push(Problem::new(
                "web.token",
                "give token or token_file, not both",
            )),
            _ => {}
        }
        problems
    }

    /// Read the password and token files and build the [`Access`] rules. Errors name the key
    /// and the file, never a secret.
    pub fn access(&self) -> Result<Access, Problem> {
        let allow = parse_all(&self.allow, "web.allow")?;
        let trusted = parse_all(&self.trusted, "web.trusted")?;
        let auth = match &self.auth {
            None => None,
            Some(login) => {
                let mut read = secret::read_logins(std::slice::from_ref(login), "web.auth")
                    .map_err(|p| {
                        Problem::new(p.path.replace("web.auth[0]", "web.auth"), p.message)
                    })?;
                let (user, password) = read.remove(0);
                Some(BasicAuth::new(user, password.expose_secret()))
            }
        };
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .map(secret::from_file_text)
                    .map_err(|e| {
                        Problem::new(
                            "web.token_file",
                            format!("cannot read {}: {e}", file.display()),
                        )
                    })?,
            ),
            (None, None) => None,
        };
        Ok(Access {
            guard: Guard { auth, allow },
            trusted,
            token: token.map(|t| super::auth::token_digest(t.expose_secret().trim().as_bytes())),
        })
    }
}

fn parse_all(list: &[String], key: &str) -> Result<Vec<Cidr>, Problem> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse()
                .map_err(|e: crate::sources::http_push::guard::CidrError| {
                    Problem::new(format!("{key}[{i}]"), e.to_string())
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    #[test]
    fn off_by_default_and_every_problem_named() {
        let c = load_str("").expect("valid");
        assert!(c.web.listen.is_none());
        let Err(crate::config::ConfigError::Invalid(p)) = load_str(
            "[web]\nlisten = \"127.0.0.1:8099\"\nallow = [\"10.0.0.0/33\"]\ntrusted = [\"nope\"]\ntoken = \"\"\n[web.auth]\nusername = \"\"\npassword = \"x\"\n",
        ) else {
            panic!("accepted")
        };
        let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "web.allow[0]",
                "web.trusted[0]",
                "web.auth.username",
                "web.token"
            ],
            "{p:?}"
        );
    }

    #[test]
    fn access_reads_the_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cret-token\n").unwrap();
        let c = WebConfig {
            token_file: Some(f.clone()),
            trusted: vec!["172.30.32.2".into()],
            ..Default::default()
        };
        let a = c.access().expect("readable");
        assert_eq!(
            a.token,
            Some(super::super::auth::token_digest(b"s3cret-token"))
        );
        assert!(a.trusted[0].contains("172.30.32.2".parse().unwrap()));
        std::fs::remove_file(&f).unwrap();
        let e = c.access().expect_err("missing file");
        assert_eq!(e.path, "web.token_file");
        assert!(e.message.contains("token"), "{e}");
    }
}
