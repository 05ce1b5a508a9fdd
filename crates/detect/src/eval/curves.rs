//! Curves and tables for reports: COCO PR curves at IoU .5, precision/recall/F1 at the
//! confidence with the best mean F1, and an ultralytics-style detection confusion matrix.

use serde::Serialize;

use crate::boxes::iou_xyxy;
use crate::error::DetectError;
use crate::eval::coco::CocoEval;
use crate::eval::json::{CocoDataset, CocoDetection};

/// Interpolated precision at each of the 101 COCO recall thresholds, per class, at IoU 0.5
/// (all areas, largest maxDet); -1 for classes without ground truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrCurves {
    /// Recall thresholds (x axis).
    pub recall: Vec<f64>,
    /// Category ids, one per curve.
    pub cat_ids: Vec<i64>,
    /// `precision[k][r]`.
    pub precision: Vec<Vec<f64>>,
}

/// Extracts the IoU-0.5 PR curves from an accumulated evaluation.
pub fn pr_curves(ev: &CocoEval) -> PrCurves {
    let p = &ev.params;
    let (n_r, n_k, n_a, n_m) = (p.rec_thrs.len(), ev.cat_ids.len(), p.area_rngs.len(), p.max_dets.len());
    let m = n_m.saturating_sub(1);
    let precision =
        (0..n_k).map(|k| (0..n_r).map(|r| ev.precision[((r * n_k + k) * n_a) * n_m + m]).collect()).collect();
    PrCurves { recall: p.rec_thrs.clone(), cat_ids: ev.cat_ids.clone(), precision }
}

/// Precision, recall and F1 of one class at a confidence threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassPrf {
    /// Category id.
    pub cat_id: i64,
    /// TP / detections with score >= threshold (1 when there are none).
    pub precision: f64,
    /// TP / non-ignored ground truth.
    pub recall: f64,
    /// 2PR / (P + R), 0 when both are 0.
    pub f1: f64,
}

/// The confidence threshold maximising mean F1 over classes with ground truth, and the
/// per-class and mean precision/recall/F1 there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct F1Report {
    /// The chosen confidence threshold.
    pub confidence: f64,
    /// Per class values at that threshold.
    pub per_class: Vec<ClassPrf>,
    /// Mean precision over those classes.
    pub precision: f64,
    /// Mean recall.
    pub recall: f64,
    /// Mean F1 (the maximised quantity).
    pub f1: f64,
    /// Mean F1 at each confidence of the sweep grid `i / (steps - 1)`.
    pub f1_curve: Vec<f64>,
}

fn prf(tp: usize, n_det: usize, n_gt: usize) -> (f64, f64, f64) {
    let p = if n_det == 0 { 1.0 } else { tp as f64 / n_det as f64 };
    let r = tp as f64 / n_gt as f64;
    let f = if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 };
    (p, r, f)
}

/// Sweeps `steps` confidence thresholds `0, 1/(steps-1), ..., 1` using the IoU-0.5 matches of an
/// evaluation (crowd-matched detections excluded) and picks the lowest one with the best mean F1.
pub fn best_f1(ev: &CocoEval, steps: usize) -> Result<F1Report, DetectError> {
    if steps < 2 {
        return Err(DetectError::Invalid(format!("best_f1: need at least 2 steps, got {steps}")));
    }
    let classes: Vec<usize> = (0..ev.cat_ids.len()).filter(|&k| ev.matches[k].n_gt > 0).collect();
    if classes.is_empty() {
        return Err(DetectError::Invalid("best_f1: no class has ground truth".into()));
    }
    let grid: Vec<f64> = (0..steps).map(|i| i as f64 / (steps - 1) as f64).collect();
    // counts[k][i] = (tp, detections) with score >= grid[i]; walk thresholds from the top.
    let counts: Vec<Vec<(usize, usize)>> = classes
        .iter()
        .map(|&k| {
            let m = &ev.matches[k];
            let mut out = vec![(0, 0); steps];
            let (mut n, mut tp) = (0, 0);
            for i in (0..steps).rev() {
                while n < m.scores.len() && m.scores[n] >= grid[i] {
                    tp += usize::from(m.tp[n]);
                    n += 1;
                }
                out[i] = (tp, n);
            }
            out
        })
        .collect();
    let f1_curve: Vec<f64> = (0..steps)
        .map(|i| {
            let s: f64 = classes.iter().zip(&counts).map(|(&k, c)| prf(c[i].0, c[i].1, ev.matches[k].n_gt).2).sum();
            s / classes.len() as f64
        })
        .collect();
    let mut best = 0;
    for (i, &f) in f1_curve.iter().enumerate() {
        if f > f1_curve[best] {
            best = i;
        }
    }
    let per_class: Vec<ClassPrf> = classes
        .iter()
        .zip(&counts)
        .map(|(&k, c)| {
            let (precision, recall, f1) = prf(c[best].0, c[best].1, ev.matches[k].n_gt);
            ClassPrf { cat_id: ev.cat_ids[k], precision, recall, f1 }
        })
        .collect();
    let mean = |f: fn(&ClassPrf) -> f64| per_class.iter().map(f).sum::<f64>() / per_class.len() as f64;
    Ok(F1Report {
        confidence: grid[best],
        precision: mean(|c| c.precision),
        recall: mean(|c| c.recall),
        f1: mean(|c| c.f1),
        per_class,
        f1_curve,
    })
}

