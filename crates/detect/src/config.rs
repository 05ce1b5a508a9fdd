//! `configs/detect.toml`: every key with its default. Sections: `[data]`, `[augment]`, `[model]`,
//! `[loss]`, `[train]`, `[eval]`.

use std::fmt;

use serde::{Deserialize, Serialize};
use tlcv_core::{freeze::Strategy, train::TrainConfig};

/// On-disk layout of a detection data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// `data.yaml` means YOLO, else `annotations/instances_*.json` means COCO.
    Auto,
    /// `images/{split}`, `labels/{split}` and `data.yaml`.
    Yolo,
    /// `annotations/instances_{split}.json` with the images in `images/{split}` (or `{split}`).
    Coco,
}

/// Where the images come from and how big the network input is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// A data set folder (YOLO or COCO layout), a `data.yaml`, or `embedded` (generated on first use).
    pub path: String,
    /// Layout of `path`: auto, yolo or coco.
    pub format: DataFormat,
    /// Square network input in pixels (a multiple of 32).
    pub img_size: i64,
    /// Embedded data: training images.
    pub train_images: usize,
    /// Embedded data: validation images.
    pub val_images: usize,
    /// Embedded data: side of the generated images.
    pub gen_size: i32,
    /// Embedded data: generator seed.
    pub seed: u64,
    /// Images larger than this many pixels are refused.
    pub max_pixels: u64,
    /// Keep up to this many MiB of decoded training images in memory.
    pub cache_mib: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            path: "embedded".into(),
            format: DataFormat::Auto,
            img_size: 256,
            train_images: 480,
            val_images: 120,
            gen_size: 320,
            seed: 0,
            max_pixels: 64_000_000,
            cache_mib: 1024,
        }
    }
}

/// Training augmentation; every transform moves the boxes with the pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Master switch (off: letterbox only).
    pub enabled: bool,
    /// Probability of a 4-image mosaic.
    pub mosaic: f64,
    /// Mosaic is switched off for the last this many epochs.
    pub close_mosaic: usize,
    /// Random scale gain: the image is scaled by a factor in `1 ± scale`.
    pub scale: f64,
    /// Random translation as a fraction of the image side.
    pub translate: f64,
    /// Probability of a horizontal flip.
    pub fliplr: f64,
    /// Hue jitter (fraction of the hue circle).
    pub hsv_h: f64,
    /// Saturation jitter (gain range `1 ± hsv_s`).
    pub hsv_s: f64,
    /// Value (brightness) jitter (gain range `1 ± hsv_v`).
    pub hsv_v: f64,
    /// Boxes narrower or lower than this many pixels after a transform are dropped.
    pub min_box_side: f64,
    /// Boxes keeping less than this fraction of their area after cropping are dropped.
    pub min_visible: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            mosaic: 1.0,
            close_mosaic: 2,
            scale: 0.5,
            translate: 0.1,
            fliplr: 0.5,
            hsv_h: 0.015,
            hsv_s: 0.7,
            hsv_v: 0.4,
            min_box_side: 2.0,
            min_visible: 0.25,
        }
    }
}

/// The detector family (each in its own modules; only YOLO so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Anchor-free, decoupled YOLOv8-style head with DFL and task-aligned assignment.
    Yolo,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Yolo => "yolo",
        })
    }
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "yolo" => Ok(Family::Yolo),
            other => Err(format!("unknown detector family `{other}`; only `yolo` exists so far")),
        }
    }
}

/// The network and how it is transferred.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Detector family: `yolo`.
    pub family: Family,
    /// Backbone architecture (resnet18, vgg16_bn, efficientnet_b0, efficientnet_lite0, ...).
    pub backbone: String,
    /// `imagenet`, `none` (random initialisation) or a checkpoint file.
    pub weights: String,
    /// `feature-extract` (backbone frozen), `fine-tune` or `scratch`.
    pub strategy: Strategy,
    /// With fine-tune: backbone stages that train, counted from the last.
    pub trainable_layers: usize,
    /// Channels of every neck level.
    pub neck_channels: i64,
    /// Bins of the distribution over each box edge (DFL).
    pub reg_max: i64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            family: Family::Yolo,
            backbone: "efficientnet_lite0".into(),
            weights: "imagenet".into(),
            strategy: Strategy::FineTune,
            trainable_layers: 3,
            neck_channels: 64,
            reg_max: 16,
        }
    }
}

