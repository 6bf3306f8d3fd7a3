//! The async shell around [`SinkState`]: rumqttc connection, outbox, timers, shutdown.
//!
//! Two tasks:
//! * the **driver** polls rumqttc's `EventLoop` on its own, so publishing never waits for the
//!   network; it reconnects with backoff (logged once per outage) and reports `Up`, `Down` and
//!   HA status messages;
//! * the **sink loop** receives routed messages, runs the state machine, and feeds publishes
//!   from a bounded outbox to the client, at most [`MAX_IN_FLIGHT`] at a time. Every publish is
//!   tracked (`publish_tracked`): its PUBACK (or failure) comes back to the loop, which is where
//!   a disk spool will later release its records.
//!
//! While the broker is away, states are not queued ([`SinkState::on_connected`] re-publishes
//! the current ones); momentary messages (events, unparsed, non-retained images) wait in the
//! outbox, oldest dropped first when it is full (counted in `mqtt_errors`). With a clean
//! session rumqttc fails publishes that were in flight when the link broke; momentary ones
//! are queued again.
//!
//! With a disk spool ([`crate::spool`]) the loop reads routed messages from the spool instead,
//! only while connected and only as fast as the broker acknowledges (so a backlog stays on
//! disk, not in memory). Every publish is tagged with its spool record; [`Acks`] finds the
//! delivered prefix and the spool releases it. A broken connection rewinds the spool to the
//! oldest unreleased record and replays from there (at-least-once; duplicates counted). The
//! in-memory channel is still served: it carries what the spool could not take.
//!
//! With a state directory the device registry is loaded at start and written (atomically,
//! off the runtime thread) at most once per [`persist::SAVE_DEBOUNCE`] and on shutdown. After
//! every connect with Home Assistant discovery enabled, the loop collects retained discovery
//! for [`stale::SCAN_WINDOW`] and clears what is ours and stale ([`SinkState::clear_stale`]).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rand::Rng as _;
use rumqttc::{
    AsyncClient, ClientError, ConnectionError, Event as MqttEvent, EventLoop, LastWill,
    MqttOptions, NoticeFailureReason, Packet, PublishNoticeError, PublishOptions, QoS, Transport,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::SinkError;
use super::acks::{Acks, Tag};
use super::config::MqttSinkConfig;
use super::state::{Action, SinkState};
use super::{persist, stale};
use crate::event::Routed;
use crate::spool::Spool;
use crate::stats::stats;

/// Publishes handed to rumqttc and not yet acknowledged, at most.
pub const MAX_IN_FLIGHT: usize = 64;
/// rumqttc request channel capacity (above `MAX_IN_FLIGHT`, so `try_publish` never finds it
/// full in normal operation).
const REQUEST_CAPACITY: usize = 256;
/// Outbox bound (messages).
pub const OUTBOX_MAX_MESSAGES: usize = 10_000;
/// Outbox bound (payload bytes).
pub const OUTBOX_MAX_BYTES: usize = 256 * 1024 * 1024;
/// How long shutdown waits for the outbox and the `offline` publish.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);
/// Spool reading stops while this many publishes wait in the outbox.
const SPOOL_READ_AHEAD: usize = 128;
/// Spool reading stops while this many records are read and not yet delivered.
const SPOOL_MAX_OPEN: usize = 512;
/// Records read from the spool per loop turn (other events get served in between).
const SPOOL_BATCH: usize = 32;
/// Spool housekeeping period (age bound, ledger write).
const SPOOL_MAINTAIN: Duration = Duration::from_millis(250);
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One queued publish.
#[derive(Debug, Clone)]
struct Pending {
    topic: String,
    payload: Bytes,
    retain: bool,
    momentary: bool,
    /// The spool record this publish delivers (part of).
    tag: Option<Tag>,
}

impl From<Action> for Pending {
    fn from(a: Action) -> Self {
        match a {
            Action::Publish {
                topic,
                payload,
                retain,
                momentary,
            } => Pending {
                topic,
                payload,
                retain,
                momentary,
                tag: None,
            },
        }
    }
}

/// Bounded FIFO of publishes not yet handed to the client.
#[derive(Debug, Default)]
struct Outbox {
    q: VecDeque<Pending>,
    bytes: usize,
    dropped: u64,
    /// Tags of spool publishes the bound dropped (their records must not wait for them).
    lost: Vec<Tag>,
}

impl Outbox {
    fn push_back(&mut self, p: Pending) {
        self.bytes += p.payload.len();
        self.q.push_back(p);
        self.enforce_bound();
    }

    /// Put `items` (in order) before everything queued.
    fn push_front_all(&mut self, items: Vec<Pending>) {
        for p in items.into_iter().rev() {
            self.bytes += p.payload.len();
            self.q.push_front(p);
        }
        self.enforce_bound();
    }

    fn pop_front(&mut self) -> Option<Pending> {
        let p = self.q.pop_front()?;
        self.bytes -= p.payload.len();
        Some(p)
    }

    /// Drop states (they are re-published on connect) and spool publishes (they are
    /// replayed from the spool); keep other momentary messages.
    fn keep_momentary(&mut self) {
        self.q.retain(|p| p.momentary && p.tag.is_none());
        self.bytes = self.q.iter().map(|p| p.payload.len()).sum();
    }

    /// Drop spool publishes (they are replayed from the spool).
    fn drop_tagged(&mut self) {
        self.q.retain(|p| p.tag.is_none());
        self.bytes = self.q.iter().map(|p| p.payload.len()).sum();
    }

    fn enforce_bound(&mut self) {
        while self.q.len() > OUTBOX_MAX_MESSAGES
            || (self.bytes > OUTBOX_MAX_BYTES && self.q.len() > 1)
        {
            let Some(p) = self.pop_front() else { break };
            self.dropped += 1;
            self.lost.extend(p.tag);
            stats().mqtt_errors.inc();
            if self.dropped == 1 || self.dropped.is_power_of_two() {
                warn!(topic = %p.topic, dropped = self.dropped, "MQTT outbox full, dropped oldest message");
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

/// What the driver reports.
#[derive(Debug)]
enum Conn {
    Up,
    Down,
    HaStatus(Bytes),
    /// A retained discovery config of ours by name (topic, payload).
    Retained(String, Bytes),
}

/// Build the rumqttc options: last will, keep alive, clean session, packet size, auth, TLS.
pub(crate) fn mqtt_options(
    cfg: &MqttSinkConfig,
    will_topic: &str,
) -> Result<MqttOptions, SinkError> {
    let b = &cfg.broker;
    // With a TLS server name override, rumqttc is told that name (it drives SNI and the
    // certificate check) and a socket connector dials the real host.
    let name_override = b.tls_options.server_name.clone().filter(|_| b.tls);
    let tls_host = name_override.clone().unwrap_or_else(|| b.host.clone());
    let mut o = MqttOptions::new(cfg.client_id.clone(), (tls_host, b.port));
    let keep_alive = u16::try_from(cfg.keep_alive.as_secs().max(5)).unwrap_or(u16::MAX);
    o.set_keep_alive(keep_alive);
    o.set_clean_session(true);
    o.set_max_packet_size(cfg.max_packet_size, cfg.max_packet_size);
    o.set_last_will(LastWill::new(will_topic, "offline", QoS::AtLeastOnce, true));
    match (&b.username, &b.password) {
        (Some(u), Some(p)) => {
            o.set_credentials(u.clone(), Bytes::from(p.clone()));
        }
        (Some(u), None) => {
            o.set_username(u.clone());
        }
        _ => {}
    }
    if b.tls {
        let tls = super::tls::client_config(&b.tls_options)?;
        o.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(tls)),
        ));
        if name_override.is_some() {
            let real = if b.host.contains(':') {
                format!("[{}]:{}", b.host, b.port)
            } else {
                format!("{}:{}", b.host, b.port)
            };
            o.set_socket_connector(move |_name, network| {
                rumqttc::default_socket_connect(real.clone(), network)
            });
        }
    }
    Ok(o)
}

/// Poll the event loop forever; report connection changes and HA status messages.
async fn drive(
    mut el: EventLoop,
    tx: mpsc::Sender<Conn>,
    ha_status: Option<String>,
    discovery_prefix: Option<String>,
    broker: String,
) {
    let mut backoff = MIN_BACKOFF;
    let mut up = false;
    let mut in_outage = false;
    loop {
        match el.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                up = true;
                backoff = MIN_BACKOFF;
                stats().mqtt_connects.inc();
                stats().mqtt_connected.set(1);
                if in_outage {
                    info!(broker = %broker, "MQTT connection restored");
                } else {
                    info!(broker = %broker, "MQTT connected");
                }
                in_outage = false;
                if tx.send(Conn::Up).await.is_err() {
                    return;
                }
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                if ha_status
                    .as_deref()
                    .is_some_and(|t| p.topic.as_ref() == t.as_bytes())
                {
                    if tx.send(Conn::HaStatus(p.payload)).await.is_err() {
                        return;
                    }
                } else if p.retain
                    && let Some(prefix) = discovery_prefix.as_deref()
                    && let Ok(topic) = std::str::from_utf8(&p.topic)
                    && stale::config_object_id(prefix, topic).is_some()
                    && tx
                        .send(Conn::Retained(topic.to_owned(), p.payload))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                // Nothing queued for the broken connection may go out on the next one: it
                // would overtake what the sink replays (an event lost in flight would then
                // arrive after its successor). Fail it all now; the sink re-queues
                // momentary messages and replays spool records in order.
                discard_queued(&mut el);
                stats().mqtt_connected.set(0);
                if up {
                    up = false;
                    if tx.send(Conn::Down).await.is_err() {
                        return;
                    }
                }
                if in_outage {
                    debug!(broker = %broker, error = %e, "MQTT reconnect failed");
                } else {
                    in_outage = true;
                    stats().mqtt_errors.inc();
                    warn!(broker = %broker, error = %e, "MQTT broker unavailable, reconnecting with backoff");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                // Publishes handed over while the sink had not yet seen `Down`.
                discard_queued(&mut el);
            }
        }
    }
}

/// Fail every request rumqttc still holds (in flight, pending replay, not yet read from the
/// request channel) with `SessionReset`.
fn discard_queued(el: &mut EventLoop) {
    el.clean();
    let n = el.drain_pending_as_failed(NoticeFailureReason::SessionReset);
    if n > 0 {
        debug!(
            requests = n,
            "MQTT link down; queued requests failed for re-queueing"
        );
    }
}

type Done = (Pending, Result<(), PublishNoticeError>);

/// Aborts the driver task when the sink future is dropped (e.g. its task aborted), so the
/// connection closes without DISCONNECT and the broker fires the last will.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The spool side of the shell.
struct SpoolSide {
    spool: Spool,
    acks: Acks,
    /// Records may be waiting (set on append notifications, reconnects, housekeeping).
    more: bool,
}

/// The shell.
struct Shell {
    client: AsyncClient,
    outbox: Outbox,
    in_flight: JoinSet<Done>,
    connected: bool,
    spool: Option<SpoolSide>,
}

impl Shell {
    /// Queue the publishes of the state machine; `seq` charges them to a spool record.
    fn enqueue(&mut self, actions: Vec<Action>, seq: Option<u64>) {
        for a in actions {
            let mut p = Pending::from(a);
            if !(self.connected || p.momentary) {
                continue;
            }
            if let (Some(seq), Some(sp)) = (seq, self.spool.as_mut()) {
                sp.acks.add(seq);
                p.tag = Some(sp.acks.tag(seq));
            }
            self.outbox.push_back(p);
        }
    }

    /// Read spool records (while connected and below the read-ahead limits) and turn them
    /// into publishes.
    fn read_spool(&mut self, st: &mut SinkState) {
        for _ in 0..SPOOL_BATCH {
            let Some(sp) = self.spool.as_mut() else {
                return;
            };
            if !self.connected
                || !sp.more
                || self.outbox.q.len() >= SPOOL_READ_AHEAD
                || sp.acks.len() >= SPOOL_MAX_OPEN
            {
                return;
            }
            let Some((seq, msg)) = sp.spool.next() else {
                sp.more = false;
                return;
            };
            sp.acks.begin(seq);
            if let Some(m) = msg {
                let acts = st.on_routed(&m, Instant::now());
                self.enqueue(acts, Some(seq));
                if st.has_held()
                    && let Some(sp) = self.spool.as_mut()
                {
                    sp.acks.hold(seq);
                }
            }
        }
        self.release();
    }

    /// Release the delivered prefix of the spool.
    fn release(&mut self) {
        if let Some(sp) = self.spool.as_mut()
            && let Some(seq) = sp.acks.releasable()
        {
            sp.spool.release_through(seq);
        }
    }

    fn ack(&mut self, tag: Tag, acked: bool) {
        if let Some(sp) = self.spool.as_mut() {
            sp.acks.done(tag, acked);
        }
        self.release();
    }

    /// The connection broke: replay every unreleased record once it is back.
    fn rewind(&mut self) {
        let Some(sp) = self.spool.as_mut() else {
            return;
        };
        let dup = sp.acks.reset();
        let again = sp.spool.rewind();
        sp.more = true;
        self.outbox.drop_tagged();
        if dup > 0 {
            stats().spool_duplicates.add(dup);
        }
        if again > 0 {
            info!(
                records = again,
                partly_delivered = dup,
                "MQTT link lost; unacknowledged spool records will be replayed"
            );
        }
    }

    /// Hand queued publishes to rumqttc while connected and below the in-flight cap.
    fn flush(&mut self) {
        for tag in std::mem::take(&mut self.outbox.lost) {
            self.ack(tag, false);
        }
        while self.connected && self.in_flight.len() < MAX_IN_FLIGHT {
            let Some(p) = self.outbox.pop_front() else {
                break;
            };
            let opts = PublishOptions::at_least_once().retain(p.retain);
            match self
                .client
                .try_publish_tracked(p.topic.clone(), p.payload.clone(), opts)
            {
                Ok(notice) => {
                    self.in_flight.spawn(async move {
                        let r = notice.wait_completion_async().await;
                        (p, r)
                    });
                }
                Err(ClientError::RequestChannelFull(_)) => {
                    // Retried after the next completion.
                    self.outbox.push_front_all(vec![p]);
                    break;
                }
                Err(e) => {
                    stats().mqtt_errors.inc();
                    warn!(topic = %p.topic, error = %e, "MQTT publish rejected");
                    if let Some(tag) = p.tag {
                        self.ack(tag, false);
                    }
                }
            }
        }
    }

    fn completed(&mut self, done: Result<Done, tokio::task::JoinError>) {
        let Ok((p, r)) = done else { return };
        match r {
            Ok(()) => {
                stats().mqtt_published.inc();
                if let Some(tag) = p.tag {
                    self.ack(tag, true);
                }
            }
            Err(PublishNoticeError::SessionReset | PublishNoticeError::Recv) => {
                // The link broke before the PUBACK. States are re-published on connect;
                // spool records are replayed from the oldest unreleased one.
                match p.tag {
                    Some(tag) => {
                        let current = self
                            .spool
                            .as_ref()
                            .is_some_and(|sp| sp.acks.tag(tag.seq) == tag);
                        if current {
                            self.rewind();
                        }
                    }
                    None if p.momentary => self.outbox.push_back(p),
                    None => {}
                }
            }
            Err(e) => {
                stats().mqtt_errors.inc();
                warn!(topic = %p.topic, error = %e, "MQTT publish failed");
                if let Some(tag) = p.tag {
                    self.ack(tag, false);
                }
            }
        }
    }

    /// Timer work of the state machine; publishes leaving the settle queue are charged to
    /// the newest held spool record.
    fn tick(&mut self, st: &mut SinkState, now: Instant) {
        let hold = self.spool.as_ref().and_then(|sp| sp.acks.hold_seq());
        let acts = st.on_tick(now);
        self.enqueue(acts, hold);
        if hold.is_some() && !st.has_held() {
            if let Some(sp) = self.spool.as_mut() {
                sp.acks.holds_released();
            }
            self.release();
        }
    }

    fn spool_idle(&self) -> bool {
        self.spool.as_ref().is_none_or(|sp| !sp.more)
    }
}

/// Writes the device registry file, debounced, on a blocking thread.
struct Persister {
    path: PathBuf,
    last: Option<Instant>,
    writing: Option<tokio::task::JoinHandle<()>>,
    /// A write failed and was logged; later failures go to debug until one succeeds.
    failing: Arc<AtomicBool>,
}

impl Persister {
    /// When the next write is due (`None`: nothing to write).
    fn due(&self, st: &SinkState) -> Option<Instant> {
        st.is_dirty().then(|| {
            self.last
                .map_or_else(Instant::now, |l| l + persist::SAVE_DEBOUNCE)
        })
    }

    /// Start a write when the registry changed and the debounce time has passed.
    fn poll(&mut self, st: &mut SinkState, now: Instant) {
        if !st.is_dirty() || self.last.is_some_and(|l| now < l + persist::SAVE_DEBOUNCE) {
            return;
        }
        self.last = Some(now);
        if self.writing.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let bytes = persist::encode(&st.snapshot(SystemTime::now()));
        let path = self.path.clone();
        let failing = self.failing.clone();
        self.writing = Some(tokio::task::spawn_blocking(move || {
            write_logged(&path, &bytes, &failing);
        }));
    }

    /// Shutdown: wait for a running write, then write what is still unsaved.
    async fn finish(&mut self, st: &mut SinkState) {
        if let Some(h) = self.writing.take() {
            let _ = h.await;
        }
        if st.is_dirty() {
            let bytes = persist::encode(&st.snapshot(SystemTime::now()));
            let path = self.path.clone();
            let failing = self.failing.clone();
            let _ =
                tokio::task::spawn_blocking(move || write_logged(&path, &bytes, &failing)).await;
        }
    }
}

fn write_logged(path: &std::path::Path, bytes: &[u8], failing: &AtomicBool) {
    match persist::write_atomic(path, bytes) {
        Ok(()) => {
            if failing.swap(false, Ordering::Relaxed) {
                info!(path = %path.display(), "device registry written again");
            }
        }
        Err(e) => {
            if failing.swap(true, Ordering::Relaxed) {
                debug!(error = %e, "device registry write failed");
            } else {
                stats().mqtt_errors.inc();
                warn!(error = %e, "device registry write failed; known devices may be forgotten on restart");
            }
        }
    }
}

/// Load the registry file into the state machine; a missing or corrupt file is logged and
/// ignored.
fn load_registry(st: &mut SinkState, path: &std::path::Path, forget_after: Duration) {
    let bytes = match persist::read(path) {
        Ok(Some(b)) => b,
        Ok(None) => {
            debug!(path = %path.display(), "no device registry yet");
            return;
        }
        Err(e) => {
            warn!(error = %e, "device registry unreadable, starting with no known devices");
            return;
        }
    };
    match persist::decode(&bytes, SystemTime::now(), forget_after) {
        Ok(loaded) => {
            info!(
                path = %path.display(),
                devices = loaded.devices.len(),
                forgotten = loaded.forgotten.len(),
                "device registry loaded"
            );
            for id in &loaded.forgotten {
                info!(device = %id, "device silent for forget_after, forgotten; its discovery will be cleared");
            }
            st.restore(loaded.devices);
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "device registry ignored, starting with no known devices");
        }
    }
}

