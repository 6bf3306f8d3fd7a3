//! `[spool]`: deserialised straight into [`SpoolConfig`] (serde, `deny_unknown_fields`,
//! defaults below), and the bounds of the memory buffer used when the spool is off
//! ([`MemoryConfig`], not configurable).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::duration;

/// `[spool]`: settings of the disk spool. Durations are seconds (`600`, `0.5`) or strings
/// (`"10m"`, `"1day"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Keep events on disk until the broker acknowledged them. Off: in memory only
    /// ([`MemoryConfig`]); read by [`super::Buffer::from_config`]. Default `true`.
    pub enabled: bool,
    /// Directory of the segment files (created if missing). Default `camqtt-spool`.
    pub dir: PathBuf,
    /// Upper bound of the segment files on disk, bytes; the oldest records go first
    /// (counted). Default 2 GiB.
    pub max_bytes: u64,
    /// Records older than this are dropped (counted). Default 24 h.
    #[serde(deserialize_with = "duration::seconds")]
    pub max_age: Duration,
    /// Records older than this are replayed without their images; their events and states
    /// are still delivered. Default 10 min.
    #[serde(deserialize_with = "duration::seconds")]
    pub image_max_age: Duration,
    /// Size at which a segment file is closed and a new one started, bytes. Default 64 MiB.
    pub segment_bytes: u64,
    /// `fdatasync` after every append: survives a power cut too, at the cost of a disk flush
    /// per post (slow on SD cards). Without it the spool survives a crash or kill of the
    /// bridge, not of the machine. Default `false`.
    pub fsync: bool,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            enabled: true,
            dir: PathBuf::from("camqtt-spool"),
            // A busy LPR camera: ~1,500 reads a day at ~600 KB with images ≈ 0.9 GB.
            max_bytes: 2 * 1024 * 1024 * 1024,
            max_age: Duration::from_secs(86_400),
            image_max_age: Duration::from_secs(600),
            segment_bytes: 64 * 1024 * 1024,
            fsync: false,
        }
    }
}

impl SpoolConfig {
    /// Defaults for a directory (tests, tools).
    pub fn new(dir: impl Into<PathBuf>) -> SpoolConfig {
        SpoolConfig {
            dir: dir.into(),
            ..SpoolConfig::default()
        }
    }
}

/// Bounds of the memory buffer (spool off): what it holds while the broker is away.
#[derive(Debug, Clone, Copy)]
pub struct MemoryConfig {
    /// Records held at most; the oldest go first. Default 10,000.
    pub max_records: u64,
    /// Record bytes held at most (images included); the oldest go first. Default 256 MiB.
    pub max_bytes: u64,
    /// Records older than this are dropped. Default 24 h.
    pub max_age: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_records: 10_000,
            max_bytes: 256 * 1024 * 1024,
            max_age: Duration::from_secs(86_400),
        }
    }
}
