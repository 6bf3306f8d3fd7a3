//! The async shell: accept loop and one task per connection around [`RequestFramer`].
//!
//! Behaviour:
//! - Requests of one connection are handled strictly in order (pipelined ones too). The reply is
//!   written as soon as [`Handler::handle`] returns; the handler must only queue work.
//! - Timeouts: a new connection must send its first byte within
//!   [`HttpConfig::header_timeout`] (or `idle_timeout` if that is shorter), else it is closed
//!   quietly: a silent client holds a connection slot no longer than a slow one. Between
//!   requests, once a connection has completed one, it may stay idle for
//!   [`HttpConfig::idle_timeout`] (keep-alive cameras heartbeat up to 120 s apart; then it is
//!   closed quietly). From the first byte of a request, the header section must be complete
//!   within [`HttpConfig::header_timeout`] (slowloris) and the whole request within
//!   [`HttpConfig::request_timeout`]. Writing a reply is bounded by `request_timeout` too.
//! - Connection cap: at most [`HttpConfig::max_connections`] connections are served at once.
//!   At the cap the server **stops accepting** until a connection ends (one warn line per
//!   episode); new clients wait in the kernel's listen backlog instead of being refused, so a
//!   burst of short NVR connections is delayed rather than dropped.
//! - Framing errors (too large, malformed, timeouts): [`Handler::on_error`] is called; its
//!   response, if any, is sent with `Connection: close`, then the connection is closed after a
//!   short bounded drain of what the client is still sending (so the reply is not lost to a TCP
//!   reset). A body over the limit with a `Content-Length` is refused before it is read.
//! - Access ([`HttpConfig::guard`], off by default): a peer outside the allow-list gets a fixed
//!   `403 Forbidden` right after accept, without its request being read, and the connection is
//!   closed (counted in `forbidden`, one warn line). With Basic auth configured, each request's
//!   header section is checked as soon as it is complete: a request without valid credentials
//!   gets `401` + `WWW-Authenticate` and the connection is closed before its body is read
//!   (counted in `auth_failures`, one warn line with the peer and reason, never the password).
//!   The handler never sees refused requests; framing errors of a request that was not (yet)
//!   authenticated are answered with `401` and not passed to [`Handler::on_error`] either.
//! - Shutdown: when the token is cancelled the listener is closed, idle connections are closed,
//!   requests in flight finish (their replies carry `Connection: close`); connections still busy
//!   after [`HttpConfig::shutdown_grace`] are aborted.
//! - A TLS client on a plain-HTTP connection (the framer's [`HttpError::TlsOnPlainPort`]: a
//!   camera set to `https`): one warn line per peer per five minutes naming the cause and the
//!   fix (see [`super::throttle`]), counted in `tls_on_plain_port` (and `http_errors`), passed
//!   to [`Handler::on_error`] (unless auth is configured), and the connection is closed at once
//!   **without any reply**: HTTP means nothing to a client waiting for a ServerHello, and a
//!   `200` would look like success.
//! - HTTPS ([`HttpConfig::tls`], off by default): the first byte of each connection decides.
//!   `0x16` (a TLS handshake record, RFC 8446 §5.1) starts a TLS handshake, bounded by
//!   [`HttpConfig::header_timeout`]; then the same request loop runs over the TLS stream. Any
//!   other first byte is plain HTTP: served as usual when [`ServerTls::plain_http`] is set
//!   (one port for cameras set to either protocol), otherwise answered with a fixed `400`,
//!   counted in `plain_http_on_tls_port`, warned about once per peer per five minutes and
//!   passed to [`Handler::on_error`] as [`HttpError::PlainHttpOnTlsPort`]. A failed handshake
//!   (garbage, no common version or cipher suite, the client rejects the certificate,
//!   timeout) is counted in `tls_handshake_errors`, warned about once per peer per five
//!   minutes, and closes only that connection. The first byte is awaited for the new
//!   connection's timeout (above); a silent connection is closed quietly. A peer outside the
//!   allow-list gets the `403` when its first byte (awaited for at most 1 s) is plain HTTP, and
//!   a silent close otherwise.
//! - Framing errors that are the client's fault (a limit, a malformed request) are warned
//!   about once per peer per five minutes (the rest at debug level, with the count held back
//!   in the next warning); each is still counted in `http_errors` and passed to
//!   [`Handler::on_error`].

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::HttpError;
use super::guard::{Denied, Guard};
use super::request::{Framed, Limits, Request, RequestFramer, TLS_HANDSHAKE_RECORD};
use super::response::Response;
use super::throttle::{LogThrottle, Notice};
use super::tls::ServerTls;
use crate::telemetry::Telemetry;

