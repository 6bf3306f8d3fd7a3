//! The buffer between the pipeline and the sinks: a stage of the topology (DESIGN §6), in the
//! manner of vector's disk buffer. The pipeline appends routed messages ([`Buffer::append`]);
//! a sink reads them in order through a [`BufferReader`] and acknowledges what it delivered.
//! A sink never sees a file.
//!
//! Two kinds, one behaviour:
//! * **disk** ([`Buffer::open`], the default): a record is safe — and its camera gets its
//!   reply ([`Buffer::stored`]) — once the broker has acknowledged it or it is written to a
//!   segment file ([`store`], [`format`], [`codec`]), so what was answered survives a broker
//!   outage and a kill of the bridge (SIGKILL; a power cut with [`SpoolConfig::fsync`]). The
//!   files are written and read on blocking threads, never on the async runtime. Records are
//!   kept decoded in memory until written, and then up to [`CACHE_BYTES`], so a sink that keeps
//!   up never reads back what was just written; older ones (after a restart or a long outage)
//!   are read from disk in batches.
//! * **memory** ([`Buffer::memory`], spool off): the same records in memory only, bounded by
//!   [`MemoryConfig`]; nothing survives a restart.
//!
//! # Flow
//! * The reader hands out records in order while its sink is connected; the sink tags what it
//!   publishes with the record ([`acks`]) and the buffer releases the delivered prefix. After
//!   a broken connection [`BufferReader::rewind`] replays everything not yet released, in
//!   order: delivery is at-least-once, duplicates are counted (`spool_duplicates`).
//! * The disk ledger (highest released record) is rewritten at most every
//!   [`LEDGER_INTERVAL`] and on [`BufferReader::flush`]; after a crash the records released in
//!   that window are delivered again (counted in `spool_replayed` at start).
//!
//! # Write-behind
//! A record goes to the reader when it is appended ([`Buffer::push_all`]). While the sink
//! delivers (broker connected), the write to disk waits up to [`WRITE_BEHIND`] for the
//! record's release: a record the broker acknowledged by then is never written (counted in
//! `spool_writes_saved`). While the sink does not deliver (broker away), and at shutdown
//! ([`BufferReader::flush`]), records are written at once. Records neither released nor written
//! are held in memory only and their cameras are not answered yet; appends wait while they
//! hold [`UNSAFE_BYTES`]. Record numbers come from the buffer, so a segment skips the numbers
//! of records never written. After a restart numbers go on above every record in the files
//! and the ledger's release position; numbers of delivered records never written may come
//! again after a kill (the ledger lags), which is harmless: they are in no file.
//!
//! # Bounds
//! * Size: disk — when the segment files exceed `max_bytes` the oldest segment is deleted;
//!   memory — past [`MemoryConfig`]'s bound the oldest records go. Counted and logged.
//! * Files: a segment rolls at `segment_bytes` whether or not its records were delivered, and
//!   is deleted once none of them waits, so the files hold the undelivered records plus at
//!   most the segment being written (`spool_bytes`), also while a sink keeps up.
//! * Age: records older than `max_age` are dropped (each counted in `spool_dropped`) by
//!   [`BufferReader::maintain`] and when read; logged with their count, one warn line per
//!   `maintain()` pass and one per run of expired records the reader skips (not one per
//!   record: a week-long outage's backlog is one line). A record older than `image_max_age` is
//!   replayed without its images (the event JSON says so), so Home Assistant never shows an
//!   hour-old picture as the latest one (`spool_images_dropped`). Durations are compared in
//!   milliseconds, saturating (a huge `max_age` never wraps around to a tiny one).
//! * `[spool]` is checked by [`SpoolConfig::validate`] (ranges of the four bounds).
//!
//! # Flow control
//! The bounds above are for broker outages. While the consumer is delivering (the sink says
//! so with [`BufferReader::set_draining`]: the broker is connected), a broker that is merely
//! slower than the cameras must not make the buffer grow until a bound drops events the
//! cameras were told were stored. So, while draining, [`Buffer::room`] lets a producer append
//! only while the backlog (records not yet released) is below [`BACKLOG_RECORDS`] records and
//! [`BACKLOG_BYTES`] bytes (at most half the size bound) — or below the backlog the connection
//! started with, whichever is larger; that level only falls as the backlog drains, so an
//! outage's backlog drains while new events keep flowing at the delivery rate. The pipeline
//! waits for room before appending; the receiver holds the camera's reply until the append,
//! which slows the cameras down to what the broker takes (DESIGN §5).
//!
//! # Damage
//! Opening scans every segment (streamed, one record in memory at a time): a torn or damaged
//! tail ends that segment's valid part (one warn line, `spool_corrupt`); later segments are
//! still read. A segment file without any record (empty, or a torn or lone header: a full disk
//! or a kill right after it was created) is deleted quietly, not counted. A record that fails
//! its checksum when read later is skipped the same way. One process owns a spool directory at
//! a time (an advisory lock on `dir/lock`).

