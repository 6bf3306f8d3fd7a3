//! What the bridge knows about categories, in one table ([`CATEGORIES`]): the names of a
//! category's entities, its binary sensor's device class, its event type and the sensors it
//! adds; plus the names and icons of counter, alarm and object-label entities and the bridge
//! device's sensors ([`BRIDGE_SENSORS`]). Code elsewhere never matches on a category: a category missing here
//! (an [`Category::Other`]) gets generic names, no device class and the event type `detected`.

use super::binary_sensor::BinaryClass as B;
use super::sensor::StateClass;
use crate::event::Category as C;
use crate::event::Category;

/// What the bridge knows about one named category.
#[derive(Debug)]
pub struct CategorySpec {
    /// The category.
    pub category: Category,
    naming: Naming,
    /// Device class of its binary sensor.
    pub binary_class: Option<B>,
    /// `event_type` of its event entity, event JSON and device trigger.
    pub event_type: &'static str,
    /// Sensors it has besides the common ones.
    pub sensors: &'static [ExtraSensor],
}

/// How a table row names its entities.
#[derive(Debug, Clone, Copy)]
enum Naming {
    /// Derived from a label ([`Names::generic`]).
    Generic(&'static str),
    /// Names of its own.
    Own(OwnNames),
}

#[derive(Debug, Clone, Copy)]
struct OwnNames {
    binary: &'static str,
    event: &'static str,
    image: &'static str,
    target: &'static str,
    annotated: &'static str,
    last: &'static str,
}

/// A sensor some categories add besides the common ones (the plate text of `lpr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtraSensor {
    /// Component key, used as is (not prefixed with the category: `plate`).
    pub key: &'static str,
    /// Last topic level (`<base>/<device>/<category>/<leaf>`).
    pub leaf: &'static str,
    /// Entity name.
    pub name: &'static str,
    /// Icon.
    pub icon: Option<&'static str>,
    /// State class.
    pub state_class: Option<StateClass>,
}

const fn row(
    category: Category,
    naming: Naming,
    binary_class: Option<B>,
    event_type: &'static str,
    sensors: &'static [ExtraSensor],
) -> CategorySpec {
    CategorySpec {
        category,
        naming,
        binary_class,
        event_type,
        sensors,
    }
}

const fn label(text: &'static str) -> Naming {
    Naming::Generic(text)
}

const LPR_NAMES: Naming = Naming::Own(OwnNames {
    binary: "Vehicle",
    event: "Plate read",
    image: "Plate overview",
    target: "Plate image",
    annotated: "Plate annotated",
    last: "Last plate read",
});

const FACE_NAMES: Naming = Naming::Own(OwnNames {
    binary: "Face",
    event: "Face detected",
    image: "Face snapshot",
    target: "Face image",
    annotated: "Face annotated",
    last: "Last face",
});

const SNAPSHOT_NAMES: Naming = Naming::Own(OwnNames {
    binary: "Snapshot",
    event: "Snapshot event",
    image: "Snapshot",
    target: "Snapshot target",
    annotated: "Snapshot annotated",
    last: "Last snapshot",
});

/// `lpr`: the plate text and its list (allow / block list).
const PLATES: &[ExtraSensor] = &[
    ExtraSensor {
        key: "plate",
        leaf: "plate",
        name: "Plate",
        icon: Some("mdi:card-text-outline"),
        state_class: None,
    },
    ExtraSensor {
        key: "plate_list",
        leaf: "list",
        name: "Plate list",
        icon: Some("mdi:format-list-checks"),
        state_class: None,
    },
];

/// `traject`: how many targets are tracked now.
const TARGETS: &[ExtraSensor] = &[ExtraSensor {
    key: "traject_targets",
    leaf: "targets",
    name: "Tracked targets",
    icon: None,
    state_class: Some(StateClass::Measurement),
}];

