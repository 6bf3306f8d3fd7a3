//! Home Assistant discovery payloads (pure).
//!
//! A device's entities come from the [`entities`](super::entities) enumerator (typed entity
//! structs built from what the device has shown, [`DeviceCaps`]); this module renders any list
//! of them, for a device or for the bridge, into either one device-based discovery message
//! (`<prefix>/device/camqtt_<hw_key>/config`, HA 2024.11+) or, in legacy mode, one message per
//! entity (`<prefix>/<platform>/camqtt_<hw_key>/<key>/config`), with the shared `device`,
//! `origin` and availability blocks (Home Assistant MQTT docs, "Discovery messages" and
//! "Device discovery payload"). Full key names, no abbreviations; `default_entity_id`, never
//! `object_id`.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::config::HaConfig;
use super::entities::enumerator::{bridge_entities, device_entities, snapshot_button};
use super::entities::{Availability, Entity, OffDelays, Owner};
use super::topics::{Topics, slug};
use crate::event::{Category, Device, HandleKind};

pub use super::entities::{AlarmEntity, CategoryCaps, DeviceCaps};

/// `off_delay` of the object labels' binary sensors unless configured (`[detector]
/// off_delay`'s default).
pub const DEFAULT_OBJECT_OFF_DELAY: Duration = Duration::from_secs(30);

/// Builds discovery messages; holds what is the same for every device.
#[derive(Debug, Clone)]
pub struct Discovery {
    topics: Topics,
    ha: HaConfig,
    bridge: Owner,
    bridge_name: String,
    off_delays: OffDelays,
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

/// The `device` block of a discovery payload (Home Assistant device registry fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceBlock {
    /// `[camqtt_<hw_key>]`, from MAC / serial (plus the channel), never a name or address.
    pub identifiers: Vec<String>,
    /// Display name.
    pub name: String,
    /// Manufacturer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// Model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Firmware version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sw_version: Option<String>,
    /// Serial number (the physical box only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// `[["mac", <mac>]]` for the physical box only: Home Assistant merges devices that share
    /// a connection, so NVR channels must not repeat their NVR's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<(&'static str, String)>>,
    /// The parent device: the bridge for cameras and NVRs, the NVR for its channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_device: Option<String>,
    /// `http://<device address>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuration_url: Option<String>,
    /// Configured area.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggested_area: Option<String>,
}

/// The `origin` block: who published the discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
struct Origin {
    name: &'static str,
    sw_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    support_url: Option<&'static str>,
}

impl Origin {
    fn camqtt() -> Origin {
        let url = [
            option_env!("CARGO_PKG_REPOSITORY"),
            option_env!("CARGO_PKG_HOMEPAGE"),
        ]
        .into_iter()
        .flatten()
        .find(|u| !u.is_empty());
        Origin {
            name: "camqtt",
            sw_version: env!("CARGO_PKG_VERSION"),
            support_url: url,
        }
    }
}

/// `availability_mode`: the bridge uses `all` (bridge and device must both be online).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum AvailabilityMode {
    All,
}

/// `<prefix>/device/<id>/config`: the whole device in one message.
#[derive(Serialize)]
struct DevicePayload<'a> {
    device: &'a DeviceBlock,
    origin: Origin,
    qos: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    availability: Option<&'a [Availability]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    availability_mode: Option<AvailabilityMode>,
    components: BTreeMap<&'a str, DeviceComponent<'a>>,
}

/// One entry of `components`: the entity's options plus its `platform`.
#[derive(Serialize)]
struct DeviceComponent<'a> {
    platform: &'static str,
    #[serde(flatten)]
    entity: &'a Entity,
}

/// `<prefix>/<platform>/<id>/<key>/config` (legacy): one entity with the device, origin and
/// availability blocks of its own; a device trigger only with `device` and `qos`.
#[derive(Serialize)]
struct EntityPayload<'a> {
    #[serde(flatten)]
    entity: &'a Entity,
    device: &'a DeviceBlock,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<Origin>,
    qos: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    availability: Option<&'a [Availability]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    availability_mode: Option<AvailabilityMode>,
}

