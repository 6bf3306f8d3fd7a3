//! The bridge's own web port (`[web]`, axum; separate from the camera receiver, whose framer
//! is ours for the cameras' sake, see `docs/ARCHITECTURE.md`):
//!
//! | path | what |
//! |---|---|
//! | `/` | the page: devices, their newest pictures, a live timeline (server-sent events) |
//! | `/api/devices` | JSON: every device ([`live::DeviceSummary`]) |
//! | `/api/events?device=&category=&since=&until=&limit=` | JSON: events, newest first (the archive's event log, or the last [`live::RECENT_EVENTS`] without an archive) |
//! | `/api/stream` | `text/event-stream`: `hello`, then `device`, `event`, `removed`, `resync` |
//! | `/api/devices/<id>/latest.jpg`, `/api/devices/<id>/categories/<category>/latest.jpg` | the newest picture |
//! | `/archive/<path>` | an archive file by its path ([`crate::sinks::archive::resolve`]) |
//! | `/metrics` | Prometheus text exposition ([`crate::telemetry`]) |
//! | `/healthz` | the bridge's health ([`crate::health::report`]); never needs credentials |
//!
//! Every link the page and the API give is relative, so the page works under a path prefix:
//! behind Home Assistant ingress (`X-Ingress-Path`, which becomes the page's `<base>`).
//! Access: [`auth`].

pub mod auth;
pub mod config;
pub mod live;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

pub use config::{Access, WebConfig};
pub use live::Live;

use crate::sinks::archive;
use crate::telemetry::Telemetry;

/// Most events one `/api/events` answer holds.
pub const MAX_LIMIT: usize = 1000;
/// Events an `/api/events` answer holds without `limit`.
pub const DEFAULT_LIMIT: usize = 100;

const PAGE: &str = include_str!("assets/page.html");
const SCRIPT: &str = include_str!("assets/page.js");
const STYLE: &str = include_str!("assets/page.css");

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The live view.
    pub live: Live,
    /// The archive's folder, when the archive is on.
    pub archive: Option<PathBuf>,
    /// The bridge's metrics.
    pub telemetry: Telemetry,
    /// Who may read.
    pub access: Arc<Access>,
    /// When the bridge started (for `/healthz`).
    pub started: Instant,
    /// Ends the event streams when the bridge stops.
    pub shutdown: CancellationToken,
}

/// Why the web server could not start.
#[derive(Debug, thiserror::Error)]
#[error("web server cannot listen on {addr}: {source}")]
pub struct WebError {
    /// The configured address.
    pub addr: SocketAddr,
    /// Cause.
    pub source: std::io::Error,
}

/// A bound, not yet serving web server.
pub struct Bound {
    listener: TcpListener,
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
}

/// Bind `addr`.
pub async fn bind(addr: SocketAddr) -> Result<Bound, WebError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| WebError { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| WebError { addr, source })?;
    Ok(Bound { listener, addr })
}

/// Serve until `state.shutdown` is cancelled (open event streams end then too).
pub async fn serve(bound: Bound, state: AppState) {
    let shutdown = state.shutdown.clone();
    tracing::info!(addr = %bound.addr, "web page listening");
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(bound.listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "web server stopped");
    }
}

/// Every route; `/healthz` outside the access check.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page))
        .route(
            "/static/page.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/static/page.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/api/devices", get(devices))
        .route("/api/events", get(events))
        .route("/api/stream", get(stream))
        .route("/api/devices/{id}/latest.jpg", get(latest_of_device))
        .route(
            "/api/devices/{id}/categories/{category}/latest.jpg",
            get(latest_of_category),
        )
        .route("/archive/{*path}", get(archive_file))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), access))
        .route("/healthz", get(healthz))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// The access check ([`auth::decide`]) before every route but `/healthz`.
