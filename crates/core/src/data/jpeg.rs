//! JPEG decoding through libjpeg(-turbo) itself (`csrc/jpeg.c`), the library behind OpenCV's JPEG codec,
//! for what OpenCV does not offer: output straight in RGB (no BGR pass and copy), and decoding of a
//! region only. Rows above a region are entropy-decoded and skipped, rows below are never read, and
//! only the region's columns (widened to whole iMCUs) go through the inverse DCT and colour conversion,
//! so a random crop of half the image costs about half a decode.
//!
//! Files this path does not cover (CMYK/YCCK, or an EXIF orientation other than 1) are left to OpenCV:
//! the functions here return `Ok(None)` for them.

// FFI: the one unsafe call is in `decode_region`, with its buffer sizes checked on the Rust side.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint};

use std::path::Path;

use super::image::{Format, Header, RgbImage, walk_jpeg};
use super::transforms::CropRect;
use super::{DataError, DecodeOptions};

unsafe extern "C" {
    fn tlcv_jpeg_decode_rgb(
        data: *const u8,
        len: usize,
        denom: c_uint,
        x: c_uint,
        y: c_uint,
        w: c_uint,
        h: c_uint,
        out: *mut u8,
        msg: *mut c_char,
        msg_len: usize,
    ) -> c_int;
}

// Result codes of `tlcv_jpeg_decode_rgb`.
const OK: c_int = 0;
const UNSUPPORTED: c_int = 2;
const BAD_REGION: c_int = 3;

/// The size of a `width` x `height` JPEG decoded at 1/`denom` scale (libjpeg rounds up).
pub(crate) fn scaled_size(width: usize, height: usize, denom: usize) -> (usize, usize) {
    let denom = denom.max(1);
    (width.div_ceil(denom), height.div_ceil(denom))
}

/// Decodes the region `pick(width, height)` chooses in the image as scaled per `opts.target_size`, if
/// `header` is a JPEG this path handles; `Ok(None)` sends the caller to OpenCV.
pub(crate) fn decode_picked(
    bytes: &[u8],
    path: &Path,
    header: Header,
    opts: &DecodeOptions,
    pick: impl FnOnce(usize, usize) -> CropRect,
) -> Result<Option<RgbImage>, DataError> {
    if header.format != Format::Jpeg {
        return Ok(None);
    }
    let denom = header.reduction(opts);
    let (width, height) = scaled_size(header.width, header.height, denom);
    decode_region(bytes, denom, pick(width, height))
        .map_err(|reason| DataError::Decode { path: path.to_path_buf(), reason })
}

/// Decodes `region` (in 1/`denom`-scaled coordinates; `denom` is 1, 2, 4 or 8) of a JPEG as RGB.
/// `Ok(None)`: this path does not handle the file (colour space or orientation); decode it with OpenCV.
/// `Err`: libjpeg's reason for refusing the data. The caller has checked the header's pixel count.
pub(crate) fn decode_region(bytes: &[u8], denom: usize, region: CropRect) -> Result<Option<RgbImage>, String> {
    if !matches!(exif_orientation(bytes), None | Some(1)) {
        return Ok(None);
    }
    let to_uint = |v: usize| c_uint::try_from(v).map_err(|_| format!("region value {v} out of range"));
    let (x, y, w, h) = (to_uint(region.x)?, to_uint(region.y)?, to_uint(region.width)?, to_uint(region.height)?);
    if ![1, 2, 4, 8].contains(&denom) {
        return Err(format!("JPEG scale 1/{denom} is not 1/1, 1/2, 1/4 or 1/8"));
    }
    let mut out = vec![0u8; region.width * region.height * 3];
    let mut msg = [0 as c_char; 256];
    // SAFETY: `bytes` is valid for `len` bytes and only read; `out` holds exactly w * h * 3 bytes, which
    // is all the shim writes (it checks the region against the image first); `msg` is valid for its
    // length and the shim NUL-terminates what it writes there. libjpeg's longjmp stays inside the shim.
    let code = unsafe {
        tlcv_jpeg_decode_rgb(
            bytes.as_ptr(),
            bytes.len(),
            denom as c_uint,
            x,
            y,
            w,
            h,
            out.as_mut_ptr(),
            msg.as_mut_ptr(),
            msg.len(),
        )
    };
    match code {
        OK => RgbImage::from_raw(region.width, region.height, out).map(Some).map_err(|e| e.to_string()),
        UNSUPPORTED => Ok(None),
        BAD_REGION => Err(format!("region {region:?} is outside the image decoded at 1/{denom}")),
        _ => {
            let text: Vec<u8> = msg.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
            Err(format!("libjpeg: {}", String::from_utf8_lossy(&text)))
        }
    }
}

