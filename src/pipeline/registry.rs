//! The device registry and the routing rules, without I/O: [`Registry::route`] turns one
//! source message into [`Routed`] messages, [`Registry::tick`] notices silence.
//!
//! The registry is the bridge's one record of its devices ([`DeviceRecord`]: the device, when
//! it was last heard from, what it has shown, the bridge-kept counts). It is persisted by
//! [`super::run`] ([`super::file`]), restored at start ([`Registry::restore`]) and handed to
//! the sinks: [`Routed::Seen`] carries a device's capabilities whenever they change, a
//! [`Routed::Event`] the counts it advanced, [`Routed::Forget`] the end of a device silent
//! for `forget_after`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::PipelineConfig;
use super::file::{self, RegistryFile, SavedDevice};
use super::identity::Identities;
use crate::event::{
    Category, Device, DeviceCaps, DeviceKind, DeviceRecord, Event, KnownDevices, Message, Routed,
    counted_classes,
};
use crate::sources::DevicePolicy;
use crate::telemetry::Telemetry;

/// How often devices silent for `forget_after` are looked for.
pub const FORGET_CHECK: Duration = Duration::from_secs(3600);

/// One known device.
#[derive(Debug)]
struct Known {
    record: DeviceRecord,
    /// When it was last heard from (monotonic, for `offline_after`).
    heard: Instant,
    /// Its source's `offline_after`.
    offline_after: Duration,
    online: bool,
    /// `record.last_seen` as last written to the registry file.
    saved_seen: Option<SystemTime>,
}

/// How [`Registry::touch`] found a device.
#[derive(Debug, Clone, Copy, Default)]
struct Touch {
    new: bool,
    changed: bool,
    back: bool,
}

impl Touch {
    fn any(self) -> bool {
        self.new || self.changed || self.back
    }
}

/// The device registry and the filters, without I/O.
#[derive(Debug)]
pub struct Registry {
    cfg: PipelineConfig,
    ids: Identities,
    devices: BTreeMap<String, Known>,
    traject: HashMap<String, (Instant, usize)>,
    telemetry: Telemetry,
    /// Wall clock at `started` (wall times derive from the monotonic `now` passed in).
    started: (Instant, SystemTime),
    next_forget: Instant,
    /// Changed since the last [`Registry::snapshot`].
    dirty: bool,
}

impl Registry {
    /// The `[[devices]]` entry matching a device's identity facts, if any.
    pub fn section(
        &self,
        info: &crate::event::DeviceInfo,
    ) -> Option<&crate::config::DeviceSection> {
        self.ids.section(info)
    }

    /// A registry with nothing known; `now`/`wall` are the same moment on both clocks.
    pub fn new(cfg: PipelineConfig, telemetry: Telemetry, now: Instant, wall: SystemTime) -> Self {
        Registry {
            ids: Identities::new(cfg.devices.clone()),
            cfg,
            devices: BTreeMap::new(),
            traject: HashMap::new(),
            telemetry,
            started: (now, wall),
            next_forget: now + FORGET_CHECK,
            dirty: false,
        }
    }

    /// Start from the records of the registry file: the devices are known and offline until
    /// they are heard from.
    pub fn restore(&mut self, known: &KnownDevices, now: Instant) {
        for r in &known.records {
            let k = Known {
                record: r.clone(),
                heard: now,
                offline_after: DevicePolicy::default().offline_after,
                online: false,
                saved_seen: Some(r.last_seen),
            };
            self.devices.insert(r.device.id.clone(), k);
        }
    }

    fn wall(&self, now: Instant) -> SystemTime {
        let (at, wall) = self.started;
        (wall.checked_add(now.saturating_duration_since(at))).unwrap_or(wall)
    }

    /// The policy of the devices of `source`.
    fn policy(&self, source: &str) -> DevicePolicy {
        self.cfg.policies.get(source).copied().unwrap_or_default()
    }

