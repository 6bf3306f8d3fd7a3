//! The live view the web page shows: every device with its availability, its last event and
//! its newest picture per category (kept in memory, shared with the event: no copy), the
//! most recent events (for `/api/events` when there is no archive), and a broadcast of each
//! change for the page's server-sent events.
//!
//! Fed by the local sink ([`crate::sinks::local`]) with what the pipeline stored, in order.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::event::{Device, Event, ImageRole};
use crate::sinks::archive::EventRecord;
use crate::sinks::mqtt::payload::rfc3339;

/// Events kept for `/api/events` when there is no archive.
pub const RECENT_EVENTS: usize = 500;
/// Changes queued for a slow page; one that falls further behind is told to reload.
const UPDATES: usize = 256;

/// One device as the page and `/api/devices` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceSummary {
    /// The device id (topic segment).
    pub id: String,
    /// Friendly name.
    pub name: String,
    /// `camera` or `nvr`.
    pub kind: crate::event::DeviceKind,
    /// The NVR a channel belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Online (heard from within its policy) or not.
    pub available: bool,
    /// When it was last heard from, RFC 3339 UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Its newest event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event: Option<EventRecord>,
    /// Newest picture per category, by category name: a URL relative to the web root that
    /// changes with each picture (`api/devices/<id>/categories/<category>/latest.jpg?v=<ms>`).
    pub latest: BTreeMap<String, String>,
}

/// The newest picture of one device and category.
#[derive(Debug, Clone)]
pub struct LatestImage {
    /// JPEG bytes (shared with the event).
    pub data: Bytes,
    /// MIME type.
    pub content_type: String,
}

/// One change, as the page's event stream sends it (`event: <kind>`, `data: <JSON>`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Update {
    /// A device appeared or changed (availability, name).
    Device {
        /// The device as it is now.
        device: DeviceSummary,
    },
    /// An event arrived (the device with its new latest pictures comes along).
    Event {
        /// The timeline entry.
        record: EventRecord,
        /// The device as it is now.
        device: DeviceSummary,
    },
    /// A device was forgotten.
    Removed {
        /// Its id.
        id: String,
    },
}

impl Update {
    /// The SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            Update::Device { .. } => "device",
            Update::Event { .. } => "event",
            Update::Removed { .. } => "removed",
        }
    }
}

#[derive(Default)]
struct State {
    devices: BTreeMap<String, (DeviceSummary, BTreeMap<String, LatestImage>)>,
    recent: VecDeque<EventRecord>,
}

/// The live view; cheap to clone (shared).
#[derive(Clone)]
pub struct Live(Arc<Inner>);

struct Inner {
    state: Mutex<State>,
    updates: broadcast::Sender<Arc<Update>>,
}

