//! Fuzz `parse_post` with arbitrary bodies.
//!
//! `cargo fuzz run --sanitizer none viewtron_parse fuzz/corpus/viewtron_parse tests/fixtures/viewtron -- -dict=fuzz/viewtron.dict`
//! (from the repository root; `--sanitizer none` works on stable).

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use camqtt::event::{ImageRole, TimeSource};
use camqtt::sources::viewtron::parse::{Post, PostMeta, parse_post};
use libfuzzer_sys::fuzz_target;

/// 2026-11-21T00:00:00Z.
const RECEIVED_S: u64 = 1_795_219_200;

fuzz_target!(|data: &[u8]| {
    let received = UNIX_EPOCH + Duration::from_secs(RECEIVED_S);
    let meta = PostMeta {
        peer: None,
        received,
    };
    match parse_post(data, &meta) {
        Ok(Post::Events(events)) => {
            assert!(!events.is_empty());
            for e in &events {
                // Only JPEGs are kept, overview first and at most once.
                assert!(e.images.iter().all(|i| i.data.starts_with(&[0xFF, 0xD8])));
                let overviews = e
                    .images
                    .iter()
                    .filter(|i| i.role == ImageRole::Overview)
                    .count();
                assert!(overviews <= 1);
                if overviews == 1 {
                    assert_eq!(e.images[0].role, ImageRole::Overview);
                }
                // Category slugs are topic-safe and never empty.
                let slug = e.category.as_str();
                assert!(!slug.is_empty());
                assert!(
                    slug.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                );
                // Camera times are plausible; anything else is the receive time.
                match e.time_source {
                    TimeSource::Camera => {
                        let s = e.time.duration_since(UNIX_EPOCH).unwrap().as_secs();
                        assert!((946_684_800..=RECEIVED_S + 366 * 86_400).contains(&s));
                    }
                    TimeSource::Receiver => assert_eq!(e.time, received),
                }
            }
        }
        Ok(Post::Heartbeat(_)) => {}
        Err(err) => {
            assert!(!err.reason().is_empty());
        }
    }
});
