//! The normalised model every source produces and every sink consumes.
//!
//! Nothing in here knows about XML, HTTP or MQTT; this module depends on nothing else in the
//! crate. Sources turn vendor input into [`Message`]s; the pipeline resolves the device
//! identity ([`Device`]) and hands [`Routed`] messages to the sinks.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub mod caps;

pub use caps::{
    AlarmEntity, CategoryCaps, DeviceCaps, DeviceRecord, KnownDevices, counted_classes, static_mime,
};

/// A request for a device that arrived through a sink (an MQTT command topic, a Home Assistant
/// button) and goes to the sources ([`crate::sources::SourceContext::commands`]): the one
/// direction against the data flow, kept to this small typed set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Take a snapshot now (`<base>/<device>/snapshot/take`, any payload). `device` is the
    /// device id as in topics; the source that owns it acts, the others ignore it.
    TakeSnapshot {
        /// Device id (topic level).
        device: String,
    },
}

/// What a source hands to the pipeline for one input (one HTTP post, one file, ...).
#[derive(Debug, Clone)]
pub enum Message {
    /// A detection, or an alarm status change.
    Event(Box<Event>),
    /// The device is alive (heartbeat); carries whatever identity the heartbeat had.
    Heartbeat(DeviceInfo),
    /// Input that did not become an event.
    Unparsed(Unparsed),
    /// The source knows the device cannot be reached now (a snapshot URL stopped answering):
    /// the device goes offline at once; any later message brings it back.
    Unreachable(DeviceInfo),
}

/// Input that did not become an event, with the reason.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unparsed {
    /// TCP peer (or other origin) of the input.
    pub peer: String,
    /// Which source saw it (`viewtron`, `mqtt`, ...).
    pub source: Cow<'static, str>,
    /// Short machine-readable reason (`parse-error`, `unknown-type`, `not-xml`, ...).
    pub reason: String,
    /// Human-readable detail.
    pub detail: String,
    /// Request path or file name, when there is one.
    pub path: Option<String>,
    /// The raw body, capped by the source (lossy UTF-8).
    pub body: String,
    /// Size of the whole body in bytes.
    pub body_len: usize,
}

/// Normalise a MAC to lower-case colon form. Accepts `:`/`-`/`.` separators or none.
/// Returns `None` for anything that is not 12 hex digits, and for all-zero MACs (scrubbed
/// fixtures and unconfigured devices send `00:00:00:00:00:00`).
pub fn normalise_mac(raw: &str) -> Option<String> {
    let mut hex = Vec::with_capacity(12);
    for c in raw.trim().chars() {
        match c {
            ':' | '-' | '.' | ' ' => {}
            c if c.is_ascii_hexdigit() => hex.push(c.to_ascii_lowercase()),
            _ => return None,
        }
        if hex.len() > 12 {
            return None;
        }
    }
    if hex.len() != 12 || hex.iter().all(|&c| c == '0') {
        return None;
    }
    let mut out = String::with_capacity(17);
    for (i, pair) in hex.chunks(2).enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.extend(pair);
    }
    Some(out)
}

/// Identity of the sending device as it appeared in the input. Every field is optional
/// except the peer address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Free-text device name reported by the device.
    pub name: Option<String>,
    /// MAC, normalised to lower-case colon form; `None` when absent or all zeros.
    pub mac: Option<String>,
    /// Serial number.
    pub serial: Option<String>,
    /// IP address the device reports for itself.
    pub ip: Option<String>,
    /// NVR channel (camera input) the event belongs to.
    pub channel: Option<u32>,
    /// Device number (`deviceNo.`), informational.
    pub device_no: Option<String>,
    /// TCP peer address the input came from.
    pub peer: Option<IpAddr>,
    /// Camera or NVR.
    pub kind: DeviceKind,
    /// Manufacturer as the source knows it (`Viewtron`).
    pub manufacturer: Option<String>,
    /// Model, when known.
    pub model: Option<String>,
    /// Firmware / protocol version, when known.
    pub sw_version: Option<String>,
    /// How the source names the device when the input carries no hardware identity (an FTP
    /// or SMTP login, a mail's sender or recipient, a `[[poll]]` id), in order of preference.
    /// Matched against `[[devices]]` (`ftp_user`, `smtp_user`, `smtp_from`, `smtp_to`); the
    /// first one names a device that has no MAC or serial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handles: Vec<Handle>,
}

