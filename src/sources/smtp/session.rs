//! One SMTP connection's dialogue, without I/O: lines in, [`Step`]s out.
//!
//! mailin's sans-IO state machine keeps the command sequence (RFC 5321 §4.1.4), decodes
//! `AUTH LOGIN` / `AUTH PLAIN` (RFC 4954, RFC 4616), un-stuffs dots (§4.5.2) and ends the
//! content at `<CRLF>.<CRLF>`. [`Conn`] is the glue that makes it serve cameras:
//!
//! * **AUTH without TLS, also after `HELO`.** Many cameras cannot do TLS, and some greet with
//!   `HELO` and then send `AUTH LOGIN` anyway (field case 12). mailin's plaintext-auth switch
//!   allows the first; mailin answers `HELO` with `550` once AUTH is on, so a `HELO` is given
//!   to mailin as `EHLO` and answered with the one-line `250 <hostname>`.
//! * **AUTH optional.** With AUTH on, mailin refuses `MAIL` before a login. When the login
//!   is not required (no accounts, or `require_auth = false`) or was already given (mailin
//!   forgets it on `RSET` / a new `EHLO`), `Conn` grants mailin's pending login itself before
//!   passing the `MAIL` on; otherwise it answers `530 Authentication required` (RFC 4954 §6).
//! * **The EHLO reply** is ours: `AUTH LOGIN PLAIN` (and the `AUTH=` form old clients look
//!   for), `SIZE <max>` (RFC 1870), `8BITMIME`, `STARTTLS` when a certificate is configured
//!   (RFC 3207).
//! * **Lenient addresses.** mailin's `MAIL` / `RCPT` parser takes no ESMTP parameters besides
//!   `BODY=` and no space after the colon; cameras send `MAIL FROM: <a@b>` and clients
//!   `SIZE=n`. `Conn` parses both commands itself ([`parse_path`]), refuses a declared size
//!   over the cap (`552`, RFC 1870 §6.1) and hands mailin a normalised command; the addresses
//!   it keeps are its own parse.
//! * **Size cap.** Content past `max_message_size` is dropped as it arrives; the final `.`
//!   then gets `552` and nothing is published.
//! * **Durability.** The `250` after the final `.` is not sent here: [`Step::Deliver`] hands
//!   the mail to the shell, which answers once the event is durable.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use mailin::{Action, AuthMechanism, Handler, Response, Session, SessionBuilder};
use secrecy::ExposeSecret as _;
use subtle::ConstantTimeEq as _;

use super::config::Account;

/// Longest command line accepted (RFC 5321 §4.5.3.1.4 says 512; AUTH PLAIN with long
/// credentials and sloppy firmware need more).
pub const MAX_COMMAND_LINE: usize = 4096;
/// Longest address kept (RFC 5321 §4.5.3.1.3: 256 octets for a path).
const MAX_PATH: usize = 256;
/// Recipients kept per mail (RFC 5321 §4.5.3.1.8 asks for at least 100).
const MAX_RECIPIENTS: usize = 100;

/// The rules of one listener's sessions.
#[derive(Debug)]
pub struct Policy {
    /// Name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Accounts; empty: any login is accepted (and becomes the device's handle).
    pub accounts: Vec<Account>,
    /// `MAIL` without a login gets `530`.
    pub require_auth: bool,
    /// Largest mail content, bytes (advertised as `SIZE`).
    pub max_message_size: usize,
    /// A certificate is configured: `STARTTLS` is offered.
    pub tls_available: bool,
}

impl Policy {
    /// Whether `user` / `password` may log in. Constant-time password comparison; an empty or
    /// NUL-holding user name never logs in.
    pub fn check(&self, user: &str, password: &str) -> bool {
        if user.is_empty() || user.contains('\0') {
            return false;
        }
        if self.accounts.is_empty() {
            return true;
        }
        // Compare against every account so the time does not tell which names exist.
        let mut ok = false;
        for a in &self.accounts {
            let same_user: bool = a.username.as_bytes().ct_eq(user.as_bytes()).into();
            let same_pw: bool = a
                .password
                .expose_secret()
                .as_bytes()
                .ct_eq(password.as_bytes())
                .into();
            ok |= same_user & same_pw;
        }
        ok
    }
}

