//! Base64 JPEGs inside posts (`protocol.md` §9).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_PAD_INDIFFERENT;
use bytes::Bytes;

use crate::event::{Image, ImageRole};

use super::xml::Node;

/// Content type of every image we keep.
pub(crate) const JPEG: &str = "image/jpeg";

/// Why an image element did not yield an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Documentation placeholder (`BASE64_JPEG_…`, `BASE64STUB`, `... (base64 JPEG) ...`).
    Placeholder,
    /// Not decodable as standard base64.
    InvalidBase64(String),
    /// Decoded, but not a JPEG (first bytes given).
    NotJpeg([u8; 2]),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Placeholder => f.write_str("placeholder text instead of base64 data"),
            Rejected::InvalidBase64(e) => write!(f, "invalid base64 ({e})"),
            Rejected::NotJpeg([a, b]) => {
                write!(f, "decoded data is not a JPEG (starts {a:02x} {b:02x})")
            }
        }
    }
}

/// Decode base64 image text: all ASCII whitespace is removed first, padding is optional.
/// `Ok(None)` for empty text (= no image). Only JPEG data (`FF D8`) is accepted.
pub(crate) fn decode_jpeg(text: &str) -> Result<Option<Bytes>, Rejected> {
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if text.is_empty() {
        return Ok(None);
    }
    if looks_like_placeholder(text) {
        return Err(Rejected::Placeholder);
    }
    // SIMD base64, about a megabyte per large post. Cameras send one unbroken padded line,
    // which the strict decoder takes in one pass; it stops at the first block with a line
    // break or other whitespace, and then WHATWG forgiving base64 (ASCII whitespace skipped,
    // padding optional) decodes it again (its whitespace scan alone cost 2 % of the bridge's
    // CPU on every post). On an error, decode again with the `base64` crate for a message
    // that says what and where (and to accept what only it accepts).
    let decoded = match base64_simd::STANDARD
        .decode_to_vec(text.as_bytes())
        .or_else(|_| base64_simd::forgiving_decode_to_vec(text.as_bytes()))
    {
        Ok(d) => d,
        Err(_) => decode_strict(text).map_err(|e| Rejected::InvalidBase64(e.to_string()))?,
    };
    match decoded.as_slice() {
        [0xFF, 0xD8, ..] => Ok(Some(Bytes::from(decoded))),
        [a, b, ..] => Err(Rejected::NotJpeg([*a, *b])),
        [a] => Err(Rejected::NotJpeg([*a, 0])),
        [] => Ok(None),
    }
}

/// Base64 text decoded by the `base64` crate (standard alphabet, padding optional), ASCII
/// whitespace removed first: the slow path, for its precise error messages.
fn decode_strict(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: Vec<u8> = text
        .as_bytes()
        .split(u8::is_ascii_whitespace)
        .flatten()
        .copied()
        .collect();
    STANDARD_PAD_INDIFFERENT.decode(compact)
}

fn looks_like_placeholder(text: &str) -> bool {
    // A JPEG in base64 always starts with "/9j/" (FF D8 FF); placeholders are words.
    let head = &text.as_bytes()[..text.len().min(64)];
    head.starts_with(b"BASE64")
        || head.windows(3).any(|w| w == b"...")
        || head.windows(7).any(|w| w.eq_ignore_ascii_case(b"(base64"))
}

/// Collects the images of one post, overview first, and the warnings about dropped ones.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    overview: Option<Image>,
    targets: Vec<Image>,
    /// Target images not decoded because [`MAX_TARGET_IMAGES`] were already kept.
    skipped: usize,
    pub warnings: Vec<String>,
}

/// Most target images (crops) kept per post; further ones are not even decoded.
pub(crate) const MAX_TARGET_IMAGES: usize = 64;

/// Reported size of an image container (`Width`/`width`, 0 = unknown).
fn dimension(container: &Node<'_>, name: &str) -> Option<u32> {
    container
        .child_u64(name)
        .and_then(|v| u32::try_from(v).ok())
        .filter(|&v| v > 0)
}

/// The base64 element inside an image container.
fn data_node<'n, 'a>(container: &'n Node<'a>) -> Option<&'n Node<'a>> {
    container
        .child_any(&["sourceBase64Data", "targetBase64Data"])
        .or_else(|| {
            container
                .children()
                .iter()
                .find(|c| c.name().to_ascii_lowercase().ends_with("base64data"))
        })
}

impl Collector {
    /// The crop in a list item's `targetImageData` (`<list>/item[<n>]`, 1-based), if any.
    pub(crate) fn add_item_crop(
        &mut self,
        item: &Node<'_>,
        target_id: Option<u64>,
        list: &str,
        index: usize,
    ) {
        if let Some(data) = item.child("targetImageData") {
            self.add(
                data,
                ImageRole::Target,
                target_id,
                &format!("{list}/item[{}]", index + 1),
            );
        }
    }

