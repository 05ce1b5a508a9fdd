//! Class-aware (batched) non-maximum suppression.
//!
//! Boxes are copied to the CPU once; each class is suppressed independently (in parallel) with the
//! greedy rule "drop a box whose IoU with an already kept box of its class is > threshold", the rule
//! of `torchvision.ops.nms`. Inside a class the boxes are laid out as columns in score order, and each
//! kept box marks its overlaps among all later candidates in one branch-free pass that the compiler
//! vectorises; that beats skipping already suppressed candidates one branch at a time.
//!
//! The arithmetic runs in float64 ([`batched_nms_plain`]) or, to reproduce `torchvision.ops.nms` on
//! float32 boxes bit for bit (IoU computed in float32, compared with the threshold in float64), in
//! float32 ([`batched_nms_f32`]).

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::boxes::{check_boxes, to_vec4};
use crate::error::DetectError;

/// The float types the NMS computes in.
pub trait Coord:
    Copy
    + PartialOrd
    + Send
    + Sync
    + Into<f64>
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    /// Zero.
    const ZERO: Self;
    /// The larger of two values.
    fn max(self, other: Self) -> Self;
    /// The smaller of two values.
    fn min(self, other: Self) -> Self;
}

impl Coord for f64 {
    const ZERO: Self = 0.0;
    fn max(self, other: Self) -> Self {
        f64::max(self, other)
    }
    fn min(self, other: Self) -> Self {
        f64::min(self, other)
    }
}

impl Coord for f32 {
    const ZERO: Self = 0.0;
    fn max(self, other: Self) -> Self {
        f32::max(self, other)
    }
    fn min(self, other: Self) -> Self {
        f32::min(self, other)
    }
}

