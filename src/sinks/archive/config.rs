//! `[archive]`: deserialised straight into [`ArchiveConfig`] (serde, `deny_unknown_fields`,
//! defaults below) and checked by [`ArchiveConfig::validate`]. The archive is on when `dir`
//! is set.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::naming::Naming;
use crate::config::{Problem, duration};
use crate::event::Category;

/// The default picture path template (see [`Naming`] for the placeholders).
pub const DEFAULT_NAMING: &str =
    "{device}/{YYYY}-{MM}-{DD}/{hh}{mm}{ss}.{mmm}_{category}_{role}.jpg";
/// Shortest `max_age`: one hour.
pub const MIN_MAX_AGE: Duration = Duration::from_secs(3600);
/// Longest `max_age`: ten years (365.25 days each, as `"10y"` counts them).
pub const MAX_MAX_AGE: Duration = Duration::from_secs(10 * 31_557_600);
/// Smallest non-zero `max_bytes`: 16 MiB, room for a few dozen posts with their pictures.
pub const MIN_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// How much an event matters, per category (`[archive.priority]`), written into each
/// [`super::EventRecord`]. Ordered `low < normal < high < critical`; serde names lower-case.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Routine (counting, metadata, …) when configured so.
    Low,
    /// The default of every category but `fire` and `temperature`.
    #[default]
    Normal,
    /// The default of `fire` and `temperature`.
    High,
    /// Only when configured.
    Critical,
}

impl Priority {
    /// The built-in priority of a category when `[archive.priority]` does not name it: `high`
    /// for `fire` and `temperature` (a danger to life or property, not just a sighting),
    /// `normal` for everything else.
    pub fn default_for(category: &Category) -> Priority {
        match category {
            Category::Fire | Category::Temperature => Priority::High,
            _ => Priority::Normal,
        }
    }
}

/// `[archive]`: the on-disk archive of pictures and events. Durations are seconds (`86400`)
/// or strings (`"30d"`). Ranges: [`ArchiveConfig::validate`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// The archive's directory (created if missing; must be empty or an archive already).
    /// Unset (the default): no archive.
    pub dir: Option<PathBuf>,
    /// Path of each picture below `dir`, a template of `/`-separated components with
    /// placeholders ([`Naming`]). Default [`DEFAULT_NAMING`]; the DVR style
    /// `"{YYYY}{MM}{DD}{hh}{mm}{ss}{device}.jpg"` works too. The event log is always
    /// `<device>/<YYYY-MM-DD>/events.jsonl`, whatever the template.
    pub naming: String,
    /// Files older than this (by modification time) are deleted. 1 hour to 10 years;
    /// default 30 days.
    #[serde(deserialize_with = "duration::seconds")]
    pub max_age: Duration,
    /// Upper bound of the archive's pictures and logs, bytes; the oldest files go first. 0: no
    /// size bound; else at least 16 MiB. Default 5 GiB.
    pub max_bytes: u64,
    /// Priority per category name (`lpr = "high"`); categories not named get
    /// [`Priority::default_for`].
    pub priority: BTreeMap<String, Priority>,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            dir: None,
            naming: DEFAULT_NAMING.to_owned(),
            max_age: Duration::from_secs(30 * 86_400),
            max_bytes: 5 * 1024 * 1024 * 1024,
            priority: BTreeMap::new(),
        }
    }
}

impl ArchiveConfig {
    /// Defaults with the archive on in `dir` (tests, tools).
    pub fn new(dir: impl Into<PathBuf>) -> ArchiveConfig {
        ArchiveConfig {
            dir: Some(dir.into()),
            ..ArchiveConfig::default()
        }
    }

    /// The priority of events of `category`: configured, else [`Priority::default_for`].
    pub fn priority_of(&self, category: &Category) -> Priority {
        self.priority
            .get(category.as_str())
            .copied()
            .unwrap_or_else(|| Priority::default_for(category))
    }

