//! Our own Viewtron fixtures (`tests/fixtures/viewtron/`, written from the protocol spec)
//! through `parse_post`, value by value.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use camqtt::event::{
    AlarmState, Category, DeviceInfo, DeviceKind, Event, EventKind, ImageRole, Phase, Point, Rect,
    TimeSource, Units,
};
use camqtt::sources::viewtron::parse::{ParseError, Post, PostMeta, parse_post};

/// 2026-11-21T00:00:00Z: every fixture time is before this.
const RECEIVED_S: u64 = 1_795_219_200;

fn meta() -> PostMeta {
    PostMeta {
        peer: Some("192.0.2.10".parse::<IpAddr>().unwrap()),
        received: UNIX_EPOCH + Duration::from_secs(RECEIVED_S),
    }
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/viewtron")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn jpeg(name: &str) -> Vec<u8> {
    read(&format!("images/{name}.jpg"))
}

fn parse(name: &str) -> Result<Post, ParseError> {
    parse_post(&read(name), &meta())
}

fn events(name: &str) -> Vec<Event> {
    match parse(name) {
        Ok(Post::Events(e)) => e,
        other => panic!("{name}: expected events, got {other:?}"),
    }
}

fn one(name: &str) -> Event {
    let mut e = events(name);
    assert_eq!(e.len(), 1, "{name}");
    let e = e.remove(0);
    assert_eq!(e.source, "viewtron");
    assert_eq!(e.received, meta().received);
    assert_eq!(e.device.peer, meta().peer);
    assert_eq!(e.device.manufacturer.as_deref(), Some("Viewtron"));
    e
}

fn heartbeat(name: &str) -> DeviceInfo {
    match parse(name) {
        Ok(Post::Heartbeat(d)) => *d,
        other => panic!("{name}: expected heartbeat, got {other:?}"),
    }
}

fn micros(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap().as_micros()
}

fn rect(x1: i64, y1: i64, x2: i64, y2: i64, units: Units) -> Option<Rect> {
    Some(Rect {
        x1,
        y1,
        x2,
        y2,
        units,
    })
}

fn pt(x: i64, y: i64) -> Point {
    Point { x, y }
}

#[test]
fn ipc_lpr_two_plates_with_image_flags() {
    let e = one("ipc-lpr-two-plates.xml");
    assert_eq!(e.category, Category::Lpr);
    assert_eq!(e.raw_type, "VEHICE");
    assert_eq!(e.phase, Phase::Pulse);
    assert_eq!(e.envelope.as_deref(), Some("ipc"));
    assert_eq!(e.config_version.as_deref(), Some("1.7"));
    assert_eq!(micros(e.time), 1_790_000_000_123_456);
    assert_eq!(e.time_source, TimeSource::Camera);
    assert_eq!(e.time_raw.as_deref(), Some("1790000000123456"));
    assert_eq!(e.device.name.as_deref(), Some("Gate LPR"));
    assert_eq!(e.device.mac.as_deref(), Some("02:00:5e:10:20:30"));
    assert_eq!(e.device.serial.as_deref(), Some("CAMQTT-SN-0001"));
    assert_eq!(e.device.channel, Some(1));
    assert_eq!(e.device.kind, DeviceKind::Camera);
    assert_eq!(e.device.ip, None);
    assert_eq!(e.attrs.subscription.as_deref(), Some("FEATURE_RESULT"));
    assert_eq!(e.attrs.group, None);

    assert_eq!(e.attrs.plates.len(), 2);
    let p = &e.attrs.plates[0];
    assert_eq!(p.plate, "KA 123 Z");
    assert_eq!(p.list.as_deref(), Some("whiteList"));
    assert_eq!(p.group.as_deref(), Some("whiteList"));
    assert_eq!(p.direction.as_deref(), Some("approach"));
    assert_eq!(p.confidence, Some(97.5));
    assert_eq!(p.plate_color.as_deref(), Some("2"));
    assert_eq!(p.vehicle_color.as_deref(), Some("blue"));
    assert_eq!(p.vehicle_type.as_deref(), Some("suv"));
    assert_eq!(p.vehicle_brand.as_deref(), Some("Volvo"));
    assert_eq!(p.vehicle_model.as_deref(), Some("Volvo_XC60"));
    assert_eq!(p.plate_box, rect(1200, 6050, 2310, 6600, Units::Norm10000));
    assert_eq!(p.vehicle_box, rect(800, 4000, 3000, 7100, Units::Unknown));
    assert_eq!(p.target_id, Some(21));
    let p = &e.attrs.plates[1];
    assert_eq!(p.plate, "XY-9876");
    assert_eq!(p.list, None);
    assert_eq!(p.group, None);
    assert_eq!(
        p.direction.as_deref(),
        Some("away"),
        "leave is an alias of away"
    );
    assert_eq!(p.confidence, Some(81.25));
    assert_eq!(p.plate_color.as_deref(), Some("3"));
    assert_eq!(p.vehicle_box, None, "carRect with an empty y has no box");
    assert_eq!(p.plate_box, None);
    assert_eq!(p.target_id, Some(22));
    assert!(e.attrs.targets.is_empty());

    // overview = listInfo item image=0 (wrapped base64), not sourceDataInfo; two plate crops
    assert_eq!(e.images.len(), 3, "{:?}", e.warnings);
    assert_eq!(e.images[0].role, ImageRole::Overview);
    assert_eq!(e.images[0].data.as_ref(), jpeg("overview").as_slice());
    assert_eq!(e.images[0].width, None);
    assert_eq!(e.images[0].target_id, None);
    assert_eq!(e.images[1].role, ImageRole::Target);
    assert_eq!(e.images[1].data.as_ref(), jpeg("plate1").as_slice());
    assert_eq!(
        (e.images[1].width, e.images[1].height),
        (Some(32), Some(12))
    );
    assert_eq!(e.images[1].target_id, Some(21));
    assert_eq!(e.images[2].data.as_ref(), jpeg("plate2").as_slice());
    assert_eq!(
        (e.images[2].width, e.images[2].height),
        (Some(32), Some(12))
    );
    assert_eq!(e.images[2].target_id, Some(22));
    assert!(e.images.iter().all(|i| i.content_type == "image/jpeg"));
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
}