/// Retained discovery collected after a connect.
struct Scan {
    until: Instant,
    found: BTreeMap<String, Bytes>,
}

/// Run the sink until `shutdown` is cancelled or `rx` is closed. With `spool`, routed
/// messages are read from the spool (and `rx` only carries what the spool could not take).
pub(crate) async fn run(
    cfg: MqttSinkConfig,
    mut rx: mpsc::Receiver<Routed>,
    spool: Option<Spool>,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    cfg.validate()?;
    let mut st = SinkState::new(&cfg, Instant::now(), SystemTime::now());
    let mut persister = cfg.state_dir.as_deref().map(|dir| {
        let path = persist::path_in(dir);
        load_registry(&mut st, &path, cfg.forget_after);
        Persister {
            path,
            last: None,
            writing: None,
            failing: Arc::new(AtomicBool::new(false)),
        }
    });
    let bridge_state = st.topics().bridge_state();
    let opts = mqtt_options(&cfg, &bridge_state)?;
    let (client, eventloop) = AsyncClient::builder(opts)
        .capacity(REQUEST_CAPACITY)
        .build();
    let (conn_tx, mut conn_rx) = mpsc::channel(64);
    let ha = cfg.homeassistant.clone();
    let mut driver = AbortOnDrop(tokio::spawn(drive(
        eventloop,
        conn_tx,
        ha.as_ref().map(|h| h.status_topic.clone()),
        ha.as_ref().map(|h| h.discovery_prefix.clone()),
        cfg.broker.to_string(),
    )));
    info!(broker = %cfg.broker, client_id = %cfg.client_id, base_topic = %cfg.base_topic, spool = spool.is_some(), "MQTT sink started");

    let appended = spool.clone();
    let mut sh = Shell {
        client,
        outbox: Outbox::default(),
        in_flight: JoinSet::new(),
        connected: false,
        spool: spool.map(|spool| SpoolSide {
            spool,
            acks: Acks::default(),
            more: true,
        }),
    };
    let mut ha_republish_at: Option<Instant> = None;
    let mut scan: Option<Scan> = None;
    let mut maintain = tokio::time::interval(SPOOL_MAINTAIN);
    maintain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        sh.read_spool(&mut st);
        sh.flush();
        if let Some(p) = persister.as_mut() {
            p.poll(&mut st, Instant::now());
        }
        let mut deadline = st.next_deadline();
        for t in [
            ha_republish_at,
            scan.as_ref().map(|s| s.until),
            persister.as_ref().and_then(|p| p.due(&st)),
        ]
        .into_iter()
        .flatten()
        {
            deadline = Some(deadline.map_or(t, |d| d.min(t)));
        }
        let sleep_until = deadline.map(tokio::time::Instant::from_std);
        let wait_spool = appended.is_some() && sh.spool_idle();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            ev = conn_rx.recv() => match ev {
                Some(Conn::Up) => {
                    sh.connected = true;
                    if let Some(h) = &ha
                        && let Err(e) = sh.client.try_subscribe(h.status_topic.clone(), QoS::AtLeastOnce)
                    {
                        stats().mqtt_errors.inc();
                        warn!(topic = %h.status_topic, error = %e, "MQTT subscribe failed");
                    }
                    if let Some(h) = &ha {
                        scan = Some(Scan { until: Instant::now() + stale::SCAN_WINDOW, found: BTreeMap::new() });
                        for f in stale::scan_filters(&h.discovery_prefix) {
                            if let Err(e) = sh.client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                                stats().mqtt_errors.inc();
                                warn!(topic = %f, error = %e, "MQTT subscribe failed");
                                scan = None;
                            }
                        }
                    }
                    let first: Vec<_> = st.on_connected(Instant::now()).into_iter().map(Pending::from).collect();
                    sh.outbox.push_front_all(first);
                    if let Some(sp) = sh.spool.as_mut() {
                        sp.more = true;
                    }
                }
                Some(Conn::Retained(topic, payload)) => {
                    if let Some(s) = scan.as_mut() {
                        if payload.is_empty() {
                            s.found.remove(&topic);
                        } else {
                            s.found.insert(topic, payload);
                        }
                    }
                }
                Some(Conn::Down) => {
                    scan = None;
                    sh.connected = false;
                    sh.outbox.keep_momentary();
                    sh.rewind();
                }
                Some(Conn::HaStatus(p)) => {
                    if p.as_ref() == b"online"
                        && let Some(h) = &ha
                    {
                        let (lo, hi) = h.republish_delay;
                        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis().max(lo.as_millis()) as u64);
                        let ms = rand::rng().random_range(lo..=hi);
                        debug!(delay_ms = ms, "Home Assistant online, re-publishing discovery soon");
                        ha_republish_at = Some(Instant::now() + Duration::from_millis(ms));
                    }
                }
                None => {
                    warn!("MQTT event loop ended");
                    break;
                }
            },
            Some(done) = sh.in_flight.join_next(), if !sh.in_flight.is_empty() => sh.completed(done),
            msg = rx.recv() => match msg {
                Some(m) => {
                    let acts = st.on_routed(&m, Instant::now());
                    sh.enqueue(acts, None);
                }
                None => break,
            },
            () = async {
                match &appended {
                    Some(s) => s.appended().await,
                    None => std::future::pending().await,
                }
            }, if wait_spool => {
                if let Some(sp) = sh.spool.as_mut() {
                    sp.more = true;
                }
            }
            _ = maintain.tick(), if appended.is_some() => {
                if let Some(sp) = sh.spool.as_mut() {
                    sp.spool.maintain();
                    // A safety net for a missed wake-up; reading is cheap when empty.
                    sp.more = true;
                }
            }
            _ = async {
                match sleep_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = Instant::now();
                sh.tick(&mut st, now);
                if ha_republish_at.is_some_and(|t| t <= now) {
                    ha_republish_at = None;
                    let acts = st.on_ha_online(now);
                    sh.enqueue(acts, None);
                }
                if scan.as_ref().is_some_and(|s| s.until <= now)
                    && let Some(s) = scan.take()
                {
                    finish_scan(&mut sh, &st, ha.as_ref().map(|h| h.discovery_prefix.as_str()), &s);
                }
            }
        }
    }

    // Graceful shutdown, bounded by SHUTDOWN_FLUSH: deliver what the spool still holds
    // (two thirds of the time at most), then the bridge's `offline` (retained) before
    // anything else still queued, then disconnect. What is not delivered stays in the spool.
    if sh.connected {
        let start = tokio::time::Instant::now();
        let drain_until = start + SHUTDOWN_FLUSH * 2 / 3;
        let deadline = start + SHUTDOWN_FLUSH;
        let mut offline_queued = false;
        loop {
            if !offline_queued {
                sh.read_spool(&mut st);
            }
            sh.flush();
            let idle = sh.outbox.is_empty() && sh.in_flight.is_empty();
            if !offline_queued
                && ((idle && sh.spool_idle()) || tokio::time::Instant::now() >= drain_until)
            {
                offline_queued = true;
                sh.outbox.drop_tagged();
                sh.outbox.push_front_all(vec![Pending {
                    topic: bridge_state.clone(),
                    payload: Bytes::from_static(b"offline"),
                    retain: true,
                    momentary: false,
                    tag: None,
                }]);
                continue;
            }
            if offline_queued && idle {
                break;
            }
            let wake = if offline_queued {
                deadline
            } else {
                drain_until
            };
            tokio::select! {
                Some(done) = sh.in_flight.join_next(), if !sh.in_flight.is_empty() => sh.completed(done),
                ev = conn_rx.recv() => if !matches!(ev, Some(Conn::Up | Conn::HaStatus(_) | Conn::Retained(..))) { break },
                _ = tokio::time::sleep_until(wake) => {
                    if offline_queued {
                        warn!(queued = sh.outbox.q.len(), in_flight = sh.in_flight.len(), "MQTT shutdown flush timed out");
                        break;
                    }
                }
            }
        }
        let _ = sh
            .client
            .try_disconnect_with_timeout(Duration::from_secs(1));
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut driver.0).await;
    }
    drop(driver);
    sh.in_flight.abort_all();
    if let Some(sp) = &sh.spool {
        sp.spool.flush();
        let left = sp.spool.depth();
        if left > 0 {
            info!(
                records = left,
                "undelivered records stay in the spool for the next start"
            );
        }
    }
    if let Some(p) = persister.as_mut() {
        p.finish(&mut st).await;
    }
    info!("MQTT sink stopped");
    Ok(())
}

