//! Geometric and photometric transforms on 8-bit [`RgbImage`]s, following torchvision's semantics
//! (sizes, rounding, parameter sampling) so that recipes carry over. Random transforms draw from a
//! caller-given RNG, so a fixed seed gives identical output. Longer than most files (about 480 lines)
//! because it keeps torchvision's geometric and photometric transforms together, each short.

use opencv::core::{BORDER_CONSTANT, Mat, Rect, Scalar, Size};
use opencv::imgproc;
use rand::Rng;
use rand::seq::SliceRandom;

use super::DataError;
use super::image::{RgbImage, dims_i32};
use super::resample;

/// Which resampler the classification transforms use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMethod {
    /// Pillow's antialiased bilinear, byte for byte: what torchvision's transforms compute on PIL
    /// images, so a model trained with them sees the same inputs here.
    #[default]
    Pillow,
    /// OpenCV: area averaging when shrinking, bilinear otherwise, and JPEGs decoded at 1/2..1/8
    /// scale when the target is that much smaller. Faster, but not torchvision's pixels.
    Opencv,
}

impl ResizeMethod {
    /// Whether JPEGs may be decoded at a reduced scale before resizing (OpenCV only).
    pub fn allows_reduced_decoding(self) -> bool {
        self == ResizeMethod::Opencv
    }
}

/// Resizes to exactly `width` x `height` with `method`.
pub fn resize_by(img: &RgbImage, width: usize, height: usize, method: ResizeMethod) -> Result<RgbImage, DataError> {
    match method {
        ResizeMethod::Pillow => resample::resize(img, width, height),
        ResizeMethod::Opencv => resize(img, width, height),
    }
}

/// [`resize_shorter`] with `method`.
pub fn resize_shorter_by(img: &RgbImage, size: usize, method: ResizeMethod) -> Result<RgbImage, DataError> {
    let (nw, nh) = shorter_side_dims(img.width, img.height, size);
    resize_by(img, nw, nh, method)
}

/// Resizes to exactly `width` x `height`: area averaging when shrinking both sides (no aliasing),
/// bilinear otherwise.
pub fn resize(img: &RgbImage, width: usize, height: usize) -> Result<RgbImage, DataError> {
    if img.width == width && img.height == height {
        return Ok(img.clone());
    }
    let (h, w) = dims_i32(width, height)?;
    let interp = if width <= img.width && height <= img.height { imgproc::INTER_AREA } else { imgproc::INTER_LINEAR };
    let src = img.as_mat()?;
    let mut dst = Mat::default();
    imgproc::resize(&src, &mut dst, Size::new(w, h), 0.0, 0.0, interp)?;
    RgbImage::from_mat(&dst)
}

/// Resizes so that the shorter side is `size`, keeping the aspect ratio; the longer side is
/// `floor(size * long / short)` as in torchvision's `Resize(int)`.
pub fn resize_shorter(img: &RgbImage, size: usize) -> Result<RgbImage, DataError> {
    let (nw, nh) = shorter_side_dims(img.width, img.height, size);
    resize(img, nw, nh)
}

/// torchvision's `Resize(int)` output size for a `w` x `h` image.
fn shorter_side_dims(w: usize, h: usize, size: usize) -> (usize, usize) {
    if w <= h { (size, size * h / w.max(1)) } else { (size * w / h.max(1), size) }
}

/// Crops `width` x `height` at (x, y); the rectangle must lie inside the image.
pub fn crop(img: &RgbImage, x: usize, y: usize, width: usize, height: usize) -> Result<RgbImage, DataError> {
    if width == 0 || height == 0 || x + width > img.width || y + height > img.height {
        return Err(DataError::Invalid(format!(
            "crop {width}x{height} at ({x},{y}) outside a {}x{} image",
            img.width, img.height
        )));
    }
    let mut data = Vec::with_capacity(width * height * 3);
    for row in y..y + height {
        let start = (row * img.width + x) * 3;
        data.extend_from_slice(&img.data[start..start + width * 3]);
    }
    Ok(RgbImage { width, height, data })
}

