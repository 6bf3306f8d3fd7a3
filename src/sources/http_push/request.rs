//! Incremental HTTP/1.x request framer. PURE: no I/O, no async.
//!
//! [`RequestFramer`] owns the bytes received on one connection. The shell appends what it reads
//! with [`RequestFramer::push`] and calls [`RequestFramer::poll`] until it returns
//! [`Framed::NeedMore`]. Bytes after a complete request stay buffered for the next one, so
//! pipelined requests come out one by one, in order.
//!
//! Leniency, because cameras are not browsers:
//! - request targets in origin form (`/API`), absolute form (`http://host:port/API`, routed on
//!   the path), asterisk form (`*`) and authority form (`host:port`, path is the raw target);
//! - header values without optional whitespace (`Content-Length:3067`), names in any case;
//! - `Transfer-Encoding: chunked` wins over any `Content-Length` (the Python SDK and API-2.1
//!   cameras send both, with `Content-Length: 0`);
//! - bare `LF` line endings, empty lines before a request line.
//!
//! Strictness, because the peer is untrusted: conflicting `Content-Length` values, non-digit
//! lengths, unknown final transfer codings and bad chunk framing are errors; sizes are checked
//! against [`Limits`] before anything is buffered beyond them.
//!
//! A request that starts with a TLS handshake record header ([`sniff_tls`]) is a client
//! speaking HTTPS to a plain-HTTP port (a camera set to `https`): it fails with
//! [`HttpError::TlsOnPlainPort`], not with a generic bad request, so the shell can say so.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use bytes::{Buf, Bytes, BytesMut};

use super::HttpError;

/// Longest chunk-size line (hex digits plus extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// While the head is shorter than this, it is re-parsed on every push (so garbage fails fast);
/// beyond it only when a new line feed arrives (so a slow trickle costs O(lines × size)).
const EAGER_PARSE_BYTES: usize = 1024;

/// Blank-line bytes (CR, LF) between two requests that still count as idle. Clients send a
/// stray CRLF after a body; a peer that keeps sending them is not idle but trickling a request
/// preamble, so the header timeout applies (otherwise a CRLF every few seconds would hold a
/// connection slot forever, never reaching the idle timeout).
const IDLE_BLANK_BYTES: usize = 8;

/// Content type `handshake(22)` of a TLS record (RFC 8446 §5.1; the same value since SSL 3.0,
/// RFC 6101 §5.2.1): the first byte every TLS client sends.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What the first bytes of a connection (or request) say about TLS; see [`sniff_tls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSniff {
    /// A TLS handshake record header: a client opening TLS (a ClientHello follows).
    Tls,
    /// Not a TLS handshake record header.
    NotTls,
    /// Fewer than 3 bytes, and they are a prefix of a TLS handshake record header.
    NeedMore,
}

/// Does `bytes` start with a TLS handshake record header?
///
/// The header of a `TLSPlaintext` record (RFC 8446 §5.1) is `type` (1 byte), then
/// `legacy_record_version` (2 bytes), then `length` (2 bytes). A client's first record is a
/// handshake record (`type` = [`TLS_HANDSHAKE_RECORD`], `0x16`) carrying its ClientHello; its
/// version is `0x03 0x00` (SSL 3.0) to `0x03 0x04` (TLS 1.3; in practice `0x03 0x01` or
/// `0x03 0x03`). So the rule is: byte 0 is `0x16`, byte 1 is `0x03`, byte 2 is `0x00..=0x04`.
/// No HTTP request can start that way (a method is a token of printable characters, RFC 9110
/// §9.1), so a match is unambiguous. `0x16` followed by anything else is [`TlsSniff::NotTls`]
/// (an ordinary bad request for the HTTP parser). The SSL 2.0 compatible ClientHello (high bit
/// set in byte 0) is not recognised; no camera firmware of the last twenty years sends it.
pub fn sniff_tls(bytes: &[u8]) -> TlsSniff {
    match bytes {
        [] => TlsSniff::NeedMore,
        [TLS_HANDSHAKE_RECORD] | [TLS_HANDSHAKE_RECORD, 0x03] => TlsSniff::NeedMore,
        [TLS_HANDSHAKE_RECORD, 0x03, 0x00..=0x04, ..] => TlsSniff::Tls,
        _ => TlsSniff::NotTls,
    }
}

/// Size limits of the framer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted, in bytes: checked against `Content-Length` before reading and
    /// against the decoded total of a chunked body.
    pub body_limit: usize,
    /// Largest header section (request line + headers + blank line), and largest chunked
    /// trailer section, in bytes.
    pub header_limit: usize,
    /// Largest number of header fields.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_limit: 16 * 1024 * 1024,
            header_limit: 64 * 1024,
            max_headers: 100,
        }
    }
}

/// One complete HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method as sent (`POST`, `GET`, anything else).
    pub method: String,
    /// Request target exactly as sent.
    pub target: String,
    /// Path of the target without the query: `/API` for both `/API?x` and
    /// `http://192.168.0.56:5002/API`. For asterisk and authority form, the raw target.
    pub path: String,
    /// Query string without the `?`, if any.
    pub query: Option<String>,
    /// Minor HTTP version: `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub version: u8,
    /// Header fields in arrival order, names as sent, values trimmed (invalid UTF-8 replaced).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when it was chunked.
    pub body: Bytes,
    /// Address of the TCP peer.
    pub peer: SocketAddr,
    /// `true` when the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// `true` when the client wants the connection kept open after the reply
    /// (HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`).
    pub keep_alive: bool,
}