/// What a [`Handle`]'s value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandleKind {
    /// The user name of an FTP login (RFC 959 `USER`).
    FtpUser,
    /// The user name of an SMTP `AUTH` (RFC 4954).
    SmtpUser,
    /// The envelope sender of a mail (RFC 5321 `MAIL FROM`).
    SmtpFrom,
    /// An envelope recipient of a mail (RFC 5321 `RCPT TO`).
    SmtpTo,
    /// The `id` of a `[[poll]]` entry.
    Poll,
}

impl HandleKind {
    /// The `[[devices]]` key that matches this kind (`ftp_user`, …; `poll` for poll ids), also
    /// the prefix of a handle-named device's hardware key.
    pub fn as_str(self) -> &'static str {
        match self {
            HandleKind::FtpUser => "ftp_user",
            HandleKind::SmtpUser => "smtp_user",
            HandleKind::SmtpFrom => "smtp_from",
            HandleKind::SmtpTo => "smtp_to",
            HandleKind::Poll => "poll",
        }
    }
}

/// A name a source knows a device by ([`DeviceInfo::handles`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Handle {
    /// What the value is.
    pub kind: HandleKind,
    /// The login, address or id as received (matching ignores ASCII case for addresses).
    pub value: String,
}

impl Handle {
    /// A handle of `kind` with `value`.
    pub fn new(kind: HandleKind, value: impl Into<String>) -> Handle {
        Handle {
            kind,
            value: value.into(),
        }
    }
}

/// What kind of box sent the input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// An IP camera posting for itself.
    #[default]
    Camera,
    /// A recorder forwarding its channels' events.
    Nvr,
}

/// Normalised event category; the string form is a stable MQTT topic segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Licence plate read.
    Lpr,
    /// Face detected / recognised.
    Face,
    /// Perimeter / region intrusion.
    Intrusion,
    /// Tripwire crossed.
    LineCrossing,
    /// Entered a zone.
    ZoneEntry,
    /// Left a zone.
    ZoneExit,
    /// Someone lingering.
    Loitering,
    /// Illegal parking.
    Parking,
    /// Counted targets (line or area).
    Counting,
    /// Crowd density / gathering.
    Crowd,
    /// Full-frame object metadata (very chatty).
    Metadata,
    /// Real-time tracking summary.
    Traject,
    /// Motion detection.
    Motion,
    /// Alarm inputs, tamper, camera offline and other alarms; also an alarm status that may
    /// stand for several categories ([`AlarmState::covers`]).
    Alarm,
    /// Object left / removed.
    Object,
    /// Fire detection.
    Fire,
    /// Temperature alarm.
    Temperature,
    /// Audio / sound alarm.
    Audio,
    /// A periodic or on-demand snapshot.
    Snapshot,
    /// Anything else; the string is already a sanitised slug.
    Other(String),
}

impl Category {
    /// The stable lower-case name used in topics and payloads.
    pub fn as_str(&self) -> &str {
        match self {
            Category::Lpr => "lpr",
            Category::Face => "face",
            Category::Intrusion => "intrusion",
            Category::LineCrossing => "line_crossing",
            Category::ZoneEntry => "zone_entry",
            Category::ZoneExit => "zone_exit",
            Category::Loitering => "loitering",
            Category::Parking => "parking",
            Category::Counting => "counting",
            Category::Crowd => "crowd",
            Category::Metadata => "metadata",
            Category::Traject => "traject",
            Category::Motion => "motion",
            Category::Alarm => "alarm",
            Category::Object => "object",
            Category::Fire => "fire",
            Category::Temperature => "temperature",
            Category::Audio => "audio",
            Category::Snapshot => "snapshot",
            Category::Other(s) => s,
        }
    }

