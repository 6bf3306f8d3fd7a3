//! A source that lives only in the tests: a JSON webhook, to show the seam between sources and
//! the rest of the bridge. It is a folder of its own and plugs into the topology with one
//! line (`camqtt::topology::start_with(config, vec![Box::new(WebhookSource::new(addr))], ..)`);
//! nothing in `src/` knows it.
//!
//! Protocol (ours, for this test): `POST` any path with a JSON body
//! `{"mac": "02:00:5e:00:00:01", "name": "Porch", "category": "motion",
//!   "image": "<base64 JPEG>"}` (`name` and `image` optional). The reply is `200` with
//! `{"ok":true}` once the event is durable; a body that is not such JSON is reported on
//! `bridge/unparsed` (reason `bad-json`) and answered the same way; a request that cannot be
//! framed gets `400`.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::SystemTime;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;

use camqtt::event::{
    Attributes, Category, DeviceInfo, Event, Image, ImageRole, Message, Phase, TimeSource, Unparsed,
};
use camqtt::sources::http_push::{self, HttpConfig, PushHandler, Request, Response};
use camqtt::sources::{Source, SourceContext, Starting};
use camqtt::telemetry::Telemetry;

/// The source's name in events, logs and `bridge/unparsed`.
pub const NAME: &str = "webhook";
/// The manufacturer its devices get (the bridge names unnamed devices after it).
pub const MANUFACTURER: &str = "Webhook Test";

/// The webhook source: listens on `listen` with the shared camera receiver.
pub struct WebhookSource {
    listen: SocketAddr,
}

impl WebhookSource {
    /// A source listening on `listen` (port 0: any free port).
    pub fn new(listen: SocketAddr) -> WebhookSource {
        WebhookSource { listen }
    }
}

impl Source for WebhookSource {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(self: Box<Self>, ctx: SourceContext) -> Starting {
        Box::pin(http_push::listen(
            self.listen,
            HttpConfig::default(),
            WebhookHandler,
            ctx,
        ))
    }
}

/// The body of one post.
#[derive(Deserialize)]
struct Post {
    mac: String,
    #[serde(default)]
    name: Option<String>,
    category: String,
    #[serde(default)]
    image: Option<String>,
}

struct WebhookHandler;

impl PushHandler for WebhookHandler {
    fn source(&self) -> &'static str {
        NAME
    }

    fn observe(&self, req: &Request, received: SystemTime, telemetry: &Telemetry) -> Vec<Message> {
        match parse(&req.body, req.peer, received) {
            Ok(event) => vec![Message::Event(Box::new(event))],
            Err(detail) => {
                telemetry.unparsed.inc();
                vec![Message::Unparsed(Unparsed {
                    peer: req.peer.to_string(),
                    source: Cow::Borrowed(NAME),
                    reason: "bad-json".into(),
                    detail,
                    path: Some(req.path.clone()),
                    body: String::from_utf8_lossy(&req.body[..req.body.len().min(256)])
                        .into_owned(),
                    body_len: req.body.len(),
                })]
            }
        }
    }

    fn reply(&self) -> Response {
        json_reply(200, "OK", r#"{"ok":true}"#)
    }

    fn error_reply(&self) -> Option<Response> {
        Some(json_reply(400, "Bad Request", r#"{"ok":false}"#))
    }
}

fn json_reply(status: u16, reason: &'static str, body: &'static str) -> Response {
    Response {
        status,
        reason,
        headers: vec![("Content-Type", "application/json".into())],
        body: Bytes::from_static(body.as_bytes()),
    }
}

/// One post to a normalised event (pure).
fn parse(body: &[u8], peer: SocketAddr, received: SystemTime) -> Result<Event, String> {
    let post: Post = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let category = Category::from_name(&post.category)
        .ok_or_else(|| format!("unknown category `{}`", post.category))?;
    let mac = camqtt::event::normalise_mac(&post.mac)
        .ok_or_else(|| format!("`{}` is not a MAC address", post.mac))?;
    let images = match post.image {
        Some(b64) => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| format!("image: {e}"))?;
            vec![Image {
                role: ImageRole::Overview,
                data: Bytes::from(data),
                content_type: Cow::Borrowed("image/jpeg"),
                width: None,
                height: None,
                target_id: None,
            }]
        }
        None => Vec::new(),
    };
    Ok(Event {
        device: DeviceInfo {
            name: post.name,
            mac: Some(mac),
            peer: Some(peer.ip()),
            manufacturer: Some(MANUFACTURER.into()),
            ..DeviceInfo::default()
        },
        category,
        phase: Phase::Pulse,
        time: received,
        time_source: TimeSource::Receiver,
        time_raw: None,
        received,
        source: Cow::Borrowed(NAME),
        raw_type: post.category,
        envelope: None,
        config_version: None,
        attrs: Attributes::default(),
        images,
        warnings: Vec::new(),
        provenance: None,
        detection: None,
    })
}