/// Assignment and loss weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Gain of the CIoU box loss.
    pub box_gain: f64,
    /// Gain of the classification BCE.
    pub cls_gain: f64,
    /// Gain of the distribution focal loss.
    pub dfl_gain: f64,
    /// Task-aligned assignment: candidates per ground-truth box.
    pub topk: i64,
    /// Exponent of the class score in the alignment metric.
    pub alpha: f64,
    /// Exponent of the IoU in the alignment metric.
    pub beta: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self { box_gain: 7.5, cls_gain: 0.5, dfl_gain: 1.5, topk: 10, alpha: 0.5, beta: 6.0 }
    }
}

/// Evaluation, prediction and the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Score threshold for mAP evaluation (low, as COCO practice).
    pub conf: f64,
    /// IoU threshold of the class-aware NMS.
    pub iou: f64,
    /// Most detections per image.
    pub max_det: usize,
    /// Score threshold of `predict`.
    pub predict_conf: f64,
    /// Validation images in the report's grid.
    pub grid_images: usize,
    /// Held-out images `run` predicts on at the end.
    pub predict_images: usize,
    /// Compute mAP during training only every this many epochs (and in the last epochs).
    pub val_every: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            conf: 0.001,
            iou: 0.6,
            max_det: 100,
            predict_conf: 0.25,
            grid_images: 12,
            predict_images: 8,
            val_every: 1,
        }
    }
}

/// The whole detection configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Data.
    pub data: DataConfig,
    /// Augmentation.
    pub augment: AugmentConfig,
    /// Model and transfer strategy.
    pub model: ModelConfig,
    /// Assignment and loss.
    pub loss: LossConfig,
    /// Optimisation.
    pub train: TrainConfig,
    /// Evaluation.
    pub eval: EvalConfig,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            data: DataConfig::default(),
            augment: AugmentConfig::default(),
            model: ModelConfig::default(),
            loss: LossConfig::default(),
            train: TrainConfig {
                epochs: 9,
                batch: 16,
                lr: 2e-3,
                backbone_lr_scale: 0.2,
                weight_decay: 5e-4,
                warmup_epochs: 1.0,
                grad_clip: 10.0,
                ..TrainConfig::default()
            },
            eval: EvalConfig::default(),
        }
    }
}

impl DetectConfig {
    /// Named presets: `default`, `quick` (tiny, for smoke tests), `frozen` (backbone frozen), `scratch`.
    pub fn preset(name: &str) -> Option<Self> {
        let base = Self::default();
        match name {
            "default" => Some(base),
            "quick" => Some(Self {
                data: DataConfig { img_size: 64, train_images: 8, val_images: 4, ..base.data },
                train: TrainConfig { epochs: 1, batch: 4, ..base.train },
                eval: EvalConfig { grid_images: 4, predict_images: 2, ..base.eval },
                ..Self::default()
            }),
            "frozen" => Some(Self {
                model: ModelConfig { strategy: Strategy::FeatureExtract, ..base.model },
                ..Self::default()
            }),
            "scratch" => Some(Self {
                model: ModelConfig { strategy: Strategy::Scratch, weights: "none".into(), ..base.model },
                ..Self::default()
            }),
            _ => None,
        }
    }

    /// Names accepted by [`DetectConfig::preset`].
    pub const PRESETS: [&'static str; 4] = ["default", "quick", "frozen", "scratch"];
}

impl tlcv_core::config::Preset for DetectConfig {
    fn preset_names() -> &'static [&'static str] {
        &Self::PRESETS
    }
    fn preset(name: &str) -> Option<Self> {
        DetectConfig::preset(name)
    }
}