/// Size of one socket read.
const READ_CHUNK: usize = 16 * 1024;
/// How long to keep reading (and discarding) after an error reply before closing.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much to read (and discard) after an error reply before closing.
const LINGER_BYTES: usize = 8 * 1024 * 1024;

/// Limits and timeouts of the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Largest request body in bytes (declared `Content-Length` or decoded chunked total).
    /// Default 16 MiB.
    pub body_limit: usize,
    /// Largest header section in bytes. Default 64 KiB.
    pub header_limit: usize,
    /// Largest number of header fields. Default 100.
    pub max_headers: usize,
    /// Time from the first byte of a request to the end of its headers; also how long a new
    /// connection may stay silent before its first byte (bounded by `idle_timeout` too).
    /// Default 30 s.
    pub header_timeout: Duration,
    /// Time from the first byte of a request to the end of its body; also bounds writing the
    /// reply. Default 60 s.
    pub request_timeout: Duration,
    /// Time a connection that has completed a request may sit idle before the next one.
    /// Default 300 s (cameras send heartbeats up to 120 s apart; this must stay above twice
    /// that).
    pub idle_timeout: Duration,
    /// Connections served at once; at the cap the server stops accepting. Default 512.
    pub max_connections: usize,
    /// After shutdown, how long requests in flight may take before their connections are
    /// aborted. Default 5 s.
    pub shutdown_grace: Duration,
    /// Allow-list and HTTP Basic auth. Default: open to everyone.
    pub guard: Guard,
    /// HTTPS on the same port (see the module documentation). Default: none, plain HTTP only.
    pub tls: Option<ServerTls>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            body_limit: 16 * 1024 * 1024,
            header_limit: 64 * 1024,
            max_headers: 100,
            header_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            max_connections: 512,
            shutdown_grace: Duration::from_secs(5),
            guard: Guard::default(),
            tls: None,
        }
    }
}

impl HttpConfig {
    /// How long a new connection may stay silent before its first byte:
    /// [`HttpConfig::header_timeout`], or [`HttpConfig::idle_timeout`] when that is shorter.
    pub fn first_byte_timeout(&self) -> Duration {
        self.header_timeout.min(self.idle_timeout)
    }

    /// The framer limits of this configuration.
    pub fn limits(&self) -> Limits {
        Limits {
            body_limit: self.body_limit,
            header_limit: self.header_limit,
            max_headers: self.max_headers,
        }
    }
}

/// The response to one request, possibly after a short wait (e.g. until the request is
/// durable).
pub type Reply = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// What the server calls for each request. Implementations must be cheap and never block.
pub trait Handler: Send + Sync + 'static {
    /// Called for every complete request. Must be fast: hand slow work to a queue. The
    /// response is written as soon as the returned future resolves; requests of one
    /// connection are handled strictly in order.
    fn handle(&self, req: Request) -> Reply;

    /// Called when a request could not be framed (too large, malformed, timeout, peer gone).
    /// Returns the response to send, if the connection can still take one (e.g. body too
    /// large: reply then close). The server closes the connection afterwards; the response is
    /// not sent for [`HttpError::Incomplete`] (the peer is gone), nor for the wrong protocol:
    /// nothing is sent to a TLS client on a plain port ([`HttpError::TlsOnPlainPort`]) and a
    /// fixed `400` to plain HTTP on an HTTPS-only port ([`HttpError::PlainHttpOnTlsPort`]).
    fn on_error(&self, peer: SocketAddr, err: &HttpError) -> Option<Response>;
}

