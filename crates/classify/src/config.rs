//! `configs/classify.toml`: every key with its default. Sections: `[data]`, `[model]`, `[train]`, `[eval]`.

use serde::{Deserialize, Serialize};
use tlcv_core::{
    backbones::Arch,
    data::transforms::ResizeMethod,
    freeze::Strategy,
    train::{BnMode, TrainConfig},
    weights::WeightsSource,
};

/// Where the images come from and how they are prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// An ImageFolder directory (`train/<class>/*`, `val/<class>/*`, optional `test/<class>/*`), a CSV file
    /// (`path,label`, with `split` optional), or an embedded data set: `digits` or `shapes`.
    pub path: String,
    /// Square input size in pixels.
    pub img_size: i64,
    /// Embedded data sets: training images per class.
    pub train_per_class: usize,
    /// Embedded data sets: generator seed.
    pub seed: u64,
    /// Use at most this many training images per class (0 = all), chosen deterministically.
    pub limit_per_class: usize,
    /// Random resized crop, flip and colour jitter on training images.
    pub augment: bool,
    /// Smallest crop area for the random resized crop (torchvision uses 0.08; small data likes more).
    pub min_crop_scale: f64,
    /// Horizontal flips (turn off for digits and text).
    pub hflip: bool,
    /// Images larger than this many pixels are refused with a message.
    pub max_pixels: u64,
    /// Resampler of the evaluation resize and the random resized crop: `pillow` (torchvision's pixels on
    /// PIL images, byte for byte) or `opencv` (area averaging and reduced-scale JPEG decoding: faster,
    /// different pixels).
    pub resize: ResizeMethod,
    /// Keep decoded images in memory after the first epoch (small data sets).
    pub cache_images: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            path: "digits".into(),
            img_size: 64,
            train_per_class: 20,
            seed: 0,
            limit_per_class: 0,
            augment: true,
            min_crop_scale: 0.5,
            hflip: false,
            max_pixels: 64_000_000,
            resize: ResizeMethod::Pillow,
            cache_images: true,
        }
    }
}

/// Head on top of the backbone's pooled features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// One Linear layer in place of the backbone's classifier (torchvision's recipe; exports cleanly).
    Linear,
    /// Linear → ReLU → Dropout → Linear.
    Mlp,
}

/// How the new classification layer starts (the one sized to the data; a pretrained head that already
/// fits the class count is kept as loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadInit {
    /// All zeros (Kolesnikov et al. 2020, "Big Transfer"): the first loss is exactly ln(classes) and the
    /// first gradients into the backbone are zero, so a pretrained backbone is not pushed around by a
    /// random head. With the MLP head only its last layer is zeroed.
    #[default]
    Zero,
    /// Weights N(0, 0.01), bias 0: near-uniform first predictions with symmetry already broken.
    Small,
    /// The architecture's own torchvision initialisation (EfficientNet's U(±1/sqrt(classes)) gives
    /// large first logits: a loss of about 5 for 10 classes).
    Native,
}

/// The network and how it is transferred.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Backbone architecture (see `classify forward --help` for the list).
    pub backbone: Arch,
    /// `imagenet`, `none` (random initialisation) or a checkpoint file.
    pub weights: WeightsSource,
    /// `feature-extract`, `fine-tune` or `scratch`.
    pub strategy: Strategy,
    /// With fine-tune: backbone stages that train, counted from the last.
    pub trainable_layers: usize,
    /// `linear` or `mlp`.
    pub head: HeadKind,
    /// Initialisation of the new classification layer: `zero`, `small` or `native`.
    pub head_init: HeadInit,
    /// Hidden width of the MLP head.
    pub hidden: i64,
    /// Dropout before the final layer of the head.
    pub dropout: f64,
    /// Label smoothing of the cross-entropy (0 = off).
    pub label_smoothing: f64,
    /// Weight the loss by inverse class frequency (for imbalanced data).
    pub class_weights: bool,
    /// With a frozen backbone, compute its features once and train the head on the cache.
    pub feature_cache: bool,
    /// Augmented views per training image in the feature cache (1 = the plain image only).
    pub cache_views: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            backbone: Arch::EfficientnetLite0,
            weights: WeightsSource::ImageNet,
            strategy: Strategy::FeatureExtract,
            trainable_layers: 2,
            head: HeadKind::Linear,
            head_init: HeadInit::Zero,
            hidden: 256,
            dropout: 0.2,
            label_smoothing: 0.0,
            class_weights: false,
            feature_cache: true,
            cache_views: 4,
        }
    }
}

