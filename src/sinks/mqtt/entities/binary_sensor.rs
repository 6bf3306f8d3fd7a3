//! `binary_sensor` entities (Home Assistant "MQTT Binary sensor",
//! <https://www.home-assistant.io/integrations/binary_sensor.mqtt/>).

use serde::Serialize;

use super::{Common, HaEntity};

/// A binary sensor: `state_topic` carries `payload_on` / `payload_off`.
///
/// Detections are turned off by the device's own stop or by `off_delay` (Home Assistant turns
/// the entity off itself after that many seconds without a new `ON`); never `expire_after`,
/// which makes the entity *unavailable* instead.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BinarySensor {
    /// Name, ids, category, icon, availability.
    #[serde(flatten)]
    pub common: Common,
    /// Where the state is published.
    pub state_topic: String,
    /// Payload meaning on (`ON`, `online`).
    pub payload_on: &'static str,
    /// Payload meaning off (`OFF`, `offline`).
    pub payload_off: &'static str,
    /// Device class (what "on" means; also the icon).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<BinaryClass>,
    /// Seconds after the last `ON` until Home Assistant sets the entity off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub off_delay: Option<u64>,
}

/// Binary sensor device classes the bridge uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryClass {
    /// Something moved now (short pulses).
    Motion,
    /// An area is occupied (held longer).
    Occupancy,
    /// A problem (parking violation, alarm input).
    Problem,
    /// Smoke / fire.
    Smoke,
    /// Heat.
    Heat,
    /// Sound.
    Sound,
    /// Link state of a device or of the bridge.
    Connectivity,
}

impl BinarySensor {
    /// `ON` / `OFF` on `state_topic`, no device class, no off delay.
    pub fn on_off(common: Common, state_topic: String) -> BinarySensor {
        BinarySensor {
            common,
            state_topic,
            payload_on: "ON",
            payload_off: "OFF",
            device_class: None,
            off_delay: None,
        }
    }

    /// Diagnostic connectivity sensor on an availability topic (`online` / `offline`).
    pub fn connectivity(common: Common, availability_topic: String) -> BinarySensor {
        BinarySensor {
            common: common.diagnostic(),
            state_topic: availability_topic,
            payload_on: "online",
            payload_off: "offline",
            device_class: Some(BinaryClass::Connectivity),
            off_delay: None,
        }
    }
}

impl HaEntity for BinarySensor {
    const PLATFORM: &'static str = "binary_sensor";

    fn key(&self) -> &str {
        &self.common.key
    }

    fn listen_topics(&self) -> [Option<&str>; 2] {
        [
            Some(&self.state_topic),
            self.common.json_attributes_topic.as_deref(),
        ]
    }
}
