//! The sink's state machine (sans-IO): inputs in, [`Action`]s out.
//!
//! The async shell (`client.rs`) feeds it routed messages, timer ticks, (re)connections and
//! Home Assistant's birth message, and performs the returned publishes. Time is always passed
//! in, so every rule here is unit-tested with deterministic `Instant`s.
//!
//! Rules:
//! * What an event may move depends on its [`EventKind`]; [`Moves::of`] is the one table
//!   that decides it (images, plate/list, `last`, bridge counters and the event entity come
//!   from detections only; a status drives only binary states and `alarm/…` topics; an end only
//!   turns a state OFF; tracking only its own category's values).
//! * Binary state per (device, category): a Start/Pulse detection publishes `ON` (not
//!   retained) and (re)starts an off timer of that category's `off_delay`; when it runs out,
//!   `OFF` (retained). A rule's Stop publishes `OFF` at once. When the settle window (below)
//!   delays the `ON`, the timers count from the moment it goes out.
//! * Object labels (what an object detector found in a detection's picture,
//!   `event.detection` with state `ok`): per device and label
//!   ([`crate::event::caps::object_key`]; at most [`MAX_OBJECT_LABELS`] per device, those of
//!   [`DeviceCaps::objects`]) the number of such objects in the picture on
//!   `objects/<label>/count` (retained), then `ON` (not retained) on `objects/<label>/state`,
//!   and an off timer of `object_off_delay`; when it runs out, count `0` and `OFF` (both
//!   retained). The annotated picture goes to `<category>/annotated` as the overview goes to
//!   `<category>/image`.
//! * Alarm-status events (`attrs.alarm`): every element mirrors on `alarm/<name>[_<id>]`
//!   (`ON` not retained, `OFF` retained). A status that names one category
//!   ([`crate::event::AlarmState::covers`]): `active = true` turns that state `ON` and holds
//!   it until the device's `false` for that alarm (or `alarm_max_hold`), re-publishing `ON`
//!   every `off_delay / 2` so HA's own `off_delay` does not end it early. `active = false`
//!   turns it `OFF` at once, even if a detection timer is still running: the device's OFF
//!   wins. Several alarms of one category keep it ON while any is active.
//! * A status that may stand for several categories (an NVR's `perimeterAlarm`: intrusion or
//!   line crossing, `protocol.md` §7.2) claims none of them by itself: it drives only its
//!   `alarm/…` topic (an entity of its own). It is tied to a covered category only by
//!   evidence from the same device: a detection of that category arriving while the alarm is
//!   active (NVRs send the status first), or a detection of it still ON when the status
//!   arrives (IPCs send it after). The tied category is then held like above, until the
//!   alarm's `false` or `alarm_max_hold`.
//! * Discovery settle: HA subscribes to a new entity's topics only after it has created the
//!   entity (0.1 s after the discovery message once HA is up, 0.5 s before its birth message,
//!   longer on a loaded machine; `tests/ha/measure_settle.py`), and non-retained messages
//!   sent before that are lost to it. So only the topics of entities that are new or changed
//!   (per component, compared with what this process last announced) start a hold: their
//!   non-retained messages wait `discovery_settle` after the discovery went out. A device's
//!   messages before the first held one go out at once; those after it, retained ones too,
//!   queue behind it, so the device's order never changes. Other devices are not affected. While Home Assistant is known to be away (its status topic said `offline`)
//!   a new entity's messages wait for its birth message plus the settle time, at most
//!   [`HA_OFFLINE_WAIT`]. Announcing happens as early as the bridge knows of an entity: a
//!   device's first post of any kind, a status post for its category. A device's discovery
//!   changes at most once per settle time ([`SinkState::sync`] says why); a later change
//!   waits, and its new entities settle from when it goes out.
//! * Devices: the pipeline's registry is the one record of them. At start the sink restores
//!   what it knows ([`SinkState::restore`]: `offline` until they post, discovery on connect,
//!   bridge-kept counters re-published); afterwards a [`Routed::Seen`] brings a device's
//!   capabilities whenever they grow, an event the bridge-kept counts it advanced (a count
//!   is never published lower than the one the sink has: replayed records carry older ones), and
//!   [`Routed::Forget`] the end of a device silent for `forget_after` (its discovery is
//!   cleared). Retained discovery of devices the bridge no longer knows is cleared after each
//!   connect ([`SinkState::clear_stale`], rules in [`super::stale`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::json;

use super::config::{ImageConfig, MqttSinkConfig};
use super::discovery::{DeviceCaps, Discovery, device_identifier};
use super::limits::PacketLimit;
use super::payload::{event_json_with, image_json, rfc3339, unparsed_json};
use super::topics::{Topics, alarm_key, counter_key};
use crate::event::caps::{MAX_OBJECT_LABELS, object_key};
use crate::event::{
    AlarmState, Category, DetectionState, Device, Event, EventKind, Image, ImageRole, KnownDevices,
    Routed, counted_classes,
};

/// Images (overview and crop per device and category) kept in memory to re-publish after a
/// reconnect, bytes. Enough for every image of a few dozen cameras; with hundreds, the images
/// published longest ago are not kept (the broker still has them retained).
pub const RETAINED_IMAGE_BYTES: u64 = 32 * 1024 * 1024;

/// Default of `discovery_settle`: how long a new entity's non-retained publishes wait after its
/// discovery was published.
pub const DISCOVERY_SETTLE: Duration = Duration::from_millis(1500);

/// Longest wait for Home Assistant's birth message when it said it went `offline`.
pub const HA_OFFLINE_WAIT: Duration = Duration::from_secs(60);

/// What the bridge knows of Home Assistant's MQTT presence (its status topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HaPresence {
    /// Nothing heard since the bridge connected: assumed up.
    Unknown,
    /// `online` (birth message).
    Online,
    /// `offline` (HA stopped, or its last will).
    Offline,
}

/// How often `bridge/info` is refreshed.
pub const INFO_INTERVAL: Duration = Duration::from_secs(60);

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Publish one message (QoS 1).
    Publish {
        /// Topic.
        topic: String,
        /// Payload (shared, never copied per topic).
        payload: Bytes,
        /// Retain flag.
        retain: bool,
        /// A message that is not a state (event JSON, unparsed, non-retained image): the shell
        /// keeps it while the broker is away. States are not kept: [`SinkState::on_connected`]
        /// re-publishes the current ones.
        momentary: bool,
        /// The payload is an image (counted as `images_oversize` when it cannot fit).
        image: bool,
    },
}

impl Action {
    fn retained(topic: String, payload: impl Into<Bytes>) -> Action {
        Action::Publish {
            topic,
            payload: payload.into(),
            retain: true,
            momentary: false,
            image: false,
        }
    }
    /// A non-retained state (`ON`).
    fn transient(topic: String, payload: impl Into<Bytes>) -> Action {
        Action::Publish {
            topic,
            payload: payload.into(),
            retain: false,
            momentary: false,
            image: false,
        }
    }
    fn momentary(topic: String, payload: impl Into<Bytes>) -> Action {
        Action::Publish {
            topic,
            payload: payload.into(),
            retain: false,
            momentary: true,
            image: false,
        }
    }
    fn image(topic: String, payload: Bytes, retain: bool) -> Action {
        Action::Publish {
            topic,
            payload,
            retain,
            momentary: !retain,
            image: true,
        }
    }

    /// Topic of the action.
    pub fn topic(&self) -> &str {
        match self {
            Action::Publish { topic, .. } => topic,
        }
    }

