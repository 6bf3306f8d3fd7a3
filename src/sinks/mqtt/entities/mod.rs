//! Typed Home Assistant entities (pure).
//!
//! Each Home Assistant platform the bridge uses is a `#[derive(Serialize)]` struct in a file
//! of its own; it owns its platform name, its configuration (the MQTT discovery options of
//! that platform, absent options skipped), its component key (from which its `unique_id` and
//! `default_entity_id` come) and the topics Home Assistant subscribes to for it. [`Entity`]
//! is the closed set of them; [`discovery`](super::discovery) renders any list of entities
//! into discovery messages without knowing which ones they are.
//!
//! # Layout
//! - [`binary_sensor`], [`button`], [`event`], [`image`], [`sensor`], [`device_trigger`]: one platform
//!   each (the MQTT platform pages of the Home Assistant docs, linked on each type).
//! - [`catalog`]: the one table of category knowledge (entity names, device classes, event
//!   types, extra sensors), plus the names of counters, alarm and object-label entities.
//! - [`enumerator`]: what a device has shown ([`DeviceCaps`]) → its entities; the bridge's own
//!   entities.
//!
//! Conventions (Home Assistant MQTT discovery, "Naming of MQTT entities"): full option names,
//! no abbreviations; `default_entity_id`, never the deprecated `object_id`; entity names never
//! repeat the device name (Home Assistant prefixes it).

#![warn(missing_docs)]

pub mod binary_sensor;
pub mod button;
pub mod catalog;
pub mod device_trigger;
pub mod enumerator;
pub mod event;
pub mod image;
pub mod sensor;

use serde::Serialize;
use serde_json::Value;

pub use binary_sensor::{BinaryClass, BinarySensor};
pub use button::Button;
pub use device_trigger::DeviceTrigger;
pub use enumerator::{AlarmEntity, CategoryCaps, DeviceCaps, OffDelays};
pub use event::EventEntity;
pub use image::Image;
pub use sensor::{Sensor, SensorClass, StateClass};

/// One discovery component of a device: an entity of one of the platforms, or a device
/// trigger (not an entity in Home Assistant's sense: no state, no unique id).
///
/// Serialises to the platform's options only (no `platform`, `device`, `origin`: the
/// discovery rendering adds those as the discovery form requires).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Entity {
    /// `binary_sensor`.
    BinarySensor(BinarySensor),
    /// `button`.
    Button(Button),
    /// `event`.
    Event(EventEntity),
    /// `image`.
    Image(Image),
    /// `sensor`.
    Sensor(Sensor),
    /// `device_automation` (a device trigger).
    DeviceTrigger(DeviceTrigger),
}

/// The same expression for every variant of [`Entity`].
macro_rules! each {
    ($entity:expr, $e:ident => $body:expr) => {
        match $entity {
            Entity::BinarySensor($e) => $body,
            Entity::Button($e) => $body,
            Entity::Event($e) => $body,
            Entity::Image($e) => $body,
            Entity::Sensor($e) => $body,
            Entity::DeviceTrigger($e) => $body,
        }
    };
}

impl Entity {
    /// Component key (`lpr_event`), unique per device: the component's name in device
    /// discovery and the last level of its legacy discovery topic.
    pub fn key(&self) -> &str {
        each!(self, e => e.key())
    }

    /// The Home Assistant platform (`binary_sensor`, ..., `device_automation`).
    pub fn platform(&self) -> &'static str {
        fn of<E: HaEntity>(_: &E) -> &'static str {
            E::PLATFORM
        }
        each!(self, e => of(e))
    }

    /// The options every entity has; `None` for a device trigger.
    pub fn common(&self) -> Option<&Common> {
        match self {
            Entity::DeviceTrigger(_) => None,
            Entity::BinarySensor(e) => Some(&e.common),
            Entity::Button(e) => Some(&e.common),
            Entity::Event(e) => Some(&e.common),
            Entity::Image(e) => Some(&e.common),
            Entity::Sensor(e) => Some(&e.common),
        }
    }

    /// The topics Home Assistant subscribes to for this component and whose messages it
    /// loses until it has: `state_topic`, `image_topic`, `json_attributes_topic` and a device
    /// trigger's `topic` (availability topics are retained, so they need no wait).
    pub fn listen_topics(&self) -> impl Iterator<Item = &str> {
        each!(self, e => e.listen_topics()).into_iter().flatten()
    }

    /// The platform options as JSON (what [`Entity`] serialises to), to tell whether a
    /// component changed since it was last announced.
    pub fn config(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// What every typed entity struct provides to [`Entity`].
pub trait HaEntity: Serialize {
    /// The Home Assistant platform.
    const PLATFORM: &'static str;
    /// Component key, unique per device.
    fn key(&self) -> &str;
    /// The topics Home Assistant subscribes to for it (see [`Entity::listen_topics`]); at
    /// most two.
    fn listen_topics(&self) -> [Option<&str>; 2];
}

/// Options shared by every entity platform (Home Assistant MQTT docs, options common to all
/// platforms: `name`, `unique_id`, `default_entity_id`, `entity_category`, `icon`,
/// `availability`, `json_attributes_topic`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Common {
    /// Component key (not serialised; see [`Entity::key`]).
    #[serde(skip)]
    pub key: String,
    /// Entity name without the device name (`Plate read`).
    pub name: String,
    /// `<owner identifier>_<key>`, stable forever.
    pub unique_id: String,
    /// `<platform>.<owner entity prefix>_<key>`: the entity id Home Assistant gives the entity
    /// when it first registers it (replaces `object_id`, removed in HA 2026.4).
    pub default_entity_id: String,
    /// `diagnostic` for health information.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_category: Option<EntityCategory>,
    /// Material Design icon (`mdi:counter`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon: Option<&'static str>,
    /// The entity's own availability, replacing the device's (the connectivity sensors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability: Option<Vec<Availability>>,
    /// A topic whose JSON object becomes the entity's attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_attributes_topic: Option<String>,
}

