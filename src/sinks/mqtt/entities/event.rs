//! `event` entities (Home Assistant "MQTT Event",
//! <https://www.home-assistant.io/integrations/event.mqtt/>).

use serde::Serialize;

use super::{Common, HaEntity};

/// An event entity: fires on every JSON message on `state_topic` whose `event_type` is one of
/// `event_types` (the other keys become event attributes). Its state is the time of the last
/// event, so the same plate twice still triggers an automation. Messages must not be
/// retained: Home Assistant discards replayed retained events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventEntity {
    /// Name, ids, category, icon, availability.
    #[serde(flatten)]
    pub common: Common,
    /// Where the event JSON is published (`<base>/<device>/<category>/event`).
    pub state_topic: String,
    /// The `event_type` values the entity accepts (required by Home Assistant).
    pub event_types: Vec<&'static str>,
}

impl EventEntity {
    /// Events of one type on `state_topic`.
    pub fn new(common: Common, state_topic: String, event_type: &'static str) -> EventEntity {
        EventEntity {
            common,
            state_topic,
            event_types: vec![event_type],
        }
    }
}

impl HaEntity for EventEntity {
    const PLATFORM: &'static str = "event";

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
