//! A bbox evaluator that reproduces pycocotools' `COCOeval(iouType='bbox')` number for number.
//!
//! Deliberate quirks kept for exactness: detections keep file order before a stable sort by score;
//! ground truth that is crowd or outside the area range is ignored and sorted last; a crowd box's
//! IoU is intersection over the detection's area; a detection matched to an annotation whose id is
//! 0 counts as unmatched (pycocotools stores the gt id and tests it for non-zero).

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::DetectError;
use crate::eval::json::{CocoDataset, CocoDetection};

/// Evaluation parameters; `Default` is pycocotools' `Params(iouType='bbox')`.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoParams {
    /// IoU thresholds (`np.linspace(.5, .95, 10)`).
    pub iou_thrs: Vec<f64>,
    /// Recall thresholds (`np.linspace(0, 1, 101)`).
    pub rec_thrs: Vec<f64>,
    /// Detections kept per image and category, ascending (`[1, 10, 100]`).
    pub max_dets: Vec<usize>,
    /// Area ranges `[lo, hi]` (inclusive) for all/small/medium/large.
    pub area_rngs: Vec<[f64; 2]>,
}

/// `np.linspace(start, stop, num)` with numpy's arithmetic: `i * ((stop - start) / (num - 1)) + start`,
/// the last value set to `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = if num > 1 { (stop - start) / (num - 1) as f64 } else { 0.0 };
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = v.last_mut().filter(|_| num > 1) {
        *last = stop;
    }
    v
}

impl Default for CocoParams {
    fn default() -> Self {
        Self {
            iou_thrs: linspace(0.5, 0.95, 10),
            rec_thrs: linspace(0.0, 1.0, 101),
            max_dets: vec![1, 10, 100],
            area_rngs: vec![[0.0, 1e10], [0.0, 1024.0], [1024.0, 9216.0], [9216.0, 1e10]],
        }
    }
}

/// The twelve numbers of `COCOeval.summarize()` (-1 where nothing could be measured).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CocoSummary {
    /// AP @ IoU .50:.95, all areas, 100 dets.
    pub map: f64,
    /// AP @ IoU .50.
    pub map50: f64,
    /// AP @ IoU .75.
    pub map75: f64,
    /// AP for small objects (area < 32^2).
    pub map_small: f64,
    /// AP for medium objects.
    pub map_medium: f64,
    /// AP for large objects (area > 96^2).
    pub map_large: f64,
    /// AR with 1 detection per image.
    pub mar1: f64,
    /// AR with 10 detections per image.
    pub mar10: f64,
    /// AR with 100 detections per image.
    pub mar100: f64,
    /// AR for small objects.
    pub mar_small: f64,
    /// AR for medium objects.
    pub mar_medium: f64,
    /// AR for large objects.
    pub mar_large: f64,
}

/// Detections of one category at one IoU threshold (all areas, largest maxDet), sorted by score
/// descending, with ignored ones (matched to crowd) removed: input for PR/F1 curves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassMatches {
    /// Confidence of each kept detection, descending.
    pub scores: Vec<f64>,
    /// Whether each detection is a true positive.
    pub tp: Vec<bool>,
    /// Number of non-ignored ground-truth boxes.
    pub n_gt: usize,
}

/// Accumulated results, laid out like pycocotools' `eval` arrays.
#[derive(Debug, Clone)]
pub struct CocoEval {
    /// The parameters used.
    pub params: CocoParams,
    /// Sorted category ids (the K axis).
    pub cat_ids: Vec<i64>,
    /// Precision `[T, R, K, A, M]`, row-major; -1 where a category has no ground truth.
    pub precision: Vec<f64>,
    /// Recall `[T, K, A, M]`, row-major.
    pub recall: Vec<f64>,
    /// Score at each recall threshold `[T, R, K, A, M]`.
    pub scores: Vec<f64>,
    /// Per category (K axis) matches at the first IoU threshold.
    pub matches: Vec<ClassMatches>,
}

