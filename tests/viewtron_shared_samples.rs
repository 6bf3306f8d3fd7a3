//! Every sample in the shared research pack (`../shared/viewtron`) through `parse_post`,
//! checked against `fixtures.expected.json` and the `sdk-tests/*.expected.json` sidecars.
//!
//! The samples are third-party data and are not copied into this repository: the tests skip
//! (with a message) when the folder is absent.
//!
//! Where our documented behaviour intentionally differs from what the Python/Node SDKs did
//! (the sidecars record SDK behaviour), the test asserts OUR behaviour and prints why.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use camqtt::event::{
    Category, DeviceKind, Event, ImageRole, Phase, Point, Rect, TimeSource, Units,
};
use camqtt::sources::viewtron::parse::{ParseError, Post, PostMeta, parse_post};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// 2026-11-21T00:00:00Z.
const RECEIVED_S: u64 = 1_795_219_200;

fn meta() -> PostMeta {
    PostMeta {
        peer: Some("127.0.0.1".parse::<IpAddr>().unwrap()),
        received: UNIX_EPOCH + Duration::from_secs(RECEIVED_S),
    }
}

fn root() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/viewtron");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIP: shared Viewtron samples not found at {}", p.display());
        None
    }
}

fn parse_file(path: &Path) -> Result<Post, ParseError> {
    let body = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_post(&body, &meta())
}

fn events_of(name: &str, r: Result<Post, ParseError>) -> Vec<Event> {
    match r {
        Ok(Post::Events(e)) => e,
        other => panic!("{name}: expected events, got {other:?}"),
    }
}

fn one_of(name: &str, r: Result<Post, ParseError>) -> Event {
    let mut e = events_of(name, r);
    assert_eq!(e.len(), 1, "{name}");
    e.remove(0)
}

fn micros(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH).unwrap().as_micros() as i128
}

fn utc_micros(s: &str) -> i128 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("bad utc {s}: {e}"));
    t.unix_timestamp_nanos() / 1000
}

fn str_of(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => panic!("not a scalar: {other}"),
    }
}

