//! The buffer stage on its own: the disk spool's format, rollover, release and delete, restart
//! resume, size / age bounds, image aging, damaged tails, blank segment files, the directory
//! lock; the memory buffer's bound; flow control; and property tests for the record codec and
//! for opening arbitrary bytes.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use camqtt::event::{
    Attributes, Category, Device, DeviceInfo, Event, Image, ImageRole, Phase, Plate, Routed,
    TimeSource, Unparsed,
};
use camqtt::spool::acks::Tag;
use camqtt::spool::{
    Buffer, BufferReader, MemoryConfig, Next, SpoolConfig, SpoolError, codec, format,
};
use camqtt::telemetry::Telemetry;
use common::logs::Logs;
use proptest::prelude::*;

fn device(id: &str) -> Device {
    Device {
        id: id.into(),
        name: format!("Camera {id}"),
        info: DeviceInfo {
            mac: Some("58:5b:69:40:f4:0d".into()),
            peer: Some("10.0.0.5".parse().unwrap()),
            ..Default::default()
        },
        hw_key: "585b6940f40d".into(),
        parent: None,
        area: None,
    }
}

fn jpeg(n: usize, seed: u8) -> Bytes {
    let mut v = vec![0xff, 0xd8, 0xff, 0xe0];
    v.extend((0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    v.extend([0xff, 0xd9]);
    Bytes::from(v)
}

fn plate_event(plate: &str, image_bytes: usize) -> Routed {
    let mut attrs = Attributes::default();
    attrs.plates.push(Plate {
        plate: plate.into(),
        confidence: Some(97.5),
        ..Default::default()
    });
    Routed::Event {
        device: device("gate"),
        event: Arc::new(Event {
            device: device("gate").info,
            category: Category::Lpr,
            phase: Phase::Pulse,
            time: UNIX_EPOCH + Duration::new(1_791_408_287, 427_999_000),
            time_source: TimeSource::Camera,
            time_raw: Some("1791408287427999".into()),
            received: SystemTime::now(),
            source: "viewtron".into(),
            raw_type: "VEHICE".into(),
            envelope: Some("ipc".into()),
            config_version: Some("1.7".into()),
            attrs,
            images: if image_bytes == 0 {
                vec![]
            } else {
                vec![
                    Image {
                        role: ImageRole::Overview,
                        data: jpeg(image_bytes, 1),
                        content_type: "image/jpeg".into(),
                        width: Some(1920),
                        height: Some(1080),
                        target_id: None,
                    },
                    Image {
                        role: ImageRole::Target,
                        data: jpeg(image_bytes / 10, 2),
                        content_type: "image/jpeg".into(),
                        width: None,
                        height: None,
                        target_id: Some(7),
                    },
                ]
            },
            warnings: vec![],
            provenance: None,
            detection: None,
        }),
        counts: Default::default(),
    }
}

fn plate_of(r: &Routed) -> String {
    match r {
        Routed::Event { event, .. } => event.attrs.plates[0].plate.clone(),
        other => panic!("not an event: {other:?}"),
    }
}

fn cfg(dir: &Path) -> SpoolConfig {
    let mut c = SpoolConfig::new(dir);
    c.segment_bytes = 64 * 1024;
    c.max_bytes = 64 * 1024 * 1024;
    c
}

/// One record handed out by a reader, with the tag of one delivery charged to it.
struct Read {
    seq: u64,
    msg: Option<Routed>,
    tag: Tag,
}

/// Read everything stored so far (waiting for batches read back from disk); each record gets
/// one outstanding delivery, so nothing is released until [`release_through`].
async fn drain(r: &mut BufferReader) -> Vec<Read> {
    let mut out = Vec::new();
    loop {
        match r.next_record() {
            Next::Record(seq, msg) => {
                let tag = r.add(seq);
                out.push(Read { seq, msg, tag });
            }
            Next::Filling => r.wait().await,
            Next::Empty => return out,
        }
    }
}

/// The delivered prefix up to `seq`.
fn release_through(r: &mut BufferReader, reads: &[Read], seq: u64) {
    for x in reads.iter().filter(|x| x.seq <= seq) {
        r.done(x.tag, true);
    }
}

fn plates(reads: &[Read]) -> Vec<String> {
    reads
        .iter()
        .filter_map(|x| x.msg.as_ref().map(plate_of))
        .collect()
}

fn open(c: SpoolConfig) -> (Buffer, camqtt::spool::OpenReport, Telemetry) {
    let t = Telemetry::new();
    let (b, report) = Buffer::open(c, t.clone()).unwrap();
    (b, report, t)
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn records_round_trip_in_order_and_released_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (b, report, _) = open(cfg(dir.path()));
    assert_eq!(report.records, 0);
    let mut seqs = vec![];
    for i in 0..40 {
        // ~10 KB each: several 64 KiB segments.
        seqs.push(b.append(plate_event(&format!("P{i:03}"), 10_000)).await);
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    let segs = segments(dir.path());
    assert!(segs.len() >= 5, "rollover at 64 KiB: {segs:?}");
    assert_eq!(b.depth(), 40);

    let mut r = b.reader();
    let got = drain(&mut r).await;
    assert_eq!(got.len(), 40);
    for (i, x) in got.iter().enumerate() {
        assert_eq!(x.seq, seqs[i]);
        let msg = x.msg.as_ref().expect("intact");
        assert_eq!(plate_of(msg), format!("P{i:03}"));
        let Routed::Event { event, .. } = msg else {
            unreachable!()
        };
        assert_eq!(event.images[0].data, jpeg(10_000, 1));
        assert_eq!(event.images[1].data, jpeg(1_000, 2));
        assert_eq!(event.images[1].target_id, Some(7));
    }
    // Release half: the fully released segments are gone, the rest stays.
    release_through(&mut r, &got, seqs[19]);
    assert_eq!(b.depth(), 20);
    r.flush().await;
    let after = segments(dir.path());
    assert!(after.len() < segs.len(), "{after:?}");
    release_through(&mut r, &got, seqs[39]);
    assert_eq!(b.depth(), 0);
    r.flush().await;
    // Only the segment still being written may remain.
    assert!(segments(dir.path()).len() <= 1);
    drop((r, b));
    let (b, report, _) = open(cfg(dir.path()));
    assert_eq!(report.records, 0);
    assert!(drain(&mut b.reader()).await.is_empty());
    assert_eq!(report.released, seqs[39]);
    // Numbers keep increasing across restarts.
    assert!(b.append(plate_event("NEXT", 0)).await > seqs[39]);
}

#[tokio::test]
async fn a_restart_resumes_after_the_last_released_record() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _, _) = open(cfg(dir.path()));
    for i in 0..10 {
        b.append(plate_event(&format!("R{i}"), 500)).await;
    }
    let mut r = b.reader();
    let got = drain(&mut r).await;
    release_through(&mut r, &got, got[4].seq);
    r.flush().await;
    drop((r, b));
    let (b, report, _) = open(cfg(dir.path()));
    assert_eq!(report.records, 5);
    // Read back from disk (nothing of it is in memory after a restart).
    assert_eq!(
        plates(&drain(&mut b.reader()).await),
        ["R5", "R6", "R7", "R8", "R9"]
    );
}

#[tokio::test]
async fn rewind_replays_everything_unreleased_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _, _) = open(cfg(dir.path()));
    for i in 0..6 {
        b.append(plate_event(&format!("W{i}"), 0)).await;
    }
    let mut r = b.reader();
    let first = drain(&mut r).await;
    release_through(&mut r, &first, first[1].seq);
    // One of the four left was partly delivered (one of its two deliveries acknowledged):
    // a duplicate when replayed.
    r.add(first[2].seq);
    r.done(first[2].tag, true);
    assert_eq!(r.rewind(), (4, 1));
    assert_eq!(plates(&drain(&mut r).await), ["W2", "W3", "W4", "W5"]);
}

