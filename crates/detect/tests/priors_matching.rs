//! Anchors, SSD default boxes, IoU matching, sampling and hard-negative mining against values
//! computed by hand from torchvision's definitions.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test failures are panics

use detect::matching::{BalancedPositiveNegativeSampler, Matcher, hard_negative_mask, ssd_match, to_vec_i64};
use detect::priors::{AnchorGenerator, DefaultBoxGenerator};
use tch::{Kind, Tensor};

fn vec_f(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().view([-1])).expect("vec")
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-4, "{a:?} vs {b:?}");
    }
}

#[test]
fn anchors_match_hand_computed_values() {
    // size 32, ratios (h/w) 0.5, 1, 2: half sides (22.63, 11.31), (16, 16), (11.31, 22.63), rounded.
    let g = AnchorGenerator::new(vec![vec![32.0]], vec![vec![0.5, 1.0, 2.0]]).expect("gen");
    close(
        &vec_f(&g.cell_anchors(0).expect("cell")),
        &[-23., -11., 23., 11., -16., -16., 16., 16., -11., -23., 11., 23.],
    );
    // A 2x2 grid on a 64x64 input: stride 32; location order (y, x) row-major, then anchors.
    let a = g.anchors((64, 64), &[(2, 2)]).expect("anchors");
    assert_eq!(a.size(), vec![12, 4]);
    close(&vec_f(&a.get(3)), &[9., -11., 55., 11.]); // x = 1, y = 0, first shape
    close(&vec_f(&a.get(11)), &[21., 9., 43., 55.]); // x = 1, y = 1, last shape
    // Rounding is half to even, as torch.round: +-0.5 -> 0, +-1.5 -> +-2.
    let h = AnchorGenerator::new(vec![vec![1.0, 3.0]], vec![vec![1.0]]).expect("gen");
    close(&vec_f(&h.cell_anchors(0).expect("cell")), &[0., 0., 0., 0., -2., -2., 2., 2.]);
    assert_eq!(AnchorGenerator::fpn_default().num_anchors_per_location(), vec![3; 5]);
    assert!(g.anchors((64, 64), &[(2, 2), (1, 1)]).is_err());
}

#[test]
fn default_boxes_match_hand_computed_values() {
    // One level: scales [0.2, 0.9]; shapes (0.2, 0.2), (sqrt(0.18), ..), (0.2 sqrt2, 0.2 / sqrt2), transposed.
    let g = DefaultBoxGenerator::new(vec![vec![2.0]], 0.2, 0.9).expect("gen");
    assert_eq!(g.num_anchors_per_location(), vec![4]);
    let b = g.boxes((100, 200), &[(1, 2)]).expect("boxes"); // H = 100, W = 200, grid 1x2
    assert_eq!(b.size(), vec![8, 4]);
    close(&vec_f(&b.get(0)), &[30., 40., 70., 60.]); // centre (50, 50), 40 x 20
    let s = 0.18f32.sqrt();
    close(&vec_f(&b.get(1)), &[50. - 100. * s, 50. - 50. * s, 50. + 100. * s, 50. + 50. * s]);
    let (w, h) = (0.2f32 * 2f32.sqrt(), 0.2f32 / 2f32.sqrt());
    close(&vec_f(&b.get(6)), &[150. - 100. * w, 50. - 50. * h, 150. + 100. * w, 50. + 50. * h]); // 2nd cell, 3rd shape
    // Several levels: evenly spaced scales plus 1.0.
    let m = DefaultBoxGenerator::new(vec![vec![2.0]; 3], 0.2, 0.8).expect("gen");
    close(&m.scales.iter().map(|x| *x as f32).collect::<Vec<_>>(), &[0.2, 0.5, 0.8, 1.0]);
    // Clipping clamps shapes (not centres) to [0, 1].
    let c = DefaultBoxGenerator::with_scales(vec![vec![]], vec![0.9, 1.6], None, true).expect("gen");
    close(&vec_f(&c.boxes_cxcywh((10, 10), &[(1, 1)]).expect("boxes")), &[0.5, 0.5, 0.9, 0.9, 0.5, 0.5, 1.0, 1.0]);
}

