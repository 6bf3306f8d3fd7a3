//! What a device has shown so far: the device registry's record of it.
//!
//! The pipeline's registry ([`crate::pipeline`]) keeps one [`DeviceRecord`] per device,
//! updates it from every event it routes ([`DeviceCaps::record`], [`counted_classes`]),
//! persists it, and hands it to the sinks: [`super::Routed::Seen`] carries the capabilities
//! whenever they change, [`super::Routed::Event`] the bridge-kept counts after the event, and
//! a sink starting up gets every record ([`KnownDevices`]). The MQTT sink turns the
//! capabilities into Home Assistant entities; it keeps no registry of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Category, DetectionState, Device, Event, EventKind, ImageRole};

/// Most object labels (from an object detector, [`super::Detection`]) a device gets entities
/// for. A detector's labels are strings from another program: a misconfigured or hostile one
/// must not flood discovery (and the broker) with entities; labels past this many are ignored.
pub const MAX_OBJECT_LABELS: usize = 32;

/// Longest [`object_key`], characters.
const MAX_OBJECT_KEY: usize = 32;

/// Longest [`object_label`], characters.
const MAX_OBJECT_LABEL: usize = 48;

/// Image MIME types this build produces (the model holds `&'static str`).
const MIME: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/bmp"];

/// Map a MIME type to the `&'static str` the model uses (`image/jpeg` for anything else).
pub fn static_mime(s: &str) -> &'static str {
    MIME.iter()
        .copied()
        .find(|m| *m == s)
        .unwrap_or("image/jpeg")
}

/// What a device has shown so far; every entry becomes one or more entities in a sink that
/// has them (Home Assistant discovery). Capabilities only grow: a category, image role,
/// counter or object label once seen stays until the device is forgotten
/// ([`DeviceCaps::merge`] is a union; object labels are capped, [`DeviceCaps::objects`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCaps {
    /// Per category name (`lpr`, `intrusion`, ...).
    #[serde(default)]
    pub categories: BTreeMap<String, CategoryCaps>,
    /// Alarm-status elements that name no single category (an NVR's `perimeterAlarm`,
    /// Viewtron `protocol.md` §7.2): each is an entity of its own.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub alarms: BTreeSet<AlarmEntity>,
}

/// An alarm-status element exposed as its own entity, because the status does not say which
/// detection it stands for (field case 15).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlarmEntity {
    /// Alarm name as the device sent it (`perimeterAlarm`).
    pub name: String,
    /// Rule / input id, when sent.
    #[serde(default)]
    pub id: Option<String>,
}

/// What one category of a device has shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryCaps {
    /// The category.
    pub category: Category,
    /// An overview image was seen.
    #[serde(default)]
    pub overview: bool,
    /// A target crop was seen.
    #[serde(default)]
    pub target: bool,
    /// MIME type of the images.
    #[serde(default = "jpeg", with = "mime")]
    pub content_type: Mime,
    /// Counters seen, as `(dir, class)` (`("enter", "person")`).
    #[serde(default)]
    pub counters: BTreeSet<(String, String)>,
    /// An annotated picture (the overview with an object detector's boxes,
    /// [`ImageRole::Annotated`]) was seen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub annotated: bool,
    /// Object labels an object detector found in this category's pictures:
    /// [`object_key`] → [`object_label`] (`person` → `person`, `Traffic Light` →
    /// `traffic_light` → `Traffic Light`). A device has at most [`MAX_OBJECT_LABELS`] over all
    /// its categories ([`DeviceCaps::objects`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, String>,
}

/// A MIME type out of [`static_mime`]'s table (an alias, so that serde does not try to
/// borrow it from the input).
pub type Mime = &'static str;

fn jpeg() -> &'static str {
    "image/jpeg"
}

mod mime {
    use super::*;

    pub fn serialize<S: Serializer>(m: &&'static str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
        let s = String::deserialize(d)?;
        Ok(static_mime(&s))
    }
}

