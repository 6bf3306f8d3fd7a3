//! How large a publish may be, and which publishes the broker will never take (sans-IO).
//!
//! A broker refuses a packet over its limit by closing the connection (Mosquitto
//! `max_packet_size`, EMQX `max_packet_size`, AWS IoT 128 KB; MQTT 5 §3.1.2.11.4 and §4.13).
//! Re-sending such a packet after the reconnect closes the connection again, forever. So:
//! * [`PacketLimit`] knows the limit where it can — `[mqtt] max_packet_size`, the broker's
//!   MQTT 5 CONNACK (Maximum Packet Size, §3.2.2.3.6), or what a repeated disconnect taught —
//!   and every publish is measured with [`publish_packet_size`] before it is sent;
//! * [`KillGuard`] handles brokers that do not say (MQTT 3.1.1, or a refusal that is not about
//!   size): after a connection dropped with publishes in flight, those are sent again one at a
//!   time; one that is alone in flight when the connection drops again has killed it twice in
//!   a row and is set aside (reported, kept on disk) instead of being tried a third time.

use std::collections::HashSet;

use super::link::{PROTOCOL_MAX_PACKET, Protocol};

/// Number of bytes of the MQTT variable byte integer encoding `n` (MQTT 5 §1.5.5).
fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Size in bytes of a QoS 1 PUBLISH packet with no properties: fixed header (1 byte + remaining
/// length), topic (2-byte length + UTF-8), packet identifier (2), MQTT 5 property length (1),
/// payload. MQTT 3.1.1 §3.3, MQTT 5 §3.3.
pub fn publish_packet_size(protocol: Protocol, topic_len: usize, payload_len: usize) -> usize {
    let properties = match protocol {
        Protocol::V5 => 1,
        Protocol::V311 => 0,
    };
    let remaining = 2 + topic_len + 2 + properties + payload_len;
    1 + varint_len(remaining) + remaining
}

/// Where the packet limit in force comes from (for log lines and `bridge/info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    /// `[mqtt] max_packet_size`.
    Configured,
    /// The broker's MQTT 5 CONNACK.
    Broker,
    /// Learned: a packet of that size closed the connection twice in a row.
    Learned,
}

impl LimitSource {
    /// A short phrase for log lines.
    pub fn describe(self) -> &'static str {
        match self {
            LimitSource::Configured => "mqtt.max_packet_size",
            LimitSource::Broker => "the broker's announced maximum packet size",
            LimitSource::Learned => "learned from the broker closing the connection",
        }
    }
}

/// The largest packet the broker takes, as far as the bridge knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketLimit {
    protocol: Protocol,
    configured: Option<usize>,
    announced: Option<usize>,
    learned: Option<usize>,
}

impl PacketLimit {
    /// Only the configured limit (before the first connection).
    pub fn new(protocol: Protocol, configured: Option<usize>) -> PacketLimit {
        PacketLimit {
            protocol,
            configured,
            announced: None,
            learned: None,
        }
    }

    /// A (re)connection: the protocol in use and the broker's announced limit, if any. A
    /// learned limit is kept (the broker is the same one).
    pub fn connected(&mut self, protocol: Protocol, announced: Option<usize>) {
        self.protocol = protocol;
        self.announced = announced;
    }

    /// The publish `key` closed the connection twice: no payload that large is sent again, on
    /// any topic (the limit becomes the smallest packet such a payload makes, minus one).
    /// Returns the new limit when it lowered it. The limit only ever goes down, and never below
    /// `known_good` (a packet size the broker has acknowledged); a publish no larger than that
    /// teaches nothing about size.
    pub fn learn(&mut self, key: &PublishKey, known_good: usize) -> Option<usize> {
        if key.packet <= known_good {
            return None;
        }
        let candidate = (publish_packet_size(self.protocol, 0, key.len) - 1).max(known_good);
        if self.learned.is_some_and(|l| l <= candidate) {
            return None;
        }
        self.learned = Some(candidate);
        Some(candidate)
    }

    /// The protocol in use.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The limit in force and where it comes from; `None`: only the protocol maximum.
    pub fn max(&self) -> Option<(usize, LimitSource)> {
        [
            (self.configured, LimitSource::Configured),
            (self.announced, LimitSource::Broker),
            (self.learned, LimitSource::Learned),
        ]
        .into_iter()
        .filter_map(|(n, s)| n.map(|n| (n, s)))
        .min_by_key(|(n, _)| *n)
    }

