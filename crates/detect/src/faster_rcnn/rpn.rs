//! Region Proposal Network (Ren et al. 2015) as torchvision builds it for FPN: one shared head
//! (`head.conv.0.0` 3x3 + ReLU, `head.cls_logits`, `head.bbox_pred`) run on every level, anchors
//! from [`AnchorGenerator`], proposals filtered per level then suppressed per level, and the
//! training losses on anchors sampled 1:1 (256 per image).

use tch::{Kind, Reduction, Tensor, nn};
use tlcv_core::backbones::layers::Conv;
use tlcv_core::onnx::graph::{Attr, FloatKind};
use tlcv_core::onnx::{Graph, OnnxError, Value};

use super::fpn::{conv_bias, normal_init};
use super::onnx::{OnnxProposals, and, clip, decode, gather_rows, wide_enough};
use crate::boxes::{BoxCoder, box_iou, clip_boxes};
use crate::error::DetectError;
use crate::matching::{BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, BalancedPositiveNegativeSampler, Matcher};
use crate::nms::{NmsParams, batched_nms};
use crate::priors::AnchorGenerator;

/// RPN hyper-parameters (torchvision's defaults in [`Default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RpnConfig {
    /// Highest-objectness anchors kept per level before NMS, training.
    pub pre_nms_top_n_train: i64,
    /// Same at inference.
    pub pre_nms_top_n_test: i64,
    /// Proposals kept per image after NMS, training.
    pub post_nms_top_n_train: i64,
    /// Same at inference.
    pub post_nms_top_n_test: i64,
    /// NMS IoU threshold (per level).
    pub nms_thresh: f64,
    /// Anchors with IoU >= this are positives.
    pub fg_iou_thresh: f64,
    /// Anchors with IoU < this are negatives.
    pub bg_iou_thresh: f64,
    /// Anchors sampled per image for the loss.
    pub batch_size_per_image: i64,
    /// Largest share of positives among them.
    pub positive_fraction: f64,
    /// Proposals need objectness >= this.
    pub score_thresh: f64,
    /// Proposals need width and height >= this (pixels).
    pub min_size: f64,
}

impl Default for RpnConfig {
    fn default() -> Self {
        Self {
            pre_nms_top_n_train: 2000,
            pre_nms_top_n_test: 1000,
            post_nms_top_n_train: 2000,
            post_nms_top_n_test: 1000,
            nms_thresh: 0.7,
            fg_iou_thresh: 0.7,
            bg_iou_thresh: 0.3,
            batch_size_per_image: 256,
            positive_fraction: 0.5,
            score_thresh: 0.0,
            min_size: 1e-3,
        }
    }
}

/// The RPN head and its proposal logic.
#[derive(Debug)]
pub struct Rpn {
    conv: Conv,
    cls_logits: Conv,
    bbox_pred: Conv,
    anchors: AnchorGenerator,
    coder: BoxCoder,
    /// Hyper-parameters.
    pub cfg: RpnConfig,
}

/// What the RPN computes for a batch: raw outputs flattened over levels and anchors.
#[derive(Debug)]
pub struct RpnOutput {
    /// `[N, T]` objectness logits (T anchors over all levels).
    pub objectness: Tensor,
    /// `[N, T, 4]` box deltas.
    pub deltas: Tensor,
    /// `[T, 4]` anchors (xyxy pixels), the same for every image.
    pub anchors: Tensor,
    /// Anchors per level.
    pub per_level: Vec<i64>,
}

impl Rpn {
    /// Creates `p.head.{conv.0.0, cls_logits, bbox_pred}` for `channels`-wide levels.
    pub fn new(p: &nn::Path, channels: i64, anchors: AnchorGenerator, cfg: RpnConfig) -> Result<Self, DetectError> {
        let a = anchors.num_anchors_per_location();
        let na = a[0];
        if a.iter().any(|&x| x != na) {
            return Err(DetectError::Invalid(format!(
                "rpn: a shared head needs the same anchors per level, got {a:?}"
            )));
        }
        let h = p / "head";
        let mut conv = conv_bias(&(&h / "conv" / 0 / 0), channels, channels, 3, 1)?;
        let mut cls_logits = conv_bias(&(&h / "cls_logits"), channels, na, 1, 1)?;
        let mut bbox_pred = conv_bias(&(&h / "bbox_pred"), channels, na * 4, 1, 1)?;
        for c in [&mut conv, &mut cls_logits, &mut bbox_pred] {
            normal_init(c, 0.01);
        }
        Ok(Self { conv, cls_logits, bbox_pred, anchors, coder: BoxCoder::default(), cfg })
    }

