//! A stand-in object detector for tests: a real HTTP server (axum) on a free loopback port that
//! speaks both APIs camqtt's detector clients use, with scripted answers, and records what it
//! was sent.
//!
//! - `POST /v1/vision/detection` (DeepStack / CodeProject.AI): a `multipart/form-data` form
//!   with the file field `image` and the text fields `min_confidence` and `api_key`; answers
//!   `{"success": true, "predictions": [{label, confidence, x_min, y_min, x_max, y_max}]}`
//!   with boxes in pixels and confidence 0..1, or `{"success": false, "error": ...}`.
//! - `POST /detect` (DOODS2): JSON `{"detector_name", "data": <base64 picture>, "detect"}`;
//!   answers `{"id": "", "detections": [{top, left, bottom, right, label, confidence}]}` with
//!   the box as fractions of the posted picture's size (read from its JPEG frame header) and
//!   confidence in percent, as DOODS2 does. An unknown `detector_name` (see
//!   [`Detector::set_doods_detectors`], default `["default"]`) and a scripted failure answer
//!   400 with `{"detections": [], "error": ...}`, as DOODS2's `api.py` does; a picture that
//!   does not decode answers 500.
//!
//! The script ([`Reply`], [`Detector::set_delay`]) holds for every request until changed:
//! objects, a failure text, any status and body, garbage bytes, or closing the connection
//! without answering. Each request is recorded ([`Request`]: API, picture length and SHA-256,
//! the fields and header camqtt sent) before the delay, so a test can assert what was sent even
//! when the client gave up waiting. A connection closed unanswered is counted
//! ([`Detector::closed`]), not recorded.
//!
//! Usage:
//! ```ignore
//! use common::detector::{Detector, Prediction, Reply};
//! let det = Detector::start().await;
//! det.set_reply(Reply::Objects(vec![Prediction::new("person", 0.9, [10, 20, 110, 220])]));
//! let mut cfg = camqtt::detect::DetectorConfig::default();
//! cfg.url = Some(det.url.clone());
//! let objects = camqtt::detect::client::Client::new(&cfg)?.detect(jpeg.into()).await?;
//! assert_eq!(det.requests()[0].image_sha256, common::detector::sha256_hex(&jpeg));
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One object the stand-in reports, in pixels of the posted picture.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Label as sent (any case).
    pub label: String,
    /// Confidence 0..1 (DOODS: sent ×100).
    pub confidence: f64,
    /// `[x_min, y_min, x_max, y_max]` in pixels (DOODS: sent as fractions of the size).
    pub bbox: [u32; 4],
}

impl Prediction {
    /// An object `label` with `confidence` at `bbox` (`[x_min, y_min, x_max, y_max]`).
    pub fn new(label: &str, confidence: f64, bbox: [u32; 4]) -> Prediction {
        Prediction {
            label: label.into(),
            confidence,
            bbox,
        }
    }
}

/// What the stand-in answers, for both APIs.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with these objects (DOODS: converted to fractions of the picture and percent).
    Objects(Vec<Prediction>),
    /// DeepStack: 200 `{"success": false, "error": <text>}`; DOODS: 400 `{"detections": [],
    /// "error": <text>}`.
    Failure(String),
    /// This status with this body (`application/json`).
    Status(u16, String),
    /// 200 `application/json` with these bytes.
    Garbage(Vec<u8>),
    /// Read the request, then close the connection without a byte of answer.
    Close,
}

/// Which API a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /v1/vision/detection`.
    Deepstack,
    /// `POST /detect`.
    Doods,
}