/// Crops the centre `width` x `height` (torchvision rounding: offset `round((H - h) / 2)` with Python's
/// ties-to-even, so 34.5 gives 34 and 35.5 gives 36); when the
/// crop is larger than the image the missing border is filled with zeros, as torchvision pads.
pub fn center_crop(img: &RgbImage, width: usize, height: usize) -> Result<RgbImage, DataError> {
    if width == 0 || height == 0 {
        return Err(DataError::Invalid("center crop to an empty size".into()));
    }
    let src = if width > img.width || height > img.height {
        let pw = width.saturating_sub(img.width);
        let ph = height.saturating_sub(img.height);
        pad(img, Sides { left: pw / 2, top: ph / 2, right: pw - pw / 2, bottom: ph - ph / 2 }, [0, 0, 0])?
    } else {
        img.clone()
    };
    let top = ((src.height - height) as f64 / 2.0).round_ties_even() as usize;
    let left = ((src.width - width) as f64 / 2.0).round_ties_even() as usize;
    crop(&src, left, top, width, height)
}

/// Pixels added on each side by [`pad`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sides {
    /// Columns on the left.
    pub left: usize,
    /// Rows on top.
    pub top: usize,
    /// Columns on the right.
    pub right: usize,
    /// Rows at the bottom.
    pub bottom: usize,
}

/// Pads with a constant colour on each side.
pub fn pad(img: &RgbImage, sides: Sides, rgb: [u8; 3]) -> Result<RgbImage, DataError> {
    let Sides { left, top, right, bottom } = sides;
    let width = img.width + left + right;
    let height = img.height + top + bottom;
    let mut out = RgbImage::filled(width, height, rgb);
    for row in 0..img.height {
        let dst = ((row + top) * width + left) * 3;
        let src = row * img.width * 3;
        out.data[dst..dst + img.width * 3].copy_from_slice(&img.data[src..src + img.width * 3]);
    }
    Ok(out)
}

/// Parameters of a random resized crop: the rectangle (x, y, width, height) taken from the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropRect {
    /// Left column.
    pub x: usize,
    /// Top row.
    pub y: usize,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// Samples a crop as torchvision's `RandomResizedCrop.get_params`: area fraction uniform in `scale`,
/// log-aspect uniform in `ln(ratio)`, 10 attempts, then a centre crop clamped to `ratio`.
pub fn random_resized_crop_params(
    width: usize,
    height: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut impl Rng,
) -> CropRect {
    let area = (width * height) as f64;
    let (lo, hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, lo, hi).exp();
        let w = (target_area * aspect).sqrt().round() as usize;
        let h = (target_area / aspect).sqrt().round() as usize;
        if w > 0 && h > 0 && w <= width && h <= height {
            let y = rng.gen_range(0..=height - h);
            let x = rng.gen_range(0..=width - w);
            return CropRect { x, y, width: w, height: h };
        }
    }
    // Fallback: the whole image, cut to the nearest allowed aspect ratio.
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0.min(ratio.1) {
        (width, ((width as f64 / ratio.0.min(ratio.1)).round() as usize).clamp(1, height))
    } else if in_ratio > ratio.0.max(ratio.1) {
        (((height as f64 * ratio.0.max(ratio.1)).round() as usize).clamp(1, width), height)
    } else {
        (width, height)
    };
    CropRect { x: (width - w) / 2, y: (height - h) / 2, width: w, height: h }
}

fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    if hi > lo { rng.gen_range(lo..hi) } else { lo }
}

/// Random resized crop to `size` x `size` with torchvision's defaults (scale 0.08..1, ratio 3/4..4/3).
pub fn random_resized_crop(img: &RgbImage, size: usize, rng: &mut impl Rng) -> Result<RgbImage, DataError> {
    RandomResizedCrop::new(size, size).apply(img, rng)
}

fn check_crop_ranges(scale: (f64, f64), ratio: (f64, f64)) -> Result<(), DataError> {
    if scale.0 > 0.0 && scale.0 <= scale.1 && ratio.0 > 0.0 && ratio.0 <= ratio.1 {
        return Ok(());
    }
    Err(DataError::Invalid(format!("random resized crop: bad scale {scale:?} or ratio {ratio:?}")))
}