impl Request {
    /// First value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What [`RequestFramer::poll`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// More bytes are needed.
    NeedMore,
    /// The header section of the next request is complete; its body is not (yet) framed.
    /// Returned once per request, before the matching [`Framed::Request`].
    Head {
        /// The client sent `Expect: 100-continue` (HTTP/1.1) and the request has a body.
        expect_continue: bool,
    },
    /// A complete request.
    Request(Request),
}

/// Parsed header section waiting for its body.
#[derive(Debug)]
struct Head {
    method: String,
    target: String,
    version: u8,
    headers: Vec<(String, String)>,
    keep_alive: bool,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Inside the trailer section, this many bytes seen so far.
    Trailer(usize),
}

#[derive(Debug)]
enum State {
    /// Waiting for a complete header section. `scanned` bytes were already looked at.
    Head { scanned: usize },
    /// Waiting for `len` body bytes.
    Length { head: Head, len: usize },
    /// Decoding a chunked body.
    Chunked {
        head: Head,
        chunk: Chunk,
        body: BytesMut,
    },
    /// Framing lost; the error repeats forever.
    Failed(HttpError),
}

/// Least free room [`RequestFramer::read_buffer`] offers for one socket read, bytes.
pub const READ_RESERVE: usize = 16 * 1024;

/// Incremental request framer for one connection. See the module documentation.
#[derive(Debug)]
pub struct RequestFramer {
    buf: BytesMut,
    limits: Limits,
    peer: SocketAddr,
    state: State,
    /// Blank-line bytes dropped since the last complete request (saturating).
    blank: usize,
}

impl RequestFramer {
    /// A framer for a connection from `peer`.
    pub fn new(limits: Limits, peer: SocketAddr) -> Self {
        RequestFramer {
            buf: BytesMut::new(),
            limits,
            peer,
            state: State::Head { scanned: 0 },
            blank: 0,
        }
    }

