//! Segmentation data: the folder layout (`images/{train,val}/*`, `masks/{train,val}/<stem>.png`,
//! `classes.txt`), the embedded `shapes-seg` set, up-front checking of every pair, loading and batching.
//!
//! Indexing reads every mask and every image header once: a missing mask, a mask whose size differs
//! from its image's, an unknown class value or an unreadable file is reported (one line naming the
//! file) and the sample is skipped and counted, never failing the run.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tch::Tensor;
use tlcv_core::backbones::Normalization;
use tlcv_core::data::{self, DataError, DecodeOptions, RgbImage, image};
use tlcv_core::run::SkipLog;
use tlcv_datasets::segmentation::{self as seggen, SegParams};

use crate::{
    config::DataConfig,
    error::SegmentError,
    mask::{self, Mask},
};

/// Name of the embedded data set.
pub const EMBEDDED: &str = "shapes-seg";
/// Image file extensions that are indexed.
pub const IMAGE_EXTS: [&str; 6] = ["jpg", "jpeg", "png", "bmp", "webp", "tif"];

/// An image and its mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegSample {
    /// The image file.
    pub image: PathBuf,
    /// The mask file.
    pub mask: PathBuf,
}

impl SegSample {
    /// Records `message` (which names the image or the mask) in `log` under the file it names.
    pub fn record_skip(&self, log: &SkipLog, message: &str) {
        let mask = self.mask.display().to_string();
        let file = if message.starts_with(&format!("{mask}:")) { &self.mask } else { &self.image };
        log.record(file, message);
    }
}

/// The indexed data set.
#[derive(Debug, Clone)]
pub struct SegDataset {
    /// The data folder.
    pub root: PathBuf,
    /// Class names, index order.
    pub classes: Vec<String>,
    /// Training pairs that passed the checks.
    pub train: Vec<SegSample>,
    /// Validation pairs that passed the checks.
    pub val: Vec<SegSample>,
    /// The samples skipped while indexing, each under the file its reason names.
    pub skipped: SkipLog,
}

/// Resolves `cfg.path` (the embedded set is generated on first use) and indexes it.
pub fn load_dataset(cfg: &DataConfig) -> Result<SegDataset, SegmentError> {
    let root = if cfg.path == EMBEDDED {
        let size = cfg.gen_size as i32;
        let name = format!("{EMBEDDED}-{size}px-{}-{}-s{}", cfg.train_images, cfg.val_images, cfg.seed);
        let dir = tlcv_core::paths::generated_data_dir(&name)?;
        let deb = tlcv_core::paths::debdata_dir()?;
        let params = SegParams { size, train: cfg.train_images, val: cfg.val_images, seed: cfg.seed };
        seggen::generate(&dir, &deb, params)?;
        dir
    } else {
        PathBuf::from(&cfg.path)
    };
    index_folder(&root, &crate::config::split_list(&cfg.classes), cfg.ignore_index, cfg.max_pixels)
}

/// Class names: `given` when not empty, else one per line of `root/classes.txt`.
pub fn class_names(root: &Path, given: &[String]) -> Result<Vec<String>, SegmentError> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let file = root.join("classes.txt");
    let text = std::fs::read_to_string(&file).map_err(|_| {
        SegmentError::Invalid(format!(
            "{}: no class names: add classes.txt (one per line) or set data.classes",
            file.display()
        ))
    })?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.is_empty() || names.len() > 255 {
        return Err(SegmentError::Invalid(format!(
            "{}: need 1 to 255 class names, found {}",
            file.display(),
            names.len()
        )));
    }
    Ok(names)
}

