//! `[ftp]`: the FTP upload source (an embedded FTP server cameras upload snapshots to). Deserialised straight from the file (serde,
//! `deny_unknown_fields`, defaults below); [`FtpConfig::validate`] returns every problem with its key
//! path (`ftp.<key>`).

use std::net::SocketAddr;

use serde::Deserialize;

use crate::config::Problem;

/// `[ftp]`. The source runs when `listen` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FtpConfig {
    /// Listen address; unset: the source is off.
    pub listen: Option<SocketAddr>,
}

impl FtpConfig {
    /// Every problem of the section, with its key path.
    pub fn validate(&self) -> Vec<Problem> {
        Vec::new()
    }
}