/// Every named category: naming, binary sensor device class, event type, extra sensors.
#[rustfmt::skip]
pub static CATEGORIES: &[CategorySpec] = &[
    //  category         entity names              binary class        event type         sensors
    row(C::Lpr,          LPR_NAMES,                Some(B::Occupancy), "plate_read",      PLATES),
    row(C::Face,         FACE_NAMES,               Some(B::Occupancy), "face_detected",   &[]),
    row(C::Intrusion,    label("Intrusion"),       Some(B::Occupancy), "intrusion",       &[]),
    row(C::LineCrossing, label("Line crossing"),   Some(B::Motion),    "line_crossed",    &[]),
    row(C::ZoneEntry,    label("Zone entry"),      Some(B::Motion),    "zone_entered",    &[]),
    row(C::ZoneExit,     label("Zone exit"),       Some(B::Motion),    "zone_exited",     &[]),
    row(C::Loitering,    label("Loitering"),       Some(B::Occupancy), "loitering",       &[]),
    row(C::Parking,      label("Parking"),         Some(B::Problem),   "parking",         &[]),
    row(C::Counting,     label("Counting"),        Some(B::Motion),    "counted",         &[]),
    row(C::Crowd,        label("Crowd"),           Some(B::Occupancy), "detected",        &[]),
    row(C::Metadata,     label("Object metadata"), None,               "object_detected", &[]),
    row(C::Traject,      label("Tracking"),        Some(B::Occupancy), "tracking",        TARGETS),
    row(C::Motion,       label("Motion"),          Some(B::Motion),    "motion",          &[]),
    row(C::Alarm,        label("Alarm"),           Some(B::Problem),   "detected",        &[]),
    row(C::Object,       label("Object"),          None,               "detected",        &[]),
    row(C::Fire,         label("Fire"),            Some(B::Smoke),     "detected",        &[]),
    row(C::Temperature,  label("Temperature"),     Some(B::Heat),      "detected",        &[]),
    row(C::Audio,        label("Audio"),           Some(B::Sound),     "detected",        &[]),
    row(C::Snapshot,     SNAPSHOT_NAMES,           None,               "detected",        &[]),
];

/// The table row of a category; `None` for [`Category::Other`].
pub fn spec(category: &Category) -> Option<&'static CategorySpec> {
    CATEGORIES.iter().find(|s| &s.category == category)
}

/// Display names of a category's entities (never containing the device name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Binary sensor (`Vehicle`).
    pub binary: String,
    /// Event entity (`Plate read`).
    pub event: String,
    /// Overview image (`Plate overview`).
    pub image: String,
    /// Target crop image (`Plate image`).
    pub target: String,
    /// The overview with an object detector's boxes drawn (`Plate annotated`).
    pub annotated: String,
    /// Last-event timestamp sensor (`Last plate read`).
    pub last: String,
}

impl Names {
    /// `<label>`, `<label> event`, `<label> snapshot`, `<label> target`, `<label> annotated`,
    /// `Last <label>`.
    pub fn generic(label: &str) -> Names {
        Names {
            binary: label.to_owned(),
            event: format!("{label} event"),
            image: format!("{label} snapshot"),
            target: format!("{label} target"),
            annotated: format!("{label} annotated"),
            last: format!("Last {}", label.to_lowercase()),
        }
    }
}

/// Display names of a category's entities; an `Other` category's from its name
/// (`door_bell` → `Door bell`).
pub fn names(category: &Category) -> Names {
    match spec(category).map(|s| s.naming) {
        Some(Naming::Own(n)) => Names {
            binary: n.binary.into(),
            event: n.event.into(),
            image: n.image.into(),
            target: n.target.into(),
            annotated: n.annotated.into(),
            last: n.last.into(),
        },
        Some(Naming::Generic(label)) => Names::generic(label),
        None => {
            let mut label: String = category.as_str().replace(['_', '-'], " ");
            if let Some(first) = label.get(0..1) {
                let up = first.to_uppercase();
                label.replace_range(0..1, &up);
            }
            if label.trim().is_empty() {
                label = "Other".into();
            }
            Names::generic(&label)
        }
    }
}

