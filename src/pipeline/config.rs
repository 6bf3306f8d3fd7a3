//! The pipeline's sections: `[[devices]]` (ids, names and areas per device) and
//! `[categories.<name>]` (one table per category: `enabled` is read by the pipeline, which
//! drops a disabled category, and `off_delay` by the MQTT sink, which checks it in
//! [`crate::sinks::mqtt::config::check_off_delays`]).
//!
//! `crate::config` composes them into the whole configuration (and re-exports them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Problem;
use crate::config::duration;
use crate::event::{Category, HandleKind, normalise_mac};

/// `[categories.<name>]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CategorySection {
    /// Publish this category at all (the pipeline drops it when `false`). Default `true`.
    pub enabled: bool,
    /// Time after the last detection before the binary sensor turns off (the MQTT sink;
    /// seconds or `"30s"`, 0 to 86400 s). Unset: the sink's default for the category.
    #[serde(deserialize_with = "duration::seconds_opt")]
    pub off_delay: Option<Duration>,
}

impl Default for CategorySection {
    fn default() -> Self {
        CategorySection {
            enabled: true,
            off_delay: None,
        }
    }
}

/// `[[devices]]`: matches a device and gives it an id, a name and an area.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceSection {
    /// Match by MAC (any case, `:` or `-`).
    pub mac: Option<String>,
    /// Match by serial number.
    pub serial: Option<String>,
    /// Match by TCP peer address.
    pub peer: Option<IpAddr>,
    /// Together with a match above: only this NVR channel.
    pub channel: Option<u32>,
    /// Topic id to use instead of the derived one (`[a-z0-9_-]`, 1 to 64 characters, unique).
    pub id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Home Assistant suggested area.
    pub area: Option<String>,
    /// Match by FTP login (RFC 959 `USER`) of the `ftp` source.
    pub ftp_user: Option<String>,
    /// Match by SMTP login (RFC 4954 `AUTH`) of the `smtp` source.
    pub smtp_user: Option<String>,
    /// Match by a mail's envelope sender (RFC 5321 `MAIL FROM`, ASCII case ignored).
    pub smtp_from: Option<String>,
    /// Match by a mail's envelope recipient (RFC 5321 `RCPT TO`, ASCII case ignored).
    pub smtp_to: Option<String>,
    /// Nothing at all from the device for this long marks it offline (seconds or `"30m"`,
    /// 1 s to 7 days). For devices that only push when something happens (FTP, SMTP), which
    /// otherwise stay online: a camera that stops uploading after a profile switch is found.
    /// Unset: the source's own rule.
    #[serde(deserialize_with = "duration::seconds_opt")]
    pub expect_every: Option<Duration>,
    /// Object detection settings for this device, over `[detector]` and its category's
    /// (`detect = { labels = ["person"], zone = [0.0, 0.5, 1.0, 1.0] }`).
    pub detect: Option<crate::detect::DetectOverride>,
}

impl DeviceSection {
    /// The value this entry matches for a handle of `kind`, if it has one.
    pub fn handle(&self, kind: HandleKind) -> Option<&str> {
        match kind {
            HandleKind::FtpUser => self.ftp_user.as_deref(),
            HandleKind::SmtpUser => self.smtp_user.as_deref(),
            HandleKind::SmtpFrom => self.smtp_from.as_deref(),
            HandleKind::SmtpTo => self.smtp_to.as_deref(),
            HandleKind::Poll => None,
        }
    }
}

/// Problems of `[categories.<name>]` names (`categories.<name>`): only the categories of
/// [`Category::NAMED`] exist.
pub fn check_categories(categories: &BTreeMap<String, CategorySection>) -> Vec<Problem> {
    categories
        .keys()
        .filter(|name| Category::from_name(name).is_none())
        .map(|name| {
            let known: Vec<&str> = Category::NAMED.iter().map(|c| c.as_str()).collect();
            Problem::new(
                format!("categories.{name}"),
                format!("unknown category; known: {}", known.join(", ")),
            )
        })
        .collect()
}

/// Problems of the `[[devices]]` entries (`devices[<i>]`, `devices[<i>].<key>`): each needs a
/// match (`mac`, `serial`, `peer`, `ftp_user`, `smtp_user`, `smtp_from` or `smtp_to`), a
/// valid MAC, an `expect_every` of 1 s to 7 days, a well-formed unique `id` and a printable
/// `name`.
pub fn check_devices(devices: &[DeviceSection]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    for (i, d) in devices.iter().enumerate() {
        let mut bad = |key: &str, message: String| {
            let path = if key.is_empty() {
                format!("devices[{i}]")
            } else {
                format!("devices[{i}].{key}")
            };
            problems.push(Problem::new(path, message));
        };
        let handles = [
            HandleKind::FtpUser,
            HandleKind::SmtpUser,
            HandleKind::SmtpFrom,
            HandleKind::SmtpTo,
        ];
        if d.mac.is_none()
            && d.serial.is_none()
            && d.peer.is_none()
            && handles.iter().all(|k| d.handle(*k).is_none())
        {
            bad(
                "",
                "needs at least one of mac, serial, peer, ftp_user, smtp_user, smtp_from, smtp_to"
                    .into(),
            );
        }
        for k in handles {
            if let Some(v) = d.handle(k)
                && (v.trim().is_empty() || v.chars().any(char::is_control))
            {
                bad(
                    k.as_str(),
                    "must be non-empty text without control characters".into(),
                );
            }
        }
        if let Some(every) = d.expect_every
            && !(Duration::from_secs(1)..=Duration::from_secs(7 * 86_400)).contains(&every)
        {
            bad("expect_every", "must be between 1 s and 7 days".into());
        }
        if let Some(mac) = &d.mac
            && normalise_mac(mac).is_none()
        {
            bad("mac", format!("`{mac}` is not a MAC address"));
        }
        if let Some(id) = &d.id {
            if !valid_id(id) {
                bad(
                    "id",
                    "must be 1..=64 characters of a-z, 0-9, _ and -".into(),
                );
            } else if !ids.insert(id.clone()) {
                bad("id", format!("`{id}` is used twice"));
            }
        }
        if let Some(name) = &d.name
            && (name.trim().is_empty() || name.chars().any(char::is_control))
        {
            bad(
                "name",
                "must be non-empty text without control characters".into(),
            );
        }
    }
    problems
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}
