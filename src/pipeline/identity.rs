//! Device identity: from what an input says about its sender ([`DeviceInfo`]) to a stable
//! [`Device`] (id, Home Assistant key, name, NVR parent), with `[[devices]]` overrides and
//! facts learned from earlier posts of the same peer.
//!
//! Rules (DESIGN §3): the topic id is the MAC when known, else the peer address; the Home
//! Assistant key prefers the serial over the peer (it survives a DHCP change); an NVR channel
//! is a device of its own whose parent is the NVR. Pure: no I/O, no clock.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::config::DeviceSection;
use crate::event::{Device, DeviceInfo, DeviceKind, HandleKind, normalise_mac};

/// Slug for topic ids: lower-case ASCII letters and digits, everything else `_`, no
/// leading/trailing/double `_`, never empty, at most 64 characters.
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

/// What earlier posts of one peer said about the camera behind it.
#[derive(Debug, Default)]
struct Learned {
    name: Option<String>,
    mac: Option<String>,
    serial: Option<String>,
    ip: Option<String>,
}

/// Resolves identities: configured devices plus identity learned per peer.
#[derive(Debug, Default)]
pub struct Identities {
    configured: Vec<DeviceSection>,
    /// Identity learned per peer from heartbeats and alarm-status posts, for posts that
    /// carry none (older IPC firmware).
    by_peer: HashMap<IpAddr, Learned>,
}

impl Identities {
    /// Resolve with the `[[devices]]` entries `configured`.
    pub fn new(configured: Vec<DeviceSection>) -> Identities {
        Identities {
            configured,
            by_peer: HashMap::new(),
        }
    }