#[tokio::test]
async fn the_size_bound_drops_the_oldest_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_bytes = 256 * 1024; // segments roll at 64 KiB
    let (b, _, t) = open(c);
    for i in 0..100 {
        b.append(plate_event(&format!("S{i:03}"), 10_000)).await;
    }
    assert!(
        t.spool_bytes.get() <= 256 * 1024,
        "{} bytes",
        t.spool_bytes.get()
    );
    let dropped = t.spool_dropped.get();
    let left = drain(&mut b.reader()).await;
    assert!(dropped > 0);
    assert_eq!(
        dropped + left.len() as u64,
        100,
        "every record is delivered or counted"
    );
    // What is left is the newest, in order.
    let plates = plates(&left);
    assert_eq!(plates.last().unwrap(), "S099");
    assert!(plates.windows(2).all(|w| w[0] < w[1]));
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn the_age_bound_drops_old_records_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_age = Duration::from_secs(60);
    let (b, _, t) = open(c.clone());
    b.append_at(plate_event("OLD", 100), now_ms() - 120_000)
        .await;
    b.append_at(plate_event("OLD", 100), now_ms() - 90_000)
        .await;
    b.append(plate_event("NEW", 100)).await;
    // Read path: expired records come back as "skip" (only to be released).
    let got = drain(&mut b.reader()).await;
    assert_eq!(got.len(), 3);
    assert!(got[0].msg.is_none() && got[1].msg.is_none());
    assert_eq!(plates(&got), ["NEW"]);
    assert_eq!(t.spool_dropped.get(), 2);

    // Housekeeping path: maintain() drops (and releases) them without reading.
    let dir = tempfile::tempdir().unwrap();
    c.dir = dir.path().to_path_buf();
    let (b, _, _) = open(c);
    b.append_at(plate_event("OLD", 100), now_ms() - 120_000)
        .await;
    b.append(plate_event("NEW", 100)).await;
    let mut r = b.reader();
    r.maintain();
    assert_eq!(b.depth(), 1);
    assert_eq!(plates(&drain(&mut r).await), ["NEW"]);
}

