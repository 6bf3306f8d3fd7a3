//! The annotated copy of a picture (issue 12): the detector's boxes drawn on it, for
//! `camera/<device>/<category>/annotated` and the Home Assistant image entity.
//!
//! [`annotate`] decodes the JPEG (the `image` crate, JPEG only: zune-jpeg), draws each object's
//! box as a rectangle outline inside the box, and encodes the result as a JPEG of quality
//! [`QUALITY`]. The outline is a few loops of pixel writes, so camqtt does not pull in
//! `imageproc` (and its rayon, font and geometry dependencies) for it; labels are not written
//! as text: the colour tells the label ([`colour`]), the event JSON has the rest.
//!
//! The work is bounded: pictures wider or higher than [`MAX_SIDE`] are refused before decoding
//! (by their frame header) and by the decoder's limits (with its default 512 MiB allocation
//! cap). Decoding, drawing and encoding are CPU work in proportion to the picture's pixels
//! (25 MB of RGB for a 4K picture): call it from `tokio::task::spawn_blocking`.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{ImageFormat, ImageReader, Limits, Rgb, RgbImage};

use crate::event::DetectedObject;
use crate::sources::jpeg;

/// Largest width or height accepted, in pixels.
pub const MAX_SIDE: u32 = 8192;
/// JPEG quality of the annotated copy (1 to 100).
pub const QUALITY: u8 = 85;

/// Outline colours, bright and far apart so that they show on grey scenes, day and night.
const PALETTE: [[u8; 3]; 8] = [
    [255, 32, 32],  // red
    [32, 224, 32],  // green
    [32, 96, 255],  // blue
    [255, 224, 0],  // yellow
    [255, 0, 224],  // magenta
    [0, 224, 255],  // cyan
    [255, 128, 0],  // orange
    [160, 64, 255], // violet
];

/// Why no annotated copy could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotateError {
    /// The picture is wider or higher than [`MAX_SIDE`].
    #[error("picture of {width}×{height} pixels is larger than {MAX_SIDE}×{MAX_SIDE}")]
    TooLarge {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// Not a JPEG the decoder can read (cut off, corrupt, an unsupported coding).
    #[error("cannot decode the picture: {0}")]
    Decode(String),
    /// The encoder failed.
    #[error("cannot encode the annotated picture: {0}")]
    Encode(String),
}

/// The outline colour of `label` (RGB): the same label always gets the same colour (FNV-1a of
/// its bytes picks one of eight), different labels usually different ones.
pub fn colour(label: &str) -> [u8; 3] {
    let mut hash: u32 = 0x811c_9dc5;
    for b in label.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    PALETTE[hash as usize % PALETTE.len()]
}

/// Outline width in pixels for a `w × h` picture: `max(2, min(w, h) / 200)` (2 px up to
/// 600 px, 5 px on 1080p, 10 px on 4K).
pub fn line_width(w: u32, h: u32) -> u32 {
    (w.min(h) / 200).max(2)
}

/// A JPEG copy of `jpeg` with each object's box outlined in its label's [`colour`], the
/// outline [`line_width`] wide and inside the box (clamped to the picture). The most
/// confident object is drawn last, so it is on top where boxes cross.
///
/// # Errors
/// [`AnnotateError::TooLarge`] for a picture over [`MAX_SIDE`]; [`AnnotateError::Decode`]
/// for a picture that does not decode; [`AnnotateError::Encode`] if encoding fails.
pub fn annotate(jpeg: &[u8], objects: &[DetectedObject]) -> Result<Vec<u8>, AnnotateError> {
    if let Some((width, height)) = jpeg::dimensions(jpeg)
        && (width > MAX_SIDE || height > MAX_SIDE)
    {
        return Err(AnnotateError::TooLarge { width, height });
    }
    let mut reader = ImageReader::with_format(Cursor::new(jpeg), ImageFormat::Jpeg);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let mut img = reader
        .decode()
        .map_err(|e| AnnotateError::Decode(e.to_string()))?
        .into_rgb8();
    let t = line_width(img.width(), img.height());
    // Most confident first in `objects`: draw in reverse so it ends on top.
    for o in objects.iter().rev() {
        outline(&mut img, o, t);
    }
    let mut out = Vec::with_capacity(jpeg.len() + jpeg.len() / 4);
    JpegEncoder::new_with_quality(&mut out, QUALITY)
        .encode_image(&img)
        .map_err(|e| AnnotateError::Encode(e.to_string()))?;
    Ok(out)
}

