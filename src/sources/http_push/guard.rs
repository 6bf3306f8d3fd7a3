//! Who may talk to a listener: an address allow-list and optional HTTP Basic auth. PURE: no I/O
//! except [`Guard::from_settings`], which may read a password file once at start.
//!
//! The server applies the [`Guard`] before the handler sees anything:
//! - a peer outside the allow-list is refused at accept time: the server writes a fixed
//!   `403 Forbidden` (with `Connection: close`) without reading the request, discards what the
//!   client still sends for a moment, and closes. Nothing it sent is framed or parsed.
//! - with auth configured, every request's header section is checked as soon as it is complete,
//!   before the body is read: a missing, malformed or wrong `Authorization: Basic` header gets
//!   `401 Unauthorized` with `WWW-Authenticate: Basic realm="camqtt"` and the connection is
//!   closed. The body is discarded unread; the handler is never called.
//!
//! Credentials are compared in constant time (SHA-256 of both sides, then `subtle`'s
//! `ConstantTimeEq` over all 32 bytes), so neither the content nor the length of the configured
//! secret leaks through timing.

use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use ipnet::IpNet;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::response::Response;

/// Realm sent in `WWW-Authenticate`.
pub const REALM: &str = "camqtt";

/// An address block: `192.168.1.0/24`, `10.0.0.5` (= `/32`), `fd00::/8`, `::1` (= `/128`).
/// An [`IpNet`] with its host bits cleared, plus the IPv4-mapped matching of [`Cidr::contains`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(IpNet);

/// Why a [`Cidr`] could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("`{0}` is not an IP address or CIDR block (e.g. 192.168.1.0/24, fd00::/8)")]
    BadAddress(String),
    /// The prefix length is not a number in range.
    #[error("bad prefix length `{prefix}` (0..={max})")]
    BadPrefix {
        /// The prefix as written.
        prefix: String,
        /// 32 or 128.
        max: u8,
    },
}

impl Cidr {
    /// A block from an address and a prefix length; host bits are cleared. `None` when the
    /// prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        IpNet::new(addr, prefix).ok().map(|n| Cidr(n.trunc()))
    }

    /// The network address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.0.network()
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }

    /// `true` when `ip` is inside the block. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`,
    /// what a dual-stack listener reports for an IPv4 peer) match IPv4 blocks, and IPv4
    /// addresses match IPv6 blocks through their mapped form.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.0, ip.to_canonical()) {
            (IpNet::V6(net), IpAddr::V4(v4)) => net.contains(&v4.to_ipv6_mapped()),
            (net, ip) => net.contains(&ip),
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `addr[/prefix]`; the address may be in brackets (`[::1]`), surrounding whitespace is
    /// ignored, and the prefix is decimal digits only.
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress(s.to_owned()))?;
        let host = IpNet::from(addr);
        let Some(p) = prefix else {
            return Ok(Cidr(host));
        };
        let net = p
            .parse::<u8>()
            .ok()
            .filter(|_| p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| IpNet::new(addr, n).ok());
        match net {
            Some(net) => Ok(Cidr(net.trunc())),
            None => Err(CidrError::BadPrefix {
                prefix: p.to_owned(),
                max: host.max_prefix_len(),
            }),
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

/// The credentials a listener requires. `Debug` never shows the password; only a SHA-256 of
/// `user:password` is kept.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    username: String,
    digest: [u8; 32],
}

