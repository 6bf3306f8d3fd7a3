//! MQTT sink with Home Assistant discovery.
//!
//! Implements the topic and entity contract of the README ("MQTT topics", "Home Assistant").
//!
//! # Layout
//! - [`config`]: the sections the sink owns (`[mqtt]`, `[homeassistant]`, `[images]`) and
//!   its runtime configuration; `broker_addr`: broker URL parsing.
//! - [`topics`]: topic layout and segment sanitising (pure).
//! - [`payload`]: event JSON, timestamps, `bridge/unparsed` (pure).
//! - [`entities`]: typed Home Assistant entities, the category catalog and the enumerator
//!   (device capabilities → entities) (pure).
//! - [`discovery`]: Home Assistant discovery payloads, rendered from entities (pure).
//! - [`state`]: the sans-IO state machine (binary states, timers, settle delay, re-publish).
//! - [`stale`]: which retained discovery configs are ours and stale (cleared on connect).
//! - [`limits`]: packet sizes, the broker's packet limit, publishes that kill the connection.
//! - `link`: the broker connection (MQTT 5, falling back to 3.1.1), the only code that knows
//!   the client library.
//! - `dead_letter`: publishes the broker will never take, kept on disk.
//! - `client`: the async shell (outbox, timers, spool reading, shutdown).

pub mod config;
pub mod discovery;
pub mod entities;
pub mod limits;
pub mod payload;
pub mod stale;
pub mod state;
pub mod topics;

mod broker_addr;
mod client;
mod dead_letter;
mod link;
mod outbox;
mod tls;

pub use link::{Protocol, ProtocolChoice};

pub use config::{
    BrokerAddr, ConfigError, HaConfig, ImageConfig, MqttSinkConfig, TlsOptions, default_off_delays,
};
pub use topics::sanitize_segment;

use tokio_util::sync::CancellationToken;

use crate::spool::BufferReader;
use crate::telemetry::Telemetry;

/// Why the sink could not run.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS could not be set up.
    #[error("MQTT TLS setup failed: {0}")]
    Tls(String),
}

/// Check that the TLS settings of `broker` are usable (files readable, PEM valid, a CA to
/// trust); a no-op without TLS. Lets a misconfiguration fail at start instead of in the sink.
pub fn check_tls(broker: &BrokerAddr) -> Result<(), SinkError> {
    if broker.tls {
        tls::client_config(&broker.tls_options)?;
    }
    Ok(())
}

/// Run the MQTT sink until `shutdown` is cancelled, reading routed messages from the buffer,
/// starting from the devices the pipeline's registry knows (`known`: they are announced
/// `offline` until they post).
///
/// Connects (and keeps reconnecting, with backoff) to the broker, publishes the bridge's
/// `online` state, `bridge/info` and Home Assistant discovery, and turns every routed message
/// into MQTT publishes, acknowledging each record to the buffer once the broker acknowledged
/// all of its publishes. An unreachable broker is not an error: records wait in the buffer. On
/// shutdown it delivers what it can within the flush time, publishes `offline` to
/// `<base>/bridge/state` and disconnects. Errors only for an unusable configuration.
pub async fn run(
    cfg: MqttSinkConfig,
    known: crate::event::KnownDevices,
    reader: BufferReader,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    client::run(cfg, known, reader, telemetry, None, shutdown).await
}

/// [`run`], also subscribing to the command topics (`<base>/+/snapshot/take`, any payload,
/// retained ones ignored) and handing each command to `commands` (the sources' channel,
/// [`crate::sources::SourceContext::commands`]); `None`: no command topics.
pub async fn run_with(
    cfg: MqttSinkConfig,
    known: crate::event::KnownDevices,
    reader: BufferReader,
    telemetry: Telemetry,
    commands: Option<tokio::sync::broadcast::Sender<crate::event::Command>>,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    client::run(cfg, known, reader, telemetry, commands, shutdown).await
}
