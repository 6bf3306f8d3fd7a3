//! The Viewtron HTTP shell: parse, make the post durable, reply.
//!
//! Every request (any path, any method) gets the exact success reply the cameras expect.
//! The body is parsed on the connection's task (the pure parser takes well under a
//! millisecond for a 500 KB post) and the resulting messages go to the pipeline; the reply
//! is written once the pipeline reports them durable (appended to the spool, or handed to
//! the sink without one). So a post that got its reply survives the bridge being killed
//! right after. The wait is bounded by [`DURABLE_WAIT`]: after that the camera gets its
//! reply anyway (logged), it must never be held up by a stuck disk. Requests of one
//! connection are answered in order, so the per-connection order is kept. Nothing a camera
//! sends can change the reply or close its connection, except a framing error the HTTP layer
//! cannot recover from.
//!
//! Framing errors are counted and published on `bridge/unparsed` with a short reason
//! (`bad-request`, `body-too-large`, ...). The wrong protocol is named as such and never gets
//! the success document: a TLS handshake on the plain receiver (`tls-on-plain-port`, a camera
//! set to `https`; the server closes without a reply) and plain HTTP on an HTTPS-only
//! receiver (`plain-http-on-tls-port`; the server answers `400`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::parse::{Post, PostMeta, parse_post};
use crate::event::{Message, Unparsed};
use crate::pipeline::Input;
use crate::sources::http_push::{Handler, HttpConfig, HttpError, Reply, Request, Response};
use crate::stats::stats;

/// The exact 126-byte body both vendor SDKs send and the devices expect.
pub const SUCCESS_REPLY: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><config version=\"1.0\" xmlns=\"http://www.ipc.com/ver10\"><status>success</status></config>";

/// Longest wait for a post to become durable before the camera gets its reply anyway.
pub const DURABLE_WAIT: Duration = Duration::from_secs(5);

/// Settings of the Viewtron source.
#[derive(Debug, Clone)]
pub struct ViewtronConfig {
    /// HTTP limits and timeouts.
    pub http: HttpConfig,
    /// Largest part of a body copied into `bridge/unparsed`.
    pub unparsed_body_cap: usize,
}

struct ViewtronHandler {
    out: mpsc::Sender<Input>,
    cap: usize,
    started: std::time::Instant,
}

fn success() -> Response {
    Response {
        status: 200,
        reason: "OK",
        headers: vec![("Content-Type", "application/xml".to_string())],
        body: Bytes::from_static(SUCCESS_REPLY),
    }
}

impl Handler for ViewtronHandler {
    fn handle(&self, req: Request) -> Reply {
        if req.path == "/healthz" && req.method.eq_ignore_ascii_case("GET") {
            let (status, body) = crate::health::report(stats(), self.started.elapsed().as_secs());
            let reason = if status == 200 {
                "OK"
            } else {
                "Service Unavailable"
            };
            return Box::pin(std::future::ready(Response {
                status,
                reason,
                headers: vec![("Content-Type", "application/json".to_string())],
                body: Bytes::from(body.to_string()),
            }));
        }
        let peer = req.peer;
        let msgs = handle_post(&req.body, peer, &req.path, SystemTime::now(), self.cap);
        let out = self.out.clone();
        Box::pin(async move {
            let (done_tx, done_rx) = oneshot::channel();
            let n = msgs.len();
            let mut done_tx = Some(done_tx);
            for (i, msg) in msgs.into_iter().enumerate() {
                let durable = if i + 1 == n { done_tx.take() } else { None };
                if out.send(Input { msg, durable }).await.is_err() {
                    // Shutting down: the pipeline is gone.
                    stats().dropped.inc();
                    tracing::warn!(peer = %peer, "pipeline stopped; post dropped");
                    return success();
                }
            }
            if n > 0 {
                match tokio::time::timeout(DURABLE_WAIT, done_rx).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        tracing::warn!(peer = %peer, "pipeline stopped before the post was stored")
                    }
                    Err(_) => {
                        tracing::warn!(peer = %peer, wait_s = DURABLE_WAIT.as_secs(), "post not stored in time; replying anyway")
                    }
                }
            }
            success()
        })
    }

    fn on_error(&self, peer: SocketAddr, err: &HttpError) -> Option<Response> {
        let reason = http_reason(err).to_string();
        // The wrong protocol: never the success document (the server sends nothing to a TLS
        // client and a fixed 400 to plain HTTP on an HTTPS-only port anyway).
        let reply = match err {
            HttpError::TlsOnPlainPort | HttpError::PlainHttpOnTlsPort => None,
            _ => Some(success()),
        };
        // The HTTP server has already logged this occurrence; here it is counted and published.
        stats().unparsed.inc();
        let _ = self.out.try_send(Input::from(Message::Unparsed(Unparsed {
            peer: peer.ip().to_string(),
            source: "viewtron",
            reason,
            detail: err.to_string(),
            path: None,
            body: String::new(),
            body_len: 0,
        })));
        reply
    }
}