#[tokio::test]
async fn old_images_are_dropped_from_the_backlog_but_the_event_goes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.image_max_age = Duration::from_secs(600);
    let (b, _, t) = open(c);
    b.append_at(plate_event("AGED", 5_000), now_ms() - 3_600_000)
        .await;
    b.append(plate_event("FRESH", 5_000)).await;
    let got = drain(&mut b.reader()).await;
    let Some(Routed::Event { event, .. }) = &got[0].msg else {
        panic!("no event")
    };
    assert_eq!(event.attrs.plates[0].plate, "AGED");
    assert!(event.images.is_empty());
    assert!(event.warnings.iter().any(|w| w.contains("image_max_age")));
    let Some(Routed::Event { event, .. }) = &got[1].msg else {
        panic!("no event")
    };
    assert_eq!(event.images.len(), 2);
    assert_eq!(event.images[0].data, jpeg(5_000, 1));
    assert_eq!(t.spool_images_dropped.get(), 2);
}

/// Two segments of three records each (one per open: a restart always starts a new one).
async fn two_segments(dir: &Path) -> Vec<std::path::PathBuf> {
    for round in 0..2 {
        let (b, _, _) = open(cfg(dir));
        for i in 0..3 {
            b.append(plate_event(&format!("C{round}{i}"), 2_000)).await;
        }
    }
    let segs = segments(dir);
    assert_eq!(segs.len(), 2);
    segs
}

async fn plates_after_reopen(dir: &Path) -> (Vec<String>, u64) {
    let (b, report, t) = open(cfg(dir));
    assert_eq!(report.damaged, 1);
    let plates = plates(&drain(&mut b.reader()).await);
    (plates, t.spool_corrupt.get())
}

#[tokio::test]
async fn a_truncated_tail_is_skipped_and_later_segments_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let segs = two_segments(dir.path()).await;
    let len = fs::metadata(&segs[0]).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&segs[0]).unwrap();
    f.set_len(len - 100).unwrap(); // mid-record
    let (plates, corrupt) = plates_after_reopen(dir.path()).await;
    assert_eq!(plates, ["C00", "C01", "C10", "C11", "C12"]);
    assert_eq!(corrupt, 1);
}

#[tokio::test]
async fn a_flipped_byte_in_the_last_record_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let segs = two_segments(dir.path()).await;
    let mut b = fs::read(&segs[0]).unwrap();
    let n = b.len();
    b[n - 10] ^= 0x55;
    fs::write(&segs[0], b).unwrap();
    let (plates, _) = plates_after_reopen(dir.path()).await;
    assert_eq!(plates, ["C00", "C01", "C10", "C11", "C12"]);
}

