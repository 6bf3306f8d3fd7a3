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

/// A value that goes up and down (queue depth, bytes on disk).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Set the current value.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Serialize for Gauge {
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
    /// Requests refused with 401: missing, malformed or wrong HTTP Basic credentials.
    pub auth_failures: Counter,
    /// Connections refused with 403: peer not on a listener's allow-list.
    pub forbidden: Counter,
    /// TLS handshakes the receiver completed (HTTPS connections).
    pub tls_connections: Counter,
    /// TLS handshakes that failed: garbage after `0x16`, no common protocol version or cipher
    /// suite, the client rejected the receiver's certificate, or a timeout.
    pub tls_handshake_errors: Counter,
    /// TLS handshakes (an HTTPS client, e.g. a camera set to `https`) on a plain-HTTP
    /// receiver; closed without a reply.
    pub tls_on_plain_port: Counter,
    /// Plain-HTTP connections refused by an HTTPS-only receiver (`plain_http = false`).
    pub plain_http_on_tls_port: Counter,
    /// Heartbeats received.
    pub heartbeats: Counter,
    /// Events produced by sources.
    pub events: Counter,
    /// Inputs that did not become events.
    pub unparsed: Counter,
    /// Images decoded.
    pub images: Counter,
    /// Events kept with a problem: an image that could not be decoded (bad base64,
    /// placeholder, not JPEG), an implausible camera time, a list cut to its cap.
    pub image_errors: Counter,
    /// Messages dropped because a queue was full: the MQTT outbox while the broker was away
    /// for longer than it holds (spool off), or a source whose pipeline had stopped.
    pub dropped: Counter,
    /// Times the pipeline waited for the MQTT side to catch up (broker connected but slower
    /// than the cameras): camera replies were held instead of events dropped.
    pub backpressure_waits: Counter,
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
    /// Images not published because they exceed the broker's packet limit
    /// (`[mqtt] max_packet_size`, the broker's MQTT 5 CONNACK, or learned).
    pub images_oversize: Counter,
    /// Other messages (event JSON, states) not published because they exceed that limit.
    pub messages_oversize: Counter,
    /// Publishes the broker refused (MQTT 5 PUBACK reason code 0x80 or above).
    pub mqtt_refused: Counter,
    /// Publishes set aside (refused, or closed the connection twice in a row): reported on
    /// `bridge/unparsed` and kept in the dead-letter folder.
    pub mqtt_set_aside: Counter,
    /// Records appended to the disk spool.
    pub spool_appended: Counter,
    /// Spool records the size or age bound pushed out before they were delivered.
    pub spool_dropped: Counter,
    /// Spool records delivered again after some of their publishes had been acknowledged
    /// (at-least-once: after a broker outage the unacknowledged tail is replayed).
    pub spool_duplicates: Counter,
    /// Spool records found unacknowledged at start (replayed; some may be duplicates).
    pub spool_replayed: Counter,
    /// Images left out of replayed events because they were older than `image_max_age`.
    pub spool_images_dropped: Counter,
    /// Damaged spool records or tails skipped (torn writes, bad checksums).
    pub spool_corrupt: Counter,
    /// Messages that could not be written to the spool (disk full, I/O error); they went
    /// on in memory only.
    pub spool_errors: Counter,
    /// Records in the spool not yet acknowledged by the broker.
    pub spool_depth: Gauge,
    /// Bytes of spool segment files on disk.
    pub spool_bytes: Gauge,
    /// 1 while the MQTT connection is up.
    pub mqtt_connected: Gauge,
}

/// The process-wide counters.
pub fn stats() -> &'static Stats {
    static STATS: std::sync::OnceLock<Stats> = std::sync::OnceLock::new();
    STATS.get_or_init(Stats::default)
}
