//! Unit tests of the state machine (no broker, deterministic time).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::*;
use crate::event::{AlarmState, Counters, Phase, Target, Unparsed};
use crate::sinks::mqtt::config::BrokerAddr;
use crate::sinks::mqtt::payload::tests::{camera, event, jpeg, lpr_event, nvr_channel};

const DEV: &str = "58_5b_69_40_f4_0d";

fn cfg() -> MqttSinkConfig {
    MqttSinkConfig::new(BrokerAddr::tcp("localhost", 1883))
}

fn state_with(cfg: &MqttSinkConfig) -> (SinkState, Instant) {
    let t0 = Instant::now();
    (
        SinkState::new(
            cfg,
            t0,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            crate::telemetry::Telemetry::new(),
        ),
        t0,
    )
}

fn dev() -> Device {
    camera(DEV, "58:5b:69:40:f4:0d")
}

fn ev_msg(e: impl Into<Arc<Event>>) -> Routed {
    Routed::Event {
        device: dev(),
        event: e.into(),
        counts: Default::default(),
    }
}

fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

/// (topic, payload as lossy string, retain)
fn view(acts: &[Action]) -> Vec<(String, String, bool)> {
    acts.iter()
        .map(
            |Action::Publish {
                 topic,
                 payload,
                 retain,
                 ..
             }| {
                (
                    topic.clone(),
                    String::from_utf8_lossy(payload).into_owned(),
                    *retain,
                )
            },
        )
        .collect()
}

fn topics(acts: &[Action]) -> Vec<String> {
    acts.iter().map(|a| a.topic().to_owned()).collect()
}

fn find<'a>(acts: &'a [Action], topic: &str) -> Option<&'a Action> {
    acts.iter().find(|a| a.topic() == topic)
}

fn payload_of(acts: &[Action], topic: &str) -> Option<String> {
    find(acts, topic)
        .map(|Action::Publish { payload, .. }| String::from_utf8_lossy(payload).into_owned())
}

fn pos(acts: &[Action], topic: &str) -> usize {
    acts.iter()
        .position(|a| a.topic() == topic)
        .unwrap_or_else(|| panic!("{topic} not in {:?}", topics(acts)))
}

fn t(leaf: &str) -> String {
    format!("camera/{DEV}/{leaf}")
}

/// Feed a first event and let the settle window pass; returns the time after settling.
fn settled(st: &mut SinkState, t0: Instant, e: Event) -> Instant {
    st.on_routed(&ev_msg(e), t0);
    let t1 = t0 + DISCOVERY_SETTLE;
    st.on_tick(t1);
    t1
}

#[test]
fn first_event_discovery_then_settle_in_order() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let acts = st.on_routed(&ev_msg(lpr_event()), t0);
    let tp = topics(&acts);
    let n_disc = tp
        .iter()
        .filter(|t| t.starts_with("homeassistant/device/camqtt_585b"))
        .count();
    assert_eq!(
        n_disc, 1,
        "one discovery message with all entities of the first event"
    );
    // Discovery (retained) first, availability online, retained values immediately.
    assert_eq!(
        pos(&acts, "homeassistant/device/camqtt_585b6940f40d/config"),
        0
    );
    let disc = find(&acts, "homeassistant/device/camqtt_585b6940f40d/config").unwrap();
    assert!(disc.is_retained());
    assert_eq!(
        payload_of(&acts, &t("availability")).as_deref(),
        Some("online")
    );
    assert!(tp.contains(&t("lpr/image")));
    assert!(tp.contains(&t("lpr/target")));
    assert_eq!(
        payload_of(&acts, &t("lpr/plate")).as_deref(),
        Some("AIDRIVE")
    );
    assert_eq!(
        payload_of(&acts, &t("lpr/list")).as_deref(),
        Some("blackList")
    );
    assert_eq!(
        payload_of(&acts, &t("lpr/last")).as_deref(),
        Some("2026-10-07T21:24:47.427999Z")
    );
    assert!(
        tp.contains(&"camera/bridge/info".to_owned()),
        "new device refreshes bridge/info"
    );
    // The new entities' non-retained ON and event are held back (HA has not subscribed yet).
    assert!(!tp.contains(&t("lpr/state")), "{tp:?}");
    assert!(!tp.contains(&t("lpr/event")));
    // No entity listens to the category image topic: it is not held.
    assert!(tp.contains(&"camera/lpr/image".to_owned()));
    assert_eq!(st.next_deadline(), Some(t0 + DISCOVERY_SETTLE));

    assert!(view(&st.on_tick(t0 + s(1.4))).is_empty());
    let rel = st.on_tick(t0 + DISCOVERY_SETTLE);
    let rt = topics(&rel);
    assert_eq!(rt, vec![t("lpr/state"), t("lpr/event")]);
    assert_eq!(payload_of(&rel, &t("lpr/state")).as_deref(), Some("ON"));
    assert!(!find(&rel, &t("lpr/state")).unwrap().is_retained());
    let Some(Action::Publish {
        payload,
        retain,
        momentary,
        ..
    }) = find(&rel, &t("lpr/event"))
    else {
        panic!()
    };
    assert!(!retain && *momentary);
    let v: Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(v["event_type"], "plate_read");

    // Second event of the same category: no discovery, nothing held.
    let acts = st.on_routed(&ev_msg(lpr_event()), t0 + s(3.0));
    let tp = topics(&acts);
    assert!(
        !tp.iter().any(|t| t.starts_with("homeassistant/")),
        "{tp:?}"
    );
    assert!(tp.contains(&t("lpr/event")));
    assert!(tp.contains(&t("lpr/state")));
    // Image before the event, event last.
    assert!(pos(&acts, &t("lpr/image")) < pos(&acts, &t("lpr/event")));
    assert_eq!(tp.last(), Some(&t("lpr/event")));
}

#[test]
fn images_are_shared_not_copied() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let t1 = settled(&mut st, t0, event(Category::Intrusion, Phase::Pulse));
    let e = lpr_event();
    let src = e.image(ImageRole::Overview).unwrap().data.as_ptr();
    let mut acts = st.on_routed(&ev_msg(e.clone()), t1);
    acts.extend(st.on_tick(t1 + DISCOVERY_SETTLE));
    let Some(Action::Publish {
        payload: a,
        retain: ra,
        ..
    }) = find(&acts, "camera/lpr/image")
    else {
        panic!()
    };
    let Some(Action::Publish {
        payload: b,
        retain: rb,
        ..
    }) = find(&acts, &t("lpr/image"))
    else {
        panic!()
    };
    assert_eq!(a.as_ptr(), src);
    assert_eq!(b.as_ptr(), src);
    assert!(!ra, "category image not retained by default");
    assert!(rb, "device image retained by default");
    let Some(Action::Publish { payload: tg, .. }) = find(&acts, &t("lpr/target")) else {
        panic!()
    };
    assert_eq!(
        tg.as_ptr(),
        e.image(ImageRole::Target).unwrap().data.as_ptr()
    );
}

#[test]
fn on_then_off_after_off_delay_restarted_by_events() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let t1 = settled(&mut st, t0, event(Category::Motion, Phase::Pulse));
    // The first pulse was at t0: OFF due at t0 + 30 s (motion).
    assert!(
        st.on_tick(t0 + s(19.9))
            .iter()
            .all(|a| a.topic() != t("motion/state"))
    );
    // A new pulse at t0+20 restarts the timer.
    let acts = st.on_routed(&ev_msg(event(Category::Motion, Phase::Start)), t0 + s(20.0));
    assert_eq!(payload_of(&acts, &t("motion/state")).as_deref(), Some("ON"));
    assert!(
        st.on_tick(t0 + s(30.0))
            .iter()
            .all(|a| a.topic() != t("motion/state"))
    );
    assert_eq!(st.next_deadline(), Some(t0 + s(50.0)));
    let acts = st.on_tick(t0 + s(50.0));
    assert_eq!(view(&acts), vec![(t("motion/state"), "OFF".into(), true)]);
    // Only once.
    assert!(
        st.on_tick(t0 + s(80.0))
            .iter()
            .all(|a| a.topic() != t("motion/state"))
    );
    let _ = t1;
}

#[test]
fn held_on_is_visible_for_the_whole_off_delay() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    // traject: off_delay 2 s, shorter than the settle window.
    st.on_routed(&ev_msg(event(Category::Traject, Phase::Pulse)), t0);
    let rel = st.on_tick(t0 + DISCOVERY_SETTLE);
    assert_eq!(payload_of(&rel, &t("traject/state")).as_deref(), Some("ON"));
    assert!(
        st.on_tick(t0 + s(3.4))
            .iter()
            .all(|a| a.topic() != t("traject/state"))
    );
    let acts = st.on_tick(t0 + s(3.5));
    assert_eq!(
        payload_of(&acts, &t("traject/state")).as_deref(),
        Some("OFF")
    );
}

#[test]
fn rule_stop_turns_off_at_once_and_has_no_event() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let t1 = settled(&mut st, t0, event(Category::Intrusion, Phase::Start));
    let acts = st.on_routed(&ev_msg(event(Category::Intrusion, Phase::Stop)), t1);
    assert_eq!(
        payload_of(&acts, &t("intrusion/state")).as_deref(),
        Some("OFF")
    );
    assert!(find(&acts, &t("intrusion/state")).unwrap().is_retained());
    assert!(find(&acts, &t("intrusion/event")).is_none());
    // The timer is cancelled: no second OFF.
    assert!(
        st.on_tick(t0 + s(31.0))
            .iter()
            .all(|a| a.topic() != t("intrusion/state"))
    );
}

/// A status that names its category (`covers` = that category).
fn alarm(cat: Category, name: &str, id: &str, active: bool) -> Event {
    let covers = vec![cat.clone()];
    status(cat, covers, name, id, active)
}

