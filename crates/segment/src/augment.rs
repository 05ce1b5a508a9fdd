//! Joint image/mask transforms: every geometric change is applied to both (bilinear or area for the
//! image, nearest neighbour for the mask, so class indices are never blended), colour jitter to the
//! image only.
//!
//! Training: resize to `size` x `size`, random scale in `[min_scale, max_scale]`, random `size` x
//! `size` crop (padding with black / the ignore index when the scaled image is smaller), random
//! horizontal flip, colour jitter. Evaluation: resize to `size` x `size` only.

use rand::Rng;
use tlcv_core::data::{DataError, RgbImage, transforms};

use crate::mask::Mask;

/// Nearest-neighbour resize with pixel-centre alignment (`src = floor((dst + 0.5) * scale)`), the
/// same grid as OpenCV's bilinear/area resize of the image.
pub fn resize_mask(mask: &Mask, width: usize, height: usize) -> Mask {
    if mask.width == width && mask.height == height {
        return mask.clone();
    }
    let sx = mask.width as f64 / width.max(1) as f64;
    let sy = mask.height as f64 / height.max(1) as f64;
    let xs: Vec<usize> = (0..width).map(|x| (((x as f64 + 0.5) * sx) as usize).min(mask.width - 1)).collect();
    let mut data = Vec::with_capacity(width * height);
    for y in 0..height {
        let row = (((y as f64 + 0.5) * sy) as usize).min(mask.height - 1) * mask.width;
        data.extend(xs.iter().map(|&x| mask.data[row + x]));
    }
    Mask { width, height, data }
}

/// Crops `width` x `height` at (x, y); the rectangle must lie inside the mask.
pub fn crop_mask(mask: &Mask, x: usize, y: usize, width: usize, height: usize) -> Result<Mask, DataError> {
    if x + width > mask.width || y + height > mask.height {
        return Err(DataError::Invalid(format!(
            "mask crop {width}x{height} at ({x},{y}) outside {}x{}",
            mask.width, mask.height
        )));
    }
    let mut data = Vec::with_capacity(width * height);
    for row in y..y + height {
        data.extend_from_slice(&mask.data[row * mask.width + x..row * mask.width + x + width]);
    }
    Ok(Mask { width, height, data })
}

/// Pads the mask on the right and bottom with `value`.
pub fn pad_mask(mask: &Mask, right: usize, bottom: usize, value: u8) -> Mask {
    let w = mask.width + right;
    let mut data = Vec::with_capacity(w * (mask.height + bottom));
    for row in mask.data.chunks(mask.width.max(1)) {
        data.extend_from_slice(row);
        data.extend(std::iter::repeat_n(value, right));
    }
    data.extend(std::iter::repeat_n(value, w * bottom));
    Mask { width: w, height: mask.height + bottom, data }
}

/// Mirrors the mask left to right.
pub fn hflip_mask(mask: &Mask) -> Mask {
    let mut data = Vec::with_capacity(mask.data.len());
    for row in mask.data.chunks(mask.width.max(1)) {
        data.extend(row.iter().rev());
    }
    Mask { width: mask.width, height: mask.height, data }
}

/// Resizes image and mask to `width` x `height`.
pub fn resize_pair(img: &RgbImage, mask: &Mask, width: usize, height: usize) -> Result<(RgbImage, Mask), DataError> {
    Ok((transforms::resize(img, width, height)?, resize_mask(mask, width, height)))
}

/// Crops `size` x `size` at a random place, padding first (black image, `ignore` mask) if smaller.
pub fn random_crop_pair(
    img: &RgbImage,
    mask: &Mask,
    size: usize,
    ignore: u8,
    rng: &mut impl Rng,
) -> Result<(RgbImage, Mask), DataError> {
    let (pr, pb) = (size.saturating_sub(img.width), size.saturating_sub(img.height));
    let (img, mask) = if pr > 0 || pb > 0 {
        (
            transforms::pad(img, transforms::Sides { right: pr, bottom: pb, ..Default::default() }, [0, 0, 0])?,
            pad_mask(mask, pr, pb, ignore),
        )
    } else {
        (img.clone(), mask.clone())
    };
    let x = rng.gen_range(0..=img.width - size);
    let y = rng.gen_range(0..=img.height - size);
    Ok((transforms::crop(&img, x, y, size, size)?, crop_mask(&mask, x, y, size, size)?))
}

/// Mirrors image and mask left to right.
pub fn hflip_pair(img: &RgbImage, mask: &Mask) -> (RgbImage, Mask) {
    (transforms::hflip(img), hflip_mask(mask))
}

/// The training and evaluation transforms of a run.
#[derive(Debug, Clone)]
pub struct SegAugment {
    /// Output side in pixels.
    pub size: usize,
    /// Random scale range (1.0..1.0 = off).
    pub scale: (f64, f64),
    /// Random horizontal flip with p = 0.5.
    pub hflip: bool,
    /// Colour jitter on the image, if any.
    pub jitter: Option<transforms::ColorJitter>,
    /// Mask value of padded pixels.
    pub ignore_index: u8,
}

impl SegAugment {
    /// Checks that the pair agrees in size.
    fn check(img: &RgbImage, mask: &Mask) -> Result<(), DataError> {
        if img.width != mask.width || img.height != mask.height {
            return Err(DataError::Invalid(format!(
                "mask is {}x{} but the image is {}x{}",
                mask.width, mask.height, img.width, img.height
            )));
        }
        Ok(())
    }

    /// Random scale, crop, flip and jitter; output `size` x `size`.
    pub fn train(&self, img: &RgbImage, mask: &Mask, rng: &mut impl Rng) -> Result<(RgbImage, Mask), DataError> {
        Self::check(img, mask)?;
        let (lo, hi) = (self.scale.0.min(self.scale.1), self.scale.0.max(self.scale.1));
        let s = if hi > lo { rng.gen_range(lo..hi) } else { lo };
        let side = ((self.size as f64 * s).round() as usize).max(1);
        let (i, m) = resize_pair(img, mask, side, side)?;
        let (i, m) = random_crop_pair(&i, &m, self.size, self.ignore_index, rng)?;
        let (i, m) = if self.hflip && rng.gen_bool(0.5) { hflip_pair(&i, &m) } else { (i, m) };
        let i = match &self.jitter {
            Some(j) => j.apply(&i, rng)?,
            None => i,
        };
        Ok((i, m))
    }

    /// Resize to `size` x `size`.
    pub fn eval(&self, img: &RgbImage, mask: &Mask) -> Result<(RgbImage, Mask), DataError> {
        Self::check(img, mask)?;
        resize_pair(img, mask, self.size, self.size)
    }
}
