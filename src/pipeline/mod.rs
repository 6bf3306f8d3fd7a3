//! Fan-in from the sources, the device registry, filters, fan-out to the buffer and the sinks.
//!
//! * [`config`]: its sections, `[[devices]]` and `[categories.<name>]`.
//! * [`identity`]: who sent an input (ids, names, NVR channels; pure).
//! * [`registry`]: the device registry and the routing rules ([`Registry`]; pure).
//! * [`file`]: the registry file (`<state dir>/devices.json`).
//! * [`run`]: the thin async shell: routes source input, stores it in the buffer (waiting for
//!   room: back-pressure), completes the source's `durable`, saves the registry.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DeviceSection};
use crate::event::{KnownDevices, Routed};
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
        }
    }
}

/// At most one "MQTT slower than the cameras" line per this period.
const HELD_LOG_EVERY: Duration = Duration::from_secs(60);

/// Stores routed messages in the buffer, in order, waiting for room while the sink is slower
/// than the sources (back-pressure: the source meanwhile holds its reply to the camera;
/// nothing is dropped for load).
struct Output {
    buffer: Buffer,
    telemetry: Telemetry,
    /// When the last "holding camera replies" line was logged.
    held_logged: Option<Instant>,
}

impl Output {
    /// Route one input, store the result, then tell the source it is durable.
    async fn route(&mut self, registry: &mut Registry, input: Input) {
        let Input {
            source,
            msg,
            durable,
        } = input;
        let routed = registry.route(source, msg, Instant::now());
        self.store(routed).await;
        if let Some(d) = durable {
            let _ = d.send(());
        }
    }

    async fn store(&mut self, routed: Vec<Routed>) {
        for r in routed {
            if !self.buffer.has_room() {
                self.held();
                self.buffer.room().await;
            }
            self.buffer.append(r).await;
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
/// A missing, unreadable or corrupt file is logged and yields no known devices.
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
            tracing::warn!(dir = %dir.display(), error = %e, "device registry ignored, starting with no known devices");
            KnownDevices::default()
        }
    }
}

/// Writes the registry file off the runtime, at most once per [`file::SAVE_DEBOUNCE`].
struct Saver {
    dir: PathBuf,
    telemetry: Telemetry,
    last: Option<Instant>,
    writing: Option<tokio::task::JoinHandle<()>>,
    failing: Arc<AtomicBool>,
}

impl Saver {
    fn new(dir: PathBuf, telemetry: Telemetry) -> Saver {
        Saver {
            dir,
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
        self.writing = Some(tokio::task::spawn_blocking(self.write(registry, now)));
    }

    /// The last write, then one more if anything changed since.
    async fn finish(&mut self, registry: &mut Registry) {
        if let Some(h) = self.writing.take() {
            let _ = h.await;
        }
        if registry.is_dirty() {
            let _ = tokio::task::spawn_blocking(self.write(registry, Instant::now())).await;
        }
    }

    fn write(&self, registry: &mut Registry, now: Instant) -> impl FnOnce() + Send + 'static {
        let bytes = file::encode(&registry.snapshot(now));
        let dir = self.dir.clone();
        let (failing, telemetry) = (self.failing.clone(), self.telemetry.clone());
        move || {
            let written = file::write_atomic(&file::path_in(&dir), &bytes)
                .and_then(|()| file::remove_old(&dir));
            match written {
                Ok(()) if failing.swap(false, Ordering::Relaxed) => {
                    tracing::info!(dir = %dir.display(), "device registry written again");
                }
                Ok(()) => {}
                Err(e) if failing.swap(true, Ordering::Relaxed) => {
                    tracing::debug!(error = %e, "device registry write failed");
                }
                Err(e) => {
                    telemetry.spool_errors.inc();
                    tracing::warn!(error = %e, "device registry write failed; known devices may be forgotten on restart");
                }
            }
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
    let mut saver = cfg
        .state_dir
        .clone()
        .map(|d| Saver::new(d, telemetry.clone()));
    let now = Instant::now();
    // Records read from camqtt 0.1.0's file are written to the new one at once.
    let migrate = (cfg.state_dir.as_deref())
        .is_some_and(|d| !known.records.is_empty() && !file::path_in(d).exists());
    let mut registry = Registry::new(cfg, telemetry.clone(), now, SystemTime::now());
    registry.restore(&known, now);
    if migrate {
        registry.mark_dirty();
    }
    let mut out = Output {
        buffer,
        telemetry,
        held_logged: None,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            input = rx.recv() => match input {
                Some(input) => out.route(&mut registry, input).await,
                None => break,
            },
            _ = tick.tick() => {
                let routed = registry.tick(Instant::now());
                out.store(routed).await;
            }
            () = shutdown.cancelled() => {
                // Drain what the sources already queued, then stop.
                while let Ok(input) = rx.try_recv() {
                    out.route(&mut registry, input).await;
                }
                break;
            }
        }
        if let Some(s) = saver.as_mut() {
            s.poll(&mut registry, Instant::now());
        }
    }
    if let Some(s) = saver.as_mut() {
        s.finish(&mut registry).await;
    }
}
