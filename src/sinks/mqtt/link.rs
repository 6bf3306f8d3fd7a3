//! The broker connection, protocol-neutral: MQTT 5 first, MQTT 3.1.1 where the broker refuses 5.
//!
//! Both flavours are the same client library (`rumqttc-v5-next`, `rumqttc-v4-next`); this module
//! is the only place that knows which one is in use. The shell ([`super::client`]) sees:
//! * [`Link::try_publish`] → a [`Completion`] that resolves to a [`Delivery`] (acknowledged,
//!   refused by the broker with an MQTT 5 reason code, lost with the connection, failed);
//! * [`Conn`] events from the driver task: `Up` with what the broker announced in its CONNACK
//!   (MQTT 5 §3.2.2.3: Maximum Packet Size, Receive Maximum), `Down` with the broker's
//!   DISCONNECT reason when it sent one (MQTT 5 §3.14.2.1), HA status and retained discovery.
//!
//! Protocol choice ([`ProtocolChoice::Auto`], the default): the first CONNECT is MQTT 5. A
//! broker that only speaks 3.1.1 answers it with CONNACK return code 1 ("unacceptable protocol
//! version", MQTT 3.1.1 §3.2.2.3) or closes the connection; the driver then reports
//! [`Conn::Unsupported`] and the shell starts a 3.1.1 link, which it keeps for the life of the
//! process.
//!
//! Broker nodes ([`MqttSinkConfig::nodes`]): with several (the nodes of one cluster), a failed
//! connection attempt or a dropped connection moves the link to the next node in turn at once;
//! the backoff pause comes only after every node failed once since the last connect. The link
//! stays on the node it reached (no return to the first: the nodes serve the same cluster).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use secrecy::ExposeSecret as _;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::SinkError;
use super::config::{BrokerAddr, MqttSinkConfig};
use super::stale;
use crate::telemetry::Telemetry;

/// MQTT protocol version of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Protocol {
    /// MQTT 5.0 (OASIS, 2019).
    #[serde(rename = "5")]
    V5,
    /// MQTT 3.1.1 (OASIS, 2014).
    #[serde(rename = "3.1.1")]
    V311,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::V5 => "5",
            Protocol::V311 => "3.1.1",
        })
    }
}

/// Which protocol to speak (`[mqtt] protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtocolChoice {
    /// MQTT 5, falling back to 3.1.1 when the broker refuses it.
    #[default]
    Auto,
    /// MQTT 5 only.
    V5,
    /// MQTT 3.1.1 only (the broker's packet limit is then unknown unless configured).
    V311,
}

impl ProtocolChoice {
    /// The protocol of the first connection attempt.
    pub fn first(self) -> Protocol {
        match self {
            ProtocolChoice::Auto | ProtocolChoice::V5 => Protocol::V5,
            ProtocolChoice::V311 => Protocol::V311,
        }
    }
}

/// What the broker announced when the connection came up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Protocol in use.
    pub protocol: Protocol,
    /// The broker's Maximum Packet Size in bytes (MQTT 5 CONNACK property 0x27); `None` when
    /// it announced none (no limit below the protocol maximum) or speaks 3.1.1.
    pub max_packet_size: Option<usize>,
    /// The broker's Receive Maximum (MQTT 5 CONNACK property 0x21, §3.2.2.3.3): how many QoS 1
    /// publishes it takes unacknowledged at a time (Mosquitto: its `max_inflight_messages`,
    /// 20 by default). `None` when it announced none (65,535) or speaks 3.1.1.
    pub receive_maximum: Option<u16>,
    /// Failed connection attempts before this one succeeded (0: the first attempt after the
    /// link went down succeeded, i.e. the broker was reachable all along).
    pub failed_attempts: u32,
    /// Index of the node connected to, in [`MqttSinkConfig::nodes`] order.
    pub node: usize,
    /// That node, `mqtt://host:port` ([`BrokerAddr::endpoint`]).
    pub broker: String,
}

/// What the driver reports to the shell.
#[derive(Debug)]
pub enum Conn {
    /// Connected (CONNACK success).
    Up(Session),
    /// The connection went down after having been up (the driver has logged why).
    Down {
        /// The broker's DISCONNECT said a packet was too large (MQTT 5 reason code 0x95).
        packet_too_large: bool,
        /// The shell answers once it has stopped handing publishes to the client: only then
        /// does the driver connect again (see `handed_over`).
        stopped: tokio::sync::oneshot::Sender<()>,
    },
    /// The broker refused MQTT 5 before ever accepting it (only when [`Listen::fallback`]).
    Unsupported {
        /// The node that refused ([`MqttSinkConfig::nodes`] order): the 3.1.1 link starts there.
        node: usize,
    },
    /// A message on Home Assistant's status topic.
    HaStatus(Bytes),
    /// A retained discovery config (topic, payload) seen during the stale scan.
    Retained(String, Bytes),
    /// `offline` on the bridge's own `bridge/state` ([`BridgeWatch`]).
    StateOffline,
    /// A live (not retained) `bridge/info` from another client id under the bridge's base
    /// topic: a second instance shares it ([`BridgeWatch`]).
    PeerInfo {
        /// The other bridge's client id (from its `bridge/info`; `?` when it has none).
        client_id: String,
    },
}

