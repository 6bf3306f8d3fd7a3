//! One delivered mail and its envelope → one [`Message`]: an [`Event`] with its first JPEG as
//! the overview, or [`Message::Unparsed`] for bytes that are not a mail. Pure; never panics.
//!
//! * Device: no hardware identity comes with a mail, so the handles name it, in this order
//!   (DESIGN §3; `[[devices]]` `smtp_user`, `smtp_from`, `smtp_to`): the login (RFC 4954),
//!   the envelope sender (RFC 5321 `MAIL FROM`; the `From` header when the envelope has the
//!   null path), each recipient (`RCPT TO`). Its name is the body's `Alarm Device Name:` /
//!   `Device Name:` / `DVR Name:` when there is one. The channel comes from the words
//!   ([`super::rules`]); a mail never says it is from an NVR, so the device stays a camera and
//!   the channel is an attribute of the event, not part of the device id.
//! * Category, object and channel: [`super::rules::classify`]; always a `pulse` (a mail is
//!   one moment; a category with a duration turns off after its `off_delay`).
//! * Images: the first JPEG is the overview. A mail's further JPEGs are more full-scene
//!   pictures of the same alarm (Hikvision and Dahua attach up to three, taken a moment
//!   apart); the model has one overview per event and target crops are not full scenes, so
//!   they are left out and counted in `warnings`.
//! * Kept as text: the subject (`provenance.name`), the sender (`provenance.path`), the
//!   overview's file name (`provenance.file`), the body text (`text`, capped), the `Date`
//!   header (`time_raw`). The event time is the receive time: a camera mails at once, and
//!   its `Date` is the camera clock, often wrong.

use std::net::IpAddr;
use std::time::SystemTime;

use crate::event::{
    DeviceInfo, DeviceKind, Event, Handle, HandleKind, Image, ImageRole, Message, Phase,
    Provenance, Target, Unparsed, Via,
};

use super::config::Rule;
use super::mail::{MailError, parse_mail};
use super::rules::{MailText, classify};

/// The source's name.
pub const SOURCE: &str = "smtp";
/// Longest device name kept, in characters.
const DEVICE_NAME_CAP: usize = 64;

/// The SMTP envelope and session of one mail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// TCP peer.
    pub peer: Option<IpAddr>,
    /// The session's login, if any.
    pub login: Option<String>,
    /// `MAIL FROM` (none for `<>`).
    pub mail_from: Option<String>,
    /// `RCPT TO`, in order.
    pub rcpt_to: Vec<String>,
}

/// How mails are read: caps and rules (from `[smtp]`).
#[derive(Debug, Clone)]
pub struct Reading {
    /// Body text kept, characters.
    pub body_text_cap: usize,
    /// Raw mail copied to `bridge/unparsed`, bytes.
    pub unparsed_body_cap: usize,
    /// Vendor presets on.
    pub presets: bool,
    /// Own rules.
    pub rules: Vec<Rule>,
}

impl Default for Reading {
    fn default() -> Self {
        Reading {
            body_text_cap: 2000,
            unparsed_body_cap: 4096,
            presets: true,
            rules: Vec::new(),
        }
    }
}

/// The device name from the body's name line, if any.
fn device_name(body: &str) -> Option<String> {
    body.lines().find_map(|l| {
        let (label, value) = l.split_once(':')?;
        let label = label.trim().to_lowercase();
        let value = value.trim();
        (matches!(
            label.as_str(),
            "alarm device name" | "device name" | "dvr name" | "nvr name"
        ) && !value.is_empty())
        .then(|| value.chars().take(DEVICE_NAME_CAP).collect())
    })
}

