//! Payloads (pure): event JSON, timestamps, `bridge/unparsed`, `image_json`.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde::Serialize;

use crate::event::{
    AlarmState, Category, Counters, DetectedObject, DetectionState, Device, Event, FaceAttributes,
    ImageRole, Phase, Plate, Rule, Target, TimeSource, Unparsed, Via,
};

/// `event_type` of the event entity per category (README, "Event JSON"), from the category
/// catalog.
pub use super::entities::catalog::event_type;

/// RFC 3339 UTC with microseconds and `Z` (`2026-10-07T21:24:47.427999Z`; a whole second is
/// `…:47.000000Z`, sub-microsecond digits are cut). Formatted by `humantime`, which handles the
/// years 1970–9999 only, so earlier times print as the epoch and later ones as
/// `9999-12-31T23:59:59.999999Z`.
pub fn rfc3339(t: SystemTime) -> String {
    // 9999-12-31T23:59:59.999999Z: the last instant a four-digit RFC 3339 year holds.
    const MAX: Duration = Duration::new(253_402_300_799, 999_999_000);
    let since_epoch = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .min(MAX);
    humantime::format_rfc3339_micros(SystemTime::UNIX_EPOCH + since_epoch).to_string()
}

#[derive(Serialize)]
struct DeviceBlock<'a> {
    id: &'a str,
    name: &'a str,
    mac: Option<&'a str>,
    serial: Option<&'a str>,
    ip: Option<&'a str>,
    channel: Option<u32>,
    peer: Option<String>,
    kind: crate::event::DeviceKind,
    parent: Option<&'a str>,
}

impl<'a> DeviceBlock<'a> {
    fn new(d: &'a Device) -> Self {
        DeviceBlock {
            id: &d.id,
            name: &d.name,
            mac: d.info.mac.as_deref(),
            serial: d.info.serial.as_deref(),
            ip: d.info.ip.as_deref(),
            channel: d.info.channel,
            peer: d.info.peer.map(|p| p.to_string()),
            kind: d.info.kind,
            parent: d.parent.as_deref().map(|p| p.id.as_str()),
        }
    }
}

#[derive(Serialize)]
struct Vehicle<'a> {
    color: Option<&'a str>,
    #[serde(rename = "type")]
    kind: Option<&'a str>,
    brand: Option<&'a str>,
    model: Option<&'a str>,
}

#[derive(Serialize)]
struct ImagesInfo {
    overview: bool,
    target: bool,
    overview_bytes: Option<usize>,
    target_bytes: Option<usize>,
    targets: usize,
}

/// `provenance` in the event JSON: how the input arrived, and when the picture was taken.
#[derive(Serialize)]
struct ProvenanceJson<'a> {
    via: Via,
    name: Option<&'a str>,
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
    /// The event time (RFC 3339): when the device says the picture was taken.
    captured: String,
}

#[derive(Serialize)]
struct EventJson<'a> {
    event_type: &'static str,
    category: &'a Category,
    phase: Phase,
    raw_type: &'a str,
    source: &'a str,
    envelope: Option<&'a str>,
    config_version: Option<&'a str>,
    device: DeviceBlock<'a>,
    time: String,
    time_source: TimeSource,
    time_raw: Option<&'a str>,
    received: String,
    // Convenience fields of the first plate.
    plate: Option<&'a str>,
    list: Option<&'a str>,
    group: Option<&'a str>,
    owner: Option<&'a str>,
    direction: Option<&'a str>,
    confidence: Option<f64>,
    vehicle: Option<Vehicle<'a>>,
    // Convenience fields of the first face.
    age: Option<&'a str>,
    sex: Option<&'a str>,
    glasses: Option<&'a str>,
    mask: Option<&'a str>,
    subtype: Option<&'a str>,
    plates: &'a [Plate],
    faces: &'a [FaceAttributes],
    targets: &'a [Target],
    rules: &'a [Rule],
    counters: Option<&'a Counters>,
    alarm: Option<&'a AlarmState>,
    subscription: Option<&'a str>,
    warnings: Vec<&'a str>,
    images: ImagesInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<ProvenanceJson<'a>>,
    /// `ok` or `unavailable`, when an object detector was asked (`[detector]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    detection: Option<DetectionState>,
    /// Why the detector did not answer (`detection: unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    detection_error: Option<&'a str>,
    /// What the detector found: `label`, `confidence` (0 to 1), `box` in pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    objects: Option<&'a [DetectedObject]>,
}

