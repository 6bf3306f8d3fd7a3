//! The archive on a real (temporary) directory, with a clock the tests control: `now` is
//! passed in, file ages come from `File::set_modified`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};

use super::naming::is_safe_relative;
use super::*;
use crate::event::{Category, Device, DeviceInfo, Event, Image, ImageRole, Phase, Plate};

const HOUR: Duration = Duration::from_secs(3600);

fn at(s: &str) -> SystemTime {
    let ts: Timestamp = s.parse().unwrap();
    SystemTime::try_from(ts).unwrap()
}

fn device(id: &str) -> Device {
    Device::for_test(id)
}

fn image(role: ImageRole, fill: u8, len: usize) -> Image {
    Image {
        role,
        data: Bytes::from(vec![fill; len]),
        content_type: "image/jpeg".into(),
        width: None,
        height: None,
        target_id: None,
    }
}

fn event(category: Category, time: &str, images: Vec<Image>) -> Event {
    let t = at(time);
    let mut e = Event::new("test", DeviceInfo::default(), category, Phase::Pulse, t);
    e.raw_type = "TEST".into();
    e.images = images;
    e
}

fn lpr(time: &str) -> Event {
    let mut e = event(
        Category::Lpr,
        time,
        vec![
            image(ImageRole::Overview, 1, 100),
            image(ImageRole::Target, 2, 10),
        ],
    );
    e.raw_type = "VEHICE".into();
    e.attrs.plates = vec![Plate {
        plate: "AB123CD".into(),
        list: Some("whiteList".into()),
        ..Plate::default()
    }];
    e
}

/// A fresh archive in `<tempdir>/archive`, UTC, configured by `f`.
fn open_with(
    tmp: &tempfile::TempDir,
    now: SystemTime,
    f: impl FnOnce(&mut ArchiveConfig),
) -> Archive {
    let mut cfg = ArchiveConfig::new(tmp.path().join("archive"));
    f(&mut cfg);
    Archive::open(&cfg, TimeZone::UTC, now).unwrap()
}

