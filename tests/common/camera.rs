//! A camera's side of the Viewtron HTTP push, over real sockets: request builders (plain,
//! chunked, any header order), a Content-Length framed response reader, and fixture images.
//!
//! Usage:
//! ```ignore
//! use common::camera::{self, REPLY};
//! let mut s = tokio::net::TcpStream::connect(addr).await?;
//! let r = camera::exchange(&mut s, &camera::post("/API", body.as_bytes())).await;
//! assert_eq!((r.status.as_str(), r.body.as_slice()), ("HTTP/1.1 200 OK", REPLY));
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The success document the bridge answers every post with.
pub const REPLY: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><config version=\"1.0\" xmlns=\"http://www.ipc.com/ver10\"><status>success</status></config>";

/// How long the panicking helpers wait for a reply.
pub const T: Duration = Duration::from_secs(10);

/// A fixture image from `tests/fixtures/viewtron/images`.
pub fn image(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/viewtron/images")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A valid JPEG of about `size` bytes: the small fixture with comment segments inserted
/// after SOI, so the file is as large as a real 4K overview.
pub fn big_jpeg(size: usize) -> Vec<u8> {
    let small = image("overview.jpg");
    let mut out = vec![0xFF, 0xD8];
    let mut n = 0u8;
    while out.len() + small.len() < size {
        let chunk = 65_000usize;
        out.extend_from_slice(&[0xFF, 0xFE]);
        out.extend_from_slice(&((chunk + 2) as u16).to_be_bytes());
        out.extend((0..chunk).map(|i| (i as u8).wrapping_add(n)));
        n = n.wrapping_add(1);
    }
    out.extend_from_slice(&small[2..]);
    out
}

/// Standard base64.
pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// base64 wrapped at 76 columns, as some firmware (and MIME) does.
pub fn b64_wrapped(data: &[u8]) -> String {
    b64(data)
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// An `Authorization` header value for HTTP Basic auth.
pub fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", b64(format!("{user}:{pass}").as_bytes()))
}

/// The device-id level the bridge derives from a MAC (`58:5B:69:AA:00:01` →
/// `58_5b_69_aa_00_01`).
pub fn mac_slug(mac: &str) -> String {
    mac.to_ascii_lowercase().replace([':', '-'], "_")
}

/// A minimal IPC (config 1.7) perimeter-intrusion start from `mac`: no XML declaration, no
/// images.
pub fn intrusion(mac: &str) -> String {
    format!(
        r#"<config version="1.7" xmlns="http://www.ipc.com/ver10">
<smartType type="openAlramObj">PEA</smartType>
<currentTime type="tint64">1790000300000000</currentTime>
<mac type="string">{mac}</mac>
<perimeter><perInfo type="list" count="1"><item><eventId type="uint32">5</eventId><targetId type="uint32">9</targetId>
<status type="perStatus">SMART_START</status></item></perInfo></perimeter>
</config>"#
    )
}

/// A request head: `POST <target> HTTP/1.1`, each of `headers` (whole lines without CRLF) in
/// order, and the blank line.
pub fn head(target: &str, headers: &[&str]) -> Vec<u8> {
    let mut r = format!("POST {target} HTTP/1.1\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// A post with `headers` (whole lines, in order), then `Content-Length`, then `body`.
pub fn post_with(target: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let length = format!("Content-Length: {}", body.len());
    let mut r = head(target, &[headers, &[length.as_str()]].concat());
    r.extend_from_slice(body);
    r
}

/// Post `body` to `/API` on a one-shot connection (`Connection: close`) and assert the
/// camera got its `200`.
pub async fn post_ok(addr: SocketAddr, body: &[u8]) {
    let request = post_with("/API", &["Host: 127.0.0.1", "Connection: close"], body);
    let reply = send_close(addr, &request).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

/// Post the fixture `tests/fixtures/viewtron/<fixture>` to `http://<addr>/API` with curl (a
/// real HTTP client; it blocks, so call it in `block_in_place` from a test's runtime) and
/// assert the camera got its `200`.
pub fn curl_fixture(addr: SocketAddr, fixture: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/viewtron")
        .join(fixture);
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--data-binary",
        ])
        .arg(format!("@{}", path.display()))
        .arg(format!("http://{addr}/API"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{fixture}");
}

/// A plain post: `Host: 127.0.0.1`, `Content-Type: application/xml`, `Content-Length`.
pub fn post(target: &str, body: &[u8]) -> Vec<u8> {
    post_with(
        target,
        &["Host: 127.0.0.1", "Content-Type: application/xml"],
        body,
    )
}

/// `body` in the chunked transfer coding: chunks of `size` bytes, then the last chunk.
pub fn chunks(body: &[u8], size: usize) -> Vec<u8> {
    let mut r = Vec::with_capacity(body.len() + body.len() / size.max(1) * 12 + 5);
    for c in body.chunks(size) {
        r.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        r.extend_from_slice(c);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

/// Chunked, with the NVR's habits: absolute-form target, no space after the colons,
/// `application/soap+xml`, and a bogus `Content-Length: 0` that Transfer-Encoding overrides.
pub fn post_chunked_absolute(addr: SocketAddr, body: &[u8], chunk_size: usize) -> Vec<u8> {
    let host = format!("Host:{addr}");
    let mut r = head(
        &format!("http://{addr}/API"),
        &[
            &host,
            "Content-Type:application/soap+xml; charset=utf-8",
            "Content-Length:0",
            "Transfer-Encoding:chunked",
        ],
    );
    r.extend(chunks(body, chunk_size));
    r
}

/// One HTTP response: status line, header block (with the status line), body.
#[derive(Debug)]
pub struct Response {
    /// The status line, e.g. `HTTP/1.1 200 OK`.
    pub status: String,
    /// Everything up to and including the blank line.
    pub head: String,
    /// Exactly `Content-Length` bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The status code (0 when the status line has none).
    pub fn code(&self) -> u16 {
        self.status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// The same response with status line and head lower-cased (header names and the reason
    /// phrase are case-insensitive).
    pub fn lowercased(self) -> Response {
        Response {
            status: self.status.to_ascii_lowercase(),
            head: self.head.to_ascii_lowercase(),
            body: self.body,
        }
    }
}

/// Read one Content-Length framed response, waiting until `end` (forever with `None`); `Err`
/// when the connection closes or fails first, or time runs out. `s` is a `TcpStream` or its
/// read half (pipelined requests).
pub async fn read_response_until<R: AsyncRead + Unpin>(
    s: &mut R,
    end: Option<tokio::time::Instant>,
) -> Result<Response, String> {
    async fn read_some<R: AsyncRead + Unpin>(
        s: &mut R,
        tmp: &mut [u8],
        end: Option<tokio::time::Instant>,
    ) -> Result<usize, String> {
        let read = match end {
            Some(end) => tokio::time::timeout_at(end, s.read(tmp))
                .await
                .map_err(|_| "no reply in time".to_string())?,
            None => s.read(tmp).await,
        };
        read.map_err(|e| format!("read: {e}"))
    }

    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match read_some(s, &mut tmp, end).await? {
            0 => return Err("closed before a reply".into()),
            n => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .and_then(|v| v.trim().parse().ok())
        })
        .ok_or("no content-length")?;
    while buf.len() < head_end + len {
        match read_some(s, &mut tmp, end).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&tmp[..n]),
            _ => return Err("reply body cut".into()),
        }
    }
    Ok(Response {
        status: head.lines().next().unwrap_or_default().to_string(),
        body: buf[head_end..head_end + len].to_vec(),
        head,
    })
}

/// Read one Content-Length framed response within `within`.
pub async fn read_response(s: &mut TcpStream, within: Duration) -> Result<Response, String> {
    read_response_until(s, Some(tokio::time::Instant::now() + within)).await
}

/// Read one response within [`T`]; panics when there is none.
pub async fn reply(s: &mut TcpStream) -> Response {
    read_response(s, T)
        .await
        .unwrap_or_else(|e| panic!("reading the reply: {e}"))
}

/// Write one request and read its response within [`T`]; panics when there is none.
pub async fn exchange(s: &mut TcpStream, request: &[u8]) -> Response {
    s.write_all(request).await.expect("write");
    reply(s).await
}

/// Send one camera post of `body` on a keep-alive connection and read the reply, with no time
/// limit: the status code, or why there is none (the bridge went away under the post).
pub async fn post_keep_alive(s: &mut TcpStream, body: &str) -> Result<u16, String> {
    let request = post_with(
        "/API",
        &[
            "Host: camqtt",
            "Content-Type: application/xml",
            "Connection: keep-alive",
        ],
        body.as_bytes(),
    );
    s.write_all(&request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    Ok(read_response_until(s, None).await?.code())
}

/// Connect, write `request` (which should say `Connection: close`) and read until the server
/// closes, within [`T`]. Returns all the bytes received.
pub async fn send_close(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut reply = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut reply))
        .await
        .expect("reply in time")
        .expect("read");
    reply
}

/// Wait until the server closes `s` (EOF or reset), discarding what it sends; returns when, or
/// `None` when it is still open after `within`.
pub async fn wait_closed(s: &mut TcpStream, within: Duration) -> Option<Instant> {
    let mut tmp = [0u8; 8192];
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut tmp)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => {}
        }
    }
}

