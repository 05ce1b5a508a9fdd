//! Segmentation as a [`Task`] for the shared training loop: augmented image/mask batches, the
//! configured loss, and per-epoch validation (mIoU at the network resolution, the primary metric).

use std::sync::Arc;

use rand::rngs::StdRng;
use tch::{Kind, Tensor, nn::VarStore};
use tlcv_core::{
    Result,
    backbones::Normalization,
    data::{Loader, transforms::ColorJitter},
    run::SkipLog,
    train::{Batches, Metrics, Parallel, StepOutput, Task},
};

use crate::{
    augment::SegAugment,
    config::SegmentConfig,
    data::{SegBatch, SegDataset, SegSample, collate, load_pair},
    loss::SegLoss,
    metrics::SegConfusion,
    model::SegModel,
};

/// The transforms of `cfg`.
pub fn augmenter(cfg: &SegmentConfig) -> SegAugment {
    let d = &cfg.data;
    let on = d.augment;
    let j = d.color_jitter;
    SegAugment {
        size: d.img_size.max(1) as usize,
        scale: if on { (d.min_scale, d.max_scale) } else { (1.0, 1.0) },
        hflip: on && d.hflip,
        jitter: (on && j > 0.0).then_some(ColorJitter { brightness: j, contrast: j, saturation: j, hue: 0.0 }),
        ignore_index: d.ignore_index,
    }
}

/// The loss of `cfg`.
pub fn loss_of(cfg: &SegmentConfig, num_classes: usize) -> std::result::Result<SegLoss, crate::SegmentError> {
    let w: Vec<f64> = crate::config::split_list(&cfg.loss.class_weights)
        .iter()
        .map(|v| {
            v.parse::<f64>()
                .map_err(|_| crate::SegmentError::Invalid(format!("loss.class_weights: {v:?} is not a number")))
        })
        .collect::<std::result::Result<_, _>>()?;
    if !w.is_empty() && w.len() != num_classes {
        return Err(crate::SegmentError::Invalid(format!(
            "loss.class_weights has {} values for {num_classes} classes",
            w.len()
        )));
    }
    Ok(SegLoss {
        ce_weight: cfg.loss.ce_weight,
        dice_weight: cfg.loss.dice_weight,
        class_weights: (!w.is_empty()).then(|| Tensor::from_slice(&w.iter().map(|&v| v as f32).collect::<Vec<_>>())),
        ignore_index: i64::from(cfg.data.ignore_index),
        smooth: cfg.loss.dice_smooth,
    })
}

/// How [`seg_batches`] makes its batches.
#[derive(Debug, Clone)]
pub struct SegBatchPlan {
    /// Resizing and augmentation.
    pub aug: SegAugment,
    /// Training batches: shuffled and augmented.
    pub train: bool,
    /// The backbone's input normalisation.
    pub norm: Normalization,
    /// Samples per batch.
    pub batch: usize,
    /// Seed of the order and of the augmentation.
    pub seed: u64,
    /// Epoch number, which varies both.
    pub epoch: usize,
    /// Larger images are refused (decompression-bomb guard).
    pub max_pixels: u64,
}

/// Batches of `samples` as `plan` says, on the loader's thread; failures go to `skipped`.
pub fn seg_batches(samples: Arc<Vec<SegSample>>, plan: SegBatchPlan, skipped: SkipLog) -> Batches<SegBatch> {
    let SegBatchPlan { aug, train, norm, batch, seed, epoch, max_pixels } = plan;
    let loader = Loader::new(samples.len(), batch).shuffled(train, seed);
    let load = Arc::clone(&samples);
    let iter = loader.iter_epoch(
        epoch,
        move |i, rng: &mut StdRng| {
            let (img, m) = load_pair(&load[i], max_pixels)?;
            if train { aug.train(&img, &m, rng) } else { aug.eval(&img, &m) }
        },
        move |items| collate(items, norm),
    );
    Box::new(iter.filter_map(move |b| {
        for s in &b.skipped {
            samples[s.index].record_skip(&skipped, &s.reason);
        }
        match b.data {
            None => None,
            Some(Ok(batch)) => Some(Ok(batch)),
            Some(Err(e)) => Some(Err(e.into())),
        }
    }))
}