/// Every file below `dir` (hidden ones too), relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
            if e.file_type().unwrap().is_dir() {
                stack.push((e.path(), format!("{rel}/")));
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

fn log_lines(root: &Path, rel: &str) -> Vec<EventRecord> {
    fs::read_to_string(root.join(rel))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn set_mtime(path: &Path, t: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn writes_pictures_log_and_latest_with_the_default_naming() {
    let tmp = tempfile::tempdir().unwrap();
    let now = at("2026-11-30T04:18:24Z");
    let mut a = open_with(&tmp, now, |_| {});
    let root = a.root().to_owned();
    let w = a
        .write(&device("porchcam"), &lpr("2026-11-30T04:18:23.123Z"), now)
        .unwrap();
    assert_eq!(
        files(&root),
        [
            ".camqtt-archive",
            "porchcam/2026-11-30/041823.123_lpr_overview.jpg",
            "porchcam/2026-11-30/041823.123_lpr_target.jpg",
            "porchcam/2026-11-30/events.jsonl",
            "porchcam/latest.jpg",
            "porchcam/latest_lpr.jpg",
        ]
    );
    let overview = fs::read(root.join("porchcam/2026-11-30/041823.123_lpr_overview.jpg")).unwrap();
    assert_eq!(overview, vec![1; 100]);
    assert_eq!(
        fs::read(root.join("porchcam/2026-11-30/041823.123_lpr_target.jpg")).unwrap(),
        vec![2; 10]
    );
    assert_eq!(
        fs::read(root.join("porchcam/latest.jpg")).unwrap(),
        overview
    );
    assert_eq!(
        fs::read(root.join("porchcam/latest_lpr.jpg")).unwrap(),
        overview
    );

    let r = &w.record;
    assert_eq!(r.time, at("2026-11-30T04:18:23.123Z"));
    assert_eq!(
        (r.device.as_str(), r.name.as_str()),
        ("porchcam", "porchcam camera")
    );
    assert_eq!((r.category.as_str(), r.event.as_str()), ("lpr", "VEHICE"));
    assert_eq!(r.description, "Plate AB123CD (white list)");
    assert_eq!(r.priority, Priority::Normal);
    assert_eq!(
        r.images,
        [
            ImageRecord {
                role: ImageRole::Overview,
                file: "porchcam/2026-11-30/041823.123_lpr_overview.jpg".into(),
                bytes: 100
            },
            ImageRecord {
                role: ImageRole::Target,
                file: "porchcam/2026-11-30/041823.123_lpr_target.jpg".into(),
                bytes: 10
            },
        ]
    );
    assert_eq!(
        log_lines(&root, "porchcam/2026-11-30/events.jsonl"),
        std::slice::from_ref(&w.record)
    );
    assert_eq!(w.pruned, Pruned::default());
    let log_len = fs::metadata(root.join("porchcam/2026-11-30/events.jsonl"))
        .unwrap()
        .len();
    assert_eq!(a.bytes(), 110 + log_len, "latest files are not counted");
}

#[test]
fn dvr_naming_in_the_given_time_zone() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = ArchiveConfig::new(tmp.path().join("archive"));
    cfg.naming = "{YYYY}{MM}{DD}{hh}{mm}{ss}{device}.jpg".into();
    let tz = TimeZone::fixed(Offset::constant(2));
    let now = at("2026-11-30T23:31:00Z");
    let mut a = Archive::open(&cfg, tz, now).unwrap();
    let mut e = event(
        Category::Motion,
        "2026-11-30T23:30:05.5Z",
        vec![image(ImageRole::Overview, 7, 5)],
    );
    e.raw_type = "MOTION".into();
    let w = a.write(&device("cam3"), &e, now).unwrap();
    assert_eq!(w.record.images[0].file, "20261201013005cam3.jpg");
    // The log's day is the local one too; the record's time stays UTC.
    assert_eq!(
        files(a.root()),
        [
            ".camqtt-archive",
            "20261201013005cam3.jpg",
            "cam3/2026-12-01/events.jsonl",
            "cam3/latest.jpg",
            "cam3/latest_motion.jpg",
        ]
    );
    let line = fs::read_to_string(a.root().join("cam3/2026-12-01/events.jsonl")).unwrap();
    assert!(
        line.contains(r#""time":"2026-11-30T23:30:05.500Z""#),
        "{line}"
    );
}

#[test]
fn taken_names_get_numbered_and_nothing_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let now = at("2026-11-30T05:00:00Z");
    let mut a = open_with(&tmp, now, |c| c.naming = "{device}/snap.jpg".into());
    let root = a.root().to_owned();
    let mut names = Vec::new();
    for fill in 1..=3u8 {
        let e = event(
            Category::Snapshot,
            "2026-11-30T04:00:00Z",
            vec![image(ImageRole::Overview, fill, 8)],
        );
        let w = a.write(&device("cam"), &e, now).unwrap();
        names.push(w.record.images[0].file.clone());
    }
    assert_eq!(names, ["cam/snap.jpg", "cam/snap-1.jpg", "cam/snap-2.jpg"]);
    for (fill, name) in (1..=3u8).zip(&names) {
        assert_eq!(fs::read(root.join(name)).unwrap(), vec![fill; 8], "{name}");
    }
    // A name taken by something else (here a folder) is skipped too.
    fs::create_dir(root.join("cam/snap-3.jpg")).unwrap();
    let e = event(
        Category::Snapshot,
        "2026-11-30T04:00:00Z",
        vec![image(ImageRole::Overview, 9, 8)],
    );
    let w = a.write(&device("cam"), &e, now).unwrap();
    assert_eq!(w.record.images[0].file, "cam/snap-4.jpg");
    assert!(!files(&root).iter().any(|f| f.contains(".camqtt-tmp")));
}

#[test]
fn hostile_names_never_escape_the_root_or_make_odd_names() {
    let tmp = tempfile::tempdir().unwrap();
    let now = at("2026-11-30T05:00:00Z");
    let mut a = open_with(&tmp, now, |c| {
        c.naming = "{device}/{category}/{event}_{role}.{ext}".into();
    });
    let root = a.root().to_owned();
    let hostile = [
        "../../escape",
        "/etc/passwd",
        "..",
        ".",
        "",
        ".hidden",
        "a/b\\c",
        "nul\0byte",
        "new\nline",
        "ünïcødé 📷",
        &"x".repeat(1000),
    ];
    let mut written = 0;
    for h in hostile {
        let mut d = device(h);
        d.name = format!("{h}\n{{\"forged\":1}}");
        let mut e = event(
            Category::Other(h.to_owned()),
            "2026-11-30T04:00:00Z",
            vec![image(ImageRole::Overview, 3, 4)],
        );
        e.raw_type = h.to_owned();
        e.images[0].content_type = format!("{h}/{h}").into();
        let w = a.write(&d, &e, now).unwrap();
        written += 1;
        assert_eq!(w.record.device, h, "the record keeps the real id");
        assert!(
            is_safe_relative(&w.record.images[0].file),
            "{:?}",
            w.record.images[0].file
        );
    }
    // Nothing outside the root: the temp dir holds only the archive.
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    let all = files(&root);
    for f in &all {
        if f == ".camqtt-archive" {
            continue;
        }
        assert!(is_safe_relative(f), "{f:?}");
        for part in f.split('/') {
            assert!(part.len() <= 64 + "_overview-99.jpg".len(), "{f:?}");
            assert!(
                part.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
                "{f:?}"
            );
        }
    }
    assert!(!all.iter().any(|f| f.contains(".camqtt-tmp")));
    // Every event is one line that reads back, forged newlines and all.
    let logs: Vec<&String> = all.iter().filter(|f| f.ends_with("events.jsonl")).collect();
    let lines: usize = logs.iter().map(|l| log_lines(&root, l).len()).sum();
    assert_eq!(lines, written);
    let all_records = query(
        &root,
        &Query {
            limit: 100,
            ..Query::default()
        },
    )
    .unwrap();
    assert_eq!(all_records.len(), written);
    assert!(
        all_records
            .iter()
            .any(|r| r.device == "../../escape" && r.name.contains("\n{\"forged\""))
    );
}

#[test]
fn log_lines_parse_back_and_events_without_pictures_are_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let now = at("2026-11-30T12:00:00Z");
    let mut a = open_with(&tmp, now, |c| {
        c.priority.insert("intrusion".into(), Priority::Critical);
    });
    let root = a.root().to_owned();
    let mut start = event(Category::Intrusion, "2026-11-30T10:00:00Z", vec![]);
    start.phase = Phase::Start;
    let mut stop = event(Category::Intrusion, "2026-11-30T10:00:09Z", vec![]);
    stop.phase = Phase::Stop;
    let fire = event(Category::Fire, "2026-11-30T10:00:10Z", vec![]);
    let mut records = Vec::new();
    for e in [&start, &stop, &fire] {
        records.push(a.write(&device("yard"), e, now).unwrap().record);
    }
    assert_eq!(log_lines(&root, "yard/2026-11-30/events.jsonl"), records);
    assert_eq!(records[0].description, "Intrusion started");
    assert_eq!(records[0].priority, Priority::Critical, "configured");
    assert_eq!(records[1].description, "Intrusion ended");
    assert_eq!(records[1].kind, crate::event::EventKind::End);
    assert_eq!(records[2].description, "Fire detected");
    assert_eq!(records[2].priority, Priority::High, "built-in default");
    assert!(records.iter().all(|r| r.images.is_empty()));
    // No pictures: no latest files.
    assert_eq!(files(&root.join("yard")), ["2026-11-30/events.jsonl"]);
}

#[test]
fn a_line_cut_by_a_crash_does_not_swallow_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let now = at("2026-11-30T12:00:00Z");
    let mut a = open_with(&tmp, now, |_| {});
    let root = a.root().to_owned();
    let first = a
        .write(
            &device("d"),
            &event(Category::Motion, "2026-11-30T10:00:00Z", vec![]),
            now,
        )
        .unwrap();
    let log = root.join("d/2026-11-30/events.jsonl");
    fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"{\"time\":\"20")
        .unwrap();
    let second = a
        .write(
            &device("d"),
            &event(Category::Motion, "2026-11-30T10:00:01Z", vec![]),
            now,
        )
        .unwrap();
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 3);
    let got = query(
        &root,
        &Query {
            limit: 10,
            ..Query::default()
        },
    )
    .unwrap();
    assert_eq!(got, [second.record, first.record]);
}

