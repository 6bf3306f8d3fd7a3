//! FTP upload source: an embedded FTP server (libunftp) cameras upload their snapshots to;
//! each uploaded JPEG becomes an event with its image (DESIGN §1, issue 10 §2).
//!
//! * [`config`]: the `[ftp]` section ([`FtpConfig`]) and its checks.
//! * [`rules`] (pure): file name / folder → category, with vendor defaults.
//! * [`upload`] (pure): an uploaded file → an event, a heartbeat or an unparsed report.
//! * [`control`] (pure): the control-connection filter in front of libunftp (`ALLO` → `200`,
//!   `EPRT`, no FTP bounce, login outcomes).
//! * [`relay`]: the thin async shell carrying a control connection through the filter.
//! * [`data`]: the data connections, relayed too (passive and active).
//! * [`storage`]: libunftp's storage back-end (uploads into memory, size-capped, answered
//!   `226` once durable) and authenticator.
//! * [`FtpSource`]: the [`Source`] the topology starts.
//!
//! How a connection runs: the camera connects to `listen`; the source opens a connection
//! from [`data::INTERNAL_IP`] to an internal listener on that loopback address (port chosen by
//! the system), which libunftp serves, and relays the control connection between the two
//! through [`control::ControlFilter`]. libunftp accepts data connections only from its
//! client's address, which is now the relay's, so data connections are relayed as well
//! ([`data`]): passive listeners open at the address the camera reached, on the port libunftp
//! chose, and `PASV` advertises that address (or `passive_address`); for active mode libunftp
//! connects to the relay, which connects to the camera. The internal listener serves only
//! connections the source itself opened (each is registered by its source address before it
//! connects); anything else is closed at once and counted in `ftp_refused`. Why not libunftp alone: it answers `ALLO` with
//! `202`, which Dahua-based cameras take as failure (field case 11), and it offers no hook on
//! its replies; the relay is how that is fixed without forking it.

pub mod config;
pub mod control;
pub mod data;
pub mod relay;
pub mod rules;
pub mod storage;
pub mod upload;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libunftp::ServerBuilder;
use libunftp::options::{ActivePassiveMode, PassiveHost};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::Problem;
use crate::sources::{DevicePolicy, Source, SourceContext, SourceError, SourceHandle, Starting};

pub use config::FtpConfig;
use control::ControlFilter;
use storage::{Logins, Shared, UploadStorage, Users};
use upload::Classifier;

/// The source's name in events, `bridge/unparsed` and logs.
pub const SOURCE: &str = "ftp";

/// The greeting (RFC 959 reply 220).
const GREETING: &str = "camqtt FTP ready";

/// How long connections may finish their work after the bridge was told to stop.
const DRAIN: Duration = Duration::from_secs(10);

/// The FTP upload source as a [`Source`].
#[derive(Debug)]
pub struct FtpSource {
    listen: SocketAddr,
    passive_ports: RangeInclusive<u16>,
    passive_address: Option<Ipv4Addr>,
    active: bool,
    max_connections: usize,
    idle_timeout: Duration,
    max_file_size: usize,
    transfer_timeout: Duration,
    logins: Arc<Logins>,
    classifier: Classifier,
}

impl FtpSource {
    /// The source of a `[ftp]` section whose `listen` is set. Reads the password files now, so
    /// that a bad one stops the start. Errors: `ftp.listen` unset, `ftp.passive_ports`, a
    /// password file (`ftp.users[<i>].password_file`).
    pub fn new(cfg: &FtpConfig) -> Result<FtpSource, Problem> {
        let listen = cfg
            .listen
            .ok_or_else(|| Problem::new("ftp.listen", "not set".to_string()))?;
        Ok(FtpSource {
            listen,
            passive_ports: cfg.passive_range()?,
            passive_address: cfg.passive_address,
            active: cfg.active,
            max_connections: cfg.max_connections.max(1),
            idle_timeout: cfg.idle_timeout,
            max_file_size: cfg.max_file_size,
            transfer_timeout: cfg.transfer_timeout,
            logins: Arc::new(Logins::new(cfg.logins()?)),
            classifier: Classifier {
                rules: cfg.rule_list(),
                default_category: cfg.fallback_category(),
                device_from: cfg.device_from,
                unparsed_body_cap: cfg.unparsed_body_cap,
            },
        })
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
            let listen_err = |addr, error| SourceError::Listen {
                source_name: SOURCE,
                addr,
                error,
            };
            let public = TcpListener::bind(self.listen)
                .await
                .map_err(|e| listen_err(self.listen, e))?;
            let addr = public
                .local_addr()
                .map_err(|e| listen_err(self.listen, e))?;
            // libunftp's side, on its own loopback address (see `data`).
            let inner_addr = SocketAddr::new(IpAddr::V4(data::INTERNAL_IP), 0);
            let internal = TcpListener::bind(inner_addr)
                .await
                .map_err(|e| listen_err(inner_addr, e))?;
            let internal_port = internal
                .local_addr()
                .map_err(|e| listen_err(inner_addr, e))?
                .port();
            let task = tokio::spawn(async move {
                tracing::info!(
                    source = SOURCE,
                    listen = %addr,
                    passive_ports = ?self.passive_ports,
                    passive_address = ?self.passive_address,
                    active = self.active,
                    users = if self.logins.is_open() { "any login" } else { "configured" },
                    "FTP server listening"
                );
                self.run(public, internal, internal_port, ctx).await;
            });
            Ok(SourceHandle {
                name: SOURCE,
                addr: Some(addr),
                task,
            })
        })
    }
}

