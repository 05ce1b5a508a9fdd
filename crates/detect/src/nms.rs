//! Class-aware (batched) non-maximum suppression.
//!
//! Boxes are copied to the CPU once; each class is suppressed independently (in parallel) with the
//! greedy rule "drop a box whose IoU with an already kept box of its class is > threshold". Inside a
//! class, candidates are processed in score order in blocks: a block is first checked against the
//! boxes kept so far, then resolved with a precomputed bit matrix of its own pairwise overlaps, so
//! memory stays at `BLOCK^2 / 8` bytes however many boxes come in.

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::boxes::{check_boxes, iou_xyxy, to_vec4};
use crate::error::DetectError;

/// Candidates resolved with one precomputed overlap bit matrix (16384^2 bits = 32 MiB).
const BLOCK: usize = 16384;

/// Descending score order; ties keep the lower index first.
fn by_score_desc(scores: &[f64], a: usize, b: usize) -> std::cmp::Ordering {
    scores[b].partial_cmp(&scores[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
}

/// Greedy NMS of one class. `order` holds box indices sorted by score descending; returns the kept
/// indices in that order, at most `max_keep` of them.
fn nms_sorted(boxes: &[[f64; 4]], order: &[usize], iou_thr: f64, max_keep: usize) -> Vec<usize> {
    let mut kept: Vec<usize> = Vec::new();
    for block in order.chunks(BLOCK) {
        if kept.len() >= max_keep {
            break;
        }
        // Drop candidates that overlap boxes kept in earlier blocks.
        let alive: Vec<usize> = block
            .par_iter()
            .copied()
            .filter(|&c| kept.iter().all(|&k| iou_xyxy(&boxes[k], &boxes[c]) <= iou_thr))
            .collect();
        let n = alive.len();
        let words = n.div_ceil(64);
        // Row i: bit j set when j > i and IoU(i, j) > threshold.
        let mask: Vec<u64> = (0..n)
            .into_par_iter()
            .flat_map_iter(|i| {
                let mut row = vec![0u64; words];
                for j in i + 1..n {
                    if iou_xyxy(&boxes[alive[i]], &boxes[alive[j]]) > iou_thr {
                        row[j / 64] |= 1 << (j % 64);
                    }
                }
                row
            })
            .collect();
        let mut removed = vec![0u64; words];
        for i in 0..n {
            if removed[i / 64] >> (i % 64) & 1 == 1 {
                continue;
            }
            kept.push(alive[i]);
            if kept.len() >= max_keep {
                break;
            }
            for (r, m) in removed.iter_mut().zip(&mask[i * words..(i + 1) * words]) {
                *r |= m;
            }
        }
    }
    kept
}

/// NMS on plain data: boxes are xyxy, a box survives the score filter when `score > score_thr`.
/// Returns kept indices sorted by score descending (ties: lower index first), at most `max_det`.
pub fn batched_nms_plain(
    boxes: &[[f64; 4]],
    scores: &[f64],
    classes: &[i64],
    iou_thr: f64,
    score_thr: f64,
    max_det: usize,
) -> Result<Vec<usize>, DetectError> {
    if scores.len() != boxes.len() || classes.len() != boxes.len() {
        return Err(DetectError::Invalid(format!(
            "nms: {} boxes, {} scores, {} classes",
            boxes.len(),
            scores.len(),
            classes.len()
        )));
    }
    let mut order: Vec<usize> = (0..boxes.len()).filter(|&i| scores[i] > score_thr).collect();
    order.sort_by(|&a, &b| classes[a].cmp(&classes[b]).then(by_score_desc(scores, a, b)));
    let groups: Vec<&[usize]> = order.chunk_by(|&a, &b| classes[a] == classes[b]).collect();
    let mut kept: Vec<usize> = groups.par_iter().flat_map_iter(|g| nms_sorted(boxes, g, iou_thr, max_det)).collect();
    kept.sort_by(|&a, &b| by_score_desc(scores, a, b));
    kept.truncate(max_det);
    Ok(kept)
}

/// Class-aware NMS on tensors: `boxes` `[N, 4]` xyxy, `scores` `[N]`, `classes` `[N]` (integer).
/// Returns the kept indices `[K]` (i64, CPU) sorted by score descending, `K <= max_det`.
pub fn batched_nms(
    boxes: &Tensor,
    scores: &Tensor,
    classes: &Tensor,
    iou_thr: f64,
    score_thr: f64,
    max_det: usize,
) -> Result<Tensor, DetectError> {
    let n = check_boxes(boxes, "nms boxes")?;
    for (t, what) in [(scores, "scores"), (classes, "classes")] {
        if t.size() != [n] {
            return Err(DetectError::Invalid(format!("nms: {what} must be [{n}], got {:?}", t.size())));
        }
    }
    let b = to_vec4(boxes)?;
    let s = Vec::<f64>::try_from(scores.to_device(Device::Cpu).to_kind(Kind::Double).contiguous())?;
    let c = Vec::<i64>::try_from(classes.to_device(Device::Cpu).to_kind(Kind::Int64).contiguous())?;
    let kept = batched_nms_plain(&b, &s, &c, iou_thr, score_thr, max_det)?;
    let kept: Vec<i64> = kept.into_iter().map(|i| i as i64).collect();
    Ok(Tensor::from_slice(&kept))
}
