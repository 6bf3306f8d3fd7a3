//! Is a file a whole JPEG? (pure; used by every source whose pictures can arrive cut off)
//!
//! FTP's `STOR` carries no length: a camera whose data connection drops after 2048 of 5000
//! bytes (a power dip, a Wi-Fi roam) looks to the server like a finished 2048-byte upload
//! (field case 11 B). The file's own structure tells: a JPEG (ITU-T T.81 Annex B) is
//! `SOI`, marker segments each with a 16-bit length, entropy-coded scans after each `SOS`
//! (where `FF` is stuffed as `FF 00` and `FF D0`..`FF D7` are restart markers), and `EOI`
//! (`FF D9`). [`check`] walks that structure to the `EOI` that closes the image; a file that
//! runs out first was cut off. An `FF D9` inside an embedded EXIF thumbnail does not count:
//! it lies inside the `APP1` segment, which the walk skips by its length. The same holds for a
//! mail attachment whose camera ran out of buffer and for an HTTP/1.0 snapshot answer without
//! a length whose connection dropped.
//!
//! [`dimensions`] reads a picture's width and height from its frame header (`SOFn`, T.81
//! B.2.2) without decoding it: the object detector's clients need them to turn DOODS2's
//! fractions into pixels and to keep boxes inside the picture.

/// What [`check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegCheck {
    /// The image ends with `EOI` at byte offset `end` (exclusive); bytes after it (padding
    /// some cameras append) are allowed.
    Complete {
        /// Offset just after `FF D9`.
        end: usize,
    },
    /// The data ends before `EOI`: the upload was cut off.
    Truncated,
    /// Not a JPEG structure (no `SOI`, a segment where a marker must be).
    Malformed(&'static str),
}

/// `true` when `data` starts like a JPEG file: `SOI` followed by a marker (`FF D8 FF`).
pub fn is_jpeg(data: &[u8]) -> bool {
    data.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Walk `data` from `SOI` to `EOI`. Never panics; linear in the length.
pub fn check(data: &[u8]) -> JpegCheck {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return JpegCheck::Malformed("no SOI marker (FF D8) at the start");
    }
    let mut i = 2;
    loop {
        // A marker: one or more FF (fill bytes, T.81 B.1.1.2) then the code.
        if i >= data.len() {
            return JpegCheck::Truncated;
        }
        if data[i] != 0xFF {
            return JpegCheck::Malformed("a marker was expected");
        }
        while i < data.len() && data[i] == 0xFF {
            i += 1;
        }
        let Some(&code) = data.get(i) else {
            return JpegCheck::Truncated;
        };
        i += 1;
        match code {
            0xD9 => return JpegCheck::Complete { end: i },
            0x01 | 0xD0..=0xD7 => continue,
            0x00 | 0xD8 => return JpegCheck::Malformed("unexpected marker"),
            _ => {}
        }
        let Some(len) = data.get(i..i + 2) else {
            return JpegCheck::Truncated;
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            return JpegCheck::Malformed("segment length below 2");
        }
        i += len;
        if i > data.len() {
            return JpegCheck::Truncated;
        }
        if code == 0xDA {
            // Entropy-coded data up to the next marker that is not stuffing or a restart.
            loop {
                match data.get(i..i + 2) {
                    None => return JpegCheck::Truncated,
                    Some([0xFF, 0x00 | 0xD0..=0xD7]) => i += 2,
                    Some([0xFF, 0xFF]) => i += 1,
                    Some([0xFF, _]) => break,
                    Some(_) => i += 1,
                }
            }
        }
    }
}