#[tokio::test]
async fn appended_garbage_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let segs = two_segments(dir.path()).await;
    let mut b = fs::read(&segs[1]).unwrap();
    b.extend_from_slice(b"\x00\x00\x01garbage garbage garbage garbage");
    fs::write(&segs[1], b).unwrap();
    let (plates, _) = plates_after_reopen(dir.path()).await;
    assert_eq!(plates, ["C00", "C01", "C02", "C10", "C11", "C12"]);
}

#[tokio::test]
async fn a_damaged_ledger_replays_rather_than_loses() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _, _) = open(cfg(dir.path()));
    for i in 0..4 {
        b.append(plate_event(&format!("L{i}"), 0)).await;
    }
    let mut r = b.reader();
    let got = drain(&mut r).await;
    release_through(&mut r, &got, got[1].seq);
    r.flush().await;
    drop((r, b));
    fs::write(dir.path().join("ledger"), b"nonsense").unwrap();
    let (b, report, _) = open(cfg(dir.path()));
    // The released records are still on disk (same segment): delivered again, not lost.
    assert_eq!(report.records, 4);
    assert_eq!(drain(&mut b.reader()).await.len(), 4);
}

#[test]
fn one_process_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, _, _) = open(cfg(dir.path()));
    assert!(matches!(
        Buffer::open(cfg(dir.path()), Telemetry::new()),
        Err(SpoolError::Locked(_))
    ));
}

#[test]
fn other_routed_messages_round_trip() {
    let msgs = [
        Routed::Seen {
            device: device("a"),
            caps: Default::default(),
        },
        Routed::Offline {
            device: device("b"),
        },
        Routed::Unparsed(Unparsed {
            peer: "10.0.0.1".into(),
            source: "viewtron".into(),
            reason: "not-xml".into(),
            detail: "expected <".into(),
            path: Some("/API".into()),
            body: "garbage".into(),
            body_len: 7,
        }),
    ];
    for m in &msgs {
        let back = codec::decode(Bytes::from(codec::encode(m))).unwrap();
        assert_eq!(codec::encode(&back), codec::encode(m));
        assert_eq!(format!("{back:?}"), format!("{m:?}"));
    }
}

#[tokio::test]
async fn the_memory_buffer_holds_an_outage_up_to_its_bound_and_counts_the_rest() {
    let t = Telemetry::new();
    let b = Buffer::memory(
        MemoryConfig {
            max_records: 5,
            ..MemoryConfig::default()
        },
        t.clone(),
    );
    for i in 0..8 {
        b.append(plate_event(&format!("M{i}"), 1_000)).await;
    }
    assert_eq!(t.dropped.get(), 3);
    let mut r = b.reader();
    let got = drain(&mut r).await;
    assert_eq!(plates(&got), ["M3", "M4", "M5", "M6", "M7"]);
    // Replayed after a broken connection like the disk spool.
    assert_eq!(r.rewind().0, 5);
    assert_eq!(drain(&mut r).await.len(), 5);
}

#[tokio::test]
async fn while_draining_appends_wait_for_room_and_an_outage_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_bytes = 4 * 1024 * 1024; // flow-control level: 2 MiB
    let (b, _, _) = open(c);
    let mut r = b.reader();
    // Broker away: the spool takes everything up to its size bound.
    for i in 0..30 {
        b.append(plate_event(&format!("O{i:02}"), 100_000)).await;
    }
    assert!(b.has_room());
    // Connected: the backlog the connection started with is the level; no room above it.
    r.set_draining(true);
    assert!(!b.has_room());
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.room().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiting.is_finished(),
        "appends wait while the backlog is at its level"
    );
    // Delivering lowers the backlog: room again.
    let got = drain(&mut r).await;
    release_through(&mut r, &got, got[0].seq);
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("room after a release")
        .unwrap();
    // And the level only falls: by half of what was freed, so one more record fills it.
    b.append(plate_event("N", 100_000)).await;
    assert!(!b.has_room());
    // The outage again: no waiting.
    r.set_draining(false);
    assert!(b.has_room());
}

