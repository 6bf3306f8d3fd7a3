//! The spool's files: segment files of CRC-32C-checked records ([`super::format`]), a ledger
//! holding the highest released record, and a lock file. Blocking I/O only: the buffer
//! ([`super::Buffer`]) calls it from blocking threads, never from the async runtime.
//!
//! * Append: a `write(2)` into the page cache (survives the bridge being killed, not a power
//!   cut); with [`super::SpoolConfig::fsync`] also `fdatasync`.
//! * Rollover: the active segment is closed once the next record would take it past the roll
//!   size (`segment_bytes`, or a quarter of `max_bytes` if smaller, at least 64 KiB), whether
//!   or not its records were delivered; only a single record larger than the roll size makes
//!   a bigger segment (it is alone in it). A segment is deleted as soon as none of its records
//!   waits for delivery and it is not the active one — also the segment being closed, so a
//!   sink that keeps up leaves one segment on disk, never a file of delivered records.
//! * Write failures (a full disk): a segment file whose header cannot be written is removed
//!   again; after a failed append the partial record is cut off (best effort) and the segment
//!   is closed (deleted if none of its records waits). No empty file per post is left behind.
//! * Size bound: when the segment files exceed `max_bytes`, the oldest segment is deleted; the
//!   caller learns which records went ([`Appended::dropped_through`]) to count them.
//! * Damage: [`DiskStore::open`] scans every segment, streaming it (memory: one record at a
//!   time, not the file); a torn or damaged tail ends that segment's valid part (one warn
//!   line, counted); later segments are still read. A segment file with no record at all
//!   (empty, a torn header, or just the header: what a full disk or a kill leaves) is deleted
//!   quietly, not counted as damage. New records always go to a new segment.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, IoSlice, Read, Seek, SeekFrom, Write};
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
    /// Bytes of segment files (published as `spool_bytes` on every change).
    bytes: u64,
    telemetry: Telemetry,
    ledger_dirty: bool,
    /// With `fsync`: records were written since the last `fdatasync` ([`DiskStore::sync`]).
    unsynced: bool,
    /// With `fsync`: the flush of a segment closed since the last [`DiskStore::sync`] failed.
    sync_error: Option<std::io::Error>,
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
            telemetry: telemetry.clone(),
            ledger_dirty: false,
            unsynced: false,
            sync_error: None,
            ledger_at: Instant::now(),
            reader: None,
            _lock: lock,
            cfg,
        };
        store.publish_bytes();
        Ok((store, found, report))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Report the bytes of segment files as `spool_bytes`: what is on disk, the segments
    /// holding undelivered records plus at most the active one.
    fn publish_bytes(&self) {
        self.telemetry.spool_bytes.set(self.bytes);
    }

    /// Append a record body written at `time_ms`. The record number is taken even when the
    /// write fails (the message then lives in memory only under that number); on error nothing
    /// usable was written (a partial record is cut off, or else detected at the next open).
    #[cfg(test)]
    pub fn append(&mut self, body: &[u8], time_ms: u64) -> (u64, Result<Appended, SpoolError>) {
        self.append_parts(&[body], time_ms)
    }

    /// [`DiskStore::append`] of a body given in pieces (their concatenation), written with
    /// one vectored write: the images of an event go from their own buffers to the file.
    #[cfg(test)]
    pub fn append_parts(
        &mut self,
        body: &[&[u8]],
        time_ms: u64,
    ) -> (u64, Result<Appended, SpoolError>) {
        let (seq, written) = self.append_unsynced(body, time_ms);
        (seq, written.and_then(|done| self.sync().map(|()| done)))
    }

    /// [`DiskStore::append_parts`] without the `fdatasync` of `spool.fsync`: several records,
    /// then one [`DiskStore::sync`] for all of them (group commit). Until that sync
    /// succeeds, the records are written but not durable against a power cut.
    #[cfg(test)]
    pub fn append_unsynced(
        &mut self,
        body: &[&[u8]],
        time_ms: u64,
    ) -> (u64, Result<Appended, SpoolError>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        (seq, self.write(seq, body, time_ms))
    }

    /// With `spool.fsync`: `fdatasync` what was appended since the last sync (the active
    /// segment, and any segment closed meanwhile, which was flushed when it was closed).
    /// Without `spool.fsync`, nothing to do. An error: the records since the last sync may
    /// not survive a power cut.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        let failed = self.sync_error.take();
        let flushed = match (&self.writer, self.unsynced) {
            (Some(w), true) => w.sync_data(),
            _ => Ok(()),
        };
        self.unsynced = false;
        let path = || {
            self.segments
                .back()
                .map(|s| s.path.clone())
                .unwrap_or_default()
        };
        match failed.map_or(flushed, Err) {
            Ok(()) => Ok(()),
            Err(e) => Err(io("flush", &path())(e)),
        }
    }

    /// Write record `seq` (given by the buffer, which numbers records when they arrive)
    /// without the `fdatasync` of `spool.fsync` ([`DiskStore::sync`] follows the batch).
    /// Numbers only grow: `seq` is above every record written before; numbers in between
    /// belong to records delivered without ever being written (a segment may skip them).
    /// `None`: `seq` was already released, nothing to write.
    pub fn write_at(
        &mut self,
        seq: u64,
        body: &[&[u8]],
        time_ms: u64,
    ) -> Option<Result<Appended, SpoolError>> {
        if seq <= self.released {
            return None;
        }
        debug_assert!(seq >= self.next_seq, "record {seq} written out of order");
        self.next_seq = self.next_seq.max(seq + 1);
        Some(self.write(seq, body, time_ms))
    }

    /// The number the next record gets unless the buffer numbers it ([`DiskStore::write_at`]):
    /// above every record found at open and the release position.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn write(&mut self, seq: u64, body: &[&[u8]], time_ms: u64) -> Result<Appended, SpoolError> {
        let header = format::record_header(seq, time_ms, body.iter().copied());
        let mut frame = Vec::with_capacity(1 + body.len());
        frame.push(&header[..]);
        frame.extend_from_slice(body);
        let len = frame.iter().map(|p| p.len() as u64).sum::<u64>();
        // Roll when this record would take the active segment past the roll size — unless
        // the segment holds no record yet (a record larger than the roll size goes alone).
        let roll = match (&self.writer, self.segments.back()) {
            (Some(_), Some(s)) => {
                s.size > format::SEGMENT_HEADER as u64 && s.size + len > self.cfg.roll_at()
            }
            _ => true,
        };
        if roll {
            self.start_segment(seq)?;
        }
        let (Some(w), Some(seg)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            unreachable!("a writer always comes with its segment")
        };
        let written = write_all_vectored(w, &frame);
        self.unsynced |= self.cfg.fsync;
        if let Err(e) = written {
            // The file may now end in a partial record: cut it off (best effort; a torn tail
            // is otherwise found at the next open) and never append to this file again.
            let _ = w.set_len(seg.size);
            let e = io("append to", &seg.path)(e);
            self.close_active();
            return Err(e);
        }
        seg.records.push_back(RecordInfo {
            seq,
            time_ms,
            offset: seg.size,
            len: len as u32,
        });
        seg.size += len;
        self.bytes += len;
        self.publish_bytes();
        let dropped_through = self.enforce_size();
        Ok(Appended {
            len,
            dropped_through,
        })
    }

    fn start_segment(&mut self, seq: u64) -> Result<(), SpoolError> {
        self.close_active();
        let path = self.cfg.dir.join(format::segment_name(seq));
        let f = create_segment(&path, |f| f.write_all(&format::SEGMENT_MAGIC))?;
        self.bytes += format::SEGMENT_HEADER as u64;
        self.publish_bytes();
        self.segments.push_back(Segment {
            first: seq,
            path,
            size: format::SEGMENT_HEADER as u64,
            records: VecDeque::new(),
        });
        self.writer = Some(f);
        Ok(())
    }

    /// Stop appending to the active segment, and delete it if none of its records waits
    /// (all delivered, or none written).
    fn close_active(&mut self) {
        if let (Some(w), true) = (&self.writer, self.unsynced) {
            // Flush what the next sync would have flushed: it syncs the new active file.
            if let Err(e) = w.sync_data() {
                self.sync_error.get_or_insert(e);
            }
            self.unsynced = false;
        }
        if self.writer.take().is_some()
            && self.segments.back().is_some_and(|s| s.records.is_empty())
            && let Some(seg) = self.segments.pop_back()
        {
            debug!(segment = %seg.path.display(), "spool segment closed, fully released; deleted");
            self.remove_segment(seg);
        }
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
        self.publish_bytes();
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

/// Write every byte of `pieces`, in order, with as few `writev(2)` calls as the kernel allows
/// (`Write::write_all_vectored` is not stable yet).
fn write_all_vectored(w: &mut File, pieces: &[&[u8]]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match w.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Create the segment file `path` (it must not exist) and write its header with `header`.
/// When the header cannot be written (a full disk), the file is removed again.
fn create_segment(
    path: &Path,
    header: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<File, SpoolError> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .map_err(io("create", path))?;
    if let Err(e) = header(&mut f) {
        drop(f);
        if let Err(error) = fs::remove_file(path) {
            warn!(segment = %path.display(), %error, "cannot delete a spool segment without a header");
        }
        return Err(io("write", path)(e));
    }
    Ok(f)
}

/// Scan one segment file without reading it into memory at once ([`format::scan_reader`]).
/// `None`: the file holds no record at all — empty, a torn header or just the header.
fn scan_file(path: &Path) -> std::io::Result<Option<(format::Scan, u64)>> {
    let f = File::open(path)?;
    let size = f.metadata()?.len();
    if size <= format::SEGMENT_HEADER as u64 {
        let mut head = Vec::with_capacity(format::SEGMENT_HEADER);
        f.take(format::SEGMENT_HEADER as u64)
            .read_to_end(&mut head)?;
        if format::is_blank_segment(&head) {
            return Ok(None);
        }
        return Ok(Some((format::scan(&head), size)));
    }
    let scan = format::scan_reader(BufReader::with_capacity(64 * 1024, f), size)?;
    Ok(Some((scan, size)))
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
        let (scan, size) = match scan_file(&path) {
            Ok(Some(found)) => found,
            Ok(None) => {
                debug!(segment = %path.display(), "spool segment without records; deleted");
                let _ = fs::remove_file(&path);
                continue;
            }
            Err(e) => {
                telemetry.spool_corrupt.inc();
                report.damaged += 1;
                warn!(segment = %path.display(), error = %e, "spool segment unreadable; skipped");
                continue;
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A full disk: the file is created but its header cannot be written. No empty file is
    /// left behind (one per post, each a "damaged" warning at the next start).
    #[test]
    fn a_segment_whose_header_cannot_be_written_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format::segment_name(7));
        let r = create_segment(&path, |_| {
            Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
        });
        assert!(
            matches!(r, Err(SpoolError::Io { what: "write", .. })),
            "{r:?}"
        );
        assert!(!path.exists(), "empty segment file left behind");
        // The name is free again for the next try.
        let f = create_segment(&path, |f| f.write_all(&format::SEGMENT_MAGIC));
        assert!(f.is_ok(), "{f:?}");
        assert_eq!(fs::read(&path).unwrap(), format::SEGMENT_MAGIC);
    }

    /// Segments roll at the roll size; a record larger than it is written alone, to a segment
    /// of its own, and the next record starts a new one.
    #[test]
    fn a_record_larger_than_the_roll_size_gets_a_segment_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = SpoolConfig::new(dir.path());
        cfg.segment_bytes = MIN_ROLL;
        let (mut store, _, _) = DiskStore::open(cfg, &Telemetry::new()).unwrap();
        let small = vec![1u8; 10_000];
        let big = vec![2u8; 100_000];
        let mut seqs = vec![];
        for body in [&small, &big, &small, &small] {
            let (seq, r) = store.append(body, 1_000);
            r.unwrap();
            seqs.push(seq);
        }
        assert_eq!(
            seg_files(dir.path()),
            [
                format::segment_name(seqs[0]),
                format::segment_name(seqs[1]),
                format::segment_name(seqs[2]),
            ]
        );
        let sizes: Vec<u64> = store.segments.iter().map(|s| s.size).collect();
        let frame = |n: usize| (format::RECORD_HEADER + n) as u64;
        let header = format::SEGMENT_HEADER as u64;
        assert_eq!(
            sizes,
            [
                header + frame(10_000),
                header + frame(100_000),
                header + 2 * frame(10_000)
            ]
        );
        assert_eq!(store.bytes, sizes.iter().sum::<u64>());
    }

    /// `spool.fsync` with a batch: records written unsynced across a segment roll, then one
    /// sync; all of them are there after a reopen, and the flag is cleared.
    #[test]
    fn a_batch_is_flushed_once_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = SpoolConfig::new(dir.path());
        cfg.segment_bytes = MIN_ROLL;
        cfg.fsync = true;
        let (mut store, _, _) = DiskStore::open(cfg.clone(), &Telemetry::new()).unwrap();
        let body = vec![7u8; 30_000];
        let seqs: Vec<u64> = (0..5)
            .map(|_| {
                let (seq, r) = store.append_unsynced(&[&body[..]], 1_000);
                r.unwrap();
                seq
            })
            .collect();
        assert!(store.unsynced);
        assert!(
            seg_files(dir.path()).len() >= 2,
            "the batch rolled a segment"
        );
        store.sync().unwrap();
        assert!(!store.unsynced && store.sync_error.is_none());
        drop(store);
        let (_, found, report) = DiskStore::open(cfg, &Telemetry::new()).unwrap();
        assert_eq!(report.damaged, 0);
        assert_eq!(found.iter().map(|r| r.0).collect::<Vec<_>>(), seqs);
    }

    fn seg_files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".seg"))
            .collect();
        v.sort();
        v
    }

    /// An append fails (a full disk) on a segment whose records were all delivered: the
    /// segment is closed and deleted, not left for the next start to read; the next append
    /// starts a new one.
    #[test]
    fn a_failed_append_leaves_no_segment_without_waiting_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _, _) =
            DiskStore::open(SpoolConfig::new(dir.path()), &Telemetry::new()).unwrap();
        let (one, r) = store.append(b"one", 1_000);
        r.unwrap();
        store.release_through(one);
        let path = dir.path().join(format::segment_name(one));
        assert!(
            path.exists(),
            "the active segment stays while it is written"
        );
        // The next write fails: a writer that cannot write.
        store.writer = Some(File::open(&path).unwrap());
        let (_, r) = store.append(b"two", 1_001);
        assert!(r.is_err());
        assert_eq!(seg_files(dir.path()), Vec::<String>::new());
        assert_eq!(store.bytes, 0);
        let (three, r) = store.append(b"three", 1_002);
        r.unwrap();
        assert_eq!(seg_files(dir.path()), [format::segment_name(three)]);
        assert_eq!(
            store.bytes,
            fs::metadata(dir.path().join(format::segment_name(three)))
                .unwrap()
                .len()
        );
    }
}
