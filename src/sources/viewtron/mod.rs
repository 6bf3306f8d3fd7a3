//! Viewtron / TVT HTTP push source: cameras and NVRs `POST` XML alarm events with base64
//! JPEGs (IPC v1.x and NVR v2.x layouts), heartbeats and alarm-status posts
//! (`shared/viewtron/protocol.md`).
//!
//! * [`config`]: the `[viewtron]` section ([`ViewtronConfig`]) and its checks.
//! * [`parse`] (pure): a post's bytes to normalised events.
//! * [`handler`]: the vendor part of the shared camera receiver (parse, the exact reply).
//! * [`ViewtronSource`]: the [`Source`] the topology starts.

pub mod config;
pub mod handler;
pub mod parse;

use std::net::SocketAddr;

use crate::config::Problem;
use crate::sources::http_push::{self, HttpConfig};
use crate::sources::{DevicePolicy, Source, SourceContext, Starting};

pub use config::ViewtronConfig;
pub use handler::{SUCCESS_REPLY, ViewtronHandler};

/// The Viewtron receiver as a [`Source`], ready to listen.
#[derive(Debug)]
pub struct ViewtronSource {
    /// Listen address.
    pub listen: SocketAddr,
    /// HTTP limits, timeouts, access and TLS.
    pub http: HttpConfig,
    /// Largest part of a body copied into `bridge/unparsed`, bytes.
    pub unparsed_body_cap: usize,
    /// `offline_after` and `traject_interval` of `[viewtron]`.
    pub devices: DevicePolicy,
}

impl ViewtronSource {
    /// The source of a `[viewtron]` section: builds the receiver's configuration now
    /// ([`ViewtronConfig::http_config`] reads the TLS and password files), so that a bad file
    /// is an error before anything starts.
    pub fn new(cfg: &ViewtronConfig) -> Result<ViewtronSource, Problem> {
        Ok(ViewtronSource {
            listen: cfg.listen,
            http: cfg.http_config()?,
            unparsed_body_cap: cfg.unparsed_body_cap,
            devices: DevicePolicy {
                offline_after: cfg.offline_after,
                tracking_interval: cfg.traject_interval,
            },
        })
    }
}

impl Source for ViewtronSource {
    fn name(&self) -> &'static str {
        handler::SOURCE
    }

    fn start(self: Box<Self>, ctx: SourceContext) -> Starting {
        let vendor = ViewtronHandler {
            unparsed_body_cap: self.unparsed_body_cap,
        };
        Box::pin(http_push::listen(self.listen, self.http, vendor, ctx))
    }

    fn device_policy(&self) -> DevicePolicy {
        self.devices
    }
}