#[test]
fn retention_by_age_counts_and_removes_emptied_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = at("2026-11-01T00:00:00Z");
    let mut a = open_with(&tmp, t0, |c| c.max_age = 2 * HOUR);
    let root = a.root().to_owned();
    let old = a
        .write(&device("cam"), &lpr("2026-11-01T00:00:00Z"), t0)
        .unwrap();
    a.write(
        &device("quiet"),
        &event(Category::Alarm, "2026-11-01T00:00:00Z", vec![]),
        t0,
    )
    .unwrap();
    let new = a
        .write(&device("cam"), &lpr("2026-11-02T00:00:00Z"), t0 + HOUR)
        .unwrap();
    assert_eq!(new.pruned, Pruned::default());
    let old_log = fs::metadata(root.join("cam/2026-11-01/events.jsonl"))
        .unwrap()
        .len();
    let quiet_log = fs::metadata(root.join("quiet/2026-11-01/events.jsonl"))
        .unwrap()
        .len();

    // Exactly max_age old: kept.
    assert_eq!(a.prune(t0 + 2 * HOUR), Pruned::default());
    let pruned = a.prune(t0 + 2 * HOUR + Duration::from_secs(1));
    assert_eq!(
        pruned,
        Pruned {
            files: 4,
            bytes: 110 + old_log + quiet_log
        }
    );
    assert!(
        !root.join("cam/2026-11-01").exists(),
        "emptied day folder removed"
    );
    assert!(
        !root.join("quiet").exists(),
        "emptied device folder removed"
    );
    for image in &old.record.images {
        assert!(!root.join(&image.file).exists());
    }
    for image in &new.record.images {
        assert!(root.join(&image.file).exists());
    }
    assert!(root.join("cam/latest.jpg").exists());
    let new_log = fs::metadata(root.join("cam/2026-11-02/events.jsonl"))
        .unwrap()
        .len();
    assert_eq!(a.bytes(), 110 + new_log);
}

