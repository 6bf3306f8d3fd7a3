//! Vendor type strings → normalised categories (`categories.md`).

use crate::event::Category;

/// Category plus sub-type for a smartType / alarm name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kind {
    pub category: Category,
    pub subtype: Option<&'static str>,
}

impl Kind {
    fn new(category: Category) -> Self {
        Kind {
            category,
            subtype: None,
        }
    }
    fn sub(category: Category, subtype: &'static str) -> Self {
        Kind {
            category,
            subtype: Some(subtype),
        }
    }
}

/// Matching key: trimmed, lower-case, without `_` (so `AOI_ENTRY` = `AOIENTRY`).
pub(crate) fn key(raw: &str) -> String {
    raw.trim()
        .chars()
        .filter(|&c| c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Where a PEA post's rule lives, which decides intrusion vs line crossing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PeaBlocks {
    pub perimeter: bool,
    pub tripwire: bool,
}

/// Map a `smartType`. `None` when the raw value yields no usable slug (`...`, punctuation).
pub(crate) fn smart_type(raw: &str, pea: PeaBlocks) -> Option<Kind> {
    use Category::*;
    let k = key(raw);
    let kind = match k.as_str() {
        "vehice" | "vehicle" => Kind::new(Lpr),
        "vfd" | "videofacedetect" | "facedetection" => Kind::sub(Face, "detect"),
        "vfdmatch" => Kind::sub(Face, "match"),
        "pea" => {
            if pea.tripwire && !pea.perimeter {
                Kind::new(LineCrossing)
            } else {
                Kind::new(Intrusion)
            }
        }
        "perimeter" | "regionintrusion" | "ipd" => Kind::new(Intrusion),
        "tripwire" | "linecrossing" => Kind::new(LineCrossing),
        "aoientry" | "regionentrance" => Kind::new(ZoneEntry),
        "aoileave" | "regionexiting" => Kind::new(ZoneExit),
        "loiter" | "loitering" | "loiterdetection" => Kind::new(Loitering),
        "pvd" | "illegalparking" => Kind::new(Parking),
        "passlinecount" | "targetcountingbyline" => Kind::sub(Counting, "line"),
        "traffic" | "targetcountingbyarea" => Kind::sub(Counting, "area"),
        "cpc" => Kind::sub(Counting, "people"),
        "cdd" | "crowdgathering" => Kind::new(Crowd),
        "vsd" | "videometadata" => Kind::new(Metadata),
        "traject" => Kind::new(Traject),
        "motion" | "smd" => Kind::new(Motion),
        "sensor" => Kind::sub(Alarm, "sensor"),
        "avd" => Kind::sub(Alarm, "tamper"),
        "osc" => Kind::new(Object),
        "fire" => Kind::new(Fire),
        "temperature" => Kind::new(Temperature),
        "asd" => Kind::new(Audio),
        _ => {
            let slug = slug(raw)?;
            // A raw type that spells a named category (`snapshot`) becomes that category,
            // so `Other("lpr")` can never shadow `Lpr` in topics.
            return Some(Kind::new(Category::from_name(&slug).unwrap_or(Other(slug))));
        }
    };
    Some(kind)
}

/// True for smartTypes that only the IPC layout uses (they are never NVR names).
pub(crate) fn is_ipc_code(raw: &str) -> bool {
    matches!(
        key(raw).as_str(),
        "vehice"
            | "vfd"
            | "vfdmatch"
            | "pea"
            | "ipd"
            | "aoientry"
            | "aoileave"
            | "loiter"
            | "pvd"
            | "passlinecount"
            | "traffic"
            | "cpc"
            | "cdd"
            | "crowdgathering"
            | "vsd"
            | "motion"
            | "smd"
            | "sensor"
            | "avd"
            | "osc"
            | "fire"
            | "temperature"
            | "asd"
            | "falling"
            | "ea"
    )
}

/// Which layout an alarm-status post came in. The same alarm name means different things in
/// the two (`protocol.md` §6.11 vs §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Envelope {
    /// IP camera (`config 1.x`, `alarmStatusInfo` without `messageType`).
    Ipc,
    /// NVR (`config 2.x`, `messageType alarmStatus`).
    Nvr,
}

