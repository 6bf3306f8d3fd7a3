//! Fan-in from the sources, device registry, filters, fan-out to the sinks.
//!
//! This is the only module that knows both sides. [`Registry`] is a pure state machine
//! (`route`, `tick`); [`run`] is its thin async shell.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DeviceSection};
use crate::event::{Category, Device, DeviceInfo, DeviceKind, Message, Routed, normalise_mac};
use crate::sources::Input;
use crate::spool::Buffer;
use crate::telemetry::Telemetry;

/// Settings of the pipeline, taken from [`Config`].
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// `[[devices]]` entries.
    pub devices: Vec<DeviceSection>,
    /// Categories switched off.
    pub disabled: Vec<String>,
    /// No post for this long → offline.
    pub offline_after: Duration,
    /// Minimum gap between traject summaries of one device (unless the target count changes).
    pub traject_interval: Duration,
}

impl PipelineConfig {
    /// Take the pipeline's part of the configuration.
    pub fn from_config(c: &Config) -> Self {
        PipelineConfig {
            devices: c.devices.clone(),
            disabled: c
                .categories
                .iter()
                .filter(|(_, s)| !s.enabled)
                .map(|(k, _)| k.clone())
                .collect(),
            offline_after: c.viewtron.offline_after,
            traject_interval: c.viewtron.traject_interval,
        }
    }
}

/// Slug for topic ids: lower-case ASCII letters and digits, everything else `_`, no
/// leading/trailing/double `_`, never empty.
pub fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches('_');
    if trimmed.is_empty() {
        "unknown".into()
    } else {
        trimmed.chars().take(64).collect()
    }
}

#[derive(Debug)]
struct Known {
    device: Device,
    last_seen: Instant,
    online: bool,
}

#[derive(Debug, Default)]
struct Learned {
    name: Option<String>,
    mac: Option<String>,
    serial: Option<String>,
    ip: Option<String>,
}

/// The device registry and filters, without I/O.
#[derive(Debug)]
pub struct Registry {
    cfg: PipelineConfig,
    devices: BTreeMap<String, Known>,
    /// Identity learned per peer from heartbeats and alarm-status posts, for posts that
    /// carry none (older IPC firmware).
    by_peer: HashMap<IpAddr, Learned>,
    traject: HashMap<String, (Instant, usize)>,
    telemetry: Telemetry,
}

impl Registry {
    /// A new, empty registry.
    pub fn new(cfg: PipelineConfig, telemetry: Telemetry) -> Self {
        Registry {
            cfg,
            devices: BTreeMap::new(),
            by_peer: HashMap::new(),
            traject: HashMap::new(),
            telemetry,
        }
    }

    /// Route one message from a source.
    pub fn route(&mut self, msg: Message, now: Instant) -> Vec<Routed> {
        match msg {
            Message::Unparsed(u) => vec![Routed::Unparsed(u)],
            Message::Heartbeat(info) => {
                self.learn(&info);
                let device = self.resolve(&info);
                let mut out = self.seen(&device, now);
                // An NVR heartbeat speaks for all of its channels.
                if device.info.kind == DeviceKind::Nvr && device.info.channel.is_none() {
                    let children: Vec<Device> = self
                        .devices
                        .values()
                        .filter(|k| k.device.parent.as_ref().is_some_and(|p| p.id == device.id))
                        .map(|k| k.device.clone())
                        .collect();
                    for child in children {
                        out.extend(self.seen(&child, now));
                    }
                }
                out
            }
            Message::Event(event) => {
                self.learn(&event.device);
                let mut event = *event;
                self.fill_from_peer(&mut event.device);
                let device = self.resolve(&event.device);
                let mut out = self.seen(&device, now);
                if self
                    .cfg
                    .disabled
                    .iter()
                    .any(|d| d == event.category.as_str())
                {
                    self.telemetry.filtered.inc();
                    return out;
                }
                if event.category == Category::Traject
                    && !self.traject_due(&device.id, event.attrs.targets.len(), now)
                {
                    self.telemetry.traject_suppressed.inc();
                    return out;
                }
                out.push(Routed::Event {
                    device,
                    event: Arc::new(event),
                });
                out
            }
        }
    }

