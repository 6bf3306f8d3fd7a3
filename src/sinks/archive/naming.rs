//! Picture path templates ([`Naming`]) and the sanitising every device-provided string goes
//! through before it becomes part of a path ([`sanitize_component`]). Pure: no I/O.

use std::borrow::Cow;

use jiff::civil::DateTime;

/// Longest result of [`sanitize_component`], bytes.
pub const MAX_COMPONENT: usize = 64;
/// Longest template accepted by [`Naming::parse`], bytes.
pub const MAX_TEMPLATE: usize = 512;
/// Longest rendered path component a template may produce, bytes: 255 (the usual file
/// system limit) less room for a collision suffix (`-99999`).
const MAX_RENDERED_COMPONENT: usize = 240;

/// `s` as one safe path component: ASCII letters, digits, `_`, `.` and `-` are kept; any
/// other character becomes `_`, a run of them a single `_`; a leading `.` becomes `_` (no
/// hidden names, never `.` or `..`); at most [`MAX_COMPONENT`] bytes; an empty result is `_`.
/// Idempotent.
pub fn sanitize_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_COMPONENT));
    for c in s.chars() {
        if out.len() >= MAX_COMPONENT {
            break;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' || (c == '.' && !out.is_empty()) {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// True when `name` is a component [`sanitize_component`] could have produced or a template
/// literal may hold: non-empty, not hidden (so not `.` or `..`), no `/`, `\` or control
/// characters, at most 255 bytes.
pub fn is_safe_component(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 255
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// True when `rel` is a plain relative path of [`is_safe_component`]s joined by `/` (no
/// leading `/`, no empty, hidden, `.` or `..` components).
pub fn is_safe_relative(rel: &str) -> bool {
    !rel.is_empty() && rel.split('/').all(is_safe_component)
}

/// One placeholder of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Device,
    Category,
    Role,
    Event,
    Ext,
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Milli,
}

const FIELDS: &[(&str, Field)] = &[
    ("device", Field::Device),
    ("category", Field::Category),
    ("role", Field::Role),
    ("event", Field::Event),
    ("ext", Field::Ext),
    ("YYYY", Field::Year),
    ("MM", Field::Month),
    ("DD", Field::Day),
    ("hh", Field::Hour),
    ("mm", Field::Minute),
    ("ss", Field::Second),
    ("mmm", Field::Milli),
];

impl Field {
    /// The longest value the field renders to, bytes.
    fn max_len(self) -> usize {
        match self {
            Field::Device | Field::Category | Field::Event => MAX_COMPONENT,
            Field::Role => "overview".len(),
            Field::Ext => 4,
            Field::Year => 5,
            Field::Milli => 3,
            _ => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(Field),
}

/// The values a picture's path is made of. Strings are raw (device-provided ones included):
/// [`Naming::render`] sanitises them.
#[derive(Debug, Clone)]
pub struct Values<'a> {
    /// Device id (`{device}`).
    pub device: &'a str,
    /// Category name (`{category}`).
    pub category: &'a str,
    /// Image role name, `overview` or `target` (`{role}`).
    pub role: &'a str,
    /// The vendor's event type (`{event}`).
    pub event: &'a str,
    /// File extension without the dot (`{ext}`), see [`extension`].
    pub ext: &'a str,
    /// The event time in the archive's time zone (`{YYYY}` … `{mmm}`).
    pub time: DateTime,
}

/// A parsed picture path template: `/`-separated components of literal text and
/// placeholders, relative to the archive's directory.
///
/// Placeholders: `{device}` (device id), `{category}`, `{role}` (`overview` or `target`),
/// `{event}` (the vendor's event type), `{ext}` (`jpg`, or from the content type, see
/// [`extension`]), and the event time in the archive's time zone: `{YYYY}` year, `{MM}` month,
/// `{DD}` day, `{hh}` hour (00-23), `{mm}` minute, `{ss}` second, `{mmm}` milliseconds
/// (zero-padded). String values are [`sanitize_component`]ed.
///
/// The template must be relative, with no empty, `.`, `..` or hidden components, no `\` or
/// control characters, and must end in a file extension (`.jpg`, `.{ext}`, …); a component
/// may render to at most 240 bytes. It need not make names unique: a taken name gets `-1`,
/// `-2`, … before its extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    /// Components, each a list of parts.
    components: Vec<Vec<Part>>,
}

impl Naming {
    /// Parse `template`; `Err` is a message for `archive.naming` saying what is wrong.
    pub fn parse(template: &str) -> Result<Naming, String> {
        if template.is_empty() {
            return Err("must not be empty".into());
        }
        if template.len() > MAX_TEMPLATE {
            return Err(format!("must be at most {MAX_TEMPLATE} bytes"));
        }
        if template.starts_with('/') {
            return Err("must be a relative path (no leading /)".into());
        }
        if template.chars().any(|c| c == '\\' || c.is_control()) {
            return Err("must not contain \\ or control characters".into());
        }
        let mut components = Vec::new();
        for text in template.split('/') {
            if text.is_empty() {
                return Err("has an empty path component (// or a trailing /)".into());
            }
            if text == "." || text == ".." {
                return Err(format!("must not have a {text:?} component"));
            }
            if text.starts_with('.') {
                return Err(format!(
                    "component {text:?} starts with \".\" (hidden names are not allowed)"
                ));
            }
            let parts = parse_component(text)?;
            let longest: usize = parts
                .iter()
                .map(|p| match p {
                    Part::Literal(s) => s.len(),
                    Part::Field(f) => f.max_len(),
                })
                .sum();
            if longest > MAX_RENDERED_COMPONENT {
                return Err(format!(
                    "component {text:?} can grow to {longest} bytes; at most {MAX_RENDERED_COMPONENT}"
                ));
            }
            components.push(parts);
        }
        let last = components.last().map(Vec::as_slice).unwrap_or_default();
        if !ends_in_extension(last) {
            return Err("the file name must end in an extension (.jpg, .{ext}, …)".into());
        }
        Ok(Naming { components })
    }

    /// The relative path (`/`-separated) of a picture with these values. Always
    /// [`is_safe_relative`]. A file name that would take the place of the archive's own files
    /// (`events.jsonl`, or `latest*.jpg` directly in a device folder) gets a `_` in front.
    pub fn render(&self, v: &Values<'_>) -> String {
        let mut out = String::new();
        for (i, parts) in self.components.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            let start = out.len();
            for part in parts {
                match part {
                    Part::Literal(s) => out.push_str(s),
                    Part::Field(f) => out.push_str(&value(*f, v)),
                }
            }
            let name = &out[start..];
            let last = i + 1 == self.components.len();
            if last && (name == super::store::LOG_NAME || (i == 1 && is_latest_name(name))) {
                out.insert(start, '_');
            }
        }
        out
    }
}

/// Split one template component into literals and placeholders.
fn parse_component(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                parts.push(Part::Literal(rest.to_owned()));
                break;
            }
            Some(i) if rest[i..].starts_with('}') => {
                return Err("has a } without {".into());
            }
            Some(i) => {
                if i > 0 {
                    parts.push(Part::Literal(rest[..i].to_owned()));
                }
                let after = &rest[i + 1..];
                let Some(end) = after.find('}') else {
                    return Err("has a { without }".into());
                };
                let name = &after[..end];
                let Some(&(_, field)) = FIELDS.iter().find(|(n, _)| *n == name) else {
                    let known: Vec<String> =
                        FIELDS.iter().map(|(n, _)| format!("{{{n}}}")).collect();
                    return Err(format!(
                        "unknown placeholder {{{name}}}; known: {}",
                        known.join(" ")
                    ));
                };
                parts.push(Part::Field(field));
                rest = &after[end + 1..];
            }
        }
    }
    Ok(parts)
}