/// Width and height in pixels from the first frame header (`SOF0`..`SOF15` but `DHT` `C4`,
/// `JPG` `C8` and `DAC` `CC`; T.81 B.2.2: length, precision, height `Y`, width `X`, components).
/// `None` when `data` is not a JPEG, the header is cut off or comes after the first scan, or a
/// side is 0 (a height of 0 means "given later in a `DNL` marker", which cameras do not send).
/// Never panics; reads the marker segments only (stops at the first `SOS`).
pub fn dimensions(data: &[u8]) -> Option<(u32, u32)> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    loop {
        if *data.get(i)? != 0xFF {
            return None;
        }
        while data.get(i) == Some(&0xFF) {
            i += 1;
        }
        let code = *data.get(i)?;
        i += 1;
        match code {
            0x01 | 0xD0..=0xD7 => continue,
            0x00 | 0xD8 | 0xD9 | 0xDA => return None,
            _ => {}
        }
        let len = data.get(i..i + 2)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            return None;
        }
        if matches!(code, 0xC0..=0xCF) && !matches!(code, 0xC4 | 0xC8 | 0xCC) {
            let h = data.get(i + 3..i + 5)?;
            let w = data.get(i + 5..i + 7)?;
            let (h, w) = (
                u32::from(u16::from_be_bytes([h[0], h[1]])),
                u32::from(u16::from_be_bytes([w[0], w[1]])),
            );
            return (len >= 8 && w > 0 && h > 0).then_some((w, h));
        }
        i += len;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A structurally valid baseline JPEG skeleton (not decodable, but every segment is
    /// well-formed): SOI, APP0, an APP1 holding a thumbnail with its own SOI/EOI, COM
    /// padding to `pad` bytes, SOF0, DHT, SOS, entropy data with stuffing and a restart, EOI.
    pub(crate) fn sample(pad: usize) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        let seg = |v: &mut Vec<u8>, code: u8, body: &[u8]| {
            v.extend([0xFF, code]);
            v.extend(((body.len() + 2) as u16).to_be_bytes());
            v.extend(body);
        };
        seg(&mut v, 0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        seg(&mut v, 0xE1, b"Exif\0\0\xFF\xD8\xFF\xD9");
        let mut left = pad;
        while left > 0 {
            let n = left.min(60_000);
            seg(&mut v, 0xFE, &vec![b'x'; n]);
            left -= n;
        }
        seg(&mut v, 0xC0, &[8, 0, 16, 0, 16, 1, 1, 0x11, 0]);
        seg(&mut v, 0xC4, &[0; 17]);
        seg(&mut v, 0xDA, &[1, 1, 0, 0, 63, 0]);
        v.extend([0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0xD9]);
        v
    }

    #[test]
    fn whole_file_is_complete() {
        let j = sample(100);
        assert!(is_jpeg(&j));
        assert_eq!(check(&j), JpegCheck::Complete { end: j.len() });
        let mut padded = j.clone();
        padded.extend([0u8; 16]);
        assert_eq!(check(&padded), JpegCheck::Complete { end: j.len() });
    }

    #[test]
    fn every_cut_is_truncated() {
        let j = sample(300);
        for cut in 2..j.len() - 1 {
            assert_eq!(check(&j[..cut]), JpegCheck::Truncated, "cut at {cut}");
        }
    }

    #[test]
    fn thumbnail_eoi_does_not_end_the_image() {
        let j = sample(0);
        let app1_end = j.windows(2).rposition(|w| w == [0xFF, 0xD9]).unwrap();
        assert!(app1_end > 30);
        assert_eq!(check(&j[..40]), JpegCheck::Truncated);
    }

    #[test]
    fn not_jpeg() {
        assert!(!is_jpeg(b"GIF89a"));
        assert!(matches!(check(b"hello"), JpegCheck::Malformed(_)));
        assert!(matches!(
            check(&[0xFF, 0xD8, 0x00]),
            JpegCheck::Malformed(_)
        ));
        assert_eq!(check(&[0xFF, 0xD8]), JpegCheck::Truncated);
    }

    #[test]
    fn field_sample_when_present() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/field/11-ftp-allo-passive/snapshot.jpg"
        );
        let Ok(j) = std::fs::read(path) else {
            eprintln!("skipped: {path} absent");
            return;
        };
        assert_eq!(check(&j), JpegCheck::Complete { end: j.len() });
        assert_eq!(check(&j[..2048]), JpegCheck::Truncated);
    }

    #[test]
    fn dimensions_from_the_frame_header() {
        // sample(): SOF0 with height 16, width 16, after APP0, APP1 and COM segments.
        assert_eq!(dimensions(&sample(0)), Some((16, 16)));
        assert_eq!(dimensions(&sample(70_000)), Some((16, 16)));
        // A 640×480 progressive (SOF2) header, fill bytes before the marker.
        let mut j = vec![
            0xFF, 0xD8, 0xFF, 0xFF, 0xC2, 0, 11, 8, 0x01, 0xE0, 0x02, 0x80, 1,
        ];
        j.extend([1, 0x11, 0]);
        assert_eq!(dimensions(&j), Some((640, 480)));
        // DHT (C4), JPG (C8) and DAC (CC) are not frame headers.
        let mut d = vec![0xFF, 0xD8];
        for code in [0xC4, 0xC8, 0xCC] {
            d.extend([0xFF, code, 0, 8, 8, 0, 9, 0, 9, 1]);
        }
        assert_eq!(dimensions(&d), None);
        d.extend([0xFF, 0xC1, 0, 8, 8, 0, 2, 0, 3, 1]);
        assert_eq!(dimensions(&d), Some((3, 2)));
        // A height of 0 (DNL), a scan before any frame header, cut-off headers, not a JPEG.
        assert_eq!(
            dimensions(&[0xFF, 0xD8, 0xFF, 0xC0, 0, 8, 8, 0, 0, 0, 9, 1]),
            None
        );
        assert_eq!(
            dimensions(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 8, 8, 0, 9, 0, 9, 1]),
            None
        );
        let whole = sample(0);
        let sof = whole.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        for cut in 0..sof + 9 {
            assert_eq!(dimensions(&whole[..cut]), None, "cut at {cut}");
        }
        assert_eq!(dimensions(b"GIF89a"), None);
    }

    #[test]
    fn dimensions_of_an_encoded_picture() {
        let mut out = Vec::new();
        let img = image::RgbImage::from_pixel(321, 123, image::Rgb([1, 2, 3]));
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .encode_image(&img)
            .unwrap();
        assert_eq!(dimensions(&out), Some((321, 123)));
    }

    proptest! {
        /// `dimensions` never panics, whatever follows SOI.
        #[test]
        fn dimensions_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = dimensions(&bytes);
            let mut j = vec![0xFF, 0xD8];
            j.extend(&bytes);
            let _ = dimensions(&j);
        }

        /// Never panics, whatever the bytes; a cut-off prefix of a whole JPEG is never
        /// reported complete.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..400) {
            let _ = check(&bytes);
            let mut j = vec![0xFF, 0xD8];
            j.extend(&bytes);
            let _ = check(&j);
            let s = sample(cut);
            let at = cut.min(s.len() - 1);
            let complete = matches!(check(&s[..at]), JpegCheck::Complete { .. });
            prop_assert!(!complete, "cut at {} reported complete", at);
        }
    }
}
