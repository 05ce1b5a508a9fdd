//! Prediction at the original resolution: the image is resized to the network size, the logits are
//! upsampled (bilinear) back to the image's size and the arg-max is the class. Writes index masks and
//! colour overlays.

use std::path::{Path, PathBuf};

use opencv::core::{CV_8UC3, Mat, Vector};
use opencv::prelude::*;
use tch::{Device, Kind, Tensor};
use tlcv_core::backbones::Normalization;
use tlcv_core::data::{self, DecodeOptions, RgbImage, transforms};

use crate::{
    deeplab::upsample_to,
    error::SegmentError,
    mask::{self, Mask},
    model::SegModel,
};

/// Something that maps images to segmentation logits: the libtorch network, or an exported file
/// served by tract ([`crate::export::OnnxSegmenter`]).
pub trait Segmenter {
    /// `[N, 3, S, S]` (normalised as [`Segmenter::input_normalization`] says) -> `[N, C, S, S]`.
    fn logits(&self, xs: &Tensor) -> Result<Tensor, SegmentError>;
    /// The input normalisation; `None` = pixels in `0..1` (an ONNX export normalises in its graph).
    fn input_normalization(&self) -> Option<Normalization>;
    /// Number of classes.
    fn num_classes(&self) -> i64;
    /// Where inputs go.
    fn device(&self) -> Device;
}

impl Segmenter for SegModel {
    fn logits(&self, xs: &Tensor) -> Result<Tensor, SegmentError> {
        let xs = if xs.kind() == self.inference_kind { xs.shallow_clone() } else { xs.to_kind(self.inference_kind) };
        Ok(tch::no_grad(|| self.forward(&xs, false).to_kind(Kind::Float)))
    }
    fn input_normalization(&self) -> Option<Normalization> {
        Some(self.normalization())
    }
    fn num_classes(&self) -> i64 {
        self.num_classes
    }
    fn device(&self) -> Device {
        self.vs.device()
    }
}

/// `[1, C, H, W]` logits of `img` at the image's own resolution, the network seeing `size` x `size`.
pub fn logits_at_original(
    model: &dyn Segmenter,
    img: &RgbImage,
    size: i64,
    channels_last: bool,
) -> Result<Tensor, SegmentError> {
    let small = transforms::resize(img, size as usize, size as usize)?;
    let n = model.input_normalization().unwrap_or(Normalization { mean: [0.0; 3], std: [1.0; 3] });
    let xs = data::to_tensor(&[small], n.mean, n.std)?.to_device(model.device());
    let xs = if channels_last { tlcv_core::freeze::channels_last(&xs) } else { xs };
    let logits = model.logits(&xs)?; // [1, C, size, size]
    Ok(upsample_to(&logits, img.height as i64, img.width as i64)) // [1, C, H, W]
}

/// The predicted index mask of `img` at its own resolution.
pub fn predict_mask(
    model: &dyn Segmenter,
    img: &RgbImage,
    size: i64,
    channels_last: bool,
) -> Result<Mask, SegmentError> {
    let logits = logits_at_original(model, img, size, channels_last)?;
    let idx = logits.argmax(1, false).to_kind(Kind::Uint8).to_device(tch::Device::Cpu).reshape([-1]); // [H * W]
    let data = Vec::<u8>::try_from(&idx)?;
    Ok(Mask { width: img.width, height: img.height, data })
}

/// Writes RGB pixels as a PNG (OpenCV wants BGR).
pub fn write_rgb_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<(), SegmentError> {
    let bgr: Vec<u8> = rgb.chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect();
    let flat = Mat::new_rows_cols_with_data(height as i32, (width * 3) as i32, &bgr)?;
    let m = flat.reshape(3, height as i32)?;
    debug_assert_eq!(m.typ(), CV_8UC3);
    let mut buf = Vector::<u8>::new();
    opencv::imgcodecs::imencode(".png", &m, &mut buf, &Vector::new())?;
    tlcv_core::run::write_atomic(path, buf.as_slice()).map_err(|e| SegmentError::Invalid(e.to_string()))
}

/// What [`predict_file`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PredictedFile {
    /// The input image.
    pub image: String,
    /// The index mask (`<stem>.png`, grey, one class index per pixel).
    pub mask: String,
    /// The colour overlay (`<stem>_overlay.png`).
    pub overlay: String,
    /// Pixels per class.
    pub class_pixels: Vec<u64>,
}

/// How [`predict_file`] runs the network and draws the overlay.
#[derive(Debug, Clone, Copy)]
pub struct PredictOptions {
    /// Network input size in pixels.
    pub size: i64,
    /// Opacity of the class colours in the overlay.
    pub alpha: f64,
    /// Feed the network channels-last input.
    pub channels_last: bool,
}

impl PredictOptions {
    /// The options a run was trained with.
    pub fn of_run(cfg: &crate::SegmentConfig) -> Self {
        PredictOptions {
            size: cfg.data.img_size,
            alpha: cfg.eval.overlay_alpha,
            channels_last: cfg.train.channels_last,
        }
    }
}

/// Predicts `image` and writes `<out>/<stem>.png` (index mask) and `<out>/<stem>_overlay.png`.
pub fn predict_file(
    model: &dyn Segmenter,
    image: &Path,
    out: &Path,
    opts: PredictOptions,
) -> Result<PredictedFile, SegmentError> {
    let PredictOptions { size, alpha, channels_last } = opts;
    let img = data::decode_file(image, &DecodeOptions::default())?;
    let m = predict_mask(model, &img, size, channels_last)?;
    let stem = image.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
    std::fs::create_dir_all(out).map_err(|source| SegmentError::Io { path: out.to_path_buf(), source })?;
    let mask_path: PathBuf = out.join(format!("{stem}.png"));
    let overlay_path = out.join(format!("{stem}_overlay.png"));
    mask::write_index_png(&mask_path, &m)?;
    write_rgb_png(&overlay_path, img.width, img.height, &mask::overlay(&img.data, &m, alpha))?;
    let mut class_pixels = vec![0u64; model.num_classes() as usize];
    for &v in &m.data {
        if let Some(c) = class_pixels.get_mut(v as usize) {
            *c += 1;
        }
    }
    Ok(PredictedFile {
        image: image.display().to_string(),
        mask: mask_path.display().to_string(),
        overlay: overlay_path.display().to_string(),
        class_pixels,
    })
}
