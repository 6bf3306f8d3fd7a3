//! Event time (`protocol.md` §5.2): `currentTime` is a Unix epoch integer in seconds,
//! milliseconds or microseconds, told apart by magnitude.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::event::TimeSource;

/// 2000-01-01T00:00:00Z in microseconds: anything earlier is a broken clock.
pub(crate) const MIN_PLAUSIBLE_US: u128 = 946_684_800 * 1_000_000;
/// How far ahead of the receive time a device clock may be.
pub(crate) const MAX_FUTURE: Duration = Duration::from_secs(366 * 24 * 3600);

/// The resolved time of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventTime {
    pub time: SystemTime,
    pub source: TimeSource,
    pub raw: Option<String>,
    pub warning: Option<String>,
}

impl EventTime {
    /// No time in the post: use the receive time, without a warning.
    pub(crate) fn received(received: SystemTime, raw: Option<String>) -> Self {
        EventTime {
            time: received,
            source: TimeSource::Receiver,
            raw,
            warning: None,
        }
    }
}

/// Unit rule: `>= 1e15` µs, `>= 1e12` ms, else s. Returns microseconds (saturating).
pub(crate) fn to_micros(value: u128) -> u128 {
    if value >= 1_000_000_000_000_000 {
        value
    } else if value >= 1_000_000_000_000 {
        value.saturating_mul(1_000)
    } else {
        value.saturating_mul(1_000_000)
    }
}

/// Interpret a `currentTime` value.
pub(crate) fn from_current_time(raw: &str, received: SystemTime) -> EventTime {
    let trimmed = raw.trim();
    let fallback = |why: String| EventTime {
        time: received,
        source: TimeSource::Receiver,
        raw: Some(trimmed.to_owned()),
        warning: Some(format!(
            "currentTime {trimmed:?} {why}; using the receive time"
        )),
    };
    let digits = trimmed.strip_prefix('+').unwrap_or(trimmed);
    if digits.is_empty() || digits.len() > 30 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return fallback("is not an unsigned integer".into());
    }
    let Ok(value) = digits.parse::<u128>() else {
        return fallback("is not an unsigned integer".into());
    };
    let micros = to_micros(value);
    let received_us = received
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let max_us = received_us + MAX_FUTURE.as_micros();
    if micros < MIN_PLAUSIBLE_US {
        return fallback("is before the year 2000".into());
    }
    if micros > max_us {
        return fallback("is more than a year after the receive time".into());
    }
    // `micros <= max_us` keeps this inside u64 for any realistic clock.
    let Ok(micros) = u64::try_from(micros) else {
        return fallback("is out of range".into());
    };
    EventTime {
        time: UNIX_EPOCH + Duration::from_micros(micros),
        source: TimeSource::Camera,
        raw: Some(trimmed.to_owned()),
        warning: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> SystemTime {
        // 2026-11-21T00:00:00Z, a fixed "receive time" for the tests.
        UNIX_EPOCH + Duration::from_secs(1_795_219_200)
    }

    fn us(t: SystemTime) -> u128 {
        t.duration_since(UNIX_EPOCH).unwrap().as_micros()
    }

    #[test]
    fn units_by_magnitude() {
        let cases = [
            ("1700000000", 1_700_000_000_000_000u128),
            ("1700000000123", 1_700_000_000_123_000),
            ("1700000000427999", 1_700_000_000_427_999),
            // exactly 1e12 is milliseconds, exactly 1e15 microseconds
            ("1000000000000", 1_000_000_000_000_000),
            ("1000000000000000", 1_000_000_000_000_000),
            // just below the boundaries
            ("999999999999", 999_999_999_999_000_000),
        ];
        for (raw, want) in cases {
            let t = from_current_time(raw, UNIX_EPOCH + Duration::from_secs(2_000_000_000_000));
            assert_eq!(t.source, TimeSource::Camera, "{raw}");
            assert_eq!(us(t.time), want, "{raw}");
            assert_eq!(t.raw.as_deref(), Some(raw));
            assert!(t.warning.is_none());
        }
        assert_eq!(to_micros(999_999_999_999_999), 999_999_999_999_999_000);
    }

    #[test]
    fn keeps_microseconds() {
        let t = from_current_time(" 1791408287427999 ", now());
        assert_eq!(us(t.time), 1_791_408_287_427_999);
        assert_eq!(t.raw.as_deref(), Some("1791408287427999"));
    }

    #[test]
    fn implausible_values_fall_back() {
        for raw in [
            "18445822972087551616",
            "0",
            "12",
            "-921101622000000",
            "...",
            "",
            "17e9",
            "99999999999999999999999999999999999999999",
        ] {
            let t = from_current_time(raw, now());
            assert_eq!(t.source, TimeSource::Receiver, "{raw}");
            assert_eq!(t.time, now(), "{raw}");
            assert!(t.warning.is_some(), "{raw}");
        }
        // one year and a bit in the future
        let t = from_current_time(&(1_795_219_200u64 + 367 * 86_400).to_string(), now());
        assert_eq!(t.source, TimeSource::Receiver);
        // a day in the future is fine (clock skew)
        let t = from_current_time(&(1_795_219_200u64 + 86_400).to_string(), now());
        assert_eq!(t.source, TimeSource::Camera);
        // 1999-12-31T23:59:59Z is rejected, 2000-01-01 accepted
        assert_eq!(
            from_current_time("946684799", now()).source,
            TimeSource::Receiver
        );
        assert_eq!(
            from_current_time("946684800", now()).source,
            TimeSource::Camera
        );
    }

    proptest! {
        #[test]
        fn monotonic_within_each_unit(a in 0u128..1_000_000_000_000_000_000, b in 0u128..1_000_000_000_000_000_000) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let band = |v: u128| if v >= 1_000_000_000_000_000 { 2 } else if v >= 1_000_000_000_000 { 1 } else { 0 };
            if band(lo) == band(hi) {
                prop_assert!(to_micros(lo) <= to_micros(hi));
            }
        }

        #[test]
        // ms/µs values before 2001-09-09 fall below the 1e12/1e15 thresholds by design.
        fn plausible_seconds_round_trip(secs in 1_000_000_000u64..1_795_219_200) {
            let t = from_current_time(&secs.to_string(), now());
            prop_assert_eq!(t.source, TimeSource::Camera);
            prop_assert_eq!(us(t.time), u128::from(secs) * 1_000_000);
            let t = from_current_time(&(secs * 1000 + 7).to_string(), now());
            prop_assert_eq!(us(t.time), u128::from(secs) * 1_000_000 + 7_000);
            let t = from_current_time(&(secs * 1_000_000 + 7).to_string(), now());
            prop_assert_eq!(us(t.time), u128::from(secs) * 1_000_000 + 7);
        }

        #[test]
        fn never_panics(raw in ".{0,40}") {
            let _ = from_current_time(&raw, now());
        }
    }
}
