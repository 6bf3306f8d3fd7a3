//! The async shell around [`SinkState`]: broker link, outbox, timers, shutdown.
//!
//! Two tasks:
//! * the **driver** ([`super::link`]) polls the client library's event loop on its own, so
//!   publishing never waits for the network; it reconnects with backoff (logged once per
//!   outage) and reports `Up` (with what the broker announced), `Down`, and HA status messages;
//! * the **sink loop** receives routed messages, runs the state machine, and feeds publishes
//!   from a bounded outbox to the client, at most [`MAX_IN_FLIGHT`] at a time. Every publish is
//!   QoS 1 and tracked: its PUBACK (or failure) comes back to the loop, which is where the disk
//!   spool releases its records.
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
//! Load: while connected, the loop stops taking routed messages when the outbox holds more
//! than [`ACCEPT_MESSAGES`] / [`ACCEPT_BYTES`], so a broker slower than the cameras slows the
//! cameras' replies (the pipeline waits, the receiver holds its reply) instead of dropping. While
//! the broker is away, states are not queued ([`SinkState::on_connected`] re-publishes the
//! current ones); momentary messages (events, unparsed, non-retained images) wait in the outbox,
//! oldest dropped first when its bound is reached (counted in `dropped`).
//!
//! With a disk spool ([`crate::spool`]) the loop reads routed messages from the spool instead,
//! only while connected and only as fast as the broker acknowledges (so a backlog stays on
//! disk, not in memory). Every publish is tagged with its spool record; [`Acks`] finds the
//! delivered prefix and the spool releases it. A broken connection rewinds the spool to the
//! oldest unreleased record and replays from there (at-least-once; duplicates counted). The
//! loop tells the spool whether it is draining, which is what lets the spool hold back new
//! appends while connected (see [`Spool::room`]).
//!
//! With a state directory the device registry is loaded at start and written (atomically,
//! off the runtime thread) at most once per [`persist::SAVE_DEBOUNCE`] and on shutdown. After
//! every connect with Home Assistant discovery enabled, the loop collects retained discovery
//! for [`stale::SCAN_WINDOW`] and clears what is ours and stale ([`SinkState::clear_stale`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rand::Rng as _;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::SinkError;
use super::acks::{Acks, Tag};
use super::config::MqttSinkConfig;
use super::dead_letter::{DeadLetters, Letter};
use super::limits::{KillGuard, PacketLimit, PublishKey, Verdict};
use super::link::{Conn, Delivery, Link, Listen, Protocol, ProtocolChoice, TryPublishError};
use super::payload::unparsed_json;
use super::state::{Action, SinkState};
use super::{persist, stale};
use crate::event::{Routed, Unparsed};
use crate::spool::Spool;
use crate::stats::stats;

/// Publishes handed to the client and not yet acknowledged, at most.
pub const MAX_IN_FLIGHT: usize = 64;
/// Outbox bound while the broker is away (messages).
pub const OUTBOX_MAX_MESSAGES: usize = 10_000;
/// Outbox bound while the broker is away (payload bytes).
pub const OUTBOX_MAX_BYTES: usize = 256 * 1024 * 1024;
/// While connected, routed messages are taken only while the outbox holds fewer messages.
pub const ACCEPT_MESSAGES: usize = 512;
/// While connected, routed messages are taken only while the outbox holds fewer bytes.
pub const ACCEPT_BYTES: usize = 32 * 1024 * 1024;
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
/// Topics remembered as already warned about (oversize, refused); beyond this the set is
/// cleared, so a warning may repeat.
const WARNED_MAX: usize = 4096;