#[test]
fn matcher_thresholds_and_low_quality_rescue() {
    let q = Tensor::from_slice(&[0.9f32, 0.5, 0.2, 0.3]).view([1, 4]);
    let m = Matcher::new(0.7, 0.3, false).expect("m");
    assert_eq!(to_vec_i64(&m.assign(&q).expect("assign")).expect("v"), vec![0, -2, -1, -2]);
    let q = Tensor::from_slice(&[0.4f32, 0.2, 0.4, 0.1, 0.35, 0.0]).view([2, 3]);
    assert_eq!(to_vec_i64(&m.assign(&q).expect("assign")).expect("v"), vec![-2, -2, -2]);
    let lq = Matcher::new(0.7, 0.3, true).expect("m");
    // gt 0's best IoU 0.4 is tied by priors 0 and 2: both rescued; gt 1 rescues prior 1.
    assert_eq!(to_vec_i64(&lq.assign(&q).expect("assign")).expect("v"), vec![0, 1, 0]);
    assert!(Matcher::new(0.3, 0.7, false).is_err());
    assert!(m.assign(&Tensor::zeros([0, 3], (Kind::Float, tch::Device::Cpu))).is_err());
}

#[test]
fn ssd_rule_gives_every_ground_truth_a_prior() {
    // Priors: a 10x10 grid of 10x10 cells over 100x100; ground truths of awkward sizes.
    let mut p = Vec::new();
    for y in 0..10 {
        for x in 0..10 {
            p.extend([x as f32 * 10., y as f32 * 10., x as f32 * 10. + 10., y as f32 * 10. + 10.]);
        }
    }
    let priors = Tensor::from_slice(&p).view([100, 4]);
    let gt = Tensor::from_slice(&[
        11.0f32, 1.0, 14.0, 4.0, 20.0, 20.0, 80.0, 90.0, 55.0, 5.0, 58.0, 40.0, 0.0, 0.0, 10.0, 10.0,
    ])
    .view([4, 4]);
    let q = detect::boxes::box_iou(&gt, &priors).expect("iou");
    let m = to_vec_i64(&ssd_match(&q, 0.5).expect("match")).expect("v");
    for g in 0..4 {
        assert!(m.contains(&g), "ground truth {g} got no prior: {m:?}");
    }
    // Priors that overlap nothing are negatives; the exact cell of gt 3 matches it with IoU 1.
    assert_eq!(m[0], 3);
    assert_eq!(m[99], -1);
    // Only IoU >= 0.5 or best-of-gt priors are positive.
    let qv = Vec::<f32>::try_from(q.contiguous().view([-1])).expect("q");
    for (i, &g) in m.iter().enumerate() {
        if g >= 0 && qv[g as usize * 100 + i] < 0.5 {
            let best = (0..100).map(|j| qv[g as usize * 100 + j]).fold(0.0f32, f32::max);
            assert_eq!(qv[g as usize * 100 + i], best);
        }
    }
}

#[test]
fn balanced_sampler_respects_sizes_and_fractions() {
    tch::manual_seed(0);
    let s = BalancedPositiveNegativeSampler { batch_size_per_image: 256, positive_fraction: 0.5 };
    let mut l = vec![0i64; 1000];
    l[..10].iter_mut().for_each(|v| *v = 1);
    l[990..].iter_mut().for_each(|v| *v = -1);
    let labels = Tensor::from_slice(&l);
    let (pos, neg) = s.sample(&labels).expect("sample");
    assert_eq!(pos.sum(Kind::Int64).int64_value(&[]), 10);
    assert_eq!(neg.sum(Kind::Int64).int64_value(&[]), 246);
    assert_eq!(pos.logical_and(&labels.lt(1)).sum(Kind::Int64).int64_value(&[]), 0);
    assert_eq!(neg.logical_and(&labels.ne(0)).sum(Kind::Int64).int64_value(&[]), 0);
    let many = Tensor::from_slice(&[vec![1i64; 300], vec![0; 700]].concat());
    let (pos, neg) = s.sample(&many).expect("sample");
    assert_eq!((pos.sum(Kind::Int64).int64_value(&[]), neg.sum(Kind::Int64).int64_value(&[])), (128, 128));
}

#[test]
fn hard_negative_mining_keeps_three_per_positive() {
    // Row 0: 2 positives -> the 6 highest-loss negatives; row 1: no positives -> none.
    let loss = Tensor::from_slice(&[
        9.0f32, 1.0, 5.0, 7.0, 0.5, 6.0, 8.0, 2.0, 4.0, 3.0, 0.1, 0.2, //
        1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0,
    ])
    .view([2, 12]);
    let mut p = vec![false; 24];
    p[0] = true; // the highest loss is a positive: it must not count as a negative
    p[3] = true;
    let pos = Tensor::from_slice(&p).view([2, 12]);
    let neg = hard_negative_mask(&loss, &pos, 3).expect("mine");
    let n = Vec::<bool>::try_from(neg.contiguous().view([-1])).expect("v");
    let picked: Vec<usize> = (0..12).filter(|&i| n[i]).collect();
    assert_eq!(picked, vec![2, 5, 6, 7, 8, 9]); // losses 5, 6, 8, 2, 4, 3
    assert!(n[12..].iter().all(|b| !b));
}
