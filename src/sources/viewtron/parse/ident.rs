//! Device identity (`protocol.md` §5.1).

use crate::event::{DeviceInfo, DeviceKind, normalise_mac};

use super::PostMeta;
use super::xml::Node;

/// Manufacturer string for everything this source sees.
pub(crate) const MANUFACTURER: &str = "Viewtron";

/// Read identity fields from `node/deviceInfo/*` first, then from `node/*` itself.
///
/// Covers every layout: IPC smart data (`config/{deviceName, mac, sn, channelId}`), IPC alarm
/// status (`deviceInfo/{deviceName, deviceNo., sn, ipAddress, macAddress}`), the legacy
/// `DeviceInfo` root (`DeviceName`, `DeviceNo.`, `SN`, …; names match case-insensitively) and
/// NVR posts (`deviceInfo/{deviceName, ip, mac, channelId}`).
pub(crate) fn read(node: &Node<'_>, meta: &PostMeta, kind: DeviceKind) -> DeviceInfo {
    let info = node.child("deviceInfo");
    let pick = |names: &[&str]| -> Option<String> {
        info.and_then(|i| i.child_text_any(names))
            .or_else(|| node.child_text_any(names))
            .map(str::to_owned)
    };
    DeviceInfo {
        name: pick(&["deviceName"]),
        mac: pick(&["mac", "macAddress"])
            .as_deref()
            .and_then(normalise_mac),
        serial: pick(&["sn", "serialNumber"]),
        ip: pick(&["ip", "ipAddress"]),
        channel: pick(&["channelId"]).and_then(|c| c.parse().ok()),
        device_no: pick(&["deviceNo.", "deviceNo"]),
        peer: meta.peer,
        kind,
        manufacturer: Some(MANUFACTURER.to_owned()),
        model: None,
        sw_version: None,
        handles: Vec::new(),
    }
}

/// Identity of a body that carries none (empty heartbeat).
pub(crate) fn peer_only(meta: &PostMeta) -> DeviceInfo {
    DeviceInfo {
        peer: meta.peer,
        manufacturer: Some(MANUFACTURER.to_owned()),
        ..DeviceInfo::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_forms() {
        assert_eq!(
            normalise_mac("58:5B:69:40:F4:0D").as_deref(),
            Some("58:5b:69:40:f4:0d")
        );
        assert_eq!(
            normalise_mac("58:5b:69:5f:42:1b").as_deref(),
            Some("58:5b:69:5f:42:1b")
        );
        assert_eq!(
            normalise_mac("78-24-AF-44-89-01").as_deref(),
            Some("78:24:af:44:89:01")
        );
        assert_eq!(
            normalise_mac("7824.af44.8901").as_deref(),
            Some("78:24:af:44:89:01")
        );
        assert_eq!(
            normalise_mac(" 7824AF448901 ").as_deref(),
            Some("78:24:af:44:89:01")
        );
        assert_eq!(normalise_mac("00:00:00:00:00:00"), None);
        assert_eq!(normalise_mac("000000000000"), None);
        assert_eq!(normalise_mac("..."), None);
        assert_eq!(normalise_mac("58:5b:69:5f:42"), None);
        assert_eq!(normalise_mac("58:5b:69:5f:42:1b:00"), None);
        assert_eq!(normalise_mac("zz:5b:69:5f:42:1b"), None);
        assert_eq!(normalise_mac(""), None);
    }
}
