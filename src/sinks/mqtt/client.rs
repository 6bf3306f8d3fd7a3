//! The async shell around [`SinkState`]: reads records from the buffer, publishes, handles the
//! broker link, timers and shutdown.
//!
//! Two tasks:
//! * the **driver** ([`super::link`]) polls the client library's event loop on its own, so
//!   publishing never waits for the network; it reconnects with backoff (logged once per
//!   outage) and reports `Up` (with what the broker announced), `Down`, and HA status messages;
//! * the **sink loop** ([`run`]) reads records from the buffer ([`BufferReader`]) while the
//!   broker is connected and only as fast as it acknowledges, runs the state machine, and feeds
//!   the resulting publishes from the outbox to the client, at most [`MAX_IN_FLIGHT`] at a
//!   time and never more than the broker's Receive Maximum.
//!   Every publish is QoS 1 and tracked; a record is acknowledged to the buffer once all
//!   of its publishes were. A broken connection makes the buffer replay every unacknowledged
//!   record (at-least-once; duplicates counted).
//!
//! What the broker can never take never blocks the queue (DESIGN §5):
//! * every publish is measured against the packet limit in force ([`PacketLimit`]: the
//!   configured `max_packet_size`, the broker's MQTT 5 CONNACK, or a learned one) and one that
//!   does not fit is skipped before sending (logged once per topic, counted);
//! * a publish the broker refuses (MQTT 5 PUBACK reason ≥ 0x80) is set aside;
//! * a connection that drops with publishes in flight while the broker takes the bridge straight
//!   back makes those publishes suspects: they are sent again one at a time, and one that is
//!   alone in flight at the next drop is set aside ([`KillGuard`]). Set-aside publishes are
//!   counted, reported on `bridge/unparsed` and kept on disk ([`DeadLetters`]).
//!
//! While the broker is away, states are not queued ([`SinkState::on_connected`] re-publishes
//! the current ones) and records stay in the buffer; the loop tells the buffer whether it is
//! draining, which lets the buffer hold back the pipeline while connected (back-pressure, see
//! [`crate::spool`]).
//!
//! The sink starts from the devices the pipeline's registry knows ([`KnownDevices`]). After
//! every connect with Home Assistant discovery enabled, the loop collects retained discovery
//! for [`stale::SCAN_WINDOW`] and clears what is ours and stale ([`SinkState::clear_stale`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use rand::Rng as _;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::SinkError;
use super::config::{BrokerAddr, MqttSinkConfig};
use super::dead_letter::{DeadLetters, Letter};
use super::limits::{KillGuard, PacketLimit, PublishKey, Verdict};
use super::link::{
    BridgeWatch, CommandRoute, Completion, Conn, Delivery, Link, Listen, Protocol, ProtocolChoice,
    Session, TryPublishError,
};
use super::outbox::{Outbox, Pending};
use super::payload::unparsed_json;
use super::stale;
use super::state::{Action, SinkState};
use crate::event::{Command, KnownDevices, Unparsed};
use crate::spool::acks::Tag;
use crate::spool::{BufferReader, Next};
use crate::telemetry::Telemetry;

/// Publishes handed to the client and not yet acknowledged, at most (fewer when the broker's
/// Receive Maximum is lower: [`Session::receive_maximum`]).
pub const MAX_IN_FLIGHT: usize = 64;
/// How long shutdown waits for the outbox and the `offline` publish.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);
/// Record reading stops while this many publishes wait in the outbox.
const READ_AHEAD: usize = 128;
/// Record reading stops while this many records are read and not yet delivered.
const MAX_OPEN: usize = 512;
/// Records read per loop turn (other work gets served in between).
const READ_BATCH: usize = 32;
/// Buffer housekeeping period (age bound, ledger write).
const MAINTAIN: Duration = Duration::from_millis(250);
/// Topics remembered as already warned about (oversize); beyond this the set is cleared, so
/// a warning may repeat.
const WARNED_MAX: usize = 4096;

/// The outcome of a publish handed to the client, with its id in `Shell::flying`. Polled in
/// the sink loop's own task (a `FuturesUnordered`), not spawned: the outcome arrives on a
/// channel from the client's event loop, and a task per publish cost an allocation and a
/// scheduler round trip for each of an event's eight publishes.
struct Flight {
    id: u64,
    done: Completion,
}