async fn access(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let verdict = auth::decide(&s.access, peer.ip(), req.headers(), req.uri().query());
    match verdict {
        auth::Verdict::Pass => next.run(req).await,
        auth::Verdict::PassSetCookie(token) => {
            let mut res = next.run(req).await;
            if let Some(c) = auth::token_cookie(&token) {
                res.headers_mut().append(header::SET_COOKIE, c);
            }
            res
        }
        auth::Verdict::Forbidden => {
            s.telemetry.web_refused.inc();
            tracing::warn!(peer = %peer.ip(), path = %req.uri().path(), "web request refused: peer not on web.allow");
            (StatusCode::FORBIDDEN, "forbidden\n").into_response()
        }
        auth::Verdict::Unauthorized => {
            s.telemetry.web_refused.inc();
            let sent = req.headers().contains_key(header::AUTHORIZATION);
            if sent {
                tracing::warn!(peer = %peer.ip(), path = %req.uri().path(), "web request refused: wrong credentials");
            } else {
                tracing::debug!(peer = %peer.ip(), path = %req.uri().path(), "web request without credentials");
            }
            let mut res = (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, auth::challenge(&s.access));
            res
        }
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The ingress prefix Home Assistant's proxy sends (`/api/hassio_ingress/<token>`), when
/// it is a plain path: it becomes the page's `<base>`.
fn ingress_base(headers: &HeaderMap) -> Option<String> {
    let p = headers.get("x-ingress-path")?.to_str().ok()?;
    let plain = p.starts_with('/')
        && p.len() <= 256
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b));
    plain.then(|| format!("{}/", p.trim_end_matches('/')))
}

async fn page(headers: HeaderMap) -> Response {
    let base = ingress_base(&headers)
        .map(|b| format!("<base href=\"{b}\">"))
        .unwrap_or_default();
    let mut res = Html(PAGE.replace("<!--BASE-->", &base)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

async fn devices(State(s): State<AppState>) -> Response {
    axum::Json(s.live.devices()).into_response()
}

/// `/api/events` parameters.
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// Device id.
    pub device: Option<String>,
    /// Category name.
    pub category: Option<String>,
    /// Events at or after: RFC 3339 or Unix seconds.
    pub since: Option<String>,
    /// Events at or before: RFC 3339 or Unix seconds.
    pub until: Option<String>,
    /// Most events (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]).
    pub limit: Option<usize>,
}

/// An RFC 3339 time or a number of Unix seconds.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs.min(1e11)));
    }
    let ts: jiff::Timestamp = s.parse().ok()?;
    SystemTime::try_from(ts).ok()
}

impl EventsQuery {
    /// The archive query these parameters ask for; an error names the bad parameter.
    pub fn to_query(&self) -> Result<archive::Query, String> {
        let time = |name: &str, v: &Option<String>| match v {
            None => Ok(None),
            Some(t) if t.is_empty() => Ok(None),
            Some(t) => parse_time(t)
                .map(Some)
                .ok_or_else(|| format!("{name}: not an RFC 3339 time or Unix seconds: {t}")),
        };
        Ok(archive::Query {
            device: self.device.clone().filter(|d| !d.is_empty()),
            category: self.category.clone().filter(|c| !c.is_empty()),
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            limit: self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT),
        })
    }
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        axum::Json(serde_json::json!({ "error": message.into() })),
    )
        .into_response()
}

async fn events(State(s): State<AppState>, Query(p): Query<EventsQuery>) -> Response {
    let q = match p.to_query() {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(root) = s.archive.clone() else {
        let records = s.live.recent(q.limit, |r| {
            q.device.as_ref().is_none_or(|d| *d == r.device)
                && q.category.as_ref().is_none_or(|c| *c == r.category)
                && q.since.is_none_or(|t| r.time >= t)
                && q.until.is_none_or(|t| r.time <= t)
        });
        return axum::Json(records).into_response();
    };
    match tokio::task::spawn_blocking(move || archive::query(&root, &q)).await {
        Ok(Ok(records)) => axum::Json(records).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "archive query failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn stream(
    State(s): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = s.live.subscribe();
    let hello = SseEvent::default().event("hello").data("{}");
    let updates =
        futures_util::stream::unfold((rx, s.shutdown.clone()), |(mut rx, stop)| async move {
            let next = tokio::select! {
                () = stop.cancelled() => return None,
                r = rx.recv() => r,
            };
            let ev = match next {
                Ok(u) => SseEvent::default()
                    .event(u.kind())
                    .json_data(&*u)
                    .unwrap_or_else(|_| SseEvent::default().event("resync").data("{}")),
                // Fell behind: the page reads everything again.
                Err(RecvError::Lagged(_)) => SseEvent::default().event("resync").data("{}"),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(ev), (rx, stop)))
        });
    let first = futures_util::stream::once(async move { Ok(hello) });
    Sse::new(futures_util::StreamExt::chain(first, updates))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn jpeg(data: bytes::Bytes, content_type: &str) -> Response {
    let ct = HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("image/jpeg"));
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        data,
    )
        .into_response()
}

