//! File name / folder rules (pure): which event category an uploaded picture stands for.
//!
//! Cameras say what triggered an upload only through the file's name or folder. A rule is a
//! piece of text found case-insensitively in the file name, the folder path or either, not
//! inside a longer word (the characters around it are not ASCII letters); the first rule that
//! matches gives the category. No rule: the configured default (`motion`).
//!
//! The built-in rules ([`default_rules`]) cover the names these vendors write:
//! - Dahua / Amcrest: the record-type letter in brackets after the time,
//!   `14/06/26[M][0@0][0].jpg` (`[M]` motion detection, `[A]` alarm input, `[R]` regular /
//!   scheduled; `dchesterton/amcrest2mqtt` #6, Dahua "Storage → FTP" naming).
//! - Hikvision: the event name at the end of the picture name,
//!   `192.168.1.64_01_20251201132003123_LINE_CROSSING_DETECTION.jpg`, and the ISAPI event
//!   types when a custom name uses them (`VMD`, `linedetection`, `fielddetection`,
//!   `regionEntrance`, `regionExiting`, `loitering`, `facedetection`, `scenechangedetection`,
//!   `shelteralarm`, `audioexception`, `TIMING` for scheduled captures).
//! - TVT / Viewtron / GeoVision-style folders or prefixes: `MOTION`, `TRIPWIRE`, `PERIMETER`,
//!   `AOIENTRY`, `AOILEAVE`, `OSC`, `AVD`, `VFD`, `VEHICE`, `SENSOR`.
//! - Reolink and others with AI detection words in a custom name: `person`, `vehicle`,
//!   `animal`, `pet`, `face`, `motion`.

use serde::Deserialize;

use crate::event::Category;

/// Where a rule looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    /// The file name.
    Name,
    /// The folder path.
    Path,
    /// Either.
    #[default]
    Any,
}

/// One rule: `pattern` (stored lower-case) in `field` gives `category`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The text to find, lower-case.
    pub pattern: String,
    /// Where to look.
    pub field: Field,
    /// The category it gives.
    pub category: Category,
}

impl Rule {
    /// A rule; `pattern` is trimmed and lower-cased.
    pub fn new(pattern: &str, field: Field, category: Category) -> Rule {
        Rule {
            pattern: pattern.trim().to_lowercase(),
            field,
            category,
        }
    }

    /// Whether the rule matches this file.
    pub fn matches(&self, dir: &str, name: &str) -> bool {
        let (n, p) = match self.field {
            Field::Name => (true, false),
            Field::Path => (false, true),
            Field::Any => (true, true),
        };
        (n && contains_word(name, &self.pattern)) || (p && contains_word(dir, &self.pattern))
    }
}

/// The first rule matching the file in folder `dir` named `name`, if any.
pub fn classify<'r>(rules: &'r [Rule], dir: &str, name: &str) -> Option<&'r Rule> {
    rules.iter().find(|r| r.matches(dir, name))
}

