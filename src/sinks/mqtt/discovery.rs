//! Home Assistant discovery payloads (pure).
//!
//! A device's entities are declared as data ([`DeviceCaps`]: which categories it sent, which
//! image roles, which counters); this module turns that into either one device-based
//! discovery message (`<prefix>/device/camqtt_<hw_key>/config`) or, in legacy mode, one
//! message per entity (`<prefix>/<platform>/camqtt_<hw_key>/<key>/config`). Full key names, no
//! abbreviations; `default_entity_id`, never `object_id`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::config::HaConfig;
use super::payload::event_type;
use super::topics::{Topics, alarm_key, counter_key, slug};
use crate::event::{Category, Device};

/// What a device has shown so far; every entry becomes one or more entities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceCaps {
    /// Per category name.
    pub categories: BTreeMap<String, CategoryCaps>,
    /// Alarm-status elements that name no single category (an NVR's `perimeterAlarm`,
    /// `protocol.md` §7.2): each is an entity of its own.
    pub alarms: BTreeSet<AlarmEntity>,
}

/// An alarm-status element exposed as its own `binary_sensor` (state topic
/// `<base>/<device>/alarm/<name>[_<id>]`, `ON` not retained, `OFF` retained), because the
/// status does not say which detection it is (field case 15).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AlarmEntity {
    /// Alarm name as the device sent it (`perimeterAlarm`).
    pub name: String,
    /// Rule / input id, when sent.
    pub id: Option<String>,
}

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

/// What one category of a device has shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryCaps {
    /// The category.
    pub category: Category,
    /// An overview image was seen (creates `<cat>_image`).
    pub overview: bool,
    /// A target crop was seen (creates `<cat>_target`).
    pub target: bool,
    /// MIME type of the images.
    pub content_type: &'static str,
    /// Counters seen, as `(dir, class)`.
    pub counters: BTreeSet<(String, String)>,
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
}

/// One entity (discovery component).
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// Component key (`lpr_event`), unique per device.
    pub key: String,
    /// HA platform (`binary_sensor`, `event`, `image`, `sensor`, `device_automation`).
    pub platform: &'static str,
    /// Platform options (without `platform`, `device`, `origin`).
    pub config: Map<String, Value>,
}

impl Component {
    /// The topics Home Assistant subscribes to for this component and whose messages it
    /// loses until it has: `state_topic`, `image_topic`, `json_attributes_topic` and a device
    /// trigger's `topic` (availability topics are retained, so they need no wait).
    pub fn listen_topics(&self) -> impl Iterator<Item = &str> {
        [
            "state_topic",
            "image_topic",
            "json_attributes_topic",
            "topic",
        ]
        .into_iter()
        .filter_map(|k| self.config.get(k).and_then(Value::as_str))
    }
}

/// Builds discovery messages; holds what is the same for every device.
#[derive(Debug, Clone)]
pub struct Discovery {
    topics: Topics,
    ha: HaConfig,
    bridge_identifier: String,
    bridge_name: String,
    bridge_entity_prefix: String,
    off_delay: BTreeMap<String, Duration>,
    default_off_delay: Duration,
}

/// Display names of a category's entities.
struct Names {
    binary: String,
    event: String,
    image: String,
    target: String,
    last: String,
}

