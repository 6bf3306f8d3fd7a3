//! Who may use the web server ([`super::config::Access`]): the allow-list first (`403`),
//! then, unless the peer is trusted (the Home Assistant ingress proxy), HTTP Basic
//! credentials (RFC 7617) or a bearer token (RFC 6750: the `Authorization: Bearer` header, the
//! `token` query parameter, or the `camqtt_token` cookie the server sets when the query
//! parameter was right, so that the page's own requests, its pictures and its event stream,
//! carry it). Secrets are compared as SHA-256 digests in constant time.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::config::Access;
use crate::sources::http_push::guard::{REALM, parse_basic};

/// The cookie that carries the token after a `?token=` visit.
pub const TOKEN_COOKIE: &str = "camqtt_token";

/// SHA-256 of a token, as [`Access::token`] keeps it.
pub fn token_digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// What to do with one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Pass,
    /// Serve it and set the token cookie (the token came as `?token=`).
    PassSetCookie(String),
    /// `403`: the peer is not on the allow-list.
    Forbidden,
    /// `401`: credentials missing or wrong.
    Unauthorized,
}

/// Decide for a request from `peer` with `headers` and the raw `query` string. Pure.
pub fn decide(access: &Access, peer: IpAddr, headers: &HeaderMap, query: Option<&str>) -> Verdict {
    if !access.guard.allows_peer(peer) {
        return Verdict::Forbidden;
    }
    let needs_login = access.guard.auth.is_some() || access.token.is_some();
    if !needs_login || access.trusted.iter().any(|c| c.contains(peer)) {
        return Verdict::Pass;
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let (Some(auth), Some(value)) = (&access.guard.auth, authorization)
        && let Ok((user, password)) = parse_basic(value)
        && auth.matches(&user, &password)
    {
        return Verdict::Pass;
    }
    let Some(want) = &access.token else {
        return Verdict::Unauthorized;
    };
    let ok = |t: &str| bool::from(token_digest(t.trim().as_bytes()).ct_eq(want));
    let bearer = authorization.and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(rest)
    });
    if bearer.is_some_and(ok) || cookie(headers, TOKEN_COOKIE).is_some_and(|c| ok(&c)) {
        return Verdict::Pass;
    }
    match query_token(query) {
        Some(t) if ok(&t) => Verdict::PassSetCookie(t),
        _ => Verdict::Unauthorized,
    }
}

/// The `WWW-Authenticate` challenge of a `401`: Basic when Basic is configured (a browser
/// then asks for the login), else Bearer.
pub fn challenge(access: &Access) -> HeaderValue {
    let scheme = if access.guard.auth.is_some() {
        "Basic"
    } else {
        "Bearer"
    };
    HeaderValue::from_str(&format!("{scheme} realm=\"{REALM}\"")).expect("ASCII")
}

/// The `Set-Cookie` value that keeps `token` for the page's own requests.
pub fn token_cookie(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
    ))
    .ok()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn query_token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::http_push::guard::{BasicAuth, Guard};
    use base64::Engine as _;

    fn access() -> Access {
        Access {
            guard: Guard {
                auth: Some(BasicAuth::new("viewer", "pw")),
                allow: vec![
                    "10.0.0.0/8".parse().unwrap(),
                    "172.30.32.2".parse().unwrap(),
                ],
            },
            trusted: vec!["172.30.32.2".parse().unwrap()],
            token: Some(token_digest(b"tok")),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn every_way_in_and_out() {
        let a = access();
        let lan: IpAddr = "10.1.2.3".parse().unwrap();
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("viewer:pw")
        );
        let wrong = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("viewer:nope")
        );
        let cases: Vec<(IpAddr, HeaderMap, Option<&str>, Verdict)> = vec![
            (
                "192.168.1.9".parse().unwrap(),
                headers(&[("authorization", &basic)]),
                None,
                Verdict::Forbidden,
            ),
            (
                "172.30.32.2".parse().unwrap(),
                headers(&[]),
                None,
                Verdict::Pass,
            ),
            (lan, headers(&[]), None, Verdict::Unauthorized),
            (
                lan,
                headers(&[("authorization", &basic)]),
                None,
                Verdict::Pass,
            ),
            (
                lan,
                headers(&[("authorization", &wrong)]),
                None,
                Verdict::Unauthorized,
            ),
            (
                lan,
                headers(&[("authorization", "Bearer tok")]),
                None,
                Verdict::Pass,
            ),
            (
                lan,
                headers(&[("authorization", "bearer tok2")]),
                None,
                Verdict::Unauthorized,
            ),
            (
                lan,
                headers(&[("cookie", "a=b; camqtt_token=tok")]),
                None,
                Verdict::Pass,
            ),
            (
                lan,
                headers(&[("cookie", "camqtt_token=x")]),
                None,
                Verdict::Unauthorized,
            ),
            (
                lan,
                headers(&[]),
                Some("device=a&token=tok"),
                Verdict::PassSetCookie("tok".into()),
            ),
            (
                lan,
                headers(&[]),
                Some("token=tok%21"),
                Verdict::Unauthorized,
            ),
        ];
        for (peer, h, q, want) in cases {
            assert_eq!(decide(&a, peer, &h, q), want, "{peer} {h:?} {q:?}");
        }
        // Nothing configured: everyone in.
        assert_eq!(
            decide(&Access::default(), lan, &headers(&[]), None),
            Verdict::Pass
        );
        assert_eq!(challenge(&a), "Basic realm=\"camqtt\"");
    }
}