    /// Append received bytes. Cheap; all work happens in [`RequestFramer::poll`].
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read the next bytes into (`AsyncReadExt::read_buf`): what is read there
    /// is pushed, without the copy of [`RequestFramer::push`]. It has room for the rest of a
    /// body of known length (`Content-Length`, already checked against the body limit: one
    /// allocation for the whole body, and a large body arrives in large reads), otherwise for
    /// at least [`READ_RESERVE`] bytes.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        let want = match &self.state {
            State::Length { len, .. } => len.saturating_sub(self.buf.len()).max(READ_RESERVE),
            _ => READ_RESERVE,
        };
        if self.buf.capacity() - self.buf.len() < READ_RESERVE.min(want) {
            self.buf.reserve(want);
        }
        &mut self.buf
    }

    /// `true` between requests: nothing of a next request has arrived. A few blank lines
    /// between requests are ignored; more than [`IDLE_BLANK_BYTES`] of them since the last
    /// request count as the start of one (so the header timeout, not the idle timeout, applies).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head { .. })
            && self.buf.iter().all(|b| matches!(b, b'\r' | b'\n'))
            && self.blank.saturating_add(self.buf.len()) <= IDLE_BLANK_BYTES
    }

    /// `true` once the header section of the current request is complete.
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Length { .. } | State::Chunked { .. })
    }

    /// Bytes buffered but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Header fields of the current request once its header section is complete (after
    /// [`Framed::Head`]) and until its body is framed; `None` otherwise. Lets the server check
    /// credentials before reading the body.
    pub fn pending_headers(&self) -> Option<&[(String, String)]> {
        match &self.state {
            State::Length { head, .. } | State::Chunked { head, .. } => Some(&head.headers),
            State::Head { .. } | State::Failed(_) => None,
        }
    }

    /// Advance as far as the buffered bytes allow.
    ///
    /// After an error the framer is stuck: every later call returns the same error.
    pub fn poll(&mut self) -> Result<Framed, HttpError> {
        let result = self.step();
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    fn step(&mut self) -> Result<Framed, HttpError> {
        match &mut self.state {
            State::Failed(e) => Err(e.clone()),
            State::Head { .. } => self.step_head(),
            State::Length { len, .. } => {
                let len = *len;
                if self.buf.len() < len {
                    return Ok(Framed::NeedMore);
                }
                let body = self.buf.split_to(len).freeze();
                if self.buf.is_empty() {
                    // Let go of the body's allocation: the emptied buffer would keep it alive
                    // (shared) for as long as the connection lasts, a whole post per idle
                    // camera connection.
                    self.buf = BytesMut::new();
                }
                Ok(Framed::Request(self.finish(body, false)))
            }
            State::Chunked { .. } => self.step_chunked(),
        }
    }

    fn step_head(&mut self) -> Result<Framed, HttpError> {
        if !self.head_worth_parsing()? {
            return Ok(Framed::NeedMore);
        }
        let Some((parsed, head)) = self.parse_head()? else {
            return Ok(Framed::NeedMore);
        };
        self.buf.advance(parsed);
        self.start_body(head)
    }

    /// Get the buffered head ready for parsing: drop blank lines before it, refuse a TLS
    /// handshake, and say whether parsing it again could succeed now (a long head is only
    /// re-parsed when a new line feed arrived).
    fn head_worth_parsing(&mut self) -> Result<bool, HttpError> {
        let State::Head { scanned } = &mut self.state else {
            return Ok(false);
        };
        // Empty lines before a request line are allowed (RFC 9112 §2.2); drop them here so that
        // the header limit and the idle state ignore them.
        let blank = self
            .buf
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        if blank > 0 {
            self.buf.advance(blank);
            self.blank = self.blank.saturating_add(blank);
            *scanned = 0;
        }
        if self.buf.is_empty() {
            return Ok(false);
        }
        // A TLS ClientHello instead of a request line: an HTTPS client on a plain-HTTP port.
        // Checked before httparse, which would call it a bad token.
        match sniff_tls(&self.buf) {
            TlsSniff::Tls => return Err(HttpError::TlsOnPlainPort),
            TlsSniff::NeedMore => return Ok(false),
            TlsSniff::NotTls => {}
        }
        let len = self.buf.len();
        let fresh_lf = self.buf[(*scanned).min(len)..].contains(&b'\n');
        *scanned = len;
        Ok(len <= EAGER_PARSE_BYTES || fresh_lf || len >= self.limits.header_limit)
    }

    /// Parse the buffered header section (at most the header limit of it). `None`: not
    /// complete yet; otherwise the bytes it took and the head.
    fn parse_head(&self) -> Result<Option<(usize, Head)>, HttpError> {
        let len = self.buf.len();
        let window = &self.buf[..len.min(self.limits.header_limit)];
        let mut slots = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut req = httparse::Request::new(&mut slots);
        let parsed = match req.parse(window) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if len >= self.limits.header_limit => {
                return Err(HttpError::HeaderTooLarge {
                    limit: self.limits.header_limit,
                });
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::TooManyHeaders {
                    limit: self.limits.max_headers,
                });
            }
            Err(e) => return Err(HttpError::BadRequest(e.to_string())),
        };
        let version = req.version.unwrap_or(1);
        let headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).trim().to_owned(),
                )
            })
            .collect();
        let head = Head {
            method: req.method.unwrap_or_default().to_owned(),
            target: req.path.unwrap_or_default().to_owned(),
            version,
            keep_alive: keep_alive(version, &headers),
            headers,
        };
        Ok(Some((parsed, head)))
    }

    /// The header section is in: decide how the body is framed and wait for it.
    fn start_body(&mut self, head: Head) -> Result<Framed, HttpError> {
        let framing = body_framing(&head.headers, self.limits.body_limit)?;
        let expect_continue = head.version == 1
            && !matches!(framing, Framing::Length(0))
            && head.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("expect") && v.eq_ignore_ascii_case("100-continue")
            });
        self.state = match framing {
            Framing::Length(len) => State::Length { head, len },
            Framing::Chunked => State::Chunked {
                head,
                chunk: Chunk::Size,
                body: BytesMut::new(),
            },
        };
        Ok(Framed::Head { expect_continue })
    }

    fn step_chunked(&mut self) -> Result<Framed, HttpError> {
        let limits = self.limits;
        let State::Chunked { chunk, body, .. } = &mut self.state else {
            return Ok(Framed::NeedMore);
        };
        loop {
            let step = match *chunk {
                Chunk::Size => chunk_size(&mut self.buf, body.len(), limits.body_limit)?,
                Chunk::Data(left) => chunk_data(&mut self.buf, body, left),
                Chunk::DataEnd => chunk_data_end(&mut self.buf)?,
                Chunk::Trailer(seen) => chunk_trailer(&mut self.buf, seen, limits.header_limit)?,
            };
            match step {
                ChunkStep::NeedMore => return Ok(Framed::NeedMore),
                ChunkStep::Next(next) => *chunk = next,
                ChunkStep::Done => {
                    let body = std::mem::take(body).freeze();
                    return Ok(Framed::Request(self.finish(body, true)));
                }
            }
        }
    }

    /// Build the request from the current head and `body`, and go back to waiting for a head.
    fn finish(&mut self, body: Bytes, chunked: bool) -> Request {
        let state = std::mem::replace(&mut self.state, State::Head { scanned: 0 });
        self.blank = 0;
        let head = match state {
            State::Length { head, .. } | State::Chunked { head, .. } => head,
            // Unreachable by construction; produce an empty head rather than panic.
            State::Head { .. } | State::Failed(_) => Head {
                method: String::new(),
                target: String::new(),
                version: 1,
                headers: Vec::new(),
                keep_alive: false,
            },
        };
        let (path, query) = split_target(&head.target);
        Request {
            method: head.method,
            path,
            query,
            target: head.target,
            version: head.version,
            headers: head.headers,
            body,
            peer: self.peer,
            chunked,
            keep_alive: head.keep_alive,
        }
    }
}

/// Frame every request in `input` (as if it arrived in one read). Returns the complete requests
/// and the error that stopped framing, if any; trailing incomplete bytes are ignored.
///
/// A convenience for tests and fuzz targets.
pub fn frame_all(input: &[u8], limits: Limits) -> (Vec<Request>, Option<HttpError>) {
    let peer = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    let mut framer = RequestFramer::new(limits, peer);
    framer.push(input);
    let mut out = Vec::new();
    loop {
        match framer.poll() {
            Ok(Framed::NeedMore) => return (out, None),
            Ok(Framed::Head { .. }) => {}
            Ok(Framed::Request(r)) => out.push(r),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn bad(msg: &str) -> HttpError {
    HttpError::BadRequest(msg.to_owned())
}

enum Framing {
    Length(usize),
    Chunked,
}

/// Decide how the body is delimited (RFC 9112 §6.3, requests only).
fn body_framing(headers: &[(String, String)], body_limit: usize) -> Result<Framing, HttpError> {
    let mut codings: Vec<String> = Vec::new();
    for (_, v) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
    {
        codings.extend(
            v.split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty()),
        );
    }
    codings.retain(|c| c != "identity");
    if let Some(last) = codings.last() {
        // Transfer-Encoding wins over Content-Length, whatever the latter says.
        if last == "chunked" {
            return Ok(Framing::Chunked);
        }
        return Err(HttpError::BadRequest(format!(
            "unsupported transfer coding {last:?}"
        )));
    }

    let mut length: Option<u64> = None;
    for (_, v) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        // A list of identical values ("5, 5") is allowed; anything else is an error.
        for item in v.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::BadRequest(format!(
                    "invalid Content-Length {v:?}"
                )));
            }
            // Too many digits for u64 is "too large", not "malformed".
            let n = item.parse::<u64>().unwrap_or(u64::MAX);
            match length {
                Some(prev) if prev != n => {
                    return Err(bad("conflicting Content-Length values"));
                }
                _ => length = Some(n),
            }
        }
    }
    match length {
        None => Ok(Framing::Length(0)),
        Some(n) if n > body_limit as u64 => Err(HttpError::BodyTooLarge {
            declared: true,
            seen: n,
            limit: body_limit,
        }),
        // n <= body_limit, which is a usize.
        Some(n) => Ok(Framing::Length(usize::try_from(n).unwrap_or(body_limit))),
    }
}

