//! Detection as a [`Task`] for the shared training loop: augmented batches from the prefetching
//! loader (decoded images cached in memory), the family's loss per step, and COCO mAP on the
//! validation split per epoch. Mosaic is switched off for the last `augment.close_mosaic` epochs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::Rng;
use tch::{Kind, Tensor, nn::VarStore};
use tlcv_core::{
    Result as CoreResult,
    backbones::Normalization,
    data::{self, DataError, DecodeOptions, ImageCache, Loader, RgbImage},
    run::SkipLog,
    train::{Batches, Metrics, Parallel, StepOutput, Task},
};

use crate::augment::{Sample, train_transform};
use crate::config::{AugmentConfig, DetectConfig, Recipe};
use crate::data::{DetImage, Object};
use crate::eval::sharded::evaluate_images_sharded;
use crate::evaluate::flat_metrics;
use crate::family::LossScope;
use crate::model::Detector;
use crate::model_io::Targets;
use crate::postprocess::PostprocessConfig;

/// One training batch.
#[derive(Debug)]
pub struct DetBatch {
    /// `[B, 3, S, S]` normalised images.
    pub images: Tensor,
    /// Padded ground truth in input pixels.
    pub targets: Targets,
}

/// Stacks samples into a batch: images `[B, 3, S, S]`, boxes padded to the most objects in the batch.
pub fn collate(items: Vec<Sample>, norm: Normalization) -> Result<DetBatch, DataError> {
    let b = items.len() as i64;
    let m = items.iter().map(|s| s.objects.len()).max().unwrap_or(0);
    let mut boxes = vec![0f32; items.len() * m * 4];
    let mut labels = vec![0i64; items.len() * m];
    let mut mask = vec![false; items.len() * m];
    for (i, s) in items.iter().enumerate() {
        for (j, o) in s.objects.iter().enumerate() {
            let k = i * m + j;
            for c in 0..4 {
                boxes[k * 4 + c] = o.bbox[c] as f32;
            }
            labels[k] = o.class as i64;
            mask[k] = true;
        }
    }
    let images: Vec<RgbImage> = items.into_iter().map(|s| s.image).collect();
    let m = m as i64;
    Ok(DetBatch {
        images: data::to_tensor(&images, norm.mean, norm.std)?,
        targets: Targets {
            boxes: Tensor::from_slice(&boxes).view([b, m, 4]),
            labels: Tensor::from_slice(&labels).view([b, m]),
            mask: Tensor::from_slice(&mask).view([b, m]),
        },
    })
}

/// Detection training state.
#[derive(Debug)]
pub struct DetectTask {
    /// The network.
    pub model: Detector,
    /// Configuration.
    pub cfg: DetectConfig,
    /// Class names.
    pub names: Vec<String>,
    /// Training images.
    pub train: Arc<Vec<DetImage>>,
    /// Validation images.
    pub val: Vec<DetImage>,
    /// Decoded training images.
    pub cache: Arc<ImageCache>,
    /// Whether mosaic is on this epoch.
    pub mosaic: Arc<AtomicBool>,
    /// Every training image that failed to load, with its reason.
    pub skipped: SkipLog,
    epochs: usize,
}

impl DetectTask {
    /// A task over the given splits.
    pub fn new(
        model: Detector,
        cfg: DetectConfig,
        names: Vec<String>,
        train: Vec<DetImage>,
        val: Vec<DetImage>,
    ) -> Self {
        let cache = Arc::new(ImageCache::new(cfg.data.cache_mib << 20));
        let epochs = cfg.train.epochs;
        Self {
            model,
            cfg,
            names,
            train: Arc::new(train),
            val,
            cache,
            mosaic: Arc::new(AtomicBool::new(true)),
            skipped: SkipLog::default(),
            epochs,
        }
    }

    /// The evaluation thresholds of the configuration.
    pub fn eval_postprocess(cfg: &DetectConfig) -> PostprocessConfig {
        PostprocessConfig { conf: cfg.eval.conf, iou: cfg.eval.iou, max_det: cfg.eval.max_det, max_candidates: 3000 }
    }
}

