//! `[detector]`: the object detector camqtt hands pictures to, what it keeps of its answer,
//! and the overrides per category (`[detector.category.<name>]`) and per device
//! (`[[devices]] detect = { ... }`).
//!
//! ```toml
//! [detector]
//! kind = "deepstack"                 # DeepStack and CodeProject.AI; or "doods" (DOODS2)
//! url = "http://127.0.0.1:32168"     # base URL (--detector-url, CAMQTT_DETECTOR_URL)
//! labels = ["person", "car", "truck"]
//! min_confidence = 0.6
//! unmatched = "suppress"             # or "publish" (the default)
//! [detector.category.snapshot]
//! labels = ["person"]
//!
//! [[devices]]
//! ftp_user = "gatecam"
//! detect = { zone = [0.0, 0.4, 1.0, 1.0], min_confidence = 0.7 }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::config::{Problem, duration, secret};
use crate::event::Category;

/// Which HTTP API the detector speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    /// DeepStack's and CodeProject.AI Server's `POST /v1/vision/detection` (multipart `image`,
    /// answer `predictions` with `label`, `confidence`, `x_min`, `y_min`, `x_max`, `y_max`).
    #[default]
    Deepstack,
    /// DOODS2's `POST /detect` (JSON with the base64 picture, answer `detections` with
    /// `label`, `confidence` in percent and the box as fractions `top`, `left`, `bottom`,
    /// `right`).
    Doods,
}

impl DetectorKind {
    /// `deepstack` or `doods`.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::Deepstack => "deepstack",
            DetectorKind::Doods => "doods",
        }
    }
}

/// What happens to a picture in which no wanted object was found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    /// Published as without a detector (with `objects: []`).
    #[default]
    Publish,
    /// Not published: only confirmed detections fire. The device is still seen.
    Suppress,
}

/// A region of the picture as fractions of its width and height, `[x_min, y_min, x_max,
/// y_max]`, each 0.0 to 1.0 (so one zone fits every resolution of a camera). An object
/// counts when the centre of its box is inside.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(from = "[f64; 4]")]
pub struct Zone {
    /// Left edge.
    pub x_min: f64,
    /// Top edge.
    pub y_min: f64,
    /// Right edge.
    pub x_max: f64,
    /// Bottom edge.
    pub y_max: f64,
}

impl From<[f64; 4]> for Zone {
    fn from([x_min, y_min, x_max, y_max]: [f64; 4]) -> Zone {
        Zone {
            x_min,
            y_min,
            x_max,
            y_max,
        }
    }
}

impl Zone {
    /// The problem with this zone, if any (`at` is its key).
    pub fn check(&self, at: &str) -> Option<Problem> {
        let all = [self.x_min, self.y_min, self.x_max, self.y_max];
        if all.iter().any(|v| !(0.0..=1.0).contains(v)) {
            Some(Problem::new(
                at,
                "zone values are fractions of the picture, 0.0 to 1.0",
            ))
        } else if self.x_min >= self.x_max || self.y_min >= self.y_max {
            Some(Problem::new(
                at,
                "zone must be [x_min, y_min, x_max, y_max] with min < max",
            ))
        } else {
            None
        }
    }
}

/// Settings that a category or a device may change; unset ones are inherited.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectOverride {
    /// Send this device's / category's pictures to the detector at all.
    pub enabled: Option<bool>,
    /// Wanted labels.
    pub labels: Option<Vec<String>>,
    /// Minimum confidence.
    pub min_confidence: Option<f64>,
    /// Zone.
    pub zone: Option<Zone>,
    /// Publish or suppress pictures without a wanted object.
    pub unmatched: Option<Unmatched>,
}