struct Gt {
    id: i64,
    bbox: [f64; 4],
    area: f64,
    crowd: bool,
}

struct Dt {
    bbox: [f64; 4],
    area: f64,
    score: f64,
}

/// Per image and category, per area range: flags `[T, D]` and the non-ignored gt count.
struct AreaEval {
    matched: Vec<bool>,
    ignored: Vec<bool>,
    npig: usize,
}

struct ImgEval {
    /// Detection scores, sorted descending and truncated to the largest maxDet.
    scores: Vec<f64>,
    areas: Vec<AreaEval>,
}

/// Descending order on scores that treats equal values as equal (used with stable sorts).
fn desc(a: f64, b: f64) -> std::cmp::Ordering {
    b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal)
}

/// pycocotools' `bbIou` on `[x, y, w, h]` boxes; for crowd gt the union is the detection area.
pub fn coco_iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let da = d[2] * d[3];
    let u = if crowd { da } else { da + g[2] * g[3] - i };
    i / u
}

fn evaluate_img(gts: &[&Gt], dts: &mut Vec<&Dt>, p: &CocoParams, max_det: usize) -> ImgEval {
    dts.sort_by(|a, b| desc(a.score, b.score)); // stable, like mergesort
    dts.truncate(max_det);
    let (n_g, n_d, n_t) = (gts.len(), dts.len(), p.iou_thrs.len());
    let mut ious = vec![0.0; n_d * n_g];
    for (d, dt) in dts.iter().enumerate() {
        for (g, gt) in gts.iter().enumerate() {
            ious[d * n_g + g] = coco_iou(&dt.bbox, &gt.bbox, gt.crowd);
        }
    }
    let mut areas = Vec::with_capacity(p.area_rngs.len());
    let mut order = Vec::with_capacity(n_g);
    let mut gt_ig = Vec::with_capacity(n_g);
    let mut gtm = vec![false; n_g];
    for rng in &p.area_rngs {
        let out = |a: f64| a < rng[0] || a > rng[1];
        // Stable partition: non-ignored gt first, as argsort(kind='mergesort') of the 0/1 flags.
        order.clear();
        order.extend((0..n_g).filter(|&g| !(gts[g].crowd || out(gts[g].area))));
        let npig = order.len();
        order.extend((0..n_g).filter(|&g| gts[g].crowd || out(gts[g].area)));
        gt_ig.clear();
        gt_ig.extend((0..n_g).map(|j| j >= npig));
        let mut matched = vec![false; n_t * n_d];
        let mut ignored = vec![false; n_t * n_d];
        if n_g > 0 && n_d > 0 {
            for (t, &thr) in p.iou_thrs.iter().enumerate() {
                gtm.iter_mut().for_each(|x| *x = false);
                for d in 0..n_d {
                    let row = &ious[d * n_g..(d + 1) * n_g];
                    let mut best = thr.min(1.0 - 1e-10);
                    let mut m: Option<usize> = None;
                    for (j, &g) in order.iter().enumerate() {
                        if gtm[j] && !gts[g].crowd {
                            continue;
                        }
                        if m.is_some_and(|m| !gt_ig[m]) && gt_ig[j] {
                            break;
                        }
                        if row[g] < best {
                            continue;
                        }
                        best = row[g];
                        m = Some(j);
                    }
                    if let Some(j) = m {
                        ignored[t * n_d + d] = gt_ig[j];
                        matched[t * n_d + d] = gts[order[j]].id != 0;
                        gtm[j] = true;
                    }
                }
            }
        }
        for t in 0..n_t {
            for (d, dt) in dts.iter().enumerate() {
                let k = t * n_d + d;
                ignored[k] = ignored[k] || (!matched[k] && out(dt.area));
            }
        }
        areas.push(AreaEval { matched, ignored, npig });
    }
    ImgEval { scores: dts.iter().map(|d| d.score).collect(), areas }
}

