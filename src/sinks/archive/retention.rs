//! Which archive files go: an index of the files retention manages (pictures and event logs,
//! never the `latest*.jpg` copies) ordered oldest first, and the pure decision of what to
//! delete ([`Index::expired`]). The store does the deleting.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

/// What one prune deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Files deleted.
    pub files: u64,
    /// Their size, bytes.
    pub bytes: u64,
}

/// The files retention manages, by path relative to the archive (`/`-separated), with their
/// age (modification time) and size; iterated oldest first (ties in insertion order).
#[derive(Debug, Default)]
pub struct Index {
    by_age: BTreeMap<(SystemTime, u64), String>,
    files: HashMap<String, Entry>,
    bytes: u64,
    seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: (SystemTime, u64),
    bytes: u64,
}

impl Index {
    /// Add `path`, or update its time and size (an event log that grew).
    pub fn upsert(&mut self, path: &str, modified: SystemTime, bytes: u64) {
        self.remove(path);
        self.seq += 1;
        let key = (modified, self.seq);
        self.by_age.insert(key, path.to_owned());
        self.files.insert(path.to_owned(), Entry { key, bytes });
        self.bytes += bytes;
    }

    /// Forget `path`; its size, if it was known.
    pub fn remove(&mut self, path: &str) -> Option<u64> {
        let entry = self.files.remove(path)?;
        self.by_age.remove(&entry.key);
        self.bytes -= entry.bytes;
        Some(entry.bytes)
    }

    /// Total size of the indexed files, bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of indexed files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when no file is indexed.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The files to delete at `now`, oldest first, with their sizes: every file modified more
    /// than `max_age` before `now` (a file dated in the future is 0 old), then more of the
    /// oldest while the rest would still exceed `max_bytes` (0: no size bound). Does not
    /// change the index.
    pub fn expired(
        &self,
        now: SystemTime,
        max_age: Duration,
        max_bytes: u64,
    ) -> Vec<(String, u64)> {
        let mut left = self.bytes;
        let mut out = Vec::new();
        for ((modified, _), path) in &self.by_age {
            let age = now.duration_since(*modified).unwrap_or_default();
            let too_old = age > max_age;
            let too_big = max_bytes > 0 && left > max_bytes;
            if !too_old && !too_big {
                break;
            }
            let bytes = self.files[path].bytes;
            left -= bytes;
            out.push((path.clone(), bytes));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    fn at(hours: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + H * hours as u32 + Duration::from_secs(1_000_000_000)
    }

    fn paths(v: &[(String, u64)]) -> Vec<&str> {
        v.iter().map(|(p, _)| p.as_str()).collect()
    }

    #[test]
    fn by_age_oldest_first() {
        let mut ix = Index::default();
        ix.upsert("c", at(3), 1);
        ix.upsert("a", at(1), 1);
        ix.upsert("b", at(2), 1);
        ix.upsert("future", at(100), 1);
        assert_eq!(paths(&ix.expired(at(5), 2 * H, 0)), ["a", "b"]);
        // Exactly max_age old stays.
        assert_eq!(paths(&ix.expired(at(5), 3 * H, 0)), ["a"]);
        assert!(ix.expired(at(0), H, 0).is_empty());
        assert_eq!(ix.len(), 4);
    }

    #[test]
    fn by_size_oldest_first_until_it_fits() {
        let mut ix = Index::default();
        ix.upsert("a", at(1), 40);
        ix.upsert("b", at(2), 30);
        ix.upsert("c", at(3), 20);
        ix.upsert("d", at(3), 10);
        assert_eq!(ix.bytes(), 100);
        let big = 1000 * H;
        assert!(ix.expired(at(4), big, 100).is_empty());
        assert_eq!(ix.expired(at(4), big, 99), [("a".to_owned(), 40)]);
        assert_eq!(paths(&ix.expired(at(4), big, 30)), ["a", "b"]);
        assert_eq!(paths(&ix.expired(at(4), big, 1)), ["a", "b", "c", "d"]);
        // Age and size together: age takes "a", size then "b".
        assert_eq!(paths(&ix.expired(at(4), 2 * H + H / 2, 50)), ["a", "b"]);
    }

    #[test]
    fn upsert_moves_a_grown_file_to_its_new_age() {
        let mut ix = Index::default();
        ix.upsert("log", at(1), 10);
        ix.upsert("img", at(2), 5);
        ix.upsert("log", at(3), 25);
        assert_eq!(ix.bytes(), 30);
        assert_eq!(ix.len(), 2);
        assert_eq!(paths(&ix.expired(at(4), H + H / 2, 0)), ["img"]);
        assert_eq!(ix.remove("log"), Some(25));
        assert_eq!(ix.remove("log"), None);
        assert_eq!(ix.bytes(), 5);
        assert!(!ix.is_empty());
    }
}