/// The `[detector]` section. Off unless `url` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// The API (`deepstack`, also CodeProject.AI; `doods`).
    pub kind: DetectorKind,
    /// Base URL (`http://host:port`); the API's path is added. `None`: no detector.
    pub url: Option<String>,
    /// DeepStack / CodeProject.AI `api_key` form field, if the server wants one.
    #[serde(deserialize_with = "secret::optional")]
    pub api_key: Option<SecretString>,
    /// DOODS2 detector name (`default`, `tensorflow`, ...).
    pub doods_detector: String,
    /// Wanted labels (COCO names, any case); empty: every label.
    pub labels: Vec<String>,
    /// Objects below this confidence (0.0 to 1.0) are ignored. Default 0.5.
    pub min_confidence: f64,
    /// Objects must have the centre of their box in this zone.
    pub zone: Option<Zone>,
    /// Pictures without a wanted object: `publish` (default) or `suppress`.
    pub unmatched: Unmatched,
    /// Categories whose pictures go to the detector; empty: every category.
    pub categories: Vec<String>,
    /// Per-category overrides (`[detector.category.<name>]`).
    #[serde(rename = "category")]
    pub by_category: BTreeMap<String, DetectOverride>,
    /// Time allowed for one answer (0.1 s to 60 s). Default 5 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub timeout: Duration,
    /// Pictures sent at the same time (1 to 32). Default 2.
    pub concurrency: usize,
    /// After a failure, the detector is not asked for this long: events go on at once,
    /// marked `unavailable` (1 s to 1 h). Default 30 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub retry_after: Duration,
    /// How long a device's "<label> detected" binary sensor stays on after the last picture
    /// with that label (0 to 86400 s). Default 30 s.
    #[serde(deserialize_with = "duration::seconds")]
    pub off_delay: Duration,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            kind: DetectorKind::Deepstack,
            url: None,
            api_key: None,
            doods_detector: "default".into(),
            labels: Vec::new(),
            min_confidence: 0.5,
            zone: None,
            unmatched: Unmatched::Publish,
            categories: Vec::new(),
            by_category: BTreeMap::new(),
            timeout: Duration::from_secs(5),
            concurrency: 2,
            retry_after: Duration::from_secs(30),
            off_delay: Duration::from_secs(30),
        }
    }
}

/// The settings for one picture: `[detector]`, then its category's override, then its
/// device's.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// Ask the detector at all.
    pub enabled: bool,
    /// Wanted labels, lower case; empty: all.
    pub labels: Vec<String>,
    /// Minimum confidence.
    pub min_confidence: f64,
    /// Zone.
    pub zone: Option<Zone>,
    /// What happens without a wanted object.
    pub unmatched: Unmatched,
}

impl DetectorConfig {
    /// Is a detector configured?
    pub fn is_on(&self) -> bool {
        self.url.is_some()
    }

    /// The settings for a picture of `category` from a device whose `[[devices]]` entry has
    /// `device` (its `detect` table).
    pub fn effective(&self, category: &Category, device: Option<&DetectOverride>) -> Effective {
        let listed =
            self.categories.is_empty() || self.categories.iter().any(|c| c == category.as_str());
        let mut e = Effective {
            enabled: self.is_on() && listed,
            labels: self.labels.clone(),
            min_confidence: self.min_confidence,
            zone: self.zone,
            unmatched: self.unmatched,
        };
        for o in [self.by_category.get(category.as_str()), device]
            .into_iter()
            .flatten()
        {
            if let Some(v) = o.enabled {
                e.enabled = self.is_on() && v;
            }
            if let Some(v) = &o.labels {
                e.labels.clone_from(v);
            }
            if let Some(v) = o.min_confidence {
                e.min_confidence = v;
            }
            if o.zone.is_some() {
                e.zone = o.zone;
            }
            if let Some(v) = o.unmatched {
                e.unmatched = v;
            }
        }
        for l in &mut e.labels {
            *l = l.to_lowercase();
        }
        e
    }

    /// Every problem of `[detector]`, as `detector.<key>`.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(u) = &self.url {
            match url::Url::parse(u) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                Ok(_) => problems.push(Problem::new(
                    "detector.url",
                    "must be an http:// or https:// URL",
                )),
                Err(e) => problems.push(Problem::new("detector.url", format!("not a URL: {e}"))),
            }
        }
        problems.extend(check_override("detector", &self.as_override()));
        if !(1..=32).contains(&self.concurrency) {
            problems.push(Problem::new("detector.concurrency", "must be 1 to 32"));
        }
        let s = Duration::from_secs;
        for (key, value, min, max) in [
            (
                "detector.timeout",
                self.timeout,
                Duration::from_millis(100),
                s(60),
            ),
            ("detector.retry_after", self.retry_after, s(1), s(3600)),
            (
                "detector.off_delay",
                self.off_delay,
                Duration::ZERO,
                s(86_400),
            ),
        ] {
            duration::check_range(&mut problems, key, value, min, max);
        }
        for (i, c) in self.categories.iter().enumerate() {
            problems.extend(check_category(&format!("detector.categories[{i}]"), c));
        }
        for (c, o) in &self.by_category {
            let at = format!("detector.category.{c}");
            problems.extend(check_category(&at, c));
            problems.extend(check_override(&at, o));
        }
        problems
    }

    fn as_override(&self) -> DetectOverride {
        DetectOverride {
            enabled: None,
            labels: Some(self.labels.clone()),
            min_confidence: Some(self.min_confidence),
            zone: self.zone,
            unmatched: Some(self.unmatched),
        }
    }
}