fn keep_alive(version: u8, headers: &[(String, String)]) -> bool {
    let mut close = false;
    let mut keep = false;
    for (_, v) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
    {
        for token in v.split(',').map(str::trim) {
            close |= token.eq_ignore_ascii_case("close");
            keep |= token.eq_ignore_ascii_case("keep-alive");
        }
    }
    if close {
        false
    } else if version == 0 {
        keep
    } else {
        true
    }
}

/// What one step of chunked decoding achieved.
enum ChunkStep {
    /// More bytes are needed.
    NeedMore,
    /// Go on in this state.
    Next(Chunk),
    /// The trailer section ended: the body is complete.
    Done,
}

/// A chunk-size line, checked against the body limit (`decoded` bytes so far).
fn chunk_size(
    buf: &mut BytesMut,
    decoded: usize,
    body_limit: usize,
) -> Result<ChunkStep, HttpError> {
    let Some(line) =
        take_line(buf, MAX_CHUNK_LINE).map_err(|()| bad("chunk-size line too long"))?
    else {
        return Ok(ChunkStep::NeedMore);
    };
    let size = parse_chunk_size(&line)?;
    let total = (decoded as u64).saturating_add(size);
    if total > body_limit as u64 {
        return Err(HttpError::BodyTooLarge {
            declared: false,
            seen: total,
            limit: body_limit,
        });
    }
    Ok(ChunkStep::Next(if size == 0 {
        Chunk::Trailer(0)
    } else {
        Chunk::Data(size)
    }))
}

/// Move up to `left` bytes of chunk data from `buf` into `body`.
fn chunk_data(buf: &mut BytesMut, body: &mut BytesMut, left: u64) -> ChunkStep {
    if buf.is_empty() {
        return ChunkStep::NeedMore;
    }
    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
    body.extend_from_slice(&buf[..n]);
    buf.advance(n);
    let left = left - n as u64;
    ChunkStep::Next(if left == 0 {
        Chunk::DataEnd
    } else {
        Chunk::Data(left)
    })
}

/// The line end (CRLF or bare LF) after chunk data.
fn chunk_data_end(buf: &mut BytesMut) -> Result<ChunkStep, HttpError> {
    let eol = match (buf.first(), buf.get(1)) {
        (None, _) | (Some(b'\r'), None) => return Ok(ChunkStep::NeedMore),
        (Some(b'\n'), _) => 1,
        (Some(b'\r'), Some(b'\n')) => 2,
        _ => return Err(bad("chunk data not followed by CRLF")),
    };
    buf.advance(eol);
    Ok(ChunkStep::Next(Chunk::Size))
}

/// One line of the trailer section (`seen` bytes of it so far, bounded by the header limit).
/// Trailer fields are read and dropped; nothing we receive relies on them.
fn chunk_trailer(
    buf: &mut BytesMut,
    seen: usize,
    header_limit: usize,
) -> Result<ChunkStep, HttpError> {
    let room = header_limit.saturating_sub(seen);
    let Some(line) = take_line(buf, room).map_err(|()| HttpError::HeaderTooLarge {
        limit: header_limit,
    })?
    else {
        return Ok(ChunkStep::NeedMore);
    };
    if line.is_empty() {
        return Ok(ChunkStep::Done);
    }
    Ok(ChunkStep::Next(Chunk::Trailer(seen + line.len() + 1)))
}

/// Take one line (without CR/LF) off the front of `buf`.
/// `Ok(None)`: no complete line yet; `Err(())`: the line is longer than `max` bytes.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<Vec<u8>>, ()> {
    match buf
        .iter()
        .take(max.saturating_add(1))
        .position(|&b| b == b'\n')
    {
        Some(pos) => {
            let mut line = buf.split_to(pos + 1);
            line.truncate(pos);
            if line.last() == Some(&b'\r') {
                line.truncate(pos - 1);
            }
            Ok(Some(line.to_vec()))
        }
        None if buf.len() > max => Err(()),
        None => Ok(None),
    }
}

/// Parse `1a;ext=v` (extensions and surrounding whitespace ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let line = trim_ascii(line);
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(bad("invalid chunk size"));
    }
    let rest = trim_ascii(&line[digits..]);
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(bad("invalid chunk size"));
    }
    let hex = line[..digits].iter().skip_while(|&&b| b == b'0').count();
    if hex > 16 {
        // Larger than u64: certainly over any body limit.
        return Ok(u64::MAX);
    }
    let mut n: u64 = 0;
    for &b in &line[..digits] {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        n = (n << 4) | u64::from(d);
    }
    Ok(n)
}

fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Path and query of a request target.
fn split_target(target: &str) -> (String, Option<String>) {
    let lower = target
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let rest = if lower.starts_with("http://") {
        Some(&target[7..])
    } else if lower.starts_with("https://") {
        Some(&target[8..])
    } else {
        None
    };
    let origin = match rest {
        // Absolute form: drop the authority.
        Some(rest) => match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => rest[i..].to_owned(),
            Some(i) => format!("/{}", &rest[i..]),
            None => "/".to_owned(),
        },
        None if target.starts_with('/') => target.to_owned(),
        // Asterisk or authority form: nothing to split.
        None => return (target.to_owned(), None),
    };
    match origin.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (origin, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            body_limit: 1000,
            header_limit: 512,
            max_headers: 8,
        }
    }

    fn one(input: &[u8]) -> Request {
        let (mut reqs, err) = frame_all(input, limits());
        assert_eq!(err, None, "unexpected error");
        assert_eq!(reqs.len(), 1, "expected exactly one request");
        reqs.remove(0)
    }

    #[test]
    fn origin_form_with_query() {
        let r = one(b"POST /API?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/API?a=1");
        assert_eq!(r.path, "/API");
        assert_eq!(r.query.as_deref(), Some("a=1"));
        assert_eq!(r.version, 1);
        assert_eq!(&r.body[..], b"abc");
        assert!(r.keep_alive);
        assert!(!r.chunked);
    }

    #[test]
    fn absolute_form_routes_on_path() {
        let r = one(b"POST http://192.168.0.56:5002/API HTTP/1.1\r\nContent-Length:0\r\nConnection: close\r\n\r\n");
        assert_eq!(r.target, "http://192.168.0.56:5002/API");
        assert_eq!(r.path, "/API");
        assert!(!r.keep_alive);
        let r = one(b"GET HTTPS://host:1 HTTP/1.1\r\n\r\n");
        assert_eq!(r.path, "/");
        let r = one(b"GET http://host?x=y HTTP/1.1\r\n\r\n");
        assert_eq!((r.path.as_str(), r.query.as_deref()), ("/", Some("x=y")));
    }

    #[test]
    fn asterisk_and_authority_forms() {
        assert_eq!(one(b"OPTIONS * HTTP/1.1\r\n\r\n").path, "*");
        assert_eq!(one(b"CONNECT host:443 HTTP/1.1\r\n\r\n").path, "host:443");
    }

    #[test]
    fn headers_case_and_whitespace() {
        let r = one(b"POST / HTTP/1.1\r\nCONTENT-length:2\r\nX-Thing:  v  \r\n\r\nhi");
        assert_eq!(r.header("content-length"), Some("2"));
        assert_eq!(r.header("x-thing"), Some("v"));
        assert_eq!(r.header("missing"), None);
        assert_eq!(&r.body[..], b"hi");
    }

    #[test]
    fn http10_defaults_to_close() {
        assert!(!one(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        let r = one(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert_eq!(r.version, 0);
        assert!(r.keep_alive);
        assert!(!one(b"GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n").keep_alive);
    }

    #[test]
    fn chunked_wins_over_content_length() {
        let r = one(b"POST /API HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        assert!(r.chunked);
        assert_eq!(&r.body[..], b"hello");
    }

    #[test]
    fn chunked_extensions_trailers_hex_case() {
        let r = one(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\nA;name=val\r\n0123456789\r\nb \r\nabcdefghijk\r\n0;last\r\nX-Trailer: 1\r\nY: 2\r\n\r\n",
        );
        assert_eq!(&r.body[..], b"0123456789abcdefghijk");
    }

    #[test]
    fn chunked_bare_lf() {
        let r = one(b"POST / HTTP/1.1\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n");
        assert_eq!(&r.body[..], b"abc");
    }

    #[test]
    fn no_body_without_framing_headers() {
        let (reqs, err) = frame_all(b"POST / HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", limits());
        assert_eq!(err, None);
        assert_eq!(reqs.len(), 2);
        assert!(reqs[0].body.is_empty());
        assert_eq!(reqs[1].path, "/b");
    }

    #[test]
    fn pipelined_and_leftover() {
        let mut f = RequestFramer::new(limits(), "127.0.0.1:9".parse().unwrap());
        f.push(b"POST /1 HTTP/1.1\r\nContent-Length: 1\r\n\r\naPOST /2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nb");
        assert_eq!(
            f.poll(),
            Ok(Framed::Head {
                expect_continue: false
            })
        );
        let Ok(Framed::Request(r)) = f.poll() else {
            panic!("first request")
        };
        assert_eq!((r.path.as_str(), &r.body[..]), ("/1", &b"a"[..]));
        assert_eq!(
            f.poll(),
            Ok(Framed::Head {
                expect_continue: false
            })
        );
        assert_eq!(f.poll(), Ok(Framed::NeedMore));
        assert!(f.in_body());
        f.push(b"cGET");
        let Ok(Framed::Request(r)) = f.poll() else {
            panic!("second request")
        };
        assert_eq!((r.path.as_str(), &r.body[..]), ("/2", &b"bc"[..]));
        assert_eq!(f.poll(), Ok(Framed::NeedMore));
        assert!(!f.is_idle());
        assert_eq!(f.buffered(), 3);
    }

    #[test]
    fn idle_ignores_blank_lines() {
        let mut f = RequestFramer::new(limits(), "127.0.0.1:9".parse().unwrap());
        assert!(f.is_idle());
        f.push(b"\r\n\r\n");
        assert!(f.is_idle());
        assert_eq!(f.poll(), Ok(Framed::NeedMore));
        f.push(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            f.poll(),
            Ok(Framed::Head {
                expect_continue: false
            })
        );
    }

    #[test]
    fn endless_blank_lines_are_not_idle() {
        let mut f = RequestFramer::new(limits(), "127.0.0.1:9".parse().unwrap());
        // A trickle of CRLFs, polled after each: idle at first, then a request in progress.
        let mut idle = Vec::new();
        for _ in 0..8 {
            f.push(b"\r\n");
            assert_eq!(f.poll(), Ok(Framed::NeedMore));
            idle.push(f.is_idle());
        }
        assert_eq!(idle, [true, true, true, true, false, false, false, false]);
        // A request still frames after them, and resets the allowance.
        f.push(b"GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(f.poll(), Ok(Framed::Head { .. })));
        assert!(matches!(f.poll(), Ok(Framed::Request(_))));
        f.push(b"\r\n");
        assert!(f.is_idle());
        // Unpolled bytes count as well.
        f.push(&[b'\n'; 20]);
        assert!(!f.is_idle());
    }

    #[test]
    fn expect_continue() {
        let mut f = RequestFramer::new(limits(), "127.0.0.1:9".parse().unwrap());
        f.push(b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(
            f.poll(),
            Ok(Framed::Head {
                expect_continue: true
            })
        );
        assert_eq!(f.poll(), Ok(Framed::NeedMore));
        f.push(b"ok");
        assert!(matches!(f.poll(), Ok(Framed::Request(_))));
        // No body: nothing to continue.
        let (_, err) = frame_all(b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", limits());
        assert_eq!(err, None);
        let mut f = RequestFramer::new(limits(), "127.0.0.1:9".parse().unwrap());
        f.push(b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(
            f.poll(),
            Ok(Framed::Head {
                expect_continue: false
            })
        );
    }

    #[test]
    fn content_length_errors() {
        let err = |input: &[u8]| frame_all(input, limits()).1;
        assert!(matches!(
            err(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Some(HttpError::BadRequest(_))
        ));
        assert!(matches!(
            err(b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n"),
            Some(HttpError::BadRequest(_))
        ));
        assert!(matches!(
            err(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Some(HttpError::BadRequest(_))
        ));
        assert!(matches!(
            err(b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n"),
            Some(HttpError::BadRequest(_))
        ));
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n"),
            Some(HttpError::BodyTooLarge {
                declared: true,
                seen: 1001,
                limit: 1000
            })
        );
        assert!(matches!(
            err(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            Some(HttpError::BodyTooLarge { declared: true, .. })
        ));
        // Identical duplicates are fine.
        let r = one(b"POST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1, 1\r\n\r\nz");
        assert_eq!(&r.body[..], b"z");
        // Exactly at the limit is fine.
        let mut input = b"POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 1000));
        assert_eq!(one(&input).body.len(), 1000);
    }

    #[test]
    fn chunked_errors() {
        let err = |input: &[u8]| frame_all(input, limits()).1;
        let te = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let with = |tail: &[u8]| [&te[..], tail].concat();
        assert!(matches!(
            err(&with(b"zz\r\n")),
            Some(HttpError::BadRequest(_))
        ));
        assert!(matches!(
            err(&with(b"3x\r\n")),
            Some(HttpError::BadRequest(_))
        ));
        assert!(matches!(
            err(&with(b"3\r\nabcX")),
            Some(HttpError::BadRequest(_))
        ));
        assert!(matches!(
            err(&with(&[b'1'; 5000])),
            Some(HttpError::BadRequest(_))
        ));
        assert_eq!(
            err(&with(b"3e9\r\n")),
            Some(HttpError::BodyTooLarge {
                declared: false,
                seen: 0x3e9,
                limit: 1000
            })
        );
        assert!(matches!(
            err(&with(b"ffffffffffffffffffffff\r\n")),
            Some(HttpError::BodyTooLarge { .. })
        ));
        // Cumulative total is what counts.
        let mut tail = Vec::new();
        for _ in 0..3 {
            tail.extend_from_slice(b"190\r\n");
            tail.extend(std::iter::repeat_n(b'x', 400));
            tail.extend_from_slice(b"\r\n");
        }
        assert_eq!(
            err(&with(&tail)),
            Some(HttpError::BodyTooLarge {
                declared: false,
                seen: 1200,
                limit: 1000
            })
        );
        // Trailers count against the header limit.
        let mut trailer = b"0\r\n".to_vec();
        trailer.extend(std::iter::repeat_n(b'a', 600));
        assert_eq!(
            err(&with(&trailer)),
            Some(HttpError::HeaderTooLarge { limit: 512 })
        );
        assert!(matches!(
            err(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Some(HttpError::BadRequest(_))
        ));
    }

    #[test]
    fn header_limits() {
        let mut input = b"GET / HTTP/1.1\r\nX: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', 600));
        assert_eq!(
            frame_all(&input, limits()).1,
            Some(HttpError::HeaderTooLarge { limit: 512 })
        );
        let mut input = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..9 {
            input.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        assert_eq!(
            frame_all(&input, limits()).1,
            Some(HttpError::TooManyHeaders { limit: 8 })
        );
    }

    #[test]
    fn garbage_fails_fast_and_sticks() {
        let mut f = RequestFramer::new(limits(), "127.0.0.1:9".parse().unwrap());
        f.push(b"\x16\x01\x01\x02\x00\x01\x00");
        assert!(matches!(f.poll(), Err(HttpError::BadRequest(_))));
        f.push(b"GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(f.poll(), Err(HttpError::BadRequest(_))));
        assert!(matches!(
            frame_all(b"GET / HTTP/2.0\r\n\r\n", limits()).1,
            Some(HttpError::BadRequest(_))
        ));
    }

    #[test]
    fn tls_record_header_sniffing() {
        // SSL 3.0, TLS 1.0, 1.1, 1.2 and 1.3 record versions (RFC 8446 §5.1, RFC 6101 §5.2.1).
        for minor in 0x00..=0x04u8 {
            assert_eq!(sniff_tls(&[0x16, 0x03, minor]), TlsSniff::Tls, "{minor}");
            assert_eq!(
                sniff_tls(&[0x16, 0x03, minor, 0x02, 0x00, 0x01]),
                TlsSniff::Tls
            );
        }
        // Prefixes wait for more bytes.
        assert_eq!(sniff_tls(b""), TlsSniff::NeedMore);
        assert_eq!(sniff_tls(&[0x16]), TlsSniff::NeedMore);
        assert_eq!(sniff_tls(&[0x16, 0x03]), TlsSniff::NeedMore);
        // Anything else is not TLS.
        for not in [
            &[0x16, 0x03, 0x05][..],
            &[0x16, 0x03, 0xff],
            &[0x16, 0x02, 0x01],
            &[0x16, 0x04, 0x01],
            &[0x16, 0x00],
            &[0x15, 0x03, 0x01],
            &[0x17, 0x03, 0x03],
            &[0x80, 0x2e, 0x01],
            b"POST / HTTP/1.1\r\n",
            b"G",
        ] {
            assert_eq!(sniff_tls(not), TlsSniff::NotTls, "{not:?}");
        }
    }

    #[test]
    fn tls_client_hello_on_a_plain_connection() {
        for minor in 0x00..=0x04u8 {
            let hello = [
                0x16, 0x03, minor, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
            ];
            assert_eq!(
                frame_all(&hello, limits()),
                (vec![], Some(HttpError::TlsOnPlainPort)),
                "version 3.{minor}"
            );
            // Byte by byte: undecided until the third byte, then the TLS error, for good.
            let mut f = RequestFramer::new(limits(), "127.0.0.1:9".parse().unwrap());
            f.push(&hello[..1]);
            assert_eq!(f.poll(), Ok(Framed::NeedMore));
            assert!(
                !f.is_idle(),
                "a started handshake is not an idle connection"
            );
            f.push(&hello[1..2]);
            assert_eq!(f.poll(), Ok(Framed::NeedMore));
            f.push(&hello[2..3]);
            assert_eq!(f.poll(), Err(HttpError::TlsOnPlainPort));
            f.push(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(f.poll(), Err(HttpError::TlsOnPlainPort));
        }
        // After a complete request on the same connection, and after blank lines.
        let mut input = b"GET / HTTP/1.1\r\n\r\n\r\n".to_vec();
        input.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0x05]);
        let (reqs, err) = frame_all(&input, limits());
        assert_eq!(reqs.len(), 1);
        assert_eq!(err, Some(HttpError::TlsOnPlainPort));
        // 0x16 not followed by a TLS version is an ordinary bad request.
        for bad in [
            &b"\x16\x01\x01\x02\x00"[..],
            b"\x16\x03\x05\x02\x00",
            b"\x16\x02\x03\x02\x00",
            b"\x16GET / HTTP/1.1\r\n\r\n",
        ] {
            let (_, err) = frame_all(bad, limits());
            assert!(
                matches!(err, Some(HttpError::BadRequest(_))),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn long_head_trickled_is_parsed_on_line_feeds() {
        let mut f = RequestFramer::new(
            Limits {
                header_limit: 8192,
                ..limits()
            },
            "127.0.0.1:9".parse().unwrap(),
        );
        let mut input = b"GET / HTTP/1.1\r\nX: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', 3000));
        input.extend_from_slice(b"\r\n\r\n");
        for &b in &input[..input.len() - 1] {
            f.push(&[b]);
            assert_eq!(f.poll(), Ok(Framed::NeedMore));
        }
        f.push(b"\n");
        assert_eq!(
            f.poll(),
            Ok(Framed::Head {
                expect_continue: false
            })
        );
        assert!(
            matches!(f.poll(), Ok(Framed::Request(r)) if r.header("x").map(str::len) == Some(3000))
        );
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        /// The same peer `frame_all` uses, so requests compare equal.
        fn peer() -> SocketAddr {
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
        }

        /// Feed `input` in pieces cut at `cuts` (positions, any order), polling after each push.
        fn frame_pieces(
            input: &[u8],
            cuts: &[usize],
            limits: Limits,
        ) -> (Vec<Request>, Option<HttpError>) {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            cuts.push(input.len());
            cuts.sort_unstable();
            let mut framer = RequestFramer::new(limits, peer());
            let mut out = Vec::new();
            let mut from = 0;
            for cut in cuts {
                framer.push(&input[from..cut]);
                from = cut;
                loop {
                    match framer.poll() {
                        Ok(Framed::NeedMore) => break,
                        Ok(Framed::Head { .. }) => {}
                        Ok(Framed::Request(r)) => out.push(r),
                        Err(e) => return (out, Some(e)),
                    }
                }
            }
            (out, None)
        }

        /// Chunked encoding of `body` cut at `cuts`, with optional extensions and upper-case hex.
        fn chunk_encode(body: &[u8], cuts: &[usize], upper: bool, ext: bool) -> Vec<u8> {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
            cuts.push(body.len());
            cuts.sort_unstable();
            cuts.dedup();
            let mut out = Vec::new();
            let mut from = 0;
            for cut in cuts {
                if cut == from {
                    continue;
                }
                let size = if upper {
                    format!("{:X}", cut - from)
                } else {
                    format!("{:x}", cut - from)
                };
                out.extend_from_slice(size.as_bytes());
                if ext {
                    out.extend_from_slice(b";ext=\"v\"");
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&body[from..cut]);
                out.extend_from_slice(b"\r\n");
                from = cut;
            }
            out.extend_from_slice(b"0\r\nTrailer-Field: x\r\n\r\n");
            out
        }

        #[derive(Debug, Clone)]
        struct Spec {
            path: String,
            body: Vec<u8>,
            chunked: bool,
            cuts: Vec<usize>,
        }

        fn spec() -> impl Strategy<Value = Spec> {
            (
                "/[a-zA-Z0-9]{0,8}",
                proptest::collection::vec(any::<u8>(), 0..300),
                any::<bool>(),
                proptest::collection::vec(any::<usize>(), 0..6),
            )
                .prop_map(|(path, body, chunked, cuts)| Spec {
                    path,
                    body,
                    chunked,
                    cuts,
                })
        }

        fn encode(spec: &Spec) -> Vec<u8> {
            let mut out = format!("POST {} HTTP/1.1\r\nHost: cam\r\n", spec.path).into_bytes();
            if spec.chunked {
                out.extend_from_slice(b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n");
                out.extend(chunk_encode(
                    &spec.body,
                    &spec.cuts,
                    spec.cuts.len().is_multiple_of(2),
                    spec.cuts.len().is_multiple_of(3),
                ));
            } else {
                out.extend_from_slice(
                    format!("Content-Length:{}\r\n\r\n", spec.body.len()).as_bytes(),
                );
                out.extend_from_slice(&spec.body);
            }
            out
        }

        proptest! {
            #[test]
            fn never_panics(input in proptest::collection::vec(any::<u8>(), 0..2048), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
                let limits = Limits { body_limit: 512, header_limit: 256, max_headers: 4 };
                let _ = frame_all(&input, limits);
                let _ = frame_pieces(&input, &cuts, limits);
            }

            #[test]
            fn never_panics_on_near_http(
                head in "(GET|POST) (/|http://h:1/|\\*)[ -~]{0,20} HTTP/1\\.[01]\r\n((Transfer-Encoding|Content-Length|Connection|Expect): ?[ -~]{0,12}\r\n){0,4}\r\n",
                tail in proptest::collection::vec(any::<u8>(), 0..200),
            ) {
                let limits = Limits { body_limit: 100, header_limit: 256, max_headers: 8 };
                let input = [head.as_bytes(), &tail].concat();
                let _ = frame_all(&input, limits);
            }

            #[test]
            fn tls_record_header_is_never_framed_as_http(
                minor in 0u8..=4,
                blank in "[\r\n]{0,4}",
                tail in proptest::collection::vec(any::<u8>(), 0..300),
                cuts in proptest::collection::vec(any::<usize>(), 0..8),
            ) {
                let mut input = blank.into_bytes();
                input.extend_from_slice(&[TLS_HANDSHAKE_RECORD, 0x03, minor]);
                input.extend_from_slice(&tail);
                let limits = Limits { body_limit: 512, header_limit: 256, max_headers: 4 };
                prop_assert_eq!(frame_all(&input, limits), (vec![], Some(HttpError::TlsOnPlainPort)));
                prop_assert_eq!(frame_pieces(&input, &cuts, limits), (vec![], Some(HttpError::TlsOnPlainPort)));
            }

            #[test]
            fn chunked_round_trip(body in proptest::collection::vec(any::<u8>(), 0..2000), cuts in proptest::collection::vec(any::<usize>(), 0..20), upper: bool, ext: bool) {
                let mut input = b"POST /API HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                input.extend(chunk_encode(&body, &cuts, upper, ext));
                let (reqs, err) = frame_all(&input, Limits::default());
                prop_assert_eq!(err, None);
                prop_assert_eq!(reqs.len(), 1);
                prop_assert!(reqs[0].chunked);
                prop_assert_eq!(&reqs[0].body[..], &body[..]);
            }

            #[test]
            fn any_split_gives_same_requests(specs in proptest::collection::vec(spec(), 1..4), cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
                let input: Vec<u8> = specs.iter().flat_map(encode).collect();
                let (whole, err) = frame_all(&input, Limits::default());
                prop_assert_eq!(err, None);
                prop_assert_eq!(whole.len(), specs.len());
                for (r, s) in whole.iter().zip(&specs) {
                    prop_assert_eq!(&r.path, &s.path);
                    prop_assert_eq!(&r.body[..], &s.body[..]);
                    prop_assert_eq!(r.chunked, s.chunked);
                }
                let (split, err) = frame_pieces(&input, &cuts, Limits::default());
                prop_assert_eq!(err, None);
                prop_assert_eq!(split, whole);
            }
        }

        #[test]
        fn byte_by_byte_gives_same_requests() {
            let specs = [
                Spec {
                    path: "/a".into(),
                    body: b"one".to_vec(),
                    chunked: false,
                    cuts: vec![],
                },
                Spec {
                    path: "/b".into(),
                    body: b"two-chunks".to_vec(),
                    chunked: true,
                    cuts: vec![3],
                },
                Spec {
                    path: "/c".into(),
                    body: Vec::new(),
                    chunked: false,
                    cuts: vec![],
                },
            ];
            let input: Vec<u8> = specs.iter().flat_map(encode).collect();
            let cuts: Vec<usize> = (0..input.len()).collect();
            let (split, err) = frame_pieces(&input, &cuts, Limits::default());
            assert_eq!(err, None);
            assert_eq!(split, frame_all(&input, Limits::default()).0);
            assert_eq!(
                split.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
                ["/a", "/b", "/c"]
            );
        }
    }
}