impl Common {
    /// Diagnostic entity (hidden from auto-generated dashboards).
    pub fn diagnostic(mut self) -> Common {
        self.entity_category = Some(EntityCategory::Diagnostic);
        self
    }

    /// With an icon.
    pub fn with_icon(mut self, icon: &'static str) -> Common {
        self.icon = Some(icon);
        self
    }

    /// With an availability list of its own.
    pub fn with_availability(mut self, availability: Vec<Availability>) -> Common {
        self.availability = Some(availability);
        self
    }
}

/// `entity_category`. Sensors may only be `diagnostic`; the bridge has no `config` entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityCategory {
    /// Read-only health information.
    Diagnostic,
}

/// One entry of an `availability` list: `{"topic": ...}` with the default payloads
/// `online` / `offline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Availability {
    /// The (retained) availability topic.
    pub topic: String,
}

impl Availability {
    /// Availability from `topic`.
    pub fn new(topic: String) -> Availability {
        Availability { topic }
    }
}

/// Whose entities these are: the device (or the bridge) that makes their ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// HA identifier of the device (`camqtt_585b6940f40d`); prefix of every `unique_id`.
    pub identifier: String,
    /// Prefix of every `default_entity_id` after the platform (`58_5b_69_40_f4_0d`).
    pub entity_prefix: String,
}

impl Owner {
    /// The common options of the owner's entity `key` of platform `E`, named `name`.
    pub fn common<E: HaEntity>(&self, key: &str, name: &str) -> Common {
        let platform = E::PLATFORM;
        Common {
            key: key.to_owned(),
            name: name.to_owned(),
            unique_id: format!("{}_{key}", self.identifier),
            default_entity_id: format!("{platform}.{}_{key}", self.entity_prefix),
            entity_category: None,
            icon: None,
            availability: None,
            json_attributes_topic: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            identifier: "camqtt_abc".into(),
            entity_prefix: "cam_1".into(),
        }
    }

    #[test]
    fn listen_topics_per_platform() {
        let o = owner();
        let mut common = o.common::<Sensor>("plate", "Plate");
        common.json_attributes_topic = Some("t/attrs".into());
        let sensor = Entity::Sensor(Sensor::new(common, "t/plate".into()));
        assert_eq!(
            sensor.listen_topics().collect::<Vec<_>>(),
            ["t/plate", "t/attrs"]
        );
        let image = Entity::Image(Image::new(
            o.common::<Image>("lpr_image", "Plate overview"),
            "t/image".into(),
            "image/jpeg",
        ));
        assert_eq!(image.listen_topics().collect::<Vec<_>>(), ["t/image"]);
        let trigger = Entity::DeviceTrigger(DeviceTrigger::on_event(
            "lpr_trigger",
            "t/event".into(),
            "plate_read",
            "lpr",
        ));
        assert_eq!(trigger.listen_topics().collect::<Vec<_>>(), ["t/event"]);
        assert!(trigger.common().is_none());
        assert_eq!(trigger.key(), "lpr_trigger");
        assert_eq!(trigger.platform(), "device_automation");
    }

    #[test]
    fn ids_and_absent_options() {
        let e = Entity::Sensor(Sensor::new(
            owner().common::<Sensor>("lpr_last", "Last plate read"),
            "t/last".into(),
        ));
        let v = e.config();
        assert_eq!(v["unique_id"], "camqtt_abc_lpr_last");
        assert_eq!(v["default_entity_id"], "sensor.cam_1_lpr_last");
        for absent in [
            "key",
            "icon",
            "availability",
            "entity_category",
            "object_id",
        ] {
            assert!(v.get(absent).is_none(), "{absent}: {v}");
        }
        assert_eq!(e.key(), "lpr_last");
    }
}