#[test]
fn ipc_lpr_positional_items_and_overview_fallback() {
    let e = one("ipc-lpr-positional-fallback.xml");
    assert_eq!(e.category, Category::Lpr);
    assert_eq!(e.raw_type, "VEHICLE");
    assert_eq!(
        micros(e.time),
        1_790_000_000_123_000,
        "13 digits are milliseconds"
    );
    assert_eq!(e.attrs.plates.len(), 1);
    let p = &e.attrs.plates[0];
    assert_eq!(p.plate, "LONE1");
    assert_eq!(p.list.as_deref(), Some("blackList"));
    assert_eq!(p.direction, None, "unknown direction words are dropped");
    assert_eq!(p.confidence, None);
    // item 0 (no flag, 2 items) is the overview but a placeholder → sourceDataInfo (no padding)
    assert_eq!(e.images.len(), 2);
    assert_eq!(e.images[0].role, ImageRole::Overview);
    assert_eq!(e.images[0].data.as_ref(), jpeg("overview").as_slice());
    assert_eq!(
        (e.images[0].width, e.images[0].height),
        (Some(64), Some(40))
    );
    // item 1 crop: CRLF-wrapped base64, declared length 10 ignored
    assert_eq!(e.images[1].role, ImageRole::Target);
    assert_eq!(e.images[1].data.as_ref(), jpeg("plate1").as_slice());
    assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
    assert!(
        e.warnings[0].contains("listInfo/item[1]"),
        "{:?}",
        e.warnings
    );
}

#[test]
fn nvr_vehicle_with_group_and_owner() {
    let e = one("nvr-vehicle-group.xml");
    assert_eq!(e.category, Category::Lpr);
    assert_eq!(e.raw_type, "vehicle");
    assert_eq!(e.envelope.as_deref(), Some("nvr"));
    assert_eq!(e.config_version.as_deref(), Some("2.0.0"));
    assert_eq!(e.device.kind, DeviceKind::Nvr);
    assert_eq!(e.device.name.as_deref(), Some("Yard NVR"));
    assert_eq!(e.device.ip.as_deref(), Some("10.20.30.40"));
    assert_eq!(e.device.mac.as_deref(), Some("02:00:5e:aa:bb:01"));
    assert_eq!(e.device.channel, Some(4));
    assert_eq!(e.device.serial, None);
    assert_eq!(micros(e.time), 1_790_000_100_500_000);
    assert_eq!(e.phase, Phase::Pulse);
    let p = &e.attrs.plates[0];
    assert_eq!(e.attrs.plates.len(), 1);
    assert_eq!(p.plate, "RES 42");
    assert_eq!(p.group.as_deref(), Some("Residents"));
    assert_eq!(p.owner.as_deref(), Some("Flat 3B"));
    assert_eq!(p.list, None);
    assert_eq!(p.plate_color.as_deref(), Some("yellow"));
    assert_eq!(p.vehicle_type.as_deref(), Some("sedan"));
    assert_eq!(p.vehicle_color.as_deref(), Some("red"));
    assert_eq!(p.vehicle_brand.as_deref(), Some("Skoda"));
    assert_eq!(p.vehicle_model.as_deref(), Some("Skoda_Octavia"));
    assert_eq!(p.plate_box, rect(700, 400, 828, 464, Units::Pixels));
    assert_eq!(p.vehicle_box, rect(500, 200, 1000, 700, Units::Pixels));
    assert_eq!(p.target_id, Some(9001));
    assert_eq!(p.direction, None);
    assert_eq!(p.confidence, None);
    assert_eq!(e.images.len(), 2);
    assert_eq!(e.images[0].role, ImageRole::Overview);
    assert_eq!(e.images[0].data.as_ref(), jpeg("overview").as_slice());
    assert_eq!(
        (e.images[0].width, e.images[0].height),
        (None, None),
        "0x0 means unknown"
    );
    assert_eq!(e.images[1].data.as_ref(), jpeg("plate2").as_slice());
    assert_eq!(e.images[1].target_id, Some(9001));
    assert_eq!(
        (e.images[1].width, e.images[1].height),
        (Some(128), Some(64))
    );
    assert!(
        e.warnings.is_empty(),
        "non-numeric declared length is only a hint: {:?}",
        e.warnings
    );
}