    fn is_retained(&self) -> bool {
        match self {
            Action::Publish { retain, .. } => *retain,
        }
    }
}

/// The image roles the sink publishes per device and category, and their topic leaves
/// (`<base>/<device>/<category>/<leaf>`).
const IMAGE_ROLES: [ImageRole; 3] = [ImageRole::Overview, ImageRole::Target, ImageRole::Annotated];
/// See [`IMAGE_ROLES`].
const IMAGE_LEAVES: [&str; 3] = ["image", "target", "annotated"];

const ON: &[u8] = b"ON";
const OFF: &[u8] = b"OFF";

/// Binary state of one (device, category).
#[derive(Debug, Default)]
struct Binary {
    /// What was last published.
    on: bool,
    /// Detection off timer.
    off_at: Option<Instant>,
    /// Keys of the active alarms ([`DevState::alarms`]) that hold this state ON.
    alarms: BTreeSet<String>,
    /// Next ON refresh while held.
    refresh_at: Option<Instant>,
}

/// An alarm-status element of a device that is active (`true` seen, no `false` yet).
#[derive(Debug)]
struct ActiveAlarm {
    /// Categories it may stand for (names); one when the status names its category.
    covers: Vec<String>,
    /// Categories it holds ON: its own one, or those tied to it by evidence.
    holds: BTreeSet<String>,
    /// Safety cap: `alarm_max_hold` after its last `true`.
    until: Instant,
}

/// What one event may move, by its [`EventKind`]. This table is the one place the sink
/// decides it; [`SinkState::on_event`] only consults it. The registry's
/// [`DeviceCaps::record`] and [`counted_classes`] follow the same rule for the entities
/// (images and bridge counters come from detections only).
///
/// | kind | images | plate, list, bridge counters | `targets` | `last` | objects | event JSON | state |
/// |---|---|---|---|---|---|---|---|
/// | detection | yes | yes | – | yes | yes | yes | ON, off timer; evidence for active statuses |
/// | tracking | – | – | yes | yes (its own category) | – | yes (the rate-limited summary) | ON, off timer |
/// | status | – | – | – | – | – | – | held ON / OFF by the device; `alarm/…` topic |
/// | end | – | – | – | – | – | – | OFF (unless a status holds it) |
///
/// Why: a status repeats (or ends, `alarmHoldTime` later) a detection the device already
/// posted, so letting it set "Last plate read" makes reads look late and re-sends stale
/// values (field case 03); a tracking summary is not a detection but its own category's
/// data (field case 06); an end says the rule stopped, nothing new was seen.
///
/// Device-reported counters (`PASSLINECOUNT` running totals, `protocol.md` §6.5) are facts
/// of the device, not of one detection: they are published from any post that carries them
/// (a rule's end included). Only the bridge-kept counters count detections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Moves {
    /// Overview / target images (device, category and `image_json` topics) and their
    /// image entities.
    images: bool,
    /// Plate, list and the bridge-kept counters.
    detection_values: bool,
    /// The tracked-target count (`traject/targets`).
    tracking_values: bool,
    /// What an object detector found in the picture (`objects/<label>/state` and `count`).
    objects: bool,
    /// `<category>/last` (the HA "Last …" sensor).
    last: bool,
    /// The event JSON (`<category>/event`: the HA event entity and device trigger).
    event: bool,
    /// What the binary state does.
    state: StateRule,
}

/// How an event acts on its category's binary state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateRule {
    /// `ON` and the off timer restarted; with `evidence`, the event also ties active statuses
    /// that may stand for its category to it.
    On {
        /// The event is evidence for ambiguous statuses.
        evidence: bool,
    },
    /// `OFF` at once, unless an active status holds the state.
    Off,
    /// Driven by the alarm-status element (`attrs.alarm`).
    Alarm,
}

impl Moves {
    /// The rules for one kind of event.
    const fn of(kind: EventKind) -> Moves {
        match kind {
            EventKind::Detection => Moves {
                images: true,
                detection_values: true,
                tracking_values: false,
                objects: true,
                last: true,
                event: true,
                state: StateRule::On { evidence: true },
            },
            EventKind::Tracking => Moves {
                images: false,
                detection_values: false,
                tracking_values: true,
                objects: false,
                last: true,
                event: true,
                state: StateRule::On { evidence: false },
            },
            EventKind::Status => Moves {
                images: false,
                detection_values: false,
                tracking_values: false,
                objects: false,
                last: false,
                event: false,
                state: StateRule::Alarm,
            },
            EventKind::End => Moves {
                images: false,
                detection_values: false,
                tracking_values: false,
                objects: false,
                last: false,
                event: false,
                state: StateRule::Off,
            },
        }
    }
}

/// What [`SinkState::on_event`] hands to the [`DevState`] helpers for one event.
struct EventCtx<'a> {
    topics: &'a Topics,
    images: &'a ImageConfig,
    limit: &'a PacketLimit,
    /// The event's category name.
    cat: &'a str,
    /// The category's `off_delay`.
    off_delay: Duration,
    /// The object labels' `off_delay`.
    object_off_delay: Duration,
    max_hold: Duration,
    now: Instant,
}

impl DevState {
    /// The overview (`image`), target crop (`target`) and annotated overview (`annotated`) of
    /// the device and category, retained with `retain_device`; their `image_json` form when
    /// configured (and when it fits).
    fn publish_images(
        &mut self,
        ctx: &EventCtx<'_>,
        ev: &Event,
        images: [Option<&Image>; 3],
        out: &mut Vec<Action>,
    ) {
        let (id, now) = (self.device.id.clone(), ctx.now);
        for (img, leaf) in images.into_iter().zip(IMAGE_LEAVES) {
            let Some(img) = img else { continue };
            let t = ctx.topics.device_cat(&id, ctx.cat, leaf);
            if ctx.images.retain_device {
                self.put(t, img.data.clone(), true, now, out);
            } else {
                self.emit(Action::image(t, img.data.clone(), false), now, out);
            }
        }
        if !ctx.images.json_base64 {
            return;
        }
        for img in images.into_iter().flatten() {
            let p = Bytes::from(image_json(
                &self.device,
                &ev.category,
                img.role,
                ev.time,
                &img.data,
            ));
            let t = ctx.topics.device_cat(&id, ctx.cat, "image_json");
            if ctx.limit.fits(t.len(), p.len()) {
                let retain = ctx.images.retain_device;
                self.emit(Action::image(t, p, retain), now, out);
            }
        }
    }

