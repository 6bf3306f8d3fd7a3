//! The topology: builds every component from its configuration, wires them with the shared
//! context, and stops them in order.
//!
//! ```text
//! sources/* ──Input──▶ pipeline ──Routed──▶ buffer (spool) ──records──▶ sinks/mqtt ──▶ broker
//!    ▲ SourceContext {tx, telemetry, shutdown}             ▲ BufferReader (acks)
//! ```
//!
//! Shutdown order (DESIGN §6): the sources stop accepting and answer what is in flight
//! (their token is a child of the caller's), the pipeline drains what they queued and ends
//! when their senders are gone, then the sinks finish (they deliver what they can and say
//! `offline`), and the buffer's position is flushed. A component that panics, ends early or
//! does not stop in time makes [`Running::wait`] return an error.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::sinks::mqtt::ProtocolChoice;
use crate::sinks::mqtt::config::{BrokerAddr, HaConfig, ImageConfig, MqttSinkConfig};
use crate::sources::{Source, SourceContext, SourceError, SourceHandle};
use crate::spool::{Buffer, MemoryConfig, SpoolConfig};
use crate::telemetry::Telemetry;
use crate::{broker, pipeline, sinks, sources};

/// Messages queued from the sources to the pipeline (each may hold megabytes of images;
/// small, so that back-pressure reaches the cameras' replies quickly).
const SOURCE_QUEUE: usize = 64;
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
    /// MQTT broker in use.
    pub broker: String,
    /// The bridge's metrics.
    pub telemetry: Telemetry,
    task: JoinHandle<Result<(), RunError>>,
}

impl Running {
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
    // `password_file` keys (the environment was applied by the caller, if it wanted to).
    let mut problems = config.resolve_secrets(&|_| None, &|p| std::fs::read_to_string(p));
    problems.extend(config.validate());
    if !problems.is_empty() {
        return Err(config::ConfigError::Invalid(problems).into());
    }
    let telemetry = Telemetry::new();
    let mut sources = configured_sources(&config)?;
    sources.extend(extra);
    let broker_addr = broker_target(&config).await?;
    let broker_desc = format!("{}:{}", broker_addr.host, broker_addr.port);
    let sink_cfg = sink_config(&config, broker_addr);
    // The buffer opens before anything listens: a post accepted from now on is durable.
    let buffer = open_buffer(&config, &telemetry);
    // The device registry, for the pipeline (which keeps it) and the sinks (which start from it).
    let pipeline_cfg = pipeline::PipelineConfig::from_config(&config);
    let known = pipeline::load_known(&pipeline_cfg);

