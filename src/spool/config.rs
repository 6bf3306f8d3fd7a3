//! `[spool]`: deserialised straight into [`SpoolConfig`] (serde, `deny_unknown_fields`,
//! defaults below) and checked by [`SpoolConfig::validate`] (called by
//! [`crate::config::Config::validate`]); and the bounds of the memory buffer used when the
//! spool is off ([`MemoryConfig`], not configurable).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{Problem, duration};

/// Shortest `max_age`: a record must be able to wait out a reconnect.
pub const MIN_MAX_AGE: Duration = Duration::from_secs(60);
/// Longest `max_age` and `image_max_age`: ten years (as `"10y"` counts them, 365.25 days a
/// year). Anything longer means "keep", and would only overflow the millisecond arithmetic.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(10 * 31_557_600);
/// Smallest `segment_bytes` (also the smallest roll size the store uses).
pub const MIN_SEGMENT_BYTES: u64 = 64 * 1024;
/// Largest `segment_bytes`.
pub const MAX_SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;
/// Smallest `max_bytes`: room for a camera post with its pictures.
pub const MIN_MAX_BYTES: u64 = 1024 * 1024;
/// Largest `max_bytes`.
pub const MAX_MAX_BYTES: u64 = 1024 * 1024 * 1024 * 1024;

/// `[spool]`: settings of the disk spool. Durations are seconds (`600`, `0.5`) or strings
/// (`"10m"`, `"1day"`). Ranges: [`SpoolConfig::validate`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Keep events on disk until the broker acknowledged them. Off: in memory only
    /// ([`MemoryConfig`]); read by [`super::Buffer::from_config`]. Default `true`.
    pub enabled: bool,
    /// Directory of the segment files (created if missing). Default `camqtt-spool`.
    pub dir: PathBuf,
    /// Upper bound of the segment files on disk, bytes; the oldest records go first
    /// (counted). 1 MiB to 1 TiB; default 2 GiB. Below `4 × segment_bytes`, segments roll at a
    /// quarter of it.
    pub max_bytes: u64,
    /// Records older than this are dropped (counted). 1 minute to 10 years; default 24 h.
    #[serde(deserialize_with = "duration::seconds")]
    pub max_age: Duration,
    /// Records older than this are replayed without their images; their events and states
    /// are still delivered. 0 to `max_age` (the default is accepted with a shorter
    /// `max_age`: the records then expire before their images do); default 10 min.
    #[serde(deserialize_with = "duration::seconds")]
    pub image_max_age: Duration,
    /// Size at which a segment file is closed and a new one started, bytes (a single larger
    /// record gets a segment of its own). 64 KiB to 1 GiB; default 64 MiB.
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

    /// Every problem of `[spool]` (key paths `spool.<key>`): the age and size bounds out of
    /// their ranges (see the fields). Checked whether or not the spool is enabled, like the
    /// other sections. No I/O: the directory is opened at start.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        duration::check_range(
            &mut problems,
            "spool.max_age",
            self.max_age,
            MIN_MAX_AGE,
            MAX_MAX_AGE,
        );
        duration::check_range(
            &mut problems,
            "spool.image_max_age",
            self.image_max_age,
            Duration::ZERO,
            MAX_MAX_AGE,
        );
        // The default is left alone with a shorter max_age (`max_age = "5m"` on its own is
        // fine); a value set longer than max_age is a mistake.
        if self.image_max_age > self.max_age
            && self.image_max_age <= MAX_MAX_AGE
            && self.image_max_age != SpoolConfig::default().image_max_age
        {
            problems.push(Problem::new(
                "spool.image_max_age",
                format!(
                    "must not be longer than spool.max_age ({} seconds): records are dropped before their images would be",
                    duration::secs_text(self.max_age)
                ),
            ));
        }
        check_bytes(
            &mut problems,
            "spool.segment_bytes",
            self.segment_bytes,
            (MIN_SEGMENT_BYTES, "64 KiB"),
            (MAX_SEGMENT_BYTES, "1 GiB"),
        );
        check_bytes(
            &mut problems,
            "spool.max_bytes",
            self.max_bytes,
            (MIN_MAX_BYTES, "1 MiB"),
            (MAX_MAX_BYTES, "1 TiB"),
        );
        problems
    }
}

/// Push `must be between <min> and <max> bytes` for `path` when `value` is outside
/// `min..=max` (each bound with its human-readable size).
fn check_bytes(
    problems: &mut Vec<Problem>,
    path: &str,
    value: u64,
    (min, min_text): (u64, &str),
    (max, max_text): (u64, &str),
) {
    if !(min..=max).contains(&value) {
        problems.push(Problem::new(
            path,
            format!("must be between {min} ({min_text}) and {max} ({max_text}) bytes"),
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(c: &SpoolConfig) -> Vec<String> {
        c.validate().into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(SpoolConfig::default().validate().is_empty());
    }

    #[test]
    fn ranges() {
        let s = Duration::from_secs;
        let ok = |f: &dyn Fn(&mut SpoolConfig)| {
            let mut c = SpoolConfig::default();
            f(&mut c);
            assert_eq!(paths(&c), Vec::<String>::new(), "{c:?}");
        };
        let bad = |f: &dyn Fn(&mut SpoolConfig), key: &str| {
            let mut c = SpoolConfig::default();
            f(&mut c);
            assert_eq!(paths(&c), [key], "{c:?}");
        };
        ok(&|c| c.max_age = MIN_MAX_AGE);
        ok(&|c| c.max_age = MAX_MAX_AGE);
        bad(&|c| c.max_age = Duration::ZERO, "spool.max_age");
        bad(&|c| c.max_age = s(59), "spool.max_age");
        bad(&|c| c.max_age = MAX_MAX_AGE + s(1), "spool.max_age");
        bad(&|c| c.max_age = Duration::MAX, "spool.max_age");
        ok(&|c| c.image_max_age = Duration::ZERO);
        ok(&|c| c.image_max_age = c.max_age);
        bad(
            &|c| c.image_max_age = c.max_age + s(1),
            "spool.image_max_age",
        );
        bad(&|c| c.image_max_age = Duration::MAX, "spool.image_max_age");
        // The default image_max_age with a shorter max_age.
        ok(&|c| c.max_age = s(300));
        bad(
            &|c| {
                c.max_age = s(300);
                c.image_max_age = s(301);
            },
            "spool.image_max_age",
        );
        ok(&|c| c.segment_bytes = MIN_SEGMENT_BYTES);
        ok(&|c| c.segment_bytes = MAX_SEGMENT_BYTES);
        bad(&|c| c.segment_bytes = 0, "spool.segment_bytes");
        bad(
            &|c| c.segment_bytes = MIN_SEGMENT_BYTES - 1,
            "spool.segment_bytes",
        );
        bad(
            &|c| c.segment_bytes = MAX_SEGMENT_BYTES + 1,
            "spool.segment_bytes",
        );
        ok(&|c| c.max_bytes = MIN_MAX_BYTES);
        ok(&|c| c.max_bytes = MAX_MAX_BYTES);
        bad(&|c| c.max_bytes = 0, "spool.max_bytes");
        bad(&|c| c.max_bytes = MIN_MAX_BYTES - 1, "spool.max_bytes");
        bad(&|c| c.max_bytes = MAX_MAX_BYTES + 1, "spool.max_bytes");
        // A max_bytes below segment_bytes is fine: segments roll at a quarter of it.
        ok(&|c| c.max_bytes = 16 * 1024 * 1024);
    }
}
