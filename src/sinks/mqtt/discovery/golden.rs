//! Discovery regression snapshot: every discovery message (topic and payload) and every
//! entity's listening topics for a rich set of devices, in both discovery modes, compared with
//! `tests/fixtures/discovery/golden.json`.
//!
//! Payloads are compared as parsed JSON (the contract: Home Assistant ignores key order) and as
//! bytes (compact JSON with sorted keys, what the bridge has always published; cheap to keep,
//! and it makes a retained config byte-identical across upgrades).
//!
//! After an intended change of the discovery output, regenerate the snapshot with
//! `CAMQTT_UPDATE_GOLDEN=1 cargo nextest run --lib discovery::golden` and review the diff.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::{AlarmEntity, CategoryCaps, DeviceCaps, Discovery};
use crate::event::{Category, Device, DeviceInfo, DeviceKind};
use crate::sinks::mqtt::config::{HaConfig, default_off_delays};
use crate::sinks::mqtt::payload::tests::{camera, nvr_channel};
use crate::sinks::mqtt::topics::Topics;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/discovery/golden.json")
}

/// The default setup (`camera` base, `homeassistant` prefix, default off delays).
fn plain(legacy: bool) -> Discovery {
    Discovery::new(
        Topics::new("camera"),
        HaConfig {
            legacy,
            ..HaConfig::default()
        },
        "camqtt-1",
        "camqtt",
        default_off_delays(),
        Duration::from_secs(30),
    )
}

/// Other base topic and prefix, a bridge name ending in "bridge", off delays of its own
/// (a zero one, one for an `Other` category).
fn custom(legacy: bool) -> Discovery {
    let off: BTreeMap<String, Duration> = [("motion", 0), ("door_bell", 7), ("lpr", 3)]
        .into_iter()
        .map(|(k, s)| (k.to_owned(), Duration::from_secs(s)))
        .collect();
    Discovery::new(
        Topics::new("cams/site1"),
        HaConfig {
            discovery_prefix: "ha".into(),
            legacy,
            ..HaConfig::default()
        },
        "Site.1",
        "Garage Bridge",
        off,
        Duration::from_secs(12),
    )
    .with_object_off_delay(Duration::from_secs(45))
}

fn cat_caps(category: Category, overview: bool, target: bool) -> CategoryCaps {
    let mut cc = CategoryCaps::new(category);
    cc.overview = overview;
    cc.target = target;
    cc
}

fn add(caps: &mut DeviceCaps, cc: CategoryCaps) {
    caps.categories.insert(cc.category.as_str().to_owned(), cc);
}

fn alarm(name: &str, id: Option<&str>) -> AlarmEntity {
    AlarmEntity {
        name: name.into(),
        id: id.map(str::to_owned),
    }
}

/// Every named category and two `Other` ones; images of both roles, a PNG, counters of every
/// kind, an alarm entity without id.
fn every_category() -> DeviceCaps {
    let mut caps = DeviceCaps::default();
    for cat in Category::NAMED {
        let target = matches!(cat, Category::Lpr | Category::Face | Category::Intrusion);
        let overview = !matches!(cat, Category::Metadata);
        let mut cc = cat_caps(cat.clone(), overview, target);
        match cat {
            Category::Snapshot => cc.content_type = "image/png",
            Category::Counting => {
                for (dir, class) in [
                    ("enter", "person"),
                    ("leave", "car"),
                    ("exist", "car"),
                    ("enter", "non_motor"),
                ] {
                    cc.counters.insert((dir.into(), class.into()));
                }
            }
            _ => {}
        }
        add(&mut caps, cc);
    }
    add(
        &mut caps,
        cat_caps(Category::Other("door_bell".into()), true, false),
    );
    add(
        &mut caps,
        cat_caps(Category::Other("x-ray".into()), false, false),
    );
    caps.alarms.insert(alarm("VFDAlarm", None));
    caps
}

