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

use super::{Category, Device, Event, EventKind, ImageRole};

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
/// has them (Home Assistant discovery). Capabilities only grow: a category, image role or
/// counter once seen stays until the device is forgotten ([`DeviceCaps::merge`] is a union).
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
        }
    }

    fn merge(&mut self, other: &CategoryCaps) {
        self.overview |= other.overview;
        self.target |= other.target;
        if other.overview || other.target {
            self.content_type = other.content_type;
        }
        self.counters.extend(other.counters.iter().cloned());
    }
}

impl DeviceCaps {
    /// Record what `ev` shows: its category, the image roles of a detection, the counters it
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
        let cc = self
            .categories
            .entry(ev.category.as_str().to_owned())
            .or_insert_with(|| CategoryCaps::new(ev.category.clone()));
        if ev.kind() == EventKind::Detection {
            for (role, seen) in [
                (ImageRole::Overview, &mut cc.overview),
                (ImageRole::Target, &mut cc.target),
            ] {
                if let Some(img) = ev.image(role) {
                    *seen = true;
                    cc.content_type = static_mime(&img.content_type);
                }
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
}
