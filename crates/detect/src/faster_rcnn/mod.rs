//! Faster R-CNN (Ren et al. 2015, "Faster R-CNN: Towards Real-Time Object Detection with Region
//! Proposal Networks") with an FPN (Lin et al. 2017). On ResNet-50 with the default
//! [`FasterRcnnConfig`] it is laid out exactly like torchvision's `fasterrcnn_resnet50_fpn` (v1), so
//! its state dicts load strictly; [`FasterRcnn::with_backbone`] puts the same FPN, RPN and box
//! branch on any core backbone's C2..C5 maps (under `backbone.body.*`, with that family's names).
//!
//! | prefix | module |
//! |---|---|
//! | `backbone.body.*` | ResNet-50 trunk (`conv1` .. `layer4`; batch norms always in eval mode, like `FrozenBatchNorm2d`) |
//! | `backbone.fpn.{inner,layer}_blocks.{0..3}.0.*` | [`fpn::Fpn`] over C2..C5, plus a max-pool level |
//! | `rpn.head.{conv.0.0,cls_logits,bbox_pred}.*` | [`rpn::Rpn`] |
//! | `roi_heads.box_head.{fc6,fc7}.*`, `roi_heads.box_predictor.{cls_score,bbox_pred}.*` | [`roi_heads::RoiHeads`] |
//!
//! The model takes already normalised, already resized images (no `GeneralizedRCNNTransform`):
//! every image of a batch has the batch's size, and boxes are in its pixels. Labels are 0-based
//! foreground ids (see [`crate::model_io`]); the predictor has one extra background output at 0.

pub mod fpn;
mod onnx;
pub mod roi_heads;
pub mod rpn;

use tch::{Tensor, nn};
use tlcv_core::backbones::{Arch, Backbone, HEAD_GROUP, backbone};
use tlcv_core::onnx::{Graph, Value};

use crate::error::DetectError;
use crate::export::OnnxHead;
use crate::family::{BuildContext, DetectorFamily, LossScope, StepLosses, to_detections};
use crate::model_io::{Detections, Target, Targets};
use crate::postprocess::{Detection, PostprocessConfig};
use crate::priors::AnchorGenerator;
use fpn::Fpn;
use roi_heads::{RoiHeads, RoiHeadsConfig};
use rpn::{Rpn, RpnConfig};

/// torchvision's FPN width.
pub const FPN_CHANNELS: i64 = 256;

/// Names of the variables outside the trunk (never frozen).
pub const HEAD_PREFIXES: [&str; 3] = ["backbone.fpn", "rpn", "roi_heads"];

/// Faster R-CNN hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct FasterRcnnConfig {
    /// Foreground classes (the predictor gets one more output for background).
    pub num_classes: i64,
    /// Region proposal network.
    pub rpn: RpnConfig,
    /// Box branch.
    pub roi_heads: RoiHeadsConfig,
    /// Width of every FPN level (and so of the RPN and the pooled RoIs).
    pub fpn_channels: i64,
    /// Anchors of the RPN, one size per FPN level including the pooled one (pixels), each with
    /// ratios 0.5, 1, 2: five for P2..P6, four for P3..P6.
    pub anchor_sizes: Vec<f64>,
    /// Build the FPN from C2 (stride 4) as torchvision does; `false` starts at C3 (stride 8), which
    /// drops the costliest level when objects are not tiny.
    pub fpn_from_c2: bool,
}

impl FasterRcnnConfig {
    /// torchvision's defaults for `num_classes` foreground classes.
    pub fn new(num_classes: i64) -> Self {
        Self {
            num_classes,
            rpn: RpnConfig::default(),
            roi_heads: RoiHeadsConfig::default(),
            fpn_channels: FPN_CHANNELS,
            anchor_sizes: vec![32.0, 64.0, 128.0, 256.0, 512.0],
            fpn_from_c2: true,
        }
    }
}

/// The detector (see the module docs).
#[derive(Debug)]
pub struct FasterRcnn {
    body: Box<dyn Backbone>,
    fpn: Fpn,
    rpn: Rpn,
    roi_heads: RoiHeads,
    from_c2: bool,
}

fn check_images(images: &Tensor) -> Result<(i64, i64), DetectError> {
    match images.size().as_slice() {
        [_, 3, h, w] if *h >= 32 && *w >= 32 => Ok((*h, *w)),
        s => Err(DetectError::Invalid(format!("faster_rcnn: images must be [N, 3, H, W] with H, W >= 32, got {s:?}"))),
    }
}

