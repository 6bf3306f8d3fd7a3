//! Criterion benchmarks of camqtt's pure paths: no sockets, no files, no clock in the
//! measured code.
//!
//! - `parse/<post>`: [`parse_post`] of a whole POST body, base64 decoding of its JPEGs
//!   included. The four posts are shaped like the end-to-end benchmark's
//!   (`../shared/bench/README.md`) and written here from the protocol description, with
//!   incompressible fake JPEG bytes of the same sizes:
//!   - `ipc_lpr_large` (~946 kB): IPC v1.x `VEHICE`, a 344 kB overview twice (`listInfo`
//!     item and `sourceDataInfo`) plus a 20 kB plate crop;
//!   - `ipc_lpr_large_wrapped` (~959 kB): the same with the base64 wrapped at 76 columns
//!     (the whitespace path);
//!   - `nvr_lpr_large` (~487 kB): NVR v2 `vehicle`, the overview once in `sourceDataInfo`
//!     plus the crop in `licensePlateListInfo`;
//!   - `ipc_lpr_small` (~166 kB): IPC v1.x `VEHICE`, a 52 kB overview twice plus the crop;
//!   - `ipc_intrusion_noimg` (~2.5 kB): IPC v1.x `PEA` intrusion with empty image elements.
//! - `spool/…/<post>`, for the event of each post with images, wrapped as the
//!   [`Routed::Event`] the pipeline hands to the spool: [`codec::encode`] and
//!   [`codec::decode`] of the record body, [`format::encode_record`] and
//!   [`format::decode_record`] of one framed record (CRC-32C), and [`format::scan`] of a
//!   segment holding eight rounds of the three records.
//!
//! Throughput is in bytes of input: the POST body for `parse`, the record body for the
//! codec and the framing, the whole segment for `scan`. `codec_decode` parses only the JSON
//! metadata and slices the images out of the body without copying, so its bytes per second
//! are nominal; read its time per record. Each payload is checked once
//! (image count, round trip) before anything is measured; nothing here asserts a time.
//!
//! Run: `cargo bench --bench pure_paths` (a filter narrows it:
//! `cargo bench --bench pure_paths -- parse/`; a quick run:
//! `-- --warm-up-time 1 --measurement-time 3`). `cargo test --benches` runs every
//! benchmark once, untimed, as a smoke test.
//!
//! Before/after: save a baseline on the old code, then compare the new code against it
//! (criterion prints the change and whether it is significant):
//!
//! ```sh
//! git stash; cargo bench --bench pure_paths -- --save-baseline before
//! git stash pop; cargo bench --bench pure_paths -- --baseline before
//! ```
//!
//! Results and baselines live under `target/criterion/`. Plots are off (criterion is built
//! without `plotters`/`html_reports`, and [`Criterion::without_plots`] keeps gnuplot out).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use camqtt::event::{Event, Routed};
use camqtt::pipeline::identity::Identities;
use camqtt::sources::viewtron::parse::{Post, PostMeta, parse_post};
use camqtt::spool::{codec, format};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// JPEG sizes of the end-to-end benchmark's posts.
const OVERVIEW_LARGE: usize = 344_000;
const OVERVIEW_SMALL: usize = 52_000;
const PLATE_CROP: usize = 20_000;

/// Bytes that start and end like a JPEG and do not compress into a tiny base64 string.
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

/// Base64 of `data`, on one line or wrapped at 76 columns (MIME style).
fn b64(data: &[u8], wrap: bool) -> String {
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    if !wrap {
        return s;
    }
    let lines: Vec<&str> = (s.as_bytes().chunks(76))
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    lines.join("\n")
}