#[test]
fn retention_by_size_deletes_the_oldest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = at("2026-11-01T00:00:00Z");
    // Room for three pictures and the log.
    let mut a = open_with(&tmp, t0, |c| c.max_bytes = 35_000);
    let root = a.root().to_owned();
    let mut names = Vec::new();
    let mut pruned = Pruned::default();
    for i in 0..6u64 {
        let now = t0 + Duration::from_secs(60 * i);
        let time = format!("2026-11-01T00:0{i}:00Z");
        let e = event(
            Category::Motion,
            &time,
            vec![image(ImageRole::Overview, i as u8, 10_000)],
        );
        let w = a.write(&device("cam"), &e, now).unwrap();
        names.push(w.record.images[0].file.clone());
        pruned.files += w.pruned.files;
        pruned.bytes += w.pruned.bytes;
        assert!(a.bytes() <= 35_000, "{} after write {i}", a.bytes());
    }
    let kept: Vec<bool> = names.iter().map(|n| root.join(n).exists()).collect();
    assert_eq!(
        kept,
        [false, false, false, true, true, true],
        "oldest first"
    );
    assert_eq!(
        pruned,
        Pruned {
            files: 3,
            bytes: 30_000
        }
    );
    // The log (modified with every write) is the newest file and stays.
    assert_eq!(log_lines(&root, "cam/2026-11-01/events.jsonl").len(), 6);
    // The latest picture is the last one, whatever was pruned.
    assert_eq!(
        fs::read(root.join("cam/latest.jpg")).unwrap(),
        vec![5u8; 10_000]
    );
}

#[test]
fn latest_is_replaced_atomically_and_never_pruned() {
    let tmp = tempfile::tempdir().unwrap();
    let t0 = at("2026-11-01T00:00:00Z");
    let mut a = open_with(&tmp, t0, |c| c.max_age = HOUR);
    let root = a.root().to_owned();
    a.write(&device("cam"), &lpr("2026-11-01T00:00:00Z"), t0)
        .unwrap();
    let mut reader = fs::File::open(root.join("cam/latest.jpg")).unwrap();
    // Only a target crop: it becomes the latest picture.
    let e = event(
        Category::Intrusion,
        "2026-11-01T00:00:01Z",
        vec![image(ImageRole::Target, 5, 50)],
    );
    a.write(&device("cam"), &e, t0).unwrap();
    // A reader of the old file still gets all of it; the name now gives the new one.
    let mut old = Vec::new();
    reader.read_to_end(&mut old).unwrap();
    assert_eq!(old, vec![1u8; 100]);
    assert_eq!(
        fs::read(root.join("cam/latest.jpg")).unwrap(),
        vec![5u8; 50]
    );
    assert_eq!(
        fs::read(root.join("cam/latest_intrusion.jpg")).unwrap(),
        vec![5u8; 50]
    );
    assert_eq!(
        fs::read(root.join("cam/latest_lpr.jpg")).unwrap(),
        vec![1u8; 100]
    );

    let pruned = a.prune(t0 + 24 * HOUR);
    assert_eq!(pruned.files, 4, "3 pictures and the log");
    assert_eq!(a.bytes(), 0);
    assert_eq!(
        files(&root),
        [
            ".camqtt-archive",
            "cam/latest.jpg",
            "cam/latest_intrusion.jpg",
            "cam/latest_lpr.jpg"
        ]
    );
    assert_eq!(
        fs::read(root.join("cam/latest.jpg")).unwrap(),
        vec![5u8; 50]
    );
    // Reopened, they are still not retention's.
    drop(a);
    let a = open_with(&tmp, t0 + 48 * HOUR, |c| c.max_age = HOUR);
    assert_eq!(a.bytes(), 0);
    assert!(latest(&root, "cam", None).is_some());
}

