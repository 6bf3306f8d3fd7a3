//! The HTTP receiver over real loopback sockets, driven by hand-written bytes.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use camqtt::sources::http_push::{Handler, HttpConfig, HttpError, Request, Response, serve};
use camqtt::telemetry::Telemetry;
use common::logs::Logs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

/// The Viewtron success reply (126 bytes).
const SUCCESS: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><config version=\"1.0\" xmlns=\"http://www.ipc.com/ver10\"><status>success</status></config>";

/// Upper bound for any single wait in these tests.
const WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Recorder {
    requests: Mutex<Vec<Request>>,
    errors: Mutex<Vec<HttpError>>,
}

impl Recorder {
    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
    fn errors(&self) -> Vec<HttpError> {
        self.errors.lock().unwrap().clone()
    }
}

impl Handler for Recorder {
    fn handle(&self, req: Request) -> camqtt::sources::http_push::Reply {
        self.requests.lock().unwrap().push(req);
        Box::pin(std::future::ready(
            Response::new(200, "OK", SUCCESS).with_header("Content-Type", "application/xml"),
        ))
    }

    fn on_error(&self, _peer: SocketAddr, err: &HttpError) -> Option<Response> {
        self.errors.lock().unwrap().push(err.clone());
        Some(Response::new(400, "Bad Request", &b"refused"[..]))
    }
}

struct Server {
    addr: SocketAddr,
    telemetry: Telemetry,
    rec: Arc<Recorder>,
    token: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(cfg: HttpConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rec = Arc::new(Recorder::default());
    let token = CancellationToken::new();
    let telemetry = Telemetry::new();
    let task = tokio::spawn(serve(
        listener,
        cfg,
        rec.clone(),
        telemetry.clone(),
        token.clone(),
    ));
    Server {
        addr,
        telemetry,
        rec,
        token,
        task,
    }
}

impl Server {
    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }
}