impl FasterRcnn {
    /// Builds torchvision's ResNet-50 model under `p` (use the root of a `VarStore`: names start
    /// with `backbone.`, `rpn.`, `roi_heads.`). The trunk is in parameter group 0, the rest in group 1.
    pub fn new(p: &nn::Path, cfg: FasterRcnnConfig) -> Result<Self, DetectError> {
        Self::with_backbone(p, Arch::Resnet50, cfg)
    }

    /// Builds the model on the headless `arch` trunk (see [`FasterRcnn::new`] for the names).
    pub fn with_backbone(p: &nn::Path, arch: Arch, cfg: FasterRcnnConfig) -> Result<Self, DetectError> {
        if cfg.num_classes < 1 {
            return Err(DetectError::Invalid(format!("faster_rcnn: need at least one class, got {}", cfg.num_classes)));
        }
        if cfg.fpn_channels < 1 {
            return Err(DetectError::Invalid(format!(
                "faster_rcnn: fpn_channels must be positive, got {}",
                cfg.fpn_channels
            )));
        }
        let levels = if cfg.fpn_from_c2 { 5 } else { 4 }; // with the pooled level
        if cfg.anchor_sizes.len() != levels || cfg.anchor_sizes.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(DetectError::Invalid(format!(
                "faster_rcnn: anchor_sizes needs {levels} positive sizes (one per FPN level, {}), got {:?}",
                if cfg.fpn_from_c2 { "P2..P6" } else { "P3..P6" },
                cfg.anchor_sizes
            )));
        }
        let body = backbone(p / "backbone" / "body", arch)
            .map_err(|e| DetectError::Invalid(format!("building backbone: {e}")))?;
        let mut in_ch = if cfg.fpn_from_c2 { vec![body.low_level_info().channels] } else { Vec::new() };
        in_ch.extend(body.feature_info().iter().map(|f| f.channels)); // [C2,] C3, C4, C5
        let h = p.set_group(HEAD_GROUP);
        let fpn = Fpn::new(&(&h / "backbone" / "fpn"), &in_ch, cfg.fpn_channels)?;
        let sizes = cfg.anchor_sizes.iter().map(|s| vec![*s]).collect();
        let anchors = AnchorGenerator::new(sizes, vec![vec![0.5, 1.0, 2.0]; levels])?;
        let rpn = Rpn::new(&(&h / "rpn"), cfg.fpn_channels, anchors, cfg.rpn)?;
        let roi_heads = RoiHeads::new(&(&h / "roi_heads"), cfg.fpn_channels, cfg.num_classes, cfg.roi_heads)?;
        Ok(Self { body, fpn, rpn, roi_heads, from_c2: cfg.fpn_from_c2 })
    }

    /// `[N, 3, H, W]` -> FPN maps `[P2, P3, P4, P5, pool]` (or from P3), each `[N, fpn_channels, H/s,
    /// W/s]` (s = 4 or 8 .. 64).
    pub fn features(&self, images: &Tensor) -> Result<Vec<Tensor>, DetectError> {
        check_images(images)?;
        // Batch norms stay in eval mode (FrozenBatchNorm2d semantics) in training too.
        let c = crate::backbone::float32(if self.from_c2 {
            self.body.forward_features_with_low(images, false) // [C2, C3, C4, C5]
        } else {
            self.body.forward_features(images, false) // [C3, C4, C5]
        });
        self.fpn.forward(&c)
    }

    /// RPN proposals per image at inference: `([P_i, 4] boxes, [P_i] objectness)`, best first.
    pub fn proposals(&self, images: &Tensor) -> Result<Vec<(Tensor, Tensor)>, DetectError> {
        let size = check_images(images)?;
        let f = self.features(images)?;
        let out = self.rpn.run(&f, size)?;
        self.rpn.proposals(&out, size, false)
    }

    /// Inference on `[N, 3, H, W]`: one [`Detections`] per image (at most 100, best first).
    pub fn predict(&self, images: &Tensor) -> Result<Vec<Detections>, DetectError> {
        let size = check_images(images)?;
        let f = self.features(images)?;
        let out = self.rpn.run(&f, size)?;
        let props: Vec<Tensor> = self.rpn.proposals(&out, size, false)?.into_iter().map(|(b, _)| b).collect();
        self.roi_heads.detect(&f, &props, size)
    }

    /// Training losses for `[N, 3, H, W]` and one [`Target`] per image, named like torchvision's:
    /// `loss_objectness`, `loss_rpn_box_reg`, `loss_classifier`, `loss_box_reg` (each a scalar).
    pub fn forward_train(&self, images: &Tensor, targets: &[Target]) -> Result<Vec<(String, Tensor)>, DetectError> {
        let size = check_images(images)?;
        if targets.len() as i64 != images.size()[0] {
            return Err(DetectError::Invalid(format!(
                "faster_rcnn: {} targets for {} images",
                targets.len(),
                images.size()[0]
            )));
        }
        for t in targets {
            crate::boxes::check_boxes(&t.boxes, "target boxes")?;
            if t.labels.size() != [t.boxes.size()[0]] {
                return Err(DetectError::Invalid(format!(
                    "faster_rcnn: labels {:?} for boxes {:?}",
                    t.labels.size(),
                    t.boxes.size()
                )));
            }
            let nc = self.roi_heads.num_outputs - 1;
            if t.labels.numel() > 0 && (t.labels.min().int64_value(&[]) < 0 || t.labels.max().int64_value(&[]) >= nc) {
                return Err(DetectError::Invalid(format!("faster_rcnn: target labels must lie in 0..{nc}")));
            }
        }
        let f = self.features(images)?;
        let out = self.rpn.run(&f, size)?;
        let props: Vec<Tensor> = self.rpn.proposals(&out, size, true)?.into_iter().map(|(b, _)| b).collect();
        let gt: Vec<Tensor> = targets.iter().map(|t| t.boxes.shallow_clone()).collect();
        let (obj, rpn_box) = self.rpn.losses(&out, &gt)?;
        let (cls, box_reg) = self.roi_heads.losses(&f, &props, targets, size)?;
        Ok(vec![
            ("loss_objectness".into(), obj),
            ("loss_rpn_box_reg".into(), rpn_box),
            ("loss_classifier".into(), cls),
            ("loss_box_reg".into(), box_reg),
        ])
    }
}