/// The outcome of one QoS 1 publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// PUBACK with a success reason (MQTT 5 0x00 or 0x10 "no matching subscribers").
    Acked,
    /// PUBACK with an error reason (MQTT 5 §3.4.2.1: 0x80 and above, e.g. `NotAuthorized`).
    Refused(String),
    /// The connection broke before the PUBACK (the publish may be repeated).
    Lost,
    /// Any other failure.
    Failed(String),
}

/// Resolves when the broker has answered a publish (or the link gave up on it).
pub type Completion = Pin<Box<dyn Future<Output = Delivery> + Send>>;

/// Why a publish could not be handed to the client.
#[derive(Debug)]
pub enum TryPublishError {
    /// The client's request queue is full; try again after a completion.
    Full,
    /// Refused by the client (invalid topic, client gone).
    Other(String),
}

enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc5::AsyncClient),
}

/// Aborts the driver task when dropped, so the connection closes without DISCONNECT and the
/// broker fires the last will.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One broker connection (reconnecting on its own) and its driver task.
pub struct Link {
    client: Client,
    protocol: Protocol,
    driver: AbortOnDrop,
}

/// rumqttc request channel capacity (above the shell's in-flight cap, so `try_publish` never
/// finds it full in normal operation).
const REQUEST_CAPACITY: usize = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Largest packet the bridge accepts from the broker (it only subscribes to HA's status and,
/// briefly, to discovery configs).
const INCOMING_MAX: usize = 16 * 1024 * 1024;
/// The MQTT maximum: remaining length ≤ 268,435,455 (MQTT 5 §1.5.5) plus a 5-byte header.
pub const PROTOCOL_MAX_PACKET: usize = 268_435_455 + 5;

/// Where the driver reports to, and what it listens for.
#[derive(Clone)]
pub struct Listen {
    /// Report channel.
    pub tx: mpsc::Sender<Conn>,
    /// Home Assistant's status topic, when discovery is on.
    pub ha_status: Option<String>,
    /// Discovery prefix, for the stale scan.
    pub discovery_prefix: Option<String>,
    /// Report [`Conn::Unsupported`] when the broker refuses MQTT 5 (else keep retrying).
    pub fallback: bool,
    /// The bridge's metrics (connects, connected, errors).
    pub telemetry: Telemetry,
    /// Command topics (`<base>/+/snapshot/take`) and where their commands go, when a source
    /// takes commands.
    pub commands: Option<CommandRoute>,
    /// The bridge's own topics, watched.
    pub bridge: BridgeWatch,
}

/// The bridge watches its own `<base>/bridge/state` and `<base>/bridge/info`:
/// * a live `offline` on the state while connected is the last will of an earlier connection, fired
///   late (a broker cluster fires the will of a connection that lived on a node that went
///   away when it notices, which can be after the bridge reconnected to another node): the
///   bridge publishes `online` again;
/// * a live `bridge/info` carrying another client id means a second instance uses the same
///   base topic (each instance needs its own): logged once per client id, counted
///   (`mqtt_topic_conflicts`). Retained ones are left alone: they may be an earlier run's.
#[derive(Clone, Debug)]
pub struct BridgeWatch {
    /// `<base>/bridge/state`.
    pub state: String,
    /// `<base>/bridge/info`.
    pub info: String,
    /// This bridge's client id.
    pub client_id: String,
}

/// Commands arriving on `<base>/<device>/snapshot/take` go to the sources.
#[derive(Clone)]
pub struct CommandRoute {
    /// The topic layout (recognises command topics).
    pub topics: super::topics::Topics,
    /// The sources' command channel.
    pub tx: tokio::sync::broadcast::Sender<crate::event::Command>,
}

impl Link {
    /// Build the client for `protocol` and spawn its driver; it connects on its own, to node
    /// `first` of [`MqttSinkConfig::nodes`] first (taken modulo their number).
    pub fn start(
        cfg: &MqttSinkConfig,
        will_topic: &str,
        protocol: Protocol,
        first: usize,
        listen: Listen,
    ) -> Result<Link, SinkError> {
        let endpoints: Vec<String> = cfg.nodes().map(BrokerAddr::endpoint).collect();
        let first = first % endpoints.len();
        let rc = Reconnect::new(endpoints, first, listen.telemetry.clone());
        let (client, task) = match protocol {
            Protocol::V5 => {
                let options = cfg
                    .nodes()
                    .map(|b| v5_options(cfg, b, will_topic))
                    .collect::<Result<Vec<_>, _>>()?;
                let (c, el) = rumqttc5::AsyncClient::builder(options[first].clone())
                    .capacity(REQUEST_CAPACITY)
                    .build();
                (
                    Client::V5(c),
                    tokio::spawn(drive_v5(el, options, listen, rc)),
                )
            }
            Protocol::V311 => {
                let options = cfg
                    .nodes()
                    .map(|b| v4_options(cfg, b, will_topic))
                    .collect::<Result<Vec<_>, _>>()?;
                let (c, el) = v4_client(options[first].clone());
                (
                    Client::V4(c),
                    tokio::spawn(drive_v4(el, options, listen, rc)),
                )
            }
        };
        Ok(Link {
            client,
            protocol,
            driver: AbortOnDrop(task),
        })
    }

    /// The protocol this link speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Hand a QoS 1 publish to the client without waiting.
    pub fn try_publish(
        &self,
        topic: &str,
        payload: Bytes,
        retain: bool,
    ) -> Result<Completion, TryPublishError> {
        match &self.client {
            Client::V4(c) => {
                let opts = rumqttc::PublishOptions::at_least_once().retain(retain);
                match c.try_publish_tracked(topic.to_owned(), payload, opts) {
                    Ok(notice) => Ok(Box::pin(async move {
                        match notice.wait_completion_async().await {
                            Ok(()) => Delivery::Acked,
                            Err(
                                rumqttc::PublishNoticeError::SessionReset
                                | rumqttc::PublishNoticeError::Recv,
                            ) => Delivery::Lost,
                            Err(e) => Delivery::Failed(e.to_string()),
                        }
                    })),
                    Err(rumqttc::ClientError::RequestChannelFull(_)) => Err(TryPublishError::Full),
                    Err(e) => Err(TryPublishError::Other(e.to_string())),
                }
            }
            Client::V5(c) => {
                let opts = rumqttc5::PublishOptions::at_least_once().retain(retain);
                match c.try_publish_tracked(topic.to_owned(), payload, opts) {
                    Ok(notice) => Ok(Box::pin(async move {
                        use rumqttc5::{PubAckReason, PublishNoticeError as E, PublishResult};
                        match notice.wait_async().await {
                            Ok(PublishResult::Qos1(ack)) => match ack.reason {
                                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
                                    Delivery::Acked
                                }
                                other => Delivery::Refused(format!("{other:?}")),
                            },
                            Ok(other) => Delivery::Failed(format!("unexpected result {other:?}")),
                            Err(E::SessionReset | E::Recv) => Delivery::Lost,
                            Err(E::V5PubAck(reason)) => Delivery::Refused(format!("{reason:?}")),
                            Err(E::RetainNotSupported) => {
                                Delivery::Refused("RetainNotSupported".into())
                            }
                            Err(e) => Delivery::Failed(e.to_string()),
                        }
                    })),
                    Err(rumqttc5::ClientError::RequestChannelFull(_)) => Err(TryPublishError::Full),
                    Err(e) => Err(TryPublishError::Other(e.to_string())),
                }
            }
        }
    }

    /// Subscribe (QoS 1) without waiting.
    pub fn try_subscribe(&self, filter: &str) -> Result<(), String> {
        match &self.client {
            Client::V4(c) => c
                .try_subscribe(filter.to_owned(), rumqttc::QoS::AtLeastOnce)
                .map(drop)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(filter.to_owned(), rumqttc5::QoS::AtLeastOnce)
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    }

    /// Unsubscribe without waiting.
    pub fn try_unsubscribe(&self, filter: &str) -> Result<(), String> {
        match &self.client {
            Client::V4(c) => c
                .try_unsubscribe(filter.to_owned())
                .map(drop)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_unsubscribe(filter.to_owned())
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    }

    /// Send DISCONNECT (the broker then discards the last will) and wait up to `wait` for the
    /// driver to end.
    pub async fn disconnect(mut self, wait: Duration) {
        let _ = match &self.client {
            Client::V4(c) => c
                .try_disconnect_with_timeout(Duration::from_secs(1))
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_disconnect_with_timeout(Duration::from_secs(1))
                .map_err(|e| e.to_string()),
        };
        let _ = tokio::time::timeout(wait, &mut self.driver.0).await;
    }
}

/// Credentials and TLS, the same for both client flavours (their option types have the same
/// methods but are distinct types). With a TLS server-name override the client is told that
/// name (it drives SNI and the certificate check) and a socket connector dials the real host.
macro_rules! auth_and_tls {
    ($o:ident, $b:ident, $name_override:ident, $krate:ident) => {
        match (&$b.username, &$b.password) {
            (Some(u), Some(p)) => {
                $o.set_credentials(u.clone(), Bytes::from(p.expose_secret().to_owned()));
            }
            (Some(u), None) => {
                $o.set_username(u.clone());
            }
            _ => {}
        }
        if $b.tls {
            // Built once at start (`BrokerAddr::prepare_tls`, off the runtime) and shared by
            // every link and reconnect: no file is read here.
            let tls = $b.tls_client_config()?;
            $o.set_transport($krate::Transport::tls_with_config(
                $krate::TlsConfiguration::Rustls(tls),
            ));
            if $name_override.is_some() {
                let real = socket_addr_text(&$b.host, $b.port);
                $o.set_socket_connector(move |_name, network| {
                    $krate::default_socket_connect(real.clone(), network)
                });
            }
        }
    };
}

/// Most QoS 1 publishes (and subscriptions) the client keeps unacknowledged: the sink's own
/// cap ([`super::client::MAX_IN_FLIGHT`]) and room for the subscriptions beside it.
const OUTGOING_INFLIGHT: u16 = 2 * super::client::MAX_IN_FLIGHT as u16;

/// Most queued requests (publishes, mostly) the client takes in one event-loop turn and sends
/// in one write. rumqttc's default is one per turn, and with `TCP_NODELAY` every publish was
/// then its own `writev`, TCP segment and broker wake-up; the small ones (plate, state, event
/// JSON) cost about as much kernel time each as a large one. Only requests already queued are
/// taken, so nothing waits for a batch to fill.
const REQUEST_BATCH: usize = super::client::MAX_IN_FLIGHT;

/// Build the MQTT 5 options for broker node `b`: clean start, last will, keep alive, packet
/// limits, auth, TLS.
pub(crate) fn v5_options(
    cfg: &MqttSinkConfig,
    b: &BrokerAddr,
    will_topic: &str,
) -> Result<rumqttc5::MqttOptions, SinkError> {
    let name_override = b.tls_options.server_name.clone().filter(|_| b.tls);
    let tls_host = name_override.clone().unwrap_or_else(|| b.host.clone());
    let mut o = rumqttc5::MqttOptions::new(cfg.client_id.clone(), (tls_host, b.port));
    o.set_keep_alive(keep_alive_secs(cfg));
    o.set_clean_start(true);
    // Largest packet we accept; the broker's own limit comes back in its CONNACK and the
    // client enforces it on what we send.
    o.set_max_packet_size(Some(INCOMING_MAX as u32));
    // The client sizes its in-flight table by the broker's Receive Maximum (MQTT 5
    // §3.2.2.3.3; Mosquitto says 65,535: 14 MB of slots, all touched), though the sink never
    // has more than `MAX_IN_FLIGHT` publishes out.
    o.set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT);
    o.set_max_request_batch(REQUEST_BATCH);
    o.set_network_options(network_options());
    o.set_last_will(rumqttc5::LastWill::new(
        will_topic,
        "offline",
        rumqttc5::QoS::AtLeastOnce,
        true,
        None,
    ));
    auth_and_tls!(o, b, name_override, rumqttc5);
    Ok(o)
}

/// Build the MQTT 3.1.1 options for broker node `b` (same settings; the outgoing packet limit
/// is the configured broker limit, else the protocol maximum).
pub(crate) fn v4_options(
    cfg: &MqttSinkConfig,
    b: &BrokerAddr,
    will_topic: &str,
) -> Result<rumqttc::MqttOptions, SinkError> {
    let name_override = b.tls_options.server_name.clone().filter(|_| b.tls);
    let tls_host = name_override.clone().unwrap_or_else(|| b.host.clone());
    let mut o = rumqttc::MqttOptions::new(cfg.client_id.clone(), (tls_host, b.port));
    o.set_keep_alive(keep_alive_secs(cfg));
    o.set_clean_session(true);
    o.set_max_request_batch(REQUEST_BATCH);
    o.set_max_packet_size(
        INCOMING_MAX,
        cfg.max_packet_size.unwrap_or(PROTOCOL_MAX_PACKET),
    );
    o.set_last_will(rumqttc::LastWill::new(
        will_topic,
        "offline",
        rumqttc::QoS::AtLeastOnce,
        true,
    ));
    auth_and_tls!(o, b, name_override, rumqttc);
    Ok(o)
}

/// The MQTT 3.1.1 client and its event loop, which (unlike MQTT 5's) keeps the TCP options.
fn v4_client(options: rumqttc::MqttOptions) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (c, mut el) = rumqttc::AsyncClient::builder(options)
        .capacity(REQUEST_CAPACITY)
        .build();
    el.set_network_options(network_options());
    (c, el)
}