/// What the connection tasks of one listener share.
struct Shared {
    cfg: HttpConfig,
    telemetry: Telemetry,
    /// One warn line per peer per window for repeated protocol mix-ups.
    notices: Mutex<LogThrottle>,
}

impl Shared {
    /// Log this occurrence of `notice` from `peer`? `Some(n)`: yes, `n` held back since the
    /// last line. A poisoned lock (a panic elsewhere) errs on the side of logging.
    fn notice(&self, notice: Notice, peer: std::net::IpAddr) -> Option<u64> {
        match self.notices.lock() {
            Ok(mut t) => t.check(notice, peer, std::time::Instant::now()),
            Err(_) => Some(0),
        }
    }
}

/// Serve HTTP/1.x (and HTTPS when [`HttpConfig::tls`] is set) on `listener` until `shutdown`
/// is cancelled and in-flight requests are done.
///
/// Accept errors (e.g. out of file descriptors) are logged and retried after a short pause;
/// they do not end the server. Nothing a client sends (garbage, TLS on a plain port, a failed
/// handshake) affects another connection.
pub async fn serve(
    listener: TcpListener,
    cfg: HttpConfig,
    handler: Arc<dyn Handler>,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        cfg,
        telemetry,
        notices: Mutex::new(LogThrottle::default()),
    });
    let local = listener.local_addr().ok();
    let mut tasks: JoinSet<()> = JoinSet::new();
    accept_until_shutdown(&listener, &shared, &handler, &shutdown, &mut tasks).await;
    drop(listener);
    drain(&mut tasks, shared.cfg.shutdown_grace).await;
    debug!(
        addr = local.map(tracing::field::display),
        "HTTP server stopped."
    );
    Ok(())
}

/// The accept loop: one task per connection in `tasks`, at most
/// [`HttpConfig::max_connections`] at once (at the cap nothing is accepted), until `shutdown`.
async fn accept_until_shutdown(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    handler: &Arc<dyn Handler>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    let cfg = &shared.cfg;
    let slots = Arc::new(Semaphore::new(
        cfg.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut at_cap = false;
    let local = listener.local_addr().ok();
    loop {
        if slots.available_permits() == 0 && !at_cap {
            at_cap = true;
            warn!(
                addr = local.map(tracing::field::display),
                max_connections = cfg.max_connections,
                "HTTP connection limit reached, not accepting until a connection ends."
            );
        }
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            Some(res) = tasks.join_next() => { report_task(res); continue }
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return, // semaphore closed: cannot happen, we never close it
            },
        };
        at_cap = false;
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            Some(res) = tasks.join_next() => { report_task(res); continue }
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    warn!(addr = local.map(tracing::field::display), %error, "HTTP accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        shared.telemetry.connections.inc();
        debug!(%peer, "HTTP connection accepted.");
        let (shared, handler, shutdown) = (shared.clone(), handler.clone(), shutdown.clone());
        tasks.spawn(async move {
            accepted(stream, peer, &shared, handler.as_ref(), &shutdown).await;
            drop(permit);
        });
    }
}

/// After shutdown: let the connections finish their requests for at most `grace`, then abort
/// the rest.
async fn drain(tasks: &mut JoinSet<()>, grace: Duration) {
    let grace = tokio::time::sleep(grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            res = tasks.join_next() => match res {
                Some(res) => report_task(res),
                None => return,
            },
            () = &mut grace => {
                warn!(busy = tasks.len(), "HTTP shutdown grace elapsed, aborting connections.");
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                return;
            }
        }
    }
}

fn report_task(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res
        && e.is_panic()
    {
        error!(error = %e, "HTTP connection task panicked.");
    }
}

