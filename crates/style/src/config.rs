//! `configs/style.toml`: every key with its default. Sections: `[data]`, `[model]`, `[loss]`,
//! `[optim]`, `[color]`, `[fast]`, `[run]`.

use serde::{Deserialize, Serialize};
use tlcv_core::{backbones::Arch, device::DeviceChoice, weights::WeightsSource};

/// The images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Content image; a bare name (no `/`) is looked up in the Debian data (`<debdata>/skimage`, then
    /// `<debdata>/opencv`), e.g. `chelsea.png`.
    pub content: String,
    /// Style image, looked up like `content`, e.g. `starry_night.jpg`.
    pub style: String,
    /// Longer side of the output in pixels (the content image is resized to it).
    pub size: i64,
    /// Longer side of the style image at the final level (0 = same as `size`); coarser levels scale it too.
    pub style_size: i64,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self { content: "chelsea.png".into(), style: "starry_night.jpg".into(), size: 384, style_size: 0 }
    }
}

/// Arithmetic precision of the frozen feature network (the image and the losses are always fp32):
/// core's `train.precision`, resolved for [`tlcv_core::train::TaskKind::Style`] (inference only).
pub use tlcv_core::train::Precision;

/// The frozen feature network and its layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// `efficientnet_lite0` (ImageNet weights shipped with the store), `vgg19` or `vgg16` (torchvision
    /// files given with `weights`).
    pub backbone: Arch,
    /// `imagenet` (the shipped file; Lite0 only) or a checkpoint file (`vgg19.pth` from torchvision loads as is).
    pub weights: WeightsSource,
    /// Content layers, comma-separated (empty = the backbone's defaults: `relu4_2` for VGG,
    /// `blocks.5.expand` for Lite0). VGG names are `reluB_J`; Lite names are `stem`, `blocks.I`,
    /// `blocks.I.expand`, `blocks.I.dw`. (Strings rather than lists so that `--set` and saved run
    /// configs round-trip through the layered loader, which drops empty lists.)
    pub content_layers: String,
    /// Style layers, comma-separated (empty = the backbone's defaults: `relu1_1` .. `relu5_1` for VGG;
    /// for Lite0 the ReLU6 outputs `stem, blocks.1.expand, blocks.3.expand, blocks.5.expand, blocks.8.expand`).
    pub style_layers: String,
    /// Weight of each style layer, comma-separated (empty = equal weights; otherwise one per style layer).
    pub style_layer_weights: String,
    /// Feature-network precision: `auto` (bf16 where the device has native bf16, else fp32), `fp32`
    /// or `bf16` (fp32 with a note where bf16 is not native).
    pub precision: Precision,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            backbone: Arch::EfficientnetLite0,
            weights: WeightsSource::ImageNet,
            content_layers: String::new(),
            style_layers: String::new(),
            style_layer_weights: String::new(),
            precision: Precision::Auto,
        }
    }
}

/// Weights of the loss terms. Content and style terms are relative errors (see [`crate::loss`]), so
/// the same weights suit every backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Weight of the content loss.
    pub content_weight: f64,
    /// Weight of the style loss.
    pub style_weight: f64,
    /// Weight of the total-variation loss (smoothness, in `[0, 1]` pixel units).
    pub tv_weight: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self { content_weight: 1.0, style_weight: 100.0, tv_weight: 10.0 }
    }
}

/// Which optimiser changes the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// L-BFGS with a backtracking (Armijo) line search: the classic choice, few steps.
    Lbfgs,
    /// Adam on the pixels.
    Adam,
}

/// Where the optimisation starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The content image (converges fastest, keeps the layout).
    Content,
    /// Uniform noise around grey (Gatys et al.'s original).
    Noise,
}