impl std::future::Future for Flight {
    type Output = (u64, Delivery);

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let id = self.id;
        self.done.as_mut().poll(cx).map(|d| (id, d))
    }
}

/// A publish handed to the client.
struct Flying {
    pending: Pending,
    key: PublishKey,
    sent: Instant,
}

/// Timers of the loop other than the state machine's.
#[derive(Default)]
struct Timers {
    /// Re-publish discovery after Home Assistant came online.
    ha_republish_at: Option<Instant>,
    /// The stale-discovery scan after a connect.
    scan: Option<Scan>,
}

/// Retained discovery collected after a connect.
struct Scan {
    until: Instant,
    found: BTreeMap<String, Bytes>,
}

/// The shell.
struct Shell {
    link: Link,
    choice: ProtocolChoice,
    listen: Listen,
    will_topic: String,
    unparsed_topic: String,
    /// The broker node in use or last used (`mqtt://host:port`).
    broker: String,
    /// Its index in [`MqttSinkConfig::nodes`], once connected.
    node: Option<usize>,
    /// Client ids already warned about publishing under this bridge's base topic.
    conflicts: HashSet<String>,
    outbox: Outbox,
    in_flight: FuturesUnordered<Flight>,
    /// Publishes this connection may have in flight: [`MAX_IN_FLIGHT`], or the broker's
    /// Receive Maximum when that is lower (Mosquitto's is 20). Beyond it the client only
    /// queues them and sends each one alone, in its own socket write, as an acknowledgement
    /// frees a slot: eight writes per camera event. Within it, what the sink hands over
    /// together goes out in one write ([`Shell::completed_ready`], the client's request
    /// batch). Refilling only after several acknowledgements was tried: against Mosquitto it
    /// stalled (a tenth of the rate, replies 100 ms late), most likely because a broker with
    /// Nagle's algorithm on (Mosquitto's default) holds its next PUBACK until our TCP
    /// acknowledgement, which the kernel delays (~40 ms) while we send nothing.
    window: usize,
    flying: HashMap<u64, Flying>,
    next_id: u64,
    connected: bool,
    limit: PacketLimit,
    guard: KillGuard,
    /// Publishes lost with the last connection (judged once it is back up).
    lost: Vec<Flying>,
    /// Topics already warned about (oversize).
    warned: HashSet<String>,
    dead: DeadLetters,
    reader: BufferReader,
    /// Records may be waiting (set on append notifications, reconnects, housekeeping).
    more: bool,
    telemetry: Telemetry,
}

impl Shell {
    /// Queue the publishes of the state machine; `seq` charges them to a buffer record.
    fn enqueue(&mut self, actions: Vec<Action>, seq: Option<u64>) {
        for a in actions {
            let mut p = Pending::from(a);
            if !(self.connected || p.momentary) {
                continue;
            }
            p.tag = seq.map(|s| self.reader.add(s));
            let dropped = self.outbox.push_back(p);
            self.telemetry.dropped.add(dropped);
        }
    }

    /// Read records (while connected and below the read-ahead limits) and turn them into
    /// publishes.
    fn read(&mut self, st: &mut SinkState) {
        for _ in 0..READ_BATCH {
            if !self.connected
                || !self.more
                || self.outbox.len() >= READ_AHEAD
                || self.reader.open_records() >= MAX_OPEN
            {
                break;
            }
            match self.reader.next_record() {
                Next::Empty | Next::Filling => {
                    self.more = false;
                    break;
                }
                Next::Record(seq, msg) => {
                    if let Some(m) = msg {
                        let acts = st.on_routed(&m, Instant::now());
                        self.enqueue(acts, Some(seq));
                        if st.has_held() {
                            self.reader.hold(seq);
                        }
                    }
                }
            }
        }
        self.reader.release();
    }

    fn ack(&mut self, tag: Option<Tag>, acked: bool) {
        if let Some(tag) = tag {
            self.reader.done(tag, acked);
        }
    }

