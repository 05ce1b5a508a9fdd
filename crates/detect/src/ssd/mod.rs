//! SSD (Liu et al. 2016) on any core backbone: the backbone's C3/C4/C5 maps plus [`extras::Extras`]
//! (strides 64, 128, ...), per-level [`head::SsdHead`] convs, default boxes from
//! [`DefaultBoxGenerator`], the SSD matching rule (best prior of each ground truth, then IoU >= 0.5),
//! hard-negative mining at 3:1 and smooth-L1 on offsets encoded with variances (0.1, 0.2).
//! Inference follows torchvision's `SSD.postprocess_detections`: softmax, per class score > 0.01 and
//! the best 400, class-wise NMS 0.45, the best 200 overall.
//!
//! Variable names: `backbone.*` (the core backbone's), `extras.*`, `head.{cls,reg}.*`. Labels are
//! 0-based foreground ids (see [`crate::model_io`]).

pub mod augment;
pub mod extras;
pub mod head;

use tch::{Kind, Reduction, Tensor, nn};
use tlcv_core::backbones::{Arch, Backbone, HEAD_GROUP, backbone};
use tlcv_core::onnx::{Graph, OnnxError, Value};

/// Prefixes of the variables that are never frozen.
pub const HEAD_PREFIXES: [&str; 2] = ["extras", "head"];

use crate::boxes::{BoxCoder, box_iou, clip_boxes};
use crate::config::ModelConfig;
use crate::error::DetectError;
use crate::export::{DenseHead, NmsRule, OnnxHead};
use crate::family::{BuildContext, DetectorFamily, LossScope, StepLosses, to_detections};
use crate::matching::{hard_negative_mask, ssd_match};
use crate::model_io::{Detections, Target, Targets};
use crate::nms::{NmsParams, batched_nms};
use crate::postprocess::{Detection, PostprocessConfig};
use crate::priors::DefaultBoxGenerator;
use extras::Extras;
use head::SsdHead;

/// SSD hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SsdConfig {
    /// Foreground classes.
    pub num_classes: i64,
    /// Output widths of the extra blocks (one level each).
    pub extra_channels: Vec<i64>,
    /// Smallest default-box scale (relative to the image).
    pub min_ratio: f64,
    /// Largest default-box scale.
    pub max_ratio: f64,
    /// Extra aspect ratios per level (as many lists as levels).
    pub aspect_ratios: Vec<Vec<f64>>,
    /// IoU from which a prior is positive.
    pub iou_thresh: f64,
    /// Mined negatives per positive.
    pub neg_pos_ratio: i64,
    /// Box-coder variances.
    pub variances: [f64; 2],
    /// Detections need a class probability above this.
    pub score_thresh: f64,
    /// Candidates kept per class before NMS.
    pub topk_candidates: i64,
    /// Class-wise NMS IoU threshold.
    pub nms_thresh: f64,
    /// Detections kept per image.
    pub detections_per_img: usize,
}

impl SsdConfig {
    /// Defaults for `num_classes` classes: three extra levels (512, 256, 256), scales 0.1..0.9,
    /// ratios `[2]` on the first and last two levels and `[2, 3]` elsewhere.
    pub fn new(num_classes: i64) -> Self {
        Self {
            num_classes,
            extra_channels: vec![512, 256, 256],
            min_ratio: 0.1,
            max_ratio: 0.9,
            aspect_ratios: vec![vec![2.0], vec![2.0, 3.0], vec![2.0, 3.0], vec![2.0, 3.0], vec![2.0], vec![2.0]],
            iou_thresh: 0.5,
            neg_pos_ratio: 3,
            variances: [0.1, 0.2],
            score_thresh: 0.01,
            topk_candidates: 400,
            nms_thresh: 0.45,
            detections_per_img: 200,
        }
    }
}

