//! The YOLOv8 loss: classification BCE against the assigner's IoU-scaled soft targets, CIoU box
//! loss and distribution focal loss on the positives (both weighted by the soft target), each
//! normalised by the sum of target scores (over every data-parallel rank's batch, see [`LossScope`]),
//! then weighted by `box_gain`, `cls_gain`, `dfl_gain`.

use tch::{Kind, Reduction, Tensor};

use super::anchors::AnchorPoints;
use super::assigner::{Predictions, TalConfig, assign};
use super::head::{HeadOutput, dfl_decode, dist_to_boxes};
use crate::boxes::ciou;
use crate::config::LossConfig;
use crate::error::Result;
use crate::family::LossScope;
use crate::model_io::Targets;

/// The loss and its terms (already multiplied by their gains).
#[derive(Debug)]
pub struct LossOutput {
    /// Scalar to back-propagate.
    pub total: Tensor,
    /// CIoU term.
    pub box_loss: f64,
    /// BCE term.
    pub cls_loss: f64,
    /// DFL term.
    pub dfl_loss: f64,
}

impl From<LossOutput> for crate::family::StepLosses {
    fn from(l: LossOutput) -> Self {
        let terms =
            vec![("box_loss".into(), l.box_loss), ("cls_loss".into(), l.cls_loss), ("dfl_loss".into(), l.dfl_loss)];
        Self { total: l.total, terms }
    }
}

/// Distribution focal loss: `logits` `[n, reg_max]`, continuous `target` `[n]` in `[0, reg_max - 1)`;
/// cross-entropy to the two neighbouring bins weighted by closeness -> `[n]`.
pub fn dfl(logits: &Tensor, target: &Tensor) -> Tensor {
    let tl = target.floor().to_kind(Kind::Int64);
    let tr = &tl + 1;
    let wl = tr.to_kind(Kind::Float) - target;
    let wr = 1.0 - &wl;
    let ce = |t: &Tensor| logits.cross_entropy_loss::<&Tensor>(t, None, Reduction::None, -100, 0.0);
    ce(&tl) * wl + ce(&tr) * wr
}

/// The YOLO loss.
#[derive(Debug, Clone)]
pub struct YoloLoss {
    /// Gains and assigner settings.
    pub cfg: LossConfig,
    /// Bins per edge.
    pub reg_max: i64,
}

impl YoloLoss {
    /// Computes the loss of a head output against padded targets, normalised over `scope`.
    pub fn compute(
        &self,
        out: &HeadOutput,
        anchors: &AnchorPoints,
        t: &Targets,
        scope: LossScope<'_>,
    ) -> Result<LossOutput> {
        let r = self.reg_max;
        let (b, a) = (out.cls.size()[0], out.cls.size()[1]);
        let grid = anchors.grid(); // [A, 2]
        let ltrb = dfl_decode(&out.dist, r); // [B, A, 4] stride units
        let pred_grid = dist_to_boxes(&ltrb, &grid); // [B, A, 4] grid units
        let tal = TalConfig { topk: self.cfg.topk, alpha: self.cfg.alpha, beta: self.cfg.beta };
        let (scores, boxes) = (out.cls.detach().sigmoid(), pred_grid.detach() * &anchors.strides);
        let asg = assign(Predictions { scores: &scores, boxes: &boxes, points: &anchors.points }, t, &tal);
        let tss = scope.divisor(&asg.scores.sum(Kind::Float))?;
        let cls = out
            .cls
            .binary_cross_entropy_with_logits::<&Tensor>(&asg.scores, None, None, Reduction::None)
            .sum(Kind::Float)
            / &tss;
        let fg = asg.fg_mask.reshape([-1]).nonzero().squeeze_dim(1); // [n]
        let (box_l, dfl_l) = if fg.size()[0] > 0 {
            let weight = asg.scores.sum_dim_intlist(-1, false, Kind::Float).reshape([-1]).index_select(0, &fg); // [n]
            let tgt_grid = asg.boxes / &anchors.strides; // [B, A, 4] grid units
            let pb = pred_grid.reshape([-1, 4]).index_select(0, &fg); // [n, 4]
            let tb = tgt_grid.reshape([-1, 4]).index_select(0, &fg);
            let box_l = (ciou(&pb, &tb).neg() + 1.0).multiply(&weight).sum(Kind::Float) / &tss;
            // Edge distances of the targets around each anchor, in bins.
            let pts = grid.unsqueeze(0).expand([b, a, 2], false).reshape([-1, 2]).index_select(0, &fg); // [n, 2]
            let tltrb =
                Tensor::cat(&[&pts - tb.slice(1, 0, 2, 1), tb.slice(1, 2, 4, 1) - &pts], 1).clamp(0.0, r as f64 - 1.01); // [n, 4]
            let logits = out.dist.reshape([-1, 4 * r]).index_select(0, &fg).reshape([-1, r]); // [n*4, R]
            let d = dfl(&logits, &tltrb.reshape([-1])).view([-1, 4]).mean_dim(-1, false, Kind::Float); // [n]
            let dfl_l = (d * &weight).sum(Kind::Float) / &tss;
            (box_l, dfl_l)
        } else {
            let z = out.dist.sum(Kind::Float) * 0.0;
            (z.shallow_clone(), z)
        };
        let (bw, cw, dw) = (self.cfg.box_gain, self.cfg.cls_gain, self.cfg.dfl_gain);
        let total = &box_l * bw + &cls * cw + &dfl_l * dw;
        Ok(LossOutput {
            box_loss: box_l.double_value(&[]) * bw,
            cls_loss: cls.double_value(&[]) * cw,
            dfl_loss: dfl_l.double_value(&[]) * dw,
            total,
        })
    }
}
