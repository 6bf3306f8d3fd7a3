//! The on-disk format of spool segments and the ledger (pure: no file access; [`scan_reader`]
//! reads from any [`Read`]).
//!
//! # Segment file `<first seq, 20 digits>.seg`
//!
//! ```text
//! magic  "CAMQSPL" 0x01                               8 bytes
//! record*:
//!   len    u32 LE   length of `body`                  4
//!   crc    u32 LE   CRC-32C of seq|time|body          4
//!   seq    u64 LE   record number, strictly increasing 8
//!   time   u64 LE   append time, ms since the epoch   8
//!   body   len bytes (see `codec`)
//! ```
//!
//! A segment is only ever appended to by the process that created it; after a restart a new
//! segment is started, so a torn tail (the process died in the middle of a write, or bytes were
//! damaged) is never written after. [`scan`] reads the valid prefix of a segment and reports
//! the first problem; nothing after a bad record can be trusted (the length may be wrong), so
//! the rest of that segment is skipped. Later segments are still read. [`scan_reader`] does
//! the same from a reader, holding one record at a time rather than the whole file (a segment
//! is bounded by `segment_bytes`, but one written by an earlier camqtt could grow to
//! `max_bytes` while the sink kept up). A file that is empty or only (part of) the magic holds no record at all
//! ([`is_blank_segment`]): a segment whose first record was never written.
//!
//! # Ledger file `ledger`
//!
//! ```text
//! magic "CAMQLDG" 0x01 | released u64 LE | crc u32 LE (CRC-32C of the 16 bytes before)
//! ```
//!
//! `released` is the highest record number the broker has acknowledged (everything at or
//! below it is done). It is rewritten atomically (write `ledger.tmp`, rename).

use std::io::Read;

/// Magic at the start of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CAMQSPL\x01";
/// Magic at the start of the ledger.
pub const LEDGER_MAGIC: [u8; 8] = *b"CAMQLDG\x01";
/// Bytes before the first record of a segment.
pub const SEGMENT_HEADER: usize = 8;
/// Bytes of a record header (`len`, `crc`, `seq`, `time`).
pub const RECORD_HEADER: usize = 24;
/// Largest record body accepted (anything larger in a length field is corruption).
pub const MAX_BODY: usize = 256 * 1024 * 1024;
/// Size of the ledger file.
pub const LEDGER_LEN: usize = 20;

/// CRC-32C (Castagnoli polynomial 0x1EDC6F41, reflected, as in RFC 4960 appendix B and
/// iSCSI) of `seq | time | body`: the `crc32c` crate, with the SSE4.2 / ARMv8 CRC instructions
/// where the CPU has them.
fn record_crc<'a>(seq: u64, time_ms: u64, body: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    let c = crc32c::crc32c(&seq.to_le_bytes());
    let c = crc32c::crc32c_append(c, &time_ms.to_le_bytes());
    body.into_iter().fold(c, crc32c::crc32c_append)
}

/// The header of a record whose body is `body` (the concatenation of its pieces, which
/// follow the header in the file as they are: no copy into one buffer).
pub fn record_header<'a>(
    seq: u64,
    time_ms: u64,
    body: impl IntoIterator<Item = &'a [u8]> + Clone,
) -> [u8; RECORD_HEADER] {
    let len: usize = body.clone().into_iter().map(<[u8]>::len).sum();
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    let mut h = [0u8; RECORD_HEADER];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&record_crc(seq, time_ms, body).to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..24].copy_from_slice(&time_ms.to_le_bytes());
    h
}

/// Append one framed record (`header + body`) to `out`.
pub fn encode_record(out: &mut Vec<u8>, seq: u64, time_ms: u64, body: &[u8]) {
    out.reserve(RECORD_HEADER + body.len());
    out.extend_from_slice(&record_header(seq, time_ms, [body]));
    out.extend_from_slice(body);
}

/// Where one valid record sits in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// Record number.
    pub seq: u64,
    /// Append time, ms since the epoch.
    pub time_ms: u64,
    /// Offset of the record header in the segment file.
    pub offset: u64,
    /// Header plus body, bytes.
    pub len: u32,
}