    /// All named categories (not `Other`), for configuration validation and docs.
    pub const NAMED: &'static [Category] = &[
        Category::Lpr,
        Category::Face,
        Category::Intrusion,
        Category::LineCrossing,
        Category::ZoneEntry,
        Category::ZoneExit,
        Category::Loitering,
        Category::Parking,
        Category::Counting,
        Category::Crowd,
        Category::Metadata,
        Category::Traject,
        Category::Motion,
        Category::Alarm,
        Category::Object,
        Category::Fire,
        Category::Temperature,
        Category::Audio,
        Category::Snapshot,
    ];

    /// Parse a category name as written in configuration (`lpr`, `line_crossing`, ...).
    pub fn from_name(name: &str) -> Option<Category> {
        Category::NAMED.iter().find(|c| c.as_str() == name).cloned()
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Category {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Category {
    /// The inverse of `Serialize`: a named category, else `Other` (used by the spool).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Category::from_name(&s).unwrap_or(Category::Other(s)))
    }
}

/// Where in its life cycle the detection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Something started (rule `SMART_START`, alarm status `true`).
    Start,
    /// Something ended (rule `SMART_STOP`, alarm status `false`).
    Stop,
    /// A momentary detection without a duration of its own.
    Pulse,
}

/// Where the event time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeSource {
    /// The device's own timestamp.
    Camera,
    /// The device sent none (or an implausible one); this is the receive time.
    Receiver,
}

/// The role of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageRole {
    /// The full scene.
    Overview,
    /// A crop of the detected object (plate, face, person).
    Target,
    /// A copy of the overview with the boxes of the objects an object detector found drawn on
    /// it ([`Detection`]); made by camqtt, never sent by a device.
    Annotated,
}

impl ImageRole {
    /// The role's name, as serde writes it and as topics and file names use it
    /// (`overview`, `target`, `annotated`).
    pub fn as_str(self) -> &'static str {
        match self {
            ImageRole::Overview => "overview",
            ImageRole::Target => "target",
            ImageRole::Annotated => "annotated",
        }
    }
}

/// One decoded image. The bytes are shared (`Bytes`), never copied per sink.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Image {
    /// Overview or target crop.
    pub role: ImageRole,
    /// The decoded file, byte-identical to what the device encoded. Not part of the serde
    /// form (see [`Image`]'s `Serialize`): stores carry the bytes beside the metadata.
    #[serde(skip)]
    pub data: Bytes,
    /// MIME type (`image/jpeg`).
    pub content_type: Cow<'static, str>,
    /// Width reported by the device, if any.
    pub width: Option<u32>,
    /// Height reported by the device, if any.
    pub height: Option<u32>,
    /// Target id the crop belongs to, if any.
    pub target_id: Option<u64>,
}

impl Serialize for Image {
    /// The metadata and the byte count (`len`); the bytes themselves stay out (a JPEG in JSON
    /// would be base64, a third larger). The spool writes them raw after the JSON.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Image", 6)?;
        st.serialize_field("role", &self.role)?;
        st.serialize_field("content_type", &self.content_type)?;
        st.serialize_field("width", &self.width)?;
        st.serialize_field("height", &self.height)?;
        st.serialize_field("target_id", &self.target_id)?;
        st.serialize_field("len", &self.data.len())?;
        st.end()
    }
}

/// A rectangle; `units` tells how to read the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rect {
    /// Left.
    pub x1: i64,
    /// Top.
    pub y1: i64,
    /// Right.
    pub x2: i64,
    /// Bottom.
    pub y2: i64,
    /// Coordinate system.
    pub units: Units,
}

/// A point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    /// X.
    pub x: i64,
    /// Y.
    pub y: i64,
}

/// Coordinate system of a box or polygon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Units {
    /// 0..=10000 on both axes.
    Norm10000,
    /// Pixels of the overview image.
    Pixels,
    /// Not documented.
    Unknown,
}

/// A detected object (person, car, face, plate carrier).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Device's target / track id.
    pub target_id: Option<u64>,
    /// Normalised object class (`person`, `car`, `bike`, `face`, ...).
    pub object: Option<String>,
    /// The object class exactly as sent (`1`, `car`, `motor`, ...).
    pub object_raw: Option<String>,
    /// Bounding box.
    pub rect: Option<Rect>,
    /// Velocity (traject).
    pub velocity: Option<i64>,
    /// Direction in degrees (traject).
    pub direction: Option<i64>,
}

/// The rule that fired (zone, line).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Device's event id.
    pub event_id: Option<u64>,
    /// Target id the rule reported.
    pub target_id: Option<u64>,
    /// Raw rule status (`SMART_START`, ...).
    pub status: Option<String>,
    /// `area` or `tripwire`, as sent by the NVR, or derived.
    pub boundary: Option<String>,
    /// Zone polygon.
    pub polygon: Vec<Point>,
    /// Line start and end.
    pub line: Option<(Point, Point)>,
    /// Rule direction code as sent (`Direct`).
    pub direction: Option<String>,
    /// Target box the rule reported.
    pub rect: Option<Rect>,
}

