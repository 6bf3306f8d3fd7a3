//! `button` entities (Home Assistant "MQTT Button",
//! <https://www.home-assistant.io/integrations/button.mqtt/>).

use serde::Serialize;

use super::{Common, HaEntity};

/// A button: pressing it in Home Assistant publishes `payload_press` (default `PRESS`) to
/// `command_topic`, not retained (a retained command would run again on every reconnect). It
/// has no state topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Button {
    /// Name, ids, category, icon, availability.
    #[serde(flatten)]
    pub common: Common,
    /// Where a press is published (`<base>/<device>/snapshot/take`).
    pub command_topic: String,
    /// Never retained.
    pub retain: bool,
}

impl Button {
    /// A button publishing to `command_topic`.
    pub fn new(common: Common, command_topic: String) -> Button {
        Button {
            common,
            command_topic,
            retain: false,
        }
    }
}

impl HaEntity for Button {
    const PLATFORM: &'static str = "button";

    fn key(&self) -> &str {
        &self.common.key
    }

    /// None: Home Assistant only publishes to the command topic.
    fn listen_topics(&self) -> [Option<&str>; 2] {
        [None, self.common.json_attributes_topic.as_deref()]
    }
}