pub mod acks;
pub mod codec;
mod config;
pub mod format;
mod store;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::event::Routed;
use crate::telemetry::Telemetry;
use acks::{Acks, Tag};
pub use config::{MemoryConfig, SpoolConfig};
use store::DiskStore;

/// Minimum time between two ledger rewrites while records are being released.
pub const LEDGER_INTERVAL: Duration = Duration::from_millis(100);
/// While the consumer drains, appends wait while this many records are unreleased (or the
/// backlog the connection started with, if larger).
pub const BACKLOG_RECORDS: u64 = 1024;
/// While the consumer drains, appends wait while this many record bytes are unreleased (at
/// most half of the size bound; or the backlog the connection started with, if larger).
pub const BACKLOG_BYTES: u64 = 16 * 1024 * 1024;
/// Decoded records kept in memory beside the disk copy, bytes.
pub const CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// While the sink delivers (broker connected), a record is written to disk only if the broker
/// has not acknowledged it this long after it was stored: one the broker took sooner was
/// delivered, and is never written (see the module docs, "Write-behind").
pub const WRITE_BEHIND: Duration = Duration::from_millis(50);
/// Appends wait while the records not yet safe (neither delivered nor written) hold this many
/// bytes: they live in memory only, so a disk slower than the cameras holds the replies.
pub const UNSAFE_BYTES: u64 = 16 * 1024 * 1024;
/// One batch of records read back from disk: at most this many records ...
const FILL_RECORDS: usize = 64;
/// ... and this many bytes.
const FILL_BYTES: u64 = 8 * 1024 * 1024;

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
    /// The blocking writer thread went away (shutdown).
    #[error("spool writer stopped")]
    Stopped,
}

pub(crate) fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What [`Buffer::open`] found.
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

/// One unreleased record.
#[derive(Debug)]
struct Entry {
    seq: u64,
    time_ms: u64,
    /// Bytes (disk: the record's size; memory: the images plus a small overhead).
    len: u64,
    /// The decoded message, when kept in memory (always, until it is on disk).
    msg: Option<Routed>,
    /// Read from disk and found damaged.
    broken: bool,
    /// Disk spool: the record is in a segment file.
    on_disk: bool,
    /// Disk spool: the record body, until it is written (or delivered first).
    unwritten: Option<codec::BodyParts>,
}

/// Flow-control state (see the module docs).
#[derive(Debug, Default)]
struct Flow {
    draining: bool,
    /// The bridge is shutting down: take everything up to the bounds, so the pipeline can
    /// store what the cameras already sent ([`Buffer::close_flow`]).
    closing: bool,
    /// Backlog level (records, bytes) allowed while draining; starts at the backlog of the
    /// connection and only falls.
    floor_records: u64,
    floor_bytes: u64,
}

#[derive(Debug)]
struct State {
    entries: VecDeque<Entry>,
    /// The next record number.
    next_seq: u64,
    /// Disk spool: every record up to this one is on disk, delivered, or could not be
    /// written (then kept in memory and counted): the point up to which appends are safe.
    written: u64,
    read_next: u64,
    released: u64,
    pending_bytes: u64,
    cached_bytes: u64,
    flow: Flow,
    /// A batch is being read from disk.
    filling: bool,
    aged_images: u64,
    /// Records the reader skipped as expired, not logged yet.
    expired: Expired,
    /// Disk spool: a released record was in the files (the store has segments to delete).
    released_on_disk: bool,
    /// Disk spool: when the store last heard of a release (it persists the position at most
    /// every [`LEDGER_INTERVAL`]; [`BufferReader::maintain`] tells it the rest).
    store_told: Option<std::time::Instant>,
}

impl State {
    /// Take `msg` (`len` bytes) in memory under the next record number, which it returns;
    /// `unwritten`: its record body, still to be written (disk spool).
    fn push(
        &mut self,
        msg: Routed,
        time_ms: u64,
        len: u64,
        unwritten: Option<codec::BodyParts>,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending_bytes += len;
        self.cached_bytes += len;
        self.entries.push_back(Entry {
            seq,
            time_ms,
            len,
            msg: Some(msg),
            broken: false,
            on_disk: false,
            unwritten,
        });
        seq
    }
}

/// A run of records the reader skipped because they outlived `max_age` (logged as one line).
#[derive(Debug, Default)]
struct Expired {
    records: u64,
    oldest_age_ms: u64,
}

#[derive(Debug)]
struct Limits {
    max_age: Duration,
    image_max_age: Duration,
    /// Memory buffer only: the outage bound.
    memory: Option<MemoryConfig>,
    /// Flow-control level, bytes.
    backlog_bytes: u64,
    /// Flow control never lets the starting backlog reach this (disk: a segment below the
    /// size bound).
    ceiling: u64,
}

