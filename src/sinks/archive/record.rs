//! One line of a device's day log (`events.jsonl`): [`EventRecord`], built from an event by
//! [`EventRecord::new`], and the human text it carries ([`describe`]). Pure: no I/O.

use std::time::{SystemTime, UNIX_EPOCH};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::config::Priority;
use crate::event::{Category, Device, Event, EventKind, ImageRole, Phase, Via};

/// Longest [`describe`] text, characters.
pub const MAX_DESCRIPTION: usize = 200;

/// One archived picture of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `overview` or `target`.
    pub role: ImageRole,
    /// Path relative to the archive's directory, `/`-separated (what [`super::resolve`]
    /// takes).
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// One event as the archive logs it: one JSON object per line of
/// `<device>/<YYYY-MM-DD>/events.jsonl`, and what [`super::query`] returns.
///
/// Times are RFC 3339 in UTC with milliseconds (`2026-11-30T04:18:23.123Z`); the values held
/// here are truncated to the millisecond so that a line reads back equal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Event time (camera clock when plausible, else the receive time).
    #[serde(with = "rfc3339_ms")]
    pub time: SystemTime,
    /// When the bridge received the input.
    #[serde(with = "rfc3339_ms")]
    pub received: SystemTime,
    /// Device id.
    pub device: String,
    /// The device's display name (may come from the device itself).
    pub name: String,
    /// Category name (`lpr`, `intrusion`, …).
    pub category: String,
    /// The vendor's own event type (`VEHICE`, `regionIntrusion`), as sent.
    pub event: String,
    /// `detection`, `status`, `tracking` or `end`.
    pub kind: EventKind,
    /// `start`, `stop` or `pulse`.
    pub phase: Phase,
    /// The category's priority (`[archive.priority]`).
    pub priority: Priority,
    /// Human text ([`describe`]).
    pub description: String,
    /// How the input came in (`push` when the source did not say).
    pub via: Via,
    /// The archived pictures, in the event's order; empty for events without any.
    #[serde(default)]
    pub images: Vec<ImageRecord>,
}

impl EventRecord {
    /// The record of `event` from `device` with its archived `images`.
    pub fn new(
        device: &Device,
        event: &Event,
        priority: Priority,
        images: Vec<ImageRecord>,
    ) -> EventRecord {
        EventRecord {
            time: to_millis(event.time),
            received: to_millis(event.received),
            device: device.id.clone(),
            name: device.name.clone(),
            category: event.category.as_str().to_owned(),
            event: event.raw_type.clone(),
            kind: event.kind(),
            phase: event.phase,
            priority,
            description: describe(event),
            via: event.provenance.as_ref().map_or(Via::Push, |p| p.via),
            images,
        }
    }
}

/// One line of human text for an event, at most [`MAX_DESCRIPTION`] characters, without
/// control characters. The first that applies:
///
/// * plates read: `Plate AB123CD (white list)` (the list name split into words), several
///   joined by `; `;
/// * an alarm status: `Alarm <name> on` / `off`;
/// * an FTP upload or a mail: the file name or the subject;
/// * else the category and phase: `Intrusion started`, `Intrusion ended`, `Face detected`,
///   `Tracking update`, `Snapshot`.
pub fn describe(event: &Event) -> String {
    let plates: Vec<String> = event
        .attrs
        .plates
        .iter()
        .map(|p| match p.list.as_deref().map(list_words) {
            Some(list) if !list.is_empty() => format!("Plate {} ({list})", p.plate),
            _ => format!("Plate {}", p.plate),
        })
        .collect();
    let text = if !plates.is_empty() {
        plates.join("; ")
    } else if let Some(alarm) = &event.attrs.alarm {
        let state = if alarm.active { "on" } else { "off" };
        format!("Alarm {} {state}", alarm.name)
    } else if let Some(name) = event
        .provenance
        .as_ref()
        .filter(|p| matches!(p.via, Via::Ftp | Via::Smtp))
        .and_then(|p| p.name.as_deref())
        .filter(|n| !clean(n).is_empty())
    {
        name.to_owned()
    } else {
        let what = category_words(&event.category);
        match (&event.category, event.kind(), event.phase) {
            (Category::Snapshot, _, _) => what,
            (_, EventKind::Tracking, _) => format!("{what} update"),
            (_, _, Phase::Start) => format!("{what} started"),
            (_, _, Phase::Stop) => format!("{what} ended"),
            (_, _, Phase::Pulse) => format!("{what} detected"),
        }
    };
    clean(&text)
}