/// A random resized crop: the rectangle drawn as torchvision's `RandomResizedCrop.get_params`, then
/// cropped and resized to `width` x `height` with `method` (crop first, as torchvision's
/// `resized_crop`, so the filter sees only the crop's pixels).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomResizedCrop {
    /// Output width.
    pub width: usize,
    /// Output height.
    pub height: usize,
    /// Range of the crop's area as a fraction of the image's.
    pub scale: (f64, f64),
    /// Range of the crop's aspect ratio (width / height).
    pub ratio: (f64, f64),
    /// The resampler.
    pub method: ResizeMethod,
}

impl RandomResizedCrop {
    /// A crop to `width` x `height` with torchvision's default ranges (scale 0.08..1, ratio 3/4..4/3),
    /// resized by OpenCV's bilinear filter.
    pub fn new(width: usize, height: usize) -> Self {
        RandomResizedCrop {
            width,
            height,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            method: ResizeMethod::Opencv,
        }
    }

    /// Draws a crop of `img` and resizes it.
    pub fn apply(&self, img: &RgbImage, rng: &mut impl Rng) -> Result<RgbImage, DataError> {
        check_crop_ranges(self.scale, self.ratio)?;
        let r = random_resized_crop_params(img.width, img.height, self.scale, self.ratio, rng);
        self.resize_crop(img, r)
    }

    /// Resizes the rectangle `r` of `img` to the output size (the deterministic half of [`Self::apply`]).
    pub fn resize_crop(&self, img: &RgbImage, r: CropRect) -> Result<RgbImage, DataError> {
        match self.method {
            ResizeMethod::Pillow => resample::resize(&crop(img, r.x, r.y, r.width, r.height)?, self.width, self.height),
            ResizeMethod::Opencv => resize_region(img, r, self.width, self.height),
        }
    }

    /// [`Self::apply`] on encoded bytes, as `decode_bytes` then the crop, with the same random draws
    /// and the same crop. For a JPEG only the crop is decoded: the crop is chosen from the header's size
    /// (reduced per `opts.target_size`) and libjpeg decodes just that region. Other files are decoded
    /// whole. Checks and errors are those of [`super::decode_bytes`].
    pub fn decode(
        &self,
        bytes: &[u8],
        path: &std::path::Path,
        opts: &super::DecodeOptions,
        rng: &mut (impl Rng + Clone),
    ) -> Result<RgbImage, DataError> {
        check_crop_ranges(self.scale, self.ratio)?;
        let header = super::image::inspect(bytes, path, opts)?;
        // Drawn from a copy: the whole-image fallback below must draw the same numbers from the same state.
        let mut attempt = rng.clone();
        let pick = |w, h| random_resized_crop_params(w, h, self.scale, self.ratio, &mut attempt);
        if let Some(crop) = super::jpeg::decode_picked(bytes, path, header, opts, pick)? {
            *rng = attempt;
            let whole = CropRect { x: 0, y: 0, width: crop.width, height: crop.height };
            return self.resize_crop(&crop, whole);
        }
        let img = super::image::decode_with_opencv(bytes, path, header, opts)?;
        self.apply(&img, rng)
    }
}

/// Resizes `region` of `img` to `width` x `height` (OpenCV bilinear).
fn resize_region(img: &RgbImage, r: CropRect, width: usize, height: usize) -> Result<RgbImage, DataError> {
    let (h, w) = dims_i32(width, height)?;
    let src = img.as_mat()?;
    let roi = Mat::roi(&src, Rect::new(r.x as i32, r.y as i32, r.width as i32, r.height as i32))?;
    let mut dst = Mat::default();
    imgproc::resize(&roi, &mut dst, Size::new(w, h), 0.0, 0.0, imgproc::INTER_LINEAR)?;
    RgbImage::from_mat(&dst)
}