/// Segmentation training state.
#[derive(Debug)]
pub struct SegTask {
    /// The network.
    pub model: SegModel,
    /// Configuration.
    pub cfg: SegmentConfig,
    /// The data.
    pub dataset: SegDataset,
    /// The loss.
    pub loss: SegLoss,
    /// Samples that failed to load during training or validation.
    pub skipped: SkipLog,
    /// The kind training steps compute in: float32, or bfloat16 for mixed precision (float32 weights
    /// cast per layer, float32 logits for the loss and the metrics). Validation uses the model's
    /// `inference_kind`.
    pub compute_kind: Kind,
}

impl SegTask {
    fn batches(&self, samples: &[SegSample], train: bool, epoch: usize) -> Batches<SegBatch> {
        let plan = SegBatchPlan {
            aug: augmenter(&self.cfg),
            train,
            norm: self.model.normalization(),
            batch: self.cfg.train.batch.max(1),
            seed: self.cfg.train.seed,
            epoch,
            max_pixels: self.cfg.data.max_pixels,
        };
        seg_batches(Arc::new(samples.to_vec()), plan, self.skipped.clone())
    }

    fn input(&self, xs: &Tensor, kind: Kind) -> Tensor {
        let xs = xs.to_device(self.model.vs.device()).to_kind(kind);
        if self.cfg.train.channels_last { tlcv_core::freeze::channels_last(&xs) } else { xs }
    }
}

impl Task for SegTask {
    type Batch = SegBatch;

    fn var_store(&self) -> &VarStore {
        &self.model.vs
    }

    fn batches_per_epoch(&self, parallel: &dyn Parallel) -> usize {
        self.dataset.train.len().div_ceil(parallel.world_size().max(1)).div_ceil(self.cfg.train.batch.max(1))
    }

    fn train_batches(&mut self, epoch: usize, parallel: &dyn Parallel) -> Result<Batches<SegBatch>> {
        let order = tlcv_core::train::epoch_shard_order(self.dataset.train.len(), self.cfg.train.seed, epoch, parallel);
        let samples: Vec<SegSample> =
            parallel.shard(&order).into_iter().map(|i| self.dataset.train[i].clone()).collect();
        Ok(self.batches(&samples, true, epoch))
    }

    fn train_step(&mut self, batch: SegBatch, _: &dyn Parallel) -> Result<StepOutput> {
        let xs = self.input(&batch.images, self.compute_kind);
        let ys = batch.masks.to_device(self.model.vs.device());
        let logits = self.model.forward(&xs, true).to_kind(Kind::Float); // [B, 3, H, W] -> [B, C, H, W]
        let (loss, terms) = self.loss.compute(&logits, &ys);
        Ok(StepOutput { loss, terms, samples: ys.size()[0] as usize })
    }

    /// Each rank scores its [`Parallel::eval_items`] (whole batches, so every output is the one a
    /// single process computes) and the confusion matrices and loss sums are added up over ranks: the
    /// same mIoU as one process, exactly.
    fn validate(&mut self, _epoch: usize, parallel: &dyn Parallel) -> Result<Metrics> {
        let mut cm = SegConfusion::new(self.dataset.classes.len(), Some(i64::from(self.cfg.data.ignore_index)))?;
        let (mut loss_sum, mut count) = (0.0, 0usize);
        let val = &self.dataset.val;
        let mine: Vec<SegSample> =
            parallel.eval_items(val.len(), self.cfg.train.batch).into_iter().map(|i| val[i].clone()).collect();
        for batch in self.batches(&mine, false, 0) {
            let batch = batch?;
            let xs = self.input(&batch.images, self.model.inference_kind);
            let ys = batch.masks.to_device(self.model.vs.device());
            let logits = tch::no_grad(|| self.model.forward(&xs, false).to_kind(Kind::Float));
            let n = ys.size()[0] as usize;
            loss_sum += tch::no_grad(|| self.loss.compute(&logits, &ys)).0.double_value(&[]) * n as f64;
            count += n;
            cm.update_tensor(&ys, &logits.argmax(1, false).to_kind(Kind::Int64))?;
        }
        let (mut counts, mut totals) = (cm.counts().to_vec(), [loss_sum, count as f64]);
        parallel.sum_counts(&mut counts, &mut totals)?;
        (loss_sum, count) = (totals[0], totals[1] as usize);
        cm.set_counts(counts)?;
        let s = cm.summary();
        let mut m = Metrics { primary: "miou".into(), ..Default::default() };
        m.values.insert("miou".into(), s.miou);
        m.values.insert("pixel_acc".into(), s.pixel_acc);
        m.values.insert("mean_dice".into(), s.mean_dice);
        m.values.insert("loss".into(), loss_sum / count.max(1) as f64);
        Ok(m)
    }
}
