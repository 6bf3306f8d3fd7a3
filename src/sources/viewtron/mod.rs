//! Viewtron / TVT HTTP push source: cameras and NVRs `POST` XML alarm events with base64
//! JPEGs (IPC v1.x and NVR v2.x layouts), heartbeats and alarm-status posts
//! (`shared/viewtron/protocol.md`).
//!
//! * [`parse`] (pure): a post's bytes to normalised events.
//! * [`handler`]: the vendor part of the shared camera receiver (parse, the exact reply).
//! * [`ViewtronSource`]: the [`Source`] the topology starts.

pub mod handler;
pub mod parse;

use std::net::SocketAddr;

use crate::sources::http_push::{self, HttpConfig};
use crate::sources::{Source, SourceContext, Starting};

pub use handler::{SUCCESS_REPLY, ViewtronHandler};

/// Settings of the Viewtron source.
#[derive(Debug, Clone)]
pub struct ViewtronConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// HTTP limits, timeouts, access and TLS.
    pub http: HttpConfig,
    /// Largest part of a body copied into `bridge/unparsed`, bytes.
    pub unparsed_body_cap: usize,
}

/// The Viewtron receiver as a [`Source`].
#[derive(Debug)]
pub struct ViewtronSource(pub ViewtronConfig);

impl Source for ViewtronSource {
    fn name(&self) -> &'static str {
        handler::SOURCE
    }

    fn start(self: Box<Self>, ctx: SourceContext) -> Starting {
        let cfg = self.0;
        let vendor = ViewtronHandler {
            unparsed_body_cap: cfg.unparsed_body_cap,
        };
        Box::pin(http_push::listen(cfg.listen, cfg.http, vendor, ctx))
    }
}
