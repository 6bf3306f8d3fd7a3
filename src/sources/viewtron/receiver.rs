//! The Viewtron HTTP shell: reply at once, parse off the connection's critical path.
//!
//! Every request (any path, any method) gets the exact success reply the cameras expect; the
//! body goes on a queue to a worker that runs the pure parser and sends the results to the
//! pipeline. Nothing a camera sends can change the reply or close its connection, except a
//! framing error the HTTP layer cannot recover from.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::parse::{Post, PostMeta, parse_post};
use crate::event::{Message, Unparsed};
use crate::http::{Handler, HttpConfig, HttpError, Reply, Request, Response};
use crate::stats::stats;

/// The exact 126-byte body both vendor SDKs send and the devices expect.
pub const SUCCESS_REPLY: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><config version=\"1.0\" xmlns=\"http://www.ipc.com/ver10\"><status>success</status></config>";

/// Posts waiting for the parser; beyond this the newest post is dropped (and counted).
const QUEUE: usize = 4096;

/// Settings of the Viewtron source.
#[derive(Debug, Clone)]
pub struct ViewtronConfig {
    /// HTTP limits and timeouts.
    pub http: HttpConfig,
    /// Largest part of a body copied into `bridge/unparsed`.
    pub unparsed_body_cap: usize,
}

struct Job {
    peer: SocketAddr,
    path: String,
    body: Bytes,
    received: SystemTime,
}

struct ViewtronHandler {
    jobs: mpsc::Sender<Job>,
    out: mpsc::Sender<Message>,
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
        let job = Job {
            peer: req.peer,
            path: req.path,
            body: req.body,
            received: SystemTime::now(),
        };
        if let Err(e) = self.jobs.try_send(job) {
            let job = match e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
            };
            stats().dropped.inc();
            tracing::warn!(peer = %job.peer, path = %job.path, bytes = job.body.len(), "parser queue full; post dropped");
        }
        Box::pin(std::future::ready(success()))
    }

    fn on_error(&self, peer: SocketAddr, err: &HttpError) -> Option<Response> {
        let reason = http_reason(err).to_string();
        // The HTTP server has already logged this occurrence; here it is counted and published.
        stats().unparsed.inc();
        let _ = self.out.try_send(Message::Unparsed(Unparsed {
            peer: peer.ip().to_string(),
            source: "viewtron",
            reason,
            detail: err.to_string(),
            path: None,
            body: String::new(),
            body_len: 0,
        }));
        Some(success())
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
    }
}

/// Bind the receiver; returns the bound address and the task that serves it.
pub async fn spawn(
    cfg: ViewtronConfig,
    listen: SocketAddr,
    out: mpsc::Sender<Message>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (jobs_tx, jobs_rx) = mpsc::channel(QUEUE);
    let handler = Arc::new(ViewtronHandler {
        jobs: jobs_tx,
        out: out.clone(),
    });
    let worker = tokio::spawn(work(jobs_rx, out, cfg.unparsed_body_cap));
    let http = cfg.http.clone();
    let task = tokio::spawn(async move {
        tracing::info!(listen = %addr, "viewtron receiver listening");
        if let Err(error) = crate::http::serve(listener, http, handler, shutdown).await {
            tracing::error!(%error, "viewtron receiver stopped");
        }
        // The handler (and with it the job sender) is gone once serve returns; the worker
        // drains what is queued and ends.
        let _ = worker.await;
    });
    Ok((addr, task))
}

async fn work(mut jobs: mpsc::Receiver<Job>, out: mpsc::Sender<Message>, cap: usize) {
    while let Some(job) = jobs.recv().await {
        for msg in handle_post(&job.body, job.peer, &job.path, job.received, cap) {
            if out.send(msg).await.is_err() {
                return;
            }
        }
    }
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
                    raw_type = %e.raw_type,
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