fn names(category: &Category) -> Names {
    let generic = |label: &str| Names {
        binary: label.to_owned(),
        event: format!("{label} event"),
        image: format!("{label} snapshot"),
        target: format!("{label} target"),
        last: format!("Last {}", label.to_lowercase()),
    };
    match category {
        Category::Lpr => Names {
            binary: "Vehicle".into(),
            event: "Plate read".into(),
            image: "Plate overview".into(),
            target: "Plate image".into(),
            last: "Last plate read".into(),
        },
        Category::Face => Names {
            binary: "Face".into(),
            event: "Face detected".into(),
            image: "Face snapshot".into(),
            target: "Face image".into(),
            last: "Last face".into(),
        },
        Category::Intrusion => generic("Intrusion"),
        Category::LineCrossing => generic("Line crossing"),
        Category::ZoneEntry => generic("Zone entry"),
        Category::ZoneExit => generic("Zone exit"),
        Category::Loitering => generic("Loitering"),
        Category::Parking => generic("Parking"),
        Category::Counting => generic("Counting"),
        Category::Crowd => generic("Crowd"),
        Category::Metadata => generic("Object metadata"),
        Category::Traject => generic("Tracking"),
        Category::Motion => generic("Motion"),
        Category::Alarm => generic("Alarm"),
        Category::Object => generic("Object"),
        Category::Fire => generic("Fire"),
        Category::Temperature => generic("Temperature"),
        Category::Audio => generic("Audio"),
        Category::Snapshot => generic("Snapshot"),
        Category::Other(s) => {
            let mut label: String = s.replace(['_', '-'], " ");
            if let Some(first) = label.get(0..1) {
                let up = first.to_uppercase();
                label.replace_range(0..1, &up);
            }
            if label.trim().is_empty() {
                label = "Other".into();
            }
            generic(&label)
        }
    }
}

/// `device_class` of a category's binary_sensor, if any.
pub fn binary_device_class(category: &Category) -> Option<&'static str> {
    match category {
        Category::Motion
        | Category::LineCrossing
        | Category::ZoneEntry
        | Category::ZoneExit
        | Category::Counting => Some("motion"),
        Category::Intrusion
        | Category::Face
        | Category::Loitering
        | Category::Lpr
        | Category::Crowd
        | Category::Traject => Some("occupancy"),
        Category::Parking | Category::Alarm => Some("problem"),
        Category::Fire => Some("smoke"),
        Category::Temperature => Some("heat"),
        Category::Audio => Some("sound"),
        _ => None,
    }
}

fn counter_name(dir: &str, class: &str) -> String {
    let mut d = dir.replace('_', " ");
    if let Some(first) = d.get(0..1) {
        let up = first.to_uppercase();
        d.replace_range(0..1, &up);
    }
    format!("{d} {}", class.replace('_', " "))
}

/// HA identifier of a device: `camqtt_<hw_key>` (object id charset).
pub fn device_identifier(device: &Device) -> String {
    format!("camqtt_{}", object_id_part(&device.hw_key))
}

