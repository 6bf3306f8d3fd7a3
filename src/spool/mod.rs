//! The durable spool between the pipeline and the MQTT sink (DESIGN §5).
//!
//! vector's `disk_v2` buffer, scaled down: append-only segment files of length-prefixed,
//! CRC-32C-checked records ([`format`]), a tiny ledger holding the highest record the broker
//! has acknowledged, and segment files deleted once every record in them is released.
//!
//! # Flow
//! * The pipeline [`Spool::append`]s every routed message **before** anything is published;
//!   the Viewtron receiver replies to the camera only after that append (see
//!   `sources::viewtron::receiver`). The append is a `write(2)` into the page cache: it
//!   survives the bridge being killed (SIGKILL, OOM, panic), not a power cut. With
//!   [`SpoolConfig::fsync`] every append is followed by `fdatasync` (slow on SD cards).
//! * The MQTT sink reads records in order with [`Spool::next`] while the broker is
//!   connected, publishes what each one turns into, and calls [`Spool::release_through`]
//!   once every publish of a record (and of every record before it) got its PUBACK. While
//!   the broker is away it stops reading, so the backlog waits on disk, not in memory.
//! * After a broken connection the sink calls [`Spool::rewind`] and replays everything not
//!   yet released, in order: delivery is at-least-once, duplicates are counted
//!   (`spool_duplicates`).
//! * The ledger is rewritten (write + rename) at most every [`LEDGER_INTERVAL`] and on
//!   [`Spool::flush`]; after a crash the records released in that window are delivered
//!   again (counted in `spool_replayed` at start).
//!
//! # Bounds
//! * Size: when the segment files exceed `max_bytes`, the oldest segment is deleted; its
//!   unreleased records are counted in `spool_dropped` and logged. Segments roll at
//!   `min(segment_bytes, max_bytes / 4)` so the bound acts in small steps.
//! * Age: records older than `max_age` are dropped (counted, logged) by [`Spool::maintain`]
//!   and when read.
//! * Images: a record older than `image_max_age` is replayed without its images (the event
//!   JSON says so in `warnings`), so Home Assistant never shows an hour-old picture as the
//!   latest one. Counted in `spool_images_dropped`.
//!
//! # Flow control
//! The bounds above are for broker outages. While the consumer is delivering (the MQTT sink
//! says so with [`Spool::set_draining`]: the broker is connected), a broker that is merely
//! slower than the cameras must not make the spool grow until the size bound drops events the
//! cameras were told were stored. So, while draining, [`Spool::room`] lets a producer append
//! only while the backlog (records not yet released) is below [`BACKLOG_RECORDS`] records and
//! [`BACKLOG_BYTES`] bytes — or below the backlog the connection started with, whichever is
//! larger; that level only falls as the backlog drains, so an outage's backlog drains while new
//! events keep flowing at the delivery rate. The pipeline waits for room before appending; the
//! receiver holds the camera's reply until the append, which slows the cameras down to what the
//! broker takes (DESIGN §5: "under load the bridge slows its replies rather than drop").
//!
//! # Damage
//! [`Spool::open`] scans every segment: a torn or damaged tail (truncated record, bad
//! checksum, garbage) ends that segment's valid part with one warn line and a count in
//! `spool_corrupt`; later segments are still read. New records always go to a new segment.
//! A record that fails its checksum when read later is skipped the same way.
//!
//! One process owns a spool directory at a time (an advisory lock on `dir/lock`).

pub mod codec;
pub mod format;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::config::SpoolSection;
use crate::event::Routed;
use crate::stats::stats;
use format::RecordInfo;

/// Minimum time between two ledger rewrites while records are being released.
pub const LEDGER_INTERVAL: Duration = Duration::from_millis(100);
/// Smallest segment roll size, whatever the bounds say.
const MIN_ROLL: u64 = 64 * 1024;
/// While the consumer drains, appends wait while this many records are unreleased (or the
/// backlog the connection started with, if larger).
pub const BACKLOG_RECORDS: u64 = 1024;
/// While the consumer drains, appends wait while this many record bytes are unreleased (at
/// most half of `max_bytes`; or the backlog the connection started with, if larger).
pub const BACKLOG_BYTES: u64 = 64 * 1024 * 1024;

