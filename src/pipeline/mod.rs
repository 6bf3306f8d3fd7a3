//! Fan-in from the sources, the device registry, filters, fan-out to the buffer and the sinks.
//!
//! * [`config`]: its sections, `[[devices]]` and `[categories.<name>]`.
//! * [`identity`]: who sent an input (ids, names, NVR channels; pure).
//! * [`registry`]: the device registry and the routing rules ([`Registry`]; pure).
//! * [`file`](mod@file): the registry file (`<state dir>/devices.json`).
//! * [`run`]: the thin async shell: routes source input, stores it in the buffer (waiting for
//!   room: back-pressure), completes the source's `durable`, saves the registry (at once when
//!   a bridge-kept count advanced, before the event that carries it is stored).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DeviceSection};
use crate::event::{Event, KnownDevices, Message, Routed};
use crate::sources::{DevicePolicy, Input};
use crate::spool::Buffer;
use crate::telemetry::Telemetry;

pub mod config;
pub mod file;
pub mod identity;
pub mod registry;

pub use identity::slug;
pub use registry::Registry;

/// Settings of the pipeline, taken from [`Config`].
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// `[[devices]]` entries.
    pub devices: Vec<DeviceSection>,
    /// Categories switched off.
    pub disabled: Vec<String>,
    /// The device policy of each source by name ([`crate::sources::Source::device_policy`];
    /// the topology fills it in). A source not listed gets the default.
    pub policies: HashMap<&'static str, DevicePolicy>,
    /// A device silent this long leaves the registry (and its sinks).
    pub forget_after: Duration,
    /// Where the registry file lives; `None`: it is not kept across restarts.
    pub state_dir: Option<PathBuf>,
    /// The spool's `fsync`: the registry write that makes an advanced count durable before
    /// its event is stored flushes to disk too (as durable as the event: a power cut);
    /// without it, as the buffer, it survives a crash or kill of the bridge.
    pub fsync: bool,
    /// The local sink (archive and web page), beside the buffer: it gets every routed
    /// message once it is stored, in order; a full queue holds the pipeline (and the
    /// cameras' replies) rather than lose a message. The topology fills it in.
    pub tap: Option<mpsc::Sender<Routed>>,
    /// The object detector events are shown to before they are stored (`[detector]`).
    pub detector: crate::detect::DetectorConfig,
}

impl PipelineConfig {
    /// Take the pipeline's part of the configuration.
    pub fn from_config(c: &Config) -> Self {
        PipelineConfig {
            devices: c.devices.clone(),
            disabled: c
                .categories
                .iter()
                .filter(|(_, s)| !s.enabled)
                .map(|(k, _)| k.clone())
                .collect(),
            policies: HashMap::new(),
            forget_after: c.homeassistant.forget_after,
            state_dir: c.spool.enabled.then(|| c.spool.dir.clone()),
            fsync: c.spool.fsync,
            tap: None,
            detector: c.detector.clone(),
        }
    }
}

/// At most one "MQTT slower than the cameras" line per this period.
const HELD_LOG_EVERY: Duration = Duration::from_secs(60);
/// Most inputs routed and stored together (what was queued when the pipeline looked): one
/// hand-off to the disk writer for all of them. Already in memory (queued); the buffer's
/// backlog bound may be passed by one such batch.
pub const BATCH_INPUTS: usize = 8;

/// Stores routed messages in the buffer, in order, waiting for room while the sink is slower
/// than the sources (back-pressure: the source meanwhile holds its reply to the camera;
/// nothing is dropped for load).
struct Output {
    buffer: Buffer,
    /// [`PipelineConfig::tap`].
    tap: Option<mpsc::Sender<Routed>>,
    /// The detector stage, when `[detector]` is on.
    detector: Option<crate::detect::stage::Stage>,
    telemetry: Telemetry,
    /// The registry file (`None`: not kept).
    saver: Option<Saver>,
    /// When the last "holding camera replies" line was logged.
    held_logged: Option<Instant>,
    /// The last record stored, and the last one a [`Output::settle`] task waits for.
    pushed: Option<u64>,
    settling: Option<u64>,
}

