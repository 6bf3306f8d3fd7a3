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

/// Encode a routed message as a record body (what [`decode`] reads): [`encode_parts`]
/// joined into one buffer.
pub fn encode(r: &Routed) -> Vec<u8> {
    let parts = encode_parts(r);
    let mut out = Vec::with_capacity(parts.len());
    for p in parts.slices() {
        out.extend_from_slice(p);
    }
    out
}

/// A record body in pieces, as written: `u32` LE length of the metadata JSON, the JSON, then
/// each image's bytes in event order. The images are the event's own buffers (no copy): the
/// store writes the pieces with one vectored write.
#[derive(Debug)]
pub struct BodyParts {
    meta: Vec<u8>,
    images: Vec<Bytes>,
}

impl BodyParts {
    /// The pieces, in order.
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(&self.meta[..]).chain(self.images.iter().map(|b| &b[..]))
    }

    /// Body length, bytes.
    pub fn len(&self) -> usize {
        self.meta.len() + self.images.iter().map(Bytes::len).sum::<usize>()
    }

    /// Never true: the metadata length prefix is always there.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Encode a routed message as a record body, in pieces ([`BodyParts`]).
pub fn encode_parts(r: &Routed) -> BodyParts {
    // Plain data (strings, numbers, options): serialising cannot fail; NaN becomes null.
    let mut meta = vec![0u8; 4];
    if serde_json::to_writer(&mut meta, r).is_err() {
        meta.truncate(4);
        meta.extend_from_slice(b"null");
    }
    let json_len = u32::try_from(meta.len() - 4).unwrap_or(u32::MAX);
    meta[..4].copy_from_slice(&json_len.to_le_bytes());
    let images = match r {
        Routed::Event { event, .. } => event.images.iter().map(|i| i.data.clone()).collect(),
        _ => Vec::new(),
    };
    BodyParts { meta, images }
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