struct Shared {
    state: Mutex<State>,
    store: Option<Arc<Mutex<DiskStore>>>,
    appended: Notify,
    room: Notify,
    /// Records were released or written ([`Buffer::stored`] waits for it).
    safe: Notify,
    /// One write to disk at a time, so records go to the files in order.
    writer: tokio::sync::Mutex<()>,
    limits: Limits,
    telemetry: Telemetry,
}

/// The buffer stage: a cheap handle (clone it for the pipeline and the sink).
#[derive(Clone)]
pub struct Buffer(Arc<Shared>);

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("disk", &self.0.store.is_some())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

/// `d` in milliseconds, saturating at `u64::MAX` (never wrapping around).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Memory cost of a message held by the memory buffer: its images plus a fixed overhead.
fn memory_len(r: &Routed) -> u64 {
    let images = match r {
        Routed::Event { event, .. } => event.images.iter().map(|i| i.data.len()).sum(),
        _ => 0,
    };
    images as u64 + 1024
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Buffer {
    /// Open (or create) the disk spool in `cfg.dir`, scanning every segment. Damaged tails are
    /// logged, counted and skipped; only an unusable directory is an error.
    pub fn open(
        cfg: SpoolConfig,
        telemetry: Telemetry,
    ) -> Result<(Buffer, OpenReport), SpoolError> {
        let dir = cfg.dir.clone();
        let limits = Limits {
            max_age: cfg.max_age,
            image_max_age: cfg.image_max_age,
            memory: None,
            backlog_bytes: BACKLOG_BYTES.min(cfg.max_bytes / 2),
            ceiling: cfg.ceiling(),
        };
        let (store, found, report) = DiskStore::open(cfg, &telemetry)?;
        let entries: VecDeque<Entry> = found
            .into_iter()
            .map(|(seq, time_ms, len)| Entry {
                seq,
                time_ms,
                len,
                msg: None,
                broken: false,
                on_disk: true,
                unwritten: None,
            })
            .collect();
        telemetry.spool_replayed.add(report.records);
        if report.records > 0 {
            info!(dir = %dir.display(), records = report.records, bytes = report.bytes, "spool opened; replaying records not yet acknowledged");
        } else {
            info!(dir = %dir.display(), "spool opened");
        }
        let next_seq = store.next_seq();
        let state = State {
            pending_bytes: entries.iter().map(|e| e.len).sum(),
            entries,
            next_seq,
            written: next_seq - 1,
            read_next: report.released + 1,
            released: report.released,
            cached_bytes: 0,
            flow: Flow::default(),
            filling: false,
            aged_images: 0,
            expired: Expired::default(),
            released_on_disk: false,
            store_told: None,
        };
        let b = Buffer(Arc::new(Shared {
            state: Mutex::new(state),
            store: Some(Arc::new(Mutex::new(store))),
            appended: Notify::new(),
            room: Notify::new(),
            safe: Notify::new(),
            writer: tokio::sync::Mutex::new(()),
            limits,
            telemetry,
        }));
        b.gauges(&b.state());
        Ok((b, report))
    }

    /// A memory-only buffer (spool off).
    pub fn memory(cfg: MemoryConfig, telemetry: Telemetry) -> Buffer {
        Buffer(Arc::new(Shared {
            state: Mutex::new(State {
                entries: VecDeque::new(),
                next_seq: 1,
                written: 0,
                read_next: 1,
                released: 0,
                pending_bytes: 0,
                cached_bytes: 0,
                flow: Flow::default(),
                filling: false,
                aged_images: 0,
                expired: Expired::default(),
                released_on_disk: false,
                store_told: None,
            }),
            store: None,
            appended: Notify::new(),
            room: Notify::new(),
            safe: Notify::new(),
            writer: tokio::sync::Mutex::new(()),
            limits: Limits {
                max_age: cfg.max_age,
                image_max_age: cfg.max_age,
                memory: Some(cfg),
                backlog_bytes: BACKLOG_BYTES.min(cfg.max_bytes / 2),
                ceiling: cfg.max_bytes / 2,
            },
            telemetry,
        }))
    }

    /// The buffer the `[spool]` section asks for: the disk spool, or the memory buffer
    /// ([`MemoryConfig::default`]) when it is off. An unusable directory (or one locked by
    /// another instance) does not stop the bridge: it runs with events in memory only, and
    /// says so loudly (error log, `spool_errors`).
    pub fn from_config(cfg: &SpoolConfig, telemetry: &Telemetry) -> Buffer {
        let memory = || Buffer::memory(MemoryConfig::default(), telemetry.clone());
        if !cfg.enabled {
            return memory();
        }
        match Buffer::open(cfg.clone(), telemetry.clone()) {
            Ok((b, _)) => b,
            Err(error) => {
                telemetry.spool_errors.inc();
                telemetry.spool_unavailable.set(1);
                tracing::error!(%error, "spool unavailable; events are kept in memory only");
                memory()
            }
        }
    }

    /// True for the disk spool (it holds its directory's lock), false for the memory buffer.
    pub fn on_disk(&self) -> bool {
        self.0.store.is_some()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.0.state)
    }

    fn gauges(&self, s: &State) {
        let t = &self.0.telemetry;
        t.spool_depth.set(s.entries.len() as u64);
        // The disk store sets `spool_bytes` itself, whenever its files change.
        if self.0.store.is_none() {
            t.spool_bytes.set(s.pending_bytes);
        }
    }

    /// True for the disk spool.
    pub fn is_disk(&self) -> bool {
        self.0.store.is_some()
    }

    /// The spool directory (disk only).
    pub fn dir(&self) -> Option<PathBuf> {
        self.0.store.as_ref().map(|s| lock(s).dir().to_path_buf())
    }

    /// Records not yet released.
    pub fn depth(&self) -> u64 {
        self.state().entries.len() as u64
    }

    /// True when an append may go ahead now (see the module docs, "Flow control").
    pub fn has_room(&self) -> bool {
        self.has_room_in(&self.state())
    }

    fn has_room_in(&self, s: &State) -> bool {
        self.unsafe_bytes(s) < UNSAFE_BYTES && self.has_backlog_room(s)
    }

    /// Disk spool: bytes of the records not yet safe (neither delivered nor written), the
    /// newest ones.
    fn unsafe_bytes(&self, s: &State) -> u64 {
        if self.0.store.is_none() {
            return 0;
        }
        let safe = s.written.max(s.released);
        (s.entries.iter().rev())
            .take_while(|e| e.seq > safe)
            .map(|e| e.len)
            .sum()
    }

    fn has_backlog_room(&self, s: &State) -> bool {
        !s.flow.draining
            || s.flow.closing
            || ((s.entries.len() as u64) < BACKLOG_RECORDS.max(s.flow.floor_records)
                && s.pending_bytes < self.0.limits.backlog_bytes.max(s.flow.floor_bytes))
    }

    /// The bridge is shutting down: stop holding appends back for the sink (it may never catch
    /// up, e.g. with a frozen broker), so that everything the sources already accepted is
    /// stored (up to the bounds) and stays for the next start.
    pub fn close_flow(&self) {
        self.state().flow.closing = true;
        self.0.room.notify_waiters();
        self.0.safe.notify_waiters();
    }

    /// Wait until an append may go ahead: at once unless the consumer is draining and the
    /// backlog is at its allowed level; then until records are released (or the consumer
    /// stops draining).
    pub async fn room(&self) {
        loop {
            let notified = self.0.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.has_room() {
                return;
            }
            notified.await;
        }
    }

    /// Store one message; returns its record number once it is safe: delivered (the broker
    /// acknowledged every publish made of it) or written to disk, off the runtime (see the
    /// module docs, "Write-behind"). A message the disk cannot take (disk full, I/O error) is
    /// counted (`spool_errors`), logged and kept in memory only: still delivered unless the
    /// bridge dies first. Memory buffer: at once.
    pub async fn append(&self, r: Routed) -> u64 {
        self.append_at(r, now_ms()).await
    }

    /// [`Buffer::append`] with an explicit append time in ms since the epoch (the age bounds
    /// count from it; tests and tools).
    pub async fn append_at(&self, r: Routed, time_ms: u64) -> u64 {
        self.append_all_at(vec![r], time_ms).await[0]
    }

    /// [`Buffer::append`] of several messages, in order, with at most one trip to the disk
    /// writer for all of them. Their record numbers, in order.
    pub async fn append_all(&self, rs: Vec<Routed>) -> Vec<u64> {
        self.append_all_at(rs, now_ms()).await
    }

    async fn append_all_at(&self, rs: Vec<Routed>, time_ms: u64) -> Vec<u64> {
        let seqs = self.push_all_at(rs, time_ms);
        if let Some(&last) = seqs.last() {
            self.stored(last).await;
        }
        seqs
    }

    /// Take messages, in order, and hand them to the reader at once; returns their record
    /// numbers. They are not safe yet: [`Buffer::stored`] waits until they are. (The pipeline
    /// goes on with the next inputs meanwhile and answers the cameras once their records are
    /// safe.)
    pub fn push_all(&self, rs: Vec<Routed>) -> Vec<u64> {
        self.push_all_at(rs, now_ms())
    }

    fn push_all_at(&self, rs: Vec<Routed>, time_ms: u64) -> Vec<u64> {
        if self.0.store.is_none() {
            return (rs.into_iter())
                .map(|r| self.append_memory(r, time_ms))
                .collect();
        }
        // Encoded before the lock is taken: the sink's reader waits for it.
        let encoded: Vec<_> = (rs.into_iter())
            .map(|r| {
                let parts = codec::encode_parts(&r);
                let len = (format::RECORD_HEADER + parts.len()) as u64;
                (r, len, parts)
            })
            .collect();
        let mut s = self.state();
        let seqs = (encoded.into_iter())
            .map(|(r, len, parts)| s.push(r, time_ms, len, Some(parts)))
            .collect();
        self.gauges(&s);
        drop(s);
        self.0.appended.notify_one();
        seqs
    }

    /// Wait until record `seq`, and every one before it, is safe: delivered or written to
    /// disk (or kept in memory after a write failed, counted in `spool_errors`). While the
    /// sink delivers, the write waits up to [`WRITE_BEHIND`] for the broker's
    /// acknowledgement; while it does not (broker away) or the bridge is shutting down, it
    /// happens at once. Memory buffer: at once, memory is all there is.
    pub async fn stored(&self, seq: u64) {
        if self.0.store.is_none() {
            return;
        }
        let deadline = tokio::time::Instant::now() + WRITE_BEHIND;
        loop {
            let notified = self.0.safe.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.state();
                if seq <= s.written.max(s.released) {
                    return;
                }
                if !s.flow.draining || s.flow.closing {
                    break;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        self.write_through(seq).await;
    }

    /// Write every record up to `seq` that is neither on disk nor delivered, in order, with
    /// one trip to a blocking thread and, with `spool.fsync`, one `fdatasync` for all of
    /// them (group commit) before any counts as written.
    ///
    /// The work runs in a task of its own: a caller that stops waiting (a timeout) cannot
    /// leave records taken for writing but never accounted for.
    async fn write_through(&self, seq: u64) {
        let b = self.clone();
        let _ = tokio::spawn(async move { b.write_through_now(seq).await }).await;
    }

    async fn write_through_now(&self, seq: u64) {
        let Some(store) = self.0.store.clone() else {
            return;
        };
        let _turn = self.0.writer.lock().await;
        let batch: Vec<(u64, u64, codec::BodyParts)> = {
            let mut s = self.state();
            let from = s.written.max(s.released) + 1;
            if from > seq {
                return;
            }
            let start = s.entries.partition_point(|e| e.seq < from);
            (s.entries.range_mut(start..))
                .take_while(|e| e.seq <= seq)
                .filter_map(|e| e.unwritten.take().map(|p| (e.seq, e.time_ms, p)))
                .collect()
        };
        let seqs: Vec<u64> = batch.iter().map(|b| b.0).collect();
        let write = move || {
            let mut store = lock(&store);
            let results: Vec<_> = (batch.iter())
                .map(|(seq, time_ms, body)| {
                    let pieces: Vec<&[u8]> = body.slices().collect();
                    store.write_at(*seq, &pieces, *time_ms)
                })
                .collect();
            // `spool.fsync`: one flush for the batch (group commit), before any is answered.
            (results, store.sync().err())
        };
        let (results, unsynced) = match tokio::task::spawn_blocking(write).await {
            Ok(v) => v,
            Err(e) => {
                let failed = SpoolError::Io {
                    what: "append",
                    path: PathBuf::new(),
                    source: std::io::Error::other(e.to_string()),
                };
                let results = (seqs.iter())
                    .map(|_| Some(Err(copy_error(&failed))))
                    .collect();
                (results, None)
            }
        };
        let mut s = self.state();
        for (seq, written) in seqs.into_iter().zip(results) {
            self.record_written(&mut s, seq, written, unsynced.as_ref());
        }
        s.written = s.written.max(seq);
        // Keep at most CACHE_BYTES decoded: the newest records on disk not yet handed out
        // leave memory first (the reader reads them back when it gets there).
        let State {
            entries,
            cached_bytes,
            read_next,
            ..
        } = &mut *s;
        for e in entries.iter_mut().rev() {
            if *cached_bytes <= CACHE_BYTES || e.seq < *read_next {
                break;
            }
            if e.on_disk && e.msg.take().is_some() {
                *cached_bytes -= e.len;
            }
        }
        self.gauges(&s);
        drop(s);
        self.0.safe.notify_waiters();
        self.0.room.notify_waiters();
    }

    /// Account for one record the store was asked to write (`written`: what it did; `None`:
    /// it was delivered meanwhile). `unsynced`: the batch's `fdatasync` (`spool.fsync`)
    /// failed, so its records are written but not safe from a power cut: counted as failed
    /// writes, kept in memory.
    fn record_written(
        &self,
        s: &mut State,
        seq: u64,
        written: Option<Result<store::Appended, SpoolError>>,
        unsynced: Option<&SpoolError>,
    ) {
        let t = &self.0.telemetry;
        let failed = match written {
            None => {
                t.spool_writes_saved.inc();
                None
            }
            Some(Ok(done)) => {
                // The size bound deleted older segments to make room: whether or not the
                // flush went well, those records are gone.
                if let Some(through) = done.dropped_through {
                    let n = self.drop_through(s, through, false);
                    t.spool_dropped.add(n);
                }
                match unsynced {
                    Some(e) => Some(copy_error(e)),
                    None => {
                        t.spool_appended.inc();
                        let i = s.entries.partition_point(|e| e.seq < seq);
                        if let Some(e) = s.entries.get_mut(i).filter(|e| e.seq == seq) {
                            debug_assert_eq!(e.len, done.len, "record {seq}: length changed");
                            e.on_disk = true;
                        }
                        None
                    }
                }
            }
            Some(Err(error)) => Some(error),
        };
        if let Some(error) = failed {
            t.spool_errors.inc();
            let failures = t.spool_errors.get();
            if failures == 1 || failures.is_power_of_two() {
                tracing::error!(%error, failures, "cannot write to the spool; message kept in memory only");
            }
        }
    }

    fn append_memory(&self, r: Routed, time_ms: u64) -> u64 {
        let mut s = self.state();
        let len = memory_len(&r);
        let seq = s.push(r, time_ms, len, None);
        if let Some(bound) = self.0.limits.memory {
            let mut dropped = 0;
            while (s.entries.len() as u64 > bound.max_records || s.pending_bytes > bound.max_bytes)
                && s.entries.len() > 1
            {
                let Some(first) = s.entries.front().map(|e| e.seq) else {
                    break;
                };
                dropped += self.drop_through(&mut s, first, false);
            }
            if dropped > 0 {
                self.0.telemetry.dropped.add(dropped);
                warn!(
                    records = dropped,
                    max_records = bound.max_records,
                    max_bytes = bound.max_bytes,
                    "MQTT broker away too long: memory buffer full, dropped the oldest messages undelivered"
                );
            }
        }
        self.gauges(&s);
        drop(s);
        self.0.appended.notify_one();
        seq
    }

    /// Forget every record up to `seq` (`delivered`, or dropped by a bound); returns how many
    /// unreleased records that was.
    fn drop_through(&self, s: &mut State, seq: u64, delivered: bool) -> u64 {
        let (mut n, mut freed) = (0u64, 0u64);
        while s.entries.front().is_some_and(|e| e.seq <= seq) {
            if let Some(e) = s.entries.pop_front() {
                if delivered && e.unwritten.is_some() {
                    self.0.telemetry.spool_writes_saved.inc();
                }
                s.released_on_disk |= e.on_disk;
                s.pending_bytes -= e.len;
                freed += e.len;
                if e.msg.is_some() {
                    s.cached_bytes = s.cached_bytes.saturating_sub(e.len);
                }
                n += 1;
            }
        }
        s.released = s.released.max(seq);
        s.read_next = s.read_next.max(seq + 1);
        // The level a connection started with falls by half of what was released: an outage's
        // backlog drains while new events get the other half.
        s.flow.floor_records = s.flow.floor_records.saturating_sub(n.div_ceil(2));
        s.flow.floor_bytes = s.flow.floor_bytes.saturating_sub(freed.div_ceil(2));
        n
    }

    /// Log the records the reader skipped as expired since the last call: one line for the
    /// whole run (each was counted in `spool_dropped` when skipped).
    fn log_expired(&self, s: &mut State) {
        let run = std::mem::take(&mut s.expired);
        if run.records > 0 {
            warn!(
                records = run.records,
                oldest_age_s = run.oldest_age_ms / 1000,
                max_age_s = self.0.limits.max_age.as_secs(),
                "buffered records expired undelivered; dropped"
            );
        }
    }

    /// A reader for the sink (one per buffer).
    pub fn reader(&self) -> BufferReader {
        BufferReader {
            buffer: self.clone(),
            acks: Acks::default(),
        }
    }
}

/// What [`BufferReader::next_record`] found.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // returned once per record, never stored
pub enum Next {
    /// The next record: its number and the message (`None`: skipped — too old or damaged —
    /// and only to be acknowledged).
    Record(u64, Option<Routed>),
    /// The next record is being read from disk; [`BufferReader::wait`] wakes when it is in.
    Filling,
    /// Everything stored so far has been handed out.
    Empty,
}

/// The sink's side of the buffer: records in order, delivery bookkeeping, replay.
pub struct BufferReader {
    buffer: Buffer,
    acks: Acks,
}

impl std::fmt::Debug for BufferReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferReader").finish_non_exhaustive()
    }
}

