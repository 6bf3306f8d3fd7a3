//! One received mail (the DATA content, RFC 5322 + MIME RFC 2045–2047) → the parts camqtt
//! keeps: decoded subject, sender, body text and JPEG images. Pure; never panics (mail-parser
//! promises as much, and the property test below holds it to that for our use).
//!
//! Images are every MIME leaf, attachment or inline (`Content-Disposition: inline`, a
//! `multipart/related` part with a `Content-ID`), in the order they appear, whose decoded
//! bytes are a JPEG (start with `FF D8 FF`) — whatever its `Content-Type` says, since cameras
//! label their snapshots `image/jpeg`, `image/jpg`, `application/octet-stream` or nothing at
//! all. Other images and files are counted in [`ParsedMail::skipped`], not published (the
//! image topics carry JPEG). Parts of a forwarded mail (`message/rfc822`) are searched too.

use crate::sources::jpeg::{self, JpegCheck};
use bytes::Bytes;
use mail_parser::{MessageParser, MimeHeaders as _, PartType};

/// Longest file name kept, in characters.
const NAME_CAP: usize = 255;
/// Longest subject kept, in characters.
const SUBJECT_CAP: usize = 998;
/// Nested messages searched for images (a forwarded mail inside a forwarded mail ...).
const MAX_DEPTH: usize = 4;

/// A JPEG found in a mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailImage {
    /// Its file name (`filename` / `name` parameter, RFC 2183 / 2045), when it has one.
    pub name: Option<String>,
    /// The decoded bytes.
    pub data: Bytes,
}

/// What camqtt keeps of one mail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedMail {
    /// The `Subject`, RFC 2047 encoded words decoded, capped at 998 characters.
    pub subject: Option<String>,
    /// The address of the `From` header (`porch-cam@cams.example`).
    pub from: Option<String>,
    /// The `Date` header as sent.
    pub date: Option<String>,
    /// The first text body (an HTML-only mail's text rendering), trimmed and capped at the
    /// configured number of characters.
    pub text: Option<String>,
    /// The JPEGs in document order.
    pub images: Vec<MailImage>,
    /// Parts that were neither text bodies nor JPEGs, as `name (content type)`.
    pub skipped: Vec<String>,
}

/// Why a mail could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// No header block: not an RFC 5322 message.
    #[error("not an RFC 5322 message (no header found)")]
    NoHeaders,
}

