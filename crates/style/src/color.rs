//! Keeping the content's colours (Gatys et al. 2016, "Preserving Color in Neural Artistic Style
//! Transfer"): luminance-only transfer in YCbCr (JPEG / BT.601 full range) and per-channel histogram
//! matching of the style image to the content image.

use tch::Tensor;
use tlcv_core::data::RgbImage;

use crate::{Result, StyleError};

/// `[N, 3, H, W]` RGB in `[0, 1]` -> YCbCr in `[0, 1]` (Cb, Cr centred on 0.5).
pub fn rgb_to_ycbcr(rgb: &Tensor) -> Tensor {
    let (r, g, b) = (rgb.narrow(1, 0, 1), rgb.narrow(1, 1, 1), rgb.narrow(1, 2, 1)); // [N, 1, H, W] each
    let y = &r * 0.299 + &g * 0.587 + &b * 0.114;
    let cb = &r * -0.168_736 + &g * -0.331_264 + &b * 0.5 + 0.5;
    let cr = &r * 0.5 + &g * -0.418_688 + &b * -0.081_312 + 0.5;
    Tensor::cat(&[y, cb, cr], 1) // [N, 3, H, W]
}

/// Inverse of [`rgb_to_ycbcr`] (not clamped).
pub fn ycbcr_to_rgb(ycc: &Tensor) -> Tensor {
    let y = ycc.narrow(1, 0, 1);
    let cb = ycc.narrow(1, 1, 1) - 0.5;
    let cr = ycc.narrow(1, 2, 1) - 0.5;
    let r = &y + &cr * 1.402;
    let g = &y - &cb * 0.344_136 - &cr * 0.714_136;
    let b = &y + &cb * 1.772;
    Tensor::cat(&[r, g, b], 1)
}

/// The luminance as a grey RGB image: `[N, 3, H, W]` -> `[N, 3, H, W]` with R = G = B = Y.
pub fn luminance(rgb: &Tensor) -> Tensor {
    rgb_to_ycbcr(rgb).narrow(1, 0, 1).repeat([1, 3, 1, 1])
}

/// Shifts and scales the luminance of `src` (a grey image) to the mean and standard deviation of
/// `reference`'s (Gatys et al.'s luminance matching of the style image), clamped to `[0, 1]`.
pub fn match_luminance(src: &Tensor, reference: &Tensor) -> Tensor {
    let (sm, ss) = (src.mean(tch::Kind::Float), src.std(true) + 1e-6);
    let (rm, rs) = (reference.mean(tch::Kind::Float), reference.std(true));
    ((src - sm) / ss * rs + rm).clamp(0.0, 1.0)
}

/// The luminance of `y_source` with the chroma (CbCr) of `chroma_source`, as RGB clamped to `[0, 1]`.
/// Both `[N, 3, H, W]` RGB of one size.
pub fn combine_luminance(y_source: &Tensor, chroma_source: &Tensor) -> Tensor {
    let y = rgb_to_ycbcr(y_source).narrow(1, 0, 1);
    let c = rgb_to_ycbcr(chroma_source).narrow(1, 1, 2);
    ycbcr_to_rgb(&Tensor::cat(&[y, c], 1)).clamp(0.0, 1.0)
}

/// Per-channel histogram matching: each channel of `src` is mapped through its CDF onto the
/// inverse CDF of the same channel of `reference`.
pub fn match_histograms(src: &RgbImage, reference: &RgbImage) -> Result<RgbImage> {
    if src.data.is_empty() || reference.data.is_empty() {
        return Err(StyleError::Invalid("histogram matching of an empty image".into()));
    }
    let mut out = src.data.clone();
    for c in 0..3 {
        let cdf = |img: &RgbImage| {
            let mut h = [0u64; 256];
            for px in img.data.chunks_exact(3) {
                h[px[c] as usize] += 1;
            }
            let total = (img.data.len() / 3) as f64;
            let mut acc = 0u64;
            h.map(|n| {
                acc += n;
                acc as f64 / total
            })
        };
        let (cs, cr) = (cdf(src), cdf(reference));
        // For each source level, the first reference level whose CDF reaches the source CDF.
        let lut: Vec<u8> = cs.iter().map(|&q| cr.iter().position(|&r| r >= q - 1e-12).unwrap_or(255) as u8).collect();
        for px in out.chunks_exact_mut(3) {
            px[c] = lut[px[c] as usize];
        }
    }
    Ok(RgbImage::from_raw(src.width, src.height, out)?)
}