fn i64s(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn rect_of(v: &Value, units: Units) -> Option<Rect> {
    let a = i64s(v);
    Some(Rect {
        x1: a[0],
        y1: a[1],
        x2: a[2],
        y2: a[3],
        units,
    })
}

fn point_of(v: &Value) -> Point {
    let a = i64s(v);
    Point { x: a[0], y: a[1] }
}

/// The expected MAC as our normalised form (`None` for all-zero).
fn mac_of(v: &Value) -> Option<String> {
    let m = v.as_str()?.to_ascii_lowercase().replace('-', ":");
    (m != "00:00:00:00:00:00").then_some(m)
}

fn is_placeholder(data: &str) -> bool {
    data.is_empty() || data.starts_with("BASE64") || data.contains("...")
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// examples/** against fixtures.expected.json
// ---------------------------------------------------------------------------------------

fn check_device(name: &str, e_dev: &Value, dev: &camqtt::event::DeviceInfo) {
    if e_dev.is_null() {
        assert_eq!(dev.name, None, "{name}: device name");
        assert_eq!(dev.mac, None, "{name}: device mac");
        return;
    }
    if let Some(v) = e_dev.get("name") {
        assert_eq!(dev.name, str_of(v), "{name}: name");
    }
    if let Some(v) = e_dev.get("mac") {
        assert_eq!(dev.mac, mac_of(v), "{name}: mac");
    }
    if let Some(v) = e_dev.get("ip") {
        assert_eq!(dev.ip, str_of(v), "{name}: ip");
    }
    if let Some(v) = e_dev.get("sn") {
        assert_eq!(dev.serial, str_of(v), "{name}: sn");
    }
    if let Some(v) = e_dev.get("device_no") {
        assert_eq!(dev.device_no, str_of(v), "{name}: device_no");
    }
    if let Some(v) = e_dev.get("channel") {
        assert_eq!(dev.channel, v.as_u64().map(|c| c as u32), "{name}: channel");
    }
    assert_eq!(dev.peer, meta().peer, "{name}: peer");
}

fn check_time(name: &str, exp: &Value, ev: &Event) {
    if let Some(t) = exp.get("time") {
        assert_eq!(ev.time_raw, str_of(&t["raw"]), "{name}: time raw");
        assert_eq!(
            micros(ev.time),
            utc_micros(t["utc"].as_str().unwrap()),
            "{name}: time"
        );
        assert_eq!(ev.time_source, TimeSource::Camera, "{name}");
    }
    if let Some(t) = exp.get("data_time") {
        // camera-local wall time without a zone: receive time, raw kept
        assert_eq!(ev.time_raw, str_of(&t["raw"]), "{name}: dataTime raw");
        assert_eq!(ev.time_source, TimeSource::Receiver, "{name}");
        assert_eq!(ev.time, meta().received, "{name}");
    }
}

fn check_rule(name: &str, r: &Value, ev: &Event) {
    let rule = ev
        .attrs
        .rules
        .first()
        .unwrap_or_else(|| panic!("{name}: no rule"));
    if let Some(v) = r.get("event_id") {
        assert_eq!(rule.event_id, v.as_u64(), "{name}: event_id");
    }
    if let Some(v) = r.get("target_id") {
        assert_eq!(rule.target_id, v.as_u64(), "{name}: target_id");
    }
    if let Some(v) = r.get("status") {
        assert_eq!(rule.status, str_of(v), "{name}: status");
    }
    if let Some(v) = r.get("boundary") {
        assert_eq!(rule.boundary, str_of(v), "{name}: boundary");
    }
    if let Some(v) = r.get("polygon") {
        let want: Vec<Point> = v.as_array().unwrap().iter().map(point_of).collect();
        assert_eq!(rule.polygon, want, "{name}: polygon");
    }
    if let Some(l) = r.get("line") {
        let want = if l.get("start").is_some() {
            (point_of(&l["start"]), point_of(&l["end"]))
        } else {
            let g = |k: &str| l[k].as_i64().unwrap();
            (
                Point {
                    x: g("x1"),
                    y: g("y1"),
                },
                Point {
                    x: g("x2"),
                    y: g("y2"),
                },
            )
        };
        assert_eq!(rule.line, Some(want), "{name}: line");
    }
    if let Some(v) = r.get("direct") {
        assert_eq!(rule.direction, str_of(v), "{name}: direct");
    }
    if let Some(v) = r.get("rect") {
        assert_eq!(rule.rect, rect_of(v, Units::Norm10000), "{name}: rule rect");
    }
}

fn check_targets(name: &str, ts: &Value, ev: &Event) {
    let want = ts.as_array().unwrap();
    assert_eq!(
        ev.attrs.targets.len(),
        want.len(),
        "{name}: targets {:?}",
        ev.attrs.targets
    );
    for (t, w) in ev.attrs.targets.iter().zip(want) {
        if let Some(v) = w.get("target_id") {
            assert_eq!(t.target_id, v.as_u64(), "{name}: target id");
        }
        if let Some(v) = w.get("rect") {
            assert_eq!(t.rect, rect_of(v, Units::Norm10000), "{name}: target rect");
        }
        if let Some(v) = w.get("object_type") {
            assert_eq!(t.object, str_of(v), "{name}: object");
        }
        if let Some(v) = w.get("object_type_code") {
            assert_eq!(t.object_raw, str_of(v), "{name}: object raw");
        }
    }
}

fn check_plates(name: &str, ps: &Value, ev: &Event) {
    let want = ps.as_array().unwrap();
    assert_eq!(ev.attrs.plates.len(), want.len(), "{name}: plates");
    for (p, w) in ev.attrs.plates.iter().zip(want) {
        assert_eq!(Some(p.plate.clone()), str_of(&w["plate"]), "{name}: plate");
        if let Some(v) = w.get("list") {
            assert_eq!(p.list, str_of(v), "{name}: list");
            // IPC: group = list
            assert_eq!(p.group, str_of(v), "{name}: group");
        }
        if let Some(v) = w.get("group") {
            assert_eq!(p.group, str_of(v), "{name}: group");
        }
        if let Some(v) = w.get("owner") {
            assert_eq!(p.owner, str_of(v), "{name}: owner");
        }
        if let Some(v) = w.get("direction") {
            assert_eq!(p.direction, str_of(v), "{name}: direction");
        }
        if let Some(v) = w.get("confidence") {
            assert_eq!(p.confidence, v.as_f64(), "{name}: confidence");
        }
        if let Some(v) = w.get("plate_color").or_else(|| w.get("plate_color_code")) {
            assert_eq!(p.plate_color, str_of(v), "{name}: plate colour");
        }
        if let Some(v) = w.get("target_id").or_else(|| w.get("vehice_id")) {
            assert_eq!(p.target_id, v.as_u64(), "{name}: plate target id");
        }
        if let Some(v) = w.get("vehicle") {
            let got = (
                &p.vehicle_type,
                &p.vehicle_color,
                &p.vehicle_brand,
                &p.vehicle_model,
            );
            if v.is_null() {
                assert_eq!(got, (&None, &None, &None, &None), "{name}: vehicle");
            } else {
                let want = (
                    str_of(&v["type"]),
                    str_of(&v["color"]),
                    str_of(&v["brand"]),
                    str_of(&v["model"]),
                );
                assert_eq!(got, (&want.0, &want.1, &want.2, &want.3), "{name}: vehicle");
            }
        }
        if let Some(v) = w.get("rect") {
            assert_eq!(
                p.plate_box,
                rect_of(v, Units::Pixels),
                "{name}: NVR plate box"
            );
        }
        if let Some(v) = w.get("bbox_normalized") {
            assert_eq!(
                p.plate_box,
                rect_of(v, Units::Norm10000),
                "{name}: plate corners"
            );
        }
        if let Some(v) = w.get("car_rect") {
            let want = if v.is_array() {
                rect_of(v, Units::Pixels)
            } else if v["y"].is_null() {
                None // an empty coordinate makes the box unknown (documented choice)
            } else {
                let g = |k: &str| v[k].as_i64().unwrap();
                Some(Rect {
                    x1: g("x"),
                    y1: g("y"),
                    x2: g("x") + g("width"),
                    y2: g("y") + g("height"),
                    units: Units::Unknown,
                })
            };
            assert_eq!(p.vehicle_box, want, "{name}: vehicle box");
        }
        for (key, role) in [
            ("overview_item", ImageRole::Overview),
            ("plate_crop", ImageRole::Target),
        ] {
            let Some(img) = w.get(key) else { continue };
            check_image(name, img, role, ev);
        }
    }
}

fn check_image(name: &str, img: &Value, role: ImageRole, ev: &Event) {
    let data = img["data"].as_str().unwrap_or("");
    if let Some(bytes) = img.get("decoded_bytes") {
        let got = ev
            .image(role)
            .unwrap_or_else(|| panic!("{name}: no {role:?} image; {:?}", ev.warnings));
        assert_eq!(
            got.data.len() as u64,
            bytes.as_u64().unwrap(),
            "{name}: {role:?} size"
        );
        assert_eq!(
            sha256_hex(&got.data),
            img["sha256"].as_str().unwrap(),
            "{name}: {role:?} sha256"
        );
        assert!(got.data.ends_with(&[0xFF, 0xD9]), "{name}");
    } else if is_placeholder(data) {
        assert!(
            ev.image(role).is_none(),
            "{name}: placeholder {role:?} must not become an image"
        );
        if !data.is_empty() {
            assert!(!ev.warnings.is_empty(), "{name}: placeholder should warn");
        }
    }
}

fn check_images(name: &str, imgs: &Value, ev: &Event) {
    if let Some(s) = imgs.get("source") {
        check_image(name, s, ImageRole::Overview, ev);
        if let Some(alt) = s.get("alternative") {
            check_image(name, alt, ImageRole::Overview, ev);
        }
    }
    if let Some(t) = imgs.get("target") {
        check_image(name, t, ImageRole::Target, ev);
    }
}

fn check_event(name: &str, exp: &Value, ev: &Event) {
    assert_eq!(
        Some(ev.raw_type.clone()),
        str_of(&exp["raw_type"]),
        "{name}: raw type"
    );
    assert_eq!(
        ev.category.as_str(),
        exp["category"].as_str().unwrap(),
        "{name}: category"
    );
    assert_eq!(
        ev.config_version,
        str_of(&exp["config_version"]),
        "{name}: config version"
    );
    let env = exp["envelope"].as_str().unwrap();
    let want_env = if env.starts_with("nvr") { "nvr" } else { "ipc" };
    assert_eq!(ev.envelope.as_deref(), Some(want_env), "{name}: envelope");
    let kind = if want_env == "nvr" {
        DeviceKind::Nvr
    } else {
        DeviceKind::Camera
    };
    assert_eq!(ev.device.kind, kind, "{name}: device kind");
    check_time(name, exp, ev);
    if let Some(d) = exp.get("device") {
        check_device(name, d, &ev.device);
    }
    if let Some(v) = exp.get("subscribe_relation") {
        assert_eq!(ev.attrs.subscription, str_of(v), "{name}: subscription");
    }
    if let Some(r) = exp.get("rule") {
        check_rule(name, r, ev);
    }
    if let Some(t) = exp.get("targets")
        && exp.get("faces").is_none()
    {
        check_targets(name, t, ev);
    }
    if let Some(f) = exp.get("faces") {
        let want = f.as_array().unwrap();
        assert_eq!(ev.attrs.faces.len(), want.len(), "{name}: faces");
        for (face, w) in ev.attrs.faces.iter().zip(want) {
            assert_eq!(face.target_id, w["target_id"].as_u64(), "{name}");
            assert_eq!(face.age, str_of(&w["age"]), "{name}");
            assert_eq!(face.sex, str_of(&w["sex"]), "{name}");
            assert_eq!(face.glasses, str_of(&w["glasses"]), "{name}");
            assert_eq!(face.mask, str_of(&w["mask"]), "{name}");
            let t = ev
                .attrs
                .targets
                .iter()
                .find(|t| t.target_id == face.target_id)
                .unwrap();
            assert_eq!(
                t.rect,
                rect_of(&w["rect"], Units::Pixels),
                "{name}: face rect"
            );
        }
    }
    if let Some(v) = exp.get("face_attributes") {
        assert!(
            v.is_null() && ev.attrs.faces.is_empty(),
            "{name}: face attributes"
        );
    }
    if let Some(p) = exp.get("plates") {
        check_plates(name, p, ev);
    }
    if let Some(c) = exp.get("counts") {
        let counters = ev
            .attrs
            .counters
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no counters"));
        for (bucket, got) in [
            ("enter", &counters.enter),
            ("leave", &counters.leave),
            ("exist", &counters.exist),
        ] {
            for class in ["car", "person", "bike"] {
                let want = c[bucket][class].as_u64().unwrap();
                let have = got.iter().find(|(k, _)| k == class).map(|(_, v)| *v);
                assert_eq!(have, Some(want), "{name}: {bucket} {class}");
            }
        }
    }
    if exp.get("counts_in_post").is_some_and(Value::is_null) {
        assert_eq!(
            ev.attrs.counters, None,
            "{name}: NVR counting sends no counters"
        );
    }
    if let Some(mode) = exp.get("counting_mode") {
        assert_eq!(ev.attrs.subtype, str_of(mode), "{name}: counting mode");
    }
    if let Some(imgs) = exp.get("images") {
        check_images(name, imgs, ev);
    }
    let group = matches!(
        ev.category,
        Category::Intrusion
            | Category::LineCrossing
            | Category::ZoneEntry
            | Category::ZoneExit
            | Category::Loitering
            | Category::Parking
    );
    assert_eq!(
        ev.attrs.group.as_deref(),
        group.then_some("intrusion"),
        "{name}: group"
    );
}

#[test]
fn examples_match_fixtures_expected_json() {
    let Some(root) = root() else { return };
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("fixtures.expected.json")).unwrap(),
    )
    .unwrap();
    let map = expected.as_object().unwrap();
    assert!(!map.is_empty());
    let mut checked = 0;
    for (rel, entry) in map {
        let name = rel.as_str();
        let exp = &entry["expected"];
        let result = parse_file(&root.join(rel));
        match exp["kind"].as_str().unwrap() {
            "heartbeat" => {
                let Ok(Post::Heartbeat(dev)) = result else {
                    panic!("{name}: expected heartbeat, got {result:?}")
                };
                check_device(name, &exp["device"], &dev);
                if exp.get("channel").is_some_and(Value::is_null) {
                    assert_eq!(dev.channel, None, "{name}");
                }
                let nvr = exp["envelope"].as_str().unwrap().starts_with("nvr");
                assert_eq!(
                    dev.kind,
                    if nvr {
                        DeviceKind::Nvr
                    } else {
                        DeviceKind::Camera
                    },
                    "{name}"
                );
            }
            "alarm_status" => {
                let events = events_of(name, result);
                let alarms = exp["alarms"].as_array().unwrap();
                assert_eq!(events.len(), alarms.len(), "{name}");
                for (ev, a) in events.iter().zip(alarms) {
                    let state = ev.attrs.alarm.as_ref().unwrap();
                    assert_eq!(Some(state.name.clone()), str_of(&a["name"]), "{name}");
                    assert_eq!(state.id, str_of(&a["id"]), "{name}");
                    assert_eq!(state.active, a["active"].as_bool().unwrap(), "{name}");
                    assert_eq!(
                        ev.phase,
                        if state.active {
                            Phase::Start
                        } else {
                            Phase::Stop
                        },
                        "{name}"
                    );
                    assert_eq!(ev.raw_type, state.name, "{name}");
                    assert_eq!(ev.config_version, str_of(&exp["config_version"]), "{name}");
                    check_device(name, &exp["device"], &ev.device);
                    check_time(name, exp, ev);
                    // On an NVR perimeterAlarm stands for region intrusion or line crossing
                    // (protocol.md §7.2): no single category; on an IPC it is intrusion.
                    let nvr = exp["envelope"].as_str().unwrap().starts_with("nvr");
                    let (want_cat, want_covers) = match (state.name.as_str(), nvr) {
                        ("vehiceAlarm", _) => (Category::Lpr, vec![Category::Lpr]),
                        ("perimeterAlarm", false) => {
                            (Category::Intrusion, vec![Category::Intrusion])
                        }
                        ("perimeterAlarm", true) => (
                            Category::Alarm,
                            vec![Category::Intrusion, Category::LineCrossing],
                        ),
                        (other, _) => panic!("{name}: unexpected alarm {other}"),
                    };
                    assert_eq!(ev.category, want_cat, "{name}");
                    assert_eq!(state.covers, want_covers, "{name}");
                }
            }
            "event" => {
                let ev = one_of(name, result);
                check_event(name, exp, &ev);
            }
            other => panic!("{name}: unknown kind {other}"),
        }
        checked += 1;
    }
    eprintln!("fixtures.expected.json: {checked} examples checked");

    // every file under examples/ must be covered by the expectations
    let mut on_disk = BTreeSet::new();
    collect_xml(&root.join("examples"), &root, &mut on_disk);
    let covered: BTreeSet<String> = map.keys().cloned().collect();
    let missing: Vec<_> = on_disk.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "examples without expectations: {missing:?}"
    );
    assert!(checked >= on_disk.len() && checked > 0);
}