/// A new connection: apply the allow-list, and with TLS configured sniff the first byte to
/// choose between a TLS handshake and plain HTTP.
async fn accepted(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    handler: &dyn Handler,
    shutdown: &CancellationToken,
) {
    let cfg = &shared.cfg;
    // Replies are small and must leave at once.
    let _ = stream.set_nodelay(true);
    let allowed = cfg.guard.allows_peer(peer.ip());
    let Some(tls) = &cfg.tls else {
        if allowed {
            connection(stream, peer, shared, handler, shutdown).await;
        } else {
            refuse_peer(stream, peer, true, &shared.telemetry).await;
        }
        return;
    };
    // A new connection must speak soon (like a request's headers); a refused peer is not
    // waited for long.
    let wait = if allowed {
        cfg.first_byte_timeout()
    } else {
        REFUSE_LINGER_TIME
    };
    let first = tokio::select! {
        biased;
        () = shutdown.cancelled() => {
            debug!(%peer, "HTTP connection closed for shutdown.");
            return;
        }
        r = tokio::time::timeout(wait, first_byte(&stream)) => r,
    };
    let first = match first {
        Ok(Ok(Some(b))) => Some(b),
        Ok(Ok(None)) => {
            debug!(%peer, "HTTP connection closed by peer.");
            return;
        }
        Ok(Err(error)) => {
            debug!(%peer, %error, "HTTP connection I/O error.");
            return;
        }
        Err(_elapsed) => None,
    };
    if !allowed {
        // A TLS client (or a silent one) cannot read a plain `403`: it is just closed.
        let plain = first.is_some_and(|b| b != TLS_HANDSHAKE_RECORD);
        refuse_peer(stream, peer, plain, &shared.telemetry).await;
        return;
    }
    match first {
        None => {
            debug!(%peer, timeout_s = wait.as_secs_f64(), "HTTP connection silent, closing.");
        }
        Some(TLS_HANDSHAKE_RECORD) => {
            serve_tls(stream, tls, peer, shared, handler, shutdown).await;
        }
        Some(_) if tls.plain_http => connection(stream, peer, shared, handler, shutdown).await,
        Some(_) => refuse_plain_http(stream, peer, shared, handler).await,
    }
}

/// A connection that opened with a TLS handshake record: the handshake (bounded by
/// [`HttpConfig::header_timeout`]), then the request loop over the TLS stream.
async fn serve_tls(
    stream: TcpStream,
    tls: &ServerTls,
    peer: SocketAddr,
    shared: &Shared,
    handler: &dyn Handler,
    shutdown: &CancellationToken,
) {
    let timeout = shared.cfg.header_timeout;
    match tokio::time::timeout(timeout, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => {
            shared.telemetry.tls_connections.inc();
            debug!(%peer, "TLS handshake complete.");
            connection(stream, peer, shared, handler, shutdown).await;
        }
        Ok(Err(error)) => tls_handshake_failed(shared, peer, &error),
        Err(_elapsed) => tls_handshake_failed(
            shared,
            peer,
            &format_args!(
                "handshake not complete within the header timeout ({} s)",
                timeout.as_secs_f64()
            ),
        ),
    }
}

/// The first byte the peer sent, without consuming it; `None` at EOF.
async fn first_byte(stream: &TcpStream) -> std::io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    Ok((stream.peek(&mut b).await? == 1).then_some(b[0]))
}

/// Say that `peer` made the protocol mistake `notice`: a warning the first time in a while
/// (with how many were suppressed since, see [`LogThrottle`]), a debug line otherwise.
fn mistake(
    shared: &Shared,
    notice: Notice,
    peer: SocketAddr,
    error: Option<&dyn std::fmt::Display>,
    warning: impl FnOnce(IpAddr) -> String,
) {
    let ip = peer.ip().to_canonical();
    let reason = match notice {
        Notice::TlsOnPlainPort => "tls-on-plain-port",
        Notice::TlsHandshakeFailed => "tls-handshake-failed",
        Notice::PlainHttpOnTlsPort => "plain-http-on-tls-port",
        Notice::RequestRefused => "request-refused",
    };
    let error = error.map(tracing::field::display);
    match shared.notice(notice, ip) {
        Some(suppressed) => warn!(peer = %ip, reason, error, suppressed, "{}", warning(ip)),
        None => debug!(peer = %ip, reason, error, "again from peer {ip} (warned recently)"),
    }
}

