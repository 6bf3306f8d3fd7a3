//! The bridge's counters, gauges and histograms, through the `metrics` crate.
//!
//! Every bridge instance ([`crate::start`]) has its own [`Telemetry`]: a
//! `metrics-exporter-prometheus` recorder that is *not* installed as the process-wide
//! recorder, so two bridges in one process (tests) never share a count. Components get a
//! clone in their context and bump typed fields (`telemetry.events.inc()`); each field is a
//! `metrics` handle registered as `camqtt_<name>_total` (counters) or `camqtt_<name>`
//! (gauges) with its doc line as the Prometheus help text, and keeps its current value for
//! `bridge/info` and `/healthz` (`Telemetry::values`). Prometheus text comes from
//! [`Telemetry::render_prometheus`].
//!
//! Each "something happened" bumps exactly one counter, from the place that also logs it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use serde::Serialize;
use serde::ser::SerializeMap;

const TARGET: &str = "camqtt";

fn metadata() -> Metadata<'static> {
    Metadata::new(TARGET, metrics::Level::INFO, Some(module_path!()))
}

/// A monotonically increasing count (`camqtt_<name>_total`).
#[derive(Debug)]
pub struct Counter {
    value: AtomicU64,
    metric: metrics::Counter,
}

impl Counter {
    fn register(r: &PrometheusRecorder, name: &'static str, help: &'static str) -> Counter {
        let name = format!("camqtt_{name}_total");
        r.describe_counter(
            KeyName::from(name.clone()),
            None,
            SharedString::from(help.trim()),
        );
        Counter {
            value: AtomicU64::new(0),
            metric: r.register_counter(&Key::from_name(name), &metadata()),
        }
    }
    /// Add one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        self.metric.increment(n);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (`camqtt_<name>`): queue depth, bytes on disk, 0/1 flags.
#[derive(Debug)]
pub struct Gauge {
    value: AtomicU64,
    metric: metrics::Gauge,
}

impl Gauge {
    fn register(r: &PrometheusRecorder, name: &'static str, help: &'static str) -> Gauge {
        let name = format!("camqtt_{name}");
        r.describe_gauge(
            KeyName::from(name.clone()),
            None,
            SharedString::from(help.trim()),
        );
        Gauge {
            value: AtomicU64::new(0),
            metric: r.register_gauge(&Key::from_name(name), &metadata()),
        }
    }
    /// Set the current value.
    pub fn set(&self, v: u64) {
        self.value.store(v, Ordering::Relaxed);
        self.metric.set(v as f64);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A distribution of durations in seconds (`camqtt_<name>_seconds`, a Prometheus summary).
#[derive(Debug)]
pub struct Histogram(metrics::Histogram);

impl Histogram {
    fn register(r: &PrometheusRecorder, name: &'static str, help: &'static str) -> Histogram {
        let name = format!("camqtt_{name}_seconds");
        r.describe_histogram(
            KeyName::from(name.clone()),
            Some(Unit::Seconds),
            SharedString::from(help.trim()),
        );
        Histogram(r.register_histogram(&Key::from_name(name), &metadata()))
    }
    /// Record one duration.
    pub fn record(&self, d: std::time::Duration) {
        self.0.record(d.as_secs_f64());
    }
}

/// Declares the typed metric fields once: the struct, its registration with the names and
/// help texts, and its `bridge/info` serialisation (counters and gauges by name).
macro_rules! metrics_set {
    (
        counters { $( $(#[doc = $cdoc:expr])* $counter:ident, )* }
        gauges { $( $(#[doc = $gdoc:expr])* $gauge:ident, )* }
        histograms { $( $(#[doc = $hdoc:expr])* $hist:ident, )* }
    ) => {
        /// Every metric of one bridge instance.
        #[derive(Debug)]
        pub struct Stats {
            $( $(#[doc = $cdoc])* pub $counter: Counter, )*
            $( $(#[doc = $gdoc])* pub $gauge: Gauge, )*
            $( $(#[doc = $hdoc])* pub $hist: Histogram, )*
        }

        impl Stats {
            fn register(r: &PrometheusRecorder) -> Stats {
                Stats {
                    $( $counter: Counter::register(r, stringify!($counter), concat!($($cdoc),*)), )*
                    $( $gauge: Gauge::register(r, stringify!($gauge), concat!($($gdoc),*)), )*
                    $( $hist: Histogram::register(r, stringify!($hist), concat!($($hdoc),*)), )*
                }
            }
        }

        impl Serialize for Stats {
            /// Counters and gauges by name (histograms only go to Prometheus).
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(None)?;
                $( m.serialize_entry(stringify!($counter), &self.$counter.get())?; )*
                $( m.serialize_entry(stringify!($gauge), &self.$gauge.get())?; )*
                m.end()
            }
        }
    };
}

metrics_set! {
    counters {
        /// HTTP requests received (any path, any method).
        http_requests,
        /// HTTP requests refused or cut off (size limits, timeouts, bad framing).
        http_errors,
        /// Connections accepted.
        connections,
        /// Requests refused with 401: missing, malformed or wrong HTTP Basic credentials.
        auth_failures,
        /// Connections refused with 403: peer not on a listener's allow-list.
        forbidden,
        /// TLS handshakes the receiver completed (HTTPS connections).
        tls_connections,
        /// TLS handshakes that failed: garbage after `0x16`, no common protocol version or cipher
        /// suite, the client rejected the receiver's certificate, or a timeout.
        tls_handshake_errors,
        /// TLS handshakes (an HTTPS client, e.g. a camera set to `https`) on a plain-HTTP receiver;
        /// closed without a reply.
        tls_on_plain_port,
        /// Plain-HTTP connections refused by an HTTPS-only receiver (`plain_http = false`).
        plain_http_on_tls_port,
        /// Heartbeats received.
        heartbeats,
        /// Mails the SMTP source received in full (up to the final `.`).
        smtp_mails,
        /// SMTP commands or mails refused and sessions cut off: wrong credentials (`535`), no
        /// login where one is required (`530`), over the size cap (`552`), a line too long,
        /// timeouts, too many connections, a connection dropped before the final `.`.
        smtp_refusals,
        /// FTP logins refused (unknown user or wrong password).
        ftp_login_failures,
        /// FTP uploads cut off before the end of their JPEG (reset, timeout, or data connection
        /// closed early): reported on `bridge/unparsed`, never published as images.
        ftp_cut_off,
        /// FTP connections refused: `ftp.max_connections` reached, or a connection to the
        /// source's internal port the source did not open.
        ftp_refused,
        /// Events produced by sources.
        events,
        /// Inputs that did not become events.
        unparsed,
        /// Images decoded.
        images,
        /// Events kept with a problem: an image that could not be decoded (bad base64, placeholder,
        /// not JPEG), an implausible camera time, a list cut to its cap.
        image_errors,
        /// Messages dropped because a queue was full: the MQTT outbox while the broker was away for
        /// longer than it holds (spool off), or a source whose pipeline had stopped.
        dropped,
        /// Times the pipeline waited for the MQTT side to catch up (broker connected but slower
        /// than the cameras): camera replies were held instead of events dropped.
        backpressure_waits,
        /// Events filtered out by configuration (category disabled).
        filtered,
        /// Traject posts folded into a rate-limited summary.
        traject_suppressed,
        /// MQTT messages published (acknowledged where QoS 1).
        mqtt_published,
        /// MQTT publish failures.
        mqtt_errors,
        /// MQTT (re)connections.
        mqtt_connects,
        /// Connections made to another broker node than the one before (`[mqtt] url` lists the
        /// nodes of a cluster): failovers.
        mqtt_failovers,
        /// `bridge/info` messages from another client id under this bridge's base topic: a second
        /// instance shares the base topic (each instance needs its own, README "Scaling out").
        mqtt_topic_conflicts,
        /// Images not published because they exceed the broker's packet limit (`[mqtt]
        /// max_packet_size`, the broker's MQTT 5 CONNACK, or learned).
        images_oversize,
        /// Other messages (event JSON, states) not published because they exceed that limit.
        messages_oversize,
        /// Publishes the broker refused (MQTT 5 PUBACK reason code 0x80 or above).
        mqtt_refused,
        /// Publishes set aside (refused, or closed the connection twice in a row): reported on
        /// `bridge/unparsed` and kept in the dead-letter folder.
        mqtt_set_aside,
        /// Records written to the disk spool's files.
        spool_appended,
        /// Records that left the disk spool without being written to its files: the broker
        /// acknowledged them within `WRITE_BEHIND` (50 ms) of their arrival.
        spool_writes_saved,
        /// Spool records the size or age bound pushed out before they were delivered.
        spool_dropped,
        /// Spool records delivered again after some of their publishes had been acknowledged
        /// (at-least-once: after a broker outage the unacknowledged tail is replayed).
        spool_duplicates,
        /// Spool records found unacknowledged at start (replayed; some may be duplicates).
        spool_replayed,
        /// Images left out of replayed events because they were older than `image_max_age`.
        spool_images_dropped,
        /// Damaged spool records or tails skipped (torn writes, bad checksums).
        spool_corrupt,
        /// Snapshot requests the poll source made (one per snapshot, authentication retries
        /// not counted).
        poll_requests,
        /// Snapshots that failed: no answer, refused credentials, an answer that is not an image.
        poll_failures,
        /// Polled snapshots not published because identical to the last one (a heartbeat instead).
        poll_unchanged,
        /// Commands received on the command topics (`<base>/<device>/snapshot/take`).
        commands,
        /// Snapshot commands ignored by the rate limit (`[[poll]] command_interval`).
        commands_limited,
        /// Messages that could not be written to the spool (disk full, I/O error); they went on in
        /// memory only.
        spool_errors,
        /// Events written to the archive (`[archive]`), with or without images.
        archive_events,
        /// Image files written to the archive.
        archive_images,
        /// Archive writes that failed (disk full, permissions): the event is still published.
        archive_errors,
        /// Archive files deleted by retention (`[archive] max_age`, `max_bytes`).
        archive_pruned,
        /// Bytes of archive files deleted by retention.
        archive_pruned_bytes,
        /// Web requests refused: a peer not on `[web] allow` (403) or missing or wrong
        /// credentials (401).
        web_refused,
        /// Pictures sent to the object detector (`[detector]`).
        detector_requests,
        /// Pictures the detector did not answer for (refused, timeout, error status, an answer
        /// that could not be read); their events go on marked `detection: unavailable`.
        detector_failures,
        /// Objects the detector found that passed the filters (labels, confidence, zone).
        detector_objects,
        /// Events not published because the detector found no wanted object in them
        /// (`unmatched = "suppress"`).
        detector_suppressed,
    }
    gauges {
        /// Records in the spool not yet acknowledged by the broker.
        spool_depth,
        /// Bytes of spool segment files on disk.
        spool_bytes,
        /// 1 while the MQTT connection is up.
        mqtt_connected,
        /// 1 when the spool is enabled but could not be opened (a bad or read-only directory, or
        /// one another bridge holds): events are kept in memory only.
        spool_unavailable,
        /// Bytes of files in the archive (`[archive] dir`).
        archive_bytes,
    }
    histograms {
        /// Time from a camera request's last byte to its reply (held while the broker is slow).
        reply,
        /// Time from handing a QoS 1 publish to the client to its PUBACK.
        publish,
        /// Time the object detector took to answer for one picture.
        detect,
    }
}

/// Most distinct `(source, category)` label pairs of `camqtt_events_by_category_total`;
/// categories past it count as `other` (a device-provided category name must not grow the
/// exposition without bound).
pub const MAX_CATEGORY_SERIES: usize = 256;

struct Inner {
    stats: Stats,
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Label pairs of `camqtt_events_by_category_total` seen so far.
    categories: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

/// `camqtt_events_by_category_total{source, category}`.
const EVENTS_BY_CATEGORY: &str = "camqtt_events_by_category_total";
/// `camqtt_device_last_seen_timestamp_seconds{device}`.
const DEVICE_LAST_SEEN: &str = "camqtt_device_last_seen_timestamp_seconds";
/// `camqtt_device_available{device}`.
const DEVICE_AVAILABLE: &str = "camqtt_device_available";

/// One bridge's metrics; cheap to clone (shared).
#[derive(Clone)]
pub struct Telemetry(Arc<Inner>);

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Telemetry").finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

impl Telemetry {
    /// A fresh set of metrics, all zero.
    pub fn new() -> Telemetry {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let stats = Stats::register(&recorder);
        for (name, help) in [
            (
                EVENTS_BY_CATEGORY,
                "Events routed to the sinks, by source (viewtron, ftp, smtp, poll) and category.",
            ),
            (
                DEVICE_AVAILABLE,
                "1 while a device is available (online), 0 once it went offline.",
            ),
        ] {
            let kind = if name == EVENTS_BY_CATEGORY {
                Recorder::describe_counter
            } else {
                Recorder::describe_gauge
            };
            kind(
                &recorder,
                KeyName::from(name),
                None,
                SharedString::from(help),
            );
        }
        recorder.describe_gauge(
            KeyName::from(DEVICE_LAST_SEEN),
            Some(Unit::Seconds),
            SharedString::from(
                "When a device was last heard from (an event or a heartbeat), Unix time.",
            ),
        );
        Telemetry(Arc::new(Inner {
            stats,
            recorder,
            handle,
            categories: Default::default(),
        }))
    }

    /// Count one routed event in `camqtt_events_by_category_total{source, category}`. Past
    /// [`MAX_CATEGORY_SERIES`] label pairs, new categories count as `other`.
    pub fn event_routed(&self, source: &str, category: &str) {
        let category = {
            let mut seen = self.0.categories.lock().unwrap_or_else(|p| p.into_inner());
            let pair = (source.to_owned(), category.to_owned());
            if seen.contains(&pair) || seen.len() < MAX_CATEGORY_SERIES {
                seen.insert(pair);
                category
            } else {
                "other"
            }
        };
        let key = Key::from_parts(
            EVENTS_BY_CATEGORY,
            vec![
                Label::new("source", source.to_owned()),
                Label::new("category", category.to_owned()),
            ],
        );
        self.0
            .recorder
            .register_counter(&key, &metadata())
            .increment(1);
    }

    /// A device was heard from at `at` (`camqtt_device_last_seen_timestamp_seconds`) and is
    /// available (`camqtt_device_available` = 1).
    pub fn device_seen(&self, device: &str, at: std::time::SystemTime) {
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.device_gauge(DEVICE_LAST_SEEN, device).set(secs);
        self.device_gauge(DEVICE_AVAILABLE, device).set(1.0);
    }

    /// A device went offline (`camqtt_device_available` = 0).
    pub fn device_offline(&self, device: &str) {
        self.device_gauge(DEVICE_AVAILABLE, device).set(0.0);
    }

    fn device_gauge(&self, name: &'static str, device: &str) -> metrics::Gauge {
        let key = Key::from_parts(name, vec![Label::new("device", device.to_owned())]);
        self.0.recorder.register_gauge(&key, &metadata())
    }

    /// Counters and gauges by name, as `bridge/info` shows them.
    pub fn values(&self) -> serde_json::Value {
        serde_json::to_value(&self.0.stats).unwrap_or_default()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render_prometheus(&self) -> String {
        // Summaries (histograms) roll their windows on upkeep; there is no upkeep thread here.
        self.0.handle.run_upkeep();
        self.0.handle.render()
    }
}

impl std::ops::Deref for Telemetry {
    type Target = Stats;
    fn deref(&self) -> &Stats {
        &self.0.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_do_not_share_counts_and_render_for_prometheus() {
        let a = Telemetry::new();
        let b = Telemetry::new();
        a.events.add(3);
        a.spool_depth.set(7);
        a.reply.record(std::time::Duration::from_millis(2));
        assert_eq!((a.events.get(), b.events.get()), (3, 0));
        assert_eq!(a.values()["events"], 3);
        assert_eq!(a.values()["spool_depth"], 7);
        let text = a.render_prometheus();
        assert!(text.contains("camqtt_events_total 3"), "{text}");
        assert!(text.contains("camqtt_spool_depth 7"), "{text}");
        assert!(
            text.contains("# HELP camqtt_events_total Events produced by sources."),
            "{text}"
        );
        assert!(text.contains("camqtt_reply_seconds"), "{text}");
        assert!(!b.render_prometheus().contains("camqtt_events_total 3"));
    }

    #[test]
    fn labelled_series_for_categories_and_devices() {
        let t = Telemetry::new();
        t.event_routed("viewtron", "lpr");
        t.event_routed("viewtron", "lpr");
        t.event_routed("ftp", "snapshot");
        t.device_seen(
            "gate",
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        );
        t.device_offline("porch");
        let text = t.render_prometheus();
        for want in [
            "camqtt_events_by_category_total{source=\"viewtron\",category=\"lpr\"} 2",
            "camqtt_events_by_category_total{source=\"ftp\",category=\"snapshot\"} 1",
            "camqtt_device_last_seen_timestamp_seconds{device=\"gate\"} 1700000000",
            "camqtt_device_available{device=\"gate\"} 1",
            "camqtt_device_available{device=\"porch\"} 0",
        ] {
            assert!(text.contains(want), "{want} missing in:\n{text}");
        }
        // Device-provided category names cannot grow the exposition without bound.
        for i in 0..MAX_CATEGORY_SERIES + 10 {
            t.event_routed("smtp", &format!("c{i}"));
        }
        let text = t.render_prometheus();
        let series = text
            .lines()
            .filter(|l| l.starts_with("camqtt_events_by_category_total{"))
            .count();
        assert_eq!(series, MAX_CATEGORY_SERIES + 1, "{text}");
        assert!(text.contains("category=\"other\"} 12"), "{text}");
    }
}