/// A status as the parser makes it: `category` plus the categories it may stand for.
fn status(cat: Category, covers: Vec<Category>, name: &str, id: &str, active: bool) -> Event {
    let mut e = event(cat, if active { Phase::Start } else { Phase::Stop });
    e.attrs.alarm = Some(AlarmState {
        name: name.into(),
        id: Some(id.into()),
        active,
        covers,
    });
    e
}

#[test]
fn alarm_status_holds_until_device_off() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let t1 = settled(&mut st, t0, event(Category::Motion, Phase::Pulse));
    let acts = st.on_routed(
        &ev_msg(alarm(Category::Intrusion, "perimeterAlarm", "1", true)),
        t1,
    );
    // New category → discovery re-published → the new binary sensor's ON held for the
    // settle time; the raw alarm topic (no entity of its own here) goes out at once.
    assert!(find(&acts, "homeassistant/device/camqtt_585b6940f40d/config").is_some());
    assert!(find(&acts, &t("intrusion/state")).is_none());
    assert_eq!(
        payload_of(&acts, &t("alarm/perimeterAlarm_1")).as_deref(),
        Some("ON")
    );
    let rel = st.on_tick(t1 + DISCOVERY_SETTLE);
    assert_eq!(view(&rel), vec![(t("intrusion/state"), "ON".into(), false)]);
    // No event topic for alarm-status posts.
    assert!(find(&rel, &t("intrusion/event")).is_none());
    // Held beyond off_delay (30 s), refreshed every 15 s.
    let only = |acts: &[Action]| -> Vec<(String, String, bool)> {
        view(acts)
            .into_iter()
            .filter(|(tp, _, _)| tp.contains("intrusion") || tp.contains("alarm"))
            .collect()
    };
    // (timers count from the release of the held ON at t1 + 1.5 s)
    assert!(only(&st.on_tick(t1 + s(16.4))).is_empty());
    let r = st.on_tick(t1 + s(16.5));
    assert_eq!(only(&r), vec![(t("intrusion/state"), "ON".into(), false)]);
    let r = st.on_tick(t1 + s(31.5));
    assert_eq!(only(&r), vec![(t("intrusion/state"), "ON".into(), false)]);
    // (the motion detection from t0 ended meanwhile, independently)
    assert_eq!(payload_of(&r, &t("motion/state")).as_deref(), Some("OFF"));
    // A detection during the hold does not shorten it.
    st.on_routed(
        &ev_msg(event(Category::Intrusion, Phase::Pulse)),
        t1 + s(31.0),
    );
    assert!(st.on_tick(t1 + s(62.0)).iter().all(|a| {
        payload_of(std::slice::from_ref(a), &t("intrusion/state")).as_deref() != Some("OFF")
    }));
    // The device's OFF ends it at once.
    let acts = st.on_routed(
        &ev_msg(alarm(Category::Intrusion, "perimeterAlarm", "1", false)),
        t1 + s(70.0),
    );
    assert_eq!(
        payload_of(&acts, &t("alarm/perimeterAlarm_1")).as_deref(),
        Some("OFF")
    );
    assert!(
        find(&acts, &t("alarm/perimeterAlarm_1"))
            .unwrap()
            .is_retained()
    );
    assert_eq!(
        payload_of(&acts, &t("intrusion/state")).as_deref(),
        Some("OFF")
    );
    assert!(find(&acts, &t("intrusion/event")).is_none());
    assert!(
        st.on_tick(t1 + s(200.0))
            .iter()
            .all(|a| a.topic() != t("intrusion/state"))
    );
}

#[test]
fn alarm_two_ids_and_max_hold() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let t1 = settled(
        &mut st,
        t0,
        alarm(Category::Intrusion, "perimeterAlarm", "1", true),
    );
    st.on_routed(
        &ev_msg(alarm(Category::Intrusion, "perimeterAlarm", "2", true)),
        t1,
    );
    // id 1 off, id 2 still on: stays ON.
    let acts = st.on_routed(
        &ev_msg(alarm(Category::Intrusion, "perimeterAlarm", "1", false)),
        t1 + s(1.0),
    );
    assert_eq!(
        payload_of(&acts, &t("alarm/perimeterAlarm_1")).as_deref(),
        Some("OFF")
    );
    assert!(find(&acts, &t("intrusion/state")).is_none());
    // id 2 never ends: the safety cap (600 s from its last ON) turns everything off.
    let cap = t1 + c.alarm_max_hold;
    let before = st.on_tick(cap - s(0.1));
    assert!(before.iter().all(|a| {
        payload_of(std::slice::from_ref(a), &t("intrusion/state")).as_deref() != Some("OFF")
    }));
    let acts = st.on_tick(cap);
    assert_eq!(
        payload_of(&acts, &t("intrusion/state")).as_deref(),
        Some("OFF")
    );
    assert_eq!(
        payload_of(&acts, &t("alarm/perimeterAlarm_2")).as_deref(),
        Some("OFF")
    );
}

#[test]
fn settle_keeps_device_order_and_spares_other_devices() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    st.on_routed(&ev_msg(event(Category::Intrusion, Phase::Start)), t0);
    // A Stop within the settle window: its retained OFF must come after the held ON.
    let acts = st.on_routed(
        &ev_msg(event(Category::Intrusion, Phase::Stop)),
        t0 + s(0.2),
    );
    assert!(
        find(&acts, &t("intrusion/state")).is_none(),
        "OFF must queue behind the held ON"
    );
    // Another device, already settled, publishes at once.
    let other = camera("other", "11:22:33:44:55:66");
    st.on_routed(
        &Routed::Seen {
            device: other.clone(),
            caps: Default::default(),
        },
        t0 - s(10.0),
    );
    st.on_tick(t0 + s(0.1));
    let acts = st.on_routed(
        &Routed::Event {
            device: other.clone(),
            event: Arc::new(event(Category::Motion, Phase::Pulse)),
            counts: Default::default(),
        },
        t0 + s(0.3),
    );
    // 'other' got new discovery for the motion category → its own settle, but the first device
    // is untouched; check the first device's queue was not released.
    assert!(acts.iter().all(|a| !a.topic().contains(DEV)));
    let rel = st.on_tick(t0 + DISCOVERY_SETTLE);
    let states: Vec<_> = view(&rel)
        .into_iter()
        .filter(|(tp, _, _)| *tp == t("intrusion/state"))
        .collect();
    assert_eq!(
        states,
        vec![
            (t("intrusion/state"), "ON".into(), false),
            (t("intrusion/state"), "OFF".into(), true)
        ]
    );
    // The other device's held messages are released at its own deadline.
    let rel2 = st.on_tick(t0 + s(0.3) + DISCOVERY_SETTLE);
    assert!(
        rel2.iter()
            .any(|a| a.topic() == "camera/other/motion/event")
    );
}

#[test]
fn only_new_entities_start_a_hold_and_the_device_order_is_kept() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    // The device and its lpr entities are known and settled (a read without a plate crop).
    let mut first = (*lpr_event()).clone();
    first.images.retain(|i| i.role == ImageRole::Overview);
    let t1 = settled(&mut st, t0, first);
    // A read that brings a plate crop adds a (retained) image entity: discovery changes, but
    // nothing of it is lost to HA, so the known event and ON are not held.
    let acts = st.on_routed(&ev_msg(lpr_event()), t1);
    assert!(find(&acts, "homeassistant/device/camqtt_585b6940f40d/config").is_some());
    assert!(find(&acts, &t("lpr/target")).is_some());
    assert!(
        find(&acts, &t("lpr/event")).is_some(),
        "{:?}",
        topics(&acts)
    );
    assert_eq!(payload_of(&acts, &t("lpr/state")).as_deref(), Some("ON"));
    // A new category: its ON and event are held, and the device's later messages queue
    // behind them (a plate read after the intrusion stays after it).
    let acts = st.on_routed(
        &ev_msg(event(Category::Intrusion, Phase::Pulse)),
        t1 + s(1.0),
    );
    assert!(find(&acts, "homeassistant/device/camqtt_585b6940f40d/config").is_none());
    assert!(find(&acts, &t("intrusion/state")).is_none());
    assert!(find(&acts, &t("intrusion/event")).is_none());
    let acts = st.on_routed(&ev_msg(lpr_event()), t1 + s(1.2));
    assert!(
        find(&acts, &t("lpr/event")).is_none(),
        "{:?}",
        topics(&acts)
    );
    // The crop's discovery went out at t1: the intrusion's waits until it is `settle` old
    // (Home Assistant may still be setting up the previous one), and the new entities'
    // messages settle from then.
    let disc = "homeassistant/device/camqtt_585b6940f40d/config";
    assert_eq!(st.next_deadline(), Some(t1 + DISCOVERY_SETTLE));
    let rel = st.on_tick(t1 + DISCOVERY_SETTLE);
    assert_eq!(topics(&rel), [disc]);
    assert!(payload_of(&rel, disc).unwrap().contains("intrusion_event"));
    let rel = st.on_tick(t1 + DISCOVERY_SETTLE * 2);
    assert!(pos(&rel, &t("intrusion/event")) < pos(&rel, &t("lpr/event")));
    assert!(pos(&rel, &t("lpr/image")) < pos(&rel, &t("lpr/event")));
    // A forced re-publish (reconnect) announces nothing new: nothing is held.
    st.on_connected(t1 + s(5.0));
    let acts = st.on_routed(
        &ev_msg(event(Category::Intrusion, Phase::Pulse)),
        t1 + s(5.1),
    );
    assert!(find(&acts, &t("intrusion/event")).is_some());
}