/// A mapped alarm-status element: the event's category (plus sub-type) and the categories
/// the status may stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AlarmKind {
    /// Category and sub-type of the event. For an ambiguous status `alarm`.
    pub kind: Kind,
    /// Categories the status may stand for: one for a status that names its detection,
    /// several when it does not say which ([`crate::event::AlarmState::covers`]).
    pub covers: Vec<Category>,
}

/// Map an alarm-status element name (`perimeterAlarm`, `vfdAlarm`, `chlOfflineAlarm`, …).
///
/// Names from `protocol.md` §6.11 (IPC) and §7.2 (NVR), `categories.md`:
/// * NVR `perimeterAlarm` covers **both** `regionIntrusion` and `lineCrossing` (§7.2; field
///   case 15), so it names no single detection: category `alarm`, covers `intrusion` and
///   `line_crossing`. On an IPC line crossing has its own `tripwireAlarm`, so there
///   `perimeterAlarm` is intrusion (field case 14).
/// * NVR `passlineAlarm` covers both counting types (`targetCountingByLine`/`ByArea`), which
///   are one category (`counting`).
/// * Alarms of no detection (`sensorAlarm`, `chlOfflineAlarm`, the AVD names
///   `clarityAbnormal`/`colorAbnormal`/`sceneChange`, unknown names) stand for the `alarm`
///   category itself.
pub(crate) fn alarm_name(name: &str, envelope: Envelope) -> AlarmKind {
    use Category::*;
    let k = key(name);
    if envelope == Envelope::Nvr && k == "perimeteralarm" {
        return AlarmKind {
            kind: Kind::new(Alarm),
            covers: vec![Intrusion, LineCrossing],
        };
    }
    let kind = match k.as_str() {
        "perimeteralarm" | "ipdalarm" => Kind::new(Intrusion),
        "tripwirealarm" => Kind::new(LineCrossing),
        "passlinealarm" | "cpcalarm" => Kind::new(Counting),
        "cddalarm" => Kind::new(Crowd),
        "vfdalarm" => Kind::new(Face),
        "vehicealarm" | "vehiclealarm" => Kind::new(Lpr),
        "aoientryalarm" => Kind::new(ZoneEntry),
        "aoileavealarm" => Kind::new(ZoneExit),
        "motionalarm" => Kind::new(Motion),
        "oscalarm" => Kind::new(Object),
        "sensoralarm" | "sensoralarmin" => Kind::sub(Alarm, "sensor"),
        "chlofflinealarm" => Kind::sub(Alarm, "camera_offline"),
        "clarityabnormal" | "colorabnormal" | "scenechange" | "avdalarm" => {
            Kind::sub(Alarm, "tamper")
        }
        _ => Kind::new(Alarm),
    };
    AlarmKind {
        covers: vec![kind.category.clone()],
        kind,
    }
}

/// The coarse `group` attribute for users of older bridges.
pub(crate) fn group(category: &Category) -> Option<&'static str> {
    match category {
        Category::Intrusion
        | Category::LineCrossing
        | Category::ZoneEntry
        | Category::ZoneExit
        | Category::Loitering
        | Category::Parking => Some("intrusion"),
        _ => None,
    }
}

