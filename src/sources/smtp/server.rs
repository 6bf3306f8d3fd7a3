//! The SMTP listener: a tokio accept loop, one task per connection reading lines into a
//! [`Conn`] and doing what its [`Step`]s say (write, close, STARTTLS, deliver).
//!
//! Limits on everything a peer controls: `max_connections` (one more gets `421` and is
//! closed), `command_timeout` for every line and every reply written, `data_timeout` for a
//! mail's whole content, [`MAX_COMMAND_LINE`] for a command and `max_message_size` for the
//! content. A timeout gets `421` and the connection is closed; a connection that ends before
//! the final `.` publishes nothing (logged, counted in `smtp_refusals`).
//!
//! A delivered mail is normalised on the connection's task (mail-parser takes well under a
//! millisecond for a camera's mail) and sent to the pipeline with a `durable` channel; the
//! `250` is written only once it is durable, `451` (send again) when the bridge is stopping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;

use super::config::Settings;
use super::normalise::{Envelope, Reading, SOURCE, normalise};
use super::session::{
    Conn, Delivery, MAX_COMMAND_LINE, Policy, Step, reply_not_stored, reply_stored,
};
use crate::event::Message;
use crate::sources::http_push::ServerTls;
use crate::sources::{Input, SourceContext, SourceError, SourceHandle};

/// A byte stream a session runs on: TCP, or TLS over it after STARTTLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

type Io = BufReader<Box<dyn Stream>>;

/// What every connection of one listener shares.
struct Shared {
    policy: Arc<Policy>,
    reading: Reading,
    tls: Option<ServerTls>,
    command_timeout: Duration,
    data_timeout: Duration,
    max_message_size: usize,
    ctx: SourceContext,
}

/// Bind `settings.listen` and spawn the accept loop. Errors: the address cannot be bound.
pub async fn listen(settings: Settings, ctx: SourceContext) -> Result<SourceHandle, SourceError> {
    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|error| SourceError::Listen {
                source_name: SOURCE,
                addr: settings.listen,
                error,
            })?;
    let addr = listener.local_addr().ok();
    tracing::info!(addr = %addr.map_or_else(|| settings.listen.to_string(), |a| a.to_string()), tls = settings.tls.is_some(), accounts = settings.accounts.len(), "SMTP source listening");
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let shared = Arc::new(Shared {
        policy: Arc::new(Policy {
            hostname: settings.hostname,
            accounts: settings.accounts,
            require_auth: settings.require_auth,
            max_message_size: settings.max_message_size,
            tls_available: settings.tls.is_some(),
        }),
        reading: Reading {
            body_text_cap: settings.body_text_cap,
            unparsed_body_cap: settings.unparsed_body_cap,
            presets: settings.presets,
            rules: settings.rules,
        },
        tls: settings.tls,
        command_timeout: settings.command_timeout,
        data_timeout: settings.data_timeout,
        max_message_size: settings.max_message_size,
        ctx,
    });
    let task = tokio::spawn(accept_loop(
        listener,
        shared,
        limit,
        settings.max_connections,
    ));
    Ok(SourceHandle {
        name: SOURCE,
        addr,
        task,
    })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    max_connections: usize,
) {
    let shutdown = shared.ctx.shutdown.clone();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => {
                    // Out of descriptors and the like: wait a moment instead of spinning.
                    tracing::warn!(%error, "SMTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        shared.ctx.telemetry.connections.inc();
        let _ = stream.set_nodelay(true);
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    serve(stream, peer, &shared).await;
                    drop(permit);
                });
            }
            Err(_) => {
                shared.ctx.telemetry.smtp_refusals.inc();
                tracing::warn!(peer = %peer.ip(), reason = "too-many-connections", "SMTP connection refused");
                let timeout = shared.command_timeout;
                tokio::spawn(async move {
                    let mut stream = stream;
                    let _ = tokio::time::timeout(
                        timeout,
                        stream.write_all(b"421 Too many connections, try again later\r\n"),
                    )
                    .await;
                });
            }
        }
    }
    drop(listener);
    // In-flight connections end at their next line (they watch the same token) or once their
    // mail is stored; each holds a permit until then.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = limit.acquire_many(all).await;
}