impl BasicAuth {
    /// Credentials from a user name and password.
    pub fn new(username: impl Into<String>, password: &str) -> BasicAuth {
        let username = username.into();
        let digest = credential_digest(username.as_bytes(), password.as_bytes());
        BasicAuth { username, digest }
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// `true` when `user`/`password` are exactly these credentials, in constant time.
    pub fn matches(&self, user: &[u8], password: &[u8]) -> bool {
        // Both sides are hashed first, so the comparison always covers 32 bytes.
        let got = credential_digest(user, password);
        got.ct_eq(&self.digest).into()
    }
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

fn credential_digest(user: &[u8], password: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    // Length-prefix the user name so `a:b` + `c` never equals `a` + `b:c`.
    h.update((user.len() as u64).to_be_bytes());
    h.update(user);
    h.update(password);
    h.finalize().into()
}

/// Why a `Authorization` header is not usable Basic credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BasicError {
    /// No `Authorization` header.
    #[error("no credentials")]
    Missing,
    /// Another scheme (`Digest`, `Bearer`, ...).
    #[error("not Basic authorization")]
    NotBasic,
    /// Not valid base64.
    #[error("malformed base64 in Basic authorization")]
    BadBase64,
    /// Decoded text has no `:` between user and password.
    #[error("malformed Basic credentials (no colon)")]
    NoColon,
}

/// Decode an `Authorization` header value `Basic <base64(user:password)>` into user and
/// password bytes (the password may contain `:`). The scheme is case-insensitive; padding is
/// optional.
pub fn parse_basic(value: &str) -> Result<(Vec<u8>, Vec<u8>), BasicError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once([' ', '\t']).ok_or(BasicError::NotBasic)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(BasicError::NotBasic);
    }
    let token = rest.trim();
    if token.is_empty() || token.len() > 8 * 1024 {
        return Err(BasicError::BadBase64);
    }
    let decoded = base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT
        .decode(token)
        .map_err(|_| BasicError::BadBase64)?;
    let colon = decoded
        .iter()
        .position(|b| *b == b':')
        .ok_or(BasicError::NoColon)?;
    let password = decoded[colon + 1..].to_vec();
    let mut user = decoded;
    user.truncate(colon);
    Ok((user, password))
}

/// Why a peer or request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The peer address is not on the allow-list (403).
    #[error("peer not in allow-list")]
    NotAllowed,
    /// Credentials missing or unusable (401).
    #[error("{0}")]
    Unauthenticated(BasicError),
    /// Credentials present but wrong (401).
    #[error("wrong user name or password")]
    WrongCredentials,
}

impl Denied {
    /// Short stable reason for logs: `not-allowed`, `no-credentials`, `not-basic`,
    /// `bad-base64`, `no-colon`, `wrong-credentials`.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::NotAllowed => "not-allowed",
            Denied::Unauthenticated(BasicError::Missing) => "no-credentials",
            Denied::Unauthenticated(BasicError::NotBasic) => "not-basic",
            Denied::Unauthenticated(BasicError::BadBase64) => "bad-base64",
            Denied::Unauthenticated(BasicError::NoColon) => "no-colon",
            Denied::WrongCredentials => "wrong-credentials",
        }
    }

    /// HTTP status: 403 for [`Denied::NotAllowed`], else 401.
    pub fn status(&self) -> u16 {
        match self {
            Denied::NotAllowed => 403,
            _ => 401,
        }
    }

    /// The reply: `403 Forbidden`, or `401 Unauthorized` with the Basic challenge.
    pub fn response(&self) -> Response {
        match self {
            Denied::NotAllowed => Response::new(403, "Forbidden", &b"forbidden\n"[..]),
            _ => unauthorized(),
        }
    }
}

/// `401 Unauthorized` with `WWW-Authenticate: Basic realm="camqtt"`.
pub fn unauthorized() -> Response {
    Response::new(401, "Unauthorized", &b"unauthorized\n"[..])
        .with_header("WWW-Authenticate", format!("Basic realm=\"{REALM}\""))
}

/// Allow-list and credentials of one listener. The default lets everyone in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// Required credentials; `None`: no authentication.
    pub auth: Option<BasicAuth>,
    /// Allowed peer blocks; empty: every peer.
    pub allow: Vec<Cidr>,
}