/// A complete mail, to be made durable before the `250`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The content (dot-unstuffed, CRLF line ends as sent).
    pub data: Vec<u8>,
    /// `MAIL FROM` address (`None` for the null path `<>`).
    pub mail_from: Option<String>,
    /// `RCPT TO` addresses, in order.
    pub rcpt_to: Vec<String>,
    /// The login of the session, if it logged in.
    pub login: Option<String>,
}

/// Why the session refused something (for the shell's log line and counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong credentials (`535`).
    AuthFailed,
    /// `MAIL` without a required login (`530`).
    AuthRequired,
    /// Content or declared `SIZE` over the cap (`552`).
    TooLarge,
    /// A command line over [`MAX_COMMAND_LINE`] (`500`).
    LineTooLong,
}

impl Refusal {
    /// Short stable name (`auth-failed`, ...), for logs and `bridge/unparsed`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::AuthFailed => "auth-failed",
            Refusal::AuthRequired => "auth-required",
            Refusal::TooLarge => "message-too-large",
            Refusal::LineTooLong => "line-too-long",
        }
    }
}

/// What the shell does after a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to send (a content line).
    Nothing,
    /// Send this reply.
    Reply(Vec<u8>),
    /// Send this refusal (log and count it).
    Refused(Vec<u8>, Refusal),
    /// Send this reply, then close (`221` after `QUIT`, `421`).
    Close(Vec<u8>),
    /// Send this reply (`220`), then run the TLS handshake and call [`Conn::tls_started`].
    StartTls(Vec<u8>),
    /// The mail is complete: make it durable, then send [`reply_stored`] or
    /// [`reply_not_stored`].
    Deliver(Delivery),
}

/// The reply once a delivered mail is durable.
pub fn reply_stored() -> Vec<u8> {
    b"250 OK queued\r\n".to_vec()
}

/// The reply when a delivered mail could not be stored (the bridge is stopping): a transient
/// failure, so the camera sends it again (RFC 5321 §4.2.1, 4yz).
pub fn reply_not_stored() -> Vec<u8> {
    b"451 Requested action aborted: local error in processing; send again later\r\n".to_vec()
}

/// What mailin's callbacks share with [`Conn`].
#[derive(Debug, Default)]
struct Shared {
    /// The account the session logged in with.
    login: Option<String>,
    /// Accept the next AUTH without a check (the grant described in the module docs).
    grant_next: bool,
    /// Refuse the next AUTH (a client's `*` cancel).
    refuse_next: bool,
    /// Content of the mail in progress.
    data: Vec<u8>,
    /// Content went past the cap: it is being dropped.
    overflow: bool,
    /// The cap.
    max: usize,
}

