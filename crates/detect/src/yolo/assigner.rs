//! Task-aligned assignment (TOOD, Feng et al. 2021; as in YOLOv8). For each ground-truth box, the
//! candidates are the anchor points whose centre lies inside it; each gets the alignment metric
//! `t = s^alpha * iou^beta` (s: predicted score of the box's class, iou: IoU of the predicted box
//! with it), and the `topk` best become positives. An anchor claimed by several boxes keeps the one
//! it overlaps most. Targets: the box, its class, and a soft score `t / max t * max iou` (per box)
//! used as the classification target and the loss weight.

use tch::{Kind, Tensor};

use crate::boxes::iou;
use crate::model_io::Targets;

/// Assigner settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TalConfig {
    /// Positives per ground-truth box.
    pub topk: i64,
    /// Exponent of the class score.
    pub alpha: f64,
    /// Exponent of the IoU.
    pub beta: f64,
}

impl Default for TalConfig {
    fn default() -> Self {
        Self { topk: 10, alpha: 0.5, beta: 6.0 }
    }
}

/// What every anchor is trained towards.
#[derive(Debug)]
pub struct Assignment {
    /// `[B, A]` class of the assigned box (0 for background; see `fg_mask`).
    pub labels: Tensor,
    /// `[B, A, 4]` assigned box, xyxy pixels.
    pub boxes: Tensor,
    /// `[B, A, nc]` soft class targets (zero rows for background).
    pub scores: Tensor,
    /// `[B, A]` bool: anchor is a positive.
    pub fg_mask: Tensor,
    /// `[B, A]` index of the assigned ground-truth box.
    pub gt_index: Tensor,
}

const EPS: f64 = 1e-9;

/// The (detached) predictions [`assign`] aligns with the ground truth.
#[derive(Debug, Clone, Copy)]
pub struct Predictions<'a> {
    /// `[B, A, nc]` class probabilities.
    pub scores: &'a Tensor,
    /// `[B, A, 4]` boxes, xyxy pixels.
    pub boxes: &'a Tensor,
    /// `[A, 2]` anchor points, pixels.
    pub points: &'a Tensor,
}

/// Assigns ground truth (`gt`: boxes in xyxy pixels) to anchors; no gradients flow.
pub fn assign(pd: Predictions<'_>, gt: &Targets, cfg: &TalConfig) -> Assignment {
    tch::no_grad(|| assign_inner(pd, gt, cfg))
}

fn assign_inner(pd: Predictions<'_>, gt: &Targets, cfg: &TalConfig) -> Assignment {
    let Predictions { scores: pd_scores, boxes: pd_boxes, points } = pd;
    let (gt_labels, gt_boxes, gt_mask) = (&gt.labels, &gt.boxes, &gt.mask);
    let s = pd_scores.size();
    let (b, a, nc) = (s[0], s[1], s[2]);
    let m = gt_boxes.size()[1];
    let dev = pd_scores.device();
    if m == 0 {
        return Assignment {
            labels: Tensor::zeros([b, a], (Kind::Int64, dev)),
            boxes: Tensor::zeros([b, a, 4], (Kind::Float, dev)),
            scores: Tensor::zeros([b, a, nc], (Kind::Float, dev)),
            fg_mask: Tensor::zeros([b, a], (Kind::Bool, dev)),
            gt_index: Tensor::zeros([b, a], (Kind::Int64, dev)),
        };
    }
    let gt_boxes = gt_boxes.to_kind(Kind::Float);
    let labels = gt_labels.clamp(0, nc - 1);
    // Candidates: anchor centre strictly inside the box. [B, M, A]
    let p = points.view([1, 1, a, 2]);
    let lt = &p - gt_boxes.slice(2, 0, 2, 1).unsqueeze(2); // [B, M, A, 2]
    let rb = gt_boxes.slice(2, 2, 4, 1).unsqueeze(2) - &p;
    let inside = Tensor::cat(&[lt, rb], -1).amin(-1, false).gt(EPS); // [B, M, A]
    let cand = inside.logical_and(&gt_mask.unsqueeze(-1)).to_kind(Kind::Float); // [B, M, A]
    // Score of each box's class at each anchor, IoU of each predicted box with each gt. [B, M, A]
    let cls_scores = pd_scores.transpose(1, 2).gather(1, &labels.unsqueeze(-1).expand([b, m, a], false), false);
    let overlaps = iou(&gt_boxes.unsqueeze(2), &pd_boxes.unsqueeze(1)).clamp_min(0.0) * &cand;
    let align = cls_scores.pow_tensor_scalar(cfg.alpha) * overlaps.pow_tensor_scalar(cfg.beta) * &cand; // [B, M, A]
    // Top-k candidates per gt.
    let k = cfg.topk.clamp(1, a);
    let (_, idx) = align.topk(k, -1, true, true); // [B, M, k]
    let topk = Tensor::zeros([b, m, a], (Kind::Float, dev)).scatter_value(-1, &idx, 1.0);
    let mut pos = topk * &cand; // [B, M, A]
    // An anchor claimed by several boxes keeps the one it overlaps most.
    let fg = pos.sum_dim_intlist(1, false, Kind::Float); // [B, A]
    if fg.max().double_value(&[]) > 1.0 {
        let multi = fg.gt(1.0).unsqueeze(1).expand([b, m, a], false);
        let best = overlaps.argmax(1, false); // [B, A]
        let is_best = best.one_hot(m).permute([0, 2, 1]).to_kind(Kind::Float); // [B, M, A]
        pos = is_best.where_self(&multi, &pos);
    }
    let fg_mask = pos.sum_dim_intlist(1, false, Kind::Float).gt(0.0); // [B, A]
    let gt_index = pos.argmax(1, false); // [B, A]
    let flat = &gt_index + Tensor::arange(b, (Kind::Int64, dev)).unsqueeze(-1) * m; // [B, A]
    let t_labels = labels.reshape([-1]).index_select(0, &flat.reshape([-1])).view([b, a]);
    let t_boxes = gt_boxes.reshape([-1, 4]).index_select(0, &flat.reshape([-1])).view([b, a, 4]);
    // Soft targets: alignment normalised per gt so that its best anchor gets its best IoU.
    let align = align * &pos;
    let pos_align = align.amax(-1, true); // [B, M, 1]
    let pos_iou = (&overlaps * &pos).amax(-1, true); // [B, M, 1]
    let norm = (align * pos_iou / (pos_align + EPS)).amax(-2, false); // [B, A]
    let fg_f = fg_mask.to_kind(Kind::Float);
    let scores = t_labels.one_hot(nc).to_kind(Kind::Float) * (norm * &fg_f).unsqueeze(-1); // [B, A, nc]
    Assignment { labels: t_labels, boxes: t_boxes, scores, fg_mask, gt_index }
}