    /// Mark devices offline that have been silent for too long.
    pub fn tick(&mut self, now: Instant) -> Vec<Routed> {
        let limit = self.cfg.offline_after;
        let mut out = Vec::new();
        for k in self.devices.values_mut() {
            if k.online && now.saturating_duration_since(k.last_seen) >= limit {
                k.online = false;
                tracing::info!(device = %k.device.id, silent_s = limit.as_secs(), "device offline");
                out.push(Routed::Offline {
                    device: k.device.clone(),
                });
            }
        }
        out
    }

    /// Devices known so far.
    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.values().map(|k| &k.device)
    }

    fn traject_due(&mut self, id: &str, targets: usize, now: Instant) -> bool {
        match self.traject.get(id) {
            Some((at, n))
                if *n == targets
                    && now.saturating_duration_since(*at) < self.cfg.traject_interval =>
            {
                false
            }
            _ => {
                self.traject.insert(id.to_string(), (now, targets));
                true
            }
        }
    }

    fn seen(&mut self, device: &Device, now: Instant) -> Vec<Routed> {
        let mut out = Vec::new();
        if let Some(parent) = &device.parent {
            out.extend(self.seen(parent, now));
        }
        match self.devices.get_mut(&device.id) {
            Some(k) => {
                let changed = k.device != *device;
                let was_online = k.online;
                k.last_seen = now;
                k.online = true;
                if changed {
                    k.device = device.clone();
                }
                if !was_online || changed {
                    if !was_online {
                        tracing::info!(device = %device.id, "device online");
                    }
                    out.push(Routed::Seen {
                        device: device.clone(),
                    });
                }
            }
            None => {
                tracing::info!(
                    device = %device.id,
                    name = %device.name,
                    mac = device.info.mac.as_deref().unwrap_or("-"),
                    peer = %device.info.peer.map(|p| p.to_string()).unwrap_or_default(),
                    kind = ?device.info.kind,
                    "new device"
                );
                self.devices.insert(
                    device.id.clone(),
                    Known {
                        device: device.clone(),
                        last_seen: now,
                        online: true,
                    },
                );
                out.push(Routed::Seen {
                    device: device.clone(),
                });
            }
        }
        out
    }

    fn learn(&mut self, info: &DeviceInfo) {
        if info.kind != DeviceKind::Camera {
            return;
        }
        let Some(peer) = info.peer else { return };
        let l = self.by_peer.entry(peer).or_default();
        if info.name.is_some() {
            l.name.clone_from(&info.name);
        }
        if info.mac.is_some() {
            l.mac.clone_from(&info.mac);
        }
        if info.serial.is_some() {
            l.serial.clone_from(&info.serial);
        }
        if info.ip.is_some() {
            l.ip.clone_from(&info.ip);
        }
    }

    fn fill_from_peer(&self, info: &mut DeviceInfo) {
        if info.kind != DeviceKind::Camera {
            return;
        }
        let Some(l) = info.peer.and_then(|p| self.by_peer.get(&p)) else {
            return;
        };
        if info.mac.is_none() && info.serial.is_none() {
            info.mac.clone_from(&l.mac);
            info.serial.clone_from(&l.serial);
        }
        if info.name.is_none() {
            info.name.clone_from(&l.name);
        }
        if info.ip.is_none() {
            info.ip.clone_from(&l.ip);
        }
    }

    fn configured(&self, info: &DeviceInfo, channel: Option<u32>) -> Option<&DeviceSection> {
        let mac = info.mac.as_deref();
        self.cfg.devices.iter().find(|d| {
            let by_mac = d.mac.as_deref().and_then(normalise_mac);
            let matched = match (&by_mac, &d.serial, &d.peer) {
                (Some(m), _, _) if Some(m.as_str()) == mac => true,
                (_, Some(s), _) if info.serial.as_deref() == Some(s.as_str()) => true,
                (_, _, Some(p)) if info.peer == Some(*p) => true,
                _ => false,
            };
            matched && d.channel == channel
        })
    }

    /// Turn identity facts into a stable device.
    pub fn resolve(&self, info: &DeviceInfo) -> Device {
        let channel = if info.kind == DeviceKind::Nvr {
            info.channel
        } else {
            None
        };
        // Topic id (DESIGN §3): the MAC when known, else the peer address. The Home Assistant
        // key prefers the serial over the peer: it survives a DHCP change.
        let peer_slug = info.peer.map(|p| slug(&p.to_string()));
        let (base_id, base_key) = match (&info.mac, &info.serial, peer_slug) {
            (Some(mac), _, _) => (slug(mac), mac.replace(':', "")),
            (None, Some(sn), peer) => (peer.unwrap_or_else(|| slug(sn)), slug(sn)),
            (None, None, Some(peer)) => (peer.clone(), peer),
            (None, None, None) => ("unknown".into(), "unknown".into()),
        };
        let parent = match channel {
            Some(_) => {
                let mut nvr_info = info.clone();
                nvr_info.channel = None;
                Some(Box::new(self.resolve(&nvr_info)))
            }
            None => None,
        };
        let conf = self.configured(info, channel);
        let derived_id = match channel {
            Some(ch) => format!("{base_id}_ch{ch}"),
            None => base_id,
        };
        let hw_key = match channel {
            Some(ch) => format!("{base_key}_ch{ch}"),
            None => base_key,
        };
        let id = conf.and_then(|c| c.id.clone()).unwrap_or(derived_id);
        let reported = info
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        let name = conf.and_then(|c| c.name.clone()).unwrap_or_else(|| {
            let base =
                reported
                    .map(str::to_string)
                    .unwrap_or_else(|| match (&info.ip, info.peer) {
                        (Some(ip), _) => format!("Viewtron {ip}"),
                        (None, Some(peer)) => format!("Viewtron {peer}"),
                        _ => "Viewtron camera".into(),
                    });
            match channel {
                Some(ch) => format!("{base} channel {ch}"),
                None => base,
            }
        });
        let name: String = name.chars().filter(|c| !c.is_control()).take(100).collect();
        Device {
            id,
            name,
            info: info.clone(),
            hw_key,
            parent,
            area: conf.and_then(|c| c.area.clone()),
        }
    }
}