/// An IPC (config 1.7) licence-plate post (`VEHICE`): an overview item (`image` 0) and the
/// plate item (`image` 1) with its crop; device name `Gate camera`.
pub fn ipc_lpr(mac: &str, plate: &str, overview: &[u8], crop: &[u8]) -> String {
    ipc_lpr_b64(mac, plate, &b64(overview), &b64(crop))
}

/// [`ipc_lpr`] with the two images given as base64 text as it goes into the post (bad or
/// empty base64 for hostile-input tests).
pub fn ipc_lpr_b64(mac: &str, plate: &str, overview_b64: &str, crop_b64: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<config version="1.7" xmlns="http://www.ipc.com/ver10">
<smartType type="openAlarmObj">VEHICE</smartType>
<currentTime type="tint64">1790000000250000</currentTime>
<mac type="string"><![CDATA[{mac}]]></mac>
<deviceName type="string"><![CDATA[Gate camera]]></deviceName>
<plateCount type="uint32">1</plateCount>
<listInfo type="list" count="2">
<item><image type="uint32">0</image><vehiceId type="uint32">0</vehiceId><plateNumber type="string"></plateNumber>
<targetImageData><dataType type="uint32">0</dataType><targetBase64Data type="string">{overview_b64}</targetBase64Data></targetImageData></item>
<item><image type="uint32">1</image><vehiceId type="uint32">7</vehiceId><plateNumber type="string"><![CDATA[{plate}]]></plateNumber>
<targetImageData><dataType type="uint32">0</dataType><targetType type="targetType">car</targetType>
<targetBase64Data type="string"><![CDATA[{crop_b64}]]></targetBase64Data></targetImageData></item>
</listInfo>
</config>"#
    )
}