/// Indexes `root/images/{train,val}` against `root/masks/{train,val}` and checks every pair.
pub fn index_folder(root: &Path, classes: &[String], ignore: u8, max_pixels: u64) -> Result<SegDataset, SegmentError> {
    if !root.is_dir() {
        return Err(SegmentError::Invalid(format!("{}: data folder not found", root.display())));
    }
    let classes = class_names(root, classes)?;
    let skipped = SkipLog::default();
    let mut splits = Vec::new();
    for split in ["train", "val"] {
        let dir = root.join("images").join(split);
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            SegmentError::Invalid(format!(
                "{}: {e} (expected images/{{train,val}} and masks/{{train,val}})",
                dir.display()
            ))
        })?;
        let mut images: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| IMAGE_EXTS.contains(&x.to_ascii_lowercase().as_str()))
            })
            .collect();
        images.sort();
        let checked: Vec<(SegSample, Result<(), String>)> = images
            .par_iter()
            .map(|img| {
                let stem = img.file_stem().unwrap_or_default();
                let mut m = root.join("masks").join(split).join(stem);
                m.set_extension("png");
                let sample = SegSample { image: img.clone(), mask: m };
                let check = check_sample(&sample, classes.len(), ignore, max_pixels);
                (sample, check)
            })
            .collect();
        let mut ok = Vec::new();
        for (sample, check) in checked {
            match check {
                Ok(()) => ok.push(sample),
                Err(reason) => sample.record_skip(&skipped, &reason),
            }
        }
        splits.push(ok);
    }
    let val = splits.pop().unwrap_or_default();
    let train = splits.pop().unwrap_or_default();
    if train.is_empty() {
        return Err(SegmentError::Invalid(format!(
            "{}: no usable training pair ({} skipped)",
            root.display(),
            skipped.len()
        )));
    }
    Ok(SegDataset { root: root.to_path_buf(), classes, train, val, skipped })
}

/// Checks one pair: the mask exists, is an index mask of the image's size with known values.
pub fn check_sample(s: &SegSample, num_classes: usize, ignore: u8, max_pixels: u64) -> Result<(), String> {
    let m = mask::read_index_mask(&s.mask).map_err(|e| e.to_string())?;
    let (w, h) = image_size(&s.image)?;
    if (w as u64) * (h as u64) > max_pixels {
        return Err(format!("{}: {w}x{h} is over the limit of {max_pixels} pixels", s.image.display()));
    }
    if (m.width, m.height) != (w, h) {
        return Err(format!(
            "{}: mask is {}x{} but its image {} is {w}x{h}",
            s.mask.display(),
            m.width,
            m.height,
            s.image.display()
        ));
    }
    m.check_values(num_classes, ignore).map_err(|e| format!("{}: {e}", s.mask.display()))
}

/// `(width, height)` of an image from its header (decoding only when the header is not understood).
pub fn image_size(path: &Path) -> Result<(usize, usize), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(dims) = image::sniff_format(&bytes).and_then(|f| image::header_dimensions(f, &bytes)) {
        return Ok(dims);
    }
    let img = data::decode_bytes(&bytes, path, &DecodeOptions::default()).map_err(|e| e.to_string())?;
    Ok((img.width, img.height))
}

/// Decodes a pair (RGB image, index mask) and checks their sizes agree.
pub fn load_pair(s: &SegSample, max_pixels: u64) -> Result<(RgbImage, Mask), DataError> {
    let opts = DecodeOptions { max_pixels: max_pixels as usize, target_size: None };
    let img = data::decode_file(&s.image, &opts)?;
    let m = mask::read_index_mask(&s.mask).map_err(|e| DataError::Other(e.to_string()))?;
    if (m.width, m.height) != (img.width, img.height) {
        return Err(DataError::Other(format!(
            "{}: mask is {}x{} but the image is {}x{}",
            s.mask.display(),
            m.width,
            m.height,
            img.width,
            img.height
        )));
    }
    Ok((img, m))
}

/// A batch: normalised images and int64 masks.
#[derive(Debug)]
pub struct SegBatch {
    /// `[B, 3, H, W]` float32.
    pub images: Tensor,
    /// `[B, H, W]` int64 class indices (ignore index kept).
    pub masks: Tensor,
}

/// Stacks same-sized pairs into a [`SegBatch`].
pub fn collate(items: Vec<(RgbImage, Mask)>, norm: Normalization) -> Result<SegBatch, DataError> {
    let (imgs, masks): (Vec<RgbImage>, Vec<Mask>) = items.into_iter().unzip();
    let images = data::to_tensor(&imgs, norm.mean, norm.std)?;
    let (w, h) = (imgs.first().map_or(0, |i| i.width), imgs.first().map_or(0, |i| i.height));
    let mut flat = Vec::with_capacity(masks.len() * w * h);
    for m in &masks {
        flat.extend_from_slice(&m.data);
    }
    let masks = Tensor::from_slice(&flat).view([masks.len() as i64, h as i64, w as i64]).to_kind(tch::Kind::Int64);
    Ok(SegBatch { images, masks })
}
