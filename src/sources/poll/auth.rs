//! HTTP authentication of one camera (pure, no I/O): Basic (RFC 7617) and Digest (RFC 7616)
//! through one code path, `http_auth::PasswordClient`, negotiated from the camera's
//! `401 Unauthorized` challenge (`WWW-Authenticate`, RFC 7235 §4.1).
//!
//! The state is kept per camera for the life of the source, so that the Digest nonce is reused
//! (RFC 7616 §3.3: the nonce count `nc` goes up with each request) and every snapshot after
//! the first costs one request, not two. A 401 is read as follows:
//!
//! * to a request without credentials: the challenge to answer; retry with them;
//! * to credentials computed from an earlier challenge (a reused nonce): the nonce expired, or
//!   the camera restarted; retry with the new challenge (`stale=true` or not, RFC 7616 §3.3);
//! * to credentials computed from the challenge just received: refused. If these credentials
//!   never worked on this camera, they are wrong ([`AuthFailure::Rejected`]). If they worked
//!   before, they are most likely fine and the camera is out of connections: Dahua firmware
//!   answers `401` when its connection limit is used up, which must not read as a wrong
//!   password ([`AuthFailure::Busy`], retried with backoff).
//!
//! The caller bounds the retries of one snapshot ([`MAX_ATTEMPTS`]).

use http_auth::{PasswordClient, PasswordParams};
use secrecy::{ExposeSecret as _, SecretString};

/// Requests per snapshot at most: the first one, a retry with a new challenge, and one more
/// for a nonce that went stale in between.
pub const MAX_ATTEMPTS: usize = 3;

/// User name and password for a camera.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password (never logged).
    pub password: SecretString,
}

/// What the request that got a 401 carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// No `Authorization` header.
    Nothing,
    /// An answer to a challenge from an earlier request (reused nonce, or Basic).
    Reused,
    /// An answer to the challenge of the 401 just before.
    Fresh,
}

/// What to do after a 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send the request again; [`AuthState::authorization`] has the new credentials.
    Retry,
    /// Give up this snapshot.
    Fail(AuthFailure),
}

/// Why a camera's 401 ends a snapshot attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// The camera wants credentials and the configuration has none.
    #[error("the camera asks for a user name and password and none is configured")]
    NoCredentials,
    /// No usable challenge: none sent, unparsable, or only schemes other than Basic and Digest.
    #[error("the camera's authentication challenge is unusable: {0}")]
    BadChallenge(String),
    /// The credentials were refused and never worked on this camera: wrong user or password.
    #[error("wrong user name or password (the camera refused credentials that never worked)")]
    Rejected,
    /// Credentials that worked before were refused: the camera is out of connections (Dahua
    /// answers 401 then), or the password was changed on the camera.
    #[error(
        "the camera refused credentials that worked before (connection limit reached, or the password was changed on the camera)"
    )]
    Busy,
}

/// The authentication state of one camera.
#[derive(Debug, Default)]
pub struct AuthState {
    client: Option<PasswordClient>,
    fresh: bool,
    worked: bool,
}

impl AuthState {
    /// A camera not yet asked.
    pub fn new() -> AuthState {
        AuthState::default()
    }

