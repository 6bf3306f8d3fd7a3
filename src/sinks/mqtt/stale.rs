//! Stale retained discovery (pure): which retained discovery configs this bridge owns and no
//! longer publishes, so they must be cleared (Zigbee2MQTT pattern).
//!
//! On every connect the shell subscribes to `<prefix>/device/+/config` and
//! `<prefix>/+/+/+/config` for [`SCAN_WINDOW`], collects the RETAINED configs whose object id
//! starts with `camqtt_`, unsubscribes and asks [`stale_topics`] what to clear (an empty
//! retained payload). Both layouts are scanned in either discovery mode, so switching
//! `device` ↔ `legacy` also removes the other layout's leftovers.
//!
//! Ownership follows the `via_device` chain of the config's `device` block: the bridge device
//! itself (`camqtt_bridge_<client id>`) is ours; a device whose `via_device` is ours is ours
//! (cameras and NVRs hang off the bridge, NVR channels off their NVR); devices in our registry
//! are ours. Anything else (another instance's bridge, a chain that cannot be resolved, a
//! payload that is not JSON) is never touched. An owned config is stale when its topic is not
//! among the topics this bridge currently publishes.
//!
//! Without an authoritative registry (no state directory, or no valid registry file yet:
//! first start, corrupt file) an owned config of a device that is not known may belong to a
//! device that simply has not posted yet; clearing it would delete the device and its
//! entities (with the user's customisations) from Home Assistant. Then only configs of
//! known devices and of the bridge are cleared (layout switch, entities that no longer exist).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

/// How long retained discovery is collected after each connect.
pub const SCAN_WINDOW: Duration = Duration::from_secs(2);

/// Object ids this project writes start with this.
pub const OBJECT_ID_PREFIX: &str = "camqtt_";

/// The subscription filters of the scan.
pub fn scan_filters(prefix: &str) -> [String; 2] {
    [
        format!("{prefix}/device/+/config"),
        format!("{prefix}/+/+/+/config"),
    ]
}

/// The object id of a discovery config topic under `prefix`, when it is one of ours by name:
/// `<prefix>/device/<id>/config` or `<prefix>/<platform>/<id>/<key>/config`, `<id>` starting
/// with `camqtt_`.
pub fn config_object_id<'a>(prefix: &str, topic: &'a str) -> Option<&'a str> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let rest = rest.strip_suffix("/config")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let id = match parts.as_slice() {
        ["device", id] => *id,
        [platform, id, key] if !platform.is_empty() && !key.is_empty() => *id,
        _ => return None,
    };
    id.starts_with(OBJECT_ID_PREFIX).then_some(id)
}