/// The detector (see the module docs).
#[derive(Debug)]
pub struct Ssd {
    backbone: Box<dyn Backbone>,
    extras: Extras,
    head: SsdHead,
    priors: DefaultBoxGenerator,
    coder: BoxCoder,
    /// Hyper-parameters.
    pub cfg: SsdConfig,
}

impl Ssd {
    /// Builds the model under `p` on the headless `arch` backbone.
    pub fn new(p: &nn::Path, arch: Arch, cfg: SsdConfig) -> Result<Self, DetectError> {
        if cfg.num_classes < 1 {
            return Err(DetectError::Invalid(format!("ssd: need at least one class, got {}", cfg.num_classes)));
        }
        let levels = 3 + cfg.extra_channels.len();
        if cfg.aspect_ratios.len() != levels {
            return Err(DetectError::Invalid(format!(
                "ssd: {} aspect-ratio lists for {levels} levels",
                cfg.aspect_ratios.len()
            )));
        }
        let bb = backbone(p / "backbone", arch).map_err(|e| DetectError::Invalid(format!("building backbone: {e}")))?;
        let mut channels: Vec<i64> = bb.feature_info().iter().map(|f| f.channels).collect();
        let h = p.set_group(HEAD_GROUP);
        let last = channels.last().copied().unwrap_or(0);
        let extras = Extras::new(&(&h / "extras"), last, &cfg.extra_channels)?;
        channels.extend(&cfg.extra_channels);
        let priors = DefaultBoxGenerator::new(cfg.aspect_ratios.clone(), cfg.min_ratio, cfg.max_ratio)?;
        let head = SsdHead::new(&(&h / "head"), &channels, &priors.num_anchors_per_location(), cfg.num_classes)?;
        Ok(Self { backbone: bb, extras, head, priors, coder: BoxCoder::ssd(cfg.variances), cfg })
    }

    /// `[N, 3, H, W]` -> `(logits [N, P, K + 1], deltas [N, P, 4], priors [P, 4] xyxy pixels)`.
    pub fn forward_raw(&self, images: &Tensor, train: bool) -> Result<(Tensor, Tensor, Tensor), DetectError> {
        let (h, w) = match images.size().as_slice() {
            [_, 3, h, w] if *h >= 32 && *w >= 32 => (*h, *w),
            s => {
                return Err(DetectError::Invalid(format!(
                    "ssd: images must be [N, 3, H, W] with H, W >= 32, got {s:?}"
                )));
            }
        };
        let mut feats = crate::backbone::float32(self.backbone.forward_features(images, train)); // C3, C4, C5
        let last = feats
            .last()
            .map(|t| t.shallow_clone())
            .ok_or_else(|| DetectError::Invalid("ssd: backbone gave no maps".into()))?;
        feats.extend(self.extras.forward(&last));
        let grids: Vec<(i64, i64)> = feats.iter().map(|f| (f.size()[2], f.size()[3])).collect();
        let (logits, deltas) = self.head.forward(&feats);
        let priors = self.priors.boxes((h, w), &grids)?.to_device(images.device());
        Ok((logits, deltas, priors))
    }