impl Default for Live {
    fn default() -> Self {
        Live::new()
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

fn summary(device: &Device) -> DeviceSummary {
    DeviceSummary {
        id: device.id.clone(),
        name: device.name.clone(),
        kind: device.info.kind,
        parent: device.parent.as_ref().map(|p| p.id.clone()),
        available: true,
        last_seen: None,
        last_event: None,
        latest: BTreeMap::new(),
    }
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

impl Live {
    /// An empty view.
    pub fn new() -> Live {
        Live(Arc::new(Inner {
            state: Mutex::default(),
            updates: broadcast::channel(UPDATES).0,
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Update>> {
        self.0.updates.subscribe()
    }

    fn publish(&self, u: Update) {
        // No page open: nobody to tell.
        let _ = self.0.updates.send(Arc::new(u));
    }

    /// Change `device`'s entry (made when new) under the lock; its summary afterwards.
    fn change(
        &self,
        device: &Device,
        f: impl FnOnce(&mut DeviceSummary, &mut BTreeMap<String, LatestImage>),
    ) -> DeviceSummary {
        let mut st = self.state();
        let (s, images) = st
            .devices
            .entry(device.id.clone())
            .or_insert_with(|| (summary(device), BTreeMap::new()));
        f(s, images);
        s.clone()
    }

    /// A device was heard from or changed, at `now`.
    pub fn seen(&self, device: &Device, now: SystemTime) {
        let d = self.change(device, |s, _| {
            s.name.clone_from(&device.name);
            s.available = true;
            s.last_seen = Some(rfc3339(now));
        });
        self.publish(Update::Device { device: d });
    }

    /// A device went offline.
    pub fn offline(&self, device: &Device) {
        let d = self.change(device, |s, _| s.available = false);
        self.publish(Update::Device { device: d });
    }

    /// A device was forgotten.
    pub fn forget(&self, device: &Device) {
        self.state().devices.remove(&device.id);
        self.publish(Update::Removed {
            id: device.id.clone(),
        });
    }

    /// An event of `device` arrived at `now`, recorded as `record`: its overview (or first
    /// picture) becomes the device's newest for its category.
    pub fn event(&self, device: &Device, event: &Event, record: EventRecord, now: SystemTime) {
        let category = event.category.as_str().to_owned();
        let picture = event
            .image(ImageRole::Overview)
            .or_else(|| event.images.first());
        let d = self.change(device, |s, images| {
            s.name.clone_from(&device.name);
            s.available = true;
            s.last_seen = Some(rfc3339(now));
            s.last_event = Some(record.clone());
            if let Some(p) = picture {
                images.insert(
                    category.clone(),
                    LatestImage {
                        data: p.data.clone(),
                        content_type: p.content_type.to_string(),
                    },
                );
                s.latest.insert(
                    category.clone(),
                    format!(
                        "api/devices/{}/categories/{}/latest.jpg?v={}",
                        url_segment(&device.id),
                        url_segment(&category),
                        millis(now)
                    ),
                );
            }
        });
        {
            let mut st = self.state();
            if st.recent.len() == RECENT_EVENTS {
                st.recent.pop_back();
            }
            st.recent.push_front(record.clone());
        }
        self.publish(Update::Event { record, device: d });
    }

    /// Every device, by id.
    pub fn devices(&self) -> Vec<DeviceSummary> {
        self.state()
            .devices
            .values()
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// The newest picture of `device`: of `category`, or of its newest event with one.
    pub fn latest(&self, device: &str, category: Option<&str>) -> Option<LatestImage> {
        let st = self.state();
        let (s, images) = st.devices.get(device)?;
        match category {
            Some(c) => images.get(c).cloned(),
            None => s
                .last_event
                .as_ref()
                .and_then(|e| images.get(&e.category))
                .or_else(|| images.values().next())
                .cloned(),
        }
    }

    /// The most recent events (newest first) that `keep` accepts, at most `limit`.
    pub fn recent(&self, limit: usize, keep: impl Fn(&EventRecord) -> bool) -> Vec<EventRecord> {
        self.state()
            .recent
            .iter()
            .filter(|r| keep(r))
            .take(limit)
            .cloned()
            .collect()
    }
}

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` percent-encoded for one URL path segment (RFC 3986 §3.3).
pub fn url_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Category, DeviceInfo, Image, Phase};

    fn device(id: &str) -> Device {
        Device::for_test(id)
    }

    fn record(device: &str, category: &str) -> EventRecord {
        serde_json::from_value(serde_json::json!({
            "time": "2026-11-30T04:18:23.123Z", "received": "2026-11-30T04:18:23.200Z",
            "device": device, "name": "x", "category": category, "event": "VEHICE",
            "kind": "detection", "phase": "pulse", "priority": "normal",
            "description": "Plate AB123CD", "via": "push", "images": []
        }))
        .expect("record shape")
    }

    fn event(category: Category, jpeg: &'static [u8]) -> Event {
        let mut e = Event::new(
            "test",
            DeviceInfo::default(),
            category,
            Phase::Pulse,
            SystemTime::UNIX_EPOCH,
        );
        e.images.push(Image {
            role: ImageRole::Overview,
            data: Bytes::from_static(jpeg),
            content_type: "image/jpeg".into(),
            width: None,
            height: None,
            target_id: None,
        });
        e
    }

    #[tokio::test]
    async fn devices_pictures_and_changes() {
        let live = Live::new();
        let mut rx = live.subscribe();
        let gate = device("gate");
        live.seen(&gate, SystemTime::UNIX_EPOCH);
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        live.event(
            &gate,
            &event(Category::Lpr, b"lpr-jpeg"),
            record("gate", "lpr"),
            now,
        );
        live.event(
            &gate,
            &event(Category::Face, b"face-jpeg"),
            record("gate", "face"),
            now,
        );
        let Update::Device { device: d } = &*rx.recv().await.unwrap() else {
            panic!("device first")
        };
        assert!(d.available && d.latest.is_empty());
        let Update::Event {
            record: r,
            device: d,
        } = &*rx.recv().await.unwrap()
        else {
            panic!("then the event")
        };
        assert_eq!(
            (r.category.as_str(), d.latest["lpr"].as_str()),
            ("lpr", "api/devices/gate/categories/lpr/latest.jpg?v=1500")
        );
        assert_eq!(
            live.latest("gate", Some("lpr")).unwrap().data,
            &b"lpr-jpeg"[..]
        );
        // Without a category: the picture of the newest event.
        assert_eq!(live.latest("gate", None).unwrap().data, &b"face-jpeg"[..]);
        assert!(live.latest("gate", Some("intrusion")).is_none());
        assert_eq!(
            live.recent(10, |_| true)
                .iter()
                .map(|r| r.category.as_str())
                .collect::<Vec<_>>(),
            ["face", "lpr"]
        );
        assert_eq!(live.recent(10, |r| r.category == "lpr").len(), 1);
        live.offline(&gate);
        assert!(!live.devices()[0].available);
        live.forget(&gate);
        assert!(live.devices().is_empty() && live.latest("gate", None).is_none());
        // Device ids and categories are percent-encoded in the URLs.
        assert_eq!(url_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn recent_events_are_bounded() {
        let live = Live::new();
        let gate = device("gate");
        for _ in 0..RECENT_EVENTS + 5 {
            live.event(
                &gate,
                &event(Category::Lpr, b"x"),
                record("gate", "lpr"),
                SystemTime::UNIX_EPOCH,
            );
        }
        assert_eq!(live.recent(usize::MAX, |_| true).len(), RECENT_EVENTS);
    }
}