    /// The connection broke: replay every unacknowledged record once it is back (and forget
    /// the settle queues' copies of their publishes, [`SinkState::forget_held`]).
    fn rewind(&mut self, st: &mut SinkState) {
        st.forget_held();
        let (again, dup) = self.reader.rewind();
        self.more = true;
        self.outbox.drop_tagged();
        if dup > 0 {
            self.telemetry.spool_duplicates.add(dup);
        }
        if again > 0 {
            info!(
                records = again,
                partly_delivered = dup,
                "MQTT link lost; unacknowledged records will be replayed"
            );
        }
    }

    /// Hand queued publishes to the client while connected and below the in-flight cap (one at
    /// a time while [`KillGuard`] retries suspects). Publishes that cannot fit the broker's
    /// packet limit or were set aside are not sent.
    fn flush(&mut self) {
        for tag in self.outbox.take_lost() {
            self.ack(Some(tag), false);
        }
        let cap = self.guard.max_in_flight(self.window);
        while self.connected && self.in_flight.len() < cap {
            let Some(p) = self.outbox.pop_front() else {
                break;
            };
            let packet = self.limit.packet_size(p.topic.len(), p.payload.len());
            if !self.limit.fits(p.topic.len(), p.payload.len()) {
                self.skip_oversize(p, packet);
                continue;
            }
            let key = PublishKey::new(&p.topic, &p.payload, packet);
            if self.guard.is_set_aside(&key) {
                debug!(topic = %p.topic, bytes = p.payload.len(), "MQTT publish skipped: set aside earlier");
                self.ack(p.tag, false);
                continue;
            }
            match self.link.try_publish(&p.topic, p.payload.clone(), p.retain) {
                Ok(done) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.flying.insert(
                        id,
                        Flying {
                            pending: p,
                            key,
                            sent: Instant::now(),
                        },
                    );
                    self.in_flight.push(Flight { id, done });
                }
                Err(TryPublishError::Full) => {
                    // Retried after the next completion.
                    self.outbox.push_front_all(vec![p]);
                    break;
                }
                Err(TryPublishError::Other(e)) => {
                    self.telemetry.mqtt_errors.inc();
                    warn!(topic = %p.topic, error = %e, "MQTT publish rejected by the client");
                    self.ack(p.tag, false);
                }
            }
        }
    }

    /// A publish larger than the broker's packet limit: counted, logged once per topic with the
    /// setting to change, never sent.
    fn skip_oversize(&mut self, p: Pending, packet: usize) {
        if p.image {
            self.telemetry.images_oversize.inc();
        } else {
            self.telemetry.messages_oversize.inc();
        }
        if self.warned.len() >= WARNED_MAX {
            self.warned.clear();
        }
        if self.warned.insert(p.topic.clone()) {
            let (max, source) = self
                .limit
                .max()
                .map_or((0, "the MQTT maximum"), |(n, s)| (n, s.describe()));
            warn!(
                topic = %p.topic,
                bytes = p.payload.len(),
                packet_bytes = packet,
                max_packet_size = max,
                limit_from = source,
                "MQTT publish skipped: larger than the broker's packet limit (raise max_packet_size in the broker, then set [mqtt] max_packet_size to match); further skips on this topic are only counted"
            );
        }
        self.ack(p.tag, false);
    }

    /// A publish the broker will never take: counted, logged, reported on `bridge/unparsed`,
    /// kept on disk; its record goes on without it.
    fn set_aside(&mut self, st: &mut SinkState, p: Pending, reason: &'static str, detail: String) {
        self.telemetry.mqtt_set_aside.inc();
        if p.retain {
            st.forget_retained(&p.topic);
        }
        warn!(
            topic = %p.topic,
            bytes = p.payload.len(),
            reason,
            detail = %detail,
            dead_letter_dir = %self.dead.dir().map(|d| d.display().to_string()).unwrap_or_else(|| "-".into()),
            "MQTT publish set aside: the broker will not take it"
        );
        self.dead.keep(Letter {
            topic: p.topic.clone(),
            payload: p.payload.clone(),
            retain: p.retain,
            reason,
            detail: detail.clone(),
            record: p.tag.map(|t| t.seq),
        });
        if p.topic != self.unparsed_topic {
            let report = Unparsed {
                peer: self.broker.clone(),
                source: "mqtt".into(),
                reason: reason.to_owned(),
                detail,
                path: Some(p.topic.clone()),
                body: String::new(),
                body_len: p.payload.len(),
            };
            self.outbox.push_back(Pending {
                topic: self.unparsed_topic.clone(),
                payload: Bytes::from(unparsed_json(&report)),
                retain: false,
                momentary: true,
                image: false,
                tag: None,
            });
        }
        self.ack(p.tag, false);
    }

    /// [`Shell::completed`] for every other outcome that has already come back too, so that
    /// the slots they free are refilled together.
    fn completed_ready(&mut self, st: &mut SinkState) {
        while let Some(Some((id, delivery))) = self.in_flight.next().now_or_never() {
            self.completed(st, id, delivery);
        }
    }

    /// A publish's outcome came back.
    fn completed(&mut self, st: &mut SinkState, id: u64, delivery: Delivery) {
        let Some(f) = self.flying.remove(&id) else {
            return;
        };
        match delivery {
            Delivery::Acked => {
                self.telemetry.mqtt_published.inc();
                self.telemetry.publish.record(f.sent.elapsed());
                self.guard.on_answered(&f.key, true);
                self.ack(f.pending.tag, true);
            }
            Delivery::Refused(reason) => {
                self.telemetry.mqtt_refused.inc();
                self.guard.on_answered(&f.key, false);
                let detail = format!("the broker refused the publish: PUBACK reason {reason}");
                self.set_aside(st, f.pending, "refused-by-broker", detail);
            }
            Delivery::Lost => {
                // The link broke before the PUBACK. States are re-published on connect;
                // records are replayed from the oldest unacknowledged one; other momentary
                // messages are queued again.
                let p = f.pending.clone();
                self.lost.push(f);
                match p.tag {
                    Some(tag) if self.reader.is_current(tag) => self.rewind(st),
                    Some(_) => {}
                    None if p.momentary => {
                        self.outbox.push_back(p);
                    }
                    None => {}
                }
            }
            Delivery::Failed(e) => {
                self.telemetry.mqtt_errors.inc();
                warn!(topic = %f.pending.topic, error = %e, "MQTT publish failed");
                self.ack(f.pending.tag, false);
            }
        }
    }

    /// The link went down. A broker that said the packet was too large (MQTT 5 DISCONNECT
    /// 0x95) teaches the limit at once: the largest publish in flight did not fit.
    fn link_down(&mut self, st: &mut SinkState, packet_too_large: bool) {
        self.connected = false;
        self.reader.set_draining(false);
        if packet_too_large {
            let largest = self
                .flying
                .values()
                .chain(self.lost.iter())
                .map(|f| f.key.clone())
                .max_by_key(|k| k.packet);
            if let Some(key) = largest {
                self.learned(st, &key);
            }
            self.lost.clear();
        }
        self.outbox.keep_momentary();
        self.rewind(st);
    }

    /// The link is up. Judge the publishes lost with the previous connection: when the broker
    /// took the bridge back at once, they are suspects; one that was alone in flight at two
    /// such drops in a row is set aside.
    fn link_up(&mut self, st: &mut SinkState, session: &Session) {
        self.connected = true;
        self.more = true;
        // A connection to another node (failover) says nothing about the publishes lost with
        // the old one: the old node went away, they did not kill it.
        let same_node = self
            .node
            .replace(session.node)
            .is_none_or(|n| n == session.node);
        session.broker.clone_into(&mut self.broker);
        st.set_node(&session.broker);
        self.limit
            .connected(session.protocol, session.max_packet_size);
        self.window = window(session.receive_maximum);
        st.set_packet_limit(self.limit.clone());
        self.reader.set_draining(true);
        // Every publish of the old connection has come back as lost by now: the driver fails
        // them before it connects again, and the loop collects them before it handles `Up`
        // (`settle_in_flight`).
        let lost = std::mem::take(&mut self.lost);
        let keys = lost.iter().map(|f| f.key.clone()).collect();
        match self
            .guard
            .on_drop(keys, session.failed_attempts == 0 && same_node)
        {
            Verdict::Outage => {}
            Verdict::Suspect(n) => {
                let largest = lost.iter().max_by_key(|f| f.key.packet).map(|f| &f.key);
                info!(
                    publishes = n,
                    largest_topic = largest.map_or("", |k| k.topic.as_str()),
                    largest_packet_bytes = largest.map_or(0, |k| k.packet),
                    "MQTT broker closed the connection with publishes in flight and took the bridge straight back; sending them again one at a time"
                );
            }
            Verdict::SetAside(key) => {
                self.learned(st, &key);
                if let Some(f) = lost.into_iter().find(|f| f.key == key) {
                    let detail = format!(
                        "the broker closed the connection twice in a row while this {} byte packet was alone in flight",
                        key.packet
                    );
                    self.set_aside(st, f.pending, "kills-connection", detail);
                }
            }
        }
    }

    /// A publish closed the connection because of its size (or twice in a row): lower the
    /// learned limit below it when that is what it shows.
    fn learned(&mut self, st: &mut SinkState, key: &PublishKey) {
        if let Some(limit) = self.limit.learn(key, self.guard.known_good()) {
            warn!(
                topic = %key.topic,
                packet_bytes = key.packet,
                learned_max_packet_size = limit,
                "MQTT broker closes the connection on packets this large; larger publishes are skipped from now on (set [mqtt] max_packet_size to the broker's limit)"
            );
            st.set_packet_limit(self.limit.clone());
        }
    }

    /// The broker (node `node`) refused MQTT 5: speak 3.1.1 from now on, to every node, starting
    /// with that one (when the configuration allows).
    fn downgrade(
        &mut self,
        cfg: &MqttSinkConfig,
        st: &mut SinkState,
        node: usize,
    ) -> Result<(), SinkError> {
        let broker = cfg.nodes().nth(node).map(BrokerAddr::endpoint);
        info!(
            broker = broker.as_deref().unwrap_or_default(),
            "MQTT broker does not speak MQTT 5; using MQTT 3.1.1 (its packet limit is then only known from [mqtt] max_packet_size)"
        );
        self.link = Link::start(
            cfg,
            &self.will_topic,
            Protocol::V311,
            node,
            self.listen.clone(),
        )?;
        self.limit = PacketLimit::new(Protocol::V311, cfg.max_packet_size);
        st.set_packet_limit(self.limit.clone());
        Ok(())
    }

    /// Before a new connection is used, take in the outcomes of the old one's publishes (the
    /// driver failed them before it reported the drop) so that they are judged with that drop:
    /// a failover brings the link back at once, possibly before they were collected. Only the
    /// old connection's publishes can be in flight here (nothing is sent while down).
    async fn settle_in_flight(&mut self, st: &mut SinkState) {
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(until, self.in_flight.next()).await {
                Ok(Some((id, delivery))) => self.completed(st, id, delivery),
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// A report from the driver.
    fn on_conn(
        &mut self,
        ev: Conn,
        st: &mut SinkState,
        timers: &mut Timers,
        cfg: &MqttSinkConfig,
    ) -> Result<(), SinkError> {
        let ha = cfg.homeassistant.as_ref();
        match ev {
            Conn::Up(session) => {
                self.link_up(st, &session);
                if let Some(h) = ha {
                    timers.scan = self.subscribe(h);
                }
                self.subscribe_commands();
                self.subscribe_bridge();
                let first = st
                    .on_connected(Instant::now())
                    .into_iter()
                    .map(Pending::from)
                    .collect();
                self.outbox.push_front_all(first);
            }
            Conn::Retained(topic, payload) => {
                if let Some(s) = timers.scan.as_mut() {
                    if payload.is_empty() {
                        s.found.remove(&topic);
                    } else {
                        s.found.insert(topic, payload);
                    }
                }
            }
            Conn::Down {
                packet_too_large,
                stopped,
            } => {
                timers.scan = None;
                self.link_down(st, packet_too_large);
                // Not connected any more: nothing is handed to the client until `Up`.
                let _ = stopped.send(());
            }
            Conn::Unsupported { node } => {
                if self.choice == ProtocolChoice::Auto && self.link.protocol() == Protocol::V5 {
                    self.downgrade(cfg, st, node)?;
                }
            }
            Conn::StateOffline => {
                // Our last will, fired by a broker node that lost an earlier connection of
                // ours (a cluster can fire it late, after the bridge reconnected to another
                // node), or someone else's `offline`: the bridge is running, so it says so.
                if self.connected {
                    info!(topic = %self.will_topic, "bridge state set to offline while the bridge is connected (the last will of an earlier connection); publishing online again");
                    self.outbox.push_front_all(vec![Pending {
                        topic: self.will_topic.clone(),
                        payload: Bytes::from_static(b"online"),
                        retain: true,
                        momentary: false,
                        image: false,
                        tag: None,
                    }]);
                }
            }
            Conn::PeerInfo { client_id } => {
                self.telemetry.mqtt_topic_conflicts.inc();
                if self.conflicts.len() < 64 && self.conflicts.insert(client_id.clone()) {
                    error!(other_client_id = %client_id, base_topic = %cfg.base_topic, "another bridge publishes bridge/info under this base topic: two instances share it and overwrite each other's bridge state; give each instance its own [mqtt] base_topic (README \"Scaling out\")");
                }
            }
            Conn::HaStatus(p) => {
                st.on_ha_status(&p, Instant::now());
                if p.as_ref() == b"online"
                    && let Some(h) = ha
                {
                    let (lo, hi) = h.republish_delay;
                    let (lo, hi) = (
                        lo.as_millis() as u64,
                        hi.as_millis().max(lo.as_millis()) as u64,
                    );
                    let ms = rand::rng().random_range(lo..=hi);
                    debug!(
                        delay_ms = ms,
                        "Home Assistant online, re-publishing discovery soon"
                    );
                    timers.ha_republish_at = Some(Instant::now() + Duration::from_millis(ms));
                }
            }
        }
        Ok(())
    }

    /// Subscribe to the bridge's own `bridge/state` and `bridge/info` (see [`BridgeWatch`]);
    /// after every connect (the session is clean).
    fn subscribe_bridge(&mut self) {
        for topic in [&self.listen.bridge.state, &self.listen.bridge.info] {
            if let Err(e) = self.link.try_subscribe(topic) {
                self.telemetry.mqtt_errors.inc();
                warn!(topic = %topic, error = %e, "MQTT subscribe failed");
            }
        }
    }

    /// Subscribe to the command topics (`<base>/+/snapshot/take`) when a source takes
    /// commands; again after every connect (the session may be clean).
    fn subscribe_commands(&mut self) {
        if let Some(route) = &self.listen.commands {
            let filter = route.topics.commands_filter();
            if let Err(e) = self.link.try_subscribe(&filter) {
                self.telemetry.mqtt_errors.inc();
                warn!(topic = %filter, error = %e, "MQTT subscribe failed");
            }
        }
    }

    /// Subscribe to Home Assistant's status and, for the stale-discovery scan, to the retained
    /// discovery; returns the scan when it could start.
    fn subscribe(&mut self, h: &super::HaConfig) -> Option<Scan> {
        if let Err(e) = self.link.try_subscribe(&h.status_topic) {
            self.telemetry.mqtt_errors.inc();
            warn!(topic = %h.status_topic, error = %e, "MQTT subscribe failed");
        }
        for f in stale::scan_filters(&h.discovery_prefix) {
            if let Err(e) = self.link.try_subscribe(&f) {
                self.telemetry.mqtt_errors.inc();
                warn!(topic = %f, error = %e, "MQTT subscribe failed");
                return None;
            }
        }
        Some(Scan {
            until: Instant::now() + stale::SCAN_WINDOW,
            found: BTreeMap::new(),
        })
    }

    /// Timer work: the state machine's (publishes leaving the settle queue are charged to the
    /// newest held record), the HA re-publish and the end of the stale scan.
    fn on_timers(&mut self, st: &mut SinkState, timers: &mut Timers, prefix: Option<&str>) {
        let now = Instant::now();
        let hold = self.reader.hold_seq();
        let acts = st.on_tick(now);
        self.enqueue(acts, hold);
        if hold.is_some() && !st.has_held() {
            self.reader.holds_released();
        }
        if timers.ha_republish_at.is_some_and(|t| t <= now) {
            timers.ha_republish_at = None;
            let acts = st.on_ha_online(now);
            self.enqueue(acts, None);
        }
        if timers.scan.as_ref().is_some_and(|s| s.until <= now)
            && let Some(s) = timers.scan.take()
        {
            self.finish_scan(st, prefix, &s);
        }
    }

    /// End of the stale-discovery scan: unsubscribe and clear what is ours and stale.
    fn finish_scan(&mut self, st: &SinkState, prefix: Option<&str>, s: &Scan) {
        if let Some(prefix) = prefix {
            for f in stale::scan_filters(prefix) {
                if let Err(e) = self.link.try_unsubscribe(&f) {
                    debug!(topic = %f, error = %e, "MQTT unsubscribe failed");
                }
            }
        }
        let acts = st.clear_stale(&s.found);
        for a in &acts {
            info!(topic = %a.topic(), "clearing stale retained discovery");
        }
        debug!(
            retained = s.found.len(),
            cleared = acts.len(),
            "stale discovery scan done"
        );
        self.enqueue(acts, None);
    }

    /// Graceful shutdown, bounded by [`SHUTDOWN_FLUSH`]: deliver what the buffer still holds
    /// (two thirds of the time at most), then the bridge's `offline` (retained) before anything
    /// else still queued, then disconnect. What is not delivered stays in the spool.
    async fn shutdown(mut self, st: &mut SinkState, conn_rx: &mut mpsc::Receiver<Conn>) {
        if self.connected {
            self.flush_before_offline(st, conn_rx).await;
            self.in_flight.clear();
            self.link.disconnect(Duration::from_secs(2)).await;
        } else {
            self.in_flight.clear();
            drop(self.link);
        }
        self.reader.flush().await;
    }

    async fn flush_before_offline(
        &mut self,
        st: &mut SinkState,
        conn_rx: &mut mpsc::Receiver<Conn>,
    ) {
        let start = tokio::time::Instant::now();
        let drain_until = start + SHUTDOWN_FLUSH * 2 / 3;
        let deadline = start + SHUTDOWN_FLUSH;
        let mut offline_queued = false;
        loop {
            if !offline_queued {
                self.read(st);
            }
            self.flush();
            let idle = self.outbox.is_empty() && self.in_flight.is_empty();
            if !offline_queued
                && ((idle && !self.more) || tokio::time::Instant::now() >= drain_until)
            {
                offline_queued = true;
                self.outbox.drop_tagged();
                self.outbox.push_front_all(vec![Pending {
                    topic: self.will_topic.clone(),
                    payload: Bytes::from_static(b"offline"),
                    retain: true,
                    momentary: false,
                    image: false,
                    tag: None,
                }]);
                continue;
            }
            if offline_queued && idle {
                return;
            }
            let wake = if offline_queued {
                deadline
            } else {
                drain_until
            };
            tokio::select! {
                Some((id, delivery)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.completed(st, id, delivery);
                }
                ev = conn_rx.recv() => if !matches!(ev, Some(Conn::Up(_) | Conn::HaStatus(_) | Conn::Retained(..) | Conn::StateOffline | Conn::PeerInfo { .. })) { return },
                () = self.reader.wait(), if !offline_queued && !self.more => self.more = true,
                _ = tokio::time::sleep_until(wake) => {
                    if offline_queued {
                        warn!(queued = self.outbox.len(), in_flight = self.in_flight.len(), "MQTT shutdown flush timed out");
                        return;
                    }
                }
            }
        }
    }
}

/// Run the sink until `shutdown` is cancelled, reading routed messages from `reader`,
/// starting from the devices in `known`; commands (`<base>/+/snapshot/take`) go to
/// `commands` when given.
pub(crate) async fn run(
    cfg: MqttSinkConfig,
    known: KnownDevices,
    reader: BufferReader,
    telemetry: Telemetry,
    commands: Option<broadcast::Sender<Command>>,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    cfg.validate()?;
    let mut st = SinkState::new(&cfg, Instant::now(), SystemTime::now(), telemetry.clone());
    st.restore(&known);
    let (conn_tx, mut conn_rx) = mpsc::channel(64);
    let mut sh = start(&cfg, &mut st, reader, telemetry, conn_tx, commands)?;
    let mut timers = Timers::default();
    let prefix = cfg
        .homeassistant
        .as_ref()
        .map(|h| h.discovery_prefix.clone());
    let mut maintain = tokio::time::interval(MAINTAIN);
    maintain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        sh.read(&mut st);
        sh.flush();
        let deadline = [
            st.next_deadline(),
            timers.ha_republish_at,
            timers.scan.as_ref().map(|s| s.until),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(tokio::time::Instant::from_std);
        let idle = !sh.more;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            ev = conn_rx.recv() => match ev {
                Some(ev) => {
                    if matches!(ev, Conn::Up(_)) {
                        sh.settle_in_flight(&mut st).await;
                    }
                    sh.on_conn(ev, &mut st, &mut timers, &cfg)?;
                }
                None => {
                    error!("MQTT event loop ended");
                    break;
                }
            },
            Some((id, delivery)) = sh.in_flight.next(), if !sh.in_flight.is_empty() => {
                sh.completed(&mut st, id, delivery);
                sh.completed_ready(&mut st);
            }
            () = sh.reader.wait(), if idle => sh.more = true,
            _ = maintain.tick() => {
                sh.reader.maintain();
                // A safety net for a missed wake-up; reading is cheap when empty.
                sh.more = true;
            }
            _ = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => sh.on_timers(&mut st, &mut timers, prefix.as_deref()),
        }
    }
    sh.shutdown(&mut st, &mut conn_rx).await;
    info!("MQTT sink stopped");
    Ok(())
}