#[test]
fn while_home_assistant_is_away_new_entities_wait_for_its_birth() {
    let mut c = cfg();
    c.homeassistant.as_mut().unwrap().discovery_settle = s(0.5);
    let (mut st, t0) = state_with(&c);
    st.on_ha_status(b"offline", t0);
    let acts = st.on_routed(&ev_msg(lpr_event()), t0 + s(1.0));
    assert!(find(&acts, &t("lpr/event")).is_none());
    assert_eq!(st.next_deadline(), Some(t0 + s(1.0) + HA_OFFLINE_WAIT));
    // Long past the settle time, HA still away: still held.
    assert!(find(&st.on_tick(t0 + s(20.0)), &t("lpr/event")).is_none());
    // HA's birth: released the settle time after it.
    st.on_ha_status(b"online", t0 + s(30.0));
    assert!(find(&st.on_tick(t0 + s(30.4)), &t("lpr/event")).is_none());
    let rel = st.on_tick(t0 + s(30.5));
    assert!(find(&rel, &t("lpr/event")).is_some(), "{:?}", topics(&rel));
    assert_eq!(payload_of(&rel, &t("lpr/state")).as_deref(), Some("ON"));
    // The off timer counts from the release.
    assert!(
        st.on_tick(t0 + s(30.5 + 9.9))
            .iter()
            .all(|a| a.topic() != t("lpr/state"))
    );

    // HA away for good: a new entity's message goes out after HA_OFFLINE_WAIT at the latest.
    let (mut st, t0) = state_with(&c);
    st.on_ha_status(b"offline", t0);
    st.on_routed(&ev_msg(event(Category::Intrusion, Phase::Pulse)), t0);
    let rel = st.on_tick(t0 + HA_OFFLINE_WAIT);
    assert!(find(&rel, &t("intrusion/event")).is_some());
}

/// One device for [`known`]: the device, the events it has shown, its bridge-kept counts.
type Shown<'a> = (Device, Vec<Event>, &'a [(&'a str, u64)]);

/// What the registry would hand the sink at start: `devices` with what they have shown.
fn known(devices: Vec<Shown<'_>>) -> KnownDevices {
    let records = devices
        .into_iter()
        .map(|(device, events, counts)| {
            let mut caps = crate::event::DeviceCaps::default();
            for e in &events {
                caps.record(e);
            }
            crate::event::DeviceRecord {
                device,
                last_seen: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_001),
                caps,
                counts: counts.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            }
        })
        .collect();
    KnownDevices {
        records,
        authoritative: true,
    }
}

#[test]
fn a_device_restored_from_the_registry_settles_once() {
    let c = cfg();
    let (mut st2, t2) = state_with(&c);
    st2.restore(&known(vec![(dev(), vec![(*lpr_event()).clone()], &[])]));
    st2.on_connected(t2);
    // After a restart the bridge cannot know what HA has: the first event waits once ...
    let acts = st2.on_routed(&ev_msg((*lpr_event()).clone()), t2 + s(0.1));
    assert!(find(&acts, &t("lpr/event")).is_none());
    let rel = st2.on_tick(t2 + DISCOVERY_SETTLE);
    assert!(find(&rel, &t("lpr/event")).is_some());
    // ... and the next one does not.
    let acts = st2.on_routed(&ev_msg((*lpr_event()).clone()), t2 + s(3.0));
    assert!(find(&acts, &t("lpr/event")).is_some());
}

#[test]
fn ha_online_republishes_discovery_and_states_not_events() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    st.on_routed(&ev_msg(lpr_event()), t0);
    let t1 = t0 + DISCOVERY_SETTLE;
    st.on_tick(t1);
    let acts = st.on_ha_online(t1 + s(1.0));
    let tp = topics(&acts);
    assert_eq!(
        payload_of(&acts, "camera/bridge/state").as_deref(),
        Some("online")
    );
    assert!(tp.contains(&"homeassistant/device/camqtt_bridge_camqtt/config".to_owned()));
    assert!(tp.contains(&"homeassistant/device/camqtt_585b6940f40d/config".to_owned()));
    assert_eq!(
        payload_of(&acts, &t("availability")).as_deref(),
        Some("online")
    );
    assert_eq!(
        payload_of(&acts, &t("lpr/plate")).as_deref(),
        Some("AIDRIVE")
    );
    assert!(!tp.contains(&t("lpr/event")), "never events");
    assert!(!tp.contains(&t("lpr/image")), "images stay on the broker");
    // The binary is still ON → re-sent at once: the entities are not new to HA (it created
    // them from the retained discovery before its birth message), so nothing is held.
    assert_eq!(payload_of(&acts, &t("lpr/state")).as_deref(), Some("ON"));

    // on_connected also re-sends retained images (the broker may have lost them).
    let acts = st.on_connected(t1 + s(5.0));
    let tp = topics(&acts);
    assert!(tp.contains(&t("lpr/image")));
    assert!(tp.contains(&t("lpr/target")));
    assert!(
        !tp.contains(&"camera/lpr/image".to_owned()),
        "category image not retained by default"
    );
    assert_eq!(tp[0], "camera/bridge/state");
}

#[test]
fn bridge_counters_and_device_counters() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let mut e = event(Category::Counting, Phase::Pulse);
    e.attrs.targets = vec![
        Target {
            object: Some("car".into()),
            ..Default::default()
        },
        Target::default(),
    ];
    let acts = st.on_routed(&ev_msg(e), t0);
    assert_eq!(
        payload_of(&acts, &t("counting/enter_car")).as_deref(),
        Some("1")
    );
    assert_eq!(
        payload_of(&acts, &t("counting/enter_person")).as_deref(),
        Some("1")
    );
    let d: Value = serde_json::from_slice(
        match find(&acts, "homeassistant/device/camqtt_585b6940f40d/config").unwrap() {
            Action::Publish { payload, .. } => payload,
        },
    )
    .unwrap();
    assert_eq!(
        d["components"]["counting_enter_car"]["state_class"],
        "total_increasing"
    );
    st.on_tick(t0 + DISCOVERY_SETTLE);
    let acts = st.on_routed(
        &ev_msg(event(Category::Counting, Phase::Pulse)),
        t0 + s(2.0),
    );
    assert_eq!(
        payload_of(&acts, &t("counting/enter_person")).as_deref(),
        Some("2")
    );
    assert!(find(&acts, &t("counting/enter_car")).is_none());
    // A Stop does not count.
    let acts = st.on_routed(&ev_msg(event(Category::Counting, Phase::Stop)), t0 + s(3.0));
    assert!(find(&acts, &t("counting/enter_person")).is_none());

    // Device counters are published as sent and add entities.
    let mut e = event(Category::Counting, Phase::Pulse);
    e.attrs.counters = Some(Counters {
        enter: vec![("person".into(), 17)],
        leave: vec![("person".into(), 5)],
        exist: vec![("person".into(), 12)],
    });
    let acts = st.on_routed(&ev_msg(e), t0 + s(4.0));
    assert_eq!(
        payload_of(&acts, &t("counting/enter_person")).as_deref(),
        Some("17")
    );
    assert_eq!(
        payload_of(&acts, &t("counting/leave_person")).as_deref(),
        Some("5")
    );
    assert_eq!(
        payload_of(&acts, &t("counting/exist_person")).as_deref(),
        Some("12")
    );
    let d: Value = serde_json::from_slice(
        match find(&acts, "homeassistant/device/camqtt_585b6940f40d/config").unwrap() {
            Action::Publish { payload, .. } => payload,
        },
    )
    .unwrap();
    assert_eq!(
        d["components"]["counting_exist_person"]["state_class"],
        "measurement"
    );
}

#[test]
fn traject_targets_and_lpr_list_none() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let mut e = event(Category::Traject, Phase::Pulse);
    e.attrs.targets = vec![Target::default(), Target::default(), Target::default()];
    let acts = st.on_routed(&ev_msg(e), t0);
    assert_eq!(
        payload_of(&acts, &t("traject/targets")).as_deref(),
        Some("3")
    );
    st.on_tick(t0 + DISCOVERY_SETTLE);
    let mut e = event(Category::Lpr, Phase::Pulse);
    e.attrs.plates = vec![crate::event::Plate {
        plate: "XY123".into(),
        ..Default::default()
    }];
    let acts = st.on_routed(&ev_msg(e), t0 + s(2.0));
    assert_eq!(payload_of(&acts, &t("lpr/list")).as_deref(), Some("none"));
}

#[test]
fn availability_only_on_change_and_reconnect() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let acts = st.on_routed(
        &Routed::Seen {
            device: dev(),
            caps: Default::default(),
        },
        t0,
    );
    assert_eq!(
        payload_of(&acts, &t("availability")).as_deref(),
        Some("online")
    );
    assert!(
        find(&acts, "homeassistant/device/camqtt_585b6940f40d/config").is_some(),
        "first Seen publishes discovery"
    );
    let acts = st.on_routed(
        &Routed::Seen {
            device: dev(),
            caps: Default::default(),
        },
        t0 + s(10.0),
    );
    assert!(acts.is_empty(), "{:?}", topics(&acts));
    let acts = st.on_routed(&Routed::Offline { device: dev() }, t0 + s(100.0));
    assert_eq!(
        view(&acts),
        vec![(t("availability"), "offline".into(), true)]
    );
    let acts = st.on_connected(t0 + s(101.0));
    assert_eq!(
        payload_of(&acts, &t("availability")).as_deref(),
        Some("offline")
    );
    assert!(payload_of(&acts, "camera/bridge/info").is_some());
}

#[test]
fn nvr_channel_brings_its_nvr() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let ch = nvr_channel(2);
    let acts = st.on_routed(
        &Routed::Seen {
            device: ch.clone(),
            caps: Default::default(),
        },
        t0,
    );
    let tp = topics(&acts);
    assert!(
        tp.contains(&"homeassistant/device/camqtt_aabbccddeeff/config".to_owned()),
        "{tp:?}"
    );
    assert!(tp.contains(&"homeassistant/device/camqtt_aabbccddeeff_ch2/config".to_owned()));
    assert_eq!(
        payload_of(&acts, "camera/aa_bb_cc_dd_ee_ff/availability").as_deref(),
        Some("online")
    );
    assert_eq!(
        payload_of(&acts, "camera/aa_bb_cc_dd_ee_ff_ch2/availability").as_deref(),
        Some("online")
    );
    let info: Value =
        serde_json::from_str(&payload_of(&acts, "camera/bridge/info").unwrap()).unwrap();
    let devs = info["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 2);
    assert!(devs.iter().any(|d| d["parent"] == "aa_bb_cc_dd_ee_ff"));
    assert_eq!(info["uptime_s"], 0);
    assert!(info["counters"].get("mqtt_published").is_some());
}

