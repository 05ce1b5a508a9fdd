//! `configs/detect.toml`: every key with its default. Sections: `[data]`, `[augment]`, `[model]`,
//! `[loss]`, `[train]`, `[eval]`.

use serde::{Deserialize, Serialize};
use tlcv_core::{
    backbones::Arch,
    freeze::Strategy,
    train::{Convs, TrainConfig},
    weights::WeightsSource,
};

pub use crate::family::Family;

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
    /// Embedded data: `all` (six shapes and the digits 0, 1, 4), `shapes` (the six shapes only) or
    /// `digits` (the ten digits only): two disjoint tasks on the same photos, for transfer.
    pub classes: tlcv_datasets::detection::ClassSet,
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
            classes: tlcv_datasets::detection::ClassSet::All,
            max_pixels: 64_000_000,
            cache_mib: 1024,
        }
    }
}

/// Which augmentation recipe trains the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recipe {
    /// `ssd` for the SSD family, `yolo` otherwise.
    Auto,
    /// Ultralytics' recipe: mosaic, random affine, HSV jitter, flip.
    Yolo,
    /// SSD's recipe (Liu et al. 2016): photometric distortion, zoom-out, IoU-constrained crop, flip.
    Ssd,
}

impl Recipe {
    /// The recipe that trains `family` (`Auto` resolved).
    pub fn resolve(self, family: Family) -> Recipe {
        match (self, family) {
            (Recipe::Auto, Family::Ssd) => Recipe::Ssd,
            (Recipe::Auto, _) => Recipe::Yolo,
            (r, _) => r,
        }
    }
}

/// Training augmentation; every transform moves the boxes with the pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Master switch (off: letterbox only).
    pub enabled: bool,
    /// `yolo` (mosaic, affine, HSV, flip) or `ssd` (photometric distortion, zoom-out,
    /// IoU-constrained crop, flip; `auto` picks `ssd` for the SSD family).
    pub recipe: Recipe,
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
            recipe: Recipe::Auto,
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

/// SSD's default boxes and extra layers (`model.family = "ssd"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SsdOptions {
    /// Output widths of the extra blocks after C5 (one level each, strides 64, 128, ...).
    pub extra_channels: Vec<i64>,
    /// Scale of the smallest default boxes, relative to the image side.
    pub min_ratio: f64,
    /// Scale of the largest default boxes.
    pub max_ratio: f64,
    /// Extra aspect ratios per level (C3, C4, C5, then one list per extra block).
    pub aspect_ratios: Vec<Vec<f64>>,
    /// Mined negatives per positive.
    pub neg_pos_ratio: i64,
    /// With fine-tune, backbone stages that train, replacing `model.trainable_layers` for SSD (unset:
    /// that value; at most the backbone's stage count; `--trainable-layers` sets both). SSD predicts
    /// straight from C3 and C4 with single convolutions, so the stages that make them must adapt.
    pub trainable_layers: Option<usize>,
}

impl Default for SsdOptions {
    fn default() -> Self {
        Self {
            extra_channels: vec![256, 256, 128],
            min_ratio: 0.1,
            max_ratio: 0.9,
            aspect_ratios: vec![vec![2.0], vec![2.0, 3.0], vec![2.0, 3.0], vec![2.0, 3.0], vec![2.0], vec![2.0]],
            neg_pos_ratio: 3,
            trainable_layers: Some(5),
        }
    }
}

/// Faster R-CNN's widths and sampling (`model.family = "faster-rcnn"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FasterRcnnOptions {
    /// Width of the FPN levels, the RPN and the pooled RoIs (torchvision: 256).
    pub fpn_channels: i64,
    /// Width of the two fully connected layers of the box head (torchvision: 1024).
    pub representation_size: i64,
    /// Build the FPN from the stride-4 map C2 as torchvision does (five levels P2..P6); `false`
    /// starts at C3 (four levels P3..P6) and trains about twice as fast.
    pub fpn_from_c2: bool,
    /// RPN anchor size per FPN level (P2..P6, or P3..P6), in input pixels; ratios 0.5, 1, 2 on each.
    pub anchor_sizes: Vec<f64>,
    /// Proposals sampled per image for the box-head loss (torchvision: 512).
    pub roi_batch_per_image: i64,
    /// Proposals kept per image after the RPN's NMS while training (torchvision: 2000).
    pub proposals_train: i64,
    /// Same at inference (torchvision: 1000).
    pub proposals_test: i64,
}

impl Default for FasterRcnnOptions {
    fn default() -> Self {
        Self {
            fpn_channels: 128,
            representation_size: 256,
            fpn_from_c2: false,
            anchor_sizes: vec![16.0, 32.0, 64.0, 128.0],
            roi_batch_per_image: 128,
            proposals_train: 600,
            proposals_test: 300,
        }
    }
}