    /// Runs the head on every level (`[N, C, H_l, W_l]`) for an input of `image_size` `(H, W)`.
    pub fn run(&self, features: &[Tensor], image_size: (i64, i64)) -> Result<RpnOutput, DetectError> {
        let mut obj = Vec::new();
        let mut del = Vec::new();
        let mut grids = Vec::new();
        let mut per_level = Vec::new();
        for f in features {
            let s = f.size();
            let (n, h, w) = (s[0], s[2], s[3]);
            let t = self.conv.forward(f).relu();
            let o = self.cls_logits.forward(&t); // [N, A, H, W]
            let d = self.bbox_pred.forward(&t); // [N, 4A, H, W]
            let a = o.size()[1];
            obj.push(o.permute([0, 2, 3, 1]).reshape([n, -1])); // [N, H*W*A]
            del.push(d.view([n, a, 4, h, w]).permute([0, 3, 4, 1, 2]).reshape([n, -1, 4])); // [N, H*W*A, 4]
            grids.push((h, w));
            per_level.push(h * w * a);
        }
        let anchors = self.anchors.anchors(image_size, &grids)?.to_device(features[0].device());
        Ok(RpnOutput { objectness: Tensor::cat(&obj, 1), deltas: Tensor::cat(&del, 1), anchors, per_level })
    }

    /// [`Rpn::run`] and [`Rpn::proposals`] at inference as ONNX nodes: FPN maps (fixed sizes) ->
    /// the best `post_nms_top_n_test` proposals per image (see [`super::onnx`]).
    pub(crate) fn proposals_onnx(
        &self,
        g: &mut Graph,
        features: &[Value],
        image_size: (i64, i64),
    ) -> Result<OnnxProposals, DetectError> {
        let (mut obj, mut del, mut grids) = (Vec::new(), Vec::new(), Vec::new());
        for f in features {
            let (Some(h), Some(w)) = (f.dim(2), f.dim(3)) else {
                return Err(DetectError::Invalid("rpn export: the feature maps need fixed sizes".into()));
            };
            let t = self.conv.to_onnx(g, f)?;
            let t = g.unary("Relu", &t);
            let o = self.cls_logits.to_onnx(g, &t)?; // [N, A, H, W]
            let d = self.bbox_pred.to_onnx(g, &t)?; // [N, 4A, H, W]
            let a = o.dim(1).unwrap_or(1);
            let o = g.transpose(&o, &[0, 2, 3, 1]);
            obj.push(g.reshape(&o, &[0, -1])); // [N, H*W*A]
            let d = g.reshape(&d, &[0, a, 4, h, w]);
            let d = g.transpose(&d, &[0, 3, 4, 1, 2]);
            del.push(g.reshape(&d, &[0, -1, 4])); // [N, H*W*A, 4]
            grids.push((h, w));
        }
        let anchors = self.anchors.anchors(image_size, &grids)?; // [T, 4]
        let name = g.fresh("rpn.anchors");
        let anchors = g.tensor_init(&name, &anchors, FloatKind::F32)?;
        let refs: Vec<&Value> = del.iter().collect();
        let deltas = g.concat(&refs, 1); // [N, T, 4]
        // The best `pre_nms_top_n_test` logits of each level.
        let pre = self.cfg.pre_nms_top_n_test;
        let (mut idx, mut logits, mut level_of, mut offset) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for (l, o) in obj.iter().enumerate() {
            let cnt = o.dim(1).unwrap_or(0);
            let (v, i) = g.topk(o, pre.min(cnt), 1);
            let off = g.ints(&[offset]);
            idx.push(g.binary("Add", &i, &off));
            logits.push(v);
            level_of.extend(std::iter::repeat_n(l as i64, pre.min(cnt) as usize));
            offset += cnt;
        }
        let (ir, lr): (Vec<&Value>, Vec<&Value>) = (idx.iter().collect(), logits.iter().collect());
        let (idx, logits) = (g.concat(&ir, 1), g.concat(&lr, 1)); // [N, K]
        let k = level_of.len() as i64;
        let d = gather_rows(g, &deltas, &idx); // [N, K, 4]
        let a = g.op("Gather", &[&anchors, &idx], &[Attr::Int("axis", 0)], vec![idx.dims()[0], Some(k), Some(4)]);
        let boxes = decode(g, &d, &a, &self.coder)?;
        let boxes = clip(g, &boxes, image_size)?; // [N, K, 4]
        let scores = g.unary("Sigmoid", &logits);
        let wide = wide_enough(g, &boxes, self.cfg.min_size)?;
        let thr = g.const_float(&[self.cfg.score_thresh as f32], &[])?;
        let sure = g.binary("GreaterOrEqual", &scores, &thr);
        let valid = and(g, &wide, &sure); // [N, K]
        let minus1 = g.const_float(&[-1.0], &[])?;
        let scores = g.op("Where", &[&valid, &scores, &minus1], &[], scores.dims().to_vec()); // [N, K]
        let (boxes, valid) = self.level_nms_onnx(g, &boxes, &scores, &level_of)?;
        Ok(OnnxProposals { boxes, valid, image_size })
    }