/// A TLS handshake on a plain-HTTP connection: count, warn (throttled). The caller closes.
fn tls_on_plain_port(shared: &Shared, peer: SocketAddr) {
    shared.telemetry.http_errors.inc();
    shared.telemetry.tls_on_plain_port.inc();
    mistake(shared, Notice::TlsOnPlainPort, peer, None, |ip| {
        format!(
            "peer {ip} is speaking TLS/HTTPS to the plain-HTTP receiver: set the camera's HTTP POST protocol to http, or configure [viewtron.tls]"
        )
    });
}

/// A failed TLS handshake: count, warn (throttled). The caller closes.
fn tls_handshake_failed(shared: &Shared, peer: SocketAddr, error: &dyn std::fmt::Display) {
    shared.telemetry.tls_handshake_errors.inc();
    mistake(
        shared,
        Notice::TlsHandshakeFailed,
        peer,
        Some(error),
        |ip| {
            format!(
                "TLS handshake with peer {ip} failed: the camera must trust the receiver's certificate (import its CA) and speak TLS 1.2 or 1.3"
            )
        },
    );
}

/// Fixed reply to plain HTTP on an HTTPS-only port.
fn https_only() -> Response {
    Response::new(
        400,
        "Bad Request",
        &b"this port speaks HTTPS only: post to https://\n"[..],
    )
    .with_header("Content-Type", "text/plain")
}

/// Plain HTTP on an HTTPS-only port: count, warn (throttled), tell the handler, fixed `400`,
/// close. Nothing of the request is framed.
async fn refuse_plain_http(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    handler: &dyn Handler,
) {
    shared.telemetry.http_errors.inc();
    shared.telemetry.plain_http_on_tls_port.inc();
    mistake(shared, Notice::PlainHttpOnTlsPort, peer, None, |ip| {
        format!(
            "peer {ip} is speaking plain HTTP to the HTTPS-only receiver: set the camera's HTTP POST protocol to https, or set plain_http = true in [viewtron.tls]"
        )
    });
    if shared.cfg.guard.auth.is_none() {
        // Published by the handler; its reply is not used.
        let _ = handler.on_error(peer, &HttpError::PlainHttpOnTlsPort);
    }
    refuse_with(&mut stream, &https_only()).await;
}

/// How a connection ended.
enum End {
    /// Peer closed between requests.
    PeerClosed,
    /// We close after a reply (`Connection: close`, HTTP/1.0, shutdown).
    Close,
    /// Nothing received for this long while waiting for a request: the idle timeout between
    /// requests, or the first-byte timeout of a new connection.
    Idle(Duration),
    /// Shutdown while idle.
    Shutdown,
    /// Socket error.
    Io(std::io::Error),
    /// Framing lost.
    Error(HttpError),
    /// Refused by the guard (credentials).
    Denied(Denied),
}

/// The request loop of one connection, over plain TCP or TLS alike.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    shared: &Shared,
    handler: &dyn Handler,
    shutdown: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Connection::new(stream, peer, shared);
    let end = loop {
        let req = match conn.read_request(shutdown).await {
            Ok(req) => req,
            Err(end) => break end,
        };
        shared.telemetry.http_requests.inc();
        if let Err(end) = conn.respond(req, handler, shutdown).await {
            break end;
        }
    };
    conn.close(end, handler).await;
}