/// Topic-safe slug of a raw type: lower-case `[a-z0-9_]`, runs of anything else become one
/// `_`, no leading/trailing `_`, at most 48 characters. `None` when nothing is left.
pub(crate) fn slug(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len().min(48));
    let mut pending_sep = false;
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() {
            if pending_sep && !out.is_empty() {
                out.push('_');
            }
            pending_sep = false;
            out.push(c.to_ascii_lowercase());
            if out.len() >= 48 {
                break;
            }
        } else {
            pending_sep = true;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Normalised object class: `1`/`person` → person, `2`/`car` → car, `4`/`motor`/`bike`/
/// `motorcycle` → bike; other strings lower-case (slugged).
pub(crate) fn object_class(raw: &str) -> Option<String> {
    let k = key(raw);
    let class = match k.as_str() {
        "" => return None,
        "1" | "person" | "human" | "pedestrian" | "people" => "person",
        "2" | "car" | "vehicle" => "car",
        "4" | "motor" | "motorcycle" | "motorbike" | "bike" | "bicycle" | "nonmotor" => "bike",
        "face" => "face",
        _ => return slug(raw),
    };
    Some(class.to_owned())
}

/// `approach` → `approach`; `away`/`leave` → `away`; anything else → `None`.
pub(crate) fn plate_direction(raw: &str) -> Option<String> {
    match key(raw).as_str() {
        "approach" => Some("approach".to_owned()),
        "away" | "leave" => Some("away".to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Category::*;

    fn cat(raw: &str) -> Category {
        smart_type(raw, PeaBlocks::default()).unwrap().category
    }

    #[test]
    fn smart_types() {
        assert_eq!(cat("VEHICE"), Lpr);
        assert_eq!(cat(" vehice "), Lpr);
        assert_eq!(cat("VEHICLE"), Lpr);
        assert_eq!(cat("vehicle"), Lpr);
        assert_eq!(cat("AOI_ENTRY"), ZoneEntry);
        assert_eq!(cat("AOIENTRY"), ZoneEntry);
        assert_eq!(cat("aoi_leave"), ZoneExit);
        assert_eq!(cat("regionExiting"), ZoneExit);
        assert_eq!(cat("REGIONINTRUSION"), Intrusion);
        assert_eq!(cat("LOITERING"), Loitering);
        assert_eq!(cat("loiterDetection"), Loitering);
        assert_eq!(cat("illegalParking"), Parking);
        assert_eq!(cat("CROWDGATHERING"), Crowd);
        assert_eq!(cat("SMD"), Motion);
        assert_eq!(cat("ASD"), Audio);
        assert_eq!(cat("FALLING"), Other("falling".into()));
        assert_eq!(cat("EA"), Other("ea".into()));
        assert_eq!(cat("Some Weird/Type+#"), Other("some_weird_type".into()));
        assert_eq!(cat("snapshot"), Snapshot);
        assert_eq!(
            smart_type("VFD_MATCH", PeaBlocks::default()).unwrap(),
            Kind::sub(Face, "match")
        );
        assert_eq!(
            smart_type("TRAFFIC", PeaBlocks::default()).unwrap(),
            Kind::sub(Counting, "area")
        );
        assert_eq!(
            smart_type("AVD", PeaBlocks::default()).unwrap(),
            Kind::sub(Alarm, "tamper")
        );
        assert!(smart_type("...", PeaBlocks::default()).is_none());
        assert!(smart_type("", PeaBlocks::default()).is_none());
    }

    #[test]
    fn pea_precedence() {
        let p = |perimeter, tripwire| {
            smart_type(
                "PEA",
                PeaBlocks {
                    perimeter,
                    tripwire,
                },
            )
            .unwrap()
            .category
        };
        assert_eq!(p(true, false), Intrusion);
        assert_eq!(p(false, true), LineCrossing);
        assert_eq!(p(false, false), Intrusion);
        assert_eq!(p(true, true), Intrusion);
    }

    #[test]
    fn alarm_names() {
        let ipc = |n: &str| alarm_name(n, Envelope::Ipc);
        let nvr = |n: &str| alarm_name(n, Envelope::Nvr);
        assert_eq!(ipc("perimeterAlarm").kind.category, Intrusion);
        assert_eq!(ipc("VFDAlarm").kind.category, Face);
        assert_eq!(nvr("vfdAlarm").kind.category, Face);
        assert_eq!(ipc("vehicleAlarm").kind.category, Lpr);
        assert_eq!(nvr("passlineAlarm").kind.category, Counting);
        assert_eq!(ipc("IPDAlarm").kind.category, Intrusion);
        assert_eq!(ipc("CPCAlarm").kind.category, Counting);
        assert_eq!(ipc("CDDAlarm").kind.category, Crowd);
        assert_eq!(
            nvr("chlOfflineAlarm").kind,
            Kind::sub(Alarm, "camera_offline")
        );
        assert_eq!(ipc("sensorAlarmIn").kind, Kind::sub(Alarm, "sensor"));
        assert_eq!(ipc("sceneChange").kind, Kind::sub(Alarm, "tamper"));
        assert_eq!(ipc("somethingNew").kind, Kind::new(Alarm));
    }

    #[test]
    fn alarm_covers_per_envelope() {
        // NVR perimeterAlarm: region intrusion or line crossing (protocol.md §7.2).
        let a = alarm_name("perimeterAlarm", Envelope::Nvr);
        assert_eq!(a.kind, Kind::new(Alarm));
        assert_eq!(a.covers, vec![Intrusion, LineCrossing]);
        // IPC: line crossing has tripwireAlarm, so perimeterAlarm is intrusion only.
        let a = alarm_name("perimeterAlarm", Envelope::Ipc);
        assert_eq!(a.covers, vec![Intrusion]);
        assert_eq!(
            alarm_name("tripwireAlarm", Envelope::Ipc).covers,
            vec![LineCrossing]
        );
        // Both NVR counting types are one category.
        assert_eq!(
            alarm_name("passlineAlarm", Envelope::Nvr).covers,
            vec![Counting]
        );
        // Every other name covers exactly its own category, in both envelopes.
        for name in [
            "tripwireAlarm",
            "passlineAlarm",
            "vfdAlarm",
            "VFDAlarm",
            "vehiceAlarm",
            "aoiEntryAlarm",
            "aoiLeaveAlarm",
            "motionAlarm",
            "oscAlarm",
            "sensorAlarm",
            "chlOfflineAlarm",
            "CPCAlarm",
            "CDDAlarm",
            "IPDAlarm",
            "clarityAbnormal",
            "colorAbnormal",
            "sceneChange",
            "whatever",
        ] {
            for env in [Envelope::Ipc, Envelope::Nvr] {
                let a = alarm_name(name, env);
                assert_eq!(a.covers, vec![a.kind.category.clone()], "{name} {env:?}");
            }
        }
    }

    #[test]
    fn slugs_are_topic_safe() {
        for raw in ["a/b", "+", "#x", "x\u{0}y", "ÄÖ", "__A__B__", "a b\tc"] {
            if let Some(s) = slug(raw) {
                assert!(!s.is_empty());
                assert!(
                    s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "{s}"
                );
                assert!(!s.starts_with('_') && !s.ends_with('_'));
            }
        }
        assert_eq!(slug("__A__B__").as_deref(), Some("a_b"));
        assert_eq!(slug("+"), None);
        assert_eq!(slug(&"x".repeat(100)).map(|s| s.len()), Some(48));
    }

    #[test]
    fn object_classes() {
        assert_eq!(object_class("1").as_deref(), Some("person"));
        assert_eq!(object_class("2").as_deref(), Some("car"));
        assert_eq!(object_class("4").as_deref(), Some("bike"));
        assert_eq!(object_class("motor").as_deref(), Some("bike"));
        assert_eq!(object_class("Person").as_deref(), Some("person"));
        assert_eq!(object_class("Truck").as_deref(), Some("truck"));
        assert_eq!(object_class(""), None);
    }

    #[test]
    fn directions() {
        assert_eq!(plate_direction("approach").as_deref(), Some("approach"));
        assert_eq!(plate_direction("away").as_deref(), Some("away"));
        assert_eq!(plate_direction("leave").as_deref(), Some("away"));
        assert_eq!(plate_direction("sideways"), None);
    }
}
