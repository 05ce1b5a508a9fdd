//! Training augmentation for detection. Every transform moves the boxes with the pixels:
//!
//! - [`letterbox`]: aspect-preserving resize onto a grey square (also the evaluation transform);
//! - [`mosaic`]: four images around a random centre of a `2s x 2s` canvas;
//! - [`random_affine`]: random scale and translation into the `s x s` output (the mosaic's crop);
//! - [`hflip`], [`hsv_jitter`].
//!
//! Boxes are carried unclipped through the geometric steps so that [`finish_boxes`] can compare what
//! stays visible with the whole object: boxes are clipped to the output and dropped when smaller than
//! `min_box_side` or when less than `min_visible` of their area remains.

use opencv::core::{Mat, Scalar, Size, Vec3b};
use opencv::prelude::*;
use rand::Rng;
use tlcv_core::data::{RgbImage, transforms};

use crate::config::AugmentConfig;
use crate::data::Object;
use crate::error::{DetectError, Result};

/// Grey of padding and empty canvas (as YOLO).
pub const PAD: u8 = 114;

/// An image with its objects in its own pixel coordinates (boxes may extend past the borders).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The pixels.
    pub image: RgbImage,
    /// The objects.
    pub objects: Vec<Object>,
}

/// How an original image maps into a letterboxed one: `x' = x * scale + pad_x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LetterboxInfo {
    /// Scale applied to the original.
    pub scale: f64,
    /// Left padding in pixels.
    pub pad_x: f64,
    /// Top padding in pixels.
    pub pad_y: f64,
}

impl LetterboxInfo {
    /// Maps a box from letterboxed pixels back to the original image (clipped to it).
    pub fn unmap(&self, b: [f64; 4], width: f64, height: f64) -> [f64; 4] {
        let x = |v: f64| ((v - self.pad_x) / self.scale).clamp(0.0, width);
        let y = |v: f64| ((v - self.pad_y) / self.scale).clamp(0.0, height);
        [x(b[0]), y(b[1]), x(b[2]), y(b[3])]
    }
}

fn map_box(b: [f64; 4], s: f64, tx: f64, ty: f64) -> [f64; 4] {
    [b[0] * s + tx, b[1] * s + ty, b[2] * s + tx, b[3] * s + ty]
}

/// Letterboxes `img` to `size x size` and maps the boxes.
pub fn letterbox(img: &RgbImage, objects: &[Object], size: usize) -> Result<(Sample, LetterboxInfo)> {
    let lb = transforms::letterbox(img, size, size)?;
    let info = LetterboxInfo { scale: lb.scale, pad_x: lb.pad_x as f64, pad_y: lb.pad_y as f64 };
    // The resized width is rounded, so use the exact per-axis factor for the boxes.
    let (sx, sy) = (
        (img.width as f64 * lb.scale).round().clamp(1.0, size as f64) / img.width as f64,
        (img.height as f64 * lb.scale).round().clamp(1.0, size as f64) / img.height as f64,
    );
    let objects = objects
        .iter()
        .map(|o| {
            let b = o.bbox;
            Object {
                class: o.class,
                bbox: [b[0] * sx + info.pad_x, b[1] * sy + info.pad_y, b[2] * sx + info.pad_x, b[3] * sy + info.pad_y],
            }
        })
        .collect();
    Ok((Sample { image: lb.image, objects }, info))
}

/// Resizes so that the longer side is `size` (the mosaic tiles).
pub fn resize_long(img: &RgbImage, objects: &[Object], size: usize) -> Result<Sample> {
    let r = size as f64 / img.width.max(img.height) as f64;
    let (w, h) = (((img.width as f64 * r).round() as usize).max(1), ((img.height as f64 * r).round() as usize).max(1));
    let image = transforms::resize(img, w, h)?;
    let (sx, sy) = (w as f64 / img.width as f64, h as f64 / img.height as f64);
    let objects = objects
        .iter()
        .map(|o| Object { class: o.class, bbox: [o.bbox[0] * sx, o.bbox[1] * sy, o.bbox[2] * sx, o.bbox[3] * sy] })
        .collect();
    Ok(Sample { image, objects })
}