/// `[a-zA-Z0-9_-]` only, as HA requires for discovery object ids.
fn object_id_part(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() { "_".into() } else { out }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl Discovery {
    /// Discovery for the given HA settings. `client_id` names the bridge device.
    pub fn new(
        topics: Topics,
        ha: HaConfig,
        client_id: &str,
        bridge_name: &str,
        off_delay: BTreeMap<String, Duration>,
        default_off_delay: Duration,
    ) -> Discovery {
        Discovery {
            topics,
            ha,
            bridge_identifier: format!("camqtt_bridge_{}", slug(client_id)),
            bridge_name: if bridge_name.to_lowercase().ends_with("bridge") {
                bridge_name.to_owned()
            } else {
                format!("{bridge_name} bridge")
            },
            bridge_entity_prefix: format!("{}_bridge", slug(bridge_name)),
            off_delay,
            default_off_delay,
        }
    }

    /// Identifier of the bridge's HA device (`camqtt_bridge_<client id slug>`).
    pub fn bridge_identifier(&self) -> &str {
        &self.bridge_identifier
    }

    fn origin() -> Value {
        let mut o = json!({"name": "camqtt", "sw_version": env!("CARGO_PKG_VERSION")});
        let url = option_env!("CARGO_PKG_REPOSITORY").unwrap_or("");
        let url = if url.is_empty() {
            option_env!("CARGO_PKG_HOMEPAGE").unwrap_or("")
        } else {
            url
        };
        if !url.is_empty() {
            o["support_url"] = json!(url);
        }
        o
    }

    /// The `device` block. `connections` only for the physical box (no parent); `via_device`
    /// the bridge for cameras and NVRs, the NVR for channels.
    pub fn device_block(&self, d: &Device) -> Value {
        let mut b = Map::new();
        b.insert("identifiers".into(), json!([device_identifier(d)]));
        b.insert("name".into(), json!(d.name));
        let put = |b: &mut Map<String, Value>, k: &str, v: &Option<String>| {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                b.insert(k.into(), json!(v));
            }
        };
        put(&mut b, "manufacturer", &d.info.manufacturer);
        put(&mut b, "model", &d.info.model);
        put(&mut b, "sw_version", &d.info.sw_version);
        match &d.parent {
            None => {
                put(&mut b, "serial_number", &d.info.serial);
                if let Some(mac) = d.info.mac.as_deref().filter(|m| !m.is_empty()) {
                    b.insert("connections".into(), json!([["mac", mac]]));
                }
                b.insert("via_device".into(), json!(self.bridge_identifier));
            }
            Some(parent) => {
                b.insert("via_device".into(), json!(device_identifier(parent)));
            }
        }
        let host = d.info.ip.clone().filter(|s| !s.is_empty()).or_else(|| {
            d.info.peer.map(|p| match p {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                std::net::IpAddr::V4(v4) => v4.to_string(),
            })
        });
        if let Some(host) = host {
            let host = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host
            };
            b.insert("configuration_url".into(), json!(format!("http://{host}")));
        }
        put(&mut b, "suggested_area", &d.area);
        Value::Object(b)
    }

    fn bridge_device_block(&self) -> Value {
        json!({
            "identifiers": [self.bridge_identifier],
            "name": self.bridge_name,
            "manufacturer": "camqtt",
            "model": "camqtt bridge",
            "sw_version": env!("CARGO_PKG_VERSION"),
        })
    }

    fn device_availability(&self, d: &Device) -> Value {
        json!([
            {"topic": self.topics.bridge_state()},
            {"topic": self.topics.availability(&d.id)},
        ])
    }

    fn bridge_only_availability(&self) -> Value {
        json!([{"topic": self.topics.bridge_state()}])
    }

    fn entity(
        &self,
        d: &Device,
        key: &str,
        platform: &'static str,
        name: &str,
        mut cfg: Map<String, Value>,
    ) -> Component {
        cfg.insert("name".into(), json!(name));
        cfg.insert(
            "unique_id".into(),
            json!(format!("{}_{key}", device_identifier(d))),
        );
        cfg.insert(
            "default_entity_id".into(),
            json!(format!("{platform}.{}_{key}", slug(&d.id))),
        );
        Component {
            key: key.to_owned(),
            platform,
            config: cfg,
        }
    }

    /// All entities of a device with the given capabilities.
    pub fn device_components(&self, d: &Device, caps: &DeviceCaps) -> Vec<Component> {
        let t = &self.topics;
        let mut out = vec![self.entity(
            d,
            "connectivity",
            "binary_sensor",
            "Connectivity",
            obj(json!({
                "state_topic": t.availability(&d.id),
                "payload_on": "online",
                "payload_off": "offline",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                "availability": self.bridge_only_availability(),
            })),
        )];
        for (cat, cc) in &caps.categories {
            let key = slug(cat);
            let n = names(&cc.category);
            let et = event_type(&cc.category);
            let off = self
                .off_delay
                .get(cat.as_str())
                .copied()
                .unwrap_or(self.default_off_delay);
            let mut bin = obj(json!({
                "state_topic": t.device_cat(&d.id, cat, "state"),
                "payload_on": "ON",
                "payload_off": "OFF",
                "off_delay": off.as_secs().max(1),
            }));
            if let Some(dc) = binary_device_class(&cc.category) {
                bin.insert("device_class".into(), json!(dc));
            }
            out.push(self.entity(d, &key, "binary_sensor", &n.binary, bin));
            out.push(self.entity(
                d,
                &format!("{key}_event"),
                "event",
                &n.event,
                obj(json!({"state_topic": t.device_cat(&d.id, cat, "event"), "event_types": [et]})),
            ));
            if cc.overview {
                out.push(self.entity(
                    d,
                    &format!("{key}_image"),
                    "image",
                    &n.image,
                    obj(json!({"image_topic": t.device_cat(&d.id, cat, "image"), "content_type": cc.content_type})),
                ));
            }
            if cc.target {
                out.push(self.entity(
                    d,
                    &format!("{key}_target"),
                    "image",
                    &n.target,
                    obj(json!({"image_topic": t.device_cat(&d.id, cat, "target"), "content_type": cc.content_type})),
                ));
            }
            out.push(self.entity(
                d,
                &format!("{key}_last"),
                "sensor",
                &n.last,
                obj(json!({
                    "state_topic": t.device_cat(&d.id, cat, "last"),
                    "device_class": "timestamp",
                    "entity_category": "diagnostic",
                })),
            ));
            match cc.category {
                Category::Lpr => {
                    out.push(self.entity(
                        d,
                        "plate",
                        "sensor",
                        "Plate",
                        obj(json!({"state_topic": t.device_cat(&d.id, cat, "plate"), "icon": "mdi:card-text-outline"})),
                    ));
                    out.push(self.entity(
                        d,
                        "plate_list",
                        "sensor",
                        "Plate list",
                        obj(json!({"state_topic": t.device_cat(&d.id, cat, "list"), "icon": "mdi:format-list-checks"})),
                    ));
                }
                Category::Traject => {
                    out.push(self.entity(
                        d,
                        "traject_targets",
                        "sensor",
                        "Tracked targets",
                        obj(json!({"state_topic": t.device_cat(&d.id, cat, "targets"), "state_class": "measurement"})),
                    ));
                }
                _ => {}
            }
            for (dir, class) in &cc.counters {
                let ck = counter_key(dir, class);
                let state_class = if dir == "exist" {
                    "measurement"
                } else {
                    "total_increasing"
                };
                out.push(self.entity(
                    d,
                    &format!("{key}_{}", slug(&ck)),
                    "sensor",
                    &counter_name(dir, class),
                    obj(json!({
                        "state_topic": t.device_cat(&d.id, cat, &ck),
                        "state_class": state_class,
                        "icon": "mdi:counter",
                    })),
                ));
            }
            out.push(Component {
                key: format!("{key}_trigger"),
                platform: "device_automation",
                config: obj(json!({
                    "automation_type": "trigger",
                    "topic": t.device_cat(&d.id, cat, "event"),
                    "type": et,
                    "subtype": cat,
                    "payload": et,
                    "value_template": "{{ value_json.event_type }}",
                })),
            });
        }
        for a in &caps.alarms {
            let state_topic = t.alarm(&d.id, &a.name, a.id.as_deref());
            let key = format!(
                "alarm_status_{}",
                slug(&alarm_key(&a.name, a.id.as_deref()))
            );
            out.push(self.entity(
                d,
                &key,
                "binary_sensor",
                &alarm_label(&a.name, a.id.as_deref()),
                obj(json!({
                    "state_topic": state_topic,
                    "payload_on": "ON",
                    "payload_off": "OFF",
                })),
            ));
        }
        out
    }

    fn bridge_components(&self) -> Vec<Component> {
        let t = &self.topics;
        let p = &self.bridge_entity_prefix;
        let ent = |key: &str, platform: &'static str, name: &str, mut cfg: Map<String, Value>| {
            cfg.insert("name".into(), json!(name));
            cfg.insert(
                "unique_id".into(),
                json!(format!("{}_{key}", self.bridge_identifier)),
            );
            cfg.insert(
                "default_entity_id".into(),
                json!(format!("{platform}.{p}_{key}")),
            );
            Component {
                key: key.to_owned(),
                platform,
                config: cfg,
            }
        };
        let info = t.bridge_info();
        let avail = self.bridge_only_availability();
        let sensor = |tpl: &str, extra: Value| {
            let mut m = obj(json!({
                "state_topic": info,
                "value_template": tpl,
                "entity_category": "diagnostic",
                "availability": avail,
            }));
            m.extend(obj(extra));
            m
        };
        vec![
            // No availability: it must be able to show "offline".
            ent(
                "connectivity",
                "binary_sensor",
                "Connectivity",
                obj(json!({
                    "state_topic": t.bridge_state(),
                    "payload_on": "online",
                    "payload_off": "offline",
                    "device_class": "connectivity",
                    "entity_category": "diagnostic",
                })),
            ),
            ent(
                "version",
                "sensor",
                "Version",
                sensor(
                    "{{ value_json.version }}",
                    json!({"icon": "mdi:information-outline"}),
                ),
            ),
            ent(
                "devices",
                "sensor",
                "Devices",
                sensor(
                    "{{ value_json.devices | count }}",
                    json!({"state_class": "measurement", "icon": "mdi:cctv"}),
                ),
            ),
            ent(
                "events",
                "sensor",
                "Events",
                sensor(
                    "{{ value_json.counters.events }}",
                    json!({"state_class": "total_increasing", "icon": "mdi:counter"}),
                ),
            ),
            ent(
                "unparsed",
                "sensor",
                "Unparsed posts",
                sensor(
                    "{{ value_json.counters.unparsed }}",
                    json!({"state_class": "total_increasing", "icon": "mdi:alert-circle-outline"}),
                ),
            ),
        ]
    }

    /// Discovery messages (topic, retained payload) for a camera, NVR channel or NVR.
    pub fn device_messages(&self, d: &Device, caps: &DeviceCaps) -> Vec<(String, Bytes)> {
        self.device_messages_of(d, self.device_components(d, caps))
    }

    /// Discovery messages of a device for the given components (from
    /// [`Discovery::device_components`]).
    pub fn device_messages_of(&self, d: &Device, comps: Vec<Component>) -> Vec<(String, Bytes)> {
        self.render(
            &device_identifier(d),
            self.device_block(d),
            Some(self.device_availability(d)),
            comps,
        )
    }

    /// Discovery messages for the bridge's own device.
    pub fn bridge_messages(&self) -> Vec<(String, Bytes)> {
        self.render(
            &self.bridge_identifier.clone(),
            self.bridge_device_block(),
            None,
            self.bridge_components(),
        )
    }

    fn render(
        &self,
        object_id: &str,
        device: Value,
        availability: Option<Value>,
        comps: Vec<Component>,
    ) -> Vec<(String, Bytes)> {
        let prefix = &self.ha.discovery_prefix;
        let to_bytes = |v: &Value| Bytes::from(serde_json::to_vec(v).unwrap_or_default());
        if !self.ha.legacy {
            let mut components = Map::new();
            for c in comps {
                let mut cfg = c.config;
                cfg.insert("platform".into(), json!(c.platform));
                components.insert(c.key, Value::Object(cfg));
            }
            let mut root = json!({
                "device": device,
                "origin": Self::origin(),
                "qos": 1,
                "components": components,
            });
            if let Some(a) = availability {
                root["availability"] = a;
                root["availability_mode"] = json!("all");
            }
            return vec![(
                format!("{prefix}/device/{object_id}/config"),
                to_bytes(&root),
            )];
        }
        comps
            .into_iter()
            .map(|c| {
                let mut cfg = c.config;
                cfg.insert("device".into(), device.clone());
                if c.platform != "device_automation" {
                    cfg.insert("origin".into(), Self::origin());
                    cfg.insert("qos".into(), json!(1));
                    if !cfg.contains_key("availability")
                        && let Some(a) = &availability
                    {
                        cfg.insert("availability".into(), a.clone());
                    }
                    if cfg.contains_key("availability") {
                        cfg.insert("availability_mode".into(), json!("all"));
                    }
                } else {
                    cfg.insert("qos".into(), json!(1));
                }
                let topic = format!(
                    "{prefix}/{}/{object_id}/{}/config",
                    c.platform,
                    object_id_part(&c.key)
                );
                (topic, to_bytes(&Value::Object(cfg)))
            })
            .collect()
    }
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::mqtt::config::default_off_delays;
    use crate::sinks::mqtt::payload::tests::{camera, nvr_channel};

    fn disc(legacy: bool) -> Discovery {
        let ha = HaConfig {
            legacy,
            ..HaConfig::default()
        };
        Discovery::new(
            Topics::new("camera"),
            ha,
            "camqtt-1",
            "camqtt",
            default_off_delays(),
            Duration::from_secs(30),
        )
    }

    fn caps(cats: &[Category]) -> DeviceCaps {
        let mut c = DeviceCaps::default();
        for cat in cats {
            let mut cc = CategoryCaps::new(cat.clone());
            cc.overview = true;
            cc.target = *cat == Category::Lpr;
            if *cat == Category::Counting {
                cc.counters.insert(("enter".into(), "person".into()));
                cc.counters.insert(("exist".into(), "car".into()));
            }
            c.categories.insert(cat.as_str().to_owned(), cc);
        }
        c
    }

    fn parse(b: &Bytes) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    fn no_object_id(v: &Value) {
        let s = v.to_string();
        assert!(!s.contains("\"object_id\""), "object_id found: {s}");
    }

    #[test]
    fn camera_device_discovery() {
        let d = disc(false);
        let dev = camera("58_5b_69_40_f4_0d", "58:5b:69:40:f4:0d");
        let msgs = d.device_messages(&dev, &caps(&[Category::Lpr, Category::Counting]));
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0, "homeassistant/device/camqtt_585b6940f40d/config");
        let v = parse(&msgs[0].1);
        no_object_id(&v);
        assert_eq!(v["availability_mode"], "all");
        assert_eq!(v["availability"][0]["topic"], "camera/bridge/state");
        assert_eq!(
            v["availability"][1]["topic"],
            "camera/58_5b_69_40_f4_0d/availability"
        );
        assert_eq!(v["qos"], 1);
        assert_eq!(v["origin"]["name"], "camqtt");
        assert_eq!(v["origin"]["sw_version"], env!("CARGO_PKG_VERSION"));
        let dv = &v["device"];
        assert_eq!(dv["identifiers"][0], "camqtt_585b6940f40d");
        assert_eq!(dv["connections"][0][0], "mac");
        assert_eq!(dv["connections"][0][1], "58:5b:69:40:f4:0d");
        assert_eq!(dv["via_device"], "camqtt_bridge_camqtt_1");
        assert_eq!(dv["configuration_url"], "http://192.168.1.50");
        assert_eq!(dv["serial_number"], "SN123");
        assert_eq!(dv["suggested_area"], "Garden");
        assert_eq!(dv["manufacturer"], "Viewtron");

        let c = &v["components"];
        let conn = &c["connectivity"];
        assert_eq!(conn["platform"], "binary_sensor");
        assert_eq!(conn["device_class"], "connectivity");
        assert_eq!(conn["entity_category"], "diagnostic");
        assert_eq!(conn["availability"].as_array().unwrap().len(), 1);
        assert_eq!(conn["state_topic"], "camera/58_5b_69_40_f4_0d/availability");

        let lpr = &c["lpr"];
        assert_eq!(lpr["platform"], "binary_sensor");
        assert_eq!(lpr["name"], "Vehicle");
        assert_eq!(lpr["device_class"], "occupancy");
        assert_eq!(lpr["off_delay"], 10);
        assert!(lpr.get("expire_after").is_none());
        assert_eq!(lpr["unique_id"], "camqtt_585b6940f40d_lpr");
        assert_eq!(
            lpr["default_entity_id"],
            "binary_sensor.58_5b_69_40_f4_0d_lpr"
        );
        assert_eq!(lpr["state_topic"], "camera/58_5b_69_40_f4_0d/lpr/state");

        let ev = &c["lpr_event"];
        assert_eq!(ev["platform"], "event");
        assert_eq!(ev["event_types"], json!(["plate_read"]));
        assert_eq!(ev["state_topic"], "camera/58_5b_69_40_f4_0d/lpr/event");
        assert_eq!(c["lpr_image"]["platform"], "image");
        assert_eq!(c["lpr_image"]["content_type"], "image/jpeg");
        assert_eq!(
            c["lpr_image"]["image_topic"],
            "camera/58_5b_69_40_f4_0d/lpr/image"
        );
        assert_eq!(
            c["lpr_target"]["image_topic"],
            "camera/58_5b_69_40_f4_0d/lpr/target"
        );
        assert!(c.get("counting_target").is_none());
        assert_eq!(c["lpr_last"]["device_class"], "timestamp");
        assert_eq!(
            c["plate"]["state_topic"],
            "camera/58_5b_69_40_f4_0d/lpr/plate"
        );
        assert_eq!(
            c["plate_list"]["state_topic"],
            "camera/58_5b_69_40_f4_0d/lpr/list"
        );
        let trig = &c["lpr_trigger"];
        assert_eq!(trig["platform"], "device_automation");
        assert_eq!(trig["automation_type"], "trigger");
        assert_eq!(trig["type"], "plate_read");
        assert_eq!(trig["subtype"], "lpr");
        assert_eq!(trig["payload"], "plate_read");
        assert_eq!(trig["value_template"], "{{ value_json.event_type }}");
        assert_eq!(c["counting"]["device_class"], "motion");
        assert_eq!(
            c["counting_enter_person"]["state_class"],
            "total_increasing"
        );
        assert_eq!(
            c["counting_enter_person"]["state_topic"],
            "camera/58_5b_69_40_f4_0d/counting/enter_person"
        );
        assert_eq!(c["counting_enter_person"]["name"], "Enter person");
        assert_eq!(c["counting_exist_car"]["state_class"], "measurement");
        // Entity names never repeat the device name.
        for (_, comp) in c.as_object().unwrap() {
            if let Some(n) = comp["name"].as_str() {
                assert!(!n.contains("Driveway"), "{n}");
            }
        }
    }

    #[test]
    fn nvr_channel_has_no_connections() {
        let d = disc(false);
        let ch = nvr_channel(3);
        let v = parse(&d.device_messages(&ch, &caps(&[Category::Intrusion]))[0].1);
        let dv = &v["device"];
        assert!(dv.get("connections").is_none(), "{dv}");
        assert!(dv.get("serial_number").is_none());
        assert_eq!(dv["identifiers"][0], "camqtt_aabbccddeeff_ch3");
        assert_eq!(dv["via_device"], "camqtt_aabbccddeeff");
        assert_eq!(v["components"]["intrusion"]["device_class"], "occupancy");
        assert_eq!(v["components"]["intrusion"]["off_delay"], 30);
        assert_eq!(
            v["components"]["intrusion_event"]["event_types"][0],
            "intrusion"
        );
        assert_eq!(
            v["components"]["intrusion"]["default_entity_id"],
            "binary_sensor.aa_bb_cc_dd_ee_ff_ch3_intrusion"
        );
        // The NVR itself is the physical box.
        let nvr = ch.parent.as_deref().unwrap();
        let v = parse(&d.device_messages(nvr, &DeviceCaps::default())[0].1);
        assert_eq!(v["device"]["connections"][0][1], "aa:bb:cc:dd:ee:ff");
        assert_eq!(v["device"]["via_device"], "camqtt_bridge_camqtt_1");
        assert_eq!(v["components"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn legacy_per_entity() {
        let d = disc(true);
        let dev = camera("cam1", "58:5b:69:40:f4:0d");
        let msgs = d.device_messages(&dev, &caps(&[Category::Motion]));
        let topics: Vec<&str> = msgs.iter().map(|(t, _)| t.as_str()).collect();
        assert!(
            topics.contains(&"homeassistant/binary_sensor/camqtt_585b6940f40d/motion/config"),
            "{topics:?}"
        );
        assert!(topics.contains(&"homeassistant/event/camqtt_585b6940f40d/motion_event/config"));
        assert!(topics.contains(
            &"homeassistant/device_automation/camqtt_585b6940f40d/motion_trigger/config"
        ));
        assert!(
            topics.contains(&"homeassistant/binary_sensor/camqtt_585b6940f40d/connectivity/config")
        );
        for (t, p) in &msgs {
            let v = parse(p);
            no_object_id(&v);
            assert!(v.get("platform").is_none(), "{t}");
            assert_eq!(v["device"]["identifiers"][0], "camqtt_585b6940f40d");
            if !t.contains("device_automation") {
                assert_eq!(v["availability_mode"], "all", "{t}");
                assert_eq!(v["origin"]["name"], "camqtt");
                assert!(
                    v["unique_id"]
                        .as_str()
                        .unwrap()
                        .starts_with("camqtt_585b6940f40d_")
                );
            }
        }
        let motion = msgs
            .iter()
            .find(|(t, _)| t.ends_with("/motion/config"))
            .map(|(_, p)| parse(p))
            .unwrap();
        assert_eq!(motion["device_class"], "motion");
        assert_eq!(motion["availability"].as_array().unwrap().len(), 2);
        let conn = msgs
            .iter()
            .find(|(t, _)| t.ends_with("/connectivity/config"))
            .map(|(_, p)| parse(p))
            .unwrap();
        assert_eq!(conn["availability"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn bridge_device() {
        let d = disc(false);
        let msgs = d.bridge_messages();
        assert_eq!(
            msgs[0].0,
            "homeassistant/device/camqtt_bridge_camqtt_1/config"
        );
        let v = parse(&msgs[0].1);
        no_object_id(&v);
        assert_eq!(v["device"]["identifiers"][0], "camqtt_bridge_camqtt_1");
        assert_eq!(v["device"]["name"], "camqtt bridge");
        assert!(v.get("availability").is_none());
        let c = &v["components"];
        assert_eq!(c["connectivity"]["state_topic"], "camera/bridge/state");
        assert!(c["connectivity"].get("availability").is_none());
        assert_eq!(c["version"]["state_topic"], "camera/bridge/info");
        assert_eq!(c["version"]["value_template"], "{{ value_json.version }}");
        assert_eq!(
            c["unparsed"]["value_template"],
            "{{ value_json.counters.unparsed }}"
        );
        assert_eq!(
            c["unparsed"]["availability"][0]["topic"],
            "camera/bridge/state"
        );
        assert_eq!(
            c["version"]["default_entity_id"],
            "sensor.camqtt_bridge_version"
        );
    }

    #[test]
    fn alarm_entities() {
        let ch = nvr_channel(4);
        let mut caps = DeviceCaps::default();
        caps.alarms.insert(AlarmEntity {
            name: "perimeterAlarm".into(),
            id: Some("1".into()),
        });
        let v = parse(&disc(false).device_messages(&ch, &caps)[0].1);
        no_object_id(&v);
        let a = &v["components"]["alarm_status_perimeteralarm_1"];
        assert_eq!(a["platform"], "binary_sensor");
        assert_eq!(a["name"], "Perimeter alarm 1");
        assert_eq!(
            a["state_topic"],
            "camera/aa_bb_cc_dd_ee_ff_ch4/alarm/perimeterAlarm_1"
        );
        assert_eq!(
            (a["payload_on"].as_str(), a["payload_off"].as_str()),
            (Some("ON"), Some("OFF"))
        );
        assert_eq!(
            a["unique_id"],
            "camqtt_aabbccddeeff_ch4_alarm_status_perimeteralarm_1"
        );
        assert_eq!(
            a["default_entity_id"],
            "binary_sensor.aa_bb_cc_dd_ee_ff_ch4_alarm_status_perimeteralarm_1"
        );
        // Held by the device until its false: no off_delay, no expire_after; availability as
        // every other entity of the device (the device-level list).
        assert!(a.get("off_delay").is_none() && a.get("expire_after").is_none());
        assert!(a.get("availability").is_none());
        assert_eq!(v["availability"].as_array().unwrap().len(), 2);
        assert!(
            !a["name"].as_str().unwrap().contains("Channel"),
            "no device name"
        );
        // Legacy mode: its own config topic, with the device availability.
        let msgs = disc(true).device_messages(&ch, &caps);
        let (_, p) = msgs
            .iter()
            .find(|(t, _)| {
                t == "homeassistant/binary_sensor/camqtt_aabbccddeeff_ch4/alarm_status_perimeteralarm_1/config"
            })
            .expect("legacy alarm entity");
        let v = parse(p);
        assert_eq!(v["availability"].as_array().unwrap().len(), 2);
        assert_eq!(v["availability_mode"], "all");
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

    #[test]
    fn device_classes() {
        assert_eq!(binary_device_class(&Category::Parking), Some("problem"));
        assert_eq!(binary_device_class(&Category::ZoneExit), Some("motion"));
        assert_eq!(binary_device_class(&Category::Metadata), None);
        assert_eq!(
            names(&Category::Other("door_bell".into())).binary,
            "Door bell"
        );
    }
}