/// At most one "MQTT slower than the cameras" line per this period.
const HELD_LOG_EVERY: Duration = Duration::from_secs(60);

/// Stores routed messages in the buffer, in order, waiting for room while the sink is slower
/// than the sources (back-pressure: the source meanwhile holds its reply to the camera;
/// nothing is dropped for load).
struct Output {
    buffer: Buffer,
    telemetry: Telemetry,
    /// When the last "holding camera replies" line was logged.
    held_logged: Option<Instant>,
}

impl Output {
    async fn store(&mut self, routed: Vec<Routed>) {
        for r in routed {
            if !self.buffer.has_room() {
                self.held();
                self.buffer.room().await;
            }
            self.buffer.append(r).await;
        }
    }

    /// Count a wait for the sink and say so, at most once a minute.
    fn held(&mut self) {
        self.telemetry.backpressure_waits.inc();
        let now = Instant::now();
        if self
            .held_logged
            .is_none_or(|t| now.duration_since(t) >= HELD_LOG_EVERY)
        {
            self.held_logged = Some(now);
            tracing::info!(
                waits = self.telemetry.backpressure_waits.get(),
                "MQTT broker slower than the cameras: holding camera replies until it catches up"
            );
        }
    }
}

/// Run the pipeline until `shutdown` or until every source has gone away: route each
/// source message, store the result in `buffer`, then complete the source's
/// [`Input::durable`].
pub async fn run(
    cfg: PipelineConfig,
    mut rx: mpsc::Receiver<Input>,
    buffer: Buffer,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) {
    let mut registry = Registry::new(cfg, telemetry.clone());
    let mut out = Output {
        buffer,
        telemetry,
        held_logged: None,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            input = rx.recv() => match input {
                Some(Input { msg, durable }) => {
                    let routed = registry.route(msg, Instant::now());
                    out.store(routed).await;
                    if let Some(d) = durable {
                        let _ = d.send(());
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                let routed = registry.tick(Instant::now());
                out.store(routed).await;
            }
            () = shutdown.cancelled() => {
                // Drain what the sources already queued, then stop.
                while let Ok(Input { msg, durable }) = rx.try_recv() {
                    let routed = registry.route(msg, Instant::now());
                    out.store(routed).await;
                    if let Some(d) = durable {
                        let _ = d.send(());
                    }
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Attributes, Event, Phase, TimeSource};
    use std::time::SystemTime;

    fn cfg() -> PipelineConfig {
        PipelineConfig {
            devices: vec![DeviceSection {
                mac: Some("58-5B-69-00-00-09".into()),
                id: Some("gate".into()),
                name: Some("Gate".into()),
                ..Default::default()
            }],
            disabled: vec!["metadata".into()],
            offline_after: Duration::from_secs(60),
            traject_interval: Duration::from_secs(1),
        }
    }

    fn event(info: DeviceInfo, category: Category) -> Message {
        Message::Event(Box::new(Event {
            device: info,
            category,
            phase: Phase::Pulse,
            time: SystemTime::now(),
            time_source: TimeSource::Receiver,
            time_raw: None,
            received: SystemTime::now(),
            source: "test".into(),
            raw_type: "X".into(),
            envelope: None,
            config_version: None,
            attrs: Attributes::default(),
            images: vec![],
            warnings: vec![],
        }))
    }

    fn peer(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn ids_from_mac_channel_peer_and_config() {
        let r = Registry::new(cfg(), Telemetry::new());
        let cam = r.resolve(&DeviceInfo {
            mac: Some("58:5b:69:40:f4:0d".into()),
            peer: peer("10.0.0.5"),
            ..Default::default()
        });
        assert_eq!(cam.id, "58_5b_69_40_f4_0d");
        assert_eq!(cam.hw_key, "585b6940f40d");
        assert!(cam.parent.is_none());
        let ch = r.resolve(&DeviceInfo {
            mac: Some("58:5b:69:40:f4:0d".into()),
            channel: Some(2),
            kind: DeviceKind::Nvr,
            name: Some("Office".into()),
            ..Default::default()
        });
        assert_eq!(ch.id, "58_5b_69_40_f4_0d_ch2");
        assert_eq!(ch.hw_key, "585b6940f40d_ch2");
        assert_eq!(ch.name, "Office channel 2");
        assert_eq!(
            ch.parent.as_ref().map(|p| p.id.as_str()),
            Some("58_5b_69_40_f4_0d")
        );
        let serial_only = r.resolve(&DeviceInfo {
            serial: Some("FIXTURESN".into()),
            peer: peer("192.168.1.50"),
            ..Default::default()
        });
        assert_eq!(
            (serial_only.id.as_str(), serial_only.hw_key.as_str()),
            ("192_168_1_50", "fixturesn")
        );
        let anon = r.resolve(&DeviceInfo {
            peer: peer("192.168.1.50"),
            ..Default::default()
        });
        assert_eq!(anon.id, "192_168_1_50");
        assert_eq!(anon.name, "Viewtron 192.168.1.50");
        let named = r.resolve(&DeviceInfo {
            mac: Some("58:5b:69:00:00:09".into()),
            ..Default::default()
        });
        assert_eq!((named.id.as_str(), named.name.as_str()), ("gate", "Gate"));
    }

    #[test]
    fn learns_identity_from_heartbeats_of_the_same_peer() {
        let mut r = Registry::new(cfg(), Telemetry::new());
        let now = Instant::now();
        r.route(
            Message::Heartbeat(DeviceInfo {
                mac: Some("58:5b:69:5a:84:bb".into()),
                name: Some("Yard".into()),
                peer: peer("10.0.0.7"),
                ..Default::default()
            }),
            now,
        );
        let out = r.route(
            event(
                DeviceInfo {
                    peer: peer("10.0.0.7"),
                    ..Default::default()
                },
                Category::Intrusion,
            ),
            now,
        );
        let Some(Routed::Event { device, .. }) = out.last() else {
            panic!("{out:?}")
        };
        assert_eq!(device.id, "58_5b_69_5a_84_bb");
        assert_eq!(device.name, "Yard");
    }

    #[test]
    fn filters_and_traject_rate_limit() {
        let mut r = Registry::new(cfg(), Telemetry::new());
        let t0 = Instant::now();
        let info = DeviceInfo {
            peer: peer("10.0.0.8"),
            ..Default::default()
        };
        let out = r.route(event(info.clone(), Category::Metadata), t0);
        assert!(!out.iter().any(|m| matches!(m, Routed::Event { .. })));
        let n = |out: Vec<Routed>| {
            out.iter()
                .filter(|m| matches!(m, Routed::Event { .. }))
                .count()
        };
        assert_eq!(n(r.route(event(info.clone(), Category::Traject), t0)), 1);
        assert_eq!(
            n(r.route(
                event(info.clone(), Category::Traject),
                t0 + Duration::from_millis(100)
            )),
            0
        );
        assert_eq!(
            n(r.route(
                event(info.clone(), Category::Traject),
                t0 + Duration::from_millis(1100)
            )),
            1
        );
    }

    #[test]
    fn offline_after_silence_and_back() {
        let mut r = Registry::new(cfg(), Telemetry::new());
        let t0 = Instant::now();
        let hb = Message::Heartbeat(DeviceInfo {
            peer: peer("10.0.0.9"),
            ..Default::default()
        });
        assert!(matches!(
            r.route(hb.clone(), t0).as_slice(),
            [Routed::Seen { .. }]
        ));
        assert!(r.route(hb.clone(), t0 + Duration::from_secs(10)).is_empty());
        assert!(r.tick(t0 + Duration::from_secs(30)).is_empty());
        assert!(matches!(
            r.tick(t0 + Duration::from_secs(71)).as_slice(),
            [Routed::Offline { .. }]
        ));
        assert!(r.tick(t0 + Duration::from_secs(80)).is_empty());
        assert!(matches!(
            r.route(hb, t0 + Duration::from_secs(90)).as_slice(),
            [Routed::Seen { .. }]
        ));
    }

    #[test]
    fn nvr_heartbeat_keeps_channels_online() {
        let mut r = Registry::new(cfg(), Telemetry::new());
        let t0 = Instant::now();
        let nvr = DeviceInfo {
            mac: Some("58:5b:69:12:f0:79".into()),
            kind: DeviceKind::Nvr,
            ..Default::default()
        };
        let ch = DeviceInfo {
            channel: Some(1),
            ..nvr.clone()
        };
        r.route(event(ch, Category::Face), t0);
        let offline = r.tick(t0 + Duration::from_secs(61));
        assert_eq!(offline.len(), 2);
        let back = r.route(Message::Heartbeat(nvr), t0 + Duration::from_secs(62));
        let ids: Vec<&str> = back
            .iter()
            .filter_map(|m| match m {
                Routed::Seen { device } => Some(device.id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(ids, ["58_5b_69_12_f0_79", "58_5b_69_12_f0_79_ch1"]);
    }

    #[test]
    fn slugs_are_topic_safe() {
        assert_eq!(slug("a/b+c#d"), "a_b_c_d");
        assert_eq!(slug("///"), "unknown");
        assert_eq!(slug("::1"), "1");
    }
}
