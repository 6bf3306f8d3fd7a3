//! What a camera's alarm mail is about: category, object class and channel, from its words.
//!
//! Cameras say it in prose, not in fields. The forms seen from the common firmware families:
//!
//! * Dahua (and its OEMs: Amcrest, Lorex, many "IPC" boards) send a `Key: Value` body:
//!   `Alarm Event: Motion Detection`, `Alarm Input Channel: 1`, `Alarm Device Name: Porch`,
//!   with a subject of their own choosing (often the event and the device name).
//! * Hikvision (and OEMs) send `EVENT TYPE: Motion Detected` (also `Line Crossing`,
//!   `Intrusion`, `Region Entrance`, `Region Exiting`, `Video Tampering`, ...), `EVENT TIME`,
//!   `CAMERA NAME(NUM): Camera 01(D1)` and a subject such as `IPCamera: Motion Detected`.
//! * Reolink names the detection in the subject or body: `Motion detected`, `Person
//!   detected`, `Vehicle detected`, `Animal detected`.
//!
//! The texts looked at, in this order: the value of the body's event line (`Alarm Event:`,
//! `Event Type:`, `Alarm Type:`, `Event:`), the subject, then the values of the body's other
//! lines (the part after the first `:`, so that a label such as `Alarm Input Channel` is not
//! taken for an alarm input). The user's rules (plain case-insensitive substring) are tried
//! on all of them first, then the presets (whole words, case-insensitive). Nothing found:
//! `motion` (a camera mails on motion unless told otherwise).
//!
//! The channel comes from a body line whose label names a channel (`Alarm Input Channel:
//! 1`), a Hikvision camera number (`Camera 01(D1)`), else a `CH<n>` / `Channel <n>` token
//! in the subject, the body or an attachment's file name (`CH1_20251201132003.jpg`).

use crate::event::Category;

use super::config::Rule;

/// Longest `raw_type` kept, in characters.
const RAW_TYPE_CAP: usize = 128;
/// Highest channel number taken from text; anything above is a date or serial, not a channel.
const MAX_CHANNEL: u32 = 1024;

/// What the words of a mail say.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// The category.
    pub category: Category,
    /// Sub-type within the category (`tamper`, `video_loss`, `input`), when the words say.
    pub subtype: Option<&'static str>,
    /// Object class a smart detection named (`person`, `car`, `animal`).
    pub object: Option<&'static str>,
    /// The vendor's own words for the event: the event line's value, else the subject
    /// (capped at 128 characters); `mail` when the mail has neither.
    pub raw_type: String,
    /// Camera input (NVR / DVR channel), 1 to 1024.
    pub channel: Option<u32>,
}

/// The texts of one mail that are classified.
#[derive(Debug, Clone, Copy, Default)]
pub struct MailText<'a> {
    /// The decoded subject.
    pub subject: Option<&'a str>,
    /// The body text.
    pub body: Option<&'a str>,
    /// The image attachments' file names.
    pub file_names: &'a [String],
}

/// One preset: whole-word phrases and what they mean.
struct Preset {
    words: &'static [&'static str],
    category: Category,
    subtype: Option<&'static str>,
    object: Option<&'static str>,
}

const fn preset(
    words: &'static [&'static str],
    category: Category,
    subtype: Option<&'static str>,
    object: Option<&'static str>,
) -> Preset {
    Preset {
        words,
        category,
        subtype,
        object,
    }
}