fn http_reason(err: &HttpError) -> &'static str {
    // Short and stable: these are published on `bridge/unparsed`.
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

/// Bind the receiver; returns the bound address and the task that serves it.
pub async fn spawn(
    cfg: ViewtronConfig,
    listen: SocketAddr,
    out: mpsc::Sender<Input>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let handler = Arc::new(ViewtronHandler {
        out,
        cap: cfg.unparsed_body_cap,
        started: std::time::Instant::now(),
    });
    let http = cfg.http.clone();
    let (tls, plain_http) = match &http.tls {
        Some(t) => (true, t.plain_http),
        None => (false, true),
    };
    let task = tokio::spawn(async move {
        tracing::info!(listen = %addr, tls, plain_http, "viewtron receiver listening");
        if let Err(error) =
            crate::sources::http_push::serve(listener, http, handler, shutdown).await
        {
            tracing::error!(%error, "viewtron receiver stopped");
        }
    });
    Ok((addr, task))
}

/// Parse one post into pipeline messages, logging and counting what happened.
pub fn handle_post(
    body: &[u8],
    peer: SocketAddr,
    path: &str,
    received: SystemTime,
    cap: usize,
) -> Vec<Message> {
    let meta = PostMeta {
        peer: Some(peer.ip()),
        received,
    };
    match parse_post(body, &meta) {
        Ok(Post::Heartbeat(info)) => {
            stats().heartbeats.inc();
            tracing::debug!(peer = %peer, path, "heartbeat");
            vec![Message::Heartbeat(info)]
        }
        Ok(Post::Events(events)) if events.is_empty() => {
            vec![unparsed(body, peer, path, cap, "not-an-event", "document carries no event".into())]
        }
        Ok(Post::Events(events)) => events
            .into_iter()
            .map(|e| {
                stats().events.inc();
                stats().images.add(e.images.len() as u64);
                tracing::info!(
                    peer = %peer,
                    path,
                    category = %e.category,
                    kind = ?e.kind(),
                    raw_type = ?e.raw_type,
                    phase = ?e.phase,
                    images = e.images.len(),
                    plate = e.attrs.plates.first().map(|p| p.plate.as_str()).unwrap_or(""),
                    "event"
                );
                for w in &e.warnings {
                    stats().image_errors.inc();
                    tracing::warn!(peer = %peer, category = %e.category, warning = %w, "event kept with a problem");
                }
                Message::Event(Box::new(e))
            })
            .collect(),
        Err(err) => vec![unparsed(body, peer, path, cap, err.reason(), err.to_string())],
    }
}

fn unparsed(
    body: &[u8],
    peer: SocketAddr,
    path: &str,
    cap: usize,
    reason: &str,
    detail: String,
) -> Message {
    stats().unparsed.inc();
    tracing::warn!(peer = %peer, path, reason, detail = %detail, bytes = body.len(), "post did not become an event");
    let shown = &body[..body.len().min(cap)];
    Message::Unparsed(Unparsed {
        peer: peer.ip().to_string(),
        source: "viewtron",
        reason: reason.to_string(),
        detail,
        path: Some(path.chars().filter(|c| !c.is_control()).take(256).collect()),
        body: String::from_utf8_lossy(shown).into_owned(),
        body_len: body.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_the_exact_126_bytes() {
        assert_eq!(SUCCESS_REPLY.len(), 126);
        assert!(SUCCESS_REPLY.ends_with(b"</config>"));
    }

    #[test]
    fn garbage_becomes_unparsed_with_capped_body() {
        let peer: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let body = vec![b'x'; 10_000];
        let out = handle_post(&body, peer, "/API", SystemTime::now(), 100);
        let [Message::Unparsed(u)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(u.peer, "10.1.2.3");
        assert_eq!(u.body.len(), 100);
        assert_eq!(u.body_len, 10_000);
        assert_eq!(u.path.as_deref(), Some("/API"));
        assert!(!u.reason.is_empty());
    }

    #[test]
    fn empty_post_is_a_heartbeat() {
        let peer: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let out = handle_post(b"", peer, "/", SystemTime::now(), 100);
        assert!(matches!(out.as_slice(), [Message::Heartbeat(i)] if i.peer == Some(peer.ip())));
    }
}