/// Mirrors left-right.
pub fn hflip(img: &RgbImage) -> RgbImage {
    if img.width == 0 {
        return img.clone();
    }
    let mut data = Vec::with_capacity(img.data.len());
    for row in img.data.chunks_exact(img.width * 3) {
        for px in row.chunks_exact(3).rev() {
            data.extend_from_slice(px);
        }
    }
    RgbImage { width: img.width, height: img.height, data }
}

/// Mirrors left-right with probability `p`; returns whether it flipped.
pub fn random_hflip(img: &mut RgbImage, p: f64, rng: &mut impl Rng) -> bool {
    let flip = rng.gen_bool(p.clamp(0.0, 1.0));
    if flip {
        *img = hflip(img);
    }
    flip
}

/// Strengths of a colour jitter, as torchvision's `ColorJitter(brightness, contrast, saturation, hue)`:
/// factors are drawn uniformly from `[max(0, 1 - s), 1 + s]`, the hue shift from `[-hue, hue]`
/// (fraction of the colour wheel, at most 0.5).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ColorJitter {
    /// Brightness strength.
    pub brightness: f64,
    /// Contrast strength.
    pub contrast: f64,
    /// Saturation strength.
    pub saturation: f64,
    /// Hue strength, in `[0, 0.5]`.
    pub hue: f64,
}

impl ColorJitter {
    /// Applies the four adjustments in a random order (as torchvision), each with a random factor.
    pub fn apply(&self, img: &RgbImage, rng: &mut impl Rng) -> Result<RgbImage, DataError> {
        if self.brightness < 0.0 || self.contrast < 0.0 || self.saturation < 0.0 || !(0.0..=0.5).contains(&self.hue) {
            return Err(DataError::Invalid(format!("bad colour jitter {self:?}")));
        }
        let mut order = [0usize, 1, 2, 3];
        order.shuffle(rng);
        let b = factor(rng, self.brightness);
        let c = factor(rng, self.contrast);
        let s = factor(rng, self.saturation);
        let h = if self.hue > 0.0 { uniform(rng, -self.hue, self.hue) } else { 0.0 };
        let mut out = img.clone();
        for op in order {
            match op {
                0 if b != 1.0 => adjust_brightness(&mut out, b),
                1 if c != 1.0 => adjust_contrast(&mut out, c),
                2 if s != 1.0 => adjust_saturation(&mut out, s),
                3 if h != 0.0 => adjust_hue(&mut out, h),
                _ => {}
            }
        }
        Ok(out)
    }
}

fn factor(rng: &mut impl Rng, s: f64) -> f64 {
    if s > 0.0 { uniform(rng, (1.0 - s).max(0.0), 1.0 + s) } else { 1.0 }
}

/// Float to u8 as torchvision does for uint8 images: clamp, then truncate.
fn trunc_u8(v: f32) -> u8 {
    v.clamp(0.0, 255.0) as u8
}

/// Floored luma with torchvision's weights (0.2989, 0.587, 0.114), in f32 like torch.
fn grey_floor(p: &[u8]) -> f32 {
    (p[0] as f32 * 0.2989 + p[1] as f32 * 0.587 + p[2] as f32 * 0.114).floor()
}

/// `x * ratio + other * (1 - ratio)`, clamped and truncated (torchvision's `_blend`). Like torch,
/// `1 - ratio` is computed in f64 and the rest in f32.
fn blend(x: u8, other: f32, ratio: f64) -> u8 {
    let alpha = (1.0 - ratio) as f32;
    trunc_u8(x as f32 * ratio as f32 + other * alpha)
}

// The adjustments below reproduce torchvision.transforms.v2.functional on uint8 tensors exactly.

/// Multiplies every value by `factor` (blend with black).
pub fn adjust_brightness(img: &mut RgbImage, factor: f64) {
    let f = factor as f32;
    img.data.iter_mut().for_each(|v| *v = trunc_u8(*v as f32 * f));
}