/// One queued publish.
#[derive(Debug, Clone)]
struct Pending {
    topic: String,
    payload: Bytes,
    retain: bool,
    momentary: bool,
    image: bool,
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
                image,
            } => Pending {
                topic,
                payload,
                retain,
                momentary,
                image,
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

    /// The outage bound: the oldest messages go when it is exceeded (counted in `dropped`).
    fn enforce_bound(&mut self) {
        while self.q.len() > OUTBOX_MAX_MESSAGES
            || (self.bytes > OUTBOX_MAX_BYTES && self.q.len() > 1)
        {
            let Some(p) = self.pop_front() else { break };
            self.dropped += 1;
            self.lost.extend(p.tag);
            stats().dropped.inc();
            if self.dropped == 1 || self.dropped.is_power_of_two() {
                warn!(topic = %p.topic, dropped = self.dropped, max_messages = OUTBOX_MAX_MESSAGES, max_bytes = OUTBOX_MAX_BYTES, "MQTT broker away too long: outbox full, dropped the oldest message");
            }
        }
    }

    /// True while the outbox is below the level up to which new routed messages are taken.
    fn below_accept_level(&self) -> bool {
        self.q.len() < ACCEPT_MESSAGES && self.bytes < ACCEPT_BYTES
    }

    fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

/// The spool side of the shell.
struct SpoolSide {
    spool: Spool,
    acks: Acks,
    /// Records may be waiting (set on append notifications, reconnects, housekeeping).
    more: bool,
}

/// A publish handed to the client.
struct Flying {
    pending: Pending,
    key: PublishKey,
}

/// The shell.
struct Shell {
    link: Link,
    choice: ProtocolChoice,
    listen: Listen,
    will_topic: String,
    unparsed_topic: String,
    broker: String,
    outbox: Outbox,
    in_flight: JoinSet<(u64, Delivery)>,
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

    /// True while routed messages from the pipeline are taken: always while the broker is away
    /// (the outbox bound handles an outage), and while connected only below the accept level,
    /// so that a broker slower than the cameras holds the cameras' replies instead of dropping.
    fn accepting(&self) -> bool {
        !self.connected || self.outbox.below_accept_level()
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

    fn ack(&mut self, tag: Option<Tag>, acked: bool) {
        let Some(tag) = tag else { return };
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

    /// Hand queued publishes to the client while connected and below the in-flight cap (one at
    /// a time while [`KillGuard`] retries suspects). Publishes that cannot fit the broker's
    /// packet limit or were set aside are not sent.
    fn flush(&mut self) {
        for tag in std::mem::take(&mut self.outbox.lost) {
            self.ack(Some(tag), false);
        }
        let cap = self.guard.max_in_flight(MAX_IN_FLIGHT);
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
                    self.flying.insert(id, Flying { pending: p, key });
                    self.in_flight.spawn(async move { (id, done.await) });
                }
                Err(TryPublishError::Full) => {
                    // Retried after the next completion.
                    self.outbox.push_front_all(vec![p]);
                    break;
                }
                Err(TryPublishError::Other(e)) => {
                    stats().mqtt_errors.inc();
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
            stats().images_oversize.inc();
        } else {
            stats().messages_oversize.inc();
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
    /// kept on disk; its spool record goes on without it.
    fn set_aside(&mut self, st: &mut SinkState, p: Pending, reason: &'static str, detail: String) {
        stats().mqtt_set_aside.inc();
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
                source: "mqtt",
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

    fn completed(&mut self, st: &mut SinkState, id: u64, delivery: Delivery) {
        let Some(f) = self.flying.remove(&id) else {
            return;
        };
        match delivery {
            Delivery::Acked => {
                stats().mqtt_published.inc();
                self.guard.on_answered(&f.key, true);
                self.ack(f.pending.tag, true);
            }
            Delivery::Refused(reason) => {
                stats().mqtt_refused.inc();
                self.guard.on_answered(&f.key, false);
                let detail = format!("the broker refused the publish: PUBACK reason {reason}");
                self.set_aside(st, f.pending, "refused-by-broker", detail);
            }
            Delivery::Lost => {
                // The link broke before the PUBACK. States are re-published on connect;
                // spool records are replayed from the oldest unreleased one; other momentary
                // messages are queued again.
                let p = f.pending.clone();
                self.lost.push(f);
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
            Delivery::Failed(e) => {
                stats().mqtt_errors.inc();
                warn!(topic = %f.pending.topic, error = %e, "MQTT publish failed");
                self.ack(f.pending.tag, false);
            }
        }
    }

    /// The link went down. A broker that said the packet was too large (MQTT 5 DISCONNECT
    /// 0x95) teaches the limit at once: the largest publish in flight did not fit.
    fn link_down(&mut self, st: &mut SinkState, packet_too_large: bool) {
        self.connected = false;
        if let Some(sp) = self.spool.as_ref() {
            sp.spool.set_draining(false);
        }
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
        self.rewind();
    }

    /// The link is up. Judge the publishes lost with the previous connection: when the broker
    /// took the bridge back at once, they are suspects; one that was alone in flight at two
    /// such drops in a row is set aside.
    fn link_up(&mut self, st: &mut SinkState, session: &super::link::Session) {
        self.connected = true;
        self.limit
            .connected(session.protocol, session.max_packet_size);
        st.set_packet_limit(self.limit.clone());
        if let Some(sp) = self.spool.as_ref() {
            sp.spool.set_draining(true);
        }
        // Every publish of the old connection has come back as lost by now: the driver fails
        // them before it reports the drop, and reconnecting takes at least one backoff step.
        let lost = std::mem::take(&mut self.lost);
        let keys = lost.iter().map(|f| f.key.clone()).collect();
        match self.guard.on_drop(keys, session.failed_attempts == 0) {
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

    /// The broker refused MQTT 5: speak 3.1.1 from now on (when the configuration allows).
    fn downgrade(&mut self, cfg: &MqttSinkConfig) -> Result<(), SinkError> {
        info!(broker = %self.broker, "MQTT broker does not speak MQTT 5; using MQTT 3.1.1 (its packet limit is then only known from [mqtt] max_packet_size)");
        self.link = Link::start(cfg, &self.will_topic, Protocol::V311, self.listen.clone())?;
        self.limit = PacketLimit::new(Protocol::V311, cfg.max_packet_size);
        Ok(())
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
    let (conn_tx, mut conn_rx) = mpsc::channel(64);
    let ha = cfg.homeassistant.clone();
    let listen = Listen {
        tx: conn_tx,
        ha_status: ha.as_ref().map(|h| h.status_topic.clone()),
        discovery_prefix: ha.as_ref().map(|h| h.discovery_prefix.clone()),
        fallback: cfg.protocol == ProtocolChoice::Auto,
    };
    let first = cfg.protocol.first();
    let link = Link::start(&cfg, &bridge_state, first, listen.clone())?;
    info!(broker = %cfg.broker, client_id = %cfg.client_id, base_topic = %cfg.base_topic, protocol = ?cfg.protocol, spool = spool.is_some(), "MQTT sink started");

    let appended = spool.clone();
    let limit = PacketLimit::new(first, cfg.max_packet_size);
    st.set_packet_limit(limit.clone());
    let mut sh = Shell {
        link,
        choice: cfg.protocol,
        listen,
        will_topic: bridge_state.clone(),
        unparsed_topic: st.topics().bridge_unparsed(),
        broker: cfg.broker.to_string(),
        outbox: Outbox::default(),
        in_flight: JoinSet::new(),
        flying: HashMap::new(),
        next_id: 0,
        connected: false,
        limit,
        guard: KillGuard::default(),
        lost: Vec::new(),
        warned: HashSet::new(),
        dead: DeadLetters::new(cfg.state_dir.as_deref()),
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
        let accepting = sh.accepting();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            ev = conn_rx.recv() => match ev {
                Some(Conn::Up(session)) => {
                    sh.link_up(&mut st, &session);
                    if let Some(h) = &ha
                        && let Err(e) = sh.link.try_subscribe(&h.status_topic)
                    {
                        stats().mqtt_errors.inc();
                        warn!(topic = %h.status_topic, error = %e, "MQTT subscribe failed");
                    }
                    if let Some(h) = &ha {
                        scan = Some(Scan { until: Instant::now() + stale::SCAN_WINDOW, found: BTreeMap::new() });
                        for f in stale::scan_filters(&h.discovery_prefix) {
                            if let Err(e) = sh.link.try_subscribe(&f) {
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
                Some(Conn::Down { packet_too_large, .. }) => {
                    scan = None;
                    sh.link_down(&mut st, packet_too_large);
                }
                Some(Conn::Unsupported) => {
                    if sh.choice == ProtocolChoice::Auto && sh.link.protocol() == Protocol::V5 {
                        sh.downgrade(&cfg)?;
                        st.set_packet_limit(sh.limit.clone());
                    }
                }
                Some(Conn::HaStatus(p)) => {
                    st.on_ha_status(&p, Instant::now());
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
                    error!("MQTT event loop ended");
                    break;
                }
            },
            Some(done) = sh.in_flight.join_next(), if !sh.in_flight.is_empty() => {
                if let Ok((id, delivery)) = done {
                    sh.completed(&mut st, id, delivery);
                }
            }
            msg = rx.recv(), if accepting => match msg {
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
                    image: false,
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
                Some(done) = sh.in_flight.join_next(), if !sh.in_flight.is_empty() => {
                    if let Ok((id, delivery)) = done {
                        sh.completed(&mut st, id, delivery);
                    }
                }
                ev = conn_rx.recv() => if !matches!(ev, Some(Conn::Up(_) | Conn::HaStatus(_) | Conn::Retained(..))) { break },
                _ = tokio::time::sleep_until(wake) => {
                    if offline_queued {
                        warn!(queued = sh.outbox.q.len(), in_flight = sh.in_flight.len(), "MQTT shutdown flush timed out");
                        break;
                    }
                }
            }
        }
        sh.in_flight.abort_all();
        sh.link.disconnect(Duration::from_secs(2)).await;
    } else {
        sh.in_flight.abort_all();
        drop(sh.link);
    }
    if let Some(sp) = &sh.spool {
        sp.spool.set_draining(false);
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
            if let Err(e) = sh.link.try_unsubscribe(&f) {
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

    #[test]
    fn outbox_drops_oldest_and_keeps_momentary() {
        let p = |t: &str, momentary: bool| Pending {
            topic: t.into(),
            payload: Bytes::from_static(b"x"),
            retain: !momentary,
            momentary,
            image: false,
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
        assert!(o.below_accept_level());
        for i in 0..OUTBOX_MAX_MESSAGES + 5 {
            o.push_back(p(&format!("e{i}"), true));
        }
        assert!(!o.below_accept_level());
        assert_eq!(o.q.len(), OUTBOX_MAX_MESSAGES);
        assert_eq!(o.dropped, 6);
        assert_eq!(
            o.q.back().unwrap().topic,
            format!("e{}", OUTBOX_MAX_MESSAGES + 4)
        );
    }
}