#[test]
fn unparsed_goes_to_bridge_topic() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let u = Unparsed {
        peer: "10.0.0.9".into(),
        source: "viewtron".into(),
        reason: "parse-error".into(),
        detail: "bad xml".into(),
        path: Some("/x".into()),
        body: "<x".into(),
        body_len: 2,
    };
    let acts = st.on_routed(&Routed::Unparsed(u), t0);
    assert_eq!(acts.len(), 1);
    let Action::Publish {
        topic,
        payload,
        retain,
        momentary,
        ..
    } = &acts[0];
    assert_eq!(topic, "camera/bridge/unparsed");
    assert!(!retain && *momentary);
    let v: Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(v["reason"], "parse-error");
    assert_eq!(v["peer"], "10.0.0.9");
}

#[test]
fn without_homeassistant_no_discovery_no_settle() {
    let mut c = cfg();
    c.homeassistant = None;
    let (mut st, t0) = state_with(&c);
    let acts = st.on_routed(&ev_msg(lpr_event()), t0);
    let tp = topics(&acts);
    assert!(!tp.iter().any(|t| t.starts_with("homeassistant/")));
    assert!(
        tp.contains(&t("lpr/event")),
        "nothing to wait for without discovery"
    );
    assert!(tp.contains(&t("lpr/state")));
    assert!(
        st.on_ha_online(t0)
            .iter()
            .all(|a| !a.topic().starts_with("homeassistant/"))
    );
}

#[test]
fn image_options() {
    let mut c = cfg();
    c.homeassistant = None;
    c.images = ImageConfig {
        category_topic: true,
        retain_category: true,
        retain_device: false,
        json_base64: true,
    };
    let (mut st, t0) = state_with(&c);
    let acts = st.on_routed(&ev_msg(lpr_event()), t0);
    assert!(find(&acts, "camera/lpr/image").unwrap().is_retained());
    assert!(!find(&acts, &t("lpr/image")).unwrap().is_retained());
    let json: Vec<_> = acts
        .iter()
        .filter(|a| a.topic() == t("lpr/image_json"))
        .collect();
    assert_eq!(json.len(), 2);
    // Retained category image comes back on reconnect; non-retained device images do not.
    let acts = st.on_connected(t0 + s(1.0));
    assert!(find(&acts, "camera/lpr/image").is_some());
    assert!(find(&acts, &t("lpr/image")).is_none());
}

#[test]
fn the_category_topic_can_be_switched_off() {
    let mut c = cfg();
    c.homeassistant = None;
    c.images.category_topic = false;
    c.images.retain_category = true;
    let (mut st, t0) = state_with(&c);
    let acts = st.on_routed(&ev_msg(lpr_event()), t0);
    assert!(find(&acts, "camera/lpr/image").is_none());
    assert!(find(&acts, &t("lpr/image")).is_some());
    assert!(find(&acts, &t("lpr/target")).is_some());
    assert!(find(&acts, &t("lpr/event")).is_some());
    // Nothing of it is kept to be re-published on reconnect either.
    let acts = st.on_connected(t0 + s(1.0));
    assert!(find(&acts, "camera/lpr/image").is_none());
}

#[test]
fn bridge_info_refresh_every_minute() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    assert_eq!(st.next_deadline(), Some(t0 + INFO_INTERVAL));
    assert!(st.on_tick(t0 + s(59.0)).is_empty());
    let acts = st.on_tick(t0 + INFO_INTERVAL);
    let info: Value =
        serde_json::from_str(&payload_of(&acts, "camera/bridge/info").unwrap()).unwrap();
    assert_eq!(info["uptime_s"], 60);
    assert_eq!(info["client_id"], "camqtt");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["started"], "2027-01-15T08:00:00.000000Z");
    assert!(find(&acts, "camera/bridge/info").unwrap().is_retained());
}

#[test]
fn hostile_ids_stay_single_level() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let mut d = dev();
    d.id = "evil/+#\0id".into();
    let mut e = event(Category::Other("a/b".into()), Phase::Pulse);
    e.images = vec![jpeg(ImageRole::Overview, 10)];
    let acts = st.on_routed(
        &Routed::Event {
            device: d,
            event: Arc::new(e),
            counts: Default::default(),
        },
        t0,
    );
    let mut acts2 = acts.clone();
    acts2.extend(st.on_tick(t0 + DISCOVERY_SETTLE));
    for a in &acts2 {
        let tp = a.topic();
        assert!(!tp.contains(['+', '#', '\0']), "{tp}");
        assert!(!tp.split('/').any(str::is_empty), "{tp}");
        if tp.starts_with("camera/")
            && !tp.starts_with("camera/bridge/")
            && !tp.starts_with("camera/a_b/")
        {
            assert!(tp.starts_with("camera/evil____id/"), "{tp}");
        }
    }
}

/// A counting event the bridge counts (no device counters), one person.
fn counted() -> Event {
    event(Category::Counting, Phase::Pulse)
}

#[test]
fn restored_devices_start_offline_and_their_counters_continue() {
    let c = cfg();
    let ch = nvr_channel(2);
    let nvr = (*ch.parent.clone().unwrap()).clone();
    let (mut st2, t1) = state_with(&c);
    st2.restore(&known(vec![
        (dev(), vec![counted()], &[("person", 2)]),
        (nvr, vec![], &[]),
        (ch, vec![], &[]),
    ]));
    let acts = st2.on_connected(t1);
    // Discovery of every known device right away, with the counter entity.
    for id in [
        "camqtt_585b6940f40d",
        "camqtt_aabbccddeeff",
        "camqtt_aabbccddeeff_ch2",
    ] {
        let topic = format!("homeassistant/device/{id}/config");
        assert!(
            find(&acts, &topic).is_some(),
            "{topic} in {:?}",
            topics(&acts)
        );
    }
    let d: Value = serde_json::from_str(
        &payload_of(&acts, "homeassistant/device/camqtt_585b6940f40d/config").unwrap(),
    )
    .unwrap();
    assert!(d["components"].get("counting_enter_person").is_some());
    // Offline until heard from; the saved counter is re-published.
    assert_eq!(
        payload_of(&acts, &t("availability")).as_deref(),
        Some("offline")
    );
    assert_eq!(
        payload_of(&acts, &t("counting/enter_person")).as_deref(),
        Some("2")
    );
    st2.on_tick(t1 + DISCOVERY_SETTLE);
    // The registry's count after the event is published.
    let counted_by_registry = Routed::Event {
        device: dev(),
        event: Arc::new(counted()),
        counts: [("person".to_owned(), 3)].into(),
    };
    let acts = st2.on_routed(&counted_by_registry, t1 + s(2.0));
    assert_eq!(
        payload_of(&acts, &t("availability")).as_deref(),
        Some("online")
    );
    assert_eq!(
        payload_of(&acts, &t("counting/enter_person")).as_deref(),
        Some("3")
    );
    // A record spooled by camqtt 0.1.0 carries no count: the sink counts on.
    let acts = st2.on_routed(&ev_msg(counted()), t1 + s(3.0));
    assert_eq!(
        payload_of(&acts, &t("counting/enter_person")).as_deref(),
        Some("4")
    );
}

#[test]
fn a_bridge_kept_count_never_goes_below_what_the_sink_has() {
    // After a restart the registry restores 6; records spooled before the restart carry the
    // counts stamped then (5, 6) and are replayed: nothing published goes back below 6
    // (Home Assistant's `total_increasing` would read a meter reset).
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    st.restore(&known(vec![(dev(), vec![counted()], &[("person", 6)])]));
    st.on_connected(t0);
    st.on_tick(t0 + DISCOVERY_SETTLE);
    let stamped = |n: u64| Routed::Event {
        device: dev(),
        event: Arc::new(counted()),
        counts: [("person".to_owned(), n)].into(),
    };
    let at = |x: f64| t0 + DISCOVERY_SETTLE + s(x);
    let published = |acts: &[Action]| payload_of(acts, &t("counting/enter_person"));
    for (i, replayed) in [5, 6].into_iter().enumerate() {
        let acts = st.on_routed(&stamped(replayed), at(i as f64 + 1.0));
        assert_eq!(
            published(&acts).as_deref(),
            Some("6"),
            "replayed {replayed}"
        );
    }
    // The next count of the registry continues, and a record without a stamp counts on.
    let acts = st.on_routed(&stamped(7), at(3.0));
    assert_eq!(published(&acts).as_deref(), Some("7"));
    let acts = st.on_routed(&ev_msg(counted()), at(4.0));
    assert_eq!(published(&acts).as_deref(), Some("8"));
    // An old stamp after that still publishes the highest count.
    let acts = st.on_routed(&stamped(2), at(5.0));
    assert_eq!(published(&acts).as_deref(), Some("8"));
}