impl Output {
    /// Route inputs that arrived together, store the results with one trip to the disk
    /// writer, then tell each source its input is durable.
    ///
    /// When an input advanced a bridge-kept count, the registry file is written (and awaited)
    /// before the event that carries the count is stored: once the event can be published
    /// (or replayed after a crash), the count it carries is never restored lower.
    async fn route(&mut self, registry: &mut Registry, inputs: Vec<Input>) {
        let mut inputs = inputs;
        let suppress = match self.detector.as_mut() {
            Some(d) => {
                let overrides: Vec<_> = (inputs.iter())
                    .filter_map(|i| match &i.msg {
                        Message::Event(e) => {
                            Some(registry.section(&e.device).and_then(|s| s.detect.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                let mut events: Vec<&mut Event> = (inputs.iter_mut())
                    .filter_map(|i| match &mut i.msg {
                        Message::Event(e) => Some(e.as_mut()),
                        _ => None,
                    })
                    .collect();
                d.apply(&mut events, &overrides).await
            }
            None => Vec::new(),
        };
        let mut suppress = suppress.into_iter();
        let mut routed = Vec::with_capacity(2 * inputs.len());
        let mut acks = Vec::with_capacity(inputs.len());
        for Input {
            source,
            msg,
            durable,
        } in inputs
        {
            // A picture in which the detector found nothing wanted: its device was heard from.
            let msg = match msg {
                Message::Event(e) if suppress.next() == Some(true) => Message::Heartbeat(e.device),
                m => m,
            };
            routed.extend(registry.route(source, msg, Instant::now()));
            acks.extend(durable);
        }
        let counted = (routed.iter())
            .any(|r| matches!(r, Routed::Event { counts, .. } if !counts.is_empty()));
        if counted && let Some(s) = self.saver.as_mut() {
            s.write_now(registry).await;
        }
        self.store(routed).await;
        self.settle(acks);
    }

    /// Complete `acks` once every record stored so far is safe (delivered, or written to
    /// disk: [`Buffer::stored`]), in a task of its own, so that the next inputs are routed and
    /// stored meanwhile. Every record stored so far, not only this batch's: a post's
    /// messages may be split over two batches, its ack with the second, which may store
    /// nothing. Records stored without an ack (polled snapshots, unparsed reports, a device
    /// going offline) get such a task too: it is what writes them while the broker is away.
    fn settle(&mut self, acks: Vec<tokio::sync::oneshot::Sender<()>>) {
        let Some(seq) = self.pushed else {
            for d in acks {
                let _ = d.send(());
            }
            return;
        };
        if acks.is_empty() && self.settling == Some(seq) {
            return;
        }
        self.settling = Some(seq);
        let buffer = self.buffer.clone();
        tokio::spawn(async move {
            buffer.stored(seq).await;
            for d in acks {
                let _ = d.send(());
            }
        });
    }

    /// Append `routed` in order, each batch once the buffer has room (the whole batch may
    /// pass the backlog bound by its own size: at most [`BATCH_INPUTS`] posts). The records
    /// are safe once [`Output::settle`] says so.
    async fn store(&mut self, routed: Vec<Routed>) {
        if routed.is_empty() {
            return;
        }
        if !self.buffer.has_room() {
            self.held();
            self.buffer.room().await;
        }
        self.observe(&routed);
        let tapped = self.tap.as_ref().map(|_| routed.clone());
        if let Some(&last) = self.buffer.push_all(routed).last() {
            self.pushed = Some(last);
        }
        if let (Some(tap), Some(tapped)) = (&self.tap, tapped) {
            for r in tapped {
                if tap.send(r).await.is_err() {
                    // The local sink ended (it logged why); MQTT delivery goes on.
                    self.tap = None;
                    break;
                }
            }
        }
    }

    /// The labelled metrics of what is being stored: events by source and category, each
    /// device's last sighting and availability.
    fn observe(&self, routed: &[Routed]) {
        let now = SystemTime::now();
        for r in routed {
            match r {
                Routed::Event { device, event, .. } => {
                    self.telemetry
                        .event_routed(&event.source, event.category.as_str());
                    self.telemetry.device_seen(&device.id, now);
                }
                Routed::Seen { device, .. } => self.telemetry.device_seen(&device.id, now),
                Routed::Offline { device } => self.telemetry.device_offline(&device.id),
                Routed::Forget { .. } | Routed::Unparsed(_) => {}
            }
        }
    }

    /// Count a wait for the sink and say so, at most once a minute.
    fn held(&mut self) {
        self.telemetry.backpressure_waits.inc();
        let now = Instant::now();
        if self
            .held_logged
            .is_none_or(|t| now.duration_since(t) >= HELD_LOG_EVERY)
        {
            self.held_logged = Some(now);
            tracing::info!(
                waits = self.telemetry.backpressure_waits.get(),
                "MQTT broker slower than the cameras: holding camera replies until it catches up"
            );
        }
    }
}

/// Read the registry file in `cfg.state_dir` (camqtt 0.1.0's file when there is no new one).
/// A missing, unreadable or corrupt file is logged and yields no known devices; an unreadable
/// or corrupt one (or one of a newer version) is first renamed to `<name>.bad` (replacing an
/// older one), so that the registry written next does not destroy it.
pub fn load_known(cfg: &PipelineConfig) -> KnownDevices {
    let Some(dir) = &cfg.state_dir else {
        return KnownDevices::default();
    };
    match file::load(dir, SystemTime::now(), cfg.forget_after) {
        Ok(file::Found::Nothing) => {
            tracing::debug!(dir = %dir.display(), "no device registry yet");
            KnownDevices::default()
        }
        Ok(file::Found::Registry { loaded, migrated }) => {
            tracing::info!(
                dir = %dir.display(),
                devices = loaded.devices.len(),
                forgotten = loaded.forgotten.len(),
                from = if migrated { file::OLD_FILE_NAME } else { file::FILE_NAME },
                "device registry loaded"
            );
            for id in &loaded.forgotten {
                tracing::info!(device = %id, "device silent for forget_after, forgotten");
            }
            KnownDevices {
                records: loaded
                    .devices
                    .into_iter()
                    .map(|d| d.into_record())
                    .collect(),
                authoritative: true,
            }
        }
        Err(e) => {
            match e.unusable_file().map(file::set_aside) {
                Some(Ok(bad)) => tracing::warn!(
                    error = %e,
                    kept_as = %bad.display(),
                    "device registry unusable, moved aside; starting with no known devices"
                ),
                Some(Err(moved)) => tracing::warn!(
                    error = %e,
                    set_aside = %moved,
                    "device registry unusable and could not be moved aside; starting with no known devices (it is replaced at the next save)"
                ),
                None => tracing::warn!(
                    dir = %dir.display(),
                    error = %e,
                    "device registry ignored, starting with no known devices"
                ),
            }
            KnownDevices::default()
        }
    }
}

/// Writes the registry file off the runtime: at most once per [`file::SAVE_DEBOUNCE`]
/// ([`Saver::poll`], with fsync), at once when a count advanced ([`Saver::write_now`]), and
/// on the way out ([`Saver::finish`], with fsync). One write at a time, in order: a newer
/// snapshot is never overtaken by an older one.
struct Saver {
    dir: PathBuf,
    /// fsync for [`Saver::write_now`] ([`PipelineConfig::fsync`]).
    fsync_now: bool,
    telemetry: Telemetry,
    last: Option<Instant>,
    writing: Option<tokio::task::JoinHandle<bool>>,
    failing: Arc<AtomicBool>,
}

impl Saver {
    fn new(dir: PathBuf, fsync_now: bool, telemetry: Telemetry) -> Saver {
        Saver {
            dir,
            fsync_now,
            telemetry,
            last: None,
            writing: None,
            failing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Start a write when the registry changed and the last one is long enough ago.
    fn poll(&mut self, registry: &mut Registry, now: Instant) {
        let busy = self.writing.as_ref().is_some_and(|h| !h.is_finished());
        if !registry.is_dirty() || busy || self.last.is_some_and(|l| now < l + file::SAVE_DEBOUNCE)
        {
            return;
        }
        self.last = Some(now);
        self.writing = Some(tokio::task::spawn_blocking(self.write(registry, now, true)));
    }

    /// Write the registry now and wait for it (after a write under way): a bridge-kept count
    /// advanced, and the event carrying it is stored only after this. A failed write leaves
    /// the registry dirty, for [`Saver::poll`] to retry.
    ///
    /// fsync only with the spool's `fsync`: without it the buffer survives a kill of the
    /// bridge, not a power cut, and so does a rename without fsync (the page cache outlives
    /// the process); a flush per counted event would cost the same disk flush that `fsync`
    /// is off to avoid.
    async fn write_now(&mut self, registry: &mut Registry) {
        if let Some(h) = self.writing.take() {
            let _ = h.await;
        }
        let write = self.write(registry, Instant::now(), self.fsync_now);
        if !tokio::task::spawn_blocking(write).await.unwrap_or(false) {
            registry.mark_dirty();
        }
    }

    /// The last write, then one more if anything changed since.
    async fn finish(&mut self, registry: &mut Registry) {
        if let Some(h) = self.writing.take() {
            let _ = h.await;
        }
        if registry.is_dirty() {
            let _ = tokio::task::spawn_blocking(self.write(registry, Instant::now(), true)).await;
        }
    }

    /// The write of the registry as it is now (marks it clean); true when it was written.
    fn write(
        &self,
        registry: &mut Registry,
        now: Instant,
        fsync: bool,
    ) -> impl FnOnce() -> bool + Send + 'static {
        let bytes = file::encode(&registry.snapshot(now));
        let dir = self.dir.clone();
        let (failing, telemetry) = (self.failing.clone(), self.telemetry.clone());
        move || {
            let written = file::write_atomic(&file::path_in(&dir), &bytes, fsync)
                .and_then(|()| file::remove_old(&dir));
            match written {
                Ok(()) if failing.swap(false, Ordering::Relaxed) => {
                    tracing::info!(dir = %dir.display(), "device registry written again");
                }
                Ok(()) => {}
                Err(ref e) if failing.swap(true, Ordering::Relaxed) => {
                    tracing::debug!(error = %e, "device registry write failed");
                }
                Err(ref e) => {
                    telemetry.spool_errors.inc();
                    tracing::warn!(error = %e, "device registry write failed; known devices and counts may be restored older on restart");
                }
            }
            written.is_ok()
        }
    }
}

/// Run the pipeline until `shutdown` or until every source has gone away: route each
/// source message, store the result in `buffer`, then complete the source's
/// [`Input::durable`]. `known` is the registry as loaded at start ([`load_known`]); the
/// registry file is saved while running and on the way out.
pub async fn run(
    cfg: PipelineConfig,
    known: KnownDevices,
    mut rx: mpsc::Receiver<Input>,
    buffer: Buffer,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) {
    let saver = (cfg.state_dir.clone()).map(|d| Saver::new(d, cfg.fsync, telemetry.clone()));
    let now = Instant::now();
    // A registry read at start (`authoritative`) is written back at once, as read: camqtt
    // 0.1.0's file migrated to the new one (and removed) even with no device left, devices
    // past `forget_after` gone from the file, a `last_seen` after now saved as now (a device
    // is forgotten `forget_after` after that, however often the bridge restarts).
    let rewrite = cfg.state_dir.is_some() && known.authoritative;
    let tap = cfg.tap.clone();
    let device_detect: Vec<_> = cfg
        .devices
        .iter()
        .filter_map(|d| d.detect.clone())
        .collect();
    let detector = match crate::detect::stage::Stage::new(
        &cfg.detector,
        &device_detect,
        telemetry.clone(),
    ) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "object detector not usable; events go on without detection");
            None
        }
    };
    let mut registry = Registry::new(cfg, telemetry.clone(), now, SystemTime::now());
    registry.restore(&known, now);
    if rewrite {
        registry.mark_dirty();
    }
    let mut out = Output {
        buffer,
        tap,
        detector,
        telemetry,
        saver,
        held_logged: None,
        pushed: None,
        settling: None,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            input = rx.recv() => match input {
                Some(input) => {
                    // What else is queued goes along (bounded): one disk trip for the lot.
                    let mut inputs = vec![input];
                    while inputs.len() < BATCH_INPUTS && let Ok(more) = rx.try_recv() {
                        inputs.push(more);
                    }
                    out.route(&mut registry, inputs).await;
                }
                None => break,
            },
            _ = tick.tick() => {
                let routed = registry.tick(Instant::now());
                out.store(routed).await;
                out.settle(Vec::new());
            }
            () = shutdown.cancelled() => {
                // Drain what the sources already queued, then stop.
                while let Ok(input) = rx.try_recv() {
                    out.route(&mut registry, vec![input]).await;
                }
                break;
            }
        }
        if let Some(s) = out.saver.as_mut() {
            s.poll(&mut registry, Instant::now());
        }
    }
    if let Some(s) = out.saver.as_mut() {
        s.finish(&mut registry).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Attributes, Category, DeviceInfo, Event, Message, Phase, TimeSource};
    use crate::spool::MemoryConfig;
    use std::path::Path;

    const DAY: u64 = 86_400;

    fn cfg(dir: &Path) -> PipelineConfig {
        let mut config = Config::default();
        config.spool.dir = dir.to_path_buf();
        PipelineConfig::from_config(&config)
    }

    /// A registry file (version `version`) with one camera last seen `last_seen` (JSON).
    fn registry_text(version: u32, last_seen: &str) -> String {
        format!(
            r#"{{"version": {version}, "saved": 1790000000, "devices": [{{
  "device": {{"id": "02_00_5e_0a_0b_0c", "name": "Side gate",
             "info": {{"name": "Side gate", "mac": "02:00:5e:0a:0b:0c", "serial": null,
                      "ip": null, "channel": null, "device_no": null, "peer": "10.1.1.9",
                      "kind": "camera", "manufacturer": "Viewtron", "model": null,
                      "sw_version": null}},
             "hw_key": "02005e0a0b0c", "parent": null, "area": null}},
  "last_seen": {last_seen}, "categories": {{}}, "counts": {{"person": 4}}}}]}}"#
        )
    }

    fn unix_now() -> u64 {
        file::unix(SystemTime::now())
    }

    #[test]
    fn an_absurd_last_seen_neither_panics_nor_keeps_the_device_forever() {
        // Review finding: `last_seen = u64::MAX` panicked in `file::from_unix` at start.
        let dir = tempfile::tempdir().unwrap();
        let path = file::path_in(dir.path());
        for last_seen in [u64::MAX, 4_000_000_000, unix_now() + 3600] {
            std::fs::write(&path, registry_text(1, &last_seen.to_string())).unwrap();
            let before = SystemTime::now();
            let known = load_known(&cfg(dir.path()));
            assert!(known.authoritative, "{last_seen}");
            assert_eq!(known.records.len(), 1, "{last_seen}");
            let seen = known.records[0].last_seen;
            assert!(
                seen <= SystemTime::now() && seen + Duration::from_secs(1) >= before,
                "{last_seen}: clamped to now, not {seen:?}"
            );
            assert_eq!(known.records[0].counts["person"], 4);
        }
    }

    #[test]
    fn a_corrupt_or_future_registry_file_is_set_aside_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = file::path_in(dir.path());
        let bad = dir.path().join("devices.json.bad");
        let newer = registry_text(2, &unix_now().to_string());
        for text in ["{\"version\": 1, \"devices\": [", newer.as_str()] {
            std::fs::write(&path, text).unwrap();
            let known = load_known(&cfg(dir.path()));
            assert_eq!(known, KnownDevices::default(), "{text}");
            assert!(!path.exists(), "{text}: moved away");
            // An older backup is replaced by the newer bad file.
            assert_eq!(std::fs::read_to_string(&bad).unwrap(), text);
        }
        // camqtt 0.1.0's file alike, under its own name.
        let old = dir.path().join(file::OLD_FILE_NAME);
        std::fs::write(&old, "garbage").unwrap();
        assert_eq!(load_known(&cfg(dir.path())), KnownDevices::default());
        assert!(!old.exists());
        let old_bad = dir.path().join("mqtt-devices.json.bad");
        assert_eq!(std::fs::read_to_string(old_bad).unwrap(), "garbage");
        assert_eq!(std::fs::read_to_string(&bad).unwrap(), newer);
        // A good file stays where it is.
        std::fs::write(&path, registry_text(1, &unix_now().to_string())).unwrap();
        assert_eq!(load_known(&cfg(dir.path())).records.len(), 1);
        assert!(path.exists());
    }

    /// A test event of `category` from `device`: a pulse received now, no attributes, no
    /// images (also used by the registry's tests).
    pub(crate) fn event(device: DeviceInfo, category: Category) -> Message {
        Message::Event(Box::new(Event {
            device,
            category,
            phase: Phase::Pulse,
            time: SystemTime::now(),
            time_source: TimeSource::Receiver,
            time_raw: None,
            received: SystemTime::now(),
            source: "test".into(),
            raw_type: "X".into(),
            envelope: None,
            config_version: None,
            attrs: Attributes::default(),
            images: vec![],
            warnings: vec![],
            provenance: None,
            detection: None,
        }))
    }

    /// The pipeline on a memory buffer with `known`; returns its input and the task.
    fn start(
        cfg: PipelineConfig,
        known: KnownDevices,
    ) -> (mpsc::Sender<Input>, tokio::task::JoinHandle<()>) {
        let telemetry = Telemetry::new();
        let buffer = Buffer::memory(MemoryConfig::default(), telemetry.clone());
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(run(
            cfg,
            known,
            rx,
            buffer,
            telemetry,
            CancellationToken::new(),
        ));
        (tx, task)
    }

    fn saved_count(dir: &Path) -> Option<u64> {
        let bytes = file::read(&file::path_in(dir)).unwrap()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["devices"][0]["counts"]["person"].as_u64()
    }

    #[tokio::test]
    async fn a_count_is_in_the_registry_file_before_its_event_is_durable() {
        // Review finding: counts were saved up to a second after their events were durable
        // (and published), so a kill in between restarted them lower.
        let dir = tempfile::tempdir().unwrap();
        let (tx, task) = start(cfg(dir.path()), KnownDevices::default());
        for n in 1..=3 {
            let (done, durable) = tokio::sync::oneshot::channel();
            let input = Input {
                source: "test",
                msg: event(
                    DeviceInfo {
                        peer: Some("10.0.0.8".parse().unwrap()),
                        ..Default::default()
                    },
                    Category::Counting,
                ),
                durable: Some(done),
            };
            tx.send(input).await.unwrap();
            durable.await.unwrap();
            assert_eq!(saved_count(dir.path()), Some(n), "after event {n}");
        }
        drop(tx);
        task.await.unwrap();
        assert_eq!(saved_count(dir.path()), Some(3));
    }

    /// Review finding (spool write-behind): a post's messages may be split over two batches,
    /// its ack with the second, which may store nothing; and records stored without an ack
    /// (polled snapshots, unparsed reports) must still reach the disk while the broker is
    /// away. Either way, an ack completes only once everything stored before it is written.
    #[tokio::test]
    async fn an_ack_waits_for_every_record_stored_before_it_and_unacked_records_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let telemetry = Telemetry::new();
        let spool = crate::spool::SpoolConfig::new(dir.path().join("spool"));
        let (buffer, _) = Buffer::open(spool, telemetry.clone()).unwrap();
        // A connected sink that never delivers (a frozen broker): records are written only
        // when the write-behind time is up, and only if someone waits for them.
        buffer.reader().set_draining(true);
        let mut config = cfg(dir.path());
        config.disabled = vec!["metadata".into()];
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(run(
            config,
            KnownDevices::default(),
            rx,
            buffer.clone(),
            telemetry.clone(),
            CancellationToken::new(),
        ));
        let cam = DeviceInfo {
            peer: Some("10.0.0.9".parse().unwrap()),
            ..Default::default()
        };
        let no_ack = |category| Input {
            source: "test",
            msg: event(cam.clone(), category),
            durable: None,
        };
        let until = |n: u64| {
            let t = telemetry.clone();
            async move {
                for _ in 0..500 {
                    if t.spool_appended.get() >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("{n} records stored without an ack were never written");
            }
        };
        // Without an ack: written all the same (the camera's device comes first).
        tx.send(no_ack(Category::Intrusion)).await.unwrap();
        until(1).await;
        let before = telemetry.spool_appended.get();
        // An event without an ack, then, in a batch of its own, an ack whose input stores
        // nothing (its category is switched off).
        tx.send(no_ack(Category::Intrusion)).await.unwrap();
        for _ in 0..500 {
            if buffer.depth() > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (done, durable) = tokio::sync::oneshot::channel();
        let acked = Input {
            source: "test",
            msg: event(cam.clone(), Category::Metadata),
            durable: Some(done),
        };
        tx.send(acked).await.unwrap();
        durable.await.unwrap();
        assert!(
            telemetry.spool_appended.get() > before,
            "the ack completed before the event stored ahead of it was on disk"
        );
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn the_registry_read_at_start_is_written_back_as_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = file::path_in(dir.path());
        let forgotten = registry_text(1, &(unix_now() - 400 * DAY).to_string())
            .replace("02_00_5e_0a_0b_0c", "forgotten");
        let ahead = registry_text(1, &u64::MAX.to_string());
        // Both devices in one file.
        let mut file: serde_json::Value = serde_json::from_str(&ahead).unwrap();
        let other: serde_json::Value = serde_json::from_str(&forgotten).unwrap();
        let d = other["devices"][0].clone();
        file["devices"].as_array_mut().unwrap().push(d);
        std::fs::write(&path, file.to_string()).unwrap();
        let cfg = cfg(dir.path());
        let known = load_known(&cfg);
        assert_eq!(known.records.len(), 1);
        let (tx, task) = start(cfg, known);
        drop(tx);
        task.await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let devices = v["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 1, "{v}");
        assert_eq!(devices[0]["device"]["id"], "02_00_5e_0a_0b_0c");
        assert!(
            devices[0]["last_seen"].as_u64().unwrap() <= unix_now(),
            "{v}"
        );
        assert_eq!(devices[0]["counts"]["person"], 4);
    }

    #[tokio::test]
    async fn an_old_file_whose_devices_are_all_forgotten_is_migrated() {
        // Review finding: only an old file with devices left was migrated; one whose devices
        // were all past forget_after stayed forever (and was read again at every start).
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(file::OLD_FILE_NAME);
        let long_ago = unix_now() - 400 * DAY;
        std::fs::write(&old, registry_text(1, &long_ago.to_string())).unwrap();
        let cfg = cfg(dir.path());
        let known = load_known(&cfg);
        assert!(known.authoritative && known.records.is_empty());
        let (tx, task) = start(cfg, known);
        drop(tx);
        task.await.unwrap();
        assert!(!old.exists(), "the old file is removed");
        let bytes = file::read(&file::path_in(dir.path())).unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["devices"], serde_json::json!([]));
    }
}