/// One licence plate read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plate {
    /// The plate text.
    pub plate: String,
    /// IPC list (`whiteList`, `blackList`, `temporaryList`, ...); `None` when not listed.
    pub list: Option<String>,
    /// NVR group name (free text); for IPC the list name.
    pub group: Option<String>,
    /// Owner from the NVR database.
    pub owner: Option<String>,
    /// `approach` / `away`; `None` when unknown.
    pub direction: Option<String>,
    /// Confidence in percent (0..=100).
    pub confidence: Option<f64>,
    /// Plate colour (text or code as sent).
    pub plate_color: Option<String>,
    /// Vehicle colour.
    pub vehicle_color: Option<String>,
    /// Vehicle type (`saloon car`, `mpv`, ...).
    pub vehicle_type: Option<String>,
    /// Vehicle brand.
    pub vehicle_brand: Option<String>,
    /// Vehicle model.
    pub vehicle_model: Option<String>,
    /// Plate box.
    pub plate_box: Option<Rect>,
    /// Vehicle box.
    pub vehicle_box: Option<Rect>,
    /// Device's vehicle / target id.
    pub target_id: Option<u64>,
}

/// Face attributes (raw vocabularies, the devices disagree on them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaceAttributes {
    /// Age group.
    pub age: Option<String>,
    /// `male` / `female` / `unknown`.
    pub sex: Option<String>,
    /// `yes` / `no` / `unknown`.
    pub glasses: Option<String>,
    /// `yes` / `no` / `unknown`.
    pub mask: Option<String>,
    /// Target id of the face.
    pub target_id: Option<u64>,
}

/// Cumulative counters sent by the device (PASSLINECOUNT), per class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// `enter` counters: (class, value).
    pub enter: Vec<(String, u64)>,
    /// `leave` counters.
    pub leave: Vec<(String, u64)>,
    /// `exist` counters.
    pub exist: Vec<(String, u64)>,
}

impl Counters {
    /// True when no counter was present.
    pub fn is_empty(&self) -> bool {
        self.enter.is_empty() && self.leave.is_empty() && self.exist.is_empty()
    }
}

/// An alarm-status element (`perimeterAlarm id=1 true`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmState {
    /// Alarm name as sent.
    pub name: String,
    /// Rule / input id.
    pub id: Option<String>,
    /// On or off.
    pub active: bool,
    /// The categories this status may stand for, as the source knows them from the alarm
    /// name and the envelope (`protocol.md` §6.11 IPC, §7.2 NVR).
    ///
    /// * one entry: the status names one category (IPC `perimeterAlarm` → `intrusion`,
    ///   `vehiceAlarm` → `lpr`, `sceneChange` → `alarm`); the event's `category` is that one;
    /// * several: the status does not say which (NVR `perimeterAlarm` → `intrusion` or
    ///   `line_crossing`); the event's `category` is [`Category::Alarm`] and a sink may tie
    ///   the status to one of them only on evidence (a detection of that category);
    /// * empty: written before this field existed (spool records); read as "the event's
    ///   `category`".
    #[serde(default)]
    pub covers: Vec<Category>,
}

impl AlarmState {
    /// True when the status may stand for more than one category ([`AlarmState::covers`]).
    pub fn is_ambiguous(&self) -> bool {
        self.covers.len() > 1
    }
}

