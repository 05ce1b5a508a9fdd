//! Class-index masks: reading grey and palette PNGs as indices, checking them against an image, and
//! writing them back (grey index PNGs and colour overlays).
//!
//! OpenCV decodes palette PNGs (colour type 3, e.g. Pascal VOC's `SegmentationClass`) to BGR, losing the
//! indices, so PNGs are parsed here: chunks, zlib-inflated `IDAT`, scanline un-filtering, unpacking of
//! 1/2/4/8-bit samples. Grey (colour type 0) 8-bit PNGs take the same path; anything else that is a
//! single-channel 8-bit image (BMP, TIFF...) goes through OpenCV.

use std::io::Read;
use std::path::Path;

use crate::error::SegmentError;

/// A class-index mask, row-major, one byte per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height` indices.
    pub data: Vec<u8>,
}

impl Mask {
    /// A mask filled with `value`.
    pub fn filled(width: usize, height: usize, value: u8) -> Self {
        Self { width, height, data: vec![value; width * height] }
    }

    /// The index at (x, y).
    pub fn at(&self, x: usize, y: usize) -> u8 {
        self.data[y * self.width + x]
    }

    /// Checks every value is a class (`< num_classes`) or `ignore_index`; the error names the first other one.
    pub fn check_values(&self, num_classes: usize, ignore_index: u8) -> Result<(), String> {
        let mut seen = [false; 256];
        for &v in &self.data {
            seen[v as usize] = true;
        }
        match (0..256).find(|&v| seen[v] && v >= num_classes && v != ignore_index as usize) {
            Some(v) => Err(format!(
                "unknown class value {v} (classes are 0..{}, ignore index {ignore_index})",
                num_classes.saturating_sub(1)
            )),
            None => Ok(()),
        }
    }
}

fn bad(path: &Path, message: impl Into<String>) -> SegmentError {
    SegmentError::Mask { path: path.to_path_buf(), message: message.into() }
}