#[test]
fn nvr_face_with_attributes() {
    let e = one("nvr-face-attributes.xml");
    assert_eq!(e.category, Category::Face);
    assert_eq!(e.attrs.subtype.as_deref(), Some("detect"));
    assert_eq!(e.device.mac.as_deref(), Some("02:00:5e:aa:bb:02"));
    assert_eq!(e.device.channel, Some(2));
    assert_eq!(micros(e.time), 1_790_000_200_000_001);
    assert_eq!(e.attrs.faces.len(), 2);
    let f = &e.attrs.faces[0];
    assert_eq!(
        (
            f.age.as_deref(),
            f.sex.as_deref(),
            f.glasses.as_deref(),
            f.mask.as_deref(),
            f.target_id
        ),
        (
            Some("youth"),
            Some("female"),
            Some("yes"),
            Some("no"),
            Some(71)
        )
    );
    let f = &e.attrs.faces[1];
    assert_eq!(
        (
            f.age.as_deref(),
            f.sex.as_deref(),
            f.glasses.as_deref(),
            f.mask.as_deref(),
            f.target_id
        ),
        (
            Some("elderly"),
            Some("male"),
            Some("unknown"),
            Some("yes"),
            Some(72)
        )
    );
    assert_eq!(e.attrs.targets.len(), 2);
    assert_eq!(
        e.attrs.targets[0].rect,
        rect(100, 120, 180, 200, Units::Pixels)
    );
    assert_eq!(e.attrs.targets[1].object.as_deref(), Some("face"));
    // overview is a placeholder → dropped with a warning; one crop
    assert_eq!(e.images.len(), 1);
    assert_eq!(e.images[0].role, ImageRole::Target);
    assert_eq!(e.images[0].target_id, Some(71));
    assert_eq!(e.images[0].data.as_ref(), jpeg("crop").as_slice());
    assert_eq!(e.warnings.len(), 1);
    assert!(e.warnings[0].contains("placeholder"), "{:?}", e.warnings);
}

#[test]
fn ipc_pea_perimeter() {
    let e = one("ipc-pea-perimeter.xml");
    assert_eq!(e.category, Category::Intrusion);
    assert_eq!(e.attrs.group.as_deref(), Some("intrusion"));
    assert_eq!(e.phase, Phase::Start);
    assert_eq!(e.device.name.as_deref(), Some("Back Garden"));
    assert_eq!(e.device.serial.as_deref(), Some("CAMQTT-SN-0002"));
    assert_eq!(e.attrs.rules.len(), 1);
    let r = &e.attrs.rules[0];
    assert_eq!(r.event_id, Some(501));
    assert_eq!(r.target_id, Some(61));
    assert_eq!(r.status.as_deref(), Some("SMART_START"));
    assert_eq!(r.boundary.as_deref(), Some("area"));
    assert_eq!(r.polygon, vec![pt(100, 200), pt(9000, 300), pt(5000, 9500)]);
    assert_eq!(r.line, None);
    assert_eq!(r.rect, rect(4000, 3000, 5000, 8000, Units::Norm10000));
    assert_eq!(e.attrs.targets.len(), 2);
    assert_eq!(e.attrs.targets[0].target_id, Some(61));
    assert_eq!(e.attrs.targets[0].object.as_deref(), Some("person"));
    assert_eq!(e.attrs.targets[0].object_raw.as_deref(), Some("1"));
    assert_eq!(e.attrs.targets[1].object.as_deref(), Some("car"));
    assert_eq!(
        e.attrs.targets[1].rect,
        rect(6000, 5000, 8000, 9000, Units::Norm10000)
    );
    let roles: Vec<_> = e.images.iter().map(|i| (i.role, i.target_id)).collect();
    assert_eq!(
        roles,
        vec![
            (ImageRole::Overview, None),
            (ImageRole::Target, Some(61)),
            (ImageRole::Target, Some(62))
        ]
    );
    assert_eq!(
        e.image(ImageRole::Overview).unwrap().data.as_ref(),
        jpeg("overview").as_slice()
    );
    assert_eq!(
        (e.images[1].width, e.images[1].height),
        (Some(24), Some(32))
    );
}