    /// Training losses for `[N, 3, H, W]` and one [`Target`] per image: `bbox_regression` (smooth-L1
    /// over positives / #positives) and `classification` (cross-entropy over positives and mined
    /// negatives / #positives), as torchvision's SSD.
    pub fn forward_train(&self, images: &Tensor, targets: &[Target]) -> Result<Vec<(String, Tensor)>, DetectError> {
        if targets.len() as i64 != images.size().first().copied().unwrap_or(-1) {
            return Err(DetectError::Invalid(format!("ssd: {} targets for images {:?}", targets.len(), images.size())));
        }
        let (logits, deltas, priors) = self.forward_raw(images, true)?;
        let (dev, np) = (priors.device(), priors.size()[0]);
        let mut cls_t = Vec::new();
        let mut box_loss = Tensor::zeros([], (Kind::Float, dev));
        for (i, t) in targets.iter().enumerate() {
            let m = crate::boxes::check_boxes(&t.boxes, "ssd target boxes")?;
            if t.labels.size() != [m] {
                return Err(DetectError::Invalid(format!("ssd: labels {:?} for {m} boxes", t.labels.size())));
            }
            if m > 0 && (t.labels.min().int64_value(&[]) < 0 || t.labels.max().int64_value(&[]) >= self.cfg.num_classes)
            {
                return Err(DetectError::Invalid(format!(
                    "ssd: target labels must lie in 0..{}",
                    self.cfg.num_classes
                )));
            }
            if m == 0 {
                cls_t.push(Tensor::zeros([np], (Kind::Int64, dev)));
                continue;
            }
            let gt = t.boxes.to_device(dev).to_kind(Kind::Float);
            let matched = ssd_match(&box_iou(&gt, &priors)?, self.cfg.iou_thresh)?; // [P]
            let fg = matched.ge(0).nonzero().view([-1]);
            let gidx = matched.index_select(0, &fg);
            let target = self.coder.encode(&gt.index_select(0, &gidx), &priors.index_select(0, &fg))?;
            box_loss += deltas.get(i as i64).index_select(0, &fg).smooth_l1_loss(&target, Reduction::Sum, 1.0);
            let labels = t.labels.to_device(dev).to_kind(Kind::Int64).index_select(0, &gidx) + 1;
            cls_t.push(Tensor::zeros([np], (Kind::Int64, dev)).index_copy(0, &fg, &labels));
        }
        let cls_t = Tensor::stack(&cls_t, 0); // [N, P]
        let k = logits.size()[2];
        let ce = logits
            .reshape([-1, k])
            .cross_entropy_loss::<Tensor>(&cls_t.view([-1]), None, Reduction::None, -100, 0.0)
            .view_as(&cls_t);
        let pos = cls_t.gt(0);
        let neg = hard_negative_mask(&ce, &pos, self.cfg.neg_pos_ratio)?;
        let n = pos.sum(Kind::Int64).int64_value(&[]).max(1) as f64;
        let cls_loss = (ce.masked_select(&pos).sum(Kind::Float) + ce.masked_select(&neg).sum(Kind::Float)) / n;
        Ok(vec![("bbox_regression".into(), box_loss / n), ("classification".into(), cls_loss)])
    }

    /// Inference on `[N, 3, H, W]`: one [`Detections`] per image, best first.
    pub fn predict(&self, images: &Tensor) -> Result<Vec<Detections>, DetectError> {
        let (boxes, scores) = self.decode(images)?;
        (0..boxes.size()[0]).map(|i| select_detections(&boxes.get(i), &scores.get(i), &self.cfg)).collect()
    }

    /// The network and the box decoding: boxes `[N, P, 4]` (clipped to the image, input pixels) and
    /// foreground probabilities `[N, P, K]` (softmax over background and classes, background dropped).
    pub fn decode(&self, images: &Tensor) -> Result<(Tensor, Tensor), DetectError> {
        let (logits, deltas, priors) = self.forward_raw(images, false)?;
        let (h, w) = (images.size()[2] as f64, images.size()[3] as f64);
        let k = logits.size()[2];
        let probs = logits.softmax(-1, Kind::Float).narrow(2, 1, k - 1);
        let boxes = (0..probs.size()[0])
            .map(|i| clip_boxes(&self.coder.decode(&deltas.get(i), &priors)?, h, w))
            .collect::<Result<Vec<_>, DetectError>>()?;
        Ok((Tensor::stack(&boxes, 0), probs))
    }
}

