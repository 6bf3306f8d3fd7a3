//! Outbound HTTP: the process's one `reqwest::Client`, on rustls with the ring provider (no
//! aws-lc). Today it asks the Supervisor API for the MQTT service ([`crate::addon`]) and serves
//! `camqtt healthcheck` (`GET /healthz` on the receiver). The snapshot poller and detector
//! clients planned next should use [`client`] too rather than build their own.
//!
//! The client keeps the habits of the hand-written one it replaced: no proxy (not even
//! `HTTP_PROXY`), no redirects, `User-Agent: camqtt/<version>`, and a fresh connection per
//! request (no idle pool; this also lets tests and `healthcheck` use it from more than one
//! tokio runtime). Timeouts: [`CONNECT_TIMEOUT`] to connect, [`DEFAULT_TIMEOUT`] for a whole
//! request unless the caller sets its own with `RequestBuilder::timeout` (which covers reading
//! the body too). Read bodies with [`read_body`], which caps their size.

use std::sync::OnceLock;
use std::time::Duration;

/// Longest wait for a connection (name lookup, TCP and, for `https`, TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request timeout when the caller sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Size cap for small JSON answers (Supervisor API, `/healthz`): 1 MiB.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// Why a request got no usable answer. The text never contains the URL (which may carry
/// credentials) or a request header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Building the client, connecting, sending, receiving or a timeout: reqwest's error and
    /// its causes (`error sending request: client error (Connect): tcp connect error: …`).
    #[error("{0}")]
    Transport(String),
    /// The body is larger than the caller's cap (bytes).
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> Self {
        let e = e.without_url();
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        FetchError::Transport(text)
    }
}

/// The shared client, built on first use; cheap to clone (an `Arc` inside).
pub fn client() -> Result<reqwest::Client, FetchError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c.clone());
    }
    // reqwest's `rustls-no-provider` uses rustls' process-wide provider and panics without
    // one. `Err` here means one is installed already, which is fine.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let built = reqwest::Client::builder()
        .user_agent(concat!("camqtt/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(DEFAULT_TIMEOUT)
        .build()?;
    Ok(CLIENT.get_or_init(|| built).clone())
}

/// The whole body of `resp`, or [`FetchError::TooLarge`] as soon as it exceeds `limit` bytes
/// (by `Content-Length` or by what arrived).
pub async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, FetchError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(FetchError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(FetchError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One-shot server: reads a request head, answers `reply`, closes.
    async fn serve_once(reply: &'static [u8]) -> (String, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut b).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&b[..n]);
            }
            s.write_all(reply).await.unwrap();
            String::from_utf8_lossy(&head).into_owned()
        });
        (url, task)
    }

    #[tokio::test]
    async fn chunked_answer_user_agent_and_size_cap() {
        let (url, head) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n",
        )
        .await;
        let resp = client()
            .unwrap()
            .get(format!("{url}/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(read_body(resp, 9).await.unwrap(), b"Wikipedia");
        let head = head.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /x http/1.1\r\n"), "{head}");
        assert!(head.contains("user-agent: camqtt/"), "{head}");

        let (url, _) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789").await;
        let resp = client().unwrap().get(url).send().await.unwrap();
        assert_eq!(read_body(resp, 9).await, Err(FetchError::TooLarge(9)));
        let (url, _) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
        )
        .await;
        let resp = client().unwrap().get(url).send().await.unwrap();
        assert_eq!(read_body(resp, 9).await, Err(FetchError::TooLarge(9)));
    }

    #[tokio::test]
    async fn redirects_are_not_followed_and_errors_name_no_url() {
        let (url, _) = serve_once(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        let resp = client().unwrap().get(url).send().await.unwrap();
        assert_eq!(resp.status(), 302);

        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let err = client()
            .unwrap()
            .get(format!("http://user:hunter2@127.0.0.1:{port}/x"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(FetchError::from)
            .unwrap_err()
            .to_string();
        assert!(err.contains("onnect"), "{err}");
        assert!(
            !err.contains("hunter2") && !err.contains("127.0.0.1"),
            "{err}"
        );
    }
}