    /// Small retained values: plate and list, device counters, bridge-kept counters (the
    /// registry's count after the event), tracked targets, `last`.
    fn publish_values(
        &mut self,
        ctx: &EventCtx<'_>,
        ev: &Event,
        moves: &Moves,
        counts: &BTreeMap<String, u64>,
        out: &mut Vec<Action>,
    ) {
        let (id, now, cat) = (self.device.id.clone(), ctx.now, ctx.cat);
        let topic = |leaf: &str| ctx.topics.device_cat(&id, cat, leaf);
        if moves.detection_values
            && ev.category == Category::Lpr
            && let Some(p) = ev.attrs.plates.first()
        {
            self.put(
                topic("plate"),
                Bytes::from(p.plate.clone()),
                false,
                now,
                out,
            );
            let list = (p.list.clone().or_else(|| p.group.clone()))
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| "none".into());
            self.put(topic("list"), Bytes::from(list), false, now, out);
        }
        if let Some(c) = ev.attrs.counters.as_ref().filter(|c| !c.is_empty()) {
            for (dir, list) in [
                ("enter", &c.enter),
                ("leave", &c.leave),
                ("exist", &c.exist),
            ] {
                for (class, value) in list {
                    let t = topic(&counter_key(dir, class));
                    self.put(t, Bytes::from(value.to_string()), false, now, out);
                }
            }
        }
        for class in counted_classes(ev) {
            let n = self.counts.entry(class.clone()).or_insert(0);
            // The registry's count after this event, never lower than the count the sink has
            // (restored or published): a record replayed after a restart carries the count
            // of its time, and Home Assistant reads a lower `total_increasing` value as a
            // meter reset. A record spooled by camqtt 0.1.0 has none, and counts on from the
            // last published value.
            *n = counts.get(&class).map_or(*n + 1, |&c| c.max(*n));
            let v = Bytes::from(n.to_string());
            self.put(topic(&counter_key("enter", &class)), v, false, now, out);
        }
        if moves.tracking_values && ev.category == Category::Traject {
            let n = Bytes::from(ev.attrs.targets.len().to_string());
            self.put(topic("targets"), n, false, now, out);
        }
        if moves.last {
            self.put(
                topic("last"),
                Bytes::from(rfc3339(ev.time)),
                false,
                now,
                out,
            );
        }
    }

    /// What an object detector found in the event's picture (when it answered): per label the
    /// device has an entity for ([`DeviceCaps::objects`]), the count of such objects
    /// (retained) and `ON` (not retained), and the label's off timer restarted. Labels past
    /// [`MAX_OBJECT_LABELS`] get nothing (logged once per device).
    fn publish_objects(&mut self, ctx: &EventCtx<'_>, ev: &Event, out: &mut Vec<Action>) {
        let Some(det) = (ev.detection.as_ref()).filter(|d| d.state == DetectionState::Ok) else {
            return;
        };
        let mut found: BTreeMap<String, u64> = BTreeMap::new();
        for o in &det.objects {
            *found.entry(object_key(&o.label)).or_default() += 1;
        }
        if found.is_empty() {
            return;
        }
        let known = self.caps.objects();
        let now = ctx.now;
        let left_out: Vec<String> = (found.keys())
            .filter(|k| !known.contains_key(*k))
            .cloned()
            .collect();
        found.retain(|k, _| known.contains_key(k));
        // The counts first (retained, so a new sensor's count is not held back by the settle
        // window): an automation fired by an ON reads them.
        for (key, n) in &found {
            let topic = ctx.topics.object(&self.device.id, key, "count");
            self.put(topic, Bytes::from(n.to_string()), false, now, out);
        }
        for key in found.into_keys() {
            let state_topic = ctx.topics.object(&self.device.id, &key, "state");
            self.retained.remove(&state_topic);
            self.emit(Action::transient(state_topic, ON), now, out);
            let off_at = self.visible_from(now) + ctx.object_off_delay;
            let bin = self.objects.entry(key).or_default();
            bin.on = true;
            bin.off_at = Some(off_at);
        }
        if !left_out.is_empty() && !self.objects_capped_warned {
            self.objects_capped_warned = true;
            let shown: Vec<&str> = left_out.iter().take(8).map(String::as_str).collect();
            tracing::warn!(
                device = %self.device.id,
                max = MAX_OBJECT_LABELS,
                left_out = %shown.join(","),
                "object labels past the per-device maximum get no entities or topics; later ones are dropped silently"
            );
        }
    }

    /// The object labels whose off timer ran out: count `0`, then `OFF` (both retained).
    fn expire_objects(&mut self, topics: &Topics, now: Instant, out: &mut Vec<Action>) {
        let due: Vec<String> = (self.objects.iter())
            .filter(|(_, b)| b.on && b.off_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(bin) = self.objects.get_mut(&key) {
                bin.on = false;
                bin.off_at = None;
            }
            let id = self.device.id.clone();
            let zero = Bytes::from_static(b"0");
            self.put(topics.object(&id, &key, "count"), zero, false, now, out);
            let off = Bytes::from_static(OFF);
            self.put(topics.object(&id, &key, "state"), off, false, now, out);
        }
    }

    /// The category's binary state (and, for a status, the raw alarm topic) by `rule`.
    fn apply_state(
        &mut self,
        ctx: &EventCtx<'_>,
        ev: &Event,
        rule: StateRule,
        covers: &[(String, Duration)],
        out: &mut Vec<Action>,
    ) {
        let (cat, now) = (ctx.cat.to_owned(), ctx.now);
        let state_topic = ctx.topics.device_cat(&self.device.id, &cat, "state");
        match rule {
            StateRule::Alarm => {
                if let Some(alarm) = &ev.attrs.alarm {
                    self.on_status(alarm, covers, ctx.max_hold, ctx.topics, now, out);
                }
            }
            StateRule::On { evidence } => {
                self.binaries.entry(cat.clone()).or_default().on = true;
                self.retained.remove(&state_topic);
                self.emit(Action::transient(state_topic, ON), now, out);
                let from = self.visible_from(now);
                if let Some(bin) = self.binaries.get_mut(&cat) {
                    bin.off_at = Some(from + ctx.off_delay);
                }
                if evidence {
                    self.tie_to_active(&cat, from + ctx.off_delay / 2, now);
                }
            }
            StateRule::Off => {
                let bin = self.binaries.entry(cat).or_default();
                bin.off_at = None;
                if bin.alarms.is_empty() {
                    bin.on = false;
                    self.put(state_topic, Bytes::from_static(OFF), false, now, out);
                }
            }
        }
    }
}

/// The category names a status stands for: its `covers`, or its event category when it
/// names none (spool records written before `covers` existed).
fn status_covers(alarm: &AlarmState, category: &Category) -> Vec<String> {
    if alarm.covers.is_empty() {
        vec![category.as_str().to_owned()]
    } else {
        alarm.covers.iter().map(|c| c.as_str().to_owned()).collect()
    }
}

#[derive(Debug)]
struct DevState {
    device: Device,
    /// Last published availability.
    online: Option<bool>,
    caps: DeviceCaps,
    /// Last published discovery messages.
    discovery: Vec<(String, Bytes)>,
    /// When the sink last handled a message of it (the registry's time after a restart).
    last_seen: Option<SystemTime>,
    /// Current retained values: topic → (payload, is image).
    retained: BTreeMap<String, (Bytes, bool)>,
    /// Bytes of the images in `retained`.
    image_bytes: u64,
    /// When each image in `retained` was published (the oldest go first past
    /// [`RETAINED_IMAGE_BYTES`]).
    image_put: BTreeMap<String, Instant>,
    binaries: BTreeMap<String, Binary>,
    /// Binary state per object label ([`object_key`]): `on` and the off timer.
    objects: BTreeMap<String, Binary>,
    /// The object-label cap was logged for this device.
    objects_capped_warned: bool,
    /// Active alarm-status elements by `alarm_key` (`perimeterAlarm_1`).
    alarms: BTreeMap<String, ActiveAlarm>,
    /// Bridge-kept counters (`enter_<class>`) as last published.
    counts: BTreeMap<String, u64>,
    /// Topics of entities announced recently → when their messages may go out.
    settling: BTreeMap<String, Instant>,
    /// Messages waiting for their topic's settle time, in emission order.
    held: VecDeque<Action>,
    /// Component configurations last announced (key → config), to tell new entities.
    components: BTreeMap<String, serde_json::Value>,
    /// The device or its capabilities changed since discovery was last built: the next
    /// [`SinkState::sync`] builds and compares it again (most events change neither, and
    /// building a device's discovery costs more than the rest of an event).
    discovery_stale: bool,
    /// When the device's discovery was last published.
    discovery_at: Option<Instant>,
    /// A changed discovery waiting for the previous one to be `settle` old (see
    /// [`SinkState::sync`]); published by [`SinkState::on_tick`].
    discovery_due: Option<Instant>,
}

