//! The detector: a core backbone plus one family's neck, head and loss ([`DetectorFamily`]), in one
//! `VarStore` (backbone variables in optimiser group 0, everything after it in group 1).
//! `model.family` picks the family ([`crate::family::Family`]); every family trains, predicts and
//! evaluates through the same [`Detector`] methods.

use tch::{Device, Kind, Tensor, nn};
use tlcv_core::{
    backbones::Normalization,
    freeze::{self, FreezeSummary, Strategy, channels_last, to_channels_last},
    train::PrecisionPlan,
};

use tlcv_core::weights::{self, WeightsSource};

use crate::config::{DetectConfig, Family};
use crate::error::{DetectError, Result};
use crate::family::{self, BuildContext, DetectorFamily, LossScope, StepLosses};
use crate::model_io::Targets;
use crate::postprocess::{Detection, PostprocessConfig};

/// A detector ready to train or predict.
#[derive(Debug)]
pub struct Detector {
    /// Every variable.
    pub vs: nn::VarStore,
    /// Backbone, neck, head and loss.
    pub net: Box<dyn DetectorFamily>,
    /// The family.
    pub family: Family,
    /// Number of classes.
    pub num_classes: i64,
    /// Square input side.
    pub img_size: i64,
    /// What freezing did.
    pub freeze: FreezeSummary,
    /// Inputs are laid out channels-last.
    pub channels_last: bool,
    normalization: Normalization,
    /// The kind the backbone computes in while training (see [`Detector::set_compute_kind`]).
    compute_kind: Kind,
    /// The same for predictions (validation, evaluation, `predict`).
    infer_kind: Kind,
}

impl Detector {
    /// Builds the detector for `num_classes` on `device`, loads the backbone weights and freezes per
    /// the strategy.
    pub fn build(cfg: &DetectConfig, num_classes: i64, device: Device) -> Result<Self> {
        let m = &cfg.model;
        let arch = m.backbone;
        family::check_input_size(cfg.data.img_size)?;
        if m.weights.is_none() && m.strategy != Strategy::Scratch {
            return Err(DetectError::Invalid(format!(
                "strategy `{}` needs pretrained weights, but model.weights = \"none\" (use --strategy scratch)",
                m.strategy
            )));
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let mut net = (m.family.builder())(&BuildContext { root: &root, arch, num_classes, cfg })?;
        if !m.weights.is_none()
            && !net.load_pretrained(&vs, m)?
            && let Some(file) = m.weights.resolve(arch)?
        {
            weights::load_backbone(&vs, arch, &file, net.backbone_prefix())?;
        }
        let stages = net.backbone().stages().clone();
        let normalization = net.backbone().normalization();
        let trainable = m.strategy.trainable_layers(net.trainable_layers(m), stages.len());
        let freeze = freeze::apply_freeze(&vs, &stages, trainable, net.head_prefixes())?;
        net.set_frozen_stages(freeze.frozen_stages);
        let channels_last = cfg.train.channels_last;
        if channels_last {
            to_channels_last(&vs);
        }
        Ok(Self {
            vs,
            net,
            family: m.family,
            num_classes,
            img_size: cfg.data.img_size,
            freeze,
            channels_last,
            normalization,
            compute_kind: Kind::Float,
            infer_kind: Kind::Float,
        })
    }

    /// The detector of `cfg` with random weights and nothing frozen, on `cfg.train.device`, to load a
    /// trained run's weights into.
    pub fn untrained(cfg: &DetectConfig, num_classes: i64) -> Result<Self> {
        let mut cfg = cfg.clone();
        cfg.model.weights = WeightsSource::None;
        cfg.model.strategy = Strategy::Scratch;
        Self::build(&cfg, num_classes, cfg.train.device.resolve()?)
    }

    /// Runs the backbone in `kind`: float32, or bfloat16 for mixed precision, where inputs are cast to
    /// bf16, float32 weights are cast per layer (`tlcv_core::backbones::layers::autocast`, so that their
    /// gradients stay float32) and the backbone's maps come back as float32 for the neck, heads and losses.
    /// Training and predictions alike; [`Detector::set_precision`] sets them apart.
    pub fn set_compute_kind(&mut self, kind: Kind) {
        self.compute_kind = kind;
        self.infer_kind = kind;
    }

    /// Trains in `plan.training` and predicts in `plan.inference`.
    pub fn set_precision(&mut self, plan: &PrecisionPlan) {
        self.compute_kind = plan.training_kind();
        self.infer_kind = plan.inference_kind();
    }

    /// Input normalisation.
    pub fn normalization(&self) -> Normalization {
        self.normalization
    }

    fn layout(&self, xs: &Tensor, kind: Kind) -> Tensor {
        let xs = xs.to_kind(kind);
        if self.channels_last { channels_last(&xs) } else { xs }
    }

    /// Training losses of a batch `[N, 3, S, S]` (normalised) against padded targets (input pixels),
    /// normalised over `scope` ([`LossScope::SINGLE`] outside data-parallel training).
    pub fn loss(&self, xs: &Tensor, targets: &Targets, scope: LossScope<'_>) -> Result<StepLosses> {
        self.net.forward_train(&self.layout(xs, self.compute_kind), targets, scope)
    }

    /// Detections (input pixels) for a batch `[N, 3, S, S]`, in eval mode without gradients: scores
    /// above `cfg.conf`, at most `cfg.max_det` per image, best first.
    pub fn predict(&self, xs: &Tensor, cfg: &PostprocessConfig) -> Result<Vec<Vec<Detection>>> {
        self.net.predict(&self.layout(xs, self.infer_kind), cfg)
    }

    /// Parameters of the whole detector, frozen ones included (batch-norm statistics excluded).
    pub fn num_params(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }
}
