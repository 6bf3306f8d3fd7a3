//! One warning per peer per window for problems a misconfigured device repeats on every
//! attempt. PURE: no I/O; the caller passes the time.
//!
//! A camera set to `https` posting to the plain-HTTP receiver (or the other way round, or one
//! that does not trust the receiver's certificate) fails the same way on every event and every
//! heartbeat, several times a minute. The first occurrence is worth a warning that names the
//! cause and the fix; the rest would bury it. [`LogThrottle`] answers "log this one?" per
//! `(notice, peer address)`, and reports how many were held back since the last line, so the
//! next line can say so. Every occurrence is still counted in the statistics by the caller.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a peer's repeated notice stays quiet after one line: five minutes.
pub const NOTICE_WINDOW: Duration = Duration::from_secs(300);

/// Peers remembered at most; beyond it the entry logged longest ago is forgotten (so a flood
/// from many addresses costs bounded memory, and a forgotten peer merely logs again).
pub const NOTICE_PEERS: usize = 1024;

/// The kinds of throttled notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notice {
    /// A TLS handshake on a plain-HTTP connection.
    TlsOnPlainPort,
    /// A plain-HTTP request on an HTTPS-only port.
    PlainHttpOnTlsPort,
    /// A TLS handshake that failed (garbage, no common version or cipher suite, the client
    /// rejected the certificate, timeout).
    TlsHandshakeFailed,
    /// An HTTP request refused for a framing error that is the client's fault (a size or time
    /// limit, a malformed request).
    RequestRefused,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    logged_at: Instant,
    suppressed: u64,
}

/// Remembers when each `(notice, peer)` was last logged. See the module documentation.
#[derive(Debug)]
pub struct LogThrottle {
    window: Duration,
    cap: usize,
    seen: HashMap<(Notice, IpAddr), Entry>,
}

impl Default for LogThrottle {
    /// [`NOTICE_WINDOW`] and [`NOTICE_PEERS`].
    fn default() -> Self {
        LogThrottle::new(NOTICE_WINDOW, NOTICE_PEERS)
    }
}

impl LogThrottle {
    /// A throttle that logs each `(notice, peer)` at most once per `window`, remembering at
    /// most `cap` (at least 1) of them.
    pub fn new(window: Duration, cap: usize) -> Self {
        LogThrottle {
            window,
            cap: cap.max(1),
            seen: HashMap::new(),
        }
    }

    /// Record one occurrence of `notice` from `peer` at `now`. `Some(n)`: log it, `n` earlier
    /// occurrences were held back since the last line for this peer (0 the first time).
    /// `None`: held back (the peer was logged less than a window ago).
    ///
    /// IPv4-mapped IPv6 addresses count as their IPv4 address (a dual-stack listener sees
    /// `::ffff:192.168.1.20`).
    pub fn check(&mut self, notice: Notice, peer: IpAddr, now: Instant) -> Option<u64> {
        let key = (notice, peer.to_canonical());
        if let Some(e) = self.seen.get_mut(&key) {
            if now.saturating_duration_since(e.logged_at) < self.window {
                e.suppressed = e.suppressed.saturating_add(1);
                return None;
            }
            let held = e.suppressed;
            *e = Entry {
                logged_at: now,
                suppressed: 0,
            };
            return Some(held);
        }
        if self.seen.len() >= self.cap {
            let window = self.window;
            self.seen
                .retain(|_, e| now.saturating_duration_since(e.logged_at) < window);
        }
        if self.seen.len() >= self.cap
            && let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(_, e)| e.logged_at)
                .map(|(k, _)| *k)
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(
            key,
            Entry {
                logged_at: now,
                suppressed: 0,
            },
        );
        Some(0)
    }

    /// Peers currently remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// `true` when no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn once_per_peer_per_window_with_the_held_back_count() {
        let t0 = Instant::now();
        let mut t = LogThrottle::new(Duration::from_secs(300), 16);
        let a = ip("192.168.1.20");
        assert_eq!(t.check(Notice::TlsOnPlainPort, a, t0), Some(0));
        assert_eq!(
            t.check(Notice::TlsOnPlainPort, a, t0 + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            t.check(Notice::TlsOnPlainPort, a, t0 + Duration::from_secs(299)),
            None
        );
        // Another peer, another notice: their own lines.
        assert_eq!(
            t.check(Notice::TlsOnPlainPort, ip("192.168.1.21"), t0),
            Some(0)
        );
        assert_eq!(t.check(Notice::TlsHandshakeFailed, a, t0), Some(0));
        // After the window: logged again, saying two were held back.
        assert_eq!(
            t.check(Notice::TlsOnPlainPort, a, t0 + Duration::from_secs(300)),
            Some(2)
        );
        assert_eq!(
            t.check(Notice::TlsOnPlainPort, a, t0 + Duration::from_secs(301)),
            None
        );
    }

    #[test]
    fn mapped_ipv6_is_the_same_peer() {
        let t0 = Instant::now();
        let mut t = LogThrottle::default();
        assert_eq!(
            t.check(Notice::PlainHttpOnTlsPort, ip("10.0.0.5"), t0),
            Some(0)
        );
        assert_eq!(
            t.check(Notice::PlainHttpOnTlsPort, ip("::ffff:10.0.0.5"), t0),
            None
        );
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut t = LogThrottle::new(Duration::from_secs(300), 4);
        for i in 0..100u8 {
            let now = t0 + Duration::from_millis(u64::from(i));
            assert_eq!(
                t.check(Notice::TlsOnPlainPort, IpAddr::from([10, 0, 0, i]), now),
                Some(0)
            );
            assert!(t.len() <= 4);
        }
        // The most recent peers are still remembered, the oldest were forgotten.
        let now = t0 + Duration::from_secs(1);
        assert_eq!(t.check(Notice::TlsOnPlainPort, ip("10.0.0.99"), now), None);
        assert_eq!(
            t.check(Notice::TlsOnPlainPort, ip("10.0.0.0"), now),
            Some(0)
        );
    }
}