fn collect_xml(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            collect_xml(&p, base, out);
        } else if p.extension().and_then(|e| e.to_str()) == Some("xml") {
            out.insert(
                p.strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/"),
            );
        }
    }
}

/// `version-variation.expected.json`: rewriting the config version changes nothing but
/// `config_version`.
#[test]
fn version_rewrite_changes_only_config_version() {
    let Some(root) = root() else { return };
    let sidecar: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("sdk-tests/version-variation.expected.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for case in sidecar["cases"].as_array().unwrap() {
        let folder = case["inputs"]
            .as_str()
            .unwrap()
            .trim_start_matches("every ")
            .trim_end_matches("/*.xml");
        let versions: Vec<&str> = case["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for entry in std::fs::read_dir(root.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            let body = std::fs::read_to_string(&path).unwrap();
            // the first version attribute on <config> (not the XML declaration's); the
            // legacy DeviceInfo heartbeat has no <config> and is skipped
            let Some(cfg) = body.find("<config") else {
                continue;
            };
            let Some(start) = body[cfg..].find("version=\"").map(|i| cfg + i + 9) else {
                continue;
            };
            let end = start + body[start..].find('"').unwrap();
            let original = parse_post(body.as_bytes(), &meta());
            for v in &versions {
                let rewritten = format!("{}{}{}", &body[..start], v, &body[end..]);
                let changed = parse_post(rewritten.as_bytes(), &meta());
                assert_eq!(
                    normalise(&original),
                    normalise(&changed),
                    "{path:?} at version {v}"
                );
                if let Ok(Post::Events(events)) = &changed {
                    for e in events {
                        assert_eq!(e.config_version.as_deref(), Some(*v), "{path:?}");
                    }
                }
                checked += 1;
            }
        }
    }
    eprintln!("version variation: {checked} rewrites checked");
    assert!(checked > 0);
}