async fn latest(s: AppState, device: String, category: Option<String>) -> Response {
    if let Some(img) = s.live.latest(&device, category.as_deref()) {
        return jpeg(img.data, &img.content_type);
    }
    // After a restart, before the device's next picture: the archive's latest file.
    if let Some(root) = s.archive.clone() {
        let found = tokio::task::spawn_blocking(move || {
            archive::latest(&root, &device, category.as_deref()).and_then(|p| std::fs::read(p).ok())
        })
        .await
        .ok()
        .flatten();
        if let Some(data) = found {
            return jpeg(data.into(), "image/jpeg");
        }
    }
    error(StatusCode::NOT_FOUND, "no picture yet")
}

async fn latest_of_device(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    latest(s, id, None).await
}

async fn latest_of_category(
    State(s): State<AppState>,
    Path((id, category)): Path<(String, String)>,
) -> Response {
    latest(s, id, Some(category)).await
}

/// MIME type of an archive file by its extension.
fn mime_of(path: &std::path::Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("jsonl") => "application/x-ndjson",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

async fn archive_file(State(s): State<AppState>, Path(rel): Path<String>) -> Response {
    let Some(root) = s.archive.clone() else {
        return error(StatusCode::NOT_FOUND, "the archive is off");
    };
    let found = tokio::task::spawn_blocking(move || {
        let p = archive::resolve(&root, &rel)?;
        let data = std::fs::read(&p).ok()?;
        Some((mime_of(&p), data))
    })
    .await
    .ok()
    .flatten();
    match found {
        Some((mime, data)) => (
            [
                (header::CONTENT_TYPE, mime),
                // Pictures never change once visible, but `latest*.jpg` and the day's
                // `events.jsonl` do: a short lifetime serves both.
                (header::CACHE_CONTROL, "max-age=60"),
            ],
            data,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "no such archive file"),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.telemetry.render_prometheus(),
    )
        .into_response()
}

async fn healthz(State(s): State<AppState>) -> Response {
    let (code, body) = crate::health::report(&s.telemetry, s.started.elapsed().as_secs());
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress_prefix_becomes_the_base_only_when_plain() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("x-ingress-path", HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(
            ingress_base(&h("/api/hassio_ingress/abc-DEF_1")).as_deref(),
            Some("/api/hassio_ingress/abc-DEF_1/")
        );
        assert_eq!(ingress_base(&h("/x\"><script>")), None);
        assert_eq!(ingress_base(&h("javascript:alert(1)")), None);
        assert_eq!(ingress_base(&HeaderMap::new()), None);
    }

    #[test]
    fn times_as_rfc3339_or_unix_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_476_303);
        assert_eq!(parse_time("1764476303"), Some(t));
        assert_eq!(parse_time("2025-11-30T04:18:23Z"), Some(t));
        assert_eq!(parse_time("2025-11-30T05:18:23+01:00"), Some(t));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("-5"), None);
        let q = EventsQuery {
            since: Some("soon".into()),
            ..Default::default()
        };
        assert!(q.to_query().unwrap_err().starts_with("since:"));
        let q = EventsQuery {
            limit: Some(1_000_000),
            device: Some(String::new()),
            ..Default::default()
        };
        let q = q.to_query().unwrap();
        assert_eq!((q.limit, q.device), (MAX_LIMIT, None));
    }
}
