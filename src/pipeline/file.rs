//! The device registry file: the devices the pipeline knows, so that "known" survives restarts.
//!
//! `<state dir>/devices.json`, written atomically (`.tmp` + rename) at most once per
//! [`SAVE_DEBOUNCE`], at once when a bridge-kept count advanced (before its event is stored,
//! see [`super::run`]), and on shutdown. camqtt 0.1.0 kept the same content in the MQTT sink
//! as `mqtt-devices.json` ([`OLD_FILE_NAME`]); [`load`] reads that file when there is no new
//! one, and it is removed after the first write of the new one. Format (version 1):
//!
//! ```json
//! {"version": 1, "saved": 1791408287,
//!  "devices": [{"device": { …the normalised Device… }, "last_seen": 1791408287,
//!               "categories": {"lpr": {"overview": true, "target": true,
//!                                      "content_type": "image/jpeg", "counters": []}},
//!               "counts": {"person": 12},
//!               "alarms": [{"name": "perimeterAlarm", "id": "1"}]}]}
//! ```
//!
//! Times are Unix seconds (any `u64` is read: a `last_seen` after the time of reading is read
//! as that time, so that a clock that was ahead cannot keep a device forever). `counts` are
//! the bridge-kept counters of counting categories (devices that send no counters of their
//! own); `alarms` the alarm-status entities of the device (absent when it has none; files
//! without it read as none). Encoding and decoding are pure and never panic; a missing,
//! unreadable or corrupt file is logged by the caller and ignored, and an unusable one is
//! first moved aside ([`set_aside`]) so that the next write does not destroy it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::event::{
    AlarmEntity, Category, CategoryCaps, Device, DeviceCaps, DeviceRecord, static_mime,
};

/// File name of the registry inside the state directory.
pub const FILE_NAME: &str = "devices.json";

/// File name camqtt 0.1.0 used (written by its MQTT sink); read when [`FILE_NAME`] is missing.
pub const OLD_FILE_NAME: &str = "mqtt-devices.json";

/// Version written (and the only one read).
pub const VERSION: u32 = 1;

/// The largest Unix time [`from_unix`] gives (9999-12-31T23:59:59Z, the last second RFC 3339
/// can show); later times are read as this one.
pub const MAX_UNIX: u64 = 253_402_300_799;

/// Suffix of an unusable registry file moved aside ([`set_aside`]).
pub const BAD_SUFFIX: &str = ".bad";

/// The registry is written at most this often.
pub const SAVE_DEBOUNCE: Duration = Duration::from_secs(1);

/// A device's `last_seen` alone makes the registry dirty only when it moved this much past
/// the saved value (it changes on every post; a day-granular `forget_after` does not need
/// more).
pub const LAST_SEEN_RESOLUTION: Duration = Duration::from_secs(3600);

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryFile {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// When it was written (Unix seconds).
    #[serde(default)]
    pub saved: u64,
    /// Known devices (NVRs and their channels each have an entry).
    pub devices: Vec<SavedDevice>,
}

/// One known device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedDevice {
    /// The device as the pipeline resolved it last.
    pub device: Device,
    /// Last post (Unix seconds).
    pub last_seen: u64,
    /// Categories seen, by name.
    #[serde(default)]
    pub categories: BTreeMap<String, SavedCategory>,
    /// Bridge-kept counters by class (`person`, `car`, ...).
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    /// Alarm-status elements exposed as entities of their own (those that name no single
    /// category, see [`AlarmEntity`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<SavedAlarm>,
}

/// An alarm entity of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedAlarm {
    /// Alarm name as sent (`perimeterAlarm`).
    pub name: String,
    /// Rule / input id.
    #[serde(default)]
    pub id: Option<String>,
}

/// What one category of a device has shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCategory {
    /// An overview image was seen.
    #[serde(default)]
    pub overview: bool,
    /// A target crop was seen.
    #[serde(default)]
    pub target: bool,
    /// Image MIME type.
    #[serde(default = "jpeg")]
    pub content_type: String,
    /// Device counters seen, `(dir, class)`.
    #[serde(default)]
    pub counters: Vec<(String, String)>,
    /// An annotated picture (object detector) was seen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub annotated: bool,
    /// Object labels the detector found: key → display label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, String>,
}