    /// Every problem of `[archive]` (key paths `archive.<key>`): an empty `dir`, a `naming`
    /// template [`Naming::parse`] refuses, `max_age` outside 1 hour to 10 years, `max_bytes`
    /// neither 0 nor at least 16 MiB, and `priority` keys that are not category names.
    /// Checked whether or not the archive is on; no I/O.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            problems.push(Problem::new("archive.dir", "must not be empty"));
        }
        if let Err(message) = Naming::parse(&self.naming) {
            problems.push(Problem::new("archive.naming", message));
        }
        duration::check_range(
            &mut problems,
            "archive.max_age",
            self.max_age,
            MIN_MAX_AGE,
            MAX_MAX_AGE,
        );
        if self.max_bytes != 0 && self.max_bytes < MIN_MAX_BYTES {
            problems.push(Problem::new(
                "archive.max_bytes",
                format!("must be 0 (no size bound) or at least {MIN_MAX_BYTES} (16 MiB) bytes"),
            ));
        }
        for name in self.priority.keys() {
            if Category::from_name(name).is_none() {
                let known: Vec<&str> = Category::NAMED.iter().map(|c| c.as_str()).collect();
                problems.push(Problem::new(
                    format!("archive.priority.{name}"),
                    format!("unknown category; known: {}", known.join(", ")),
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(c: &ArchiveConfig) -> Vec<String> {
        c.validate().into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn defaults_are_valid_and_off() {
        let c = ArchiveConfig::default();
        assert!(c.validate().is_empty());
        assert_eq!(c.dir, None);
        assert_eq!(c.max_age, Duration::from_secs(2_592_000));
        assert_eq!(c.max_bytes, 5_368_709_120);
    }

    #[test]
    fn parses_toml_section() {
        let c: ArchiveConfig = toml::from_str(
            r#"
            dir = "/media/camqtt"
            naming = "{YYYY}{MM}{DD}{hh}{mm}{ss}{device}.jpg"
            max_age = "7d"
            max_bytes = 0
            priority = { lpr = "high", counting = "low" }
            "#,
        )
        .unwrap();
        assert_eq!(c.dir, Some(PathBuf::from("/media/camqtt")));
        assert_eq!(c.max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(c.max_bytes, 0);
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.priority_of(&Category::Lpr), Priority::High);
        assert_eq!(c.priority_of(&Category::Counting), Priority::Low);
        assert_eq!(c.priority_of(&Category::Fire), Priority::High);
        assert_eq!(c.priority_of(&Category::Intrusion), Priority::Normal);
        assert_eq!(
            c.priority_of(&Category::Other("x".into())),
            Priority::Normal
        );
        assert!(toml::from_str::<ArchiveConfig>("colour = 1").is_err());
        assert!(toml::from_str::<ArchiveConfig>("priority = { lpr = \"urgent\" }").is_err());
        let seconds: ArchiveConfig = toml::from_str("max_age = 7200").unwrap();
        assert_eq!(seconds.max_age, Duration::from_secs(7200));
    }

    #[test]
    fn configured_priority_overrides_the_builtin_one() {
        let mut c = ArchiveConfig::default();
        c.priority.insert("fire".into(), Priority::Critical);
        assert_eq!(c.priority_of(&Category::Fire), Priority::Critical);
        assert_eq!(c.priority_of(&Category::Temperature), Priority::High);
        assert!(Priority::Low < Priority::Normal && Priority::High < Priority::Critical);
    }

    #[test]
    fn ranges_and_keys() {
        let bad = |f: &dyn Fn(&mut ArchiveConfig), key: &str| {
            let mut c = ArchiveConfig::default();
            f(&mut c);
            assert_eq!(paths(&c), [key], "{c:?}");
        };
        let ok = |f: &dyn Fn(&mut ArchiveConfig)| {
            let mut c = ArchiveConfig::default();
            f(&mut c);
            assert_eq!(paths(&c), Vec::<String>::new(), "{c:?}");
        };
        ok(&|c| c.max_age = MIN_MAX_AGE);
        ok(&|c| c.max_age = MAX_MAX_AGE);
        bad(
            &|c| c.max_age = MIN_MAX_AGE - Duration::from_secs(1),
            "archive.max_age",
        );
        bad(
            &|c| c.max_age = MAX_MAX_AGE + Duration::from_secs(1),
            "archive.max_age",
        );
        ok(&|c| c.max_bytes = 0);
        ok(&|c| c.max_bytes = MIN_MAX_BYTES);
        bad(&|c| c.max_bytes = 1, "archive.max_bytes");
        bad(&|c| c.max_bytes = MIN_MAX_BYTES - 1, "archive.max_bytes");
        bad(&|c| c.dir = Some(PathBuf::new()), "archive.dir");
        bad(
            &|c| c.naming = "{device}/{nope}.jpg".into(),
            "archive.naming",
        );
        bad(&|c| c.naming = "/abs/{device}.jpg".into(), "archive.naming");
        bad(
            &|c| {
                c.priority.insert("lpr".into(), Priority::High);
                c.priority.insert("plates".into(), Priority::High);
            },
            "archive.priority.plates",
        );
        let all = ArchiveConfig {
            max_age: Duration::ZERO,
            max_bytes: 5,
            naming: "../x.jpg".into(),
            ..ArchiveConfig::default()
        };
        assert_eq!(
            paths(&all),
            ["archive.naming", "archive.max_age", "archive.max_bytes"]
        );
    }
}
