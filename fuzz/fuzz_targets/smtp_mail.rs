//! Fuzz the SMTP source's mail reading: arbitrary DATA content → one message.
//!
//! `cargo fuzz run --sanitizer none smtp_mail fuzz/corpus/smtp_mail fuzz/seeds/smtp_mail`

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use camqtt::event::{ImageRole, Message};
use camqtt::sources::smtp::normalise::{Envelope, Reading, normalise};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let env = Envelope {
        peer: None,
        login: Some("cam".into()),
        mail_from: Some("cam@example.com".into()),
        rcpt_to: vec!["alarm@example.com".into()],
    };
    let reading = Reading::default();
    let received = UNIX_EPOCH + Duration::from_secs(1_795_219_200);
    match normalise(data, &env, &reading, received) {
        Message::Event(e) => {
            // Only JPEGs become images, the first (and only) one is the overview.
            assert!(e.images.iter().all(|i| i.data.starts_with(&[0xFF, 0xD8])));
            assert!(e.images.len() <= 1);
            assert!(e.images.iter().all(|i| i.role == ImageRole::Overview));
            let slug = e.category.as_str();
            assert!(!slug.is_empty());
            // The kept body text respects its cap.
            assert!(e.attrs.text.as_ref().is_none_or(|t| t.chars().count() <= reading.body_text_cap));
        }
        Message::Unparsed(u) => {
            assert!(!u.reason.is_empty());
            assert!(u.body.len() <= reading.unparsed_body_cap * 4);
        }
        Message::Heartbeat(_) | Message::Unreachable(_) => {}
    }
});
