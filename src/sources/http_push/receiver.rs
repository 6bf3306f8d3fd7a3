//! The camera receiver's shell around a vendor's [`PushHandler`]: observe, make durable, reply.
//!
//! Every request (any path, any method) goes to the vendor's pure [`PushHandler::observe`]
//! (the parser takes well under a millisecond for a 500 KB post, so it runs on the connection's
//! task) and the resulting messages go to the pipeline; the vendor's reply is written once the
//! pipeline reports them durable (stored in the buffer in front of the sinks). So a post that
//! got its reply survives the bridge being killed right after. While the broker is slower than
//! the cameras the pipeline makes the send wait: the reply is held, which slows the camera
//! down instead of losing its event. There is no "reply anyway": a post that cannot be stored
//! (the bridge is stopping and the pipeline is gone) gets `503 Service Unavailable` and the
//! connection is closed, so the camera knows to send it again. Requests of one connection are
//! answered in order, so the per-connection order is kept.
//!
//! `GET /healthz` is answered here for every vendor (the bridge's health, see
//! [`crate::health`]); it never reaches the vendor.
//!
//! Framing errors are counted and published on `bridge/unparsed` with a short reason
//! (`bad-request`, `body-too-large`, ...) and answered with the vendor's reply for them. The
//! wrong protocol is named as such and never gets a success reply: a TLS handshake on the plain
//! receiver (`tls-on-plain-port`, a camera set to `https`; the server closes without a reply)
//! and plain HTTP on an HTTPS-only receiver (`plain-http-on-tls-port`; the server answers
//! `400`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{Handler, HttpConfig, HttpError, Reply, Request, Response};
use crate::event::{Message, Unparsed};
use crate::sources::{Input, SourceContext, SourceError, SourceHandle};
use crate::telemetry::Telemetry;

/// A post that waited this long to be stored is logged (the broker is slower than the
/// cameras; the camera's reply was held that long).
pub const SLOW_STORE: Duration = Duration::from_secs(5);

/// What a vendor plugs into the camera receiver: pure functions from a request to messages and
/// to the reply the vendor's devices expect.
pub trait PushHandler: Send + Sync + 'static {
    /// The source's name (`viewtron`), for `bridge/unparsed` and logs.
    fn source(&self) -> &'static str;
    /// Turn one request into messages (events, a heartbeat, or an unparsed report), logging
    /// and counting what it found. No I/O.
    fn observe(&self, req: &Request, received: SystemTime, telemetry: &Telemetry) -> Vec<Message>;
    /// The reply to every request once its messages are durable (only then: a success reply
    /// promises delivery).
    fn reply(&self) -> Response;
    /// The reply to a request that could not be framed (the connection is closed after it);
    /// never called for the wrong protocol.
    fn error_reply(&self) -> Option<Response>;
}

/// A [`Handler`] that runs `H` and waits for durability.
struct PushReceiver<H> {
    vendor: H,
    ctx: SourceContext,
    started: Instant,
}

impl<H: PushHandler> Handler for PushReceiver<H> {
    fn handle(&self, req: Request) -> Reply {
        if req.path == "/healthz" && req.method.eq_ignore_ascii_case("GET") {
            return Box::pin(std::future::ready(health(
                &self.ctx.telemetry,
                self.started,
            )));
        }
        let peer = req.peer;
        let arrived = Instant::now();
        let msgs = self
            .vendor
            .observe(&req, SystemTime::now(), &self.ctx.telemetry);
        drop(req);
        let (tx, telemetry) = (self.ctx.tx.clone(), self.ctx.telemetry.clone());
        let (reply, source) = (self.vendor.reply(), self.vendor.source());
        Box::pin(async move {
            let stored = durable(source, msgs, &tx, peer, &telemetry).await;
            telemetry.reply.record(arrived.elapsed());
            if stored { reply } else { not_stored() }
        })
    }

    fn on_error(&self, peer: SocketAddr, err: &HttpError) -> Option<Response> {
        // The wrong protocol: never a success reply (the server sends nothing to a TLS client
        // and a fixed 400 to plain HTTP on an HTTPS-only port anyway).
        let reply = match err {
            HttpError::TlsOnPlainPort | HttpError::PlainHttpOnTlsPort => None,
            _ => self.vendor.error_reply(),
        };
        // The HTTP server has already logged this occurrence; here it is counted and published.
        self.ctx.telemetry.unparsed.inc();
        let _ = self.ctx.tx.try_send(Input::new(
            self.vendor.source(),
            Message::Unparsed(Unparsed {
                peer: peer.ip().to_string(),
                source: self.vendor.source().into(),
                reason: error_reason(err).to_owned(),
                detail: err.to_string(),
                path: None,
                body: String::new(),
                body_len: 0,
            }),
        ));
        reply
    }
}