/// Reads a mask file as class indices: grey or palette PNG (the palette index of each pixel), or another
/// single-channel 8-bit format through OpenCV. Multi-channel images are refused with a message.
pub fn read_index_mask(path: &Path) -> Result<Mask, SegmentError> {
    if !path.is_file() {
        return Err(bad(path, "mask file not found"));
    }
    let bytes = std::fs::read(path).map_err(|source| SegmentError::Io { path: path.to_path_buf(), source })?;
    if bytes.starts_with(PNG_SIGNATURE) {
        return decode_png_indices(&bytes).map_err(|m| bad(path, m));
    }
    let (rows, cols, data) = crate::metrics::read_mask(path)?;
    Ok(Mask { width: cols as usize, height: rows as usize, data })
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Decodes a PNG of colour type 0 (grey, 8 bits) or 3 (palette, 1/2/4/8 bits) into indices.
pub fn decode_png_indices(bytes: &[u8]) -> Result<Mask, String> {
    let mut pos = PNG_SIGNATURE.len();
    let mut header: Option<(usize, usize, u8, u8, u8)> = None;
    let mut idat = Vec::new();
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let start = pos + 8;
        let end = start.checked_add(len).filter(|&e| e + 4 <= bytes.len()).ok_or("truncated PNG chunk")?;
        let data = &bytes[start..end];
        match kind {
            b"IHDR" => {
                if data.len() < 13 {
                    return Err("bad IHDR chunk".into());
                }
                let w = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
                let h = u32::from_be_bytes([data[4], data[5], data[6], data[7]]) as usize;
                header = Some((w, h, data[8], data[9], data[12]));
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        pos = end + 4; // skip the CRC
    }
    let (w, h, depth, colour, interlace) = header.ok_or("no IHDR chunk")?;
    match (colour, depth) {
        (3, 1 | 2 | 4 | 8) | (0, 8) => {}
        (3 | 0, d) => return Err(format!("unsupported bit depth {d} for an index mask")),
        (c, _) => {
            let what = match c {
                2 => "RGB",
                4 => "grey+alpha",
                6 => "RGBA",
                _ => "unknown colour type",
            };
            return Err(format!("expected a single-channel index mask (grey or palette PNG), found {what}"));
        }
    }
    if interlace != 0 {
        return Err("interlaced PNG masks are not supported; save the mask without interlacing".into());
    }
    if w == 0 || h == 0 || w.saturating_mul(h) > 1 << 30 {
        return Err(format!("implausible size {w}x{h}"));
    }
    let stride = (w * depth as usize).div_ceil(8);
    let mut raw = Vec::with_capacity((stride + 1) * h);
    flate2::read::ZlibDecoder::new(idat.as_slice())
        .read_to_end(&mut raw)
        .map_err(|e| format!("corrupt image data: {e}"))?;
    if raw.len() < (stride + 1) * h {
        return Err(format!("image data too short: {} bytes for {w}x{h}", raw.len()));
    }
    let rows = unfilter(&raw, stride, h)?;
    let mut data = Vec::with_capacity(w * h);
    let per_byte = 8 / depth as usize;
    let max = (1u16 << depth) - 1;
    for row in rows.chunks(stride) {
        for x in 0..w {
            let byte = row[x / per_byte];
            let shift = 8 - depth as usize * (x % per_byte + 1);
            data.push(((byte as u16 >> shift) & max) as u8);
        }
    }
    Ok(Mask { width: w, height: h, data })
}

/// Undoes the per-scanline filters (one byte per pixel: bpp = 1 for every format accepted here).
fn unfilter(raw: &[u8], stride: usize, h: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; stride * h];
    for y in 0..h {
        let filter = raw[y * (stride + 1)];
        let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
        let (done, rest) = out.split_at_mut(y * stride);
        let prev = if y > 0 { &done[(y - 1) * stride..] } else { &[][..] };
        let cur = &mut rest[..stride];
        for x in 0..stride {
            let a = if x > 0 { cur[x - 1] } else { 0 };
            let b = prev.get(x).copied().unwrap_or(0);
            let c = if x > 0 { prev.get(x - 1).copied().unwrap_or(0) } else { 0 };
            let pred = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((a as u16 + b as u16) / 2) as u8,
                4 => paeth(a, b, c),
                f => return Err(format!("unknown PNG filter type {f} in row {y}")),
            };
            cur[x] = line[x].wrapping_add(pred);
        }
    }
    Ok(out)
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = a as i16 + b as i16 - c as i16;
    let (pa, pb, pc) = ((p - a as i16).abs(), (p - b as i16).abs(), (p - c as i16).abs());
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

/// Writes `mask` as an 8-bit grey PNG.
pub fn write_index_png(path: &Path, mask: &Mask) -> Result<(), SegmentError> {
    use opencv::core::{CV_8UC1, Mat, Vector};
    use opencv::prelude::*;
    let m = Mat::new_rows_cols_with_data(mask.height as i32, mask.width as i32, &mask.data)?;
    debug_assert_eq!(m.typ(), CV_8UC1);
    let mut buf = Vector::<u8>::new();
    opencv::imgcodecs::imencode(".png", &m, &mut buf, &Vector::new())?;
    tlcv_core::run::write_atomic(path, buf.as_slice()).map_err(|e| SegmentError::Invalid(e.to_string()))
}

/// The Pascal VOC colour of class `i` (bit-interleaved palette; 255 -> light grey).
pub fn voc_colour(i: u8) -> [u8; 3] {
    if i == 255 {
        return [224, 224, 192];
    }
    let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
    let mut c = i;
    for j in 0..8 {
        r |= (c & 1) << (7 - j);
        g |= ((c >> 1) & 1) << (7 - j);
        b |= ((c >> 2) & 1) << (7 - j);
        c >>= 3;
        if c == 0 {
            break;
        }
    }
    [r, g, b]
}

/// The mask in VOC colours, RGB.
pub fn colourise(mask: &Mask) -> Vec<u8> {
    mask.data.iter().flat_map(|&v| voc_colour(v)).collect()
}

/// `rgb` blended with the mask's colours (`alpha` of the colour) where the class is not 0.
pub fn overlay(rgb: &[u8], mask: &Mask, alpha: f64) -> Vec<u8> {
    let mut out = rgb.to_vec();
    for (i, &v) in mask.data.iter().enumerate() {
        if v == 0 {
            continue;
        }
        let c = voc_colour(v);
        for k in 0..3 {
            let o = &mut out[3 * i + k];
            *o = ((1.0 - alpha) * *o as f64 + alpha * c[k] as f64).round() as u8;
        }
    }
    out
}