/// Turn one mail into its message. `raw`: the DATA content; `received`: when its final `.`
/// arrived.
pub fn normalise(raw: &[u8], env: &Envelope, reading: &Reading, received: SystemTime) -> Message {
    let mail = match parse_mail(raw, reading.body_text_cap) {
        Ok(m) => m,
        Err(e @ MailError::NoHeaders) => {
            let cap = raw.len().min(reading.unparsed_body_cap);
            return Message::Unparsed(Unparsed {
                peer: env.peer.map(|p| p.to_string()).unwrap_or_default(),
                source: SOURCE.into(),
                reason: "not-a-mail".into(),
                detail: e.to_string(),
                path: env.mail_from.clone(),
                body: String::from_utf8_lossy(&raw[..cap]).into_owned(),
                body_len: raw.len(),
            });
        }
    };
    let names: Vec<String> = mail.images.iter().filter_map(|i| i.name.clone()).collect();
    let class = classify(
        MailText {
            subject: mail.subject.as_deref(),
            body: mail.text.as_deref(),
            file_names: &names,
        },
        &reading.rules,
        reading.presets,
    );
    let sender = env.mail_from.clone().or_else(|| mail.from.clone());
    let mut handles = Vec::new();
    if let Some(l) = &env.login {
        handles.push(Handle::new(HandleKind::SmtpUser, l.clone()));
    }
    if let Some(s) = &sender {
        handles.push(Handle::new(HandleKind::SmtpFrom, s.clone()));
    }
    handles.extend(
        env.rcpt_to
            .iter()
            .map(|r| Handle::new(HandleKind::SmtpTo, r.clone())),
    );
    let device = DeviceInfo {
        name: mail.text.as_deref().and_then(device_name),
        channel: class.channel,
        peer: env.peer,
        kind: DeviceKind::Camera,
        handles,
        ..DeviceInfo::default()
    };
    let mut event = Event::new(SOURCE, device, class.category, Phase::Pulse, received);
    event.raw_type = class.raw_type;
    event.time_raw = mail.date;
    event.attrs.subtype = class.subtype.map(str::to_string);
    event.attrs.text = mail.text;
    if let Some(object) = class.object {
        event.attrs.targets.push(Target {
            object: Some(object.to_string()),
            ..Target::default()
        });
    }
    let mut images = mail.images.into_iter();
    let overview = images.next();
    let extra = images.count();
    if extra > 0 {
        event.warnings.push(format!(
            "{extra} more JPEG attachment(s) not published: one overview per event"
        ));
    }
    for s in &mail.skipped {
        event
            .warnings
            .push(format!("attachment not published (not a JPEG): {s}"));
    }
    event.provenance = Some(Provenance {
        via: Via::Smtp,
        name: mail.subject,
        path: sender,
        file: overview.as_ref().and_then(|i| i.name.clone()),
    });
    if let Some(img) = overview {
        event.images.push(Image {
            role: ImageRole::Overview,
            data: img.data,
            content_type: "image/jpeg".into(),
            width: None,
            height: None,
            target_id: None,
        });
    }
    Message::Event(Box::new(event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Category;
    use proptest::prelude::*;

    fn env() -> Envelope {
        Envelope {
            peer: "192.0.2.120".parse().ok(),
            login: Some("porchcam".into()),
            mail_from: Some("porch-cam@cams.example".into()),
            rcpt_to: vec!["alarm@bridge.example".into()],
        }
    }

    fn jpeg() -> Vec<u8> {
        crate::sources::jpeg::tests::sample(19)
    }

    fn event(m: Message) -> Event {
        match m {
            Message::Event(e) => *e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_alarm_mail_becomes_one_event() {
        let b64 = |d: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, d);
        let img = jpeg();
        let mail = format!(
            "From: Cam <cam@x.example>\r\nDate: Mon, 01 Dec 2025 13:20:05 +0100\r\n\
             Subject: =?UTF-8?Q?Line_Crossing_=C2=B7_Yard?=\r\n\
             Content-Type: multipart/mixed; boundary=\"+b=?\"\r\n\r\n\
             --+b=?\r\nContent-Type: text/plain\r\n\r\nAlarm Device Name: Yard\r\nAlarm Input Channel: 2\r\n\
             --+b=?\r\nContent-Type: image/jpeg; name=\"a.jpg\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n\
             --+b=?\r\nContent-Type: image/jpeg; name=\"b.jpg\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n\
             --+b=?--\r\n",
            b64(&img),
            b64(&img)
        );
        let e = event(normalise(
            mail.as_bytes(),
            &env(),
            &Reading::default(),
            SystemTime::UNIX_EPOCH,
        ));
        assert_eq!(e.category, Category::LineCrossing);
        assert_eq!(e.phase, Phase::Pulse);
        assert_eq!(e.device.channel, Some(2));
        assert_eq!(e.device.name.as_deref(), Some("Yard"));
        let kinds: Vec<_> = e.device.handles.iter().map(|h| h.kind).collect();
        assert_eq!(
            kinds,
            [
                HandleKind::SmtpUser,
                HandleKind::SmtpFrom,
                HandleKind::SmtpTo
            ]
        );
        assert_eq!(e.images.len(), 1);
        assert_eq!(e.images[0].data, img);
        assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
        let p = e.provenance.unwrap();
        assert_eq!(p.via, Via::Smtp);
        assert_eq!(p.name.as_deref(), Some("Line Crossing · Yard"));
        assert_eq!(p.path.as_deref(), Some("porch-cam@cams.example"));
        assert_eq!(p.file.as_deref(), Some("a.jpg"));
        assert_eq!(
            e.time_raw.as_deref(),
            Some("Mon, 01 Dec 2025 13:20:05 +0100")
        );
        assert!(e.attrs.text.unwrap().contains("Alarm Input Channel: 2"));
    }

    #[test]
    fn a_mail_without_image_or_login_still_an_event() {
        let e = event(normalise(
            b"From: <cam@x.example>\r\nSubject: Person detected\r\n\r\nhello\r\n",
            &Envelope::default(),
            &Reading::default(),
            SystemTime::UNIX_EPOCH,
        ));
        assert_eq!(e.category, Category::Motion);
        assert_eq!(e.attrs.targets[0].object.as_deref(), Some("person"));
        assert!(e.images.is_empty());
        // The header sender stands in for the null envelope sender.
        assert_eq!(
            e.device.handles,
            [Handle::new(HandleKind::SmtpFrom, "cam@x.example")]
        );
    }

    #[test]
    fn not_a_mail_is_unparsed() {
        let m = normalise(b"", &env(), &Reading::default(), SystemTime::UNIX_EPOCH);
        let Message::Unparsed(u) = m else {
            panic!("{m:?}")
        };
        assert_eq!(u.reason, "not-a-mail");
        assert_eq!(u.source, SOURCE);
    }

    proptest! {
        /// Whatever the bytes: no panic, one message; an event has at most one image, a
        /// JPEG, and handles in the documented order.
        #[test]
        fn never_panics(raw in proptest::collection::vec(any::<u8>(), 0..3000)) {
            match normalise(&raw, &env(), &Reading::default(), SystemTime::UNIX_EPOCH) {
                Message::Event(e) => {
                    prop_assert!(e.images.len() <= 1);
                    prop_assert!(e.images.iter().all(|i| i.data.starts_with(&[0xFF, 0xD8, 0xFF])));
                    prop_assert_eq!(e.device.handles[0].kind, HandleKind::SmtpUser);
                    prop_assert_eq!(e.source.as_ref(), SOURCE);
                }
                Message::Unparsed(u) => prop_assert!(u.body.len() <= 4096 * 3),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
