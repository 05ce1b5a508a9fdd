//! Decoding image files into [`RgbImage`] with OpenCV, after cheap checks on the raw bytes: the
//! format is decided by magic bytes (never the extension) and the pixel count is read from the header
//! and checked against a limit before any decoding, so a crafted header cannot make us allocate
//! gigabytes.

use std::path::Path;

use opencv::core::{Mat, Vec3b, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};

use super::DataError;

/// An 8-bit RGB image stored row-major as HWC (`data.len() == width * height * 3`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Pixels, `[height][width][3]` in R, G, B order.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// An image filled with one colour.
    pub fn filled(width: usize, height: usize, rgb: [u8; 3]) -> Self {
        let mut data = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            data.extend_from_slice(&rgb);
        }
        RgbImage { width, height, data }
    }

    /// Wraps a buffer, checking its length.
    pub fn from_raw(width: usize, height: usize, data: Vec<u8>) -> Result<Self, DataError> {
        if data.len() != width * height * 3 {
            return Err(DataError::Invalid(format!(
                "RGB buffer of {} bytes does not match {width}x{height}x3",
                data.len()
            )));
        }
        Ok(RgbImage { width, height, data })
    }

    /// The pixel at (x, y). Panics if (x, y) is outside the image (a programming error).
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Size in bytes of the pixel buffer.
    pub fn num_bytes(&self) -> usize {
        self.data.len()
    }

    /// A borrowed OpenCV view (CV_8UC3, channels in RGB order) of this image.
    pub(crate) fn as_mat(&self) -> Result<opencv::boxed_ref::BoxedRef<'_, Mat>, DataError> {
        let (rows, cols) = dims_i32(self.width, self.height)?;
        Ok(Mat::new_rows_cols_with_bytes::<Vec3b>(rows, cols, &self.data)?)
    }

    /// Copies a CV_8UC3 matrix (any channel order; no conversion here) into an image.
    pub(crate) fn from_mat(mat: &Mat) -> Result<Self, DataError> {
        if mat.typ() != opencv::core::CV_8UC3 {
            return Err(DataError::OpenCv(format!("expected an 8-bit 3-channel matrix, got type {}", mat.typ())));
        }
        let (width, height) = (mat.cols() as usize, mat.rows() as usize);
        let data =
            if mat.is_continuous() { mat.data_bytes()?.to_vec() } else { mat.try_clone()?.data_bytes()?.to_vec() };
        RgbImage::from_raw(width, height, data)
    }
}

pub(crate) fn dims_i32(width: usize, height: usize) -> Result<(i32, i32), DataError> {
    match (i32::try_from(height), i32::try_from(width)) {
        (Ok(r), Ok(c)) if r > 0 && c > 0 => Ok((r, c)),
        _ => Err(DataError::Invalid(format!("invalid image size {width}x{height}"))),
    }
}

/// Options for [`decode_file`].
#[derive(Clone, Debug)]
pub struct DecodeOptions {
    /// Largest accepted `width * height`; larger images are refused from their header.
    pub max_pixels: usize,
    /// The shorter side the caller will resize to, if known. For JPEGs at least twice this size
    /// the decoder reduces by 2, 4 or 8 while decoding (much faster), never below this size.
    pub target_size: Option<usize>,
}

/// The default pixel limit: 64 megapixels.
pub const DEFAULT_MAX_PIXELS: usize = 64 * 1024 * 1024;

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { max_pixels: DEFAULT_MAX_PIXELS, target_size: None }
    }
}

/// An image container recognised from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JPEG (`FF D8 FF`).
    Jpeg,
    /// PNG (`89 50 4E 47 0D 0A 1A 0A`).
    Png,
    /// Windows bitmap (`BM`).
    Bmp,
    /// WebP (`RIFF....WEBP`).
    WebP,
}

/// Recognises the format from magic bytes.
pub fn sniff_format(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.starts_with(b"BM") && bytes.len() >= 26 {
        Some(Format::Bmp)
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(Format::WebP)
    } else {
        None
    }
}

