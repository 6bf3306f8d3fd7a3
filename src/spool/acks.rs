//! Which buffer records are fully delivered (sans-IO).
//!
//! A sink reads records in order, turns each into deliveries (MQTT publishes) and tags each
//! with its record number. A record is done when all of its deliveries were acknowledged; the
//! buffer may release up to the highest record before which everything is done (a
//! contiguous prefix, so the release position never skips an undelivered record).
//!
//! A sink may keep work of a record for later (the MQTT sink holds a new entity's messages
//! for the discovery settle window and emits them from a timer). A record processed while
//! anything is held is marked `held` and cannot be released until the held work has come out
//! (charged to the newest held record) and been acknowledged.
//!
//! A broken connection resets the tracker: a new generation starts, late completions of the
//! old one are ignored, and the sink replays every unreleased record.

use std::collections::BTreeMap;

/// A publish's link to its spool record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    /// Tracker generation the publish belongs to.
    pub generation: u64,
    /// Spool record number.
    pub seq: u64,
}

#[derive(Debug, Default)]
struct Rec {
    outstanding: u32,
    held: bool,
    acked_any: bool,
}

/// Delivery bookkeeping of the records read from the spool and not yet released.
#[derive(Debug, Default)]
pub struct Acks {
    generation: u64,
    open: BTreeMap<u64, Rec>,
}

impl Acks {
    /// A record was read.
    pub fn begin(&mut self, seq: u64) {
        self.open.entry(seq).or_default();
    }

    /// The tag for a publish derived from record `seq`.
    pub fn tag(&self, seq: u64) -> Tag {
        Tag {
            generation: self.generation,
            seq,
        }
    }

    /// One more publish of record `seq` is on its way.
    pub fn add(&mut self, seq: u64) {
        if let Some(r) = self.open.get_mut(&seq) {
            r.outstanding += 1;
        }
    }

    /// A publish got its PUBACK (`acked`) or was given up (not acked, e.g. refused as too
    /// large). Completions of an older generation are ignored.
    pub fn done(&mut self, tag: Tag, acked: bool) {
        if tag.generation != self.generation {
            return;
        }
        if let Some(r) = self.open.get_mut(&tag.seq) {
            r.outstanding = r.outstanding.saturating_sub(1);
            r.acked_any |= acked;
        }
    }

    /// Record `seq` left publishes in the state machine's settle queue.
    pub fn hold(&mut self, seq: u64) {
        if let Some(r) = self.open.get_mut(&seq) {
            r.held = true;
        }
    }

    /// The record that publishes released from the settle queue are charged to: the newest
    /// held one (so every held record waits for them).
    pub fn hold_seq(&self) -> Option<u64> {
        self.open
            .iter()
            .rev()
            .find(|(_, r)| r.held)
            .map(|(seq, _)| *seq)
    }

    /// The settle queue is empty again.
    pub fn holds_released(&mut self) {
        for r in self.open.values_mut() {
            r.held = false;
        }
    }

    /// Forget the done prefix; returns the highest record number of it (to release).
    pub fn releasable(&mut self) -> Option<u64> {
        let mut last = None;
        while let Some(entry) = self.open.first_entry() {
            let r = entry.get();
            if r.outstanding > 0 || r.held {
                break;
            }
            last = Some(*entry.key());
            entry.remove();
        }
        last
    }

    /// The connection broke: start a new generation. Returns how many records had already
    /// been (partly) acknowledged and will therefore be delivered twice.
    pub fn reset(&mut self) -> u64 {
        self.generation += 1;
        let dup = self.open.values().filter(|r| r.acked_any).count() as u64;
        self.open.clear();
        dup
    }

    /// Records read and not yet done.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// True when no record is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_only_a_done_prefix() {
        let mut a = Acks::default();
        for seq in [1, 2, 3] {
            a.begin(seq);
            a.add(seq);
        }
        a.begin(4); // no publishes at all
        a.done(a.tag(2), true);
        assert_eq!(a.releasable(), None, "1 is still out");
        a.done(a.tag(1), true);
        assert_eq!(a.releasable(), Some(2));
        a.done(a.tag(3), true);
        assert_eq!(a.releasable(), Some(4));
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn held_records_wait_for_the_settle_queue() {
        let mut a = Acks::default();
        a.begin(1);
        a.add(1);
        a.hold(1);
        a.begin(2);
        a.hold(2);
        a.done(a.tag(1), true);
        assert_eq!(a.releasable(), None);
        let seq = a.hold_seq().unwrap();
        assert_eq!(seq, 2);
        a.add(seq); // the held publish comes out, charged to record 2
        a.holds_released();
        assert_eq!(a.releasable(), Some(1));
        a.done(a.tag(2), true);
        assert_eq!(a.releasable(), Some(2));
    }

    #[test]
    fn reset_counts_duplicates_and_ignores_old_completions() {
        let mut a = Acks::default();
        a.begin(1);
        a.add(1);
        a.add(1);
        a.begin(2);
        a.add(2);
        let old = a.tag(1);
        a.done(old, true);
        assert_eq!(a.reset(), 1);
        a.begin(1);
        a.add(1);
        a.done(old, true); // late completion from before the reset
        assert_eq!(a.releasable(), None);
        a.done(a.tag(1), false);
        assert_eq!(a.releasable(), Some(1));
    }
}