#[test]
fn open_removes_stale_temporaries_and_indexes_by_mtime() {
    let tmp = tempfile::tempdir().unwrap();
    let now = at("2026-11-30T00:00:00Z");
    let root = open_with(&tmp, now, |_| {}).root().to_owned();
    let day1 = root.join("cam/2026-10-01");
    let day2 = root.join("cam/2026-11-29");
    fs::create_dir_all(&day1).unwrap();
    fs::create_dir_all(&day2).unwrap();
    fs::write(day1.join("old.jpg"), [0u8; 300]).unwrap();
    fs::write(day1.join("events.jsonl"), "{}\n").unwrap();
    fs::write(day2.join("new.jpg"), [0u8; 200]).unwrap();
    fs::write(day2.join(".camqtt-tmp-99-1"), [0u8; 50]).unwrap();
    fs::write(root.join("cam/.camqtt-tmp-99-2"), [0u8; 50]).unwrap();
    fs::write(root.join("cam/latest.jpg"), [0u8; 70]).unwrap();
    set_mtime(&day1.join("old.jpg"), at("2026-10-01T00:00:00Z"));
    set_mtime(&day1.join("events.jsonl"), at("2026-10-01T00:00:00Z"));
    set_mtime(&day2.join("new.jpg"), at("2026-11-29T00:00:00Z"));
    set_mtime(&root.join("cam/latest.jpg"), at("2026-01-01T00:00:00Z"));

    // Default max_age 30 days: October goes at open.
    let a = open_with(&tmp, now, |_| {});
    assert_eq!(
        files(&root),
        [
            ".camqtt-archive",
            "cam/2026-11-29/new.jpg",
            "cam/latest.jpg"
        ]
    );
    assert_eq!(a.bytes(), 200);
    drop(a);
    // With the clock further on, new.jpg is old too: it is aged by its mtime, not by `now`.
    let a = open_with(&tmp, at("2026-12-29T00:00:01Z"), |_| {});
    assert_eq!(files(&root), [".camqtt-archive", "cam/latest.jpg"]);
    assert_eq!(a.bytes(), 0);
}

#[test]
fn open_refuses_a_foreign_directory_and_needs_a_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let now = at("2026-11-30T00:00:00Z");
    let media = tmp.path().join("media");
    fs::create_dir_all(&media).unwrap();
    fs::write(media.join("holiday.jpg"), b"mine").unwrap();
    let err = Archive::open(&ArchiveConfig::new(&media), TimeZone::UTC, now).unwrap_err();
    assert!(matches!(err, ArchiveError::NotArchive { .. }), "{err}");
    assert!(
        err.to_string().contains(&media.display().to_string()),
        "{err}"
    );
    assert_eq!(fs::read(media.join("holiday.jpg")).unwrap(), b"mine");

    let disk = tmp.path().join("disk");
    fs::create_dir_all(disk.join("lost+found")).unwrap();
    assert!(Archive::open(&ArchiveConfig::new(&disk), TimeZone::UTC, now).is_ok());
    assert!(disk.join(".camqtt-archive").is_file());

    let err = Archive::open(&ArchiveConfig::default(), TimeZone::UTC, now).unwrap_err();
    assert!(matches!(err, ArchiveError::NoDir));
    let mut bad = ArchiveConfig::new(tmp.path().join("x"));
    bad.naming = "../{device}.jpg".into();
    let err = Archive::open(&bad, TimeZone::UTC, now).unwrap_err();
    assert!(err.to_string().starts_with("archive.naming: "), "{err}");
}