/// Reads `(width, height)` from the header without decoding. `None` if the header is malformed.
pub fn header_dimensions(format: Format, b: &[u8]) -> Option<(usize, usize)> {
    let be16 = |i: usize| b.get(i..i + 2).map(|s| u16::from_be_bytes([s[0], s[1]]) as usize);
    let le16 = |i: usize| b.get(i..i + 2).map(|s| u16::from_le_bytes([s[0], s[1]]) as usize);
    let le24 = |i: usize| b.get(i..i + 3).map(|s| s[0] as usize | (s[1] as usize) << 8 | (s[2] as usize) << 16);
    match format {
        Format::Png => {
            // IHDR must be the first chunk: length(4) "IHDR" width(4) height(4), all big-endian.
            if b.get(12..16)? != b"IHDR" {
                return None;
            }
            let w = u32::from_be_bytes(b.get(16..20)?.try_into().ok()?) as usize;
            let h = u32::from_be_bytes(b.get(20..24)?.try_into().ok()?) as usize;
            Some((w, h))
        }
        Format::Jpeg => {
            let mut frame = None;
            walk_jpeg(b, |marker, i| {
                // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): length(2) precision(1) height(2) width(2)
                if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
                    frame = Some((be16(i + 5)?, be16(i + 3)?));
                    return None;
                }
                Some(())
            });
            frame
        }
        Format::Bmp => {
            let w = i32::from_le_bytes(b.get(18..22)?.try_into().ok()?);
            let h = i32::from_le_bytes(b.get(22..26)?.try_into().ok()?);
            // A negative height means top-down rows.
            Some((w.unsigned_abs() as usize, h.unsigned_abs() as usize))
        }
        Format::WebP => match b.get(12..16)? {
            b"VP8 " => Some((le16(26)? & 0x3FFF, le16(28)? & 0x3FFF)),
            b"VP8L" => {
                let v = u32::from_le_bytes(b.get(21..25)?.try_into().ok()?);
                Some(((v & 0x3FFF) as usize + 1, ((v >> 14) & 0x3FFF) as usize + 1))
            }
            b"VP8X" => Some((le24(24)? + 1, le24(27)? + 1)),
            _ => None,
        },
    }
}

/// Calls `visit(marker, offset_of_length_field)` for each JPEG marker segment up to the first
/// start-of-scan, stopping early when `visit` returns `None`. Returns the offset of the SOS segment.
pub(crate) fn walk_jpeg(b: &[u8], mut visit: impl FnMut(u8, usize) -> Option<()>) -> Option<usize> {
    let be16 = |i: usize| b.get(i..i + 2).map(|s| u16::from_be_bytes([s[0], s[1]]) as usize);
    let mut i = 2;
    loop {
        while *b.get(i)? != 0xFF {
            i += 1;
        }
        while *b.get(i)? == 0xFF {
            i += 1;
        }
        let marker = *b.get(i)?;
        i += 1;
        if marker == 0xD8 || (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            continue; // markers without a length
        }
        if marker == 0xDA {
            return Some(i);
        }
        if marker == 0xD9 {
            return None;
        }
        visit(marker, i)?;
        let len = be16(i)?;
        if len < 2 {
            return None;
        }
        i += len;
    }
}

/// Whether a JPEG has its end-of-image marker after the first scan. Entropy-coded data escapes 0xFF
/// as `FF 00`, so `FF D9` there can only be the real end; a cut file lacks it (libjpeg would pad the
/// missing part with grey and report success).
fn jpeg_is_complete(b: &[u8]) -> bool {
    walk_jpeg(b, |_, _| Some(())).is_some_and(|sos| b[sos..].windows(2).rev().any(|w| w == [0xFF, 0xD9]))
}

/// Reads, checks and decodes an image file into RGB. See [`decode_bytes`].
pub fn decode_file(path: impl AsRef<Path>, opts: &DecodeOptions) -> Result<RgbImage, DataError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_bytes(&bytes, path, opts)
}

