//! The Fast R-CNN box branch of torchvision's `RoIHeads`: multi-scale RoIAlign (7x7, sampling 2)
//! on P2..P5, `box_head.fc6`/`fc7` (ReLU MLP, 1024 wide by default), `box_predictor.cls_score`/`bbox_pred`
//! (class-specific deltas, coder weights 10, 10, 5, 5), the training losses on 512 proposals per
//! image (25% positives) and the inference post-processing (score > 0.05, per-class NMS 0.5,
//! 100 detections).

use tch::{Kind, Reduction, Tensor, nn};
use tlcv_core::backbones::layers::{Linear, LinearInit};
use tlcv_core::onnx::graph::DataType;
use tlcv_core::onnx::{Graph, OnnxError, Value};

use super::onnx::{OnnxProposals, and, clip, decode, squeeze_last, wide_enough};
use crate::boxes::{BoxCoder, box_iou, clip_boxes};
use crate::error::DetectError;
use crate::export::{NmsThresholds, nms_rows};
use crate::matching::{BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, BalancedPositiveNegativeSampler, Matcher};
use crate::model_io::{Detections, Target};
use crate::nms::{NmsParams, batched_nms};
use crate::postprocess::PostprocessConfig;
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

    /// [`RoiHeads::detect`] as ONNX nodes: FPN levels (without the pooled one) and the RPN's
    /// proposals -> detections `[N, K, 6]` and a description of the thresholds; `pp` may only
    /// tighten the branch's own score threshold and detection count, as in the libtorch path.
    pub(crate) fn detections_onnx(
        &self,
        g: &mut Graph,
        features: &[Value],
        props: &OnnxProposals,
        pp: &PostprocessConfig,
    ) -> Result<(Value, String), OnnxError> {
        let image_size = props.image_size;
        let p = props.boxes.dim(1).ok_or_else(|| OnnxError::Unsupported("proposal count not static".into()))?;
        let rois = g.reshape(&props.boxes, &[-1, 4]); // [R = N * P, 4]
        let batch = image_of_rows(g, &props.boxes, p);
        let x = self.pool.to_onnx(g, features, (&rois, &batch), image_size.0)?; // [R, C, 7, 7]
        let x = g.flatten(&x, 1);
        let x = self.fc6.to_onnx(g, &x)?;
        let x = g.unary("Relu", &x);
        let x = self.fc7.to_onnx(g, &x)?;
        let x = g.unary("Relu", &x);
        let logits = self.cls_score.to_onnx(g, &x)?; // [R, K + 1]
        let deltas = self.bbox_pred.to_onnx(g, &x)?; // [R, 4(K + 1)]
        let k1 = self.num_outputs;
        let k = k1 - 1;
        let probs = g.softmax(&logits, 1);
        let deltas = g.reshape(&deltas, &[-1, k1, 4]);
        let refs = g.unsqueeze(&rois, 1); // [R, 1, 4]
        let boxes = decode(g, &deltas, &refs, &self.coder)?;
        let boxes = clip(g, &boxes, image_size)?;
        let boxes = g.slice(&boxes, 1, 1, k1); // [R, K, 4]: no background
        let scores = g.slice(&probs, 1, 1, k1); // [R, K]
        let thr = g.const_float(&[self.cfg.score_thresh as f32], &[])?;
        let ok = g.binary("Greater", &scores, &thr);
        let wide = wide_enough(g, &boxes, 1e-2)?;
        let ok = and(g, &ok, &wide);
        let valid = g.reshape(&props.valid, &[-1, 1]); // [R, 1]
        let ok = and(g, &ok, &valid);
        let zero = g.const_float(&[0.0], &[])?;
        let scores = g.op("Where", &[&ok, &scores, &zero], &[], scores.dims().to_vec());
        // Per image: P * K candidate boxes, box `p * K + c` scored in class `c` only.
        let boxes = g.reshape(&boxes, &[-1, p * k, 4]); // [N, P*K, 4]
        let scores = g.reshape(&scores, &[-1, 1, p * k]);
        let class_of = g.const_i64(&(0..p * k).map(|i| i % k).collect::<Vec<_>>(), &[1, 1, p * k]);
        let classes = g.const_i64(&(0..k).collect::<Vec<_>>(), &[1, k, 1]);
        let onehot = g.binary("Equal", &class_of, &classes);
        let onehot = g.cast(&onehot, DataType::Float);
        let per_class = g.binary("Mul", &onehot, &scores); // [N, K, P*K]
        let c = &self.cfg;
        let params = NmsThresholds {
            iou: c.nms_thresh,
            score_thr: c.score_thresh.max(pp.conf),
            max_det: c.detections_per_img.min(pp.max_det) as i64,
            cand_per_class: None,
        };
        let rows = nms_rows(g, &boxes, &per_class, params)?;
        let what = format!("conf > {}, iou {}, max_det {}", params.score_thr, params.iou, params.max_det);
        Ok((rows, what))
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

/// The image of every row of `[N, P, 4]` proposals flattened to `[N * P]`: int64 `0, .., 0, 1, ..`.
fn image_of_rows(g: &mut Graph, boxes: &Value, p: i64) -> Value {
    let shape = g.shape_of(boxes);
    let n = g.slice(&shape, 0, 0, 1);
    let n = squeeze_last(g, &n); // scalar
    let (zero, one) = (g.const_i64(&[0], &[]), g.const_i64(&[1], &[]));
    let images = g.op("Range", &[&zero, &n, &one], &[], vec![boxes.dims()[0]]); // [N]
    let images = g.unsqueeze(&images, 1);
    let wide = g.ints(&[1, p]);
    let images = g.op("Expand", &[&images, &wide], &[], vec![boxes.dims()[0], Some(p)]);
    g.reshape(&images, &[-1])
}
