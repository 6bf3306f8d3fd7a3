//! Data connections, relayed like the control connection (async shell).
//!
//! libunftp serves each camera on a connection the relay opens from [`INTERNAL_IP`], so it
//! sees that address as the client's. It accepts a data connection only from the control
//! connection's address (`datachan.rs`: a data connection from any other address is closed),
//! so a camera on another host could never send its file straight to libunftp. Each data
//! connection therefore goes through the source as well:
//!
//! * **Passive** (`PASV`/`EPSV`): libunftp opens its listener on [`INTERNAL_IP`] with a port
//!   `P` and answers `227`/`229`. [`Paths::passive`] opens the camera-facing listener at the
//!   address the camera reached on a free port `Q` of the configured passive range (the one
//!   published in Docker), rewrites the reply to advertise it (`passive_address`, else that
//!   address, and `Q`), accepts one connection from the camera's own address and splices it
//!   to libunftp's `P` from [`INTERNAL_IP`].
//! * **Active** (`PORT`, and `EPRT` which the filter turns into `PORT`): [`Paths::active`]
//!   opens a listener on [`INTERNAL_IP`], gives libunftp its address instead, and when
//!   libunftp connects, connects to the camera's own address and port and splices.
//!
//! Each path carries one connection and lives at most [`DATA_WAIT`] unused (libunftp's own
//! passive listener gives up after 15 s), then as long as its transfer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;

use crate::telemetry::Telemetry;

/// The loopback address libunftp is served on and that every relayed connection to it comes
/// from. Not `127.0.0.1`: a camera-facing passive listener on `127.0.0.1:P` (a camera on the
/// same host) must not collide with libunftp's own listener on the same port `P`. Linux
/// routes all of `127.0.0.0/8` to the loopback interface.
pub const INTERNAL_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 231);

/// Longest wait for the data connection of a `PASV` or `PORT` (libunftp's passive listener
/// waits 15 s).
pub const DATA_WAIT: Duration = Duration::from_secs(20);

/// The data paths of one control connection.
#[derive(Debug)]
pub struct Paths {
    /// The camera's address (data connections come from it, active ones go to it).
    pub camera: IpAddr,
    /// The local address the camera reached (passive listeners open on it).
    pub local: IpAddr,
    /// Address advertised in `227` replies (`passive_address`), else `local`.
    pub advertise: Option<Ipv4Addr>,
    /// The camera-facing passive ports (`passive_ports`).
    pub ports: RangeInclusive<u16>,
    /// Longest time one transfer may take.
    pub transfer_timeout: Duration,
    /// The bridge's counters.
    pub telemetry: Telemetry,
    /// The running paths; ended with the control connection.
    pub tasks: JoinSet<()>,
}

/// The port of a `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)` or a
/// `229 Entering Extended Passive Mode (|||port|)` reply (RFC 959 §4.1.2, RFC 2428 §3).
pub fn passive_port(reply: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(reply).ok()?.trim_end();
    if let Some(rest) = text.strip_prefix("227 ") {
        let inner = rest.rsplit_once('(')?.1.split_once(')')?.0;
        let n: Vec<u16> = inner
            .split(',')
            .map(|x| x.trim().parse::<u8>().map(u16::from))
            .collect::<Result<_, _>>()
            .ok()?;
        let [_, _, _, _, p1, p2] = n.as_slice() else {
            return None;
        };
        return Some(p1 << 8 | p2);
    }
    let rest = text.strip_prefix("229 ")?;
    let inner = rest.rsplit_once('(')?.1.split_once(')')?.0;
    inner.trim_matches('|').parse().ok()
}

/// `PORT h1,h2,h3,h4,p1,p2` (canonical, as the filter forwards it) → the address.
pub fn port_target(line: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    let n: Vec<u8> = (text.strip_prefix("PORT ")?.split(','))
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [a, b, c, d, p1, p2] = n.as_slice() else {
        return None;
    };
    Some(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d)),
        u16::from(*p1) << 8 | u16::from(*p2),
    ))
}

impl Paths {
    /// A passive reply of libunftp: open the camera-facing listener on its port and return
    /// the reply to send instead (advertising that listener), or a `425` when it cannot open.
    pub async fn passive(&mut self, reply: &[u8]) -> Vec<u8> {
        let Some(inner) = passive_port(reply) else {
            return reply.to_vec();
        };
        let Some((listener, port)) = self.free_port().await else {
            tracing::warn!(ports = ?self.ports, "FTP passive ports all in use");
            return b"425 Can't open data connection\r\n".to_vec();
        };
        let advertised = match (self.advertise, self.local.to_canonical()) {
            (Some(a), _) => Some(a),
            (None, IpAddr::V4(v4)) => Some(v4),
            (None, IpAddr::V6(_)) => None,
        };
        let rewritten = if reply.starts_with(b"229") {
            format!("229 Entering Extended Passive Mode (|||{port}|)\r\n")
        } else if let Some(a) = advertised {
            let [h1, h2, h3, h4] = a.octets();
            format!(
                "227 Entering Passive Mode ({h1},{h2},{h3},{h4},{},{})\r\n",
                port >> 8,
                port & 0xFF
            )
        } else {
            // RFC 2428 §1: PASV has no IPv6 form; the camera must use EPSV.
            return b"425 Use EPSV over IPv6\r\n".to_vec();
        };
        let (camera, limit, telemetry) =
            (self.camera, self.transfer_timeout, self.telemetry.clone());
        self.tasks.spawn(async move {
            let accepted = tokio::time::timeout(DATA_WAIT, async {
                loop {
                    let (stream, from) = listener.accept().await?;
                    if from.ip().to_canonical() == camera.to_canonical() {
                        return Ok::<_, std::io::Error>(stream);
                    }
                    telemetry.ftp_refused.inc();
                    tracing::warn!(peer = %from, camera = %camera, "FTP data connection from another address than the camera's; closed");
                }
            })
            .await;
            drop(listener);
            if let Ok(Ok(stream)) = accepted {
                splice(stream, SocketAddr::new(IpAddr::V4(INTERNAL_IP), inner), limit).await;
            }
        });
        rewritten.into_bytes()
    }

