//! The control-connection filter between a camera and libunftp (pure: lines in, lines out).
//!
//! libunftp is the FTP server; this filter sits on the control connection in front of it
//! ([`super::relay`] carries the bytes) and fixes what cameras need and libunftp does not do:
//!
//! - `ALLO` (RFC 959 §4.1.3): libunftp answers `202 Ignored` ("command not implemented,
//!   superfluous"), which RFC 959 allows, but Dahua-based cameras treat every non-200 reply
//!   to `ALLO` as a failure and disconnect before `STOR`, forever (`hassio-addons/app-ftp`
//!   #245, field case 11). The `202` to an `ALLO` becomes `200 ALLO command successful`.
//! - `EPRT` (RFC 2428 §2), which libunftp lacks: `EPRT |1|<ipv4>|<port>|` is passed on as
//!   the equivalent `PORT` and its `200` reported as `EPRT`'s; other address families get
//!   `522 Network protocol not supported, use (1)`.
//! - Active mode only to the camera itself (RFC 2577 §3, "FTP bounce"): a `PORT` / `EPRT`
//!   naming another host gets `504`, and neither is accepted when active mode is off.
//! - A close the client did not ask for (libunftp's idle timeout says `221 Session timed
//!   out`) is reported as `421` (RFC 959 §4.2), the code clients and cameras expect for it.
//! - Logins are observed (`USER` then `PASS`, answered `230` or `530`) so that the shell can
//!   log and count refused ones with the real peer address.
//!
//! - A passive data connection no transfer command used is closed when the session ends:
//!   libunftp keeps such an accepted socket (and the session with it) for five minutes after
//!   the control connection is gone. Before `QUIT`, `PORT` or `EPRT`, and when the camera's
//!   side ends ([`ControlFilter::on_close`]), an `ABOR` goes to libunftp first, which closes
//!   it; its reply is not passed on.
//!
//! Replies keep their order also when a client sends several commands at once: a reply the
//! filter makes itself waits until every command before it was answered by libunftp.

use std::collections::VecDeque;
use std::net::IpAddr;

/// A command the filter passed on, waiting for libunftp's final reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    /// Passed on; its final reply may be rewritten according to the verb.
    Sent(Verb),
    /// Answered by the filter itself; written once the replies before it were.
    Local(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Allo,
    Eprt,
    Pass,
    /// `PASV` or `EPSV`: libunftp reserves a data port for it.
    Passive,
    /// A command using the data connection (`STOR`, `RETR`, `LIST`, ...).
    Transfer,
    /// An `ABOR` the filter sent on its own: its reply is not passed on.
    Abort,
    Quit,
    Port,
    Other,
}

/// What became of a login attempt (`PASS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// `230`: logged in as this user.
    Accepted(String),
    /// `530` (or any other refusal) for this user name.
    Refused(String),
}

/// What to do after a line from the client.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FromClient {
    /// Bytes for libunftp (a line with its CRLF), if any.
    pub to_server: Option<Vec<u8>>,
    /// Bytes for the client (replies the filter made, now due).
    pub to_client: Vec<u8>,
}

/// What to do after a line from libunftp.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FromServer {
    /// Bytes for the client.
    pub to_client: Vec<u8>,
    /// A login attempt this reply decided.
    pub login: Option<Login>,
}

/// The filter's state for one control connection.
#[derive(Debug)]
pub struct ControlFilter {
    peer: IpAddr,
    active: bool,
    queue: VecDeque<Pending>,
    user: String,
    /// A `PASV`/`EPSV` holds a data port that no transfer command has used yet (none was
    /// answered `1xx`).
    passive_open: bool,
}

/// The `ABOR` that makes libunftp close a passive data connection nothing used.
const ABOR: &[u8] = b"ABOR\r\n";

impl ControlFilter {
    /// A filter for a camera at `peer`; `active`: whether `PORT`/`EPRT` are allowed.
    pub fn new(peer: IpAddr, active: bool) -> ControlFilter {
        ControlFilter {
            peer: peer.to_canonical(),
            active,
            queue: VecDeque::new(),
            user: String::new(),
            passive_open: false,
        }
    }