/// The JSON published on `<base>/<device>/<category>/event` (no image bytes).
///
/// Top-level `plate`, `list`, `owner`, `direction`, `confidence`, `vehicle` come from the first
/// plate, `age`, `sex`, `glasses`, `mask` from the first face. `group` is the first plate's group
/// when there is a plate, else the event's coarse grouping (`intrusion`). Absent values are
/// `null`.
pub fn event_json(device: &Device, ev: &Event) -> Vec<u8> {
    event_json_with(device, ev, &[])
}

/// [`event_json`] with `notes` added to the event's `warnings` (what the bridge itself had to
/// leave out, e.g. an image larger than the broker's packet limit).
pub fn event_json_with(device: &Device, ev: &Event, notes: &[String]) -> Vec<u8> {
    let plate = ev.attrs.plates.first();
    let face = ev.attrs.faces.first();
    let overview = ev.image(ImageRole::Overview);
    let target = ev.image(ImageRole::Target);
    let j = EventJson {
        event_type: event_type(&ev.category),
        category: &ev.category,
        phase: ev.phase,
        raw_type: &ev.raw_type,
        source: &ev.source,
        envelope: ev.envelope.as_deref(),
        config_version: ev.config_version.as_deref(),
        device: DeviceBlock::new(device),
        time: rfc3339(ev.time),
        time_source: ev.time_source,
        time_raw: ev.time_raw.as_deref(),
        received: rfc3339(ev.received),
        plate: plate.map(|p| p.plate.as_str()),
        list: plate.and_then(|p| p.list.as_deref()),
        group: plate
            .and_then(|p| p.group.as_deref())
            .or(ev.attrs.group.as_deref()),
        owner: plate.and_then(|p| p.owner.as_deref()),
        direction: plate.and_then(|p| p.direction.as_deref()),
        confidence: plate.and_then(|p| p.confidence),
        vehicle: plate.map(|p| Vehicle {
            color: p.vehicle_color.as_deref(),
            kind: p.vehicle_type.as_deref(),
            brand: p.vehicle_brand.as_deref(),
            model: p.vehicle_model.as_deref(),
        }),
        age: face.and_then(|f| f.age.as_deref()),
        sex: face.and_then(|f| f.sex.as_deref()),
        glasses: face.and_then(|f| f.glasses.as_deref()),
        mask: face.and_then(|f| f.mask.as_deref()),
        subtype: ev.attrs.subtype.as_deref(),
        plates: &ev.attrs.plates,
        faces: &ev.attrs.faces,
        targets: &ev.attrs.targets,
        rules: &ev.attrs.rules,
        counters: ev.attrs.counters.as_ref(),
        alarm: ev.attrs.alarm.as_ref(),
        subscription: ev.attrs.subscription.as_deref(),
        warnings: ev
            .warnings
            .iter()
            .chain(notes)
            .map(String::as_str)
            .collect(),
        images: ImagesInfo {
            overview: overview.is_some(),
            target: target.is_some(),
            overview_bytes: overview.map(|i| i.data.len()),
            target_bytes: target.map(|i| i.data.len()),
            targets: ev
                .images
                .iter()
                .filter(|i| i.role == ImageRole::Target)
                .count(),
        },
        text: ev.attrs.text.as_deref(),
        provenance: ev.provenance.as_ref().map(|p| ProvenanceJson {
            via: p.via,
            name: p.name.as_deref(),
            path: p.path.as_deref(),
            file: p.file.as_deref(),
            captured: rfc3339(ev.time),
        }),
        detection: ev.detection.as_ref().map(|d| d.state),
        detection_error: ev.detection.as_ref().and_then(|d| d.error.as_deref()),
        objects: ev.detection.as_ref().map(|d| d.objects.as_slice()),
    };
    // Serialising plain structs of strings and numbers cannot fail; NaN confidence becomes null.
    serde_json::to_vec(&j).unwrap_or_else(|_| b"{}".to_vec())
}

/// The JSON published on `<base>/bridge/unparsed`.
pub fn unparsed_json(u: &Unparsed) -> Vec<u8> {
    serde_json::to_vec(u).unwrap_or_else(|_| b"{}".to_vec())
}

