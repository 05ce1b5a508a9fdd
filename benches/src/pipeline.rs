//! The data pipeline of a classification epoch, as torchvision's `ImageFolder`, `RandomResizedCrop(224)`,
//! `RandomHorizontalFlip`, `ToTensor`, `Normalize` and `DataLoader(batch_size=32)`: decode the full
//! JPEG, crop with scale (0.08, 1) and ratio (3/4, 4/3), resize to 224, flip with p = 0.5, normalise with
//! the ImageNet statistics and stack `[32, 3, 224, 224]` float32.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, anyhow};
use rand::rngs::StdRng;
use tch::Tensor;
use tlcv_core::{
    backbones::Normalization,
    data::{self, DataError, DecodeOptions, Loader, RgbImage, loader::sample_rng, transforms},
};

/// Output side.
pub const SIZE: usize = 224;

/// Decodes and augments one image.
pub fn load_one(path: &std::path::Path, rng: &mut StdRng) -> Result<RgbImage, DataError> {
    // Full resolution (no reduced JPEG decoding), as PIL; only the crop's region is decoded, as classify's
    // training pipeline does.
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let opts = DecodeOptions::default();
    let mut out = transforms::RandomResizedCrop::new(SIZE, SIZE).decode(&bytes, path, &opts, rng)?;
    transforms::random_hflip(&mut out, 0.5, rng);
    Ok(out)
}

/// Stacks images into `[N, 3, 224, 224]` normalised float32.
pub fn collate(images: Vec<RgbImage>) -> Result<Tensor, DataError> {
    let n = Normalization::IMAGENET;
    data::to_tensor(&images, n.mean, n.std)
}

/// One epoch over `paths` on the calling thread (torchvision's `num_workers=0`); returns the batches.
pub fn epoch_sync(paths: &[PathBuf], batch: usize, epoch: usize) -> Result<Vec<Tensor>> {
    let mut out = Vec::new();
    for (b, chunk) in paths.chunks(batch.max(1)).enumerate() {
        let images = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| load_one(p, &mut sample_rng(0, epoch, b * batch + i)))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(collate(images)?);
    }
    Ok(out)
}

/// One epoch through the prefetching [`Loader`] (decoding on rayon's pool, whose size plays the part of
/// `num_workers`); returns the batches.
pub fn epoch_loader(paths: &Arc<Vec<PathBuf>>, batch: usize, epoch: usize) -> Result<Vec<Tensor>> {
    let loader = Loader::new(paths.len(), batch);
    let p = Arc::clone(paths);
    let iter = loader.iter_epoch(epoch, move |i, rng: &mut StdRng| load_one(&p[i], rng), collate);
    let mut out = Vec::new();
    for b in iter {
        if let Some(s) = b.skipped.first() {
            return Err(anyhow!("{}", s.reason));
        }
        match b.data {
            Some(t) => out.push(t?),
            None => return Err(anyhow!("empty batch")),
        }
    }
    Ok(out)
}