    /// The connection is ending on the client's side: the line to send libunftp before its
    /// end, if any (an `ABOR` while a passive data port is open, so that libunftp closes the
    /// data connection it may have accepted on it).
    pub fn on_close(&mut self) -> Option<Vec<u8>> {
        if !self.passive_open {
            return None;
        }
        self.passive_open = false;
        self.queue.push_back(Pending::Sent(Verb::Abort));
        Some(ABOR.to_vec())
    }

    /// The user name of the last `USER` command.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// One command line from the client (with or without its CRLF).
    pub fn from_client(&mut self, line: &[u8]) -> FromClient {
        let text = trim_eol(line);
        // A command is one line of printable characters (RFC 959 §4.1.3 and §5.3): a control
        // character inside it (CR, NUL, TAB, ...) is a syntax error, never passed on: libunftp
        // splits commands at some of them, so a check here could be walked around.
        if text.iter().any(|&b| b < 0x20 || b == 0x7F) {
            return self.local(b"500 Syntax error: control character in the command\r\n");
        }
        let (verb, arg) = split_command(text);
        let verb = verb.to_ascii_uppercase();
        match verb.as_slice() {
            b"USER" => self.user = String::from_utf8_lossy(arg).chars().take(128).collect(),
            b"PORT" if !self.active => return self.local(ACTIVE_OFF),
            b"EPRT" if !self.active => return self.local(ACTIVE_OFF),
            // Fail closed: only a PORT this filter reads exactly goes on, rewritten in its
            // canonical form (libunftp's own parser skips fields it cannot read, so a PORT
            // with a junk field would otherwise reach another host).
            b"PORT" => {
                return match parse_port(arg) {
                    Some((ip, _)) if IpAddr::from(ip) != self.peer => self.local(BOUNCE),
                    Some((ip, port)) => self.forward(Verb::Port, port_line(ip, port)),
                    None => self.local(b"501 Syntax error in PORT parameters\r\n"),
                };
            }
            b"EPRT" => {
                return match parse_eprt(arg) {
                    Eprt::V4(ip, _) if IpAddr::from(ip) != self.peer => self.local(BOUNCE),
                    Eprt::V4(ip, port) => self.forward(Verb::Eprt, port_line(ip, port)),
                    Eprt::OtherFamily => {
                        self.local(b"522 Network protocol not supported, use (1)\r\n")
                    }
                    Eprt::Bad => self.local(b"501 Syntax error in EPRT parameters\r\n"),
                };
            }
            _ => {}
        }
        let kind = match verb.as_slice() {
            b"ALLO" => Verb::Allo,
            b"PASS" => Verb::Pass,
            b"QUIT" => Verb::Quit,
            // libunftp reserves a port from the passive range for each PASV/EPSV and keeps
            // it until the session ends: one session asking again and again would take the
            // whole range from every other camera. One open passive port per session.
            b"PASV" | b"EPSV" if self.passive_open => {
                return self.local(PASSIVE_OPEN);
            }
            b"PASV" | b"EPSV" => {
                self.passive_open = true;
                Verb::Passive
            }
            // libunftp ends the whole session on a command it cannot parse, and a data
            // connection accepted for it then stays open for minutes: a transfer command
            // without its file name is answered here.
            b"STOR" | b"APPE" | b"RETR" if arg.is_empty() => {
                return self.local(b"501 Syntax error: a file name is required\r\n");
            }
            // The port stays open until libunftp takes the command (`150`): one it refuses
            // (`STOR` without a name) leaves the data connection unused.
            b"STOR" | b"STOU" | b"APPE" | b"RETR" | b"LIST" | b"NLST" | b"MLSD" => Verb::Transfer,
            _ => Verb::Other,
        };
        let mut line = text.to_vec();
        line.extend_from_slice(b"\r\n");
        self.forward(kind, line)
    }

