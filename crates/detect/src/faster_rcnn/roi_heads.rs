//! The Fast R-CNN box branch of torchvision's `RoIHeads`: multi-scale RoIAlign (7x7, sampling 2)
//! on P2..P5, `box_head.fc6`/`fc7` (ReLU MLP, 1024 wide by default), `box_predictor.cls_score`/`bbox_pred`
//! (class-specific deltas, coder weights 10, 10, 5, 5), the training losses on 512 proposals per
//! image (25% positives) and the inference post-processing (score > 0.05, per-class NMS 0.5,
//! 100 detections).

use tch::{Kind, Reduction, Tensor, nn};
use tlcv_core::backbones::layers::{Linear, LinearInit};

use crate::boxes::{BoxCoder, box_iou, clip_boxes};
use crate::error::DetectError;
use crate::matching::{BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, BalancedPositiveNegativeSampler, Matcher};
use crate::model_io::{Detections, Target};
use crate::nms::{NmsParams, batched_nms};
use crate::roi_align::MultiScaleRoiAlign;

/// Box-branch hyper-parameters (torchvision's defaults in [`Default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RoiHeadsConfig {
    /// Proposals with IoU >= this are positives.
    pub fg_iou_thresh: f64,
    /// Proposals with IoU < this are background.
    pub bg_iou_thresh: f64,
    /// Proposals sampled per image for the loss.
    pub batch_size_per_image: i64,
    /// Largest share of positives among them.
    pub positive_fraction: f64,
    /// Delta weights `(wx, wy, ww, wh)`.
    pub bbox_reg_weights: [f64; 4],
    /// Detections need a class probability above this.
    pub score_thresh: f64,
    /// Per-class NMS IoU threshold.
    pub nms_thresh: f64,
    /// Detections kept per image.
    pub detections_per_img: usize,
    /// Width of the two-layer MLP box head (`fc6`, `fc7`).
    pub representation_size: i64,
}

impl Default for RoiHeadsConfig {
    fn default() -> Self {
        Self {
            fg_iou_thresh: 0.5,
            bg_iou_thresh: 0.5,
            batch_size_per_image: 512,
            positive_fraction: 0.25,
            bbox_reg_weights: [10.0, 10.0, 5.0, 5.0],
            score_thresh: 0.05,
            nms_thresh: 0.5,
            detections_per_img: 100,
            representation_size: 1024,
        }
    }
}

/// The box branch.
#[derive(Debug)]
pub struct RoiHeads {
    pool: MultiScaleRoiAlign,
    fc6: Linear,
    fc7: Linear,
    cls_score: Linear,
    bbox_pred: Linear,
    coder: BoxCoder,
    /// Classes of the predictor including background (index 0).
    pub(crate) num_outputs: i64,
    /// Hyper-parameters.
    pub cfg: RoiHeadsConfig,
}

impl RoiHeads {
    /// Creates `p.box_head.{fc6,fc7}` and `p.box_predictor.{cls_score,bbox_pred}` for
    /// `num_classes` foreground classes on `channels`-wide maps.
    pub fn new(p: &nn::Path, channels: i64, num_classes: i64, cfg: RoiHeadsConfig) -> Result<Self, DetectError> {
        let pool = MultiScaleRoiAlign::new((7, 7), 2);
        let err = |e: tlcv_core::Error| DetectError::Invalid(format!("building roi_heads: {e}"));
        let lin = |q: nn::Path, i: i64, o: i64| Linear::new(&q, i, o, LinearInit::Default).map_err(err);
        let head = p / "box_head";
        let pred = p / "box_predictor";
        let k = num_classes + 1;
        let r = cfg.representation_size;
        if r < 1 {
            return Err(DetectError::Invalid(format!("roi_heads: representation_size must be positive, got {r}")));
        }
        Ok(Self {
            pool,
            fc6: lin(&head / "fc6", channels * 49, r)?,
            fc7: lin(&head / "fc7", r, r)?,
            cls_score: lin(&pred / "cls_score", r, k)?,
            bbox_pred: lin(&pred / "bbox_pred", r, k * 4)?,
            coder: BoxCoder::new(cfg.bbox_reg_weights),
            num_outputs: k,
            cfg,
        })
    }

    /// Pools and classifies `proposals` (one `[P_i, 4]` per image) -> `(logits [P, K+1], deltas [P, 4(K+1)])`.
    fn head(
        &self,
        features: &[Tensor],
        proposals: &[Tensor],
        image_size: (i64, i64),
    ) -> Result<(Tensor, Tensor), DetectError> {
        // Every FPN level but the pooled one, as torchvision's featmap_names.
        let levels = &features[..features.len().saturating_sub(1).max(1)];
        let x = self.pool.forward(levels, proposals, image_size)?; // [P, C, 7, 7]
        let x = self.fc6.forward(&x.flatten(1, -1)).relu(); // [P, R]
        let x = self.fc7.forward(&x).relu();
        Ok((self.cls_score.forward(&x), self.bbox_pred.forward(&x)))
    }