    /// The scheme negotiated so far (`basic`, `digest`), for logs.
    pub fn scheme(&self) -> Option<&'static str> {
        match &self.client {
            Some(PasswordClient::Basic(_)) => Some("basic"),
            Some(PasswordClient::Digest(_)) => Some("digest"),
            Some(_) => Some("other"),
            None => None,
        }
    }

    /// The `Authorization` value for a `method` request to `uri` (the request target: path
    /// and query, RFC 7616 §3.4 `uri`), and what it is ([`Sent`]); `(None, Nothing)` before
    /// the first challenge or without credentials. Each Digest answer uses the next nonce
    /// count. Errors: the stored challenge cannot be answered (no supported `qop`, nonce count
    /// exhausted); the caller treats it as [`AuthFailure::BadChallenge`].
    pub fn authorization(
        &mut self,
        creds: Option<&Credentials>,
        method: &str,
        uri: &str,
    ) -> Result<(Option<String>, Sent), AuthFailure> {
        let (Some(client), Some(c)) = (self.client.as_mut(), creds) else {
            return Ok((None, Sent::Nothing));
        };
        let value = client
            .respond(&PasswordParams {
                username: &c.username,
                password: c.password.expose_secret(),
                uri,
                method,
                body: Some(&[]),
            })
            .map_err(AuthFailure::BadChallenge)?;
        let sent = if std::mem::take(&mut self.fresh) {
            Sent::Fresh
        } else {
            Sent::Reused
        };
        Ok((Some(value), sent))
    }

    /// A request was answered with anything but 401: the credentials (if any) work.
    pub fn succeeded(&mut self, sent: Sent) {
        if sent != Sent::Nothing {
            self.worked = true;
        }
    }

    /// A 401 arrived for a request that carried `sent`, with these `WWW-Authenticate`
    /// values. Keeps the new challenge (for the retry and the requests after it).
    pub fn unauthorized(
        &mut self,
        challenges: &[&str],
        sent: Sent,
        creds: Option<&Credentials>,
    ) -> Next {
        if creds.is_none() {
            return Next::Fail(AuthFailure::NoCredentials);
        }
        if challenges.is_empty() {
            return Next::Fail(AuthFailure::BadChallenge(
                "401 without WWW-Authenticate".into(),
            ));
        }
        let mut builder = PasswordClient::builder();
        for c in challenges {
            builder = builder.challenges(c);
        }
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => {
                self.client = None;
                return Next::Fail(AuthFailure::BadChallenge(e));
            }
        };
        let stale = matches!(&client, PasswordClient::Digest(d) if d.stale());
        self.client = Some(client);
        self.fresh = true;
        match sent {
            Sent::Nothing | Sent::Reused => Next::Retry,
            // A fresh nonce reported stale at once: the camera's clock of nonces is odd;
            // one more try (the caller's attempt cap ends a loop).
            Sent::Fresh if stale => Next::Retry,
            Sent::Fresh if self.worked => Next::Fail(AuthFailure::Busy),
            Sent::Fresh => Next::Fail(AuthFailure::Rejected),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn creds() -> Credentials {
        Credentials {
            username: "admin".into(),
            password: SecretString::from("12345"),
        }
    }

    fn md5_hex(s: &str) -> String {
        hex(&md5::Md5::digest(s.as_bytes()))
    }

    fn sha256_hex(s: &str) -> String {
        hex(&sha2::Sha256::digest(s.as_bytes()))
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// `key="value"` or `key=value` out of an `Authorization: Digest` value.
    fn param(auth: &str, key: &str) -> String {
        let rest = auth.strip_prefix("Digest ").unwrap();
        for part in rest.split(", ") {
            if let Some((k, v)) = part.split_once('=')
                && k == key
            {
                return v.trim_matches('"').to_owned();
            }
        }
        panic!("no {key} in {auth}")
    }

    #[test]
    fn digest_sha256_response_is_the_rfc7616_computation() {
        let mut a = AuthState::new();
        let c = creds();
        assert_eq!(
            a.authorization(Some(&c), "GET", "/x").unwrap(),
            (None, Sent::Nothing)
        );
        let ch = r#"Digest realm="cam", qop="auth", algorithm=SHA-256, nonce="n1", opaque="op""#;
        assert_eq!(a.unauthorized(&[ch], Sent::Nothing, Some(&c)), Next::Retry);
        assert_eq!(a.scheme(), Some("digest"));
        let (v, sent) = a.authorization(Some(&c), "GET", "/pic?ch=1").unwrap();
        assert_eq!(sent, Sent::Fresh);
        let v = v.unwrap();
        // RFC 7616 §3.4.1: response = H(H(A1):nonce:nc:cnonce:qop:H(A2)).
        let ha1 = sha256_hex("admin:cam:12345");
        let ha2 = sha256_hex("GET:/pic?ch=1");
        let want = sha256_hex(&format!(
            "{ha1}:n1:{}:{}:auth:{ha2}",
            param(&v, "nc"),
            param(&v, "cnonce")
        ));
        assert_eq!(param(&v, "response"), want);
        assert_eq!(param(&v, "nc"), "00000001");
        assert_eq!(param(&v, "opaque"), "op");
        assert_eq!(param(&v, "uri"), "/pic?ch=1");
        // The nonce is reused with the next count.
        a.succeeded(sent);
        let (v2, sent2) = a.authorization(Some(&c), "GET", "/pic?ch=1").unwrap();
        assert_eq!(sent2, Sent::Reused);
        assert_eq!(param(v2.as_ref().unwrap(), "nc"), "00000002");
        assert_eq!(param(v2.as_ref().unwrap(), "nonce"), "n1");
    }

    #[test]
    fn stale_or_forgotten_nonce_renegotiates_then_a_fresh_refusal_is_busy() {
        let mut a = AuthState::new();
        let c = creds();
        let ch = |n: &str, stale: bool| {
            format!(r#"Digest realm="cam", qop="auth", nonce="{n}", algorithm=MD5, stale={stale}"#)
        };
        assert_eq!(
            a.unauthorized(&[&ch("n1", false)], Sent::Nothing, Some(&c)),
            Next::Retry
        );
        let (v, s) = a.authorization(Some(&c), "GET", "/").unwrap();
        let v = v.unwrap();
        let (ha1, ha2) = (md5_hex("admin:cam:12345"), md5_hex("GET:/"));
        let want = md5_hex(&format!(
            "{ha1}:n1:00000001:{}:auth:{ha2}",
            param(&v, "cnonce")
        ));
        assert_eq!(param(&v, "response"), want);
        a.succeeded(s);
        // Later: the reused nonce went stale.
        let (_, s) = a.authorization(Some(&c), "GET", "/").unwrap();
        assert_eq!(s, Sent::Reused);
        assert_eq!(a.unauthorized(&[&ch("n2", true)], s, Some(&c)), Next::Retry);
        let (v, s) = a.authorization(Some(&c), "GET", "/").unwrap();
        assert_eq!(
            (param(v.as_ref().unwrap(), "nonce").as_str(), s),
            ("n2", Sent::Fresh)
        );
        // Refused although fresh, after having worked: the connection limit, not the password.
        assert_eq!(
            a.unauthorized(&[&ch("n3", false)], s, Some(&c)),
            Next::Fail(AuthFailure::Busy)
        );
    }

    #[test]
    fn wrong_password_no_credentials_and_bad_challenges() {
        let c = creds();
        let mut a = AuthState::new();
        let basic = r#"Basic realm="cam""#;
        assert_eq!(
            a.unauthorized(&[basic], Sent::Nothing, Some(&c)),
            Next::Retry
        );
        assert_eq!(a.scheme(), Some("basic"));
        let (v, s) = a.authorization(Some(&c), "GET", "/").unwrap();
        assert_eq!(v.unwrap(), "Basic YWRtaW46MTIzNDU=");
        assert_eq!(
            a.unauthorized(&[basic], s, Some(&c)),
            Next::Fail(AuthFailure::Rejected)
        );
        assert_eq!(
            AuthState::new().unauthorized(&[basic], Sent::Nothing, None),
            Next::Fail(AuthFailure::NoCredentials)
        );
        for bad in [&[][..], &["Bearer realm=\"x\""], &["Digest realm"]] {
            assert!(matches!(
                AuthState::new().unauthorized(bad, Sent::Nothing, Some(&c)),
                Next::Fail(AuthFailure::BadChallenge(_))
            ));
        }
        // Digest is preferred over Basic whatever the order.
        let mut a = AuthState::new();
        a.unauthorized(
            &[basic, r#"Digest realm="cam", qop="auth", nonce="n""#],
            Sent::Nothing,
            Some(&c),
        );
        assert_eq!(a.scheme(), Some("digest"));
    }
}
