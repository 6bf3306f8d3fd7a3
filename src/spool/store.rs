//! The spool's files: segment files of CRC-32C-checked records ([`super::format`]), a ledger
//! holding the highest released record, and a lock file. Blocking I/O only: the buffer
//! ([`super::Buffer`]) calls it from blocking threads, never from the async runtime.
//!
//! * Append: a `write(2)` into the page cache (survives the bridge being killed, not a power
//!   cut); with [`super::SpoolConfig::fsync`] also `fdatasync`.
//! * Size bound: when the segment files exceed `max_bytes`, the oldest segment is deleted; the
//!   caller learns which records went ([`Appended::dropped_through`]) to count them.
//! * Damage: [`DiskStore::open`] scans every segment; a torn or damaged tail ends that
//!   segment's valid part (one warn line, counted); later segments are still read. New records
//!   always go to a new segment.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use tracing::{debug, warn};

use super::format::{self, RecordInfo};
use super::{LEDGER_INTERVAL, OpenReport, SpoolConfig, SpoolError, io};
use crate::telemetry::Telemetry;

/// Smallest segment roll size, whatever the bounds say.
const MIN_ROLL: u64 = 64 * 1024;

#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    /// File size (header included).
    size: u64,
    /// Unreleased records, oldest first.
    records: VecDeque<RecordInfo>,
}

/// What an append did.
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    /// Header plus body, bytes.
    pub len: u64,
    /// The size bound deleted segments whose records up to this number went undelivered.
    pub dropped_through: Option<u64>,
}

/// The files of one spool directory.
#[derive(Debug)]
pub struct DiskStore {
    cfg: SpoolConfig,
    segments: VecDeque<Segment>,
    /// The file being appended to: `segments.back()` while `Some`.
    writer: Option<File>,
    next_seq: u64,
    released: u64,
    /// Bytes of segment files.
    bytes: u64,
    ledger_dirty: bool,
    ledger_at: Instant,
    reader: Option<(u64, File)>,
    _lock: File,
}

impl SpoolConfig {
    fn roll_at(&self) -> u64 {
        self.segment_bytes.min(self.max_bytes / 4).max(MIN_ROLL)
    }

    /// The backlog level (record bytes) a segment below the size bound, where flow control
    /// stops appends while the consumer drains.
    pub(super) fn ceiling(&self) -> u64 {
        self.max_bytes.saturating_sub(self.roll_at())
    }
}

/// The unreleased records found at open: (record number, append time in ms, length).
pub type Found = Vec<(u64, u64, u64)>;