/// Device class of a category's binary sensor, if any.
pub fn binary_class(category: &Category) -> Option<B> {
    spec(category).and_then(|s| s.binary_class)
}

/// `event_type` of a category's events (`plate_read`; `detected` when the table has none).
pub fn event_type(category: &Category) -> &'static str {
    spec(category).map_or("detected", |s| s.event_type)
}

/// Sensors a category has besides the common ones.
pub fn extra_sensors(category: &Category) -> &'static [ExtraSensor] {
    spec(category).map_or(&[], |s| s.sensors)
}

/// Icon of counter sensors.
pub const COUNTER_ICON: &str = "mdi:counter";

/// Name of a counter sensor (`enter`, `non_motor` → `Enter non motor`).
pub fn counter_name(dir: &str, class: &str) -> String {
    let mut d = dir.replace('_', " ");
    if let Some(first) = d.get(0..1) {
        let up = first.to_uppercase();
        d.replace_range(0..1, &up);
    }
    format!("{d} {}", class.replace('_', " "))
}

/// State class of a counter: `exist` counts what is present now (a measurement), the others
/// only grow.
pub fn counter_state_class(dir: &str) -> StateClass {
    if dir == "exist" {
        StateClass::Measurement
    } else {
        StateClass::TotalIncreasing
    }
}

/// Icons of the count sensors of common object labels (COCO names); others get
/// [`COUNTER_ICON`].
const OBJECT_ICONS: &[(&str, &str)] = &[
    ("person", "mdi:account-multiple"),
    ("car", "mdi:car"),
    ("truck", "mdi:truck"),
    ("bus", "mdi:bus"),
    ("motorcycle", "mdi:motorbike"),
    ("bicycle", "mdi:bicycle"),
    ("dog", "mdi:dog"),
    ("cat", "mdi:cat"),
    ("bird", "mdi:bird"),
    ("horse", "mdi:horse"),
];

/// Icon of the count sensor of the object label with key `key`
/// ([`crate::event::caps::object_key`]).
pub fn object_icon(key: &str) -> &'static str {
    OBJECT_ICONS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(COUNTER_ICON, |(_, icon)| icon)
}

/// Names of an object label's entities: its binary sensor (`Person detected`) and count
/// sensor (`Person count`); `label` is the readable label
/// ([`crate::event::caps::object_label`]), its first letter upper-cased.
pub fn object_names(label: &str) -> (String, String) {
    let mut chars = label.chars();
    let name: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => "Object".into(),
    };
    (format!("{name} detected"), format!("{name} count"))
}

/// A diagnostic sensor of the bridge device, read from the `<base>/bridge/info` JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeSensor {
    /// Component key.
    pub key: &'static str,
    /// Entity name.
    pub name: &'static str,
    /// Picks the value out of the info JSON.
    pub template: &'static str,
    /// Icon.
    pub icon: &'static str,
    /// State class.
    pub state_class: Option<StateClass>,
}

/// The bridge device's sensors.
pub const BRIDGE_SENSORS: &[BridgeSensor] = &[
    BridgeSensor {
        key: "version",
        name: "Version",
        template: "{{ value_json.version }}",
        icon: "mdi:information-outline",
        state_class: None,
    },
    BridgeSensor {
        key: "devices",
        name: "Devices",
        template: "{{ value_json.devices | count }}",
        icon: "mdi:cctv",
        state_class: Some(StateClass::Measurement),
    },
    BridgeSensor {
        key: "events",
        name: "Events",
        template: "{{ value_json.counters.events }}",
        icon: "mdi:counter",
        state_class: Some(StateClass::TotalIncreasing),
    },
    BridgeSensor {
        key: "unparsed",
        name: "Unparsed posts",
        template: "{{ value_json.counters.unparsed }}",
        icon: "mdi:alert-circle-outline",
        state_class: Some(StateClass::TotalIncreasing),
    },
];

