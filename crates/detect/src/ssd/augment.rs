//! SSD's training augmentation (Liu et al. 2016, section 2.2; torchvision's detection reference
//! recipe): photometric distortion, zoom-out onto a larger canvas, and a random crop whose IoU with
//! the objects is constrained. Works on `RgbImage` plus xyxy pixel boxes; boxes follow the pixels.

use rand::Rng;
use tlcv_core::data::RgbImage;
use tlcv_core::data::transforms::{
    Sides, adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, crop, pad,
};

use crate::boxes::iou_xyxy;
use crate::error::DetectError;

/// An image with its objects.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxedImage {
    /// The pixels.
    pub image: RgbImage,
    /// xyxy boxes in pixels.
    pub boxes: Vec<[f64; 4]>,
    /// One class id per box.
    pub labels: Vec<i64>,
}

/// The recipe's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SsdAugment {
    /// Probability of each photometric step.
    pub photometric_p: f64,
    /// Probability of zooming out.
    pub zoom_out_p: f64,
    /// Largest canvas side relative to the image (torchvision: 4).
    pub max_zoom: f64,
    /// Canvas colour (the dataset mean, roughly).
    pub fill: [u8; 3],
    /// Whether to apply the IoU-constrained crop.
    pub iou_crop: bool,
}

impl Default for SsdAugment {
    fn default() -> Self {
        Self { photometric_p: 0.5, zoom_out_p: 0.5, max_zoom: 4.0, fill: [124, 116, 104], iou_crop: true }
    }
}

fn data_err(e: tlcv_core::data::DataError) -> DetectError {
    DetectError::Invalid(e.to_string())
}

/// Random brightness (0.875..1.125), contrast (0.5..1.5, before or after the colour steps),
/// saturation (0.5..1.5) and hue (-0.05..0.05), each applied with probability `p`.
pub fn photometric_distort(img: &mut RgbImage, p: f64, rng: &mut impl Rng) {
    if rng.gen_bool(p.clamp(0.0, 1.0)) {
        adjust_brightness(img, rng.gen_range(0.875..1.125));
    }
    let contrast_first = rng.gen_bool(0.5);
    let contrast = rng.gen_bool(p.clamp(0.0, 1.0)).then(|| rng.gen_range(0.5..1.5));
    if let (true, Some(c)) = (contrast_first, contrast) {
        adjust_contrast(img, c);
    }
    if rng.gen_bool(p.clamp(0.0, 1.0)) {
        adjust_saturation(img, rng.gen_range(0.5..1.5));
    }
    if rng.gen_bool(p.clamp(0.0, 1.0)) {
        adjust_hue(img, rng.gen_range(-0.05..0.05));
    }
    if let (false, Some(c)) = (contrast_first, contrast) {
        adjust_contrast(img, c);
    }
}

/// Places the image at `(left, top)` on a `(width, height)` canvas of `fill`; boxes shift with it.
pub fn zoom_out(
    s: &BoxedImage,
    (width, height): (usize, usize),
    (left, top): (usize, usize),
    fill: [u8; 3],
) -> Result<BoxedImage, DetectError> {
    let (w, h) = (s.image.width, s.image.height);
    if left + w > width || top + h > height {
        return Err(DetectError::Invalid(format!("zoom_out: {w}x{h} at ({left},{top}) does not fit {width}x{height}")));
    }
    let sides = Sides { left, top, right: width - w - left, bottom: height - h - top };
    let image = pad(&s.image, sides, fill).map_err(data_err)?;
    let (dx, dy) = (left as f64, top as f64);
    let boxes = s.boxes.iter().map(|b| [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy]).collect();
    Ok(BoxedImage { image, boxes, labels: s.labels.clone() })
}