    /// Try to take one image from a container (`sourceDataInfo` or `targetImageData`).
    /// Returns true when an image was added. A second overview is ignored (not decoded).
    pub(crate) fn add(
        &mut self,
        container: &Node<'_>,
        role: ImageRole,
        target_id: Option<u64>,
        label: &str,
    ) -> bool {
        if role == ImageRole::Overview && self.overview.is_some() {
            return false;
        }
        let Some(data) = data_node(container) else {
            return false;
        };
        if role == ImageRole::Target && self.targets.len() >= MAX_TARGET_IMAGES {
            if !data.raw_text().is_empty() {
                self.skipped += 1;
            }
            return false;
        }
        // The text as sent: no control-character pass over a megabyte of base64. Should it
        // hold control characters (which the decoder refuses), decode it without them, as the
        // tree gives every other text.
        let decoded = match decode_jpeg(data.raw_text()) {
            Err(Rejected::InvalidBase64(_)) if data.text().len() != data.raw_text().len() => {
                decode_jpeg(data.text())
            }
            other => other,
        };
        match decoded {
            Ok(Some(bytes)) => {
                let image = Image {
                    role,
                    data: bytes,
                    content_type: JPEG.into(),
                    width: dimension(container, "width"),
                    height: dimension(container, "height"),
                    target_id,
                };
                match role {
                    ImageRole::Overview => self.overview = Some(image),
                    // The parser names only these two; an annotated copy is camqtt's own.
                    ImageRole::Target | ImageRole::Annotated => self.targets.push(image),
                }
                true
            }
            Ok(None) => false,
            Err(why) => {
                self.warnings.push(format!("image {label} dropped: {why}"));
                false
            }
        }
    }

    /// Images in event order (overview first) and the warnings.
    pub(crate) fn finish(mut self) -> (Vec<Image>, Vec<String>) {
        if self.skipped > 0 {
            self.warnings.push(format!(
                "{} target images dropped (more than {MAX_TARGET_IMAGES})",
                self.skipped
            ));
        }
        let mut images = Vec::with_capacity(self.targets.len() + 1);
        images.extend(self.overview);
        images.extend(self.targets);
        (images, self.warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const JPEG_BYTES: &[u8] = &[
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0xFF, 0xD9,
    ];

    fn b64(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    #[test]
    fn decodes_with_line_breaks_and_without_padding() {
        let text = b64(JPEG_BYTES);
        assert!(text.ends_with('='));
        let wrapped: String = text
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap().to_owned() + "\r\n ")
            .collect();
        assert_eq!(decode_jpeg(&wrapped).unwrap().unwrap().as_ref(), JPEG_BYTES);
        let unpadded = text.trim_end_matches('=');
        assert_eq!(decode_jpeg(unpadded).unwrap().unwrap().as_ref(), JPEG_BYTES);
    }

    #[test]
    fn empty_is_no_image() {
        assert_eq!(decode_jpeg(""), Ok(None));
        assert_eq!(decode_jpeg(" \n\t"), Ok(None));
    }

    #[test]
    fn placeholders_and_garbage() {
        for p in [
            "BASE64_JPEG_OVERVIEW_IMAGE",
            "BASE64STUB",
            "... (base64 JPEG) ...",
            "... (base64 JPEG of plate crop) ...",
        ] {
            assert_eq!(decode_jpeg(p), Err(Rejected::Placeholder), "{p}");
        }
        assert!(matches!(
            decode_jpeg("@@@@"),
            Err(Rejected::InvalidBase64(_))
        ));
        assert!(matches!(
            decode_jpeg("/9j/4"),
            Err(Rejected::InvalidBase64(_))
        ));
        // "test-image-data": valid base64, but not a JPEG
        assert_eq!(
            decode_jpeg("dGVzdC1pbWFnZS1kYXRh"),
            Err(Rejected::NotJpeg([b't', b'e']))
        );
    }

    proptest! {
        /// The SIMD decoder and the `base64` crate agree on every text the crate accepts
        /// (what only the SIMD decoder accepts, non-zero trailing bits, is still decoded).
        #[test]
        fn the_fast_decoder_agrees_with_the_base64_crate(
            text in "/9j/[A-Za-z0-9+/ \n=]{0,80}",
        ) {
            if let Ok(strict) = decode_strict(&text) {
                let fast = decode_jpeg(&text);
                prop_assert_eq!(fast, Ok(Some(Bytes::from(strict))));
            }
        }

        #[test]
        fn round_trip_with_inserted_whitespace(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec((0usize..500, 0usize..4), 0..20),
            pad in any::<bool>(),
        ) {
            let mut data = vec![0xFF, 0xD8];
            data.extend(body);
            let mut text = b64(&data);
            if !pad {
                text = text.trim_end_matches('=').to_owned();
            }
            let ws = [" ", "\n", "\r\n", "\t"];
            let mut chars: Vec<String> = text.chars().map(String::from).collect();
            for (pos, w) in cuts {
                let pos = pos % (chars.len() + 1);
                chars.insert(pos, ws[w].to_owned());
            }
            let text: String = chars.concat();
            let decoded = decode_jpeg(&text).unwrap().unwrap();
            prop_assert_eq!(decoded.as_ref(), data.as_slice());
        }

        #[test]
        fn never_panics(text in ".{0,200}") {
            let _ = decode_jpeg(&text);
        }
    }
}