impl BufferReader {
    /// Wait until something was appended or read back from disk (returns at once if that
    /// happened since the last wait).
    pub async fn wait(&self) {
        self.buffer.0.appended.notified().await;
    }

    /// The next record after the read cursor. Starts it on its way to delivery (acks).
    pub fn next_record(&mut self) -> Next {
        let b = &self.buffer;
        let mut s = b.state();
        let Some(i) = s.entries.iter().position(|e| e.seq >= s.read_next) else {
            b.log_expired(&mut s);
            return Next::Empty;
        };
        let now = now_ms();
        let limits = &b.0.limits;
        let e = &s.entries[i];
        let (seq, age, broken) = (e.seq, now.saturating_sub(e.time_ms), e.broken);
        if broken || age > millis(limits.max_age) {
            if !broken {
                // Counted now; logged once for the whole run (`log_expired`).
                b.0.telemetry.spool_dropped.inc();
                s.expired.records += 1;
                s.expired.oldest_age_ms = s.expired.oldest_age_ms.max(age);
            }
            s.read_next = seq + 1;
            drop(s);
            self.acks.begin(seq);
            return Next::Record(seq, None);
        }
        b.log_expired(&mut s);
        let Some(msg) = s.entries[i].msg.clone() else {
            if !s.filling {
                s.filling = true;
                drop(s);
                self.fill(seq);
            }
            return Next::Filling;
        };
        s.read_next = seq + 1;
        let strip = age > millis(limits.image_max_age) && codec::image_count(&msg) > 0;
        if strip {
            s.aged_images += 1;
        }
        let aged = s.aged_images;
        drop(s);
        self.acks.begin(seq);
        if !strip {
            return Next::Record(seq, Some(msg));
        }
        let n = codec::image_count(&msg) as u64;
        b.0.telemetry.spool_images_dropped.add(n);
        if aged == 1 || aged.is_power_of_two() {
            info!(
                seq,
                age_s = age / 1000,
                images = n,
                events_so_far = aged,
                "replaying an old event without its images"
            );
        }
        Next::Record(seq, Some(without_images(msg)))
    }