    /// Route one message from `source` ([`crate::sources::Source::name`]).
    pub fn route(&mut self, source: &str, msg: Message, now: Instant) -> Vec<Routed> {
        let policy = self.policy(source);
        match msg {
            Message::Unparsed(u) => vec![Routed::Unparsed(u)],
            Message::Heartbeat(info) => {
                self.ids.learn(&info);
                let device = self.ids.resolve(&info);
                let mut out = Vec::new();
                self.seen(&device, &policy, now, &mut out);
                // An NVR heartbeat speaks for all of its channels.
                if device.info.kind == DeviceKind::Nvr && device.info.channel.is_none() {
                    let children: Vec<Device> = (self.devices.values())
                        .map(|k| &k.record.device)
                        .filter(|d| d.parent.as_ref().is_some_and(|p| p.id == device.id))
                        .cloned()
                        .collect();
                    for child in children {
                        self.seen(&child, &policy, now, &mut out);
                    }
                }
                out
            }
            Message::Event(event) => self.route_event(*event, &policy, now),
            Message::Unreachable(info) => {
                let device = self.ids.resolve(&info);
                let mut out = Vec::new();
                if !self.devices.contains_key(&device.id) {
                    // Never heard from (a wrong password from the start): record it, so that
                    // the sink announces a device that is unavailable (its `Offline` of a
                    // device it does not know publishes the discovery), not nothing.
                    self.touch(&device, &policy, now);
                }
                if let Some(k) = self.devices.get_mut(&device.id)
                    && k.online
                {
                    k.online = false;
                    tracing::info!(device = %device.id, "device unreachable, offline");
                    out.push(Routed::Offline {
                        device: k.record.device.clone(),
                    });
                }
                out
            }
        }
    }

    fn route_event(
        &mut self,
        mut event: Event,
        policy: &DevicePolicy,
        now: Instant,
    ) -> Vec<Routed> {
        self.ids.learn(&event.device);
        self.ids.fill_from_peer(&mut event.device);
        let device = self.ids.resolve(&event.device);
        let mut out = Vec::new();
        if let Some(parent) = &device.parent {
            self.seen(parent, policy, now, &mut out);
        }
        let touch = self.touch(&device, policy, now);
        let passes = if self
            .cfg
            .disabled
            .iter()
            .any(|d| d == event.category.as_str())
        {
            self.telemetry.filtered.inc();
            false
        } else if event.category == Category::Traject
            && !self.traject_due(&device.id, event.attrs.targets.len(), policy, now)
        {
            self.telemetry.traject_suppressed.inc();
            false
        } else {
            true
        };
        let known = self.devices.get_mut(&device.id).expect("touched");
        let mut counts = BTreeMap::new();
        let mut shows_more = false;
        if passes {
            shows_more = known.record.caps.record(&event);
            for class in counted_classes(&event) {
                let n = known.record.counts.entry(class.clone()).or_insert(0);
                *n += 1;
                counts.insert(class, *n);
            }
            self.dirty |= shows_more || !counts.is_empty();
        }
        if touch.any() || shows_more {
            out.push(Routed::Seen {
                device: device.clone(),
                caps: Arc::new(known.record.caps.clone()),
            });
        }
        if passes {
            out.push(Routed::Event {
                device,
                event: Arc::new(event),
                counts,
            });
        }
        out
    }

    /// Mark devices offline that have been silent for their source's `offline_after`; forget
    /// those silent for `forget_after` (checked every [`FORGET_CHECK`]).
    pub fn tick(&mut self, now: Instant) -> Vec<Routed> {
        let mut out = Vec::new();
        for k in self.devices.values_mut() {
            let limit = k.offline_after;
            if k.online && now.saturating_duration_since(k.heard) >= limit {
                k.online = false;
                tracing::info!(device = %k.record.device.id, silent_s = limit.as_secs(), "device offline");
                out.push(Routed::Offline {
                    device: k.record.device.clone(),
                });
            }
        }
        if now >= self.next_forget {
            self.next_forget = now + FORGET_CHECK;
            self.forget_silent(now, &mut out);
        }
        out
    }