    /// One reply line from libunftp (with or without its CRLF).
    pub fn from_server(&mut self, line: &[u8]) -> FromServer {
        let text = trim_eol(line);
        let mut out = FromServer::default();
        let code = reply_code(text);
        // The last line of a reply: `ddd ` (or a bare `ddd`). Preliminary replies (1yz) and
        // the lines of a multi-line reply (`ddd-`, free text) leave the command pending.
        let last = code.is_some_and(|c| c >= 200) && text.get(3).is_none_or(|&b| b == b' ');
        if code.is_some_and(|c| (100..200).contains(&c))
            && self.queue.front() == Some(&Pending::Sent(Verb::Transfer))
        {
            // libunftp handed the command to the data connection: it is used.
            self.passive_open = false;
        }
        let mut hidden = false;
        let mut rewritten: Option<Vec<u8>> = None;
        if last {
            let c = code.unwrap_or(0);
            let verb = match self.queue.front() {
                // A reply nobody asked for (libunftp's idle timeout) is not consumed by the
                // command still waiting for its own.
                Some(Pending::Sent(v)) if c == 221 && *v != Verb::Quit => None,
                Some(Pending::Sent(v)) => {
                    let v = *v;
                    self.queue.pop_front();
                    Some(v)
                }
                _ => None,
            };
            if c == 221 && verb != Some(Verb::Quit) {
                // libunftp closes an idle session with `221 Session timed out`; a close the
                // client did not ask for is `421` (RFC 959 §4.2).
                let mut r = b"421".to_vec();
                r.extend_from_slice(&text[3..]);
                rewritten = Some(r);
            }
            if let Some(verb) = verb {
                match verb {
                    Verb::Allo if c == 202 => {
                        rewritten = Some(b"200 ALLO command successful".to_vec())
                    }
                    Verb::Eprt if c == 200 => {
                        rewritten = Some(b"200 EPRT command successful".to_vec())
                    }
                    // A refused PASV/EPSV reserved nothing.
                    Verb::Passive if !matches!(c, 227 | 229) => self.passive_open = false,
                    Verb::Pass if c == 230 => out.login = Some(Login::Accepted(self.user.clone())),
                    Verb::Pass if c >= 400 => out.login = Some(Login::Refused(self.user.clone())),
                    Verb::Abort => hidden = true,
                    _ => {}
                }
            }
        } else if self.queue.front() == Some(&Pending::Sent(Verb::Abort)) {
            // A line of the filter's own ABOR's reply (libunftp answers it in one line).
            hidden = true;
        }
        if !hidden {
            out.to_client
                .extend_from_slice(rewritten.as_deref().unwrap_or(text));
            out.to_client.extend_from_slice(b"\r\n");
        }
        if last {
            self.flush_local(&mut out.to_client);
        }
        out
    }

    /// Send `line` to libunftp in place of the client's command, its reply due as `verb`'s.
    /// A command that replaces or ends the data channel (`QUIT`, `PORT`, `EPRT`) is preceded
    /// by an `ABOR` while a passive data port is open: libunftp would keep a data connection
    /// accepted on it for minutes (see [`ControlFilter::on_close`]).
    fn forward(&mut self, verb: Verb, line: Vec<u8>) -> FromClient {
        let mut to_server = Vec::new();
        if matches!(verb, Verb::Quit | Verb::Eprt | Verb::Port) {
            to_server.extend(self.on_close().unwrap_or_default());
        }
        self.queue.push_back(Pending::Sent(verb));
        to_server.extend_from_slice(&line);
        FromClient {
            to_server: Some(to_server),
            to_client: Vec::new(),
        }
    }

    /// Answer the current command here, after the replies still due.
    fn local(&mut self, reply: &[u8]) -> FromClient {
        self.queue.push_back(Pending::Local(reply.to_vec()));
        let mut to_client = Vec::new();
        self.flush_local(&mut to_client);
        FromClient {
            to_server: None,
            to_client,
        }
    }

    fn flush_local(&mut self, out: &mut Vec<u8>) {
        while let Some(Pending::Local(_)) = self.queue.front() {
            if let Some(Pending::Local(reply)) = self.queue.pop_front() {
                out.extend_from_slice(&reply);
            }
        }
    }
}

