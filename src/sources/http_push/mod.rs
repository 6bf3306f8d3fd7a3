//! The camera receiver: HTTP/1.1 for the HTTP-push sources (Viewtron today; Hikvision and Dahua
//! pushes later plug their handlers into the same server). Hand-written on purpose:
//! `docs/ARCHITECTURE.md` says why hyper does not fit.
//!
//! Cameras are not browsers: they send absolute-form request targets (`POST http://ip:port/API`),
//! headers without a space after the colon, chunked bodies that also carry `Content-Length: 0`,
//! any `Content-Type` and any method, and they keep one connection open for hours with
//! heartbeats up to 120 s apart. This module is written for them:
//!
//! - [`request`] (pure, no I/O): [`RequestFramer`], an incremental framer. Feed bytes, get
//!   [`Framed::NeedMore`], [`Framed::Head`] or [`Framed::Request`], or an [`HttpError`].
//! - [`response`] (pure): [`Response`] and its wire encoding.
//! - [`server`] (thin async shell): [`serve`] runs one task per connection, answers requests of a
//!   connection strictly in order, writes the reply as soon as the [`Handler`] returns, and
//!   enforces the limits of [`HttpConfig`].
//! - [`guard`] (pure): [`Guard`], the allow-list and HTTP Basic auth the server applies before
//!   the handler sees a request.
//! - [`tls`]: [`ServerTls`], the receiver's rustls (ring) configuration read once from PEM
//!   files. With it the server sniffs the first byte of each connection and serves HTTPS and,
//!   unless refused, plain HTTP on the same port.
//! - [`throttle`] (pure): [`LogThrottle`], which keeps a misconfigured camera's repeated
//!   warning to one line per peer per five minutes.

pub mod guard;
pub mod receiver;
pub mod request;
pub mod response;
pub mod server;
pub mod throttle;
pub mod tls;

pub use guard::{BasicAuth, Cidr, Denied, Guard};

pub use receiver::{PushHandler, SLOW_STORE, listen};
pub use request::{Framed, Limits, Request, RequestFramer, TlsSniff, sniff_tls};
pub use response::Response;
pub use server::{Handler, HttpConfig, Reply, serve};
pub use throttle::{LogThrottle, Notice};
pub use tls::{ServerTls, TlsError};

/// Why a request could not be framed (or was cut off).
///
/// Every variant means framing of the connection is lost: the server offers the handler a
/// chance to answer ([`Handler::on_error`]) and then closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The request line plus headers exceed the header byte limit (or chunked trailers do).
    #[error("header section larger than {limit} bytes")]
    HeaderTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// More header fields than allowed.
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The configured maximum number of header fields.
        limit: usize,
    },
    /// The body is (or is declared to be) larger than the body limit.
    #[error("body too large: {} {seen} bytes, limit {limit}", if *.declared { "declared" } else { "received at least" })]
    BodyTooLarge {
        /// `true` when `seen` is a `Content-Length` value, `false` when it counts decoded chunks.
        declared: bool,
        /// Declared length, or the decoded size reached when the limit was crossed.
        seen: u64,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The bytes are not a valid HTTP/1.x request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The header section did not arrive within the header timeout.
    #[error("header section not complete within the header timeout")]
    HeaderTimeout,
    /// The whole request did not arrive within the request timeout.
    #[error("request not complete within the request timeout")]
    BodyTimeout,
    /// The peer closed the connection in the middle of a request.
    #[error("connection closed in the middle of a request")]
    Incomplete,
    /// The bytes start with a TLS handshake record header (RFC 8446 §5.1, see
    /// [`request::sniff_tls`]) on a plain-HTTP connection: the client speaks HTTPS (a camera
    /// set to `https`). Nothing can be answered in HTTP: the server closes at once without a
    /// reply, whatever [`Handler::on_error`] returns.
    #[error("TLS handshake (ClientHello) on the plain-HTTP port: the client speaks HTTPS")]
    TlsOnPlainPort,
    /// A plain-HTTP request on a port that only serves HTTPS (TLS configured with plain HTTP
    /// refused, see [`ServerTls::plain_http`]). Produced by the server from the first byte of
    /// the connection, never by the framer; the server answers a fixed `400` whatever
    /// [`Handler::on_error`] returns.
    #[error("plain-HTTP request on the HTTPS-only port: the client speaks HTTP")]
    PlainHttpOnTlsPort,
}

impl HttpError {
    /// `true` for violations of a configured limit (size or time), which are logged at warn level.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            HttpError::HeaderTooLarge { .. }
                | HttpError::TooManyHeaders { .. }
                | HttpError::BodyTooLarge { .. }
                | HttpError::HeaderTimeout
                | HttpError::BodyTimeout
        )
    }
}
