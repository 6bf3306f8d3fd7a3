//! `poll` source: snapshots fetched from cameras' snapshot URLs, every `interval` and on
//! command (the MQTT topic `<base>/<device>/snapshot/take`, the Home Assistant button "Take
//! snapshot").
//!
//! * [`config`]: the `[[poll]]` entries ([`PollConfig`]) and their checks.
//! * [`preset`] (pure): vendor snapshot URLs (Hikvision ISAPI, Dahua/Amcrest CGI, generic).
//! * [`auth`] (pure): Basic and Digest through one `http_auth::PasswordClient`, nonce reuse,
//!   a wrong password told apart from a camera out of connections.
//! * [`answer`] (pure): an answer is a JPEG/PNG by its signature, or a `bridge/unparsed` report.
//! * [`health`] (pure): interval, backoff, unreachable/back, unchanged pictures, the command
//!   rate limit.
//! * `camera`: the task of one camera (the only I/O), through the process's one HTTP client
//!   ([`crate::http_client`]).
//!
//! Each picture is a [`crate::event::Event`] of the configured category (`snapshot`), phase
//! pulse, one overview image, provenance `{via: poll | on_demand, name: URL path, path:
//! host:port}`; the device is known by its `Poll` handle (the entry's `id`). An unchanged
//! picture on the periodic poll is a heartbeat instead; a commanded one is always published.
//! Requests to one `host:port` go one at a time by default (`host_connections`).

pub mod answer;
pub mod auth;
mod camera;
pub mod config;
pub mod health;
pub mod preset;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::Problem;
use crate::sources::{DevicePolicy, Source, SourceContext, SourceHandle, Starting};

pub use config::PollConfig;

/// The source's name (`source` of its events, logs, `bridge/unparsed`).
pub const SOURCE: &str = "poll";

/// The `[[poll]]` cameras as a [`Source`].
#[derive(Debug)]
pub struct PollSource {
    cameras: Vec<camera::Camera>,
}

impl PollSource {
    /// The source of the `[[poll]]` entries (validated). Reads a `password_file` not read yet.
    /// Errors: an entry whose URL or category is unusable, or whose password file cannot be
    /// read (with its key).
    pub fn new(entries: &[PollConfig]) -> Result<PollSource, Problem> {
        let mut budgets: HashMap<String, usize> = HashMap::new();
        let mut targets = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let t = e
                .target()
                .map_err(|(k, m)| Problem::new(format!("poll[{i}].{k}"), m))?;
            let n = budgets.entry(t.authority.clone()).or_insert(usize::MAX);
            *n = (*n).min(e.host_connections.max(1));
            targets.push(t);
        }
        let semaphores: HashMap<String, Arc<Semaphore>> = budgets
            .into_iter()
            .map(|(host, n)| (host, Arc::new(Semaphore::new(n))))
            .collect();
        let mut cameras = Vec::with_capacity(entries.len());
        for (i, (e, target)) in entries.iter().zip(targets).enumerate() {
            let mut e = e.clone();
            if e.password.is_none()
                && let Some(f) = &e.password_file
            {
                let text = std::fs::read_to_string(f).map_err(|err| {
                    Problem::new(
                        format!("poll[{i}].password_file"),
                        format!("cannot read {}: {err}", f.display()),
                    )
                })?;
                e.password = Some(crate::config::secret::from_file_text(text));
            }
            let category = e.category().ok_or_else(|| {
                Problem::new(format!("poll[{i}].category"), "not a category name")
            })?;
            cameras.push(camera::Camera {
                name: e.name.clone().unwrap_or_else(|| e.id.clone()),
                id: e.id.clone(),
                device_id: crate::pipeline::slug(&e.id),
                budget: semaphores[&target.authority].clone(),
                target,
                creds: e.credentials(),
                timeout: e.timeout,
                max_size: e.max_size,
                category,
                health: health::Health::new(e.interval, e.max_backoff, e.unreachable_after),
                limit: health::CommandLimit::new(e.command_interval),
            });
        }
        Ok(PollSource { cameras })
    }
}

/// One warn line for a command naming no polled camera (a typo in an automation), instead of
/// silence; until shutdown.
async fn warn_unknown_devices(
    ids: Vec<String>,
    mut commands: tokio::sync::broadcast::Receiver<crate::event::Command>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let c = tokio::select! {
            () = shutdown.cancelled() => return,
            c = commands.recv() => c,
        };
        match c {
            Ok(crate::event::Command::TakeSnapshot { device }) if !ids.contains(&device) => {
                tracing::warn!(source = SOURCE, device = %device, known = %ids.join(","), "snapshot command for a device that is not a [[poll]] camera: ignored");
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl Source for PollSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn start(self: Box<Self>, ctx: SourceContext) -> Starting {
        // Subscribed before anything runs: no command is lost between start and the tasks.
        let cameras: Vec<_> = self
            .cameras
            .into_iter()
            .map(|c| (c, ctx.commands.subscribe()))
            .collect();
        Box::pin(async move {
            for (c, _) in &cameras {
                tracing::info!(source = SOURCE, device = %c.id, url_path = %c.target.request_target, host = %c.target.authority, interval_s = c.health.interval().as_secs_f64(), "polling snapshots");
            }
            let ids: Vec<String> = cameras.iter().map(|(c, _)| c.device_id.clone()).collect();
            let unknown = ctx.commands.subscribe();
            let task = tokio::spawn(async move {
                let mut set = tokio::task::JoinSet::new();
                set.spawn(warn_unknown_devices(ids, unknown, ctx.shutdown.clone()));
                for (c, rx) in cameras {
                    set.spawn(c.run(ctx.clone(), rx));
                }
                drop(ctx);
                while let Some(r) = set.join_next().await {
                    if let Err(e) = r
                        && e.is_panic()
                    {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            });
            Ok(SourceHandle {
                name: SOURCE,
                addr: None,
                task,
            })
        })
    }

    /// Poll devices are marked unavailable by the source itself (`Message::Unreachable` after
    /// `unreachable_after` failures) and come back with their next picture or heartbeat; a
    /// camera polled only on command sends nothing for hours. So the pipeline's silence rule
    /// never applies (`[[devices]] expect_every` still can).
    fn device_policy(&self) -> DevicePolicy {
        DevicePolicy {
            offline_after: Duration::from_secs(u64::MAX / 4),
            ..DevicePolicy::default()
        }
    }
}