/// One connection being served: its stream, its framer and the clocks of the current request.
struct Connection<'a, S> {
    stream: S,
    peer: SocketAddr,
    shared: &'a Shared,
    framer: RequestFramer,
    /// When the first byte of the current request arrived.
    started: Option<Instant>,
    /// The current request's header section passed the guard.
    authed: bool,
    /// A request of this connection has been framed: from now on the wait for the next one is
    /// the idle timeout, before it the (shorter) first-byte timeout.
    served: bool,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Connection<'a, S> {
    fn new(stream: S, peer: SocketAddr, shared: &'a Shared) -> Self {
        Connection {
            stream,
            peer,
            shared,
            framer: RequestFramer::new(shared.cfg.limits(), peer),
            started: None,
            authed: false,
            served: false,
        }
    }

    /// Read until the next request is complete. Its header section is checked against the
    /// guard as soon as it is in, and a `100 Continue` sent when the client waits for one.
    /// `Err` says how the connection ends instead.
    async fn read_request(&mut self, shutdown: &CancellationToken) -> Result<Request, End> {
        let mut pending_continue = false;
        loop {
            match self.framer.poll() {
                Ok(Framed::Head { expect_continue }) => {
                    let headers = self.framer.pending_headers().unwrap_or_default();
                    self.shared
                        .cfg
                        .guard
                        .check_auth(headers)
                        .map_err(End::Denied)?;
                    self.authed = true;
                    pending_continue = expect_continue;
                    continue;
                }
                Ok(Framed::Request(req)) => {
                    self.authed = false;
                    self.started = None;
                    self.served = true;
                    return Ok(req);
                }
                Ok(Framed::NeedMore) => {}
                Err(e) => return Err(End::Error(e)),
            }
            if pending_continue {
                pending_continue = false;
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .map_err(End::Io)?;
            }
            self.read_more(shutdown).await?;
        }
    }

    /// One socket read into the framer, bounded by the deadline that applies now: between
    /// requests (where shutdown also ends the wait) the idle timeout, or the first-byte timeout
    /// before the connection's first request; otherwise the header or request timeout counted
    /// from the request's first byte.
    async fn read_more(&mut self, shutdown: &CancellationToken) -> Result<(), End> {
        let idle = self.framer.is_idle();
        let (deadline, on_timeout) = self.deadline(idle);
        let read = tokio::select! {
            biased;
            () = shutdown.cancelled(), if idle => return Err(End::Shutdown),
            r = tokio::time::timeout_at(deadline, self.stream.read_buf(self.framer.read_buffer())) => r,
        };
        // A TLS peer that closes without close_notify is, for HTTP, a peer that closed.
        let read = match read {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(Ok(0)),
            other => other,
        };
        match read {
            Err(_elapsed) => {
                Err(on_timeout.map_or_else(|| End::Idle(self.wait_idle()), End::Error))
            }
            Ok(Ok(0)) if idle => Err(End::PeerClosed),
            Ok(Ok(0)) => Err(End::Error(HttpError::Incomplete)),
            Ok(Ok(_)) => {
                if self.started.is_none() && !self.framer.is_idle() {
                    self.started = Some(Instant::now());
                }
                Ok(())
            }
            Ok(Err(e)) => Err(End::Io(e)),
        }
    }

    /// How long to wait for the next request's first byte: the idle timeout once a request
    /// was served (keep-alive), the first-byte timeout on a new connection.
    fn wait_idle(&self) -> Duration {
        let cfg = &self.shared.cfg;
        if self.served {
            cfg.idle_timeout
        } else {
            cfg.first_byte_timeout()
        }
    }

    /// When the next read must be done, and the error if it is not (`None`: idle, a quiet
    /// close). Starts the request clock if a request has begun.
    fn deadline(&mut self, idle: bool) -> (Instant, Option<HttpError>) {
        let now = Instant::now();
        if idle {
            return (now + self.wait_idle(), None);
        }
        let cfg = &self.shared.cfg;
        let start = *self.started.get_or_insert(now);
        let whole = start + cfg.request_timeout;
        let head = start + cfg.header_timeout;
        if !self.framer.in_body() && head < whole {
            (head, Some(HttpError::HeaderTimeout))
        } else {
            (whole, Some(HttpError::BodyTimeout))
        }
    }

    /// Hand `req` to the handler and write its reply. `Err(End::Close)` when the connection
    /// ends with this reply (the client asked, HTTP/1.0, or shutdown).
    async fn respond(
        &mut self,
        req: Request,
        handler: &dyn Handler,
        shutdown: &CancellationToken,
    ) -> Result<(), End> {
        let keep_alive = req.keep_alive;
        let head_only = req.method.eq_ignore_ascii_case("HEAD");
        let reply = handler.handle(req).await;
        // A server error (the post could not be stored) ends the connection too.
        let close = !keep_alive || shutdown.is_cancelled() || reply.status >= 500;
        let reply = reply.encode(close, head_only);
        self.write(&reply).await.map_err(End::Io)?;
        if close { Err(End::Close) } else { Ok(()) }
    }

    /// Write and flush `bytes`, bounded by the request timeout.
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        write_all(&mut self.stream, bytes, self.shared.cfg.request_timeout).await
    }

    /// Write a final `reply`, then close our side and linger; the write's error, if any.
    async fn reply_and_close(&mut self, reply: &Response) -> std::io::Result<()> {
        self.write(&reply.encode(true, false)).await?;
        self.shutdown_and_linger().await;
        Ok(())
    }

    /// Close our side, then drain what the client still sends (bounded).
    async fn shutdown_and_linger(&mut self) {
        let _ = self.stream.shutdown().await;
        linger(&mut self.stream).await;
    }

    /// End the connection as `end` says: log, count, and send the last reply if one is due.
    async fn close(mut self, end: End, handler: &dyn Handler) {
        let peer = self.peer;
        match end {
            End::PeerClosed => debug!(%peer, "HTTP connection closed by peer."),
            End::Close => {
                debug!(%peer, "HTTP connection closed after reply.");
                let _ = self.stream.shutdown().await;
                if self.framer.buffered() > 0 {
                    linger(&mut self.stream).await;
                }
            }
            End::Idle(timeout) => {
                let timeout_s = timeout.as_secs_f64();
                if self.served {
                    debug!(%peer, timeout_s, "HTTP connection idle, closing.");
                } else {
                    debug!(%peer, timeout_s, "HTTP connection silent, closing.");
                }
                let _ = self.stream.shutdown().await;
            }
            End::Shutdown => {
                debug!(%peer, "HTTP connection closed for shutdown.");
                let _ = self.stream.shutdown().await;
            }
            End::Io(error) => debug!(%peer, %error, "HTTP connection I/O error."),
            End::Denied(denied) => self.refuse(denied).await,
            End::Error(HttpError::TlsOnPlainPort) => {
                tls_on_plain_port(self.shared, peer);
                if self.shared.cfg.guard.auth.is_none() {
                    // Published by the handler; its reply is not used.
                    let _ = handler.on_error(peer, &HttpError::TlsOnPlainPort);
                }
                // Closed at once, without a reply or a linger: the client waits for a
                // ServerHello and would otherwise hold the connection until it times out.
                debug!(%peer, "HTTP connection closed: TLS on the plain-HTTP port.");
            }
            End::Error(error) if self.shared.cfg.guard.auth.is_some() && !self.authed => {
                self.unauthenticated_error(error).await;
            }
            End::Error(error) => self.framing_error(error, handler).await,
        }
    }

    /// Credentials missing or wrong: count, warn, `401`/`403` and close.
    async fn refuse(&mut self, denied: Denied) {
        let peer = self.peer;
        self.shared.telemetry.auth_failures.inc();
        warn!(%peer, reason = denied.reason(), status = denied.status(), "HTTP request refused: not authenticated.");
        if let Err(error) = self.reply_and_close(&denied.response()).await {
            debug!(%peer, %error, "HTTP refusal not written.");
        }
    }

    /// A framing error before the request was authenticated: the handler does not see it; the
    /// client gets a `401` (unless it is gone).
    async fn unauthenticated_error(&mut self, error: HttpError) {
        self.shared.telemetry.http_errors.inc();
        debug!(peer = %self.peer, %error, "HTTP request failed before authentication.");
        if error == HttpError::Incomplete {
            return;
        }
        let _ = self.reply_and_close(&super::guard::unauthorized()).await;
    }

    /// A framing error: count, log, let the handler publish it and choose the reply (sent
    /// unless the client is gone), then close.
    async fn framing_error(&mut self, error: HttpError, handler: &dyn Handler) {
        let peer = self.peer;
        self.shared.telemetry.http_errors.inc();
        if error.is_limit() || matches!(error, HttpError::BadRequest(_)) {
            // Throttled per peer: a flood of garbage is one line per peer per window; every
            // occurrence is still counted (above) and published by the handler (below).
            mistake(
                self.shared,
                Notice::RequestRefused,
                peer,
                Some(&error),
                |_| "HTTP request refused, closing connection.".to_string(),
            );
        } else {
            debug!(%peer, %error, "HTTP request cut off.");
        }
        let reply = handler.on_error(peer, &error);
        if error == HttpError::Incomplete {
            return;
        }
        match reply {
            Some(reply) => {
                if let Err(error) = self.reply_and_close(&reply).await {
                    debug!(%peer, %error, "HTTP error reply not written.");
                }
            }
            None => self.shutdown_and_linger().await,
        }
    }
}