/// What one request carried.
#[derive(Debug, Clone)]
pub struct Request {
    /// The API.
    pub api: Api,
    /// The request's `Content-Type`.
    pub content_type: String,
    /// The picture's length in bytes (DOODS: after base64 decoding); 0 without one.
    pub image_len: usize,
    /// Lower-case hex SHA-256 of the picture.
    pub image_sha256: String,
    /// DeepStack: the `image` part's file name.
    pub image_file_name: Option<String>,
    /// DeepStack: the `image` part's content type.
    pub image_content_type: Option<String>,
    /// DeepStack: the `min_confidence` field as sent.
    pub min_confidence: Option<String>,
    /// DeepStack: the `api_key` field; DOODS: the `doods-auth-key` header.
    pub api_key: Option<String>,
    /// DeepStack: names of other form fields, in order.
    pub other_fields: Vec<String>,
    /// DOODS: `detector_name`.
    pub detector_name: Option<String>,
    /// DOODS: the `detect` map (`{"*": <percent>}`).
    pub detect: Option<Value>,
}

impl Request {
    fn new(api: Api, headers: &HeaderMap) -> Request {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Request {
            api,
            content_type: text(header::CONTENT_TYPE.as_str()).unwrap_or_default(),
            image_len: 0,
            image_sha256: sha256_hex(b""),
            image_file_name: None,
            image_content_type: None,
            min_confidence: None,
            api_key: match api {
                Api::Deepstack => None,
                Api::Doods => text("doods-auth-key"),
            },
            other_fields: Vec::new(),
            detector_name: None,
            detect: None,
        }
    }

    fn image(&mut self, data: &[u8]) {
        self.image_len = data.len();
        self.image_sha256 = sha256_hex(data);
    }
}

struct Script {
    reply: Reply,
    delay: Duration,
    doods_detectors: Vec<String>,
}

struct Shared {
    script: Mutex<Script>,
    requests: Mutex<Vec<Request>>,
    closed: AtomicUsize,
}