fn normalise(r: &Result<Post, ParseError>) -> String {
    match r {
        Ok(Post::Events(events)) => events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.config_version = None;
                format!("{e:?}")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        other => format!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// sdk-tests/*.expected.json sidecars
// ---------------------------------------------------------------------------------------

/// Decode an HTTP/1.1 chunked body (test helper; the real decoding lives in the HTTP layer).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let line = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        assert_eq!(&raw[size..size + 2], b"\r\n");
        raw = &raw[size + 2..];
    }
}

fn class_category(class: &str) -> &'static str {
    match class {
        "IntrusionEntry" => "zone_entry",
        "LPR" | "VehicleLPR" => "lpr",
        "RegionIntrusion" => "intrusion",
        "FaceDetection" => "face",
        other => panic!("unmapped SDK class {other}"),
    }
}

/// Check the SDK assertions that describe behaviour we share.
fn check_shared_assertions(name: &str, asserted: &Value, ev: &Event) {
    for (key, v) in asserted.as_object().unwrap() {
        match key.as_str() {
            "category" => assert_eq!(ev.category.as_str(), v.as_str().unwrap(), "{name}"),
            "isinstance" | "ViewtronEvent -> isinstance" | "class" => {
                assert_eq!(
                    ev.category.as_str(),
                    class_category(v.as_str().unwrap()),
                    "{name}"
                )
            }
            "get_plate_number()" => {
                assert_eq!(Some(ev.attrs.plates[0].plate.clone()), str_of(v), "{name}")
            }
            "get_plate_number() truthy" => assert!(!ev.attrs.plates[0].plate.is_empty(), "{name}"),
            "get_plate_group()" => assert_eq!(ev.attrs.plates[0].group, str_of(v), "{name}"),
            "direction" => assert_eq!(ev.attrs.plates[0].direction, str_of(v), "{name}"),
            "config_version" => assert_eq!(ev.config_version, str_of(v), "{name}"),
            "get_alarm_type()" => assert_eq!(Some(ev.raw_type.clone()), str_of(v), "{name}"),
            "source_image_exists()" | "FaceDetection(xml).source_image_exists()" => {
                assert_eq!(
                    ev.image(ImageRole::Overview).is_some(),
                    v.as_bool().unwrap(),
                    "{name}"
                )
            }
            "get_source_image()" | "get_source_image_bytes()" => {
                assert!(
                    v.is_null() && ev.image(ImageRole::Overview).is_none(),
                    "{name}"
                )
            }
            "target_image_exists()" => {
                assert_eq!(
                    ev.image(ImageRole::Target).is_some(),
                    v.as_bool().unwrap(),
                    "{name}"
                )
            }
            "LPR(xml).images_exist()" => {
                assert_eq!(!ev.images.is_empty(), v.as_bool().unwrap(), "{name}")
            }
            "on_event count" => assert_eq!(v.as_u64(), Some(1), "{name}"),
            // SDK-internal facts with no equivalent here (format strings, descriptions,
            // reasons, callbacks, HTTP status): nothing to compare.
            "format"
            | "get_alarm_description()"
            | "_classify_post reason"
            | "on_connect calls"
            | "HTTP status line contains"
            | "targets.length"
            | "targets[0]"
            | "targets[1]"
            | "source" => {}
            other => panic!("{name}: unhandled assertion key {other:?}"),
        }
    }
}