/// The optional `image_json` payload (`images.json_base64`).
pub fn image_json(
    device: &Device,
    category: &Category,
    role: ImageRole,
    time: SystemTime,
    data: &[u8],
) -> Vec<u8> {
    let v = serde_json::json!({
        "device": device.id,
        "category": category.as_str(),
        "role": role,
        "time": rfc3339(time),
        "image": base64::engine::general_purpose::STANDARD.encode(data),
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use serde_json::Value;

    use super::*;
    use crate::event::{Attributes, DeviceInfo, DeviceKind, Image};

    pub(crate) fn camera(id: &str, mac: &str) -> Device {
        Device {
            id: id.to_owned(),
            name: "Driveway".to_owned(),
            info: DeviceInfo {
                name: Some("IPC".into()),
                mac: Some(mac.to_owned()),
                serial: Some("SN123".into()),
                ip: Some("192.168.1.50".into()),
                peer: Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 50))),
                kind: DeviceKind::Camera,
                manufacturer: Some("Viewtron".into()),
                model: Some("LPR-IP4".into()),
                sw_version: Some("1.7".into()),
                ..DeviceInfo::default()
            },
            hw_key: mac.replace(':', ""),
            parent: None,
            area: Some("Garden".into()),
        }
    }

    pub(crate) fn nvr_channel(ch: u32) -> Device {
        let mut nvr = camera("aa_bb_cc_dd_ee_ff", "aa:bb:cc:dd:ee:ff");
        nvr.name = "NVR".into();
        nvr.info.kind = DeviceKind::Nvr;
        nvr.area = None;
        let mut c = nvr.clone();
        c.id = format!("aa_bb_cc_dd_ee_ff_ch{ch}");
        c.name = format!("Channel {ch}");
        c.hw_key = format!("aabbccddeeff_ch{ch}");
        c.info.channel = Some(ch);
        c.parent = Some(Box::new(nvr));
        c
    }

    pub(crate) fn event(category: Category, phase: Phase) -> Event {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_791_408_287_427_999);
        Event {
            device: DeviceInfo::default(),
            category,
            phase,
            time: t,
            time_source: TimeSource::Camera,
            time_raw: Some("2026-10-07 21:24:47".into()),
            received: t + Duration::from_millis(5),
            source: "viewtron".into(),
            raw_type: "VEHICE".into(),
            envelope: Some("ipc".into()),
            config_version: Some("1.7".into()),
            attrs: Attributes::default(),
            images: Vec::new(),
            warnings: Vec::new(),
            provenance: None,
            detection: None,
        }
    }

    pub(crate) fn jpeg(role: ImageRole, len: usize) -> Image {
        let mut v = vec![0u8; len];
        v[0] = 0xff;
        v[1] = 0xd8;
        for (i, b) in v.iter_mut().enumerate().skip(2) {
            *b = (i % 251) as u8;
        }
        Image {
            role,
            data: Bytes::from(v),
            content_type: "image/jpeg".into(),
            width: None,
            height: None,
            target_id: None,
        }
    }

    pub(crate) fn lpr_event() -> Arc<Event> {
        let mut e = event(Category::Lpr, Phase::Pulse);
        e.attrs.plates = vec![
            Plate {
                plate: "AIDRIVE".into(),
                list: Some("blackList".into()),
                group: Some("blackList".into()),
                direction: Some("away".into()),
                confidence: Some(99.0),
                vehicle_color: Some("grey".into()),
                vehicle_brand: Some("Tesla".into()),
                ..Plate::default()
            },
            Plate {
                plate: "SECOND".into(),
                ..Plate::default()
            },
        ];
        e.images = vec![
            jpeg(ImageRole::Overview, 1337),
            jpeg(ImageRole::Target, 949),
        ];
        Arc::new(e)
    }

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_791_408_287_427_999);
        assert_eq!(rfc3339(t), "2026-10-07T21:24:47.427999Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59.999999Z");
        let last = SystemTime::UNIX_EPOCH + Duration::from_micros(253_402_300_799_000_001);
        assert_eq!(rfc3339(last), "9999-12-31T23:59:59.000001Z");
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(rfc3339(before), "1970-01-01T00:00:00.000000Z");
        // Nanoseconds are cut, not rounded.
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_791_408_287, 427_999_999);
        assert_eq!(rfc3339(t), "2026-10-07T21:24:47.427999Z");
    }

    #[test]
    fn lpr_event_json() {
        let dev = camera("58_5b_69_40_f4_0d", "58:5b:69:40:f4:0d");
        let ev = lpr_event();
        let v: Value = serde_json::from_slice(&event_json(&dev, &ev)).unwrap();
        assert_eq!(v["event_type"], "plate_read");
        assert_eq!(v["category"], "lpr");
        assert_eq!(v["phase"], "pulse");
        assert_eq!(v["raw_type"], "VEHICE");
        assert_eq!(v["envelope"], "ipc");
        assert_eq!(v["time"], "2026-10-07T21:24:47.427999Z");
        assert_eq!(v["received"], "2026-10-07T21:24:47.432999Z");
        assert_eq!(v["time_source"], "camera");
        assert_eq!(v["plate"], "AIDRIVE");
        assert_eq!(v["list"], "blackList");
        assert_eq!(v["group"], "blackList");
        assert_eq!(v["confidence"], 99.0);
        assert_eq!(v["owner"], Value::Null);
        assert_eq!(v["vehicle"]["color"], "grey");
        assert_eq!(v["vehicle"]["type"], Value::Null);
        assert_eq!(v["plates"].as_array().unwrap().len(), 2);
        assert_eq!(v["plates"][1]["plate"], "SECOND");
        assert_eq!(v["device"]["id"], "58_5b_69_40_f4_0d");
        assert_eq!(v["device"]["peer"], "192.168.1.50");
        assert_eq!(v["device"]["kind"], "camera");
        assert_eq!(v["images"]["overview"], true);
        assert_eq!(v["images"]["overview_bytes"], 1337);
        assert_eq!(v["images"]["target_bytes"], 949);
        assert_eq!(v["images"]["targets"], 1);
        assert_eq!(v["counters"], Value::Null);
        assert_eq!(v["alarm"], Value::Null);
        assert_eq!(v["age"], Value::Null);
        // No image bytes anywhere.
        assert!(event_json(&dev, &ev).len() < 2000);
    }

    #[test]
    fn non_lpr_group_and_face() {
        let dev = nvr_channel(2);
        let mut e = event(Category::Intrusion, Phase::Start);
        e.attrs.group = Some("intrusion".into());
        e.attrs.faces = vec![FaceAttributes {
            sex: Some("male".into()),
            ..Default::default()
        }];
        let v: Value = serde_json::from_slice(&event_json(&dev, &e)).unwrap();
        assert_eq!(v["event_type"], "intrusion");
        assert_eq!(v["group"], "intrusion");
        assert_eq!(v["plate"], Value::Null);
        assert_eq!(v["vehicle"], Value::Null);
        assert_eq!(v["sex"], "male");
        assert_eq!(v["device"]["channel"], 2);
        assert_eq!(v["device"]["parent"], "aa_bb_cc_dd_ee_ff");
        assert_eq!(v["images"]["overview"], false);
        assert_eq!(v["images"]["overview_bytes"], Value::Null);
    }

    #[test]
    fn provenance_and_text_are_in_the_event_json_only_when_known() {
        let dev = camera("porch", "58:5b:69:40:f4:0d");
        let mut e = event(Category::Motion, Phase::Pulse);
        let j: serde_json::Value = serde_json::from_slice(&event_json(&dev, &e)).unwrap();
        assert!(
            j.get("provenance").is_none() && j.get("text").is_none(),
            "{j}"
        );
        e.time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_595_203);
        e.attrs.text = Some("Alarm Event: Motion Detection".into());
        e.provenance = Some(crate::event::Provenance {
            via: Via::Ftp,
            name: Some("07[M][0@0][0].jpg".into()),
            path: Some("/2025-12-01/001/jpg/13/20".into()),
            file: None,
        });
        let j: serde_json::Value = serde_json::from_slice(&event_json(&dev, &e)).unwrap();
        assert_eq!(
            j["provenance"],
            serde_json::json!({
                "via": "ftp",
                "name": "07[M][0@0][0].jpg",
                "path": "/2025-12-01/001/jpg/13/20",
                "captured": "2025-12-01T13:20:03.000000Z",
            })
        );
        assert_eq!(j["text"], "Alarm Event: Motion Detection");
    }

    #[test]
    fn event_types() {
        assert_eq!(event_type(&Category::LineCrossing), "line_crossed");
        assert_eq!(event_type(&Category::Metadata), "object_detected");
        assert_eq!(event_type(&Category::Fire), "detected");
        assert_eq!(event_type(&Category::Other("x".into())), "detected");
    }

    #[test]
    fn image_json_roundtrip() {
        let dev = camera("cam", "58:5b:69:40:f4:0d");
        let v: Value = serde_json::from_slice(&image_json(
            &dev,
            &Category::Face,
            ImageRole::Target,
            SystemTime::UNIX_EPOCH,
            b"\xff\xd8abc",
        ))
        .unwrap();
        assert_eq!(v["role"], "target");
        assert_eq!(v["image"], "/9hhYmM=");
    }
}