/// Why a record (or what follows it) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The segment does not start with [`SEGMENT_MAGIC`].
    #[error("not a spool segment (bad magic)")]
    BadMagic,
    /// The file ends in the middle of a record (a torn write).
    #[error("truncated record at offset {offset}")]
    Truncated {
        /// Offset of the record header.
        offset: u64,
    },
    /// The length field is impossible.
    #[error("bad record length {len} at offset {offset}")]
    BadLength {
        /// Offset of the record header.
        offset: u64,
        /// The length read.
        len: u64,
    },
    /// Checksum mismatch.
    #[error("checksum mismatch at offset {offset}")]
    BadCrc {
        /// Offset of the record header.
        offset: u64,
    },
    /// Record numbers must increase within a segment.
    #[error("record number {seq} out of order at offset {offset}")]
    OutOfOrder {
        /// Offset of the record header.
        offset: u64,
        /// The number read.
        seq: u64,
    },
}

/// The valid records of a segment, and the first problem found (if any).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Valid records, in file order.
    pub records: Vec<RecordInfo>,
    /// The first problem; everything from there on was skipped.
    pub problem: Option<FrameError>,
    /// Bytes from the problem to the end of the file (skipped).
    pub skipped_bytes: u64,
}

/// Read one record at the start of `buf` (which starts at file offset `offset`).
/// Returns the record and its body. Never panics, whatever the bytes.
pub fn decode_record(buf: &[u8], offset: u64) -> Result<(RecordInfo, &[u8]), FrameError> {
    if buf.len() < RECORD_HEADER {
        return Err(FrameError::Truncated { offset });
    }
    let u32_at = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let len = u32_at(0) as usize;
    if len > MAX_BODY {
        return Err(FrameError::BadLength {
            offset,
            len: len as u64,
        });
    }
    if buf.len() - RECORD_HEADER < len {
        return Err(FrameError::Truncated { offset });
    }
    let crc = u32_at(4);
    let seq = u64_at(8);
    let time_ms = u64_at(16);
    let body = &buf[RECORD_HEADER..RECORD_HEADER + len];
    if record_crc(seq, time_ms, [body]) != crc {
        return Err(FrameError::BadCrc { offset });
    }
    Ok((
        RecordInfo {
            seq,
            time_ms,
            offset,
            len: (RECORD_HEADER + len) as u32,
        },
        body,
    ))
}

/// Scan a whole segment file. Never panics, whatever the bytes.
pub fn scan(file: &[u8]) -> Scan {
    let mut out = Scan::default();
    if file.len() < SEGMENT_HEADER || file[..SEGMENT_HEADER] != SEGMENT_MAGIC {
        out.problem = Some(FrameError::BadMagic);
        out.skipped_bytes = file.len() as u64;
        return out;
    }
    let mut pos = SEGMENT_HEADER;
    let mut last_seq = 0u64;
    while pos < file.len() {
        let offset = pos as u64;
        match decode_record(&file[pos..], offset) {
            Ok((info, _)) if info.seq <= last_seq => {
                out.problem = Some(FrameError::OutOfOrder {
                    offset,
                    seq: info.seq,
                });
                break;
            }
            Ok((info, _)) => {
                last_seq = info.seq;
                pos += info.len as usize;
                out.records.push(info);
            }
            Err(e) => {
                out.problem = Some(e);
                break;
            }
        }
    }
    out.skipped_bytes = (file.len() - pos) as u64;
    out
}

/// [`scan`] of a segment file read from `r`, which holds `size` bytes: the same result,
/// holding one record at a time (at most the record's length, and never more than the file
/// holds) instead of the whole file. Only an I/O error of `r` is an error; bytes that end
/// early are a truncated record, as in [`scan`].
pub fn scan_reader(mut r: impl Read, size: u64) -> std::io::Result<Scan> {
    let mut out = Scan::default();
    let mut buf = Vec::new();
    (&mut r).take(SEGMENT_HEADER as u64).read_to_end(&mut buf)?;
    if buf[..] != SEGMENT_MAGIC {
        out.problem = Some(FrameError::BadMagic);
        out.skipped_bytes = size;
        return Ok(out);
    }
    let mut pos = SEGMENT_HEADER as u64;
    let mut last_seq = 0u64;
    while pos < size {
        buf.clear();
        (&mut r).take(RECORD_HEADER as u64).read_to_end(&mut buf)?;
        if buf.len() == RECORD_HEADER {
            let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if len as usize <= MAX_BODY {
                // `take` + `read_to_end` grows the buffer with what is there: a bad length
                // never allocates more than the file holds.
                (&mut r).take(u64::from(len)).read_to_end(&mut buf)?;
            }
        }
        match decode_record(&buf, pos) {
            Ok((info, _)) if info.seq <= last_seq => {
                out.problem = Some(FrameError::OutOfOrder {
                    offset: pos,
                    seq: info.seq,
                });
                break;
            }
            Ok((info, _)) => {
                last_seq = info.seq;
                pos += u64::from(info.len);
                out.records.push(info);
            }
            Err(e) => {
                out.problem = Some(e);
                break;
            }
        }
    }
    out.skipped_bytes = size.saturating_sub(pos);
    Ok(out)
}