    /// Size of a publish of `payload_len` bytes to a topic of `topic_len` bytes.
    pub fn packet_size(&self, topic_len: usize, payload_len: usize) -> usize {
        publish_packet_size(self.protocol, topic_len, payload_len)
    }

    /// True when a publish of `payload_len` bytes to `topic_len` fits.
    pub fn fits(&self, topic_len: usize, payload_len: usize) -> bool {
        let limit = self.max().map_or(PROTOCOL_MAX_PACKET, |(n, _)| n);
        self.packet_size(topic_len, payload_len) <= limit
    }
}

/// What identifies a publish's payload across replays and topics: its size and a fingerprint
/// of its ends (cheap for large images; a replay regenerates the same bytes). The topic is not
/// part of the identity: the same image goes to the device topic and the category topic, and a
/// payload that closes the connection does so on either. `topic` and `packet` are kept to
/// report and to learn the limit.
#[derive(Debug, Clone)]
pub struct PublishKey {
    /// Topic of the publish this key was taken from.
    pub topic: String,
    /// Payload size in bytes.
    pub len: usize,
    /// Packet size in bytes.
    pub packet: usize,
    fingerprint: u64,
}

impl PartialEq for PublishKey {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.fingerprint == other.fingerprint
    }
}

impl Eq for PublishKey {}

impl std::hash::Hash for PublishKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.len.hash(state);
        self.fingerprint.hash(state);
    }
}

impl PublishKey {
    /// The key of a publish.
    pub fn new(topic: &str, payload: &[u8], packet: usize) -> PublishKey {
        // FNV-1a over the first and last 64 bytes.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let head = &payload[..payload.len().min(64)];
        let tail = &payload[payload.len().saturating_sub(64)..];
        for b in head.iter().chain(tail) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        PublishKey {
            topic: topic.to_owned(),
            len: payload.len(),
            packet,
            fingerprint: h,
        }
    }
}

/// What [`KillGuard::on_drop`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to blame (nothing in flight, or a real outage).
    Outage,
    /// Publishes were in flight; they are retried one at a time.
    Suspect(usize),
    /// This publish was alone in flight at two drops in a row: set it aside.
    SetAside(PublishKey),
}

/// Finds publishes that close the connection every time they are sent.
#[derive(Debug, Default)]
pub struct KillGuard {
    /// Publishes in flight when the connection last dropped.
    suspects: Vec<PublishKey>,
    /// Publishes set aside; never sent again by this process.
    set_aside: HashSet<PublishKey>,
    /// Largest packet the broker has acknowledged.
    known_good: usize,
}

/// Most publishes remembered as set aside (their keys; oldest forgotten first is not needed:
/// the set is cleared when it is full, which at worst costs two more disconnects).
const SET_ASIDE_MAX: usize = 4096;

impl KillGuard {
    /// Publishes may be sent `n` at a time; 1 while suspects are being retried.
    pub fn max_in_flight(&self, normal: usize) -> usize {
        if self.suspects.is_empty() { normal } else { 1 }
    }

    /// The broker acknowledged (or refused without disconnecting) this publish.
    pub fn on_answered(&mut self, key: &PublishKey, acked: bool) {
        if acked {
            self.known_good = self.known_good.max(key.packet);
        }
        self.suspects.retain(|k| k != key);
    }

    /// Largest packet the broker has acknowledged.
    pub fn known_good(&self) -> usize {
        self.known_good
    }

    /// The connection dropped after having been up, with `in_flight` unanswered. `prompt`:
    /// the broker took the bridge back at the first attempt (it closed this connection; it
    /// was not down). A real outage clears the suspicion.
    pub fn on_drop(&mut self, in_flight: Vec<PublishKey>, prompt: bool) -> Verdict {
        if !prompt || in_flight.is_empty() {
            self.suspects.clear();
            return Verdict::Outage;
        }
        if let [only] = in_flight.as_slice()
            && self.suspects.contains(only)
        {
            let key = only.clone();
            self.suspects.retain(|k| k != &key);
            if self.set_aside.len() >= SET_ASIDE_MAX {
                self.set_aside.clear();
            }
            self.set_aside.insert(key.clone());
            return Verdict::SetAside(key);
        }
        let n = in_flight.len();
        self.suspects = in_flight;
        Verdict::Suspect(n)
    }

    /// A publish this guard has set aside.
    pub fn is_set_aside(&self, key: &PublishKey) -> bool {
        self.set_aside.contains(key)
    }