    /// Read a batch of records from `seq` on from disk, on a blocking thread; they land in
    /// the buffer's memory and the reader is woken.
    fn fill(&self, seq: u64) {
        let b = self.buffer.clone();
        let Some(store) = b.0.store.clone() else {
            return;
        };
        let wanted: Vec<u64> = {
            let s = b.state();
            let mut bytes = 0;
            s.entries
                .iter()
                .skip_while(|e| e.seq < seq)
                .take_while(|e| {
                    bytes += e.len;
                    e.msg.is_none() && bytes <= FILL_BYTES.max(e.len)
                })
                .take(FILL_RECORDS)
                .map(|e| e.seq)
                .collect()
        };
        tokio::task::spawn_blocking(move || {
            let read: Vec<(u64, Result<Routed, String>)> = {
                let mut store = lock(&store);
                wanted
                    .iter()
                    .map(|&seq| {
                        let r = store.read(seq).map_err(|e| e.to_string()).and_then(|buf| {
                            let body = Bytes::from(buf).slice(format::RECORD_HEADER..);
                            codec::decode(body).map_err(|e| e.to_string())
                        });
                        (seq, r)
                    })
                    .collect()
            };
            let mut s = b.state();
            for (seq, r) in read {
                let Some(e) = s.entries.iter_mut().find(|e| e.seq == seq) else {
                    continue;
                };
                match r {
                    Ok(msg) => {
                        e.msg = Some(msg);
                        let len = e.len;
                        s.cached_bytes += len;
                    }
                    Err(error) => {
                        e.broken = true;
                        b.0.telemetry.spool_corrupt.inc();
                        warn!(seq, %error, "spool record unreadable; skipped");
                    }
                }
            }
            s.filling = false;
            drop(s);
            b.0.appended.notify_one();
        });
    }