#[test]
fn ipc_pea_tripwire_line_variants() {
    let cases = [
        (
            "ipc-pea-tripwire-a.xml",
            601,
            "SMART_PROCEDURE",
            Phase::Pulse,
            (pt(1000, 5000), pt(9000, 5200)),
            None,
        ),
        (
            "ipc-pea-tripwire-b.xml",
            602,
            "SMART_STOP",
            Phase::Stop,
            (pt(2000, 1000), pt(2100, 9000)),
            None,
        ),
        (
            "ipc-pea-tripwire-c.xml",
            603,
            "SMART_START",
            Phase::Start,
            (pt(300, 400), pt(9300, 9400)),
            Some("3"),
        ),
    ];
    for (file, event_id, status, phase, line, direct) in cases {
        let e = one(file);
        assert_eq!(e.category, Category::LineCrossing, "{file}");
        assert_eq!(e.raw_type, "PEA");
        assert_eq!(e.attrs.group.as_deref(), Some("intrusion"));
        assert_eq!(e.phase, phase, "{file}");
        let r = &e.attrs.rules[0];
        assert_eq!(r.event_id, Some(event_id), "{file}");
        assert_eq!(r.status.as_deref(), Some(status), "{file}");
        assert_eq!(r.line, Some(line), "{file}");
        assert_eq!(r.direction.as_deref(), direct, "{file}");
        assert_eq!(r.boundary.as_deref(), Some("tripwire"), "{file}");
    }
    assert_eq!(
        one("ipc-pea-tripwire-a.xml").attrs.rules[0].rect,
        rect(10, 20, 30, 40, Units::Norm10000)
    );
}

#[test]
fn ipc_aoi_entry_and_exit() {
    let e = one("ipc-aoi-entry.xml");
    assert_eq!(e.category, Category::ZoneEntry);
    assert_eq!(e.raw_type, "AOI_ENTRY");
    assert_eq!(e.attrs.group.as_deref(), Some("intrusion"));
    assert_eq!(e.phase, Phase::Start);
    let r = &e.attrs.rules[0];
    assert_eq!(r.event_id, Some(701));
    assert_eq!(r.polygon.len(), 4);
    assert_eq!(e.attrs.targets[0].object.as_deref(), Some("bike"));
    assert_eq!(e.attrs.targets[0].object_raw.as_deref(), Some("4"));
    assert!(e.images.is_empty());
    assert!(
        e.warnings.is_empty(),
        "empty image elements are absent: {:?}",
        e.warnings
    );

    let e = one("ipc-aoi-exit.xml");
    assert_eq!(e.category, Category::ZoneExit);
    assert_eq!(e.attrs.targets[0].target_id, Some(82));
    assert_eq!(e.attrs.targets[0].object.as_deref(), Some("car"));
    assert_eq!(e.images.len(), 1);
    assert_eq!(e.images[0].role, ImageRole::Target);
    assert_eq!(e.images[0].target_id, Some(82));
}

#[test]
fn ipc_loiter() {
    let e = one("ipc-loiter.xml");
    assert_eq!(e.category, Category::Loitering);
    assert_eq!(e.attrs.group.as_deref(), Some("intrusion"));
    assert_eq!(e.phase, Phase::Start);
    assert_eq!(e.attrs.rules[0].event_id, Some(801));
    assert_eq!(e.attrs.rules[0].polygon.len(), 4);
    assert_eq!(e.attrs.targets[0].target_id, Some(91));
    assert_eq!(e.attrs.targets[0].object.as_deref(), Some("person"));
}

#[test]
fn ipc_passlinecount_with_counters() {
    let e = one("ipc-passlinecount.xml");
    assert_eq!(e.category, Category::Counting);
    assert_eq!(e.attrs.subtype.as_deref(), Some("line"));
    assert_eq!(e.attrs.group, None);
    let c = e.attrs.counters.as_ref().expect("counters");
    let s = |v: &[(&str, u64)]| {
        v.iter()
            .map(|(k, n)| ((*k).to_owned(), *n))
            .collect::<Vec<_>>()
    };
    assert_eq!(c.enter, s(&[("car", 12), ("person", 345), ("bike", 6)]));
    assert_eq!(c.leave, s(&[("car", 11), ("person", 340), ("bike", 5)]));
    assert_eq!(c.exist, s(&[("car", 1), ("person", 5), ("bike", 1)]));
    let r = &e.attrs.rules[0];
    assert_eq!(r.event_id, Some(901));
    assert_eq!(r.line, Some((pt(0, 5000), pt(10000, 5000))));
    assert_eq!(r.direction.as_deref(), Some("1"));
    assert_eq!(r.rect, rect(100, 200, 300, 400, Units::Norm10000));
    assert_eq!(e.attrs.targets[0].object.as_deref(), Some("person"));
}

#[test]
fn nvr_counting_by_line_has_no_counters() {
    let e = one("nvr-counting-by-line.xml");
    assert_eq!(e.category, Category::Counting);
    assert_eq!(e.attrs.subtype.as_deref(), Some("line"));
    assert_eq!(e.attrs.counters, None);
    assert_eq!(e.device.channel, Some(7));
    let r = &e.attrs.rules[0];
    assert_eq!((r.event_id, r.target_id), (Some(1001), Some(93)));
    assert_eq!(r.boundary.as_deref(), Some("tripwire"));
    assert_eq!(r.line, Some((pt(5000, 0), pt(5000, 10000))));
    assert_eq!(r.rect, rect(0, 0, 0, 0, Units::Norm10000));
    assert_eq!(e.attrs.targets[0].object.as_deref(), Some("bike"));
    assert_eq!(e.attrs.targets[0].object_raw.as_deref(), Some("motor"));
}

