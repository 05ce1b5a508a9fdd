//! The detector: backbone adapter → neck → family head, in one `VarStore` (backbone variables
//! under `backbone.` in optimiser group 0; neck and head under `neck.` / `head.` in group 1).
//! `model.family` picks the neck/head/loss combination; only YOLO exists so far.

use tch::{Device, Tensor, nn};
use tlcv_core::{
    backbones::{Arch, Normalization},
    freeze::{self, FreezeSummary, Strategy, channels_last, to_channels_last},
};

use crate::anchors::AnchorPoints;
use crate::backbone::{self, BackboneAdapter};
use crate::config::{DetectConfig, Family};
use crate::error::{DetectError, Result};
use crate::heads::yolo::{HeadOutput, YoloHead};
use crate::loss::yolo::{LossOutput, Targets, YoloLoss};
use crate::neck::PanFpn;
use crate::postprocess::{self, Detection, PostprocessConfig};

/// Prefixes of the variables that are never frozen.
pub const HEAD_PREFIXES: [&str; 2] = ["neck", "head"];

/// The family-specific part after the backbone.
#[derive(Debug)]
pub enum FamilyNet {
    /// FPN+PAN neck, decoupled anchor-free head, TAL + BCE/CIoU/DFL loss.
    Yolo {
        /// The neck.
        neck: PanFpn,
        /// The head.
        head: YoloHead,
        /// The loss.
        loss: YoloLoss,
    },
}

/// A detector ready to train or predict.
#[derive(Debug)]
pub struct Detector {
    /// Every variable.
    pub vs: nn::VarStore,
    /// The backbone.
    pub backbone: BackboneAdapter,
    /// Neck, head and loss.
    pub net: FamilyNet,
    /// Number of classes.
    pub num_classes: i64,
    /// Square input side.
    pub img_size: i64,
    /// What freezing did.
    pub freeze: FreezeSummary,
    /// Inputs are laid out channels-last.
    pub channels_last: bool,
}

impl Detector {
    /// Builds the detector for `num_classes` on `device`, loads the backbone weights and freezes per
    /// the strategy.
    pub fn build(cfg: &DetectConfig, num_classes: i64, device: Device) -> Result<Self> {
        let m = &cfg.model;
        let arch: Arch = m.backbone.parse()?;
        if cfg.data.img_size < 32 || cfg.data.img_size % 32 != 0 {
            return Err(DetectError::Invalid(format!(
                "data.img_size must be a positive multiple of 32, got {}",
                cfg.data.img_size
            )));
        }
        if m.reg_max < 2 {
            return Err(DetectError::Invalid(format!("model.reg_max must be at least 2, got {}", m.reg_max)));
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let mut bb = BackboneAdapter::new(&root, arch)?;
        let info = bb.feature_info();
        let chans: Vec<i64> = info.iter().map(|f| f.channels).collect();
        let strides: Vec<i64> = info.iter().map(|f| f.stride).collect();
        let hp = root.set_group(1);
        let net = match m.family {
            Family::Yolo => {
                let neck = PanFpn::new(&(&hp / "neck"), &chans, m.neck_channels)?;
                let head = YoloHead::new(
                    &(&hp / "head"),
                    m.neck_channels,
                    num_classes,
                    m.reg_max,
                    &strides,
                    cfg.data.img_size,
                )?;
                FamilyNet::Yolo { neck, head, loss: YoloLoss { cfg: cfg.loss.clone(), reg_max: m.reg_max } }
            }
        };
        if m.weights == "none" && m.strategy != Strategy::Scratch {
            return Err(DetectError::Invalid(format!(
                "strategy `{}` needs pretrained weights, but model.weights = \"none\" (use --strategy scratch)",
                m.strategy
            )));
        }
        if m.weights != "none" {
            let file = backbone::weights_file(arch, &m.weights)?;
            backbone::load_pretrained(&vs, arch, &file)?;
        }
        let stages = bb.net.stages().clone();
        let trainable = m.strategy.trainable_layers(m.trainable_layers, stages.len());
        let freeze = freeze::apply_freeze(&vs, &stages, trainable, &HEAD_PREFIXES)?;
        bb.set_frozen_stages(freeze.frozen_stages);
        let channels_last = cfg.train.channels_last;
        if channels_last {
            to_channels_last(&vs);
        }
        Ok(Self { vs, backbone: bb, net, num_classes, img_size: cfg.data.img_size, freeze, channels_last })
    }

    /// Input normalisation.
    pub fn normalization(&self) -> Normalization {
        self.backbone.normalization()
    }

    /// `[N, 3, S, S]` normalised -> head output (YOLO: class logits `[N, A, nc]`, distance logits
    /// `[N, A, 4 * reg_max]`).
    pub fn forward(&self, xs: &Tensor, train: bool) -> HeadOutput {
        let xs = if self.channels_last { channels_last(xs) } else { xs.shallow_clone() };
        let feats = self.backbone.forward(&xs, train); // [C3, C4, C5]
        match &self.net {
            FamilyNet::Yolo { neck, head, .. } => {
                let p = neck.forward(&feats, train); // [P3, P4, P5], each [N, c, S/s, S/s]
                head.forward(&p, train)
            }
        }
    }

    /// The anchor points of an output.
    pub fn anchors(&self, out: &HeadOutput) -> AnchorPoints {
        match &self.net {
            FamilyNet::Yolo { head, .. } => head.anchors(out),
        }
    }

    /// Training loss of a batch `[N, 3, S, S]` against padded targets (input pixels).
    pub fn loss(&self, xs: &Tensor, targets: &Targets) -> LossOutput {
        let out = self.forward(xs, true);
        let anchors = self.anchors(&out);
        match &self.net {
            FamilyNet::Yolo { loss, .. } => loss.compute(&out, &anchors, targets),
        }
    }

    /// Detections (input pixels) for a batch `[N, 3, S, S]`, in eval mode without gradients.
    pub fn predict(&self, xs: &Tensor, cfg: &PostprocessConfig) -> Result<Vec<Vec<Detection>>> {
        let (boxes, scores) = tch::no_grad(|| {
            let out = self.forward(xs, false);
            let anchors = self.anchors(&out);
            match &self.net {
                FamilyNet::Yolo { head, .. } => postprocess::decode(&out, &anchors, head.reg_max),
            }
        });
        postprocess::postprocess(&boxes, &scores, cfg)
    }
}