/// Typed attributes of an event. Only what applies is filled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attributes {
    /// Plates read (LPR); several per post are possible.
    pub plates: Vec<Plate>,
    /// Faces with attributes.
    pub faces: Vec<FaceAttributes>,
    /// Detected objects.
    pub targets: Vec<Target>,
    /// Rules that fired.
    pub rules: Vec<Rule>,
    /// Device counters, when the device sent them.
    pub counters: Option<Counters>,
    /// The alarm-status element this event came from (alarm-status posts only).
    pub alarm: Option<AlarmState>,
    /// Sub-type within the category (`line`, `area`, `detect`, `match`, `tamper`, ...).
    pub subtype: Option<String>,
    /// Coarse grouping (`intrusion` for zone/line/loiter events), for users of older bridges.
    pub group: Option<String>,
    /// Subscription relation echoed by the device (`FEATURE_RESULT`, ...).
    pub subscription: Option<String>,
    /// Free text that came with the event (a mail's body), capped by the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// How an event's input reached the bridge ([`Provenance::via`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// An HTTP post by the device (Viewtron push).
    Push,
    /// A file uploaded to the FTP server (RFC 959 `STOR`/`APPE`).
    Ftp,
    /// A mail delivered to the SMTP server (RFC 5321).
    Smtp,
    /// A snapshot URL polled on its interval.
    Poll,
    /// A snapshot taken on request (the `snapshot/take` command or the HA button).
    OnDemand,
}

/// Where an event and its images came from (issue 10: image provenance on every event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The way in.
    pub via: Via,
    /// The uploaded file's name, the mail's subject, or the URL path polled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The FTP directory, the mail's sender, the polled host, or the request path of a push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The overview image's own file name when `name` is something else (a mail's attachment
    /// `CH1_20251201132003.jpg`, whose `name` is the subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// What an object detector (DeepStack / CodeProject.AI, DOODS2) found in an event's picture:
/// filled in by the pipeline's detector stage (`crate::detect`) before the event is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// Whether the detector answered.
    pub state: DetectionState,
    /// The detector kind (`deepstack`, `doods`).
    pub detector: String,
    /// Objects that passed the filters (wanted labels, minimum confidence, zone), most
    /// confident first.
    pub objects: Vec<DetectedObject>,
    /// Why the detector did not answer (`state = unavailable`): a timeout, a refused
    /// connection, an error status or an answer that could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Did the detector look at the picture?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectionState {
    /// It answered; `objects` is what it found (possibly nothing wanted).
    Ok,
    /// It did not answer in time or failed: the event goes on as it came.
    Unavailable,
}

/// One object found by a detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectedObject {
    /// The detector's label (COCO names: `person`, `car`, `truck`, ...), lower case.
    pub label: String,
    /// Confidence, 0.0 to 1.0.
    pub confidence: f64,
    /// The box in pixels of the picture the detector was given (its overview).
    #[serde(rename = "box")]
    pub bbox: PixelBox,
}

impl DetectedObject {
    /// An object `label` found with `confidence` (0 to 1) in the box `[x_min, y_min, x_max,
    /// y_max]` (pixels).
    pub fn new(label: &str, confidence: f64, [x_min, y_min, x_max, y_max]: [u32; 4]) -> Self {
        DetectedObject {
            label: label.into(),
            confidence,
            bbox: PixelBox {
                x_min,
                y_min,
                x_max,
                y_max,
            },
        }
    }
}

/// A box in pixels: `x_min <= x_max`, `y_min <= y_max`, origin at the top left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PixelBox {
    /// Left edge.
    pub x_min: u32,
    /// Top edge.
    pub y_min: u32,
    /// Right edge.
    pub x_max: u32,
    /// Bottom edge.
    pub y_max: u32,
}

/// One normalised event.
///
/// Serialisable (the spool stores it as JSON, images' bytes beside it): times as
/// `[seconds, nanoseconds]` since the Unix epoch (seconds may be negative: a camera clock can
/// be anything), images as metadata with their `len`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Identity as sent; resolved into a [`Device`] by the pipeline.
    pub device: DeviceInfo,
    /// Normalised category.
    pub category: Category,
    /// Life-cycle phase.
    pub phase: Phase,
    /// Event time (camera clock when plausible, else `received`).
    #[serde(with = "epoch")]
    pub time: SystemTime,
    /// Where `time` came from.
    pub time_source: TimeSource,
    /// The raw time value as sent, if any.
    pub time_raw: Option<String>,
    /// When the bridge received the input.
    #[serde(with = "epoch")]
    pub received: SystemTime,
    /// Which source produced it (`viewtron`).
    pub source: Cow<'static, str>,
    /// The vendor's own type string (`VEHICE`, `regionIntrusion`, `perimeterAlarm`).
    pub raw_type: String,
    /// `ipc` or `nvr` (layout), informational.
    pub envelope: Option<String>,
    /// `config/@version` as sent.
    pub config_version: Option<String>,
    /// Typed attributes.
    pub attrs: Attributes,
    /// Decoded images (overview first, then target crops in item order).
    pub images: Vec<Image>,
    /// Non-fatal problems found while normalising (bad base64, implausible time, ...).
    pub warnings: Vec<String>,
    /// How the input reached the bridge; absent in records spooled before camqtt 0.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// What an object detector found in the overview, when one looked (`[detector]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<Detection>,
}