struct Callbacks {
    shared: Arc<Mutex<Shared>>,
    policy: Arc<Policy>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding it cannot leave `Shared` inconsistent in a way that matters.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Callbacks {
    fn auth(&mut self, user: &str, password: &str) -> Response {
        let mut s = lock(&self.shared);
        if std::mem::take(&mut s.refuse_next) {
            return mailin::response::INVALID_CREDENTIALS;
        }
        if std::mem::take(&mut s.grant_next) {
            return mailin::response::AUTH_OK;
        }
        if self.policy.check(user, password) {
            s.login = Some(user.chars().take(MAX_PATH).collect());
            mailin::response::AUTH_OK
        } else {
            mailin::response::INVALID_CREDENTIALS
        }
    }
}

impl Handler for Callbacks {
    fn data_start(&mut self, _: &str, _: &str, _: bool, _: &[String]) -> Response {
        let mut s = lock(&self.shared);
        s.data.clear();
        s.overflow = false;
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let mut s = lock(&self.shared);
        if s.overflow || s.data.len() + buf.len() > s.max {
            s.overflow = true;
            s.data = Vec::new();
        } else {
            s.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn auth_plain(&mut self, authz: &str, authn: &str, password: &str) -> Response {
        // RFC 4616 §2: the authentication identity is the account; some clients leave it
        // empty and put the name in the authorisation identity.
        let user = if authn.is_empty() { authz } else { authn };
        self.auth(user, password)
    }

    fn auth_login(&mut self, username: &str, password: &str) -> Response {
        self.auth(username, password)
    }
}

/// One connection's dialogue (see the module docs).
pub struct Conn {
    session: Session<Callbacks>,
    shared: Arc<Mutex<Shared>>,
    policy: Arc<Policy>,
    /// mailin got an EHLO (it waits for AUTH before MAIL).
    greeted: bool,
    /// mailin is in its "greeted, not yet logged in" state: a MAIL needs the grant first.
    awaiting_auth: bool,
    /// An AUTH exchange is running (the last reply was `334`).
    in_auth: bool,
    /// Mail content is arriving.
    in_data: bool,
    tls_active: bool,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("greeted", &self.greeted)
            .field("in_data", &self.in_data)
            .finish_non_exhaustive()
    }
}

fn bytes(r: &Response) -> Vec<u8> {
    r.buffer().unwrap_or_default()
}

/// The line with a CRLF end (a bare LF end becomes CRLF; a line without any gets one).
fn crlf(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if line.ends_with(b"\r\n") {
        line.into()
    } else {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let mut v = Vec::with_capacity(body.len() + 2);
        v.extend_from_slice(body);
        v.extend_from_slice(b"\r\n");
        v.into()
    }
}

/// The path of a `MAIL FROM:` / `RCPT TO:` argument and its ESMTP parameters.
///
/// `args` is what follows the verb (`FROM:<a@b> SIZE=10`). Lenient as cameras need: a space
/// after the colon, a path without angle brackets, a source route (`<@relay:a@b>`, RFC 5321
/// §4.1.2, dropped). Returns `(path, params)`; the path is empty for the null path `<>`.
/// Errors (`None`): a missing `FROM:` / `TO:`, an unclosed `<`, control characters, a path
/// over 256 octets.
pub fn parse_path<'a>(args: &'a str, keyword: &str) -> Option<(String, Vec<(String, &'a str)>)> {
    let args = args.trim();
    let head = args.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = args[keyword.len()..].trim_start();
    let (path, params) = if let Some(inner) = rest.strip_prefix('<') {
        let close = inner.find('>')?;
        (&inner[..close], &inner[close + 1..])
    } else {
        rest.split_once(char::is_whitespace).unwrap_or((rest, ""))
    };
    let path = match path.rsplit_once(':') {
        Some((route, addr)) if route.starts_with('@') => addr,
        _ => path,
    };
    if path.len() > MAX_PATH || path.chars().any(char::is_control) {
        return None;
    }
    let params = params
        .split_whitespace()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), v),
            None => (p.to_ascii_uppercase(), ""),
        })
        .collect();
    Some((path.to_string(), params))
}

impl Conn {
    /// A new dialogue with a client at `peer`.
    pub fn new(policy: Arc<Policy>, peer: IpAddr) -> Conn {
        let mut builder = SessionBuilder::new(policy.hostname.clone());
        builder
            .enable_auth(AuthMechanism::Login)
            .enable_auth(AuthMechanism::Plain)
            .insecure_enable_plaintext_auth();
        if policy.tls_available {
            builder.enable_start_tls();
        }
        let shared = Arc::new(Mutex::new(Shared {
            max: policy.max_message_size,
            ..Shared::default()
        }));
        let session = builder.build(
            peer,
            Callbacks {
                shared: shared.clone(),
                policy: policy.clone(),
            },
        );
        Conn {
            session,
            shared,
            policy,
            greeted: false,
            awaiting_auth: false,
            in_auth: false,
            in_data: false,
            tls_active: false,
            mail_from: None,
            rcpt_to: Vec::new(),
        }
    }

    /// The greeting (`220 <hostname> ESMTP ready`).
    pub fn greeting(&self) -> Vec<u8> {
        format!("220 {} ESMTP ready\r\n", self.policy.hostname).into_bytes()
    }

    /// Mail content is arriving (the shell reads longer lines then).
    pub fn in_data(&self) -> bool {
        self.in_data
    }

    /// The login so far.
    pub fn login(&self) -> Option<String> {
        lock(&self.shared).login.clone()
    }

    /// A content line was longer than the whole cap (the shell dropped it): the mail is
    /// over the cap.
    pub fn data_overflow(&mut self) {
        let mut s = lock(&self.shared);
        s.overflow = true;
        s.data = Vec::new();
    }

    /// The TLS handshake after `STARTTLS` succeeded: the session starts afresh (RFC 3207 §4.2:
    /// the client must greet again; a login before TLS is forgotten).
    pub fn tls_started(&mut self) {
        self.session.tls_active();
        self.tls_active = true;
        self.greeted = false;
        self.awaiting_auth = false;
        self.mail_from = None;
        self.rcpt_to.clear();
        lock(&self.shared).login = None;
    }