/// Ultralytics' YOLOv8 / YOLO11 (`model.family = "ultralytics"`, or `--model yolov8n`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UltralyticsOptions {
    /// The network: yolov8n|s|m|l|x or yolo11n|s|m|l|x. `model.weights` is an Ultralytics `.pt`, a state
    /// dict or safetensors of it, `none`, or `imagenet`/`pretrained` for the checkpoint that ships in
    /// `assets/models/<arch>.pt` (yolov8n, pretrained on the embedded shapes).
    pub arch: crate::ultralytics::spec::YoloArch,
    /// Ultralytics' `freeze=N`: the first N modules of the `model` list stay frozen (with `fine-tune`,
    /// the default; at most the backbone's modules, 10 in YOLOv8 and 11 in YOLO11: neck and head always
    /// train).
    /// Unset: `fine-tune` trains the last `model.trainable_layers` backbone modules, and
    /// `feature-extract` freezes all of them.
    pub freeze: Option<usize>,
}

impl Default for UltralyticsOptions {
    fn default() -> Self {
        Self {
            arch: crate::ultralytics::spec::YoloArch {
                version: crate::ultralytics::Version::V8,
                scale: crate::ultralytics::Scale::N,
            },
            freeze: None,
        }
    }
}

/// The network and how it is transferred.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Detector family: `yolo`, `ssd` or `faster-rcnn`.
    pub family: Family,
    /// Backbone architecture (resnet18, vgg16_bn, efficientnet_b0, efficientnet_lite0, ...).
    pub backbone: Arch,
    /// `imagenet`, `none` (random initialisation) or a checkpoint file.
    pub weights: WeightsSource,
    /// `feature-extract` (backbone frozen), `fine-tune` or `scratch`.
    pub strategy: Strategy,
    /// With fine-tune: backbone stages that train, counted from the last.
    pub trainable_layers: usize,
    /// YOLO: channels of every neck level.
    pub neck_channels: i64,
    /// YOLO: bins of the distribution over each box edge (DFL).
    pub reg_max: i64,
    /// SSD settings.
    pub ssd: SsdOptions,
    /// Faster R-CNN settings.
    pub faster_rcnn: FasterRcnnOptions,
    /// Ultralytics YOLOv8 / YOLO11 settings.
    pub ultralytics: UltralyticsOptions,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            family: Family::Yolo,
            backbone: Arch::EfficientnetLite0,
            weights: WeightsSource::ImageNet,
            strategy: Strategy::FineTune,
            trainable_layers: 3,
            neck_channels: 64,
            reg_max: 16,
            ssd: SsdOptions::default(),
            faster_rcnn: FasterRcnnOptions::default(),
            ultralytics: UltralyticsOptions::default(),
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
                model: ModelConfig { strategy: Strategy::Scratch, weights: WeightsSource::None, ..base.model },
                ..Self::default()
            }),
            _ => None,
        }
    }

    /// This configuration with the settings its family ignores reset to their defaults: two runs of
    /// a family with equal views train the same way (`detect compare` reuses such a finished run).
    pub fn family_view(&self) -> Self {
        let mut v = self.clone();
        v.augment.recipe = v.augment.recipe.resolve(v.model.family);
        let d = ModelConfig::default();
        if v.model.family != Family::Ssd {
            v.model.ssd = d.ssd.clone();
        }
        if v.model.family != Family::FasterRcnn {
            v.model.faster_rcnn = d.faster_rcnn.clone();
        }
        if !matches!(v.model.family, Family::Yolo | Family::Ultralytics) {
            v.loss = LossConfig::default();
        }
        if v.model.family != Family::Yolo {
            (v.model.neck_channels, v.model.reg_max) = (d.neck_channels, d.reg_max);
        }
        if v.model.family == Family::Ultralytics {
            v.model.backbone = d.backbone;
        } else {
            v.model.ultralytics = d.ultralytics.clone();
        }
        v
    }

    /// The network for logs, reports and tables: the backbone, or the Ultralytics network.
    pub fn network(&self) -> String {
        match self.model.family {
            Family::Ultralytics => self.model.ultralytics.arch.to_string(),
            _ => self.model.backbone.to_string(),
        }
    }

    /// What the trained network's convolutions are (`train.precision = "auto"` decides by them): those of
    /// the backbone, or dense for the Ultralytics networks.
    pub fn convs(&self) -> Convs {
        match self.model.family {
            Family::Ultralytics => Convs::Dense,
            _ => Convs::of(self.model.backbone),
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
