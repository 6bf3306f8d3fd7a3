//! Snapshot URL presets (pure): a vendor, a host and a channel become the URL the vendor's
//! cameras and recorders serve a JPEG on.
//!
//! | preset | URL | source |
//! |---|---|---|
//! | `hikvision` | `http://HOST/ISAPI/Streaming/channels/<ch>01/picture` | Hikvision ISAPI "Streaming" service: channel id = camera number × 100 + stream (01 = main stream) |
//! | `dahua`, `amcrest` | `http://HOST/cgi-bin/snapshot.cgi?channel=<n>` | Dahua HTTP API "Snapshot" (`snapshot.cgi`, channel counted from 1); Amcrest cameras run Dahua firmware |
//! | `generic` | `http://HOST/snapshot.jpg` | the de-facto path of many small cameras (no channel) |

use serde::Deserialize;

/// Highest channel number a preset accepts (recorders have at most a few hundred inputs).
pub const MAX_CHANNEL: u32 = 9_999;

/// A vendor's snapshot URL layout (`preset` in `[[poll]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Hikvision ISAPI: `/ISAPI/Streaming/channels/<ch>01/picture`.
    Hikvision,
    /// Dahua HTTP API: `/cgi-bin/snapshot.cgi?channel=<n>`.
    Dahua,
    /// Amcrest (Dahua firmware): the Dahua URL.
    Amcrest,
    /// `/snapshot.jpg`.
    Generic,
}

impl Preset {
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Hikvision => "hikvision",
            Preset::Dahua => "dahua",
            Preset::Amcrest => "amcrest",
            Preset::Generic => "generic",
        }
    }
}

/// Why a preset URL could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresetError {
    /// `host` is empty or not a bare `host`, `host:port`, `IPv4[:port]` or `[IPv6][:port]`
    /// (no scheme, path, query, user information or spaces).
    #[error("`{0}` is not a host name or address with an optional `:port`")]
    BadHost(String),
    /// The channel is outside `1..=MAX_CHANNEL`.
    #[error("channel must be between 1 and {MAX_CHANNEL}")]
    BadChannel,
}

/// The snapshot URL of `preset` on `host` (`camera.lan`, `192.168.1.64:8080`, `[fd00::5]`)
/// for `channel` (counted from 1; ignored by [`Preset::Generic`]). Always `http://`: cameras'
/// HTTPS certificates are self-signed; write `url` for anything else.
///
/// Errors: [`PresetError::BadHost`] for anything but a bare authority without user
/// information, [`PresetError::BadChannel`] for a channel outside `1..=MAX_CHANNEL`.
pub fn url(preset: Preset, host: &str, channel: u32) -> Result<String, PresetError> {
    let authority = check_host(host)?;
    if !(1..=MAX_CHANNEL).contains(&channel) {
        return Err(PresetError::BadChannel);
    }
    Ok(match preset {
        Preset::Hikvision => {
            format!("http://{authority}/ISAPI/Streaming/channels/{channel}01/picture")
        }
        Preset::Dahua | Preset::Amcrest => {
            format!("http://{authority}/cgi-bin/snapshot.cgi?channel={channel}")
        }
        Preset::Generic => format!("http://{authority}/snapshot.jpg"),
    })
}

/// `host` when it is a bare authority (RFC 3986 §3.2 without userinfo): it parses as the
/// authority of an `http` URL and nothing else.
fn check_host(host: &str) -> Result<&str, PresetError> {
    let bad = || PresetError::BadHost(host.chars().take(80).collect());
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "/?#@\\%".contains(c))
    {
        return Err(bad());
    }
    let parsed = url::Url::parse(&format!("http://{host}/")).map_err(|_| bad())?;
    if parsed.host_str().is_none_or(str::is_empty) || parsed.path() != "/" {
        return Err(bad());
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vendor_urls() {
        assert_eq!(
            url(Preset::Hikvision, "192.168.1.64", 1).unwrap(),
            "http://192.168.1.64/ISAPI/Streaming/channels/101/picture"
        );
        assert_eq!(
            url(Preset::Hikvision, "nvr.lan:8080", 12).unwrap(),
            "http://nvr.lan:8080/ISAPI/Streaming/channels/1201/picture"
        );
        assert_eq!(
            url(Preset::Dahua, "10.0.0.7", 3).unwrap(),
            "http://10.0.0.7/cgi-bin/snapshot.cgi?channel=3"
        );
        assert_eq!(
            url(Preset::Amcrest, "[fd00::5]:81", 1).unwrap(),
            "http://[fd00::5]:81/cgi-bin/snapshot.cgi?channel=1"
        );
        assert_eq!(
            url(Preset::Generic, "cam", 7).unwrap(),
            "http://cam/snapshot.jpg"
        );
    }

    #[test]
    fn bad_hosts_and_channels() {
        for host in [
            "",
            " ",
            "cam/x",
            "http://cam",
            "user:pw@cam",
            "cam?x",
            "cam#x",
            "cam:99999",
            "cam:port",
            "[fd00::5",
            "a b",
            "cam%20",
        ] {
            assert!(
                matches!(url(Preset::Generic, host, 1), Err(PresetError::BadHost(_))),
                "{host:?} accepted"
            );
        }
        assert_eq!(url(Preset::Dahua, "cam", 0), Err(PresetError::BadChannel));
        assert_eq!(
            url(Preset::Dahua, "cam", MAX_CHANNEL + 1),
            Err(PresetError::BadChannel)
        );
    }

    proptest! {
        /// Whatever the host and channel: no panic; an accepted one gives a URL that parses,
        /// keeps the host (the `url` crate's normal form) and has the preset's path, with the
        /// channel where the preset puts it.
        #[test]
        fn built_urls_parse_and_keep_host_and_channel(
            host in "\\PC{0,40}|[a-z0-9.-]{1,30}(:[0-9]{1,5})?",
            channel in 0u32..20_000,
            which in 0usize..4,
        ) {
            let preset = [Preset::Hikvision, Preset::Dahua, Preset::Amcrest, Preset::Generic][which];
            if let Ok(u) = url(preset, &host, channel) {
                let parsed = url::Url::parse(&u).expect("built URL parses");
                let again = url::Url::parse(&format!("http://{host}/")).unwrap();
                prop_assert_eq!(parsed.host_str(), again.host_str());
                prop_assert_eq!(parsed.port(), again.port());
                prop_assert!(parsed.username().is_empty() && parsed.password().is_none());
                prop_assert!((1..=MAX_CHANNEL).contains(&channel));
                match preset {
                    Preset::Hikvision => prop_assert_eq!(
                        parsed.path(),
                        format!("/ISAPI/Streaming/channels/{}/picture", channel * 100 + 1)
                    ),
                    Preset::Dahua | Preset::Amcrest => {
                        prop_assert_eq!(parsed.path(), "/cgi-bin/snapshot.cgi");
                        let query = format!("channel={channel}");
                        prop_assert_eq!(parsed.query(), Some(query.as_str()));
                    }
                    Preset::Generic => prop_assert_eq!(parsed.path(), "/snapshot.jpg"),
                }
            }
        }
    }
}