/// torchvision's `SSD.postprocess_detections` for one image: boxes `[P, 4]`, foreground
/// probabilities `[P, K]` -> per class the scores above `score_thresh`, at most `topk_candidates` of
/// them, class-wise NMS, the best `detections_per_img`.
pub fn select_detections(boxes: &Tensor, scores: &Tensor, cfg: &SsdConfig) -> Result<Detections, DetectError> {
    let (mut bs, mut ss, mut ls) = (Vec::new(), Vec::new(), Vec::new());
    for c in 0..scores.size()[1] {
        let sc = scores.select(1, c);
        let keep = sc.gt(cfg.score_thresh).nonzero().view([-1]);
        let sc = sc.index_select(0, &keep);
        let k = cfg.topk_candidates.min(sc.size()[0]);
        let (top, idx) = sc.topk(k, 0, true, true);
        bs.push(boxes.index_select(0, &keep.index_select(0, &idx)));
        ls.push(Tensor::full([k], c, (Kind::Int64, boxes.device())));
        ss.push(top);
    }
    let (b, s, l) = (Tensor::cat(&bs, 0), Tensor::cat(&ss, 0), Tensor::cat(&ls, 0));
    let kept = batched_nms(&b, &s, &l, NmsParams::new(cfg.nms_thresh, cfg.detections_per_img))?.to_device(b.device());
    Ok(Detections {
        boxes: b.index_select(0, &kept),
        scores: s.index_select(0, &kept),
        labels: l.index_select(0, &kept),
    })
}

/// Builds the family from `[model.ssd]`.
pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn DetectorFamily>, DetectError> {
    let s = &ctx.cfg.model.ssd;
    let cfg = SsdConfig {
        extra_channels: s.extra_channels.clone(),
        min_ratio: s.min_ratio,
        max_ratio: s.max_ratio,
        aspect_ratios: s.aspect_ratios.clone(),
        neg_pos_ratio: s.neg_pos_ratio,
        ..SsdConfig::new(ctx.num_classes)
    };
    Ok(Box::new(Ssd::new(ctx.root, ctx.arch, cfg)?))
}

impl DetectorFamily for Ssd {
    fn forward_train(&self, xs: &Tensor, targets: &Targets, _: LossScope<'_>) -> Result<StepLosses, DetectError> {
        Ok(StepLosses::sum(Ssd::forward_train(self, xs, &targets.per_image())?, xs.device()))
    }

    fn predict(&self, xs: &Tensor, cfg: &PostprocessConfig) -> Result<Vec<Vec<Detection>>, DetectError> {
        tch::no_grad(|| Ssd::predict(self, xs))?.iter().map(|d| to_detections(d, cfg)).collect()
    }

    fn backbone(&self) -> &dyn Backbone {
        self.backbone.as_ref()
    }

    fn set_frozen_stages(&mut self, n: usize) {
        self.backbone.set_frozen_stages(n);
    }

    fn backbone_prefix(&self) -> &'static str {
        "backbone"
    }

    fn head_prefixes(&self) -> &'static [&'static str] {
        &HEAD_PREFIXES
    }

    /// `model.ssd.trainable_layers` when set (at most the backbone's stages): SSD predicts straight
    /// from C3 and C4, so the stages that make them must adapt.
    fn trainable_layers(&self, model: &ModelConfig) -> usize {
        model.ssd.trainable_layers.map_or(model.trainable_layers, |t| t.min(self.backbone.stages().len()))
    }

    fn decoded(&self, xs: &Tensor) -> Result<(Tensor, Tensor), DetectError> {
        tch::no_grad(|| self.decode(xs))
    }

    fn to_onnx(&self, g: &mut Graph, x: &Value, _: Option<&PostprocessConfig>) -> Result<OnnxHead, DetectError> {
        let (boxes, probs) = self.network_onnx(g, x)?;
        let k = probs.dim(2).unwrap_or(1);
        let scores = g.slice(&probs, 2, 1, k); // foreground only
        let c = &self.cfg;
        let nms = NmsRule::PerClass {
            score_thresh: c.score_thresh,
            topk: c.topk_candidates,
            iou: c.nms_thresh,
            max_det: c.detections_per_img,
        };
        Ok(OnnxHead::Dense(DenseHead { boxes, scores, nms, strides: None }))
    }
}