/// Draw `o`'s box outline, `t` pixels wide, inside the box and the picture.
fn outline(img: &mut RgbImage, o: &DetectedObject, t: u32) {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return;
    }
    let b = &o.bbox;
    let (x0, x1) = (b.x_min.min(w - 1), b.x_max.min(w - 1));
    let (y0, y1) = (b.y_min.min(h - 1), b.y_max.min(h - 1));
    let (x0, x1) = (x0.min(x1), x0.max(x1));
    let (y0, y1) = (y0.min(y1), y0.max(y1));
    let c = Rgb(colour(&o.label));
    // Rows of the top and bottom edges, then columns of the left and right ones (a box
    // narrower than two lines is filled).
    let mut fill = |xa: u32, xb: u32, ya: u32, yb: u32| {
        for y in ya..=yb {
            for x in xa..=xb {
                img.put_pixel(x, y, c);
            }
        }
    };
    let t1 = t - 1;
    fill(x0, x1, y0, (y0 + t1).min(y1));
    fill(x0, x1, y1.saturating_sub(t1).max(y0), y1);
    fill(x0, (x0 + t1).min(x1), y0, y1);
    fill(x1.saturating_sub(t1).max(x0), x1, y0, y1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::PixelBox;

    const GREY: [u8; 3] = [128, 128, 128];

    fn grey_jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_pixel(w, h, Rgb(GREY));
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, 95)
            .encode_image(&img)
            .unwrap();
        out
    }

    fn object(label: &str, b: [u32; 4]) -> DetectedObject {
        DetectedObject {
            label: label.into(),
            confidence: 0.9,
            bbox: PixelBox {
                x_min: b[0],
                y_min: b[1],
                x_max: b[2],
                y_max: b[3],
            },
        }
    }

    fn decode(jpeg: &[u8]) -> RgbImage {
        image::load_from_memory_with_format(jpeg, ImageFormat::Jpeg)
            .unwrap()
            .into_rgb8()
    }

    fn distance(a: [u8; 3], b: [u8; 3]) -> u32 {
        a.iter()
            .zip(b)
            .map(|(&x, y)| u32::from(x.abs_diff(y)))
            .sum()
    }

    /// The pixel at (x, y) is nearer `want` than grey, and clearly coloured.
    fn is_colour(img: &RgbImage, x: u32, y: u32, want: [u8; 3]) -> bool {
        let p = img.get_pixel(x, y).0;
        distance(p, want) < distance(p, GREY) && distance(p, GREY) > 60
    }

    fn is_grey(img: &RgbImage, x: u32, y: u32) -> bool {
        distance(img.get_pixel(x, y).0, GREY) <= 12
    }

    #[test]
    fn box_edges_coloured_inside_and_outside_unchanged() {
        let src = grey_jpeg(320, 240);
        let person = object("person", [80, 60, 200, 180]);
        let out = annotate(&src, std::slice::from_ref(&person)).unwrap();
        assert_eq!(jpeg::dimensions(&out), Some((320, 240)));
        let img = decode(&out);
        let c = colour("person");
        assert_eq!(line_width(320, 240), 2);
        // The middle of each edge (the outline is 2 px wide, inside the box).
        for (x, y) in [
            (140, 60),
            (140, 61),
            (140, 180),
            (80, 120),
            (81, 120),
            (200, 120),
        ] {
            assert!(
                is_colour(&img, x, y, c),
                "({x}, {y}) {:?}",
                img.get_pixel(x, y)
            );
        }
        // Corners too.
        for (x, y) in [(80, 60), (200, 60), (80, 180), (200, 180)] {
            assert!(
                is_colour(&img, x, y, c),
                "({x}, {y}) {:?}",
                img.get_pixel(x, y)
            );
        }
        // Well inside and well outside: the picture's own grey.
        for (x, y) in [
            (140, 120),
            (100, 80),
            (180, 160),
            (10, 10),
            (300, 230),
            (40, 120),
        ] {
            assert!(is_grey(&img, x, y), "({x}, {y}) {:?}", img.get_pixel(x, y));
        }
    }

    #[test]
    fn colours_per_label_and_boxes_clamped() {
        assert_eq!(colour("person"), colour("person"));
        let labels = ["person", "car", "truck", "dog", "bicycle", "cat"];
        let distinct: std::collections::BTreeSet<_> = labels.iter().map(|l| colour(l)).collect();
        assert!(distinct.len() >= 4, "{distinct:?}");
        assert_ne!(colour("person"), colour("car"));

        // A box past the picture's edges is drawn along them; a 1-pixel box is a dot.
        let src = grey_jpeg(640, 480);
        let out = annotate(
            &src,
            &[
                object("car", [600, 400, 5000, 9000]),
                object("person", [10, 10, 10, 10]),
            ],
        )
        .unwrap();
        let img = decode(&out);
        assert_eq!(line_width(640, 480), 2);
        assert!(is_colour(&img, 639, 440, colour("car")));
        assert!(is_colour(&img, 620, 479, colour("car")));
        assert!(is_colour(&img, 600, 440, colour("car")));
        assert!(is_grey(&img, 560, 440));
        assert!(is_grey(&img, 300, 300));
    }

    #[test]
    fn nothing_to_draw_and_line_widths() {
        let src = grey_jpeg(64, 48);
        let img = decode(&annotate(&src, &[]).unwrap());
        assert_eq!(img.dimensions(), (64, 48));
        assert!(is_grey(&img, 32, 24));
        assert_eq!(line_width(1920, 1080), 5);
        assert_eq!(line_width(3840, 2160), 10);
        assert_eq!(line_width(1, 1), 2);
    }

    #[test]
    fn refused_pictures() {
        assert!(matches!(
            annotate(b"not a jpeg", &[]),
            Err(AnnotateError::Decode(_))
        ));
        let src = grey_jpeg(64, 48);
        assert!(matches!(
            annotate(&src[..src.len() / 2], &[]),
            Err(AnnotateError::Decode(_)) | Ok(_)
        ));
        // A frame header claiming 9000×100: refused before any decoding.
        let mut big = src.clone();
        let sof = big.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        big[sof + 5..sof + 7].copy_from_slice(&100u16.to_be_bytes());
        big[sof + 7..sof + 9].copy_from_slice(&9000u16.to_be_bytes());
        assert_eq!(
            annotate(&big, &[]),
            Err(AnnotateError::TooLarge {
                width: 9000,
                height: 100
            })
        );
    }
}
