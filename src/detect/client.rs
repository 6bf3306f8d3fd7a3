//! HTTP clients for the object detectors people already run (issue 12): a pure parser per
//! API ([`parse_deepstack`], [`parse_doods`]) and a thin async shell ([`Client::detect`]) on
//! camqtt's one outbound `reqwest::Client` ([`crate::http_client::client`]).
//!
//! # The two APIs
//! - **DeepStack and CodeProject.AI Server** (`kind = "deepstack"`): `POST
//!   {url}/v1/vision/detection`, a `multipart/form-data` form with the picture as the file field
//!   `image`, `min_confidence` (0.0 to 1.0; the server leaves out weaker objects) and, when
//!   configured, `api_key`. The answer is JSON: `success` (bool), `predictions`
//!   `[{label, confidence 0..1, x_min, y_min, x_max, y_max}]` in pixels of the picture, and on
//!   failure `error` (DeepStack's docs, CodeProject.AI Server's API reference "Object
//!   Detection"). CodeProject.AI adds `message`, `count`, `inferenceMs`, `processMs`,
//!   `moduleId`, ...: unknown fields are ignored.
//! - **DOODS2** (`kind = "doods"`): `POST {url}/detect` with the JSON `{"detector_name":
//!   <doods_detector>, "data": <base64 JPEG>, "detect": {"*": <min confidence in percent>}}`
//!   (snowzach/doods2 `odrpc.py` `DetectRequest`). The answer is `{"id"?, "detections": [{"top",
//!   "left", "bottom", "right" as fractions 0..1 of the picture, "label", "confidence" in
//!   percent 0..100, "region_id"?}], "error"?}` (`odrpc.py` `DetectResponse` / `Detection`;
//!   the TFLite detector multiplies scores by 100); an answer with `error` comes with HTTP 400
//!   (`api.py`). The picture's size for turning fractions into pixels comes from its JPEG frame
//!   header ([`crate::sources::jpeg::dimensions`]). The configured `api_key`, if any, goes in the
//!   `doods-auth-key` header, as DOODS's own Python client (pydoods) sends its `auth_key`.
//!
//! # What the parsers promise (camqtt's rules)
//! Objects come back unfiltered by label, zone or the configured minimum (the pipeline's stage
//! filters), most confident first (ties in the server's order), at most [`MAX_OBJECTS`]:
//! - labels are trimmed and lower-cased, cut to [`MAX_LABEL`] characters;
//! - confidence is 0.0 to 1.0 (DOODS2's percent divided by 100);
//! - boxes are in pixels with `x_min <= x_max` and `y_min <= y_max`; coordinates are pixel
//!   indices, so with a known picture size `w × h` they lie in `0..w` and `0..h` (a box that
//!   sticks out of the picture, as detectors report for objects cut by its edge, is clamped);
//! - an object that cannot be trusted is **dropped**, the rest of the answer kept: no label or
//!   an empty one or one with control characters, a confidence or coordinate that is not a
//!   number, a confidence outside 0..1 (DOODS2: 0..100), a box with a negative size
//!   (`x_max < x_min`, DOODS2 `right < left`, ...);
//! - an answer that is not the API's JSON object, says it failed (`success: false`, DOODS2
//!   `error`), or has `predictions` / `detections` that is not a list, is a
//!   [`DetectError::Answer`].
//!
//! JSON cannot carry NaN or infinities (serde_json refuses them and numbers out of the `f64`
//! range), so non-finite numbers cannot reach the conversions; they are checked all the same.
//!
//! # Bounds
//! One request takes at most the configured `timeout` from the first byte sent to the last
//! byte of the answer read (connecting included); answers are read up to [`MAX_ANSWER`] bytes,
//! error bodies up to [`MAX_ERROR_BODY`], so a hostile or broken server cannot make camqtt
//! allocate without bound.
//!
//! The `api_key` never appears in logs, errors or `Debug` output, nor does the detector URL's
//! user or password.

use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::multipart::{Form, Part};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::detect::{DetectorConfig, DetectorKind};
use crate::event::{DetectedObject, PixelBox};
use crate::http_client::{self, FetchError};
use crate::sources::jpeg;

/// Largest answer read (1 MiB): a detector's JSON for a picture is a few KiB.
pub const MAX_ANSWER: usize = 1024 * 1024;
/// Largest error body read (64 KiB) to show its `error` text or first line.
pub const MAX_ERROR_BODY: usize = 64 * 1024;
/// Most objects kept from one answer (the most confident).
pub const MAX_OBJECTS: usize = 100;
/// Longest label kept, in characters; longer ones are cut.
pub const MAX_LABEL: usize = 64;
/// Longest reason text in a [`DetectError`], in characters.
const MAX_REASON: usize = 200;

/// DeepStack / CodeProject.AI path, added to the configured base URL.
pub const DEEPSTACK_PATH: &str = "/v1/vision/detection";
/// DOODS2 path, added to the configured base URL.
pub const DOODS_PATH: &str = "/detect";
/// DOODS's authentication header (pydoods' `auth_key`).
const DOODS_AUTH_HEADER: &str = "doods-auth-key";