const ACTIVE_OFF: &[u8] = b"502 Active mode is off here; use PASV or EPSV\r\n";
const PASSIVE_OPEN: &[u8] =
    b"425 A passive data port is already open for this session: transfer on it first\r\n";
const BOUNCE: &[u8] = b"504 Data connections only to the client's own address\r\n";

/// `PORT h1,h2,h3,h4,p1,p2` with its CRLF (RFC 959 §4.1.2).
fn port_line(ip: std::net::Ipv4Addr, port: u16) -> Vec<u8> {
    let [a, b, c, d] = ip.octets();
    format!("PORT {a},{b},{c},{d},{},{}\r\n", port >> 8, port & 0xFF).into_bytes()
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\r' | b'\n') {
        end -= 1;
    }
    &line[..end]
}

/// `VERB argument` split at the first space.
fn split_command(text: &[u8]) -> (&[u8], &[u8]) {
    match text.iter().position(|&b| b == b' ') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, &[]),
    }
}

/// The three-digit code at the start of a reply line.
fn reply_code(text: &[u8]) -> Option<u16> {
    let d = text.get(..3)?;
    if !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(d.iter().fold(0u16, |n, b| n * 10 + u16::from(b - b'0')))
}

/// `h1,h2,h3,h4,p1,p2` (RFC 959 §4.1.2).
fn parse_port(arg: &[u8]) -> Option<(std::net::Ipv4Addr, u16)> {
    let text = std::str::from_utf8(arg).ok()?;
    let n: Vec<u8> = text
        .trim()
        .split(',')
        .map(|x| x.trim().parse::<u8>())
        .collect::<Result<_, _>>()
        .ok()?;
    let [a, b, c, d, p1, p2] = n.as_slice() else {
        return None;
    };
    Some((
        std::net::Ipv4Addr::new(*a, *b, *c, *d),
        u16::from(*p1) << 8 | u16::from(*p2),
    ))
}

#[derive(Debug, PartialEq, Eq)]
enum Eprt {
    V4(std::net::Ipv4Addr, u16),
    OtherFamily,
    Bad,
}