/// What an event is, which decides what it may move downstream ([`Event::kind`]).
///
/// Only a detection is evidence that something was seen *now*: only it sets images, plates,
/// lists, "last detection" times, bridge-kept counters and event entities. A status is the
/// device's own on/off for a rule, sent after the detection and again `alarmHoldTime` later
/// (`protocol.md` §2.4, §6.11; field case 03); a tracking summary is a stream of positions
/// (§6.10); an end closes a rule (`SMART_STOP`, §3). Heartbeats are not events at all
/// ([`Message::Heartbeat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Something was detected (a smart-data post: rule start, procedure or no rule status).
    Detection,
    /// An alarm-status element: the device says a rule is on or off.
    Status,
    /// A real-time tracking summary (`traject`).
    Tracking,
    /// A rule ended (`SMART_STOP`).
    End,
}

impl Event {
    /// An event of `source` with nothing but its device, category and phase: the time is the
    /// receive time ([`TimeSource::Receiver`]), attributes, images and warnings are empty.
    /// Sources fill in the rest.
    pub fn new(
        source: &'static str,
        device: DeviceInfo,
        category: Category,
        phase: Phase,
        received: SystemTime,
    ) -> Event {
        Event {
            device,
            category,
            phase,
            time: received,
            time_source: TimeSource::Receiver,
            time_raw: None,
            received,
            source: Cow::Borrowed(source),
            raw_type: String::new(),
            envelope: None,
            config_version: None,
            attrs: Attributes::default(),
            images: Vec::new(),
            warnings: Vec::new(),
            provenance: None,
            detection: None,
        }
    }

    /// What this event is, derived from facts the model already holds, in this order:
    /// an alarm-status element (`attrs.alarm`) is a [`EventKind::Status`]; the `traject`
    /// category is [`EventKind::Tracking`]; phase [`Phase::Stop`] is an [`EventKind::End`];
    /// everything else (start, pulse) is a [`EventKind::Detection`].
    ///
    /// Derived rather than stored so it can never disagree with those facts, every source
    /// gets it without setting it, and the spool record format (which mirrors `Event`) stays
    /// as it is.
    pub fn kind(&self) -> EventKind {
        if self.attrs.alarm.is_some() {
            EventKind::Status
        } else if self.category == Category::Traject {
            EventKind::Tracking
        } else if self.phase == Phase::Stop {
            EventKind::End
        } else {
            EventKind::Detection
        }
    }

    /// The first image with the given role.
    pub fn image(&self, role: ImageRole) -> Option<&Image> {
        self.images.iter().find(|i| i.role == role)
    }
}

/// A device as the rest of the bridge knows it: a stable id plus what was learned about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Topic-safe stable id (`58_5b_69_40_f4_0d_ch2`, `192_168_1_50`, or a configured id).
    pub id: String,
    /// Display name (configured, else reported, else derived).
    pub name: String,
    /// Identity facts.
    pub info: DeviceInfo,
    /// Stable hardware key used for Home Assistant identifiers (mac/serial/peer based).
    pub hw_key: String,
    /// For an NVR channel: the NVR itself.
    pub parent: Option<Box<Device>>,
    /// Configured suggested area.
    pub area: Option<String>,
}

#[cfg(test)]
impl Device {
    /// A camera `id` named "`id` camera", with no identity facts (unit tests).
    pub(crate) fn for_test(id: &str) -> Device {
        Device {
            id: id.into(),
            name: format!("{id} camera"),
            info: DeviceInfo::default(),
            hw_key: id.into(),
            parent: None,
            area: None,
        }
    }
}