    /// Records handed out and not yet released.
    pub fn open_records(&self) -> usize {
        self.acks.len()
    }

    /// The tag for a delivery derived from record `seq`; counts it as outstanding.
    pub fn add(&mut self, seq: u64) -> Tag {
        self.acks.add(seq);
        self.acks.tag(seq)
    }

    /// True when `tag` belongs to the current replay generation.
    pub fn is_current(&self, tag: Tag) -> bool {
        self.acks.tag(tag.seq) == tag
    }

    /// A delivery was acknowledged (`acked`) or given up; releases the done prefix.
    pub fn done(&mut self, tag: Tag, acked: bool) {
        self.acks.done(tag, acked);
        self.release();
    }

    /// Record `seq` left work for later (see [`acks`]).
    pub fn hold(&mut self, seq: u64) {
        self.acks.hold(seq);
    }

    /// The record later work is charged to.
    pub fn hold_seq(&self) -> Option<u64> {
        self.acks.hold_seq()
    }

    /// The held work has all come out.
    pub fn holds_released(&mut self) {
        self.acks.holds_released();
        self.release();
    }

    /// Release the delivered prefix.
    pub fn release(&mut self) {
        let Some(seq) = self.acks.releasable() else {
            return;
        };
        let b = &self.buffer;
        let mut s = b.state();
        b.drop_through(&mut s, seq, true);
        b.gauges(&s);
        // The files hear of it when a released record was in them, or once per ledger
        // interval (a blocking-thread trip per release would cost more than the release).
        let now = std::time::Instant::now();
        let tell = std::mem::take(&mut s.released_on_disk)
            || s.store_told
                .is_none_or(|t| now.duration_since(t) >= LEDGER_INTERVAL);
        if tell {
            s.store_told = Some(now);
        }
        drop(s);
        b.0.room.notify_waiters();
        b.0.safe.notify_waiters();
        if let (true, Some(store)) = (tell, b.0.store.clone()) {
            tokio::task::spawn_blocking(move || lock(&store).release_through(seq));
        }
    }