impl Ssd {
    /// The ONNX nodes of [`Ssd::decode`] before the background column is dropped: `[N, 3, H, W]` ->
    /// boxes `[N, P, 4]` (decoded against the default boxes and clipped to the image, input pixels)
    /// and class probabilities `[N, P, K + 1]` (softmax, background first). The default boxes are
    /// constants of the export's input size.
    pub fn network_onnx(&self, g: &mut Graph, x: &Value) -> Result<(Value, Value), OnnxError> {
        let (Some(h), Some(w)) = (x.dim(2), x.dim(3)) else {
            return Err(OnnxError::Unsupported("SSD export needs a fixed input size".into()));
        };
        let mut feats = self.backbone.features_onnx(g, x)?;
        let last = feats.last().cloned().ok_or_else(|| OnnxError::Unsupported("ssd: backbone gave no maps".into()))?;
        feats.extend(self.extras.to_onnx(g, &last)?);
        let grids: Vec<(i64, i64)> = feats.iter().map(|f| (f.dim(2).unwrap_or(0), f.dim(3).unwrap_or(0))).collect();
        let (logits, deltas) = self.head.to_onnx(g, &feats)?;
        let priors = self.priors.boxes((h, w), &grids).map_err(|e| OnnxError::Unsupported(e.to_string()))?;
        let p = priors.size()[0];
        // The coder's decode, column for column: centre and size of the priors are constants.
        let pw = priors.select(1, 2) - priors.select(1, 0);
        let ph = priors.select(1, 3) - priors.select(1, 1);
        let pcx = (priors.select(1, 0) + priors.select(1, 2)) * 0.5;
        let pcy = (priors.select(1, 1) + priors.select(1, 3)) * 0.5;
        let [wx, wy, ww, wh] = self.coder.weights;
        let col = |g: &mut Graph, t: &Tensor| -> Result<Value, OnnxError> {
            g.const_float(&Vec::<f32>::try_from(t.to_kind(Kind::Float))?, &[p, 1])
        };
        let (acx, acy, aw, ah) = (col(g, &pcx)?, col(g, &pcy)?, col(g, &pw)?, col(g, &ph)?);
        let d: Vec<Value> = (0..4).map(|i| g.slice(&deltas, 2, i, i + 1)).collect(); // [N, P, 1] each
        let cx = g.scalar("Div", &d[0], wx as f32)?;
        let cx = g.binary("Mul", &cx, &aw);
        let cx = g.binary("Add", &cx, &acx);
        let cy = g.scalar("Div", &d[1], wy as f32)?;
        let cy = g.binary("Mul", &cy, &ah);
        let cy = g.binary("Add", &cy, &acy);
        let size = |g: &mut Graph, dd: &Value, wgt: f64, a: &Value| -> Result<Value, OnnxError> {
            let t = g.scalar("Div", dd, wgt as f32)?;
            let t = g.clip(&t, f32::MIN, self.coder.scale_clamp as f32)?;
            let t = g.unary("Exp", &t);
            Ok(g.binary("Mul", &t, a))
        };
        let bw = size(g, &d[2], ww, &aw)?;
        let bh = size(g, &d[3], wh, &ah)?;
        let half_w = g.scalar("Mul", &bw, 0.5)?;
        let half_h = g.scalar("Mul", &bh, 0.5)?;
        let x1 = g.binary("Sub", &cx, &half_w);
        let y1 = g.binary("Sub", &cy, &half_h);
        let x2 = g.binary("Add", &cx, &half_w);
        let y2 = g.binary("Add", &cy, &half_h);
        let (wf, hf) = (w as f32, h as f32);
        let x1 = g.clip(&x1, 0.0, wf)?;
        let y1 = g.clip(&y1, 0.0, hf)?;
        let x2 = g.clip(&x2, 0.0, wf)?;
        let y2 = g.clip(&y2, 0.0, hf)?;
        let boxes = g.concat(&[&x1, &y1, &x2, &y2], 2); // [N, P, 4]
        let probs = g.softmax(&logits, 2); // [N, P, K + 1]
        Ok((boxes, probs))
    }
}
