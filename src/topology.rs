//! The topology: builds every component from its own configuration section, wires them with
//! the shared context, and stops them in order.
//!
//! ```text
//! sources/* ──Input──▶ pipeline ──Routed──▶ buffer (spool) ──records──▶ sinks/mqtt ──▶ broker
//!    ▲ SourceContext {tx, telemetry, shutdown, commands}   ▲ BufferReader (acks)
//!    └──────────── Command (snapshot/take) ◀──────────────────────── sinks/mqtt
//! ```
//!
//! Shutdown order (DESIGN §6): the sources stop accepting and answer what is in flight
//! (their token is a child of the caller's), the pipeline drains what they queued and ends
//! when their senders are gone, then the sinks finish (they deliver what they can and say
//! `offline`), and the buffer's position is flushed. A component that panics, ends early or
//! does not stop in time makes [`Running::wait`] return an error.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::event::KnownDevices;
use crate::sinks::mqtt::config::{BrokerAddr, SinkInputs};
use crate::sources::{Source, SourceContext, SourceError, SourceHandle};
use crate::spool::Buffer;
use crate::telemetry::Telemetry;
use crate::{broker, pipeline, sinks, sources};

/// Messages queued from the sources to the pipeline (each may hold megabytes of images;
/// small, so that back-pressure reaches the cameras' replies quickly).
const SOURCE_QUEUE: usize = 64;
/// Commands (sink → sources) not yet taken by every source; older ones are dropped.
const COMMAND_QUEUE: usize = 64;
/// How long each stage may take to stop.
const SOURCES_STOP: Duration = Duration::from_secs(10);
const PIPELINE_STOP: Duration = Duration::from_secs(5);
const SINKS_STOP: Duration = Duration::from_secs(10);

/// Why the bridge could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Configuration problems.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The embedded broker did not start.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// A source could not start.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The MQTT sink failed.
    #[error(transparent)]
    Sink(#[from] sinks::mqtt::SinkError),
    /// The web server could not listen.
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
    /// A component's task panicked.
    #[error("{0} panicked: {1}")]
    Panicked(&'static str, String),
    /// A component ended on its own before shutdown, or did not stop in time.
    #[error("{0}")]
    Stopped(String),
}

/// A started bridge.
pub struct Running {
    /// Address the Viewtron receiver is bound to (useful with port 0).
    pub viewtron_addr: Option<SocketAddr>,
    /// Every started source with its address.
    pub sources: Vec<(&'static str, Option<SocketAddr>)>,
    /// The MQTT broker node(s) configured, as `mqtt://host:port`, comma-separated in the
    /// order they are tried (no credentials).
    pub broker: String,
    /// The bridge's metrics.
    pub telemetry: Telemetry,
    task: JoinHandle<Result<(), RunError>>,
}

impl Running {
    /// The address source `name` (`viewtron`, `ftp`, `smtp`) is bound to, if it runs and listens.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        Running::addr_of(&self.sources, name)
    }

    fn addr_of(started: &[(&'static str, Option<SocketAddr>)], name: &str) -> Option<SocketAddr> {
        started
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, a)| *a)
    }

    /// Wait until the bridge has stopped (after the shutdown token was cancelled, or after a
    /// component failed). A panic anywhere is an error, never `Ok`.
    pub async fn wait(self) -> Result<(), RunError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(RunError::Panicked("bridge", e.to_string())),
        }
    }
}

/// Start the bridge with its built-in sources (from `config`) and return once the listeners
/// are bound.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, RunError> {
    start_with(config, Vec::new(), shutdown).await
}

