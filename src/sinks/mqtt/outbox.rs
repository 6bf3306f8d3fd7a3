//! Publishes waiting to be handed to the MQTT client (pure: no I/O).

use std::collections::VecDeque;

use bytes::Bytes;
use tracing::warn;

use super::state::Action;
use crate::spool::acks::Tag;

/// Outbox bound (messages): only reached while the broker is away.
pub const OUTBOX_MAX_MESSAGES: usize = 10_000;
/// Outbox bound (payload bytes).
pub const OUTBOX_MAX_BYTES: usize = 256 * 1024 * 1024;

/// One queued publish.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// Retain flag.
    pub retain: bool,
    /// Not a state: kept (and queued again) while the broker is away.
    pub momentary: bool,
    /// An image (counted as `images_oversize` when it cannot fit).
    pub image: bool,
    /// The buffer record this publish delivers (part of).
    pub tag: Option<Tag>,
}

impl From<Action> for Pending {
    fn from(a: Action) -> Self {
        match a {
            Action::Publish {
                topic,
                payload,
                retain,
                momentary,
                image,
            } => Pending {
                topic,
                payload,
                retain,
                momentary,
                image,
                tag: None,
            },
        }
    }
}

/// Bounded FIFO of publishes not yet handed to the client.
#[derive(Debug, Default)]
pub struct Outbox {
    q: VecDeque<Pending>,
    bytes: usize,
    dropped: u64,
    /// Tags of record publishes the bound dropped (their records must not wait for them).
    lost: Vec<Tag>,
}

impl Outbox {
    /// Queue at the back; returns how many messages the bound dropped.
    pub fn push_back(&mut self, p: Pending) -> u64 {
        self.bytes += p.payload.len();
        self.q.push_back(p);
        self.enforce_bound()
    }

    /// Put `items` (in order) before everything queued; returns how many the bound dropped.
    pub fn push_front_all(&mut self, items: Vec<Pending>) -> u64 {
        for p in items.into_iter().rev() {
            self.bytes += p.payload.len();
            self.q.push_front(p);
        }
        self.enforce_bound()
    }

    /// The oldest queued publish.
    pub fn pop_front(&mut self) -> Option<Pending> {
        let p = self.q.pop_front()?;
        self.bytes -= p.payload.len();
        Some(p)
    }

    /// The link went down: drop states (they are re-published on connect) and record
    /// publishes (the records are replayed); keep other momentary messages.
    pub fn keep_momentary(&mut self) {
        self.q.retain(|p| p.momentary && p.tag.is_none());
        self.bytes = self.q.iter().map(|p| p.payload.len()).sum();
    }

    /// Drop record publishes (they are replayed).
    pub fn drop_tagged(&mut self) {
        self.q.retain(|p| p.tag.is_none());
        self.bytes = self.q.iter().map(|p| p.payload.len()).sum();
    }

    /// Tags of record publishes the bound dropped since the last call.
    pub fn take_lost(&mut self) -> Vec<Tag> {
        std::mem::take(&mut self.lost)
    }

    /// The outage bound: the oldest messages go when it is exceeded.
    fn enforce_bound(&mut self) -> u64 {
        let mut n = 0;
        while self.q.len() > OUTBOX_MAX_MESSAGES
            || (self.bytes > OUTBOX_MAX_BYTES && self.q.len() > 1)
        {
            let Some(p) = self.pop_front() else { break };
            self.dropped += 1;
            n += 1;
            self.lost.extend(p.tag);
            if self.dropped == 1 || self.dropped.is_power_of_two() {
                warn!(topic = %p.topic, dropped = self.dropped, max_messages = OUTBOX_MAX_MESSAGES, max_bytes = OUTBOX_MAX_BYTES, "MQTT broker away too long: outbox full, dropped the oldest message");
            }
        }
        n
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_drops_oldest_and_keeps_momentary() {
        let p = |t: &str, momentary: bool| Pending {
            topic: t.into(),
            payload: Bytes::from_static(b"x"),
            retain: !momentary,
            momentary,
            image: false,
            tag: None,
        };
        let mut o = Outbox::default();
        o.push_back(p("state", false));
        o.push_back(p("event", true));
        o.push_front_all(vec![p("first", false), p("second", false)]);
        assert_eq!(
            o.q.iter().map(|p| p.topic.as_str()).collect::<Vec<_>>(),
            ["first", "second", "state", "event"]
        );
        o.keep_momentary();
        assert_eq!(o.len(), 1);
        assert_eq!(o.bytes, 1);
        let mut dropped = 0;
        for i in 0..OUTBOX_MAX_MESSAGES + 5 {
            dropped += o.push_back(p(&format!("e{i}"), true));
        }
        assert_eq!(o.len(), OUTBOX_MAX_MESSAGES);
        assert_eq!(dropped, 6);
        assert_eq!(
            o.q.back().unwrap().topic,
            format!("e{}", OUTBOX_MAX_MESSAGES + 4)
        );
    }
}