/// A parsed reply.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response reader that keeps leftover bytes between replies.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(server: &Server) -> Conn {
        Conn {
            stream: server.connect().await,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Read more bytes; `false` on EOF or error.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("read timed out")
        {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Read one reply (status line, headers, Content-Length body). `None` on EOF before a reply.
    async fn reply(&mut self) -> Option<Reply> {
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if !self.fill().await {
                assert!(
                    self.buf.is_empty(),
                    "EOF inside a reply head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).expect("reply head is UTF-8");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(
            parts.next(),
            Some("HTTP/1.1"),
            "status line {status_line:?}"
        );
        let status: u16 = parts.next().unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header line has a colon");
                (n.to_owned(), v.trim().to_owned())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        while self.buf.len() < head_end + len {
            assert!(self.fill().await, "EOF inside a reply body");
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Some(Reply {
            status,
            headers,
            body,
        })
    }

    /// Wait until the server closes the connection (EOF or reset), within `limit`.
    /// Returns how long that took.
    async fn closed_within(&mut self, limit: Duration) -> Duration {
        let t0 = Instant::now();
        let mut chunk = [0u8; 4096];
        loop {
            match timeout(limit, self.stream.read(&mut chunk)).await {
                Err(_) => panic!("connection still open after {limit:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return t0.elapsed(),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 10.0.0.2\r\nContent-Type: application/xml; charset=utf-8\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn assert_success(reply: &Reply) {
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, SUCCESS);
    assert_eq!(reply.body.len(), 126);
    assert_eq!(reply.header("Content-Length"), Some("126"));
    assert_eq!(reply.header("Content-Type"), Some("application/xml"));
}

fn small() -> HttpConfig {
    HttpConfig {
        body_limit: 1000,
        header_limit: 1024,
        ..HttpConfig::default()
    }
}

#[tokio::test]
async fn keep_alive_three_posts_in_order() {
    let s = start(HttpConfig::default()).await;
    let mut c = Conn::open(&s).await;
    for i in 0..3 {
        c.send(&post("/API", &format!("<n>{i}</n>"))).await;
        let reply = c.reply().await.expect("reply");
        assert_success(&reply);
        assert_eq!(reply.header("Connection"), Some("keep-alive"));
    }
    let bodies: Vec<_> = s
        .rec
        .requests()
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    assert_eq!(bodies, ["<n>0</n>", "<n>1</n>", "<n>2</n>"]);
    assert!(
        s.rec
            .requests()
            .iter()
            .all(|r| r.peer == c.stream.local_addr().unwrap())
    );
    assert_eq!(s.telemetry.http_requests.get(), 3);
}

#[tokio::test]
async fn absolute_form_target_routes_on_path() {
    let s = start(HttpConfig::default()).await;
    let mut c = Conn::open(&s).await;
    c.send(
        b"POST http://192.168.0.56:5002/API HTTP/1.1\r\nContent-Type: application/soap+xml; charset=utf-8\r\nConnection: close\r\nContent-Length: 4\r\n\r\n<a/>",
    )
    .await;
    let reply = c.reply().await.expect("reply");
    assert_success(&reply);
    assert_eq!(reply.header("Connection"), Some("close"));
    c.closed_within(WAIT).await;
    let reqs = s.rec.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/API");
    assert_eq!(reqs[0].target, "http://192.168.0.56:5002/API");
    assert!(!reqs[0].keep_alive);
}

#[tokio::test]
async fn headers_without_space_and_mixed_case() {
    let s = start(HttpConfig::default()).await;
    let mut c = Conn::open(&s).await;
    c.send(b"POST /SendAlarmData HTTP/1.1\r\nhOsT:cam\r\nCONTENT-LENGTH:5\r\ncontent-type:application/xml; charset=utf-8\r\n\r\nhello")
        .await;
    assert_success(&c.reply().await.expect("reply"));
    let r = &s.rec.requests()[0];
    assert_eq!(&r.body[..], b"hello");
    assert_eq!(r.header("host"), Some("cam"));
    assert_eq!(
        r.header("Content-Type"),
        Some("application/xml; charset=utf-8")
    );
    assert_eq!(r.path, "/SendAlarmData");
}

#[tokio::test]
async fn chunked_bodies() {
    let s = start(HttpConfig::default()).await;
    let mut c = Conn::open(&s).await;
    c.send(b"POST /API HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;a=b\r\n<cfg\r\nA\r\n>0123456</\r\n4\r\ncfg>\r\n0\r\nX-Trailer: 1\r\n\r\n").await;
    assert_success(&c.reply().await.expect("reply"));
    // Chunked plus Content-Length: 0, as the Python SDK accepts: chunks win.
    c.send(b"POST /API HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").await;
    assert_success(&c.reply().await.expect("reply"));
    let reqs = s.rec.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(&reqs[0].body[..], b"<cfg>0123456</cfg>");
    assert_eq!(&reqs[1].body[..], b"abc");
    assert!(reqs.iter().all(|r| r.chunked));
}

#[tokio::test]
async fn pipelined_requests_in_one_write() {
    let s = start(HttpConfig::default()).await;
    let mut c = Conn::open(&s).await;
    let mut both = post("/one", "first");
    both.extend(post("/two", "second"));
    c.send(&both).await;
    assert_success(&c.reply().await.expect("first reply"));
    assert_success(&c.reply().await.expect("second reply"));
    let reqs = s.rec.requests();
    assert_eq!(
        reqs.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        ["/one", "/two"]
    );
    assert_eq!(&reqs[1].body[..], b"second");
}

#[tokio::test]
async fn request_split_byte_by_byte() {
    let s = start(HttpConfig::default()).await;
    let mut c = Conn::open(&s).await;
    c.stream.set_nodelay(true).unwrap();
    let bytes = post("/API", "<config version=\"1.7\"/>");
    for b in &bytes {
        c.send(std::slice::from_ref(b)).await;
        tokio::task::yield_now().await;
    }
    assert_success(&c.reply().await.expect("reply"));
    assert_eq!(&s.rec.requests()[0].body[..], b"<config version=\"1.7\"/>");
}

#[tokio::test]
async fn empty_post_and_get_without_body() {
    let s = start(HttpConfig::default()).await;
    let mut c = Conn::open(&s).await;
    c.send(b"POST /API HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .await;
    assert_success(&c.reply().await.expect("reply to heartbeat"));
    c.send(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_success(&c.reply().await.expect("reply to GET"));
    let reqs = s.rec.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[0].body.is_empty() && reqs[1].body.is_empty());
    assert_eq!(reqs[1].method, "GET");
}

#[tokio::test]
async fn http10_closes_by_default() {
    let s = start(HttpConfig::default()).await;
    let mut c = Conn::open(&s).await;
    c.send(b"POST /API HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
        .await;
    let reply = c.reply().await.expect("reply");
    assert_success(&reply);
    assert_eq!(reply.header("Connection"), Some("close"));
    c.closed_within(WAIT).await;
    assert_eq!(s.rec.requests()[0].version, 0);
}

#[tokio::test]
async fn expect_100_continue() {
    let s = start(HttpConfig::default()).await;
    let mut c = Conn::open(&s).await;
    c.send(b"POST /API HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .await;
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    while c.buf.len() < interim.len() {
        assert!(c.fill().await, "EOF before 100 Continue");
    }
    assert_eq!(&c.buf[..interim.len()], interim);
    c.buf.drain(..interim.len());
    assert!(
        s.rec.requests().is_empty(),
        "handler called before the body arrived"
    );
    c.send(b"data").await;
    assert_success(&c.reply().await.expect("final reply"));
    assert_eq!(&s.rec.requests()[0].body[..], b"data");
}

#[tokio::test]
async fn body_over_limit_is_refused_then_closed() {
    let s = start(small()).await;
    let mut c = Conn::open(&s).await;
    c.send(b"POST /API HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n")
        .await;
    c.send(&[b'x'; 2000]).await;
    let reply = c.reply().await.expect("error reply");
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("Connection"), Some("close"));
    c.closed_within(WAIT).await;
    assert_eq!(
        s.rec.errors(),
        [HttpError::BodyTooLarge {
            declared: true,
            seen: 5_000_000,
            limit: 1000
        }]
    );
    assert!(s.rec.requests().is_empty());
    assert_eq!(s.telemetry.http_errors.get(), 1);

    // Chunked: cut off once the decoded total passes the limit.
    let mut c = Conn::open(&s).await;
    let mut chunked = b"POST /API HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"190\r\n");
        chunked.extend_from_slice(&[b'y'; 400]);
        chunked.extend_from_slice(b"\r\n");
    }
    c.send(&chunked).await;
    assert_eq!(c.reply().await.expect("error reply").status, 400);
    c.closed_within(WAIT).await;
    assert!(matches!(
        s.rec.errors()[1],
        HttpError::BodyTooLarge {
            declared: false,
            ..
        }
    ));

    // The server still serves new connections.
    let mut c = Conn::open(&s).await;
    c.send(&post("/API", "ok")).await;
    assert_success(&c.reply().await.expect("reply"));
}

#[tokio::test]
async fn header_section_over_limit() {
    let s = start(small()).await;
    let mut c = Conn::open(&s).await;
    let mut req = b"POST /API HTTP/1.1\r\nX-Padding: ".to_vec();
    req.extend_from_slice(&[b'p'; 3000]);
    req.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    c.send(&req).await;
    assert_eq!(c.reply().await.expect("error reply").status, 400);
    c.closed_within(WAIT).await;
    assert_eq!(s.rec.errors(), [HttpError::HeaderTooLarge { limit: 1024 }]);
    assert!(s.rec.requests().is_empty());
}

#[tokio::test]
async fn slowloris_is_cut_off_by_header_timeout() {
    let cfg = HttpConfig {
        header_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    };
    let s = start(cfg).await;
    let mut c = Conn::open(&s).await;
    let t0 = Instant::now();
    let head = b"POST /API HTTP/1.1\r\nHost: cam\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut_off = false;
    for b in head {
        if c.stream.write_all(std::slice::from_ref(b)).await.is_err() {
            cut_off = true;
            break;
        }
        // Did the server give up on us?
        let mut probe = [0u8; 256];
        match timeout(Duration::from_millis(100), c.stream.read(&mut probe)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_off = true;
                break;
            }
            Ok(Ok(n)) => c.buf.extend_from_slice(&probe[..n]),
        }
        if c.buf.windows(4).any(|w| w == b"\r\n\r\n") {
            c.closed_within(WAIT).await;
            cut_off = true;
            break;
        }
    }
    let took = t0.elapsed();
    assert!(cut_off, "slow client was never cut off");
    assert!(
        took >= Duration::from_millis(250),
        "cut off too early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "cut off too late: {took:?}");
    assert_eq!(s.rec.errors(), [HttpError::HeaderTimeout]);
    assert!(s.rec.requests().is_empty());
}

#[tokio::test]
async fn slow_body_is_cut_off_by_request_timeout() {
    let cfg = HttpConfig {
        request_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    };
    let s = start(cfg).await;
    let mut c = Conn::open(&s).await;
    c.send(b"POST /API HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        .await;
    let t0 = Instant::now();
    let reply = c.reply().await.expect("error reply");
    assert_eq!(reply.status, 400);
    c.closed_within(WAIT).await;
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(s.rec.errors(), [HttpError::BodyTimeout]);
}

#[tokio::test]
async fn idle_timeout_closes_idle_connections() {
    let cfg = HttpConfig {
        idle_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    };
    let s = start(cfg).await;
    // After a request.
    let mut c = Conn::open(&s).await;
    c.send(&post("/API", "")).await;
    assert_success(&c.reply().await.expect("reply"));
    let took = c.closed_within(WAIT).await;
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
    // Without any request; an idle close is not an error.
    let mut c = Conn::open(&s).await;
    c.closed_within(WAIT).await;
    assert!(c.buf.is_empty());
    assert!(s.rec.errors().is_empty());
}

/// A new connection that sends nothing holds its slot for the header timeout, not the (much
/// longer) idle timeout that keep-alive connections get between requests; it is closed
/// quietly (no reply, not an error). Once a connection has completed a request, the idle
/// timeout applies.
#[tokio::test]
async fn silent_connection_is_closed_after_the_header_timeout() {
    let cfg = HttpConfig {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(30),
        ..HttpConfig::default()
    };
    let s = start(cfg).await;
    let mut silent = Conn::open(&s).await;
    let took = silent.closed_within(WAIT).await;
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "closed too late: {took:?}");
    assert!(silent.buf.is_empty(), "no reply to a silent connection");
    assert!(s.rec.errors().is_empty(), "{:?}", s.rec.errors());
    assert_eq!(s.telemetry.http_errors.get(), 0);

    // After a request: idle timeout, far beyond the header timeout.
    let mut c = Conn::open(&s).await;
    c.send(&post("/API", "")).await;
    assert_success(&c.reply().await.expect("reply"));
    let mut probe = [0u8; 16];
    assert!(
        timeout(Duration::from_millis(900), c.stream.read(&mut probe))
            .await
            .is_err(),
        "a keep-alive connection was closed after the header timeout"
    );
    c.send(&post("/API", "again")).await;
    assert_success(
        &c.reply()
            .await
            .expect("second request on the kept connection"),
    );
}

/// At the connection cap, silent connections give their slots back after the header timeout:
/// a real post is served then, not only after the idle timeout.
#[tokio::test]
async fn silent_connections_at_the_cap_do_not_hold_it_for_the_idle_timeout() {
    let cfg = HttpConfig {
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(30),
        max_connections: 4,
        ..HttpConfig::default()
    };
    let s = start(cfg).await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(Conn::open(&s).await);
    }
    let t0 = Instant::now();
    let mut c = Conn::open(&s).await;
    c.send(&post("/API", "real")).await;
    assert_success(
        &c.reply()
            .await
            .expect("served once the silent ones are closed"),
    );
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "served after {took:?}");
    assert_eq!(s.rec.requests().len(), 1);
    for mut conn in silent {
        conn.closed_within(WAIT).await;
    }
}

/// Requests refused for the client's fault are counted and passed to the handler every time,
/// but warned about once per peer per window (a flood of garbage is one WARN line, not one per
/// connection).
#[tokio::test]
async fn refused_requests_are_warned_about_once_per_peer() {
    // `#[tokio::test]` runs the server on the test's thread.
    let (logs, _guard) = Logs::capture_thread();
    let s = start(HttpConfig::default()).await;
    const N: usize = 30;
    for _ in 0..N {
        let mut c = Conn::open(&s).await;
        c.send(b"HELLO\x00\x01\x02 garbage\r\n\r\n").await;
        assert_eq!(c.reply().await.expect("error reply").status, 400);
        c.closed_within(WAIT).await;
    }
    assert_eq!(s.rec.errors().len(), N, "every one reaches the handler");
    assert_eq!(s.telemetry.http_errors.get(), N as u64, "every one counted");
    let text = logs.text();
    let warned: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("HTTP request refused"))
        .collect();
    assert_eq!(warned.len(), 1, "{text}");
    assert!(
        warned[0].contains("peer=127.0.0.1") && warned[0].contains("bad request"),
        "{}",
        warned[0]
    );
    // The others at debug level.
    assert!(
        text.lines()
            .filter(|l| l.contains(" DEBUG ") && l.contains("warned recently"))
            .count()
            >= N - 1,
        "{text}"
    );
}

#[tokio::test]
async fn default_idle_timeout_outlives_heartbeats() {
    // Heartbeats come up to 120 s apart; the default must keep such a connection open.
    assert!(HttpConfig::default().idle_timeout > Duration::from_secs(240));
    let s = start(HttpConfig::default()).await;
    let mut c = Conn::open(&s).await;
    c.send(&post("/API", "")).await;
    assert_success(&c.reply().await.expect("reply"));
    let mut probe = [0u8; 16];
    assert!(
        timeout(Duration::from_millis(500), c.stream.read(&mut probe))
            .await
            .is_err(),
        "connection closed early"
    );
}

#[tokio::test]
async fn garbage_is_refused_and_server_survives() {
    let s = start(HttpConfig::default()).await;
    let mut c = Conn::open(&s).await;
    // A TLS ClientHello start: not HTTP. No reply at all (the handler's 400 is not sent to a
    // TLS client), closed at once.
    c.send(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ])
    .await;
    assert!(c.reply().await.is_none(), "no HTTP reply to a TLS client");
    c.closed_within(Duration::from_secs(1)).await;
    assert_eq!(s.rec.errors(), [HttpError::TlsOnPlainPort]);

    // 0x16 without a TLS version after it is just a bad request.
    let mut c = Conn::open(&s).await;
    c.send(b"\x16\x01\x01garbage\r\n\r\n").await;
    assert_eq!(c.reply().await.expect("error reply").status, 400);
    c.closed_within(WAIT).await;
    assert!(matches!(
        s.rec.errors()[..],
        [HttpError::TlsOnPlainPort, HttpError::BadRequest(_)]
    ));

    let mut c = Conn::open(&s).await;
    c.send(b"HELLO\x00\x01\x02 garbage\r\n\r\n").await;
    assert_eq!(c.reply().await.expect("error reply").status, 400);
    c.closed_within(WAIT).await;

    let mut c = Conn::open(&s).await;
    c.send(&post("/API", "after")).await;
    assert_success(&c.reply().await.expect("reply"));
    assert_eq!(s.rec.requests().len(), 1);
}

#[tokio::test]
async fn peer_gone_mid_request_is_reported() {
    let s = start(HttpConfig::default()).await;
    let mut c = Conn::open(&s).await;
    c.send(b"POST /API HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort")
        .await;
    drop(c);
    let t0 = Instant::now();
    while s.rec.errors().is_empty() && t0.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.rec.errors(), [HttpError::Incomplete]);
    assert!(s.rec.requests().is_empty());
}

#[tokio::test]
async fn connection_cap_is_honoured() {
    let cfg = HttpConfig {
        max_connections: 1,
        ..HttpConfig::default()
    };
    let s = start(cfg).await;
    let mut first = Conn::open(&s).await;
    first.send(&post("/first", "")).await;
    assert_success(&first.reply().await.expect("first reply"));

    // The second connection completes in the kernel backlog but is not served while the first
    // one holds the only slot.
    let mut second = Conn::open(&s).await;
    second.send(&post("/second", "")).await;
    let mut probe = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(400), second.stream.read(&mut probe))
            .await
            .is_err(),
        "second connection served beyond the cap"
    );
    assert_eq!(s.rec.requests().len(), 1);

    drop(first);
    assert_success(
        &second
            .reply()
            .await
            .expect("second reply once a slot is free"),
    );
    let paths: Vec<_> = s.rec.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/first", "/second"]);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let s = start(HttpConfig::default()).await;
    let mut idle = Conn::open(&s).await;
    idle.send(&post("/API", "")).await;
    assert_success(&idle.reply().await.expect("reply"));

    // A request in flight when shutdown starts still gets its reply, with Connection: close.
    let mut busy = Conn::open(&s).await;
    busy.send(b"POST /API HTTP/1.1\r\nContent-Length: 4\r\n\r\nab")
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.token.cancel();
    idle.closed_within(WAIT).await;
    busy.send(b"cd").await;
    let reply = busy.reply().await.expect("reply to the request in flight");
    assert_success(&reply);
    assert_eq!(reply.header("Connection"), Some("close"));
    busy.closed_within(WAIT).await;

    let result = timeout(WAIT, s.task)
        .await
        .expect("serve did not return")
        .expect("serve panicked");
    assert!(result.is_ok());
    assert!(
        TcpStream::connect(s.addr).await.is_err(),
        "listener still open after shutdown"
    );
    assert_eq!(&s.rec.requests()[1].body[..], b"abcd");
}

#[tokio::test]
async fn shutdown_grace_bounds_stuck_requests() {
    let cfg = HttpConfig {
        shutdown_grace: Duration::from_millis(200),
        ..HttpConfig::default()
    };
    let s = start(cfg).await;
    let mut stuck = Conn::open(&s).await;
    stuck
        .send(b"POST /API HTTP/1.1\r\nContent-Length: 4\r\n\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    s.token.cancel();
    timeout(WAIT, s.task)
        .await
        .expect("serve did not return")
        .expect("serve panicked")
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2));
    stuck.closed_within(WAIT).await;
}
