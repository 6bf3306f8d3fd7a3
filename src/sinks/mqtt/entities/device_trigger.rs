//! Device triggers (Home Assistant "MQTT Device trigger", platform `device_automation`,
//! <https://www.home-assistant.io/integrations/device_trigger.mqtt/>).

use serde::Serialize;

use super::HaEntity;

/// A device trigger for the automation editor: fires when a message on `topic`, passed through
/// `value_template`, equals `payload`. No name, no unique id, no state, no availability;
/// (`type`, `subtype`) is unique per device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceTrigger {
    /// Component key (not serialised; see [`super::Entity::key`]).
    #[serde(skip)]
    pub key: String,
    /// Always `trigger`.
    pub automation_type: &'static str,
    /// The event topic it listens on.
    pub topic: String,
    /// Trigger type (the event type, `plate_read`).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Trigger subtype (the category, `lpr`).
    pub subtype: String,
    /// The value that fires it.
    pub payload: &'static str,
    /// Extracts the value from the event JSON.
    pub value_template: &'static str,
}

impl DeviceTrigger {
    /// Fires on event JSON on `topic` whose `event_type` is `event_type`; type `event_type`,
    /// subtype `subtype`.
    pub fn on_event(
        key: &str,
        topic: String,
        event_type: &'static str,
        subtype: &str,
    ) -> DeviceTrigger {
        DeviceTrigger {
            key: key.to_owned(),
            automation_type: "trigger",
            topic,
            kind: event_type,
            subtype: subtype.to_owned(),
            payload: event_type,
            value_template: "{{ value_json.event_type }}",
        }
    }
}

impl HaEntity for DeviceTrigger {
    const PLATFORM: &'static str = "device_automation";

    fn key(&self) -> &str {
        &self.key
    }

    fn listen_topics(&self) -> [Option<&str>; 2] {
        [Some(&self.topic), None]
    }
}
