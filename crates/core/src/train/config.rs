//! The training configuration every task shares (`[train]` in `configs/<task>.toml`).

use serde::{Deserialize, Serialize};

use super::{
    optim::OptimizerKind,
    precision::{Convs, Precision, PrecisionPlan, TaskKind, native_bf16},
    schedule::ScheduleKind,
};
use tch::Device;

use crate::device::DeviceChoice;
use crate::freeze::Strategy;

/// How to train: optimiser, schedule, stopping, numerics, checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Number of epochs; 0 = scale with the data set: enough epochs for about 1500 optimiser steps,
    /// 10 to 300 (`train::budget`). `time` refits it.
    pub epochs: usize,
    /// Images per mini-batch.
    pub batch: usize,
    /// Optimiser: "adamw" or "sgd".
    pub optimizer: OptimizerKind,
    /// Learning rate of the head (parameter group 1).
    pub lr: f64,
    /// The backbone's learning rate is `lr * backbone_lr_scale` (lower for fine-tuning; scratch
    /// ignores it and trains the backbone at `lr`).
    pub backbone_lr_scale: f64,
    /// Weight decay (decoupled for AdamW, L2 for SGD).
    pub weight_decay: f64,
    /// SGD momentum, or AdamW's beta1.
    pub momentum: f64,
    /// Schedule after warmup: "cosine", "step" or "constant".
    pub schedule: ScheduleKind,
    /// Linear warmup length in epochs (fractions allowed).
    pub warmup_epochs: f64,
    /// Epochs between decays for the step schedule.
    pub step_size: usize,
    /// Decay factor for the step schedule.
    pub gamma: f64,
    /// Final learning rate as a fraction of the initial one (cosine).
    pub min_lr_ratio: f64,
    /// Clip the global gradient norm to this value (0 = off).
    pub grad_clip: f64,
    /// Stop when the validation metric has not improved for this many epochs (0 = off); the best
    /// checkpoint is kept either way.
    pub patience: usize,
    /// Wall-clock budget of the training loop in minutes (0 = none), as Ultralytics' `time=`: after every
    /// epoch the epoch count, and the learning-rate schedule with it, is refitted to end within it.
    pub time: f64,
    /// "auto" (default), "fp32" or "bf16"; see [`Precision::resolve`].
    pub precision: Precision,
    /// What `precision` resolved to, written by the run into its `config.toml` (e.g. `inference =
    /// "bf16"`, `training = "fp32"` for `auto` on a CPU with AVX-512 BF16). Ignored on input: every
    /// run resolves `precision` again on its own device. Always serialised (as JSON `null` when unset)
    /// so that the layered loader knows the key and a run's `config.toml` reads back.
    pub precision_resolved: Option<PrecisionPlan>,
    /// Lay out convolution weights and inputs channels-last (faster with oneDNN on CPU).
    pub channels_last: bool,
    /// Seed of every random choice (data order, augmentation, initialisation, dropout).
    pub seed: u64,
    /// "cpu", "cuda" or "auto".
    pub device: DeviceChoice,
    /// Unfreeze one more backbone stage every this many epochs (0 = never).
    pub unfreeze_every: usize,
    /// On a non-finite loss, retry the epoch once with the learning rate divided by 10.
    pub retry_lower_lr: bool,
    /// Batch norm in the backbone layers that train: "train" (batch statistics, running ones updated)
    /// or "frozen" (running statistics, as in inference, while the weights still train). Classification.
    pub bn: BnMode,
    /// LP-FT (Kumar et al., ICLR 2022): train the head alone this many epochs first (on the feature
    /// cache), then the backbone layers too for `epochs` more, at `lr`. 0 = off. Classification.
    pub head_epochs: usize,
    /// Layer-wise learning-rate decay (Clark et al. 2020, ELECTRA; BEiT): backbone stage `i` of `n`
    /// trains at `lr * backbone_lr_scale * layer_decay^(n - 1 - i)`, so the deepest stage gets the
    /// backbone rate and earlier ones less. 1 = off. Classification.
    pub layer_decay: f64,
    /// With several processes: batch norm uses the statistics of the global batch (every rank's
    /// samples, as `torch.nn.SyncBatchNorm`) instead of each rank's own.
    pub sync_bn: bool,
    /// With several processes: seconds a rendezvous or a collective waits for the other ranks before
    /// the run stops with an error naming the lost rank.
    pub dist_timeout: f64,
}

/// How batch norm behaves in backbone layers that train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BnMode {
    /// Normalise with batch statistics and update the running ones (PyTorch's `model.train()`).
    #[default]
    Train,
    /// Normalise with the running (pretrained) statistics and leave them alone while the weights
    /// train: Keras' advice for fine-tuning (`base_model(x, training=False)`), robust to small batches
    /// and a shift between the pretraining data and yours.
    Frozen,
}

impl TrainConfig {
    /// This configuration as `strategy` trains with it: a random backbone (scratch) trains at the full
    /// rate, whatever `backbone_lr_scale` says (see [`Strategy::backbone_lr_scale`]).
    pub fn for_strategy(&self, strategy: Strategy) -> TrainConfig {
        TrainConfig { backbone_lr_scale: strategy.backbone_lr_scale(self.backbone_lr_scale), ..self.clone() }
    }

    /// Resolves `precision` for `task` on `device` ([`Precision::resolve`]) and records the result in
    /// `precision_resolved`, for the run's `config.toml`. Prints a note when bf16 was asked for but
    /// cannot pay off here.
    pub fn resolve_precision(&mut self, device: Device, task: TaskKind, convs: Convs) -> PrecisionPlan {
        let plan = self.precision.resolve(device, task, convs);
        if self.precision == Precision::Bf16 && !native_bf16(device) {
            eprintln!(
                "note: precision = \"bf16\" but this CPU has no native bf16 (AVX-512 BF16 or AMX): using float32"
            );
        }
        self.precision_resolved = Some(plan);
        plan
    }

    /// The start of every task's training of a network of `convs`: sizes the thread pools, resolves the
    /// device and `precision` (recorded as by [`TrainConfig::resolve_precision`]) and seeds libtorch.
    pub fn prepare(&mut self, task: TaskKind, convs: Convs) -> crate::Result<(Device, PrecisionPlan)> {
        crate::run::configure_threads();
        let device = self.device.resolve()?;
        let plan = self.resolve_precision(device, task, convs);
        tch::manual_seed(self.seed as i64);
        Ok((device, plan))
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch: 32,
            optimizer: OptimizerKind::Adamw,
            lr: 1e-3,
            backbone_lr_scale: 0.1,
            weight_decay: 1e-4,
            momentum: 0.9,
            schedule: ScheduleKind::Cosine,
            warmup_epochs: 1.0,
            step_size: 10,
            gamma: 0.1,
            min_lr_ratio: 0.01,
            grad_clip: 10.0,
            patience: 10,
            time: 0.0,
            precision: Precision::Auto,
            precision_resolved: None,
            channels_last: true,
            seed: 0,
            device: DeviceChoice::Cpu,
            unfreeze_every: 0,
            retry_lower_lr: false,
            bn: BnMode::Train,
            head_epochs: 0,
            layer_decay: 1.0,
            sync_bn: false,
            dist_timeout: 300.0,
        }
    }
}