/// The stand-in detector; stops when dropped.
pub struct Detector {
    /// Base URL, `http://127.0.0.1:<port>` (the `[detector] url`).
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Detector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Detector {
    /// Start on a free loopback port, answering `Reply::Objects(vec![])` at once.
    pub async fn start() -> Detector {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            script: Mutex::new(Script {
                reply: Reply::Objects(Vec::new()),
                delay: Duration::ZERO,
                doods_detectors: vec!["default".into()],
            }),
            requests: Mutex::new(Vec::new()),
            closed: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/vision/detection", post(deepstack))
            .route("/detect", post(doods))
            .with_state(shared.clone());
        let listener = Scripted {
            inner: listener,
            shared: shared.clone(),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Detector {
            url: format!("http://{addr}"),
            addr,
            shared,
            task,
        }
    }

    /// Answer every following request with `reply`.
    pub fn set_reply(&self, reply: Reply) {
        self.shared.script.lock().unwrap().reply = reply;
    }

    /// Wait this long before answering every following request (after recording it).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.script.lock().unwrap().delay = delay;
    }

    /// The DOODS detector names known (others get DOODS2's "unknown detector name" 400).
    pub fn set_doods_detectors(&self, names: &[&str]) {
        self.shared.script.lock().unwrap().doods_detectors =
            names.iter().map(|n| n.to_string()).collect();
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Connections closed without an answer ([`Reply::Close`]).
    pub fn closed(&self) -> usize {
        self.shared.closed.load(Ordering::SeqCst)
    }
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A uniform JPEG of `w × h` pixels in `rgb` (quality 90).
pub fn jpeg(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .expect("encode a test JPEG");
    out
}

/// The TCP listener under axum: hands connections to axum unless the script says
/// [`Reply::Close`], in which case it reads the request head and closes the connection.
struct Scripted {
    inner: TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for Scripted {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let (mut stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let close = matches!(self.shared.script.lock().unwrap().reply, Reply::Close);
            if !close {
                return (stream, addr);
            }
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                let read = async {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
                drop(stream);
                shared.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

fn json_response(status: u16, body: impl Into<Body>) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
        .into_response()
}

/// Record `req`, wait the scripted delay, and hand back the scripted reply.
async fn record(shared: &Shared, req: Request) -> Reply {
    shared.requests.lock().unwrap().push(req);
    let (reply, delay) = {
        let s = shared.script.lock().unwrap();
        (s.reply.clone(), s.delay)
    };
    tokio::time::sleep(delay).await;
    reply
}

async fn deepstack(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let mut req = Request::new(Api::Deepstack, &headers);
    let mut has_image = false;
    if let Ok(boundary) = multer::parse_boundary(&req.content_type) {
        let mut form = multer::Multipart::new(body.into_data_stream(), boundary);
        while let Ok(Some(field)) = form.next_field().await {
            let name = field.name().unwrap_or_default().to_owned();
            match name.as_str() {
                "image" => {
                    req.image_file_name = field.file_name().map(str::to_owned);
                    req.image_content_type = field.content_type().map(|m| m.to_string());
                    let data = field.bytes().await.unwrap_or_default();
                    req.image(&data);
                    has_image = true;
                }
                "min_confidence" => req.min_confidence = field.text().await.ok(),
                "api_key" => req.api_key = field.text().await.ok(),
                _ => req.other_fields.push(name),
            }
        }
    }
    let reply = record(&shared, req).await;
    if !has_image {
        let body = json!({"success": false, "error": "No valid image file was found"});
        return json_response(400, body.to_string());
    }
    match reply {
        Reply::Objects(objects) => {
            let predictions: Vec<Value> = objects
                .iter()
                .map(|p| {
                    json!({"label": p.label, "confidence": p.confidence,
                           "x_min": p.bbox[0], "y_min": p.bbox[1],
                           "x_max": p.bbox[2], "y_max": p.bbox[3]})
                })
                .collect();
            let body = json!({"success": true, "message": "Found objects",
                              "count": predictions.len(), "predictions": predictions,
                              "inferenceMs": 12, "processMs": 14, "code": 200});
            json_response(200, body.to_string())
        }
        Reply::Failure(text) => {
            json_response(200, json!({"success": false, "error": text}).to_string())
        }
        other => scripted(other),
    }
}

async fn doods(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let mut req = Request::new(Api::Doods, &headers);
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    req.detector_name = parsed["detector_name"].as_str().map(str::to_owned);
    req.detect = parsed.get("detect").cloned();
    let picture = parsed["data"]
        .as_str()
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
        .unwrap_or_default();
    req.image(&picture);
    let name = req
        .detector_name
        .clone()
        .unwrap_or_else(|| "default".into());
    let known = shared
        .script
        .lock()
        .unwrap()
        .doods_detectors
        .contains(&name);
    let reply = record(&shared, req).await;
    let failure = |text: String| {
        json_response(
            400,
            json!({"id": "", "detections": [], "error": text}).to_string(),
        )
    };
    if !known {
        return failure(format!("unknown detector name: {name}"));
    }
    match reply {
        Reply::Objects(objects) => {
            let Some((w, h)) = camqtt::sources::jpeg::dimensions(&picture) else {
                return json_response(500, "Internal Server Error");
            };
            let (w, h) = (f64::from(w), f64::from(h));
            let detections: Vec<Value> = objects
                .iter()
                .map(|p| {
                    json!({"top": f64::from(p.bbox[1]) / h, "left": f64::from(p.bbox[0]) / w,
                           "bottom": f64::from(p.bbox[3]) / h, "right": f64::from(p.bbox[2]) / w,
                           "label": p.label, "confidence": p.confidence * 100.0})
                })
                .collect();
            json_response(200, json!({"id": "", "detections": detections}).to_string())
        }
        Reply::Failure(text) => failure(text),
        other => scripted(other),
    }
}

/// The replies both APIs answer alike.
fn scripted(reply: Reply) -> Response {
    match reply {
        Reply::Status(code, body) => json_response(code, body),
        Reply::Garbage(bytes) => json_response(200, bytes),
        // Set after the connection was accepted: answer nothing useful.
        Reply::Close | Reply::Objects(_) | Reply::Failure(_) => {
            json_response(500, "Internal Server Error")
        }
    }
}