    /// Per-level NMS of `[N, K, 4]` boxes with `[N, K]` scores (-1: not a candidate), level
    /// `level_of[k]` for box `k`: one `NonMaxSuppression` with the levels as its classes, then the best
    /// `post_nms_top_n_test` over all levels: `([N, P, 4] boxes, [N, P] bool valid)` (rows past an
    /// image's last proposal invalid).
    fn level_nms_onnx(
        &self,
        g: &mut Graph,
        boxes: &Value,
        scores: &Value,
        level_of: &[i64],
    ) -> Result<(Value, Value), OnnxError> {
        let k = level_of.len() as i64;
        let levels = level_of.iter().max().map_or(1, |l| l + 1);
        let minus1 = g.const_float(&[-1.0], &[])?;
        let s = g.unsqueeze(scores, 1); // [N, 1, K]
        let of = g.const_i64(level_of, &[1, 1, k]);
        let ls = g.const_i64(&(0..levels).collect::<Vec<_>>(), &[1, levels, 1]);
        let mine = g.binary("Equal", &of, &ls); // [1, L, K]
        let per_level = g.op("Where", &[&mine, &s, &minus1], &[], vec![scores.dims()[0], Some(levels), Some(k)]);
        let post = self.cfg.post_nms_top_n_test.max(0);
        let max_out = g.ints(&[post]);
        let iou = g.const_f32_always(&[self.cfg.nms_thresh as f32]);
        let below = g.const_f32_always(&[-0.5]); // invalid rows score -1
        let sel = g.op("NonMaxSuppression", &[boxes, &per_level, &max_out, &iou, &below], &[], vec![None, Some(3)]);
        let kept = g.op("GatherND", &[&per_level, &sel], &[], vec![None]);
        let zeros = g.binary("Sub", &per_level, &per_level);
        let base = g.binary("Add", &zeros, &minus1);
        let kept = g.op("ScatterND", &[&base, &sel, &kept], &[], per_level.dims().to_vec()); // [N, L, K]
        let best = g.reduce("ReduceMax", &kept, &[1], false); // [N, K]: the kept score or -1
        let (vals, idx) = g.topk(&best, post.min(k), 1); // [N, P]
        let boxes = gather_rows(g, boxes, &idx); // [N, P, 4]
        let half = g.const_float(&[-0.5], &[])?;
        let valid = g.binary("Greater", &vals, &half);
        Ok((boxes, valid))
    }