/// Build the shell and start the broker link.
fn start(
    cfg: &MqttSinkConfig,
    st: &mut SinkState,
    reader: BufferReader,
    telemetry: Telemetry,
    conn_tx: mpsc::Sender<Conn>,
    commands: Option<broadcast::Sender<Command>>,
) -> Result<Shell, SinkError> {
    let will_topic = st.topics().bridge_state();
    let ha = cfg.homeassistant.as_ref();
    let listen = Listen {
        tx: conn_tx,
        ha_status: ha.map(|h| h.status_topic.clone()),
        discovery_prefix: ha.map(|h| h.discovery_prefix.clone()),
        fallback: cfg.protocol == ProtocolChoice::Auto,
        telemetry: telemetry.clone(),
        commands: commands.map(|tx| CommandRoute {
            topics: st.topics().clone(),
            tx,
        }),
        bridge: BridgeWatch {
            state: will_topic.clone(),
            info: st.topics().bridge_info(),
            client_id: cfg.client_id.clone(),
        },
    };
    let first = cfg.protocol.first();
    let link = Link::start(cfg, &will_topic, first, 0, listen.clone())?;
    let nodes = cfg
        .nodes()
        .map(BrokerAddr::endpoint)
        .collect::<Vec<_>>()
        .join(",");
    info!(broker = %cfg.broker, nodes = %nodes, client_id = %cfg.client_id, base_topic = %cfg.base_topic, protocol = ?cfg.protocol, "MQTT sink started");
    let limit = PacketLimit::new(first, cfg.max_packet_size);
    st.set_packet_limit(limit.clone());
    Ok(Shell {
        link,
        choice: cfg.protocol,
        listen,
        unparsed_topic: st.topics().bridge_unparsed(),
        will_topic,
        broker: cfg.broker.endpoint(),
        node: None,
        conflicts: HashSet::new(),
        outbox: Outbox::default(),
        in_flight: FuturesUnordered::new(),
        window: MAX_IN_FLIGHT,
        flying: HashMap::new(),
        next_id: 0,
        connected: false,
        limit,
        guard: KillGuard::default(),
        lost: Vec::new(),
        warned: HashSet::new(),
        dead: DeadLetters::new(cfg.state_dir.as_deref(), telemetry.clone()),
        reader,
        more: true,
        telemetry,
    })
}

/// The in-flight window for a broker that announced `receive_maximum` (MQTT 5 CONNACK
/// property 0x21; `None`: none announced, or MQTT 3.1.1): [`MAX_IN_FLIGHT`] or that number,
/// whichever is lower, and at least 1 (0 is a protocol error, §3.2.2.3.3; never let it stop
/// the sink).
fn window(receive_maximum: Option<u16>) -> usize {
    receive_maximum.map_or(MAX_IN_FLIGHT, |n| MAX_IN_FLIGHT.min(usize::from(n).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_within_the_brokers_receive_maximum() {
        assert_eq!(window(None), MAX_IN_FLIGHT, "3.1.1 or none announced");
        assert_eq!(window(Some(20)), 20, "Mosquitto's default");
        assert_eq!(window(Some(1)), 1);
        assert_eq!(
            window(Some(0)),
            1,
            "a broken announcement never stops the sink"
        );
        assert_eq!(window(Some(u16::MAX)), MAX_IN_FLIGHT);
    }
}