/// SSD's recipe ([`crate::ssd::augment::SsdAugment`]), then a letterbox to `size`, a random flip and
/// box clean-up.
fn ssd_transform(
    img: &RgbImage,
    objects: &[Object],
    size: usize,
    aug: &AugmentConfig,
    rng: &mut impl Rng,
) -> crate::error::Result<Sample> {
    use crate::ssd::augment::{BoxedImage, SsdAugment};
    let boxed = BoxedImage {
        image: img.clone(),
        boxes: objects.iter().map(|o| o.bbox).collect(),
        labels: objects.iter().map(|o| o.class as i64).collect(),
    };
    let out = SsdAugment::default().apply(boxed, rng)?;
    let objects: Vec<Object> =
        out.boxes.iter().zip(&out.labels).map(|(b, &l)| Object { class: l as usize, bbox: *b }).collect();
    // Letterboxed like evaluation and prediction, so both see the same geometry.
    let (mut sample, _) = crate::augment::letterbox(&out.image, &objects, size)?;
    if aug.fliplr > 0.0 && rng.gen_bool(aug.fliplr.clamp(0.0, 1.0)) {
        sample = crate::augment::hflip(&sample);
    }
    crate::augment::finish_boxes(&mut sample, aug.min_box_side, aug.min_visible);
    Ok(sample)
}

/// Decodes (through the cache) one image, checking its size against the index.
fn decode(cache: &ImageCache, im: &DetImage, max_pixels: usize) -> Result<Arc<RgbImage>, DataError> {
    let img = cache
        .get_or_load(&im.path, || data::decode_file(&im.path, &DecodeOptions { max_pixels, target_size: None }))?;
    if img.width != im.width as usize || img.height != im.height as usize {
        return Err(DataError::Dataset {
            path: im.path.clone(),
            reason: format!("decoded {}x{} but the labels say {}x{}", img.width, img.height, im.width, im.height),
        });
    }
    Ok(img)
}

impl Task for DetectTask {
    type Batch = DetBatch;

    fn var_store(&self) -> &VarStore {
        &self.model.vs
    }

    fn on_epoch_start(&mut self, epoch: usize, epochs: usize) -> CoreResult<()> {
        self.epochs = epochs;
        let on =
            self.cfg.augment.enabled && self.cfg.augment.mosaic > 0.0 && epoch + self.cfg.augment.close_mosaic < epochs;
        let was = self.mosaic.swap(on, Ordering::SeqCst);
        if was && !on && epoch > 0 {
            eprintln!("epoch {}: mosaic off for the last {} epoch(s)", epoch + 1, epochs - epoch);
        }
        Ok(())
    }

    fn batches_per_epoch(&self, parallel: &dyn Parallel) -> usize {
        let per_rank = self.train.len().div_ceil(parallel.world_size().max(1));
        per_rank.div_ceil(self.cfg.train.batch.max(1))
    }

