//! Task-aligned assignment on a hand-built case (values worked out by hand in the comments).
#![allow(clippy::unwrap_used)]

use detect::model_io::Targets;
use detect::yolo::assigner::{Predictions, TalConfig, assign};
use tch::{Kind, Tensor};

fn v(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap()
}

/// Four anchors (stride 8 on a 16x16 image): P0 (4,4), P1 (12,4), P2 (4,12), P3 (12,12).
/// GT A = [0,0,16,8] class 0 holds P0, P1; GT B = [0,0,8,16] class 1 holds P0, P2; a third gt is
/// padding. Predicted boxes: P0 = [0,0,8,16] (IoU 1 with B, 1/3 with A), P1 = [8,0,16,8] (IoU 0.5
/// with A), P2 = [0,8,8,16] (IoU 0.5 with B), P3 = [8,8,16,16] (inside neither). All scores 0.5.
/// With topk = 2 both gts take P0; P0 overlaps B most, so B keeps it.
/// Soft targets (alpha .5, beta 6): A's only positive P1 gets its IoU 0.5. For B, t(P0) = 0.5^.5,
/// t(P2) = 0.5^.5 * 0.5^6; normalised by max t and scaled by the best IoU 1: P0 -> 1, P2 -> 0.5^6.
#[test]
fn hand_built_assignment() {
    let points = Tensor::from_slice(&[4f32, 4., 12., 4., 4., 12., 12., 12.]).view([4, 2]);
    let pd_boxes =
        Tensor::from_slice(&[0f32, 0., 8., 16., 8., 0., 16., 8., 0., 8., 8., 16., 8., 8., 16., 16.]).view([1, 4, 4]);
    let pd_scores = Tensor::full([1, 4, 2], 0.5, (Kind::Float, tch::Device::Cpu));
    let gt_boxes = Tensor::from_slice(&[0f32, 0., 16., 8., 0., 0., 8., 16., 0., 0., 16., 16.]).view([1, 3, 4]);
    let gt_labels = Tensor::from_slice(&[0i64, 1, 0]).view([1, 3]);
    let gt_mask = Tensor::from_slice(&[true, true, false]).view([1, 3]);
    let cfg = TalConfig { topk: 2, alpha: 0.5, beta: 6.0 };
    let gt = Targets { boxes: gt_boxes, labels: gt_labels, mask: gt_mask };
    let a = assign(Predictions { scores: &pd_scores, boxes: &pd_boxes, points: &points }, &gt, &cfg);
    assert_eq!(v(&a.fg_mask.to_kind(Kind::Float)), vec![1.0, 1.0, 1.0, 0.0]);
    let gt_index = v(&a.gt_index);
    assert_eq!(&gt_index[..3], &[1.0, 0.0, 1.0]);
    assert_eq!(&v(&a.labels)[..3], &[1.0, 0.0, 1.0]);
    let boxes = v(&a.boxes);
    assert_eq!(&boxes[0..4], &[0.0, 0.0, 8.0, 16.0]);
    assert_eq!(&boxes[4..8], &[0.0, 0.0, 16.0, 8.0]);
    assert_eq!(&boxes[8..12], &[0.0, 0.0, 8.0, 16.0]);
    let expected = [0.0, 1.0, 0.5, 0.0, 0.0, 0.5f64.powi(6), 0.0, 0.0];
    for (got, want) in v(&a.scores).iter().zip(expected) {
        assert!((got - want).abs() < 1e-4, "scores {:?} vs {expected:?}", v(&a.scores));
    }
}

/// Without any ground truth every anchor is background.
#[test]
fn no_ground_truth_means_background() {
    let points = Tensor::from_slice(&[4f32, 4., 12., 4.]).view([2, 2]);
    let pd_boxes = Tensor::zeros([2, 2, 4], (Kind::Float, tch::Device::Cpu));
    let pd_scores = Tensor::full([2, 2, 3], 0.5, (Kind::Float, tch::Device::Cpu));
    let gt = Targets {
        boxes: Tensor::zeros([2, 0, 4], (Kind::Float, tch::Device::Cpu)),
        labels: Tensor::zeros([2, 0], (Kind::Int64, tch::Device::Cpu)),
        mask: Tensor::zeros([2, 0], (Kind::Bool, tch::Device::Cpu)),
    };
    let a = assign(Predictions { scores: &pd_scores, boxes: &pd_boxes, points: &points }, &gt, &TalConfig::default());
    assert_eq!(a.scores.size(), vec![2, 2, 3]);
    assert_eq!(a.fg_mask.sum(Kind::Int64).int64_value(&[]), 0);
    assert_eq!(a.scores.abs().sum(Kind::Double).double_value(&[]), 0.0);
}

/// topk limits the positives: with topk = 1 a gt keeps only its best-aligned anchor.
#[test]
fn topk_limits_positives() {
    let points = Tensor::from_slice(&[4f32, 4., 12., 4.]).view([2, 2]);
    // Both anchors inside gt [0,0,16,8]; anchor 1 predicts the box exactly, anchor 0 half of it.
    let pd_boxes = Tensor::from_slice(&[0f32, 0., 8., 8., 0., 0., 16., 8.]).view([1, 2, 4]);
    let pd_scores = Tensor::full([1, 2, 1], 0.5, (Kind::Float, tch::Device::Cpu));
    let gt_boxes = Tensor::from_slice(&[0f32, 0., 16., 8.]).view([1, 1, 4]);
    let gt = Targets {
        boxes: gt_boxes,
        labels: Tensor::from_slice(&[0i64]).view([1, 1]),
        mask: Tensor::from_slice(&[true]).view([1, 1]),
    };
    let pd = Predictions { scores: &pd_scores, boxes: &pd_boxes, points: &points };
    let a = assign(pd, &gt, &TalConfig { topk: 1, alpha: 0.5, beta: 6.0 });
    assert_eq!(v(&a.fg_mask.to_kind(Kind::Float)), vec![0.0, 1.0]);
    assert!((v(&a.scores)[1] - 1.0).abs() < 1e-4);
}
