//! The Viewtron vendor part of the camera receiver: a post's bytes to messages, and the reply.
//!
//! Every request (any path, any method) gets the exact success reply the cameras expect, also
//! a malformed one (DESIGN §5); the shared receiver ([`crate::sources::http_push`]) sends it
//! once the post's messages are durable.

use std::net::SocketAddr;
use std::time::SystemTime;

use bytes::Bytes;

use super::parse::{Post, PostMeta, parse_post};
use crate::event::{Message, Provenance, Unparsed, Via};
use crate::sources::http_push::{PushHandler, Request, Response};
use crate::telemetry::Telemetry;

/// The exact 126-byte body both vendor SDKs send and the devices expect.
pub const SUCCESS_REPLY: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><config version=\"1.0\" xmlns=\"http://www.ipc.com/ver10\"><status>success</status></config>";

/// The source's name in events, `bridge/unparsed` and logs.
pub const SOURCE: &str = "viewtron";

/// The Viewtron [`PushHandler`].
#[derive(Debug, Clone)]
pub struct ViewtronHandler {
    /// Largest part of a body copied into `bridge/unparsed`, bytes.
    pub unparsed_body_cap: usize,
}

fn success() -> Response {
    Response {
        status: 200,
        reason: "OK",
        headers: vec![("Content-Type", "application/xml".to_string())],
        body: Bytes::from_static(SUCCESS_REPLY),
    }
}

impl PushHandler for ViewtronHandler {
    fn source(&self) -> &'static str {
        SOURCE
    }

    fn observe(&self, req: &Request, received: SystemTime, telemetry: &Telemetry) -> Vec<Message> {
        handle_post(
            &req.body,
            req.peer,
            &req.path,
            received,
            self.unparsed_body_cap,
            telemetry,
        )
    }

    fn reply(&self) -> Response {
        success()
    }

    fn error_reply(&self) -> Option<Response> {
        Some(success())
    }
}

/// Parse one post into pipeline messages, logging and counting what happened.
pub fn handle_post(
    body: &[u8],
    peer: SocketAddr,
    path: &str,
    received: SystemTime,
    cap: usize,
    telemetry: &Telemetry,
) -> Vec<Message> {
    let meta = PostMeta {
        peer: Some(peer.ip()),
        received,
    };
    let unparsed = |reason: &str, detail: String| {
        telemetry.unparsed.inc();
        tracing::warn!(peer = %peer, path, reason, detail = %detail, bytes = body.len(), "post did not become an event");
        let shown = &body[..body.len().min(cap)];
        Message::Unparsed(Unparsed {
            peer: peer.ip().to_string(),
            source: SOURCE.into(),
            reason: reason.to_string(),
            detail,
            path: Some(path.chars().filter(|c| !c.is_control()).take(256).collect()),
            body: String::from_utf8_lossy(shown).into_owned(),
            body_len: body.len(),
        })
    };
    match parse_post(body, &meta) {
        Ok(Post::Heartbeat(info)) => {
            telemetry.heartbeats.inc();
            tracing::debug!(peer = %peer, path, "heartbeat");
            vec![Message::Heartbeat(*info)]
        }
        Ok(Post::Events(events)) if events.is_empty() => {
            vec![unparsed("not-an-event", "document carries no event".into())]
        }
        Ok(Post::Events(events)) => events
            .into_iter()
            .map(|mut e| {
                e.provenance = Some(Provenance {
                    via: Via::Push,
                    name: None,
                    path: Some(path.chars().filter(|c| !c.is_control()).take(256).collect()),
                    file: None,
                });
                telemetry.events.inc();
                telemetry.images.add(e.images.len() as u64);
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
                    telemetry.image_errors.inc();
                    tracing::warn!(peer = %peer, category = %e.category, warning = %w, "event kept with a problem");
                }
                Message::Event(Box::new(e))
            })
            .collect(),
        Err(err) => vec![unparsed(err.reason(), err.to_string())],
    }
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
        let t = Telemetry::new();
        let peer: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let body = vec![b'x'; 10_000];
        let out = handle_post(&body, peer, "/API", SystemTime::now(), 100, &t);
        let [Message::Unparsed(u)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(u.peer, "10.1.2.3");
        assert_eq!(u.body.len(), 100);
        assert_eq!(u.body_len, 10_000);
        assert_eq!(u.path.as_deref(), Some("/API"));
        assert!(!u.reason.is_empty());
        assert_eq!(t.unparsed.get(), 1);
    }

    #[test]
    fn empty_post_is_a_heartbeat() {
        let t = Telemetry::new();
        let peer: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let out = handle_post(b"", peer, "/", SystemTime::now(), 100, &t);
        assert!(matches!(out.as_slice(), [Message::Heartbeat(i)] if i.peer == Some(peer.ip())));
        assert_eq!(t.heartbeats.get(), 1);
    }
}