fn arb_event() -> impl Strategy<Value = Routed> {
    (
        "[A-Z0-9]{0,10}",
        prop::sample::select(vec!["lpr", "face", "intrusion", "weird_type"]),
        any::<i64>().prop_map(|s| s % 4_000_000_000),
        0u32..1_000_000_000,
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..4),
        // Confidences are percentages; serde_json's float parser is exact to the last digit
        // only for ordinary magnitudes (not e.g. 1e-179).
        prop::option::of((0u32..=100_000).prop_map(|v| f64::from(v) / 1000.0)),
        prop::collection::vec(".{0,20}", 0..3),
    )
        .prop_map(|(plate, cat, secs, nanos, images, conf, warnings)| {
            let time = if secs >= 0 {
                UNIX_EPOCH + Duration::new(secs as u64, nanos)
            } else {
                UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0)
                    + Duration::from_nanos(u64::from(nanos))
            };
            let mut attrs = Attributes::default();
            attrs.plates.push(Plate {
                plate,
                confidence: conf,
                ..Default::default()
            });
            let category = Category::from_name(cat).unwrap_or(Category::Other(cat.into()));
            Routed::Event {
                device: device("p"),
                event: Arc::new(Event {
                    device: DeviceInfo::default(),
                    category,
                    phase: Phase::Start,
                    time,
                    time_source: TimeSource::Receiver,
                    time_raw: None,
                    received: time,
                    source: "viewtron".into(),
                    raw_type: cat.into(),
                    envelope: None,
                    config_version: None,
                    attrs,
                    images: images
                        .into_iter()
                        .enumerate()
                        .map(|(i, d)| Image {
                            role: if i == 0 {
                                ImageRole::Overview
                            } else {
                                ImageRole::Target
                            },
                            data: Bytes::from(d),
                            content_type: "image/jpeg".into(),
                            width: None,
                            height: None,
                            target_id: Some(i as u64),
                        })
                        .collect(),
                    warnings,
                    provenance: None,
                    detection: None,
                }),
                counts: Default::default(),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn codec_round_trips(r in arb_event()) {
        let body = codec::encode(&r);
        let back = codec::decode(Bytes::from(body.clone())).unwrap();
        prop_assert_eq!(codec::encode(&back), body);
        let (Routed::Event { event: a, .. }, Routed::Event { event: b, .. }) = (&r, &back) else {
            panic!("kind changed")
        };
        prop_assert_eq!(a.time, b.time);
        prop_assert_eq!(&a.images, &b.images);
        prop_assert_eq!(&a.attrs, &b.attrs);
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = codec::decode(Bytes::from(bytes));
    }

    #[test]
    fn open_never_panics_on_arbitrary_segment_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        with_magic in any::<bool>(),
        ledger in prop::collection::vec(any::<u8>(), 0..30),
    ) {
        let dir = tempfile::tempdir().unwrap();
        // A valid record first, then the arbitrary bytes.
        let mut f = if with_magic { format::SEGMENT_MAGIC.to_vec() } else { vec![] };
        if with_magic {
            format::encode_record(&mut f, 1, now_ms(), &codec::encode(&plate_event("OK", 10)));
        }
        f.extend_from_slice(&bytes);
        fs::write(dir.path().join(format::segment_name(1)), &f).unwrap();
        fs::write(dir.path().join("ledger"), &ledger).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (b, _, _) = open(cfg(dir.path()));
            let mut r = b.reader();
            let got = drain(&mut r).await;
            if with_magic && format::decode_ledger(&ledger).is_none_or(|r| r == 0) {
                assert!(plates(&got).iter().any(|p| p == "OK"));
            }
            // And the spool still takes new records.
            let seq = b.append(plate_event("AFTER", 10)).await;
            let after = drain(&mut r).await;
            assert_eq!(after.last().map(|x| x.seq), Some(seq));
        });
    }
}

#[tokio::test]
async fn fsync_mode_keeps_the_same_records_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.fsync = true;
    let section: SpoolConfig = toml::from_str("fsync = true").unwrap();
    assert!(section.fsync, "the config key reaches the spool");
    {
        let (b, _, _) = open(c.clone());
        for i in 0..5 {
            b.append(plate_event(&format!("F{i}"), 1_000)).await;
        }
    }
    let (b, report, _) = open(c);
    assert_eq!(report.records, 5);
    assert_eq!(
        plates(&drain(&mut b.reader()).await),
        ["F0", "F1", "F2", "F3", "F4"]
    );
}