/// Write and flush `bytes` within `limit` (a TLS stream holds written data in its session
/// until flushed).
async fn write_all<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    limit: Duration,
) -> std::io::Result<()> {
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write timed out",
        )),
    }
}

/// How long a refused (not allow-listed) peer's leftovers are discarded before closing.
const REFUSE_LINGER_TIME: Duration = Duration::from_secs(1);
/// How much of a refused peer's leftovers is discarded before closing.
const REFUSE_LINGER_BYTES: usize = 64 * 1024;

/// A peer outside the allow-list: fixed `403` (`reply`; otherwise just closed), nothing it
/// sends is framed or parsed.
async fn refuse_peer(mut stream: TcpStream, peer: SocketAddr, reply: bool, telemetry: &Telemetry) {
    telemetry.forbidden.inc();
    if !reply {
        warn!(%peer, reason = Denied::NotAllowed.reason(), "HTTP connection refused: peer not in allow-list (closed without a reply).");
        return;
    }
    warn!(%peer, reason = Denied::NotAllowed.reason(), status = 403, "HTTP connection refused: peer not in allow-list.");
    refuse_with(&mut stream, &Denied::NotAllowed.response()).await;
}

/// Send a refusing `reply` (with `Connection: close`) to a connection that is not served,
/// close our side, and read off what the client still sends (bounded by
/// [`REFUSE_LINGER_TIME`] and [`REFUSE_LINGER_BYTES`]).
async fn refuse_with<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, reply: &Response) {
    let reply = reply.encode(true, false);
    if write_all(stream, &reply, REFUSE_LINGER_TIME).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    discard(stream, REFUSE_LINGER_TIME, REFUSE_LINGER_BYTES).await;
}

/// After our FIN, read and discard what the client still sends (bounded), so that closing with
/// unread data does not reset the connection before the client has read our reply.
async fn linger<S: AsyncRead + Unpin>(stream: &mut S) {
    discard(stream, LINGER_TIME, LINGER_BYTES).await;
}

/// Read and drop at most `max_bytes` for at most `max_time`, until EOF or an error.
async fn discard<S: AsyncRead + Unpin>(stream: &mut S, max_time: Duration, max_bytes: usize) {
    let mut sink = vec![0u8; READ_CHUNK];
    let mut total = 0usize;
    let _ = tokio::time::timeout(max_time, async {
        while total < max_bytes {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}