/// Why the detector gave no objects for a picture. `Display` is a short reason for logs and the
/// event JSON's `detection.error`; it never holds the URL, the `api_key` or a request header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    /// No whole answer within the configured `timeout` (connecting included).
    #[error("timed out")]
    Timeout,
    /// Not reached, or the connection failed while sending or receiving: a refused
    /// connection, a name that does not resolve, a connection closed without an answer. Also a
    /// client that cannot be built (no or a bad `url`).
    #[error("connection failed: {0}")]
    Connect(String),
    /// An HTTP status other than 2xx. `body` is the answer's `error` text when it is the APIs'
    /// JSON (DOODS2 answers its errors with 400 and `{"error": ...}`), else its start.
    #[error("HTTP {code}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        /// The status code.
        code: u16,
        /// Why, as the server put it (at most 200 characters, control characters blanked).
        body: String,
    },
    /// A 2xx answer that says the detection failed (`success: false` with its `error`, DOODS2
    /// `error`), that is not the API's JSON, or is larger than [`MAX_ANSWER`]; also a picture
    /// whose size DOODS2 fractions need but that has no readable JPEG frame header.
    #[error("{0}")]
    Answer(String),
}

/// At most [`MAX_REASON`] characters of `text`, control characters as spaces.
fn reason(text: &str) -> String {
    let text = text.trim();
    let mut out: String = text
        .chars()
        .take(MAX_REASON)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_REASON).is_some() {
        out.push('…');
    }
    out
}

impl From<FetchError> for DetectError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::TooLarge(n) => DetectError::Answer(format!("answer larger than {n} bytes")),
            FetchError::Transport(t) => DetectError::Connect(reason(&t)),
        }
    }
}

impl From<reqwest::Error> for DetectError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            DetectError::Timeout
        } else {
            FetchError::from(e).into()
        }
    }
}

/// The parts of a DeepStack / CodeProject.AI answer camqtt reads.
#[derive(Deserialize)]
struct DeepstackAnswer {
    success: Option<bool>,
    predictions: Option<Value>,
    error: Option<Value>,
}

/// The parts of a DOODS2 answer camqtt reads.
#[derive(Deserialize)]
struct DoodsAnswer {
    detections: Option<Value>,
    error: Option<Value>,
}

/// The request body of DOODS2's `POST /detect`.
#[derive(Serialize)]
struct DoodsRequest<'a> {
    detector_name: &'a str,
    data: String,
    detect: DoodsDetect,
}

#[derive(Serialize)]
struct DoodsDetect {
    #[serde(rename = "*")]
    any: f64,
}

/// An error field's text: a string as is, anything else as JSON, `None` when absent, null
/// or empty.
fn error_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(reason(s)),
        other => Some(reason(&other.to_string())),
    }
}

fn unreadable(e: serde_json::Error) -> DetectError {
    DetectError::Answer(reason(&format!("unreadable answer: {e}")))
}

/// The entries of a `predictions` / `detections` field: absent or null is none, a list is its
/// entries, anything else is an error.
fn entries(v: Option<Value>, field: &str) -> Result<Vec<Value>, DetectError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(DetectError::Answer(format!("`{field}` is not a list"))),
    }
}

/// A finite number at `key` of `entry`.
fn number(entry: &Value, key: &str) -> Option<f64> {
    entry.get(key)?.as_f64().filter(|f| f.is_finite())
}

/// The label of `entry`: trimmed, lower-cased, at most [`MAX_LABEL`] characters; `None` when
/// missing, not a string, empty or holding control characters.
fn label(entry: &Value) -> Option<String> {
    let s = entry.get("label")?.as_str()?.trim();
    if s.is_empty() || s.chars().any(char::is_control) {
        return None;
    }
    Some(s.to_lowercase().chars().take(MAX_LABEL).collect())
}

/// A pixel coordinate: rounded, at least 0, at most `limit`.
fn pixel(v: f64, limit: u32) -> u32 {
    // `as` saturates; `v` is finite here.
    (v.round().max(0.0) as u32).min(limit)
}

/// Most confident first (stable: ties keep the server's order), at most [`MAX_OBJECTS`].
fn finish(mut objects: Vec<DetectedObject>) -> Vec<DetectedObject> {
    objects.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    objects.truncate(MAX_OBJECTS);
    objects
}

/// `b` clamped into a `w × h` picture (coordinates `0..w`, `0..h`); order is kept. A side of 0
/// (unknown size) leaves `b` as it is.
pub fn clamp_box(b: PixelBox, (w, h): (u32, u32)) -> PixelBox {
    if w == 0 || h == 0 {
        return b;
    }
    PixelBox {
        x_min: b.x_min.min(w - 1),
        y_min: b.y_min.min(h - 1),
        x_max: b.x_max.min(w - 1),
        y_max: b.y_max.min(h - 1),
    }
}