/// Detection confusion matrix with a background row/column: `matrix[pred][true]`, indices are
/// class positions and `num_classes` is background (row: missed gt, column: unmatched detection).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfusionMatrix {
    /// Number of real classes.
    pub num_classes: usize,
    /// IoU above which a detection and a gt box are paired (ultralytics: 0.45).
    pub iou_thr: f64,
    /// Detections at or below this confidence are dropped (ultralytics: 0.25).
    pub conf_thr: f64,
    /// `(num_classes + 1)^2` counts, row-major `[pred][true]`.
    pub matrix: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    /// An empty matrix.
    pub fn new(num_classes: usize, iou_thr: f64, conf_thr: f64) -> Self {
        Self { num_classes, iou_thr, conf_thr, matrix: vec![vec![0; num_classes + 1]; num_classes + 1] }
    }

    /// Adds one image: gt `(class, xyxy)` and detections `(class, xyxy, confidence)`. Pairs with
    /// IoU > `iou_thr` are matched greedily by IoU, each detection and each gt at most once.
    pub fn add_image(&mut self, gts: &[(usize, [f64; 4])], dets: &[(usize, [f64; 4], f64)]) -> Result<(), DetectError> {
        let nc = self.num_classes;
        if let Some(c) = gts.iter().map(|g| g.0).chain(dets.iter().map(|d| d.0)).find(|&c| c >= nc) {
            return Err(DetectError::Invalid(format!("confusion matrix: class {c} out of range (num_classes {nc})")));
        }
        let dets: Vec<&(usize, [f64; 4], f64)> = dets.iter().filter(|d| d.2 > self.conf_thr).collect();
        let mut pairs: Vec<(usize, usize, f64)> = Vec::new();
        for (g, gt) in gts.iter().enumerate() {
            for (d, dt) in dets.iter().enumerate() {
                let iou = iou_xyxy(&gt.1, &dt.1);
                if iou > self.iou_thr {
                    pairs.push((g, d, iou));
                }
            }
        }
        pairs.sort_by(|a, b| b.2.partial_cmp(&a.2).unwrap_or(std::cmp::Ordering::Equal));
        let (mut gt_match, mut det_used) = (vec![None; gts.len()], vec![false; dets.len()]);
        for &(g, d, _) in &pairs {
            if gt_match[g].is_none() && !det_used[d] {
                gt_match[g] = Some(d);
                det_used[d] = true;
            }
        }
        for (g, gt) in gts.iter().enumerate() {
            match gt_match[g] {
                Some(d) => self.matrix[dets[d].0][gt.0] += 1,
                None => self.matrix[nc][gt.0] += 1,
            }
        }
        for (d, dt) in dets.iter().enumerate() {
            if !det_used[d] {
                self.matrix[dt.0][nc] += 1;
            }
        }
        Ok(())
    }

    /// Builds the matrix over a COCO dataset (crowd gt skipped); classes are positions in the
    /// sorted category ids.
    pub fn from_coco(
        gt: &CocoDataset,
        dets: &[CocoDetection],
        iou_thr: f64,
        conf_thr: f64,
    ) -> Result<Self, DetectError> {
        let mut cats: Vec<i64> = gt.categories.iter().map(|c| c.id).collect();
        cats.sort_unstable();
        cats.dedup();
        let cls = |id: i64| {
            cats.binary_search(&id)
                .map_err(|_| DetectError::Invalid(format!("confusion matrix: unknown category {id}")))
        };
        let xyxy = |b: &[f64; 4]| [b[0], b[1], b[0] + b[2], b[1] + b[3]];
        // Per image: (class, box) ground truths and (class, box, score) detections.
        type PerImage = (Vec<(usize, [f64; 4])>, Vec<(usize, [f64; 4], f64)>);
        let mut per_img: std::collections::BTreeMap<i64, PerImage> =
            gt.images.iter().map(|im| (im.id, Default::default())).collect();
        for a in gt.annotations.iter().filter(|a| a.iscrowd == 0) {
            let e = per_img
                .get_mut(&a.image_id)
                .ok_or_else(|| DetectError::Invalid(format!("unknown image {}", a.image_id)))?;
            e.0.push((cls(a.category_id)?, xyxy(&a.bbox)));
        }
        for d in dets {
            let e = per_img
                .get_mut(&d.image_id)
                .ok_or_else(|| DetectError::Invalid(format!("unknown image {}", d.image_id)))?;
            e.1.push((cls(d.category_id)?, xyxy(&d.bbox), d.score));
        }
        let mut cm = Self::new(cats.len(), iou_thr, conf_thr);
        for (g, d) in per_img.values() {
            cm.add_image(g, d)?;
        }
        Ok(cm)
    }
}