impl DevState {
    fn new(device: Device) -> DevState {
        DevState {
            device,
            online: None,
            caps: DeviceCaps::default(),
            discovery: Vec::new(),
            last_seen: None,
            retained: BTreeMap::new(),
            image_bytes: 0,
            image_put: BTreeMap::new(),
            binaries: BTreeMap::new(),
            objects: BTreeMap::new(),
            objects_capped_warned: false,
            alarms: BTreeMap::new(),
            counts: BTreeMap::new(),
            settling: BTreeMap::new(),
            held: VecDeque::new(),
            components: BTreeMap::new(),
            discovery_stale: true,
            discovery_at: None,
            discovery_due: None,
        }
    }

    /// Emit through the settle gate: a non-retained message to a settling topic (a new entity
    /// HA may not listen to yet) is held; once anything is held, every later message of the
    /// device queues behind it, so the device's order never changes (an event is never
    /// overtaken by the next event's image, which an automation fired by it would fetch).
    fn emit(&mut self, a: Action, now: Instant, out: &mut Vec<Action>) {
        if !self.held.is_empty() || self.gated(&a, now) {
            self.held.push_back(a);
        } else {
            out.push(a);
        }
    }

    /// True when `a` must wait for its topic to settle.
    fn gated(&self, a: &Action, now: Instant) -> bool {
        !a.is_retained() && self.settling.get(a.topic()).is_some_and(|t| *t > now)
    }

    /// When a message emitted at `now` actually goes out: when everything held before it (and
    /// it) has settled. Timers (off delay, alarm refresh) count from there, so an ON is visible
    /// for its whole `off_delay` even when the settle window delayed it.
    fn visible_from(&self, now: Instant) -> Instant {
        self.held
            .iter()
            .filter(|a| !a.is_retained())
            .filter_map(|a| self.settling.get(a.topic()))
            .copied()
            .fold(now, Instant::max)
    }

    /// Release held messages from the front while the front has settled, and forget settled
    /// topics.
    fn release_settled(&mut self, now: Instant, out: &mut Vec<Action>) {
        while let Some(front) = self.held.front() {
            if self.gated(front, now) {
                break;
            }
            out.extend(self.held.pop_front());
        }
        self.settling.retain(|_, t| *t > now);
    }

    /// Publish a retained state and remember it for re-publishing.
    fn put(
        &mut self,
        topic: String,
        payload: Bytes,
        image: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if image {
            self.image_bytes += payload.len() as u64;
            self.image_put.insert(topic.clone(), now);
        }
        if let Some((old, true)) = self
            .retained
            .insert(topic.clone(), (payload.clone(), image))
        {
            self.image_bytes -= old.len() as u64;
        }
        let a = if image {
            Action::image(topic, payload, true)
        } else {
            Action::retained(topic, payload)
        };
        self.emit(a, now, out);
    }

    /// Stop keeping the retained value of `topic` for re-publishing.
    fn unkeep(&mut self, topic: &str) {
        if let Some((old, true)) = self.retained.remove(topic) {
            self.image_bytes -= old.len() as u64;
            self.image_put.remove(topic);
        }
    }

    /// Let the active alarm `key` hold `cat` ON (until the alarm ends); the first ON refresh
    /// is due at `refresh_at` unless one is already planned.
    fn hold(&mut self, key: &str, cat: &str, refresh_at: Instant) {
        if let Some(a) = self.alarms.get_mut(key) {
            a.holds.insert(cat.to_owned());
        }
        let bin = self.binaries.entry(cat.to_owned()).or_default();
        bin.alarms.insert(key.to_owned());
        bin.refresh_at.get_or_insert(refresh_at);
    }

    /// The alarm `key` no longer holds `cat`. With `device_off` (the device said `false`)
    /// the state goes `OFF` at once when no other alarm holds it, detection timer or not;
    /// otherwise (safety cap) a running detection timer still runs out on its own.
    fn release(
        &mut self,
        key: &str,
        cat: &str,
        device_off: bool,
        topics: &Topics,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let bin = self.binaries.entry(cat.to_owned()).or_default();
        bin.alarms.remove(key);
        if !bin.alarms.is_empty() {
            return;
        }
        bin.refresh_at = None;
        if device_off {
            bin.off_at = None;
            bin.on = false;
            let t = topics.device_cat(&self.device.id, cat, "state");
            self.put(t, Bytes::from_static(OFF), false, now, out);
        }
    }

    /// An alarm-status element (rules in the module doc). `covers` are the categories it
    /// may stand for with their `off_delay`s; one entry when it names its category.
    fn on_status(
        &mut self,
        alarm: &AlarmState,
        covers: &[(String, Duration)],
        max_hold: Duration,
        topics: &Topics,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let dev_id = self.device.id.clone();
        let key = alarm_key(&alarm.name, alarm.id.as_deref());
        let alarm_topic = topics.device_cat(&dev_id, "alarm", &key);
        let ambiguous = covers.len() > 1;
        if !alarm.active {
            self.put(alarm_topic, Bytes::from_static(OFF), false, now, out);
            let mut cats = self
                .alarms
                .remove(&key)
                .map(|a| a.holds)
                .unwrap_or_default();
            if !ambiguous {
                // The device's OFF for the category it names, held or not.
                cats.extend(covers.iter().map(|(c, _)| c.clone()));
            }
            for cat in cats {
                self.release(&key, &cat, true, topics, now, out);
            }
            return;
        }
        self.retained.remove(&alarm_topic);
        self.emit(Action::transient(alarm_topic, ON), now, out);
        let from = self.visible_from(now);
        let entry = self.alarms.entry(key.clone()).or_insert(ActiveAlarm {
            covers: Vec::new(),
            holds: BTreeSet::new(),
            until: from,
        });
        entry.covers = covers.iter().map(|(c, _)| c.clone()).collect();
        entry.until = from + max_hold;
        if ambiguous {
            // Evidence after the fact: a covered detection still ON (IPCs send the status
            // after the data post). Nothing else ties the status to a category.
            for (cat, off_delay) in covers {
                let detected = self
                    .binaries
                    .get(cat)
                    .is_some_and(|b| b.on && b.off_at.is_some());
                if detected {
                    tracing::debug!(device = %dev_id, alarm = %key, category = %cat, "status tied to the detection it follows");
                    self.hold(&key, cat, from + *off_delay / 2);
                }
            }
            return;
        }
        let Some((cat, off_delay)) = covers.first() else {
            return;
        };
        let state_topic = topics.device_cat(&dev_id, cat, "state");
        self.retained.remove(&state_topic);
        self.emit(Action::transient(state_topic, ON), now, out);
        // Refreshes count from when HA sees the ON (later when a new entity holds it).
        let shown = self.visible_from(now);
        self.hold(&key, cat, shown + *off_delay / 2);
        if let Some(bin) = self.binaries.get_mut(cat) {
            bin.on = true;
            bin.refresh_at = Some(shown + *off_delay / 2);
        }
    }