/// Builds the family from `[model.faster_rcnn]`.
pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn DetectorFamily>, DetectError> {
    let f = &ctx.cfg.model.faster_rcnn;
    let mut fc = FasterRcnnConfig::new(ctx.num_classes);
    fc.fpn_channels = f.fpn_channels;
    fc.anchor_sizes = f.anchor_sizes.clone();
    fc.fpn_from_c2 = f.fpn_from_c2;
    fc.roi_heads.representation_size = f.representation_size;
    fc.roi_heads.batch_size_per_image = f.roi_batch_per_image;
    fc.rpn.post_nms_top_n_train = f.proposals_train;
    fc.rpn.pre_nms_top_n_train = f.proposals_train;
    fc.rpn.post_nms_top_n_test = f.proposals_test;
    fc.rpn.pre_nms_top_n_test = f.proposals_test;
    Ok(Box::new(FasterRcnn::with_backbone(ctx.root, ctx.arch, fc)?))
}

impl DetectorFamily for FasterRcnn {
    fn forward_train(&self, xs: &Tensor, targets: &Targets, _: LossScope<'_>) -> Result<StepLosses, DetectError> {
        Ok(StepLosses::sum(FasterRcnn::forward_train(self, xs, &targets.per_image())?, xs.device()))
    }

    fn predict(&self, xs: &Tensor, cfg: &PostprocessConfig) -> Result<Vec<Vec<Detection>>, DetectError> {
        tch::no_grad(|| FasterRcnn::predict(self, xs))?.iter().map(|d| to_detections(d, cfg)).collect()
    }

    fn decoded(&self, _: &Tensor) -> Result<(Tensor, Tensor), DetectError> {
        Err(DetectError::Invalid(
            "faster-rcnn has no dense head: its boxes come out of the region proposals and RoI heads".into(),
        ))
    }

    fn to_onnx(&self, g: &mut Graph, x: &Value, pp: Option<&PostprocessConfig>) -> Result<OnnxHead, DetectError> {
        let Some(pp) = pp else {
            return Err(DetectError::Invalid(
                "faster-rcnn exports always end with its detections (NMS is part of the two-stage network): add --nms"
                    .into(),
            ));
        };
        self.detections_onnx(g, x, pp)
    }

    fn backbone(&self) -> &dyn Backbone {
        self.body.as_ref()
    }

    fn set_frozen_stages(&mut self, n: usize) {
        self.body.set_frozen_stages(n);
    }

    fn backbone_prefix(&self) -> &'static str {
        "backbone.body"
    }

    fn head_prefixes(&self) -> &'static [&'static str] {
        &HEAD_PREFIXES
    }
}
