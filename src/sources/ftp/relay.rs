//! The control-connection relay (thin async shell around [`ControlFilter`]).
//!
//! Each camera's control connection is carried line by line to the connection libunftp
//! serves for it, through the filter; data connections are relayed too ([`super::data`]). Limits: a command line longer than [`MAX_LINE`] bytes ends the connection
//! (`500`), and the connection ends when either side closes or the bridge stops. When it
//! ends on the camera's side (or the bridge stops), libunftp is told in an orderly way: the
//! filter's last line ([`ControlFilter::on_close`], an `ABOR` that closes a passive data
//! connection nothing used), then the end of the stream, and its last replies are awaited
//! (briefly) before the connection is closed.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio_util::sync::CancellationToken;

use super::control::{ControlFilter, Login};
use super::data::Paths;
use crate::telemetry::Telemetry;

/// Longest time a write to the camera may take (a peer that stops reading its replies).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest command or reply line, bytes (RFC 959 sets none; a path of a few hundred bytes is
/// the most a camera sends).
pub const MAX_LINE: usize = 4096;

/// Why a relay ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The camera closed the connection (after `QUIT` or not).
    Client,
    /// libunftp closed it (`221` after `QUIT`, `421` idle timeout).
    Server,
    /// A command line longer than [`MAX_LINE`].
    LineTooLong,
    /// The bridge is stopping.
    Shutdown,
    /// A socket error.
    Io(String),
}

/// Longest time libunftp may take to finish a session the camera's side ended.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Relay one control connection until it ends, and its data connections through `paths`.
/// `peer`: the camera, for logs.
pub async fn relay<C, S>(
    client: C,
    server: S,
    mut filter: ControlFilter,
    mut paths: Paths,
    peer: SocketAddr,
    telemetry: &Telemetry,
    shutdown: &CancellationToken,
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (cr, mut cw) = tokio::io::split(client);
    let (sr, mut sw) = tokio::io::split(server);
    let mut sr = BufReader::new(sr);
    let ended = pump(
        BufReader::new(cr),
        &mut cw,
        &mut sr,
        &mut sw,
        &mut filter,
        &mut paths,
        peer,
        telemetry,
        shutdown,
    )
    .await;
    if ended != Ended::Server {
        // libunftp keeps a passive data connection it accepted (and its session) for minutes
        // after the control connection is gone unless told to close it: the filter's `ABOR`,
        // then the end of the stream; then its last replies until it closes its side.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            if let Some(line) = filter.on_close() {
                sw.write_all(&line).await?;
            }
            sw.shutdown().await?;
            let mut rest = [0u8; 512];
            while sr.read(&mut rest).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    }
    // A transfer still running finishes (briefly); unused paths are closed.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while paths.tasks.join_next().await.is_some() {}
    })
    .await;
    ended
}