#[test]
fn sdk_test_sidecars() {
    let Some(root) = root() else { return };
    let dir = root.join("sdk-tests");
    let mut checked = 0;
    let mut sidecars: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".expected.json"))
        .collect();
    sidecars.sort();
    assert!(!sidecars.is_empty());
    for sidecar in sidecars {
        let stem = sidecar
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".expected.json")
            .to_owned();
        let name = stem.as_str();
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(&sidecar).unwrap()).unwrap();
        let asserted = json.get("asserted").cloned().unwrap_or(Value::Null);
        let xml = dir.join(format!("{name}.xml"));
        let divergence = |why: &str| eprintln!("{name}: differs from the SDK on purpose: {why}");
        match name {
            "version-variation" => {} // covered by version_rewrite_changes_only_config_version
            "time-unit-by-magnitude" => {
                for case in json["cases"].as_array().unwrap() {
                    let input = case["input"].as_str().unwrap();
                    let body = format!(
                        "<config version=\"1.7\"><smartType>PEA</smartType><currentTime>{input}</currentTime></config>"
                    );
                    let ev = one_of(name, parse_post(body.as_bytes(), &meta()));
                    assert_eq!(
                        micros(ev.time),
                        utc_micros(case["utc"].as_str().unwrap()),
                        "{name}: {input}"
                    );
                    assert_eq!(ev.time_source, TimeSource::Camera);
                }
            }
            "chunked-wikipedia" => {
                let raw = std::fs::read(dir.join("chunked-wikipedia.bin")).unwrap();
                assert_eq!(
                    dechunk(&raw),
                    asserted["_read_chunked(...)"].as_str().unwrap().as_bytes()
                );
            }
            "server-pea-minimal-seconds.chunked-body" => {
                let raw = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
                let body = dechunk(&raw);
                assert_eq!(
                    body,
                    std::fs::read(dir.join("server-pea-minimal-seconds.xml")).unwrap()
                );
                let ev = one_of(name, parse_post(&body, &meta()));
                assert_eq!(
                    ev.category,
                    Category::Intrusion,
                    "a chunked post is data, not a keepalive"
                );
            }
            "server-pea-minimal-seconds" => {
                let ev = one_of(name, parse_file(&xml));
                check_shared_assertions(name, &asserted, &ev);
                assert_eq!(
                    micros(ev.time),
                    utc_micros("2024-11-19T19:40:34Z"),
                    "10 digits are seconds"
                );
            }
            "empty-body" => {
                // SDK: None (an empty body is the IPC heartbeat) — same meaning here.
                assert!(matches!(parse_file(&xml), Ok(Post::Heartbeat(_))), "{name}");
            }
            "server-keepalive-2.0.0" => {
                let Ok(Post::Heartbeat(d)) = parse_file(&xml) else {
                    panic!("{name}")
                };
                assert_eq!(d.kind, DeviceKind::Nvr);
            }
            "not-xml-body" => {
                assert_eq!(parse_file(&xml).unwrap_err().reason(), "not-xml", "{name}")
            }
            "nodejs-malformed" | "parse-error-unclosed-config" | "server-broken-2.1.0" => {
                assert_eq!(
                    parse_file(&xml).unwrap_err().reason(),
                    "parse-error",
                    "{name}"
                )
            }
            "issue1-source-selfclosing-with-attr-no-smarttype" => {
                // No crash, no fake image; a config without smartType is not an event
                // (the SDK silently treated it as a keepalive).
                assert_eq!(
                    parse_file(&xml).unwrap_err().reason(),
                    "not-an-event",
                    "{name}"
                );
            }
            "motion-unknown-smarttype-1.7" | "server-motion-1.7" => {
                divergence(
                    "MOTION is emitted as a motion event (protocol.md §6.12), not unparsed unknown-smartType",
                );
                let ev = one_of(name, parse_file(&xml));
                assert_eq!(ev.category, Category::Motion);
                assert_eq!(ev.raw_type, "MOTION");
                assert_eq!(ev.config_version.as_deref(), Some("1.7"));
            }
            "server-alarmstatus-motion-2.1.0" => {
                divergence(
                    "alarm-status posts are parsed into ON/OFF events, not discarded as reason alarmStatus",
                );
                let ev = one_of(name, parse_file(&xml));
                let gt = &json["ground_truth"]["alarms"][0];
                let a = ev.attrs.alarm.as_ref().unwrap();
                assert_eq!(
                    (a.name.as_str(), a.id.as_deref(), a.active),
                    (
                        gt["name"].as_str().unwrap(),
                        gt["id"].as_str(),
                        gt["active"].as_bool().unwrap()
                    )
                );
                assert_eq!(ev.category, Category::Motion);
                assert_eq!(ev.phase, Phase::Start);
                assert_eq!(ev.time_source, TimeSource::Receiver, "no time in the post");
            }
            "vehicle-nvr-no-messageType-2.1.0" => {
                divergence(
                    "classification is by structure: NVR containers make it an NVR vehicle event even without messageType",
                );
                let ev = one_of(name, parse_file(&xml));
                assert_eq!(ev.category, Category::Lpr);
                assert_eq!(ev.attrs.plates[0].plate, "JP116D");
                assert_eq!(ev.envelope.as_deref(), Some("nvr"));
                assert_eq!(ev.device.kind, DeviceKind::Nvr);
            }
            "server-vehicle-no-messageType-2.1.0"
            | "vehicle-nvr-uppercase-VEHICLE-no-plate-list-2.1.0" => {
                divergence(
                    "a vehicle post without plates is still an LPR event (nothing is dropped), just with no plate",
                );
                let ev = one_of(name, parse_file(&xml));
                assert_eq!(ev.category, Category::Lpr);
                assert!(ev.attrs.plates.is_empty());
            }
            "nodejs-vehice-real-base64" => {
                divergence(
                    "only JPEG data is kept; 'test-image-data' decodes but is not a JPEG, so it is dropped with a warning",
                );
                let ev = one_of(name, parse_file(&xml));
                assert_eq!(ev.category, Category::Lpr);
                assert_eq!(ev.attrs.plates[0].plate, "TEST123");
                assert!(ev.images.is_empty());
                assert_eq!(ev.warnings.len(), 2, "{:?}", ev.warnings);
                assert!(ev.warnings.iter().all(|w| w.contains("not a JPEG")));
            }
            "nodejs-traject-two-targets" => {
                let ev = one_of(name, parse_file(&xml));
                assert_eq!(ev.category.as_str(), asserted["category"].as_str().unwrap());
                let gt = &json["ground_truth"];
                assert_eq!(
                    micros(ev.time),
                    utc_micros(gt["time"]["utc"].as_str().unwrap())
                );
                let want = gt["targets"].as_array().unwrap();
                assert_eq!(ev.attrs.targets.len(), want.len());
                assert_eq!(
                    want.len() as u64,
                    asserted["targets.length"].as_u64().unwrap()
                );
                for (t, w) in ev.attrs.targets.iter().zip(want) {
                    assert_eq!(t.target_id, w["id"].as_u64());
                    assert_eq!(t.object, str_of(&w["type"]));
                    assert_eq!(t.velocity, w["velocity"].as_i64());
                    assert_eq!(t.direction, w["direction"].as_i64());
                    assert_eq!(t.rect, rect_of(&w["rect"], Units::Norm10000));
                }
            }
            _ => {
                // The remaining sidecars describe behaviour we share: map their assertions.
                let ev = one_of(name, parse_file(&xml));
                check_shared_assertions(name, &asserted, &ev);
                if name == "vehice-ipc-lowercase-smarttype" {
                    assert_eq!(ev.raw_type, "vehice");
                }
                if name.starts_with("region-intrusion-nvr-uppercase") {
                    assert_eq!(ev.raw_type, "REGIONINTRUSION");
                }
                if name == "vehice-ipc-layout-config-2.1.0" {
                    assert_eq!(
                        ev.envelope.as_deref(),
                        Some("ipc"),
                        "layout decided by structure, not version"
                    );
                }
                if name == "vehicle-nvr-uppercase-VEHICLE-2.1.0" {
                    assert_eq!(ev.attrs.plates[0].plate, "JP116D");
                }
            }
        }
        checked += 1;
    }
    eprintln!("sdk-tests: {checked} sidecars checked");
    assert!(checked >= 30, "only {checked} sidecars");
}

