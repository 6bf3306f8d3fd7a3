//! camqtt: security-camera pushes to MQTT and Home Assistant.
//!
//! # Layout
//! Data flows one way: `sources/* → event::Message → pipeline → sinks/*`.
//! - [`event`]: the normalised model; depends on nothing else in the crate.
//! - [`sources`]: one folder per input (pure parser + thin I/O shell).
//! - [`http`]: the HTTP/1.1 receiver the push sources share.
//! - [`http_client`]: the one outbound HTTP client (reqwest, rustls with ring).
//! - [`pipeline`]: device registry, availability, filters, fan-out to sinks.
//! - [`sinks`]: MQTT with Home Assistant discovery.
//! - [`config`]: the whole configuration (TOML file, environment, command line).
//! - [`broker`]: the embedded MQTT broker used when none is configured.

pub mod addon;
pub mod broker;
pub mod config;
pub mod event;
pub mod health;
pub mod http;
pub mod http_client;
pub mod pipeline;
pub mod sinks;
pub mod sources;
pub mod spool;
pub mod stats;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::sinks::mqtt::ProtocolChoice;
use crate::sinks::mqtt::config::{BrokerAddr, HaConfig, ImageConfig, MqttSinkConfig};

/// Messages queued from the sources to the pipeline.
const SOURCE_QUEUE: usize = 64;
/// Routed messages queued from the pipeline to the MQTT sink.
const SINK_QUEUE: usize = 16;

/// Why the bridge could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Configuration problems.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The embedded broker did not start.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The MQTT sink failed.
    #[error(transparent)]
    Sink(#[from] sinks::mqtt::SinkError),
}

/// A started bridge.
pub struct Running {
    /// Address the Viewtron receiver is bound to (useful with port 0).
    pub viewtron_addr: Option<SocketAddr>,
    /// MQTT broker in use.
    pub broker: String,
    task: tokio::task::JoinHandle<Result<(), RunError>>,
}

impl Running {
    /// Wait until the bridge has stopped (after the shutdown token was cancelled).
    pub async fn wait(self) -> Result<(), RunError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "bridge task failed");
                Ok(())
            }
        }
    }
}

/// Start everything and return once the listeners are bound.
pub async fn start(mut config: Config, shutdown: CancellationToken) -> Result<Running, RunError> {
    // `password_file` keys (the environment was applied by the caller, if it wanted to).
    let mut problems = config.resolve_secrets(&|_| None, &|p| std::fs::read_to_string(p));
    problems.extend(config.validate());
    if !problems.is_empty() {
        return Err(config::ConfigError::Invalid(problems).into());
    }
    // The receiver's certificate and key are read now: a bad file stops the start before
    // anything runs (broker, spool, listeners).
    let mut receiver_tls = match config.viewtron.tls.as_ref() {
        Some(t) if config.viewtron.enabled => Some(t.load().map_err(|e| {
            config::ConfigError::Invalid(vec![config::Problem {
                path: format!("viewtron.tls.{}", e.config_key()),
                line: None,
                message: e.to_string(),
            }])
        })?),
        _ => None,
    };
    let broker_addr = match &config.mqtt.url {
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
    };
    let broker_desc = format!("{}:{}", broker_addr.host, broker_addr.port);
    let sink_cfg = sink_config(&config, broker_addr);

    // The spool opens before anything listens: a post accepted from now on is durable.
    // An unusable directory (or one locked by another instance) does not stop the bridge:
    // it runs with events in memory only, and says so loudly (log, `spool_errors`).
    let spool = if config.spool.enabled {
        match spool::Spool::open(spool::SpoolConfig::from_section(&config.spool)) {
            Ok((s, _)) => Some(s),
            Err(e) => {
                stats::stats().spool_errors.inc();
                tracing::error!(error = %e, "spool unavailable; events are kept in memory only");
                None
            }
        }
    } else {
        None
    };

    // Small queues: under load the back-pressure must reach the cameras' replies quickly,
    // and every queued message may hold megabytes of images.
    let (src_tx, src_rx) = mpsc::channel(SOURCE_QUEUE);
    let (sink_tx, sink_rx) = mpsc::channel(SINK_QUEUE);
    let sources_token = shutdown.child_token();
    let sink_token = CancellationToken::new();

    let mut viewtron_addr = None;
    let mut source_tasks = Vec::new();
    if config.viewtron.enabled {
        let v = &config.viewtron;
        let vcfg = sources::viewtron::receiver::ViewtronConfig {
            http: http::HttpConfig {
                body_limit: v.body_limit,
                header_timeout: config::secs(v.header_timeout),
                request_timeout: config::secs(v.request_timeout),
                idle_timeout: config::secs(v.idle_timeout),
                max_connections: v.max_connections,
                guard: http::Guard::from_settings(
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
                tls: receiver_tls.take(),
                ..http::HttpConfig::default()
            },
            unparsed_body_cap: v.unparsed_body_cap,
        };
        let (addr, task) = sources::viewtron::receiver::spawn(
            vcfg,
            v.listen,
            src_tx.clone(),
            sources_token.clone(),
        )
        .await
        .map_err(|source| RunError::Listen {
            addr: v.listen,
            source,
        })?;
        viewtron_addr = Some(addr);
        source_tasks.push(task);
    }
    drop(src_tx);

    let sink = match spool.clone() {
        Some(s) => tokio::spawn(sinks::mqtt::run_spooled(
            sink_cfg,
            sink_rx,
            s,
            sink_token.clone(),
        )),
        None => tokio::spawn(sinks::mqtt::run(sink_cfg, sink_rx, sink_token.clone())),
    };
    let pipeline = tokio::spawn(pipeline::run(
        pipeline::PipelineConfig::from_config(&config),
        src_rx,
        vec![sink_tx],
        spool,
        CancellationToken::new(),
    ));

    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        tracing::info!("shutting down");
        // Sources stop accepting and finish in-flight posts; the pipeline ends when every
        // source has dropped its sender; then the sink flushes and says offline.
        for t in source_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), pipeline).await;
        sink_token.cancel();
        match tokio::time::timeout(Duration::from_secs(10), sink).await {
            Ok(Ok(r)) => r.map_err(RunError::from),
            _ => Ok(()),
        }
    });
    Ok(Running {
        viewtron_addr,
        broker: broker_desc,
        task,
    })
}

/// Run the bridge until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    start(config, shutdown).await?.wait().await
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
        forget_after: Duration::from_secs(u64::from(c.homeassistant.forget_after) * 86_400),
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