    fn train_batches(&mut self, epoch: usize, parallel: &dyn Parallel) -> CoreResult<Batches<DetBatch>> {
        let order = tlcv_core::train::epoch_shard_order(self.train.len(), self.cfg.train.seed, epoch, parallel);
        let shard = Arc::new(parallel.shard(&order));
        let (skipped, images, order) = (self.skipped.clone(), Arc::clone(&self.train), Arc::clone(&shard));
        let loader = Loader::new(shard.len(), self.cfg.train.batch.max(1)).shuffled(true, self.cfg.train.seed);
        let (train, cache, aug) = (Arc::clone(&self.train), Arc::clone(&self.cache), self.cfg.augment.clone());
        let mosaic = self.mosaic.load(Ordering::SeqCst);
        let ssd_recipe = aug.recipe.resolve(self.cfg.model.family) == Recipe::Ssd;
        let size = self.model.img_size as usize;
        let max_pixels = self.cfg.data.max_pixels as usize;
        let norm = self.model.normalization();
        let iter = loader.iter_epoch(
            epoch,
            move |i, rng| {
                let im = &train[shard[i]];
                let img = decode(&cache, im, max_pixels)?;
                let out = if !aug.enabled {
                    crate::augment::letterbox(&img, &im.objects, size).map(|(s, _)| s)
                } else if ssd_recipe {
                    ssd_transform(&img, &im.objects, size, &aug, rng)
                } else if mosaic && train.len() >= 4 && rng.gen_bool(aug.mosaic.clamp(0.0, 1.0)) {
                    // A partner that cannot be decoded must not cost this image its turn: it is reported
                    // when it comes up as the main image, and here this one falls back to no mosaic.
                    let others: Vec<(Arc<RgbImage>, &[Object])> = (0..3)
                        .map(|_| rng.gen_range(0..train.len()))
                        .filter_map(|j| {
                            decode(&cache, &train[j], max_pixels).ok().map(|d| (d, train[j].objects.as_slice()))
                        })
                        .collect();
                    if let [a, b, c] = others.as_slice() {
                        let o = [(&*a.0, a.1), (&*b.0, b.1), (&*c.0, c.1)];
                        train_transform((&img, &im.objects), Some(o), size, &aug, rng)
                    } else {
                        train_transform((&img, &im.objects), None, size, &aug, rng)
                    }
                } else {
                    train_transform((&img, &im.objects), None, size, &aug, rng)
                };
                out.map_err(|e| DataError::Other(format!("{}: {e}", im.path.display())))
            },
            move |items| collate(items, norm),
        );
        Ok(Box::new(iter.filter_map(move |b| {
            for s in &b.skipped {
                skipped.record(&images[order[s.index]].path, &s.reason);
            }
            match b.data {
                None => None,
                Some(Ok(batch)) => Some(Ok(batch)),
                Some(Err(e)) => Some(Err(e.into())),
            }
        })))
    }

    /// The loss is normalised over every rank's batch (see [`LossScope`]).
    fn train_step(&mut self, batch: DetBatch, parallel: &dyn Parallel) -> CoreResult<StepOutput> {
        let device = self.model.vs.device();
        let xs = batch.images.to_device(device); // [B, 3, S, S]
        let targets = batch.targets.to_device(device);
        let n = xs.size()[0] as usize;
        let out = self.model.loss(&xs, &targets, LossScope::ranks(parallel))?;
        let mut terms = vec![("loss".to_string(), out.terms.iter().map(|(_, v)| v).sum())];
        terms.extend(out.terms);
        Ok(StepOutput { loss: out.total.to_kind(Kind::Float), terms, samples: n })
    }

    /// Split over the ranks by whole batches, scored on every rank from all detections: see
    /// [`crate::eval::sharded`].
    fn validate(&mut self, epoch: usize, parallel: &dyn Parallel) -> CoreResult<Metrics> {
        let mut metrics = Metrics { primary: "fitness".into(), ..Default::default() };
        let every = self.cfg.eval.val_every.max(1);
        let last_ones = epoch + 3 >= self.epochs;
        if !(epoch % every == every - 1 || last_ones) || self.val.is_empty() {
            return Ok(metrics);
        }
        let pp = Self::eval_postprocess(&self.cfg);
        let batch = self.cfg.train.batch.max(1) * 2;
        let ev = evaluate_images_sharded(&self.model, (&self.val, &self.names), &pp, batch, parallel)?;
        let flat = flat_metrics(&ev);
        for key in ["map", "map50", "map75", "precision", "recall"] {
            if let Some(v) = flat.get(key) {
                metrics.values.insert(key.to_string(), v.max(0.0));
            }
        }
        let (m50, m) = (ev.summary.map50.max(0.0), ev.summary.map.max(0.0));
        metrics.values.insert("fitness".into(), 0.1 * m50 + 0.9 * m);
        Ok(metrics)
    }
}