/// Relay connections waiting for libunftp to accept them: their source address → the camera.
type Pending = Arc<Mutex<HashMap<SocketAddr, SocketAddr>>>;

impl FtpSource {
    async fn run(
        self,
        public: TcpListener,
        internal: TcpListener,
        internal_port: u16,
        ctx: SourceContext,
    ) {
        let this = Arc::new(self);
        let shared = Arc::new(Shared {
            classifier: this.classifier.clone(),
            max_file_size: this.max_file_size,
            transfer_timeout: this.transfer_timeout,
            ctx: ctx.clone(),
        });
        let pending: Pending = Arc::default();
        let slots = Arc::new(Semaphore::new(this.max_connections));
        let mut conns = JoinSet::new();
        let telemetry = &ctx.telemetry;
        loop {
            tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                r = public.accept() => {
                    let (mut stream, peer) = match r {
                        Ok(c) => c,
                        Err(error) => {
                            tracing::warn!(source = SOURCE, %error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    telemetry.connections.inc();
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        telemetry.ftp_refused.inc();
                        tracing::warn!(peer = %peer, limit = this.max_connections, "FTP connection refused: ftp.max_connections reached");
                        conns.spawn(async move {
                            let _ = stream.write_all(b"421 Too many connections, try again later\r\n").await;
                        });
                        continue;
                    };
                    let (this, pending, ctx) = (this.clone(), pending.clone(), ctx.clone());
                    conns.spawn(async move {
                        this.connection(stream, peer, internal_port, &pending, &ctx).await;
                        drop(permit);
                    });
                }
                r = internal.accept() => {
                    let Ok((stream, from)) = r else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let camera = pending.lock().ok().and_then(|mut p| p.remove(&from));
                    let Some(camera) = camera else {
                        telemetry.ftp_refused.inc();
                        tracing::warn!(peer = %from, "connection to the FTP source's internal port not opened by the source; closed");
                        continue;
                    };
                    let (this, shared) = (this.clone(), shared.clone());
                    conns.spawn(async move { this.serve(stream, camera, shared).await });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop((public, internal));
        let drained =
            tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                source = SOURCE,
                left = conns.len(),
                "FTP connections still busy at shutdown; closed"
            );
            conns.abort_all();
        }
    }

    /// One camera: open the relay's connection to libunftp and carry the control connection.
    async fn connection(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        internal_port: u16,
        pending: &Pending,
        ctx: &SourceContext,
    ) {
        let opened = async {
            let local = stream.local_addr()?.ip().to_canonical();
            let ip = IpAddr::V4(data::INTERNAL_IP);
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(ip, 0))?;
            let from = socket.local_addr()?;
            if let Ok(mut p) = pending.lock() {
                p.insert(from, peer);
            }
            let server = socket.connect(SocketAddr::new(ip, internal_port)).await;
            Ok::<_, std::io::Error>((from, server, local))
        }
        .await;
        let (from, server, local) = match opened {
            Ok((from, Ok(server), local)) => (from, server, local),
            Ok((from, Err(error), _)) => {
                forget(pending, from);
                tracing::error!(peer = %peer, %error, "FTP: cannot reach the internal server");
                let _ = stream.write_all(b"421 Service not available\r\n").await;
                return;
            }
            Err(error) => {
                tracing::error!(peer = %peer, %error, "FTP: cannot open the internal connection");
                let _ = stream.write_all(b"421 Service not available\r\n").await;
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = server.set_nodelay(true);
        tracing::debug!(peer = %peer, "FTP connection");
        let filter = ControlFilter::new(peer.ip(), self.active);
        let paths = data::Paths {
            camera: peer.ip().to_canonical(),
            local,
            advertise: self.passive_address,
            ports: self.passive_ports.clone(),
            transfer_timeout: self.transfer_timeout,
            telemetry: ctx.telemetry.clone(),
            tasks: JoinSet::new(),
        };
        let ended = relay::relay(
            stream,
            server,
            filter,
            paths,
            peer,
            &ctx.telemetry,
            &ctx.shutdown,
        )
        .await;
        forget(pending, from);
        tracing::debug!(peer = %peer, ended = ?ended, "FTP connection closed");
    }

    /// libunftp on the internal end of one relayed connection.
    async fn serve(&self, stream: TcpStream, camera: SocketAddr, shared: Arc<Shared>) {
        let storage = UploadStorage {
            peer: camera.ip().to_canonical(),
            shared,
        };
        // Its passive listeners open on the internal address; the relay advertises the
        // camera-facing one (`data::Paths::passive`).
        let host = PassiveHost::FromConnection;
        let server = ServerBuilder::with_user_detail_provider(
            Box::new(move || storage.clone()),
            Arc::new(Users),
        )
        .authenticator(self.logins.clone())
        .greeting(GREETING)
        .passive_ports(self.passive_ports.clone())
        .passive_host(host)
        .active_passive_mode(ActivePassiveMode::ActiveAndPassive)
        .idle_session_timeout(self.idle_timeout.as_secs().max(1))
        .build();
        match server {
            Ok(server) => {
                if let Err(error) = server.service(stream).await {
                    tracing::debug!(peer = %camera, error = %error, "FTP session ended with an error");
                }
            }
            Err(error) => tracing::error!(%error, "FTP server could not be built"),
        }
    }
}

fn forget(pending: &Pending, from: SocketAddr) {
    if let Ok(mut p) = pending.lock() {
        p.remove(&from);
    }
}