    /// Drop devices last heard from `forget_after` ago or earlier; an NVR stays while one of
    /// its channels does.
    fn forget_silent(&mut self, now: Instant, out: &mut Vec<Routed>) {
        let Some(cutoff) = self.wall(now).checked_sub(self.cfg.forget_after) else {
            return;
        };
        let kept_parents: Vec<String> = (self.devices.values())
            .filter(|k| k.record.last_seen > cutoff)
            .filter_map(|k| k.record.device.parent.as_ref().map(|p| p.id.clone()))
            .collect();
        let old: Vec<String> = (self.devices.iter())
            .filter(|(id, k)| k.record.last_seen <= cutoff && !kept_parents.contains(id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in old {
            if let Some(k) = self.devices.remove(&id) {
                tracing::info!(device = %id, forget_after_days = self.cfg.forget_after.as_secs() / 86_400, "device silent for forget_after, forgotten");
                self.traject.remove(&id);
                self.dirty = true;
                out.push(Routed::Forget {
                    device: k.record.device,
                });
            }
        }
    }

    /// Every known device.
    pub fn devices(&self) -> impl Iterator<Item = &DeviceRecord> {
        self.devices.values().map(|k| &k.record)
    }

    /// True when the registry changed since the last [`Registry::snapshot`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Have the registry written at the next chance (after a migration).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// The registry as written to the file; marks it clean.
    pub fn snapshot(&mut self, now: Instant) -> RegistryFile {
        self.dirty = false;
        let devices = (self.devices.values_mut())
            .map(|k| {
                k.saved_seen = Some(k.record.last_seen);
                SavedDevice::of(&k.record)
            })
            .collect();
        RegistryFile {
            version: file::VERSION,
            saved: file::unix(self.wall(now)),
            devices,
        }
    }

    fn traject_due(
        &mut self,
        id: &str,
        targets: usize,
        policy: &DevicePolicy,
        now: Instant,
    ) -> bool {
        match self.traject.get(id) {
            Some((at, n))
                if *n == targets
                    && now.saturating_duration_since(*at) < policy.tracking_interval =>
            {
                false
            }
            _ => {
                self.traject.insert(id.to_string(), (now, targets));
                true
            }
        }
    }

    /// A device (and its NVR) was heard from: a [`Routed::Seen`] when it is new, changed or
    /// back online.
    fn seen(
        &mut self,
        device: &Device,
        policy: &DevicePolicy,
        now: Instant,
        out: &mut Vec<Routed>,
    ) {
        if let Some(parent) = &device.parent {
            self.seen(parent, policy, now, out);
        }
        if self.touch(device, policy, now).any() {
            let caps = &self.devices[&device.id].record.caps;
            out.push(Routed::Seen {
                device: device.clone(),
                caps: Arc::new(caps.clone()),
            });
        }
    }

    /// Record that `device` was heard from at `now`, through a source with `policy`.
    fn touch(&mut self, device: &Device, policy: &DevicePolicy, now: Instant) -> Touch {
        let wall = self.wall(now);
        let offline_after = self
            .ids
            .expect_every(&device.info)
            .unwrap_or(policy.offline_after);
        let Some(k) = self.devices.get_mut(&device.id) else {
            tracing::info!(
                device = %device.id,
                name = %device.name,
                mac = device.info.mac.as_deref().unwrap_or("-"),
                peer = %device.info.peer.map(|p| p.to_string()).unwrap_or_default(),
                kind = ?device.info.kind,
                "new device"
            );
            let record = DeviceRecord {
                device: device.clone(),
                last_seen: wall,
                caps: DeviceCaps::default(),
                counts: BTreeMap::new(),
            };
            let known = Known {
                record,
                heard: now,
                offline_after,
                online: true,
                saved_seen: None,
            };
            self.devices.insert(device.id.clone(), known);
            self.dirty = true;
            return Touch {
                new: true,
                ..Touch::default()
            };
        };
        k.offline_after = offline_after;
        let touch = Touch {
            new: false,
            changed: k.record.device != *device,
            back: !k.online,
        };
        if touch.back {
            tracing::info!(device = %device.id, "device online");
        }
        if touch.changed {
            k.record.device = device.clone();
        }
        k.heard = now;
        k.online = true;
        k.record.last_seen = wall;
        // `last_seen` alone is saved only when it moved far enough (it changes on every post).
        let stale = k.saved_seen.is_none_or(|s| {
            wall.duration_since(s)
                .is_ok_and(|d| d >= file::LAST_SEEN_RESOLUTION)
        });
        self.dirty |= touch.changed || stale;
        touch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DeviceSection;
    use crate::event::DeviceInfo;
    use crate::pipeline::tests::event;
    use std::net::IpAddr;

    fn cfg() -> PipelineConfig {
        PipelineConfig {
            devices: vec![DeviceSection {
                mac: Some("58-5B-69-00-00-09".into()),
                id: Some("gate".into()),
                name: Some("Gate".into()),
                ..Default::default()
            }],
            disabled: vec!["metadata".into()],
            policies: [(
                "test",
                DevicePolicy {
                    offline_after: Duration::from_secs(60),
                    tracking_interval: Duration::from_secs(1),
                },
            )]
            .into(),
            forget_after: Duration::from_secs(30 * 86_400),
            state_dir: None,
            fsync: false,
            tap: None,
            detector: Default::default(),
        }
    }

    fn registry(now: Instant) -> Registry {
        Registry::new(
            cfg(),
            Telemetry::new(),
            now,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )
    }

    fn peer(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn seen_ids(out: &[Routed]) -> Vec<&str> {
        out.iter()
            .filter_map(|m| match m {
                Routed::Seen { device, .. } => Some(device.id.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn learns_identity_from_heartbeats_of_the_same_peer() {
        let now = Instant::now();
        let mut r = registry(now);
        r.route(
            "test",
            Message::Heartbeat(DeviceInfo {
                mac: Some("58:5b:69:5a:84:bb".into()),
                name: Some("Yard".into()),
                peer: peer("10.0.0.7"),
                ..Default::default()
            }),
            now,
        );
        let info = DeviceInfo {
            peer: peer("10.0.0.7"),
            ..Default::default()
        };
        let out = r.route("test", event(info, Category::Intrusion), now);
        let Some(Routed::Event { device, .. }) = out.last() else {
            panic!("{out:?}")
        };
        assert_eq!(device.id, "58_5b_69_5a_84_bb");
        assert_eq!(device.name, "Yard");
    }

    #[test]
    fn filters_and_traject_rate_limit() {
        let t0 = Instant::now();
        let mut r = registry(t0);
        let info = DeviceInfo {
            peer: peer("10.0.0.8"),
            ..Default::default()
        };
        let out = r.route("test", event(info.clone(), Category::Metadata), t0);
        assert!(!out.iter().any(|m| matches!(m, Routed::Event { .. })));
        assert!(
            r.devices().all(|d| d.caps.categories.is_empty()),
            "a filtered category is not recorded"
        );
        let n = |out: Vec<Routed>| {
            out.iter()
                .filter(|m| matches!(m, Routed::Event { .. }))
                .count()
        };
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(
            n(r.route("test", event(info.clone(), Category::Traject), t0)),
            1
        );
        assert_eq!(
            n(r.route("test", event(info.clone(), Category::Traject), ms(100))),
            0
        );
        assert_eq!(
            n(r.route("test", event(info.clone(), Category::Traject), ms(1100))),
            1
        );
    }

    #[test]
    fn a_seen_carries_the_capabilities_when_they_grow() {
        let t0 = Instant::now();
        let mut r = registry(t0);
        let info = DeviceInfo {
            peer: peer("10.0.0.8"),
            ..Default::default()
        };
        // New device: one Seen, already with the category, then the event.
        let out = r.route("test", event(info.clone(), Category::Face), t0);
        let [Routed::Seen { caps, .. }, Routed::Event { .. }] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(caps.categories.contains_key("face"));
        // Nothing new: the event alone.
        let out = r.route("test", event(info.clone(), Category::Face), t0);
        assert!(matches!(out.as_slice(), [Routed::Event { .. }]), "{out:?}");
        // A new category: a Seen with both.
        let out = r.route("test", event(info, Category::Lpr), t0);
        let [Routed::Seen { caps, .. }, Routed::Event { .. }] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(caps.categories.len(), 2);
    }

    #[test]
    fn bridge_counts_continue_from_the_restored_record() {
        let t0 = Instant::now();
        let mut r = registry(t0);
        let info = DeviceInfo {
            peer: peer("10.0.0.8"),
            ..Default::default()
        };
        let counted = |out: &[Routed]| match out.last() {
            Some(Routed::Event { counts, .. }) => counts.get("person").copied(),
            _ => None,
        };
        assert_eq!(
            counted(&r.route("test", event(info.clone(), Category::Counting), t0)),
            Some(1)
        );
        assert_eq!(
            counted(&r.route("test", event(info.clone(), Category::Counting), t0)),
            Some(2)
        );
        assert!(r.is_dirty());
        let file = r.snapshot(t0);
        assert!(!r.is_dirty());
        let known = KnownDevices {
            records: file
                .devices
                .into_iter()
                .map(SavedDevice::into_record)
                .collect(),
            authoritative: true,
        };
        let mut again = registry(t0);
        again.restore(&known, t0);
        assert!(
            again.tick(t0 + Duration::from_secs(120)).is_empty(),
            "restored offline"
        );
        let out = again.route("test", event(info, Category::Counting), t0);
        assert_eq!(seen_ids(&out), ["10_0_0_8"], "back online");
        assert_eq!(counted(&out), Some(3));
    }

    #[test]
    fn offline_after_silence_and_back() {
        let t0 = Instant::now();
        let mut r = registry(t0);
        let s = |n| t0 + Duration::from_secs(n);
        let hb = Message::Heartbeat(DeviceInfo {
            peer: peer("10.0.0.9"),
            ..Default::default()
        });
        assert!(matches!(
            r.route("test", hb.clone(), t0).as_slice(),
            [Routed::Seen { .. }]
        ));
        assert!(r.route("test", hb.clone(), s(10)).is_empty());
        assert!(r.tick(s(30)).is_empty());
        assert!(matches!(r.tick(s(71)).as_slice(), [Routed::Offline { .. }]));
        assert!(r.tick(s(80)).is_empty());
        assert!(matches!(
            r.route("test", hb, s(90)).as_slice(),
            [Routed::Seen { .. }]
        ));
    }

    #[test]
    fn unreachable_goes_offline_at_once_and_expect_every_overrides_the_source() {
        use crate::event::{Handle, HandleKind};
        let t0 = Instant::now();
        let mut c = cfg();
        c.devices.push(DeviceSection {
            ftp_user: Some("porch".into()),
            expect_every: Some(Duration::from_secs(600)),
            ..Default::default()
        });
        let mut r = Registry::new(c, Telemetry::new(), t0, SystemTime::UNIX_EPOCH);
        let s = |n| t0 + Duration::from_secs(n);
        let porch = DeviceInfo {
            handles: vec![Handle::new(HandleKind::FtpUser, "porch")],
            ..Default::default()
        };
        let other = DeviceInfo {
            handles: vec![Handle::new(HandleKind::FtpUser, "yard")],
            ..Default::default()
        };
        r.route("test", event(porch.clone(), Category::Motion), t0);
        r.route("test", event(other.clone(), Category::Motion), t0);
        // The source's 60 s applies to `yard`; `porch` is expected every 600 s.
        let off = r.tick(s(61));
        assert!(
            matches!(off.as_slice(), [Routed::Offline { device }] if device.id == "yard"),
            "{off:?}"
        );
        let off = r.tick(s(601));
        assert!(
            matches!(off.as_slice(), [Routed::Offline { device }] if device.id == "porch"),
            "{off:?}"
        );
        // Unreachable: offline at once, once; back with the next message.
        r.route("test", Message::Heartbeat(other.clone()), s(700));
        let off = r.route("test", Message::Unreachable(other.clone()), s(701));
        assert!(
            matches!(off.as_slice(), [Routed::Offline { device }] if device.id == "yard"),
            "{off:?}"
        );
        assert!(
            r.route("test", Message::Unreachable(other.clone()), s(702))
                .is_empty()
        );
        // A device never heard from is announced, and offline.
        let never = DeviceInfo {
            handles: vec![Handle::new(HandleKind::Poll, "wrongpw")],
            ..Default::default()
        };
        let out = r.route("test", Message::Unreachable(never), s(702));
        assert!(
            matches!(out.as_slice(), [Routed::Offline { device }] if device.id == "wrongpw"),
            "{out:?}"
        );
        assert!(matches!(
            r.route("test", Message::Heartbeat(other), s(703))
                .as_slice(),
            [Routed::Seen { .. }]
        ));
    }

    #[test]
    fn nvr_heartbeat_keeps_channels_online() {
        let t0 = Instant::now();
        let mut r = registry(t0);
        let nvr = DeviceInfo {
            mac: Some("58:5b:69:12:f0:79".into()),
            kind: DeviceKind::Nvr,
            ..Default::default()
        };
        let ch = DeviceInfo {
            channel: Some(1),
            ..nvr.clone()
        };
        r.route("test", event(ch, Category::Face), t0);
        let offline = r.tick(t0 + Duration::from_secs(61));
        assert_eq!(offline.len(), 2);
        let back = r.route(
            "test",
            Message::Heartbeat(nvr),
            t0 + Duration::from_secs(62),
        );
        assert_eq!(
            seen_ids(&back),
            ["58_5b_69_12_f0_79", "58_5b_69_12_f0_79_ch1"]
        );
    }

    #[test]
    fn silent_devices_are_forgotten_but_an_nvr_stays_with_its_channel() {
        let t0 = Instant::now();
        let mut r = registry(t0);
        let day = |n: u64| t0 + Duration::from_secs(n * 86_400);
        let nvr = DeviceInfo {
            mac: Some("58:5b:69:12:f0:79".into()),
            kind: DeviceKind::Nvr,
            ..Default::default()
        };
        let cam = DeviceInfo {
            peer: peer("10.0.0.10"),
            ..Default::default()
        };
        r.route("test", Message::Heartbeat(nvr.clone()), t0);
        r.route("test", Message::Heartbeat(cam), t0);
        // The channel is heard from later, with its parent copied in the record.
        let ch = DeviceInfo {
            channel: Some(3),
            ..nvr
        };
        r.route("test", event(ch, Category::Face), day(10));
        r.snapshot(day(10));
        let out = r.tick(day(31));
        let forgotten: Vec<&str> = out
            .iter()
            .filter_map(|m| match m {
                Routed::Forget { device } => Some(device.id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(forgotten, ["10_0_0_10"]);
        assert!(r.is_dirty());
        let ids: Vec<&str> = r.devices().map(|d| d.device.id.as_str()).collect();
        assert_eq!(ids, ["58_5b_69_12_f0_79", "58_5b_69_12_f0_79_ch3"]);
    }
}