    /// True while suspects are retried one at a time.
    pub fn cautious(&self) -> bool {
        !self.suspects.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_sizes_follow_the_spec() {
        // 3.1.1: 1 + 1 + (2 + 1 + 2 + 2) for topic "a", payload "xy".
        assert_eq!(publish_packet_size(Protocol::V311, 1, 2), 9);
        // MQTT 5 adds the property length byte.
        assert_eq!(publish_packet_size(Protocol::V5, 1, 2), 10);
        // Remaining length 127 → 1 byte; 128 → 2 bytes.
        assert_eq!(publish_packet_size(Protocol::V311, 1, 122), 1 + 1 + 127);
        assert_eq!(publish_packet_size(Protocol::V311, 1, 123), 1 + 2 + 128);
        // A 160,000-byte image on a 38-byte topic does not fit 131072.
        let l = PacketLimit::new(Protocol::V311, Some(131_072));
        assert!(!l.fits(38, 160_000));
        assert!(l.fits(38, 131_072 - 38 - 4 - 4));
        assert!(!l.fits(38, 131_072 - 38 - 4 - 3));
    }

    #[test]
    fn the_smallest_limit_wins_and_learning_only_lowers_it() {
        let mut l = PacketLimit::new(Protocol::V5, Some(1_000_000));
        assert_eq!(l.max(), Some((1_000_000, LimitSource::Configured)));
        l.connected(Protocol::V5, Some(131_072));
        assert_eq!(l.max(), Some((131_072, LimitSource::Broker)));
        let big = PublishKey::new("cam/x/intrusion/image", &vec![1; 100_000], 100_030);
        let expected = publish_packet_size(Protocol::V5, 0, 100_000) - 1;
        assert_eq!(l.learn(&big, 5_000), Some(expected));
        assert_eq!(l.max(), Some((expected, LimitSource::Learned)));
        // The same payload on a shorter topic does not fit either.
        assert!(!l.fits("cam/intrusion/image".len(), 100_000));
        let bigger = PublishKey::new("t", &vec![1; 120_000], 120_010);
        assert_eq!(l.learn(&bigger, 5_000), None, "never raised");
        let small = PublishKey::new("t", &vec![1; 4_000], 4_010);
        assert_eq!(l.learn(&small, 5_000), None, "not below a size that worked");
        let open = PacketLimit::new(Protocol::V311, None);
        assert_eq!(open.max(), None);
        assert!(open.fits(10, 100_000_000));
    }

    fn key(topic: &str, len: usize) -> PublishKey {
        PublishKey::new(topic, &vec![7u8; len], len + topic.len() + 5)
    }

    #[test]
    fn a_publish_alone_in_flight_at_two_prompt_drops_is_set_aside() {
        let mut g = KillGuard::default();
        let big = key("cam/a/image", 160_000);
        let small = key("cam/a/event", 300);
        assert_eq!(g.max_in_flight(64), 64);
        assert_eq!(
            g.on_drop(vec![small.clone(), big.clone()], true),
            Verdict::Suspect(2)
        );
        assert_eq!(g.max_in_flight(64), 1);
        g.on_answered(&small, true);
        assert!(g.cautious());
        assert_eq!(
            g.on_drop(vec![big.clone()], true),
            Verdict::SetAside(big.clone())
        );
        assert!(g.is_set_aside(&big));
        assert!(!g.cautious());
        assert_eq!(g.known_good(), small.packet);
    }

    #[test]
    fn an_outage_is_not_blamed_on_a_publish() {
        let mut g = KillGuard::default();
        let big = key("cam/a/image", 160_000);
        assert_eq!(g.on_drop(vec![big.clone()], true), Verdict::Suspect(1));
        // The broker was really down (first reconnect failed): no second strike.
        assert_eq!(g.on_drop(vec![big.clone()], false), Verdict::Outage);
        assert!(!g.cautious());
        assert_eq!(g.on_drop(vec![big.clone()], true), Verdict::Suspect(1));
        assert!(!g.is_set_aside(&big));
        // Nothing in flight: nothing to blame.
        assert_eq!(g.on_drop(vec![], true), Verdict::Outage);
    }

    #[test]
    fn keys_tell_payloads_apart_whatever_the_topic() {
        let a = PublishKey::new("t", b"hello world", 20);
        let b = PublishKey::new("t", b"hello worle", 20);
        assert_ne!(a, b);
        assert_eq!(a, PublishKey::new("other/topic", b"hello world", 30));
    }
}