/// TCP options of the broker connection: `TCP_NODELAY`, Nagle's algorithm (RFC 896) off.
/// With it on, a small publish (state, event JSON) written while an image's last segment is
/// unacknowledged waited for that ACK, which the broker may delay (RFC 1122 §4.2.3.2: up to
/// 500 ms, Linux about 40 ms); the camera's reply waited with it. Measured on the benchmark
/// (487 kB and 946 kB posts, 16 connections): reply p99 51–55 ms → 16–32 ms, and up to twice
/// the events/s when fewer image bytes go out (`images.category_topic = false`).
fn network_options() -> rumqttc::NetworkOptions {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n
}

fn keep_alive_secs(cfg: &MqttSinkConfig) -> u16 {
    u16::try_from(cfg.keep_alive.as_secs().max(5)).unwrap_or(u16::MAX)
}

fn socket_addr_text(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Turn an incoming PUBLISH into a report: HA status, or a retained discovery config of the
/// stale scan; a command goes straight to the sources. Everything else is ignored.
fn incoming(listen: &Listen, topic: &[u8], payload: Bytes, retain: bool) -> Option<Conn> {
    if let Some(route) = &listen.commands
        && let Some(cmd) = std::str::from_utf8(topic)
            .ok()
            .and_then(|t| route.topics.command(t))
    {
        // A retained command would fire again on every reconnect (HA's MQTT docs: command
        // topics are never retained); only live ones count.
        if retain {
            warn!(topic = %String::from_utf8_lossy(topic), "retained command ignored (clear it with an empty retained message)");
        } else {
            listen.telemetry.commands.inc();
            match &cmd {
                crate::event::Command::TakeSnapshot { device } => {
                    info!(command = "take_snapshot", device = %device, "command received")
                }
            }
            // No receiver left: the bridge is stopping.
            let _ = route.tx.send(cmd);
        }
        return None;
    }
    if listen
        .ha_status
        .as_deref()
        .is_some_and(|t| topic == t.as_bytes())
    {
        return Some(Conn::HaStatus(payload));
    }
    if topic == listen.bridge.state.as_bytes() {
        // A retained `offline` comes with the subscription after a connect, and the bridge's
        // own `online` (published on every connect) follows it anyway.
        return (!retain && payload.as_ref() == b"offline").then_some(Conn::StateOffline);
    }
    if topic == listen.bridge.info.as_bytes() {
        if retain {
            return None;
        }
        return info_client_id(&payload)
            .filter(|id| *id != listen.bridge.client_id)
            .map(|client_id| Conn::PeerInfo { client_id });
    }
    let prefix = listen.discovery_prefix.as_deref()?;
    let topic = std::str::from_utf8(topic).ok()?;
    (retain && stale::config_object_id(prefix, topic).is_some())
        .then(|| Conn::Retained(topic.to_owned(), payload))
}

/// The `client_id` of a `bridge/info` payload; `?` for JSON without one, `None` for what is not
/// JSON.
fn info_client_id(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Info {
        client_id: Option<String>,
    }
    let info: Info = serde_json::from_slice(payload).ok()?;
    Some(info.client_id.unwrap_or_else(|| "?".to_owned()))
}

/// Report a drop to the shell and wait until it has taken it in; `false` when the shell is
/// gone. Until then the shell may still hand publishes to the client; they must not go out on
/// the next connection ahead of the records the shell replays (they would overtake them, and
/// a failover connects at once), so the driver fails them (`clean`, then
/// `drain_pending_as_failed`) only after this, right before connecting again.
async fn handed_over(listen: &Listen, packet_too_large: bool) -> bool {
    let (stopped, taken) = tokio::sync::oneshot::channel();
    let down = Conn::Down {
        packet_too_large,
        stopped,
    };
    listen.tx.send(down).await.is_ok() && taken.await.is_ok()
}

/// Reconnect bookkeeping shared by both drivers: which node, backoff, one log line per outage.
struct Reconnect {
    /// The nodes, `mqtt://host:port`.
    nodes: Vec<String>,
    /// Index of the node in use or being tried.
    current: usize,
    /// The node of the last connection, once there was one.
    last_up: Option<usize>,
    /// Failed attempts since the last connect or the last pause.
    tried: usize,
    /// The move to another node was logged in this outage.
    switch_logged: bool,
    telemetry: Telemetry,
    backoff: Duration,
    up: bool,
    in_outage: bool,
    failed: u32,
    ever_up: bool,
    since: Instant,
}

impl Reconnect {
    fn new(nodes: Vec<String>, first: usize, telemetry: Telemetry) -> Self {
        Reconnect {
            nodes,
            current: first,
            last_up: None,
            tried: 0,
            switch_logged: false,
            telemetry,
            backoff: MIN_BACKOFF,
            up: false,
            in_outage: false,
            failed: 0,
            ever_up: false,
            since: Instant::now(),
        }
    }

    /// The node in use or being tried.
    fn broker(&self) -> &str {
        &self.nodes[self.current]
    }

    fn connected(
        &mut self,
        protocol: Protocol,
        max_packet_size: Option<usize>,
        receive_maximum: Option<u16>,
    ) -> Session {
        let s = Session {
            protocol,
            max_packet_size,
            receive_maximum,
            failed_attempts: self.failed,
            node: self.current,
            broker: self.broker().to_owned(),
        };
        self.up = true;
        let first = !std::mem::replace(&mut self.ever_up, true);
        self.backoff = MIN_BACKOFF;
        self.failed = 0;
        self.tried = 0;
        self.switch_logged = false;
        self.telemetry.mqtt_connects.inc();
        self.telemetry.mqtt_connected.set(1);
        let previous = self.last_up.replace(self.current);
        let limit = max_packet_size.map_or_else(|| "none".to_owned(), |n| n.to_string());
        let receive = receive_maximum.map_or_else(|| "none".to_owned(), |n| n.to_string());
        let broker = self.broker();
        match previous {
            Some(p) if p != self.current => {
                self.telemetry.mqtt_failovers.inc();
                info!(broker = %broker, previous = %self.nodes[p], protocol = %protocol, broker_max_packet = %limit, broker_receive_maximum = %receive, down_s = self.since.elapsed().as_secs(), "MQTT connected to another broker node (failover)");
            }
            _ if self.in_outage && !first => {
                info!(broker = %broker, protocol = %protocol, broker_max_packet = %limit, broker_receive_maximum = %receive, down_s = self.since.elapsed().as_secs(), "MQTT connection restored");
            }
            _ => {
                info!(broker = %broker, protocol = %protocol, broker_max_packet = %limit, broker_receive_maximum = %receive, "MQTT connected");
            }
        }
        self.in_outage = false;
        s
    }

    /// The link failed; when it had been up, returns whether the broker said a packet was
    /// too large (for the `Down` report).
    fn failed(&mut self, error: &str, broker_reason: Option<String>) -> Option<bool> {
        self.telemetry.mqtt_connected.set(0);
        let was_up = std::mem::replace(&mut self.up, false);
        let broker = &self.nodes[self.current];
        if self.in_outage {
            self.failed += 1;
            debug!(broker = %broker, error = %error, "MQTT reconnect failed");
        } else {
            self.in_outage = true;
            self.since = Instant::now();
            if !was_up {
                self.failed += 1;
            }
            self.telemetry.mqtt_errors.inc();
            let next = if self.nodes.len() > 1 {
                "trying the next broker node"
            } else {
                "reconnecting with backoff"
            };
            match &broker_reason {
                Some(r) => {
                    warn!(broker = %broker, error = %error, broker_reason = %r, next, "MQTT broker closed the connection")
                }
                None => {
                    warn!(broker = %broker, error = %error, next, "MQTT broker unavailable")
                }
            }
        }
        was_up.then(|| broker_reason.as_deref() == Some("PacketTooLarge"))
    }

    /// After a failed attempt or a dropped connection: waits ([`Reconnect::next_step`]), then
    /// returns the node to switch to, if any.
    async fn advance(&mut self) -> Option<usize> {
        let (wait, next) = self.next_step();
        if let Some(d) = wait {
            tokio::time::sleep(d).await;
        }
        next
    }

    /// The next step after a failed attempt or a dropped connection: the backoff pause to take
    /// first, once every node failed since the last connect or the last pause (doubling, up to
    /// [`MAX_BACKOFF`]); and the node to switch to, the next one in turn, when there are
    /// several.
    fn next_step(&mut self) -> (Option<Duration>, Option<usize>) {
        self.tried += 1;
        let mut wait = None;
        if self.tried >= self.nodes.len() {
            self.tried = 0;
            wait = Some(self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
        if self.nodes.len() == 1 {
            return (wait, None);
        }
        let from = self.current;
        self.current = (self.current + 1) % self.nodes.len();
        if self.switch_logged {
            debug!(from = %self.nodes[from], to = %self.broker(), "MQTT trying the next broker node");
        } else {
            self.switch_logged = true;
            info!(from = %self.nodes[from], to = %self.broker(), "MQTT trying the next broker node");
        }
        (wait, Some(self.current))
    }
}

/// Poll the MQTT 5 event loop forever; report connection changes and interesting messages.
/// `options` holds each node's options (the event loop starts with those of `rc.current`).
async fn drive_v5(
    mut el: rumqttc5::EventLoop,
    options: Vec<rumqttc5::MqttOptions>,
    listen: Listen,
    mut rc: Reconnect,
) {
    use rumqttc5::{ConnectionError, Event, Packet};
    let mut broker_reason: Option<String> = None;
    loop {
        let report = match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                broker_reason = None;
                let props = ack.properties.as_ref();
                let max = props.and_then(|p| p.max_packet_size).map(|n| n as usize);
                let receive = props.and_then(|p| p.receive_max);
                Some(Conn::Up(rc.connected(Protocol::V5, max, receive)))
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                incoming(&listen, &p.topic, p.payload, p.retain)
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                broker_reason = Some(format!("{:?}", d.reason_code));
                None
            }
            Ok(_) => None,
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                // Nothing queued for the broken connection may go out on the next one: it
                // would overtake what the sink replays. Fail it all now.
                el.clean();
                el.drain_pending_as_failed(rumqttc5::NoticeFailureReason::SessionReset);
                if listen.fallback && !rc.ever_up && refuses_v5(&e) {
                    listen.telemetry.mqtt_connected.set(0);
                    info!(broker = %rc.broker(), error = %e, "MQTT broker refused MQTT 5; trying MQTT 3.1.1");
                    let _ = listen.tx.send(Conn::Unsupported { node: rc.current }).await;
                    return;
                }
                let down = rc.failed(&e.to_string(), broker_reason.take());
                if let Some(too_large) = down
                    && !handed_over(&listen, too_large).await
                {
                    return;
                }
                if let Some(next) = rc.advance().await {
                    el.options = options[next].clone();
                }
                el.clean();
                el.drain_pending_as_failed(rumqttc5::NoticeFailureReason::SessionReset);
                None
            }
        };
        if let Some(r) = report
            && listen.tx.send(r).await.is_err()
        {
            return;
        }
    }
}