/// Places four tiles (longer side `size`) around a random centre of a `2size x 2size` canvas, as
/// YOLO's mosaic: tile 0 ends at the centre (top-left), 1 top-right, 2 bottom-left, 3 bottom-right.
pub fn mosaic(tiles: &[Sample; 4], size: usize, rng: &mut impl Rng) -> Result<Sample> {
    let s = size as i64;
    let c = 2 * s;
    let mut canvas = RgbImage::filled(c as usize, c as usize, [PAD; 3]);
    let (xc, yc) = (rng.gen_range(s / 2..=3 * s / 2), rng.gen_range(s / 2..=3 * s / 2));
    let mut objects = Vec::new();
    for (i, t) in tiles.iter().enumerate() {
        let (w, h) = (t.image.width as i64, t.image.height as i64);
        let (x1a, y1a, x2a, y2a) = match i {
            0 => ((xc - w).max(0), (yc - h).max(0), xc, yc),
            1 => (xc, (yc - h).max(0), (xc + w).min(c), yc),
            2 => ((xc - w).max(0), yc, xc, (yc + h).min(c)),
            _ => (xc, yc, (xc + w).min(c), (yc + h).min(c)),
        };
        let (x1b, y1b) = match i {
            0 => (w - (x2a - x1a), h - (y2a - y1a)),
            1 => (0, h - (y2a - y1a)),
            2 => (w - (x2a - x1a), 0),
            _ => (0, 0),
        };
        let (cw, ch) = ((x2a - x1a) as usize, (y2a - y1a) as usize);
        for row in 0..ch {
            let src = (((y1b as usize + row) * t.image.width) + x1b as usize) * 3;
            let dst = (((y1a as usize + row) * c as usize) + x1a as usize) * 3;
            canvas.data[dst..dst + cw * 3].copy_from_slice(&t.image.data[src..src + cw * 3]);
        }
        let (dx, dy) = ((x1a - x1b) as f64, (y1a - y1b) as f64);
        objects.extend(t.objects.iter().map(|o| Object { class: o.class, bbox: map_box(o.bbox, 1.0, dx, dy) }));
    }
    Ok(Sample { image: canvas, objects })
}

/// Warps with `x' = x * scale + (tx, ty)` into an `out x out` image (grey outside the source).
pub fn warp(sample: &Sample, scale: f64, tx: f64, ty: f64, out: usize) -> Result<Sample> {
    let img = &sample.image;
    let src = Mat::new_rows_cols_with_bytes::<Vec3b>(img.height as i32, img.width as i32, &img.data)?;
    let m = Mat::from_slice_2d(&[[scale, 0.0, tx], [0.0, scale, ty]])?;
    let mut dst = Mat::default();
    let interp = if scale < 1.0 { opencv::imgproc::INTER_AREA } else { opencv::imgproc::INTER_LINEAR };
    opencv::imgproc::warp_affine(
        &src,
        &mut dst,
        &m,
        Size::new(out as i32, out as i32),
        interp,
        opencv::core::BORDER_CONSTANT,
        Scalar::all(PAD as f64),
    )?;
    let data = dst.data_bytes()?.to_vec();
    let image = RgbImage::from_raw(out, out, data)?;
    let objects =
        sample.objects.iter().map(|o| Object { class: o.class, bbox: map_box(o.bbox, scale, tx, ty) }).collect();
    Ok(Sample { image, objects })
}