/// The presets, most specific first ("line crossing" before "crossing", "person" after the
/// rule-based detections a person may trigger).
static PRESETS: &[Preset] = &[
    preset(
        &[
            "line crossing",
            "linecrossing",
            "line cross",
            "cross line",
            "crossline",
            "tripwire",
            "line detection",
            "virtual fence",
        ],
        Category::LineCrossing,
        None,
        None,
    ),
    preset(
        &[
            "intrusion",
            "region intrusion",
            "perimeter",
            "cross region",
            "crossregion",
            "field detection",
        ],
        Category::Intrusion,
        None,
        None,
    ),
    preset(
        &[
            "region entrance",
            "region entering",
            "area entry",
            "enter area",
            "entering",
        ],
        Category::ZoneEntry,
        None,
        None,
    ),
    preset(
        &[
            "region exiting",
            "region exit",
            "area exit",
            "leave area",
            "exiting",
        ],
        Category::ZoneExit,
        None,
        None,
    ),
    preset(&["loitering", "loiter"], Category::Loitering, None, None),
    preset(
        &["face", "face detected", "face detection", "faces"],
        Category::Face,
        None,
        None,
    ),
    preset(
        &["plate", "licence plate", "license plate", "anpr", "lpr"],
        Category::Lpr,
        None,
        None,
    ),
    preset(
        &[
            "unattended baggage",
            "unattended",
            "abandoned",
            "left object",
            "object left",
            "object removal",
            "taken away",
            "missing object",
        ],
        Category::Object,
        None,
        None,
    ),
    preset(&["fire", "smoke"], Category::Fire, None, None),
    preset(&["temperature"], Category::Temperature, None, None),
    preset(
        &["audio", "sound", "audio exception", "audio anomaly"],
        Category::Audio,
        None,
        None,
    ),
    preset(
        &["video loss", "videoloss", "signal loss"],
        Category::Alarm,
        Some("video_loss"),
        None,
    ),
    preset(
        &[
            "tamper",
            "tampering",
            "video tampering",
            "video blind",
            "blind",
            "scene change",
            "defocus",
            "unfocus",
            "masking",
        ],
        Category::Alarm,
        Some("tamper"),
        None,
    ),
    preset(
        &[
            "alarm input",
            "local alarm",
            "external alarm",
            "sensor alarm",
            "i/o alarm",
            "io alarm",
        ],
        Category::Alarm,
        Some("input"),
        None,
    ),
    preset(
        &["person", "people", "human", "pedestrian"],
        Category::Motion,
        None,
        Some("person"),
    ),
    preset(
        &["vehicle", "car", "motor vehicle"],
        Category::Motion,
        None,
        Some("car"),
    ),
    preset(
        &["animal", "pet", "dog", "cat"],
        Category::Motion,
        None,
        Some("animal"),
    ),
    preset(
        &["motion", "motion detected", "motion detection", "md"],
        Category::Motion,
        None,
        None,
    ),
];

/// Labels of the body line that names the event (lower case, without the colon).
const EVENT_LABELS: &[&str] = &[
    "alarm event",
    "event type",
    "alarm type",
    "event",
    "event name",
    "alarm event type",
];

