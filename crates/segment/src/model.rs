//! The segmentation network: a core backbone (variables under `backbone.`, group 0) and a U-Net or
//! DeepLab head (group 1), initial weights (ImageNet, none or a file) and freezing per the strategy.

use std::path::Path;

use tch::{Device, Kind, Tensor, nn};
use tlcv_core::{
    backbones::{self, Arch, Backbone, HEAD_GROUP, Normalization},
    freeze::{self, FreezeSummary, Strategy},
    weights::{self, WeightsSource},
};

use crate::{
    config::{ModelConfig, ModelKind},
    deeplab::{DeepLabV3Head, DeepLabV3PlusHead, upsample_to},
    error::SegmentError,
    unet::UNetHead,
};

/// Variable prefix of the backbone (torchvision's segmentation models use the same).
pub const BACKBONE_PREFIX: &str = "backbone";
/// Variable prefix of the head (`classifier` as in torchvision's DeepLab).
pub const HEAD_PREFIX: &str = "classifier";

/// The head of one of the three model kinds.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Head {
    /// U-Net decoder.
    Unet(UNetHead),
    /// DeepLabv3 head.
    V3(DeepLabV3Head),
    /// DeepLabv3+ head.
    V3Plus(DeepLabV3PlusHead),
}

/// A segmentation network ready to train or evaluate.
#[derive(Debug)]
pub struct SegModel {
    /// All variables.
    pub vs: nn::VarStore,
    /// The encoder.
    pub backbone: Box<dyn Backbone>,
    /// The decoder / classifier.
    pub head: Head,
    /// The model family.
    pub kind: ModelKind,
    /// The backbone architecture.
    pub arch: Arch,
    /// Number of classes.
    pub num_classes: i64,
    /// What freezing did.
    pub freeze: FreezeSummary,
    /// The kind inference runs in ([`crate::predict::Segmenter::logits`]): float32, or bfloat16
    /// (`train.precision`); the logits come back as float32 either way.
    pub inference_kind: Kind,
}

impl SegModel {
    /// Builds the bare network (random initialisation, nothing frozen).
    pub fn new(cfg: &ModelConfig, num_classes: i64, device: Device) -> Result<Self, SegmentError> {
        if num_classes < 1 {
            return Err(SegmentError::Invalid(format!("need at least one class, got {num_classes}")));
        }
        let arch = cfg.backbone;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let os = if cfg.kind == ModelKind::Unet { 32 } else { cfg.output_stride };
        let backbone = backbones::backbone_with_output_stride(&root / BACKBONE_PREFIX, arch, os).map_err(core)?;
        let hp = root.set_group(HEAD_GROUP) / HEAD_PREFIX;
        let info = backbone.feature_info();
        let low = backbone.low_level_info();
        let deep = info.last().map_or(0, |f| f.channels);
        let head = match cfg.kind {
            ModelKind::Unet => {
                let skips = [low.channels, info[0].channels, info[1].channels];
                Head::Unet(UNetHead::new(&hp, skips, deep, &cfg.decoder_channels, num_classes)?)
            }
            ModelKind::Deeplabv3 => {
                Head::V3(DeepLabV3Head::new(&hp, deep, cfg.aspp_channels, &cfg.atrous_rates, num_classes)?)
            }
            ModelKind::Deeplabv3plus => Head::V3Plus(DeepLabV3PlusHead::new(
                &hp,
                (deep, low.channels),
                (cfg.aspp_channels, cfg.low_level_channels),
                &cfg.atrous_rates,
                num_classes,
            )?),
        };
        Ok(Self {
            vs,
            backbone,
            head,
            kind: cfg.kind,
            arch,
            num_classes,
            freeze: FreezeSummary::default(),
            inference_kind: Kind::Float,
        })
    }

    /// Builds the network and applies `cfg.weights` and `cfg.strategy`.
    pub fn build(cfg: &ModelConfig, num_classes: i64, device: Device) -> Result<Self, SegmentError> {
        let mut model = Self::new(cfg, num_classes, device)?;
        if cfg.weights.is_none() && cfg.strategy != Strategy::Scratch {
            return Err(SegmentError::Invalid(format!(
                "strategy `{}` needs pretrained weights, but model.weights = \"none\"",
                cfg.strategy
            )));
        }
        if cfg.strategy != Strategy::Scratch
            && let Some(file) = cfg.weights.resolve(model.arch)?
        {
            model.load_backbone(&file)?;
        }
        let stages = model.backbone.stages().clone();
        let trainable = cfg.strategy.trainable_layers(cfg.trainable_layers, stages.len()).min(stages.len());
        model.freeze = freeze::apply_freeze(&model.vs, &stages, trainable, &[HEAD_PREFIX]).map_err(core)?;
        model.backbone.set_frozen_stages(model.freeze.frozen_stages);
        Ok(model)
    }

    /// The network of `cfg` with random weights and nothing frozen, to load a trained run's weights
    /// into.
    pub fn untrained(cfg: &ModelConfig, num_classes: i64, device: Device) -> Result<Self, SegmentError> {
        let cfg = ModelConfig { weights: WeightsSource::None, strategy: Strategy::Scratch, ..cfg.clone() };
        Self::build(&cfg, num_classes, device)
    }

    /// Loads an ImageNet classifier checkpoint (e.g. `efficientnet_lite0.pth`, torchvision's
    /// `resnet50`) into the headless backbone under `backbone.` ([`weights::load_backbone`]).
    pub fn load_backbone(&self, file: &Path) -> Result<(), SegmentError> {
        weights::load_backbone(&self.vs, self.arch, file, BACKBONE_PREFIX)?;
        Ok(())
    }

    /// Input normalisation the backbone expects.
    pub fn normalization(&self) -> Normalization {
        self.backbone.normalization()
    }

    /// `[N, 3, H, W]` normalised images -> `[N, classes, H, W]` logits.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let (h, w) = (xs.size()[2], xs.size()[3]);
        match &self.head {
            Head::Unet(head) => {
                let feats = self.backbone.forward_features_with_low(xs, train); // [C2, C3, C4, C5]
                head.forward(xs, &feats, train)
            }
            Head::V3(head) => {
                let feats = self.backbone.forward_features(xs, train);
                let deep = feats.last().map_or_else(|| xs.shallow_clone(), Tensor::shallow_clone);
                upsample_to(&head.forward(&deep, train), h, w) // [N, classes, h/os, w/os] -> [N, classes, H, W]
            }
            Head::V3Plus(head) => {
                let feats = self.backbone.forward_features_with_low(xs, train);
                let deep = feats.last().map_or_else(|| xs.shallow_clone(), Tensor::shallow_clone);
                upsample_to(&head.forward(&feats[0], &deep, train), h, w) // stride 4 -> [N, classes, H, W]
            }
        }
    }
}

fn core(e: tlcv_core::Error) -> SegmentError {
    SegmentError::Invalid(e.to_string())
}
