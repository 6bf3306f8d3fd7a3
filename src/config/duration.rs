//! Durations in the configuration: a number of seconds (`30`, `0.5`) or a humantime string
//! (`"30s"`, `"1m 30s"`, `"500ms"`, `"2h"`), deserialised straight into
//! [`std::time::Duration`].
//!
//! Use with `#[serde(deserialize_with = "…")]`: [`seconds`], [`seconds_opt`] (for
//! `Option<Duration>` fields, together with `#[serde(default)]`) and [`days`] (a number means
//! days; `homeassistant.forget_after`). Strings are parsed by [`humantime::parse_duration`]
//! (units `ns`, `us`, `ms`, `s`/`sec`, `m`/`min`, `h`, `d`/`day`, `w`, `M` (30.44 days), `y`;
//! parts may be separated by spaces); a string holding a plain number counts like the number.
//!
//! Rejected when parsing, with the key's line: negative numbers, NaN and infinity, numbers too
//! large for a `Duration`, strings humantime does not understand, and any other type. Range
//! checks (minimum, maximum) are the components' `validate`, through [`check_range`], so
//! that every out-of-range value is reported, not just the first.
//!
//! (`humantime-serde` was not used: it accepts strings only, so old files with `30` or `0.5`
//! would be rejected.)

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{Error, Visitor};

use super::Problem;

/// Seconds per day, for [`days`].
const DAY: f64 = 86_400.0;

/// What a number means.
#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Days,
}

impl Unit {
    fn factor(self) -> f64 {
        match self {
            Unit::Seconds => 1.0,
            Unit::Days => DAY,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Days => "days",
        }
    }
}

struct DurationVisitor(Unit);

impl DurationVisitor {
    fn number<E: Error>(&self, n: f64) -> Result<Duration, E> {
        if n.is_nan() || n.is_infinite() {
            return Err(E::custom(format!(
                "a duration must be a finite number of {}",
                self.0.name()
            )));
        }
        if n < 0.0 {
            return Err(E::custom("a duration must not be negative"));
        }
        Duration::try_from_secs_f64(n * self.0.factor())
            .map_err(|_| E::custom("duration too large"))
    }
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a number of {} or a duration string such as \"30s\", \"1m 30s\" or \"500ms\"",
            self.0.name()
        )
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Duration, E> {
        match self.0 {
            Unit::Seconds => Ok(Duration::from_secs(v)),
            // Precision of f64 is plenty for days.
            Unit::Days => self.number(v as f64),
        }
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Duration, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom("a duration must not be negative")),
        }
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Duration, E> {
        self.number(v)
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Duration, E> {
        let text = v.trim();
        if let Ok(n) = text.parse::<f64>() {
            return self.number(n);
        }
        humantime::parse_duration(text).map_err(|e| {
            E::custom(format!(
                "`{v}` is not a duration ({e}); write a number of {} or a string such as \"30s\", \"1m 30s\" or \"500ms\"",
                self.0.name()
            ))
        })
    }
}

/// A number of seconds (integer or fraction) or a humantime string.
pub fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor(Unit::Seconds))
}

/// [`seconds`] for an `Option<Duration>` field (absent: `None`, with `#[serde(default)]`).
pub fn seconds_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    seconds(d).map(Some)
}

/// A number of days (integer or fraction) or a humantime string (`"36h"`, `"2w"`).
pub fn days<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor(Unit::Days))
}

/// A duration as a plain number of seconds for messages: `0.1`, `30`, `604800`.
pub fn secs_text(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", d.as_secs())
    } else {
        format!("{s}")
    }
}

/// Push a problem `must be between <min> and <max> seconds` for `path` when `value` is
/// outside `min..=max`.
pub fn check_range(
    problems: &mut Vec<Problem>,
    path: &str,
    value: Duration,
    min: Duration,
    max: Duration,
) {
    if value < min || value > max {
        problems.push(Problem::new(
            path,
            format!(
                "must be between {} and {} seconds",
                secs_text(min),
                secs_text(max)
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "seconds_opt")]
        s: Option<Duration>,
        #[serde(default, deserialize_with = "days")]
        d: Duration,
    }

    fn s(v: &str) -> Result<Option<Duration>, String> {
        toml::from_str::<T>(&format!("s = {v}"))
            .map(|t| t.s)
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn numbers_and_strings() {
        let ms = Duration::from_millis;
        assert_eq!(s("30"), Ok(Some(ms(30_000))));
        assert_eq!(s("30.5"), Ok(Some(ms(30_500))));
        assert_eq!(s("0"), Ok(Some(ms(0))));
        assert_eq!(s("\"30s\""), Ok(Some(ms(30_000))));
        assert_eq!(s("\"1m\""), Ok(Some(ms(60_000))));
        assert_eq!(s("\"1m 30s\""), Ok(Some(ms(90_000))));
        assert_eq!(s("\"500ms\""), Ok(Some(ms(500))));
        assert_eq!(s("\"2h\""), Ok(Some(ms(7_200_000))));
        assert_eq!(s("\"45\""), Ok(Some(ms(45_000))));
        assert_eq!(toml::from_str::<T>("").unwrap().s, None);
    }

    #[test]
    fn bad_values() {
        for bad in [
            "-1", "-0.5", "nan", "inf", "1e400", "1e300", "\"\"", "\"abc\"", "\"30x\"", "\"-5s\"",
            "true", "[1]",
        ] {
            assert!(s(bad).is_err(), "{bad} accepted: {:?}", s(bad));
        }
        let e = s("\"30 parsecs\"").unwrap_err();
        assert!(e.contains("30 parsecs") && e.contains("\"30s\""), "{e}");
        assert!(s("-1").unwrap_err().contains("negative"));
    }

    #[test]
    fn days_are_days() {
        let d = |v: &str| toml::from_str::<T>(&format!("d = {v}")).map(|t| t.d);
        assert_eq!(d("30").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(d("0.5").unwrap(), Duration::from_secs(43_200));
        assert_eq!(d("\"36h\"").unwrap(), Duration::from_secs(36 * 3600));
        assert!(d("-1").is_err());
    }

    #[test]
    fn range_messages() {
        let mut p = Vec::new();
        let sec = Duration::from_secs;
        check_range(&mut p, "a", sec(5), sec(1), sec(10));
        assert!(p.is_empty());
        check_range(
            &mut p,
            "a.b",
            Duration::from_millis(50),
            Duration::from_millis(100),
            sec(604_800),
        );
        assert_eq!(p[0].path, "a.b");
        assert_eq!(p[0].message, "must be between 0.1 and 604800 seconds");
    }
}