#[test]
fn ipc_vsd_images_inside_block() {
    let e = one("ipc-vsd.xml");
    assert_eq!(e.category, Category::Metadata);
    assert_eq!(e.images.len(), 2);
    assert_eq!(e.images[0].role, ImageRole::Overview);
    assert_eq!(e.images[0].data.as_ref(), jpeg("overview").as_slice());
    assert_eq!(e.images[1].data.as_ref(), jpeg("crop").as_slice());
    assert_eq!(
        (e.images[1].width, e.images[1].height),
        (Some(24), Some(32))
    );
    assert_eq!(e.attrs.targets.len(), 1);
    assert_eq!(e.attrs.targets[0].object.as_deref(), Some("person"));
    assert_eq!(e.attrs.faces[0].sex.as_deref(), Some("male"));
    assert_eq!(e.attrs.rules[0].event_id, Some(1101));
}

#[test]
fn nvr_video_metadata() {
    let e = one("nvr-video-metadata.xml");
    assert_eq!(e.category, Category::Metadata);
    let r = &e.attrs.rules[0];
    assert_eq!(r.boundary.as_deref(), Some("area"));
    assert_eq!(
        r.polygon,
        vec![pt(0, 0), pt(10000, 0), pt(10000, 10000), pt(0, 10000)]
    );
    assert_eq!(r.rect, rect(2000, 3000, 2500, 7000, Units::Norm10000));
    let classes: Vec<_> = e
        .attrs
        .targets
        .iter()
        .map(|t| (t.target_id, t.object.as_deref()))
        .collect();
    assert_eq!(
        classes,
        vec![(Some(95), Some("car")), (Some(96), Some("person"))]
    );
    assert_eq!(e.images.len(), 1);
    assert_eq!(e.images[0].target_id, Some(95));
}

#[test]
fn ipc_traject_two_targets() {
    let e = one("ipc-traject-two-targets.xml");
    assert_eq!(e.category, Category::Traject);
    assert_eq!(e.raw_type, "traject");
    assert_eq!(e.device.mac.as_deref(), Some("02:00:5e:10:20:32"));
    assert_eq!(e.device.serial.as_deref(), Some("CAMQTT-SN-0003"));
    assert_eq!(e.attrs.subscription.as_deref(), Some("FEATURE_RESULT"));
    assert_eq!(e.attrs.targets.len(), 2);
    let t = &e.attrs.targets[0];
    assert_eq!(
        (t.target_id, t.object.as_deref(), t.velocity, t.direction),
        (Some(1301), Some("person"), Some(3), Some(270))
    );
    assert_eq!(t.rect, rect(100, 200, 300, 600, Units::Norm10000));
    let t = &e.attrs.targets[1];
    assert_eq!(
        (t.target_id, t.object.as_deref(), t.object_raw.as_deref()),
        (Some(1302), Some("bike"), Some("motor"))
    );
}

#[test]
fn ipc_alarm_status_two_elements() {
    let e = events("ipc-alarm-status-two.xml");
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].category, Category::Intrusion);
    assert_eq!(e[0].phase, Phase::Start);
    assert_eq!(e[0].raw_type, "perimeterAlarm");
    assert_eq!(
        e[0].attrs.alarm,
        Some(AlarmState {
            name: "perimeterAlarm".into(),
            id: Some("1".into()),
            active: true,
            covers: vec![Category::Intrusion],
        })
    );
    assert_eq!(e[1].category, Category::LineCrossing);
    assert_eq!(e[1].phase, Phase::Stop);
    assert_eq!(
        e[1].attrs.alarm,
        Some(AlarmState {
            name: "tripwireAlarm".into(),
            id: Some("2".into()),
            active: false,
            covers: vec![Category::LineCrossing],
        })
    );
    for ev in &e {
        assert_eq!(ev.time_source, TimeSource::Receiver);
        assert_eq!(ev.time, meta().received);
        assert_eq!(ev.time_raw.as_deref(), Some("11-21-2026 03:04:05 PM"));
        assert_eq!(ev.device.name.as_deref(), Some("Back Garden"));
        assert_eq!(ev.device.device_no.as_deref(), Some("3"));
        assert_eq!(ev.device.serial.as_deref(), Some("CAMQTT-SN-0002"));
        assert_eq!(ev.device.ip.as_deref(), Some("10.20.30.50"));
        assert_eq!(ev.device.mac.as_deref(), Some("02:00:5e:10:20:31"));
        assert_eq!(ev.device.kind, DeviceKind::Camera);
        assert_eq!(ev.envelope.as_deref(), Some("ipc"));
    }
}