/// `whiteList` → `white list`, `temporary_list` → `temporary list`.
fn list_words(list: &str) -> String {
    let mut out = String::new();
    for c in list.trim().chars() {
        if c.is_uppercase() && !out.is_empty() && !out.ends_with(' ') {
            out.push(' ');
        }
        if c == '_' || c == '-' {
            out.push(' ');
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// A category as words with a capital: `line_crossing` → `Line crossing`, `lpr` →
/// `Licence plate`, `traject` → `Tracking`.
fn category_words(category: &Category) -> String {
    let name = match category {
        Category::Lpr => "licence plate",
        Category::Traject => "tracking",
        Category::Parking => "illegal parking",
        c => c.as_str(),
    };
    let mut words = name.replace('_', " ");
    if let Some(first) = words.get(..1) {
        let upper = first.to_ascii_uppercase();
        words.replace_range(..1, &upper);
    }
    words
}

/// Control characters become spaces, runs of white space one space, trimmed, at most
/// [`MAX_DESCRIPTION`] characters (the last one `…` when cut).
fn clean(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c.is_whitespace() && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(if c.is_whitespace() { ' ' } else { c });
    }
    let out = out.trim_end();
    if out.chars().count() > MAX_DESCRIPTION {
        let mut cut: String = out.chars().take(MAX_DESCRIPTION - 1).collect();
        cut.push('…');
        cut
    } else {
        out.to_owned()
    }
}

/// The name of an image role (`overview`, `target`), as serde writes it.
pub fn role_name(role: ImageRole) -> &'static str {
    role.as_str()
}

/// `t` as a jiff timestamp, clamped to jiff's range (years -9999 to 9999).
pub fn timestamp(t: SystemTime) -> Timestamp {
    Timestamp::try_from(t).unwrap_or(if t < UNIX_EPOCH {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// `t` truncated to the millisecond (towards the epoch), clamped like [`timestamp`]: what
/// its RFC 3339 form with milliseconds reads back as.
pub fn to_millis(t: SystemTime) -> SystemTime {
    let ts = timestamp(t);
    let nanos = ts.subsec_nanosecond() / 1_000_000 * 1_000_000;
    Timestamp::new(ts.as_second(), nanos)
        .ok()
        .and_then(|ts| SystemTime::try_from(ts).ok())
        .unwrap_or(t)
}

/// `SystemTime` as an RFC 3339 UTC string with milliseconds.
mod rfc3339_ms {
    use std::time::SystemTime;

    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{:.3}", super::timestamp(*t)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let ts: Timestamp = s.parse().map_err(D::Error::custom)?;
        SystemTime::try_from(ts).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::{AlarmState, DeviceInfo, Plate, Provenance};

    fn event(category: Category, phase: Phase) -> Event {
        Event::new(
            "test",
            DeviceInfo::default(),
            category,
            phase,
            UNIX_EPOCH + Duration::from_millis(1_796_012_303_123),
        )
    }

    fn plate(text: &str, list: Option<&str>) -> Plate {
        Plate {
            plate: text.into(),
            list: list.map(Into::into),
            ..Plate::default()
        }
    }

    #[test]
    fn describes_plates_alarms_provenance_and_phases() {
        let mut e = event(Category::Lpr, Phase::Pulse);
        e.attrs.plates = vec![plate("AB123CD", Some("whiteList"))];
        assert_eq!(describe(&e), "Plate AB123CD (white list)");
        e.attrs.plates.push(plate("XY9", None));
        assert_eq!(describe(&e), "Plate AB123CD (white list); Plate XY9");
        e.attrs.plates = vec![plate("Q1", Some("temporaryList"))];
        assert_eq!(describe(&e), "Plate Q1 (temporary list)");

        let mut e = event(Category::Intrusion, Phase::Start);
        assert_eq!(describe(&e), "Intrusion started");
        e.phase = Phase::Stop;
        assert_eq!(describe(&e), "Intrusion ended");
        e.attrs.alarm = Some(AlarmState {
            name: "perimeterAlarm".into(),
            id: None,
            active: false,
            covers: vec![],
        });
        assert_eq!(describe(&e), "Alarm perimeterAlarm off");

        assert_eq!(
            describe(&event(Category::Face, Phase::Pulse)),
            "Face detected"
        );
        assert_eq!(
            describe(&event(Category::LineCrossing, Phase::Pulse)),
            "Line crossing detected"
        );
        assert_eq!(
            describe(&event(Category::Traject, Phase::Pulse)),
            "Tracking update"
        );
        assert_eq!(
            describe(&event(Category::Lpr, Phase::Pulse)),
            "Licence plate detected"
        );
        assert_eq!(
            describe(&event(Category::Other("glass_break".into()), Phase::Start)),
            "Glass break started"
        );

        let mut e = event(Category::Snapshot, Phase::Pulse);
        assert_eq!(describe(&e), "Snapshot");
        e.provenance = Some(Provenance {
            via: Via::Poll,
            name: Some("/cgi-bin/snapshot.cgi".into()),
            path: None,
            file: None,
        });
        assert_eq!(
            describe(&e),
            "Snapshot",
            "a polled URL path is not a description"
        );
        e.provenance = Some(Provenance {
            via: Via::Smtp,
            name: Some("Motion alarm on\r\nCH1".into()),
            path: Some("cam@example.org".into()),
            file: None,
        });
        assert_eq!(describe(&e), "Motion alarm on CH1");
        e.provenance = Some(Provenance {
            via: Via::Ftp,
            name: Some("CH1_20251201132003.jpg".into()),
            path: None,
            file: None,
        });
        assert_eq!(describe(&e), "CH1_20251201132003.jpg");
        e.provenance.as_mut().unwrap().name = Some(" \t ".into());
        assert_eq!(describe(&e), "Snapshot");
    }

    #[test]
    fn descriptions_are_one_short_line() {
        let mut e = event(Category::Lpr, Phase::Pulse);
        e.attrs.plates = vec![plate(
            &format!("A\nB\0C{}", "x".repeat(500)),
            Some("blackList"),
        )];
        let d = describe(&e);
        assert!(d.starts_with("Plate A B C"), "{d}");
        assert_eq!(d.chars().count(), MAX_DESCRIPTION);
        assert!(d.ends_with('…'));
        assert!(!d.chars().any(char::is_control));
    }

    #[test]
    fn record_fields_and_json_round_trip() {
        let mut e = event(Category::Lpr, Phase::Pulse);
        e.time = UNIX_EPOCH + Duration::from_nanos(1_796_012_303_123_456_789);
        e.raw_type = "VEHICE".into();
        e.attrs.plates = vec![plate("AB123CD", Some("whiteList"))];
        let device = Device {
            id: "porchcam".into(),
            name: "Porch \"cam\"\n".into(),
            info: DeviceInfo::default(),
            hw_key: "k".into(),
            parent: None,
            area: None,
        };
        let images = vec![ImageRecord {
            role: ImageRole::Overview,
            file: "porchcam/2026-11-30/041823.123_lpr_overview.jpg".into(),
            bytes: 10,
        }];
        let r = EventRecord::new(&device, &e, Priority::High, images);
        assert_eq!(r.kind, EventKind::Detection);
        assert_eq!(r.via, Via::Push);
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2026-11-30T04:18:23.123Z");
        assert_eq!(v["received"], "2026-11-30T04:18:23.123Z");
        assert_eq!(v["device"], "porchcam");
        assert_eq!(v["name"], "Porch \"cam\"\n");
        assert_eq!(v["category"], "lpr");
        assert_eq!(v["event"], "VEHICE");
        assert_eq!(v["kind"], "detection");
        assert_eq!(v["phase"], "pulse");
        assert_eq!(v["priority"], "high");
        assert_eq!(v["description"], "Plate AB123CD (white list)");
        assert_eq!(v["via"], "push");
        assert_eq!(v["images"][0]["role"], "overview");
        assert_eq!(v["images"][0]["bytes"], 10);
        let back: EventRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn times_before_the_epoch_and_out_of_range_still_serialise() {
        for t in [
            UNIX_EPOCH - Duration::from_millis(1500),
            UNIX_EPOCH - Duration::from_nanos(1_500_400_000),
            UNIX_EPOCH + Duration::from_nanos(1_796_012_303_123_999_999),
            UNIX_EPOCH + Duration::from_secs(400_000_000_000),
        ] {
            let mut e = event(Category::Motion, Phase::Pulse);
            e.time = t;
            let device = Device {
                id: "d".into(),
                name: "d".into(),
                info: DeviceInfo::default(),
                hw_key: "k".into(),
                parent: None,
                area: None,
            };
            let r = EventRecord::new(&device, &e, Priority::Normal, vec![]);
            let back: EventRecord =
                serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            assert_eq!(back, r);
        }
    }
}