#[test]
fn io_errors_name_the_path_and_the_action() {
    let tmp = tempfile::tempdir().unwrap();
    let now = at("2026-11-30T00:00:00Z");
    let mut a = open_with(&tmp, now, |_| {});
    // A file where the device folder should be.
    fs::write(a.root().join("cam"), b"").unwrap();
    let err = a
        .write(&device("cam"), &lpr("2026-11-30T00:00:00Z"), now)
        .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("cannot create directory "), "{text}");
    assert!(text.contains("cam/2026-11-30"), "{text}");
    assert!(!files(a.root()).iter().any(|f| f.contains(".camqtt-tmp")));
}

#[test]
fn resolve_refuses_unsafe_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let now = at("2026-11-30T00:00:00Z");
    let mut a = open_with(&tmp, now, |_| {});
    let root = a.root().to_owned();
    let w = a
        .write(&device("cam"), &lpr("2026-11-30T00:00:00Z"), now)
        .unwrap();
    let file = &w.record.images[0].file;
    fs::write(tmp.path().join("secret.txt"), b"secret").unwrap();
    fs::write(root.join("cam/.hidden.jpg"), b"h").unwrap();

    let got = resolve(&root, file).unwrap();
    assert_eq!(fs::read(got).unwrap(), vec![1u8; 100]);
    let abs = root.join(file).display().to_string();
    for bad in [
        "",
        "../secret.txt",
        "cam/../../secret.txt",
        "cam/./latest.jpg",
        "/etc/passwd",
        abs.as_str(),
        ".camqtt-archive",
        "cam/.hidden.jpg",
        "cam\\latest.jpg",
        "cam//latest.jpg",
        "cam/latest.jpg/",
        "cam/nope.jpg",
        "cam",
        "cam/latest.jpg\0",
    ] {
        assert_eq!(resolve(&root, bad), None, "{bad:?}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        symlink(tmp.path().join("secret.txt"), root.join("cam/escape.jpg")).unwrap();
        symlink(tmp.path(), root.join("up")).unwrap();
        symlink(root.join("cam/.hidden.jpg"), root.join("cam/to_hidden.jpg")).unwrap();
        symlink(root.join(file), root.join("cam/inside.jpg")).unwrap();
        assert_eq!(resolve(&root, "cam/escape.jpg"), None);
        assert_eq!(resolve(&root, "up/secret.txt"), None);
        assert_eq!(resolve(&root, "cam/to_hidden.jpg"), None);
        assert_eq!(resolve(&root, "cam/inside.jpg"), resolve(&root, file));
        // A root given through a symbolic link works the same.
        let alias = tmp.path().join("alias");
        symlink(&root, &alias).unwrap();
        assert!(resolve(&alias, file).is_some());
        assert_eq!(resolve(&alias, "../secret.txt"), None);
    }
}

#[test]
fn latest_by_device_and_category() {
    let tmp = tempfile::tempdir().unwrap();
    let now = at("2026-11-30T00:00:00Z");
    let mut a = open_with(&tmp, now, |_| {});
    let root = a.root().to_owned();
    a.write(&device("cam"), &lpr("2026-11-30T00:00:00Z"), now)
        .unwrap();
    assert_eq!(latest(&root, "cam", None), resolve(&root, "cam/latest.jpg"));
    assert!(latest(&root, "cam", None).is_some());
    assert_eq!(
        latest(&root, "cam", Some("lpr")),
        resolve(&root, "cam/latest_lpr.jpg")
    );
    assert!(latest(&root, "cam", Some("lpr")).is_some());
    assert_eq!(latest(&root, "cam", Some("face")), None);
    assert_eq!(latest(&root, "other", None), None);
    assert_eq!(latest(&root, "../cam", None), None);
    assert_eq!(latest(&root, "cam", Some("../../cam/latest")), None);
}

/// Two devices over three days (UTC+2 local days), records written in the given order.
fn query_fixture(tmp: &tempfile::TempDir) -> (PathBuf, Vec<EventRecord>) {
    let mut cfg = ArchiveConfig::new(tmp.path().join("archive"));
    cfg.max_age = 3650 * 24 * HOUR;
    let now = at("2026-12-01T00:00:00Z");
    let mut a = Archive::open(&cfg, TimeZone::fixed(Offset::constant(2)), now).unwrap();
    let mut out = Vec::new();
    for (dev, cat, time) in [
        ("gate", Category::Lpr, "2026-11-28T10:00:00Z"),
        ("gate", Category::Motion, "2026-11-29T10:00:00Z"),
        ("yard", Category::Lpr, "2026-11-29T11:00:00Z"),
        ("gate", Category::Lpr, "2026-11-29T23:30:00Z"), // local day 2026-11-30
        ("yard", Category::Motion, "2026-11-30T09:00:00Z"),
        ("gate", Category::Lpr, "2026-11-30T08:00:00Z"), // written after a newer event
    ] {
        let e = event(cat, time, vec![]);
        out.push(a.write(&device(dev), &e, now).unwrap().record);
    }
    (a.root().to_owned(), out)
}