/// The objects in a DeepStack / CodeProject.AI `/v1/vision/detection` answer (pure).
///
/// `body` is the answer's JSON object (`success`, `predictions` with `label`, `confidence`
/// 0..1 and `x_min`, `y_min`, `x_max`, `y_max` in pixels, `error`). Boxes are at least 0 and
/// ordered but not limited to the picture, whose size this function does not know:
/// [`Client::detect`] clamps them with [`clamp_box`]. The module docs list what is dropped.
///
/// # Errors
/// [`DetectError::Answer`] when `body` is not a JSON object, says `success: false` (the text is
/// its `error`), or has a `predictions` that is not a list.
pub fn parse_deepstack(body: &[u8]) -> Result<Vec<DetectedObject>, DetectError> {
    let answer: DeepstackAnswer = serde_json::from_slice(body).map_err(unreadable)?;
    if answer.success == Some(false) {
        let why = error_text(answer.error.as_ref()).unwrap_or_else(|| "no reason given".into());
        return Err(DetectError::Answer(format!("detector failed: {why}")));
    }
    if answer.success.is_none() && answer.predictions.is_none() {
        return Err(DetectError::Answer(
            "answer has neither `success` nor `predictions`".into(),
        ));
    }
    let objects = entries(answer.predictions, "predictions")?
        .iter()
        .filter_map(|p| {
            let label = label(p)?;
            let confidence = number(p, "confidence").filter(|c| (0.0..=1.0).contains(c))?;
            let [x_min, y_min, x_max, y_max] =
                ["x_min", "y_min", "x_max", "y_max"].map(|k| number(p, k));
            let (x_min, y_min, x_max, y_max) = (x_min?, y_min?, x_max?, y_max?);
            if x_max < x_min || y_max < y_min {
                return None;
            }
            let bbox = PixelBox {
                x_min: pixel(x_min, u32::MAX),
                y_min: pixel(y_min, u32::MAX),
                x_max: pixel(x_max, u32::MAX),
                y_max: pixel(y_max, u32::MAX),
            };
            Some(DetectedObject {
                label,
                confidence,
                bbox,
            })
        })
        .collect();
    Ok(finish(objects))
}

/// The objects in a DOODS2 `/detect` answer for a picture of `size` (width, height) pixels
/// (pure).
///
/// `body` is the answer's JSON object (`detections` with `top`, `left`, `bottom`, `right` as
/// fractions of the picture, `label`, `confidence` in percent; `error`). Fractions become
/// pixel indices (`round(fraction × side)`, then clamped into the picture, fractions outside
/// 0..1 included); confidence is divided by 100. The module docs list what is dropped.
///
/// # Errors
/// [`DetectError::Answer`] when `body` is not a JSON object, has a non-empty `error`, has a
/// `detections` that is not a list, or `size` has a side of 0.
pub fn parse_doods(body: &[u8], size: (u32, u32)) -> Result<Vec<DetectedObject>, DetectError> {
    let answer: DoodsAnswer = serde_json::from_slice(body).map_err(unreadable)?;
    if let Some(why) = error_text(answer.error.as_ref()) {
        return Err(DetectError::Answer(format!("detector failed: {why}")));
    }
    let (w, h) = size;
    if w == 0 || h == 0 {
        return Err(DetectError::Answer(format!(
            "picture size {w}×{h} cannot place DOODS2 boxes"
        )));
    }
    let objects = entries(answer.detections, "detections")?
        .iter()
        .filter_map(|d| {
            let label = label(d)?;
            let percent = number(d, "confidence").filter(|c| (0.0..=100.0).contains(c))?;
            let [top, left, bottom, right] =
                ["top", "left", "bottom", "right"].map(|k| number(d, k));
            let (top, left, bottom, right) = (top?, left?, bottom?, right?);
            if right < left || bottom < top {
                return None;
            }
            let at = |f: f64, side: u32| pixel(f.clamp(0.0, 1.0) * f64::from(side), side - 1);
            Some(DetectedObject {
                label,
                confidence: (percent / 100.0).clamp(0.0, 1.0),
                bbox: PixelBox {
                    x_min: at(left, w),
                    y_min: at(top, h),
                    x_max: at(right, w),
                    y_max: at(bottom, h),
                },
            })
        })
        .collect();
    Ok(finish(objects))
}