/// [`start`] with `extra` sources beside the configured ones (embedding, tests).
pub async fn start_with(
    mut config: Config,
    extra: Vec<Box<dyn Source>>,
    shutdown: CancellationToken,
) -> Result<Running, RunError> {
    check(&mut config)?;
    let telemetry = Telemetry::new();
    // Sources are built first: their files (certificates, passwords) are read before anything
    // runs (broker, spool, listeners).
    let mut sources = sources::configured(&config).map_err(invalid)?;
    sources.extend(extra);
    let mut nodes = broker::target(&config.mqtt).await?;
    let broker_desc = nodes
        .iter()
        .map(BrokerAddr::endpoint)
        .collect::<Vec<_>>()
        .join(",");
    let first = nodes.remove(0);
    let sink_cfg = config.mqtt.sink_config(
        first,
        nodes,
        SinkInputs {
            homeassistant: &config.homeassistant,
            images: &config.images,
            off_delays: config.off_delays(),
            object_off_delay: config.detector.off_delay,
            state_dir: config.spool.enabled.then(|| config.spool.dir.clone()),
            default_client_id: default_client_id(config.viewtron.listen.port()),
        },
    );
    let mut pipeline_cfg = pipeline::PipelineConfig::from_config(&config);
    pipeline_cfg.policies = sources
        .iter()
        .map(|s| (s.name(), s.device_policy()))
        .collect();
    let local = Local::start(&config, &telemetry, &mut pipeline_cfg).await?;
    // The buffer opens before anything listens: a post accepted from now on is durable. The
    // device registry is read for the pipeline (which keeps it) and the sinks (which start
    // from it). Both read files: off the runtime.
    let (buffer, known, pipeline_cfg, sink_cfg) =
        open_stores(&config, pipeline_cfg, sink_cfg, &telemetry).await?;

    let (tx, rx) = mpsc::channel(SOURCE_QUEUE);
    let (commands, _) = broadcast::channel(COMMAND_QUEUE);
    let ctx = SourceContext {
        tx,
        telemetry: telemetry.clone(),
        shutdown: shutdown.child_token(),
        commands: commands.clone(),
    };
    let mut handles = Vec::new();
    for s in sources {
        handles.push(s.start(ctx.clone()).await?);
    }
    drop(ctx);
    let pipeline = tokio::spawn(pipeline::run(
        pipeline_cfg,
        known.clone(),
        rx,
        buffer.clone(),
        telemetry.clone(),
        CancellationToken::new(),
    ));
    let sinks_token = CancellationToken::new();
    // The sink listens for commands only when a source subscribed to them (the poll source).
    let commands = (commands.receiver_count() > 0).then_some(commands);
    let sink = tokio::spawn(sinks::mqtt::run_with(
        sink_cfg,
        known,
        buffer.reader(),
        telemetry.clone(),
        commands,
        sinks_token.clone(),
    ));
    let mut started: Vec<(&'static str, Option<SocketAddr>)> =
        handles.iter().map(|h| (h.name, h.addr)).collect();
    if let Some(addr) = local.web_addr {
        started.push(("web", Some(addr)));
    }
    let task = tokio::spawn(stop_in_order(
        shutdown,
        Stages {
            sources: handles,
            pipeline,
            sink,
            sinks_token,
            buffer,
            local,
        },
    ));
    Ok(Running {
        viewtron_addr: Running::addr_of(&started, sources::viewtron::handler::SOURCE),
        sources: started,
        broker: broker_desc,
        telemetry,
        task,
    })
}

/// Read the `password_file` keys (the environment was applied by the caller, if it wanted
/// to) and validate every section.
fn check(config: &mut Config) -> Result<(), RunError> {
    let mut problems = config.resolve_secrets(&|_| None, &|p| std::fs::read_to_string(p));
    problems.extend(config.validate());
    if problems.is_empty() {
        Ok(())
    } else {
        Err(config::ConfigError::Invalid(problems).into())
    }
}

/// One configuration problem found while building the components.
fn invalid(p: config::Problem) -> RunError {
    config::ConfigError::Invalid(vec![p]).into()
}

impl From<broker::TargetError> for RunError {
    fn from(e: broker::TargetError) -> RunError {
        match e {
            broker::TargetError::Config(p) => invalid(p),
            broker::TargetError::Broker(e) => RunError::Broker(e),
        }
    }
}

/// Run the bridge until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    start(config, shutdown).await?.wait().await
}

/// Open the buffer and read the device registry, on a blocking thread (both read files). The
/// state directory is the spool's: without its lock (another bridge has it, or it is
/// unusable) nothing may be written there, so the registry and the dead letters stay in
/// memory then.
async fn open_stores(
    config: &Config,
    mut pipeline_cfg: pipeline::PipelineConfig,
    mut sink_cfg: sinks::mqtt::MqttSinkConfig,
    telemetry: &Telemetry,
) -> Result<
    (
        Buffer,
        KnownDevices,
        pipeline::PipelineConfig,
        sinks::mqtt::MqttSinkConfig,
    ),
    RunError,
> {
    let (spool, telemetry) = (config.spool.clone(), telemetry.clone());
    tokio::task::spawn_blocking(move || {
        let buffer = Buffer::from_config(&spool, &telemetry);
        if !buffer.on_disk() {
            pipeline_cfg.state_dir = None;
            sink_cfg.state_dir = None;
        }
        let known = pipeline::load_known(&pipeline_cfg);
        (buffer, known, pipeline_cfg, sink_cfg)
    })
    .await
    .map_err(|e| RunError::Panicked("start", e.to_string()))
}

/// The running stages, for [`stop_in_order`].
struct Stages {
    sources: Vec<SourceHandle>,
    pipeline: JoinHandle<()>,
    sink: JoinHandle<Result<(), sinks::mqtt::SinkError>>,
    sinks_token: CancellationToken,
    buffer: Buffer,
    local: Local,
}