fn check_category(at: &str, name: &str) -> Option<Problem> {
    Category::from_name(name)
        .is_none()
        .then(|| Problem::new(at, format!("unknown category `{name}`")))
}

/// Problems of an override (or of the section's own values) at `at`.
pub fn check_override(at: &str, o: &DetectOverride) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(c) = o.min_confidence
        && !(0.0..=1.0).contains(&c)
    {
        problems.push(Problem::new(
            format!("{at}.min_confidence"),
            "must be 0.0 to 1.0",
        ));
    }
    if let Some(labels) = &o.labels {
        for (i, l) in labels.iter().enumerate() {
            if l.trim().is_empty() || l.chars().any(char::is_control) {
                problems.push(Problem::new(
                    format!("{at}.labels[{i}]"),
                    "must be a label name (person, car, ...)",
                ));
            }
        }
    }
    if let Some(z) = &o.zone {
        problems.extend(z.check(&format!("{at}.zone")));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, load_str};

    #[test]
    fn device_over_category_over_section() {
        let c = load_str(
            "[detector]\nurl = \"http://127.0.0.1:32168\"\nlabels = [\"Person\", \"car\"]\nmin_confidence = 0.6\ncategories = [\"snapshot\", \"lpr\"]\n\
             [detector.category.lpr]\nenabled = false\n[detector.category.snapshot]\nunmatched = \"suppress\"\n\
             [[devices]]\nftp_user = \"gate\"\ndetect = { labels = [\"person\"], zone = [0.0, 0.5, 1.0, 1.0] }\n",
        )
        .expect("valid");
        let d = &c.detector;
        let plain = d.effective(&Category::Snapshot, None);
        assert!(plain.enabled);
        assert_eq!(plain.labels, ["person", "car"], "lower case");
        assert_eq!(
            (plain.min_confidence, plain.unmatched),
            (0.6, Unmatched::Suppress)
        );
        assert!(
            !d.effective(&Category::Lpr, None).enabled,
            "category switched off"
        );
        assert!(
            !d.effective(&Category::Motion, None).enabled,
            "not in categories"
        );
        let device = c.devices[0].detect.as_ref();
        let gate = d.effective(&Category::Snapshot, device);
        assert_eq!(gate.labels, ["person"]);
        assert_eq!(gate.zone, Some(Zone::from([0.0, 0.5, 1.0, 1.0])));
        assert_eq!(
            gate.unmatched,
            Unmatched::Suppress,
            "inherited from the category"
        );
        // Without a URL nothing is enabled, whatever the overrides say.
        let off = DetectorConfig::default();
        assert!(!off.effective(&Category::Snapshot, device).enabled);
    }

    #[test]
    fn every_problem_with_its_key() {
        let Err(ConfigError::Invalid(p)) = load_str(
            "[detector]\nurl = \"ftp://x\"\nmin_confidence = 1.5\nconcurrency = 0\ntimeout = \"2m\"\ncategories = [\"bogus\"]\nzone = [0.5, 0.0, 0.4, 1.0]\n\
             [detector.category.nope]\nlabels = [\"\"]\n\
             [[devices]]\nmac = \"58:5b:69:00:00:01\"\ndetect = { zone = [0.0, 0.0, 2.0, 1.0] }\n",
        ) else {
            panic!("accepted")
        };
        let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "detector.url",
            "detector.min_confidence",
            "detector.zone",
            "detector.concurrency",
            "detector.timeout",
            "detector.categories[0]",
            "detector.category.nope",
            "detector.category.nope.labels[0]",
            "devices[0].detect.zone",
        ] {
            assert!(paths.contains(&want), "{want} missing in {paths:?}");
        }
    }
}
