//! Pure parser for Viewtron / TVT HTTP push bodies: the bytes of one POST body become
//! normalised [`Event`]s or a heartbeat.
//!
//! Classification follows `protocol.md` §4 and goes by document **structure**, not by the
//! `version` attribute:
//!
//! 1. empty / whitespace body → heartbeat (peer only);
//! 2. root `DeviceInfo` → heartbeat (legacy IPC);
//! 3. root `config` with `messageType` → `keepalive` (heartbeat), `alarmStatus`, `alarmData`;
//! 4. root `config` without `messageType` → `alarmStatusInfo` (alarm status), `traject`
//!    (tracking), `smartType` (event; IPC and NVR containers are both read), only
//!    `deviceInfo` (heartbeat).
//!
//! Unknown smart types still become events (category `Other(slug)`, raw type kept), so nothing
//! is dropped. Images are decoded once into `Bytes`; placeholders and broken base64 drop the
//! image with a warning on the event, never the event.

mod classify;
mod fields;
mod ident;
mod images;
mod ipc;
mod nvr;
mod time;
mod xml;

use std::net::IpAddr;
use std::time::SystemTime;

use crate::event::{AlarmState, Attributes, DeviceInfo, DeviceKind, Event, Phase};

use classify::Kind;
use time::EventTime;
use xml::{DomError, Node};

/// Most entries kept per list of one event (plates, faces, targets, rules, points of a rule's
/// polygon). Real posts carry a handful; a hostile post with 50,000 `<item>`s must not turn into
/// a multi-megabyte event JSON on MQTT. What is cut is said in the event's warnings.
pub const MAX_LIST_ITEMS: usize = 256;
/// Most events one alarm-status post yields (one per element; real devices send a few dozen).
pub const MAX_ALARM_EVENTS: usize = 128;
/// Most warnings kept per event; the last one says how many more there were.
pub const MAX_WARNINGS: usize = 16;

/// Source name put on every event.
pub const SOURCE: &str = "viewtron";

/// Facts about the request that are not in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostMeta {
    /// TCP peer of the connection.
    pub peer: Option<IpAddr>,
    /// When the body was received (fallback event time and plausibility reference).
    pub received: SystemTime,
}

/// What one POST body turned out to be.
#[derive(Debug, Clone)]
pub enum Post {
    /// One or more events (alarm-status posts yield one event per alarm element).
    Events(Vec<Event>),
    /// A keepalive, with whatever identity it carried.
    Heartbeat(Box<DeviceInfo>),
}

/// Why a body did not become events or a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body does not start with markup.
    #[error("body is not XML (starts with byte {first:#04x})")]
    NotXml {
        /// First non-whitespace byte.
        first: u8,
    },
    /// The body is not valid UTF-8.
    #[error("body is not valid UTF-8 (at byte {offset})")]
    InvalidUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// Not well-formed XML.
    #[error("malformed XML at byte {position}: {message}")]
    Malformed {
        /// Byte offset in the body.
        position: u64,
        /// What the XML reader said.
        message: String,
    },
    /// Only comments / declarations, no element.
    #[error("XML without a root element")]
    NoRoot,
    /// A DOCTYPE (entity declarations, XML bombs) was present.
    #[error("DOCTYPE / entity declarations are refused (at byte {position})")]
    ForbiddenDtd {
        /// Byte offset in the body.
        position: u64,
    },
    /// Nesting or node-count limit exceeded.
    #[error("document too complex: {limit}")]
    TooComplex {
        /// Which limit.
        limit: &'static str,
    },
    /// The root element is neither `config` nor `DeviceInfo`.
    #[error("unknown root element <{root}>")]
    UnknownRoot {
        /// Local name of the root (clipped).
        root: String,
    },
    /// `messageType` is not keepalive / alarmStatus / alarmData.
    #[error("unknown messageType {message_type:?}")]
    UnknownMessageType {
        /// The value as sent (clipped).
        message_type: String,
    },
    /// The smartType gives no usable name (`...`, punctuation only).
    #[error("unusable smartType {raw_type:?}")]
    UnknownType {
        /// The value as sent (clipped).
        raw_type: String,
    },
    /// A `2.x` config without `messageType` whose content matches no known layout.
    #[error("config {version} without messageType and without a recognisable layout")]
    NoMessageType {
        /// The `version` attribute.
        version: String,
        /// The smartType, if there was one (clipped).
        smart_type: Option<String>,
    },
    /// A well-formed document that is not an event (no smartType, empty alarm status, …).
    #[error("no event content: {detail}")]
    NotAnEvent {
        /// What was missing.
        detail: &'static str,
    },
}