/// Upgrade: a spool directory written by an earlier release (`tests/fixtures/spool/`, a `Seen`
/// and an `Event` spooled while the broker was down) is opened and delivered by this one.
#[tokio::test]
async fn a_spool_written_by_an_earlier_release_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let name = "00000000000000000001.seg";
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/spool")
            .join(name),
        dir.path().join(name),
    )
    .unwrap();
    let mut c = cfg(dir.path());
    // The records are as old as the fixture: keep them (and their images) whatever their age.
    c.max_age = Duration::from_secs(100 * 365 * 86_400);
    c.image_max_age = c.max_age;
    let (b, report, t) = open(c);
    assert_eq!((report.records, report.damaged), (2, 0));
    let got = drain(&mut b.reader()).await;
    assert_eq!(got.iter().map(|x| x.seq).collect::<Vec<_>>(), [1, 2]);
    assert!(
        matches!(got[0].msg, Some(Routed::Seen { .. })),
        "{:?}",
        got[0].msg
    );
    let Some(Routed::Event { device, event, .. }) = &got[1].msg else {
        panic!("not an event: {:?}", got[1].msg);
    };
    assert!(!device.id.is_empty());
    assert_eq!(event.source, "viewtron");
    assert_eq!(event.category, Category::Intrusion);
    assert_eq!(t.spool_corrupt.get(), 0);
}

/// The segment files of `dir` with their sizes, oldest first.
fn segment_sizes(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    segments(dir)
        .into_iter()
        .map(|p| {
            let len = fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect()
}

/// Read everything there is and acknowledge it at once (a sink that keeps up).
async fn deliver_all(r: &mut BufferReader) -> usize {
    let got = drain(r).await;
    for x in &got {
        r.done(x.tag, true);
    }
    got.len()
}

/// A healthy bridge: every record is delivered and released before the next one arrives. The
/// active segment still rolls at `segment_bytes`, and the segments behind it, all delivered,
/// are deleted: the spool's files stay one segment, not a file of delivered records growing to
/// `max_bytes` (which the next start would read back whole).
#[tokio::test]
async fn a_sink_that_keeps_up_never_grows_a_segment_past_segment_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _, t) = open(cfg(dir.path())); // segment_bytes 64 KiB, max_bytes 64 MiB
    let mut r = b.reader();
    for i in 0..60 {
        // ~11.5 KB each: five or six to a segment.
        b.append(plate_event(&format!("K{i:03}"), 10_000)).await;
        assert_eq!(deliver_all(&mut r).await, 1);
        r.flush().await; // the release reaches the files
        let segs = segment_sizes(dir.path());
        assert_eq!(
            segs.len(),
            1,
            "round {i}: delivered segments stay: {segs:?}"
        );
        assert!(
            segs[0].1 <= 64 * 1024,
            "round {i}: segment_bytes = 64 KiB, but the segment grew to {} bytes",
            segs[0].1
        );
        assert_eq!(t.spool_bytes.get(), segs[0].1, "round {i}: spool_bytes");
    }
    drop((r, b));
    let (b, report, _) = open(cfg(dir.path()));
    assert_eq!((report.records, report.bytes, report.damaged), (0, 0, 0));
    assert!(segments(dir.path()).is_empty());
    assert!(drain(&mut b.reader()).await.is_empty());
}

