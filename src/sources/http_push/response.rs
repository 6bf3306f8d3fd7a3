//! HTTP responses and their wire encoding. PURE: no I/O.

use bytes::{BufMut, Bytes, BytesMut};

/// A response written by the server after [`super::Handler::handle`] returns.
///
/// The server adds `Content-Length` and `Connection` itself; handler headers with those names
/// (or `Transfer-Encoding`) are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, e.g. `200`.
    pub status: u16,
    /// Reason phrase, e.g. `"OK"`.
    pub reason: &'static str,
    /// Extra header fields, e.g. `("Content-Type", "application/xml".into())`.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// A response with no extra headers.
    pub fn new(status: u16, reason: &'static str, body: impl Into<Bytes>) -> Self {
        Response {
            status,
            reason,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Add a header field (builder style).
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Encode the status line, headers and body.
    ///
    /// `close` adds `Connection: close`, otherwise `Connection: keep-alive` is sent.
    /// `head_only` (a reply to `HEAD`) keeps `Content-Length` but leaves the body out.
    pub fn encode(&self, close: bool, head_only: bool) -> BytesMut {
        let mut out = BytesMut::with_capacity(128 + self.body.len());
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(self.status.to_string().as_bytes());
        out.put_u8(b' ');
        out.put_slice(sanitise(self.reason).as_bytes());
        out.put_slice(b"\r\n");
        for (name, value) in &self.headers {
            if ["content-length", "connection", "transfer-encoding"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
            {
                continue;
            }
            out.put_slice(sanitise(name).as_bytes());
            out.put_slice(b": ");
            out.put_slice(sanitise(value).as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"Content-Length: ");
        out.put_slice(self.body.len().to_string().as_bytes());
        out.put_slice(b"\r\n");
        out.put_slice(if close {
            &b"Connection: close\r\n"[..]
        } else {
            &b"Connection: keep-alive\r\n"[..]
        });
        out.put_slice(b"\r\n");
        if !head_only {
            out.put_slice(&self.body);
        }
        out
    }
}

/// Drop CR and LF so a header value can never split the response.
fn sanitise(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\r', '\n']) {
        s.replace(['\r', '\n'], "").into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_status_headers_length_and_connection() {
        let r = Response::new(200, "OK", &b"<x/>"[..])
            .with_header("Content-Type", "application/xml")
            .with_header("content-length", "999")
            .with_header("X-Evil", "a\r\nInjected: 1");
        let wire = r.encode(false, false);
        assert_eq!(
            &wire[..],
            &b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nX-Evil: aInjected: 1\r\nContent-Length: 4\r\nConnection: keep-alive\r\n\r\n<x/>"[..]
        );
        let wire = r.encode(true, true);
        assert!(wire.ends_with(b"Content-Length: 4\r\nConnection: close\r\n\r\n"));
    }
}
