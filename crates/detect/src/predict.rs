//! Prediction on image files: detections in original pixels, drawn with OpenCV (box, class name and
//! score per detection) and reported as JSON lines.

use std::path::{Path, PathBuf};

use opencv::core::{Mat, Point, Rect, Scalar, Vec3b, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};
use serde::Serialize;
use tlcv_core::data::RgbImage;

use crate::error::{DetectError, Result};
use crate::evaluate::detect_files;
use crate::export::DetectModel;
use crate::postprocess::{Detection, PostprocessConfig};

/// One detection of the JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct JsonDetection {
    /// `[x1, y1, x2, y2]` in original pixels.
    #[serde(rename = "box")]
    pub bbox: [f64; 4],
    /// Confidence.
    pub score: f64,
    /// Class name.
    pub class: String,
    /// Class index.
    pub index: usize,
}

/// The JSON line of one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePrediction {
    /// The image path as given.
    pub image: String,
    /// Its detections, best first.
    pub detections: Vec<JsonDetection>,
}

/// A distinct colour per class (RGB).
pub fn class_colour(class: usize) -> [u8; 3] {
    const P: [[u8; 3]; 10] = [
        [230, 25, 75],
        [60, 180, 75],
        [255, 200, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [0, 128, 128],
    ];
    P[class % P.len()]
}

/// Draws boxes with `label (score)` captions onto a copy of `img` (RGB).
pub fn draw(img: &RgbImage, dets: &[Detection], names: &[String], thickness: i32) -> Result<RgbImage> {
    let src = Mat::new_rows_cols_with_bytes::<Vec3b>(img.height as i32, img.width as i32, &img.data)?;
    let mut m = src.try_clone()?;
    let font = imgproc::FONT_HERSHEY_SIMPLEX;
    let scale = (img.width.max(img.height) as f64 / 900.0).clamp(0.35, 1.2);
    for d in dets {
        let c = class_colour(d.class);
        let colour = Scalar::new(c[0] as f64, c[1] as f64, c[2] as f64, 0.0); // RGB order in this Mat
        let [x1, y1, x2, y2] = d.bbox.map(|v| v.round() as i32);
        imgproc::rectangle(
            &mut m,
            Rect::new(x1, y1, (x2 - x1).max(1), (y2 - y1).max(1)),
            colour,
            thickness,
            imgproc::LINE_8,
            0,
        )?;
        let name = names.get(d.class).cloned().unwrap_or_else(|| d.class.to_string());
        let text = format!("{name} {:.2}", d.score);
        let mut base = 0;
        let size = imgproc::get_text_size(&text, font, scale, 1, &mut base)?;
        let ty = if y1 - size.height - 4 >= 0 { y1 - size.height - 4 } else { y1 };
        imgproc::rectangle(&mut m, Rect::new(x1, ty, size.width + 4, size.height + 4), colour, -1, imgproc::LINE_8, 0)?;
        let luma = 0.299 * c[0] as f64 + 0.587 * c[1] as f64 + 0.114 * c[2] as f64;
        let ink = if luma > 140.0 { Scalar::all(0.0) } else { Scalar::all(255.0) };
        imgproc::put_text(
            &mut m,
            &text,
            Point::new(x1 + 2, ty + size.height + 1),
            font,
            scale,
            ink,
            1,
            imgproc::LINE_AA,
            false,
        )?;
    }
    let data = m.data_bytes()?.to_vec();
    Ok(RgbImage::from_raw(img.width, img.height, data)?)
}

/// Writes an RGB image as PNG or JPEG (by extension).
pub fn save(img: &RgbImage, path: &Path) -> Result<()> {
    let rgb = Mat::new_rows_cols_with_bytes::<Vec3b>(img.height as i32, img.width as i32, &img.data)?;
    let mut bgr = Mat::default();
    imgproc::cvt_color_def(&rgb, &mut bgr, imgproc::COLOR_RGB2BGR)?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("png").to_ascii_lowercase();
    let mut buf = Vector::<u8>::new();
    imgcodecs::imencode(&format!(".{ext}"), &bgr, &mut buf, &Vector::new())?;
    std::fs::write(path, buf.as_slice()).map_err(|source| DetectError::Io { path: path.to_path_buf(), source })
}

/// JSON form of an image's detections.
pub fn to_json(image: &Path, dets: &[Detection], names: &[String]) -> ImagePrediction {
    ImagePrediction {
        image: image.display().to_string(),
        detections: dets
            .iter()
            .map(|d| JsonDetection {
                bbox: d.bbox,
                score: d.score,
                class: names.get(d.class).cloned().unwrap_or_else(|| d.class.to_string()),
                index: d.class,
            })
            .collect(),
    }
}

/// Predicts on `images`; with `out`, writes each image with its boxes drawn to `out/<name>.jpg`.
/// Returns one result per image (an unreadable image gives its error).
pub fn predict_files(
    model: &dyn DetectModel,
    names: &[String],
    images: &[PathBuf],
    pp: &PostprocessConfig,
    out: Option<&Path>,
) -> Result<Vec<std::result::Result<ImagePrediction, String>>> {
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).map_err(|source| DetectError::Io { path: dir.to_path_buf(), source })?;
    }
    let dets = detect_files(model, images, pp, 8, 64_000_000);
    let mut results = Vec::with_capacity(images.len());
    for (path, r) in images.iter().zip(dets) {
        let r = r.and_then(|d| {
            if let Some(dir) = out {
                let img = tlcv_core::data::decode_file(path, &Default::default()).map_err(|e| e.to_string())?;
                let drawn = draw(&img, &d, names, 2).map_err(|e| e.to_string())?;
                let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
                save(&drawn, &dir.join(format!("{stem}.jpg"))).map_err(|e| e.to_string())?;
            }
            Ok(to_json(path, &d, names))
        });
        results.push(r);
    }
    Ok(results)
}