/// Settings of the spool.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Directory of the segment files (created if missing).
    pub dir: PathBuf,
    /// Upper bound of the segment files on disk, bytes.
    pub max_bytes: u64,
    /// Records older than this are dropped.
    pub max_age: Duration,
    /// Records older than this are replayed without their images.
    pub image_max_age: Duration,
    /// Size at which a segment file is closed and a new one started.
    pub segment_bytes: u64,
    /// `fdatasync` after every append (survives power loss; costs a disk flush per post).
    pub fsync: bool,
}

impl SpoolConfig {
    /// Take the `[spool]` section of the configuration.
    pub fn from_section(s: &SpoolSection) -> SpoolConfig {
        SpoolConfig {
            dir: s.dir.clone(),
            max_bytes: s.max_bytes,
            max_age: crate::config::secs(s.max_age),
            image_max_age: crate::config::secs(s.image_max_age),
            segment_bytes: s.segment_bytes,
            fsync: s.fsync,
        }
    }

    /// Defaults for a directory (tests, tools).
    pub fn new(dir: impl Into<PathBuf>) -> SpoolConfig {
        let mut c = SpoolConfig::from_section(&SpoolSection::default());
        c.dir = dir.into();
        c
    }

    fn roll_at(&self) -> u64 {
        self.segment_bytes.min(self.max_bytes / 4).max(MIN_ROLL)
    }
}