/// An IPC (config 1.7) perimeter-intrusion start (PEA, perimeter block) with the scene in
/// `sourceDataInfo` and the person crop in `listInfo` (protocol.md §6.3).
pub fn ipc_intrusion_with_images(mac: &str, overview: &[u8], crop: &[u8]) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<config version="1.7" xmlns="http://www.ipc.com/ver10">
<smartType type="openAlramObj">PEA</smartType>
<currentTime type="tint64">1790000400000000</currentTime>
<mac type="string">{mac}</mac>
<deviceName type="string"><![CDATA[Side gate]]></deviceName>
<perimeter><perInfo type="list" count="1"><item><eventId type="uint32">77</eventId><targetId type="uint32">12</targetId>
<status type="perStatus">SMART_START</status></item></perInfo></perimeter>
<sourceDataInfo><dataType type="uint32">0</dataType><width type="uint32">2560</width><height type="uint32">1440</height>
<sourceBase64Data type="string">{ov}</sourceBase64Data></sourceDataInfo>
<listInfo type="list" count="1"><item><targetId type="uint32">12</targetId>
<targetImageData><dataType type="uint32">0</dataType><targetType type="uint32">1</targetType><Width type="uint32">120</Width><Height type="uint32">240</Height>
<targetBase64Data type="string">{crop}</targetBase64Data></targetImageData></item></listInfo>
</config>"#,
        ov = b64(overview),
        crop = b64(crop),
    )
}