/// The broker's answer to a v5 CONNECT says it does not speak MQTT 5: CONNACK "unacceptable
/// protocol version" (3.1.1 return code 1 / MQTT 5 reason 0x84), a CONNACK that does not parse
/// as MQTT 5, or the connection closed right after the CONNECT.
fn refuses_v5(e: &rumqttc5::ConnectionError) -> bool {
    use rumqttc5::{ConnectReturnCode, ConnectionError};
    matches!(
        e,
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::RefusedProtocolVersion
                | ConnectReturnCode::UnsupportedProtocolVersion
        ) | ConnectionError::MqttState(rumqttc5::StateError::Deserialization(_))
            | ConnectionError::NotConnAck(_)
    ) || is_closed_after_connect(e)
}

/// A v5 CONNECT answered by the connection closing (a 3.1.1-only broker that does not send the
/// refusal CONNACK): end of file or reset, not a refused TCP connection.
fn is_closed_after_connect(e: &rumqttc5::ConnectionError) -> bool {
    match e {
        rumqttc5::ConnectionError::MqttState(rumqttc5::StateError::ConnectionAborted) => true,
        rumqttc5::ConnectionError::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ),
        rumqttc5::ConnectionError::MqttState(rumqttc5::StateError::Io(io)) => matches!(
            io.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ),
        _ => false,
    }
}