// ---------------------------------------------------------------------------------------
// docs-samples/*.xml
// ---------------------------------------------------------------------------------------

#[test]
fn docs_samples() {
    let Some(root) = root() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs-samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("xml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let (mut events, mut heartbeats, mut errors) = (0, 0, 0);
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let name = file.as_str();
        let result = parse_file(path);
        match &result {
            Ok(Post::Events(e)) => {
                assert!(!e.is_empty());
                events += 1;
            }
            Ok(Post::Heartbeat(_)) => heartbeats += 1,
            Err(e) => {
                assert!(!e.reason().is_empty());
                errors += 1;
            }
        }
        // Expected kind/category from the file name (and the doc table in fixtures.md).
        let expect_cat = |cat: &str| -> Event {
            let ev = one_of(name, result.clone());
            assert_eq!(ev.category.as_str(), cat, "{name}");
            ev
        };
        match name {
            n if n.contains("license-plate")
                || n.contains("--block9")
                || n.starts_with("derived--nvr-vehicle") =>
            {
                let ev = expect_cat("lpr");
                if n.contains("license-plate-recognition-camera-api--block1") {
                    assert_eq!(ev.attrs.plates[0].group.as_deref(), Some("Whitelist"));
                    assert_eq!(ev.device.name.as_deref(), Some("Parking Entrance"));
                    assert_eq!(ev.device.channel, Some(2));
                }
                if n.contains("license-plate-recognition-camera-api--block2") {
                    assert_eq!(ev.attrs.plates[0].plate, "ABC1234");
                    assert_eq!(ev.attrs.plates[0].list.as_deref(), Some("whiteList"));
                }
                if n.contains("--block9") || n.starts_with("derived") {
                    assert_eq!(ev.time_raw.as_deref(), Some("18445822972087551616"));
                    assert_eq!(ev.time_source, TimeSource::Receiver);
                    assert!(
                        ev.warnings.iter().any(|w| w.contains("currentTime")),
                        "{:?}",
                        ev.warnings
                    );
                }
                assert!(ev.images.is_empty(), "{name}: placeholders only");
            }
            n if n.contains("face-detection") || n.contains("nvr-event-format--block10") => {
                expect_cat("face");
            }
            n if n.contains("loitering") => {
                let ev = expect_cat("loitering");
                assert_eq!(ev.attrs.rules[0].event_id, Some(5012));
                assert_eq!(ev.attrs.rules[0].target_id, Some(4812));
                assert_eq!(ev.attrs.rules[0].polygon.len(), 4);
            }
            n if n.contains("parking") => {
                let ev = expect_cat("parking");
                assert_eq!(
                    (ev.attrs.rules[0].event_id, ev.attrs.rules[0].target_id),
                    (Some(6100), Some(5900))
                );
            }
            n if n.contains("line-crossing") => {
                let ev = expect_cat("line_crossing");
                assert!(ev.attrs.rules[0].line.is_some(), "{name}: line geometry");
                if n.ends_with("--block2.xml") {
                    // variant B: startPoint/endPoint directly under the item
                    assert_eq!(
                        ev.attrs.rules[0].line,
                        Some((Point { x: 3579, y: 2550 }, Point { x: 3655, y: 9797 }))
                    );
                }
            }
            n if n.contains("traject") || n.contains("object-tracking") => {
                let ev = expect_cat("traject");
                let t = &ev.attrs.targets[0];
                assert_eq!(
                    (t.target_id, t.object.as_deref()),
                    (Some(434), Some("person"))
                );
                assert_eq!(
                    t.rect,
                    Some(Rect {
                        x1: 6534,
                        y1: 2708,
                        x2: 7585,
                        y2: 6388,
                        units: Units::Norm10000
                    })
                );
                assert_eq!((t.velocity, t.direction), (Some(0), Some(0)));
                assert_eq!(micros(ev.time), utc_micros("2026-03-27T21:15:21.524166Z"));
            }
            n if n.contains("human-detection-intrusion")
                || n.contains("active-deterrent")
                || n.contains("nvr-event-format--block4") =>
            {
                expect_cat("intrusion");
            }
            n if n.contains("legacy-alarm-server") => {
                let ev = expect_cat("motion");
                let a = ev.attrs.alarm.as_ref().unwrap();
                assert_eq!(
                    (a.name.as_str(), a.id.as_deref(), a.active),
                    ("motionAlarm", Some("1"), true)
                );
                assert_eq!(ev.device.mac.as_deref(), Some("78:24:af:44:89:01"));
                assert_eq!(ev.device.serial.as_deref(), Some("N563F0159MNK"));
                assert_eq!(ev.time_raw.as_deref(), Some("2017-06-20 10:30:21"));
                assert_eq!(ev.config_version.as_deref(), Some("1.0"));
            }
            n if n.contains("ipc-event-format--block1")
                || n.contains("nvr-event-format--block1.") =>
            {
                let Ok(Post::Heartbeat(d)) = &result else {
                    panic!("{name}: {result:?}")
                };
                assert!(d.mac.is_some(), "{name}");
            }
            n if n.contains("ipc-event-format--block2") => {
                let ev = expect_cat("intrusion");
                let a = ev.attrs.alarm.as_ref().unwrap();
                assert_eq!(a.name, "perimeterAlarm");
                assert_eq!(a.covers, vec![Category::Intrusion], "{name}");
            }
            n if n.contains("nvr-event-format--block2") => {
                // The NVR's perimeterAlarm covers regionIntrusion and lineCrossing (§7.2).
                let ev = expect_cat("alarm");
                let a = ev.attrs.alarm.as_ref().unwrap();
                assert_eq!(a.name, "perimeterAlarm");
                assert_eq!(
                    a.covers,
                    vec![Category::Intrusion, Category::LineCrossing],
                    "{name}"
                );
            }
            n if n.contains("ipc-event-format--block3") => {
                let ev = expect_cat("intrusion");
                assert_eq!(ev.device.name.as_deref(), Some("FaceCam"));
                assert_eq!(ev.device.mac.as_deref(), Some("58:5b:69:5f:42:1b"));
                assert_eq!(ev.device.serial.as_deref(), Some("I421B0Z1173Q"));
                assert_eq!(ev.attrs.subscription.as_deref(), Some("FEATURE_RESULT"));
                assert_eq!(micros(ev.time), utc_micros("2026-03-29T13:58:21.902505Z"));
                let r = &ev.attrs.rules[0];
                assert_eq!((r.event_id, r.target_id), (Some(2357), Some(2157)));
                assert_eq!(r.polygon.len(), 5);
                assert_eq!(
                    r.rect,
                    Some(Rect {
                        x1: 4403,
                        y1: 694,
                        x2: 5909,
                        y2: 8125,
                        units: Units::Norm10000
                    })
                );
                assert_eq!(ev.phase, Phase::Start);
            }
            n if n.contains("ipc-event-format--block4") => {
                // no XML declaration (the SDK dropped it as a keepalive)
                let ev = expect_cat("intrusion");
                assert_eq!(ev.attrs.rules[0].event_id, Some(220));
                assert_eq!(
                    ev.attrs.targets[0].rect, None,
                    "<rect>...</rect> is not a box"
                );
            }
            n if n.contains("nvr-event-format--block3") => {
                // the docs' template with <smartType>...</smartType>
                assert_eq!(
                    result.clone().unwrap_err().reason(),
                    "unknown-type",
                    "{name}"
                );
            }
            n if n.contains("nvr-event-format--block6")
                || n.contains("nvr-event-format--block7") =>
            {
                let ev = expect_cat("counting");
                assert_eq!(ev.attrs.counters, None);
            }
            n if n.contains("nvr-event-format--block8") => {
                expect_cat("metadata");
            }
            other => panic!("docs sample without an expectation: {other}"),
        }
    }
    eprintln!(
        "docs-samples: {} files parsed ({events} events, {heartbeats} heartbeats, {errors} errors)",
        files.len()
    );
}