    /// The connection broke: replay every unreleased record. Returns (records to replay,
    /// records already partly delivered, i.e. duplicates).
    pub fn rewind(&mut self) -> (u64, u64) {
        let dup = self.acks.reset();
        let mut s = self.buffer.state();
        let again = s.entries.iter().filter(|e| e.seq < s.read_next).count() as u64;
        s.read_next = s.released + 1;
        (again, dup)
    }

    /// The sink says whether it is delivering (broker connected). While it is, appends wait
    /// for [`Buffer::room`]; while it is not, the buffer takes everything up to its bounds.
    pub fn set_draining(&self, draining: bool) {
        let b = &self.buffer;
        let mut s = b.state();
        if draining && !s.flow.draining {
            let ceiling = b.0.limits.ceiling;
            s.flow.floor_records = s.entries.len() as u64;
            s.flow.floor_bytes = s.pending_bytes.min(ceiling);
        }
        s.flow.draining = draining;
        drop(s);
        b.0.room.notify_waiters();
        b.0.safe.notify_waiters();
    }

    /// Periodic work (every 250 ms from the MQTT sink): the age bound, the release position
    /// for the files, and a pending ledger write.
    pub fn maintain(&mut self) {
        let b = &self.buffer;
        let cutoff = now_ms().saturating_sub(millis(b.0.limits.max_age));
        let mut s = b.state();
        b.log_expired(&mut s);
        let old = s
            .entries
            .iter()
            .take_while(|e| e.time_ms < cutoff)
            .last()
            .map(|e| e.seq);
        if let Some(seq) = old {
            let n = b.drop_through(&mut s, seq, false);
            b.0.telemetry.spool_dropped.add(n);
            warn!(
                records = n,
                max_age_s = b.0.limits.max_age.as_secs(),
                "buffered records expired undelivered; dropped"
            );
        }
        b.gauges(&s);
        // The files learn the release position (also what `release` left for later).
        let released = s.released;
        s.released_on_disk = false;
        s.store_told = Some(std::time::Instant::now());
        drop(s);
        b.0.room.notify_waiters();
        b.0.safe.notify_waiters();
        if let Some(store) = b.0.store.clone() {
            tokio::task::spawn_blocking(move || {
                let mut g = lock(&store);
                g.release_through(released);
                g.flush();
            });
        }
    }