/// The local sink (archive, live view) and the web server, when either is configured.
struct Local {
    sink: Option<JoinHandle<()>>,
    web: Option<JoinHandle<()>>,
    web_addr: Option<SocketAddr>,
    /// Stops the web server (and its event streams) once everything else has stopped.
    web_token: CancellationToken,
}

impl Local {
    /// Open the archive (a folder that cannot be used is logged and the bridge runs without
    /// it), bind the web server, and tap the pipeline for them.
    async fn start(
        config: &Config,
        telemetry: &Telemetry,
        pipeline_cfg: &mut pipeline::PipelineConfig,
    ) -> Result<Local, RunError> {
        let web_token = CancellationToken::new();
        let mut local = Local {
            sink: None,
            web: None,
            web_addr: None,
            web_token: web_token.clone(),
        };
        if config.web.listen.is_none() && config.archive.dir.is_none() {
            return Ok(local);
        }
        let access = match config.web.listen {
            Some(_) => Some(config.web.access().map_err(invalid)?),
            None => None,
        };
        let archive = match config.archive.dir.clone() {
            Some(dir) => open_archive(&config.archive, dir, telemetry).await,
            None => None,
        };
        let archive_root = archive.as_ref().map(|a| a.root().to_path_buf());
        let live = access.as_ref().map(|_| crate::web::Live::new());
        if let (Some(addr), Some(access)) = (config.web.listen, access) {
            let bound = crate::web::bind(addr).await?;
            local.web_addr = Some(bound.addr);
            let state = crate::web::AppState {
                live: live.clone().unwrap_or_default(),
                archive: archive_root,
                telemetry: telemetry.clone(),
                access: std::sync::Arc::new(access),
                started: std::time::Instant::now(),
                shutdown: web_token,
            };
            local.web = Some(tokio::spawn(crate::web::serve(bound, state)));
        }
        let (tap, rx) = mpsc::channel(LOCAL_QUEUE);
        pipeline_cfg.tap = Some(tap);
        let sink = sinks::local::LocalSink {
            archive,
            live,
            config: config.archive.clone(),
            telemetry: telemetry.clone(),
        };
        local.sink = Some(tokio::spawn(sink.run(rx)));
        Ok(local)
    }

    /// After the pipeline ended (the tap is closed): let the local sink finish what it has,
    /// then stop the web server.
    async fn stop(self, failure: &mut Option<RunError>) {
        if let Some(sink) = self.sink
            && let Err(e) = tokio::time::timeout(SINKS_STOP, sink).await
        {
            note(
                failure,
                RunError::Stopped(format!("local sink (archive) did not stop in time: {e}")),
            );
        }
        self.web_token.cancel();
        if let Some(web) = self.web
            && tokio::time::timeout(SINKS_STOP, web).await.is_err()
        {
            note(
                failure,
                RunError::Stopped("web server did not stop in time".into()),
            );
        }
    }
}

/// Messages queued from the pipeline to the local sink.
const LOCAL_QUEUE: usize = 64;

/// Open the archive at `dir` on a blocking thread; `None` (logged, counted) when it cannot be
/// used: the bridge runs without it rather than not at all.
async fn open_archive(
    cfg: &sinks::archive::ArchiveConfig,
    dir: std::path::PathBuf,
    telemetry: &Telemetry,
) -> Option<sinks::archive::Archive> {
    let cfg = cfg.clone();
    let opened = tokio::task::spawn_blocking(move || {
        sinks::archive::Archive::open(
            &cfg,
            jiff::tz::TimeZone::system(),
            std::time::SystemTime::now(),
        )
    })
    .await;
    match opened {
        Ok(Ok(a)) => {
            telemetry.archive_bytes.set(a.bytes());
            Some(a)
        }
        Ok(Err(e)) => {
            telemetry.archive_errors.inc();
            tracing::error!(dir = %dir.display(), error = %e, "archive unusable; running without it");
            None
        }
        Err(e) => {
            telemetry.archive_errors.inc();
            tracing::error!(dir = %dir.display(), error = %e, "archive failed to open; running without it");
            None
        }
    }
}

