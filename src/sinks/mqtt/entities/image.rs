//! `image` entities (Home Assistant "MQTT Image",
//! <https://www.home-assistant.io/integrations/image.mqtt/>).

use serde::Serialize;

use super::{Common, HaEntity};

/// An image entity fed with raw image bytes on `image_topic` (no envelope, no base64). Its
/// state is the time of the last image. Home Assistant keeps the image in memory only, so
/// the topic is usually retained.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Image {
    /// Name, ids, category, icon, availability.
    #[serde(flatten)]
    pub common: Common,
    /// Where the image bytes are published (`<base>/<device>/<category>/image|target`).
    pub image_topic: String,
    /// MIME type of the bytes (`image/jpeg`).
    pub content_type: &'static str,
}

impl Image {
    /// Images of `content_type` on `image_topic`.
    pub fn new(common: Common, image_topic: String, content_type: &'static str) -> Image {
        Image {
            common,
            image_topic,
            content_type,
        }
    }
}

impl HaEntity for Image {
    const PLATFORM: &'static str = "image";

    fn key(&self) -> &str {
        &self.common.key
    }

    fn listen_topics(&self) -> [Option<&str>; 2] {
        [
            Some(&self.image_topic),
            self.common.json_attributes_topic.as_deref(),
        ]
    }
}