/// IPC v1.x LPR (`VEHICE`): overview item, plate item with its crop, and the overview again
/// in `sourceDataInfo`.
fn ipc_lpr(overview: &[u8], (w, h): (u32, u32), crop: &[u8], wrap: bool) -> Vec<u8> {
    let ov = b64(overview, wrap);
    let cr = b64(crop, wrap);
    let (ov_len, cr_len) = (ov.len(), cr.len());
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<config version="1.7" xmlns="http://www.ipc.com/ver10">
    <smartType type="openAlramObj">VEHICE</smartType>
    <subscribeRelation type="subscribeOption">FEATURE_RESULT</subscribeRelation>
    <currentTime type="tint64">1790000000123456</currentTime>
    <types>
        <openAlramObj type="string">VEHICE,VFD_MATCH,PEA,VFD,VSD,AOIENTRY,AOILEAVE,PASSLINECOUNT,TRAFFIC</openAlramObj>
        <targetType type="string">1,2,4</targetType>
    </types>
    <listInfo type="list" count="2">
        <item>
            <targetImageData>
                <dataType type="uint32">0</dataType>
                <targetType type="uint32">2</targetType>
                <Width type="tuint32">{w}</Width>
                <Height type="tuint32">{h}</Height>
                <targetBase64Length type="uint32">{ov_len}</targetBase64Length>
                <targetBase64Data type="string"><![CDATA[{ov}]]></targetBase64Data>
            </targetImageData>
        </item>
        <item>
            <plateNumber type="string"><![CDATA[BEN 4711]]></plateNumber>
            <vehicleListType type="string">whiteList</vehicleListType>
            <targetImageData>
                <dataType type="uint32">0</dataType>
                <targetType type="uint32">2</targetType>
                <Width type="tuint32">300</Width>
                <Height type="tuint32">100</Height>
                <targetBase64Length type="uint32">{cr_len}</targetBase64Length>
                <targetBase64Data type="string"><![CDATA[{cr}]]></targetBase64Data>
            </targetImageData>
        </item>
    </listInfo>
    <sourceDataInfo>
        <dataType type="uint32">0</dataType>
        <width type="uint32">{w}</width>
        <height type="uint32">{h}</height>
        <sourceBase64Length type="uint32">{ov_len}</sourceBase64Length>
        <sourceBase64Data type="string"><![CDATA[{ov}]]></sourceBase64Data>
    </sourceDataInfo>
</config>
"#
    )
    .into_bytes()
}

/// NVR v2 vehicle LPR: overview in `sourceDataInfo`, plate and crop in
/// `licensePlateListInfo` (plain text, no CDATA).
fn nvr_lpr(overview: &[u8], crop: &[u8]) -> Vec<u8> {
    let ov = b64(overview, false);
    let cr = b64(crop, false);
    let (ov_len, cr_len) = (ov.len(), cr.len());
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<config version="2.0.0" xmlns="http://www.ipc.com/ver10">
    <messageType>alarmData</messageType>
    <deviceInfo>
        <deviceName><![CDATA[Bench NVR]]></deviceName>
        <ip><![CDATA[192.0.2.20]]></ip>
        <mac><![CDATA[02:00:5E:10:20:40]]></mac>
        <channelId>3</channelId>
    </deviceInfo>
    <smartType>vehicle</smartType>
    <currentTime>1790000000456000</currentTime>
    <sourceDataInfo>
        <dataType>0</dataType>
        <width>1920</width>
        <height>1080</height>
        <sourceBase64Length>{ov_len}</sourceBase64Length>
        <sourceBase64Data>{ov}</sourceBase64Data>
    </sourceDataInfo>
    <licensePlateListInfo>
        <item>
            <targetId>311</targetId>
            <rect>
                <x1>1104</x1><y1>546</y1>
                <x2>1232</x2><y2>610</y2>
            </rect>
            <licensePlateAttribute>
                <licensePlateNumber><![CDATA[BEN 4712]]></licensePlateNumber>
                <color>white</color>
            </licensePlateAttribute>
            <carRect>
                <x1>900</x1><y1>300</y1>
                <x2>1500</x2><y2>800</y2>
            </carRect>
            <carAttribute>
                <carType><![CDATA[sedan]]></carType>
                <color><![CDATA[blue]]></color>
                <brand><![CDATA[Volvo]]></brand>
                <model><![CDATA[Volvo_V70]]></model>
            </carAttribute>
            <targetImageData>
                <dataType>0</dataType>
                <width>300</width>
                <height>100</height>
                <targetBase64Length>{cr_len}</targetBase64Length>
                <targetBase64Data>{cr}</targetBase64Data>
            </targetImageData>
        </item>
    </licensePlateListInfo>
</config>
"#
    )
    .into_bytes()
}