/// The image optimisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// `lbfgs` or `adam`.
    pub optimizer: OptimizerKind,
    /// Iterations at the final size.
    pub steps: usize,
    /// Coarse-to-fine levels: the first runs at `size / 2^(levels-1)`, each next one at twice the size.
    pub levels: usize,
    /// Iterations at each coarser level.
    pub coarse_steps: usize,
    /// Adam's learning rate (pixels in `[0, 1]`); L-BFGS's first step scale.
    pub lr: f64,
    /// L-BFGS history length (pairs kept).
    pub history: usize,
    /// `content` or `noise`.
    pub init: Init,
    /// Seed of the noise initialisation.
    pub seed: i64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerKind::Lbfgs,
            steps: 60,
            levels: 2,
            coarse_steps: 100,
            lr: 1.0,
            history: 10,
            init: Init::Content,
            seed: 0,
        }
    }
}

/// How the output's colours are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorMode {
    /// The style's colours (plain transfer).
    Style,
    /// Keep the content's colours: transfer on luminance (Y of YCbCr) and keep the content's CbCr.
    Luminance,
    /// Keep the content's colours: match the style image's per-channel histograms to the content's first.
    Histogram,
}

/// Colour handling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ColorConfig {
    /// `style`, `luminance` or `histogram`.
    pub mode: ColorMode,
}

impl Default for ColorConfig {
    fn default() -> Self {
        Self { mode: ColorMode::Style }
    }
}

/// How the transformation network's last convolution becomes an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FastOutput {
    /// `sigmoid(conv_out)`: the network paints the whole image and starts from flat grey.
    Sigmoid,
    /// `sigmoid(logit(input) + conv_out)` with `conv_out` starting at zero: the network starts as the
    /// identity and learns the change, so the content survives from the first step.
    Residual,
}

/// The default training photos of `style train-fast` (see [`FastConfig::photos`]).
pub const DEFAULT_PHOTOS: &str = "chelsea.png, coffee.png, motorcycle_left.png, rocket.jpg, aero1.jpg, aero3.jpg, \
     aloeL.jpg, apple.jpg, baboon.jpg, building.jpg, butterfly.jpg, ela_original.jpg, fruits.jpg, graf1.png, \
     home.jpg, leuvenA.jpg, messi5.jpg, orange.jpg, rubberwhale1.png, smarties.png, squirrel_cls.jpg, \
     stuff.jpg";

/// Training the feed-forward network of `style train-fast`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FastConfig {
    /// Folder of content photos (empty = the files of `photos` in the Debian data).
    pub content_dir: String,
    /// When `content_dir` is empty: the Debian photos to train on, comma-separated file names looked
    /// up like `data.content` (the default: 22 natural colour photos; logos, charts and test patterns
    /// teach the network nothing, and `astronaut.png` stays unseen to measure a new picture).
    pub photos: String,
    /// Training crop size in pixels (square).
    pub img_size: i64,
    /// Shorter side the photos are resized to before cropping (0 = `img_size`, one crop covers most
    /// of a photo; larger values train on details at the scale the network later sees them).
    pub photo_side: i64,
    /// Optimiser steps.
    pub steps: usize,
    /// Images per step on each process (with several processes a step takes `batch` from each).
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Channels of the first convolution (Johnson et al. use 32; the others scale with it).
    pub width: i64,
    /// Residual blocks (Johnson et al. use 5).
    pub residual_blocks: usize,
    /// How the last convolution becomes an image.
    pub output: FastOutput,
    /// Style weight for training (the content weight and tv weight come from `[loss]`).
    pub style_weight: f64,
    /// Weight of a pixel term, `mean((y - teacher)²)`, pulling the network's output towards the
    /// optimised (Gatys) result of each training photo (0 = perceptual loss only). The teachers are
    /// computed once before training with the `[optim]` settings and cached in `teacher_dir`.
    pub teacher_weight: f64,
    /// What the transformation network trains in: `fp32`, or `bf16` (mixed precision: bfloat16
    /// activations, float32 weights and optimiser) where the device has native bf16; `auto` = `fp32`.
    pub precision: Precision,
    /// Where the teachers are cached (empty = `teachers/` in the run directory).
    pub teacher_dir: String,
    /// Write `previews/step_NNNNNN.png` (the network applied to `data.content` at `data.size`) every this
    /// many steps and at the end; 0 = only at the end.
    pub preview_every: usize,
    /// Seed of the crops and the initialisation.
    pub seed: u64,
    /// With several processes: seconds a rendezvous or a collective waits for the other ranks before
    /// the run stops with an error naming the lost rank.
    pub dist_timeout: f64,
}