/// Wait for the shutdown (or any component ending early: a source, the pipeline, the sink),
/// then stop the stages in order.
async fn stop_in_order(shutdown: CancellationToken, st: Stages) -> Result<(), RunError> {
    let Stages {
        sources,
        mut pipeline,
        mut sink,
        sinks_token,
        buffer,
        local,
    } = st;
    let (mut ended_rx, mut sources_left) = watch(sources);
    let mut failure: Option<RunError> = None;
    // A JoinHandle must not be awaited again once it gave its result.
    let (mut pipeline_done, mut sink_done) = (false, false);
    tokio::select! {
        biased;
        () = shutdown.cancelled() => tracing::info!("shutting down"),
        Some((name, r)) = ended_rx.recv() => {
            sources_left -= 1;
            if !shutdown.is_cancelled() {
                failure = Some(ended(name, r.map(|()| Ok(()))));
                shutdown.cancel();
            }
        }
        r = &mut pipeline => {
            pipeline_done = true;
            if !shutdown.is_cancelled() {
                failure = Some(ended("pipeline", r.map(|()| Ok(()))));
                shutdown.cancel();
            }
        }
        r = &mut sink => {
            sink_done = true;
            if !shutdown.is_cancelled() {
                failure = Some(ended("MQTT sink", r.map(|r| r.map_err(RunError::from))));
                shutdown.cancel();
            }
        }
    }
    if let Some(e) = &failure {
        tracing::error!(error = %e, "bridge component failed; stopping");
    }
    // What the sources accepted is stored even if the sink cannot deliver now (a frozen
    // broker): the buffer stops holding the pipeline back.
    buffer.close_flow();
    stop_sources(&mut ended_rx, sources_left, &mut failure).await;
    if !pipeline_done {
        match tokio::time::timeout(PIPELINE_STOP, &mut pipeline).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_panic() => {
                note(&mut failure, RunError::Panicked("pipeline", e.to_string()))
            }
            Ok(Err(_)) => {}
            Err(_) => note(
                &mut failure,
                RunError::Stopped("pipeline did not stop in time".into()),
            ),
        }
    }
    sinks_token.cancel();
    if !sink_done {
        finish_sink(&mut sink, &mut failure).await;
    }
    local.stop(&mut failure).await;
    failure.map_or(Ok(()), Err)
}

/// How each source ended (its name and its task's result), as it ends.
type Ended = mpsc::UnboundedReceiver<(&'static str, Result<(), tokio::task::JoinError>)>;

/// Watch the source tasks: each one's end arrives on the returned channel, while running and
/// while stopping. Also returns how many there are.
fn watch(sources: Vec<SourceHandle>) -> (Ended, usize) {
    let (tx, rx) = mpsc::unbounded_channel();
    let n = sources.len();
    for s in sources {
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = s.task.await;
            let _ = tx.send((s.name, r));
        });
    }
    (rx, n)
}

/// Wait (at most [`SOURCES_STOP`]) for the `left` sources still running, noting panics.
async fn stop_sources(ended: &mut Ended, mut left: usize, failure: &mut Option<RunError>) {
    let deadline = tokio::time::Instant::now() + SOURCES_STOP;
    while left > 0 {
        match tokio::time::timeout_at(deadline, ended.recv()).await {
            Ok(Some((name, r))) => {
                left -= 1;
                if let Err(e) = r {
                    note(failure, RunError::Panicked(name, e.to_string()));
                }
            }
            Ok(None) => break,
            Err(_) => {
                let e = RunError::Stopped(format!("{left} source(s) did not stop in time"));
                note(failure, e);
                break;
            }
        }
    }
}

/// Wait (at most [`SINKS_STOP`]) for the sink, noting how it ended.
async fn finish_sink(
    sink: &mut JoinHandle<Result<(), sinks::mqtt::SinkError>>,
    failure: &mut Option<RunError>,
) {
    match tokio::time::timeout(SINKS_STOP, sink).await {
        Ok(Ok(Err(e))) => note(failure, e.into()),
        Ok(Err(e)) if e.is_panic() => note(failure, RunError::Panicked("MQTT sink", e.to_string())),
        Ok(_) => {}
        Err(_) => note(
            failure,
            RunError::Stopped("MQTT sink did not stop in time".into()),
        ),
    }
}

/// A component's task ended before shutdown: why.
fn ended(what: &'static str, r: Result<Result<(), RunError>, tokio::task::JoinError>) -> RunError {
    match r {
        Err(e) if e.is_panic() => RunError::Panicked(what, e.to_string()),
        Ok(Err(e)) => e,
        _ => RunError::Stopped(format!("{what} ended unexpectedly")),
    }
}

/// Keep the first failure, log the others.
fn note(failure: &mut Option<RunError>, e: RunError) {
    tracing::error!(error = %e, "bridge component failed");
    failure.get_or_insert(e);
}

/// `camqtt-<hostname>-<receiver port>`: stable across restarts (the bridge's Home Assistant
/// device is named after it) and distinct for two instances on one host, which must not kick
/// each other off the broker.
pub fn default_client_id(port: u16) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| pipeline::slug(h.trim()))
        .filter(|h| h != "unknown")
        .unwrap_or_else(|| "host".into());
    format!("camqtt-{host}-{port}")
}
