//! Classification as a [`Task`] for the shared training loop, in two modes: on images (fine-tune,
//! scratch, or feature-extract without the cache) or on a feature cache (frozen backbone: its features
//! are computed once per image and augmented view, and epochs only train the head).

use std::sync::Arc;

use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use tch::{Kind, Reduction, Tensor, nn::VarStore};
use tlcv_core::{
    Result,
    data::{ClassDataset, ImageCache, Loader, Sample},
    metrics::ClassificationAccumulator,
    run::SkipLog,
    train::{Batches, Metrics, Parallel, StepOutput, Task},
};

use crate::{
    config::ClassifyConfig,
    data::{IMAGE_CACHE_BUDGET, ImageBatch, Pipeline, collate},
    model::Model,
};

/// Pooled features of a split, computed once.
#[derive(Debug)]
pub struct CachedSplit {
    /// `[N, D]` float32.
    pub features: Tensor,
    /// `[N]` int64.
    pub labels: Tensor,
}

/// The data a task trains on.
#[derive(Debug)]
pub enum Mode {
    /// Decoded, augmented images through the whole network.
    Images,
    /// The head on cached features (`train` holds every augmented view).
    Cached { train: CachedSplit, val: CachedSplit },
}

/// Classification training state.
#[derive(Debug)]
pub struct ClassifyTask {
    /// The network.
    pub model: Model,
    /// Configuration.
    pub cfg: ClassifyConfig,
    /// Samples and class names.
    pub dataset: ClassDataset,
    /// Images or features.
    pub mode: Mode,
    /// Per-class loss weights (`model.class_weights`).
    pub class_weights: Option<Tensor>,
    /// Every sample that failed to load, with its reason.
    pub skipped: SkipLog,
    /// Decoded images kept across epochs when `data.cache_images` is set (image mode only).
    pub image_cache: Option<Arc<ImageCache>>,
}

impl ClassifyTask {
    /// A task in `mode` over `dataset`.
    pub fn new(model: Model, cfg: ClassifyConfig, dataset: ClassDataset, mode: Mode) -> Self {
        let class_weights = cfg.model.class_weights.then(|| inverse_frequency(&dataset));
        let image_cache = (cfg.data.cache_images && matches!(mode, Mode::Images))
            .then(|| Arc::new(ImageCache::new(IMAGE_CACHE_BUDGET)));
        Self { model, cfg, dataset, mode, class_weights, skipped: SkipLog::default(), image_cache }
    }

    fn loss(&self, logits: &Tensor, labels: &Tensor) -> Tensor {
        logits.cross_entropy_loss::<&Tensor>(
            labels,
            self.class_weights.as_ref(),
            Reduction::Mean,
            -100,
            self.cfg.model.label_smoothing,
        )
    }
}

fn inverse_frequency(dataset: &ClassDataset) -> Tensor {
    let mut counts = vec![0f64; dataset.classes.len()];
    for s in &dataset.train {
        counts[s.label] += 1.0;
    }
    let n = dataset.train.len() as f64 / counts.len().max(1) as f64;
    let weights: Vec<f32> = counts.iter().map(|&c| if c > 0.0 { (n / c) as f32 } else { 0.0 }).collect();
    Tensor::from_slice(&weights)
}

/// How [`image_batches`] loads an epoch.
pub struct BatchPlan {
    /// Decoding, resizing and augmentation.
    pub pipeline: Pipeline,
    /// The backbone's input normalisation.
    pub norm: tlcv_core::backbones::Normalization,
    /// Images per batch.
    pub batch: usize,
    /// Whether the order is shuffled per epoch.
    pub shuffle: bool,
    /// Seed of the order and of the augmentation.
    pub seed: u64,
    /// Epoch (or augmented view) number, which varies both.
    pub epoch: usize,
}

/// Image batches of `samples` as `plan` says, on the loader's background thread; failed samples are
/// recorded in `skipped`.
pub fn image_batches(samples: Arc<Vec<Sample>>, plan: BatchPlan, skipped: SkipLog) -> Batches<ImageBatch> {
    let BatchPlan { pipeline, norm, batch, shuffle, seed, epoch } = plan;
    let loader = Loader::new(samples.len(), batch).shuffled(shuffle, seed);
    let load_samples = Arc::clone(&samples);
    let iter = loader.iter_epoch(
        epoch,
        move |i, rng: &mut StdRng| {
            let s = &load_samples[i];
            pipeline.load(&s.path, rng).map(|img| (img, s.label))
        },
        move |items| collate(items, norm),
    );
    Box::new(iter.filter_map(move |b| {
        for s in &b.skipped {
            skipped.record(&samples[s.index].path, &s.reason);
        }
        match b.data {
            None => None,
            Some(Ok(batch)) => Some(Ok(batch)),
            Some(Err(e)) => Some(Err(e.into())),
        }
    }))
}