#[test]
fn clear_stale_spares_known_devices_and_current_topics() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    st.on_routed(
        &Routed::Seen {
            device: dev(),
            caps: Default::default(),
        },
        t0,
    );
    let bridge = st.bridge_identifier().unwrap().to_owned();
    let cfg_of = |id: &str, via: &str| {
        Bytes::from(
            json!({"device": {"identifiers": [id], "via_device": via}, "components": {}})
                .to_string(),
        )
    };
    let mut found = BTreeMap::new();
    found.insert(
        "homeassistant/device/camqtt_585b6940f40d/config".to_owned(),
        cfg_of("camqtt_585b6940f40d", &bridge),
    );
    found.insert(
        "homeassistant/device/camqtt_stale/config".to_owned(),
        cfg_of("camqtt_stale", &bridge),
    );
    // The known camera's entity in the legacy layout: left over from a mode switch.
    found.insert(
        "homeassistant/binary_sensor/camqtt_585b6940f40d/connectivity/config".to_owned(),
        cfg_of("camqtt_585b6940f40d", &bridge),
    );
    found.insert(
        "homeassistant/device/camqtt_foreign/config".to_owned(),
        cfg_of("camqtt_foreign", "camqtt_bridge_other"),
    );
    // Without a registry file only the known camera's leftover goes.
    let acts = st.clear_stale(&found);
    assert_eq!(
        topics(&acts),
        ["homeassistant/binary_sensor/camqtt_585b6940f40d/connectivity/config"]
    );
    st.restore(&known(Vec::new()));
    let acts = st.clear_stale(&found);
    assert_eq!(
        view(&acts),
        [
            (
                "homeassistant/binary_sensor/camqtt_585b6940f40d/connectivity/config".to_owned(),
                String::new(),
                true
            ),
            (
                "homeassistant/device/camqtt_stale/config".to_owned(),
                String::new(),
                true
            ),
        ]
    );
    // Without discovery nothing is ever cleared.
    let mut c2 = cfg();
    c2.homeassistant = None;
    let (st2, _) = state_with(&c2);
    assert!(st2.clear_stale(&found).is_empty());
}

#[test]
fn a_forgotten_device_loses_its_discovery() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    st.on_routed(&Routed::seen(dev()), t0);
    st.on_routed(&Routed::seen(nvr_channel(1)), t0 + s(1.0));
    let acts = st.on_routed(&Routed::Forget { device: dev() }, t0 + s(2.0));
    assert_eq!(
        view(&acts)
            .into_iter()
            .filter(|(t, _, _)| t.starts_with("homeassistant/"))
            .collect::<Vec<_>>(),
        [(
            "homeassistant/device/camqtt_585b6940f40d/config".to_owned(),
            String::new(),
            true
        )]
    );
    let info: Value =
        serde_json::from_str(&payload_of(&acts, "camera/bridge/info").unwrap()).unwrap();
    assert_eq!(
        info["devices"].as_array().unwrap().len(),
        2,
        "the NVR and its channel"
    );
    // Forgetting an unknown device does nothing.
    assert!(
        st.on_routed(&Routed::Forget { device: dev() }, t0 + s(3.0))
            .is_empty()
    );
}

// ---- What each kind of event may move (Moves) -------------------------------------------

/// Topics of `acts` under this test device's category `cat` (`lpr/plate`, ...).
fn leaves(acts: &[Action], cat: &str) -> Vec<String> {
    let prefix = t(&format!("{cat}/"));
    topics(acts)
        .into_iter()
        .filter_map(|tp| tp.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// Everything a detection would publish besides the state, loaded onto a non-detection:
/// images, a plate, targets. None of it may move.
fn loaded(mut e: Event) -> Event {
    e.images = vec![jpeg(ImageRole::Overview, 300), jpeg(ImageRole::Target, 100)];
    e.attrs.plates = vec![crate::event::Plate {
        plate: "TEST123".into(),
        list: Some("whiteList".into()),
        ..Default::default()
    }];
    e.attrs.targets = vec![Target::default(), Target::default()];
    e
}

#[test]
fn status_posts_move_only_states_and_alarm_topics() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    // A plate was read: plate, list, last, images, event.
    let t1 = settled(&mut st, t0, (*lpr_event()).clone());
    // The status pair of the same read (field case 03), with everything a detection has.
    let mut acts = st.on_routed(
        &ev_msg(loaded(alarm(Category::Lpr, "vehiceAlarm", "1", true))),
        t1 + s(1.0),
    );
    acts.extend(st.on_tick(t1 + s(12.0)));
    acts.extend(st.on_routed(
        &ev_msg(loaded(alarm(Category::Lpr, "vehiceAlarm", "1", false))),
        t1 + s(21.0),
    ));
    assert_eq!(
        leaves(&acts, "lpr"),
        ["state", "state", "state"],
        "ON, refresh, OFF; nothing else of lpr: {:?}",
        topics(&acts)
    );
    assert_eq!(
        view(&acts)
            .into_iter()
            .filter(|(tp, _, _)| tp.contains("/alarm/"))
            .collect::<Vec<_>>(),
        [
            (t("alarm/vehiceAlarm_1"), "ON".into(), false),
            (t("alarm/vehiceAlarm_1"), "OFF".into(), true),
        ]
    );
    assert!(find(&acts, "camera/lpr/image").is_none());
    assert_eq!(
        payload_of(&acts[acts.len() - 1..], &t("lpr/state")).as_deref(),
        Some("OFF")
    );
    // The retained values are still those of the read (re-published on reconnect as such).
    let re = st.on_connected(t1 + s(22.0));
    assert_eq!(
        payload_of(&re, &t("lpr/last")).as_deref(),
        Some("2026-10-07T21:24:47.427999Z")
    );
    assert_eq!(payload_of(&re, &t("lpr/plate")).as_deref(), Some("AIDRIVE"));
}

#[test]
fn a_status_first_announces_its_category_but_sets_no_detection_value() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    // A new device whose first post is a status (field case 03 on a fresh bridge).
    let mut acts = st.on_routed(&ev_msg(alarm(Category::Lpr, "vehiceAlarm", "1", true)), t0);
    acts.extend(st.on_tick(t0 + DISCOVERY_SETTLE));
    let d: Value = serde_json::from_str(
        &payload_of(&acts, "homeassistant/device/camqtt_585b6940f40d/config").unwrap(),
    )
    .unwrap();
    for key in ["lpr", "lpr_event", "lpr_last", "plate", "plate_list"] {
        assert!(d["components"].get(key).is_some(), "{key} announced early");
    }
    // The status itself drives no image entity.
    assert!(d["components"].get("lpr_image").is_none());
    assert_eq!(leaves(&acts, "lpr"), ["state"]);
    assert_eq!(
        payload_of(&acts, &t("alarm/vehiceAlarm_1")).as_deref(),
        Some("ON")
    );
}

#[test]
fn an_end_only_turns_the_state_off() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let t1 = settled(&mut st, t0, event(Category::Intrusion, Phase::Start));
    let acts = st.on_routed(&ev_msg(loaded(event(Category::Intrusion, Phase::Stop))), t1);
    assert_eq!(leaves(&acts, "intrusion"), ["state"], "{:?}", topics(&acts));
    assert_eq!(
        payload_of(&acts, &t("intrusion/state")).as_deref(),
        Some("OFF")
    );
    assert!(find(&acts, "camera/intrusion/image").is_none());
    // No image entity was announced by it either.
    assert!(
        find(&acts, "homeassistant/device/camqtt_585b6940f40d/config").is_none(),
        "{:?}",
        topics(&acts)
    );
}

#[test]
fn device_counters_are_facts_from_any_post_that_carries_them() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let t1 = settled(&mut st, t0, event(Category::Counting, Phase::Start));
    let mut e = loaded(event(Category::Counting, Phase::Stop));
    e.attrs.counters = Some(Counters {
        enter: vec![("person".into(), 41)],
        leave: vec![("person".into(), 40)],
        exist: vec![],
    });
    let acts = st.on_routed(&ev_msg(e), t1);
    assert_eq!(
        payload_of(&acts, &t("counting/enter_person")).as_deref(),
        Some("41")
    );
    assert_eq!(
        payload_of(&acts, &t("counting/leave_person")).as_deref(),
        Some("40")
    );
    // ... but an end is not counted by the bridge, and sets nothing else.
    let mut got = leaves(&acts, "counting");
    got.sort();
    assert_eq!(got, ["enter_person", "leave_person", "state"]);
}

#[test]
fn tracking_moves_only_its_own_values() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let mut acts = st.on_routed(&ev_msg(loaded(event(Category::Traject, Phase::Pulse))), t0);
    acts.extend(st.on_tick(t0 + DISCOVERY_SETTLE));
    let mut got = leaves(&acts, "traject");
    got.sort();
    assert_eq!(got, ["event", "last", "state", "targets"]);
    assert_eq!(
        payload_of(&acts, &t("traject/targets")).as_deref(),
        Some("2")
    );
    assert!(find(&acts, "camera/traject/image").is_none());
    assert!(
        !topics(&acts).iter().any(|tp| tp.contains("/lpr/")),
        "its plate moves nothing"
    );
    let d: Value = serde_json::from_str(
        &payload_of(&acts, "homeassistant/device/camqtt_585b6940f40d/config").unwrap(),
    )
    .unwrap();
    assert!(d["components"].get("traject_image").is_none());
    // Auto-OFF after its off_delay (2 s) from when the ON went out.
    let acts = st.on_tick(t0 + DISCOVERY_SETTLE + s(2.0));
    assert_eq!(
        payload_of(&acts, &t("traject/state")).as_deref(),
        Some("OFF")
    );
}

// ---- A status that names no single category (NVR perimeterAlarm) -------------------------

const CH: &str = "aa_bb_cc_dd_ee_ff_ch4";

fn ch(leaf: &str) -> String {
    format!("camera/{CH}/{leaf}")
}

fn ch_msg(e: Event) -> Routed {
    Routed::Event {
        device: nvr_channel(4),
        event: Arc::new(e),
        counts: Default::default(),
    }
}

/// The NVR's `perimeterAlarm` as the parser makes it.
fn perimeter(id: &str, active: bool) -> Event {
    status(
        Category::Alarm,
        vec![Category::Intrusion, Category::LineCrossing],
        "perimeterAlarm",
        id,
        active,
    )
}

/// (topic, payload, retain) of the channel's state and alarm topics.
fn ch_states(acts: &[Action]) -> Vec<(String, String, bool)> {
    view(acts)
        .into_iter()
        .filter(|(tp, _, _)| {
            tp.starts_with(&format!("camera/{CH}/"))
                && (tp.ends_with("/state") || tp.contains("/alarm/"))
        })
        .collect()
}

