//! The local sink: the picture archive on disk ([`crate::sinks::archive`]) and the live view
//! of the web page ([`crate::web::live`]), beside the MQTT sink. It gets every message the
//! pipeline stored, in order, through the pipeline's tap
//! ([`crate::pipeline::PipelineConfig::tap`]).
//!
//! The archive is written on a blocking thread, one event at a time; a failed write (a full
//! disk, a folder that went read-only) is logged, counted (`archive_errors`) and leaves the
//! event to the other sinks: MQTT delivery never waits on the archive's disk beyond the tap's
//! queue. Retention runs after each write and every [`PRUNE_EVERY`].

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::event::{Device, Event, Routed};
use crate::sinks::archive::{Archive, ArchiveConfig, EventRecord, Pruned};
use crate::telemetry::Telemetry;
use crate::web::Live;

/// How often retention runs while no event arrives (an old archive shrinks by age anyway).
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What the local sink writes to.
pub struct LocalSink {
    /// The archive, when on and open.
    pub archive: Option<Archive>,
    /// The web page's live view, when the web server is on.
    pub live: Option<Live>,
    /// `[archive]` (priorities of events, also without the archive on disk).
    pub config: ArchiveConfig,
    /// The bridge's metrics.
    pub telemetry: Telemetry,
}

impl LocalSink {
    /// Run until the pipeline's tap closes.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Routed>) {
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => self.handle(r).await,
                    None => break,
                },
                _ = prune.tick() => self.prune().await,
            }
        }
        tracing::debug!("local sink stopped");
    }

    async fn handle(&mut self, r: Routed) {
        let now = SystemTime::now();
        match r {
            Routed::Event { device, event, .. } => {
                let record = match self.archive.take() {
                    Some(archive) => self.write(archive, &device, &event, now).await,
                    None => None,
                };
                let record = record.unwrap_or_else(|| {
                    let priority = self.config.priority_of(&event.category);
                    EventRecord::new(&device, &event, priority, Vec::new())
                });
                if let Some(live) = &self.live {
                    live.event(&device, &event, record, now);
                }
            }
            Routed::Seen { device, .. } => self.with_live(|l| l.seen(&device, now)),
            Routed::Offline { device } => self.with_live(|l| l.offline(&device)),
            Routed::Forget { device } => self.with_live(|l| l.forget(&device)),
            Routed::Unparsed(_) => {}
        }
    }

    fn with_live(&self, f: impl FnOnce(&Live)) {
        if let Some(l) = &self.live {
            f(l);
        }
    }

    /// Write one event to the archive on a blocking thread; its record, or `None` when the
    /// write failed (logged and counted).
    async fn write(
        &mut self,
        mut archive: Archive,
        device: &Device,
        event: &std::sync::Arc<Event>,
        now: SystemTime,
    ) -> Option<EventRecord> {
        let (d, e) = (device.clone(), event.clone());
        let done = tokio::task::spawn_blocking(move || {
            let r = archive.write(&d, &e, now);
            (archive, r)
        })
        .await;
        let (archive, result) = match done {
            Ok(x) => x,
            Err(e) => {
                self.telemetry.archive_errors.inc();
                tracing::error!(error = %e, "archive writer failed; archive off until restart");
                return None;
            }
        };
        let t = &self.telemetry;
        let record = match result {
            Ok(w) => {
                t.archive_events.inc();
                t.archive_images.add(w.record.images.len() as u64);
                self.pruned(w.pruned);
                Some(w.record)
            }
            Err(e) => {
                t.archive_errors.inc();
                tracing::warn!(device = %device.id, category = %event.category.as_str(), error = %e, "archive write failed; the event is still published");
                None
            }
        };
        t.archive_bytes.set(archive.bytes());
        self.archive = Some(archive);
        record
    }

    async fn prune(&mut self) {
        let Some(mut archive) = self.archive.take() else {
            return;
        };
        let now = SystemTime::now();
        match tokio::task::spawn_blocking(move || {
            let p = archive.prune(now);
            (archive, p)
        })
        .await
        {
            Ok((archive, pruned)) => {
                self.pruned(pruned);
                self.telemetry.archive_bytes.set(archive.bytes());
                self.archive = Some(archive);
            }
            Err(e) => {
                self.telemetry.archive_errors.inc();
                tracing::error!(error = %e, "archive retention failed; archive off until restart");
            }
        }
    }

    fn pruned(&self, p: Pruned) {
        if p.files > 0 {
            self.telemetry.archive_pruned.add(p.files);
            self.telemetry.archive_pruned_bytes.add(p.bytes);
        }
    }
}
