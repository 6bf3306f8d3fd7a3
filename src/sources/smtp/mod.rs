//! SMTP mail source: an embedded SMTP server (RFC 5321) cameras e-mail their alarm snapshots
//! to. Each mail becomes one event with its first JPEG as the overview.
//!
//! * [`config`]: the `[smtp]` section ([`SmtpConfig`]) and its checks.
//! * [`session`] (no I/O): one connection's dialogue, mailin's state machine plus the glue
//!   cameras need (AUTH without TLS and after `HELO`, optional login, `SIZE`, lenient
//!   addresses).
//! * [`mail`] (pure): a mail's bytes → subject, sender, body text and JPEGs (mail-parser).
//! * [`rules`] (pure): the mail's words → category, object class and channel (vendor presets
//!   and the user's rules).
//! * [`normalise`] (pure): a mail and its envelope → one [`crate::event::Message`].
//! * [`server`]: the tokio accept loop, limits, timeouts, STARTTLS, durability before `250`.
//!
//! User documentation: `docs/sources/smtp.md`.

pub mod config;
pub mod mail;
pub mod normalise;
pub mod rules;
pub mod server;
pub mod session;

use crate::config::Problem;
use crate::sources::{DevicePolicy, Source, SourceContext, Starting};

pub use config::SmtpConfig;
pub use normalise::SOURCE;

/// The SMTP mail source as a [`Source`], with its files read.
#[derive(Debug)]
pub struct SmtpSource {
    settings: config::Settings,
}

impl SmtpSource {
    /// The source of a `[smtp]` section whose `listen` is set. Reads the password and TLS
    /// files now, so that a bad file stops the start before anything listens. Errors: `listen`
    /// unset, an invalid section, an unreadable password file, a bad certificate or key.
    pub fn new(cfg: &SmtpConfig) -> Result<SmtpSource, Problem> {
        let settings = cfg
            .settings()?
            .ok_or_else(|| Problem::new("smtp.listen", "not set".to_string()))?;
        Ok(SmtpSource { settings })
    }
}

impl Source for SmtpSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn device_policy(&self) -> DevicePolicy {
        DevicePolicy::PUSH_ONLY
    }

    fn start(self: Box<Self>, ctx: SourceContext) -> Starting {
        Box::pin(server::listen(self.settings, ctx))
    }
}