impl Task for ClassifyTask {
    type Batch = ImageBatch;

    /// The unfreezing schedule: every `train.unfreeze_every` epochs one more backbone stage trains
    /// (image mode only: cached features cannot change).
    fn on_epoch_start(&mut self, epoch: usize, _epochs: usize) -> Result<()> {
        let every = self.cfg.train.unfreeze_every;
        if every == 0 || !matches!(self.mode, Mode::Images) {
            return Ok(());
        }
        let stages = self.model.net.stages().len();
        let initial = self.cfg.model.strategy.trainable_layers(self.cfg.model.trainable_layers, stages);
        let wanted = (initial + epoch / every).min(stages);
        if wanted != self.model.trainable_layers() {
            self.model.set_trainable_layers(wanted).map_err(|e| tlcv_core::Error::Invalid(e.to_string()))?;
            eprintln!("epoch {}: {} backbone stage(s) now train ({})", epoch + 1, wanted, self.model.freeze);
        }
        Ok(())
    }

    fn var_store(&self) -> &VarStore {
        &self.model.vs
    }

    /// Layer-wise decay: stage `i` of `n` gets `layer_decay^(n - 1 - i)`.
    fn lr_multiplier(&self, name: &str) -> f64 {
        let decay = self.cfg.train.layer_decay;
        if decay == 1.0 {
            return 1.0;
        }
        let stages = &self.model.net.stages().prefixes;
        let stage = stages.iter().position(|ps| ps.iter().any(|p| tlcv_core::backbones::has_prefix(name, p)));
        stage.map_or(1.0, |i| decay.powi((stages.len() - 1 - i) as i32))
    }

    fn batches_per_epoch(&self, parallel: &dyn Parallel) -> usize {
        let n = match &self.mode {
            Mode::Images => self.dataset.train.len(),
            Mode::Cached { train, .. } => train.labels.size()[0] as usize,
        };
        let per_rank = n.div_ceil(parallel.world_size().max(1));
        per_rank.div_ceil(self.cfg.train.batch.max(1))
    }