    /// Proposals per image (`[P_i, 4]` xyxy, best first, and their `[P_i]` objectness probabilities):
    /// decode, top-k per level, clip, drop tiny and low-scoring boxes, NMS per level, keep the best.
    pub fn proposals(
        &self,
        out: &RpnOutput,
        image_size: (i64, i64),
        train: bool,
    ) -> Result<Vec<(Tensor, Tensor)>, DetectError> {
        let (pre, post) = if train {
            (self.cfg.pre_nms_top_n_train, self.cfg.post_nms_top_n_train)
        } else {
            (self.cfg.pre_nms_top_n_test, self.cfg.post_nms_top_n_test)
        };
        let n = out.objectness.size()[0];
        let obj = out.objectness.detach();
        let dev = obj.device();
        let mut result = Vec::with_capacity(n as usize);
        for i in 0..n {
            let deltas = out.deltas.get(i).detach();
            let boxes = self.coder.decode(&deltas, &out.anchors)?; // [T, 4]
            let scores_all = obj.get(i);
            let (mut idx, mut lvl) = (Vec::new(), Vec::new());
            let mut offset = 0;
            for (l, &cnt) in out.per_level.iter().enumerate() {
                let k = pre.min(cnt);
                let (_, top) = scores_all.narrow(0, offset, cnt).topk(k, 0, true, true);
                idx.push(top + offset);
                lvl.push(Tensor::full([k], l as i64, (Kind::Int64, dev)));
                offset += cnt;
            }
            let idx = Tensor::cat(&idx, 0);
            let lvl = Tensor::cat(&lvl, 0);
            let scores = scores_all.index_select(0, &idx).sigmoid();
            let boxes = clip_boxes(&boxes.index_select(0, &idx), image_size.0 as f64, image_size.1 as f64)?;
            let wh = boxes.narrow(1, 2, 2) - boxes.narrow(1, 0, 2);
            let ok = wh
                .select(1, 0)
                .ge(self.cfg.min_size)
                .logical_and(&wh.select(1, 1).ge(self.cfg.min_size))
                .logical_and(&scores.ge(self.cfg.score_thresh));
            let keep = ok.nonzero().view([-1]);
            let (boxes, scores, lvl) =
                (boxes.index_select(0, &keep), scores.index_select(0, &keep), lvl.index_select(0, &keep));
            let kept = batched_nms(&boxes, &scores, &lvl, NmsParams::new(self.cfg.nms_thresh, post.max(0) as usize))?
                .to_device(dev);
            result.push((boxes.index_select(0, &kept), scores.index_select(0, &kept)));
        }
        Ok(result)
    }

    /// The RPN losses `(objectness BCE, box smooth-L1 with beta 1/9)` for `gt_boxes` (one `[M_i, 4]`
    /// per image): anchors are matched at 0.7 / 0.3 (best anchors of each box rescued), a balanced
    /// sample is drawn, and the box loss is summed over positives and divided by the sample size.
    pub fn losses(&self, out: &RpnOutput, gt_boxes: &[Tensor]) -> Result<(Tensor, Tensor), DetectError> {
        let matcher = Matcher::new(self.cfg.fg_iou_thresh, self.cfg.bg_iou_thresh, true)?;
        let sampler = BalancedPositiveNegativeSampler {
            batch_size_per_image: self.cfg.batch_size_per_image,
            positive_fraction: self.cfg.positive_fraction,
        };
        let (mut logits, mut labels, mut pred, mut target) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut sampled = 0i64;
        let t = out.anchors.size()[0];
        for (i, gt) in gt_boxes.iter().enumerate() {
            let gt = gt.to_device(out.anchors.device()).to_kind(out.anchors.kind());
            let (lab, matched) = if gt.size()[0] == 0 {
                (out.anchors.new_zeros([t], (Kind::Float, out.anchors.device())), None)
            } else {
                let m = matcher.assign(&box_iou(&gt, &out.anchors)?)?; // [T]
                let lab = m.ge(0).to_kind(Kind::Float);
                let lab = lab.masked_fill(&m.eq(BELOW_LOW_THRESHOLD), 0.0).masked_fill(&m.eq(BETWEEN_THRESHOLDS), -1.0);
                (lab, Some(m))
            };
            let (pos, neg) = sampler.sample(&lab)?;
            let pos_idx = pos.nonzero().view([-1]);
            let both = pos.logical_or(&neg).nonzero().view([-1]);
            sampled += both.size()[0];
            let obj = out.objectness.get(i as i64);
            logits.push(obj.index_select(0, &both));
            labels.push(lab.index_select(0, &both));
            if let Some(m) = matched {
                let gt_idx = m.index_select(0, &pos_idx).clamp_min(0);
                let anchors = out.anchors.index_select(0, &pos_idx);
                target.push(self.coder.encode(&gt.index_select(0, &gt_idx), &anchors)?);
                pred.push(out.deltas.get(i as i64).index_select(0, &pos_idx));
            }
        }
        let logits = Tensor::cat(&logits, 0);
        let labels = Tensor::cat(&labels, 0);
        let obj_loss = logits.binary_cross_entropy_with_logits::<Tensor>(&labels, None, None, Reduction::Mean);
        let box_loss = if pred.is_empty() {
            out.deltas.sum(Kind::Float) * 0.0
        } else {
            Tensor::cat(&pred, 0).smooth_l1_loss(&Tensor::cat(&target, 0), Reduction::Sum, 1.0 / 9.0)
                / sampled.max(1) as f64
        };
        Ok((obj_loss, box_loss))
    }
}
