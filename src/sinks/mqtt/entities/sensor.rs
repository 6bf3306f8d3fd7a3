//! `sensor` entities (Home Assistant "MQTT Sensor",
//! <https://www.home-assistant.io/integrations/sensor.mqtt/>).

use serde::Serialize;

use super::{Common, HaEntity};

/// A sensor: the (retained) value on `state_topic`, optionally picked out of JSON by
/// `value_template`. State strings are limited to 255 characters by Home Assistant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sensor {
    /// Name, ids, category, icon, availability.
    #[serde(flatten)]
    pub common: Common,
    /// Where the value is published.
    pub state_topic: String,
    /// Jinja template extracting the value (`{{ value_json.version }}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_template: Option<&'static str>,
    /// Device class (`timestamp` for "last event at").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<SensorClass>,
    /// State class, for long-term statistics of numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_class: Option<StateClass>,
}

/// Sensor device classes the bridge uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorClass {
    /// An ISO 8601 time with time zone.
    Timestamp,
}

/// Sensor state classes the bridge uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateClass {
    /// A current value (objects present now).
    Measurement,
    /// A counter that only grows (a reset to a lower value starts a new cycle).
    TotalIncreasing,
}

impl Sensor {
    /// The plain value of `state_topic`.
    pub fn new(common: Common, state_topic: String) -> Sensor {
        Sensor {
            common,
            state_topic,
            value_template: None,
            device_class: None,
            state_class: None,
        }
    }

    /// With a value template.
    pub fn template(mut self, template: &'static str) -> Sensor {
        self.value_template = Some(template);
        self
    }

    /// With a device class.
    pub fn class(mut self, class: SensorClass) -> Sensor {
        self.device_class = Some(class);
        self
    }

    /// With a state class (`None`: none).
    pub fn state_class(mut self, class: Option<StateClass>) -> Sensor {
        self.state_class = class;
        self
    }
}

impl HaEntity for Sensor {
    const PLATFORM: &'static str = "sensor";

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