/// Display name of an alarm entity: the alarm name in words, then the id
/// (`perimeterAlarm`, `1` → `Perimeter alarm 1`; `VFDAlarm` → `VFD alarm`).
pub fn alarm_label(name: &str, id: Option<&str>) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1).copied();
        let boundary = c.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase()
                    || p.is_numeric()
                    || (p.is_uppercase() && next.is_some_and(char::is_lowercase))
            });
        if boundary && !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut label = words
        .iter()
        .map(|w| {
            // Acronyms (`VFD`, `CPC`) stay as sent; other words are lower case.
            if w.chars().count() > 1 && w.chars().all(|c| !c.is_lowercase()) {
                w.clone()
            } else {
                w.to_lowercase()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(first) = label.chars().next() {
        let up: String = first.to_uppercase().collect();
        label.replace_range(..first.len_utf8(), &up);
    }
    if label.is_empty() {
        label = "Alarm".into();
    }
    let id: String = id
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(32)
        .collect();
    match id.trim() {
        "" => label,
        id => format!("{label} {id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_category_once() {
        for c in Category::NAMED {
            let rows = CATEGORIES.iter().filter(|s| &s.category == c).count();
            assert_eq!(rows, 1, "{c}");
        }
        assert_eq!(CATEGORIES.len(), Category::NAMED.len());
        assert!(spec(&Category::Other("lpr".into())).is_none());
    }

    #[test]
    fn lookups() {
        assert_eq!(binary_class(&Category::Parking), Some(B::Problem));
        assert_eq!(binary_class(&Category::ZoneExit), Some(B::Motion));
        assert_eq!(binary_class(&Category::Metadata), None);
        assert_eq!(event_type(&Category::LineCrossing), "line_crossed");
        assert_eq!(event_type(&Category::Other("x".into())), "detected");
        assert_eq!(names(&Category::Lpr).last, "Last plate read");
        assert_eq!(names(&Category::Motion).image, "Motion snapshot");
        assert_eq!(
            names(&Category::Other("door_bell".into())).binary,
            "Door bell"
        );
        assert_eq!(names(&Category::Other("_".into())).binary, "Other");
        assert_eq!(extra_sensors(&Category::Lpr).len(), 2);
        assert!(extra_sensors(&Category::Face).is_empty());
        assert_eq!(counter_name("enter", "non_motor"), "Enter non motor");
        assert_eq!(counter_state_class("exist"), StateClass::Measurement);
        assert_eq!(names(&Category::Snapshot).annotated, "Snapshot annotated");
        assert_eq!(names(&Category::Intrusion).annotated, "Intrusion annotated");
        assert_eq!(names(&Category::Lpr).annotated, "Plate annotated");
    }

    #[test]
    fn object_entity_names_and_icons() {
        assert_eq!(
            object_names("person"),
            ("Person detected".to_owned(), "Person count".to_owned())
        );
        assert_eq!(object_names("traffic light").0, "Traffic light detected");
        assert_eq!(object_names("ärger").1, "Ärger count");
        assert_eq!(object_names("").0, "Object detected");
        assert_eq!(object_icon("person"), "mdi:account-multiple");
        assert_eq!(object_icon("car"), "mdi:car");
        assert_eq!(object_icon("toaster"), COUNTER_ICON);
    }

    #[test]
    fn alarm_labels() {
        assert_eq!(
            alarm_label("perimeterAlarm", Some("1")),
            "Perimeter alarm 1"
        );
        assert_eq!(alarm_label("perimeterAlarm", None), "Perimeter alarm");
        assert_eq!(alarm_label("VFDAlarm", Some("2")), "VFD alarm 2");
        assert_eq!(
            alarm_label("chlOfflineAlarm", Some("")),
            "Chl offline alarm"
        );
        assert_eq!(alarm_label("sensorAlarmIn", Some("3")), "Sensor alarm in 3");
        assert_eq!(alarm_label("x_y", Some("a\u{0}b")), "X y ab");
        assert_eq!(alarm_label("", None), "Alarm");
    }
}