/// A smaller set for the legacy and custom setups, with an annotated picture and two object
/// labels.
fn some_categories() -> DeviceCaps {
    let mut caps = DeviceCaps::default();
    add(&mut caps, cat_caps(Category::Lpr, true, true));
    let mut motion = cat_caps(Category::Motion, true, false);
    motion.annotated = true;
    for (key, label) in [("person", "person"), ("traffic_light", "Traffic Light")] {
        motion.objects.insert(key.into(), label.into());
    }
    add(&mut caps, motion);
    add(&mut caps, cat_caps(Category::Traject, false, false));
    add(
        &mut caps,
        cat_caps(Category::Other("door_bell".into()), false, true),
    );
    let mut counting = cat_caps(Category::Counting, true, false);
    counting.counters.insert(("enter".into(), "person".into()));
    counting.counters.insert(("exist".into(), "car".into()));
    add(&mut caps, counting);
    caps
}

/// An NVR channel with ambiguous alarm-status entities (with id, without, with an empty one).
fn channel_caps() -> DeviceCaps {
    let mut caps = DeviceCaps::default();
    add(&mut caps, cat_caps(Category::Intrusion, true, false));
    add(&mut caps, cat_caps(Category::Alarm, false, false));
    caps.alarms.insert(alarm("perimeterAlarm", Some("1")));
    caps.alarms.insert(alarm("perimeterAlarm", Some("2")));
    caps.alarms.insert(alarm("sensorAlarmIn", Some("")));
    caps.alarms.insert(alarm("chl/Offline+Alarm", None));
    caps
}

/// No MAC, an IPv6 peer, a reported IPv6 address, odd characters in its id and hardware
/// key, empty strings where facts are missing, no area.
fn odd_device() -> Device {
    Device {
        id: "Front Door.Cam".into(),
        name: "Front door".into(),
        info: DeviceInfo {
            name: None,
            mac: None,
            serial: Some(String::new()),
            ip: Some("fe80::2".into()),
            peer: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            kind: DeviceKind::Camera,
            manufacturer: None,
            model: Some(String::new()),
            sw_version: Some("2.0".into()),
            ..DeviceInfo::default()
        },
        hw_key: "peer:fe80::1/x".into(),
        parent: None,
        area: None,
    }
}

/// Only a peer address (IPv6), nothing else.
fn peer_only() -> Device {
    let mut d = odd_device();
    d.id = "2001_db8__7".into();
    d.info.ip = None;
    d.info.peer = Some(IpAddr::V6("2001:db8::7".parse().unwrap()));
    d.info.sw_version = None;
    d.hw_key = "2001_db8__7".into();
    d
}

/// One case: all discovery messages of a device (or the bridge) and, for devices, the
/// listening topics of each component.
fn case(disc: &Discovery, dev: Option<(&Device, &DeviceCaps)>) -> Value {
    let msgs = match dev {
        Some((d, caps)) => disc.device_messages(d, caps),
        None => disc.bridge_messages(),
    };
    let messages: Vec<Value> = msgs
        .iter()
        .map(|(t, p)| {
            let payload: Value = serde_json::from_slice(p).expect("discovery payload is JSON");
            json!({"topic": t, "payload": payload, "bytes": String::from_utf8_lossy(p)})
        })
        .collect();
    let mut v = json!({ "messages": messages });
    if let Some((d, caps)) = dev {
        let listen: serde_json::Map<String, Value> = disc
            .device_components(d, caps)
            .iter()
            .map(|c| {
                (
                    c.key().to_owned(),
                    json!(c.listen_topics().collect::<Vec<_>>()),
                )
            })
            .collect();
        v["listen"] = Value::Object(listen);
    }
    v
}