/// End of the stale-discovery scan: unsubscribe and clear what is ours and stale.
fn finish_scan(sh: &mut Shell, st: &SinkState, prefix: Option<&str>, s: &Scan) {
    if let Some(prefix) = prefix {
        for f in stale::scan_filters(prefix) {
            if let Err(e) = sh.client.try_unsubscribe(f.clone()) {
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
    sh.enqueue(acts, None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::mqtt::config::BrokerAddr;

    #[test]
    fn options_raise_packet_size_and_set_will() {
        let mut cfg =
            MqttSinkConfig::new(BrokerAddr::from_url("mqtt://u:p@127.0.0.1:1999").unwrap());
        cfg.client_id = "cid".into();
        let o = mqtt_options(&cfg, "camera/bridge/state").unwrap();
        assert_eq!(o.max_packet_size(), 64 * 1024 * 1024);
        assert_eq!(o.client_id(), "cid");
        assert!(o.clean_session());
        assert_eq!(o.keep_alive(), Duration::from_secs(30));
        let will = o.last_will().expect("last will");
        assert_eq!(will.topic, "camera/bridge/state");
        assert_eq!(will.message.as_ref(), b"offline");
        assert!(will.retain);
        assert_eq!(will.qos, QoS::AtLeastOnce);
    }

    #[test]
    fn tls_is_configured_or_reports_an_error() {
        let cfg = MqttSinkConfig::new(BrokerAddr::from_url("mqtts://broker.example").unwrap());
        match mqtt_options(&cfg, "camera/bridge/state") {
            Ok(o) => assert!(!matches!(o.transport(), Transport::Tcp)),
            Err(e) => assert!(matches!(e, SinkError::Tls(_)), "{e}"),
        }
    }

    #[test]
    fn outbox_drops_oldest_and_keeps_momentary() {
        let p = |t: &str, momentary: bool| Pending {
            topic: t.into(),
            payload: Bytes::from_static(b"x"),
            retain: !momentary,
            momentary,
            tag: None,
        };
        let mut o = Outbox::default();
        o.push_back(p("state", false));
        o.push_back(p("event", true));
        o.push_front_all(vec![p("first", false), p("second", false)]);
        assert_eq!(
            o.q.iter().map(|p| p.topic.as_str()).collect::<Vec<_>>(),
            ["first", "second", "state", "event"]
        );
        o.keep_momentary();
        assert_eq!(o.q.len(), 1);
        assert_eq!(o.bytes, 1);
        for i in 0..OUTBOX_MAX_MESSAGES + 5 {
            o.push_back(p(&format!("e{i}"), true));
        }
        assert_eq!(o.q.len(), OUTBOX_MAX_MESSAGES);
        assert_eq!(o.dropped, 6);
        assert_eq!(
            o.q.back().unwrap().topic,
            format!("e{}", OUTBOX_MAX_MESSAGES + 4)
        );
    }
}