/// Blends with the mean of the (floored) grey image.
pub fn adjust_contrast(img: &mut RgbImage, factor: f64) {
    let n = (img.width * img.height).max(1) as f64;
    let mean = (img.data.chunks_exact(3).map(|p| grey_floor(p) as f64).sum::<f64>() / n) as f32;
    img.data.iter_mut().for_each(|v| *v = blend(*v, mean, factor));
}

/// Blends each pixel with its own (floored) grey level.
pub fn adjust_saturation(img: &mut RgbImage, factor: f64) {
    for p in img.data.chunks_exact_mut(3) {
        let g = grey_floor(p);
        for v in p.iter_mut() {
            *v = blend(*v, g, factor);
        }
    }
}

/// Rotates the hue by `shift` turns (in `[-0.5, 0.5]`) in HSV space.
pub fn adjust_hue(img: &mut RgbImage, shift: f64) {
    let shift = shift as f32;
    for p in img.data.chunks_exact_mut(3) {
        let [r, g, b] = [p[0], p[1], p[2]].map(|v| v as f32 * (1.0 / 255.0));
        let maxc = r.max(g).max(b);
        let minc = r.min(g).min(b);
        let eq = maxc == minc;
        let range = maxc - minc;
        let s = range / if eq { 1.0 } else { maxc };
        let div = if eq { 1.0 } else { range };
        let (rc, gc, bc) = ((maxc - r) / div, (maxc - g) / div, (maxc - b) / div);
        let h = if maxc == r {
            bc - gc
        } else if maxc == g {
            rc + 2.0 - bc
        } else {
            gc + 4.0 - rc
        };
        let h = (h * (1.0 / 6.0) + 1.0) % 1.0;
        let h = (h + shift).rem_euclid(1.0);
        let h6 = h * 6.0;
        let i = h6.floor();
        let f = h6 - i;
        let v = maxc;
        let q = ((1.0 - s * f) * v).clamp(0.0, 1.0);
        let t = ((s * f + (1.0 - s)) * v).clamp(0.0, 1.0);
        let pp = ((1.0 - s) * v).clamp(0.0, 1.0);
        let (r, g, b) = match (i as i32).rem_euclid(6) {
            0 => (v, t, pp),
            1 => (q, v, pp),
            2 => (pp, v, t),
            3 => (pp, q, v),
            4 => (t, pp, v),
            _ => (v, pp, q),
        };
        // float -> uint8 as torchvision's to_dtype(scale=True): multiply by 256 - 1e-3, truncate.
        for (dst, x) in p.iter_mut().zip([r, g, b]) {
            *dst = trunc_u8(x * (255.0 + 1.0 - 1e-3));
        }
    }
}

/// A letterboxed image and how to map coordinates into it: `x' = x * scale + pad_x`,
/// `y' = y * scale + pad_y`.
#[derive(Clone, Debug)]
pub struct Letterbox {
    /// The `width` x `height` result.
    pub image: RgbImage,
    /// Scale applied to the source.
    pub scale: f64,
    /// Padding added on the left.
    pub pad_x: usize,
    /// Padding added on the top.
    pub pad_y: usize,
}

/// Resizes keeping the aspect ratio to fit `width` x `height`, centred on a grey (114) background.
pub fn letterbox(img: &RgbImage, width: usize, height: usize) -> Result<Letterbox, DataError> {
    dims_i32(width, height)?;
    let scale = (width as f64 / img.width as f64).min(height as f64 / img.height as f64);
    let nw = ((img.width as f64 * scale).round() as usize).clamp(1, width);
    let nh = ((img.height as f64 * scale).round() as usize).clamp(1, height);
    let resized = resize(img, nw, nh)?;
    let (pad_x, pad_y) = ((width - nw) / 2, (height - nh) / 2);
    let src = resized.as_mat()?;
    let mut dst = Mat::default();
    opencv::core::copy_make_border(
        &src,
        &mut dst,
        pad_y as i32,
        (height - nh - pad_y) as i32,
        pad_x as i32,
        (width - nw - pad_x) as i32,
        BORDER_CONSTANT,
        Scalar::all(114.0),
    )?;
    Ok(Letterbox { image: RgbImage::from_mat(&dst)?, scale, pad_x, pad_y })
}
