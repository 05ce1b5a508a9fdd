//! Images as tensors: `[1, 3, H, W]` fp32 in `[0, 1]`, RGB. Reading resolves bare names in the Debian
//! data; writing is PNG (or any OpenCV format by extension).

use std::path::{Path, PathBuf};

use opencv::core::{Mat, Vec3b, Vector};
use opencv::{imgcodecs, imgproc};
use tch::{Kind, Tensor};
use tlcv_core::data::{self, DecodeOptions, RgbImage, transforms};

use crate::{Result, StyleError};

/// Resolves an image argument: an existing path as is; a bare file name (no `/`) in
/// `<debdata>/skimage` or `<debdata>/opencv`.
pub fn resolve(name: &str) -> Result<PathBuf> {
    let p = PathBuf::from(name);
    if p.is_file() {
        return Ok(p);
    }
    if !name.contains('/') && !name.is_empty() {
        let deb = tlcv_core::paths::debdata_dir()?;
        for sub in ["skimage", "opencv"] {
            let c = deb.join(sub).join(name);
            if c.is_file() {
                return Ok(c);
            }
        }
    }
    Err(StyleError::Invalid(format!("image {name:?} not found (a path, or a file name in the Debian data)")))
}

/// Reads an image file.
pub fn read(path: &Path) -> Result<RgbImage> {
    Ok(data::decode_file(path, &DecodeOptions::default())?)
}

/// Resizes so that the longer side is `size` (aspect kept; at least 1 pixel each side).
pub fn resize_longer(img: &RgbImage, size: i64) -> Result<RgbImage> {
    let (w, h) = (img.width as f64, img.height as f64);
    let s = size.max(1) as f64 / w.max(h);
    let (nw, nh) = (((w * s).round() as usize).max(1), ((h * s).round() as usize).max(1));
    Ok(transforms::resize(img, nw, nh)?)
}

/// `RgbImage` -> `[1, 3, H, W]` fp32 in `[0, 1]`.
pub fn to_tensor(img: &RgbImage) -> Result<Tensor> {
    Ok(data::to_tensor(std::slice::from_ref(img), [0.0; 3], [1.0; 3])?)
}

/// `[1, 3, H, W]` (or `[3, H, W]`) in `[0, 1]` -> `RgbImage` (clamped, rounded).
pub fn from_tensor(t: &Tensor) -> Result<RgbImage> {
    let t = if t.dim() == 4 { t.get(0) } else { t.shallow_clone() };
    let (_, h, w) = t.size3()?;
    let hwc = (t.detach().to_kind(Kind::Float).clamp(0.0, 1.0) * 255.0)
        .round()
        .to_kind(Kind::Uint8)
        .permute([1, 2, 0]) // [H, W, 3]
        .contiguous()
        .to_device(tch::Device::Cpu);
    let mut buf = vec![0u8; (h * w * 3) as usize];
    let n = buf.len();
    hwc.copy_data_u8(&mut buf, n);
    Ok(RgbImage::from_raw(w as usize, h as usize, buf)?)
}

/// Writes an image; the format follows the extension (`.png` recommended). Creates parent folders.
pub fn write(path: &Path, img: &RgbImage) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StyleError::io(dir, e))?;
    }
    let rgb = Mat::new_rows_cols_with_bytes::<Vec3b>(img.height as i32, img.width as i32, &img.data)?;
    let mut bgr = Mat::default();
    imgproc::cvt_color_def(&rgb, &mut bgr, imgproc::COLOR_RGB2BGR)?;
    let name = path.to_string_lossy().into_owned();
    if !imgcodecs::imwrite(&name, &bgr, &Vector::new())? {
        return Err(StyleError::Invalid(format!("{name}: could not write (unknown image extension?)")));
    }
    Ok(())
}

/// Writes a `[1, 3, H, W]` tensor in `[0, 1]` as an image.
pub fn write_tensor(path: &Path, t: &Tensor) -> Result<()> {
    write(path, &from_tensor(t)?)
}

/// Bilinear resize of `[N, 3, H, W]` to `h` x `w` (align_corners = false).
pub fn resize_tensor(t: &Tensor, h: i64, w: i64) -> Tensor {
    t.upsample_bilinear2d([h, w], false, None, None)
}