/// Why the spool could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Another process uses the directory.
    #[error("spool directory {0} is in use by another camqtt process")]
    Locked(PathBuf),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What [`Spool::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Records waiting for delivery.
    pub records: u64,
    /// Bytes of segment files kept.
    pub bytes: u64,
    /// Segments with a damaged tail (or not segments at all).
    pub damaged: u64,
    /// Bytes skipped because of damage.
    pub skipped_bytes: u64,
    /// Highest record number already released.
    pub released: u64,
}

#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    /// File size (header included).
    size: u64,
    /// Unreleased records, oldest first.
    records: VecDeque<RecordInfo>,
}

#[derive(Debug)]
struct Inner {
    cfg: SpoolConfig,
    segments: VecDeque<Segment>,
    /// The file being appended to: `segments.back()` while `Some`.
    writer: Option<File>,
    next_seq: u64,
    released: u64,
    read_next: u64,
    depth: u64,
    bytes: u64,
    ledger_dirty: bool,
    ledger_at: Instant,
    reader: Option<(u64, File)>,
    aged_images: u64,
    /// Bytes of the records not yet released (headers included).
    pending_bytes: u64,
    /// Flow control while the consumer drains.
    flow: Flow,
    _lock: File,
}

/// Flow-control state (see the module docs).
#[derive(Debug, Default)]
struct Flow {
    draining: bool,
    /// Backlog level (records, bytes) allowed while draining; starts at the backlog of the
    /// connection and only falls.
    floor_records: u64,
    floor_bytes: u64,
}

/// A shared handle on an open spool (cheap to clone; appends and reads are serialised).
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Mutex<Inner>>,
    appended: Arc<Notify>,
    room: Arc<Notify>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Spool {
    /// Open (or create) the spool in `cfg.dir`, scanning every segment. Damaged tails are
    /// logged, counted and skipped; only an unusable directory is an error.
    pub fn open(cfg: SpoolConfig) -> Result<(Spool, OpenReport), SpoolError> {
        let dir = cfg.dir.clone();
        fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked(dir)),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(SpoolError::Io {
                    what: "lock",
                    path: lock_path,
                    source: e,
                });
            }
        }
        let mut report = OpenReport::default();
        let ledger_path = dir.join("ledger");
        let released = match fs::read(&ledger_path) {
            Ok(b) => format::decode_ledger(&b).unwrap_or_else(|| {
                stats().spool_corrupt.inc();
                warn!(path = %ledger_path.display(), "spool ledger damaged; replaying every record kept");
                0
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io("read", &ledger_path)(e)),
        };
        report.released = released;
        let _ = fs::remove_file(dir.join("ledger.tmp"));

        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(&dir)
            .map_err(io("list", &dir))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name();
                let first = format::parse_segment_name(name.to_str()?)?;
                Some((first, e.path()))
            })
            .collect();
        names.sort();

        let mut segments = VecDeque::new();
        let mut last_seq = released;
        let mut max_seen = released;
        for (first, path) in names {
            let data = match fs::read(&path) {
                Ok(d) => d,
                Err(e) => {
                    stats().spool_corrupt.inc();
                    report.damaged += 1;
                    warn!(segment = %path.display(), error = %e, "spool segment unreadable; skipped");
                    continue;
                }
            };
            let scan = format::scan(&data);
            if let Some(problem) = &scan.problem {
                stats().spool_corrupt.inc();
                report.damaged += 1;
                report.skipped_bytes += scan.skipped_bytes;
                warn!(
                    segment = %path.display(),
                    problem = %problem,
                    kept = scan.records.len(),
                    skipped_bytes = scan.skipped_bytes,
                    "spool segment damaged; skipped from the damage to its end"
                );
            }
            if let Some(r) = scan.records.last() {
                max_seen = max_seen.max(r.seq);
            }
            let records: VecDeque<RecordInfo> = scan
                .records
                .into_iter()
                .filter(|r| r.seq > last_seq)
                .collect();
            if let Some(r) = records.back() {
                last_seq = r.seq;
            }
            if records.is_empty() {
                debug!(segment = %path.display(), "spool segment fully released; deleted");
                let _ = fs::remove_file(&path);
                continue;
            }
            let size = data.len() as u64;
            report.records += records.len() as u64;
            report.bytes += size;
            segments.push_back(Segment {
                first,
                path,
                size,
                records,
            });
        }
        let pending_bytes: u64 = segments
            .iter()
            .flat_map(|s: &Segment| s.records.iter())
            .map(|r| u64::from(r.len))
            .sum();
        let inner = Inner {
            segments,
            writer: None,
            next_seq: max_seen.max(last_seq) + 1,
            released,
            read_next: released + 1,
            depth: report.records,
            bytes: report.bytes,
            ledger_dirty: false,
            ledger_at: Instant::now(),
            reader: None,
            aged_images: 0,
            pending_bytes,
            flow: Flow::default(),
            _lock: lock,
            cfg,
        };
        inner.gauges();
        stats().spool_replayed.add(report.records);
        if report.records > 0 {
            info!(dir = %dir.display(), records = report.records, bytes = report.bytes, "spool opened; replaying records not yet acknowledged");
        } else {
            info!(dir = %dir.display(), "spool opened");
        }
        Ok((
            Spool {
                inner: Arc::new(Mutex::new(inner)),
                appended: Arc::new(Notify::new()),
                room: Arc::new(Notify::new()),
            },
            report,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append one message; returns its record number. On error nothing usable was written
    /// (a partial record is detected at the next open) and the caller decides what to do
    /// with the message.
    pub fn append(&self, r: &Routed) -> Result<u64, SpoolError> {
        let body = codec::encode(r);
        let seq = self.lock().append(&body, now_ms())?;
        self.appended.notify_one();
        Ok(seq)
    }

    /// Append a raw record body (tests and tools).
    pub fn append_body(&self, body: &[u8], time_ms: u64) -> Result<u64, SpoolError> {
        let seq = self.lock().append(body, time_ms)?;
        self.appended.notify_one();
        Ok(seq)
    }

    /// Wait until something is appended (returns at once if something was appended since
    /// the last wait).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// The next record after the read cursor: `(seq, Some(message))`, or `(seq, None)` for
    /// a record that was skipped (too old, damaged) and only needs releasing. `None` when
    /// everything appended so far has been read.
    pub fn next(&self) -> Option<(u64, Option<Routed>)> {
        self.lock().next(now_ms())
    }

    /// Everything up to and including `seq` was delivered: forget it, delete segments that
    /// are done, and (at most every [`LEDGER_INTERVAL`]) persist the release position.
    pub fn release_through(&self, seq: u64) {
        let mut g = self.lock();
        g.release_through(seq);
        if g.ledger_dirty && g.ledger_at.elapsed() >= LEDGER_INTERVAL {
            g.persist_ledger();
        }
        drop(g);
        self.room.notify_waiters();
    }

    /// The consumer says whether it is delivering (broker connected). While it is, appends
    /// wait for [`Spool::room`]; while it is not, the spool takes everything up to its bounds.
    pub fn set_draining(&self, draining: bool) {
        let mut g = self.lock();
        if draining && !g.flow.draining {
            // Keep a segment's worth below the size bound, which drops.
            let ceiling = g.cfg.max_bytes.saturating_sub(g.cfg.roll_at());
            g.flow.floor_records = g.depth;
            g.flow.floor_bytes = g.pending_bytes.min(ceiling);
        }
        g.flow.draining = draining;
        drop(g);
        self.room.notify_waiters();
    }

    /// True when an append may go ahead now (see the module docs, "Flow control").
    pub fn has_room(&self) -> bool {
        self.lock().has_room()
    }

    /// Wait until an append may go ahead: at once unless the consumer is draining and the
    /// backlog is at its allowed level; then until records are released (or the consumer
    /// stops draining).
    pub async fn room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().has_room() {
                return;
            }
            notified.await;
        }
    }

    /// Move the read cursor back to the oldest unreleased record (after a broken broker
    /// connection). Returns how many records will be read again.
    pub fn rewind(&self) -> u64 {
        let mut g = self.lock();
        let again = g
            .segments
            .iter()
            .flat_map(|s| s.records.iter())
            .filter(|r| r.seq < g.read_next)
            .count() as u64;
        g.read_next = g.released + 1;
        again
    }

    /// Periodic work: the age bound and a pending ledger write.
    pub fn maintain(&self) {
        let mut g = self.lock();
        g.enforce_age(now_ms());
        if g.ledger_dirty {
            g.persist_ledger();
        }
        drop(g);
        self.room.notify_waiters();
    }

    /// Persist the release position now (shutdown).
    pub fn flush(&self) {
        let mut g = self.lock();
        if g.ledger_dirty {
            g.persist_ledger();
        }
    }

    /// Records not yet released.
    pub fn depth(&self) -> u64 {
        self.lock().depth
    }

    /// Bytes of segment files on disk.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Highest released record number.
    pub fn released(&self) -> u64 {
        self.lock().released
    }

    /// The spool directory.
    pub fn dir(&self) -> PathBuf {
        self.lock().cfg.dir.clone()
    }
}

impl Inner {
    fn has_room(&self) -> bool {
        // Never let the flow-control level reach the size bound, which drops.
        let bytes = BACKLOG_BYTES.min(self.cfg.max_bytes / 2);
        !self.flow.draining
            || (self.depth < BACKLOG_RECORDS.max(self.flow.floor_records)
                && self.pending_bytes < bytes.max(self.flow.floor_bytes))
    }

    fn gauges(&self) {
        stats().spool_depth.set(self.depth);
        stats().spool_bytes.set(self.bytes);
    }

    fn append(&mut self, body: &[u8], time_ms: u64) -> Result<u64, SpoolError> {
        let seq = self.next_seq;
        let mut frame = Vec::with_capacity(format::RECORD_HEADER + body.len());
        format::encode_record(&mut frame, seq, time_ms, body);
        let len = frame.len() as u64;
        let roll = match (&self.writer, self.segments.back()) {
            (Some(_), Some(s)) => s.size + len > self.cfg.roll_at() && !s.records.is_empty(),
            _ => true,
        };
        if roll {
            self.writer = None;
            let path = self.cfg.dir.join(format::segment_name(seq));
            let mut f = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io("create", &path))?;
            f.write_all(&format::SEGMENT_MAGIC)
                .map_err(io("write", &path))?;
            self.bytes += format::SEGMENT_HEADER as u64;
            self.segments.push_back(Segment {
                first: seq,
                path,
                size: format::SEGMENT_HEADER as u64,
                records: VecDeque::new(),
            });
            self.writer = Some(f);
        }
        let (Some(w), Some(seg)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            unreachable!("a writer always comes with its segment")
        };
        let written = w.write_all(&frame).and_then(|()| {
            if self.cfg.fsync {
                w.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // The file may now end in a partial record: never append to it again.
            self.writer = None;
            return Err(io("append to", &seg.path)(e));
        }
        seg.records.push_back(RecordInfo {
            seq,
            time_ms,
            offset: seg.size,
            len: len as u32,
        });
        seg.size += len;
        self.bytes += len;
        self.pending_bytes += len;
        self.depth += 1;
        self.next_seq += 1;
        stats().spool_appended.inc();
        self.enforce_size();
        self.gauges();
        Ok(seq)
    }

    fn is_active(&self, i: usize) -> bool {
        self.writer.is_some() && i + 1 == self.segments.len()
    }

    /// Drop the oldest segments while over `max_bytes` (never the one being written).
    fn enforce_size(&mut self) {
        while self.bytes > self.cfg.max_bytes {
            if self.segments.len() <= 1 {
                // Only the active segment is left: close it, the next append rolls and the
                // bound drops it then.
                self.writer = None;
                break;
            }
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            let n = seg.records.len() as u64;
            self.pending_bytes -= seg.records.iter().map(|r| u64::from(r.len)).sum::<u64>();
            if let Some(last) = seg.records.back() {
                self.released = self.released.max(last.seq);
                self.read_next = self.read_next.max(last.seq + 1);
                self.ledger_dirty = true;
            }
            stats().spool_dropped.add(n);
            warn!(
                records = n,
                bytes = seg.size,
                max_bytes = self.cfg.max_bytes,
                "spool full; dropped the oldest records undelivered"
            );
            self.remove_segment(seg);
            self.depth -= n;
        }
    }

    fn remove_segment(&mut self, seg: Segment) {
        self.bytes -= seg.size;
        if self.reader.as_ref().is_some_and(|(f, _)| *f == seg.first) {
            self.reader = None;
        }
        if let Err(e) = fs::remove_file(&seg.path) {
            warn!(segment = %seg.path.display(), error = %e, "cannot delete spool segment");
        }
    }

    fn enforce_age(&mut self, now_ms: u64) {
        let max_age = self.cfg.max_age.as_millis() as u64;
        let cutoff = now_ms.saturating_sub(max_age);
        let mut last_old = None;
        let mut n = 0u64;
        'outer: for s in &self.segments {
            for r in &s.records {
                if r.time_ms >= cutoff {
                    break 'outer;
                }
                last_old = Some(r.seq);
                n += 1;
            }
        }
        if let Some(seq) = last_old {
            stats().spool_dropped.add(n);
            warn!(
                records = n,
                max_age_s = self.cfg.max_age.as_secs(),
                "spool records expired undelivered; dropped"
            );
            self.read_next = self.read_next.max(seq + 1);
            self.release_through(seq);
        }
    }

    fn release_through(&mut self, seq: u64) {
        if seq <= self.released {
            return;
        }
        self.released = seq;
        self.ledger_dirty = true;
        let mut i = 0;
        while i < self.segments.len() {
            let active = self.is_active(i);
            let seg = &mut self.segments[i];
            while seg.records.front().is_some_and(|r| r.seq <= seq) {
                if let Some(r) = seg.records.pop_front() {
                    self.pending_bytes -= u64::from(r.len);
                }
                self.depth -= 1;
            }
            if seg.records.is_empty() && !active {
                if let Some(seg) = self.segments.remove(i) {
                    self.remove_segment(seg);
                }
                continue;
            }
            if seg.records.front().is_some_and(|r| r.seq > seq) {
                break;
            }
            i += 1;
        }
        self.flow.floor_records = self.flow.floor_records.min(self.depth);
        self.flow.floor_bytes = self.flow.floor_bytes.min(self.pending_bytes);
        self.gauges();
    }

    fn persist_ledger(&mut self) {
        let tmp = self.cfg.dir.join("ledger.tmp");
        let path = self.cfg.dir.join("ledger");
        let r = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&format::encode_ledger(self.released))?;
            if self.cfg.fsync {
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)
        })();
        self.ledger_at = Instant::now();
        match r {
            Ok(()) => self.ledger_dirty = false,
            Err(e) => warn!(path = %path.display(), error = %e, "cannot write the spool ledger"),
        }
    }

    fn next(&mut self, now_ms: u64) -> Option<(u64, Option<Routed>)> {
        let (first, path, info) = self.segments.iter().find_map(|s| {
            let i = s.records.partition_point(|r| r.seq < self.read_next);
            s.records.get(i).map(|r| (s.first, s.path.clone(), *r))
        })?;
        self.read_next = info.seq + 1;
        let age = now_ms.saturating_sub(info.time_ms);
        if age > self.cfg.max_age.as_millis() as u64 {
            stats().spool_dropped.inc();
            warn!(
                seq = info.seq,
                age_s = age / 1000,
                "spool record expired undelivered; dropped"
            );
            return Some((info.seq, None));
        }
        let buf = match self.read(first, &path, &info) {
            Ok(b) => b,
            Err(e) => {
                stats().spool_corrupt.inc();
                warn!(segment = %path.display(), seq = info.seq, error = %e, "spool record unreadable; skipped");
                return Some((info.seq, None));
            }
        };
        let body = Bytes::from(buf).slice(format::RECORD_HEADER..);
        let strip = age > self.cfg.image_max_age.as_millis() as u64;
        match codec::decode(body.clone(), false) {
            Ok(r) if strip && codec::image_count(&r) > 0 => {
                let n = codec::image_count(&r) as u64;
                stats().spool_images_dropped.add(n);
                self.aged_images += 1;
                if self.aged_images == 1 || self.aged_images.is_power_of_two() {
                    info!(
                        seq = info.seq,
                        age_s = age / 1000,
                        images = n,
                        events_so_far = self.aged_images,
                        "replaying an old event without its images"
                    );
                }
                Some((info.seq, codec::decode(body, true).ok()))
            }
            Ok(r) => Some((info.seq, Some(r))),
            Err(e) => {
                stats().spool_corrupt.inc();
                warn!(segment = %path.display(), seq = info.seq, error = %e, "spool record undecodable; skipped");
                Some((info.seq, None))
            }
        }
    }

    fn read(&mut self, first: u64, path: &Path, info: &RecordInfo) -> std::io::Result<Vec<u8>> {
        if self.reader.as_ref().is_none_or(|(f, _)| *f != first) {
            self.reader = Some((first, File::open(path)?));
        }
        let Some((_, f)) = self.reader.as_mut() else {
            unreachable!("just opened")
        };
        f.seek(SeekFrom::Start(info.offset))?;
        let mut buf = vec![0u8; info.len as usize];
        f.read_exact(&mut buf)?;
        match format::decode_record(&buf, info.offset) {
            Ok((r, _)) if r.seq == info.seq => Ok(buf),
            Ok(_) => Err(std::io::Error::other("record number changed on disk")),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}