    fn ehlo_reply(&self) -> Vec<u8> {
        let mut lines = vec![
            self.policy.hostname.clone(),
            "AUTH LOGIN PLAIN".to_string(),
            "AUTH=LOGIN PLAIN".to_string(),
            format!("SIZE {}", self.policy.max_message_size),
            "8BITMIME".to_string(),
        ];
        if self.policy.tls_available && !self.tls_active {
            lines.push("STARTTLS".to_string());
        }
        let n = lines.len();
        let mut out = String::new();
        for (i, l) in lines.into_iter().enumerate() {
            let sep = if i + 1 == n { ' ' } else { '-' };
            out.push_str(&format!("250{sep}{l}\r\n"));
        }
        out.into_bytes()
    }

    fn step(r: &Response) -> Step {
        match r.action {
            Action::Close => Step::Close(bytes(r)),
            Action::NoReply => Step::Nothing,
            Action::UpgradeTls => Step::StartTls(bytes(r)),
            Action::Reply => Step::Reply(bytes(r)),
        }
    }

    fn greeted_now(&mut self) {
        self.greeted = true;
        self.awaiting_auth = true;
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    /// Process one line as read (with its `\n` or `\r\n`; a line without one is taken as
    /// complete).
    pub fn line(&mut self, raw: &[u8]) -> Step {
        let line = crlf(raw);
        if self.in_data {
            return self.data_line(&line);
        }
        if self.in_auth {
            return self.auth_line(&line);
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, args) = text.split_once(' ').unwrap_or((text, ""));
        let verb = verb.to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" => {
                let domain = args.trim();
                let domain = if domain.is_empty() { "unknown" } else { domain };
                let domain: String = domain
                    .chars()
                    .filter(|c| !c.is_whitespace() && !c.is_control())
                    .take(255)
                    .collect();
                let r = self
                    .session
                    .process(format!("EHLO {domain}\r\n").as_bytes());
                if r.code != 250 {
                    return Self::step(&r);
                }
                self.greeted_now();
                if verb == "EHLO" {
                    Step::Reply(self.ehlo_reply())
                } else {
                    Step::Reply(format!("250 {}\r\n", self.policy.hostname).into_bytes())
                }
            }
            "AUTH" => {
                let r = self.session.process(&line);
                self.after_auth(&r)
            }
            "MAIL" => self.mail(args),
            "RCPT" => {
                let Some((path, _)) = parse_path(args, "TO:") else {
                    return Step::Reply(
                        b"501 Syntax error in parameters or arguments\r\n".to_vec(),
                    );
                };
                let r = self.session.process(b"RCPT TO:<recipient>\r\n");
                if r.code == 250 && self.rcpt_to.len() < MAX_RECIPIENTS && !path.is_empty() {
                    self.rcpt_to.push(path);
                }
                Self::step(&r)
            }
            "DATA" => {
                let r = self.session.process(b"DATA\r\n");
                if r.code == 354 {
                    self.in_data = true;
                }
                Self::step(&r)
            }
            "RSET" => {
                let r = self.session.process(b"RSET\r\n");
                if r.code == 250 && self.greeted {
                    self.awaiting_auth = true;
                    self.mail_from = None;
                    self.rcpt_to.clear();
                }
                Self::step(&r)
            }
            "STARTTLS" if !self.policy.tls_available || self.tls_active => {
                Step::Reply(b"502 Command not implemented\r\n".to_vec())
            }
            _ => {
                let r = self.session.process(&line);
                Self::step(&r)
            }
        }
    }

    fn after_auth(&mut self, r: &Response) -> Step {
        self.in_auth = r.code == 334;
        match r.code {
            235 => {
                self.awaiting_auth = false;
                Self::step(r)
            }
            535 => Step::Refused(bytes(r), Refusal::AuthFailed),
            _ => Self::step(r),
        }
    }

    fn auth_line(&mut self, line: &[u8]) -> Step {
        if line == b"*\r\n" {
            // RFC 4954 §4: the client cancels.
            return Step::Reply(self.end_auth(b"501 Authentication cancelled\r\n"));
        }
        let response = line.strip_suffix(b"\r\n").unwrap_or(line);
        if base64::Engine::decode(&base64::engine::general_purpose::STANDARD, response).is_err() {
            // RFC 4954 §4: a response that is not base64 ends the exchange with 501 (else the
            // next command would be read as the password).
            return Step::Reply(
                self.end_auth(b"501 Malformed authentication response (not base64)\r\n"),
            );
        }
        let r = self.session.process(line);
        self.after_auth(&r)
    }

    /// End a running AUTH exchange with `reply`. mailin has no cancel, so its exchange is
    /// ended with credentials that are refused.
    fn end_auth(&mut self, reply: &[u8]) -> Vec<u8> {
        lock(&self.shared).refuse_next = true;
        for _ in 0..2 {
            if self.session.process(b"AA==\r\n").code != 334 {
                break;
            }
        }
        lock(&self.shared).refuse_next = false;
        self.in_auth = false;
        reply.to_vec()
    }

    /// The client sent a command line over the length limit: while an AUTH exchange runs it
    /// ends it (`501`, RFC 4954 §4), else `500`.
    pub fn line_too_long(&mut self) -> Vec<u8> {
        if self.in_auth {
            return self.end_auth(b"501 Authentication response too long\r\n");
        }
        b"500 Line too long\r\n".to_vec()
    }

    fn mail(&mut self, args: &str) -> Step {
        let Some((path, params)) = parse_path(args, "FROM:") else {
            return Step::Reply(b"501 Syntax error in parameters or arguments\r\n".to_vec());
        };
        let declared = params
            .iter()
            .find(|(k, _)| k == "SIZE")
            .and_then(|(_, v)| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.policy.max_message_size as u64) {
            return Step::Refused(
                b"552 Message size exceeds fixed maximum message size\r\n".to_vec(),
                Refusal::TooLarge,
            );
        }
        if self.awaiting_auth {
            let logged_in = lock(&self.shared).login.is_some();
            if self.policy.require_auth && !logged_in {
                return Step::Refused(
                    b"530 Authentication required\r\n".to_vec(),
                    Refusal::AuthRequired,
                );
            }
            lock(&self.shared).grant_next = true;
            let r = self.session.process(b"AUTH PLAIN AAA=\r\n");
            lock(&self.shared).grant_next = false;
            if r.code == 235 {
                self.awaiting_auth = false;
            }
        }
        let eight_bit = params
            .iter()
            .any(|(k, v)| k == "BODY" && v.eq_ignore_ascii_case("8BITMIME"));
        let cmd: &[u8] = if eight_bit {
            b"MAIL FROM:<sender> BODY=8BITMIME\r\n"
        } else {
            b"MAIL FROM:<sender>\r\n"
        };
        let r = self.session.process(cmd);
        if r.code == 250 {
            self.mail_from = (!path.is_empty()).then_some(path);
            self.rcpt_to.clear();
        }
        Self::step(&r)
    }

    fn data_line(&mut self, line: &[u8]) -> Step {
        if line != b".\r\n" {
            self.session.process(line);
            return Step::Nothing;
        }
        self.in_data = false;
        let r = self.session.process(line);
        let (data, overflow) = {
            let mut s = lock(&self.shared);
            (std::mem::take(&mut s.data), std::mem::take(&mut s.overflow))
        };
        if overflow {
            return Step::Refused(
                b"552 Message size exceeds fixed maximum message size\r\n".to_vec(),
                Refusal::TooLarge,
            );
        }
        if r.code != 250 {
            return Self::step(&r);
        }
        Step::Deliver(Delivery {
            data,
            mail_from: self.mail_from.take(),
            rcpt_to: std::mem::take(&mut self.rcpt_to),
            login: self.login(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use secrecy::SecretString;

    fn policy(users: &[(&str, &str)], require_auth: bool, tls: bool) -> Arc<Policy> {
        Arc::new(Policy {
            hostname: "camqtt".into(),
            accounts: users
                .iter()
                .map(|(u, p)| Account {
                    username: (*u).into(),
                    password: SecretString::from(*p),
                })
                .collect(),
            require_auth,
            max_message_size: 1024,
            tls_available: tls,
        })
    }

    fn conn(p: Arc<Policy>) -> Conn {
        Conn::new(p, "192.0.2.120".parse().unwrap())
    }

    fn code(step: &Step) -> u16 {
        let b = match step {
            Step::Reply(b) | Step::Close(b) | Step::StartTls(b) | Step::Refused(b, _) => b,
            Step::Nothing | Step::Deliver(_) => return 0,
        };
        String::from_utf8_lossy(&b[..3]).parse().unwrap()
    }

    fn text(step: &Step) -> String {
        match step {
            Step::Reply(b) | Step::Close(b) | Step::StartTls(b) | Step::Refused(b, _) => {
                String::from_utf8_lossy(b).into_owned()
            }
            _ => String::new(),
        }
    }

    fn send_mail(c: &mut Conn, body: &[&str]) -> Step {
        assert_eq!(
            code(&c.line(b"MAIL FROM:<porch-cam@cams.example>\r\n")),
            250
        );
        assert_eq!(code(&c.line(b"RCPT TO:<alarm@bridge.example>\r\n")), 250);
        assert_eq!(code(&c.line(b"DATA\r\n")), 354);
        for l in body {
            assert_eq!(c.line(l.as_bytes()), Step::Nothing);
        }
        c.line(b".\r\n")
    }

    #[test]
    fn the_field_dialogue_with_auth_login() {
        let mut c = conn(policy(&[("porchcam", "field-only")], true, false));
        let ehlo = c.line(b"EHLO localhost\r\n");
        let t = text(&ehlo);
        assert!(t.starts_with("250-camqtt\r\n"), "{t}");
        assert!(t.contains("250-AUTH LOGIN PLAIN\r\n"), "{t}");
        assert!(t.contains("SIZE 1024"), "{t}");
        assert!(!t.contains("STARTTLS"), "{t}");
        assert_eq!(text(&c.line(b"AUTH LOGIN\r\n")), "334 VXNlcm5hbWU6\r\n");
        assert_eq!(text(&c.line(b"cG9yY2hjYW0=\r\n")), "334 UGFzc3dvcmQ6\r\n");
        assert_eq!(code(&c.line(b"ZmllbGQtb25seQ==\r\n")), 235);
        let done = send_mail(&mut c, &["Subject: x\r\n", "\r\n", "..dot\r\n", "body\r\n"]);
        let Step::Deliver(d) = done else {
            panic!("{done:?}")
        };
        assert_eq!(d.data, b"Subject: x\r\n\r\n.dot\r\nbody\r\n");
        assert_eq!(d.mail_from.as_deref(), Some("porch-cam@cams.example"));
        assert_eq!(d.rcpt_to, ["alarm@bridge.example"]);
        assert_eq!(d.login.as_deref(), Some("porchcam"));
        // A second mail in the same session needs no new login.
        assert!(matches!(send_mail(&mut c, &["a\r\n"]), Step::Deliver(_)));
        assert!(matches!(c.line(b"QUIT\r\n"), Step::Close(b) if b.starts_with(b"221")));
    }

    #[test]
    fn auth_variants_after_helo() {
        for first in [
            &[&b"AUTH PLAIN cG9yY2hjYW0AcG9yY2hjYW0AZmllbGQtb25seQ==\r\n"[..]][..],
            &[
                &b"AUTH LOGIN cG9yY2hjYW0=\r\n"[..],
                &b"ZmllbGQtb25seQ==\r\n"[..],
            ][..],
            &[
                &b"AUTH PLAIN\r\n"[..],
                &b"AHBvcmNoY2FtAGZpZWxkLW9ubHk=\r\n"[..],
            ][..],
        ] {
            let mut c = conn(policy(&[("porchcam", "field-only")], true, false));
            assert_eq!(text(&c.line(b"HELO localhost\r\n")), "250 camqtt\r\n");
            let mut last = Step::Nothing;
            for l in first {
                last = c.line(l);
            }
            assert_eq!(code(&last), 235, "{first:?}");
            assert_eq!(c.login().as_deref(), Some("porchcam"));
            assert!(matches!(send_mail(&mut c, &["x\r\n"]), Step::Deliver(_)));
        }
    }

    #[test]
    fn wrong_credentials_535_and_mail_then_refused() {
        let mut c = conn(policy(&[("porchcam", "field-only")], true, false));
        c.line(b"EHLO x\r\n");
        let s = c.line(b"AUTH PLAIN AHBvcmNoY2FtAHdyb25n\r\n"); // porchcam / wrong
        assert_eq!(
            s,
            Step::Refused(b"535 Invalid credentials\r\n".to_vec(), Refusal::AuthFailed)
        );
        let s = c.line(b"MAIL FROM:<a@b>\r\n");
        assert!(
            matches!(s, Step::Refused(_, Refusal::AuthRequired)),
            "{s:?}"
        );
        // Retrying with the right password works.
        c.line(b"AUTH LOGIN\r\n");
        c.line(b"cG9yY2hjYW0=\r\n");
        assert_eq!(code(&c.line(b"ZmllbGQtb25seQ==\r\n")), 235);
    }

    #[test]
    fn without_accounts_any_login_or_none() {
        let p = policy(&[], false, false);
        let mut c = conn(p.clone());
        c.line(b"EHLO x\r\n");
        assert_eq!(
            code(&c.line(b"AUTH PLAIN AGFueWNhbQBhbnl0aGluZw==\r\n")),
            235
        );
        let Step::Deliver(d) = send_mail(&mut c, &["x\r\n"]) else {
            panic!()
        };
        assert_eq!(d.login.as_deref(), Some("anycam"));
        // No AUTH at all, and RSET in between.
        let mut c = conn(p);
        c.line(b"HELO x\r\n");
        assert_eq!(code(&c.line(b"RSET\r\n")), 250);
        let Step::Deliver(d) = send_mail(&mut c, &["x\r\n"]) else {
            panic!()
        };
        assert_eq!(d.login, None);
    }

    #[test]
    fn a_login_survives_rset_and_a_new_ehlo() {
        let mut c = conn(policy(&[("u", "p")], true, false));
        c.line(b"EHLO x\r\n");
        assert_eq!(code(&c.line(b"AUTH PLAIN AHUAcA==\r\n")), 235);
        c.line(b"MAIL FROM:<a@b>\r\n");
        assert_eq!(code(&c.line(b"RSET\r\n")), 250);
        c.line(b"EHLO x\r\n");
        assert!(matches!(send_mail(&mut c, &["x\r\n"]), Step::Deliver(_)));
    }

    #[test]
    fn sizes_declared_and_actual() {
        let mut c = conn(policy(&[], false, false));
        c.line(b"EHLO x\r\n");
        let s = c.line(b"MAIL FROM:<a@b> SIZE=5000\r\n");
        assert!(matches!(s, Step::Refused(_, Refusal::TooLarge)));
        assert_eq!(
            code(&c.line(b"MAIL FROM:<a@b> SIZE=500 BODY=8BITMIME\r\n")),
            250
        );
        c.line(b"RCPT TO:<r@b>\r\n");
        c.line(b"DATA\r\n");
        let big = format!("{}\r\n", "x".repeat(600));
        c.line(big.as_bytes());
        c.line(big.as_bytes());
        let s = c.line(b".\r\n");
        assert!(matches!(s, Step::Refused(ref b, Refusal::TooLarge) if b.starts_with(b"552")));
        // The session goes on.
        assert!(matches!(
            send_mail(&mut c, &["small\r\n"]),
            Step::Deliver(_)
        ));
    }

    #[test]
    fn lenient_addresses_and_bare_lf() {
        let mut c = conn(policy(&[], false, false));
        c.line(b"helo x\n");
        assert_eq!(code(&c.line(b"mail from: <Cam@Example.COM>\n")), 250);
        assert_eq!(code(&c.line(b"rcpt to: alarm@x\n")), 250);
        assert_eq!(code(&c.line(b"data\n")), 354);
        c.line(b"line\n");
        let Step::Deliver(d) = c.line(b".\n") else {
            panic!()
        };
        assert_eq!(d.mail_from.as_deref(), Some("Cam@Example.COM"));
        assert_eq!(d.rcpt_to, ["alarm@x"]);
        assert_eq!(d.data, b"line\r\n");
        assert_eq!(code(&c.line(b"MAIL FROM:<>\r\n")), 250);
        assert_eq!(code(&c.line(b"MAIL FROM <x>\r\n")), 501);
    }

    #[test]
    fn parse_path_forms() {
        assert_eq!(parse_path("FROM:<a@b>", "FROM:").unwrap().0, "a@b");
        assert_eq!(
            parse_path("from: <a@b> SIZE=9", "FROM:").unwrap().1,
            [("SIZE".to_string(), "9")]
        );
        assert_eq!(parse_path("FROM:<@r1,@r2:a@b>", "FROM:").unwrap().0, "a@b");
        assert_eq!(parse_path("FROM:<>", "FROM:").unwrap().0, "");
        assert!(parse_path("FROM:<a@b", "FROM:").is_none());
        assert!(parse_path("TO:<a@b>", "FROM:").is_none());
        assert!(parse_path("FRO", "FROM:").is_none());
    }

    #[test]
    fn starttls_only_when_configured() {
        let mut c = conn(policy(&[], false, false));
        c.line(b"EHLO x\r\n");
        assert_eq!(code(&c.line(b"STARTTLS\r\n")), 502);
        let mut c = conn(policy(&[("u", "p")], true, true));
        assert!(text(&c.line(b"EHLO x\r\n")).contains("250 STARTTLS\r\n"));
        let s = c.line(b"STARTTLS\r\n");
        assert!(
            matches!(s, Step::StartTls(ref b) if b.starts_with(b"220")),
            "{s:?}"
        );
        c.tls_started();
        assert!(!text(&c.line(b"EHLO x\r\n")).contains("STARTTLS"));
        assert_eq!(code(&c.line(b"AUTH PLAIN AHUAcA==\r\n")), 235);
        assert!(matches!(send_mail(&mut c, &["x\r\n"]), Step::Deliver(_)));
    }

    #[test]
    fn auth_cancel() {
        let mut c = conn(policy(&[], false, false));
        c.line(b"EHLO x\r\n");
        assert_eq!(code(&c.line(b"AUTH LOGIN\r\n")), 334);
        assert_eq!(code(&c.line(b"*\r\n")), 501);
        assert_eq!(c.login(), None);
        assert_eq!(code(&c.line(b"AUTH PLAIN\r\n")), 334);
        assert_eq!(code(&c.line(b"*\r\n")), 501);
        assert!(matches!(send_mail(&mut c, &["x\r\n"]), Step::Deliver(_)));
    }

    #[test]
    fn a_malformed_or_overlong_auth_response_ends_the_exchange() {
        // Found by trying to break it: after a bad response the next command was read as
        // the password.
        let mut c = conn(policy(&[("porchcam", "pw")], true, false));
        c.line(b"EHLO x\r\n");
        assert_eq!(code(&c.line(b"AUTH LOGIN\r\n")), 334);
        assert_eq!(code(&c.line(b"not base64!\r\n")), 501);
        assert_eq!(code(&c.line(b"NOOP\r\n")), 250);
        assert_eq!(c.login(), None);
        assert_eq!(code(&c.line(b"AUTH LOGIN\r\n")), 334);
        assert!(c.line_too_long().starts_with(b"501 "));
        assert_eq!(code(&c.line(b"NOOP\r\n")), 250);
        assert!(c.line_too_long().starts_with(b"500 "), "outside AUTH");
        // A proper exchange still works afterwards.
        assert_eq!(code(&c.line(b"AUTH LOGIN cG9yY2hjYW0=\r\n")), 334);
        assert_eq!(code(&c.line(b"cHc=\r\n")), 235);
        assert_eq!(c.login().as_deref(), Some("porchcam"));
    }

    #[test]
    fn sequence_errors_come_from_mailin() {
        let mut c = conn(policy(&[], false, false));
        assert_eq!(code(&c.line(b"MAIL FROM:<a@b>\r\n")), 503);
        assert_eq!(code(&c.line(b"DATA\r\n")), 503);
        assert_eq!(code(&c.line(b"BOGUS\r\n")), 500);
        c.line(b"EHLO x\r\n");
        assert_eq!(code(&c.line(b"DATA\r\n")), 503);
        assert_eq!(code(&c.line(b"NOOP\r\n")), 250);
    }

    proptest! {
        /// Whatever lines a peer sends: no panic, and a delivered mail is never larger than
        /// the cap.
        #[test]
        fn never_panics_on_lines(lines in proptest::collection::vec(
            prop_oneof![
                Just(b"EHLO x\r\n".to_vec()),
                Just(b"HELO x\r\n".to_vec()),
                Just(b"AUTH LOGIN\r\n".to_vec()),
                Just(b"AUTH PLAIN\r\n".to_vec()),
                Just(b"*\r\n".to_vec()),
                Just(b"MAIL FROM:<a@b>\r\n".to_vec()),
                Just(b"RCPT TO:<a@b>\r\n".to_vec()),
                Just(b"DATA\r\n".to_vec()),
                Just(b".\r\n".to_vec()),
                Just(b"RSET\r\n".to_vec()),
                Just(b"STARTTLS\r\n".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..1200),
            ], 0..60)) {
            for tls in [false, true] {
                let mut c = conn(policy(&[("u", "p")], tls, tls));
                for l in &lines {
                    match c.line(l) {
                        Step::Deliver(d) => prop_assert!(d.data.len() <= 1024),
                        Step::StartTls(_) => c.tls_started(),
                        Step::Close(_) => break,
                        _ => {}
                    }
                }
            }
        }
    }
}