    /// A listener on a free port of the passive range at the camera-facing address, trying
    /// the ports from a varying start (a port may be taken by another session, or by any
    /// socket of the host that got it as its ephemeral port).
    async fn free_port(&self) -> Option<(TcpListener, u16)> {
        let (first, last) = (*self.ports.start(), *self.ports.end());
        let n = u32::from(last.checked_sub(first)?) + 1;
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            % n;
        for i in 0..n {
            let port = first + u16::try_from((start + i) % n).ok()?;
            if let Ok(l) = TcpListener::bind(SocketAddr::new(self.local, port)).await {
                return Some((l, port));
            }
        }
        None
    }

    /// A `PORT` line for libunftp: open a listener for libunftp on [`INTERNAL_IP`] that
    /// connects through to the camera's address, and return the line naming it instead. An
    /// error: the listener could not open (the camera gets `425`).
    pub async fn active(&mut self, line: &[u8]) -> Result<Vec<u8>, Vec<u8>> {
        let Some(target) = port_target(line) else {
            return Ok(line.to_vec());
        };
        let refuse = |e: std::io::Error| {
            tracing::warn!(error = %e, "FTP active data path cannot be opened");
            b"425 Can't open data connection\r\n".to_vec()
        };
        let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(INTERNAL_IP), 0))
            .await
            .map_err(refuse)?;
        let port = listener.local_addr().map_err(refuse)?.port();
        let (local, limit) = (self.local, self.transfer_timeout);
        self.tasks.spawn(async move {
            let accepted = tokio::time::timeout(DATA_WAIT, listener.accept()).await;
            drop(listener);
            let Ok(Ok((from_unftp, _))) = accepted else {
                return;
            };
            let to_camera = async {
                let socket = if local.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(local, 0))?;
                socket.connect(target).await
            };
            match tokio::time::timeout(DATA_WAIT, to_camera).await {
                Ok(Ok(camera)) => join(from_unftp, camera, limit).await,
                Ok(Err(error)) => {
                    tracing::warn!(camera = %target, %error, "FTP active data connection to the camera failed")
                }
                Err(_) => {
                    tracing::warn!(camera = %target, "FTP active data connection to the camera timed out")
                }
            }
        });
        let [h1, h2, h3, h4] = INTERNAL_IP.octets();
        Ok(format!("PORT {h1},{h2},{h3},{h4},{},{}\r\n", port >> 8, port & 0xFF).into_bytes())
    }
}

/// Connect from [`INTERNAL_IP`] to libunftp's listener `to` and carry `camera` to it.
async fn splice(camera: TcpStream, to: SocketAddr, limit: Duration) {
    let inner = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(IpAddr::V4(INTERNAL_IP), 0))?;
        socket.connect(to).await
    };
    match inner.await {
        Ok(unftp) => join(camera, unftp, limit).await,
        Err(error) => tracing::warn!(%error, "FTP data connection to the internal server failed"),
    }
}

/// Copy both ways until both sides are done (each end's close passed on as a half-close), at
/// most `limit`.
async fn join(mut a: TcpStream, mut b: TcpStream, limit: Duration) {
    let _ = tokio::time::timeout(limit, tokio::io::copy_bidirectional(&mut a, &mut b)).await;
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn reply_and_command_forms() {
        assert_eq!(
            passive_port(b"227 Entering Passive Mode (127,0,0,231,195,80)\r\n"),
            Some(50000)
        );
        assert_eq!(
            passive_port(b"229 Entering Extended Passive Mode (|||50001|)\r\n"),
            Some(50001)
        );
        assert_eq!(passive_port(b"227 Entering Passive Mode (1,2,3)\r\n"), None);
        assert_eq!(passive_port(b"200 OK\r\n"), None);
        assert_eq!(
            port_target(b"PORT 192,0,2,130,195,80\r\n"),
            Some("192.0.2.130:50000".parse().unwrap())
        );
        assert_eq!(port_target(b"PORT 1,2,3\r\n"), None);
    }

    proptest! {
        /// Never panics; a 227 built from any address and port reads back that port.
        #[test]
        fn passive_port_reads_what_was_written(a in any::<[u8; 4]>(), port in any::<u16>(), junk in any::<Vec<u8>>()) {
            let _ = passive_port(&junk);
            let _ = port_target(&junk);
            let r = format!("227 Entering Passive Mode ({},{},{},{},{},{})\r\n", a[0], a[1], a[2], a[3], port >> 8, port & 0xFF);
            prop_assert_eq!(passive_port(r.as_bytes()), Some(port));
        }
    }
}