    /// Persist the release position now (shutdown); reports what stays for the next start.
    pub async fn flush(&self) {
        let b = &self.buffer;
        {
            let mut s = b.state();
            s.flow.draining = false;
            b.log_expired(&mut s);
        }
        b.0.room.notify_waiters();
        b.0.safe.notify_waiters();
        let Some(store) = b.0.store.clone() else {
            return;
        };
        // What the broker has not acknowledged yet goes to disk now.
        let last = b.state().next_seq.saturating_sub(1);
        b.write_through(last).await;
        let released = b.state().released;
        let _ = tokio::task::spawn_blocking(move || {
            let mut g = lock(&store);
            g.release_through(released);
            g.flush();
        })
        .await;
        let left = b.depth();
        if left > 0 {
            info!(
                records = left,
                "undelivered records stay in the spool for the next start"
            );
        }
    }
}

/// A copy of a write error, for each record of a batch it failed.
fn copy_error(e: &SpoolError) -> SpoolError {
    match e {
        SpoolError::Io { what, path, source } => SpoolError::Io {
            what,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => SpoolError::Io {
            what: "flush",
            path: PathBuf::new(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

/// `msg` without its images, saying so in the event's warnings.
fn without_images(msg: Routed) -> Routed {
    match msg {
        Routed::Event {
            device,
            event,
            counts,
        } => {
            let mut ev = Arc::unwrap_or_clone(event);
            ev.images.clear();
            ev.warnings
                .push("images dropped from the spool backlog (older than image_max_age)".into());
            Routed::Event {
                device,
                event: Arc::new(ev),
                counts,
            }
        }
        other => other,
    }
}