/// The reply to a post that could not be stored: not a success, and the server closes the
/// connection after it (any `5xx` does).
fn not_stored() -> Response {
    Response::new(
        503,
        "Service Unavailable",
        &b"camqtt is stopping; send again\n"[..],
    )
    .with_header("Content-Type", "text/plain")
    .with_header("Retry-After", "5")
}

/// Queue `msgs` for the pipeline and wait until the last one is durable, however long the
/// buffer holds the pipeline back. False when the pipeline went away first (shutdown): the
/// post was not stored and must not get a success reply.
async fn durable(
    source: &'static str,
    msgs: Vec<Message>,
    tx: &tokio::sync::mpsc::Sender<Input>,
    peer: SocketAddr,
    telemetry: &Telemetry,
) -> bool {
    let n = msgs.len();
    if n == 0 {
        return true;
    }
    let queued = Instant::now();
    let (done_tx, done_rx) = oneshot::channel();
    let mut done_tx = Some(done_tx);
    for (i, msg) in msgs.into_iter().enumerate() {
        let durable = if i + 1 == n { done_tx.take() } else { None };
        if tx
            .send(Input {
                source,
                msg,
                durable,
            })
            .await
            .is_err()
        {
            // Shutting down: the pipeline is gone.
            telemetry.dropped.inc();
            tracing::warn!(peer = %peer, "pipeline stopped; post not stored, camera told to send again");
            return false;
        }
    }
    match done_rx.await {
        Ok(()) => {
            let waited = queued.elapsed();
            if waited >= SLOW_STORE {
                tracing::info!(peer = %peer, waited_s = waited.as_secs(), "post stored after a long wait (MQTT slower than the cameras); reply held until now");
            }
            true
        }
        Err(_) => {
            telemetry.dropped.inc();
            tracing::warn!(peer = %peer, "pipeline stopped before the post was stored; camera told to send again");
            false
        }
    }
}

fn health(telemetry: &Telemetry, started: Instant) -> Response {
    let (status, body) = crate::health::report(telemetry, started.elapsed().as_secs());
    Response {
        status,
        reason: if status == 200 {
            "OK"
        } else {
            "Service Unavailable"
        },
        headers: vec![("Content-Type", "application/json".to_string())],
        body: Bytes::from(body.to_string()),
    }
}

/// Short and stable reasons for framing errors: these are published on `bridge/unparsed`.
pub fn error_reason(err: &HttpError) -> &'static str {
    match err {
        HttpError::HeaderTooLarge { .. } => "header-too-large",
        HttpError::TooManyHeaders { .. } => "too-many-headers",
        HttpError::BodyTooLarge { .. } => "body-too-large",
        HttpError::BadRequest(_) => "bad-request",
        HttpError::HeaderTimeout => "header-timeout",
        HttpError::BodyTimeout => "body-timeout",
        HttpError::Incomplete => "incomplete-request",
        HttpError::TlsOnPlainPort => "tls-on-plain-port",
        HttpError::PlainHttpOnTlsPort => "plain-http-on-tls-port",
    }
}

/// Bind `listen` and serve `vendor` on it with the camera receiver; returns once bound.
pub async fn listen<H: PushHandler>(
    listen: SocketAddr,
    http: HttpConfig,
    vendor: H,
    ctx: SourceContext,
) -> Result<SourceHandle, SourceError> {
    let name = vendor.source();
    let bound = async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        Ok::<_, std::io::Error>((listener, addr))
    };
    let (listener, addr) = bound.await.map_err(|error| SourceError::Listen {
        source_name: name,
        addr: listen,
        error,
    })?;
    let (tls, plain_http) = match &http.tls {
        Some(t) => (true, t.plain_http),
        None => (false, true),
    };
    let (telemetry, shutdown) = (ctx.telemetry.clone(), ctx.shutdown.clone());
    let handler = Arc::new(PushReceiver {
        vendor,
        ctx,
        started: Instant::now(),
    });
    let task = tokio::spawn(async move {
        tracing::info!(source = name, listen = %addr, tls, plain_http, "camera receiver listening");
        if let Err(error) = super::serve(listener, http, handler, telemetry, shutdown).await {
            tracing::error!(source = name, %error, "camera receiver stopped");
        }
    });
    Ok(SourceHandle {
        name,
        addr: Some(addr),
        task,
    })
}
