//! Snapshot polling: the bridge fetches each `[[poll]]` camera's snapshot URL.

pub mod config;

use crate::config::Problem;
use crate::sources::{Source, SourceContext, SourceHandle, Starting};

pub use config::PollConfig;

/// The source's name in events, `bridge/unparsed` and logs.
pub const SOURCE: &str = "poll";

/// The poller as a [`Source`].
#[derive(Debug)]
pub struct PollSource {
    cameras: Vec<PollConfig>,
}

impl PollSource {
    /// The source of the `[[poll]]` entries.
    pub fn new(cfg: &[PollConfig]) -> Result<PollSource, Problem> {
        Ok(PollSource {
            cameras: cfg.to_vec(),
        })
    }
}

impl Source for PollSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn start(self: Box<Self>, ctx: SourceContext) -> Starting {
        Box::pin(async move {
            let cameras = self.cameras;
            let task = tokio::spawn(async move {
                let _ = cameras;
                ctx.shutdown.cancelled().await;
            });
            Ok(SourceHandle {
                name: SOURCE,
                addr: None,
                task,
            })
        })
    }
}