/// What the pipeline hands to sinks (serialisable: the spool stores it). Fields added since
/// camqtt 0.1.0 have defaults, so records spooled by that release still read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Routed {
    /// An event for a resolved device.
    Event {
        /// The device.
        device: Device,
        /// The event (shared: sinks only read it).
        event: std::sync::Arc<Event>,
        /// The bridge-kept counters this event advanced, with their values after it
        /// ([`counted_classes`]; empty for every other event).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        counts: BTreeMap<String, u64>,
    },
    /// The device was heard from for the first time or again after being offline, or its
    /// identity or capabilities changed.
    Seen {
        /// The device.
        device: Device,
        /// Everything the device has shown so far (the registry's record).
        #[serde(default)]
        caps: std::sync::Arc<DeviceCaps>,
    },
    /// The device has not been heard from for too long.
    Offline {
        /// The device.
        device: Device,
    },
    /// The device was silent for `forget_after` and left the registry: sinks drop what they
    /// keep for it (Home Assistant discovery is cleared).
    Forget {
        /// The device.
        device: Device,
    },
    /// Input that did not become an event.
    Unparsed(Unparsed),
}

impl Routed {
    /// A [`Routed::Seen`] of a device that has shown nothing yet.
    pub fn seen(device: Device) -> Routed {
        Routed::Seen {
            device,
            caps: std::sync::Arc::default(),
        }
    }

    /// A [`Routed::Event`] that advanced no bridge-kept counter.
    pub fn event(device: Device, event: Event) -> Routed {
        Routed::Event {
            device,
            event: std::sync::Arc::new(event),
            counts: BTreeMap::new(),
        }
    }
}

/// `SystemTime` as `[seconds, nanoseconds]` relative to the Unix epoch; seconds may be
/// negative (the nanoseconds then count forward from them).
mod epoch {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos(),
            ),
            Err(e) => {
                let d = e.duration();
                let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                match d.subsec_nanos() {
                    0 => (-secs, 0),
                    n => (-secs - 1, 1_000_000_000 - n),
                }
            }
        };
        (secs, nanos).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let (secs, nanos) = <(i64, u32)>::deserialize(d)?;
        let nanos = Duration::from_nanos(u64::from(nanos.min(999_999_999)));
        Ok(if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs()) + nanos
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(category: Category, phase: Phase, alarm: Option<AlarmState>) -> Event {
        Event {
            device: DeviceInfo::default(),
            category,
            phase,
            time: SystemTime::UNIX_EPOCH,
            time_source: TimeSource::Receiver,
            time_raw: None,
            received: SystemTime::UNIX_EPOCH,
            source: "test".into(),
            raw_type: "X".into(),
            envelope: None,
            config_version: None,
            attrs: Attributes {
                alarm,
                ..Attributes::default()
            },
            images: Vec::new(),
            warnings: Vec::new(),
            provenance: None,
            detection: None,
        }
    }

    fn alarm(active: bool, covers: Vec<Category>) -> Option<AlarmState> {
        Some(AlarmState {
            name: "perimeterAlarm".into(),
            id: Some("1".into()),
            active,
            covers,
        })
    }

    #[test]
    fn kind_is_derived_from_alarm_category_and_phase() {
        use EventKind::*;
        let cases = [
            (Category::Lpr, Phase::Pulse, None, Detection),
            (Category::Intrusion, Phase::Start, None, Detection),
            (Category::Intrusion, Phase::Stop, None, End),
            (Category::Traject, Phase::Pulse, None, Tracking),
            // A status is a status whatever its phase or category.
            (
                Category::Intrusion,
                Phase::Start,
                alarm(true, vec![Category::Intrusion]),
                Status,
            ),
            (
                Category::Lpr,
                Phase::Stop,
                alarm(false, vec![Category::Lpr]),
                Status,
            ),
            (
                Category::Traject,
                Phase::Start,
                alarm(true, vec![Category::Traject]),
                Status,
            ),
        ];
        for (category, phase, alarm, want) in cases {
            let e = event(category.clone(), phase, alarm);
            assert_eq!(e.kind(), want, "{category} {phase:?}");
        }
    }

    #[test]
    fn covers_default_when_absent_and_ambiguity() {
        // A spool record written before `covers` existed still decodes.
        let a: AlarmState =
            serde_json::from_str(r#"{"name":"vehiceAlarm","id":"1","active":true}"#).unwrap();
        assert!(a.covers.is_empty());
        assert!(!a.is_ambiguous());
        let a = alarm(true, vec![Category::Intrusion, Category::LineCrossing]).unwrap();
        assert!(a.is_ambiguous());
        let back: AlarmState = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }
}