/// `<d><af><d><address><d><port><d>` (RFC 2428 §2), any printable delimiter.
fn parse_eprt(arg: &[u8]) -> Eprt {
    let Ok(text) = std::str::from_utf8(arg) else {
        return Eprt::Bad;
    };
    let text = text.trim();
    let Some(d) = text.chars().next().filter(|c| c.is_ascii_graphic()) else {
        return Eprt::Bad;
    };
    let parts: Vec<&str> = text.split(d).collect();
    let ["", af, addr, port, ""] = parts.as_slice() else {
        return Eprt::Bad;
    };
    let Ok(port) = port.parse::<u16>() else {
        return Eprt::Bad;
    };
    match *af {
        "1" => match addr.parse() {
            Ok(ip) if port > 0 => Eprt::V4(ip, port),
            _ => Eprt::Bad,
        },
        "2" => Eprt::OtherFamily,
        _ => Eprt::OtherFamily,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn filter() -> ControlFilter {
        ControlFilter::new("192.0.2.130".parse().unwrap(), true)
    }

    fn srv(f: &mut ControlFilter, line: &str) -> String {
        String::from_utf8(f.from_server(line.as_bytes()).to_client).unwrap()
    }

    fn cli(f: &mut ControlFilter, line: &str) -> (Option<String>, String) {
        let o = f.from_client(line.as_bytes());
        (
            o.to_server.map(|b| String::from_utf8(b).unwrap()),
            String::from_utf8(o.to_client).unwrap(),
        )
    }

    #[test]
    fn one_open_passive_port_per_session() {
        let mut f = filter();
        let (to_server, _) = cli(&mut f, "PASV\r\n");
        assert!(to_server.is_some());
        srv(&mut f, "227 Entering Passive Mode (192,0,2,10,195,80)\r\n");
        // Asking again before a transfer: refused here, no second port reserved.
        let (to_server, to_client) = cli(&mut f, "EPSV\r\n");
        assert_eq!(to_server, None);
        assert!(to_client.starts_with("425 "), "{to_client}");
        // A transfer uses it; then the next PASV is fine.
        cli(&mut f, "STOR a.jpg\r\n");
        srv(&mut f, "150 Ready\r\n");
        srv(&mut f, "226 Done\r\n");
        assert!(cli(&mut f, "PASV\r\n").0.is_some());
        // A refused PASV (not logged in) reserved nothing: asking again goes on.
        srv(&mut f, "530 Please log in\r\n");
        assert!(cli(&mut f, "PASV\r\n").0.is_some());
    }

    #[test]
    fn an_unused_passive_port_is_aborted_before_the_session_ends() {
        // Nothing open: nothing to do.
        assert_eq!(filter().on_close(), None);
        // The client's side ends with a port open: ABOR, its reply not passed on.
        let mut f = filter();
        cli(&mut f, "PASV\r\n");
        srv(&mut f, "227 Entering Passive Mode (192,0,2,10,195,80)\r\n");
        assert_eq!(f.on_close().as_deref(), Some(&b"ABOR\r\n"[..]));
        assert_eq!(f.on_close(), None);
        assert_eq!(srv(&mut f, "226 Closed data channel\r\n"), "");
        // QUIT (and PORT, EPRT) with a port open: ABOR first; only QUIT's reply is seen.
        let mut f = filter();
        cli(&mut f, "EPSV\r\n");
        srv(&mut f, "229 Entering Extended Passive Mode (|||50000|)\r\n");
        let (to_server, _) = cli(&mut f, "QUIT\r\n");
        assert_eq!(to_server.as_deref(), Some("ABOR\r\nQUIT\r\n"));
        assert_eq!(srv(&mut f, "226 Closed data channel\r\n"), "");
        assert_eq!(srv(&mut f, "221 Bye\r\n"), "221 Bye\r\n");
        let mut f = filter();
        cli(&mut f, "PASV\r\n");
        srv(&mut f, "227 Entering Passive Mode (192,0,2,10,195,80)\r\n");
        let (to_server, _) = cli(&mut f, "PORT 192,0,2,130,195,81\r\n");
        assert_eq!(
            to_server.as_deref(),
            Some("ABOR\r\nPORT 192,0,2,130,195,81\r\n")
        );
        // A transfer libunftp refused leaves the port open; one it took (150) uses it.
        let mut f = filter();
        cli(&mut f, "PASV\r\n");
        srv(&mut f, "227 Entering Passive Mode (192,0,2,10,195,80)\r\n");
        let (to_server, to_client) = cli(&mut f, "STOR\r\n");
        assert_eq!(to_server, None);
        assert!(to_client.starts_with("501 "), "{to_client}");
        cli(&mut f, "LIST /nowhere\r\n");
        srv(&mut f, "550 No such directory\r\n");
        let (to_server, _) = cli(&mut f, "QUIT\r\n");
        assert_eq!(to_server.as_deref(), Some("ABOR\r\nQUIT\r\n"));
        let mut f = filter();
        cli(&mut f, "PASV\r\n");
        srv(&mut f, "227 Entering Passive Mode (192,0,2,10,195,80)\r\n");
        cli(&mut f, "STOR a.jpg\r\n");
        srv(&mut f, "150 Ready\r\n");
        assert_eq!(f.on_close(), None);
        assert_eq!(srv(&mut f, "226 Done\r\n"), "226 Done\r\n");
        assert_eq!(cli(&mut f, "QUIT\r\n").0.as_deref(), Some("QUIT\r\n"));
    }

    #[test]
    fn port_fails_closed_and_goes_on_only_in_canonical_form() {
        // Found by trying to break it: libunftp skips fields it cannot read, so these reached
        // 127.0.0.2 while the filter let what it could not parse pass.
        for bad in [
            "PORT 127,0,0,2,x,80,20\r\n",
            "PORT 127,0,0,2,80,20,999\r\n",
            "PORT 127,0,0,2,80,20,\r\n",
            "PORT\r127,0,0,2,80,20\r\n",
            "PORT\t127,0,0,2,80,20\r\n",
            "PORT 192,0,2,130,80\r\n",
        ] {
            let mut f = filter();
            let (to_server, to_client) = cli(&mut f, bad);
            assert_eq!(to_server, None, "{bad:?} went to libunftp");
            assert!(to_client.starts_with("50"), "{bad:?}: {to_client}");
        }
        let mut f = filter();
        let (to_server, _) = cli(&mut f, "port  192,0,2,130, 195,80 \r\n");
        assert_eq!(to_server.as_deref(), Some("PORT 192,0,2,130,195,80\r\n"));
    }

    #[test]
    fn a_cr_or_nul_inside_a_command_is_a_syntax_error_not_passed_on() {
        // Found by the `ftp_control` fuzz target: `\r\0` was forwarded to libunftp.
        for line in ["\r\0\r\n", "STOR a\rb.jpg\r\n", "USER x\0y\r\n"] {
            let mut f = filter();
            let (to_server, to_client) = cli(&mut f, line);
            assert_eq!(to_server, None, "{line:?}");
            assert!(to_client.starts_with("500 "), "{line:?}: {to_client}");
        }
        // The replies stay in order after it.
        let mut f = filter();
        cli(&mut f, "NOOP\r\n");
        let (_, now) = cli(&mut f, "X\rY\r\n");
        assert_eq!(now, "", "the 500 waits for the NOOP's reply");
        assert!(
            srv(&mut f, "200 NOOP ok\r\n")
                .ends_with("500 Syntax error: control character in the command\r\n")
        );
    }

    #[test]
    fn allo_202_becomes_200() {
        let mut f = filter();
        assert_eq!(
            srv(&mut f, "220 camqtt FTP ready\r\n"),
            "220 camqtt FTP ready\r\n"
        );
        assert_eq!(cli(&mut f, "ALLO 5000\r\n").0.unwrap(), "ALLO 5000\r\n");
        assert_eq!(
            srv(&mut f, "202 Ignored\r\n"),
            "200 ALLO command successful\r\n"
        );
        // A 202 to anything else is left alone.
        cli(&mut f, "NOOP\r\n");
        assert_eq!(srv(&mut f, "202 x\r\n"), "202 x\r\n");
    }

    #[test]
    fn unsolicited_221_is_421() {
        let mut f = filter();
        cli(&mut f, "USER a\r\n");
        srv(&mut f, "331 Password required\r\n");
        assert_eq!(
            srv(
                &mut f,
                "221 Session timed out. Closing control connection\r\n"
            ),
            "421 Session timed out. Closing control connection\r\n"
        );
        cli(&mut f, "QUIT\r\n");
        assert_eq!(srv(&mut f, "221 Bye\r\n"), "221 Bye\r\n");
        // Idle timeout while a command waits: rewritten, and the command still waits.
        cli(&mut f, "ALLO 1\r\n");
        assert!(srv(&mut f, "221 timed out\r\n").starts_with("421 "));
        assert!(srv(&mut f, "202 Ignored\r\n").starts_with("200 "));
    }

    #[test]
    fn logins_are_reported() {
        let mut f = filter();
        cli(&mut f, "USER porchcam\r\n");
        assert_eq!(f.user(), "porchcam");
        assert_eq!(f.from_server(b"331 Password required\r\n").login, None);
        cli(&mut f, "PASS wrong\r\n");
        assert_eq!(
            f.from_server(b"530 Wrong username or password\r\n").login,
            Some(Login::Refused("porchcam".into()))
        );
        cli(&mut f, "PASS right\r\n");
        assert_eq!(
            f.from_server(b"230 User logged in, proceed\r\n").login,
            Some(Login::Accepted("porchcam".into()))
        );
    }

    #[test]
    fn eprt_becomes_port_for_the_peer_only() {
        let mut f = filter();
        let (s, c) = cli(&mut f, "EPRT |1|192.0.2.130|50001|\r\n");
        assert_eq!(s.unwrap(), "PORT 192,0,2,130,195,81\r\n");
        assert!(c.is_empty());
        assert_eq!(
            srv(&mut f, "200 PORT command successful\r\n"),
            "200 EPRT command successful\r\n"
        );
        let (s, c) = cli(&mut f, "EPRT |1|198.51.100.1|21|\r\n");
        assert!(s.is_none());
        assert!(c.starts_with("504 "), "{c}");
        let (s, c) = cli(&mut f, "EPRT |2|2001:db8::1|21|\r\n");
        assert!(s.is_none());
        assert!(c.starts_with("522 "), "{c}");
        let (s, c) = cli(&mut f, "EPRT garbage\r\n");
        assert!(s.is_none());
        assert!(c.starts_with("501 "), "{c}");
        let (s, c) = cli(&mut f, "PORT 198,51,100,1,0,21\r\n");
        assert!(s.is_none());
        assert!(c.starts_with("504 "), "{c}");
        let (s, _) = cli(&mut f, "PORT 192,0,2,130,195,81\r\n");
        assert_eq!(s.unwrap(), "PORT 192,0,2,130,195,81\r\n");
    }

    #[test]
    fn active_off_refuses_port_and_eprt() {
        let mut f = ControlFilter::new("192.0.2.130".parse().unwrap(), false);
        assert!(cli(&mut f, "PORT 192,0,2,130,195,81").1.starts_with("502 "));
        assert!(
            cli(&mut f, "EPRT |1|192.0.2.130|50001|")
                .1
                .starts_with("502 ")
        );
    }

    #[test]
    fn local_replies_keep_their_order() {
        let mut f = filter();
        // Pipelined: ALLO (to libunftp), then a bounce PORT (answered here), then NOOP.
        cli(&mut f, "ALLO 1\r\n");
        let (_, c) = cli(&mut f, "PORT 198,51,100,1,0,21\r\n");
        assert!(c.is_empty(), "the 504 must wait for the ALLO reply");
        cli(&mut f, "NOOP\r\n");
        let out = srv(&mut f, "202 Ignored\r\n");
        assert!(
            out.starts_with("200 ALLO command successful\r\n504 "),
            "{out}"
        );
        assert_eq!(srv(&mut f, "200 NOOP\r\n"), "200 NOOP\r\n");
    }

    #[test]
    fn multiline_and_preliminary_replies_keep_the_command_pending() {
        let mut f = filter();
        cli(&mut f, "STOR a.jpg\r\n");
        cli(&mut f, "ALLO 5\r\n");
        assert_eq!(srv(&mut f, "150 Opening\r\n"), "150 Opening\r\n");
        assert_eq!(srv(&mut f, "211-Features\r\n"), "211-Features\r\n");
        assert_eq!(srv(&mut f, " SIZE\r\n"), " SIZE\r\n");
        assert_eq!(srv(&mut f, "226 done\r\n"), "226 done\r\n");
        assert_eq!(
            srv(&mut f, "202 Ignored\r\n"),
            "200 ALLO command successful\r\n"
        );
    }

    #[test]
    fn mapped_ipv6_peer_is_its_ipv4() {
        let mut f = ControlFilter::new("::ffff:192.0.2.130".parse().unwrap(), true);
        assert!(cli(&mut f, "PORT 192,0,2,130,1,1").0.is_some());
    }

    proptest! {
        /// Never panics, whatever either side sends; every client line either goes to the
        /// server or gets a reply (now or after the pending ones).
        #[test]
        fn never_panics(lines in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..80)), 0..30)) {
            let mut f = filter();
            for (client, line) in lines {
                if client {
                    let o = f.from_client(&line);
                    prop_assert!(o.to_server.is_some() || !f.queue.is_empty() || !o.to_client.is_empty());
                } else {
                    let o = f.from_server(&line);
                    prop_assert!(o.to_client.ends_with(b"\r\n"));
                }
            }
        }
    }
}