/// Accumulates one category's per-image results into its `[T, R, A, M]` precision/scores and
/// `[T, A, M]` recall slices (returned flattened in that order) plus IoU-threshold-0 matches.
fn accumulate_cat(evals: &[ImgEval], p: &CocoParams) -> (Vec<f64>, Vec<f64>, Vec<f64>, ClassMatches) {
    let (n_t, n_r, n_a, n_m) = (p.iou_thrs.len(), p.rec_thrs.len(), p.area_rngs.len(), p.max_dets.len());
    let mut prec = vec![-1.0; n_t * n_r * n_a * n_m];
    let mut sc = vec![-1.0; n_t * n_r * n_a * n_m];
    let mut rec = vec![-1.0; n_t * n_a * n_m];
    // (score, image, rank) over all images in image order, stably sorted by score descending.
    let mut all: Vec<(f64, u32, u32)> = Vec::new();
    for (i, e) in evals.iter().enumerate() {
        all.extend(e.scores.iter().enumerate().map(|(r, &s)| (s, i as u32, r as u32)));
    }
    all.sort_by(|a, b| desc(a.0, b.0));
    let mut matches = ClassMatches::default();
    let mut sel: Vec<(f64, u32, u32)> = Vec::with_capacity(all.len());
    let (mut rc, mut pr) = (Vec::new(), Vec::new());
    for (m, &max_det) in p.max_dets.iter().enumerate() {
        sel.clear();
        sel.extend(all.iter().filter(|x| (x.2 as usize) < max_det));
        for a in 0..n_a {
            let npig: usize = evals.iter().map(|e| e.areas[a].npig).sum();
            if npig == 0 {
                continue;
            }
            for t in 0..n_t {
                rc.clear();
                pr.clear();
                let (mut tp, mut fp) = (0.0f64, 0.0f64);
                let last = a == 0 && t == 0 && m + 1 == n_m;
                if last {
                    matches.n_gt = npig;
                }
                for &(s, i, r) in &sel {
                    let e = &evals[i as usize];
                    let k = t * e.scores.len() + r as usize;
                    let (hit, ig) = (e.areas[a].matched[k], e.areas[a].ignored[k]);
                    if !ig {
                        if hit {
                            tp += 1.0
                        } else {
                            fp += 1.0
                        }
                        if last {
                            matches.scores.push(s);
                            matches.tp.push(hit);
                        }
                    }
                    rc.push(tp / npig as f64);
                    pr.push(tp / (fp + tp + f64::EPSILON));
                }
                let nd = rc.len();
                rec[(t * n_a + a) * n_m + m] = rc.last().copied().unwrap_or(0.0);
                for i in (1..nd).rev() {
                    if pr[i] > pr[i - 1] {
                        pr[i - 1] = pr[i];
                    }
                }
                // searchsorted(rc, rec_thrs, 'left'); past the end the rest stay 0.
                let mut pi = 0;
                for (ri, &thr) in p.rec_thrs.iter().enumerate() {
                    while pi < nd && rc[pi] < thr {
                        pi += 1;
                    }
                    let at = ((t * n_r + ri) * n_a + a) * n_m + m;
                    if pi < nd {
                        prec[at] = pr[pi];
                        sc[at] = sel[pi].0;
                    } else {
                        prec[at] = 0.0;
                        sc[at] = 0.0;
                    }
                }
            }
        }
    }
    (prec, rec, sc, matches)
}