/// Does the file name end in `.{ext}` or a literal `.` plus 1 to 5 letters or digits?
fn ends_in_extension(parts: &[Part]) -> bool {
    match parts {
        [.., Part::Literal(dot), Part::Field(Field::Ext)] => dot.ends_with('.'),
        [.., Part::Literal(s)] => s.rsplit_once('.').is_some_and(|(_, ext)| {
            (1..=5).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric())
        }),
        _ => false,
    }
}

/// The rendered value of one placeholder.
fn value<'a>(f: Field, v: &Values<'a>) -> Cow<'a, str> {
    let t = &v.time;
    match f {
        Field::Device => sanitize_component(v.device).into(),
        Field::Category => sanitize_component(v.category).into(),
        Field::Role => sanitize_component(v.role).into(),
        Field::Event => sanitize_component(v.event).into(),
        Field::Ext => sanitize_component(v.ext).into(),
        Field::Year => format!("{:04}", t.year()).into(),
        Field::Month => format!("{:02}", t.month()).into(),
        Field::Day => format!("{:02}", t.day()).into(),
        Field::Hour => format!("{:02}", t.hour()).into(),
        Field::Minute => format!("{:02}", t.minute()).into(),
        Field::Second => format!("{:02}", t.second()).into(),
        Field::Milli => format!("{:03}", t.millisecond()).into(),
    }
}

