//! A minimal HTTP/1.1 client: one `GET` over a fresh connection (`Connection: close`), for
//! the Supervisor API and `camqtt healthcheck`. The response parser is pure; the chunk-size
//! grammar is the one the request framer uses.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response accepted.
const MAX_RESPONSE: usize = 1024 * 1024;

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order (names as sent).
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

/// Result of [`parse_response`] on the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The whole response is there.
    Complete(HttpResponse),
    /// More bytes are needed.
    Incomplete,
}

/// A response that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Bad status line or headers.
    #[error("malformed response head: {0}")]
    Head(String),
    /// Bad `Content-Length` or chunk framing.
    #[error("malformed body framing: {0}")]
    Framing(String),
    /// The connection closed before the body was complete.
    #[error("connection closed before the response was complete")]
    Truncated,
    /// Bigger than the limit.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

/// Parse an HTTP/1.1 response from `buf`. `eof`: the peer closed the connection, so a body
/// without `Content-Length` or chunking ends here. Handles `Content-Length`, chunked bodies
/// (trailers skipped), bodiless statuses (1xx, 204, 304) and close-delimited bodies.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Parsed, ResponseError> {
    if buf.len() > MAX_RESPONSE {
        return Err(ResponseError::TooLarge(MAX_RESPONSE));
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if eof {
                Err(ResponseError::Truncated)
            } else {
                Ok(Parsed::Incomplete)
            };
        }
        Err(e) => return Err(ResponseError::Head(e.to_string())),
    };
    let status = resp
        .code
        .ok_or_else(|| ResponseError::Head("no status code".into()))?;
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).trim().to_owned(),
            )
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    let rest = &buf[head_len..];
    let done = |body: Vec<u8>| {
        Ok(Parsed::Complete(HttpResponse {
            status,
            headers: headers.clone(),
            body,
        }))
    };
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return done(Vec::new());
    }
    let chunked = header("transfer-encoding").iter().any(|v| {
        v.to_ascii_lowercase()
            .split(',')
            .any(|t| t.trim() == "chunked")
    });
    if chunked {
        return match decode_chunked(rest)? {
            Some(body) => done(body),
            None if eof => Err(ResponseError::Truncated),
            None => Ok(Parsed::Incomplete),
        };
    }
    let lengths = header("content-length");
    if let Some(first) = lengths.first() {
        if lengths.iter().any(|l| l != first) {
            return Err(ResponseError::Framing("conflicting Content-Length".into()));
        }
        let len: usize = first
            .parse()
            .map_err(|_| ResponseError::Framing(format!("Content-Length {first:?}")))?;
        if len > MAX_RESPONSE {
            return Err(ResponseError::TooLarge(MAX_RESPONSE));
        }
        return if rest.len() >= len {
            done(rest[..len].to_vec())
        } else if eof {
            Err(ResponseError::Truncated)
        } else {
            Ok(Parsed::Incomplete)
        };
    }
    if eof {
        done(rest.to_vec())
    } else {
        Ok(Parsed::Incomplete)
    }
}

/// De-chunk a complete chunked body; `None` when more bytes are needed.
fn decode_chunked(mut buf: &[u8]) -> Result<Option<Vec<u8>>, ResponseError> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(buf, b"\r\n") else {
            if buf.len() > 1024 {
                return Err(ResponseError::Framing("chunk size line too long".into()));
            }
            return Ok(None);
        };
        let size = super::request::parse_chunk_size(&buf[..eol])
            .map_err(|e| ResponseError::Framing(e.to_string()))?;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        buf = &buf[eol + 2..];
        if size == 0 {
            // Trailers: header lines up to an empty line.
            loop {
                let Some(eol) = find(buf, b"\r\n") else {
                    return Ok(None);
                };
                if eol == 0 {
                    return Ok(Some(body));
                }
                buf = &buf[eol + 2..];
            }
        }
        if size > MAX_RESPONSE || body.len() + size > MAX_RESPONSE {
            return Err(ResponseError::TooLarge(MAX_RESPONSE));
        }
        if buf.len() < size + 2 {
            return Ok(None);
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(ResponseError::Framing("chunk not followed by CRLF".into()));
        }
        body.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `http://host[:port][/base]` + `path` → (host, port, request target). Only plain HTTP:
/// the Supervisor API is plain HTTP on the add-on network.
pub fn split_http_url(base: &str, path: &str) -> Result<(String, u16, String), String> {
    let rest = base
        .trim()
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base:?}: only http:// URLs are supported"))?;
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{base:?}: expected http://host[:port]"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{base:?}: unclosed ["))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{base:?}: bad port"))?,
            None if after.is_empty() => 80,
            None => return Err(format!("{base:?}: bad authority")),
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse().map_err(|_| format!("{base:?}: bad port"))?,
            ),
            None => (authority.to_owned(), 80),
        }
    };
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    Ok((host, port, format!("{prefix}{path}")))
}

/// Minimal HTTP/1.1 GET (`Connection: close`) with an overall `timeout`.
pub async fn http_get(
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let (host, port, target) = split_http_url(base, path)?;
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else if port == 80 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let work = async {
        let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let mut req = format!(
            "GET {target} HTTP/1.1\r\nHost: {host_header}\r\nAccept: application/json\r\nUser-Agent: camqtt/{}\r\nConnection: close\r\n",
            env!("CARGO_PKG_VERSION")
        );
        for (k, v) in headers {
            req.push_str(k);
            req.push_str(": ");
            req.push_str(v);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 8192];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            buf.extend_from_slice(&chunk[..n]);
            match parse_response(&buf, n == 0).map_err(|e| e.to_string())? {
                Parsed::Complete(r) => return Ok(r),
                Parsed::Incomplete if n == 0 => return Err("connection closed early".into()),
                Parsed::Incomplete => {}
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no complete answer within {} s", timeout.as_secs_f64()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_with_content_length() {
        let r =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..r.len() {
            assert_eq!(
                parse_response(&r[..cut], false),
                Ok(Parsed::Incomplete),
                "cut {cut}"
            );
            assert_eq!(
                parse_response(&r[..cut], true),
                Err(ResponseError::Truncated),
                "cut {cut}"
            );
        }
        let Ok(Parsed::Complete(resp)) = parse_response(r, false) else {
            panic!()
        };
        assert_eq!((resp.status, resp.body.as_slice()), (200, &b"hello"[..]));
        assert_eq!(
            resp.headers[0],
            ("Content-Type".into(), "application/json".into())
        );
        let bad = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
        assert!(matches!(
            parse_response(bad, false),
            Err(ResponseError::Framing(_))
        ));
        let bad = b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n";
        assert!(matches!(
            parse_response(bad, false),
            Err(ResponseError::Framing(_))
        ));
        assert!(matches!(
            parse_response(b"SSH-2.0-x\r\n\r\n", false),
            Err(ResponseError::Head(_))
        ));
    }

    #[test]
    fn response_chunked_with_extensions_and_trailers() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for cut in 0..r.len() {
            assert_eq!(
                parse_response(&r[..cut], false),
                Ok(Parsed::Incomplete),
                "cut {cut}"
            );
        }
        let Ok(Parsed::Complete(resp)) = parse_response(r, false) else {
            panic!()
        };
        assert_eq!(resp.body, b"Wikipedia");
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(matches!(parse_response(r, false), Ok(Parsed::Complete(x)) if x.body.is_empty()));
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(matches!(
            parse_response(bad, false),
            Err(ResponseError::Framing(_))
        ));
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n";
        assert!(matches!(
            parse_response(bad, false),
            Err(ResponseError::Framing(_))
        ));
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\n";
        assert!(matches!(
            parse_response(huge, false),
            Err(ResponseError::TooLarge(_))
        ));
    }

    #[test]
    fn response_close_delimited_and_bodiless() {
        let r = b"HTTP/1.0 400 Bad Request\r\n\r\n{\"result\":\"error\"}";
        assert_eq!(parse_response(r, false), Ok(Parsed::Incomplete));
        let Ok(Parsed::Complete(resp)) = parse_response(r, true) else {
            panic!()
        };
        assert_eq!((resp.status, resp.body.len()), (400, 18));
        let r = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert!(matches!(parse_response(r, false), Ok(Parsed::Complete(x)) if x.status == 204));
    }

    #[test]
    fn supervisor_urls() {
        assert_eq!(
            split_http_url("http://supervisor", "/services/mqtt"),
            Ok(("supervisor".into(), 80, "/services/mqtt".into()))
        );
        assert_eq!(
            split_http_url("http://127.0.0.1:8080/api/", "services/mqtt"),
            Ok(("127.0.0.1".into(), 8080, "/api/services/mqtt".into()))
        );
        assert_eq!(
            split_http_url("http://[::1]:81", "/x"),
            Ok(("::1".into(), 81, "/x".into()))
        );
        assert!(split_http_url("https://supervisor", "/x").is_err());
        assert!(split_http_url("http://h:notaport", "/x").is_err());
        assert!(split_http_url("http://", "/x").is_err());
    }
}