#[test]
fn nvr_alarm_status_items() {
    let e = events("nvr-alarm-status-items.xml");
    let got: Vec<_> = e
        .iter()
        .map(|ev| {
            (
                ev.category.clone(),
                ev.phase,
                ev.attrs.alarm.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                Category::Motion,
                Phase::Start,
                AlarmState {
                    name: "motionAlarm".into(),
                    id: Some("1".into()),
                    active: true,
                    covers: vec![Category::Motion],
                }
            ),
            (
                Category::Motion,
                Phase::Stop,
                AlarmState {
                    name: "motionAlarm".into(),
                    id: Some("2".into()),
                    active: false,
                    covers: vec![Category::Motion],
                }
            ),
            (
                Category::Alarm,
                Phase::Start,
                AlarmState {
                    name: "chlOfflineAlarm".into(),
                    id: Some("5".into()),
                    active: true,
                    covers: vec![Category::Alarm],
                }
            ),
        ],
        "the commented-out document after the root is ignored"
    );
    assert_eq!(e[2].attrs.subtype.as_deref(), Some("camera_offline"));
    assert_eq!(micros(e[0].time), 1_790_001_300_000_000);
    assert_eq!(e[0].device.kind, DeviceKind::Nvr);
    assert_eq!(e[0].device.channel, Some(5));
    assert_eq!(e[0].envelope.as_deref(), Some("nvr"));
}

/// The alarm fields of a status event, and that it is a status.
fn alarm_of(e: &Event) -> &AlarmState {
    assert_eq!(e.kind(), EventKind::Status, "{}", e.raw_type);
    e.attrs.alarm.as_ref().unwrap()
}

#[test]
fn ipc_lpr_read_and_its_alarm_status_pair() {
    let e = one("ipc-lpr-test123.xml");
    assert_eq!(e.kind(), EventKind::Detection);
    assert_eq!((e.category.clone(), e.phase), (Category::Lpr, Phase::Pulse));
    assert_eq!(e.attrs.plates.len(), 1);
    let p = &e.attrs.plates[0];
    assert_eq!(
        (p.plate.as_str(), p.list.as_deref(), p.direction.as_deref()),
        ("TEST123", Some("whiteList"), Some("approach"))
    );
    assert_eq!(p.confidence, Some(97.0));
    assert_eq!(micros(e.time), 1_790_002_000_250_000);
    assert_eq!(e.device.mac.as_deref(), Some("02:00:5e:10:30:01"));
    assert_eq!(e.image(ImageRole::Overview).unwrap().data, jpeg("overview"));
    assert_eq!(e.image(ImageRole::Target).unwrap().data, jpeg("plate1"));

    for (file, active, raw) in [
        (
            "ipc-alarm-status-vehice-on-12h.xml",
            true,
            "12-02-2026 01:05:09 PM",
        ),
        (
            "ipc-alarm-status-vehice-off-12h.xml",
            false,
            "12-02-2026 01:05:29 PM",
        ),
    ] {
        let e = one(file);
        assert_eq!(
            alarm_of(&e),
            &AlarmState {
                name: "vehiceAlarm".into(),
                id: Some("1".into()),
                active,
                covers: vec![Category::Lpr],
            },
            "{file}"
        );
        assert_eq!(e.category, Category::Lpr);
        assert_eq!(e.phase, if active { Phase::Start } else { Phase::Stop });
        // 12-hour camera-local text without a zone: receive time, raw text kept.
        assert_eq!(e.time_source, TimeSource::Receiver, "{file}");
        assert_eq!(e.time, meta().received);
        assert_eq!(e.time_raw.as_deref(), Some(raw));
        assert!(e.attrs.plates.is_empty() && e.images.is_empty());
        assert_eq!(e.device.mac.as_deref(), Some("02:00:5e:10:30:01"));
        assert_eq!(e.device.device_no.as_deref(), Some("1"));
        assert_eq!(e.device.serial.as_deref(), Some("CAMQTT-SN-3001"));
        assert_eq!(e.device.kind, DeviceKind::Camera);
    }
}

#[test]
fn ipc_intrusion_and_its_perimeter_alarm() {
    let e = one("ipc-pea-intrusion-start.xml");
    assert_eq!(e.kind(), EventKind::Detection);
    assert_eq!(
        (e.category.clone(), e.phase),
        (Category::Intrusion, Phase::Start)
    );
    let r = &e.attrs.rules[0];
    assert_eq!((r.event_id, r.target_id), (Some(7101), Some(7201)));
    assert_eq!(r.polygon.len(), 3);
    assert_eq!(e.attrs.targets[0].object.as_deref(), Some("person"));
    assert_eq!(e.image(ImageRole::Overview).unwrap().data, jpeg("overview"));
    assert_eq!(e.image(ImageRole::Target).unwrap().data, jpeg("crop"));
    // On an IP camera perimeterAlarm is intrusion (line crossing has tripwireAlarm).
    for (file, active) in [
        ("ipc-alarm-status-perimeter-on.xml", true),
        ("ipc-alarm-status-perimeter-off.xml", false),
    ] {
        let e = one(file);
        let a = alarm_of(&e);
        assert_eq!((a.name.as_str(), a.active), ("perimeterAlarm", active));
        assert_eq!(a.covers, vec![Category::Intrusion]);
        assert_eq!(e.category, Category::Intrusion);
        assert_eq!(e.device.mac.as_deref(), Some("02:00:5e:10:30:02"));
    }
}