/// Evaluates detections against ground truth like `COCOeval(gt, gt.loadRes(dets), 'bbox')`
/// followed by `evaluate()` and `accumulate()`. Detections on unknown images or categories are
/// rejected (pycocotools asserts or silently drops them).
pub fn evaluate(gt: &CocoDataset, dets: &[CocoDetection], params: &CocoParams) -> Result<CocoEval, DetectError> {
    let mut p = params.clone();
    p.max_dets.sort_unstable();
    let max_det = p.max_dets.last().copied().ok_or_else(|| DetectError::Invalid("max_dets is empty".into()))?;
    let mut img_ids: Vec<i64> = gt.images.iter().map(|im| im.id).collect();
    img_ids.sort_unstable();
    img_ids.dedup();
    let mut cat_ids: Vec<i64> = gt.categories.iter().map(|c| c.id).collect();
    cat_ids.sort_unstable();
    cat_ids.dedup();
    let img_ix: HashMap<i64, usize> = img_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let cat_ix: HashMap<i64, usize> = cat_ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let key = |what: &str, i: usize, img: i64, cat: i64| -> Result<(usize, usize), DetectError> {
        match (cat_ix.get(&cat), img_ix.get(&img)) {
            (Some(&k), Some(&i)) => Ok((k, i)),
            (None, _) => Err(DetectError::Invalid(format!("{what}[{i}].category_id: unknown category {cat}"))),
            (_, None) => Err(DetectError::Invalid(format!("{what}[{i}].image_id: unknown image {img}"))),
        }
    };
    let mut seen = HashSet::with_capacity(gt.annotations.len());
    let mut gts = Vec::with_capacity(gt.annotations.len());
    for (i, a) in gt.annotations.iter().enumerate() {
        if !seen.insert(a.id) {
            return Err(DetectError::Invalid(format!("annotations[{i}].id: duplicate annotation id {}", a.id)));
        }
        let (k, im) = key("annotations", i, a.image_id, a.category_id)?;
        gts.push((k, im, Gt { id: a.id, bbox: a.bbox, area: a.area, crowd: a.iscrowd != 0 }));
    }
    let mut dts = Vec::with_capacity(dets.len());
    for (i, d) in dets.iter().enumerate() {
        if !d.score.is_finite() || d.bbox.iter().any(|x| !x.is_finite()) {
            return Err(DetectError::Invalid(format!("detections[{i}]: non-finite score or box")));
        }
        let (k, im) = key("detections", i, d.image_id, d.category_id)?;
        dts.push((k, im, Dt { bbox: d.bbox, area: d.bbox[2] * d.bbox[3], score: d.score }));
    }
    // Group by (category, image) keeping file order inside a group (stable sorts).
    gts.sort_by_key(|x| (x.0, x.1));
    dts.sort_by_key(|x| (x.0, x.1));
    // (category, image), then the ranges of its ground truths and detections.
    type Group = ((usize, usize), std::ops::Range<usize>, std::ops::Range<usize>);
    let mut groups: Vec<Group> = Vec::new();
    let (mut gi, mut di) = (0, 0);
    while gi < gts.len() || di < dts.len() {
        let kg = gts.get(gi).map(|x| (x.0, x.1));
        let kd = dts.get(di).map(|x| (x.0, x.1));
        let k = match (kg, kd) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => break,
        };
        let (g0, d0) = (gi, di);
        while gi < gts.len() && (gts[gi].0, gts[gi].1) == k {
            gi += 1;
        }
        while di < dts.len() && (dts[di].0, dts[di].1) == k {
            di += 1;
        }
        groups.push((k, g0..gi, d0..di));
    }
    let evals: Vec<ImgEval> = groups
        .par_iter()
        .map(|(_, gr, dr)| {
            let g: Vec<&Gt> = gts[gr.clone()].iter().map(|x| &x.2).collect();
            let mut d: Vec<&Dt> = dts[dr.clone()].iter().map(|x| &x.2).collect();
            evaluate_img(&g, &mut d, &p, max_det)
        })
        .collect();
    // Contiguous runs of groups per category.
    let n_k = cat_ids.len();
    let mut bounds = vec![0usize; n_k + 1];
    for ((k, _), _, _) in &groups {
        bounds[k + 1] += 1;
    }
    for k in 0..n_k {
        bounds[k + 1] += bounds[k];
    }
    let per_cat: Vec<_> =
        (0..n_k).into_par_iter().map(|k| accumulate_cat(&evals[bounds[k]..bounds[k + 1]], &p)).collect();
    let (n_t, n_r, n_a, n_m) = (p.iou_thrs.len(), p.rec_thrs.len(), p.area_rngs.len(), p.max_dets.len());
    let mut precision = vec![-1.0; n_t * n_r * n_k * n_a * n_m];
    let mut scores = vec![-1.0; n_t * n_r * n_k * n_a * n_m];
    let mut recall = vec![-1.0; n_t * n_k * n_a * n_m];
    let mut matches = Vec::with_capacity(n_k);
    for (k, (pr, rc, sc, mt)) in per_cat.into_iter().enumerate() {
        for tr in 0..n_t * n_r {
            let src = tr * n_a * n_m;
            let dst = (tr * n_k + k) * n_a * n_m;
            precision[dst..dst + n_a * n_m].copy_from_slice(&pr[src..src + n_a * n_m]);
            scores[dst..dst + n_a * n_m].copy_from_slice(&sc[src..src + n_a * n_m]);
        }
        for t in 0..n_t {
            let dst = (t * n_k + k) * n_a * n_m;
            recall[dst..dst + n_a * n_m].copy_from_slice(&rc[t * n_a * n_m..(t + 1) * n_a * n_m]);
        }
        matches.push(mt);
    }
    Ok(CocoEval { params: p, cat_ids, precision, recall, scores, matches })
}