impl CategoryCaps {
    /// A category with nothing seen yet.
    pub fn new(category: Category) -> CategoryCaps {
        CategoryCaps {
            category,
            overview: false,
            target: false,
            content_type: "image/jpeg",
            counters: BTreeSet::new(),
            annotated: false,
            objects: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: &CategoryCaps) {
        self.overview |= other.overview;
        self.target |= other.target;
        self.annotated |= other.annotated;
        if other.overview || other.target || other.annotated {
            self.content_type = other.content_type;
        }
        self.counters.extend(other.counters.iter().cloned());
        for (key, label) in &other.objects {
            self.objects
                .entry(key.clone())
                .or_insert_with(|| label.clone());
        }
    }
}

/// The key of an object label, for topics, component keys and unique ids (`[a-z0-9_]`, at
/// most 32 characters): ASCII letters and digits lower-cased, every run of anything else one
/// `_`, no `_` at either end (`person` → `person`, `Traffic Light` → `traffic_light`,
/// `../x/#` → `x`). Labels that keep nothing (`人`, `***`) get `label_<FNV-1a hash of the
/// label, 8 hex digits>`, so that different such labels stay apart and the key of a label
/// never changes between runs.
pub fn object_key(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if out.len() >= MAX_OBJECT_KEY {
            break;
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_end_matches('_');
    if trimmed.is_empty() {
        let mut h: u32 = 0x811c_9dc5;
        for b in label.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        return format!("label_{h:08x}");
    }
    trimmed.to_owned()
}

/// The readable form of an object label for entity names: words (split at white space,
/// `_` and control characters) joined by one space, at most 48 characters; the
/// [`object_key`] when nothing is left (`traffic_light` → `traffic light`, `" a\nb "` →
/// `a b`).
pub fn object_label(label: &str) -> String {
    let words: Vec<&str> = label
        .split(|c: char| c.is_whitespace() || c == '_' || c.is_control())
        .filter(|w| !w.is_empty())
        .collect();
    let mut out: String = words.join(" ").chars().take(MAX_OBJECT_LABEL).collect();
    out.truncate(out.trim_end().len());
    if out.is_empty() {
        return object_key(label);
    }
    out
}

impl DeviceCaps {
    /// Record what `ev` shows: its category, the image roles of a detection (the annotated
    /// copy included) and the object labels of its detector's answer (`state` ok; at most
    /// [`MAX_OBJECT_LABELS`] per device, further new labels are ignored), the counters it
    /// carries or the bridge counts for it, or, for a status that names no single category,
    /// its alarm entity. Returns true when anything was new.
    ///
    /// A status announces the category it names before any detection (a consumer such as
    /// Home Assistant subscribes early); only detections show images (a status repeats or
    /// ends one already posted, an end says a rule stopped; field cases 03 and 06).
    pub fn record(&mut self, ev: &Event) -> bool {
        let before = self.clone();
        if let Some(alarm) = ev.attrs.alarm.as_ref().filter(|a| a.is_ambiguous()) {
            self.alarms.insert(AlarmEntity {
                name: alarm.name.clone(),
                id: alarm.id.clone(),
            });
            return *self != before;
        }
        let known: BTreeSet<String> = self.objects().into_keys().collect();
        let mut labels = known.len();
        let cc = self
            .categories
            .entry(ev.category.as_str().to_owned())
            .or_insert_with(|| CategoryCaps::new(ev.category.clone()));
        if ev.kind() == EventKind::Detection {
            for (role, seen) in [
                (ImageRole::Overview, &mut cc.overview),
                (ImageRole::Target, &mut cc.target),
                (ImageRole::Annotated, &mut cc.annotated),
            ] {
                if let Some(img) = ev.image(role) {
                    *seen = true;
                    cc.content_type = static_mime(&img.content_type);
                }
            }
            let found = (ev.detection.as_ref())
                .filter(|d| d.state == DetectionState::Ok)
                .map(|d| d.objects.as_slice())
                .unwrap_or_default();
            for o in found {
                let key = object_key(&o.label);
                if cc.objects.contains_key(&key) {
                    continue;
                }
                let new = !known.contains(&key);
                if new && labels >= MAX_OBJECT_LABELS {
                    continue;
                }
                labels += usize::from(new);
                cc.objects.insert(key, object_label(&o.label));
            }
        }
        if let Some(c) = ev.attrs.counters.as_ref().filter(|c| !c.is_empty()) {
            for (dir, list) in [
                ("enter", &c.enter),
                ("leave", &c.leave),
                ("exist", &c.exist),
            ] {
                for (class, _) in list {
                    cc.counters.insert((dir.to_owned(), class.clone()));
                }
            }
        }
        for class in counted_classes(ev) {
            cc.counters.insert(("enter".to_owned(), class));
        }
        *self != before
    }

    /// The object labels the device has shown, over all its categories: [`object_key`] →
    /// [`object_label`] (the first category's, by name, when they differ), at most
    /// [`MAX_OBJECT_LABELS`] (the first keys in order; [`DeviceCaps::record`] never adds more,
    /// only a merge of two diverging sets could).
    pub fn objects(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for cc in self.categories.values() {
            for (key, label) in &cc.objects {
                out.entry(key.clone()).or_insert_with(|| label.clone());
            }
        }
        while out.len() > MAX_OBJECT_LABELS {
            out.pop_last();
        }
        out
    }

    /// Add everything `other` has (capabilities only grow).
    pub fn merge(&mut self, other: &DeviceCaps) {
        for (name, c) in &other.categories {
            match self.categories.get_mut(name) {
                Some(mine) => mine.merge(c),
                None => {
                    self.categories.insert(name.clone(), c.clone());
                }
            }
        }
        self.alarms.extend(other.alarms.iter().cloned());
    }
}

/// Classes the bridge counts for `ev`: a counting detection from a device that sends no
/// counters of its own counts one per target (its class, `person` when it has none or there
/// is no target). Empty for everything else.
pub fn counted_classes(ev: &Event) -> Vec<String> {
    let has_counters = ev.attrs.counters.as_ref().is_some_and(|c| !c.is_empty());
    if ev.category != Category::Counting || has_counters || ev.kind() != EventKind::Detection {
        return Vec::new();
    }
    if ev.attrs.targets.is_empty() {
        return vec!["person".to_owned()];
    }
    ev.attrs
        .targets
        .iter()
        .map(|t| {
            t.object
                .clone()
                .filter(|o| !o.is_empty())
                .unwrap_or_else(|| "person".into())
        })
        .collect()
}

/// The registry's record of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    /// The device as the pipeline resolved it last.
    pub device: Device,
    /// When it was last heard from (wall clock).
    pub last_seen: SystemTime,
    /// What it has shown.
    pub caps: DeviceCaps,
    /// Bridge-kept counters by class ([`counted_classes`]): detections counted so far.
    pub counts: BTreeMap<String, u64>,
}

/// The devices the registry knows when a sink starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KnownDevices {
    /// Every known device (NVRs and their channels each have a record).
    pub records: Vec<DeviceRecord>,
    /// The records come from a valid registry file: a device not among them is gone (a sink
    /// may clear what it published for such a device earlier). False on a first start or
    /// after an unreadable file, when an unknown device may simply not have posted yet.
    pub authoritative: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        AlarmState, Attributes, Counters, DeviceInfo, Image, Phase, Target, TimeSource,
    };
    use std::borrow::Cow;

    fn event(category: Category, attrs: Attributes, images: Vec<Image>) -> Event {
        Event {
            device: DeviceInfo::default(),
            category,
            phase: Phase::Pulse,
            time: SystemTime::UNIX_EPOCH,
            time_source: TimeSource::Camera,
            time_raw: None,
            received: SystemTime::UNIX_EPOCH,
            source: Cow::Borrowed("test"),
            raw_type: "X".into(),
            envelope: None,
            config_version: None,
            attrs,
            images,
            warnings: vec![],
            provenance: None,
            detection: None,
        }
    }

    fn png(role: ImageRole) -> Image {
        Image {
            role,
            content_type: Cow::Borrowed("image/png"),
            data: bytes::Bytes::from_static(b"\x89PNG"),
            width: None,
            height: None,
            target_id: None,
        }
    }

    #[test]
    fn a_detection_records_its_category_images_and_counters() {
        let mut caps = DeviceCaps::default();
        let ev = event(
            Category::Lpr,
            Attributes::default(),
            vec![png(ImageRole::Target)],
        );
        assert!(caps.record(&ev));
        assert!(!caps.record(&ev), "nothing new the second time");
        let lpr = &caps.categories["lpr"];
        assert_eq!(
            (lpr.overview, lpr.target, lpr.content_type),
            (false, true, "image/png")
        );

        let mut counters = Counters::default();
        counters.leave.push(("car".into(), 4));
        let ev = event(
            Category::Counting,
            Attributes {
                counters: Some(counters),
                ..Attributes::default()
            },
            vec![],
        );
        assert!(caps.record(&ev));
        assert!(counted_classes(&ev).is_empty(), "the device counts itself");
        let want: BTreeSet<_> = [("leave".to_owned(), "car".to_owned())].into();
        assert_eq!(caps.categories["counting"].counters, want);
    }

    #[test]
    fn the_bridge_counts_counting_detections_without_device_counters() {
        let targets = vec![
            Target {
                object: Some("car".into()),
                ..Target::default()
            },
            Target::default(),
        ];
        let ev = event(
            Category::Counting,
            Attributes {
                targets,
                ..Attributes::default()
            },
            vec![],
        );
        assert_eq!(counted_classes(&ev), ["car", "person"]);
        let none = event(Category::Counting, Attributes::default(), vec![]);
        assert_eq!(counted_classes(&none), ["person"]);
        let mut end = none.clone();
        end.phase = Phase::Stop;
        assert!(counted_classes(&end).is_empty(), "an end counts nothing");
        let mut caps = DeviceCaps::default();
        caps.record(&ev);
        assert!(
            caps.categories["counting"]
                .counters
                .contains(&("enter".to_owned(), "car".to_owned()))
        );
    }

    #[test]
    fn a_status_shows_no_images_and_an_ambiguous_one_only_its_alarm() {
        let status = |covers: Vec<Category>| {
            event(
                Category::Intrusion,
                Attributes {
                    alarm: Some(AlarmState {
                        name: "perimeterAlarm".into(),
                        id: Some("1".into()),
                        active: true,
                        covers,
                    }),
                    ..Attributes::default()
                },
                vec![png(ImageRole::Overview)],
            )
        };
        let mut caps = DeviceCaps::default();
        assert!(caps.record(&status(vec![Category::Intrusion])));
        assert!(!caps.categories["intrusion"].overview);
        let mut amb = DeviceCaps::default();
        assert!(amb.record(&status(vec![Category::Intrusion, Category::LineCrossing])));
        assert!(amb.categories.is_empty());
        assert_eq!(amb.alarms.len(), 1);
    }

    #[test]
    fn merge_is_a_union_and_round_trips_through_json() {
        let mut a = DeviceCaps::default();
        a.record(&event(Category::Lpr, Attributes::default(), vec![]));
        let mut b = DeviceCaps::default();
        b.record(&event(
            Category::Lpr,
            Attributes::default(),
            vec![png(ImageRole::Overview)],
        ));
        b.record(&event(Category::Face, Attributes::default(), vec![]));
        let mut m = a.clone();
        m.merge(&b);
        m.merge(&a);
        assert_eq!(m, b);
        let back: DeviceCaps = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        let old: CategoryCaps = serde_json::from_str(r#"{"category":"lpr"}"#).unwrap();
        assert_eq!(old, CategoryCaps::new(Category::Lpr));
    }

    fn seen(labels: &[&str], state: DetectionState) -> Event {
        use crate::event::{DetectedObject, Detection, PixelBox};
        let mut ev = event(
            Category::Snapshot,
            Attributes::default(),
            vec![png(ImageRole::Overview), png(ImageRole::Annotated)],
        );
        ev.detection = Some(Detection {
            state,
            detector: "deepstack".into(),
            objects: (labels.iter())
                .map(|l| DetectedObject {
                    label: (*l).to_owned(),
                    confidence: 0.8,
                    bbox: PixelBox {
                        x_min: 0,
                        y_min: 0,
                        x_max: 1,
                        y_max: 1,
                    },
                })
                .collect(),
            error: None,
        });
        ev
    }

    #[test]
    fn object_keys_and_labels() {
        assert_eq!(object_key("person"), "person");
        assert_eq!(object_key("Traffic Light"), "traffic_light");
        assert_eq!(object_key("  ../x/#+ "), "x");
        assert_eq!(object_key("a__b--c"), "a_b_c");
        assert_eq!(object_key(&"y".repeat(500)).len(), MAX_OBJECT_KEY);
        let han = object_key("人");
        assert!(han.starts_with("label_") && han.len() == 14, "{han}");
        assert_ne!(han, object_key("猫"));
        assert_eq!(han, object_key("人"), "stable");
        assert_eq!(object_key(""), object_key(""));

        assert_eq!(object_label("traffic_light"), "traffic light");
        assert_eq!(object_label(" a\nb\u{0}c "), "a b c");
        assert_eq!(object_label("Ärger"), "Ärger");
        assert_eq!(object_label("\u{7}\t"), object_key("\u{7}\t"));
        assert_eq!(object_label(&"z ".repeat(100)).chars().count(), 47);
    }

    #[test]
    fn a_detectors_answer_records_labels_and_the_annotated_picture() {
        let mut caps = DeviceCaps::default();
        assert!(caps.record(&seen(&["person", "Person", "car"], DetectionState::Ok)));
        let snap = &caps.categories["snapshot"];
        assert!(snap.overview && snap.annotated && !snap.target);
        let want: BTreeMap<String, String> = [("car", "car"), ("person", "person")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        assert_eq!(caps.objects(), want);
        assert!(!caps.record(&seen(&["car"], DetectionState::Ok)));
        // No answer: nothing about objects.
        let mut none = DeviceCaps::default();
        none.record(&seen(&["dog"], DetectionState::Unavailable));
        assert!(none.objects().is_empty());
        // Only a detection shows objects.
        let mut end = seen(&["dog"], DetectionState::Ok);
        end.phase = crate::event::Phase::Stop;
        assert!(!caps.record(&end));
        assert!(!caps.objects().contains_key("dog"));
    }

    #[test]
    fn labels_are_capped_per_device_over_all_categories() {
        let mut caps = DeviceCaps::default();
        let many: Vec<String> = (0..50).map(|i| format!("thing {i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        caps.record(&seen(&refs[..20], DetectionState::Ok));
        let mut other = seen(&refs[10..], DetectionState::Ok);
        other.category = Category::Intrusion;
        caps.record(&other);
        let all = caps.objects();
        assert_eq!(all.len(), MAX_OBJECT_LABELS);
        for i in 0..MAX_OBJECT_LABELS {
            assert!(all.contains_key(&format!("thing_{i}")), "thing_{i}");
        }
        // A known label is still recorded for another category; a new one is not.
        assert!(
            caps.categories["intrusion"]
                .objects
                .contains_key("thing_10")
        );
        let mut third = seen(&["thing 1", "thing 49"], DetectionState::Ok);
        third.category = Category::Motion;
        caps.record(&third);
        assert_eq!(caps.categories["motion"].objects.len(), 1);
        // A merge of two diverging sets is cut to the maximum too.
        let mut big = DeviceCaps::default();
        big.record(&seen(&refs[18..], DetectionState::Ok));
        caps.merge(&big);
        assert_eq!(caps.objects().len(), MAX_OBJECT_LABELS);
        let back: DeviceCaps =
            serde_json::from_str(&serde_json::to_string(&caps).unwrap()).unwrap();
        assert_eq!(back, caps);
        // Records written before detections existed have neither field.
        let plain = serde_json::to_string(&CategoryCaps::new(Category::Lpr)).unwrap();
        assert!(
            !plain.contains("annotated") && !plain.contains("objects"),
            "{plain}"
        );
    }
}