#[test]
fn ipc_avd_scene_change_and_its_status() {
    let e = one("ipc-avd-scene-change.xml");
    assert_eq!(e.kind(), EventKind::Detection);
    assert_eq!(e.raw_type, "AVD");
    assert_eq!(e.category, Category::Alarm);
    assert_eq!(e.attrs.subtype.as_deref(), Some("tamper"));
    assert!(e.images.is_empty());
    assert_eq!(e.device.mac.as_deref(), Some("02:00:5e:10:30:03"));
    for (file, active) in [
        ("ipc-alarm-status-scene-change-on.xml", true),
        ("ipc-alarm-status-scene-change-off.xml", false),
    ] {
        let e = one(file);
        let a = alarm_of(&e);
        assert_eq!(
            (a.name.as_str(), a.id.as_deref(), a.active),
            ("sceneChange", Some("1"), active)
        );
        assert_eq!(a.covers, vec![Category::Alarm]);
        assert_eq!(e.category, Category::Alarm);
        assert_eq!(e.attrs.subtype.as_deref(), Some("tamper"));
        assert_eq!(e.time_raw.as_deref().map(|t| &t[..10]), Some("2026-12-02"));
    }
}

#[test]
fn nvr_perimeter_alarm_around_a_line_crossing() {
    for (file, active, t) in [
        (
            "nvr-alarm-status-perimeter-on.xml",
            true,
            1_790_002_300_000_000,
        ),
        (
            "nvr-alarm-status-perimeter-off.xml",
            false,
            1_790_002_320_000_000,
        ),
    ] {
        let e = one(file);
        let a = alarm_of(&e);
        assert_eq!(
            (a.name.as_str(), a.id.as_deref(), a.active),
            ("perimeterAlarm", Some("1"), active)
        );
        // The NVR reports region intrusion and line crossing alike (§7.2): no category.
        assert_eq!(a.covers, vec![Category::Intrusion, Category::LineCrossing]);
        assert!(a.is_ambiguous());
        assert_eq!(e.category, Category::Alarm, "{file}");
        assert_eq!(e.attrs.group, None);
        assert_eq!(micros(e.time), t);
        assert_eq!(e.time_source, TimeSource::Camera);
        assert_eq!(e.device.kind, DeviceKind::Nvr);
        assert_eq!(e.device.channel, Some(4));
        assert_eq!(e.device.mac.as_deref(), Some("02:00:5e:aa:30:04"));
    }
    let e = one("nvr-line-crossing-tripwire.xml");
    assert_eq!(e.kind(), EventKind::Detection);
    assert_eq!(e.category, Category::LineCrossing);
    assert_eq!(e.raw_type, "lineCrossing");
    let r = &e.attrs.rules[0];
    assert_eq!(
        (r.event_id, r.target_id, r.boundary.as_deref()),
        (Some(3301), Some(3401), Some("tripwire"))
    );
    assert_eq!(r.line, Some((pt(2000, 1000), pt(2000, 9000))));
    assert_eq!(e.attrs.targets[0].object.as_deref(), Some("person"));
    assert!(e.images.is_empty());
    assert_eq!(e.device.channel, Some(4));
}

