//! Detection data: the in-memory form ([`DetDataset`] of [`DetImage`]s with boxes in pixels), the
//! YOLO layout ([`yolo`]) and COCO JSON ([`coco`]), both read and written, the converter
//! ([`convert`]) and the embedded data set.
//!
//! Readers validate every box: wrong field counts, non-numbers and NaN, unknown class ids, boxes
//! outside the image and degenerate boxes are reported with their file and line (or JSON path),
//! dropped and counted in [`Issues`]; they never abort a load.

pub mod coco;
pub mod convert;
pub mod yolo;

use std::path::{Path, PathBuf};

use tlcv_core::{data::image, paths};

use crate::config::{DataConfig, DataFormat};
use crate::error::{DetectError, Result};

/// One object: class index and `[x1, y1, x2, y2]` in pixels of the original image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object {
    /// Index into the class names.
    pub class: usize,
    /// Box corners in pixels.
    pub bbox: [f64; 4],
}

/// One image and its objects.
#[derive(Debug, Clone, PartialEq)]
pub struct DetImage {
    /// The image file.
    pub path: PathBuf,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Its objects (empty = a background image).
    pub objects: Vec<Object>,
}

/// What the readers found wrong (everything they dropped).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Issues {
    /// One line per problem: `file:line: message` or `file: at json.path: message`.
    pub messages: Vec<String>,
    /// Boxes dropped.
    pub dropped_boxes: usize,
    /// Images without a label file (kept as background images).
    pub missing_labels: usize,
    /// Images dropped (unreadable header, unknown image id...).
    pub dropped_images: usize,
}

impl Issues {
    /// Records a dropped box.
    pub fn drop_box(&mut self, msg: String) {
        self.dropped_boxes += 1;
        self.messages.push(msg);
    }

    /// Adds another report.
    pub fn extend(&mut self, other: Issues) {
        self.messages.extend(other.messages);
        self.dropped_boxes += other.dropped_boxes;
        self.missing_labels += other.missing_labels;
        self.dropped_images += other.dropped_images;
    }

    /// One-line summary.
    pub fn summary(&self) -> String {
        format!(
            "{} box(es) dropped, {} image(s) without labels, {} image(s) dropped",
            self.dropped_boxes, self.missing_labels, self.dropped_images
        )
    }
}

/// A data set: class names and splits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetDataset {
    /// Class names in index order.
    pub names: Vec<String>,
    /// Training images.
    pub train: Vec<DetImage>,
    /// Validation images.
    pub val: Vec<DetImage>,
    /// Problems met while reading.
    pub issues: Issues,
}

impl DetDataset {
    /// The split called `name` (train or val).
    pub fn split(&self, name: &str) -> Option<&[DetImage]> {
        match name {
            "train" => Some(&self.train),
            "val" => Some(&self.val),
            _ => None,
        }
    }
}

/// `(width, height)` of an image file from its header, without decoding.
pub fn image_size(path: &Path) -> Result<(u32, u32)> {
    let bytes = std::fs::read(path).map_err(|source| DetectError::Io { path: path.to_path_buf(), source })?;
    let dims = image::sniff_format(&bytes).and_then(|f| image::header_dimensions(f, &bytes));
    match dims {
        Some((w, h)) if w > 0 && h > 0 => Ok((w as u32, h as u32)),
        _ => Err(DetectError::Invalid(format!("{}: not a readable JPEG/PNG/BMP/WebP image", path.display()))),
    }
}

/// Checks a pixel box against an image: finite, inside (1 pixel of slack, then clipped) and at
/// least `min_side` pixels wide and high. Returns the clipped box or the reason it is refused.
pub fn check_box(b: [f64; 4], width: f64, height: f64, min_side: f64) -> std::result::Result<[f64; 4], String> {
    if b.iter().any(|v| !v.is_finite()) {
        return Err(format!("non-finite coordinate in {b:?}"));
    }
    let tol = 1.0;
    if b[0] < -tol || b[1] < -tol || b[2] > width + tol || b[3] > height + tol {
        return Err(format!(
            "box [{:.1}, {:.1}, {:.1}, {:.1}] lies outside the {width}x{height} image",
            b[0], b[1], b[2], b[3]
        ));
    }
    let c = [b[0].max(0.0), b[1].max(0.0), b[2].min(width), b[3].min(height)];
    if c[2] - c[0] < min_side || c[3] - c[1] < min_side {
        return Err(format!(
            "degenerate box [{:.1}, {:.1}, {:.1}, {:.1}] (under {min_side} pixel wide or high)",
            b[0], b[1], b[2], b[3]
        ));
    }
    Ok(c)
}

/// Smallest box side (pixels) the readers accept.
pub const MIN_SIDE: f64 = 1.0;

/// Lists the image files of a folder, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|source| DetectError::Io { path: dir.to_path_buf(), source })?;
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    tlcv_core::data::folder::IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e))
                })
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Which layout `path` is in.
pub fn detect_format(path: &Path, format: DataFormat) -> Result<DataFormat> {
    match format {
        DataFormat::Auto => {
            if path.is_file() && path.extension().is_some_and(|e| e == "yaml" || e == "yml")
                || path.join("data.yaml").is_file()
            {
                Ok(DataFormat::Yolo)
            } else if path.join("annotations").is_dir() {
                Ok(DataFormat::Coco)
            } else {
                Err(DetectError::Invalid(format!(
                    "{}: neither a YOLO data set (data.yaml) nor a COCO one (annotations/instances_*.json)",
                    path.display()
                )))
            }
        }
        f => Ok(f),
    }
}

/// Reads a data set in `format` (train and val splits).
pub fn load(path: &Path, format: DataFormat) -> Result<DetDataset> {
    match detect_format(path, format)? {
        DataFormat::Coco => coco::read_dataset(path),
        _ => yolo::read_dataset(path),
    }
}

/// Resolves `cfg.path` (generating the embedded data set on first use) and reads it.
pub fn load_config(cfg: &DataConfig) -> Result<(DetDataset, PathBuf)> {
    let path = if cfg.path == "embedded" { ensure_embedded(cfg)? } else { PathBuf::from(&cfg.path) };
    if !path.exists() {
        return Err(DetectError::Invalid(format!("data.path `{}` does not exist (nor is it `embedded`)", cfg.path)));
    }
    let ds = load(&path, cfg.format)?;
    if ds.train.is_empty() {
        // The problems are only printed after a successful load: name the first one here.
        let why =
            ds.issues.messages.first().map_or(String::new(), |m| format!(" ({}; first: {m})", ds.issues.summary()));
        return Err(DetectError::Invalid(format!("{}: no training images{why}", path.display())));
    }
    Ok((ds, path))
}

/// Generates `datasets/generated/detection-<train>-<val>-<size>-s<seed>[-shapes|-digits]` if needed;
/// returns its folder.
pub fn ensure_embedded(cfg: &DataConfig) -> Result<PathBuf> {
    let spec = tlcv_datasets::detection::DetectionSpec {
        train: cfg.train_images,
        val: cfg.val_images,
        size: cfg.gen_size,
        seed: cfg.seed,
        classes: cfg.classes,
        ..Default::default()
    };
    let out = paths::generated_data_dir(&format!(
        "detection-{}-{}-{}-s{}{}",
        spec.train,
        spec.val,
        spec.size,
        spec.seed,
        spec.classes.suffix()
    ))?;
    if tlcv_datasets::existing(&out)?.is_none() {
        eprintln!("generating the embedded detection data set into {} ...", out.display());
        tlcv_datasets::detection::generate(&out, &paths::debdata_dir()?, &spec)?;
    }
    Ok(out)
}
