//! Batched NMS against a brute-force greedy reference written plainly here.

#![allow(clippy::expect_used)] // test failures are panics

use detect::nms::{NmsParams, batched_nms, batched_nms_plain};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tch::{Kind, Tensor};

fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Global greedy NMS: visit boxes by score (ties: lower index first), keep one unless a kept box of
/// the same class overlaps it by more than the threshold; then keep the first `max_det`.
fn reference(b: &[[f64; 4]], s: &[f64], c: &[i64], p: NmsParams) -> Vec<usize> {
    let (iou_thr, score_thr, max_det) = (p.iou, p.score, p.max_det);
    let mut idx: Vec<usize> = (0..b.len()).collect();
    idx.sort_by(|&x, &y| s[y].partial_cmp(&s[x]).expect("finite").then(x.cmp(&y)));
    let mut kept: Vec<usize> = Vec::new();
    for i in idx {
        if s[i] <= score_thr {
            continue;
        }
        if kept.iter().all(|&k| c[k] != c[i] || iou(&b[k], &b[i]) <= iou_thr) {
            kept.push(i);
        }
    }
    kept.truncate(max_det);
    kept
}

fn random_case(seed: u64, n: usize) -> (Vec<[f64; 4]>, Vec<f64>, Vec<i64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut b = Vec::new();
    let (mut s, mut c) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let (x, y) = (rng.gen_range(0.0..100.0), rng.gen_range(0.0..100.0));
        let (w, h) = (rng.gen_range(1.0..40.0), rng.gen_range(1.0..40.0));
        b.push([x, y, x + w, y + h]);
        // Coarse scores give many ties.
        s.push((rng.gen_range(0.0..1.0f64) * 20.0).round() / 20.0);
        c.push(rng.gen_range(0..3));
    }
    (b, s, c)
}

fn tensors(b: &[[f64; 4]], s: &[f64], c: &[i64]) -> (Tensor, Tensor, Tensor) {
    let flat: Vec<f64> = b.iter().flatten().copied().collect();
    (Tensor::from_slice(&flat).view([-1, 4]), Tensor::from_slice(s), Tensor::from_slice(c))
}

/// The thresholds in one value.
fn nms(iou: f64, score: f64, max_det: usize) -> NmsParams {
    NmsParams { iou, score, max_det }
}

fn run(b: &[[f64; 4]], s: &[f64], c: &[i64], p: NmsParams) -> Vec<usize> {
    let (tb, ts, tc) = tensors(b, s, c);
    let k = batched_nms(&tb, &ts, &tc, p).expect("nms");
    assert_eq!(k.kind(), Kind::Int64);
    Vec::<i64>::try_from(k).expect("vec").into_iter().map(|i| i as usize).collect()
}

#[test]
fn matches_reference_on_random_boxes() {
    for seed in 0..60 {
        let n = [0, 1, 5, 50, 300][seed as usize % 5];
        let (b, s, c) = random_case(seed, n);
        for &(iou_thr, score_thr, max_det) in
            &[(0.5, 0.0, 1000), (0.3, 0.2, 1000), (0.7, 0.05, 7), (0.0, 0.0, 100), (1.0, 0.5, 1000)]
        {
            let want = reference(&b, &s, &c, nms(iou_thr, score_thr, max_det));
            assert_eq!(run(&b, &s, &c, nms(iou_thr, score_thr, max_det)), want, "seed {seed} thr {iou_thr}");
        }
    }
}

#[test]
fn matches_reference_beyond_one_block() {
    // 20000 boxes in one class exceed the 16384-candidate block: exercises cross-block suppression.
    let (b, s, _) = random_case(99, 20000);
    let c = vec![0i64; b.len()];
    let want = reference(&b, &s, &c, nms(0.6, 0.0, 100000));
    assert_eq!(batched_nms_plain(&b, &s, &c, nms(0.6, 0.0, 100000)).expect("nms"), want);
}

#[test]
fn edge_cases() {
    assert!(run(&[], &[], &[], nms(0.5, 0.0, 10)).is_empty());
    // All the same box: one survivor per class, the best-scored (ties: lowest index).
    let b = vec![[1.0, 1.0, 5.0, 5.0]; 6];
    let s = vec![0.3, 0.9, 0.9, 0.1, 0.5, 0.9];
    let c = vec![0, 0, 1, 0, 1, 1];
    assert_eq!(run(&b, &s, &c, nms(0.5, 0.0, 10)), vec![1, 2]);
    // Threshold 1: IoU never exceeds 1, nothing is suppressed.
    assert_eq!(run(&b, &s, &c, nms(1.0, 0.0, 10)), vec![1, 2, 5, 4, 0, 3]);
    // Threshold 0: disjoint boxes survive, touching-only boxes (IoU 0) survive, overlaps do not.
    let b = vec![[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 2.0, 1.0], [0.5, 0.5, 1.5, 1.5], [5.0, 5.0, 6.0, 6.0]];
    let s = vec![0.9, 0.8, 0.7, 0.6];
    assert_eq!(run(&b, &s, &[0, 0, 0, 0], nms(0.0, 0.0, 10)), vec![0, 1, 3]);
    // Score threshold is strict and max_det truncates.
    assert_eq!(run(&b, &s, &[0, 1, 2, 3], nms(0.5, 0.7, 10)), vec![0, 1]);
    assert_eq!(run(&b, &s, &[0, 1, 2, 3], nms(0.5, 0.0, 3)), vec![0, 1, 2]);
    assert!(run(&b, &s, &[0, 1, 2, 3], nms(0.5, 0.0, 0)).is_empty());
}

#[test]
fn rejects_bad_shapes() {
    let b = Tensor::zeros([3, 4], (Kind::Float, tch::Device::Cpu));
    let s = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu));
    let c = Tensor::zeros([3], (Kind::Int64, tch::Device::Cpu));
    assert!(batched_nms(&b, &s, &c, nms(0.5, 0.0, 10)).is_err());
    let b5 = Tensor::zeros([3, 5], (Kind::Float, tch::Device::Cpu));
    assert!(batched_nms(&b5, &c.to_kind(Kind::Float), &c, nms(0.5, 0.0, 10)).is_err());
}
