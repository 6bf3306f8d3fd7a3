//! What a camera's answer to a snapshot request is (pure): an image, or a refusal with the
//! reason that goes to `bridge/unparsed`.
//!
//! The body decides, not the `Content-Type`: a JPEG starts with the SOI marker and another
//! marker (`FF D8 FF`, ITU-T T.81 Annex B), a PNG with its 8-byte signature (RFC 2083 §3.1).
//! Anything else (an HTML login page, a JSON or XML error, an empty body) is never published as
//! an image. A declared `Content-Type` that is not `image/*` on a real image is kept as a
//! warning on the event (some firmware sends `text/plain`). A JPEG must also be whole
//! ([`jpeg::check`]): one cut off mid-transfer is refused as `incomplete-image`.

use crate::sources::jpeg::{self, JpegCheck};

/// A usable snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// `image/jpeg` or `image/png`, from the body's signature.
    pub content_type: &'static str,
    /// Problems worth keeping on the event (a wrong declared type).
    pub warnings: Vec<String>,
}

/// An answer that is not a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Short machine-readable reason for `bridge/unparsed` (`not-an-image`, `empty`,
    /// `http-status`).
    pub reason: &'static str,
    /// Human-readable detail.
    pub detail: String,
}

/// The image type of `body` by its signature, if it is one the bridge publishes.
pub fn sniff(body: &[u8]) -> Option<&'static str> {
    if body.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if body.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else {
        None
    }
}

/// Judge a complete answer other than `401` (handled by [`super::auth`]): `status`, its
/// declared `content_type` and its `body` (already capped by the caller).
pub fn judge(status: u16, content_type: Option<&str>, body: &[u8]) -> Result<Picture, Refusal> {
    if !(200..300).contains(&status) {
        return Err(Refusal {
            reason: "http-status",
            detail: format!("the camera answered HTTP {status}"),
        });
    }
    if body.is_empty() {
        return Err(Refusal {
            reason: "empty",
            detail: format!("HTTP {status} with an empty body"),
        });
    }
    let declared = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| !c.is_empty());
    let Some(kind) = sniff(body) else {
        return Err(Refusal {
            reason: "not-an-image",
            detail: format!(
                "{} bytes of {} that are neither JPEG nor PNG",
                body.len(),
                declared.as_deref().unwrap_or("undeclared type")
            ),
        });
    };
    if kind == "image/jpeg" && !matches!(jpeg::check(body), JpegCheck::Complete { .. }) {
        // An HTTP/1.0 camera without a length whose connection dropped mid-picture.
        return Err(Refusal {
            reason: "incomplete-image",
            detail: format!("{} bytes of a JPEG without its end (cut off)", body.len()),
        });
    }
    let mut warnings = Vec::new();
    if let Some(d) =
        declared.filter(|d| !d.starts_with("image/") && d != "application/octet-stream")
    {
        warnings.push(format!("declared Content-Type {d} on a {kind} body"));
    }
    Ok(Picture {
        content_type: kind,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn images_and_refusals() {
        let whole = crate::sources::jpeg::tests::sample(0);
        let jpeg = whole.as_slice();
        let p = judge(200, Some("image/jpeg"), jpeg).unwrap();
        assert_eq!(p.content_type, "image/jpeg");
        assert!(p.warnings.is_empty());
        let p = judge(200, Some("text/plain; charset=utf-8"), jpeg).unwrap();
        assert_eq!(p.warnings.len(), 1);
        assert!(judge(200, None, b"\x89PNG\r\n\x1a\nrest").is_ok());
        assert_eq!(
            judge(200, Some("text/html"), b"<html>login</html>")
                .unwrap_err()
                .reason,
            "not-an-image"
        );
        // The declared type alone never makes an image.
        assert_eq!(
            judge(200, Some("image/jpeg"), b"{\"error\":1}")
                .unwrap_err()
                .reason,
            "not-an-image"
        );
        assert_eq!(judge(200, None, b"").unwrap_err().reason, "empty");
        assert_eq!(judge(503, None, jpeg).unwrap_err().reason, "http-status");
        assert_eq!(judge(302, None, jpeg).unwrap_err().reason, "http-status");
        // A jpeg cut off mid-transfer is never a picture.
        for cut in [3, jpeg.len() / 2, jpeg.len() - 1] {
            assert_eq!(
                judge(200, Some("image/jpeg"), &jpeg[..cut])
                    .unwrap_err()
                    .reason,
                "incomplete-image",
                "cut at {cut}"
            );
        }
    }

    proptest! {
        /// Never panics; accepted exactly when the status is 2xx and the body is a whole JPEG
        /// or starts with the PNG signature.
        #[test]
        fn accepts_only_signed_images(
            status in 100u16..600,
            ct in proptest::option::of("\\PC{0,30}"),
            body in proptest::collection::vec(any::<u8>(), 0..64),
            jpeg in any::<bool>(),
        ) {
            let mut body = body;
            if jpeg {
                body.splice(0..0, [0xFF, 0xD8, 0xFF]);
            }
            let r = judge(status, ct.as_deref(), &body);
            let image = match sniff(&body) {
                Some("image/jpeg") => matches!(jpeg::check(&body), JpegCheck::Complete { .. }),
                other => other.is_some(),
            };
            prop_assert_eq!(r.is_ok(), (200..300).contains(&status) && !body.is_empty() && image);
        }
    }
}