#[test]
fn query_filters_newest_first_with_a_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, r) = query_fixture(&tmp);
    let q = |f: &dyn Fn(&mut Query)| {
        let mut q = Query {
            limit: 100,
            ..Query::default()
        };
        f(&mut q);
        query(&root, &q).unwrap()
    };
    assert_eq!(
        q(&|_| {}),
        [&r[4], &r[5], &r[3], &r[2], &r[1], &r[0]].map(Clone::clone)
    );
    assert_eq!(
        q(&|q| q.device = Some("gate".into())),
        [&r[5], &r[3], &r[1], &r[0]].map(Clone::clone)
    );
    assert_eq!(
        q(&|q| q.category = Some("lpr".into())),
        [&r[5], &r[3], &r[2], &r[0]].map(Clone::clone)
    );
    assert_eq!(
        q(&|q| {
            q.device = Some("yard".into());
            q.category = Some("lpr".into());
        }),
        [r[2].clone()]
    );
    assert_eq!(
        q(&|q| {
            q.since = Some(at("2026-11-29T11:00:00Z"));
            q.until = Some(at("2026-11-30T08:00:00Z"));
        }),
        [&r[5], &r[3], &r[2]].map(Clone::clone),
        "both ends inclusive"
    );
    assert_eq!(q(&|q| q.limit = 2), [&r[4], &r[5]].map(Clone::clone));
    assert!(q(&|q| q.limit = 0).is_empty());
    assert!(q(&|q| q.device = Some("nobody".into())).is_empty());
    assert!(q(&|q| q.device = Some("../gate".into())).is_empty());
    assert!(q(&|q| q.since = Some(at("2026-12-01T00:00:00Z"))).is_empty());
}

#[test]
fn query_skips_bad_lines_and_reads_only_days_that_can_match() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, r) = query_fixture(&tmp);
    let log = root.join("gate/2026-11-30/events.jsonl");
    let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(b"not json\n{\"time\":\"yesterday\"}\n\n")
        .unwrap();
    // A day log that cannot be read at all (a folder): an error when it is read.
    fs::create_dir_all(root.join("gate/2020-01-01/events.jsonl")).unwrap();
    let all = Query {
        limit: 100,
        ..Query::default()
    };
    assert!(matches!(query(&root, &all), Err(ArchiveError::Io { .. })));
    // Outside the since window: not read.
    let recent = Query {
        since: Some(at("2026-11-29T00:00:00Z")),
        ..all.clone()
    };
    assert_eq!(query(&root, &recent).unwrap().len(), 5);
    // Enough newer records found: the older days are not read.
    let newest = Query {
        limit: 2,
        ..Query::default()
    };
    assert_eq!(
        query(&root, &newest).unwrap(),
        [&r[4], &r[5]].map(Clone::clone)
    );
}

#[test]
fn archive_is_send() {
    fn send<T: Send>() {}
    send::<Archive>();
    send::<ArchiveError>();
}

#[test]
fn events_of_the_same_time_come_newest_written_first() {
    // A camera clock with a coarse resolution: several events carry the same time; the one
    // written last is the newest.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ArchiveConfig::new(tmp.path().join("archive"));
    let now = at("2026-11-30T08:00:01Z");
    let mut a = Archive::open(&cfg, TimeZone::UTC, now).unwrap();
    let written: Vec<EventRecord> = (0..3)
        .map(|i| {
            let mut e = event(Category::Lpr, "2026-11-30T08:00:00Z", vec![]);
            e.raw_type = format!("T{i}");
            a.write(&device("gate"), &e, now).unwrap().record
        })
        .collect();
    let q = Query {
        limit: 10,
        ..Query::default()
    };
    let got = query(a.root(), &q).unwrap();
    let events: Vec<&str> = got.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(events, ["T2", "T1", "T0"]);
    assert_eq!(got, written.into_iter().rev().collect::<Vec<_>>());
}