/// A client for the configured detector: cheap to clone (the `reqwest::Client` inside is an
/// `Arc`), safe to use from many tasks at once. The pipeline's stage bounds how many requests
/// run at the same time (`concurrency`).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    kind: DetectorKind,
    endpoint: reqwest::Url,
    api_key: Option<SecretString>,
    doods_detector: String,
    min_confidence: f64,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("kind", &self.kind)
            .field("endpoint", &self.shown_endpoint())
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("doods_detector", &self.doods_detector)
            .field("min_confidence", &self.min_confidence)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// A client for `cfg`'s detector: `cfg.url` plus the API's path ([`DEEPSTACK_PATH`],
    /// [`DOODS_PATH`]; a base URL with a path of its own, a reverse proxy's `/ai`, keeps it).
    ///
    /// The `min_confidence` sent to the server (so it leaves out weaker objects) is the lowest
    /// of `[detector] min_confidence` and the categories' overrides; a stage that knows lower
    /// per-device values lowers it with [`Client::with_server_min_confidence`].
    ///
    /// # Errors
    /// [`DetectError::Connect`] when `cfg.url` is `None`, not a URL, not `http`/`https`, or
    /// the HTTP client cannot be built.
    pub fn new(cfg: &DetectorConfig) -> Result<Client, DetectError> {
        let Some(url) = cfg.url.as_deref() else {
            return Err(DetectError::Connect("no detector url configured".into()));
        };
        let mut endpoint = reqwest::Url::parse(url.trim())
            .map_err(|e| DetectError::Connect(format!("detector url is not a URL: {e}")))?;
        if !matches!(endpoint.scheme(), "http" | "https") || !endpoint.has_host() {
            return Err(DetectError::Connect(
                "detector url must be an http:// or https:// URL".into(),
            ));
        }
        let path = match cfg.kind {
            DetectorKind::Deepstack => DEEPSTACK_PATH,
            DetectorKind::Doods => DOODS_PATH,
        };
        let joined = format!("{}{path}", endpoint.path().trim_end_matches('/'));
        endpoint.set_path(&joined);
        let floor = cfg
            .by_category
            .values()
            .filter_map(|o| o.min_confidence)
            .fold(cfg.min_confidence, f64::min);
        let http = http_client::client().map_err(|e| DetectError::Connect(e.to_string()))?;
        Ok(Client {
            http,
            kind: cfg.kind,
            endpoint,
            api_key: cfg.api_key.clone(),
            doods_detector: cfg.doods_detector.clone(),
            min_confidence: clean_confidence(floor),
            timeout: cfg.timeout,
        })
    }

    /// This client with `min_confidence` (0.0 to 1.0; clamped, NaN as 0) sent to the server.
    /// Use the lowest threshold any device or category wants: the server leaves out what is
    /// below it.
    pub fn with_server_min_confidence(mut self, min_confidence: f64) -> Client {
        self.min_confidence = clean_confidence(min_confidence);
        self
    }

    /// The `min_confidence` sent to the server, 0.0 to 1.0.
    pub fn server_min_confidence(&self) -> f64 {
        self.min_confidence
    }

    /// The API this client speaks.
    pub fn kind(&self) -> DetectorKind {
        self.kind
    }

    /// The URL posted to, without user and password (for logs).
    pub fn shown_endpoint(&self) -> String {
        let mut u = self.endpoint.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.set_query(None);
        u.into()
    }

    /// The objects the detector finds in `jpeg`, most confident first, unfiltered (the stage
    /// applies labels, zone and minimum confidence); boxes inside the picture when its JPEG
    /// frame header gives its size (the module docs list the rules).
    ///
    /// The whole exchange (connecting, sending, the answer's last byte) takes at most the
    /// configured `timeout`.
    ///
    /// # Errors
    /// [`DetectError::Timeout`] past the timeout; [`DetectError::Connect`] when the detector
    /// cannot be reached or the connection fails; [`DetectError::Status`] for a non-2xx answer;
    /// [`DetectError::Answer`] for an answer that says it failed or cannot be read, and for a
    /// DOODS2 request whose picture has no readable size (then nothing is sent).
    pub async fn detect(&self, jpeg: Bytes) -> Result<Vec<DetectedObject>, DetectError> {
        let started = Instant::now();
        let len = jpeg.len();
        let result = tokio::time::timeout(self.timeout, self.exchange(jpeg))
            .await
            .unwrap_or(Err(DetectError::Timeout));
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(objects) => tracing::debug!(
                detector = self.kind.as_str(),
                bytes = len,
                objects = objects.len(),
                elapsed_ms,
                "detector answered"
            ),
            Err(error) => tracing::debug!(
                detector = self.kind.as_str(),
                endpoint = %self.shown_endpoint(),
                bytes = len,
                elapsed_ms,
                %error,
                "detector gave no answer"
            ),
        }
        result
    }

    async fn exchange(&self, jpeg: Bytes) -> Result<Vec<DetectedObject>, DetectError> {
        let size = jpeg::dimensions(&jpeg);
        let request = match (self.kind, size) {
            (DetectorKind::Deepstack, _) => self.deepstack_request(jpeg),
            (DetectorKind::Doods, Some(_)) => self.doods_request(&jpeg),
            (DetectorKind::Doods, None) => {
                return Err(DetectError::Answer(
                    "picture has no readable JPEG size for DOODS2 boxes".into(),
                ));
            }
        };
        // reqwest's own deadline a little after ours, so that ours decides (and the client's
        // 30 s default does not cut a longer configured timeout).
        let resp = request
            .timeout(self.timeout + Duration::from_secs(1))
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body = http_client::read_body(resp, MAX_ERROR_BODY)
                .await
                .unwrap_or_default();
            return Err(DetectError::Status {
                code: status.as_u16(),
                body: status_text(&body),
            });
        }
        let body = http_client::read_body(resp, MAX_ANSWER).await?;
        match self.kind {
            DetectorKind::Deepstack => {
                let mut objects = parse_deepstack(&body)?;
                if let Some(size) = size {
                    for o in &mut objects {
                        o.bbox = clamp_box(o.bbox, size);
                    }
                }
                Ok(objects)
            }
            // Known here (checked before sending); (0, 0) would be an `Answer` error.
            DetectorKind::Doods => parse_doods(&body, size.unwrap_or((0, 0))),
        }
    }

    fn deepstack_request(&self, jpeg: Bytes) -> reqwest::RequestBuilder {
        let image = Part::stream(reqwest::Body::from(jpeg))
            .file_name("image.jpg")
            .mime_str("image/jpeg")
            .expect("a valid MIME type");
        let mut form = Form::new()
            .part("image", image)
            .text("min_confidence", self.min_confidence.to_string());
        if let Some(key) = &self.api_key {
            form = form.text("api_key", key.expose_secret().to_owned());
        }
        self.http.post(self.endpoint.clone()).multipart(form)
    }

    fn doods_request(&self, jpeg: &[u8]) -> reqwest::RequestBuilder {
        let body = DoodsRequest {
            detector_name: &self.doods_detector,
            data: base64::engine::general_purpose::STANDARD.encode(jpeg),
            detect: DoodsDetect {
                any: self.min_confidence * 100.0,
            },
        };
        let body = serde_json::to_vec(&body).expect("a serialisable request");
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &self.api_key
            && let Ok(mut value) = HeaderValue::from_str(key.expose_secret())
        {
            value.set_sensitive(true);
            request = request.header(DOODS_AUTH_HEADER, value);
        }
        request
    }
}

