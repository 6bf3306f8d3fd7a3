//! Process-wide counters, reported in `bridge/info`.
//!
//! Each "something happened" bumps exactly one counter here, from the place that also logs it.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A named monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Serialize for Counter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.get())
    }
}

/// All counters of the process.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// HTTP requests received (any path, any method).
    pub http_requests: Counter,
    /// HTTP requests refused or cut off (size limits, timeouts, bad framing).
    pub http_errors: Counter,
    /// Connections accepted.
    pub connections: Counter,
    /// Heartbeats received.
    pub heartbeats: Counter,
    /// Events produced by sources.
    pub events: Counter,
    /// Inputs that did not become events.
    pub unparsed: Counter,
    /// Images decoded.
    pub images: Counter,
    /// Images that could not be decoded (bad base64, placeholders, not JPEG).
    pub image_errors: Counter,
    /// Events dropped because a queue was full.
    pub dropped: Counter,
    /// Events filtered out by configuration (category disabled).
    pub filtered: Counter,
    /// Traject posts folded into a rate-limited summary.
    pub traject_suppressed: Counter,
    /// MQTT messages published (acknowledged where QoS 1).
    pub mqtt_published: Counter,
    /// MQTT publish failures.
    pub mqtt_errors: Counter,
    /// MQTT (re)connections.
    pub mqtt_connects: Counter,
}

/// The process-wide counters.
pub fn stats() -> &'static Stats {
    static STATS: std::sync::OnceLock<Stats> = std::sync::OnceLock::new();
    STATS.get_or_init(Stats::default)
}
