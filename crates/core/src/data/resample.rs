//! Pillow's antialiased bilinear resize (`Image.resize(size, Image.BILINEAR, box)`), the resize behind
//! torchvision's `Resize` and `RandomResizedCrop` on PIL images, reproduced value for value.
//!
//! The algorithm mirrors Pillow's `libImaging/Resample.c` (Pillow 10/11): a separable convolution with
//! the triangle filter widened by the scale factor when shrinking (support `max(scale, 1)` source
//! pixels each side), weights normalised per output pixel and rounded to 22-bit fixed point, a
//! horizontal pass over only the rows the vertical pass needs, rounded to 8 bits, then the vertical
//! pass. Equal arithmetic gives equal bytes (tested against Pillow on the Debian photos).

use super::DataError;
use super::image::RgbImage;

/// Fixed-point precision of the 8-bit weights (`32 - 8 - 2` in Pillow).
const PRECISION_BITS: u32 = 22;

/// Pillow's bilinear ("triangle") filter, support 1.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// Per output pixel, the first source pixel and the fixed-point weights of the source pixels it reads.
#[derive(Debug)]
struct Coeffs {
    /// `(first source index, weights)` per output index.
    taps: Vec<(usize, Vec<i32>)>,
}

impl Coeffs {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the source span `[in0, in1)` of an
    /// axis of `in_size` pixels mapped onto `out_size` pixels.
    fn new(in_size: usize, in0: f64, in1: f64, out_size: usize) -> Self {
        let scale = (in1 - in0) / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // the triangle's support (1) times the scale
        let ss = 1.0 / filterscale;
        let taps = (0..out_size)
            .map(|xx| {
                let center = in0 + (xx as f64 + 0.5) * scale;
                // `(int)` truncates toward zero in C, as `as i64` does.
                let xmin = ((center - support + 0.5) as i64).max(0) as usize;
                let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(xmin as i64) as usize - xmin;
                let mut w: Vec<f64> =
                    (0..xmax).map(|x| triangle((x as f64 + xmin as f64 - center + 0.5) * ss)).collect();
                let total: f64 = w.iter().sum();
                if total != 0.0 {
                    w.iter_mut().for_each(|v| *v /= total);
                }
                let one = f64::from(1u32 << PRECISION_BITS);
                let fixed =
                    w.iter().map(|&v| if v < 0.0 { (-0.5 + v * one) as i32 } else { (0.5 + v * one) as i32 }).collect();
                (xmin, fixed)
            })
            .collect();
        Coeffs { taps }
    }

    /// The source range `[first, last)` that the outputs read.
    fn span(&self) -> (usize, usize) {
        let first = self.taps.first().map_or(0, |t| t.0);
        let last = self.taps.last().map_or(0, |t| t.0 + t.1.len());
        (first, last)
    }
}

/// `sum >> PRECISION_BITS`, clamped to 0..=255 (Pillow's `clip8`).
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// The weighted sum of `taps` over pixels `start, start + stride, ...` of channel data `src`.
fn convolve(src: &[u8], start: usize, stride: usize, weights: &[i32]) -> u8 {
    let mut sum = 1i64 << (PRECISION_BITS - 1);
    for (k, &w) in weights.iter().enumerate() {
        sum += i64::from(src[start + k * stride]) * i64::from(w);
    }
    clip8(sum)
}

