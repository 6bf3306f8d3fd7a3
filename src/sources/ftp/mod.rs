//! FTP upload source: an embedded FTP server cameras upload snapshots to.

pub mod config;

use std::net::SocketAddr;

use crate::config::Problem;
use crate::sources::{DevicePolicy, Source, SourceContext, SourceError, SourceHandle, Starting};

pub use config::FtpConfig;

/// The source's name in events, `bridge/unparsed` and logs.
pub const SOURCE: &str = "ftp";

/// The FTP upload source as a [`Source`].
#[derive(Debug)]
pub struct FtpSource {
    listen: SocketAddr,
}

impl FtpSource {
    /// The source of a `[ftp]` section whose `listen` is set.
    pub fn new(cfg: &FtpConfig) -> Result<FtpSource, Problem> {
        let listen = cfg
            .listen
            .ok_or_else(|| Problem::new("ftp.listen", "not set".to_string()))?;
        Ok(FtpSource { listen })
    }
}

impl Source for FtpSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn device_policy(&self) -> DevicePolicy {
        DevicePolicy::PUSH_ONLY
    }

    fn start(self: Box<Self>, ctx: SourceContext) -> Starting {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(self.listen)
                .await
                .map_err(|error| SourceError::Listen {
                    source_name: SOURCE,
                    addr: self.listen,
                    error,
                })?;
            let addr = listener.local_addr().ok();
            let task = tokio::spawn(async move {
                ctx.shutdown.cancelled().await;
                drop(listener);
            });
            Ok(SourceHandle {
                name: SOURCE,
                addr,
                task,
            })
        })
    }
}