impl Default for FastConfig {
    fn default() -> Self {
        Self {
            content_dir: String::new(),
            photos: DEFAULT_PHOTOS.into(),
            img_size: 192,
            photo_side: 256,
            steps: 7500,
            batch: 2,
            lr: 2e-3,
            width: 16,
            residual_blocks: 5,
            output: FastOutput::Residual,
            style_weight: 100.0,
            teacher_weight: 300.0,
            precision: Precision::Auto,
            teacher_dir: String::new(),
            preview_every: 250,
            seed: 0,
            dist_timeout: 300.0,
        }
    }
}

/// Where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// `cpu`, `cuda` or `auto`.
    pub device: DeviceChoice,
    /// libtorch CPU threads; 0 = the idle cores (cores minus the 1-minute load average, at least 1),
    /// because spinning OpenMP threads on busy shared cores can be ten times slower than one thread.
    pub threads: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self { device: DeviceChoice::Cpu, threads: 0 }
    }
}

impl RunConfig {
    /// Sets libtorch's intra-op thread count per `threads`; returns it.
    pub fn apply_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let n = if self.threads > 0 {
            self.threads
        } else {
            let load = std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
                .unwrap_or(0.0);
            ((cores as f64 - load).round().max(1.0) as usize).min(cores)
        };
        tch::set_num_threads(n as i32);
        n
    }
}

/// The whole style-transfer configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StyleConfig {
    /// Images.
    pub data: DataConfig,
    /// Feature network.
    pub model: ModelConfig,
    /// Loss weights.
    pub loss: LossConfig,
    /// Image optimisation.
    pub optim: OptimConfig,
    /// Colours.
    pub color: ColorConfig,
    /// Feed-forward training.
    pub fast: FastConfig,
    /// Device.
    pub run: RunConfig,
}

impl StyleConfig {
    /// Named presets: `default`; `quick` (128 px, few steps, for smoke tests); `gatys` (VGG-19, its
    /// classic layers, 512 px, noise start; needs `--weights vgg19.pth`); `adam`; `preserve-color`.
    pub fn preset(name: &str) -> Option<Self> {
        let base = Self::default();
        match name {
            "default" => Some(base),
            "quick" => Some(Self {
                data: DataConfig { size: 128, ..base.data.clone() },
                optim: OptimConfig { steps: 20, coarse_steps: 20, ..base.optim.clone() },
                fast: FastConfig { img_size: 96, photo_side: 128, steps: 20, teacher_weight: 0.0, ..base.fast.clone() },
                ..base
            }),
            "gatys" => Some(Self {
                data: DataConfig { size: 512, ..base.data.clone() },
                model: ModelConfig { backbone: Arch::Vgg19, ..base.model.clone() },
                optim: OptimConfig { init: Init::Noise, steps: 300, levels: 1, ..base.optim.clone() },
                ..base
            }),
            "adam" => Some(Self {
                optim: OptimConfig {
                    optimizer: OptimizerKind::Adam,
                    lr: 0.02,
                    steps: 200,
                    coarse_steps: 200,
                    ..base.optim.clone()
                },
                ..base
            }),
            "preserve-color" => Some(Self { color: ColorConfig { mode: ColorMode::Luminance }, ..base }),
            _ => None,
        }
    }

    /// Names accepted by [`StyleConfig::preset`].
    pub const PRESETS: [&'static str; 5] = ["default", "quick", "gatys", "adam", "preserve-color"];
}

impl tlcv_core::config::Preset for StyleConfig {
    fn preset_names() -> &'static [&'static str] {
        &Self::PRESETS
    }
    fn preset(name: &str) -> Option<Self> {
        StyleConfig::preset(name)
    }
}
