//! Embedded MQTT broker (rumqttd), started when no broker URL is configured so that one
//! command runs the whole bridge on a fresh machine. Mosquitto (or the Home Assistant
//! add-on) is the normal path; this is the zero-setup default.

use std::net::SocketAddr;

use crate::config::Problem;
use crate::sinks::mqtt::config::{BrokerAddr, MqttSection};

/// The embedded broker's packet limit when `[mqtt] max_packet_size` is not set.
pub const DEFAULT_MAX_PACKET: usize = 64 * 1024 * 1024;

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The address is already taken (another broker is probably running there). One message
    /// with the cause and the fix; the I/O error is part of it, not a separate source (which
    /// `{:#}` would print a second time).
    #[error(
        "the embedded MQTT broker cannot listen on {addr} ({error}){}",
        bind_hint(.error)
    )]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        error: std::io::Error,
    },
    /// The broker's thread could not be started.
    #[error("cannot start the embedded MQTT broker's thread: {0}")]
    Thread(std::io::Error),
    /// The binary was built without the `broker` feature.
    #[error("this build has no embedded broker (cargo feature `broker`); configure --mqtt-url")]
    NotBuilt,
    /// The broker did not come up.
    #[error("embedded broker did not start listening on {0}")]
    NotListening(SocketAddr),
}

/// The fix for a port that is taken: use that broker, or move the embedded one.
fn bind_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            ": another MQTT broker is probably running there; to use it set [mqtt] url (or --mqtt-url / CAMQTT_MQTT_URL), or move the embedded broker with mqtt.embedded_listen"
        }
        _ => ": set [mqtt] url to use an existing broker, or change mqtt.embedded_listen",
    }
}

/// Start the embedded broker on `addr` in its own threads; returns once it accepts connections.
///
/// rumqttd has no shutdown API: the broker lives until the process exits. Retained messages are
/// kept in memory only; the bridge re-publishes discovery and states whenever it connects.
#[cfg(feature = "broker")]
pub async fn start(addr: SocketAddr, max_payload: usize) -> Result<(), BrokerError> {
    // Probe first so that a taken port gives a clear error instead of a panic in a broker thread.
    drop(std::net::TcpListener::bind(addr).map_err(|error| BrokerError::Bind { addr, error })?);
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            max_segment_size: max_payload.saturating_mul(4).max(100 * 1024 * 1024),
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(std::collections::HashMap::from([(
            "camqtt".to_string(),
            rumqttd::ServerSettings {
                name: "camqtt-embedded".to_string(),
                listen: addr,
                tls: None,
                next_connection_delay_ms: 1,
                connections: rumqttd::ConnectionSettings {
                    connection_timeout_ms: 60_000,
                    max_payload_size: max_payload,
                    max_inflight_count: 500,
                    auth: None,
                    external_auth: None,
                    dynamic_filters: true,
                },
            },
        )])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(error) = broker.start() {
                tracing::error!(%error, "embedded broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    for _ in 0..100 {
        // A bare TCP probe makes rumqttd log an error, so probe by trying to bind instead.
        if std::net::TcpListener::bind(addr).is_err() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Err(BrokerError::NotListening(addr))
}

/// Without the `broker` feature there is nothing to start.
#[cfg(not(feature = "broker"))]
pub async fn start(_addr: SocketAddr, _max_payload: usize) -> Result<(), BrokerError> {
    Err(BrokerError::NotBuilt)
}

/// The broker nodes the MQTT sink connects to, never empty: the ones `[mqtt] url` names, in
/// order (credentials and TLS applied, TLS files checked), or, without a URL, the embedded
/// broker, started now on `mqtt.embedded_listen` with `mqtt.max_packet_size` (default
/// [`DEFAULT_MAX_PACKET`]) as its packet limit. Errors: a bad URL or TLS file (as a
/// configuration problem), or the embedded broker not starting.
pub async fn target(mqtt: &MqttSection) -> Result<Vec<BrokerAddr>, TargetError> {
    // `broker` reads the TLS files (and the system's CA certificates) and keeps the TLS
    // client configuration it builds for every connection of the sink: off the runtime.
    let section = mqtt.clone();
    let named = tokio::task::spawn_blocking(move || section.brokers())
        .await
        .map_err(|e| {
            TargetError::Config(Problem::new(
                "mqtt.tls",
                format!("loading the TLS files failed: {e}"),
            ))
        })??;
    if !named.is_empty() {
        return Ok(named);
    }
    let addr = mqtt.embedded_listen;
    tracing::info!(listen = %addr, "no MQTT broker configured; starting the embedded broker");
    start(addr, mqtt.max_packet_size.unwrap_or(DEFAULT_MAX_PACKET)).await?;
    Ok(vec![BrokerAddr::tcp(addr.ip().to_string(), addr.port())])
}

/// Why [`target`] has no broker.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `[mqtt]` names an unusable broker (URL, TLS files).
    #[error(transparent)]
    Config(#[from] Problem),
    /// The embedded broker did not start.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}