impl CocoEval {
    /// Mean over entries > -1 of precision (`ap`) or recall at an optional exact IoU threshold,
    /// an area index and a maxDets value, like `summarize()._summarize`; -1 when none.
    pub fn summarize_one(&self, ap: bool, iou_thr: Option<f64>, area: usize, max_det: usize) -> f64 {
        let p = &self.params;
        let (n_t, n_r, n_k, n_a, n_m) =
            (p.iou_thrs.len(), p.rec_thrs.len(), self.cat_ids.len(), p.area_rngs.len(), p.max_dets.len());
        let ts: Vec<usize> = (0..n_t).filter(|&t| iou_thr.is_none_or(|x| p.iou_thrs[t] == x)).collect();
        let Some(m) = p.max_dets.iter().position(|&x| x == max_det) else { return -1.0 };
        let (mut sum, mut n) = (0.0, 0usize);
        let mut add = |v: f64| {
            if v > -1.0 {
                sum += v;
                n += 1;
            }
        };
        for &t in &ts {
            for k in 0..n_k {
                if ap {
                    for r in 0..n_r {
                        add(self.precision[(((t * n_r + r) * n_k + k) * n_a + area) * n_m + m]);
                    }
                } else {
                    add(self.recall[((t * n_k + k) * n_a + area) * n_m + m]);
                }
            }
        }
        if n == 0 { -1.0 } else { sum / n as f64 }
    }

    /// The twelve standard numbers (requires the default area ranges and three maxDets).
    pub fn summary(&self) -> CocoSummary {
        let md = &self.params.max_dets;
        let (m0, m1, m2) =
            (md.first().copied().unwrap_or(1), md.get(1).copied().unwrap_or(10), md.get(2).copied().unwrap_or(100));
        let s = |ap, thr, a, m| self.summarize_one(ap, thr, a, m);
        CocoSummary {
            map: s(true, None, 0, m2),
            map50: s(true, Some(0.5), 0, m2),
            map75: s(true, Some(0.75), 0, m2),
            map_small: s(true, None, 1, m2),
            map_medium: s(true, None, 2, m2),
            map_large: s(true, None, 3, m2),
            mar1: s(false, None, 0, m0),
            mar10: s(false, None, 0, m1),
            mar100: s(false, None, 0, m2),
            mar_small: s(false, None, 1, m2),
            mar_medium: s(false, None, 2, m2),
            mar_large: s(false, None, 3, m2),
        }
    }
}