/// Crops the rectangle `(x, y, w, h)`; keeps the boxes whose centre lies inside it, clipped to it
/// and shifted into its coordinates.
pub fn crop_boxed(s: &BoxedImage, x: usize, y: usize, w: usize, h: usize) -> Result<BoxedImage, DetectError> {
    let image = crop(&s.image, x, y, w, h).map_err(data_err)?;
    let (x0, y0, x1, y1) = (x as f64, y as f64, (x + w) as f64, (y + h) as f64);
    let mut boxes = Vec::new();
    let mut labels = Vec::new();
    for (b, l) in s.boxes.iter().zip(&s.labels) {
        let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
        if cx > x0 && cx < x1 && cy > y0 && cy < y1 {
            boxes.push([b[0].max(x0) - x0, b[1].max(y0) - y0, b[2].min(x1) - x0, b[3].min(y1) - y0]);
            labels.push(*l);
        }
    }
    Ok(BoxedImage { image, boxes, labels })
}

/// The IoU-constrained crop: pick a minimum IoU from {none, 0.1, 0.3, 0.5, 0.7, 0.9} (or keep the
/// image), then try up to 40 crops of 0.3..1 of each side with aspect ratio 0.5..2 that contain
/// at least one box centre and overlap every kept box by at least that IoU.
pub fn iou_crop(s: &BoxedImage, rng: &mut impl Rng) -> Result<BoxedImage, DetectError> {
    const OPTIONS: [Option<f64>; 7] = [None, Some(0.0), Some(0.1), Some(0.3), Some(0.5), Some(0.7), Some(0.9)];
    let (iw, ih) = (s.image.width as f64, s.image.height as f64);
    for _ in 0..50 {
        let min_iou = match OPTIONS[rng.gen_range(0..OPTIONS.len())] {
            None => return Ok(s.clone()),
            Some(v) => v,
        };
        for _ in 0..40 {
            let (sw, sh) = (rng.gen_range(0.3..1.0), rng.gen_range(0.3..1.0));
            let (w, h) = ((iw * sw).floor().max(1.0), (ih * sh).floor().max(1.0));
            let ar = w / h;
            if !(0.5..=2.0).contains(&ar) {
                continue;
            }
            let x = (rng.gen_range(0.0..1.0) * (iw - w)).floor();
            let y = (rng.gen_range(0.0..1.0) * (ih - h)).floor();
            let rect = [x, y, x + w, y + h];
            let out = crop_boxed(s, x as usize, y as usize, w as usize, h as usize)?;
            if out.boxes.is_empty() && !s.boxes.is_empty() {
                continue;
            }
            let inside: Vec<&[f64; 4]> = s
                .boxes
                .iter()
                .filter(|b| {
                    let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
                    cx > rect[0] && cx < rect[2] && cy > rect[1] && cy < rect[3]
                })
                .collect();
            if inside.iter().all(|b| iou_xyxy(b, &rect) >= min_iou) {
                return Ok(out);
            }
        }
    }
    Ok(s.clone())
}

impl SsdAugment {
    /// Photometric distortion, then (with probability `zoom_out_p`) zoom-out by 1..`max_zoom`, then
    /// the IoU-constrained crop.
    pub fn apply(&self, mut s: BoxedImage, rng: &mut impl Rng) -> Result<BoxedImage, DetectError> {
        photometric_distort(&mut s.image, self.photometric_p, rng);
        if self.max_zoom > 1.0 && rng.gen_bool(self.zoom_out_p.clamp(0.0, 1.0)) {
            let r = rng.gen_range(1.0..self.max_zoom);
            let (w, h) = (s.image.width, s.image.height);
            let (cw, ch) = ((w as f64 * r) as usize, (h as f64 * r) as usize);
            let left = rng.gen_range(0..=cw - w);
            let top = rng.gen_range(0..=ch - h);
            s = zoom_out(&s, (cw, ch), (left, top), self.fill)?;
        }
        if self.iou_crop {
            s = iou_crop(&s, rng)?;
        }
        Ok(s)
    }
}