/// Why a [`Guard`] could not be built from settings.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// An allow-list entry is not an address or block.
    #[error("allow[{index}]: {error}")]
    Allow {
        /// Position in the list.
        index: usize,
        /// Cause.
        error: CidrError,
    },
    /// Auth is configured without a password.
    #[error("auth needs a password or a password_file")]
    NoPassword,
    /// The password file could not be read.
    #[error("cannot read password file {path}: {source}")]
    PasswordFile {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl Guard {
    /// Build a guard from configuration values: `auth` is (user name, password, password
    /// file). `password` wins over `password_file`; a file's trailing CR/LF are ignored.
    /// Errors: a bad allow-list entry, auth without any password, an unreadable file.
    pub fn from_settings(
        auth: Option<(&str, Option<&SecretString>, Option<&Path>)>,
        allow: &[String],
    ) -> Result<Guard, GuardError> {
        let allow = allow
            .iter()
            .enumerate()
            .map(|(index, s)| {
                s.parse()
                    .map_err(|error| GuardError::Allow { index, error })
            })
            .collect::<Result<Vec<Cidr>, _>>()?;
        let auth = match auth {
            None => None,
            Some((user, Some(password), _)) => Some(BasicAuth::new(user, password.expose_secret())),
            Some((user, None, Some(file))) => {
                let text =
                    std::fs::read_to_string(file).map_err(|source| GuardError::PasswordFile {
                        path: file.display().to_string(),
                        source,
                    })?;
                let password = crate::config::secret::from_file_text(text);
                Some(BasicAuth::new(user, password.expose_secret()))
            }
            Some((_, None, None)) => return Err(GuardError::NoPassword),
        };
        Ok(Guard { auth, allow })
    }

    /// `true` when the guard checks nothing.
    pub fn is_open(&self) -> bool {
        self.auth.is_none() && self.allow.is_empty()
    }

    /// `true` when the peer may connect (empty allow-list: everyone).
    pub fn allows_peer(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }

    /// Check the `Authorization` header among `headers` (names case-insensitive; the first one
    /// counts). `Ok` when no auth is configured.
    pub fn check_auth(&self, headers: &[(String, String)]) -> Result<(), Denied> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        let value = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.as_str())
            .ok_or(Denied::Unauthenticated(BasicError::Missing))?;
        let (user, password) = parse_basic(value).map_err(Denied::Unauthenticated)?;
        if auth.matches(&user, &password) {
            Ok(())
        } else {
            Err(Denied::WrongCredentials)
        }
    }

    /// Both checks: the peer against the allow-list, then the credentials.
    pub fn check(&self, peer: IpAddr, headers: &[(String, String)]) -> Result<(), Denied> {
        if !self.allows_peer(peer) {
            return Err(Denied::NotAllowed);
        }
        self.check_auth(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    // Independent arithmetic the ipnet-backed blocks are checked against.
    fn mask32(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    fn mask128(prefix: u8) -> u128 {
        u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn hdr(v: &str) -> Vec<(String, String)> {
        vec![("authorization".to_string(), v.to_string())]
    }

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn cidr_parses_addresses_and_blocks() {
        let c: Cidr = "192.168.1.77/24".parse().unwrap();
        assert_eq!(c.to_string(), "192.168.1.0/24");
        assert!(c.contains(ip("192.168.1.1")));
        assert!(c.contains(ip("192.168.1.255")));
        assert!(!c.contains(ip("192.168.2.1")));
        let one: Cidr = " 10.0.0.5 ".parse().unwrap();
        assert_eq!(one.prefix(), 32);
        assert!(one.contains(ip("10.0.0.5")));
        assert!(!one.contains(ip("10.0.0.6")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12:3456::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let lo6: Cidr = "[::1]".parse().unwrap();
        assert_eq!(lo6.prefix(), 128);
        assert!(lo6.contains(ip("::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        assert!(
            !all.contains(ip("::2")),
            "an IPv4 rule never matches a native IPv6 peer"
        );
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
    }

    #[test]
    fn cidr_rejects_garbage() {
        for bad in [
            "",
            "/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "host.lan",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "1.2.3.4 /8",
            "::1/x",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} parsed");
        }
        assert!(matches!(
            "10.0.0.0/40".parse::<Cidr>(),
            Err(CidrError::BadPrefix { max: 32, .. })
        ));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_rules() {
        let c: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("::ffff:127.0.0.1")));
        assert!(!c.contains(ip("::ffff:10.0.0.1")));
        // And an IPv4 peer matches a rule written in mapped form.
        let m: Cidr = "::ffff:192.168.0.0/112".parse().unwrap();
        assert!(m.contains(ip("192.168.3.4")));
        assert!(!m.contains(ip("192.169.3.4")));
    }

    #[test]
    fn basic_header_parsing() {
        assert_eq!(
            parse_basic(&format!("Basic {}", b64(b"cam:pa:ss"))).unwrap(),
            (b"cam".to_vec(), b"pa:ss".to_vec())
        );
        assert_eq!(
            parse_basic(&format!("bAsIc   {}", b64(b":"))).unwrap(),
            (vec![], vec![])
        );
        // Unpadded is accepted.
        let unpadded = b64(b"a:b").trim_end_matches('=').to_string();
        assert_eq!(
            parse_basic(&format!("Basic {unpadded}")).unwrap(),
            (b"a".to_vec(), b"b".to_vec())
        );
        assert_eq!(parse_basic("Basic"), Err(BasicError::NotBasic));
        assert_eq!(parse_basic("Basic "), Err(BasicError::NotBasic));
        assert_eq!(parse_basic("Bearer abc"), Err(BasicError::NotBasic));
        assert_eq!(parse_basic("Digest username=x"), Err(BasicError::NotBasic));
        assert_eq!(parse_basic("Basic !!!!"), Err(BasicError::BadBase64));
        assert_eq!(parse_basic("Basic YWJj=d"), Err(BasicError::BadBase64));
        assert_eq!(
            parse_basic(&format!("Basic {}", b64(b"nocolon"))),
            Err(BasicError::NoColon)
        );
    }

    #[test]
    fn guard_checks_peer_then_credentials() {
        let g = Guard::from_settings(
            Some(("cam", Some(&"s3cret".into()), None)),
            &["10.0.0.0/8".into(), "::1".into()],
        )
        .unwrap();
        let ok = hdr(&format!("Basic {}", b64(b"cam:s3cret")));
        assert_eq!(g.check(ip("10.1.2.3"), &ok), Ok(()));
        assert_eq!(g.check(ip("::1"), &ok), Ok(()));
        assert_eq!(g.check(ip("127.0.0.1"), &ok), Err(Denied::NotAllowed));
        assert_eq!(
            g.check(ip("10.1.2.3"), &[]),
            Err(Denied::Unauthenticated(BasicError::Missing))
        );
        let wrong = hdr(&format!("Basic {}", b64(b"cam:s3creT")));
        assert_eq!(
            g.check(ip("10.1.2.3"), &wrong),
            Err(Denied::WrongCredentials)
        );
        let wrong_user = hdr(&format!("Basic {}", b64(b"Cam:s3cret")));
        assert_eq!(
            g.check(ip("10.1.2.3"), &wrong_user),
            Err(Denied::WrongCredentials)
        );
        // The split between user and password matters.
        let shifted = hdr(&format!("Basic {}", b64(b"cams:3cret")));
        assert_eq!(
            g.check(ip("10.1.2.3"), &shifted),
            Err(Denied::WrongCredentials)
        );
        assert_eq!(Denied::NotAllowed.status(), 403);
        let r = Denied::WrongCredentials.response();
        assert_eq!(r.status, 401);
        assert!(
            r.headers
                .iter()
                .any(|(n, v)| *n == "WWW-Authenticate" && v == "Basic realm=\"camqtt\"")
        );
    }

    #[test]
    fn open_guard_lets_everyone_in() {
        let g = Guard::default();
        assert!(g.is_open());
        assert_eq!(g.check(ip("203.0.113.9"), &[]), Ok(()));
    }

    #[test]
    fn settings_errors_and_password_file() {
        assert!(matches!(
            Guard::from_settings(None, &["nope".into()]),
            Err(GuardError::Allow { index: 0, .. })
        ));
        assert!(matches!(
            Guard::from_settings(Some(("u", None, None)), &[]),
            Err(GuardError::NoPassword)
        ));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\r\n").unwrap();
        let g = Guard::from_settings(Some(("u", None, Some(&file))), &[]).unwrap();
        assert!(g.auth.as_ref().unwrap().matches(b"u", b"from-file"));
        let missing = dir.path().join("missing");
        assert!(matches!(
            Guard::from_settings(Some(("u", None, Some(&missing))), &[]),
            Err(GuardError::PasswordFile { .. })
        ));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let g =
            Guard::from_settings(Some(("cam", Some(&"hunter2-secret".into()), None)), &[]).unwrap();
        let dbg = format!("{g:?}");
        assert!(dbg.contains("cam"));
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }

    proptest! {
        #[test]
        fn v4_block_membership_matches_arithmetic(a: u32, p in 0u8..=32, x: u32) {
            let c = Cidr::new(IpAddr::V4(Ipv4Addr::from(a)), p).unwrap();
            let m = mask32(p);
            prop_assert_eq!(c.contains(IpAddr::V4(Ipv4Addr::from(x))), (a & m) == (x & m));
            // Its own address and the mapped form are always inside.
            prop_assert!(c.contains(IpAddr::V4(Ipv4Addr::from(a))));
            prop_assert!(c.contains(IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())));
            // A dual-stack listener reports IPv4 peers in mapped form: same answer.
            prop_assert_eq!(
                c.contains(IpAddr::V6(Ipv4Addr::from(x).to_ipv6_mapped())),
                (a & m) == (x & m)
            );
            prop_assert_eq!(c.addr(), IpAddr::V4(Ipv4Addr::from(a & m)));
            prop_assert_eq!(c.prefix(), p);
            // Display round-trips.
            prop_assert_eq!(c.to_string().parse::<Cidr>().unwrap(), c);
        }

        #[test]
        fn v6_block_membership_matches_arithmetic(a: u128, p in 0u8..=128, x: u128) {
            let c = Cidr::new(IpAddr::V6(Ipv6Addr::from(a)), p).unwrap();
            let m = mask128(p);
            prop_assert_eq!(c.contains(IpAddr::V6(Ipv6Addr::from(x))), (a & m) == (x & m));
            prop_assert_eq!(c.addr(), IpAddr::V6(Ipv6Addr::from(a & m)));
            prop_assert_eq!(c.to_string().parse::<Cidr>().unwrap(), c);
        }

        #[test]
        fn mapped_v6_blocks_match_ipv4_peers(a: u32, p in 96u8..=128, x: u32) {
            let c = Cidr::new(IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped()), p).unwrap();
            let m = mask32(p - 96);
            let inside = (a & m) == (x & m);
            prop_assert_eq!(c.contains(IpAddr::V4(Ipv4Addr::from(x))), inside);
            prop_assert_eq!(c.contains(IpAddr::V6(Ipv4Addr::from(x).to_ipv6_mapped())), inside);
        }

        #[test]
        fn cidr_parser_never_panics(s in "\\PC{0,48}") {
            let _ = s.parse::<Cidr>();
        }

        #[test]
        fn basic_roundtrip(user in "[^:\\x00]{0,32}", pass in "\\PC{0,64}") {
            let v = format!("Basic {}", b64(format!("{user}:{pass}").as_bytes()));
            let (u, p) = parse_basic(&v).unwrap();
            prop_assert_eq!(u, user.as_bytes().to_vec());
            prop_assert_eq!(p, pass.as_bytes().to_vec());
            let g = Guard { auth: Some(BasicAuth::new(user.clone(), &pass)), allow: vec![] };
            prop_assert_eq!(g.check_auth(&hdr(&v)), Ok(()));
            let other = format!("Basic {}", b64(format!("{user}:{pass}x").as_bytes()));
            prop_assert_eq!(g.check_auth(&hdr(&other)), Err(Denied::WrongCredentials));
        }

        #[test]
        fn basic_parser_never_panics(s in "\\PC{0,200}", raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_basic(&s);
            let _ = parse_basic(&format!("Basic {s}"));
            let _ = parse_basic(&format!("Basic {}", b64(&raw)));
        }
    }
}