fn ch_discovery(acts: &[Action]) -> Option<Value> {
    payload_of(acts, "homeassistant/device/camqtt_aabbccddeeff_ch4/config")
        .map(|p| serde_json::from_str(&p).unwrap())
}

/// The channel is known and settled (a heartbeat-like Seen), so publishes are immediate.
fn nvr_ready(st: &mut SinkState, t0: Instant) -> Instant {
    st.on_routed(
        &Routed::Seen {
            device: nvr_channel(4),
            caps: Default::default(),
        },
        t0,
    );
    st.on_tick(t0 + DISCOVERY_SETTLE);
    t0 + DISCOVERY_SETTLE
}

#[test]
fn ambiguous_status_then_detection_holds_that_category_only() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let t1 = nvr_ready(&mut st, t0);
    // 1. perimeterAlarm true: its own entity, no category claimed.
    let mut acts = st.on_routed(&ch_msg(perimeter("1", true)), t1);
    let d = ch_discovery(&acts).expect("the alarm entity is announced");
    let comps = d["components"].as_object().unwrap();
    let alarm = &comps["alarm_status_perimeteralarm_1"];
    assert_eq!(alarm["platform"], "binary_sensor");
    assert_eq!(alarm["state_topic"], ch("alarm/perimeterAlarm_1"));
    assert_eq!(alarm["name"], "Perimeter alarm 1");
    for key in ["intrusion", "line_crossing", "alarm"] {
        assert!(comps.get(key).is_none(), "{key} must not be announced");
    }
    acts.extend(st.on_tick(t1 + DISCOVERY_SETTLE));
    assert_eq!(
        ch_states(&acts),
        [(ch("alarm/perimeterAlarm_1"), "ON".into(), false)]
    );
    // 2. The line crossing 0.3 s later (NVRs send the status first).
    let t2 = t1 + DISCOVERY_SETTLE + s(0.3);
    let mut e = event(Category::LineCrossing, Phase::Pulse);
    e.raw_type = "lineCrossing".into();
    let mut acts = st.on_routed(&ch_msg(e), t2);
    acts.extend(st.on_tick(t2 + DISCOVERY_SETTLE));
    assert_eq!(
        ch_states(&acts),
        [(ch("line_crossing/state"), "ON".into(), false)]
    );
    assert_eq!(
        topics(&acts)
            .iter()
            .filter(|tp| **tp == ch("line_crossing/event"))
            .count(),
        1
    );
    // 3. Held past line_crossing's off_delay (5 s), refreshed while the alarm lasts.
    let t3 = t2 + DISCOVERY_SETTLE;
    let mut held = Vec::new();
    for i in 1..=16 {
        held.extend(st.on_tick(t3 + s(f64::from(i))));
    }
    let held = ch_states(&held);
    assert!(!held.is_empty(), "refreshed");
    assert!(
        held.iter()
            .all(|(tp, p, _)| *tp == ch("line_crossing/state") && p == "ON"),
        "{held:?}"
    );
    // 4. perimeterAlarm false: the alarm and the category it was tied to go OFF, retained.
    let acts = st.on_routed(&ch_msg(perimeter("1", false)), t3 + s(17.0));
    assert_eq!(
        ch_states(&acts),
        [
            (ch("alarm/perimeterAlarm_1"), "OFF".into(), true),
            (ch("line_crossing/state"), "OFF".into(), true),
        ]
    );
    // Intrusion never appeared anywhere.
    assert!(
        st.on_tick(t3 + s(100.0))
            .iter()
            .all(|a| !a.topic().contains("intrusion"))
    );
    let re = st.on_connected(t3 + s(101.0));
    assert!(re.iter().all(|a| !a.topic().contains("/intrusion/")));
}

#[test]
fn ambiguous_status_after_the_detection_holds_the_detection_still_on() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let t1 = nvr_ready(&mut st, t0);
    // The detection first, the status 0.2 s later (the IPC order).
    let mut acts = st.on_routed(&ch_msg(event(Category::Intrusion, Phase::Start)), t1);
    acts.extend(st.on_tick(t1 + DISCOVERY_SETTLE));
    let t2 = t1 + DISCOVERY_SETTLE + s(0.2);
    acts.extend(st.on_routed(&ch_msg(perimeter("1", true)), t2));
    acts.extend(st.on_tick(t2 + DISCOVERY_SETTLE));
    assert_eq!(
        ch_states(&acts),
        [
            (ch("intrusion/state"), "ON".into(), false),
            (ch("alarm/perimeterAlarm_1"), "ON".into(), false),
        ]
    );
    // Intrusion's own off_delay (30 s) passes; the status still holds it.
    let late = st.on_tick(t1 + s(45.0));
    assert!(
        ch_states(&late).iter().all(|(_, p, _)| p == "ON"),
        "{late:?}"
    );
    let acts = st.on_routed(&ch_msg(perimeter("1", false)), t1 + s(50.0));
    assert_eq!(
        ch_states(&acts),
        [
            (ch("alarm/perimeterAlarm_1"), "OFF".into(), true),
            (ch("intrusion/state"), "OFF".into(), true),
        ]
    );
    // line_crossing was covered but never detected: never touched.
    assert!(acts.iter().all(|a| !a.topic().contains("line_crossing")));
}

#[test]
fn ambiguous_status_is_not_tied_to_a_detection_that_already_ended() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let t1 = nvr_ready(&mut st, t0);
    let mut e = event(Category::LineCrossing, Phase::Pulse);
    e.raw_type = "lineCrossing".into();
    st.on_routed(&ch_msg(e), t1);
    st.on_tick(t1 + DISCOVERY_SETTLE);
    // line_crossing OFF after 5 s; the status comes later.
    let off = st.on_tick(t1 + DISCOVERY_SETTLE + s(5.0));
    assert_eq!(
        ch_states(&off),
        [(ch("line_crossing/state"), "OFF".into(), true)]
    );
    let mut acts = st.on_routed(&ch_msg(perimeter("1", true)), t1 + s(10.0));
    acts.extend(st.on_tick(t1 + s(12.0)));
    acts.extend(st.on_routed(&ch_msg(perimeter("1", false)), t1 + s(20.0)));
    assert_eq!(
        ch_states(&acts),
        [
            (ch("alarm/perimeterAlarm_1"), "ON".into(), false),
            (ch("alarm/perimeterAlarm_1"), "OFF".into(), true),
        ]
    );
}

#[test]
fn ambiguous_status_holds_two_covered_categories_not_others() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let t1 = nvr_ready(&mut st, t0);
    st.on_routed(&ch_msg(perimeter("1", true)), t1);
    st.on_tick(t1 + DISCOVERY_SETTLE);
    let t2 = t1 + DISCOVERY_SETTLE;
    for (i, cat) in [
        Category::Intrusion,
        Category::LineCrossing,
        Category::Motion,
    ]
    .into_iter()
    .enumerate()
    {
        let at = t2 + s(0.1 * (i as f64 + 1.0));
        st.on_routed(&ch_msg(event(cat, Phase::Pulse)), at);
    }
    // Every detection brought discovery (a new category each): let it settle.
    let mut acts = st.on_tick(t2 + s(0.3) + DISCOVERY_SETTLE);
    // Motion (30 s) is not covered: it ends on its own timer; the covered two stay ON.
    for i in 1..=40 {
        acts.extend(st.on_tick(t2 + s(f64::from(i))));
    }
    let offs: Vec<_> = ch_states(&acts)
        .into_iter()
        .filter(|(_, p, _)| p == "OFF")
        .collect();
    assert_eq!(offs, [(ch("motion/state"), "OFF".into(), true)]);
    let acts = st.on_routed(&ch_msg(perimeter("1", false)), t2 + s(41.0));
    assert_eq!(
        ch_states(&acts),
        [
            (ch("alarm/perimeterAlarm_1"), "OFF".into(), true),
            (ch("intrusion/state"), "OFF".into(), true),
            (ch("line_crossing/state"), "OFF".into(), true),
        ]
    );
}

#[test]
fn ambiguous_status_without_any_detection_drives_only_its_entity() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let t1 = nvr_ready(&mut st, t0);
    let mut acts = st.on_routed(&ch_msg(perimeter("1", true)), t1);
    acts.extend(st.on_tick(t1 + DISCOVERY_SETTLE));
    acts.extend(st.on_tick(t1 + s(40.0)));
    acts.extend(st.on_routed(&ch_msg(perimeter("1", false)), t1 + s(41.0)));
    acts.extend(st.on_tick(t1 + s(100.0)));
    let own: Vec<_> = topics(&acts)
        .into_iter()
        .filter(|tp| tp.starts_with(&format!("camera/{CH}/")))
        .collect();
    assert_eq!(
        own,
        [ch("alarm/perimeterAlarm_1"), ch("alarm/perimeterAlarm_1")],
        "nothing but the alarm topic"
    );
    let d = ch_discovery(&acts).unwrap();
    let keys: Vec<&String> = d["components"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["alarm_status_perimeteralarm_1", "connectivity"]);
    // Its entity survives a restart (the registry recorded it) and comes back with its
    // discovery.
    let Routed::Event { device, event, .. } = ch_msg(perimeter("1", true)) else {
        unreachable!()
    };
    let (mut st2, t2) = state_with(&c);
    st2.restore(&known(vec![(device, vec![(*event).clone()], &[])]));
    let d = ch_discovery(&st2.on_connected(t2)).unwrap();
    assert!(
        d["components"]
            .get("alarm_status_perimeteralarm_1")
            .is_some()
    );
}