/// `latest.jpg` or `latest_<anything>.jpg`: the names [`super::Archive`] keeps replacing in a
/// device folder and never prunes.
pub fn is_latest_name(name: &str) -> bool {
    name == "latest.jpg" || (name.starts_with("latest_") && name.ends_with(".jpg"))
}

/// The file extension for a MIME type: `png`, `gif`, `webp`, `bmp` for those, `jpg` for
/// everything else (cameras send JPEG; sources check it).
pub fn extension(content_type: &str) -> &'static str {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/bmp" => "bmp",
        _ => "jpg",
    }
}

/// `rel` with `-<n>` inserted before the file name's extension (`a/b.jpg` → `a/b-2.jpg`);
/// `rel` itself for `n == 0`.
pub fn with_suffix(rel: &str, n: u32) -> String {
    if n == 0 {
        return rel.to_owned();
    }
    let name_start = rel.rfind('/').map_or(0, |i| i + 1);
    match rel[name_start..].rfind('.') {
        Some(dot) if dot > 0 => {
            let dot = name_start + dot;
            format!("{}-{n}{}", &rel[..dot], &rel[dot..])
        }
        _ => format!("{rel}-{n}"),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::config::DEFAULT_NAMING;
    use super::*;

    fn values(time: DateTime) -> Values<'static> {
        Values {
            device: "porchcam",
            category: "lpr",
            role: "overview",
            event: "VEHICE",
            ext: "jpg",
            time,
        }
    }

    #[test]
    fn default_template() {
        let n = Naming::parse(DEFAULT_NAMING).unwrap();
        let t = jiff::civil::date(2026, 11, 30).at(4, 18, 23, 123_456_789);
        assert_eq!(
            n.render(&values(t)),
            "porchcam/2026-11-30/041823.123_lpr_overview.jpg"
        );
        let t = jiff::civil::date(2027, 1, 2).at(23, 5, 9, 7_000_000);
        let mut v = values(t);
        v.role = "target";
        v.category = "line_crossing";
        assert_eq!(
            n.render(&v),
            "porchcam/2027-01-02/230509.007_line_crossing_target.jpg"
        );
    }

    #[test]
    fn dvr_template_and_every_placeholder() {
        let t = jiff::civil::date(2026, 3, 4).at(5, 6, 7, 89_000_000);
        let dvr = Naming::parse("{YYYY}{MM}{DD}{hh}{mm}{ss}{device}.jpg").unwrap();
        assert_eq!(dvr.render(&values(t)), "20260304050607porchcam.jpg");
        let all = Naming::parse(
            "{device}/{category}/{event}_{role}_{YYYY}{MM}{DD}T{hh}{mm}{ss}{mmm}.{ext}",
        )
        .unwrap();
        let mut v = values(t);
        v.ext = extension("image/png");
        assert_eq!(
            all.render(&v),
            "porchcam/lpr/VEHICE_overview_20260304T050607089.png"
        );
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("/abs/{device}.jpg", "relative"),
            ("{device}/../x.jpg", "\"..\""),
            ("./x.jpg", "\".\""),
            ("{device}//x.jpg", "empty path component"),
            ("{device}/", "empty path component"),
            (".hidden/{device}.jpg", "hidden"),
            ("{device}/.x.jpg", "hidden"),
            ("{device}/{nope}.jpg", "unknown placeholder {nope}"),
            ("{Device}.jpg", "unknown placeholder {Device}"),
            ("{device.jpg", "{ without }"),
            ("device}.jpg", "} without {"),
            ("a\\b.jpg", "\\"),
            ("a\nb.jpg", "control"),
            ("{device}", "extension"),
            ("{device}/{YYYY}-{MM}-{DD}", "extension"),
            ("{device}.{YYYY}", "extension"),
            ("{device}{event}{category}{device}.jpg", "at most 240"),
        ];
        for (template, want) in cases {
            let e = Naming::parse(template).unwrap_err();
            assert!(e.contains(want), "{template:?}: {e}");
        }
        let long = format!("{}.jpg", "a/".repeat(300));
        assert!(Naming::parse(&long).unwrap_err().contains("at most 512"));
        // No time or distinguishing field is fine: collisions get a suffix.
        assert!(Naming::parse("snapshot.jpg").is_ok());
        assert!(Naming::parse("{device}/{YYYY}.{ext}").is_ok());
    }

    #[test]
    fn hostile_values_stay_one_component_each() {
        let n = Naming::parse("{device}/{category}/{event}.jpg").unwrap();
        let t = jiff::civil::date(2026, 1, 1).at(0, 0, 0, 0);
        for hostile in [
            "../../etc/passwd",
            "/",
            "..",
            ".",
            "",
            "a\0b",
            "a\nb",
            "x/../y",
            "é𝄞",
            &"z".repeat(500),
        ] {
            let v = Values {
                device: hostile,
                category: hostile,
                event: hostile,
                ..values(t)
            };
            let rel = n.render(&v);
            assert!(is_safe_relative(&rel), "{hostile:?} → {rel:?}");
            assert_eq!(rel.split('/').count(), 3, "{hostile:?} → {rel:?}");
        }
    }

    #[test]
    fn reserved_names_are_moved_aside() {
        let t = jiff::civil::date(2026, 1, 1).at(0, 0, 0, 0);
        let n = Naming::parse("{device}/{category}.jpg").unwrap();
        let mut v = values(t);
        v.category = "latest";
        assert_eq!(n.render(&v), "porchcam/_latest.jpg");
        v.category = "latest_lpr";
        assert_eq!(n.render(&v), "porchcam/_latest_lpr.jpg");
        // Deeper or at the top, latest.jpg is just a name.
        let top = Naming::parse("{category}.jpg").unwrap();
        v.category = "latest";
        assert_eq!(top.render(&v), "latest.jpg");
        let log = Naming::parse("{device}/{YYYY}-{MM}-{DD}/events.jsonl").unwrap();
        assert_eq!(log.render(&v), "porchcam/2026-01-01/_events.jsonl");
    }

    #[test]
    fn sanitize_examples() {
        assert_eq!(sanitize_component("porchcam"), "porchcam");
        assert_eq!(sanitize_component("58_5b_69_40_f4_0d"), "58_5b_69_40_f4_0d");
        assert_eq!(sanitize_component("Front Door (2)"), "Front_Door_2_");
        assert_eq!(sanitize_component("../../etc"), "_._.._etc");
        assert_eq!(sanitize_component(".."), "_.");
        assert_eq!(sanitize_component("."), "_");
        assert_eq!(sanitize_component(""), "_");
        assert_eq!(sanitize_component(".hidden"), "_hidden");
        assert_eq!(sanitize_component("a\0b\nc"), "a_b_c");
        assert_eq!(sanitize_component("Straße"), "Stra_e");
        assert_eq!(sanitize_component(&"x".repeat(100)).len(), MAX_COMPONENT);
    }

    #[test]
    fn suffixes_go_before_the_extension() {
        assert_eq!(with_suffix("a/b.jpg", 0), "a/b.jpg");
        assert_eq!(with_suffix("a/b.jpg", 1), "a/b-1.jpg");
        assert_eq!(with_suffix("a.d/b.c.jpg", 12), "a.d/b.c-12.jpg");
        assert_eq!(with_suffix("a.d/b", 2), "a.d/b-2");
    }

    #[test]
    fn extensions() {
        assert_eq!(extension("image/jpeg"), "jpg");
        assert_eq!(extension("image/PNG; charset=x"), "png");
        assert_eq!(extension("application/octet-stream"), "jpg");
        assert_eq!(extension(""), "jpg");
    }

    proptest! {
        #[test]
        fn sanitize_is_safe_and_idempotent(s in any::<String>()) {
            let once = sanitize_component(&s);
            prop_assert!(is_safe_component(&once), "{:?}", once);
            prop_assert!(once.len() <= MAX_COMPONENT);
            prop_assert!(once != "." && once != "..");
            prop_assert!(once.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)));
            prop_assert_eq!(sanitize_component(&once), once.clone());
        }

        #[test]
        fn sanitize_is_safe_for_path_like_input(s in "[./\\\\a_\\x00\n -]{0,80}") {
            let once = sanitize_component(&s);
            prop_assert!(is_safe_component(&once), "{:?}", once);
            prop_assert_eq!(sanitize_component(&once), once);
        }
    }
}