    fn train_batches(&mut self, epoch: usize, parallel: &dyn Parallel) -> Result<Batches<ImageBatch>> {
        let batch = self.cfg.train.batch.max(1);
        match &self.mode {
            Mode::Images => {
                let n = self.dataset.train.len();
                // One process shuffles in the loader; ranks shard the epoch's shuffled order
                // (DistributedSampler's rule), so that their batches together are one process's.
                let several = parallel.world_size() > 1;
                let order =
                    parallel.shard(&tlcv_core::train::epoch_shard_order(n, self.cfg.train.seed, epoch, parallel));
                let samples: Vec<Sample> = order.into_iter().map(|i| self.dataset.train[i].clone()).collect();
                let pipeline = Pipeline::new(&self.cfg.data, true).with_cache(self.image_cache.clone());
                Ok(image_batches(
                    Arc::new(samples),
                    BatchPlan {
                        pipeline,
                        norm: self.model.normalization(),
                        batch,
                        shuffle: !several,
                        seed: self.cfg.train.seed,
                        epoch,
                    },
                    self.skipped.clone(),
                ))
            }
            Mode::Cached { train, .. } => {
                let n = train.labels.size()[0] as usize;
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut StdRng::seed_from_u64(self.cfg.train.seed ^ (epoch as u64).wrapping_mul(0x9E37)));
                let order = parallel.shard(&order);
                let (features, labels) = (train.features.shallow_clone(), train.labels.shallow_clone());
                let batches: Vec<Result<ImageBatch>> = order
                    .chunks(batch)
                    .map(|chunk| {
                        let idx = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>());
                        Ok(ImageBatch {
                            images: features.index_select(0, &idx), // [B, D] features in this mode
                            labels: labels.index_select(0, &idx),
                            skipped: Vec::new(),
                        })
                    })
                    .collect();
                Ok(Box::new(batches.into_iter()))
            }
        }
    }

    fn train_step(&mut self, batch: ImageBatch, _: &dyn Parallel) -> Result<StepOutput> {
        let device = self.model.vs.device();
        let xs = batch.images.to_device(device);
        let ys = batch.labels.to_device(device);
        let logits = match &self.mode {
            Mode::Images => self.model.forward(&xs, true), // [B, 3, H, W] -> [B, C]
            Mode::Cached { .. } => self.model.head(&xs, true), // [B, D] -> [B, C]
        };
        let loss = self.loss(&logits, &ys);
        let value = loss.double_value(&[]);
        Ok(StepOutput { loss, terms: vec![("loss".into(), value)], samples: ys.size()[0] as usize })
    }

    /// On images each rank scores its share of whole batches ([`Parallel::eval_items`]) and the
    /// counts are summed; cached features are scored whole on every rank (one matrix product).
    fn validate(&mut self, _epoch: usize, parallel: &dyn Parallel) -> Result<Metrics> {
        let mut acc = ClassificationAccumulator::new(self.dataset.classes.len());
        let mut loss_sum = 0.0;
        let mut count = 0usize;
        let device = self.model.vs.device();
        let mut consume = |logits: &Tensor, labels: &Tensor| -> Result<()> {
            let n = labels.size()[0] as usize;
            loss_sum += self.loss(logits, labels).double_value(&[]) * n as f64;
            count += n;
            acc.add_batch(logits, labels)
        };
        match &self.mode {
            Mode::Cached { val, .. } => {
                let logits = tch::no_grad(|| self.model.head(&val.features.to_device(device), false));
                consume(&logits, &val.labels.to_device(device))?;
            }
            Mode::Images => {
                let pipeline = Pipeline::new(&self.cfg.data, false).with_cache(self.image_cache.clone());
                let (val, batch) = (&self.dataset.val, self.cfg.train.batch.max(1));
                let mine: Vec<Sample> =
                    parallel.eval_items(val.len(), batch).into_iter().map(|i| val[i].clone()).collect();
                let norm = self.model.normalization();
                let plan = BatchPlan { pipeline, norm, batch, shuffle: false, seed: 0, epoch: 0 };
                for batch in image_batches(Arc::new(mine), plan, self.skipped.clone()) {
                    let batch = batch?;
                    let logits = tch::no_grad(|| self.model.forward(&batch.images.to_device(device), false));
                    consume(&logits, &batch.labels.to_device(device))?;
                }
                let (mut counts, mut totals) = (acc.counts(), [loss_sum, count as f64]);
                parallel.sum_counts(&mut counts, &mut totals)?;
                (loss_sum, count) = (totals[0], totals[1] as usize);
                acc.set_counts(&counts)?;
            }
        }
        if count == 0 {
            return Err(tlcv_core::Error::Invalid(format!(
                "none of the {} validation images could be loaded; check the data",
                self.dataset.val.len()
            )));
        }
        let m = acc.finish(&self.dataset.classes);
        let mut metrics = Metrics { primary: "top1".into(), ..Default::default() };
        metrics.values.insert("top1".into(), m.top1);
        metrics.values.insert("top5".into(), m.top5);
        metrics.values.insert("f1_macro".into(), m.f1_macro);
        metrics.values.insert("loss".into(), loss_sum / count.max(1) as f64);
        Ok(metrics)
    }
}

/// Computes the pooled features of `samples` (eval mode, no gradients) for `views` passes: view 0 is the
/// plain evaluation transform, later views use the training augmentation with their own seeds.
pub fn cache_features(
    model: &Model,
    cfg: &ClassifyConfig,
    (samples, views): (&[Sample], usize),
    skipped: &SkipLog,
    progress: &tlcv_core::progress::Progress,
) -> Result<CachedSplit> {
    let device = model.vs.device();
    let mut feats = Vec::new();
    let mut labels = Vec::new();
    let shared = Arc::new(samples.to_vec());
    for view in 0..views.max(1) {
        let pipeline = Pipeline::new(&cfg.data, view > 0);
        let batches = image_batches(
            Arc::clone(&shared),
            BatchPlan {
                pipeline,
                norm: model.normalization(),
                batch: 64,
                shuffle: false,
                seed: cfg.train.seed,
                epoch: view,
            },
            skipped.clone(),
        );
        for batch in batches {
            let batch = batch?;
            let xs = batch.images.to_device(device);
            let f = tch::no_grad(|| model.features(&xs, false)); // [B, 3, H, W] -> [B, D]
            progress.inc(batch.labels.size()[0] as u64);
            feats.push(f.to_device(tch::Device::Cpu));
            labels.push(batch.labels);
        }
    }
    if feats.is_empty() {
        let example = skipped.reasons().into_iter().next().unwrap_or_default();
        return Err(tlcv_core::Error::Invalid(format!(
            "none of the {} images of the split could be loaded (e.g. {example})",
            samples.len()
        )));
    }
    Ok(CachedSplit { features: Tensor::cat(&feats, 0).to_kind(Kind::Float), labels: Tensor::cat(&labels, 0) })
}