/// Poll the MQTT 3.1.1 event loop forever; report connection changes and interesting messages.
/// `options` holds each node's options (the event loop starts with those of `rc.current`).
async fn drive_v4(
    mut el: rumqttc::EventLoop,
    options: Vec<rumqttc::MqttOptions>,
    listen: Listen,
    mut rc: Reconnect,
) {
    use rumqttc::{ConnectionError, Event, Packet};
    loop {
        let report = match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                Some(Conn::Up(rc.connected(Protocol::V311, None, None)))
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                incoming(&listen, &p.topic, p.payload, p.retain)
            }
            Ok(_) => None,
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                el.clean();
                el.drain_pending_as_failed(rumqttc::NoticeFailureReason::SessionReset);
                if rc.failed(&e.to_string(), None).is_some() && !handed_over(&listen, false).await {
                    return;
                }
                if let Some(next) = rc.advance().await {
                    el.mqtt_options = options[next].clone();
                }
                el.clean();
                el.drain_pending_as_failed(rumqttc::NoticeFailureReason::SessionReset);
                None
            }
        };
        if let Some(r) = report
            && listen.tx.send(r).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::mqtt::config::BrokerAddr;

    fn cfg(url: &str) -> MqttSinkConfig {
        let mut c = MqttSinkConfig::new(BrokerAddr::from_url(url).unwrap());
        c.client_id = "cid".into();
        c
    }

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("mqtt://n{i}:1883")).collect()
    }

    #[test]
    fn one_broker_waits_with_doubling_backoff_and_never_switches() {
        let mut rc = Reconnect::new(nodes(1), 0, Telemetry::new());
        assert_eq!(rc.next_step(), (Some(MIN_BACKOFF), None));
        assert_eq!(rc.next_step(), (Some(MIN_BACKOFF * 2), None));
        for _ in 0..20 {
            rc.next_step();
        }
        assert_eq!(rc.next_step(), (Some(MAX_BACKOFF), None));
    }

    #[test]
    fn failover_goes_to_the_next_node_at_once_and_waits_after_a_full_round() {
        let t = Telemetry::new();
        let mut rc = Reconnect::new(nodes(3), 0, t.clone());
        // Node 0 unreachable at start: nodes 1 and 2 are tried at once, then a pause before
        // node 0 again.
        assert_eq!(rc.next_step(), (None, Some(1)));
        assert_eq!(rc.next_step(), (None, Some(2)));
        assert_eq!(rc.next_step(), (Some(MIN_BACKOFF), Some(0)));
        assert_eq!(rc.next_step(), (None, Some(1)));
        let s = rc.connected(Protocol::V311, None, None);
        assert_eq!((s.node, s.broker.as_str()), (1, "mqtt://n1:1883"));
        // The first connection is no failover.
        assert_eq!(t.values()["mqtt_failovers"], 0);
        // Node 1 goes away: straight to node 2, which takes the bridge (a failover), with the
        // backoff back at its minimum.
        assert_eq!(rc.failed("reset", None), Some(false));
        assert_eq!(rc.next_step(), (None, Some(2)));
        let s = rc.connected(Protocol::V311, None, None);
        assert_eq!(s.node, 2);
        assert_eq!(t.values()["mqtt_failovers"], 1);
        assert_eq!(rc.failed("reset", None), Some(false));
        assert_eq!(rc.next_step(), (None, Some(0)));
        assert_eq!(rc.next_step(), (None, Some(1)));
        assert_eq!(rc.next_step(), (Some(MIN_BACKOFF), Some(2)));
        // Back on the same node after a round: reconnected, not failed over.
        rc.connected(Protocol::V311, None, None);
        assert_eq!(t.values()["mqtt_failovers"], 1);
    }

    #[test]
    fn bridge_info_from_another_client_id_is_a_conflict_and_our_own_is_not() {
        assert_eq!(
            info_client_id(br#"{"client_id":"other","devices":[]}"#).as_deref(),
            Some("other")
        );
        assert_eq!(info_client_id(b"{}").as_deref(), Some("?"));
        assert_eq!(info_client_id(b"not json"), None);
        let (tx, _rx) = mpsc::channel(1);
        let listen = Listen {
            tx,
            ha_status: None,
            discovery_prefix: None,
            fallback: false,
            telemetry: Telemetry::new(),
            commands: None,
            bridge: BridgeWatch {
                state: "camera/bridge/state".into(),
                info: "camera/bridge/info".into(),
                client_id: "me".into(),
            },
        };
        let info = |id: &str| Bytes::from(format!(r#"{{"client_id":"{id}"}}"#));
        assert!(matches!(
            incoming(&listen, b"camera/bridge/info", info("other"), false),
            Some(Conn::PeerInfo { client_id }) if client_id == "other"
        ));
        assert!(incoming(&listen, b"camera/bridge/info", info("me"), false).is_none());
        // Retained: an earlier run's, not a live second instance.
        assert!(incoming(&listen, b"camera/bridge/info", info("other"), true).is_none());
        assert!(matches!(
            incoming(
                &listen,
                b"camera/bridge/state",
                Bytes::from_static(b"offline"),
                false
            ),
            Some(Conn::StateOffline)
        ));
        assert!(
            incoming(
                &listen,
                b"camera/bridge/state",
                Bytes::from_static(b"online"),
                false
            )
            .is_none()
        );
        // A retained `offline` (the will, with the subscription): the bridge's own `online`
        // follows on every connect anyway.
        let retained_offline = Bytes::from_static(b"offline");
        assert!(incoming(&listen, b"camera/bridge/state", retained_offline, true).is_none());
    }

    #[test]
    fn mqtt5_options_set_will_session_and_limits() {
        let o = {
            let c = cfg("mqtt://u:p@127.0.0.1:1999");
            v5_options(&c, &c.broker, "camera/bridge/state")
        }
        .unwrap();
        assert_eq!(o.client_id(), "cid");
        assert!(o.clean_start());
        assert_eq!(o.keep_alive(), Duration::from_secs(30));
        assert_eq!(o.max_packet_size(), Some(INCOMING_MAX as u32));
        let will = o.last_will().expect("last will");
        assert_eq!(will.topic.as_ref(), b"camera/bridge/state");
        assert_eq!(will.message.as_ref(), b"offline");
        assert!(will.retain);
        assert_eq!(will.qos, rumqttc5::QoS::AtLeastOnce);
    }

    #[test]
    fn mqtt311_options_set_will_and_session() {
        // (The outgoing limit has no getter; tests/broker_limits.rs checks it against Mosquitto.)
        let o = {
            let c = cfg("mqtt://127.0.0.1:1999");
            v4_options(&c, &c.broker, "camera/bridge/state")
        }
        .unwrap();
        assert_eq!(o.max_packet_size(), INCOMING_MAX);
        assert!(o.clean_session());
        let will = o.last_will().expect("last will");
        assert_eq!(will.topic, "camera/bridge/state");
        assert!(will.retain);
    }

    /// The TLS files are read once, when the broker is resolved at start; starting a link (the
    /// first, the MQTT 3.1.1 fallback) reuses that configuration and reads nothing, so it
    /// neither blocks the runtime nor fails when a file changed since.
    #[test]
    fn links_reuse_the_tls_configuration_built_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&ca_file, params.self_signed(&key).unwrap().pem()).unwrap();
        let section: crate::config::MqttSection = toml::from_str(&format!(
            "url = \"mqtts://127.0.0.1:18883\"\n[tls]\nca_file = {ca_file:?}\n"
        ))
        .unwrap();
        let broker = section.brokers().expect("CA loads").remove(0);
        std::fs::remove_file(&ca_file).unwrap();
        let mut c = MqttSinkConfig::new(broker);
        c.client_id = "cid".into();
        let o = v5_options(&c, &c.broker, "t").expect("no file read at link start");
        assert!(!matches!(o.transport(), rumqttc5::Transport::Tcp));
        let o = v4_options(&c, &c.broker, "t").expect("no file read at link start");
        assert!(!matches!(o.transport(), rumqttc::Transport::Tcp));
        // Options changed after start (code): built from them, not the stale configuration.
        c.broker.tls_options.ca_file = Some(dir.path().join("other.pem"));
        assert!(matches!(
            v5_options(&c, &c.broker, "t"),
            Err(SinkError::Tls(_))
        ));
    }

    #[tokio::test]
    async fn both_protocols_connect_with_nagle_off() {
        let c = cfg("mqtt://127.0.0.1:1883");
        let nodelay = |n: rumqttc::NetworkOptions| format!("{n:?}").contains("tcp_nodelay: true");
        let o = v5_options(&c, &c.broker, "t").unwrap();
        assert!(nodelay(o.network_options()));
        let (_client, el) = v4_client(v4_options(&c, &c.broker, "t").unwrap());
        assert!(nodelay(el.network_options()));
        assert!(
            !nodelay(rumqttc::NetworkOptions::new()),
            "the check can fail"
        );
    }

    #[test]
    fn tls_is_configured_or_reports_an_error() {
        let c = cfg("mqtts://broker.example");
        match v5_options(&c, &c.broker, "t") {
            Ok(o) => assert!(!matches!(o.transport(), rumqttc5::Transport::Tcp)),
            Err(e) => assert!(matches!(e, SinkError::Tls(_)), "{e}"),
        }
    }
}