/// 0.0 to 1.0; NaN as 0.0.
fn clean_confidence(c: f64) -> f64 {
    if c.is_nan() { 0.0 } else { c.clamp(0.0, 1.0) }
}

/// What an error answer says: its JSON `error` (both APIs), else its first line.
fn status_text(body: &[u8]) -> String {
    if let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body)
        && let Some(text) = error_text(o.get("error"))
    {
        return text;
    }
    let text = String::from_utf8_lossy(body);
    reason(text.lines().find(|l| !l.trim().is_empty()).unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::detect::DetectOverride;

    fn obj(label: &str, confidence: f64, b: [u32; 4]) -> DetectedObject {
        DetectedObject::new(label, confidence, b)
    }

    /// A DeepStack answer as its docs show one (pixel boxes, confidence 0..1).
    const DEEPSTACK_OK: &str = r#"{"success":true,"predictions":[
        {"confidence":0.71,"label":"dog","y_min":311,"x_min":624,"y_max":591,"x_max":825},
        {"confidence":0.9987,"label":"person","y_min":0,"x_min":258,"y_max":676,"x_max":485}]}"#;

    /// A CodeProject.AI Server answer: the same predictions plus its own fields.
    const CODEPROJECT_OK: &str = r#"{"success":true,"message":"Found person, car","count":2,
        "predictions":[
          {"confidence":0.55,"label":"Car","x_min":10.4,"y_min":20.6,"x_max":110,"y_max":90},
          {"confidence":0.92,"label":"person","x_min":200,"y_min":40,"x_max":260,"y_max":230}],
        "inferenceMs":41,"processMs":47,"moduleId":"ObjectDetectionYOLOv5Net",
        "moduleName":"Object Detection (YOLOv5 .NET)","code":200,"command":"detect",
        "requestId":"7f0c","inferenceDevice":"CPU","analysisRoundTripMs":60,"timestampUTC":"x"}"#;

    #[test]
    fn deepstack_documented_answer() {
        assert_eq!(
            parse_deepstack(DEEPSTACK_OK.as_bytes()).unwrap(),
            vec![
                obj("person", 0.9987, [258, 0, 485, 676]),
                obj("dog", 0.71, [624, 311, 825, 591]),
            ]
        );
    }

    #[test]
    fn codeproject_answer_with_its_extra_fields() {
        assert_eq!(
            parse_deepstack(CODEPROJECT_OK.as_bytes()).unwrap(),
            vec![
                obj("person", 0.92, [200, 40, 260, 230]),
                obj("car", 0.55, [10, 21, 110, 90]),
            ]
        );
    }

    #[test]
    fn deepstack_nothing_found() {
        assert_eq!(
            parse_deepstack(br#"{"success":true,"predictions":[]}"#).unwrap(),
            vec![]
        );
        // CodeProject.AI without predictions but with success.
        assert_eq!(
            parse_deepstack(br#"{"success":true,"message":"No objects found","count":0}"#).unwrap(),
            vec![]
        );
        assert_eq!(
            parse_deepstack(br#"{"success":true,"predictions":null}"#).unwrap(),
            vec![]
        );
    }

    #[test]
    fn deepstack_failures() {
        let e = parse_deepstack(br#"{"success":false,"error":"No valid image file was found"}"#)
            .unwrap_err();
        assert_eq!(
            e,
            DetectError::Answer("detector failed: No valid image file was found".into())
        );
        assert_eq!(
            e.to_string(),
            "detector failed: No valid image file was found"
        );
        // CodeProject.AI's failure also carries `code` and `message`.
        let e = parse_deepstack(
            br#"{"success":false,"error":"Unable to create module","code":500,"message":""}"#,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "detector failed: Unable to create module");
        let e = parse_deepstack(br#"{"success":false}"#).unwrap_err();
        assert_eq!(e.to_string(), "detector failed: no reason given");
        for garbage in [
            &b""[..],
            b"<html>502 Bad Gateway</html>",
            b"[]",
            b"null",
            b"{\"success\":true,\"predictions\":{}}",
            b"{\"success\":\"yes\"}",
            b"{}",
            b"{\"predictions\":[",
        ] {
            assert!(
                matches!(parse_deepstack(garbage), Err(DetectError::Answer(_))),
                "{}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    #[test]
    fn deepstack_untrustworthy_objects_are_dropped() {
        let body = json!({"success": true, "predictions": [
            {"label": "person", "confidence": 0.8, "x_min": 1, "y_min": 2, "x_max": 3, "y_max": 4},
            {"confidence": 0.9, "x_min": 1, "y_min": 2, "x_max": 3, "y_max": 4},
            {"label": "", "confidence": 0.9, "x_min": 1, "y_min": 2, "x_max": 3, "y_max": 4},
            {"label": "a\nb", "confidence": 0.9, "x_min": 1, "y_min": 2, "x_max": 3, "y_max": 4},
            {"label": 7, "confidence": 0.9, "x_min": 1, "y_min": 2, "x_max": 3, "y_max": 4},
            {"label": "car", "confidence": 1.5, "x_min": 1, "y_min": 2, "x_max": 3, "y_max": 4},
            {"label": "car", "confidence": -0.1, "x_min": 1, "y_min": 2, "x_max": 3, "y_max": 4},
            {"label": "car", "confidence": "0.9", "x_min": 1, "y_min": 2, "x_max": 3, "y_max": 4},
            {"label": "car", "confidence": 0.9, "x_min": 5, "y_min": 2, "x_max": 3, "y_max": 4},
            {"label": "car", "confidence": 0.9, "x_min": 1, "y_min": 9, "x_max": 3, "y_max": 4},
            {"label": "car", "confidence": 0.9, "x_min": 1, "y_min": 2, "x_max": 3},
            {"label": "car", "confidence": 0.9, "x_min": 1, "y_min": 2, "x_max": 3, "y_max": null},
            "person",
            null
        ]});
        assert_eq!(
            parse_deepstack(body.to_string().as_bytes()).unwrap(),
            vec![obj("person", 0.8, [1, 2, 3, 4])]
        );
    }

    #[test]
    fn deepstack_boxes_and_labels_are_normalised() {
        let long = "x".repeat(300);
        let body = json!({"success": true, "predictions": [
            {"label": " Person ", "confidence": 0.5, "x_min": -4.2, "y_min": -1, "x_max": 3.5, "y_max": 1e12},
            {"label": long, "confidence": 0.5, "x_min": 0, "y_min": 0, "x_max": 0, "y_max": 0},
            {"label": "ÄPFEL", "confidence": 1.0, "x_min": 2, "y_min": 2, "x_max": 2, "y_max": 2},
        ]});
        let got = parse_deepstack(body.to_string().as_bytes()).unwrap();
        assert_eq!(got[0], obj("äpfel", 1.0, [2, 2, 2, 2]));
        assert_eq!(got[1], obj("person", 0.5, [0, 0, 4, u32::MAX]));
        assert_eq!(got[2].label, "x".repeat(MAX_LABEL));
        assert_eq!(
            clamp_box(got[1].bbox, (640, 480)),
            PixelBox {
                x_min: 0,
                y_min: 0,
                x_max: 4,
                y_max: 479
            }
        );
    }

    #[test]
    fn at_most_max_objects_most_confident_kept() {
        let predictions: Vec<Value> = (0..250)
            .map(|i| {
                json!({"label": format!("l{i}"), "confidence": f64::from(i % 50) / 50.0,
                       "x_min": 0, "y_min": 0, "x_max": 1, "y_max": 1})
            })
            .collect();
        let body = json!({"success": true, "predictions": predictions}).to_string();
        let got = parse_deepstack(body.as_bytes()).unwrap();
        assert_eq!(got.len(), MAX_OBJECTS);
        assert!(got.windows(2).all(|w| w[0].confidence >= w[1].confidence));
        assert_eq!(got[0].confidence, 0.98);
        // Ties keep the server's order.
        assert_eq!(
            (got[0].label.as_str(), got[1].label.as_str()),
            ("l49", "l99")
        );
    }

    /// A DOODS2 answer as `odrpc.DetectResponse` serialises one (`exclude_none`).
    const DOODS_OK: &str = r#"{"id":"","detections":[
        {"top":0.1,"left":0.25,"bottom":0.9,"right":0.5,"label":"person","confidence":87.5},
        {"top":0.5,"left":0.0,"bottom":1.0,"right":1.0,"label":"car","confidence":91.0,
         "region_id":"drive"}]}"#;

    #[test]
    fn doods_fractions_and_percent() {
        assert_eq!(
            parse_doods(DOODS_OK.as_bytes(), (640, 480)).unwrap(),
            vec![
                obj("car", 0.91, [0, 240, 639, 479]),
                obj("person", 0.875, [160, 48, 320, 432]),
            ]
        );
        assert_eq!(
            parse_doods(br#"{"detections":[]}"#, (640, 480)).unwrap(),
            vec![]
        );
        assert_eq!(parse_doods(br#"{"id":"x"}"#, (640, 480)).unwrap(), vec![]);
    }

    #[test]
    fn doods_failures_and_dropped_objects() {
        let e = parse_doods(
            br#"{"detections":[],"error":"unknown detector name: nope"}"#,
            (10, 10),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "detector failed: unknown detector name: nope"
        );
        // An empty or null error is no error.
        assert_eq!(
            parse_doods(br#"{"detections":[],"error":""}"#, (10, 10)).unwrap(),
            vec![]
        );
        assert!(matches!(
            parse_doods(br#"{"detections":[]}"#, (0, 10)),
            Err(DetectError::Answer(_))
        ));
        assert!(matches!(
            parse_doods(br#"{"detections":"none"}"#, (10, 10)),
            Err(DetectError::Answer(_))
        ));
        assert!(matches!(
            parse_doods(b"not json", (10, 10)),
            Err(DetectError::Answer(_))
        ));
        let body = json!({"detections": [
            {"top": 0.2, "left": 0.2, "bottom": 0.1, "right": 0.9, "label": "a", "confidence": 50},
            {"top": 0.1, "left": 0.9, "bottom": 0.2, "right": 0.2, "label": "b", "confidence": 50},
            {"top": 0.1, "left": 0.1, "bottom": 0.2, "right": 0.2, "label": "c", "confidence": 101},
            {"top": 0.1, "left": 0.1, "bottom": 0.2, "right": 0.2, "label": "d", "confidence": -1},
            {"top": 0.1, "left": 0.1, "bottom": 0.2, "label": "e", "confidence": 50},
            {"top": -0.5, "left": -0.1, "bottom": 1.7, "right": 2.0, "label": "F", "confidence": 100},
        ]});
        assert_eq!(
            parse_doods(body.to_string().as_bytes(), (100, 50)).unwrap(),
            vec![obj("f", 1.0, [0, 0, 99, 49])]
        );
    }

    #[test]
    fn status_text_prefers_the_error_field() {
        assert_eq!(
            status_text(br#"{"detections":[],"error":"could not parse"}"#),
            "could not parse"
        );
        assert_eq!(
            status_text(b"\n<html><title>502</title>\nmore"),
            "<html><title>502</title>"
        );
        assert_eq!(status_text(b""), "");
        let long = "y".repeat(1000);
        assert_eq!(status_text(long.as_bytes()).chars().count(), MAX_REASON + 1);
        assert_eq!(
            DetectError::Status {
                code: 500,
                body: String::new()
            }
            .to_string(),
            "HTTP 500"
        );
        assert_eq!(
            DetectError::Status {
                code: 400,
                body: "bad".into()
            }
            .to_string(),
            "HTTP 400: bad"
        );
        assert_eq!(DetectError::Timeout.to_string(), "timed out");
    }

    fn config(url: Option<&str>) -> DetectorConfig {
        DetectorConfig {
            url: url.map(str::to_owned),
            ..DetectorConfig::default()
        }
    }

    #[test]
    fn client_needs_an_http_url() {
        for bad in [
            None,
            Some("not a url"),
            Some("ftp://host/"),
            Some("unix:/x"),
        ] {
            assert!(
                matches!(Client::new(&config(bad)), Err(DetectError::Connect(_))),
                "{bad:?}"
            );
        }
        let c = Client::new(&config(Some("http://u:pw@127.0.0.1:32168"))).unwrap();
        assert_eq!(
            c.endpoint.as_str(),
            "http://u:pw@127.0.0.1:32168/v1/vision/detection"
        );
        assert_eq!(
            c.shown_endpoint(),
            "http://127.0.0.1:32168/v1/vision/detection"
        );
        let mut cfg = config(Some("https://proxy.example/ai/"));
        cfg.kind = DetectorKind::Doods;
        let c = Client::new(&cfg).unwrap();
        assert_eq!(c.endpoint.as_str(), "https://proxy.example/ai/detect");
        assert_eq!(c.kind(), DetectorKind::Doods);
    }

    #[test]
    fn server_min_confidence_is_the_lowest_configured() {
        let mut cfg = config(Some("http://127.0.0.1:1"));
        cfg.min_confidence = 0.6;
        cfg.by_category = BTreeMap::from([
            (
                "snapshot".to_string(),
                DetectOverride {
                    min_confidence: Some(0.45),
                    ..DetectOverride::default()
                },
            ),
            ("motion".to_string(), DetectOverride::default()),
        ]);
        let c = Client::new(&cfg).unwrap();
        assert_eq!(c.server_min_confidence(), 0.45);
        assert_eq!(
            c.clone()
                .with_server_min_confidence(0.3)
                .server_min_confidence(),
            0.3
        );
        assert_eq!(
            c.clone()
                .with_server_min_confidence(7.0)
                .server_min_confidence(),
            1.0
        );
        assert_eq!(
            c.with_server_min_confidence(f64::NAN)
                .server_min_confidence(),
            0.0
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let mut cfg = config(Some("http://user:url-password@127.0.0.1:1"));
        cfg.api_key = Some(SecretString::from("api-key-secret"));
        let shown = format!("{:?}", Client::new(&cfg).unwrap());
        assert!(!shown.contains("api-key-secret"), "{shown}");
        assert!(!shown.contains("url-password"), "{shown}");
        assert!(shown.contains("api_key: Some(\"***\")"), "{shown}");
    }

    /// Any JSON number (or a non-number) for a field.
    fn field() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            (-2.0f64..2.0).prop_map(|f| json!(f)),
            (-5000.0f64..5000.0).prop_map(|f| json!(f)),
            any::<i64>().prop_map(|i| json!(i)),
            Just(Value::Null),
            ".{0,4}".prop_map(Value::String),
        ]
    }

    fn entry(keys: [&'static str; 4]) -> impl Strategy<Value = Value> {
        (
            prop_oneof![Just(Value::Null), "\\PC{0,12}".prop_map(Value::String)],
            field(),
            [field(), field(), field(), field()],
        )
            .prop_map(move |(label, confidence, coords)| {
                let mut o = serde_json::Map::new();
                o.insert("label".into(), label);
                o.insert("confidence".into(), confidence);
                for (k, v) in keys.into_iter().zip(coords) {
                    o.insert(k.into(), v);
                }
                Value::Object(o)
            })
    }

    fn ordered(objects: &[DetectedObject]) -> bool {
        objects
            .windows(2)
            .all(|w| w[0].confidence >= w[1].confidence)
            && objects.iter().all(|o| {
                (0.0..=1.0).contains(&o.confidence)
                    && o.bbox.x_min <= o.bbox.x_max
                    && o.bbox.y_min <= o.bbox.y_max
                    && !o.label.is_empty()
                    && o.label.chars().count() <= MAX_LABEL
            })
    }

    proptest! {
        /// Neither parser panics on arbitrary bytes.
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), w in any::<u32>(), h in any::<u32>()) {
            let _ = parse_deepstack(&bytes);
            let _ = parse_doods(&bytes, (w, h));
        }

        /// Whatever numbers a DeepStack answer holds, boxes come out ordered, clamped ones
        /// inside the picture, confidences 0..1, most confident first.
        #[test]
        fn deepstack_boxes_ordered_and_inside(
            predictions in proptest::collection::vec(entry(["x_min", "y_min", "x_max", "y_max"]), 0..12),
            w in 1u32..5000, h in 1u32..5000,
        ) {
            let body = json!({"success": true, "predictions": predictions}).to_string();
            let objects = parse_deepstack(body.as_bytes()).unwrap();
            prop_assert!(ordered(&objects));
            for o in objects {
                let b = clamp_box(o.bbox, (w, h));
                prop_assert!(b.x_min <= b.x_max && b.y_min <= b.y_max);
                prop_assert!(b.x_max < w && b.y_max < h);
            }
        }

        /// Whatever numbers a DOODS2 answer holds, boxes come out ordered and inside the
        /// picture, confidences 0..1, most confident first.
        #[test]
        fn doods_boxes_ordered_and_inside(
            detections in proptest::collection::vec(entry(["top", "left", "bottom", "right"]), 0..12),
            w in 1u32..100_000, h in 1u32..100_000,
        ) {
            let body = json!({"detections": detections}).to_string();
            let objects = parse_doods(body.as_bytes(), (w, h)).unwrap();
            prop_assert!(ordered(&objects));
            for o in objects {
                prop_assert!(o.bbox.x_max < w && o.bbox.y_max < h);
            }
        }

        /// Fractions made from pixel boxes come back as the same pixels.
        #[test]
        fn doods_pixels_round_trip(w in 1u32..8000, h in 1u32..8000, a in any::<u32>(), b in any::<u32>(), c in any::<u32>(), d in any::<u32>()) {
            let (x0, x1) = { let (p, q) = (a % w, b % w); (p.min(q), p.max(q)) };
            let (y0, y1) = { let (p, q) = (c % h, d % h); (p.min(q), p.max(q)) };
            let (wf, hf) = (f64::from(w), f64::from(h));
            let body = json!({"detections": [{"label": "person", "confidence": 64.0,
                "left": f64::from(x0) / wf, "right": f64::from(x1) / wf,
                "top": f64::from(y0) / hf, "bottom": f64::from(y1) / hf}]}).to_string();
            let got = parse_doods(body.as_bytes(), (w, h)).unwrap();
            prop_assert_eq!(got, vec![obj("person", 0.64, [x0, y0, x1, y1])]);
        }
    }
}