    /// A detection of `cat` is evidence for every active status that may stand for it and
    /// does not hold it yet (NVRs send the status before the data post): they hold it now.
    fn tie_to_active(&mut self, cat: &str, refresh_at: Instant, now: Instant) {
        let keys: Vec<String> = self
            .alarms
            .iter()
            .filter(|(_, a)| {
                a.until > now && a.covers.iter().any(|c| c == cat) && !a.holds.contains(cat)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            tracing::debug!(device = %self.device.id, alarm = %key, category = %cat, "status tied to a detection during it");
            self.hold(&key, cat, refresh_at);
        }
    }

    /// End the alarms past their safety cap: `OFF` on their topic; the states they held go
    /// `OFF` on the next pass unless a detection timer still runs.
    fn expire_alarms(&mut self, topics: &Topics, now: Instant, out: &mut Vec<Action>) {
        let expired: Vec<String> = self
            .alarms
            .iter()
            .filter(|(_, a)| a.until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            let Some(a) = self.alarms.remove(&key) else {
                continue;
            };
            tracing::info!(device = %self.device.id, alarm = %key, "alarm status without its false for alarm_max_hold, ended");
            let t = topics.device_cat(&self.device.id, "alarm", &key);
            self.put(t, Bytes::from_static(OFF), false, now, out);
            for cat in a.holds {
                self.release(&key, &cat, false, topics, now, out);
            }
        }
    }
}

/// The whole sink state.
#[derive(Debug)]
pub struct SinkState {
    topics: Topics,
    discovery: Option<Discovery>,
    images: ImageConfig,
    off_delay: BTreeMap<String, Duration>,
    default_off_delay: Duration,
    /// `off_delay` of the object labels (at least 1 s).
    object_off_delay: Duration,
    alarm_max_hold: Duration,
    client_id: String,
    started: Instant,
    started_wall: SystemTime,
    devices: BTreeMap<String, DevState>,
    /// Retained bridge-level values (`<base>/<category>/image` when retained).
    global_retained: BTreeMap<String, Bytes>,
    next_info: Instant,
    /// The devices were restored from a valid registry file: a device it does not know is
    /// gone.
    authoritative: bool,
    /// The broker's packet limit as far as known (the shell keeps it current).
    packet_limit: PacketLimit,
    /// `<device>/<category>/<role>` already warned about an oversize image.
    oversize_warned: BTreeSet<String>,
    /// How long a new entity's non-retained messages wait (`discovery_settle`).
    settle: Duration,
    /// The bridge's metrics (`bridge/info` shows them).
    telemetry: crate::telemetry::Telemetry,
    /// Home Assistant's MQTT presence.
    ha: HaPresence,
    /// The broker nodes configured (`mqtt://host:port`, in the order they are tried).
    nodes: Vec<String>,
    /// The node of the current (or last) connection.
    node: Option<String>,
}

impl SinkState {
    /// A fresh state; `now`/`wall` are the start time (monotonic and wall clock).
    pub fn new(
        cfg: &MqttSinkConfig,
        now: Instant,
        wall: SystemTime,
        telemetry: crate::telemetry::Telemetry,
    ) -> SinkState {
        let topics = Topics::new(&cfg.base_topic);
        let discovery = cfg.homeassistant.clone().map(|ha| {
            Discovery::new(
                topics.clone(),
                ha,
                &cfg.client_id,
                &cfg.bridge_name,
                cfg.off_delay.clone(),
                cfg.default_off_delay,
            )
            .with_object_off_delay(cfg.object_off_delay)
        });
        SinkState {
            topics,
            discovery,
            images: cfg.images.clone(),
            off_delay: cfg.off_delay.clone(),
            default_off_delay: cfg.default_off_delay,
            object_off_delay: cfg.object_off_delay.max(Duration::from_secs(1)),
            alarm_max_hold: cfg.alarm_max_hold,
            client_id: cfg.client_id.clone(),
            started: now,
            started_wall: wall,
            devices: BTreeMap::new(),
            global_retained: BTreeMap::new(),
            next_info: now + INFO_INTERVAL,
            authoritative: false,
            packet_limit: PacketLimit::new(cfg.protocol.first(), cfg.max_packet_size),
            oversize_warned: BTreeSet::new(),
            settle: cfg
                .homeassistant
                .as_ref()
                .map_or(DISCOVERY_SETTLE, |h| h.discovery_settle),
            ha: HaPresence::Unknown,
            telemetry,
            nodes: cfg
                .nodes()
                .map(super::config::BrokerAddr::endpoint)
                .collect(),
            node: None,
        }
    }

    /// The broker node connected to (`mqtt://host:port`); `bridge/info` shows it.
    pub fn set_node(&mut self, endpoint: &str) {
        endpoint.clone_into(self.node.get_or_insert_with(String::new));
    }

    /// The broker's packet limit changed (connect, learned): images that cannot fit are not
    /// published (nor kept for re-publishing), and `bridge/info` shows it.
    pub fn set_packet_limit(&mut self, limit: PacketLimit) {
        for dev in self.devices.values_mut() {
            dev.retained
                .retain(|t, (p, image)| !*image || limit.fits(t.len(), p.len()));
            let kept = &dev.retained;
            dev.image_put.retain(|t, _| kept.contains_key(t));
            dev.image_bytes = (kept.values())
                .filter(|(_, image)| *image)
                .map(|(p, _)| p.len() as u64)
                .sum();
        }
        self.global_retained
            .retain(|t, p| limit.fits(t.len(), p.len()));
        self.packet_limit = limit;
    }

    /// The broker will not take `topic` (it refused a retained value there): stop
    /// re-publishing the value on every connect.
    pub fn forget_retained(&mut self, topic: &str) {
        for dev in self.devices.values_mut() {
            dev.unkeep(topic);
        }
        self.global_retained.remove(topic);
    }

    /// The event's overview, target and annotated overview (in [`IMAGE_ROLES`] order), each
    /// only when it fits the broker's packet limit on its longest topic
    /// (`<base>/<device>/<category>/image|target|annotated`; the category topic is shorter).
    /// An image left out is counted in `images_oversize`, logged once per device, category
    /// and role, and named in the returned notes for the event JSON's `warnings`.
    fn publishable_images<'e>(
        &mut self,
        id: &str,
        ev: &'e Event,
    ) -> ([Option<&'e Image>; 3], Vec<String>) {
        let cat = ev.category.as_str();
        let mut notes = Vec::new();
        let mut keep = |role: ImageRole, leaf: &str| {
            let img = ev.image(role)?;
            let topic = self.topics.device_cat(id, cat, leaf);
            if self.packet_limit.fits(topic.len(), img.data.len()) {
                return Some(img);
            }
            self.telemetry.images_oversize.inc();
            let (max, from) = self
                .packet_limit
                .max()
                .map_or((0, "the MQTT maximum"), |(n, s)| (n, s.describe()));
            let role_name = role.as_str();
            if self.oversize_warned.len() >= 4096 {
                self.oversize_warned.clear();
            }
            if self
                .oversize_warned
                .insert(format!("{id}/{cat}/{role_name}"))
            {
                tracing::warn!(
                    device = %id,
                    category = %cat,
                    role = role_name,
                    topic = %topic,
                    bytes = img.data.len(),
                    max_packet_size = max,
                    limit_from = from,
                    "image skipped: larger than the broker's packet limit (raise max_packet_size in the broker, then set [mqtt] max_packet_size to match); later ones from this device and category are only counted"
                );
            }
            notes.push(format!(
                "{role_name} image of {} bytes not published: larger than the broker's packet limit of {max} bytes",
                img.data.len()
            ));
            None
        };
        let images = [0, 1, 2].map(|i| keep(IMAGE_ROLES[i], IMAGE_LEAVES[i]));
        (images, notes)
    }

    /// The topic layout in use.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    fn off_delay(&self, cat: &str) -> Duration {
        self.off_delay
            .get(cat)
            .copied()
            .unwrap_or(self.default_off_delay)
            .max(Duration::from_secs(1))
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.started_wall + now.saturating_duration_since(self.started)
    }