/// The active segment, all of it delivered, rolls while the broker is away: the segment just
/// closed is deleted at once (no later release would come to delete it), and `spool_bytes` is
/// what is on disk for the records still waiting.
#[tokio::test]
async fn a_delivered_segment_is_deleted_when_it_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _, t) = open(cfg(dir.path()));
    let mut r = b.reader();
    let mut first = None;
    for i in 0..5 {
        let seq = b.append(plate_event(&format!("D{i}"), 10_000)).await;
        first.get_or_insert(seq);
    }
    assert_eq!(deliver_all(&mut r).await, 5);
    r.flush().await;
    let full = segment_sizes(dir.path());
    assert_eq!(full.len(), 1, "{full:?}");
    assert_eq!(
        full[0].0,
        dir.path().join(format::segment_name(first.unwrap()))
    );
    // The broker goes away; the next records roll the segment.
    let mut waiting = vec![];
    for i in 0..3 {
        waiting.push(b.append(plate_event(&format!("W{i}"), 10_000)).await);
    }
    let segs = segment_sizes(dir.path());
    assert!(!full[0].0.exists(), "delivered segment kept: {segs:?}");
    assert_eq!(
        segs.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
        [dir.path().join(format::segment_name(waiting[0]))]
    );
    let on_disk: u64 = segs.iter().map(|(_, len)| len).sum();
    assert_eq!(t.spool_bytes.get(), on_disk);
    drop((r, b));
    let (b, report, _) = open(cfg(dir.path()));
    assert_eq!((report.records, report.bytes), (3, on_disk));
    assert_eq!(plates(&drain(&mut b.reader()).await), ["W0", "W1", "W2"]);
}

/// A segment file with no record in it — empty, a torn header, or just the header — is what a
/// full disk (or a kill right after the file was created) leaves. It is deleted at the next
/// start without a warning and without counting damage.
#[tokio::test]
async fn blank_segment_files_are_deleted_at_open_without_counting_damage() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (b, _, _) = open(cfg(dir.path()));
        for i in 0..2 {
            b.append(plate_event(&format!("B{i}"), 100)).await;
        }
    }
    let blank: Vec<_> = [
        &b""[..],
        &format::SEGMENT_MAGIC[..3],
        &format::SEGMENT_MAGIC[..],
    ]
    .iter()
    .enumerate()
    .map(|(i, bytes)| {
        let p = dir.path().join(format::segment_name(100 + i as u64));
        fs::write(&p, bytes).unwrap();
        p
    })
    .collect();
    let (b, report, t) = open(cfg(dir.path()));
    assert_eq!(
        (report.records, report.damaged, report.skipped_bytes),
        (2, 0, 0)
    );
    assert_eq!(t.spool_corrupt.get(), 0);
    for p in &blank {
        assert!(!p.exists(), "{} kept", p.display());
    }
    let mut r = b.reader();
    assert_eq!(plates(&drain(&mut r).await), ["B0", "B1"]);
    let seq = b.append(plate_event("AFTER", 100)).await;
    assert_eq!(drain(&mut r).await.last().map(|x| x.seq), Some(seq));
}

/// `max_age` / `image_max_age` far beyond any real value (a config that passed before
/// `[spool]` was validated, or a tool): milliseconds saturate instead of wrapping, so the
/// records are kept with their images rather than dropped as "expired".
#[tokio::test]
async fn a_huge_max_age_keeps_records_instead_of_wrapping_around() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    // 18446744073709552 s is 18446744073709552000 ms: one u64 wrap plus 384 ms.
    c.max_age = Duration::from_secs(18_446_744_073_709_552);
    c.image_max_age = c.max_age;
    let (b, _, t) = open(c);
    b.append_at(plate_event("KEPT", 1_000), now_ms() - 10_000)
        .await;
    let mut r = b.reader();
    r.maintain();
    assert_eq!(b.depth(), 1, "maintain() dropped a 10 s old record");
    let got = drain(&mut r).await;
    let Some(Routed::Event { event, .. }) = &got[0].msg else {
        panic!("dropped as expired: {:?}", got[0].msg)
    };
    assert_eq!(event.images.len(), 2);
    assert_eq!(
        (t.spool_dropped.get(), t.spool_images_dropped.get()),
        (0, 0)
    );
}