    /// Remember what a camera's post says about it, for later posts of the same peer.
    pub fn learn(&mut self, info: &DeviceInfo) {
        // Only devices known by their address: a source that names its devices by handles
        // (FTP/SMTP logins, poll ids) may see several of them, and other cameras, behind one
        // address (a DVR, Docker's NAT).
        if info.kind != DeviceKind::Camera || !info.handles.is_empty() {
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

    /// Fill what a camera's post left out from what its peer said before.
    pub fn fill_from_peer(&self, info: &mut DeviceInfo) {
        if info.kind != DeviceKind::Camera || !info.handles.is_empty() {
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
        // A source's own names first, in its order of preference; addresses ignore ASCII case.
        for h in &info.handles {
            let hit = self.configured.iter().find(|d| {
                d.handle(h.kind).is_some_and(|v| match h.kind {
                    HandleKind::SmtpFrom | HandleKind::SmtpTo => v.eq_ignore_ascii_case(&h.value),
                    _ => v == h.value,
                })
            });
            if hit.is_some() {
                return hit;
            }
        }
        let mac = info.mac.as_deref();
        self.configured.iter().find(|d| {
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

    /// The configured `expect_every` of the `[[devices]]` entry matching `info`, if any.
    pub fn expect_every(&self, info: &DeviceInfo) -> Option<std::time::Duration> {
        self.section(info).and_then(|c| c.expect_every)
    }

    /// The `[[devices]]` entry matching `info`, if any.
    pub fn section(&self, info: &DeviceInfo) -> Option<&DeviceSection> {
        let channel = (info.kind == DeviceKind::Nvr)
            .then_some(info.channel)
            .flatten();
        self.configured(info, channel)
    }

    /// Turn identity facts into a stable device.
    pub fn resolve(&self, info: &DeviceInfo) -> Device {
        let channel = if info.kind == DeviceKind::Nvr {
            info.channel
        } else {
            None
        };
        let peer_slug = info.peer.map(|p| slug(&p.to_string()));
        let handle = info.handles.first();
        let (base_id, base_key) = match (&info.mac, &info.serial, peer_slug, handle) {
            (Some(mac), ..) => (slug(mac), mac.replace(':', "")),
            (None, None, _, Some(h)) => {
                let s = slug(&h.value);
                (s.clone(), format!("{}_{s}", h.kind.as_str()))
            }
            (None, Some(sn), peer, _) => (peer.unwrap_or_else(|| slug(sn)), slug(sn)),
            (None, None, Some(peer), None) => (peer.clone(), peer),
            (None, None, None, None) => ("unknown".into(), "unknown".into()),
        };
        let parent = channel.map(|_| {
            let mut nvr_info = info.clone();
            nvr_info.channel = None;
            Box::new(self.resolve(&nvr_info))
        });
        let conf = self.configured(info, channel);
        let (id, hw_key) = match channel {
            Some(ch) => (format!("{base_id}_ch{ch}"), format!("{base_key}_ch{ch}")),
            None => (base_id, base_key),
        };
        let name = conf
            .and_then(|c| c.name.clone())
            .unwrap_or_else(|| derived_name(info, channel));
        Device {
            id: conf.and_then(|c| c.id.clone()).unwrap_or(id),
            name: name.chars().filter(|c| !c.is_control()).take(100).collect(),
            info: info.clone(),
            hw_key,
            parent,
            area: conf.and_then(|c| c.area.clone()),
        }
    }
}

/// The name a device reports, else its manufacturer and address (`Viewtron 192.168.1.50`),
/// with ` channel N` for an NVR channel.
fn derived_name(info: &DeviceInfo, channel: Option<u32>) -> String {
    let reported = info
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let maker = info
        .manufacturer
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty());
    let handle = info.handles.first().map(|h| h.value.trim());
    let base = match (reported, &info.ip, info.peer, maker) {
        (Some(name), ..) => name.to_owned(),
        (None, ..) if let Some(h) = handle.filter(|h| !h.is_empty()) => h.to_owned(),
        (None, Some(ip), _, m) => format!("{} {ip}", m.unwrap_or("Camera")),
        (None, None, Some(peer), m) => format!("{} {peer}", m.unwrap_or("Camera")),
        (None, None, None, Some(m)) => format!("{m} camera"),
        (None, None, None, None) => "Camera".into(),
    };
    match channel {
        Some(ch) => format!("{base} channel {ch}"),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn ids() -> Identities {
        Identities::new(vec![DeviceSection {
            mac: Some("58-5B-69-00-00-09".into()),
            id: Some("gate".into()),
            name: Some("Gate".into()),
            ..Default::default()
        }])
    }

    #[test]
    fn handles_name_devices_and_match_configured_entries_in_order() {
        use crate::event::{Handle, HandleKind};
        let r = Identities::new(vec![
            DeviceSection {
                smtp_from: Some("Porch@Example.com".into()),
                id: Some("porch".into()),
                name: Some("Porch".into()),
                expect_every: Some(std::time::Duration::from_secs(600)),
                ..Default::default()
            },
            DeviceSection {
                ftp_user: Some("yard".into()),
                id: Some("yard_cam".into()),
                ..Default::default()
            },
        ]);
        let mail = |handles: Vec<Handle>| DeviceInfo {
            peer: peer("10.0.0.9"),
            handles,
            ..Default::default()
        };
        // No configured match: the first handle names the device (not the peer).
        let d = r.resolve(&mail(vec![
            Handle::new(HandleKind::SmtpUser, "cam-7"),
            Handle::new(HandleKind::SmtpFrom, "x@y"),
        ]));
        assert_eq!(
            (d.id.as_str(), d.hw_key.as_str(), d.name.as_str()),
            ("cam_7", "smtp_user_cam_7", "cam-7")
        );
        // A later handle that matches wins over an earlier one that does not; case-insensitive address.
        let info = mail(vec![
            Handle::new(HandleKind::SmtpUser, "cam-7"),
            Handle::new(HandleKind::SmtpFrom, "porch@example.COM"),
        ]);
        let d = r.resolve(&info);
        assert_eq!((d.id.as_str(), d.name.as_str()), ("porch", "Porch"));
        assert_eq!(
            r.expect_every(&info),
            Some(std::time::Duration::from_secs(600))
        );
        // The FTP login matches exactly (case matters for a login).
        let d = r.resolve(&mail(vec![Handle::new(HandleKind::FtpUser, "yard")]));
        assert_eq!(d.id, "yard_cam");
        let d = r.resolve(&mail(vec![Handle::new(HandleKind::FtpUser, "Yard")]));
        assert_eq!(d.id, "yard");
        assert_eq!(
            r.expect_every(&mail(vec![Handle::new(HandleKind::FtpUser, "Yard")])),
            None
        );
    }

    #[test]
    fn ids_from_mac_channel_peer_and_config() {
        let r = ids();
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
        let named = r.resolve(&DeviceInfo {
            mac: Some("58:5b:69:00:00:09".into()),
            ..Default::default()
        });
        assert_eq!((named.id.as_str(), named.name.as_str()), ("gate", "Gate"));
    }

    #[test]
    fn unnamed_devices_are_named_after_their_manufacturer_and_address() {
        let r = ids();
        let name = |info: DeviceInfo| r.resolve(&info).name;
        let viewtron = || DeviceInfo {
            manufacturer: Some("Viewtron".into()),
            ..Default::default()
        };
        assert_eq!(
            name(DeviceInfo {
                peer: peer("192.168.1.50"),
                ..viewtron()
            }),
            "Viewtron 192.168.1.50"
        );
        assert_eq!(
            name(DeviceInfo {
                ip: Some("10.1.2.3".into()),
                peer: peer("192.168.1.50"),
                ..viewtron()
            }),
            "Viewtron 10.1.2.3"
        );
        assert_eq!(name(viewtron()), "Viewtron camera");
        assert_eq!(
            name(DeviceInfo {
                peer: peer("192.168.1.51"),
                ..Default::default()
            }),
            "Camera 192.168.1.51"
        );
        assert_eq!(name(DeviceInfo::default()), "Camera");
        assert_eq!(
            name(DeviceInfo {
                name: Some("  Porch\u{7}  ".into()),
                ..viewtron()
            }),
            "Porch"
        );
    }

    #[test]
    fn slugs_are_topic_safe() {
        assert_eq!(slug("a/b+c#d"), "a_b_c_d");
        assert_eq!(slug("///"), "unknown");
        assert_eq!(slug("::1"), "1");
    }
}