    /// Inference: final detections per image (labels 0-based foreground ids).
    pub fn detect(
        &self,
        features: &[Tensor],
        proposals: &[Tensor],
        image_size: (i64, i64),
    ) -> Result<Vec<Detections>, DetectError> {
        let (logits, deltas) = self.head(features, proposals, image_size)?;
        let k = self.num_outputs;
        let probs = logits.softmax(-1, Kind::Float);
        let mut out = Vec::with_capacity(proposals.len());
        let mut offset = 0;
        for props in proposals {
            let p = props.size()[0];
            let d = deltas.narrow(0, offset, p).reshape([p * k, 4]);
            let anchors = props.unsqueeze(1).expand([p, k, 4], false).reshape([p * k, 4]);
            let boxes = clip_boxes(&self.coder.decode(&d, &anchors)?, image_size.0 as f64, image_size.1 as f64)?;
            let boxes = boxes.view([p, k, 4]).narrow(1, 1, k - 1).reshape([-1, 4]); // drop background
            let scores = probs.narrow(0, offset, p).narrow(1, 1, k - 1).reshape([-1]);
            let labels = Tensor::arange(k - 1, (Kind::Int64, boxes.device())).repeat([p]); // 0-based
            let wh = boxes.narrow(1, 2, 2) - boxes.narrow(1, 0, 2);
            let ok = scores
                .gt(self.cfg.score_thresh)
                .logical_and(&wh.select(1, 0).ge(1e-2))
                .logical_and(&wh.select(1, 1).ge(1e-2));
            let keep = ok.nonzero().view([-1]);
            let (b, s, l) =
                (boxes.index_select(0, &keep), scores.index_select(0, &keep), labels.index_select(0, &keep));
            let kept = batched_nms(&b, &s, &l, NmsParams::new(self.cfg.nms_thresh, self.cfg.detections_per_img))?
                .to_device(b.device());
            out.push(Detections {
                boxes: b.index_select(0, &kept),
                scores: s.index_select(0, &kept),
                labels: l.index_select(0, &kept),
            });
            offset += p;
        }
        Ok(out)
    }

    /// Training: `(classifier CE, box smooth-L1 with beta 1/9)` on a balanced sample of the proposals
    /// plus the ground-truth boxes themselves; the box loss is summed over positives (the delta of
    /// the true class) and divided by the number of sampled proposals.
    pub fn losses(
        &self,
        features: &[Tensor],
        proposals: &[Tensor],
        targets: &[Target],
        image_size: (i64, i64),
    ) -> Result<(Tensor, Tensor), DetectError> {
        let matcher = Matcher::new(self.cfg.fg_iou_thresh, self.cfg.bg_iou_thresh, false)?;
        let sampler = BalancedPositiveNegativeSampler {
            batch_size_per_image: self.cfg.batch_size_per_image,
            positive_fraction: self.cfg.positive_fraction,
        };
        let (mut props, mut labels, mut gts) = (Vec::new(), Vec::new(), Vec::new());
        for (p, t) in proposals.iter().zip(targets) {
            let (dev, kind) = (p.device(), p.kind());
            let gt = t.boxes.to_device(dev).to_kind(kind);
            let p = Tensor::cat(&[p.shallow_clone(), gt.shallow_clone()], 0);
            let n = p.size()[0];
            let (lab, gidx) = if gt.size()[0] == 0 {
                (Tensor::zeros([n], (Kind::Int64, dev)), Tensor::zeros([n], (Kind::Int64, dev)))
            } else {
                let m = matcher.assign(&box_iou(&gt, &p)?)?;
                let g = m.clamp_min(0);
                let lab = t.labels.to_device(dev).to_kind(Kind::Int64).index_select(0, &g) + 1; // 0 = background
                let lab = lab.masked_fill(&m.eq(BELOW_LOW_THRESHOLD), 0).masked_fill(&m.eq(BETWEEN_THRESHOLDS), -1);
                (lab, g)
            };
            let (pos, neg) = sampler.sample(&lab)?;
            let idx = pos.logical_or(&neg).nonzero().view([-1]);
            let gt_or_dummy = if gt.size()[0] == 0 { Tensor::zeros([1, 4], (kind, dev)) } else { gt };
            props.push(p.index_select(0, &idx));
            labels.push(lab.index_select(0, &idx));
            gts.push(gt_or_dummy.index_select(0, &gidx.index_select(0, &idx)));
        }
        let (logits, deltas) = self.head(features, &props, image_size)?;
        let labels = Tensor::cat(&labels, 0);
        let cls_loss = logits.cross_entropy_loss::<Tensor>(&labels, None, Reduction::Mean, -100, 0.0);
        let pos = labels.gt(0).nonzero().view([-1]);
        let n = labels.size()[0].max(1) as f64;
        let box_loss = if pos.size()[0] == 0 {
            deltas.sum(Kind::Float) * 0.0
        } else {
            let props = Tensor::cat(&props, 0).index_select(0, &pos);
            let target = self.coder.encode(&Tensor::cat(&gts, 0).index_select(0, &pos), &props)?;
            let p = deltas.size()[0];
            let cls = labels.index_select(0, &pos);
            let pred = deltas.view([p, self.num_outputs, 4]).index_select(0, &pos); // [Q, K+1, 4]
            let pred = pred.gather(1, &cls.view([-1, 1, 1]).expand([-1, 1, 4], false), false).squeeze_dim(1);
            pred.smooth_l1_loss(&target, Reduction::Sum, 1.0 / 9.0) / n
        };
        Ok((cls_loss, box_loss))
    }
}