/// Compact JSON with sorted keys (through [`serde_json::Value`], whose maps are sorted): the
/// bytes the bridge has always published, so a retained config stays byte-identical.
fn to_bytes<T: Serialize>(payload: &T) -> Bytes {
    // Cannot fail: every map key is a string.
    let v = serde_json::to_value(payload).unwrap_or_default();
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

/// `http://<host>` of a device: its reported address, else its peer; IPv6 in brackets.
fn configuration_url(d: &Device) -> Option<String> {
    let host = d.info.ip.clone().filter(|s| !s.is_empty()).or_else(|| {
        d.info.peer.map(|p| match p {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        })
    })?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    Some(format!("http://{host}"))
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
            bridge: Owner {
                identifier: format!("camqtt_bridge_{}", slug(client_id)),
                entity_prefix: format!("{}_bridge", slug(bridge_name)),
            },
            bridge_name: if bridge_name.to_lowercase().ends_with("bridge") {
                bridge_name.to_owned()
            } else {
                format!("{bridge_name} bridge")
            },
            off_delays: OffDelays {
                per_category: off_delay,
                default: default_off_delay,
                objects: DEFAULT_OBJECT_OFF_DELAY,
            },
        }
    }

    /// With `off_delay` for the object labels' "<Label> detected" sensors (default
    /// [`DEFAULT_OBJECT_OFF_DELAY`]).
    pub fn with_object_off_delay(mut self, off_delay: Duration) -> Discovery {
        self.off_delays.objects = off_delay;
        self
    }

    /// Identifier of the bridge's HA device (`camqtt_bridge_<client id slug>`).
    pub fn bridge_identifier(&self) -> &str {
        &self.bridge.identifier
    }

    /// The `device` block. `connections` only for the physical box (no parent); `via_device`
    /// the bridge for cameras and NVRs, the NVR for channels.
    pub fn device_block(&self, d: &Device) -> DeviceBlock {
        let some = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        let physical = d.parent.is_none();
        DeviceBlock {
            identifiers: vec![device_identifier(d)],
            name: d.name.clone(),
            manufacturer: some(&d.info.manufacturer),
            model: some(&d.info.model),
            sw_version: some(&d.info.sw_version),
            serial_number: some(&d.info.serial).filter(|_| physical),
            connections: some(&d.info.mac)
                .filter(|_| physical)
                .map(|mac| vec![("mac", mac)]),
            via_device: Some(match &d.parent {
                None => self.bridge.identifier.clone(),
                Some(parent) => device_identifier(parent),
            }),
            configuration_url: configuration_url(d),
            suggested_area: some(&d.area),
        }
    }

    fn bridge_device_block(&self) -> DeviceBlock {
        DeviceBlock {
            identifiers: vec![self.bridge.identifier.clone()],
            name: self.bridge_name.clone(),
            manufacturer: Some("camqtt".into()),
            model: Some("camqtt bridge".into()),
            sw_version: Some(env!("CARGO_PKG_VERSION").into()),
            serial_number: None,
            connections: None,
            via_device: None,
            configuration_url: None,
            suggested_area: None,
        }
    }

    /// All entities of a device with the given capabilities (see [`device_entities`]); a
    /// device known by a `[[poll]]` handle also gets its "Take snapshot" button, and no
    /// on/off sensor for its pictures: a polled picture is not a detection (the sensor would
    /// stay `on` whenever pictures come faster than its off delay).
    pub fn device_components(&self, d: &Device, caps: &DeviceCaps) -> Vec<Entity> {
        let owner = Owner {
            identifier: device_identifier(d),
            entity_prefix: slug(&d.id),
        };
        let mut out = device_entities(&owner, &self.topics, &d.id, caps, &self.off_delays);
        if d.info.handles.iter().any(|h| h.kind == HandleKind::Poll) {
            let snapshot = Category::Snapshot;
            out.retain(|e| !(e.platform() == "binary_sensor" && e.key() == snapshot.as_str()));
            out.push(snapshot_button(&owner, &self.topics, &d.id));
        }
        out
    }

    /// Discovery messages (topic, retained payload) for a camera, NVR channel or NVR.
    pub fn device_messages(&self, d: &Device, caps: &DeviceCaps) -> Vec<(String, Bytes)> {
        self.device_messages_of(d, self.device_components(d, caps))
    }

    /// Discovery messages of a device for the given entities (from
    /// [`Discovery::device_components`]); its availability is the bridge's and its own.
    pub fn device_messages_of(&self, d: &Device, entities: Vec<Entity>) -> Vec<(String, Bytes)> {
        let availability = [
            Availability::new(self.topics.bridge_state()),
            Availability::new(self.topics.availability(&d.id)),
        ];
        self.render(
            &device_identifier(d),
            &self.device_block(d),
            Some(&availability),
            &entities,
        )
    }

    /// Discovery messages for the bridge's own device (no device availability: its entities
    /// carry their own, the connectivity none).
    pub fn bridge_messages(&self) -> Vec<(String, Bytes)> {
        let entities = bridge_entities(&self.bridge, &self.topics);
        self.render(
            &self.bridge.identifier,
            &self.bridge_device_block(),
            None,
            &entities,
        )
    }

    /// Device-based discovery (one message), or legacy (one per entity).
    fn render(
        &self,
        object_id: &str,
        device: &DeviceBlock,
        availability: Option<&[Availability]>,
        entities: &[Entity],
    ) -> Vec<(String, Bytes)> {
        let prefix = &self.ha.discovery_prefix;
        if !self.ha.legacy {
            let components = entities
                .iter()
                .map(|entity| {
                    let platform = entity.platform();
                    (entity.key(), DeviceComponent { platform, entity })
                })
                .collect();
            let root = DevicePayload {
                device,
                origin: Origin::camqtt(),
                qos: 1,
                availability,
                availability_mode: availability.map(|_| AvailabilityMode::All),
                components,
            };
            return vec![(
                format!("{prefix}/device/{object_id}/config"),
                to_bytes(&root),
            )];
        }
        entities
            .iter()
            .map(|entity| {
                let payload = match entity.common() {
                    // A device trigger has no origin or availability options.
                    None => EntityPayload {
                        entity,
                        device,
                        origin: None,
                        qos: 1,
                        availability: None,
                        availability_mode: None,
                    },
                    Some(common) => {
                        let own = common.availability.is_some();
                        EntityPayload {
                            entity,
                            device,
                            origin: Some(Origin::camqtt()),
                            qos: 1,
                            availability: availability.filter(|_| !own),
                            availability_mode: (own || availability.is_some())
                                .then_some(AvailabilityMode::All),
                        }
                    }
                };
                let topic = format!(
                    "{prefix}/{}/{object_id}/{}/config",
                    entity.platform(),
                    object_id_part(entity.key())
                );
                (topic, to_bytes(&payload))
            })
            .collect()
    }
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::event::Category;
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
    fn poll_device_has_snapshot_image_and_take_button() {
        use crate::event::{Handle, HandleKind};
        let mut dev = camera("gate", "58:5b:69:40:f4:0d");
        dev.info.mac = None;
        dev.info.handles = vec![Handle::new(HandleKind::Poll, "gate")];
        for legacy in [false, true] {
            let d = disc(legacy);
            let comps = d.device_components(&dev, &caps(&[Category::Snapshot]));
            let button = comps
                .iter()
                .find(|e| e.platform() == "button")
                .expect("button");
            let v = button.config();
            assert_eq!(v["name"], "Take snapshot");
            assert_eq!(v["command_topic"], "camera/gate/snapshot/take");
            assert_eq!(v["retain"], false);
            assert_eq!(button.listen_topics().count(), 0);
            let image = comps.iter().find(|e| e.platform() == "image").unwrap();
            assert_eq!(image.config()["image_topic"], "camera/gate/snapshot/image");
            assert!(
                !comps
                    .iter()
                    .any(|e| e.platform() == "binary_sensor" && e.key() == "snapshot"),
                "a polled picture is not a detection: no on/off sensor"
            );
            assert_eq!(image.config()["name"], "Snapshot");
            let msgs = d.device_messages(&dev, &caps(&[Category::Snapshot]));
            let all: String = msgs
                .iter()
                .map(|(t, p)| format!("{t} {}", String::from_utf8_lossy(p)))
                .collect();
            assert!(all.contains("camera/gate/snapshot/take"), "{all}");
        }
        // Without a poll handle (a Viewtron snapshot event): no button, the sensor stays.
        let d = disc(false);
        let plain = camera("cam", "58:5b:69:40:f4:0d");
        let comps = d.device_components(&plain, &caps(&[Category::Snapshot]));
        assert!(!comps.iter().any(|e| e.platform() == "button"));
        assert!(
            comps
                .iter()
                .any(|e| e.platform() == "binary_sensor" && e.key() == "snapshot")
        );
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
    fn object_label_entities() {
        let dev = camera("gate", "58:5b:69:40:f4:0d");
        let mut c = caps(&[Category::Snapshot]);
        let snap = c.categories.get_mut("snapshot").unwrap();
        snap.annotated = true;
        snap.objects.insert("person".into(), "person".into());
        snap.objects
            .insert("traffic_light".into(), "traffic light".into());
        // An `Other` category whose key is a label entity's: the category keeps it.
        let odd = Category::Other("person_detected".into());
        c.categories
            .insert(odd.as_str().to_owned(), CategoryCaps::new(odd));
        let d = disc(false).with_object_off_delay(Duration::from_secs(12));
        let v = parse(&d.device_messages(&dev, &c)[0].1);
        no_object_id(&v);
        let comps = &v["components"];
        let p = &comps["person_detected"];
        assert_eq!(p["name"], "Person detected", "the category's, not replaced");
        assert_eq!(p["state_topic"], "camera/gate/person_detected/state");
        assert_eq!(
            comps["person_count"]["state_topic"],
            "camera/gate/objects/person/count"
        );
        assert_eq!(comps["person_count"]["icon"], "mdi:account-multiple");
        let t = &comps["traffic_light_detected"];
        assert_eq!(t["name"], "Traffic light detected");
        assert_eq!(t["device_class"], "occupancy");
        assert_eq!(t["off_delay"], 12);
        assert_eq!(t["state_topic"], "camera/gate/objects/traffic_light/state");
        assert_eq!(t["unique_id"], "camqtt_585b6940f40d_traffic_light_detected");
        assert_eq!(
            t["default_entity_id"],
            "binary_sensor.gate_traffic_light_detected"
        );
        assert!(t.get("availability").is_none(), "the device's availability");
        let n = &comps["traffic_light_count"];
        assert_eq!(n["state_class"], "measurement");
        assert_eq!(n["icon"], "mdi:counter");
        assert!(n.get("device_class").is_none() && n.get("unit_of_measurement").is_none());
        let a = &comps["snapshot_annotated"];
        assert_eq!(a["platform"], "image");
        assert_eq!(a["name"], "Snapshot annotated");
        assert_eq!(a["image_topic"], "camera/gate/snapshot/annotated");
        assert_eq!(a["content_type"], "image/jpeg");
        assert_eq!(v["availability"].as_array().unwrap().len(), 2);

        // Legacy: one config per entity, with availability.
        let msgs = disc(true).device_messages(&dev, &c);
        let (_, p) = msgs
            .iter()
            .find(|(t, _)| {
                t == "homeassistant/binary_sensor/camqtt_585b6940f40d/traffic_light_detected/config"
            })
            .expect("legacy label sensor");
        let v = parse(p);
        assert_eq!(v["off_delay"], 30, "the default object off delay");
        assert_eq!(v["availability_mode"], "all");
        assert!(msgs.iter().any(|(t, _)| {
            t == "homeassistant/image/camqtt_585b6940f40d/snapshot_annotated/config"
        }));
    }
}