/// Descending score order; ties keep the lower index first.
fn by_score_desc<T: PartialOrd>(scores: &[T], a: usize, b: usize) -> std::cmp::Ordering {
    scores[b].partial_cmp(&scores[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
}

/// Greedy NMS of one class. `order` holds box indices sorted by score descending; returns the kept
/// indices in that order, at most `max_keep` of them. The IoU is [`crate::boxes::iou_xyxy`]'s (and
/// torchvision's), term for term, in `T`, so the result does not depend on this layout.
fn nms_sorted<T: Coord>(boxes: &[[T; 4]], order: &[usize], iou_thr: f64, max_keep: usize) -> Vec<usize> {
    let col = |k: usize| -> Vec<T> { order.iter().map(|&i| boxes[i][k]).collect() };
    let (x1, y1, x2, y2) = (col(0), col(1), col(2), col(3));
    let area: Vec<T> = (0..order.len()).map(|j| (x2[j] - x1[j]) * (y2[j] - y1[j])).collect();
    // What a degenerate pair (union <= 0, IoU taken as 0) decides.
    let degenerate_over = 0.0 > iou_thr;
    let mut suppressed = vec![false; order.len()];
    let mut kept = Vec::new();
    for i in 0..order.len() {
        if suppressed[i] {
            continue;
        }
        kept.push(order[i]);
        if kept.len() >= max_keep {
            break;
        }
        let (bx1, by1, bx2, by2, ba) = (x1[i], y1[i], x2[i], y2[i], area[i]);
        let rest = i + 1..order.len();
        let later = x1[rest.clone()].iter().zip(&y1[rest.clone()]).zip(&x2[rest.clone()]).zip(&y2[rest.clone()]);
        for ((((&ax1, &ay1), &ax2), &ay2), (&aa, s)) in later.zip(area[rest.clone()].iter().zip(&mut suppressed[rest]))
        {
            let w = (bx2.min(ax2) - bx1.max(ax1)).max(T::ZERO);
            let h = (by2.min(ay2) - by1.max(ay1)).max(T::ZERO);
            let inter = w * h;
            let union = ba + aa - inter;
            let over = (union > T::ZERO) & ((inter / union).into() > iou_thr) | (union <= T::ZERO) & degenerate_over;
            *s |= over;
        }
    }
    kept
}

/// NMS on plain data: boxes are xyxy, a box survives the score filter when `score > score_thr`.
/// One box per score and class, or an error naming the three lengths.
fn check_lengths(boxes: usize, scores: usize, classes: usize) -> Result<(), DetectError> {
    if scores != boxes || classes != boxes {
        return Err(DetectError::Invalid(format!("nms: {boxes} boxes, {scores} scores, {classes} classes")));
    }
    Ok(())
}

/// The thresholds of class-aware NMS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NmsParams {
    /// A box is suppressed by a higher-scoring box of its class with IoU above this.
    pub iou: f64,
    /// Only boxes scoring above this enter.
    pub score: f64,
    /// At most this many boxes are kept.
    pub max_det: usize,
}

impl NmsParams {
    /// Every box enters (score threshold minus infinity), as `torchvision.ops.batched_nms`.
    pub fn new(iou: f64, max_det: usize) -> Self {
        NmsParams { iou, score: f64::NEG_INFINITY, max_det }
    }
}

/// Returns kept indices sorted by score descending (ties: lower index first), at most `p.max_det`.
pub fn batched_nms_plain(
    boxes: &[[f64; 4]],
    scores: &[f64],
    classes: &[i64],
    p: NmsParams,
) -> Result<Vec<usize>, DetectError> {
    check_lengths(boxes.len(), scores.len(), classes.len())?;
    let order: Vec<usize> = (0..boxes.len()).filter(|&i| scores[i] > p.score).collect();
    Ok(classwise(boxes, scores, classes, order, p))
}

/// [`batched_nms_plain`] in float32 on float32 data (every box enters), as `torchvision.ops.nms`
/// computes on float32 tensors.
pub fn batched_nms_f32(
    boxes: &[[f32; 4]],
    scores: &[f32],
    classes: &[i64],
    iou_thr: f64,
    max_det: usize,
) -> Result<Vec<usize>, DetectError> {
    check_lengths(boxes.len(), scores.len(), classes.len())?;
    Ok(classwise(boxes, scores, classes, (0..boxes.len()).collect(), NmsParams::new(iou_thr, max_det)))
}

/// Sorts `order` by class then score, suppresses each class in parallel, merges by score.
fn classwise<T: Coord>(
    boxes: &[[T; 4]],
    scores: &[T],
    classes: &[i64],
    mut order: Vec<usize>,
    p: NmsParams,
) -> Vec<usize> {
    let (iou_thr, max_det) = (p.iou, p.max_det);
    order.sort_by(|&a, &b| classes[a].cmp(&classes[b]).then(by_score_desc(scores, a, b)));
    let groups: Vec<&[usize]> = order.chunk_by(|&a, &b| classes[a] == classes[b]).collect();
    let mut kept: Vec<usize> = groups.par_iter().flat_map_iter(|g| nms_sorted(boxes, g, iou_thr, max_det)).collect();
    kept.sort_by(|&a, &b| by_score_desc(scores, a, b));
    kept.truncate(max_det);
    kept
}

/// Class-aware NMS on tensors: `boxes` `[N, 4]` xyxy, `scores` `[N]`, `classes` `[N]` (integer).
/// Returns the kept indices `[K]` (i64, CPU) sorted by score descending, `K <= p.max_det`.
pub fn batched_nms(boxes: &Tensor, scores: &Tensor, classes: &Tensor, p: NmsParams) -> Result<Tensor, DetectError> {
    let n = check_boxes(boxes, "nms boxes")?;
    for (t, what) in [(scores, "scores"), (classes, "classes")] {
        if t.size() != [n] {
            return Err(DetectError::Invalid(format!("nms: {what} must be [{n}], got {:?}", t.size())));
        }
    }
    let b = to_vec4(boxes)?;
    let s = Vec::<f64>::try_from(scores.to_device(Device::Cpu).to_kind(Kind::Double).contiguous())?;
    let c = Vec::<i64>::try_from(classes.to_device(Device::Cpu).to_kind(Kind::Int64).contiguous())?;
    let kept = batched_nms_plain(&b, &s, &c, p)?;
    let kept: Vec<i64> = kept.into_iter().map(|i| i as i64).collect();
    Ok(Tensor::from_slice(&kept))
}