    /// A routed message from the pipeline.
    pub fn on_routed(&mut self, msg: &Routed, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match msg {
            Routed::Seen { device, caps } => {
                let new = self.ensure(device, now, &mut out);
                self.add_caps(&device.id, caps, now, &mut out);
                self.set_online(&device.id, true, &mut out);
                if new {
                    self.push_info(now, &mut out);
                }
            }
            Routed::Offline { device } => {
                let new = self.ensure(device, now, &mut out);
                self.sync(&device.id, now, &mut out);
                self.set_online(&device.id, false, &mut out);
                if new {
                    self.push_info(now, &mut out);
                }
            }
            Routed::Event {
                device,
                event,
                counts,
            } => {
                let new = self.ensure(device, now, &mut out);
                self.event_caps(&device.id, event, now, &mut out);
                self.set_online(&device.id, true, &mut out);
                self.on_event(&device.id, event, counts, now, &mut out);
                self.bound_retained_images();
                if new {
                    self.push_info(now, &mut out);
                }
            }
            Routed::Forget { device } => self.forget(&device.id, now, &mut out),
            Routed::Unparsed(u) => {
                out.push(Action::momentary(
                    self.topics.bridge_unparsed(),
                    unparsed_json(u),
                ));
            }
        }
        out
    }

    /// Keep at most [`RETAINED_IMAGE_BYTES`] of images for re-publishing: past it, the images
    /// published longest ago are let go (they stay retained on the broker; only a broker that
    /// loses its retained messages would lose them until the device's next event).
    fn bound_retained_images(&mut self) {
        let mut total: u64 = self.devices.values().map(|d| d.image_bytes).sum();
        if total <= RETAINED_IMAGE_BYTES {
            return;
        }
        let mut oldest: Vec<(Instant, String, String)> = (self.devices.iter())
            .flat_map(|(id, d)| (d.image_put.iter()).map(|(t, at)| (*at, id.clone(), t.clone())))
            .collect();
        oldest.sort_unstable();
        // Down to three quarters, so that this runs once per many events, not on each.
        let target = RETAINED_IMAGE_BYTES / 4 * 3;
        let mut released = 0u64;
        for (_, id, topic) in oldest {
            if total <= target {
                break;
            }
            if let Some(dev) = self.devices.get_mut(&id) {
                let before = dev.image_bytes;
                dev.unkeep(&topic);
                total -= before - dev.image_bytes;
                released += 1;
            }
        }
        tracing::debug!(
            released,
            kept_bytes = total,
            "retained images beyond the memory bound are no longer kept for re-publishing"
        );
    }

    /// Register or update a device (and its NVR, whose discovery is synced). Returns true
    /// when the device (or its parent) was new. The device's own discovery is synced by the
    /// caller, once its capabilities are current.
    fn ensure(&mut self, device: &Device, now: Instant, out: &mut Vec<Action>) -> bool {
        let mut new = false;
        if let Some(parent) = device.parent.as_deref() {
            new |= self.ensure(parent, now, out);
            self.sync(&parent.id, now, out);
            // Posts from a channel prove the NVR is alive.
            self.set_online(&parent.id, true, out);
        }
        let wall = self.wall(now);
        let dev = self.devices.entry(device.id.clone()).or_insert_with(|| {
            new = true;
            DevState::new(device.clone())
        });
        if dev.device != *device {
            dev.device = device.clone();
            dev.discovery_stale = true;
        }
        dev.last_seen = Some(wall);
        new
    }

    fn set_online(&mut self, id: &str, online: bool, out: &mut Vec<Action>) {
        let topic = self.topics.availability(id);
        if let Some(dev) = self.devices.get_mut(id)
            && dev.online != Some(online)
        {
            dev.online = Some(online);
            let payload = Bytes::from_static(if online { b"online" } else { b"offline" });
            // Availability bypasses the settle gate: it is retained and HA needs it first.
            out.push(Action::retained(topic, payload));
        }
    }

    /// Add what the registry says the device has shown, and publish discovery when that
    /// (or the device) changed.
    fn add_caps(&mut self, id: &str, caps: &DeviceCaps, now: Instant, out: &mut Vec<Action>) {
        if let Some(dev) = self.devices.get_mut(id) {
            let before = dev.caps.clone();
            dev.caps.merge(caps);
            dev.discovery_stale |= dev.caps != before;
        }
        self.sync(id, now, out);
    }

    /// Add what the event shows, and publish discovery when that (or the device) changed.
    /// The registry has recorded it already ([`Routed::Seen`] came first), except in records
    /// spooled by camqtt 0.1.0: their entities are announced all the same.
    fn event_caps(&mut self, id: &str, ev: &Event, now: Instant, out: &mut Vec<Action>) {
        if let Some(dev) = self.devices.get_mut(id) {
            dev.discovery_stale |= dev.caps.record(ev);
        }
        self.sync(id, now, out);
    }

    /// Publish the device's discovery where it changed (nothing to do unless the device or
    /// its capabilities changed since the last time).
    ///
    /// A device's discovery is published at most once per `settle`: Home Assistant (2025.4)
    /// handles the components of a device discovery message in order and, on the first one
    /// still being set up from the previous message, queues that one's update and drops the
    /// rest of the message (`mqtt/discovery.py`, a `return` in the component loop). Two
    /// messages a few milliseconds apart, the registry's capabilities and then the labels an
    /// object detector added to the same post, lost the second one's new entities. So a
    /// change within `settle` of the last publish waits until then ([`SinkState::on_tick`]
    /// publishes it); its new entities' topics start settling at once, counted from that
    /// later publish, so their first messages are held until Home Assistant listens.
    fn sync(&mut self, id: &str, now: Instant, out: &mut Vec<Action>) {
        let settle = self.settle;
        if let Some(dev) = self.devices.get_mut(id).filter(|d| d.discovery_stale) {
            let publish_at = dev.discovery_at.map_or(now, |t| (t + settle).max(now));
            let ready = ready_after(self.ha, settle, publish_at);
            let publish = publish_at <= now;
            sync_discovery(
                self.discovery.as_ref(),
                dev,
                now,
                out,
                false,
                ready,
                publish,
            );
            if !publish {
                tracing::debug!(device = %id, wait_ms = (publish_at - now).as_millis() as u64, "discovery change waits for Home Assistant to finish the previous one");
                dev.discovery_due = Some(publish_at);
            }
        }
    }