impl ParseError {
    /// Short kebab-case code for counters, logs and the `unparsed` topic.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::NotXml { .. } => "not-xml",
            ParseError::InvalidUtf8 { .. } | ParseError::Malformed { .. } | ParseError::NoRoot => {
                "parse-error"
            }
            ParseError::ForbiddenDtd { .. } => "forbidden-dtd",
            ParseError::TooComplex { .. } => "too-complex",
            ParseError::UnknownRoot { .. } => "unknown-root",
            ParseError::UnknownMessageType { .. } | ParseError::UnknownType { .. } => {
                "unknown-type"
            }
            ParseError::NoMessageType { .. } => "no-message-type",
            ParseError::NotAnEvent { .. } => "not-an-event",
        }
    }
}

/// Clip vendor text that ends up in an error message.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Parse one POST body.
pub fn parse_post(body: &[u8], meta: &PostMeta) -> Result<Post, ParseError> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let bom = if body.starts_with(BOM) { BOM.len() } else { 0 };
    let rest = &body[bom..];
    let Some(start) = rest.iter().position(|b| !b.is_ascii_whitespace()) else {
        return Ok(Post::Heartbeat(Box::new(ident::peer_only(meta))));
    };
    if rest[start] != b'<' {
        return Err(ParseError::NotXml { first: rest[start] });
    }
    // `simdutf8`: the same answer as `std::str::from_utf8` (the `compat` flavour also gives
    // the offset), several times faster over a megabyte of base64 (SIMD, runtime-detected).
    let text = simdutf8::compat::from_utf8(rest).map_err(|e| ParseError::InvalidUtf8 {
        offset: bom + e.valid_up_to(),
    })?;
    let offset = (bom + start) as u64;
    let root = xml::parse(&text[start..]).map_err(|e| match e {
        DomError::Syntax { position, message } => ParseError::Malformed {
            position: position + offset,
            message,
        },
        DomError::Dtd { position } => ParseError::ForbiddenDtd {
            position: position + offset,
        },
        DomError::TooDeep => ParseError::TooComplex {
            limit: "nesting depth",
        },
        DomError::TooManyNodes => ParseError::TooComplex {
            limit: "node count",
        },
        DomError::NoRoot => ParseError::NoRoot,
    })?;

    if root.is("DeviceInfo") {
        return Ok(Post::Heartbeat(Box::new(ident::read(
            &root,
            meta,
            DeviceKind::Camera,
        ))));
    }
    if !root.is("config") {
        return Err(ParseError::UnknownRoot {
            root: clip(root.name()),
        });
    }
    config(&root, meta)
}

/// Data containers: if any is present, a `deviceInfo`-only reading as heartbeat is wrong.
const DATA_CONTAINERS: &[&str] = &[
    "smartType",
    "alarmStatusInfo",
    "traject",
    "sourceDataInfo",
    "listInfo",
    "perimeter",
    "tripwire",
    "passLineCount",
    "vsd",
    "eventInfo",
    "targetListInfo",
    "licensePlateListInfo",
    "faceListInfo",
];

/// IPC containers (`protocol.md` §4.6).
const IPC_CONTAINERS: &[&str] = &[
    "perimeter",
    "tripwire",
    "listInfo",
    "vsd",
    "passLineCount",
    "sourceDataInfo",
];