/// Evaluation and prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Split for the final evaluation of `run`: `test` when it exists, else `val`.
    pub split: String,
    /// Classes shown by predict.
    pub top_k: usize,
    /// Validation images in the report's grid.
    pub grid_images: usize,
    /// Held-out images `run` predicts on at the end.
    pub predict_images: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { split: "test".into(), top_k: 5, grid_images: 48, predict_images: 8 }
    }
}

/// The whole classification configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifyConfig {
    /// Data.
    pub data: DataConfig,
    /// Model and transfer strategy.
    pub model: ModelConfig,
    /// Optimisation.
    pub train: TrainConfig,
    /// Evaluation.
    pub eval: EvalConfig,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        Self {
            data: DataConfig::default(),
            model: ModelConfig::default(),
            train: TrainConfig { epochs: 15, batch: 32, lr: 3e-3, warmup_epochs: 1.0, ..TrainConfig::default() },
            eval: EvalConfig::default(),
        }
    }
}

impl ClassifyConfig {
    /// Named presets: `default`, `quick` (tiny, for smoke tests), `finetune` (LP-FT: a zero-initialised
    /// head alone for 3 epochs on cached features, then the last two stages at a tenth of the rate with
    /// frozen batch norm: the best of the recipes measured on 50 digits per class, see the README),
    /// `scratch`.
    pub fn preset(name: &str) -> Option<Self> {
        let base = Self::default();
        match name {
            "default" => Some(base),
            "quick" => Some(Self {
                data: DataConfig { img_size: 32, train_per_class: 5, ..base.data },
                train: TrainConfig { epochs: 2, batch: 16, ..base.train },
                eval: EvalConfig { grid_images: 8, predict_images: 2, ..base.eval },
                ..Self::default()
            }),
            "finetune" => Some(Self {
                model: ModelConfig {
                    strategy: Strategy::FineTune,
                    trainable_layers: 2,
                    feature_cache: false,
                    ..base.model
                },
                train: TrainConfig {
                    lr: 1e-3,
                    backbone_lr_scale: 0.1,
                    bn: BnMode::Frozen,
                    head_epochs: 3,
                    ..base.train
                },
                ..Self::default()
            }),
            "scratch" => Some(Self {
                model: ModelConfig {
                    strategy: Strategy::Scratch,
                    weights: WeightsSource::None,
                    feature_cache: false,
                    ..base.model
                },
                ..Self::default()
            }),
            _ => None,
        }
    }