/// The EXIF orientation tag (1-8) of a JPEG's APP1 segment, if it has one that parses.
pub(crate) fn exif_orientation(b: &[u8]) -> Option<u16> {
    let mut found = None;
    walk_jpeg(b, |marker, i| {
        // APP1: length(2) "Exif\0\0" then a TIFF header.
        if marker == 0xE1 && b.get(i + 2..i + 8) == Some(b"Exif\0\0") {
            found = tiff_orientation(b.get(i + 8..)?);
            return None;
        }
        Some(())
    });
    found
}

/// Tag 0x0112 of the first IFD of a TIFF block.
fn tiff_orientation(t: &[u8]) -> Option<u16> {
    let big_endian = match t.get(0..2)? {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let u16_at = |i: usize| {
        let s: [u8; 2] = t.get(i..i + 2)?.try_into().ok()?;
        Some(if big_endian { u16::from_be_bytes(s) } else { u16::from_le_bytes(s) })
    };
    let u32_at = |i: usize| {
        let s: [u8; 4] = t.get(i..i + 4)?.try_into().ok()?;
        Some(if big_endian { u32::from_be_bytes(s) } else { u32::from_le_bytes(s) })
    };
    let ifd = u32_at(4)? as usize;
    let entries = u16_at(ifd)? as usize;
    (0..entries).find_map(|k| {
        let e = ifd.checked_add(2 + 12 * k)?;
        // tag(2) type(2) count(4) value(4); orientation is one SHORT stored in the first two value bytes.
        (u16_at(e)? == 0x0112).then(|| u16_at(e + 8)).flatten()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use opencv::{core, imgcodecs, prelude::*};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    /// A `width` x `height` JPEG with detail everywhere (gradients plus noise), optionally progressive.
    fn jpeg(width: i32, height: i32, progressive: bool, seed: u64) -> Vec<u8> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut img =
            core::Mat::new_rows_cols_with_default(height, width, core::CV_8UC3, core::Scalar::all(0.0)).unwrap();
        for y in 0..height {
            for x in 0..width {
                let px = img.at_2d_mut::<core::Vec3b>(y, x).unwrap();
                px[0] = ((x * 255 / width) as u8).wrapping_add(rng.gen_range(0..40));
                px[1] = ((y * 255 / height) as u8).wrapping_add(rng.gen_range(0..40));
                px[2] = (((x + y) * 3) as u8).wrapping_add(rng.gen_range(0..40));
            }
        }
        let params = core::Vector::<i32>::from_slice(&[imgcodecs::IMWRITE_JPEG_PROGRESSIVE, progressive as i32]);
        let mut buf = core::Vector::<u8>::new();
        assert!(imgcodecs::imencode(".jpg", &img, &mut buf, &params).unwrap());
        buf.to_vec()
    }

    fn crop(img: &RgbImage, r: CropRect) -> Vec<u8> {
        let mut out = Vec::new();
        for y in r.y..r.y + r.height {
            let row = (y * img.width + r.x) * 3;
            out.extend_from_slice(&img.data[row..row + r.width * 3]);
        }
        out
    }

    #[test]
    fn regions_equal_the_same_crop_of_a_whole_decode() {
        let mut rng = StdRng::seed_from_u64(3);
        for (w, h, progressive) in [(173, 131, false), (500, 375, false), (96, 64, true), (257, 33, true)] {
            let bytes = jpeg(w, h, progressive, w as u64);
            for denom in [1, 2, 4, 8] {
                let (sw, sh) = scaled_size(w as usize, h as usize, denom);
                let whole =
                    decode_region(&bytes, denom, CropRect { x: 0, y: 0, width: sw, height: sh }).unwrap().unwrap();
                assert_eq!((whole.width, whole.height), (sw, sh));
                for _ in 0..100 {
                    let (cw, ch) = (rng.gen_range(1..=sw), rng.gen_range(1..=sh));
                    let r = CropRect {
                        x: rng.gen_range(0..=sw - cw),
                        y: rng.gen_range(0..=sh - ch),
                        width: cw,
                        height: ch,
                    };
                    let part = decode_region(&bytes, denom, r).unwrap().unwrap();
                    let expected = crop(&whole, r);
                    let diff = part.data.iter().zip(&expected).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
                    assert_eq!(diff, 0, "{w}x{h} progressive={progressive} 1/{denom} {r:?}: max difference {diff}");
                }
            }
        }
    }
}