#[test]
fn ambiguous_status_max_hold_and_no_tie_after_it() {
    let mut c = cfg();
    c.alarm_max_hold = Duration::from_secs(60);
    let (mut st, t0) = state_with(&c);
    let t1 = nvr_ready(&mut st, t0);
    st.on_routed(&ch_msg(perimeter("1", true)), t1);
    st.on_routed(
        &ch_msg(event(Category::LineCrossing, Phase::Pulse)),
        t1 + s(0.3),
    );
    // The cap counts from when the alarm's ON went out (after the settle of its new entity).
    let cap = t1 + DISCOVERY_SETTLE + s(60.0);
    let mut acts = Vec::new();
    for i in 1..60 {
        acts.extend(st.on_tick(t1 + s(f64::from(i))));
    }
    acts.extend(st.on_tick(cap - s(0.01)));
    assert!(
        ch_states(&acts).iter().all(|(_, p, _)| p == "ON"),
        "{:?}",
        ch_states(&acts)
    );
    // The false never comes: at alarm_max_hold both end (the detection's 5 s ran out long ago).
    let acts = st.on_tick(cap);
    assert_eq!(
        ch_states(&acts),
        [
            (ch("alarm/perimeterAlarm_1"), "OFF".into(), true),
            (ch("line_crossing/state"), "OFF".into(), true),
        ]
    );
    // A late false changes nothing more than its own (retained) OFF.
    let acts = st.on_routed(&ch_msg(perimeter("1", false)), cap + s(1.0));
    assert_eq!(
        ch_states(&acts),
        [(ch("alarm/perimeterAlarm_1"), "OFF".into(), true)]
    );
    // A new detection after the alarm is not held.
    st.on_routed(
        &ch_msg(event(Category::LineCrossing, Phase::Pulse)),
        cap + s(2.0),
    );
    let acts = st.on_tick(cap + s(7.0));
    assert_eq!(
        ch_states(&acts),
        [(ch("line_crossing/state"), "OFF".into(), true)]
    );
}

#[test]
fn ha_restart_republishes_an_active_alarm() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let t1 = nvr_ready(&mut st, t0);
    st.on_routed(&ch_msg(perimeter("1", true)), t1);
    st.on_tick(t1 + DISCOVERY_SETTLE);
    let mut acts = st.on_ha_online(t1 + s(3.0));
    acts.extend(st.on_tick(t1 + s(3.0) + DISCOVERY_SETTLE));
    assert_eq!(
        ch_states(&acts),
        [(ch("alarm/perimeterAlarm_1"), "ON".into(), false)]
    );
    st.on_routed(&ch_msg(perimeter("1", false)), t1 + s(10.0));
    let acts = st.on_ha_online(t1 + s(11.0));
    // Ended: only its retained OFF is re-sent.
    assert_eq!(
        ch_states(&acts),
        [(ch("alarm/perimeterAlarm_1"), "OFF".into(), true)]
    );
}

/// Hundreds of cameras: the images kept for re-publishing stay within
/// [`RETAINED_IMAGE_BYTES`]; the newest are kept (re-sent on reconnect), the oldest let go,
/// and every image was still published when its event came.
#[test]
fn images_kept_for_republishing_are_bounded_newest_first() {
    let c = cfg();
    let (mut st, t0) = state_with(&c);
    let mb = Bytes::from(vec![0xA5u8; 1 << 20]);
    let devices = 48; // 2 MiB each: three times the bound
    for n in 0..devices {
        let mut e = (*lpr_event()).clone();
        for i in &mut e.images {
            i.data = mb.clone();
        }
        let id = format!("02_00_00_00_00_{n:02x}");
        let acts = st.on_routed(
            &Routed::Event {
                device: camera(&id, &id.replace('_', ":")),
                event: Arc::new(e),
                counts: Default::default(),
            },
            t0 + s(n as f64),
        );
        assert!(
            topics(&acts).contains(&format!("camera/{id}/lpr/image")),
            "{id}: published when it came"
        );
        let kept: u64 = st.devices.values().map(|d| d.image_bytes).sum();
        assert!(kept <= RETAINED_IMAGE_BYTES, "{kept} after {id}");
    }
    st.on_tick(t0 + s(1000.0)); // every entity settled
    let acts = st.on_connected(t0 + s(1001.0));
    let tp = topics(&acts);
    let shown: Vec<_> = tp.iter().filter(|t| t.ends_with("lpr/image")).collect();
    assert!(
        tp.contains(&format!(
            "camera/02_00_00_00_00_{:02x}/lpr/image",
            devices - 1
        )),
        "{shown:?}"
    );
    assert!(!tp.contains(&"camera/02_00_00_00_00_00/lpr/image".to_owned()));
    // Small retained values of every device are still re-published.
    assert!(tp.contains(&"camera/02_00_00_00_00_00/lpr/plate".to_owned()));
    let images = acts
        .iter()
        .filter(|a| a.topic().ends_with("/image") || a.topic().ends_with("/target"))
        .count() as u64;
    assert!(
        images * (1 << 20) <= RETAINED_IMAGE_BYTES,
        "{images} images re-sent"
    );
    assert!(images >= 16, "{images} images re-sent");
}

// ---- Object detection: annotated pictures, "<Label> detected" and "<Label> count" --------

/// A snapshot with its overview, an annotated copy and what a detector found: `labels`.
fn detected(labels: &[&str]) -> Event {
    use crate::event::{DetectedObject, Detection, PixelBox};
    let mut e = event(Category::Snapshot, Phase::Pulse);
    e.images = vec![
        jpeg(ImageRole::Overview, 400),
        jpeg(ImageRole::Annotated, 410),
    ];
    let bbox = PixelBox {
        x_min: 1,
        y_min: 2,
        x_max: 30,
        y_max: 40,
    };
    e.detection = Some(Detection {
        state: DetectionState::Ok,
        detector: "deepstack".into(),
        objects: (labels.iter())
            .map(|l| DetectedObject {
                label: (*l).to_owned(),
                confidence: 0.9,
                bbox,
            })
            .collect(),
        error: None,
    });
    e
}

fn obj(key: &str, leaf: &str) -> String {
    t(&format!("objects/{key}/{leaf}"))
}

fn objects_cfg() -> MqttSinkConfig {
    let mut c = cfg();
    c.object_off_delay = s(5.0);
    c
}

fn components(acts: &[Action]) -> serde_json::Map<String, Value> {
    let disc = payload_of(acts, "homeassistant/device/camqtt_585b6940f40d/config")
        .expect("device discovery");
    let v: Value = serde_json::from_str(&disc).unwrap();
    v["components"].as_object().unwrap().clone()
}

#[test]
fn labels_turn_on_with_their_count_and_off_after_the_object_off_delay() {
    let c = objects_cfg();
    let (mut st, t0) = state_with(&c);
    let acts = st.on_routed(&ev_msg(detected(&["person", "car", "person"])), t0);
    let comps = components(&acts);
    let person = &comps["person_detected"];
    assert_eq!(person["platform"], "binary_sensor");
    assert_eq!(person["name"], "Person detected");
    assert_eq!(person["device_class"], "occupancy");
    assert_eq!(person["off_delay"], 5);
    assert_eq!(person["state_topic"], obj("person", "state"));
    assert_eq!(person["unique_id"], "camqtt_585b6940f40d_person_detected");
    assert_eq!(
        person["default_entity_id"],
        format!("binary_sensor.{DEV}_person_detected")
    );
    let count = &comps["person_count"];
    assert_eq!(count["platform"], "sensor");
    assert_eq!(count["name"], "Person count");
    assert_eq!(count["state_class"], "measurement");
    assert_eq!(count["state_topic"], obj("person", "count"));
    assert_eq!(
        count["default_entity_id"],
        format!("sensor.{DEV}_person_count")
    );
    assert_eq!(comps["car_count"]["icon"], "mdi:car");
    let annotated = &comps["snapshot_annotated"];
    assert_eq!(annotated["platform"], "image");
    assert_eq!(annotated["name"], "Snapshot annotated");
    assert_eq!(annotated["image_topic"], t("snapshot/annotated"));

    // Counts (retained) at once; the new sensors' ON waits for Home Assistant to subscribe.
    let got = view(&acts);
    assert!(
        got.contains(&(obj("person", "count"), "2".into(), true)),
        "{:?}",
        topics(&acts)
    );
    assert!(got.contains(&(obj("car", "count"), "1".into(), true)));
    assert!(find(&acts, &obj("person", "state")).is_none());
    let img = find(&acts, &t("snapshot/annotated")).expect("annotated image");
    assert!(img.is_retained());
    assert!(pos(&acts, &t("snapshot/annotated")) < pos(&acts, &obj("person", "count")));

    let rel = st.on_tick(t0 + DISCOVERY_SETTLE);
    let got = view(&rel);
    assert!(
        got.contains(&(obj("person", "state"), "ON".into(), false)),
        "{:?}",
        topics(&acts)
    );
    assert!(got.contains(&(obj("car", "state"), "ON".into(), false)));
    assert!(pos(&rel, &obj("person", "state")) < pos(&rel, &t("snapshot/event")));
    // The timers count from when HA saw the ON: t0 + 1.5 s + 5 s.
    assert_eq!(st.next_deadline(), Some(t0 + s(6.5)));

    // Only a person in the next picture: its count and timer move, the car's do not.
    let acts = st.on_routed(&ev_msg(detected(&["person"])), t0 + s(3.0));
    let got = view(&acts);
    assert!(
        got.contains(&(obj("person", "count"), "1".into(), true)),
        "{:?}",
        topics(&acts)
    );
    assert!(got.contains(&(obj("person", "state"), "ON".into(), false)));
    assert!(find(&acts, &obj("car", "count")).is_none());
    assert!(
        !topics(&acts)
            .iter()
            .any(|t| t.starts_with("homeassistant/"))
    );

    assert!(
        !topics(&st.on_tick(t0 + s(6.4)))
            .iter()
            .any(|t| t.contains("/objects/"))
    );
    let off = st.on_tick(t0 + s(6.5));
    assert_eq!(
        view(&off)
            .into_iter()
            .filter(|(t, _, _)| t.contains("/objects/"))
            .collect::<Vec<_>>(),
        [
            (obj("car", "count"), "0".into(), true),
            (obj("car", "state"), "OFF".into(), true),
        ]
    );
    assert_eq!(st.next_deadline(), Some(t0 + s(8.0)));
    let off = st.on_tick(t0 + s(8.0));
    assert_eq!(
        payload_of(&off, &obj("person", "count")).as_deref(),
        Some("0")
    );
    assert_eq!(
        payload_of(&off, &obj("person", "state")).as_deref(),
        Some("OFF")
    );
    assert!(
        st.on_tick(t0 + s(20.0))
            .iter()
            .all(|a| !a.topic().contains("/objects/"))
    );
}

