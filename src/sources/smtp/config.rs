//! `[smtp]`: the SMTP mail source (an embedded SMTP server cameras e-mail snapshots to). Deserialised straight from the file (serde,
//! `deny_unknown_fields`, defaults below); [`SmtpConfig::validate`] returns every problem with its key
//! path (`smtp.<key>`).

use std::net::SocketAddr;

use serde::Deserialize;

use crate::config::Problem;

/// `[smtp]`. The source runs when `listen` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Listen address; unset: the source is off.
    pub listen: Option<SocketAddr>,
}

impl SmtpConfig {
    /// Every problem of the section, with its key path.
    pub fn validate(&self) -> Vec<Problem> {
        Vec::new()
    }
}
