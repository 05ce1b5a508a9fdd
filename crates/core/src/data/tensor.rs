//! Batching decoded images into tensors in one pass: the pixels are converted in parallel (rayon)
//! straight into the memory of a new tensor, with no intermediate buffer and no per-pixel tensor
//! operations.

// One unsafe block: the batch tensor's freshly allocated storage is written through a slice.
#![allow(unsafe_code)]

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use super::DataError;
use super::image::RgbImage;

/// ImageNet channel means (RGB), the normalisation torchvision's pretrained weights expect.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

fn common_size(images: &[RgbImage]) -> Result<(usize, usize), DataError> {
    let first = images.first().ok_or_else(|| DataError::Invalid("cannot batch zero images".into()))?;
    let (w, h) = (first.width, first.height);
    if w == 0 || h == 0 {
        return Err(DataError::Invalid(format!("cannot batch empty {w}x{h} images")));
    }
    for (i, img) in images.iter().enumerate() {
        if img.width != w || img.height != h || img.data.len() != w * h * 3 {
            return Err(DataError::Invalid(format!(
                "image {i} is {}x{} but image 0 is {w}x{h}; all images in a batch must have one size",
                img.width, img.height
            )));
        }
    }
    Ok((w, h))
}

/// Stacks same-sized images into a float tensor `[N, 3, H, W]` holding `(x / 255 - mean) / std` per
/// channel (CHW, the layout the models take).
pub fn to_tensor(images: &[RgbImage], mean: [f64; 3], std: [f64; 3]) -> Result<Tensor, DataError> {
    let (w, h) = common_size(images)?;
    if std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
        return Err(DataError::Invalid(format!("normalisation std {std:?} must be finite and non-zero")));
    }
    // One table per channel: 256 possible inputs, so the inner loop is a lookup.
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, out) in table.iter_mut().enumerate() {
            *out = ((v as f64 / 255.0 - mean[c]) / std[c]) as f32;
        }
    }
    let plane = w * h;
    let len = images.len() * 3 * plane;
    // HWC u8 -> [N, 3, H, W] f32
    let batch = Tensor::f_empty([images.len() as i64, 3, h as i64, w as i64], (Kind::Float, Device::Cpu))
        .map_err(|e| DataError::Invalid(format!("cannot allocate a batch of {len} floats: {e}")))?;
    if !batch.is_contiguous() || batch.numel() != len {
        return Err(DataError::Invalid("the new batch tensor is not a contiguous float32 buffer".into()));
    }
    // SAFETY: `batch` was just allocated by libtorch as a contiguous CPU float32 tensor of `len`
    // elements; nothing else refers to its storage until it is returned, and the slice is dropped
    // before that. Every element is written below (the images cover all N x 3 x H x W values).
    let out: &mut [f32] = unsafe { std::slice::from_raw_parts_mut(batch.data_ptr().cast::<f32>(), len) };
    out.par_chunks_mut(3 * plane).zip(images.par_iter()).for_each(|(dst, img)| {
        let (r, rest) = dst.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in img.data.chunks_exact(3).enumerate() {
            r[i] = lut[0][px[0] as usize];
            g[i] = lut[1][px[1] as usize];
            b[i] = lut[2][px[2] as usize];
        }
    });
    Ok(batch)
}

/// Stacks same-sized images into a uint8 tensor `[N, H, W, 3]` (the raw pixels), for pipelines that
/// move bytes to the device and normalise there.
pub fn to_tensor_u8(images: &[RgbImage]) -> Result<Tensor, DataError> {
    let (w, h) = common_size(images)?;
    let mut out = Vec::with_capacity(images.len() * w * h * 3);
    for img in images {
        out.extend_from_slice(&img.data);
    }
    // HWC u8 -> [N, H, W, 3] u8
    Ok(Tensor::from_slice(&out).view([images.len() as i64, h as i64, w as i64, 3]))
}