/// Resizes the region `(x, y, width, height)` of `img` to `out_width` x `out_height` as Pillow's
/// `img.resize((out_width, out_height), Image.BILINEAR, box=(x, y, x + width, y + height))`. Near the
/// box's edges the filter reads the pixels around it; torchvision's `resized_crop` crops first, so
/// that its filter sees only the box (see [`resize`] on a [`super::transforms::crop`]).
pub fn resize_box(
    img: &RgbImage,
    region: (usize, usize, usize, usize),
    out_width: usize,
    out_height: usize,
) -> Result<RgbImage, DataError> {
    let (x, y, width, height) = region;
    if out_width == 0
        || out_height == 0
        || width == 0
        || height == 0
        || x + width > img.width
        || y + height > img.height
    {
        return Err(DataError::Invalid(format!(
            "resize of the {width}x{height} region at ({x},{y}) of a {}x{} image to {out_width}x{out_height}",
            img.width, img.height
        )));
    }
    if (x, y, width, height) == (0, 0, img.width, img.height) && (out_width, out_height) == (img.width, img.height) {
        return Ok(img.clone());
    }
    let horiz = Coeffs::new(img.width, x as f64, (x + width) as f64, out_width);
    let vert = Coeffs::new(img.height, y as f64, (y + height) as f64, out_height);
    let need_horizontal = out_width != img.width || x != 0 || x + width != out_width;
    let need_vertical = out_height != img.height || y != 0 || y + height != out_height;
    let (row0, row1) = vert.span();
    // Horizontal pass over the rows the vertical pass reads.
    let (mid, mid_width, row_offset) = if need_horizontal {
        let mut mid = vec![0u8; out_width * (row1 - row0) * 3];
        for (r, src_row) in (row0..row1).enumerate() {
            let src = &img.data[src_row * img.width * 3..(src_row + 1) * img.width * 3];
            let dst = &mut mid[r * out_width * 3..(r + 1) * out_width * 3];
            for (xx, (first, w)) in horiz.taps.iter().enumerate() {
                for c in 0..3 {
                    dst[xx * 3 + c] = convolve(src, first * 3 + c, 3, w);
                }
            }
        }
        (std::borrow::Cow::Owned(mid), out_width, row0)
    } else {
        (std::borrow::Cow::Borrowed(&img.data[..]), img.width, 0)
    };
    if !need_vertical {
        let start = (y - row_offset) * mid_width * 3;
        let data = mid[start..start + out_height * mid_width * 3].to_vec();
        return Ok(RgbImage { width: mid_width, height: out_height, data });
    }
    let stride = mid_width * 3;
    let mut data = vec![0u8; out_width * out_height * 3];
    for (yy, (first, w)) in vert.taps.iter().enumerate() {
        let base = (first - row_offset) * stride;
        let dst = &mut data[yy * stride..(yy + 1) * stride];
        for (i, v) in dst.iter_mut().enumerate() {
            *v = convolve(&mid, base + i, stride, w);
        }
    }
    Ok(RgbImage { width: out_width, height: out_height, data })
}

/// Resizes the whole image to `width` x `height` as Pillow's `img.resize((width, height), Image.BILINEAR)`.
pub fn resize(img: &RgbImage, width: usize, height: usize) -> Result<RgbImage, DataError> {
    resize_box(img, (0, 0, img.width, img.height), width, height)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_constant_images_are_kept() {
        let img = RgbImage::filled(7, 5, [10, 200, 255]);
        assert_eq!(resize(&img, 7, 5).unwrap_or_else(|e| panic!("{e}")).data, img.data);
        for (w, h) in [(3, 2), (20, 9), (7, 1), (1, 5)] {
            let out = resize(&img, w, h).unwrap_or_else(|e| panic!("{e}"));
            assert!(out.data.chunks_exact(3).all(|p| p == [10, 200, 255]), "{w}x{h}");
        }
    }

    #[test]
    fn halving_averages_each_pair_of_pixels() {
        // Shrinking 4 -> 2 with the widened triangle reads pixels 0..3 around centre 1 with weights
        // 0.25, 0.75, 0.75, 0.25 (normalised over the three inside the image at the edge).
        let data: Vec<u8> = [0u8, 100, 200, 40].iter().flat_map(|&v| [v, v, v]).collect();
        let img = RgbImage { width: 4, height: 1, data };
        let out = resize(&img, 2, 1).unwrap_or_else(|e| panic!("{e}"));
        // Left: (0 * 0.75 + 100 * 0.75 + 200 * 0.25) / 1.75 = 71.4; right: (100 * .25 + 200 * .75 + 40 * .75) / 1.75 = 117.1.
        assert_eq!([out.data[0], out.data[3]], [71, 117]);
    }
}