/// IPC v1.x perimeter intrusion (`PEA`) whose image elements are present but empty.
fn ipc_intrusion_noimg() -> Vec<u8> {
    br#"<?xml version="1.0" encoding="UTF-8"?>
<config version="1.7" xmlns="http://www.ipc.com/ver10">
    <smartType type="openAlramObj">PEA</smartType>
    <subscribeRelation type="subscribeOption">FEATURE_RESULT</subscribeRelation>
    <currentTime type="tint64">1790000000789000</currentTime>
    <types>
        <openAlramObj type="string">VEHICE,VFD_MATCH,PEA,VFD,VSD,AOIENTRY,AOILEAVE,PASSLINECOUNT,TRAFFIC</openAlramObj>
        <targetType type="string">1,2,4</targetType>
    </types>
    <perimeter>
        <perInfo type="list" count="1">
            <item>
                <eventId type="uint32">5301</eventId>
                <targetId type="uint32">5401</targetId>
                <status type="smartStatus">SMART_START</status>
                <boundary type="list" count="4">
                    <item><point><x type="uint32">1500</x><y type="uint32">2000</y></point></item>
                    <item><point><x type="uint32">1600</x><y type="uint32">8700</y></point></item>
                    <item><point><x type="uint32">8000</x><y type="uint32">8800</y></point></item>
                    <item><point><x type="uint32">7900</x><y type="uint32">2100</y></point></item>
                </boundary>
                <rect>
                    <x1 type="uint32">2100</x1><y1 type="uint32">1200</y1>
                    <x2 type="uint32">4300</x2><y2 type="uint32">7600</y2>
                </rect>
            </item>
        </perInfo>
    </perimeter>
    <sourceDataInfo>
        <dataType type="uint32">0</dataType>
        <width type="uint32">1920</width>
        <height type="uint32">1080</height>
        <sourceBase64Length type="uint32">0</sourceBase64Length>
        <sourceBase64Data type="string"><![CDATA[]]></sourceBase64Data>
    </sourceDataInfo>
    <listInfo type="list" count="1">
        <item>
            <targetId type="tuint32">5401</targetId>
            <rect>
                <x1 type="uint32">2100</x1><y1 type="uint32">1200</y1>
                <x2 type="uint32">4300</x2><y2 type="uint32">7600</y2>
            </rect>
            <targetImageData>
                <dataType type="uint32">0</dataType>
                <targetType type="uint32">1</targetType>
                <Width type="tuint32">420</Width>
                <Height type="tuint32">690</Height>
                <targetBase64Length type="uint32">0</targetBase64Length>
                <targetBase64Data type="string"><![CDATA[]]></targetBase64Data>
            </targetImageData>
        </item>
    </listInfo>
</config>
"#
    .to_vec()
}

/// One benchmark post.
struct Payload {
    name: &'static str,
    body: Vec<u8>,
    /// Images the parser keeps (a second overview is not decoded).
    images: usize,
    /// Whether the spool group uses its event (one per distinct event with images).
    spool: bool,
}

fn payloads() -> Vec<Payload> {
    let large = fake_jpeg(OVERVIEW_LARGE, 7);
    let small = fake_jpeg(OVERVIEW_SMALL, 13);
    let crop = fake_jpeg(PLATE_CROP, 11);
    let payload = |name, body, images, spool| Payload {
        name,
        body,
        images,
        spool,
    };
    vec![
        payload(
            "ipc_lpr_large",
            ipc_lpr(&large, (1920, 1080), &crop, false),
            2,
            true,
        ),
        payload(
            "ipc_lpr_large_wrapped",
            ipc_lpr(&large, (1920, 1080), &crop, true),
            2,
            false,
        ),
        payload("nvr_lpr_large", nvr_lpr(&large, &crop), 2, true),
        payload(
            "ipc_lpr_small",
            ipc_lpr(&small, (1280, 720), &crop, false),
            2,
            true,
        ),
        payload("ipc_intrusion_noimg", ipc_intrusion_noimg(), 0, false),
    ]
}

