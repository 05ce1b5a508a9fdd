//! Data for classification: resolving `data.path` (a folder, a CSV or an embedded data set), and the
//! per-sample pipelines for training (augmented) and evaluation (resize + centre crop).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rand::rngs::StdRng;
use tch::Tensor;
use tlcv_core::{
    backbones::Normalization,
    data::{
        self, ClassDataset, DataError, DecodeOptions, ImageCache, RgbImage,
        transforms::{self, ColorJitter, RandomResizedCrop, ResizeMethod},
    },
    paths,
};

use crate::{ClassifyError, config::DataConfig};

/// Pixel bytes the decoded-image cache may hold (`data.cache_images`); images beyond it are decoded
/// every epoch.
pub const IMAGE_CACHE_BUDGET: usize = 1 << 30;

/// Embedded data sets that `data.path` may name.
pub const EMBEDDED: [&str; 2] = ["digits", "shapes"];

/// Resolves `cfg.path` to a data set, generating an embedded one on first use.
pub fn load_dataset(cfg: &DataConfig) -> Result<(ClassDataset, PathBuf), ClassifyError> {
    let path = if EMBEDDED.contains(&cfg.path.as_str()) {
        ensure_embedded(&cfg.path, cfg.train_per_class, cfg.seed)?
    } else {
        PathBuf::from(&cfg.path)
    };
    let dataset = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        data::folder::from_csv(&path, None, None)?
    } else if path.is_dir() {
        data::folder::image_folder(&path, false)?
    } else {
        return Err(ClassifyError::Invalid(format!(
            "data.path `{}` is neither a directory, a CSV file nor an embedded data set ({})",
            cfg.path,
            EMBEDDED.join(", ")
        )));
    };
    let mut dataset = dataset;
    if cfg.limit_per_class > 0 {
        limit_per_class(&mut dataset, cfg.limit_per_class);
    }
    if dataset.train.is_empty() {
        return Err(ClassifyError::Invalid(format!("{}: no training images", path.display())));
    }
    Ok((dataset, path))
}

/// Keeps the first `n` training images of each class (the index is sorted, so the choice is deterministic).
pub fn limit_per_class(dataset: &mut ClassDataset, n: usize) {
    let mut counts = vec![0usize; dataset.classes.len()];
    dataset.train.retain(|s| {
        counts[s.label] += 1;
        counts[s.label] <= n
    });
}

/// Generates `datasets/generated/<name>-<per_class>-<seed>` if it is not there yet; returns its folder.
pub fn ensure_embedded(name: &str, per_class: usize, seed: u64) -> Result<PathBuf, ClassifyError> {
    let out = paths::generated_data_dir(&format!("{name}-{per_class}-s{seed}"))?;
    if tlcv_datasets::existing(&out)?.is_some() {
        return Ok(out);
    }
    let debdata = paths::debdata_dir()?;
    eprintln!("generating the embedded `{name}` data set into {} ...", out.display());
    let summary = match name {
        "digits" => tlcv_datasets::digits::generate(&out, &debdata, per_class, seed)?,
        _ => tlcv_datasets::shapes::generate(&out, &debdata, per_class, seed)?,
    };
    eprintln!(
        "  {} classes: {} train / {} val / {} test images",
        summary.classes.len(),
        summary.train,
        summary.val,
        summary.test
    );
    Ok(out)
}

/// How one image becomes a network input.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Output side in pixels.
    pub size: usize,
    /// Augment (random resized crop, flip, jitter) or not (resize shorter side + centre crop).
    pub augment: bool,
    /// Smallest crop area fraction.
    pub min_crop_scale: f64,
    /// Random horizontal flips.
    pub hflip: bool,
    /// The resampler.
    pub resize: ResizeMethod,
    /// Decoding limits.
    pub decode: DecodeOptions,
    /// Decoded images kept across epochs (`data.cache_images`), shared by the loader threads.
    pub cache: Option<Arc<ImageCache>>,
}

impl Pipeline {
    /// The pipeline for `cfg`, augmenting or not.
    pub fn new(cfg: &DataConfig, augment: bool) -> Self {
        let size = cfg.img_size.max(8) as usize;
        Self {
            size,
            augment: augment && cfg.augment,
            min_crop_scale: cfg.min_crop_scale,
            hflip: cfg.hflip,
            resize: cfg.resize,
            // Reduced-scale JPEG decoding changes the pixels, so only the OpenCV resampler uses it.
            decode: DecodeOptions {
                max_pixels: cfg.max_pixels as usize,
                target_size: cfg.resize.allows_reduced_decoding().then_some(size),
            },
            cache: None,
        }
    }