impl DiskStore {
    /// Open (or create) the directory, take its lock and scan every segment.
    pub fn open(
        cfg: SpoolConfig,
        telemetry: &Telemetry,
    ) -> Result<(DiskStore, Found, OpenReport), SpoolError> {
        let dir = cfg.dir.clone();
        fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        let lock = take_lock(&dir)?;
        let mut report = OpenReport::default();
        let ledger_path = dir.join("ledger");
        let released = match fs::read(&ledger_path) {
            Ok(b) => format::decode_ledger(&b).unwrap_or_else(|| {
                telemetry.spool_corrupt.inc();
                warn!(path = %ledger_path.display(), "spool ledger damaged; replaying every record kept");
                0
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io("read", &ledger_path)(e)),
        };
        report.released = released;
        let _ = fs::remove_file(dir.join("ledger.tmp"));
        let (segments, max_seen) = scan_segments(&dir, released, telemetry, &mut report)?;
        let found: Found = segments
            .iter()
            .flat_map(|s| s.records.iter())
            .map(|r| (r.seq, r.time_ms, u64::from(r.len)))
            .collect();
        let last = found.last().map_or(released, |r| r.0);
        let store = DiskStore {
            segments,
            writer: None,
            next_seq: max_seen.max(last) + 1,
            released,
            bytes: report.bytes,
            ledger_dirty: false,
            ledger_at: Instant::now(),
            reader: None,
            _lock: lock,
            cfg,
        };
        Ok((store, found, report))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Bytes of segment files on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Append a record body written at `time_ms`. The record number is taken even when the
    /// write fails (the message then lives in memory only under that number); on error nothing
    /// usable was written (a partial record is detected at the next open).
    pub fn append(&mut self, body: &[u8], time_ms: u64) -> (u64, Result<Appended, SpoolError>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        (seq, self.write(seq, body, time_ms))
    }

    fn write(&mut self, seq: u64, body: &[u8], time_ms: u64) -> Result<Appended, SpoolError> {
        let mut frame = Vec::with_capacity(format::RECORD_HEADER + body.len());
        format::encode_record(&mut frame, seq, time_ms, body);
        let len = frame.len() as u64;
        let roll = match (&self.writer, self.segments.back()) {
            (Some(_), Some(s)) => s.size + len > self.cfg.roll_at() && !s.records.is_empty(),
            _ => true,
        };
        if roll {
            self.start_segment(seq)?;
        }
        let (Some(w), Some(seg)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            unreachable!("a writer always comes with its segment")
        };
        let fsync = self.cfg.fsync;
        let written = w
            .write_all(&frame)
            .and_then(|()| if fsync { w.sync_data() } else { Ok(()) });
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
        let dropped_through = self.enforce_size();
        Ok(Appended {
            len,
            dropped_through,
        })
    }

    fn start_segment(&mut self, seq: u64) -> Result<(), SpoolError> {
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
        Ok(())
    }

    fn is_active(&self, i: usize) -> bool {
        self.writer.is_some() && i + 1 == self.segments.len()
    }

    /// Drop the oldest segments while over `max_bytes` (never the one being written).
    fn enforce_size(&mut self) -> Option<u64> {
        let mut dropped = None;
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
            if let Some(last) = seg.records.back() {
                self.released = self.released.max(last.seq);
                self.ledger_dirty = true;
                dropped = Some(last.seq);
            }
            warn!(
                records = seg.records.len(),
                bytes = seg.size,
                max_bytes = self.cfg.max_bytes,
                "spool full; dropped the oldest records undelivered"
            );
            self.remove_segment(seg);
        }
        dropped
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

    /// Everything up to `seq` is delivered: forget it, delete finished segments, and (at most
    /// every [`LEDGER_INTERVAL`]) persist the release position.
    pub fn release_through(&mut self, seq: u64) {
        if seq > self.released {
            self.released = seq;
            self.ledger_dirty = true;
            let mut i = 0;
            while i < self.segments.len() {
                let active = self.is_active(i);
                let seg = &mut self.segments[i];
                while seg.records.front().is_some_and(|r| r.seq <= seq) {
                    seg.records.pop_front();
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
        }
        if self.ledger_dirty && self.ledger_at.elapsed() >= LEDGER_INTERVAL {
            self.persist_ledger();
        }
    }

    /// Persist the release position now if it changed.
    pub fn flush(&mut self) {
        if self.ledger_dirty {
            self.persist_ledger();
        }
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

    /// The body of record `seq`, checked against its checksum; `Err` when it is gone or
    /// damaged.
    pub fn read(&mut self, seq: u64) -> std::io::Result<Vec<u8>> {
        let Some((first, path, info)) = self.segments.iter().find_map(|s| {
            let i = s.records.partition_point(|r| r.seq < seq);
            s.records
                .get(i)
                .filter(|r| r.seq == seq)
                .map(|r| (s.first, s.path.clone(), *r))
        }) else {
            return Err(std::io::Error::other("record no longer in the spool"));
        };
        if self.reader.as_ref().is_none_or(|(f, _)| *f != first) {
            self.reader = Some((first, File::open(&path)?));
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

/// How long [`take_lock`] waits for a holder that is on its way out (a bridge stopping in
/// the same process or a restart overlapping the old process's last file writes).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Take the directory's lock (an advisory `flock` on `<dir>/lock`), waiting up to
/// [`LOCK_WAIT`] for a previous holder to let go. Errors: [`SpoolError::Locked`] when another
/// bridge keeps it, I/O errors otherwise.
fn take_lock(dir: &Path) -> Result<File, SpoolError> {
    let lock_path = dir.join("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("open", &lock_path))?;
    let give_up = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < give_up => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked(dir.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(SpoolError::Io {
                    what: "lock",
                    path: lock_path,
                    source: e,
                });
            }
        }
    }
}

/// Read every segment of `dir`; returns the segments with unreleased records and the highest
/// record number seen.
fn scan_segments(
    dir: &Path,
    released: u64,
    telemetry: &Telemetry,
    report: &mut OpenReport,
) -> Result<(VecDeque<Segment>, u64), SpoolError> {
    let mut names: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .map_err(io("list", dir))?
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
                telemetry.spool_corrupt.inc();
                report.damaged += 1;
                warn!(segment = %path.display(), error = %e, "spool segment unreadable; skipped");
                continue;
            }
        };
        let scan = format::scan(&data);
        if let Some(problem) = &scan.problem {
            telemetry.spool_corrupt.inc();
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
    Ok((segments, max_seen))
}