fn meta() -> PostMeta {
    PostMeta {
        peer: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))),
        received: SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000),
    }
}

/// The one event of a post, checked against the expected image count.
fn parse_one(p: &Payload, meta: &PostMeta) -> Event {
    let events = match parse_post(&p.body, meta) {
        Ok(Post::Events(events)) => events,
        other => panic!("{}: {other:?}", p.name),
    };
    let [event] = <[Event; 1]>::try_from(events).unwrap_or_else(|e| {
        panic!("{}: {} events", p.name, e.len());
    });
    assert_eq!(
        event.images.len(),
        p.images,
        "{}: images (warnings {:?})",
        p.name,
        event.warnings
    );
    event
}

/// The event as the pipeline routes it: device resolved from the post's identity facts
/// (learned and filled per peer, as `Registry::route` does), no counters advanced.
fn routed(mut event: Event) -> Routed {
    let mut ids = Identities::new(Vec::new());
    ids.learn(&event.device);
    ids.fill_from_peer(&mut event.device);
    let device = ids.resolve(&event.device);
    Routed::event(device, event)
}

fn images_of(r: &Routed) -> Vec<Bytes> {
    match r {
        Routed::Event { event, .. } => event.images.iter().map(|i| i.data.clone()).collect(),
        other => panic!("not an event: {other:?}"),
    }
}

fn parse(c: &mut Criterion) {
    let meta = meta();
    let mut group = c.benchmark_group("parse");
    for p in payloads() {
        parse_one(&p, &meta);
        group.throughput(Throughput::Bytes(p.body.len() as u64));
        group.bench_function(p.name, |b| {
            b.iter(|| parse_post(black_box(&p.body), black_box(&meta)));
        });
    }
    group.finish();
}

fn spool(c: &mut Criterion) {
    const TIME_MS: u64 = 1_790_000_000_000;
    let meta = meta();
    let records: Vec<(&'static str, Routed, Bytes)> = (payloads().into_iter())
        .filter(|p| p.spool)
        .map(|p| {
            let r = routed(parse_one(&p, &meta));
            let body = Bytes::from(codec::encode(&r));
            let back = codec::decode(body.clone()).expect("codec round trip");
            assert_eq!(images_of(&back), images_of(&r), "{}: images", p.name);
            (p.name, r, body)
        })
        .collect();

    let mut group = c.benchmark_group("spool");
    for (name, r, body) in &records {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("codec_encode/{name}"), |b| {
            b.iter(|| codec::encode(black_box(r)));
        });
        group.bench_function(format!("codec_decode/{name}"), |b| {
            b.iter(|| codec::decode(black_box(body.clone())));
        });
        let mut frame = Vec::new();
        group.bench_function(format!("encode_record/{name}"), |b| {
            b.iter(|| {
                frame.clear();
                format::encode_record(&mut frame, black_box(1), TIME_MS, black_box(body));
            });
        });
        let (info, back) = format::decode_record(&frame, 0).expect("framed record");
        assert_eq!((info.seq, back), (1, &body[..]), "{name}: framing");
        group.bench_function(format!("decode_record/{name}"), |b| {
            b.iter(|| format::decode_record(black_box(&frame), 0).map(|(i, _)| i));
        });
    }

    let mut segment = format::SEGMENT_MAGIC.to_vec();
    let mut seq = 0;
    for _ in 0..8 {
        for (_, _, body) in &records {
            seq += 1;
            format::encode_record(&mut segment, seq, TIME_MS + seq, body);
        }
    }
    let scan = format::scan(&segment);
    assert_eq!((scan.records.len(), scan.problem), (seq as usize, None));
    group.throughput(Throughput::Bytes(segment.len() as u64));
    group.bench_function(format!("scan/segment_{seq}_records"), |b| {
        b.iter(|| format::scan(black_box(&segment)));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = parse, spool
}
criterion_main!(benches);