#[test]
fn heartbeats() {
    let d = heartbeat("heartbeat-deviceinfo.xml");
    assert_eq!(d.name.as_deref(), Some("Porch Cam"));
    assert_eq!(d.device_no.as_deref(), Some("2"));
    assert_eq!(d.serial.as_deref(), Some("CAMQTT-SN-0004"));
    assert_eq!(d.ip.as_deref(), Some("10.20.30.51"));
    assert_eq!(d.mac.as_deref(), Some("02:00:5e:10:20:33"));
    assert_eq!(d.kind, DeviceKind::Camera);
    assert_eq!(d.peer, meta().peer);

    let d = heartbeat("heartbeat-nvr-keepalive.xml");
    assert_eq!(d.name.as_deref(), Some("Yard NVR"));
    assert_eq!(d.ip.as_deref(), Some("10.20.30.40"));
    assert_eq!(d.mac.as_deref(), Some("02:00:5e:aa:bb:01"));
    assert_eq!(d.channel, None);
    assert_eq!(d.kind, DeviceKind::Nvr);

    let d = heartbeat("heartbeat-ipc-keepalive-nodecl.xml");
    assert_eq!(d.name.as_deref(), Some("Gate LPR"));
    assert_eq!(d.ip.as_deref(), Some("10.20.30.52"));
    assert_eq!(d.mac, None, "all-zero MAC is no MAC");
    assert_eq!(
        d.kind,
        DeviceKind::Camera,
        "config 1.7 keepalive comes from a camera"
    );

    for body in [&b""[..], b"\r\n", b"   "] {
        match parse_post(body, &meta()) {
            Ok(Post::Heartbeat(d)) => assert_eq!((d.peer, d.name), (meta().peer, None)),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn bom_no_declaration_prefixes_and_attribute_order() {
    let e = one("bom-no-declaration-vfd.xml");
    assert_eq!(e.category, Category::Face);
    assert_eq!(micros(e.time), 1_790_001_400_000_000);
    assert_eq!(e.attrs.targets[0].target_id, Some(1401));
    assert_eq!(e.attrs.targets[0].rect, rect(1, 2, 3, 4, Units::Norm10000));
    assert_eq!(e.attrs.faces[0].age.as_deref(), Some("young"));
    assert_eq!(e.attrs.faces[0].target_id, Some(1401));
    assert_eq!(e.images[0].data.as_ref(), jpeg("crop").as_slice());
    assert_eq!(
        (e.images[0].width, e.images[0].height),
        (Some(24), Some(32))
    );
}

#[test]
fn twenty_digit_time_falls_back_with_a_warning() {
    let e = one("time-20-digit.xml");
    assert_eq!(e.category, Category::Lpr);
    assert_eq!(e.attrs.plates[0].plate, "TIME20");
    assert_eq!(e.time, meta().received);
    assert_eq!(e.time_source, TimeSource::Receiver);
    assert_eq!(e.time_raw.as_deref(), Some("18445822972087551616"));
    assert_eq!(e.warnings.len(), 1);
    assert!(e.warnings[0].contains("currentTime"), "{:?}", e.warnings);
}

#[test]
fn seconds_and_milliseconds() {
    let e = one("time-seconds.xml");
    assert_eq!(micros(e.time), 1_790_001_500_000_000);
    assert_eq!(
        e.category,
        Category::Intrusion,
        "PEA without a block is intrusion"
    );
    let e = one("time-millis-vfd-match.xml");
    assert_eq!(micros(e.time), 1_790_001_600_250_000);
    assert_eq!(e.category, Category::Face);
    assert_eq!(e.attrs.subtype.as_deref(), Some("match"));
}

#[test]
fn unknown_type_is_kept_with_generic_parts() {
    let e = one("unknown-type-falling.xml");
    assert_eq!(e.category, Category::Other("falling".into()));
    assert_eq!(e.raw_type, "FALLING");
    assert_eq!(e.phase, Phase::Start);
    assert_eq!(e.attrs.rules[0].event_id, Some(1501));
    assert_eq!(e.attrs.rules[0].target_id, Some(97));
    assert_eq!(e.images.len(), 1);
    assert_eq!(e.images[0].role, ImageRole::Overview);
}

#[test]
fn xml_bomb_is_refused() {
    let err = parse("xml-bomb.xml").unwrap_err();
    assert_eq!(err.reason(), "forbidden-dtd");
}

#[test]
fn every_fixture_parses_or_fails_cleanly() {
    let mut n = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("xml") {
            continue;
        }
        n += 1;
        let body = std::fs::read(&path).unwrap();
        match parse_post(&body, &meta()) {
            Ok(Post::Events(events)) => {
                assert!(!events.is_empty(), "{path:?}");
                for e in events {
                    // overview first, at most one
                    let overviews = e
                        .images
                        .iter()
                        .filter(|i| i.role == ImageRole::Overview)
                        .count();
                    assert!(overviews <= 1, "{path:?}");
                    if overviews == 1 {
                        assert_eq!(e.images[0].role, ImageRole::Overview, "{path:?}");
                    }
                    assert!(
                        e.images.iter().all(|i| i.data.starts_with(&[0xFF, 0xD8])),
                        "{path:?}"
                    );
                    assert!(!e.category.as_str().is_empty());
                }
            }
            Ok(Post::Heartbeat(_)) => {}
            Err(e) => assert_eq!(e.reason(), "forbidden-dtd", "{path:?}: {e}"),
        }
    }
    assert!(n >= 25, "only {n} fixtures found");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn fixtures() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("xml") {
                out.push(std::fs::read(path).unwrap());
            }
        }
        out.sort();
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_post(&body, &meta());
        }

        #[test]
        fn never_panics_on_xmlish_text(body in "(<[a-zA-Z:]{0,12}( [a-z]{1,5}=\"[^\"]{0,6}\")?/?>|</[a-zA-Z]{0,12}>|<!\\[CDATA\\[[^\\]]{0,8}\\]\\]>|<!--[a-z ]{0,6}-->|[^<]{0,10}|&[a-z#0-9]{0,5};){0,60}") {
            let _ = parse_post(body.as_bytes(), &meta());
        }

        #[test]
        fn never_panics_on_mutated_fixtures(
            pick in any::<prop::sample::Index>(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..12),
        ) {
            let all = fixtures();
            let mut body = all[pick.index(all.len())].clone();
            for (at, byte, op) in edits {
                if body.is_empty() { break; }
                let i = at.index(body.len());
                match op {
                    0 => body[i] = byte,                // overwrite
                    1 => { body.remove(i); }            // delete
                    2 => body.insert(i, byte),          // insert
                    _ => body.truncate(i),              // cut
                }
            }
            if let Ok(Post::Events(events)) = parse_post(&body, &meta()) {
                for e in events {
                    prop_assert!(e.images.iter().all(|i| i.data.starts_with(&[0xFF, 0xD8])));
                    let slug = e.category.as_str();
                    prop_assert!(!slug.is_empty());
                    prop_assert!(slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
                }
            }
        }
    }
}