/// Checks and decodes encoded image bytes; `path` only names the source in errors.
///
/// Grey, grey+alpha, RGBA (alpha dropped), palette, 16-bit (scaled to 8-bit) and CMYK JPEG inputs
/// all come out as 8-bit RGB; EXIF orientation is applied. Plain JPEGs are decoded by libjpeg straight
/// into RGB (see [`super::jpeg`]); everything else goes through OpenCV.
pub fn decode_bytes(bytes: &[u8], path: &Path, opts: &DecodeOptions) -> Result<RgbImage, DataError> {
    let header = inspect(bytes, path, opts)?;
    let whole = |width, height| super::transforms::CropRect { x: 0, y: 0, width, height };
    match super::jpeg::decode_picked(bytes, path, header, opts, whole)? {
        Some(img) => Ok(img),
        None => decode_with_opencv(bytes, path, header, opts),
    }
}

/// What [`inspect`] learnt from an image's header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    /// The container.
    pub format: Format,
    /// Width in pixels, before any reduction.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

impl Header {
    /// The JPEG scale denominator (1, 2, 4 or 8) for `opts.target_size`; 1 for other formats.
    pub fn reduction(&self, opts: &DecodeOptions) -> usize {
        match (self.format, opts.target_size) {
            (Format::Jpeg, Some(t)) => reduction_for(self.width.min(self.height), t),
            _ => 1,
        }
    }
}

/// The checks made before any decoding: magic bytes, header dimensions against the pixel limit, and
/// (for JPEG) the end-of-image marker.
pub(crate) fn inspect(bytes: &[u8], path: &Path, opts: &DecodeOptions) -> Result<Header, DataError> {
    if bytes.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    let Some(format) = sniff_format(bytes) else {
        let reason = if looks_like_text(bytes) {
            "the content is text".to_string()
        } else {
            format!("unknown magic bytes {}", hex_prefix(bytes))
        };
        return Err(DataError::UnknownFormat { path: path.to_path_buf(), reason });
    };
    let Some((width, height)) = header_dimensions(format, bytes) else {
        return Err(DataError::Decode { path: path.to_path_buf(), reason: format!("malformed {format:?} header") });
    };
    if width == 0 || height == 0 {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: format!("header gives an empty size {width}x{height}"),
        });
    }
    if width.saturating_mul(height) > opts.max_pixels {
        return Err(DataError::TooLarge { path: path.to_path_buf(), width, height, limit: opts.max_pixels });
    }
    if format == Format::Jpeg && !jpeg_is_complete(bytes) {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: "truncated JPEG (no end-of-image marker after the image data)".into(),
        });
    }
    Ok(Header { format, width, height })
}

/// OpenCV's `imdecode` (any format; EXIF orientation applied), then BGR to RGB.
pub(crate) fn decode_with_opencv(
    bytes: &[u8],
    path: &Path,
    header: Header,
    opts: &DecodeOptions,
) -> Result<RgbImage, DataError> {
    let flags = match header.reduction(opts) {
        8 => imgcodecs::IMREAD_REDUCED_COLOR_8,
        4 => imgcodecs::IMREAD_REDUCED_COLOR_4,
        2 => imgcodecs::IMREAD_REDUCED_COLOR_2,
        _ => imgcodecs::IMREAD_COLOR,
    };
    let buf = Vector::<u8>::from_slice(bytes);
    let decode_err = |reason: String| DataError::Decode { path: path.to_path_buf(), reason };
    let bgr = imgcodecs::imdecode(&buf, flags).map_err(|e| decode_err(e.message))?;
    if bgr.empty() {
        let format = header.format;
        return Err(decode_err(format!("the {format:?} decoder rejected the data (truncated or corrupt?)")));
    }
    let mut rgb = Mat::default();
    imgproc::cvt_color_def(&bgr, &mut rgb, imgproc::COLOR_BGR2RGB).map_err(|e| decode_err(e.message))?;
    RgbImage::from_mat(&rgb)
}

/// The largest JPEG scale denominator (1, 2, 4 or 8) that keeps a shorter side of `short` pixels at least
/// `target` pixels.
fn reduction_for(short: usize, target: usize) -> usize {
    let target = target.max(1);
    [8, 4, 2].into_iter().find(|d| short / d >= target).unwrap_or(1)
}

fn looks_like_text(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(512)];
    head.iter().all(|&c| c == b'\n' || c == b'\r' || c == b'\t' || (0x20..0x7F).contains(&c) || c >= 0x80)
        // A multi-byte character cut at the end of `head` is still text.
        && std::str::from_utf8(head).map_or_else(|e| e.error_len().is_none(), |_| true)
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}
