//! Record bodies: a [`Routed`] message as bytes and back (pure: no I/O).
//!
//! ```text
//! meta_len u32 LE | meta (JSON) | image bytes, concatenated in `meta.images` order
//! ```
//!
//! The metadata is JSON (small, self-describing, tolerant of added optional fields); the
//! images stay raw so a 500 KB JPEG costs 500 KB on disk, not 670 KB of base64. Decoded images
//! share the record's buffer (`Bytes::slice`), nothing is copied.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::event::{
    Attributes, Category, Device, DeviceInfo, Event, Image, ImageRole, Phase, Routed, TimeSource,
    Unparsed,
};

/// Why a record body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The body is shorter than its own lengths say.
    #[error("record body truncated")]
    Truncated,
    /// The metadata is not what this version writes.
    #[error("record metadata: {0}")]
    Meta(#[from] serde_json::Error),
    /// Image lengths do not add up to the body.
    #[error("image lengths do not match the record body")]
    ImageLength,
}

/// A wall-clock time as seconds and nanoseconds relative to the epoch (may be negative:
/// a camera clock can be anything).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Time(i64, u32);

impl From<SystemTime> for Time {
    fn from(t: SystemTime) -> Time {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time(
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos(),
            ),
            Err(e) => {
                let d = e.duration();
                // -(secs) - nanos = -(secs + 1) + (1e9 - nanos)
                let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                if d.subsec_nanos() == 0 {
                    Time(-secs, 0)
                } else {
                    Time(-secs - 1, 1_000_000_000 - d.subsec_nanos())
                }
            }
        }
    }
}