/// Carry lines both ways until the connection ends; why it ended.
#[allow(clippy::too_many_arguments)]
async fn pump<CR, CW, SR, SW>(
    mut cr: BufReader<CR>,
    cw: &mut CW,
    sr: &mut BufReader<SR>,
    sw: &mut SW,
    filter: &mut ControlFilter,
    paths: &mut Paths,
    peer: SocketAddr,
    telemetry: &Telemetry,
    shutdown: &CancellationToken,
) -> Ended
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    SR: AsyncRead + Unpin,
    SW: AsyncWrite + Unpin,
{
    let (mut cline, mut sline) = (Vec::new(), Vec::new());
    loop {
        // `read_until` keeps what it read in the buffer when the other branch wins, so a line
        // split over several reads is completed on the next turn.
        let climit = (MAX_LINE + 1).saturating_sub(cline.len()) as u64;
        let slimit = (MAX_LINE + 1).saturating_sub(sline.len()) as u64;
        let mut ctake = (&mut cr).take(climit);
        let mut stake = (&mut *sr).take(slimit);
        tokio::select! {
            r = ctake.read_until(b'\n', &mut cline) => {
                match r {
                    Ok(0) => return Ended::Client,
                    Err(e) => return Ended::Io(e.to_string()),
                    Ok(_) if !cline.ends_with(b"\n") => {
                        if cline.len() > MAX_LINE {
                            let _ = write(cw, b"500 Command line too long\r\n").await;
                            return Ended::LineTooLong;
                        }
                        continue;
                    }
                    Ok(_) => {}
                }
                let out = filter.from_client(&cline);
                cline.clear();
                if !out.to_client.is_empty()
                    && let Err(e) = write(cw, &out.to_client).await
                {
                    return e;
                }
                if let Some(mut line) = out.to_server {
                    if line.starts_with(b"PORT ") {
                        // libunftp connects to the relay, which connects to the camera. If
                        // the path cannot open, libunftp gets the camera's own address and
                        // the transfer fails with `425` (it accepts data only from its client).
                        line = paths.active(&line).await.unwrap_or(line);
                    }
                    if let Err(e) = sw.write_all(&line).await {
                        return Ended::Io(e.to_string());
                    }
                }
            }
            r = stake.read_until(b'\n', &mut sline) => {
                match r {
                    Ok(0) => {
                        if !sline.is_empty() {
                            let out = filter.from_server(&sline);
                            let _ = write(cw, &out.to_client).await;
                        }
                        let _ = cw.shutdown().await;
                        return Ended::Server;
                    }
                    Err(e) => return Ended::Io(e.to_string()),
                    // A reply line longer than the limit is passed on in pieces.
                    Ok(_) if !sline.ends_with(b"\n") && sline.len() <= MAX_LINE => continue,
                    Ok(_) => {}
                }
                if sline.starts_with(b"227 ") || sline.starts_with(b"229 ") {
                    sline = paths.passive(&sline).await;
                }
                let out = filter.from_server(&sline);
                sline.clear();
                match out.login {
                    Some(Login::Refused(user)) => {
                        telemetry.ftp_login_failures.inc();
                        tracing::warn!(peer = %peer, user = %user, "FTP login refused (unknown user or wrong password)");
                    }
                    Some(Login::Accepted(user)) => {
                        tracing::debug!(peer = %peer, user = %user, "FTP login");
                    }
                    None => {}
                }
                if let Err(e) = write(cw, &out.to_client).await {
                    return e;
                }
            }
            () = shutdown.cancelled() => {
                let _ = write(cw, b"421 Service closing control connection\r\n").await;
                return Ended::Shutdown;
            }
        }
    }
}

/// Write `bytes` to the camera within [`WRITE_TIMEOUT`].
async fn write<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), Ended> {
    match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Ended::Io(e.to_string())),
        Err(_) => Err(Ended::Io("the camera stopped reading its replies".into())),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    async fn read_some<R: AsyncRead + Unpin>(r: &mut R) -> String {
        let mut buf = vec![0; 1024];
        let n = r.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn allo_reply_is_rewritten_end_to_end() {
        let (client, mut camera) = duplex(4096);
        let (server, mut unftp) = duplex(4096);
        let t = Telemetry::new();
        let token = CancellationToken::new();
        let peer: SocketAddr = "192.0.2.130:40000".parse().unwrap();
        let filter = ControlFilter::new(peer.ip(), true);
        let paths = Paths {
            camera: peer.ip(),
            local: "127.0.0.1".parse().unwrap(),
            advertise: None,
            ports: 50000..=50100,
            transfer_timeout: Duration::from_secs(5),
            telemetry: t.clone(),
            tasks: tokio::task::JoinSet::new(),
        };
        let task = tokio::spawn(async move {
            let t2 = t.clone();
            let r = relay(client, server, filter, paths, peer, &t2, &token).await;
            (r, t2)
        });
        unftp.write_all(b"220 ready\r\n").await.unwrap();
        assert_eq!(read_some(&mut camera).await, "220 ready\r\n");
        camera
            .write_all(b"USER porchcam\r\nPASS x\r\n")
            .await
            .unwrap();
        let mut got = String::new();
        while !got.ends_with("PASS x\r\n") {
            got.push_str(&read_some(&mut unftp).await);
        }
        unftp
            .write_all(b"331 Password required\r\n530 Wrong\r\n")
            .await
            .unwrap();
        camera.write_all(b"ALLO 5000\r\n").await.unwrap();
        assert_eq!(read_some(&mut unftp).await, "ALLO 5000\r\n");
        unftp.write_all(b"202 Ignored\r\n").await.unwrap();
        let mut got = String::new();
        while !got.ends_with("200 ALLO command successful\r\n") {
            got.push_str(&read_some(&mut camera).await);
        }
        assert!(got.contains("530 Wrong"));
        // A line without end longer than the limit ends the connection.
        camera.write_all(&vec![b'A'; MAX_LINE + 10]).await.unwrap();
        // libunftp's end closes once the relay closed its side.
        tokio::spawn(async move { unftp.read_to_end(&mut Vec::new()).await });
        let (ended, t) = task.await.unwrap();
        assert_eq!(ended, Ended::LineTooLong);
        assert_eq!(t.ftp_login_failures.get(), 1);
        assert!(read_some(&mut camera).await.starts_with("500 "));
    }
}