fn config(root: &Node<'_>, meta: &PostMeta) -> Result<Post, ParseError> {
    let version = root.attr("version").map(str::to_owned);
    let is_v1 = version.as_deref().is_some_and(|v| v.starts_with('1'));
    let is_v2 = version.as_deref().is_some_and(|v| v.starts_with('2'));

    if let Some(message_type) = root.child_text("messageType") {
        return match classify::key(message_type).as_str() {
            "keepalive" => {
                // The NVR keepalive layout; API-2.1 IPC firmware sends the same with config 1.7.
                let kind = if is_v1 {
                    DeviceKind::Camera
                } else {
                    DeviceKind::Nvr
                };
                Ok(Post::Heartbeat(Box::new(ident::read(root, meta, kind))))
            }
            "alarmstatus" => alarm_status(root, meta, version, true),
            "alarmdata" => {
                let raw = root.child_text("smartType").ok_or(ParseError::NotAnEvent {
                    detail: "alarmData without smartType",
                })?;
                smart_event(root, meta, version, raw, true)
            }
            _ => Err(ParseError::UnknownMessageType {
                message_type: clip(message_type),
            }),
        };
    }

    if root.child("alarmStatusInfo").is_some() {
        return alarm_status(root, meta, version, false);
    }
    if root.child("traject").is_some() && root.child_text("smartType").is_none() {
        return smart_event(root, meta, version, "traject", false);
    }
    if let Some(raw) = root.child_text("smartType") {
        let nvr_layout = nvr::has_containers(root);
        if is_v2 {
            let ipc_layout = IPC_CONTAINERS.iter().any(|n| root.child(n).is_some());
            if !nvr_layout && !ipc_layout && !classify::is_ipc_code(raw) {
                return Err(ParseError::NoMessageType {
                    version: version.unwrap_or_default(),
                    smart_type: Some(clip(raw)),
                });
            }
        }
        return smart_event(root, meta, version, raw, nvr_layout);
    }
    if root.child("smartType").is_some() {
        return Err(ParseError::NotAnEvent {
            detail: "empty smartType",
        });
    }
    let has_data = DATA_CONTAINERS.iter().any(|n| root.child(n).is_some());
    if root.child("deviceInfo").is_some() && !has_data {
        let kind = if is_v1 {
            DeviceKind::Camera
        } else {
            DeviceKind::Nvr
        };
        return Ok(Post::Heartbeat(Box::new(ident::read(root, meta, kind))));
    }
    if is_v2 {
        return Err(ParseError::NoMessageType {
            version: version.unwrap_or_default(),
            smart_type: None,
        });
    }
    Err(ParseError::NotAnEvent {
        detail: "config without smartType, traject or alarm status",
    })
}

/// Fields every event of one post shares.
struct Common {
    device: DeviceInfo,
    time: EventTime,
    envelope: &'static str,
    version: Option<String>,
    received: SystemTime,
}

impl Common {
    fn event(&self, kind: Kind, phase: Phase, raw_type: &str, mut attrs: Attributes) -> Event {
        attrs.subtype = kind.subtype.map(str::to_owned);
        attrs.group = classify::group(&kind.category).map(str::to_owned);
        Event {
            device: self.device.clone(),
            category: kind.category,
            phase,
            time: self.time.time,
            time_source: self.time.source,
            time_raw: self.time.raw.clone(),
            received: self.received,
            source: SOURCE.into(),
            raw_type: raw_type.to_owned(),
            envelope: Some(self.envelope.to_owned()),
            config_version: self.version.clone(),
            attrs,
            images: Vec::new(),
            warnings: self.time.warning.iter().cloned().collect(),
            provenance: None,
            detection: None,
        }
    }
}

fn current_time(root: &Node<'_>, meta: &PostMeta) -> Option<EventTime> {
    root.child_text("currentTime")
        .map(|t| time::from_current_time(t, meta.received))
}

fn smart_event(
    root: &Node<'_>,
    meta: &PostMeta,
    version: Option<String>,
    raw_type: &str,
    nvr_layout: bool,
) -> Result<Post, ParseError> {
    let pea = classify::PeaBlocks {
        perimeter: root.child("perimeter").is_some(),
        tripwire: root.child("tripwire").is_some(),
    };
    let kind = classify::smart_type(raw_type, pea).ok_or_else(|| ParseError::UnknownType {
        raw_type: clip(raw_type),
    })?;
    let device_kind = if nvr_layout {
        DeviceKind::Nvr
    } else {
        DeviceKind::Camera
    };
    let common = Common {
        device: ident::read(root, meta, device_kind),
        time: current_time(root, meta).unwrap_or_else(|| EventTime::received(meta.received, None)),
        envelope: if nvr_layout { "nvr" } else { "ipc" },
        version,
        received: meta.received,
    };

    let mut attrs = Attributes {
        subscription: root
            .child_text_any(&["subscribeRelation", "subscribeOption"])
            .map(str::to_owned),
        ..Attributes::default()
    };
    let mut collector = images::Collector::default();
    // NVR containers first so that an NVR overview/crop order matches the document.
    nvr::collect(root, &mut attrs, &mut collector);
    ipc::collect(root, &kind.category, &mut attrs, &mut collector);
    attrs.counters = fields::counters(root);

    let phase = attrs
        .rules
        .iter()
        .find_map(|r| r.status.as_deref())
        .map(|s| match classify::key(s).as_str() {
            "smartstart" => Phase::Start,
            "smartstop" => Phase::Stop,
            _ => Phase::Pulse,
        })
        .unwrap_or(Phase::Pulse);

    let mut event = common.event(kind, phase, raw_type, attrs);
    let (images, warnings) = collector.finish();
    event.images = images;
    event.warnings.extend(warnings);
    bound(&mut event);
    Ok(Post::Events(vec![event]))
}