#[test]
fn only_a_detection_with_an_answer_moves_objects() {
    let c = objects_cfg();
    let (mut st, t0) = state_with(&c);
    // The detector did not answer: no labels, no entities (the annotated image may exist).
    let mut down = detected(&["person"]);
    if let Some(d) = down.detection.as_mut() {
        d.state = DetectionState::Unavailable;
    }
    let acts = st.on_routed(&ev_msg(down), t0);
    assert!(!topics(&acts).iter().any(|t| t.contains("/objects/")));
    assert!(!components(&acts).contains_key("person_detected"));

    // An end or a status carrying objects moves nothing of them.
    let end = Event {
        phase: Phase::Stop,
        ..detected(&["dog"])
    };
    let acts = st.on_routed(&ev_msg(end), t0 + s(1.0));
    assert!(!topics(&acts).iter().any(|t| t.contains("/objects/")));
    let mut status = detected(&["dog"]);
    status.attrs.alarm = Some(AlarmState {
        name: "motionAlarm".into(),
        id: None,
        active: true,
        covers: vec![Category::Snapshot],
    });
    let acts = st.on_routed(&ev_msg(status), t0 + s(2.0));
    assert!(!topics(&acts).iter().any(|t| t.contains("/objects/")));
    assert!(!topics(&acts).iter().any(|t| t.ends_with("/annotated")));
}

#[test]
fn hostile_labels_are_capped_slugged_and_stay_single_level() {
    let c = objects_cfg();
    let (mut st, t0) = state_with(&c);
    let mut labels: Vec<String> = (0..40).map(|i| format!("thing {i:02}")).collect();
    labels.splice(
        0..0,
        [
            "../#/+".to_owned(),
            "Traffic Light".to_owned(),
            "人".to_owned(),
            "a/b\u{0}c".to_owned(),
            "x".repeat(5000),
        ],
    );
    let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
    let acts = st.on_routed(&ev_msg(detected(&refs)), t0);
    let comps = components(&acts);
    let detected_keys: Vec<&String> = comps.keys().filter(|k| k.ends_with("_detected")).collect();
    assert_eq!(detected_keys.len(), MAX_OBJECT_LABELS, "{detected_keys:?}");
    assert_eq!(
        comps.keys().filter(|k| k.ends_with("_count")).count(),
        MAX_OBJECT_LABELS
    );
    for (key, comp) in &comps {
        assert!(
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{key}"
        );
        let uid = comp["unique_id"].as_str().unwrap_or("camqtt_");
        assert!(uid.len() < 80, "{uid}");
    }
    assert_eq!(
        comps["traffic_light_detected"]["name"],
        "Traffic Light detected"
    );
    assert_eq!(comps["a_b_c_count"]["name"], "A/b c count");
    let key = object_key("人");
    assert!(key.starts_with("label_"), "{key}");
    assert!(comps.contains_key(&format!("{key}_detected")));
    assert!(
        comps.contains_key("x_detected")
            || comps.contains_key(&format!("{}_detected", "x".repeat(32)))
    );
    // Topics only for the labels that have entities, each a single level.
    let object_topics: Vec<String> = topics(&acts)
        .into_iter()
        .filter(|t| t.contains("/objects/"))
        .collect();
    assert_eq!(object_topics.len(), MAX_OBJECT_LABELS, "{object_topics:?}");
    for tp in &object_topics {
        assert_eq!(tp.split('/').count(), 5, "{tp}");
        assert!(!tp.contains(['+', '#', '\0']), "{tp}");
    }
    // Further new labels get nothing, neither entities nor topics.
    let acts = st.on_routed(&ev_msg(detected(&["zebra"])), t0 + s(1.0));
    assert!(!topics(&acts).iter().any(|t| t.contains("/objects/")));
    assert!(find(&acts, "homeassistant/device/camqtt_585b6940f40d/config").is_none());
}

#[test]
fn annotated_image_follows_the_image_options_and_the_packet_limit() {
    let mut c = objects_cfg();
    c.images.retain_device = false;
    c.images.json_base64 = true;
    let (mut st, t0) = state_with(&c);
    let acts = st.on_routed(&ev_msg(detected(&[])), t0);
    // Not retained: it waits for Home Assistant to subscribe to the new image entity.
    assert!(find(&acts, &t("snapshot/annotated")).is_none());
    let mut acts = st.on_tick(t0 + DISCOVERY_SETTLE);
    let img = find(&acts, &t("snapshot/annotated")).expect("annotated image");
    assert!(!img.is_retained());
    acts.extend(st.on_routed(&ev_msg(detected(&[])), t0 + s(2.0)));
    let roles: Vec<String> = acts
        .iter()
        .filter(|a| a.topic() == t("snapshot/image_json"))
        .filter_map(|Action::Publish { payload, .. }| serde_json::from_slice::<Value>(payload).ok())
        .map(|v| v["role"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(roles, ["overview", "annotated", "overview", "annotated"]);

    // Larger than the broker takes: left out, named in the event's warnings.
    let mut c = objects_cfg();
    c.max_packet_size = Some(2048);
    let (mut st, t0) = state_with(&c);
    let mut e = detected(&["person"]);
    e.images[1] = jpeg(ImageRole::Annotated, 4096);
    let mut acts = st.on_routed(&ev_msg(e), t0);
    acts.extend(st.on_tick(t0 + DISCOVERY_SETTLE));
    assert!(find(&acts, &t("snapshot/annotated")).is_none());
    assert!(find(&acts, &t("snapshot/image")).is_some());
    let ev: Value =
        serde_json::from_str(&payload_of(&acts, &t("snapshot/event")).unwrap()).unwrap();
    let warnings = ev["warnings"].to_string();
    assert!(
        warnings.contains("annotated image of 4096 bytes"),
        "{warnings}"
    );
    assert_eq!(
        payload_of(&acts, &obj("person", "state")).as_deref(),
        Some("ON")
    );
}

#[test]
fn labels_on_are_republished_and_a_restart_starts_them_at_zero() {
    let c = objects_cfg();
    let (mut st, t0) = state_with(&c);
    let t1 = settled(&mut st, t0, detected(&["person"]));
    let acts = st.on_ha_online(t1);
    assert_eq!(
        payload_of(&acts, &obj("person", "state")).as_deref(),
        Some("ON")
    );
    assert_eq!(
        payload_of(&acts, &obj("person", "count")).as_deref(),
        Some("1")
    );
    assert!(
        find(&acts, &t("snapshot/annotated")).is_none(),
        "images stay on the broker"
    );
    let acts = st.on_connected(t1 + s(0.1));
    assert!(find(&acts, &t("snapshot/annotated")).is_some());

    // After a restart nothing is on: the labels it knows start at 0 / OFF.
    let (mut st2, t2) = state_with(&c);
    st2.restore(&known(vec![(dev(), vec![detected(&["person"])], &[])]));
    let acts = st2.on_connected(t2);
    let got = view(&acts);
    assert!(
        got.contains(&(obj("person", "count"), "0".into(), true)),
        "{:?}",
        topics(&acts)
    );
    assert!(got.contains(&(obj("person", "state"), "OFF".into(), true)));
    let comps = components(&acts);
    assert!(comps.contains_key("person_detected") && comps.contains_key("snapshot_annotated"));
}

/// The pipeline's registry announces a device's capabilities before its detector stage adds
/// the labels of the same post: two discovery changes a moment apart. Home Assistant drops
/// the rest of a device discovery message while a component of the previous one is still
/// being set up, so the second waits until the first is `settle` old, and the new label
/// sensors' ON waits until Home Assistant listens to them.
#[test]
fn a_second_discovery_change_waits_until_the_first_has_settled() {
    let c = objects_cfg();
    let (mut st, t0) = state_with(&c);
    let with_labels = detected(&["person"]);
    let mut caps = crate::event::DeviceCaps::default();
    caps.record(&Event {
        detection: None,
        images: vec![jpeg(ImageRole::Overview, 400)],
        ..with_labels.clone()
    });
    let disc = "homeassistant/device/camqtt_585b6940f40d/config";
    let acts = st.on_routed(
        &Routed::Seen {
            device: dev(),
            caps: Arc::new(caps),
        },
        t0,
    );
    assert!(!components(&acts).contains_key("person_detected"));
    let acts = st.on_routed(&ev_msg(with_labels), t0 + s(0.002));
    assert!(find(&acts, disc).is_none(), "{:?}", topics(&acts));
    assert_eq!(
        payload_of(&acts, &obj("person", "count")).as_deref(),
        Some("1")
    );
    assert!(find(&acts, &obj("person", "state")).is_none());
    assert_eq!(st.next_deadline(), Some(t0 + DISCOVERY_SETTLE));

    let acts = st.on_tick(t0 + DISCOVERY_SETTLE);
    let comps = components(&acts);
    assert!(comps.contains_key("person_detected") && comps.contains_key("snapshot_annotated"));
    assert!(
        find(&acts, &obj("person", "state")).is_none(),
        "not before HA listens"
    );
    let acts = st.on_tick(t0 + DISCOVERY_SETTLE * 2);
    assert_eq!(
        payload_of(&acts, &obj("person", "state")).as_deref(),
        Some("ON")
    );
    // The ON is visible for the whole off delay, counted from when it went out.
    assert_eq!(st.next_deadline(), Some(t0 + DISCOVERY_SETTLE * 2 + s(5.0)));
    // A change long after the last discovery goes out at once.
    let acts = st.on_routed(&ev_msg(detected(&["car"])), t0 + s(60.0));
    assert!(components(&acts).contains_key("car_detected"));
}