    /// Publish what `ev` moves ([`Moves`]), in this order: images (before the event, so
    /// automations triggered by it find them), small retained values, the binary state and
    /// the raw alarm topic, the event itself.
    fn on_event(
        &mut self,
        id: &str,
        ev: &Event,
        counts: &BTreeMap<String, u64>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let moves = Moves::of(ev.kind());
        let (images, notes) = if moves.images {
            self.publishable_images(id, ev)
        } else {
            ([None; 3], Vec::new())
        };
        let overview = images[0];
        // A status: the categories it may stand for, with their off delays.
        let covers: Vec<(String, Duration)> = (ev.attrs.alarm.as_ref())
            .map(|a| status_covers(a, &ev.category))
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                let d = self.off_delay(&c);
                (c, d)
            })
            .collect();
        let ctx = EventCtx {
            topics: &self.topics,
            images: &self.images,
            limit: &self.packet_limit,
            cat: ev.category.as_str(),
            off_delay: self.off_delay(ev.category.as_str()),
            object_off_delay: self.object_off_delay,
            max_hold: self.alarm_max_hold,
            now,
        };
        let Some(dev) = self.devices.get_mut(id) else {
            return;
        };
        dev.publish_images(&ctx, ev, images, out);
        dev.publish_values(&ctx, ev, &moves, counts, out);
        if moves.objects {
            dev.publish_objects(&ctx, ev, out);
        }
        if let Some(img) = overview.filter(|_| ctx.images.category_topic) {
            let t = ctx.topics.category_image(ctx.cat);
            if ctx.images.retain_category {
                self.global_retained.insert(t.clone(), img.data.clone());
            }
            let retain = ctx.images.retain_category;
            dev.emit(Action::image(t, img.data.clone(), retain), now, out);
        }
        dev.apply_state(&ctx, ev, moves.state, &covers, out);
        if moves.event {
            let p = event_json_with(&dev.device, ev, &notes);
            let t = ctx.topics.device_cat(&dev.device.id, ctx.cat, "event");
            dev.emit(Action::momentary(t, p), now, out);
        }
    }

    /// Timers: off timers, alarm hold refresh / cap, settle release, `bridge/info` refresh.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        let topics = self.topics.clone();
        let off_delays = self.off_delay.clone();
        let default_off_delay = self.default_off_delay;
        let (disc, ha, settle) = (self.discovery.as_ref(), self.ha, self.settle);
        for (id, dev) in &mut self.devices {
            if dev.discovery_due.is_some_and(|t| t <= now) {
                let ready = ready_after(ha, settle, now);
                sync_discovery(disc, dev, now, &mut out, false, ready, true);
            }
            dev.release_settled(now, &mut out);
            dev.expire_alarms(&topics, now, &mut out);
            dev.expire_objects(&topics, now, &mut out);
            let cats: Vec<String> = dev.binaries.keys().cloned().collect();
            for cat in cats {
                let Some(mut bin) = dev.binaries.remove(&cat) else {
                    continue;
                };
                let state_topic = topics.device_cat(id, &cat, "state");
                if bin.off_at.is_some_and(|t| t <= now) {
                    bin.off_at = None;
                }
                if bin.on && bin.alarms.is_empty() && bin.off_at.is_none() {
                    bin.on = false;
                    dev.put(state_topic, Bytes::from_static(OFF), false, now, &mut out);
                } else if !bin.alarms.is_empty() && bin.refresh_at.is_some_and(|t| t <= now) {
                    let half = off_delays.get(&cat).copied().unwrap_or(default_off_delay) / 2;
                    bin.refresh_at = Some(now + half.max(Duration::from_millis(500)));
                    dev.emit(Action::transient(state_topic, ON), now, &mut out);
                }
                dev.binaries.insert(cat, bin);
            }
        }
        if now >= self.next_info {
            self.push_info(now, &mut out);
        }
        out
    }

    /// The registry forgot a device (silent for `forget_after`): clear its discovery (empty
    /// retained) and drop its state.
    fn forget(&mut self, id: &str, now: Instant, out: &mut Vec<Action>) {
        let Some(dev) = self.devices.remove(id) else {
            return;
        };
        tracing::info!(device = %id, "device forgotten; its discovery is cleared");
        for (t, _) in dev.discovery {
            out.push(Action::retained(t, Bytes::new()));
        }
        self.push_info(now, out);
    }

    /// Restore what the registry knew at start (before the first connect). The devices are
    /// `offline` until they post; their discovery goes out on connect; the bridge-kept
    /// counters are re-published. With `known.authoritative`, retained discovery of devices
    /// it does not know is cleared ([`SinkState::clear_stale`]).
    pub fn restore(&mut self, known: &KnownDevices) {
        self.authoritative = known.authoritative;
        for r in &known.records {
            let id = r.device.id.clone();
            let mut dev = DevState::new(r.device.clone());
            dev.last_seen = Some(r.last_seen);
            dev.online = Some(false);
            dev.caps = r.caps.clone();
            dev.discovery_stale = true;
            for (class, n) in &r.counts {
                let t = self.topics.device_cat(
                    &id,
                    Category::Counting.as_str(),
                    &counter_key("enter", class),
                );
                dev.retained.insert(t, (Bytes::from(n.to_string()), false));
                dev.counts.insert(class.clone(), *n);
            }
            // Nothing is detected after a restart: a count retained while a label was on
            // (the bridge stopped before its OFF) must not stay.
            for key in r.caps.objects().into_keys() {
                let zero = (Bytes::from_static(b"0"), false);
                dev.retained
                    .insert(self.topics.object(&id, &key, "count"), zero);
                let off = (Bytes::from_static(OFF), false);
                dev.retained
                    .insert(self.topics.object(&id, &key, "state"), off);
            }
            self.devices.insert(id, dev);
        }
    }

    /// Discovery is enabled: the bridge's HA identifier.
    pub fn bridge_identifier(&self) -> Option<&str> {
        self.discovery.as_ref().map(Discovery::bridge_identifier)
    }

    /// After the stale-discovery scan: empty retained publishes for every config in `found`
    /// (retained topic → payload) that this bridge owns and no longer publishes (see
    /// [`super::stale`]). Devices that posted while the scan ran are known by now and kept.
    /// Until [`SinkState::restore`] was called (no registry file), configs of unknown devices
    /// are left alone: they may belong to devices that have not posted yet.
    pub fn clear_stale(&self, found: &BTreeMap<String, Bytes>) -> Vec<Action> {
        let Some(disc) = &self.discovery else {
            return Vec::new();
        };
        let mut current: BTreeSet<String> =
            disc.bridge_messages().into_iter().map(|(t, _)| t).collect();
        let mut known = BTreeSet::new();
        for dev in self.devices.values() {
            current.extend(
                disc.device_messages(&dev.device, &dev.caps)
                    .into_iter()
                    .map(|(t, _)| t),
            );
            current.extend(dev.discovery.iter().map(|(t, _)| t.clone()));
            known.insert(device_identifier(&dev.device));
        }
        super::stale::stale_topics(
            found,
            disc.bridge_identifier(),
            &known,
            &current,
            self.authoritative,
        )
        .into_iter()
        .map(|t| Action::retained(t, Bytes::new()))
        .collect()
    }

    /// The buffer replays every record not yet released (after a broken connection): drop the
    /// publishes waiting in the settle queues. They all come from such records (a record with
    /// held work is not released until that work came out), so the replay makes them again;
    /// kept, they would go out twice. States made by timers in between are re-published on
    /// connect ([`SinkState::on_connected`]).
    pub fn forget_held(&mut self) {
        for d in self.devices.values_mut() {
            d.held.clear();
        }
    }

    /// True while any device's publishes wait in the discovery settle queue (they come out
    /// of a later [`SinkState::on_tick`]).
    pub fn has_held(&self) -> bool {
        self.devices.values().any(|d| !d.held.is_empty())
    }

    /// The earliest time [`SinkState::on_tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut best = Some(self.next_info);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                best = Some(best.map_or(t, |b: Instant| b.min(t)));
            }
        };
        for dev in self.devices.values() {
            consider(dev.discovery_due);
            if !dev.held.is_empty() {
                consider(dev.settling.values().min().copied());
            }
            for bin in dev.binaries.values() {
                if bin.on {
                    consider(bin.off_at);
                }
                consider(bin.refresh_at);
            }
            for bin in dev.objects.values().filter(|b| b.on) {
                consider(bin.off_at);
            }
            for alarm in dev.alarms.values() {
                consider(Some(alarm.until));
            }
        }
        best
    }

    /// The connection to the broker is (re)established: bridge `online`, `bridge/info`,
    /// discovery of everything known, and all current states (retained images included,
    /// the broker may have lost them).
    pub fn on_connected(&mut self, now: Instant) -> Vec<Action> {
        self.republish(now, true)
    }

    /// A message on Home Assistant's status topic (`online` birth, `offline` will or stop).
    /// While HA is away, entities announced meanwhile wait for its return; when it is back,
    /// they settle from its birth on (HA creates them from the retained discovery at start).
    pub fn on_ha_status(&mut self, payload: &[u8], now: Instant) {
        let presence = match payload {
            b"online" => HaPresence::Online,
            b"offline" => HaPresence::Offline,
            _ => return,
        };
        self.ha = presence;
        for dev in self.devices.values_mut() {
            for until in dev.settling.values_mut() {
                *until = match presence {
                    HaPresence::Online => (*until).min(now + self.settle),
                    _ if *until > now => (*until).max(now + HA_OFFLINE_WAIT),
                    _ => *until,
                };
            }
        }
    }

    /// Home Assistant (re)started: re-publish discovery and current states (not events, not
    /// images: those are retained on the broker and reach HA when it subscribes).
    pub fn on_ha_online(&mut self, now: Instant) -> Vec<Action> {
        self.republish(now, false)
    }

    fn republish(&mut self, now: Instant, images: bool) -> Vec<Action> {
        let mut out = vec![Action::retained(
            self.topics.bridge_state(),
            Bytes::from_static(b"online"),
        )];
        if let Some(d) = &self.discovery {
            for (t, p) in d.bridge_messages() {
                out.push(Action::retained(t, p));
            }
        }
        self.push_info(now, &mut out);
        let topics = self.topics.clone();
        for (id, dev) in &mut self.devices {
            sync_discovery(
                self.discovery.as_ref(),
                dev,
                now,
                &mut out,
                true,
                ready_after(self.ha, self.settle, now),
                true,
            );
            if let Some(online) = dev.online {
                let p = Bytes::from_static(if online { b"online" } else { b"offline" });
                out.push(Action::retained(topics.availability(id), p));
            }
            let retained: Vec<(String, Bytes, bool)> = dev
                .retained
                .iter()
                .filter(|(_, (_, is_image))| images || !is_image)
                .map(|(t, (p, is_image))| (t.clone(), p.clone(), *is_image))
                .collect();
            for (t, p, is_image) in retained {
                let a = if is_image {
                    Action::image(t, p, true)
                } else {
                    Action::retained(t, p)
                };
                dev.emit(a, now, &mut out);
            }
            let on: Vec<String> = dev
                .binaries
                .iter()
                .filter(|(_, b)| b.on)
                .map(|(c, _)| c.clone())
                .collect();
            for cat in on {
                dev.emit(
                    Action::transient(topics.device_cat(id, &cat, "state"), ON),
                    now,
                    &mut out,
                );
            }
            let objects: Vec<String> = (dev.objects.iter())
                .filter(|(_, b)| b.on)
                .map(|(k, _)| k.clone())
                .collect();
            for key in objects {
                dev.emit(
                    Action::transient(topics.object(id, &key, "state"), ON),
                    now,
                    &mut out,
                );
            }
            let active: Vec<String> = dev.alarms.keys().cloned().collect();
            for key in active {
                dev.emit(
                    Action::transient(topics.device_cat(id, "alarm", &key), ON),
                    now,
                    &mut out,
                );
            }
        }
        if images {
            for (t, p) in &self.global_retained {
                out.push(Action::image(t.clone(), p.clone(), true));
            }
        }
        out
    }

    fn push_info(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.next_info = now + INFO_INTERVAL;
        out.push(Action::retained(
            self.topics.bridge_info(),
            self.bridge_info(now),
        ));
    }

    /// The `bridge/info` JSON.
    pub fn bridge_info(&self, now: Instant) -> Bytes {
        let devices: Vec<_> = self
            .devices
            .values()
            .map(|d| {
                json!({
                    "id": d.device.id,
                    "name": d.device.name,
                    "mac": d.device.info.mac,
                    "serial": d.device.info.serial,
                    "peer": d.device.info.peer.map(|p| p.to_string()),
                    "kind": d.device.info.kind,
                    "parent": d.device.parent.as_deref().map(|p| p.id.clone()),
                    "categories": d.caps.categories.keys().collect::<Vec<_>>(),
                    "online": d.online,
                    "last_seen": d.last_seen.map(rfc3339),
                })
            })
            .collect();
        let v = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "started": rfc3339(self.started_wall),
            "uptime_s": now.saturating_duration_since(self.started).as_secs(),
            "client_id": self.client_id,
            "mqtt": {
                "broker": self.node,
                "brokers": self.nodes,
                "protocol": self.packet_limit.protocol(),
                "max_packet_size": self.packet_limit.max().map(|(n, _)| n),
                "max_packet_size_from": self.packet_limit.max().map(|(_, s)| s.describe()),
            },
            "devices": devices,
            "counters": self.telemetry.values(),
        });
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }
}