/// True for the first bytes of a segment file that holds no record: empty, or (part of) the
/// magic and nothing else. Give it the whole file (at most [`SEGMENT_HEADER`] bytes).
pub fn is_blank_segment(file: &[u8]) -> bool {
    file.len() <= SEGMENT_HEADER && SEGMENT_MAGIC.starts_with(file)
}

/// The ledger file's bytes for `released`.
pub fn encode_ledger(released: u64) -> [u8; LEDGER_LEN] {
    let mut b = [0u8; LEDGER_LEN];
    b[..8].copy_from_slice(&LEDGER_MAGIC);
    b[8..16].copy_from_slice(&released.to_le_bytes());
    let crc = crc32c::crc32c(&b[..16]);
    b[16..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The released record number of a ledger file; `None` when it is damaged.
pub fn decode_ledger(b: &[u8]) -> Option<u64> {
    if b.len() != LEDGER_LEN || b[..8] != LEDGER_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes([b[16], b[17], b[18], b[19]]);
    if crc32c::crc32c(&b[..16]) != crc {
        return None;
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[8..16]);
    Some(u64::from_le_bytes(v))
}

/// File name of the segment whose first record is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// The first record number encoded in a segment file name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body given in pieces frames exactly like the same bytes in one piece.
    #[test]
    fn a_header_over_pieces_is_the_header_over_their_concatenation() {
        let whole = b"{\"meta\":1}JPEGJPEGJPEG".as_slice();
        for cuts in [vec![], vec![3], vec![0, 11], vec![5, 11, 15, 19]] {
            let mut pieces = vec![];
            let mut at = 0;
            for c in cuts.iter().copied().chain([whole.len()]) {
                pieces.push(&whole[at..c]);
                at = c;
            }
            let mut framed = vec![];
            encode_record(&mut framed, 9, 1_700, whole);
            assert_eq!(
                record_header(9, 1_700, pieces.iter().copied())[..],
                framed[..RECORD_HEADER],
                "{cuts:?}"
            );
        }
    }

    #[test]
    fn crc32c_check_value() {
        // The standard check value of CRC-32C (the old table-driven function's test vector),
        // also when computed in pieces as `record_crc` does.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(
            crc32c::crc32c_append(crc32c::crc32c(b"1234"), b"56789"),
            0xE306_9283
        );
        assert_eq!(crc32c::crc32c(b""), 0);
    }

    /// The on-disk format did not change with the switch to the `crc32c` crate: a segment
    /// written by camqtt's earlier table-driven CRC-32C (two records, a `Seen` and an `Event`,
    /// spooled while the broker was down) still verifies, re-encoding its records gives the
    /// same bytes, and a ledger encodes to the bytes the old code wrote.
    #[test]
    fn segment_and_ledger_written_by_the_old_checksum_still_verify() {
        let file = include_bytes!("../../tests/fixtures/spool/00000000000000000001.seg");
        let s = scan(file);
        assert_eq!(s.problem, None);
        assert_eq!(s.skipped_bytes, 0);
        assert_eq!(s.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
        let mut again = SEGMENT_MAGIC.to_vec();
        for r in &s.records {
            let (info, body) = decode_record(&file[r.offset as usize..], r.offset).unwrap();
            assert_eq!(info, *r);
            encode_record(&mut again, info.seq, info.time_ms, body);
        }
        assert_eq!(again, file.as_slice());
        // Record 1's stored checksum, as the old code computed it.
        assert_eq!(
            u32::from_le_bytes(file[12..16].try_into().unwrap()),
            0xA9FA_3069
        );
        assert_eq!(
            encode_ledger(42),
            [
                67, 65, 77, 81, 76, 68, 71, 1, 42, 0, 0, 0, 0, 0, 0, 0, 63, 152, 17, 68
            ]
        );
    }

    fn segment(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut f = SEGMENT_MAGIC.to_vec();
        for (seq, body) in records {
            encode_record(&mut f, *seq, 1000 + seq, body);
        }
        f
    }

    #[test]
    fn scan_reads_records_and_stops_at_damage() {
        let f = segment(&[(1, b"one"), (2, b"two"), (5, b"five")]);
        let s = scan(&f);
        assert_eq!(s.problem, None);
        assert_eq!(
            s.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2, 5]
        );
        assert_eq!(
            s.records[1].offset,
            (SEGMENT_HEADER + RECORD_HEADER + 3) as u64
        );
        assert_eq!(s.records[2].time_ms, 1005);

        let torn = &f[..f.len() - 2];
        let s = scan(torn);
        assert_eq!(s.records.len(), 2);
        assert!(matches!(s.problem, Some(FrameError::Truncated { .. })));
        assert_eq!(s.skipped_bytes, (RECORD_HEADER + 4 - 2) as u64);

        let mut flipped = f.clone();
        let n = flipped.len();
        flipped[n - 1] ^= 0x40;
        let s = scan(&flipped);
        assert_eq!(s.records.len(), 2);
        assert!(matches!(s.problem, Some(FrameError::BadCrc { .. })));

        let mut garbage = f.clone();
        garbage.extend_from_slice(&[0xff; 40]);
        let s = scan(&garbage);
        assert_eq!(s.records.len(), 3);
        assert!(matches!(s.problem, Some(FrameError::BadLength { .. })));

        assert_eq!(scan(b"nonsense").problem, Some(FrameError::BadMagic));
        assert_eq!(scan(b"").problem, Some(FrameError::BadMagic));

        let backwards = segment(&[(3, b"a"), (2, b"b")]);
        let s = scan(&backwards);
        assert_eq!(s.records.len(), 1);
        assert!(matches!(
            s.problem,
            Some(FrameError::OutOfOrder { seq: 2, .. })
        ));
    }

    /// [`scan_reader`] gives what [`scan`] gives, for every truncation of a segment and every
    /// damaged byte of it, and for appended garbage.
    #[test]
    fn scan_reader_matches_scan() {
        let f = segment(&[(1, b"one"), (2, b"two"), (5, b"five"), (4, b"back")]);
        let same = |bytes: &[u8]| {
            let streamed = scan_reader(bytes, bytes.len() as u64).unwrap();
            assert_eq!(streamed, scan(bytes), "{bytes:?}");
        };
        for n in 0..=f.len() {
            same(&f[..n]);
        }
        for i in 0..f.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut d = f.clone();
                d[i] ^= flip;
                same(&d);
            }
        }
        let mut garbage = f.clone();
        garbage.extend_from_slice(&[0xff; 40]);
        same(&garbage);
        let mut huge_len = segment(&[(1, b"one")]);
        huge_len.extend_from_slice(&[0x00, 0x00, 0x00, 0x0f]); // 251,658,240-byte body
        huge_len.extend_from_slice(&[0; 40]);
        same(&huge_len);
        let file = include_bytes!("../../tests/fixtures/spool/00000000000000000001.seg");
        same(file);
    }

    #[test]
    fn blank_segments() {
        assert!(is_blank_segment(b""));
        assert!(is_blank_segment(b"CAMQ"));
        assert!(is_blank_segment(&SEGMENT_MAGIC));
        assert!(!is_blank_segment(b"nonsense"));
        assert!(!is_blank_segment(b"CAMX"));
        assert!(!is_blank_segment(&segment(&[(1, b"one")])));
    }

    #[test]
    fn ledger_round_trip_and_damage() {
        let b = encode_ledger(42);
        assert_eq!(decode_ledger(&b), Some(42));
        let mut bad = b;
        bad[9] ^= 1;
        assert_eq!(decode_ledger(&bad), None);
        assert_eq!(decode_ledger(&b[..10]), None);
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_name(7), "00000000000000000007.seg");
        assert_eq!(parse_segment_name(&segment_name(7)), Some(7));
        assert_eq!(parse_segment_name("x.seg"), None);
        assert_eq!(parse_segment_name("ledger"), None);
        assert_eq!(parse_segment_name(".seg"), None);
    }
}
