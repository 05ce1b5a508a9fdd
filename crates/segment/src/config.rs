//! `configs/segment.toml`: every key with its default. Sections: `[data]`, `[model]`, `[loss]`,
//! `[train]`, `[eval]`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tlcv_core::{backbones::Arch, freeze::Strategy, train::TrainConfig, weights::WeightsSource};

/// The segmentation model family (`--model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// U-Net decoder with skips at every stride.
    Unet,
    /// DeepLabv3: ASPP on a dilated backbone (torchvision's layout).
    Deeplabv3,
    /// DeepLabv3+: ASPP plus the stride-4 low-level decoder.
    Deeplabv3plus,
}

impl ModelKind {
    /// The config/CLI name.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Unet => "unet",
            ModelKind::Deeplabv3 => "deeplabv3",
            ModelKind::Deeplabv3plus => "deeplabv3plus",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace(['-', '_', '+'], "").as_str() {
            "unet" => Ok(ModelKind::Unet),
            "deeplabv3" => Ok(ModelKind::Deeplabv3),
            "deeplabv3plus" | "deeplabv3p" => Ok(ModelKind::Deeplabv3plus),
            _ => Err(format!("unknown model {s:?}; expected unet, deeplabv3 or deeplabv3plus")),
        }
    }
}

/// Images, masks and how they are prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// A folder with `images/{train,val}` and `masks/{train,val}` (same file stems, masks PNG), or the
    /// embedded data set `shapes-seg`.
    pub path: String,
    /// Square network input size in pixels.
    pub img_size: i64,
    /// Embedded data: training images.
    pub train_images: usize,
    /// Embedded data: validation images.
    pub val_images: usize,
    /// Embedded data: side of the generated images.
    pub gen_size: i64,
    /// Embedded data: generator seed.
    pub seed: u64,
    /// Mask value that is not scored (VOC's border is 255).
    pub ignore_index: u8,
    /// Class names in index order, comma-separated; empty = read `classes.txt` in the data folder.
    pub classes: String,
    /// Smallest random scale of a training image (relative to `img_size`).
    pub min_scale: f64,
    /// Largest random scale.
    pub max_scale: f64,
    /// Random horizontal flips.
    pub hflip: bool,
    /// Colour jitter strength (brightness, contrast, saturation; 0 = off).
    pub color_jitter: f64,
    /// Augment training images at all.
    pub augment: bool,
    /// Images larger than this many pixels are refused with a message.
    pub max_pixels: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            path: "shapes-seg".into(),
            img_size: 128,
            train_images: 256,
            val_images: 64,
            gen_size: 128,
            seed: 0,
            ignore_index: 255,
            classes: String::new(),
            min_scale: 0.75,
            max_scale: 1.25,
            hflip: true,
            color_jitter: 0.2,
            augment: true,
            max_pixels: 64_000_000,
        }
    }
}

/// The network and how it is transferred.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// `unet`, `deeplabv3` or `deeplabv3plus`.
    pub kind: ModelKind,
    /// Backbone architecture (resnet18/34/50, vgg16..., efficientnet_b0, efficientnet_lite0/1/2).
    pub backbone: Arch,
    /// `imagenet`, `none` (random initialisation) or a checkpoint file of the backbone.
    pub weights: WeightsSource,
    /// `feature-extract`, `fine-tune` or `scratch`.
    pub strategy: Strategy,
    /// With fine-tune: backbone stages that train, counted from the last.
    pub trainable_layers: usize,
    /// DeepLab: output stride of the backbone, 16 or 8 (dilation), or 32.
    pub output_stride: i64,
    /// DeepLab: atrous rates of the ASPP 3x3 branches (torchvision: 12, 24, 36 at OS8; 6, 12, 18 at OS16).
    pub atrous_rates: Vec<i64>,
    /// DeepLab: ASPP and decoder width (256 in the papers).
    pub aspp_channels: i64,
    /// DeepLabv3+: width of the projected stride-4 features (48 in the paper).
    pub low_level_channels: i64,
    /// U-Net: decoder widths at strides 16, 8, 4, 2, 1.
    pub decoder_channels: Vec<i64>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            kind: ModelKind::Unet,
            backbone: Arch::EfficientnetLite0,
            weights: WeightsSource::ImageNet,
            strategy: Strategy::FineTune,
            trainable_layers: 8,
            output_stride: 16,
            atrous_rates: vec![6, 12, 18],
            aspp_channels: 128,
            low_level_channels: 48,
            decoder_channels: vec![128, 64, 48, 32, 16],
        }
    }
}

/// The training loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Weight of the cross-entropy term (0 = off).
    pub ce_weight: f64,
    /// Weight of the soft Dice term (0 = off).
    pub dice_weight: f64,
    /// Cross-entropy weight per class, comma-separated (empty = equal).
    pub class_weights: String,
    /// Dice smoothing constant.
    pub dice_smooth: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self { ce_weight: 1.0, dice_weight: 0.5, class_weights: String::new(), dice_smooth: 1.0 }
    }
}

/// Evaluation, prediction and the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Validation images `run` predicts on at the end (masks and overlays in `predictions/`).
    pub predict_images: usize,
    /// Image / ground truth / prediction triplets in the report.
    pub triplets: usize,
    /// Opacity of the class colours in overlays.
    pub overlay_alpha: f64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { predict_images: 4, triplets: 6, overlay_alpha: 0.5 }
    }
}

/// The whole segmentation configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentConfig {
    /// Data.
    pub data: DataConfig,
    /// Model and transfer strategy.
    pub model: ModelConfig,
    /// Loss.
    pub loss: LossConfig,
    /// Optimisation.
    pub train: TrainConfig,
    /// Evaluation.
    pub eval: EvalConfig,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            data: DataConfig::default(),
            model: ModelConfig::default(),
            loss: LossConfig::default(),
            train: TrainConfig {
                epochs: 8,
                batch: 16,
                lr: 3e-3,
                backbone_lr_scale: 0.5,
                warmup_epochs: 1.0,
                ..TrainConfig::default()
            },
            eval: EvalConfig::default(),
        }
    }
}

/// Splits a comma-separated list, dropping empty items.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(String::from).collect()
}

impl SegmentConfig {
    /// Named presets: `default`, `quick` (tiny, for smoke tests), `scratch` (random initialisation).
    pub fn preset(name: &str) -> Option<Self> {
        let base = Self::default();
        match name {
            "default" => Some(base),
            "quick" => Some(Self {
                data: DataConfig { img_size: 64, gen_size: 64, train_images: 8, val_images: 4, ..base.data },
                train: TrainConfig { epochs: 1, batch: 4, ..base.train },
                eval: EvalConfig { predict_images: 2, triplets: 2, ..base.eval },
                ..Self::default()
            }),
            "scratch" => Some(Self {
                model: ModelConfig { strategy: Strategy::Scratch, weights: WeightsSource::None, ..base.model },
                ..Self::default()
            }),
            _ => None,
        }
    }

    /// Names accepted by [`SegmentConfig::preset`].
    pub const PRESETS: [&'static str; 3] = ["default", "quick", "scratch"];
}

impl tlcv_core::config::Preset for SegmentConfig {
    fn preset_names() -> &'static [&'static str] {
        &Self::PRESETS
    }
    fn preset(name: &str) -> Option<Self> {
        SegmentConfig::preset(name)
    }
}
