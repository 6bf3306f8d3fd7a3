//! Inputs. Each source turns what a device sends into [`Message`]s and hands them to the
//! pipeline through its [`SourceContext`]; it knows nothing of MQTT or of other sources.
//!
//! Adding a source: a folder `sources/<name>/` with its configuration, its pure parser and a
//! type implementing [`Source`], plus one line in [`configured`] (and its section in
//! `crate::config::Config`). A source that answers HTTP pushes plugs a
//! [`http_push::PushHandler`] into the shared camera receiver instead of writing a server.

pub mod ftp;
pub mod http_push;
pub mod jpeg;
pub mod poll;
pub mod smtp;
pub mod viewtron;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Problem};
use crate::event::{Command, Message};
use crate::telemetry::Telemetry;

/// One message from a source, optionally with a channel completed once the message (and with
/// it everything the source sent before) is durable: stored in the buffer in front of the
/// sinks (the disk spool, or the memory buffer without one).
#[derive(Debug)]
pub struct Input {
    /// The source that sent it ([`Source::name`]): its [`DevicePolicy`] applies to the device.
    pub source: &'static str,
    /// The message.
    pub msg: Message,
    /// Completed after the message was routed and stored.
    pub durable: Option<oneshot::Sender<()>>,
}

impl Input {
    /// A message from `source` nobody waits for.
    pub fn new(source: &'static str, msg: Message) -> Input {
        Input {
            source,
            msg,
            durable: None,
        }
    }
}

/// How the pipeline treats the devices of one source: a property of the protocol (how often
/// its devices speak up), so the source declares it and the pipeline applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevicePolicy {
    /// A device heard from neither by event nor heartbeat for this long is `offline` (the
    /// Viewtron heartbeat comes every 120 s, so its default is 300 s).
    pub offline_after: Duration,
    /// Shortest gap between two tracking summaries (`traject`) of one device that the
    /// pipeline passes on, unless the number of targets changed.
    pub tracking_interval: Duration,
}

impl DevicePolicy {
    /// For devices that speak only when something happens (FTP uploads, mails): silence is
    /// normal, so they never go offline by it (a century) unless `[[devices]] expect_every`
    /// says otherwise.
    pub const PUSH_ONLY: DevicePolicy = DevicePolicy {
        offline_after: Duration::from_secs(100 * 365 * 86_400),
        tracking_interval: Duration::from_secs(1),
    };
}

impl Default for DevicePolicy {
    fn default() -> DevicePolicy {
        DevicePolicy {
            offline_after: Duration::from_secs(300),
            tracking_interval: Duration::from_secs(1),
        }
    }
}

/// What every source gets from the topology.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// Where the source's messages go (the pipeline). Sending waits while the bridge is
    /// busy: that is how a broker slower than the cameras slows the cameras down.
    pub tx: mpsc::Sender<Input>,
    /// The bridge's metrics.
    pub telemetry: Telemetry,
    /// Cancelled when the bridge shuts down: stop accepting, finish what is in flight.
    pub shutdown: CancellationToken,
    /// Commands from the sinks (the MQTT `snapshot/take` topic): a source that acts on
    /// commands calls `subscribe()` in its `start` and ignores the ones for devices not its
    /// own. A slow receiver loses the oldest (`RecvError::Lagged`), never blocks the sink.
    pub commands: broadcast::Sender<Command>,
}

/// A started source.
#[derive(Debug)]
pub struct SourceHandle {
    /// The source's name (`viewtron`).
    pub name: &'static str,
    /// The address it listens on, for sources that listen.
    pub addr: Option<SocketAddr>,
    /// Its task; it ends after the shutdown token was cancelled and in-flight work is done.
    pub task: tokio::task::JoinHandle<()>,
}

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A listener could not bind its address.
    #[error("{source_name}: cannot listen on {addr}: {error}")]
    Listen {
        /// The source.
        source_name: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        error: std::io::Error,
    },
}

/// The future [`Source::start`] returns.
pub type Starting = Pin<Box<dyn Future<Output = Result<SourceHandle, SourceError>> + Send>>;

/// An input the topology can start. Built from its own configuration section; `start` binds
/// what it listens on (so a taken port is an error at start, not later) and spawns its task.
pub trait Source: Send + 'static {
    /// The source's name, as it appears in logs, `bridge/unparsed` and events (`source`).
    fn name(&self) -> &'static str;
    /// Start with the shared context.
    fn start(self: Box<Self>, ctx: SourceContext) -> Starting;

    /// How the pipeline treats this source's devices (default: [`DevicePolicy::default`]).
    fn device_policy(&self) -> DevicePolicy {
        DevicePolicy::default()
    }
}

/// The built-in sources the configuration enables, each built from its own section. Errors:
/// what stops a source from being built (a TLS or password file), with its key.
pub fn configured(config: &Config) -> Result<Vec<Box<dyn Source>>, Problem> {
    let mut out: Vec<Box<dyn Source>> = Vec::new();
    if config.viewtron.enabled {
        out.push(Box::new(viewtron::ViewtronSource::new(&config.viewtron)?));
    }
    if config.ftp.listen.is_some() {
        out.push(Box::new(ftp::FtpSource::new(&config.ftp)?));
    }
    if config.smtp.listen.is_some() {
        out.push(Box::new(smtp::SmtpSource::new(&config.smtp)?));
    }
    if !config.poll.is_empty() {
        out.push(Box::new(poll::PollSource::new(&config.poll)?));
    }
    Ok(out)
}
