//! Throughput of `parse_post` on a realistic large push: an IPC LPR post of ~520 KiB whose
//! overview is a ~380 KB JPEG (plus a plate crop), once on one line and once wrapped at 76
//! columns (the whitespace-stripping path).
//!
//! Run with `cargo bench --bench viewtron_parse`. Plain `std::time` timing (no criterion) to
//! keep the dependency tree small; prints the median of several batches.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use camqtt::sources::viewtron::parse::{Post, PostMeta, parse_post};

/// Bytes that start like a JPEG and do not compress into a tiny base64 string.
fn fake_jpeg(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    let mut data = Vec::with_capacity(len);
    data.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0]);
    while data.len() < len - 2 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push(x as u8);
    }
    data.extend_from_slice(&[0xFF, 0xD9]);
    data
}

fn body(wrap: bool) -> Vec<u8> {
    let b64 = |d: &[u8]| {
        let s = base64::engine::general_purpose::STANDARD.encode(d);
        if wrap {
            s.as_bytes()
                .chunks(76)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            s
        }
    };
    let overview = b64(&fake_jpeg(380_000, 7));
    let plate = b64(&fake_jpeg(12_000, 11));
    format!(
        r#"<?xml version="1.0" encoding="UTF-8" ?>
<config version="1.7" xmlns="http://www.ipc.com/ver10">
<smartType type="openAlarmObj">VEHICE</smartType><currentTime type="tint64">1790000000123456</currentTime>
<mac type="string"><![CDATA[02:00:5e:10:20:30]]></mac><deviceName type="string"><![CDATA[Bench]]></deviceName>
<listInfo type="list" count="2">
<item><image type="uint32">0</image><vehiceId type="uint32">0</vehiceId><targetImageData><targetBase64Data type="string"><![CDATA[{overview}]]></targetBase64Data></targetImageData></item>
<item><image type="uint32">1</image><vehiceId type="uint32">1</vehiceId><plateNumber type="string"><![CDATA[BENCH1]]></plateNumber>
<PlateConfidence type="uint32" count="9900"/><targetImageData><width>224</width><height>124</height><targetBase64Data type="string"><![CDATA[{plate}]]></targetBase64Data></targetImageData></item>
</listInfo></config>"#
    )
    .into_bytes()
}

fn main() {
    let meta = PostMeta {
        peer: None,
        received: SystemTime::now(),
    };
    for wrap in [false, true] {
        let body = body(wrap);
        match parse_post(&body, &meta) {
            Ok(Post::Events(e)) => assert_eq!(e[0].images.len(), 2, "{:?}", e[0].warnings),
            other => panic!("{other:?}"),
        }
        let mut batches: Vec<Duration> = Vec::new();
        let per_batch = 50;
        for _ in 0..15 {
            let start = Instant::now();
            for _ in 0..per_batch {
                black_box(parse_post(black_box(&body), &meta).ok());
            }
            batches.push(start.elapsed() / per_batch);
        }
        batches.sort();
        let median = batches[batches.len() / 2];
        let mib_s = body.len() as f64 / median.as_secs_f64() / (1024.0 * 1024.0);
        println!(
            "viewtron parse_post {} KiB body ({}): median {:?} per post ({mib_s:.0} MiB/s)",
            body.len() / 1024,
            if wrap {
                "base64 wrapped at 76"
            } else {
                "base64 on one line"
            },
            median
        );
    }
}