/// `needle` (lower-case, not empty) occurs in `hay`, ignoring case, with no ASCII letter
/// right before or after it (so `face` does not match `surface`, `vmd` matches `VMD_01`).
pub fn contains_word(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let hay = hay.to_lowercase();
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    let letter = |i: usize| h.get(i).is_some_and(|b| b.is_ascii_alphabetic());
    // Letters are checked only where the needle itself starts or ends with one: `[m]` is
    // found in `26[M][0@0]` whatever stands around its brackets.
    let starts_alpha = n[0].is_ascii_alphabetic();
    let ends_alpha = n[n.len() - 1].is_ascii_alphabetic();
    let mut from = 0;
    while let Some(pos) = hay[from..].find(needle) {
        let at = from + pos;
        let end = at + n.len();
        let before_ok = !starts_alpha || at == 0 || !letter(at - 1);
        let after_ok = !ends_alpha || !letter(end);
        if before_ok && after_ok {
            return true;
        }
        from = at + hay[at..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// The built-in rules, most specific first (see the module documentation for their sources).
pub fn default_rules() -> Vec<Rule> {
    use Category::*;
    let table: &[(&str, Field, Category)] = &[
        // Dahua / Amcrest record-type letters.
        ("[m]", Field::Name, Motion),
        ("[a]", Field::Name, Alarm),
        ("[r]", Field::Name, Snapshot),
        // Hikvision event names and ISAPI event types.
        ("line_crossing_detection", Field::Any, LineCrossing),
        ("line_crossing", Field::Any, LineCrossing),
        ("linedetection", Field::Any, LineCrossing),
        ("linecrossing", Field::Any, LineCrossing),
        ("tripwire", Field::Any, LineCrossing),
        ("field_detection", Field::Any, Intrusion),
        ("fielddetection", Field::Any, Intrusion),
        ("intrusion", Field::Any, Intrusion),
        ("perimeter", Field::Any, Intrusion),
        ("region_entrance", Field::Any, ZoneEntry),
        ("regionentrance", Field::Any, ZoneEntry),
        ("aoientry", Field::Any, ZoneEntry),
        ("region_exiting", Field::Any, ZoneExit),
        ("regionexiting", Field::Any, ZoneExit),
        ("aoileave", Field::Any, ZoneExit),
        ("loitering_detection", Field::Any, Loitering),
        ("loitering", Field::Any, Loitering),
        ("face_detection", Field::Any, Face),
        ("facedetection", Field::Any, Face),
        ("vfd", Field::Any, Face),
        ("face", Field::Any, Face),
        ("vehice", Field::Any, Lpr),
        ("anpr", Field::Any, Lpr),
        ("plate", Field::Any, Lpr),
        ("unattended_baggage", Field::Any, Object),
        ("unattendedbaggage", Field::Any, Object),
        ("object_removal", Field::Any, Object),
        ("attendedbaggage", Field::Any, Object),
        ("osc", Field::Any, Object),
        ("scene_change_detection", Field::Any, Alarm),
        ("scenechangedetection", Field::Any, Alarm),
        ("shelteralarm", Field::Any, Alarm),
        ("video_tampering", Field::Any, Alarm),
        ("tamper", Field::Any, Alarm),
        ("avd", Field::Any, Alarm),
        ("audio_exception", Field::Any, Audio),
        ("audioexception", Field::Any, Audio),
        ("alarm_input", Field::Any, Alarm),
        ("sensor", Field::Any, Alarm),
        ("pir", Field::Any, Motion),
        // AI detection words (Reolink and custom names).
        ("person", Field::Any, Other("person".into())),
        ("people", Field::Any, Other("person".into())),
        ("human", Field::Any, Other("person".into())),
        ("vehicle", Field::Any, Other("vehicle".into())),
        ("animal", Field::Any, Other("animal".into())),
        ("pet", Field::Any, Other("animal".into())),
        // Scheduled captures.
        ("timing", Field::Any, Snapshot),
        ("schedule", Field::Any, Snapshot),
        ("snapshot", Field::Any, Snapshot),
        // Motion last: the most generic word.
        ("motion_detection", Field::Any, Motion),
        ("motiondetection", Field::Any, Motion),
        ("motion", Field::Any, Motion),
        ("vmd", Field::Any, Motion),
    ];
    table
        .iter()
        .map(|(p, f, c)| Rule::new(p, *f, c.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cat(dir: &str, name: &str) -> Option<Category> {
        classify(&default_rules(), dir, name).map(|r| r.category.clone())
    }

    #[test]
    fn dahua_names() {
        assert_eq!(
            cat("/2025-12-01/001/jpg/13/11", "07[M][0@0][0].jpg"),
            Some(Category::Motion)
        );
        assert_eq!(
            cat("/mnt/sd/2021-05-08/001/jpg/14/06", "26[A][0@0][0].jpg"),
            Some(Category::Alarm)
        );
        assert_eq!(
            cat("/2021-05-08/001/jpg/14/06", "26[R][0@0][0].jpg"),
            Some(Category::Snapshot)
        );
    }

    #[test]
    fn hikvision_names() {
        let c = |n: &str| cat("/", n);
        assert_eq!(
            c("192.168.1.64_01_20251201132003123_LINE_CROSSING_DETECTION.jpg"),
            Some(Category::LineCrossing)
        );
        assert_eq!(
            c("192.168.1.64_01_20251201132003123_FIELD_DETECTION.jpg"),
            Some(Category::Intrusion)
        );
        assert_eq!(
            c("192.168.1.64_01_20251201132003123_MOTION_DETECTION.jpg"),
            Some(Category::Motion)
        );
        assert_eq!(
            c("192.168.1.64_01_20251201132003123_REGION_ENTRANCE.jpg"),
            Some(Category::ZoneEntry)
        );
        assert_eq!(
            c("192.168.1.64_01_20251201132003123_TIMING.jpg"),
            Some(Category::Snapshot)
        );
        assert_eq!(c("ch01_VMD_20251201.jpg"), Some(Category::Motion));
        assert_eq!(c("linedetection-1.jpg"), Some(Category::LineCrossing));
    }

    #[test]
    fn folders_and_words() {
        assert_eq!(
            cat("/cam1/TRIPWIRE/2025-12-01/14", "x.jpg"),
            Some(Category::LineCrossing)
        );
        assert_eq!(
            cat("/", "Porch_Person_20251201132003.jpg"),
            Some(Category::Other("person".into()))
        );
        assert_eq!(cat("/", "Porch_01_20251201132003.jpg"), None);
        // Not inside a longer word.
        assert_eq!(cat("/surface", "carpet.jpg"), None);
        assert_eq!(cat("/", "promotion.jpg"), None);
    }

    #[test]
    fn rule_order_and_fields() {
        let rules = vec![
            Rule::new("Back", Field::Path, Category::Intrusion),
            Rule::new("motion", Field::Name, Category::Alarm),
        ];
        assert_eq!(
            classify(&rules, "/back/x", "a.jpg").map(|r| &r.category),
            Some(&Category::Intrusion)
        );
        assert_eq!(classify(&rules, "/x", "back.jpg"), None);
        assert_eq!(
            classify(&rules, "/motion", "MOTION.jpg").map(|r| &r.category),
            Some(&Category::Alarm)
        );
        assert_eq!(classify(&rules, "/motion", "a.jpg"), None);
    }

    #[test]
    fn words() {
        assert!(contains_word("26[M][0@0]", "[m]"));
        assert!(contains_word("VMD01", "vmd"));
        assert!(!contains_word("xvmd", "vmd"));
        assert!(!contains_word("abc", ""));
        assert!(contains_word("ÄÖ motion", "motion"));
    }

    proptest! {
        /// Never panics, whatever the text (multi-byte, case changes that alter lengths), and
        /// a word surrounded by separators is always found.
        #[test]
        fn classify_never_panics(dir in "\\PC{0,40}", name in "\\PC{0,40}") {
            let rules = default_rules();
            let _ = classify(&rules, &dir, &name);
            let tagged = format!("{name}_motion_.jpg");
            prop_assert!(contains_word(&tagged, "motion"));
        }
    }
}