fn jpeg() -> String {
    "image/jpeg".to_owned()
}

impl SavedDevice {
    /// The file entry of a registry record.
    pub fn of(r: &DeviceRecord) -> SavedDevice {
        let categories = r
            .caps
            .categories
            .iter()
            .map(|(k, c)| {
                let saved = SavedCategory {
                    overview: c.overview,
                    target: c.target,
                    content_type: c.content_type.to_owned(),
                    counters: c.counters.iter().cloned().collect(),
                    annotated: c.annotated,
                    objects: c.objects.clone(),
                };
                (k.clone(), saved)
            })
            .collect();
        SavedDevice {
            device: r.device.clone(),
            last_seen: unix(r.last_seen),
            categories,
            counts: r.counts.clone(),
            alarms: (r.caps.alarms.iter())
                .map(|a| SavedAlarm {
                    name: a.name.clone(),
                    id: a.id.clone(),
                })
                .collect(),
        }
    }

    /// The registry record of a file entry.
    pub fn into_record(self) -> DeviceRecord {
        let categories = self
            .categories
            .into_iter()
            .map(|(name, c)| {
                let category =
                    Category::from_name(&name).unwrap_or_else(|| Category::Other(name.clone()));
                let caps = CategoryCaps {
                    overview: c.overview,
                    target: c.target,
                    content_type: static_mime(&c.content_type),
                    counters: c.counters.into_iter().collect(),
                    annotated: c.annotated,
                    // As the registry records them: safe keys, readable labels, bounded.
                    objects: (c.objects.into_iter())
                        .filter(|(k, _)| *k == crate::event::caps::object_key(k))
                        .map(|(k, l)| (k, crate::event::caps::object_label(&l)))
                        .take(crate::event::caps::MAX_OBJECT_LABELS)
                        .collect(),
                    ..CategoryCaps::new(category)
                };
                (name, caps)
            })
            .collect();
        let alarms = (self.alarms.into_iter())
            .map(|a| AlarmEntity {
                name: a.name,
                id: a.id,
            })
            .collect();
        DeviceRecord {
            device: self.device,
            last_seen: from_unix(self.last_seen),
            caps: DeviceCaps { categories, alarms },
            counts: self.counts,
        }
    }
}

/// Why the registry file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading or writing failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The content is not a registry file.
    #[error("corrupt device registry: {0}")]
    Corrupt(String),
    /// Written by an unknown format version.
    #[error("device registry version {0} is not supported (expected {VERSION})")]
    Version(u32),
    /// The file at `path` was read but its content is not usable ([`PersistError::Corrupt`],
    /// [`PersistError::Version`]).
    #[error("{path}: {reason}")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: Box<PersistError>,
    },
}

