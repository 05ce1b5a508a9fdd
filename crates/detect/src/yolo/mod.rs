//! The YOLO-style family, after Ultralytics YOLOv8 (Jocher et al. 2023) on any core backbone:
//! the backbone's C3/C4/C5 → [`neck`] (FPN + PAN) → [`head`] (decoupled, anchor-free, a DFL
//! distribution per box edge) over the [`anchors`] points; [`assigner`] (task-aligned assignment,
//! TOOD) and [`loss`] (BCE, CIoU, DFL) for training; decoding plus the shared class-aware NMS of
//! [`crate::postprocess`] for prediction.
//!
//! Variable names: `backbone.*` (the core backbone's, group 0), `neck.*` and `head.{box,cls}.*`
//! (group 1).

pub mod anchors;
pub mod assigner;
pub mod head;
pub mod loss;
pub mod neck;

use tch::{Tensor, nn};
use tlcv_core::backbones::{self, Arch, Backbone, FeatureInfo};
use tlcv_core::onnx::{Graph, Value};

use crate::backbone::float32;
use crate::error::{DetectError, Result};
use crate::export::{DenseHead, NmsRule, OnnxHead};
use crate::family::{BuildContext, DetectorFamily, LossScope, StepLosses};
use crate::model_io::Targets;
use crate::postprocess::{self, Detection, PostprocessConfig};
use head::YoloHead;
use loss::YoloLoss;
use neck::PanFpn;

/// Variable prefix of the backbone.
pub const BACKBONE_PREFIX: &str = "backbone";
/// Prefixes of the variables that are never frozen.
pub const HEAD_PREFIXES: [&str; 2] = ["neck", "head"];

/// A core backbone's C3/C4/C5 features for the neck, run without autograd when fully frozen.
#[derive(Debug)]
pub struct BackboneAdapter {
    /// The headless network.
    pub net: Box<dyn Backbone>,
    /// Its architecture.
    pub arch: Arch,
    /// Whether every stage is frozen (then forward runs without autograd).
    pub all_frozen: bool,
}

impl BackboneAdapter {
    /// Builds `arch` under `p / "backbone"` (parameter group 0).
    pub fn new(p: &nn::Path, arch: Arch) -> Result<Self> {
        let net = backbones::backbone(p / BACKBONE_PREFIX, arch)?;
        Ok(Self { net, arch, all_frozen: false })
    }

    /// Strides and channels of C3, C4, C5.
    pub fn feature_info(&self) -> Vec<FeatureInfo> {
        self.net.feature_info()
    }

    /// Marks the first `n` stages frozen (their batch norms then run in eval mode).
    pub fn set_frozen_stages(&mut self, n: usize) {
        self.net.set_frozen_stages(n);
        self.all_frozen = n >= self.net.stages().len();
    }

    /// `[N, 3, H, W]` normalised -> `[C3 [N, c3, H/8, W/8], C4 [N, c4, H/16, W/16], C5 [N, c5, H/32, W/32]]`.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        float32(if self.all_frozen {
            // Nothing upstream needs gradients: skip building the graph (and the BNs run in eval mode).
            tch::no_grad(|| self.net.forward_features(xs, false))
        } else {
            self.net.forward_features(xs, train)
        })
    }
}

/// The network: backbone C3..C5 -> FPN+PAN neck -> decoupled anchor-free head, with its TAL +
/// BCE/CIoU/DFL loss.
#[derive(Debug)]
pub struct YoloNet {
    /// The backbone (skips autograd when fully frozen).
    pub backbone: BackboneAdapter,
    /// The neck.
    pub neck: PanFpn,
    /// The head.
    pub head: YoloHead,
    /// The loss.
    pub loss: YoloLoss,
}

/// Builds the family from `model.{neck_channels, reg_max}` and `[loss]`.
pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn DetectorFamily>> {
    let m = &ctx.cfg.model;
    if m.reg_max < 2 {
        return Err(DetectError::Invalid(format!("model.reg_max must be at least 2, got {}", m.reg_max)));
    }
    let backbone = BackboneAdapter::new(ctx.root, ctx.arch)?;
    let info = backbone.feature_info();
    let chans: Vec<i64> = info.iter().map(|f| f.channels).collect();
    let strides: Vec<i64> = info.iter().map(|f| f.stride).collect();
    let hp = ctx.root.set_group(backbones::HEAD_GROUP);
    let neck = PanFpn::new(&(&hp / "neck"), &chans, m.neck_channels)?;
    let head =
        YoloHead::new(&(&hp / "head"), (m.neck_channels, ctx.num_classes), m.reg_max, &strides, ctx.cfg.data.img_size)?;
    let loss = YoloLoss { cfg: ctx.cfg.loss.clone(), reg_max: m.reg_max };
    Ok(Box::new(YoloNet { backbone, neck, head, loss }))
}

impl DetectorFamily for YoloNet {
    fn forward_train(&self, xs: &Tensor, targets: &Targets, scope: LossScope<'_>) -> Result<StepLosses> {
        let feats = self.backbone.forward(xs, true); // [C3, C4, C5]
        let p = self.neck.forward(&feats, true); // [P3, P4, P5], each [N, c, S/s, S/s]
        let out = self.head.forward(&p, true);
        let anchors = self.head.anchors(&out);
        Ok(self.loss.compute(&out, &anchors, targets, scope)?.into())
    }

    fn predict(&self, xs: &Tensor, cfg: &PostprocessConfig) -> Result<Vec<Vec<Detection>>> {
        let (boxes, scores) = self.decoded(xs)?;
        postprocess::postprocess(&boxes, &scores, cfg)
    }

    fn decoded(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok(tch::no_grad(|| {
            let feats = self.backbone.forward(xs, false);
            let out = self.head.forward(&self.neck.forward(&feats, false), false);
            head::decode(&out, &self.head.anchors(&out), self.head.reg_max) // [N, A, 4], [N, A, nc]
        }))
    }

    fn to_onnx(&self, g: &mut Graph, x: &Value, pp: Option<&PostprocessConfig>) -> Result<OnnxHead> {
        let feats = self.backbone.net.features_onnx(g, x)?;
        let p = self.neck.to_onnx(g, &feats)?;
        let (boxes, scores) = self.head.to_onnx(g, &p)?;
        let strides = Some(self.head.strides.clone());
        let max_candidates = pp.copied().unwrap_or_default().max_candidates;
        Ok(OnnxHead::Dense(DenseHead { boxes, scores, nms: NmsRule::BestClass { max_candidates }, strides }))
    }

    fn backbone(&self) -> &dyn Backbone {
        self.backbone.net.as_ref()
    }

    fn set_frozen_stages(&mut self, n: usize) {
        self.backbone.set_frozen_stages(n);
    }

    fn backbone_prefix(&self) -> &'static str {
        BACKBONE_PREFIX
    }

    fn head_prefixes(&self) -> &'static [&'static str] {
        &HEAD_PREFIXES
    }
}