/// How a line read ended.
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// A complete line (with its `\n`) is in the buffer.
    Line,
    /// The line was longer than the cap; it was read and dropped.
    TooLong,
    /// The peer closed the connection (a partial last line is dropped).
    Eof,
}

/// Read one line into `out` (cleared first), keeping at most `cap` bytes of it.
async fn read_line(io: &mut Io, out: &mut Vec<u8>, cap: usize) -> std::io::Result<LineRead> {
    out.clear();
    let mut too_long = false;
    loop {
        let buf = io.fill_buf().await?;
        if buf.is_empty() {
            return Ok(LineRead::Eof);
        }
        let (n, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if !too_long {
            if out.len() + n > cap {
                too_long = true;
                *out = Vec::new();
            } else {
                out.extend_from_slice(&buf[..n]);
            }
        }
        io.consume(n);
        if done {
            return Ok(if too_long {
                LineRead::TooLong
            } else {
                LineRead::Line
            });
        }
    }
}

/// Write a reply within the command timeout. False: the peer is gone or not reading.
async fn write(io: &mut Io, bytes: &[u8], timeout: Duration) -> bool {
    let w = io.get_mut();
    let fut = async {
        w.write_all(bytes).await?;
        w.flush().await
    };
    matches!(tokio::time::timeout(timeout, fut).await, Ok(Ok(())))
}

/// Serve one connection to its end.
async fn serve(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let telemetry = &shared.ctx.telemetry;
    let mut conn = Conn::new(shared.policy.clone(), peer.ip());
    let mut io: Io = BufReader::new(Box::new(stream) as Box<dyn Stream>);
    let t = shared.command_timeout;
    if !write(&mut io, &conn.greeting(), t).await {
        return;
    }
    let mut line = Vec::new();
    let mut data_deadline = Instant::now();
    loop {
        let in_data = conn.in_data();
        let (cap, deadline) = if in_data {
            (
                shared.max_message_size + 2,
                data_deadline.min(Instant::now() + t),
            )
        } else {
            (MAX_COMMAND_LINE, Instant::now() + t)
        };
        let read = tokio::select! {
            () = shared.ctx.shutdown.cancelled() => {
                let _ = write(&mut io, b"421 camqtt shutting down, try again later\r\n", t).await;
                if in_data {
                    cut_off(shared, peer, "shutdown");
                }
                return;
            }
            r = tokio::time::timeout_at(deadline, read_line(&mut io, &mut line, cap)) => r,
        };
        match read {
            Err(_) => {
                telemetry.smtp_refusals.inc();
                tracing::warn!(peer = %peer.ip(), reason = "timeout", in_data, "SMTP session timed out; closed");
                let _ = write(&mut io, b"421 Timeout, closing connection\r\n", t).await;
                return;
            }
            Ok(Err(error)) => {
                if in_data {
                    cut_off(shared, peer, "read-error");
                } else {
                    tracing::debug!(peer = %peer.ip(), %error, "SMTP connection error");
                }
                return;
            }
            Ok(Ok(LineRead::Eof)) => {
                if in_data {
                    cut_off(shared, peer, "closed");
                }
                return;
            }
            Ok(Ok(LineRead::TooLong)) if in_data => {
                conn.data_overflow();
                continue;
            }
            Ok(Ok(LineRead::TooLong)) => {
                telemetry.smtp_refusals.inc();
                tracing::warn!(peer = %peer.ip(), reason = "line-too-long", "SMTP command line too long");
                if !write(&mut io, &conn.line_too_long(), t).await {
                    return;
                }
                continue;
            }
            Ok(Ok(LineRead::Line)) => {}
        }
        let step = conn.line(&line);
        if conn.in_data() && !in_data {
            data_deadline = Instant::now() + shared.data_timeout;
        }
        match step {
            Step::Nothing => {}
            Step::Reply(b) => {
                if !write(&mut io, &b, t).await {
                    return;
                }
            }
            Step::Refused(b, why) => {
                telemetry.smtp_refusals.inc();
                tracing::warn!(peer = %peer.ip(), reason = why.reason(), login = conn.login().as_deref().unwrap_or(""), "SMTP refused");
                if !write(&mut io, &b, t).await {
                    return;
                }
            }
            Step::Close(b) => {
                let _ = write(&mut io, &b, t).await;
                let _ = io.get_mut().shutdown().await;
                return;
            }
            Step::StartTls(b) => {
                let Some(tls) = &shared.tls else { return };
                if !write(&mut io, &b, t).await {
                    return;
                }
                // RFC 3207 §4.2 / §5: whatever the client sent after STARTTLS before the
                // handshake is discarded (buffered plaintext must not count as protected).
                let inner = io.into_inner();
                match tokio::time::timeout(t, tls.acceptor().accept(inner)).await {
                    Ok(Ok(s)) => {
                        telemetry.tls_connections.inc();
                        io = BufReader::new(Box::new(s) as Box<dyn Stream>);
                        conn.tls_started();
                    }
                    _ => {
                        telemetry.tls_handshake_errors.inc();
                        tracing::warn!(peer = %peer.ip(), "SMTP STARTTLS handshake failed");
                        return;
                    }
                }
            }
            Step::Deliver(d) => {
                let stored = deliver(shared, peer, d).await;
                let reply = if stored {
                    reply_stored()
                } else {
                    reply_not_stored()
                };
                if !write(&mut io, &reply, t).await || !stored {
                    return;
                }
            }
        }
    }
}

/// A connection ended in the middle of a mail's content: nothing is published.
fn cut_off(shared: &Shared, peer: SocketAddr, how: &'static str) {
    shared.ctx.telemetry.smtp_refusals.inc();
    tracing::warn!(peer = %peer.ip(), reason = "incomplete-mail", how, "SMTP connection ended before the final `.`; nothing published");
}

/// Normalise a delivered mail, send it to the pipeline and wait until it is durable. False
/// when the pipeline went away first (shutdown).
async fn deliver(shared: &Shared, peer: SocketAddr, d: Delivery) -> bool {
    let telemetry = &shared.ctx.telemetry;
    telemetry.smtp_mails.inc();
    let env = Envelope {
        peer: Some(peer.ip()),
        login: d.login,
        mail_from: d.mail_from,
        rcpt_to: d.rcpt_to,
    };
    let msg = normalise(&d.data, &env, &shared.reading, SystemTime::now());
    match &msg {
        Message::Event(e) => {
            telemetry.events.inc();
            telemetry.images.add(e.images.len() as u64);
            if !e.warnings.is_empty() {
                telemetry.image_errors.inc();
            }
            tracing::info!(
                peer = %peer.ip(),
                login = env.login.as_deref().unwrap_or(""),
                from = env.mail_from.as_deref().unwrap_or(""),
                category = %e.category,
                raw_type = %e.raw_type,
                images = e.images.len(),
                bytes = d.data.len(),
                "mail received"
            );
            for w in &e.warnings {
                tracing::warn!(peer = %peer.ip(), login = env.login.as_deref().unwrap_or(""), from = env.mail_from.as_deref().unwrap_or(""), warning = %w, "mail kept with a problem");
            }
        }
        Message::Unparsed(u) => {
            telemetry.unparsed.inc();
            tracing::warn!(peer = %peer.ip(), reason = %u.reason, bytes = d.data.len(), "mail did not become an event");
        }
        _ => {}
    }
    let (tx, rx) = oneshot::channel();
    let input = Input {
        source: SOURCE,
        msg,
        durable: Some(tx),
    };
    if shared.ctx.tx.send(input).await.is_err() || rx.await.is_err() {
        telemetry.dropped.inc();
        tracing::warn!(peer = %peer.ip(), "pipeline stopped; mail not stored, camera told to send again (451)");
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Telemetry;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    fn settings() -> Settings {
        Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            hostname: "camqtt".into(),
            accounts: Vec::new(),
            require_auth: false,
            max_message_size: 10_000,
            max_connections: 1,
            command_timeout: Duration::from_secs(20),
            data_timeout: Duration::from_secs(20),
            body_text_cap: 100,
            unparsed_body_cap: 100,
            presets: true,
            rules: Vec::new(),
            tls: None,
        }
    }

    /// Send one mail over a real socket; returns the client's reader after the reply to `.`
    /// was requested (the reply itself is read by the caller).
    async fn send_mail(addr: SocketAddr) -> BufReader<TcpStream> {
        let mut c = BufReader::new(TcpStream::connect(addr).await.unwrap());
        let mut line = String::new();
        c.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("220 "), "{line}");
        c.get_mut()
            .write_all(b"HELO cam\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n")
            .await
            .unwrap();
        for want in ["250", "250", "250", "354"] {
            line.clear();
            c.read_line(&mut line).await.unwrap();
            assert!(line.starts_with(want), "{want}: {line}");
        }
        c
    }

    async fn next_line(c: &mut BufReader<TcpStream>) -> String {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(20), c.read_line(&mut line))
            .await
            .expect("reply in time")
            .unwrap();
        line
    }

    #[tokio::test]
    async fn the_250_waits_for_durability_and_451_when_not_stored() {
        let (tx, mut rx) = mpsc::channel::<Input>(4);
        let shutdown = CancellationToken::new();
        let ctx = SourceContext {
            tx,
            telemetry: Telemetry::new(),
            shutdown: shutdown.clone(),
            commands: tokio::sync::broadcast::channel(4).0,
        };
        let handle = listen(settings(), ctx.clone()).await.unwrap();
        let addr = handle.addr.unwrap();

        // Stored: no reply while the pipeline holds the message, 250 once it is durable.
        let mut c = send_mail(addr).await;
        let input = rx.recv().await.expect("the mail reaches the pipeline");
        assert!(matches!(input.msg, Message::Event(_)));
        let mut early = String::new();
        let waited =
            tokio::time::timeout(Duration::from_millis(300), c.read_line(&mut early)).await;
        assert!(waited.is_err(), "replied before durable: {early}");
        input.durable.unwrap().send(()).unwrap();
        assert!(next_line(&mut c).await.starts_with("250 "));
        drop(c);

        // Not stored (the pipeline dropped it): 451, so the camera sends it again.
        let mut c = send_mail(addr).await;
        let input = rx.recv().await.unwrap();
        drop(input);
        assert!(next_line(&mut c).await.starts_with("451 "));
        assert_eq!(ctx.telemetry.smtp_mails.get(), 2);

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), handle.task)
            .await
            .expect("the source stops")
            .unwrap();
    }

    #[tokio::test]
    async fn one_connection_too_many_gets_421() {
        let (tx, _rx) = mpsc::channel::<Input>(4);
        let ctx = SourceContext {
            tx,
            telemetry: Telemetry::new(),
            shutdown: CancellationToken::new(),
            commands: tokio::sync::broadcast::channel(4).0,
        };
        let handle = listen(settings(), ctx.clone()).await.unwrap();
        let addr = handle.addr.unwrap();
        let mut first = BufReader::new(TcpStream::connect(addr).await.unwrap());
        assert!(next_line(&mut first).await.starts_with("220 "));
        let mut second = BufReader::new(TcpStream::connect(addr).await.unwrap());
        assert!(next_line(&mut second).await.starts_with("421 "));
        assert_eq!(ctx.telemetry.smtp_refusals.get(), 1);
        ctx.shutdown.cancel();
    }

    fn io(bytes: &'static [u8]) -> Io {
        // A tiny buffer, so that lines arrive in several pieces.
        BufReader::with_capacity(
            4,
            Box::new(std::io::Cursor::new(bytes.to_vec())) as Box<dyn Stream>,
        )
    }

    #[tokio::test]
    async fn lines_caps_and_eof() {
        let mut r = io(b"EHLO x\r\nbare\nxxxxxxxxxxxxxxxxxxxx\r\nshort\r\npartial");
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"EHLO x\r\n");
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"bare\n");
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::TooLong
        );
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::Line
        );
        assert_eq!(buf, b"short\r\n");
        assert_eq!(
            read_line(&mut r, &mut buf, 10).await.unwrap(),
            LineRead::Eof
        );
    }
}
