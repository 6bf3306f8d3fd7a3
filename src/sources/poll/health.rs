//! The pure bookkeeping of one polled camera: when to ask next (interval, backoff), when it
//! counts as unreachable and when as back, which pictures are unchanged, and how often a
//! command may take a snapshot. No I/O, no clock of its own: the caller passes `now`.

use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// Why a snapshot was taken; decides whether an unchanged picture may be skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The periodic poll: an unchanged picture is skipped.
    Interval,
    /// A command (the `take` topic, the Home Assistant button): always published, fetched
    /// fresh (never a cached copy).
    Command,
}

/// What to do after a successful fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Success {
    /// Publish the picture (false: identical to the last one published, periodic poll).
    pub publish: bool,
    /// The camera had been reported unreachable and answers again.
    pub back: bool,
}

/// What to do after a failed fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Report the camera unreachable now (the failure streak just reached the threshold).
    pub unreachable: bool,
    /// Consecutive failures so far.
    pub streak: u32,
    /// Wait before the next periodic attempt.
    pub retry_in: Duration,
}

/// Schedule, backoff and availability of one camera.
#[derive(Debug, Clone)]
pub struct Health {
    interval: Duration,
    max_backoff: Duration,
    unreachable_after: u32,
    streak: u32,
    unreachable: bool,
    last_hash: Option<[u8; 32]>,
}

impl Health {
    /// A camera polled every `interval` (zero: only on command), backing off up to
    /// `max_backoff` after failures, unreachable after `unreachable_after` failures in a row
    /// (at least 1).
    pub fn new(interval: Duration, max_backoff: Duration, unreachable_after: u32) -> Health {
        Health {
            interval,
            max_backoff,
            unreachable_after: unreachable_after.max(1),
            streak: 0,
            unreachable: false,
            last_hash: None,
        }
    }

    /// True while the camera is reported unreachable.
    pub fn is_unreachable(&self) -> bool {
        self.unreachable
    }

    /// The periodic interval (zero: on command only).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The picture `body` arrived for `trigger`.
    pub fn succeeded(&mut self, trigger: Trigger, body: &[u8]) -> Success {
        self.streak = 0;
        let back = std::mem::replace(&mut self.unreachable, false);
        let hash: [u8; 32] = Sha256::digest(body).into();
        let same = self.last_hash == Some(hash);
        let publish = trigger == Trigger::Command || !same;
        if publish {
            self.last_hash = Some(hash);
        }
        Success { publish, back }
    }

    /// A fetch failed. The next periodic attempt waits the interval doubled per failure in a
    /// row (the first retry after one interval), at most `max(max_backoff, interval)`, at
    /// least 100 ms.
    pub fn failed(&mut self) -> Failure {
        self.streak = self.streak.saturating_add(1);
        let unreachable = !self.unreachable && self.streak >= self.unreachable_after;
        if unreachable {
            self.unreachable = true;
        }
        let floor = Duration::from_millis(100);
        let base = self.interval.max(floor);
        let cap = self.max_backoff.max(self.interval);
        let factor = 1u32 << (self.streak - 1).min(16);
        let retry_in = base.saturating_mul(factor).min(cap).max(floor);
        Failure {
            unreachable,
            streak: self.streak,
            retry_in,
        }
    }
}

/// At most one command-triggered snapshot per `gap` for one camera.
#[derive(Debug, Clone)]
pub struct CommandLimit {
    gap: Duration,
    last: Option<Instant>,
    refused_since: u64,
}

/// What the limit says about a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Take the snapshot; `refused` commands were turned away since the last one allowed.
    Allow {
        /// Refused since the last allowed command.
        refused: u64,
    },
    /// Too soon: turned away (the first in a row is worth a warning).
    Refuse {
        /// First refusal since the last allowed command.
        first: bool,
    },
}

impl CommandLimit {
    /// One snapshot per `gap` at most.
    pub fn new(gap: Duration) -> CommandLimit {
        CommandLimit {
            gap,
            last: None,
            refused_since: 0,
        }
    }

    /// Judge a command arriving at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.gap => {
                self.refused_since += 1;
                Verdict::Refuse {
                    first: self.refused_since == 1,
                }
            }
            _ => {
                self.last = Some(now);
                Verdict::Allow {
                    refused: std::mem::take(&mut self.refused_since),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unchanged_skipped_only_when_periodic() {
        let mut h = Health::new(Duration::from_secs(10), Duration::from_secs(300), 3);
        assert!(h.succeeded(Trigger::Interval, b"a").publish);
        assert!(!h.succeeded(Trigger::Interval, b"a").publish);
        assert!(h.succeeded(Trigger::Command, b"a").publish);
        assert!(h.succeeded(Trigger::Interval, b"b").publish);
        assert!(h.succeeded(Trigger::Interval, b"a").publish);
    }

    #[test]
    fn backoff_unreachable_and_back() {
        let s = Duration::from_secs;
        let mut h = Health::new(s(10), s(60), 3);
        let f: Vec<Failure> = (0..6).map(|_| h.failed()).collect();
        let waits: Vec<u64> = f.iter().map(|f| f.retry_in.as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 60, 60, 60]);
        let unreachable: Vec<bool> = f.iter().map(|f| f.unreachable).collect();
        assert_eq!(unreachable, [false, false, true, false, false, false]);
        assert!(h.is_unreachable());
        let ok = h.succeeded(Trigger::Interval, b"x");
        assert!(ok.back && ok.publish);
        assert!(!h.succeeded(Trigger::Interval, b"y").back);
        assert_eq!(h.failed().retry_in, s(10));
    }

    #[test]
    fn command_limit() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = CommandLimit::new(ms(2000));
        assert_eq!(l.check(t0), Verdict::Allow { refused: 0 });
        assert_eq!(l.check(t0 + ms(100)), Verdict::Refuse { first: true });
        assert_eq!(l.check(t0 + ms(1999)), Verdict::Refuse { first: false });
        assert_eq!(l.check(t0 + ms(2000)), Verdict::Allow { refused: 2 });
        assert_eq!(l.check(t0 + ms(2001)), Verdict::Refuse { first: true });
    }

    proptest! {
        /// Whatever the settings and the sequence: the wait is never zero nor above the cap,
        /// "unreachable" is reported once per outage, exactly at the threshold.
        #[test]
        fn backoff_bounds(
            interval_ms in 0u64..100_000,
            max_ms in 0u64..1_000_000,
            after in 0u32..10,
            outcomes in proptest::collection::vec(any::<bool>(), 0..64),
        ) {
            let (interval, max) = (Duration::from_millis(interval_ms), Duration::from_millis(max_ms));
            let mut h = Health::new(interval, max, after);
            let mut streak = 0u32;
            for ok in outcomes {
                if ok {
                    h.succeeded(Trigger::Interval, b"x");
                    streak = 0;
                } else {
                    let f = h.failed();
                    streak += 1;
                    prop_assert_eq!(f.streak, streak);
                    prop_assert!(f.retry_in >= Duration::from_millis(100));
                    prop_assert!(f.retry_in <= max.max(interval).max(Duration::from_millis(100)));
                    prop_assert_eq!(f.unreachable, streak == after.max(1));
                }
            }
        }
    }
}