/// A backlog that outlived `max_age` (a week-long broker outage) is one warn line with the
/// count, not one line per record; every record is still counted in `spool_dropped`. Both
/// ways a record expires: when the reader reaches it, and in `maintain()`.
#[tokio::test]
async fn expired_records_are_logged_once_per_pass_with_their_count() {
    // This thread's lines only: the buffer logs its age drops on the caller's thread, and
    // other tests of the process (under `cargo test`) drop expired records too.
    let (logs, _guard) = Logs::capture_thread();
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_age = Duration::from_secs(60);
    // Read path.
    let (b, _, t) = open(c.clone());
    for i in 0..40 {
        b.append_at(plate_event(&format!("X{i}"), 0), now_ms() - 120_000)
            .await;
    }
    b.append(plate_event("NEW", 0)).await;
    let got = drain(&mut b.reader()).await;
    assert_eq!(got.len(), 41);
    assert_eq!(plates(&got), ["NEW"]);
    assert_eq!(t.spool_dropped.get(), 40);
    let lines = logs.lines_with(&["expired"]);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("records=40"), "{}", lines[0]);
    drop(b);

    // Housekeeping path.
    let dir = tempfile::tempdir().unwrap();
    c.dir = dir.path().to_path_buf();
    let (b, _, t) = open(c);
    for i in 0..30 {
        b.append_at(plate_event(&format!("Y{i}"), 0), now_ms() - 120_000)
            .await;
    }
    b.append(plate_event("NEW", 0)).await;
    let mut r = b.reader();
    r.maintain();
    assert_eq!(t.spool_dropped.get(), 30);
    let lines = logs.lines_with(&["expired"]);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[1].contains("records=30"), "{}", lines[1]);
    assert_eq!(plates(&drain(&mut r).await), ["NEW"]);
}

/// Write-behind: while the sink delivers, a record the broker acknowledges within
/// `WRITE_BEHIND` of its arrival is never written to disk, and its append counts as stored
/// once it is delivered; one the broker does not acknowledge in time is written before its
/// append counts as stored, so a kill right after loses nothing.
#[tokio::test]
async fn a_record_delivered_in_time_is_never_written_and_a_late_one_is() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _, t) = open(cfg(dir.path()));
    let mut r = b.reader();
    r.set_draining(true);

    let fast = b.push_all(vec![
        plate_event("FAST1", 50_000),
        plate_event("FAST2", 50_000),
    ]);
    let got = drain(&mut r).await;
    assert_eq!(plates(&got), ["FAST1", "FAST2"]);
    release_through(&mut r, &got, fast[1]);
    b.stored(fast[1]).await;
    assert_eq!(
        t.spool_writes_saved.get(),
        2,
        "delivered before they were due"
    );
    assert_eq!(t.spool_appended.get(), 0, "nothing written");
    assert!(segments(dir.path()).is_empty(), "no segment file at all");

    let slow = b.push_all(vec![plate_event("SLOW", 50_000)]);
    let got = drain(&mut r).await;
    assert_eq!(plates(&got), ["SLOW"]);
    b.stored(slow[0]).await;
    assert_eq!(
        t.spool_appended.get(),
        1,
        "not acknowledged in time: written"
    );
    assert_eq!(t.spool_writes_saved.get(), 2);

    // A kill now (nothing flushed, the release position still at FAST2): the next start
    // has SLOW, and only SLOW.
    drop((r, b));
    let (b, report, _) = open(cfg(dir.path()));
    assert_eq!(report.records, 1);
    assert_eq!(plates(&drain(&mut b.reader()).await), ["SLOW"]);
}

/// Record numbers of a spool whose delivered records were never written have gaps on disk:
/// the numbers go on growing across a restart, and a record written after a gap is read back.
#[tokio::test]
async fn numbers_skipped_on_disk_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _, _) = open(cfg(dir.path()));
    let mut r = b.reader();
    r.set_draining(true);
    let first = b.push_all(vec![plate_event("GONE", 1_000)]);
    let got = drain(&mut r).await;
    release_through(&mut r, &got, first[0]);
    b.stored(first[0]).await;
    r.set_draining(false);
    let kept = b.append(plate_event("KEPT", 1_000)).await;
    assert!(kept > first[0]);
    r.flush().await;
    drop((r, b));
    let (b, report, _) = open(cfg(dir.path()));
    assert_eq!((report.records, report.released), (1, first[0]));
    let mut r = b.reader();
    let got = drain(&mut r).await;
    assert_eq!(plates(&got), ["KEPT"]);
    assert_eq!(got[0].seq, kept);
    let next = b.append(plate_event("NEXT", 1_000)).await;
    assert!(next > kept, "numbers only grow: {next} after {kept}");
}