/// When an entity announced at `now` may receive non-retained messages: after the settle
/// time, or, while Home Assistant is away, after its return (at most [`HA_OFFLINE_WAIT`]).
fn ready_after(ha: HaPresence, settle: Duration, now: Instant) -> Instant {
    match ha {
        HaPresence::Offline => now + HA_OFFLINE_WAIT,
        HaPresence::Online | HaPresence::Unknown => now + settle,
    }
}

/// Publish the device's discovery when it differs from what was last published (or always
/// with `force`). The listening topics of components that are new or changed since the last
/// announcement settle until `ready` (an unchanged component needs no wait: Home Assistant
/// already listens to it, also after a forced re-publish). Without `publish` only that is
/// done, and the messages wait for a later call ([`SinkState::sync`]).
fn sync_discovery(
    disc: Option<&Discovery>,
    dev: &mut DevState,
    now: Instant,
    out: &mut Vec<Action>,
    force: bool,
    ready: Instant,
    publish: bool,
) {
    let Some(disc) = disc else { return };
    let comps = disc.device_components(&dev.device, &dev.caps);
    let mut components = BTreeMap::new();
    for c in &comps {
        let config = c.config();
        if dev.components.get(c.key()) != Some(&config) {
            for t in c.listen_topics() {
                let until = dev.settling.entry(t.to_owned()).or_insert(ready);
                *until = (*until).max(ready);
            }
        }
        components.insert(c.key().to_owned(), config);
    }
    dev.components = components;
    dev.settling.retain(|_, t| *t > now);
    dev.discovery_stale = false;
    if !publish {
        return;
    }
    let msgs = disc.device_messages_of(&dev.device, comps);
    for (t, p) in &msgs {
        let same = !force && dev.discovery.iter().any(|(ot, op)| ot == t && op == p);
        if !same {
            out.push(Action::retained(t.clone(), p.clone()));
            dev.discovery_at = Some(now);
        }
    }
    dev.discovery = msgs;
    dev.discovery_due = None;
}

#[cfg(test)]
mod tests;