impl PersistError {
    /// The registry file that [`load`] could not use (unreadable or unusable content).
    pub fn unusable_file(&self) -> Option<&Path> {
        match self {
            PersistError::Io {
                op: "read", path, ..
            }
            | PersistError::Unusable { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// Unix seconds of a wall-clock time (0 before the epoch).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The wall-clock time of Unix seconds, saturating at [`MAX_UNIX`] (never a panic).
pub fn from_unix(s: u64) -> SystemTime {
    let epoch = SystemTime::UNIX_EPOCH;
    epoch
        .checked_add(Duration::from_secs(s.min(MAX_UNIX)))
        // A platform whose clock ends earlier (32-bit time_t): its last second of 2038.
        .or_else(|| epoch.checked_add(Duration::from_secs(s.min(i32::MAX as u64))))
        .unwrap_or(epoch)
}

/// Serialise the registry (pretty JSON, small and human-readable).
pub fn encode(file: &RegistryFile) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(file).unwrap_or_default();
    v.push(b'\n');
    v
}

/// What [`decode`] kept and dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// Devices to restore.
    pub devices: Vec<SavedDevice>,
    /// Ids of devices dropped because they were silent for `forget_after` or longer.
    pub forgotten: Vec<String>,
}

/// Parse a registry file and drop the devices last seen `forget_after` or longer before
/// `now`. A kept NVR channel whose NVR entry was dropped or is missing keeps its NVR (the
/// channel's posts prove the NVR alive). A `last_seen` after `now` (a clock that was ahead,
/// or a damaged file) is read as `now`: the device is forgotten after `forget_after` of
/// silence like any other.
pub fn decode(
    bytes: &[u8],
    now: SystemTime,
    forget_after: Duration,
) -> Result<Loaded, PersistError> {
    #[derive(Deserialize)]
    struct Head {
        version: u32,
    }
    let head: Head =
        serde_json::from_slice(bytes).map_err(|e| PersistError::Corrupt(e.to_string()))?;
    if head.version != VERSION {
        return Err(PersistError::Version(head.version));
    }
    let mut file: RegistryFile =
        serde_json::from_slice(bytes).map_err(|e| PersistError::Corrupt(e.to_string()))?;
    let now = unix(now).min(MAX_UNIX);
    for d in &mut file.devices {
        d.last_seen = d.last_seen.min(now);
    }
    let cutoff = now.saturating_sub(forget_after.as_secs());
    let (mut devices, mut old): (Vec<SavedDevice>, Vec<SavedDevice>) = file
        .devices
        .into_iter()
        .filter(|d| !d.device.id.is_empty())
        .partition(|d| d.last_seen > cutoff);
    // Parents of kept channels stay (their own entry, else the channel's embedded copy).
    let parents: Vec<(Device, u64)> = devices
        .iter()
        .filter_map(|d| d.device.parent.as_deref().map(|p| (p.clone(), d.last_seen)))
        .collect();
    for (p, seen) in parents {
        if let Some(d) = devices.iter_mut().find(|d| d.device.id == p.id) {
            d.last_seen = d.last_seen.max(seen);
            continue;
        }
        let entry = match old.iter().position(|d| d.device.id == p.id) {
            Some(i) => SavedDevice {
                last_seen: seen,
                ..old.swap_remove(i)
            },
            None => SavedDevice {
                device: p,
                last_seen: seen,
                categories: BTreeMap::new(),
                counts: BTreeMap::new(),
                alarms: Vec::new(),
            },
        };
        devices.push(entry);
    }
    let mut forgotten: Vec<String> = old.into_iter().map(|d| d.device.id).collect();
    // One entry per id (the last wins), in a stable order.
    let mut by_id: BTreeMap<String, SavedDevice> = BTreeMap::new();
    for d in devices {
        by_id.insert(d.device.id.clone(), d);
    }
    forgotten.sort();
    forgotten.dedup();
    forgotten.retain(|id| !by_id.contains_key(id));
    Ok(Loaded {
        devices: by_id.into_values().collect(),
        forgotten,
    })
}

/// The registry path inside `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// What [`load`] found in a state directory.
#[derive(Debug)]
pub enum Found {
    /// No registry file (first start).
    Nothing,
    /// A registry, from [`FILE_NAME`] or, `migrated`, from [`OLD_FILE_NAME`].
    Registry {
        /// Kept and dropped devices.
        loaded: Loaded,
        /// Read from camqtt 0.1.0's file.
        migrated: bool,
    },
}

/// Read the registry in `dir` ([`FILE_NAME`], else camqtt 0.1.0's [`OLD_FILE_NAME`]) and
/// [`decode`] it.
///
/// Errors: the file exists but cannot be read ([`PersistError::Io`]), or is corrupt or has an
/// unknown version ([`PersistError::Unusable`]); [`PersistError::unusable_file`] names it.
pub fn load(dir: &Path, now: SystemTime, forget_after: Duration) -> Result<Found, PersistError> {
    let (path, migrated) = (path_in(dir), dir.join(OLD_FILE_NAME));
    let (bytes, path, migrated) = match read(&path)? {
        Some(b) => (b, path, false),
        None => match read(&migrated)? {
            Some(b) => (b, migrated, true),
            None => return Ok(Found::Nothing),
        },
    };
    let loaded = decode(&bytes, now, forget_after).map_err(|e| PersistError::Unusable {
        path,
        reason: Box::new(e),
    })?;
    Ok(Found::Registry { loaded, migrated })
}

/// Move an unusable registry file aside, to `<name>.bad` (replacing an older one), so that
/// the registry written next does not destroy it (a downgrade, a bug, a damaged disk: it can
/// be inspected or put back by hand). Returns the new path.
pub fn set_aside(path: &Path) -> Result<PathBuf, PersistError> {
    let mut bad = path.as_os_str().to_owned();
    bad.push(BAD_SUFFIX);
    let bad = PathBuf::from(bad);
    std::fs::rename(path, &bad).map_err(|source| PersistError::Io {
        op: "rename",
        path: path.to_owned(),
        source,
    })?;
    Ok(bad)
}

/// Remove camqtt 0.1.0's registry file once the new one is written (missing is fine).
pub fn remove_old(dir: &Path) -> Result<(), PersistError> {
    let path = dir.join(OLD_FILE_NAME);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(PersistError::Io {
            op: "remove",
            path,
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Read the registry file; `Ok(None)` when it does not exist.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, PersistError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PersistError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Write `bytes` to `path` atomically: `<path>.tmp`, rename (a crash of the process leaves the
/// old or the new file, never a torn one). With `fsync` the data is flushed before the rename
/// and the directory after it, so that a power cut leaves the old or the new file too;
/// without it the file survives a crash or kill of the process, not of the machine. Creates
/// the directory when missing.
pub fn write_atomic(path: &Path, bytes: &[u8], fsync: bool) -> Result<(), PersistError> {
    let io = |op: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| PersistError::Io {
            op,
            path: p,
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    if fsync {
        f.sync_all().map_err(io("sync", &tmp))?;
    }
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("rename", path))?;
    #[cfg(unix)]
    if fsync && let Some(dir) = path.parent() {
        // The rename itself (best effort: not every file system syncs a directory).
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DeviceInfo, DeviceKind};

    fn dev(id: &str, parent: Option<Device>) -> Device {
        Device {
            id: id.into(),
            name: format!("{id} name"),
            info: DeviceInfo {
                mac: Some("58:5b:69:40:f4:0d".into()),
                kind: if parent.is_some() {
                    DeviceKind::Camera
                } else {
                    DeviceKind::Nvr
                },
                channel: parent.as_ref().map(|_| 2),
                ..DeviceInfo::default()
            },
            hw_key: id.replace('_', ""),
            parent: parent.map(Box::new),
            area: Some("Garden".into()),
        }
    }

    fn saved(d: Device, last_seen: u64) -> SavedDevice {
        SavedDevice {
            device: d,
            last_seen,
            categories: BTreeMap::from([(
                "counting".to_owned(),
                SavedCategory {
                    overview: true,
                    target: false,
                    content_type: "image/jpeg".into(),
                    counters: vec![("enter".into(), "person".into())],
                    annotated: true,
                    objects: BTreeMap::from([("person".to_owned(), "person".to_owned())]),
                },
            )]),
            counts: BTreeMap::from([("person".to_owned(), 7)]),
            alarms: vec![SavedAlarm {
                name: "perimeterAlarm".into(),
                id: Some("1".into()),
            }],
        }
    }

    const NOW: u64 = 1_800_000_000;
    const DAY: u64 = 86_400;

    #[test]
    fn round_trip() {
        let nvr = dev("nvr", None);
        let file = RegistryFile {
            version: VERSION,
            saved: NOW,
            devices: vec![
                saved(nvr.clone(), NOW - 10),
                saved(dev("nvr_ch2", Some(nvr)), NOW - 10),
            ],
        };
        let bytes = encode(&file);
        let back = decode(&bytes, from_unix(NOW), Duration::from_secs(30 * DAY)).unwrap();
        assert!(back.forgotten.is_empty());
        assert_eq!(back.devices, file.devices);
    }

    #[test]
    fn corrupt_and_foreign_files_are_errors() {
        let f = Duration::from_secs(DAY);
        let now = from_unix(NOW);
        for bad in [
            &b""[..],
            b"{",
            b"null",
            b"[1,2]",
            b"{\"version\":1}",
            b"{\"version\":1,\"devices\":[{\"device\":7}]}",
            b"\xff\xfe garbage",
        ] {
            let e = decode(bad, now, f).unwrap_err();
            assert!(matches!(e, PersistError::Corrupt(_)), "{bad:?}: {e}");
        }
        assert!(matches!(
            decode(b"{\"version\":2,\"devices\":[]}", now, f),
            Err(PersistError::Version(2))
        ));
    }

    #[test]
    fn forget_after_drops_silent_devices_but_keeps_parents_of_kept_channels() {
        let nvr = dev("nvr", None);
        let file = RegistryFile {
            version: VERSION,
            saved: NOW,
            devices: vec![
                saved(dev("cam_old", None), NOW - 31 * DAY),
                saved(dev("cam_new", None), NOW - 29 * DAY),
                // Inconsistent on purpose: the NVR entry is older than its channel.
                saved(nvr.clone(), NOW - 40 * DAY),
                saved(dev("nvr_ch2", Some(nvr.clone())), NOW - DAY),
                saved(dev("other_ch1", Some(dev("other", None))), NOW - 50 * DAY),
            ],
        };
        let got = decode(
            &encode(&file),
            from_unix(NOW),
            Duration::from_secs(30 * DAY),
        )
        .unwrap();
        let ids: Vec<&str> = got.devices.iter().map(|d| d.device.id.as_str()).collect();
        assert_eq!(ids, ["cam_new", "nvr", "nvr_ch2"]);
        assert_eq!(got.forgotten, ["cam_old", "other_ch1"]);
        let nvr_entry = &got.devices[1];
        assert_eq!(nvr_entry.last_seen, NOW - DAY);
        assert_eq!(nvr_entry.counts.get("person"), Some(&7));
        // Exactly forget_after ago counts as forgotten.
        let file = RegistryFile {
            version: VERSION,
            saved: NOW,
            devices: vec![saved(dev("edge", None), NOW - 30 * DAY)],
        };
        let got = decode(
            &encode(&file),
            from_unix(NOW),
            Duration::from_secs(30 * DAY),
        )
        .unwrap();
        assert!(got.devices.is_empty());
        assert_eq!(got.forgotten, ["edge"]);
    }

    #[test]
    fn missing_channel_parent_is_restored_from_the_channel() {
        let nvr = dev("nvr", None);
        let file = RegistryFile {
            version: VERSION,
            saved: NOW,
            devices: vec![saved(dev("nvr_ch2", Some(nvr.clone())), NOW - 5)],
        };
        let got = decode(&encode(&file), from_unix(NOW), Duration::from_secs(DAY)).unwrap();
        assert_eq!(got.devices.len(), 2);
        assert_eq!(got.devices[0].device, nvr);
        assert_eq!(got.devices[0].last_seen, NOW - 5);
    }

    #[test]
    fn defaults_for_missing_fields_and_unknown_mime() {
        let d = serde_json::to_value(dev("cam", None)).unwrap();
        let text = serde_json::json!({
            "version": 1,
            "devices": [{"device": d, "last_seen": NOW, "categories": {"lpr": {}}}],
        });
        let got = decode(
            text.to_string().as_bytes(),
            from_unix(NOW),
            Duration::from_secs(DAY),
        )
        .unwrap();
        let c = &got.devices[0].categories["lpr"];
        assert_eq!(c.content_type, "image/jpeg");
        assert!(!c.overview && c.counters.is_empty());
        assert!(got.devices[0].counts.is_empty());
        assert!(
            got.devices[0].alarms.is_empty(),
            "files without alarms read as none"
        );
        let record = got.devices[0].clone().into_record();
        assert_eq!(record.caps.categories["lpr"].content_type, "image/jpeg");
    }

    /// A file whose only device was last seen at `last_seen` (JSON text), saved at `saved`.
    fn file_with(last_seen: &str, saved: &str) -> String {
        let d = serde_json::to_string(&dev("cam", None)).unwrap();
        format!(
            r#"{{"version": 1, "saved": {saved}, "devices": [{{"device": {d},
                "last_seen": {last_seen}, "counts": {{"person": 3}}}}]}}"#
        )
    }

    #[test]
    fn from_unix_saturates() {
        assert_eq!(unix(from_unix(NOW)), NOW);
        assert_eq!(unix(from_unix(u64::MAX)), MAX_UNIX);
        assert_eq!(unix(from_unix(MAX_UNIX + 1)), MAX_UNIX);
        assert_eq!(unix(SystemTime::UNIX_EPOCH - Duration::from_secs(5)), 0);
    }

    #[test]
    fn a_last_seen_in_the_future_is_clamped_to_now() {
        // A clock that jumped back (or a bit flip) must not keep a device forever.
        let day = Duration::from_secs(DAY);
        for future in [NOW + 1, NOW + 400 * DAY, MAX_UNIX, u64::MAX] {
            let got = decode(
                file_with(&future.to_string(), "0").as_bytes(),
                from_unix(NOW),
                day,
            )
            .unwrap();
            assert_eq!(got.devices.len(), 1, "{future}");
            assert_eq!(got.devices[0].last_seen, NOW, "{future}");
            let record = got.devices[0].clone().into_record();
            assert_eq!(record.last_seen, from_unix(NOW));
            // Saved back as read, it is forgotten after forget_after of silence from now.
            let saved_back = RegistryFile {
                version: VERSION,
                saved: NOW,
                devices: got.devices,
            };
            let later = decode(&encode(&saved_back), from_unix(NOW) + day, day).unwrap();
            assert!(later.devices.is_empty(), "{future}: {later:?}");
            assert_eq!(later.forgotten, ["cam"]);
        }
    }

    /// JSON text for a time field: numbers of every size and sign, and other values.
    fn json_time() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            (0..=2 * NOW).prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            "[0-9]{1,40}",
            Just("1e400".to_owned()),
            Just("-0".to_owned()),
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("[]".to_owned()),
            Just("{}".to_owned()),
            "\"[0-9a-z:-]{0,12}\"",
        ]
    }

    proptest::proptest! {
        /// Whatever `last_seen` and `saved` hold, a file is decoded or refused, never a
        /// panic, and a kept device was last seen no later than now.
        #[test]
        fn arbitrary_times_are_decoded_or_refused_never_a_panic(
            last_seen in json_time(),
            saved in json_time(),
            now in proptest::prop_oneof![
                proptest::strategy::Just(NOW),
                0..=MAX_UNIX,
            ],
            forget_days in 0u64..100_000,
        ) {
            let text = file_with(&last_seen, &saved);
            let forget = Duration::from_secs(forget_days * DAY);
            if let Ok(got) = decode(text.as_bytes(), from_unix(now), forget) {
                for d in got.devices {
                    proptest::prop_assert!(d.last_seen <= now);
                    let record = d.clone().into_record();
                    proptest::prop_assert_eq!(SavedDevice::of(&record), d);
                }
            }
        }
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(&dir.path().join("sub"));
        assert!(read(&path).unwrap().is_none());
        write_atomic(&path, b"one", true).unwrap();
        write_atomic(&path, b"two", false).unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some(&b"two"[..]));
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [FILE_NAME]);
    }

    #[test]
    fn records_round_trip_and_the_old_file_is_migrated() {
        let d = saved(dev("cam", None), NOW - 10);
        assert_eq!(SavedDevice::of(&d.clone().into_record()), d);
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(DAY);
        assert!(matches!(
            load(dir.path(), from_unix(NOW), day),
            Ok(Found::Nothing)
        ));
        let file = RegistryFile {
            version: VERSION,
            saved: NOW,
            devices: vec![d.clone()],
        };
        std::fs::write(dir.path().join(OLD_FILE_NAME), encode(&file)).unwrap();
        let Ok(Found::Registry { loaded, migrated }) = load(dir.path(), from_unix(NOW), day) else {
            panic!("old file not read");
        };
        assert!(migrated);
        assert_eq!(loaded.devices, std::slice::from_ref(&d));
        // Once the new file exists it wins, and the old one can go.
        let newer = RegistryFile {
            devices: vec![saved(dev("other", None), NOW - 5)],
            ..file
        };
        write_atomic(&path_in(dir.path()), &encode(&newer), true).unwrap();
        remove_old(dir.path()).unwrap();
        remove_old(dir.path()).unwrap();
        let Ok(Found::Registry { loaded, migrated }) = load(dir.path(), from_unix(NOW), day) else {
            panic!("new file not read");
        };
        assert!(!migrated);
        assert_eq!(loaded.devices[0].device.id, "other");
        assert!(!dir.path().join(OLD_FILE_NAME).exists());
    }
}