fn cap(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// A whole JPEG ([`jpeg::check`]): a cut-off one (the camera ran out of buffer mid-mail)
/// must never be published as a picture.
fn is_jpeg(data: &[u8]) -> bool {
    jpeg::is_jpeg(data) && matches!(jpeg::check(data), JpegCheck::Complete { .. })
}

/// Parse one mail. `text_cap`: longest body text kept, in characters.
///
/// Errors: [`MailError::NoHeaders`] when the bytes hold no header at all. Everything else
/// (bad base64, a missing final boundary, unknown charsets) is read as well as it can be:
/// mail-parser decodes leniently.
pub fn parse_mail(raw: &[u8], text_cap: usize) -> Result<ParsedMail, MailError> {
    let message = MessageParser::default()
        .parse(raw)
        .ok_or(MailError::NoHeaders)?;
    let text = message
        .body_text(0)
        .map(|t| cap(t.trim(), text_cap))
        .filter(|t| !t.is_empty());
    let mut out = ParsedMail {
        subject: message
            .subject()
            .map(|s| cap(s.trim(), SUBJECT_CAP))
            .filter(|s| !s.is_empty()),
        from: message
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(|a| cap(a.trim(), NAME_CAP))
            .filter(|a| !a.is_empty()),
        date: message
            .header_raw("Date")
            .map(|d| cap(d.trim(), NAME_CAP))
            .filter(|d| !d.is_empty()),
        text,
        images: Vec::new(),
        skipped: Vec::new(),
    };
    collect(&message, &mut out, 0);
    Ok(out)
}

/// Add the JPEGs (and what was skipped) of `message` and its nested messages.
fn collect(message: &mail_parser::Message<'_>, out: &mut ParsedMail, depth: usize) {
    let text_ids: Vec<u32> = message
        .text_body
        .iter()
        .chain(&message.html_body)
        .copied()
        .collect();
    for (id, part) in message.parts.iter().enumerate() {
        let name = part.attachment_name().map(|n| cap(n, NAME_CAP));
        match &part.body {
            PartType::Binary(data) | PartType::InlineBinary(data) => {
                if is_jpeg(data) {
                    out.images.push(MailImage {
                        name,
                        data: Bytes::copy_from_slice(data),
                    });
                } else if jpeg::is_jpeg(data) {
                    out.skipped
                        .push(format!("{} (an incomplete JPEG)", describe(part, name)));
                } else {
                    out.skipped.push(describe(part, name));
                }
            }
            PartType::Message(inner) if depth < MAX_DEPTH => collect(inner, out, depth + 1),
            PartType::Message(_) => out.skipped.push(describe(part, name)),
            PartType::Text(_) | PartType::Html(_) => {
                // A text part that is not one of the bodies is an attached file.
                let is_body = u32::try_from(id).is_ok_and(|id| text_ids.contains(&id));
                if !is_body && name.is_some() {
                    out.skipped.push(describe(part, name));
                }
            }
            PartType::Multipart(_) => {}
        }
    }
}

fn describe(part: &mail_parser::MessagePart<'_>, name: Option<String>) -> String {
    let ctype = part.content_type().map_or_else(
        || "no type".to_string(),
        |c| match c.subtype() {
            Some(sub) => format!("{}/{}", c.ctype(), sub),
            None => c.ctype().to_string(),
        },
    );
    format!(
        "{} ({})",
        name.as_deref().unwrap_or("unnamed"),
        cap(&ctype, 80)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A small whole JPEG, distinct for each `n`.
    fn jpeg(n: usize) -> Vec<u8> {
        crate::sources::jpeg::tests::sample(n)
    }

    #[test]
    fn a_single_part_jpeg_mail() {
        let data = jpeg(100);
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &data);
        let mail = format!(
            "From: cam@x.example\r\nSubject: snap\r\nContent-Type: image/jpeg\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n"
        );
        let m = parse_mail(mail.as_bytes(), 100).unwrap();
        assert_eq!(m.images.len(), 1);
        assert_eq!(m.images[0].data, data);
        assert_eq!(m.from.as_deref(), Some("cam@x.example"));
        assert_eq!(m.subject.as_deref(), Some("snap"));
    }

    #[test]
    fn inline_related_images_and_a_png_is_skipped() {
        let a = jpeg(50);
        let b = jpeg(70);
        let enc = |d: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, d);
        let mail = format!(
            "From: <cam@x.example>\r\nSubject: =?ISO-8859-1?Q?Bewegung_erkannt?=\r\n\
             Content-Type: multipart/related; boundary=\"b1\"\r\n\r\n\
             --b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Motion <b>CH2</b></p>\r\n\
             --b1\r\nContent-Type: image/jpeg\r\nContent-ID: <a@x>\r\nContent-Disposition: inline\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n\
             --b1\r\nContent-Type: image/png; name=\"x.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n\
             --b1\r\nContent-Type: application/octet-stream; name=\"b.jpg\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
            enc(&a),
            enc(&b)
        );
        let m = parse_mail(mail.as_bytes(), 100).unwrap();
        assert_eq!(m.subject.as_deref(), Some("Bewegung erkannt"));
        assert_eq!(m.images.len(), 2);
        assert_eq!(m.images[0].data, a);
        assert_eq!(m.images[1].data, b);
        assert_eq!(m.images[1].name.as_deref(), Some("b.jpg"));
        assert_eq!(m.skipped, ["x.png (image/png)"]);
        assert!(m.text.unwrap().contains("Motion"));
    }

    #[test]
    fn a_cut_off_jpeg_is_named_never_an_image() {
        let whole = jpeg(40);
        let cut = &whole[..whole.len() - 5];
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, cut);
        let mail = format!(
            "Subject: snap\r\nContent-Type: image/jpeg; name=\"cut.jpg\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n"
        );
        let m = parse_mail(mail.as_bytes(), 100).unwrap();
        assert!(m.images.is_empty());
        assert_eq!(m.skipped.len(), 1);
        assert!(m.skipped[0].contains("incomplete JPEG"), "{:?}", m.skipped);
    }

    #[test]
    fn the_text_is_capped_and_no_headers_is_an_error() {
        let mail = format!("Subject: s\r\n\r\n{}\r\n", "é".repeat(500));
        let m = parse_mail(mail.as_bytes(), 10).unwrap();
        assert_eq!(m.text.unwrap().chars().count(), 10);
        assert!(m.images.is_empty());
        assert_eq!(parse_mail(b"", 10), Err(MailError::NoHeaders));
    }

    proptest! {
        /// Whatever the bytes: no panic, and every image found is a JPEG.
        #[test]
        fn never_panics_on_bytes(raw in proptest::collection::vec(any::<u8>(), 0..2000)) {
            if let Ok(m) = parse_mail(&raw, 50) {
                prop_assert!(m.images.iter().all(|i| is_jpeg(&i.data)));
                prop_assert!(m.text.is_none_or(|t| t.chars().count() <= 50));
            }
        }

        /// A multipart mail with arbitrary boundary, parts and base64 line length gives back
        /// the exact JPEG bytes.
        #[test]
        fn any_wrapping_round_trips(
            boundary in "[A-Za-z0-9'()+_,./:=?-]{1,60}[A-Za-z0-9]",
            width in 4usize..200,
            payload in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut data = jpeg(payload.len());
            // Arbitrary bytes inside the picture: a comment segment after SOI.
            let mut comment = vec![0xFF, 0xFE];
            comment.extend(u16::try_from(payload.len() + 2).unwrap().to_be_bytes());
            comment.extend(payload);
            data.splice(2..2, comment);
            let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &data);
            let lines: Vec<&str> = b64.as_bytes().chunks(width).map(|c| std::str::from_utf8(c).unwrap()).collect();
            let mail = format!(
                "Subject: x\r\nContent-Type: multipart/mixed;\r\n boundary=\"{boundary}\"\r\n\r\n\
                 --{boundary}\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
                 --{boundary}\r\nContent-Type: image/jpeg\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--{boundary}--\r\n",
                lines.join("\r\n")
            );
            let m = parse_mail(mail.as_bytes(), 50).unwrap();
            prop_assert_eq!(m.images.len(), 1);
            prop_assert_eq!(&m.images[0].data[..], &data[..]);
        }
    }
}