/// `(identifier, via_device)` of a discovery payload's device block (full or abbreviated
/// keys); `None` when the payload is not a JSON object with a device identifier.
pub fn device_link(payload: &[u8]) -> Option<(String, Option<String>)> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let dev = v.get("device").or_else(|| v.get("dev"))?;
    let ids = dev.get("identifiers").or_else(|| dev.get("ids"))?;
    let id = match ids {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.first()?.as_str()?.to_owned(),
        _ => return None,
    };
    let via = dev
        .get("via_device")
        .or_else(|| dev.get("via_dev"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some((id, via))
}

/// Retained config topics (from `found`: topic → payload) to clear: owned by the bridge
/// `bridge_id` (or reaching a device in `known`) and not in `current`; with
/// `authoritative == false` only those of the bridge and of `known` devices. Sorted.
pub fn stale_topics(
    found: &BTreeMap<String, Bytes>,
    bridge_id: &str,
    known: &BTreeSet<String>,
    current: &BTreeSet<String>,
    authoritative: bool,
) -> Vec<String> {
    let links: BTreeMap<&String, (String, Option<String>)> = found
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .filter_map(|(t, p)| Some((t, device_link(p)?)))
        .collect();
    let via: BTreeMap<&str, &str> = links
        .values()
        .filter_map(|(id, v)| Some((id.as_str(), v.as_deref()?)))
        .collect();
    let owned = |id: &str| -> bool {
        let mut id = id;
        // The chain is bridge → NVR → channel; a longer one is a loop or not ours.
        for _ in 0..8 {
            if id == bridge_id || known.contains(id) {
                return true;
            }
            match via.get(id) {
                Some(next) if *next != id => id = next,
                _ => return false,
            }
        }
        false
    };
    links
        .iter()
        .filter(|(t, (id, _))| !current.contains(t.as_str()) && owned(id))
        .filter(|(_, (id, _))| authoritative || id == bridge_id || known.contains(id))
        .map(|(t, _)| (*t).clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BRIDGE: &str = "camqtt_bridge_camqtt_host_5002";

    fn cfg(id: &str, via: Option<&str>) -> Bytes {
        let mut dev = json!({"identifiers": [id], "name": "x"});
        if let Some(v) = via {
            dev["via_device"] = json!(v);
        }
        Bytes::from(json!({"device": dev, "components": {}}).to_string())
    }

    fn dtopic(id: &str) -> String {
        format!("homeassistant/device/{id}/config")
    }

    #[test]
    fn object_ids_of_both_layouts() {
        let p = "homeassistant";
        assert_eq!(
            config_object_id(p, "homeassistant/device/camqtt_abc/config"),
            Some("camqtt_abc")
        );
        assert_eq!(
            config_object_id(p, "homeassistant/sensor/camqtt_abc/lpr_last/config"),
            Some("camqtt_abc")
        );
        for t in [
            "homeassistant/device/zigbee_abc/config",
            "homeassistant/sensor/0x1234/temp/config",
            "homeassistant/device/camqtt_abc/state",
            "homeassistant/device/camqtt_abc/x/y/config",
            "homeassistantx/device/camqtt_abc/config",
            "other/device/camqtt_abc/config",
            "homeassistant/sensor/camqtt_abc//config",
        ] {
            assert_eq!(config_object_id(p, t), None, "{t}");
        }
        assert_eq!(
            config_object_id("a/b", "a/b/device/camqtt_x/config"),
            Some("camqtt_x")
        );
        assert_eq!(
            scan_filters("ha"),
            [
                "ha/device/+/config".to_owned(),
                "ha/+/+/+/config".to_owned()
            ]
        );
    }

    #[test]
    fn device_links_full_and_abbreviated() {
        assert_eq!(
            device_link(&cfg("camqtt_a", Some(BRIDGE))),
            Some(("camqtt_a".into(), Some(BRIDGE.into())))
        );
        let abbr = json!({"dev": {"ids": "camqtt_b", "via_dev": "camqtt_a"}}).to_string();
        assert_eq!(
            device_link(abbr.as_bytes()),
            Some(("camqtt_b".into(), Some("camqtt_a".into())))
        );
        for bad in [
            &b""[..],
            b"{",
            b"{}",
            b"{\"device\":{}}",
            b"{\"device\":{\"identifiers\":[]}}",
            b"[]",
        ] {
            assert_eq!(device_link(bad), None);
        }
    }

    #[test]
    fn ownership_follows_via_device_chain() {
        let mut found = BTreeMap::new();
        // (a) our stale camera; (b) our stale NVR and its channel;
        found.insert(dtopic("camqtt_cam"), cfg("camqtt_cam", Some(BRIDGE)));
        found.insert(dtopic("camqtt_nvr"), cfg("camqtt_nvr", Some(BRIDGE)));
        found.insert(
            dtopic("camqtt_nvr_ch1"),
            cfg("camqtt_nvr_ch1", Some("camqtt_nvr")),
        );
        // (c) another instance's bridge, camera, NVR and channel;
        let other = "camqtt_bridge_elsewhere";
        found.insert(dtopic(other), cfg(other, None));
        found.insert(dtopic("camqtt_ocam"), cfg("camqtt_ocam", Some(other)));
        found.insert(dtopic("camqtt_onvr"), cfg("camqtt_onvr", Some(other)));
        found.insert(
            dtopic("camqtt_onvr_ch1"),
            cfg("camqtt_onvr_ch1", Some("camqtt_onvr")),
        );
        // a channel whose NVR is unknown and not retained: cannot be decided, left alone;
        found.insert(
            dtopic("camqtt_lost_ch1"),
            cfg("camqtt_lost_ch1", Some("camqtt_lost")),
        );
        // a loop; a non-JSON payload; an already cleared topic;
        found.insert(dtopic("camqtt_l1"), cfg("camqtt_l1", Some("camqtt_l2")));
        found.insert(dtopic("camqtt_l2"), cfg("camqtt_l2", Some("camqtt_l1")));
        found.insert(dtopic("camqtt_junk"), Bytes::from_static(b"not json"));
        found.insert(dtopic("camqtt_gone"), Bytes::new());
        // a channel of a known NVR whose own config is not retained;
        found.insert(
            dtopic("camqtt_knvr_ch3"),
            cfg("camqtt_knvr_ch3", Some("camqtt_knvr")),
        );
        // our bridge in the legacy layout (we now publish device discovery), and current ones.
        let legacy_bridge = format!("homeassistant/sensor/{BRIDGE}/version/config");
        found.insert(legacy_bridge.clone(), cfg(BRIDGE, None));
        found.insert(dtopic(BRIDGE), cfg(BRIDGE, None));
        found.insert(dtopic("camqtt_live"), cfg("camqtt_live", Some(BRIDGE)));

        let known: BTreeSet<String> = ["camqtt_live", "camqtt_knvr"].map(String::from).into();
        let current: BTreeSet<String> = [dtopic(BRIDGE), dtopic("camqtt_live")].into();
        let got = stale_topics(&found, BRIDGE, &known, &current, true);
        let mut want = vec![
            dtopic("camqtt_cam"),
            dtopic("camqtt_knvr_ch3"),
            dtopic("camqtt_nvr"),
            dtopic("camqtt_nvr_ch1"),
            legacy_bridge.clone(),
        ];
        want.sort();
        assert_eq!(got, want);

        // Not authoritative: unknown devices are left alone, the bridge's and known devices'
        // leftovers still go.
        let live_legacy = "homeassistant/sensor/camqtt_live/lpr_last/config".to_owned();
        found.insert(live_legacy.clone(), cfg("camqtt_live", Some(BRIDGE)));
        let got = stale_topics(&found, BRIDGE, &known, &current, false);
        assert_eq!(got, [legacy_bridge, live_legacy]);
    }

    #[test]
    fn nothing_stale_when_everything_is_current() {
        let mut found = BTreeMap::new();
        found.insert(dtopic("camqtt_cam"), cfg("camqtt_cam", Some(BRIDGE)));
        let current: BTreeSet<String> = [dtopic("camqtt_cam")].into();
        assert!(stale_topics(&found, BRIDGE, &BTreeSet::new(), &current, true).is_empty());
        // Another bridge id: never ours, even when stale.
        assert!(
            stale_topics(
                &found,
                "camqtt_bridge_x",
                &BTreeSet::new(),
                &BTreeSet::new(),
                true
            )
            .is_empty()
        );
    }
}