    /// The same pipeline reading decoded images through `cache`.
    pub fn with_cache(mut self, cache: Option<Arc<ImageCache>>) -> Self {
        self.cache = cache;
        self
    }

    /// Decodes and transforms one image file.
    pub fn load(&self, path: &Path, rng: &mut StdRng) -> Result<RgbImage, DataError> {
        match &self.cache {
            Some(cache) => {
                let img = cache.get_or_load(path, || data::decode_file(path, &self.decode))?;
                self.transform(&img, rng)
            }
            None if self.augment => {
                // Only the random crop of a JPEG is decoded (same crop as decoding it whole).
                let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
                let crop = self.random_crop().decode(&bytes, path, &self.decode, rng)?;
                self.flip_and_jitter(crop, rng)
            }
            None => self.transform(&data::decode_file(path, &self.decode)?, rng),
        }
    }

    /// The random resized crop: area fraction `min_crop_scale..1`, aspect ratio 3/4..4/3.
    fn random_crop(&self) -> RandomResizedCrop {
        RandomResizedCrop {
            width: self.size,
            height: self.size,
            scale: (self.min_crop_scale, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            method: self.resize,
        }
    }

    /// The augmentations after the random crop.
    fn flip_and_jitter(&self, mut img: RgbImage, rng: &mut StdRng) -> Result<RgbImage, DataError> {
        if self.hflip {
            transforms::random_hflip(&mut img, 0.5, rng);
        }
        let jitter = ColorJitter { brightness: 0.2, contrast: 0.2, saturation: 0.2, hue: 0.02 };
        jitter.apply(&img, rng)
    }

    /// Transforms a decoded image.
    pub fn transform(&self, img: &RgbImage, rng: &mut StdRng) -> Result<RgbImage, DataError> {
        if self.augment {
            let crop = self.random_crop().apply(img, rng)?;
            self.flip_and_jitter(crop, rng)
        } else {
            // Resize the shorter side to size/0.875 then centre-crop, as torchvision's eval transform.
            let short = ((self.size as f64) / 0.875).round() as usize;
            let resized = transforms::resize_shorter_by(&*trim_long_side(img)?, short, self.resize)?;
            transforms::center_crop(&resized, self.size, self.size)
        }
    }
}

/// Longest side accepted by the evaluation transform, in multiples of the shorter side.
pub const MAX_ASPECT: usize = 4;

/// Centre-crops the long side of an image more elongated than [`MAX_ASPECT`]: the centre crop only keeps
/// a square anyway, and resizing the whole strip (say 1×60000 to 37×2.2M) would take gigabytes.
pub fn trim_long_side(img: &RgbImage) -> Result<std::borrow::Cow<'_, RgbImage>, DataError> {
    let short = img.width.min(img.height).max(1);
    let limit = short * MAX_ASPECT;
    if img.width.max(img.height) <= limit {
        return Ok(std::borrow::Cow::Borrowed(img));
    }
    let (w, h) = (img.width.min(limit), img.height.min(limit));
    Ok(std::borrow::Cow::Owned(transforms::center_crop(img, w, h)?))
}

/// A batch of images and labels as tensors.
#[derive(Debug)]
pub struct ImageBatch {
    /// `[N, 3, H, W]` normalised.
    pub images: Tensor,
    /// `[N]` int64.
    pub labels: Tensor,
    /// Reasons for samples that failed to load.
    pub skipped: Vec<String>,
}

/// Collates loaded images and labels into an [`ImageBatch`].
pub fn collate(items: Vec<(RgbImage, usize)>, norm: Normalization) -> Result<ImageBatch, DataError> {
    let labels: Vec<i64> = items.iter().map(|(_, l)| *l as i64).collect();
    let images: Vec<RgbImage> = items.into_iter().map(|(img, _)| img).collect();
    Ok(ImageBatch {
        images: data::to_tensor(&images, norm.mean, norm.std)?,
        labels: Tensor::from_slice(&labels),
        skipped: Vec::new(),
    })
}

/// Shared, thread-safe handle on a split's samples for loader closures.
pub type SharedSamples = Arc<Vec<data::Sample>>;