    let (tx, rx) = mpsc::channel(SOURCE_QUEUE);
    let ctx = SourceContext {
        tx,
        telemetry: telemetry.clone(),
        shutdown: shutdown.child_token(),
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
    let sink = tokio::spawn(sinks::mqtt::run(
        sink_cfg,
        known,
        buffer.reader(),
        telemetry.clone(),
        sinks_token.clone(),
    ));
    let started: Vec<(&'static str, Option<SocketAddr>)> =
        handles.iter().map(|h| (h.name, h.addr)).collect();
    let viewtron_addr = started
        .iter()
        .find(|(n, _)| *n == sources::viewtron::handler::SOURCE)
        .and_then(|(_, a)| *a);
    let task = tokio::spawn(stop_in_order(
        shutdown,
        handles,
        pipeline,
        sink,
        sinks_token,
    ));
    Ok(Running {
        viewtron_addr,
        sources: started,
        broker: broker_desc,
        telemetry,
        task,
    })
}

/// Run the bridge until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    start(config, shutdown).await?.wait().await
}

/// Wait for the shutdown (or a component ending early), then stop the stages in order.
async fn stop_in_order(
    shutdown: CancellationToken,
    sources: Vec<SourceHandle>,
    mut pipeline: JoinHandle<()>,
    mut sink: JoinHandle<Result<(), sinks::mqtt::SinkError>>,
    sinks_token: CancellationToken,
) -> Result<(), RunError> {
    let mut failure: Option<RunError> = None;
    tokio::select! {
        biased;
        () = shutdown.cancelled() => tracing::info!("shutting down"),
        r = &mut pipeline => {
            if !shutdown.is_cancelled() {
                failure = Some(ended("pipeline", r.map(|()| Ok(()))));
                shutdown.cancel();
            }
        }
        r = &mut sink => {
            if !shutdown.is_cancelled() {
                failure = Some(ended("MQTT sink", r.map(|r| r.map_err(RunError::from))));
                shutdown.cancel();
            }
        }
    }
    for s in sources {
        let name = s.name;
        match tokio::time::timeout(SOURCES_STOP, s.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => note(&mut failure, RunError::Panicked(name, e.to_string())),
            Err(_) => note(
                &mut failure,
                RunError::Stopped(format!("source {name} did not stop in time")),
            ),
        }
    }
    if !pipeline.is_finished() || failure.is_none() {
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
    if !sink.is_finished() || failure.is_none() {
        match tokio::time::timeout(SINKS_STOP, &mut sink).await {
            Ok(Ok(r)) => {
                if let Err(e) = r {
                    note(&mut failure, e.into());
                }
            }
            Ok(Err(e)) if e.is_panic() => {
                note(&mut failure, RunError::Panicked("MQTT sink", e.to_string()))
            }
            Ok(Err(_)) => {}
            Err(_) => note(
                &mut failure,
                RunError::Stopped("MQTT sink did not stop in time".into()),
            ),
        }
    }
    failure.map_or(Ok(()), Err)
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

/// The disk spool, or the memory buffer when it is off. An unusable directory (or one locked
/// by another instance) does not stop the bridge: it runs with events in memory only, and says
/// so loudly (log, `spool_errors`).
fn open_buffer(config: &Config, telemetry: &Telemetry) -> Buffer {
    let memory = || Buffer::memory(MemoryConfig::default(), telemetry.clone());
    if !config.spool.enabled {
        return memory();
    }
    match Buffer::open(SpoolConfig::from_section(&config.spool), telemetry.clone()) {
        Ok((b, _)) => b,
        Err(e) => {
            telemetry.spool_errors.inc();
            tracing::error!(error = %e, "spool unavailable; events are kept in memory only");
            memory()
        }
    }
}

/// The sources the configuration enables.
fn configured_sources(config: &Config) -> Result<Vec<Box<dyn Source>>, RunError> {
    let mut out: Vec<Box<dyn Source>> = Vec::new();
    if config.viewtron.enabled {
        out.push(Box::new(sources::viewtron::ViewtronSource(
            viewtron_config(config)?,
        )));
    }
    Ok(out)
}

fn viewtron_config(config: &Config) -> Result<sources::viewtron::ViewtronConfig, RunError> {
    // The receiver's certificate and key are read now: a bad file stops the start before
    // anything runs (broker, spool, listeners).
    let receiver_tls = match config.viewtron.tls.as_ref() {
        Some(t) if config.viewtron.enabled => Some(t.load().map_err(|e| {
            config::ConfigError::Invalid(vec![config::Problem {
                path: format!("viewtron.tls.{}", e.config_key()),
                line: None,
                message: e.to_string(),
            }])
        })?),
        _ => None,
    };
    let v = &config.viewtron;
    Ok(sources::viewtron::ViewtronConfig {
        listen: v.listen,
        http: sources::http_push::HttpConfig {
            body_limit: v.body_limit,
            header_timeout: config::secs(v.header_timeout),
            request_timeout: config::secs(v.request_timeout),
            idle_timeout: config::secs(v.idle_timeout),
            max_connections: v.max_connections,
            guard: sources::http_push::Guard::from_settings(
                v.auth.as_ref().map(|a| {
                    (
                        a.username.as_str(),
                        a.password.as_ref().map(|p| p.expose()),
                        a.password_file.as_deref(),
                    )
                }),
                &v.allow,
            )
            .map_err(|e| {
                config::ConfigError::Invalid(vec![config::Problem {
                    path: "viewtron".into(),
                    line: None,
                    message: e.to_string(),
                }])
            })?,
            tls: receiver_tls,
            ..sources::http_push::HttpConfig::default()
        },
        unparsed_body_cap: v.unparsed_body_cap,
    })
}

/// The broker to connect to: the configured one, or the embedded broker, started now.
async fn broker_target(config: &Config) -> Result<BrokerAddr, RunError> {
    Ok(match &config.mqtt.url {
        Some(url) => {
            let problem = |path: &str, message: String| {
                config::ConfigError::Invalid(vec![config::Problem {
                    path: path.into(),
                    line: None,
                    message,
                }])
            };
            let mut b =
                BrokerAddr::from_url(url).map_err(|e| problem("mqtt.url", e.to_string()))?;
            // `mqtt.username` / `mqtt.password` override the URL's.
            let m = &config.mqtt;
            if let Some(u) = &m.username {
                b.username = Some(u.clone());
            }
            if let Some(p) = &m.password {
                b.password = Some(p.expose().to_owned());
            }
            b.tls |= m.tls.enabled;
            b.tls_options = sinks::mqtt::TlsOptions {
                ca_file: m.tls.ca_file.clone(),
                cert_file: m.tls.cert_file.clone(),
                key_file: m.tls.key_file.clone(),
                server_name: m.tls.server_name.clone(),
            };
            sinks::mqtt::check_tls(&b).map_err(|e| problem("mqtt.tls", e.to_string()))?;
            b
        }
        None => {
            let addr = config.mqtt.embedded_listen;
            tracing::info!(listen = %addr, "no MQTT broker configured; starting the embedded broker");
            broker::start(
                addr,
                config
                    .mqtt
                    .max_packet_size
                    .unwrap_or(broker::DEFAULT_MAX_PACKET),
            )
            .await?;
            BrokerAddr::tcp(addr.ip().to_string(), addr.port())
        }
    })
}

fn sink_config(c: &Config, broker: BrokerAddr) -> MqttSinkConfig {
    let client_id = c
        .mqtt
        .client_id
        .clone()
        .unwrap_or_else(|| default_client_id(c.viewtron.listen.port()));
    MqttSinkConfig {
        broker,
        client_id,
        base_topic: c.mqtt.base_topic.clone(),
        keep_alive: Duration::from_secs(c.mqtt.keep_alive),
        max_packet_size: c.mqtt.max_packet_size,
        protocol: match (c.mqtt.protocol, c.mqtt.url.is_some()) {
            // The embedded broker (rumqttd) listens for MQTT 3.1.1.
            (_, false) => ProtocolChoice::V311,
            (config::MqttProtocol::Auto, true) => ProtocolChoice::Auto,
            (config::MqttProtocol::V5, true) => ProtocolChoice::V5,
            (config::MqttProtocol::V311, true) => ProtocolChoice::V311,
        },
        homeassistant: c.homeassistant.enabled.then(|| HaConfig {
            discovery_prefix: c.homeassistant.discovery_prefix.clone(),
            status_topic: c
                .homeassistant
                .status_topic
                .clone()
                .unwrap_or_else(|| format!("{}/status", c.homeassistant.discovery_prefix)),
            legacy: c.homeassistant.discovery == config::DiscoveryMode::Legacy,
            republish_delay: (Duration::from_secs(1), Duration::from_secs(5)),
            discovery_settle: config::secs(c.homeassistant.discovery_settle),
        }),
        images: ImageConfig {
            retain_category: c.images.retain_category,
            retain_device: c.images.retain_device,
            json_base64: c.images.json_base64,
        },
        off_delay: {
            let mut d = sinks::mqtt::config::default_off_delays();
            d.extend(c.off_delays());
            d
        },
        default_off_delay: Duration::from_secs(30),
        alarm_max_hold: Duration::from_secs(600),
        bridge_name: "camqtt".into(),
        state_dir: c.spool.enabled.then(|| c.spool.dir.clone()),
    }
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