    /// Names accepted by [`ClassifyConfig::preset`].
    pub const PRESETS: [&'static str; 4] = ["default", "quick", "finetune", "scratch"];

    /// This configuration (data, backbone, epochs, batch, seed, ...) with the recipe of `strategy`'s
    /// preset (`scratch`, `default` for feature-extract, `finetune`): strategy, weights, trainable
    /// stages, feature cache, head initialisation, learning rates, batch-norm mode, LP-FT, layer decay
    /// and unfreezing. A weights file given here is kept for the pretrained strategies.
    pub fn with_recipe(&self, strategy: Strategy) -> Self {
        let name = match strategy {
            Strategy::Scratch => "scratch",
            Strategy::FeatureExtract => "default",
            Strategy::FineTune => "finetune",
        };
        let r = Self::preset(name).unwrap_or_default();
        let weights = match strategy {
            Strategy::Scratch => WeightsSource::None,
            _ if self.model.weights.is_none() => WeightsSource::ImageNet,
            _ => self.model.weights.clone(),
        };
        Self {
            model: ModelConfig {
                strategy,
                weights,
                trainable_layers: r.model.trainable_layers,
                feature_cache: r.model.feature_cache,
                head_init: r.model.head_init,
                ..self.model.clone()
            },
            train: TrainConfig {
                lr: r.train.lr,
                backbone_lr_scale: r.train.backbone_lr_scale,
                bn: r.train.bn,
                head_epochs: r.train.head_epochs,
                layer_decay: r.train.layer_decay,
                unfreeze_every: r.train.unfreeze_every,
                ..self.train.clone()
            },
            ..self.clone()
        }
    }

    /// The training configuration this run trains with: [`TrainConfig::for_strategy`], and from
    /// scratch the learning rate scaled for the architecture ([`Arch::scratch_classifier_lr_scale`]).
    pub fn effective_train(&self) -> TrainConfig {
        let mut t = self.train.for_strategy(self.model.strategy);
        if self.model.strategy == Strategy::Scratch {
            t.lr *= self.model.backbone.scratch_classifier_lr_scale();
        }
        t
    }

    /// The transfer recipe in a few words, for tables.
    pub fn recipe_summary(&self) -> String {
        let (m, t) = (&self.model, &self.effective_train());
        match m.strategy {
            Strategy::Scratch => format!("random init, all layers at lr {}", (t.lr * 1e9).round() / 1e9),
            Strategy::FeatureExtract => {
                let cache = if m.feature_cache { format!(", {} cached views", m.cache_views) } else { String::new() };
                format!("frozen backbone{cache}, head at lr {}", t.lr)
            }
            Strategy::FineTune => {
                let mut parts = Vec::new();
                if t.head_epochs > 0 {
                    parts.push(format!("LP-FT (head alone {} epochs)", t.head_epochs));
                }
                parts.push(format!("last {} stages at lr {} x {}", m.trainable_layers, t.lr, t.backbone_lr_scale));
                if t.bn == BnMode::Frozen {
                    parts.push("frozen batch norm".into());
                }
                if t.layer_decay != 1.0 {
                    parts.push(format!("layer decay {}", t.layer_decay));
                }
                if t.unfreeze_every > 0 {
                    parts.push(format!("one more stage every {} epochs", t.unfreeze_every));
                }
                parts.join(", ")
            }
        }
    }
}

impl tlcv_core::config::Preset for ClassifyConfig {
    fn preset_names() -> &'static [&'static str] {
        &Self::PRESETS
    }
    fn preset(name: &str) -> Option<Self> {
        ClassifyConfig::preset(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(backbone: Arch, strategy: Strategy) -> ClassifyConfig {
        let mut cfg = ClassifyConfig::default();
        cfg.model.backbone = backbone;
        cfg.model.strategy = strategy;
        cfg
    }

    #[test]
    fn vgg_trains_from_scratch_at_a_tenth_of_the_rate() {
        let lr = ClassifyConfig::default().train.lr;
        let vgg = with(Arch::Vgg16Bn, Strategy::Scratch);
        assert!((vgg.effective_train().lr - lr * 0.1).abs() < 1e-15);
        assert!(vgg.recipe_summary().ends_with(&format!("at lr {}", (lr * 0.1 * 1e9).round() / 1e9)));
        assert_eq!(with(Arch::Resnet18, Strategy::Scratch).effective_train().lr, lr);
        assert_eq!(with(Arch::Vgg16Bn, Strategy::FineTune).effective_train().lr, lr, "pretrained VGG keeps the rate");
        assert_eq!(with(Arch::Vgg16Bn, Strategy::Scratch).effective_train().backbone_lr_scale, 1.0);
    }
}