fn all_cases() -> BTreeMap<String, Value> {
    let cam = camera("58_5b_69_40_f4_0d", "58:5b:69:40:f4:0d");
    let ch = nvr_channel(3);
    let nvr = ch.parent.as_deref().unwrap().clone();
    let none = DeviceCaps::default();
    let (all, some, chc) = (every_category(), some_categories(), channel_caps());
    let odd = odd_device();
    let peer = peer_only();
    let mut motion = DeviceCaps::default();
    add(&mut motion, cat_caps(Category::Motion, false, false));
    let mut out = BTreeMap::new();
    for (legacy, tag) in [(false, "device"), (true, "legacy")] {
        let p = plain(legacy);
        let c = custom(legacy);
        let cases = [
            ("camera_every_category", case(&p, Some((&cam, &all)))),
            ("camera_some_categories", case(&p, Some((&cam, &some)))),
            ("nvr_channel_alarms", case(&p, Some((&ch, &chc)))),
            ("nvr_itself", case(&p, Some((&nvr, &none)))),
            ("odd_device", case(&p, Some((&odd, &motion)))),
            ("peer_only", case(&p, Some((&peer, &none)))),
            ("bridge", case(&p, None)),
            ("custom_camera", case(&c, Some((&cam, &some)))),
            ("custom_bridge", case(&c, None)),
        ];
        for (name, v) in cases {
            // Legacy rendering is per entity and generic; every category once is enough.
            if !(legacy && name == "camera_every_category") {
                out.insert(format!("{tag}/{name}"), v);
            }
        }
        // The custom setup's channel only once (legacy), to keep the snapshot small.
        if legacy {
            out.insert(
                "legacy/custom_nvr_channel".into(),
                case(&c, Some((&ch, &chc))),
            );
        }
    }
    out
}

/// The first place where `got` differs from `want` (`/components/plate/name: "Plate" →
/// "Plates"`), instead of two pages of JSON.
fn difference(want: &Value, got: &Value, path: &str) -> Option<String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            let keys: std::collections::BTreeSet<&String> = w.keys().chain(g.keys()).collect();
            keys.into_iter().find_map(|k| {
                let (w, g) = (
                    w.get(k).unwrap_or(&Value::Null),
                    g.get(k).unwrap_or(&Value::Null),
                );
                difference(w, g, &format!("{path}/{k}"))
            })
        }
        (w, g) if w == g => None,
        (w, g) => Some(format!("{path}: {w} → {g}")),
    }
}

#[test]
fn discovery_matches_golden() {
    let mut actual = all_cases();
    let path = golden_path();
    // The published bytes, kept aside: the snapshot stores parsed payloads only.
    let mut bytes: BTreeMap<(String, String), String> = BTreeMap::new();
    for (name, case) in actual.iter_mut() {
        for m in case["messages"].as_array_mut().unwrap() {
            let b = m.as_object_mut().unwrap().remove("bytes").unwrap();
            let topic = m["topic"].as_str().unwrap().to_owned();
            bytes.insert((name.clone(), topic), b.as_str().unwrap().to_owned());
        }
    }
    if std::env::var_os("CAMQTT_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut text = serde_json::to_string_pretty(&actual).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path).expect("golden file (CAMQTT_UPDATE_GOLDEN=1)");
    let golden: BTreeMap<String, Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(
        golden.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>(),
        "cases"
    );
    for (name, want) in &golden {
        let got = &actual[name];
        let (w, g) = (&want["messages"], &got["messages"]);
        let topics = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|m| m["topic"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(topics(w), topics(g), "{name}: topics (in order)");
        for (wm, gm) in w.as_array().unwrap().iter().zip(g.as_array().unwrap()) {
            let topic = wm["topic"].as_str().unwrap();
            if let Some(diff) = difference(&wm["payload"], &gm["payload"], "") {
                panic!("{name}: payload of {topic}: {diff}");
            }
            // Compact JSON with sorted keys, as `serde_json` writes a `Value`.
            let canonical = serde_json::to_string(&wm["payload"]).unwrap();
            assert_eq!(
                bytes[&(name.clone(), topic.to_owned())],
                canonical,
                "{name}: bytes of {topic}"
            );
        }
        assert_eq!(
            want.get("listen"),
            got.get("listen"),
            "{name}: listen topics"
        );
    }
}
