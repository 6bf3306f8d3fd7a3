//! Fuzz the HTTP request framer with arbitrary bytes and arbitrary split points.
//!
//! The first bytes choose the limits and where the input is cut into reads; the rest is the
//! stream. Properties: never panics; feeding the stream in pieces yields the same requests as
//! feeding it at once; every request respects the limits; once failed, the framer stays failed;
//! a stream that starts (after blank lines) with a TLS record header frames nothing and fails
//! with `TlsOnPlainPort`, however it is split.
//!
//! `cargo fuzz run --sanitizer none http_frame` (from the repository root).

#![no_main]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use camqtt::sources::http_push::request::frame_all;
use camqtt::sources::http_push::{Framed, HttpError, Limits, RequestFramer, TlsSniff, sniff_tls};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (ctl, stream) = data.split_at(4);
    let limits = Limits {
        // Small limits so that the fuzzer reaches them.
        body_limit: 1 + usize::from(ctl[0]) * 64,
        header_limit: 64 + usize::from(ctl[1]) * 16,
        max_headers: 1 + usize::from(ctl[2] % 32),
    };
    let (whole, whole_err) = frame_all(stream, limits);

    // Split points from the stream itself: a cheap deterministic PRNG seeded by ctl[3].
    let peer = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
    let mut framer = RequestFramer::new(limits, peer);
    let mut pieces = Vec::new();
    let mut err = None;
    let mut seed = u32::from(ctl[3]) | 1;
    let mut at = 0;
    'feed: while at < stream.len() {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let n = 1 + (seed as usize % 97).min(stream.len() - at - 1);
        let n = n.min(stream.len() - at);
        framer.push(&stream[at..at + n]);
        at += n;
        loop {
            match framer.poll() {
                Ok(Framed::NeedMore) => break,
                Ok(Framed::Head { .. }) => {}
                Ok(Framed::Request(r)) => pieces.push(r),
                Err(e) => {
                    // Stuck: the same error again.
                    assert_eq!(framer.poll(), Err(e.clone()));
                    err = Some(e);
                    break 'feed;
                }
            }
        }
    }
    // The requests framed before any error agree, whatever the split. (Where an error is
    // detected may differ: a short head is parsed eagerly, a long one only on new lines.)
    for (a, b) in pieces.iter().zip(&whole) {
        assert_eq!(a, b, "split changes a request");
    }
    if err.is_none() && whole_err.is_none() {
        assert_eq!(
            pieces.len(),
            whole.len(),
            "split changes the number of requests"
        );
    }
    let start = stream
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(stream.len());
    if sniff_tls(&stream[start..]) == TlsSniff::Tls {
        assert!(whole.is_empty() && pieces.is_empty(), "TLS framed as HTTP");
        assert_eq!(whole_err, Some(HttpError::TlsOnPlainPort));
        assert_eq!(err, Some(HttpError::TlsOnPlainPort));
    }
    for r in &whole {
        assert!(r.body.len() <= limits.body_limit);
        assert!(r.headers.len() <= limits.max_headers);
        assert!(r.path.len() <= limits.header_limit);
    }
});