/// Apply [`MAX_LIST_ITEMS`] and [`MAX_WARNINGS`] to one event, noting what was cut.
fn bound(event: &mut Event) {
    fn cut<T>(list: &mut Vec<T>, what: &str, notes: &mut Vec<String>) {
        if list.len() > MAX_LIST_ITEMS {
            notes.push(format!(
                "{} {what} dropped (more than {MAX_LIST_ITEMS})",
                list.len() - MAX_LIST_ITEMS
            ));
            list.truncate(MAX_LIST_ITEMS);
        }
    }
    let mut notes = Vec::new();
    let a = &mut event.attrs;
    cut(&mut a.plates, "plates", &mut notes);
    cut(&mut a.faces, "faces", &mut notes);
    cut(&mut a.targets, "targets", &mut notes);
    cut(&mut a.rules, "rules", &mut notes);
    for rule in &mut a.rules {
        cut(&mut rule.polygon, "polygon points", &mut notes);
    }
    event.warnings.extend(notes);
    if event.warnings.len() > MAX_WARNINGS {
        let more = event.warnings.len() - (MAX_WARNINGS - 1);
        event.warnings.truncate(MAX_WARNINGS - 1);
        event.warnings.push(format!("{more} more warnings"));
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match classify::key(text).as_str() {
        "true" | "1" | "on" | "yes" => Some(true),
        "false" | "0" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// Alarm status: IPC `alarmStatusInfo/<name>[@id]` and NVR `alarmStatusInfo/<name>/item[@id]`.
/// One event per element and id; what each may stand for ([`AlarmState::covers`]) depends on
/// the envelope ([`classify::alarm_name`]).
fn alarm_status(
    root: &Node<'_>,
    meta: &PostMeta,
    version: Option<String>,
    nvr_layout: bool,
) -> Result<Post, ParseError> {
    let Some(info) = root.child("alarmStatusInfo") else {
        return Err(ParseError::NotAnEvent {
            detail: "alarmStatus without alarmStatusInfo",
        });
    };
    let common = alarm_common(root, meta, version, nvr_layout);
    let envelope = if nvr_layout {
        classify::Envelope::Nvr
    } else {
        classify::Envelope::Ipc
    };
    let mut events = Vec::new();
    let mut dropped = 0usize;
    for element in info.children() {
        for (id, active) in alarm_states(element) {
            let Some(active) = active else { continue };
            if events.len() >= MAX_ALARM_EVENTS {
                dropped += 1;
                continue;
            }
            events.push(alarm_event(&common, element.name(), id, active, envelope));
        }
    }
    if dropped > 0
        && let Some(last) = events.last_mut()
    {
        last.warnings.push(format!(
            "{dropped} alarm-status elements dropped (more than {MAX_ALARM_EVENTS})"
        ));
    }
    if events.is_empty() {
        return Err(ParseError::NotAnEvent {
            detail: "alarm status without a true/false element",
        });
    }
    Ok(Post::Events(events))
}

/// What the events of an alarm-status post share.
fn alarm_common(
    root: &Node<'_>,
    meta: &PostMeta,
    version: Option<String>,
    nvr_layout: bool,
) -> Common {
    let time = current_time(root, meta).unwrap_or_else(|| {
        // `dataTime` is camera-local wall time without a zone: keep it raw only.
        EventTime::received(meta.received, root.child_string("dataTime"))
    });
    let kind = if nvr_layout {
        DeviceKind::Nvr
    } else {
        DeviceKind::Camera
    };
    Common {
        device: ident::read(root, meta, kind),
        time,
        envelope: if nvr_layout { "nvr" } else { "ipc" },
        version,
        received: meta.received,
    }
}

/// The `(id, on/off)` states of one alarm element: one per `item` (NVR form), or the element's
/// own text (IPC form). `None` for a value that is not a boolean.
fn alarm_states<'n>(element: &'n Node<'_>) -> Vec<(Option<&'n str>, Option<bool>)> {
    let mut states: Vec<(Option<&str>, Option<bool>)> = element
        .items()
        .map(|item| {
            (
                item.attr("id").or_else(|| item.child_text("id")),
                parse_bool(item.text()),
            )
        })
        .collect();
    if states.is_empty() {
        states.push((element.attr("id"), parse_bool(element.text())));
    }
    states
}

/// One alarm-status event: the alarm `name` (with `id`) turned on or off.
fn alarm_event(
    common: &Common,
    name: &str,
    id: Option<&str>,
    active: bool,
    envelope: classify::Envelope,
) -> Event {
    let mapped = classify::alarm_name(name, envelope);
    let attrs = Attributes {
        alarm: Some(AlarmState {
            name: name.to_owned(),
            id: id.map(str::to_owned),
            active,
            covers: mapped.covers,
        }),
        ..Attributes::default()
    };
    let phase = if active { Phase::Start } else { Phase::Stop };
    common.event(mapped.kind, phase, name, attrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Category, ImageRole, TimeSource};
    use std::time::{Duration, UNIX_EPOCH};

    fn meta() -> PostMeta {
        PostMeta {
            peer: Some("192.0.2.7".parse().unwrap()),
            received: UNIX_EPOCH + Duration::from_secs(1_795_219_200),
        }
    }

    fn events(body: &str) -> Vec<Event> {
        match parse_post(body.as_bytes(), &meta()) {
            Ok(Post::Events(e)) => e,
            other => panic!("expected events, got {other:?}"),
        }
    }

    fn one(body: &str) -> Event {
        let mut e = events(body);
        assert_eq!(e.len(), 1);
        e.remove(0)
    }

    fn err(body: &str) -> ParseError {
        match parse_post(body.as_bytes(), &meta()) {
            Err(e) => e,
            other => panic!("expected error, got {other:?}"),
        }
    }

    #[test]
    fn empty_and_whitespace_bodies_are_heartbeats() {
        for body in ["", "  \r\n\t", "\u{feff}", "\u{feff} \n"] {
            match parse_post(body.as_bytes(), &meta()) {
                Ok(Post::Heartbeat(d)) => {
                    assert_eq!(d.peer, meta().peer);
                    assert_eq!(d.manufacturer.as_deref(), Some("Viewtron"));
                    assert_eq!(d.name, None);
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn error_reasons() {
        assert_eq!(err("not xml").reason(), "not-xml");
        assert_eq!(err("<config>").reason(), "parse-error");
        assert_eq!(err("<!-- nothing -->").reason(), "parse-error");
        assert_eq!(
            err("<!DOCTYPE x [<!ENTITY a 'b'>]><config/>").reason(),
            "forbidden-dtd"
        );
        assert_eq!(
            err(&("<a>".repeat(100) + &"</a>".repeat(100))).reason(),
            "too-complex"
        );
        assert_eq!(err("<html/>").reason(), "unknown-root");
        assert_eq!(
            err("<config><messageType>fooBar</messageType></config>").reason(),
            "unknown-type"
        );
        assert_eq!(
            err("<config><smartType>...</smartType></config>").reason(),
            "unknown-type"
        );
        assert_eq!(
            err("<config version='2.1.0'><smartType>regionIntrusion</smartType></config>").reason(),
            "no-message-type"
        );
        assert_eq!(err("<config version='2.1.0'/>").reason(), "no-message-type");
        assert_eq!(
            err("<config><sourceDataInfo/></config>").reason(),
            "not-an-event"
        );
        assert_eq!(
            err("<config><smartType/></config>").reason(),
            "not-an-event"
        );
        assert_eq!(
            err("<config><messageType>alarmData</messageType></config>").reason(),
            "not-an-event"
        );
        assert_eq!(
            err("<config><alarmStatusInfo><x>maybe</x></alarmStatusInfo></config>").reason(),
            "not-an-event"
        );
        let bad = [b"<config>".as_slice(), &[0xff, 0xfe], b"</config>"].concat();
        assert_eq!(
            parse_post(&bad, &meta()).unwrap_err(),
            ParseError::InvalidUtf8 { offset: 8 }
        );
    }

    #[test]
    fn classification_precedence() {
        // messageType wins over everything else
        let hb = parse_post(
            b"<config version='2.0.0'><messageType>keepalive</messageType><smartType>PEA</smartType></config>",
            &meta(),
        );
        assert!(matches!(
            hb,
            Ok(Post::Heartbeat(d)) if d.kind == DeviceKind::Nvr
        ));
        // alarmStatusInfo beats smartType
        let e = one(
            "<config><alarmStatusInfo><motionAlarm id='1'>true</motionAlarm></alarmStatusInfo><smartType>PEA</smartType></config>",
        );
        assert_eq!(e.category, Category::Motion);
        // traject without smartType
        let e = one("<config><traject><item><targetId>3</targetId></item></traject></config>");
        assert_eq!(e.category, Category::Traject);
        // the `types` schema dump is never read as smartType
        let e = one(
            "<config><types><smartType><enum>VEHICE</enum></smartType></types><smartType>VFD</smartType></config>",
        );
        assert_eq!(e.category, Category::Face);
        assert_eq!(
            err("<config><types><smartType>VEHICE</smartType></types></config>").reason(),
            "not-an-event"
        );
        // deviceInfo only → heartbeat; deviceInfo + data → not a heartbeat
        assert!(matches!(
            parse_post(
                b"<config><deviceInfo><deviceName>x</deviceName></deviceInfo></config>",
                &meta()
            ),
            Ok(Post::Heartbeat(_))
        ));
        assert_eq!(
            err("<config><deviceInfo/><listInfo/></config>").reason(),
            "not-an-event"
        );
        // 2.x + IPC code + no messageType still parses
        assert_eq!(
            one("<config version='2.1.0'><smartType>VEHICE</smartType></config>").category,
            Category::Lpr
        );
    }

    #[test]
    fn unknown_smart_types_are_kept() {
        let e = one(
            "<config version='1.7'><smartType>FALLING</smartType><currentTime>1700000000</currentTime></config>",
        );
        assert_eq!(e.category, Category::Other("falling".into()));
        assert_eq!(e.raw_type, "FALLING");
        assert_eq!(e.time_source, TimeSource::Camera);
        let e = one("<config><smartType> motion </smartType></config>");
        assert_eq!(e.category, Category::Motion);
        assert_eq!(e.raw_type, "motion");
        assert_eq!(e.time_source, TimeSource::Receiver);
        assert!(e.warnings.is_empty());
    }

    #[test]
    fn phase_from_rule_status() {
        let body = |s: &str| {
            format!(
                "<config><smartType>PEA</smartType><perimeter><perInfo><item><status>{s}</status></item></perInfo></perimeter></config>"
            )
        };
        assert_eq!(one(&body("SMART_START")).phase, Phase::Start);
        assert_eq!(one(&body("SMART_STOP")).phase, Phase::Stop);
        assert_eq!(one(&body("SMART_PROCEDURE")).phase, Phase::Pulse);
        assert_eq!(one(&body("SMART_NONE")).phase, Phase::Pulse);
        assert_eq!(
            one("<config><smartType>PEA</smartType></config>").phase,
            Phase::Pulse
        );
    }

    #[test]
    fn alarm_status_forms() {
        let e = events(
            "<config version='2.0.0'><messageType>alarmStatus</messageType><currentTime>1772056914000000</currentTime>\
             <deviceInfo><mac>58:5B:69:40:F4:0D</mac><channelId>3</channelId></deviceInfo>\
             <alarmStatusInfo><perimeterAlarm><item id='1'>true</item><item id='2'>false</item></perimeterAlarm>\
             <chlOfflineAlarm><item id='1'>TRUE</item></chlOfflineAlarm></alarmStatusInfo></config>",
        );
        assert_eq!(e.len(), 3);
        // On an NVR perimeterAlarm does not say intrusion or line crossing (§7.2).
        assert_eq!(e[0].category, Category::Alarm);
        assert_eq!(e[0].attrs.subtype, None);
        assert_eq!(e[0].phase, Phase::Start);
        assert_eq!(e[1].phase, Phase::Stop);
        assert_eq!(
            e[1].attrs.alarm,
            Some(AlarmState {
                name: "perimeterAlarm".into(),
                id: Some("2".into()),
                active: false,
                covers: vec![Category::Intrusion, Category::LineCrossing],
            })
        );
        assert!(
            e.iter()
                .all(|e| e.kind() == crate::event::EventKind::Status)
        );
        assert_eq!(
            e[2].attrs.alarm.as_ref().unwrap().covers,
            vec![Category::Alarm]
        );
        assert_eq!(e[2].category, Category::Alarm);
        assert_eq!(e[2].attrs.subtype.as_deref(), Some("camera_offline"));
        assert_eq!(e[2].device.kind, DeviceKind::Nvr);
        assert_eq!(e[2].device.channel, Some(3));
        assert_eq!(e[2].device.mac.as_deref(), Some("58:5b:69:40:f4:0d"));
        assert_eq!(e[0].time_source, TimeSource::Camera);

        let e = one(
            "<config><alarmStatusInfo><sensorAlarm type='boolean' id='4'>false</sensorAlarm></alarmStatusInfo><dataTime><![CDATA[2026-03-29 09:58:21]]></dataTime></config>",
        );
        assert_eq!(e.time_source, TimeSource::Receiver);
        assert_eq!(e.time, meta().received);
        assert_eq!(e.time_raw.as_deref(), Some("2026-03-29 09:58:21"));
        assert_eq!(e.attrs.subtype.as_deref(), Some("sensor"));
        assert_eq!(e.device.kind, DeviceKind::Camera);
        assert_eq!(e.envelope.as_deref(), Some("ipc"));
    }

    #[test]
    fn alarm_status_covers_follow_the_envelope() {
        let covers = |e: &Event| e.attrs.alarm.as_ref().unwrap().covers.clone();
        // IPC: perimeterAlarm is intrusion (line crossing has tripwireAlarm), §6.11.
        let e = events(
            "<config version='1.7'><alarmStatusInfo><perimeterAlarm type='boolean' id='1'>true</perimeterAlarm>\
             <tripwireAlarm type='boolean' id='2'>true</tripwireAlarm></alarmStatusInfo></config>",
        );
        assert_eq!(
            (e[0].category.clone(), covers(&e[0])),
            (Category::Intrusion, vec![Category::Intrusion])
        );
        assert_eq!(
            (e[1].category.clone(), covers(&e[1])),
            (Category::LineCrossing, vec![Category::LineCrossing])
        );
        // NVR: perimeterAlarm stands for regionIntrusion and lineCrossing; passlineAlarm for
        // both counting types, one category (§7.2).
        let e = events(
            "<config version='2.0.0'><messageType>alarmStatus</messageType><deviceInfo><mac>02:00:5e:00:00:15</mac>\
             <channelId>4</channelId></deviceInfo><alarmStatusInfo><perimeterAlarm><item id='1'>true</item></perimeterAlarm>\
             <passlineAlarm><item id='2'>true</item></passlineAlarm></alarmStatusInfo></config>",
        );
        assert_eq!(e[0].category, Category::Alarm);
        assert_eq!(
            covers(&e[0]),
            vec![Category::Intrusion, Category::LineCrossing]
        );
        assert!(e[0].attrs.alarm.as_ref().unwrap().is_ambiguous());
        assert_eq!(e[0].envelope.as_deref(), Some("nvr"));
        assert_eq!(
            (e[1].category.clone(), covers(&e[1])),
            (Category::Counting, vec![Category::Counting])
        );
        // The layout decides, not the version: an IPC element form inside a 2.x config.
        let e = one(
            "<config version='2.1.0'><alarmStatusInfo><perimeterAlarm id='1'>false</perimeterAlarm></alarmStatusInfo></config>",
        );
        assert_eq!(covers(&e), vec![Category::Intrusion]);
    }

    #[test]
    fn placeholder_images_keep_the_event() {
        let e = one(
            "<config><smartType>AOIENTRY</smartType><sourceDataInfo><sourceBase64Data>BASE64_JPEG_X</sourceBase64Data></sourceDataInfo>\
             <listInfo><item><targetId>4</targetId><targetImageData><targetBase64Data>@@@</targetBase64Data></targetImageData></item></listInfo></config>",
        );
        assert!(e.images.is_empty());
        assert_eq!(e.warnings.len(), 2, "{:?}", e.warnings);
        assert_eq!(e.attrs.targets[0].target_id, Some(4));
        assert!(e.image(ImageRole::Overview).is_none());
    }

    /// A long base64 image is read as sent (no control-character pass while the tree is
    /// built); one with control characters in it is still decoded without them, as before.
    #[test]
    fn long_base64_images_decode_with_and_without_control_characters() {
        use base64::Engine as _;
        let jpeg: Vec<u8> = [0xFF, 0xD8, 0xFF, 0xE0]
            .into_iter()
            .chain((0..6000u32).map(|i| (i * 7) as u8))
            .chain([0xFF, 0xD9])
            .collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&jpeg);
        let (head, tail) = b64.split_at(4000);
        for text in [b64.clone(), format!("{head}\u{1b}\u{0}{tail}")] {
            let e = one(&format!(
                "<config><smartType>AOIENTRY</smartType><sourceDataInfo><sourceBase64Data>{text}</sourceBase64Data></sourceDataInfo></config>"
            ));
            let overview = e.image(ImageRole::Overview).expect("decoded");
            assert_eq!(overview.data.as_ref(), jpeg.as_slice());
            assert!(e.warnings.is_empty(), "{:?}", e.warnings);
        }
    }

    #[test]
    fn namespaces_and_bom() {
        let body = "\u{feff}\n <v:config xmlns:v='http://www.ipc.com/ver10' version='1.7'><v:smartType>VSD</v:smartType></v:config>";
        let e = one(body);
        assert_eq!(e.category, Category::Metadata);
        assert_eq!(e.config_version.as_deref(), Some("1.7"));
    }

    #[test]
    fn hostile_lists_are_bounded_with_a_warning() {
        let n = 5_000;
        let items: String = (0..n)
            .map(|i| format!("<item><targetId>{i}</targetId><rect><x1>1</x1><y1>1</y1><x2>2</x2><y2>2</y2></rect><targetType>person</targetType></item>"))
            .collect();
        let body = format!(
            "<config version=\"1.7\"><currentTime>1790001200000000</currentTime><mac>02:00:5e:10:20:99</mac><traject type=\"list\">{items}</traject></config>"
        );
        let e = one(&body);
        assert_eq!(e.attrs.targets.len(), MAX_LIST_ITEMS);
        assert_eq!(
            e.attrs.targets[0].target_id,
            Some(0),
            "the first ones are kept"
        );
        let note = format!("{} targets dropped", n - MAX_LIST_ITEMS);
        assert!(
            e.warnings.iter().any(|w| w.starts_with(&note)),
            "{:?}",
            e.warnings
        );

        let plates = "<item><image>1</image><plateNumber>X1</plateNumber></item>".repeat(1_000);
        let body = format!(
            "<config version=\"1.7\"><smartType>VEHICE</smartType><mac>02:00:5e:10:20:98</mac><listInfo>{plates}</listInfo></config>"
        );
        let e = one(&body);
        assert_eq!(e.attrs.plates.len(), MAX_LIST_ITEMS);
        assert!(e.warnings.len() <= MAX_WARNINGS);
    }

    #[test]
    fn hostile_warnings_and_alarm_elements_are_bounded() {
        // 100 broken crops: at most MAX_WARNINGS warnings, the last one counting the rest.
        let crops = "<item><targetImageData><targetBase64Data>!!not base64!!</targetBase64Data></targetImageData></item>".repeat(100);
        let body = format!(
            "<config version=\"1.7\"><smartType>PEA</smartType><mac>02:00:5e:10:20:97</mac><listInfo>{crops}</listInfo></config>"
        );
        let e = one(&body);
        assert!(e.images.is_empty());
        assert_eq!(e.warnings.len(), MAX_WARNINGS);
        assert!(
            e.warnings.last().unwrap().ends_with("more warnings"),
            "{:?}",
            e.warnings
        );

        let elements = "<motionAlarm>true</motionAlarm>".repeat(MAX_ALARM_EVENTS + 50);
        let body = format!(
            "<config version=\"1.7\"><mac>02:00:5e:10:20:96</mac><alarmStatusInfo>{elements}</alarmStatusInfo></config>"
        );
        let ev = events(&body);
        assert_eq!(ev.len(), MAX_ALARM_EVENTS);
        assert!(
            ev.last()
                .unwrap()
                .warnings
                .iter()
                .any(|w| w.starts_with("50 alarm-status elements dropped"))
        );
    }

    #[test]
    fn control_characters_never_reach_event_text() {
        let body = "<config version=\"1.7\"><smartType>VEH\u{0}ICE</smartType><mac>02:00:5e:10:20:95</mac>\
                    <deviceName>Ga\u{1b}[31mte\u{7f}\u{85}</deviceName><listInfo><item><image>1</image>\
                    <plateNumber>AB\u{0}C&#x1;D</plateNumber></item></listInfo></config>";
        let e = one(body);
        assert_eq!(e.raw_type, "VEHICE");
        assert_eq!(e.category, Category::Lpr);
        assert_eq!(e.device.name.as_deref(), Some("Ga[31mte"));
        let plate = &e.attrs.plates[0].plate;
        assert!(!plate.chars().any(char::is_control), "{plate:?}");
        assert!(plate.starts_with("ABC"), "{plate:?}");
    }
}