/// True when `needle` occurs in `hay` (both lower case) with a non-alphanumeric character
/// (or the end) on both sides.
fn has_word(hay: &str, needle: &str) -> bool {
    let mut from = 0;
    while let Some(pos) = hay[from..].find(needle) {
        let start = from + pos;
        let end = start + needle.len();
        let before = hay[..start].chars().next_back();
        let after = hay[end..].chars().next();
        let edge = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
        if edge(before) && edge(after) {
            return true;
        }
        // Step past the first character of this match (a char boundary).
        from = start + hay[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// The `(label, value)` of a `Label: value` line, both trimmed; the label lower-cased.
fn field(line: &str) -> Option<(String, &str)> {
    let (label, value) = line.split_once(':')?;
    let label = label.trim();
    (!label.is_empty() && label.len() <= 64).then(|| (label.to_lowercase(), value.trim()))
}

/// What the user's rules say about `text` (first rule whose text it contains).
fn match_own(text: &str, own: &[Rule]) -> Option<Found> {
    let lower = text.to_lowercase();
    own.iter()
        .find(|r| lower.contains(&r.contains))
        .map(|r| (r.category.clone(), None, None))
}

/// What the presets say about `text` (first preset with one of its words in it).
fn match_preset(text: &str) -> Option<Found> {
    let lower = text.to_lowercase();
    PRESETS
        .iter()
        .find(|p| p.words.iter().any(|w| has_word(&lower, w)))
        .map(|p| (p.category.clone(), p.subtype, p.object))
}

/// A match: category, subtype, object class.
type Found = (Category, Option<&'static str>, Option<&'static str>);

fn cap(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Classify one mail (see the module docs for the order). Pure; never panics.
pub fn classify(mail: MailText<'_>, own: &[Rule], presets: bool) -> Classification {
    let body = mail.body.unwrap_or("");
    let event_line = body.lines().find_map(|l| {
        field(l).and_then(|(label, value)| {
            (EVENT_LABELS.contains(&label.as_str()) && !value.is_empty()).then_some(value)
        })
    });
    let subject = mail.subject.map(str::trim).filter(|s| !s.is_empty());
    let values: Vec<&str> = body
        .lines()
        .map(|l| field(l).map_or(l.trim(), |(_, v)| v))
        .filter(|v| !v.is_empty())
        .collect();

    let texts = || {
        event_line
            .into_iter()
            .chain(subject)
            .chain(values.iter().copied())
    };
    let found = texts()
        .find_map(|t| match_own(t, own))
        .or_else(|| presets.then(|| texts().find_map(match_preset)).flatten());
    let (category, subtype, object) = found.unwrap_or((Category::Motion, None, None));
    let raw_type = event_line
        .or(subject)
        .map_or_else(|| "mail".to_string(), |s| cap(s, RAW_TYPE_CAP));
    Classification {
        category,
        subtype,
        object,
        raw_type,
        channel: channel(body, subject, mail.file_names),
    }
}

/// The channel number (see the module docs).
fn channel(body: &str, subject: Option<&str>, file_names: &[String]) -> Option<u32> {
    let from_fields = body.lines().find_map(|l| {
        let (label, value) = field(l)?;
        if label.contains("channel") {
            first_number(value)
        } else if label.contains("camera") {
            hik_camera_number(value)
        } else {
            None
        }
    });
    from_fields
        .or_else(|| subject.and_then(channel_token))
        .or_else(|| channel_token(body))
        .or_else(|| file_names.iter().find_map(|f| channel_token(f)))
}

fn in_range(n: u32) -> Option<u32> {
    (1..=MAX_CHANNEL).contains(&n).then_some(n)
}

/// The first run of ASCII digits in `s` as a channel number.
fn first_number(s: &str) -> Option<u32> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let digits: String = s[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .take(6)
        .collect();
    digits.parse().ok().and_then(in_range)
}

/// Hikvision's `Camera 01(D1)` / `(A2)`: the number in the trailing parentheses.
fn hik_camera_number(value: &str) -> Option<u32> {
    let open = value.rfind('(')?;
    let inner = value[open + 1..].strip_suffix(')')?;
    let rest = inner.strip_prefix(['D', 'd', 'A', 'a'])?;
    (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) && rest.len() <= 6)
        .then(|| rest.parse().ok())
        .flatten()
        .and_then(in_range)
}

/// A `CH1`, `ch-02`, `Channel 3`, `CH 4` token at a word start (not `CHANGE1`).
fn channel_token(text: &str) -> Option<u32> {
    let lower = text.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    for (i, _) in lower.match_indices("ch") {
        if i > 0 && bytes[i - 1].is_ascii_alphanumeric() {
            continue;
        }
        let mut j = i + 2;
        if lower[j..].starts_with("annel") {
            j += 5;
        }
        // Up to three separators: "CH 1", "Channel: 2", "ch_3", "CH-04", "ch.5", "ch#6".
        let mut seps = 0;
        while j < bytes.len()
            && seps < 3
            && matches!(bytes[j], b' ' | b'_' | b'-' | b':' | b'.' | b'#')
        {
            j += 1;
            seps += 1;
        }
        let end = bytes[j..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .map_or(bytes.len(), |p| j + p);
        if end > j
            && end - j <= 4
            && let Some(n) = lower[j..end].parse().ok().and_then(in_range)
        {
            return Some(n);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text<'a>(subject: Option<&'a str>, body: Option<&'a str>) -> MailText<'a> {
        MailText {
            subject,
            body,
            file_names: &[],
        }
    }

    #[test]
    fn dahua_body_motion_with_channel() {
        let body = "Alarm Event: Motion Detection\r\nAlarm Input Channel: 1\r\n\
                    Alarm Start Time(D/M/Y H:M:S): 01/12/2025 13:20:03\r\nAlarm Device Name: Porch\r\n";
        let c = classify(
            text(Some("Motion Detection alarm · Porch · CH1"), Some(body)),
            &[],
            true,
        );
        assert_eq!(c.category, Category::Motion);
        assert_eq!(c.channel, Some(1));
        assert_eq!(c.raw_type, "Motion Detection");
        assert_eq!(c.object, None);
    }

    #[test]
    fn an_input_channel_label_is_not_an_alarm_input() {
        // The label says "Alarm Input"; only the value counts.
        let c = classify(text(None, Some("Alarm Input Channel: 3\n")), &[], true);
        assert_eq!(c.category, Category::Motion);
        assert_eq!(c.channel, Some(3));
        assert_eq!(c.raw_type, "mail");
        let c = classify(text(None, Some("Alarm Event: Alarm Input\n")), &[], true);
        assert_eq!((c.category, c.subtype), (Category::Alarm, Some("input")));
    }

    #[test]
    fn hikvision_event_types_and_camera_number() {
        for (event, want, subtype) in [
            ("Motion Detected", Category::Motion, None),
            ("Line Crossing", Category::LineCrossing, None),
            ("Intrusion", Category::Intrusion, None),
            ("Region Entrance", Category::ZoneEntry, None),
            ("Region Exiting", Category::ZoneExit, None),
            ("Video Tampering", Category::Alarm, Some("tamper")),
            ("Video Loss", Category::Alarm, Some("video_loss")),
            ("Face Detection", Category::Face, None),
            ("Unattended Baggage", Category::Object, None),
        ] {
            let body = format!(
                "This is an automatically generated e-mail from your DVR.\n\n\
                 EVENT TYPE:    {event}\nEVENT TIME:    2025-12-01,13:20:03\n\
                 DVR NAME:      Embedded Net DVR\nCAMERA NAME(NUM):   Garage(D7)\n"
            );
            let c = classify(
                text(Some("Embedded Net DVR: alarm"), Some(&body)),
                &[],
                true,
            );
            assert_eq!((c.category.clone(), c.subtype), (want, subtype), "{event}");
            assert_eq!(c.channel, Some(7), "{event}");
            assert_eq!(c.raw_type, event);
        }
    }

    #[test]
    fn reolink_subjects_name_the_object() {
        for (subject, object) in [
            ("Person detected on Front Door", Some("person")),
            ("Vehicle Detected", Some("car")),
            ("Animal detected", Some("animal")),
            ("Motion detected", None),
        ] {
            let c = classify(text(Some(subject), None), &[], true);
            assert_eq!(c.category, Category::Motion, "{subject}");
            assert_eq!(c.object, object, "{subject}");
            assert_eq!(c.raw_type, subject);
        }
    }

    #[test]
    fn own_rules_come_first_and_presets_can_be_off() {
        let own = [Rule {
            contains: "doorbell".into(),
            category: Category::Other("doorbell".into()),
        }];
        let c = classify(text(Some("Motion: DOORBELL pressed"), None), &own, true);
        assert_eq!(c.category, Category::Other("doorbell".into()));
        // An own rule on the subject wins over a preset on the event line.
        let c = classify(
            text(Some("doorbell"), Some("Alarm Event: Motion Detection\n")),
            &own,
            true,
        );
        assert_eq!(c.category, Category::Other("doorbell".into()));
        let c = classify(text(Some("Line crossing"), None), &[], false);
        assert_eq!(c.category, Category::Motion);
    }

    #[test]
    fn words_not_parts_of_words() {
        assert!(has_word("a face here", "face"));
        assert!(!has_word("interface", "face"));
        assert!(!has_word("surfaces", "face"));
        assert!(has_word("face", "face"));
        assert!(!has_word("ééface,", "face"));
        let c = classify(text(Some("Network interface restored"), None), &[], true);
        assert_eq!(c.category, Category::Motion);
    }

    #[test]
    fn channel_tokens() {
        assert_eq!(channel_token("Motion CH1"), Some(1));
        assert_eq!(channel_token("ch-02 alarm"), Some(2));
        assert_eq!(channel_token("Channel 12"), Some(12));
        assert_eq!(channel_token("CH1_20251201132003.jpg"), Some(1));
        assert_eq!(channel_token("CHANGE1"), None);
        assert_eq!(channel_token("each1"), None);
        assert_eq!(channel_token("CH0"), None);
        assert_eq!(channel_token("CH20251201"), None);
        let names = ["CH3_x.jpg".to_string()];
        let c = classify(
            MailText {
                subject: Some("alarm"),
                body: None,
                file_names: &names,
            },
            &[],
            true,
        );
        assert_eq!(c.channel, Some(3));
    }

    #[test]
    fn the_raw_type_is_capped() {
        let long = "x".repeat(1000);
        let c = classify(text(Some(&long), None), &[], true);
        assert_eq!(c.raw_type.chars().count(), RAW_TYPE_CAP);
    }

    proptest! {
        /// Whatever the text, classification returns (never panics) a channel in range and
        /// a raw type within its cap.
        #[test]
        fn never_panics(subject in ".{0,200}", body in "(.{0,80}\n){0,10}", name in ".{0,40}") {
            let names = [name];
            let c = classify(MailText { subject: Some(&subject), body: Some(&body), file_names: &names }, &[], true);
            prop_assert!(c.channel.is_none_or(|n| (1..=MAX_CHANNEL).contains(&n)));
            prop_assert!(c.raw_type.chars().count() <= RAW_TYPE_CAP);
        }
    }
}
