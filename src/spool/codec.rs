//! Record bodies: a [`Routed`] message as bytes and back (pure: no I/O).
//!
//! ```text
//! meta_len u32 LE | meta (JSON: the serialised Routed) | image bytes, in `images` order
//! ```
//!
//! The metadata is the message's own serde form ([`Routed`], [`crate::event::Event`]): small,
//! self-describing, tolerant of added optional fields. Each image appears in it as metadata
//! with its `len`; the images stay raw after it, so a 500 KB JPEG costs 500 KB on disk, not
//! 670 KB of base64. Decoded images share the record's buffer (`Bytes::slice`), nothing is
//! copied. Records written by camqtt 0.1 have exactly this layout (its mirror types had the
//! same field names), so an upgraded bridge delivers an old spool as it is.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;

use crate::event::Routed;

/// Why a record body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The body is shorter than its own lengths say.
    #[error("record body truncated")]
    Truncated,
    /// The metadata is not a message this version understands.
    #[error("record metadata: {0}")]
    Meta(#[from] serde_json::Error),
    /// Image lengths do not add up to the body.
    #[error("image lengths do not match the record body")]
    ImageLength,
}

/// Encode a routed message as a record body.
pub fn encode(r: &Routed) -> Vec<u8> {
    // Plain data (strings, numbers, options): serialising cannot fail; NaN becomes null.
    let json = serde_json::to_vec(r).unwrap_or_else(|_| b"null".to_vec());
    let images: &[crate::event::Image] = match r {
        Routed::Event { event, .. } => &event.images,
        _ => &[],
    };
    let total: usize = images.iter().map(|i| i.data.len()).sum();
    let mut out = Vec::with_capacity(4 + json.len() + total);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    for i in images {
        out.extend_from_slice(&i.data);
    }
    out
}

/// The image byte counts of an event record's metadata (the serde form of an image carries
/// `len`; the model's image does not keep it).
#[derive(Deserialize)]
struct Lens {
    #[serde(rename = "Event")]
    record: EventRecordLens,
}

#[derive(Deserialize)]
struct EventRecordLens {
    event: EventLens,
}

#[derive(Deserialize)]
struct EventLens {
    images: Vec<ImageLen>,
}

#[derive(Deserialize)]
struct ImageLen {
    len: u64,
}

/// Decode a record body. Never panics, whatever the bytes.
pub fn decode(body: Bytes) -> Result<Routed, CodecError> {
    if body.len() < 4 {
        return Err(CodecError::Truncated);
    }
    let meta_len = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
    if body.len() - 4 < meta_len {
        return Err(CodecError::Truncated);
    }
    let meta = &body[4..4 + meta_len];
    let mut routed: Routed = serde_json::from_slice(meta)?;
    let Routed::Event { event, .. } = &mut routed else {
        return if body.len() == 4 + meta_len {
            Ok(routed)
        } else {
            Err(CodecError::ImageLength)
        };
    };
    let lens: Lens = serde_json::from_slice(meta)?;
    let lens = lens.record.event.images;
    let event = Arc::make_mut(event);
    if lens.len() != event.images.len() {
        return Err(CodecError::ImageLength);
    }
    let mut pos = 4 + meta_len;
    for (image, ImageLen { len }) in event.images.iter_mut().zip(lens) {
        let len = usize::try_from(len).map_err(|_| CodecError::ImageLength)?;
        if body.len() - pos < len {
            return Err(CodecError::ImageLength);
        }
        image.data = body.slice(pos..pos + len);
        pos += len;
    }
    if pos != body.len() {
        return Err(CodecError::ImageLength);
    }
    Ok(routed)
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
    fn short_and_inconsistent_bodies_are_errors() {
        assert!(matches!(decode(Bytes::new()), Err(CodecError::Truncated)));
        assert!(matches!(
            decode(Bytes::from_static(&[9, 0, 0, 0, b'{'])),
            Err(CodecError::Truncated)
        ));
        assert!(matches!(
            decode(Bytes::from_static(&[2, 0, 0, 0, b'{', b'}'])),
            Err(CodecError::Meta(_))
        ));
    }
}