/// Random scale (`1 ± scale_gain`) about the source centre, which lands at a random point within
/// `0.5 ± translate` of the `out x out` output.
pub fn random_affine(
    sample: &Sample,
    out: usize,
    scale_gain: f64,
    translate: f64,
    rng: &mut impl Rng,
) -> Result<Sample> {
    let s = if scale_gain > 0.0 { rng.gen_range(1.0 - scale_gain..1.0 + scale_gain) } else { 1.0 };
    // A mosaic canvas (`2 out` wide) is cropped at scale 1; anything else is first fitted to `out`.
    let (w, h) = (sample.image.width, sample.image.height);
    let base = if w == 2 * out && h == 2 * out { 1.0 } else { out as f64 / w.max(h) as f64 };
    let scale = s * base;
    let (cx, cy) = if translate > 0.0 {
        (
            rng.gen_range(0.5 - translate..0.5 + translate) * out as f64,
            rng.gen_range(0.5 - translate..0.5 + translate) * out as f64,
        )
    } else {
        (0.5 * out as f64, 0.5 * out as f64)
    };
    let tx = cx - scale * sample.image.width as f64 / 2.0;
    let ty = cy - scale * sample.image.height as f64 / 2.0;
    warp(sample, scale, tx, ty, out)
}

/// Mirrors left-right, boxes included.
pub fn hflip(sample: &Sample) -> Sample {
    let w = sample.image.width as f64;
    let objects = sample
        .objects
        .iter()
        .map(|o| Object { class: o.class, bbox: [w - o.bbox[2], o.bbox[1], w - o.bbox[0], o.bbox[3]] })
        .collect();
    Sample { image: transforms::hflip(&sample.image), objects }
}

/// Random hue shift (`± h` turns), saturation and value gains (`1 ± s`, `1 ± v`); boxes unchanged.
pub fn hsv_jitter(sample: &mut Sample, h: f64, s: f64, v: f64, rng: &mut impl Rng) {
    let img = &mut sample.image;
    if h > 0.0 {
        transforms::adjust_hue(img, rng.gen_range(-h..h));
    }
    if s > 0.0 {
        transforms::adjust_saturation(img, rng.gen_range(1.0 - s..1.0 + s));
    }
    if v > 0.0 {
        transforms::adjust_brightness(img, rng.gen_range(1.0 - v..1.0 + v));
    }
}

/// Clips boxes to the image and drops those under `min_side` pixels or with less than
/// `min_visible` of their (unclipped) area inside.
pub fn finish_boxes(sample: &mut Sample, min_side: f64, min_visible: f64) {
    let (w, h) = (sample.image.width as f64, sample.image.height as f64);
    sample.objects.retain_mut(|o| {
        let b = o.bbox;
        let full = (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0);
        let c = [b[0].clamp(0.0, w), b[1].clamp(0.0, h), b[2].clamp(0.0, w), b[3].clamp(0.0, h)];
        let (cw, ch) = (c[2] - c[0], c[3] - c[1]);
        o.bbox = c;
        cw >= min_side && ch >= min_side && full > 0.0 && cw * ch / full >= min_visible
    });
}

/// The training transform: mosaic (with `tiles` as the other three images) or letterbox, then
/// random affine, HSV jitter and flip, then box clean-up. `tiles` is only used for a mosaic.
pub fn train_transform(
    main: (&RgbImage, &[Object]),
    others: Option<[(&RgbImage, &[Object]); 3]>,
    size: usize,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
) -> Result<Sample> {
    if size == 0 {
        return Err(DetectError::Invalid("image size must be positive".into()));
    }
    let base = match others {
        Some(o) => {
            let tiles = [
                resize_long(main.0, main.1, size)?,
                resize_long(o[0].0, o[0].1, size)?,
                resize_long(o[1].0, o[1].1, size)?,
                resize_long(o[2].0, o[2].1, size)?,
            ];
            mosaic(&tiles, size, rng)?
        }
        None => letterbox(main.0, main.1, size)?.0,
    };
    let mut out = random_affine(&base, size, cfg.scale, cfg.translate, rng)?;
    hsv_jitter(&mut out, cfg.hsv_h, cfg.hsv_s, cfg.hsv_v, rng);
    if cfg.fliplr > 0.0 && rng.gen_bool(cfg.fliplr.clamp(0.0, 1.0)) {
        out = hflip(&out);
    }
    finish_boxes(&mut out, cfg.min_box_side, cfg.min_visible);
    Ok(out)
}