impl Time {
    fn to_system(self) -> SystemTime {
        let nanos = Duration::from_nanos(u64::from(self.1.min(999_999_999)));
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_secs(self.0 as u64) + nanos
        } else {
            UNIX_EPOCH - Duration::from_secs(self.0.unsigned_abs()) + nanos
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ImageMeta {
    role: ImageRole,
    content_type: String,
    width: Option<u32>,
    height: Option<u32>,
    target_id: Option<u64>,
    len: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct EventMeta {
    device: DeviceInfo,
    category: Category,
    phase: Phase,
    time: Time,
    time_source: TimeSource,
    time_raw: Option<String>,
    received: Time,
    source: String,
    raw_type: String,
    envelope: Option<String>,
    config_version: Option<String>,
    attrs: Attributes,
    images: Vec<ImageMeta>,
    warnings: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct UnparsedMeta {
    peer: String,
    source: String,
    reason: String,
    detail: String,
    path: Option<String>,
    body: String,
    body_len: usize,
}

#[derive(Debug, Serialize, Deserialize)]
enum Meta {
    Event {
        device: Device,
        event: Box<EventMeta>,
    },
    Seen {
        device: Device,
    },
    Offline {
        device: Device,
    },
    Unparsed(UnparsedMeta),
}

/// Source and MIME names are `&'static str` in the model; map the stored text back to the
/// names this build knows.
fn static_name(s: &str, known: &[&'static str], fallback: &'static str) -> &'static str {
    known.iter().copied().find(|k| *k == s).unwrap_or(fallback)
}

/// Source names this build produces.
pub const SOURCES: &[&str] = &["viewtron", "test"];
const MIME: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/bmp"];

/// Encode a routed message as a record body.
pub fn encode(r: &Routed) -> Vec<u8> {
    let mut images: Vec<&Bytes> = Vec::new();
    let meta = match r {
        Routed::Event { device, event } => {
            let e: &Event = event;
            images.extend(e.images.iter().map(|i| &i.data));
            Meta::Event {
                device: device.clone(),
                event: Box::new(EventMeta {
                    device: e.device.clone(),
                    category: e.category.clone(),
                    phase: e.phase,
                    time: e.time.into(),
                    time_source: e.time_source,
                    time_raw: e.time_raw.clone(),
                    received: e.received.into(),
                    source: e.source.to_string(),
                    raw_type: e.raw_type.clone(),
                    envelope: e.envelope.clone(),
                    config_version: e.config_version.clone(),
                    attrs: e.attrs.clone(),
                    images: e
                        .images
                        .iter()
                        .map(|i| ImageMeta {
                            role: i.role,
                            content_type: i.content_type.to_string(),
                            width: i.width,
                            height: i.height,
                            target_id: i.target_id,
                            len: i.data.len() as u64,
                        })
                        .collect(),
                    warnings: e.warnings.clone(),
                }),
            }
        }
        Routed::Seen { device } => Meta::Seen {
            device: device.clone(),
        },
        Routed::Offline { device } => Meta::Offline {
            device: device.clone(),
        },
        Routed::Unparsed(u) => Meta::Unparsed(UnparsedMeta {
            peer: u.peer.clone(),
            source: u.source.to_string(),
            reason: u.reason.clone(),
            detail: u.detail.clone(),
            path: u.path.clone(),
            body: u.body.clone(),
            body_len: u.body_len,
        }),
    };
    // Plain data (strings, numbers, options): serialising cannot fail; NaN becomes null.
    let json = serde_json::to_vec(&meta).unwrap_or_else(|_| b"null".to_vec());
    let total: usize = images.iter().map(|b| b.len()).sum();
    let mut out = Vec::with_capacity(4 + json.len() + total);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    for b in images {
        out.extend_from_slice(b);
    }
    out
}

/// Decode a record body. With `strip_images` the images are left out (and a warning says
/// so in the event). Never panics, whatever the bytes.
pub fn decode(body: Bytes, strip_images: bool) -> Result<Routed, CodecError> {
    if body.len() < 4 {
        return Err(CodecError::Truncated);
    }
    let meta_len = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
    if body.len() - 4 < meta_len {
        return Err(CodecError::Truncated);
    }
    let meta: Meta = serde_json::from_slice(&body[4..4 + meta_len])?;
    let mut pos = 4 + meta_len;
    Ok(match meta {
        Meta::Event { device, event: m } => {
            let mut images = Vec::with_capacity(m.images.len());
            for i in &m.images {
                let len = usize::try_from(i.len).map_err(|_| CodecError::ImageLength)?;
                if body.len() - pos < len {
                    return Err(CodecError::ImageLength);
                }
                images.push(Image {
                    role: i.role,
                    data: body.slice(pos..pos + len),
                    content_type: static_name(&i.content_type, MIME, "application/octet-stream"),
                    width: i.width,
                    height: i.height,
                    target_id: i.target_id,
                });
                pos += len;
            }
            if pos != body.len() {
                return Err(CodecError::ImageLength);
            }
            let m = *m;
            let mut warnings = m.warnings;
            if strip_images && !images.is_empty() {
                images.clear();
                warnings.push(
                    "images dropped from the spool backlog (older than image_max_age)".into(),
                );
            }
            Routed::Event {
                device,
                event: Arc::new(Event {
                    device: m.device,
                    category: m.category,
                    phase: m.phase,
                    time: m.time.to_system(),
                    time_source: m.time_source,
                    time_raw: m.time_raw,
                    received: m.received.to_system(),
                    source: static_name(&m.source, SOURCES, "unknown"),
                    raw_type: m.raw_type,
                    envelope: m.envelope,
                    config_version: m.config_version,
                    attrs: m.attrs,
                    images,
                    warnings,
                }),
            }
        }
        Meta::Seen { device } => Routed::Seen { device },
        Meta::Offline { device } => Routed::Offline { device },
        Meta::Unparsed(u) => Routed::Unparsed(Unparsed {
            peer: u.peer,
            source: static_name(&u.source, SOURCES, "unknown"),
            reason: u.reason,
            detail: u.detail,
            path: u.path,
            body: u.body,
            body_len: u.body_len,
        }),
    })
}

/// Number of images a decoded message carries (for counting what aging dropped).
pub fn image_count(r: &Routed) -> usize {
    match r {
        Routed::Event { event, .. } => event.images.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_and_after_the_epoch_round_trip() {
        for t in [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(1_791_408_287, 427_999_000),
            UNIX_EPOCH - Duration::new(5, 250_000_000),
            UNIX_EPOCH - Duration::from_secs(3),
        ] {
            assert_eq!(Time::from(t).to_system(), t);
        }
    }

    #[test]
    fn short_and_inconsistent_bodies_are_errors() {
        assert!(matches!(
            decode(Bytes::new(), false),
            Err(CodecError::Truncated)
        ));
        assert!(matches!(
            decode(Bytes::from_static(&[9, 0, 0, 0, b'{']), false),
            Err(CodecError::Truncated)
        ));
        assert!(matches!(
            decode(Bytes::from_static(&[2, 0, 0, 0, b'{', b'}']), false),
            Err(CodecError::Meta(_))
        ));
    }
}
