//! DFL and CIoU against values computed by hand (formulas evaluated independently in f64).
#![allow(clippy::unwrap_used)]

use std::f64::consts::PI;

use detect::boxes::{ciou, iou};
use detect::yolo::loss::dfl;
use tch::{Kind, Tensor};

fn t4(b: [f64; 4]) -> Tensor {
    Tensor::from_slice(&b.map(|x| x as f32)).view([1, 4])
}

fn val(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).reshape([-1]).double_value(&[0])
}

#[test]
fn ciou_of_equal_aspect_boxes() {
    // [0,0,2,2] vs [1,1,3,3]: IoU 1/7, enclosing 3x3 (c^2 = 18), centre distance^2 = 2, v = 0.
    let want = 1.0 / 7.0 - 2.0 / 18.0;
    let got = val(&ciou(&t4([0., 0., 2., 2.]), &t4([1., 1., 3., 3.])));
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    assert!((val(&iou(&t4([0., 0., 2., 2.]), &t4([1., 1., 3., 3.]))) - 1.0 / 7.0).abs() < 1e-5);
}

#[test]
fn ciou_with_aspect_term() {
    // [0,0,4,2] vs [0,0,2,2]: IoU 0.5, enclosing 4x2 (c^2 = 20), centres (2,1) and (1,1) (rho^2 = 1),
    // v = 4/pi^2 (atan(2/2) - atan(4/2))^2, alpha = v / (1 - IoU + v).
    let v = 4.0 / (PI * PI) * (1f64.atan() - 2f64.atan()).powi(2);
    let alpha = v / (1.0 - 0.5 + v);
    let want = 0.5 - (1.0 / 20.0 + alpha * v);
    let got = val(&ciou(&t4([0., 0., 4., 2.]), &t4([0., 0., 2., 2.])));
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    // Identical boxes: CIoU 1.
    assert!((val(&ciou(&t4([1., 2., 5., 9.]), &t4([1., 2., 5., 9.]))) - 1.0).abs() < 1e-5);
    // Disjoint boxes are penalised below 0 by the centre distance.
    assert!(val(&ciou(&t4([0., 0., 1., 1.]), &t4([5., 5., 6., 6.]))) < -0.5);
}

#[test]
fn ciou_broadcasts_and_has_gradients() {
    let a = Tensor::from_slice(&[0f32, 0., 4., 2., 0., 0., 2., 2.]).view([2, 4]).set_requires_grad(true);
    let b = Tensor::from_slice(&[0f32, 0., 2., 2.]).view([1, 4]);
    let c = ciou(&a, &b);
    assert_eq!(c.size(), vec![2]);
    c.sum(Kind::Float).backward();
    assert!(a.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

#[test]
fn dfl_matches_hand_computation() {
    // logits [1,2,3,4], target 1.25: CE to bin 1 weighted 0.75 plus CE to bin 2 weighted 0.25.
    let lse = (1f64.exp() + 2f64.exp() + 3f64.exp() + 4f64.exp()).ln();
    let want = 0.75 * (lse - 2.0) + 0.25 * (lse - 3.0);
    let logits = Tensor::from_slice(&[1f32, 2., 3., 4.]).view([1, 4]);
    let got = val(&dfl(&logits, &Tensor::from_slice(&[1.25f32])));
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    // Uniform logits: ln(reg_max) whatever the target.
    let u = Tensor::zeros([2, 8], (Kind::Float, tch::Device::Cpu));
    let d = dfl(&u, &Tensor::from_slice(&[0.0f32, 6.5]));
    for x in Vec::<f64>::try_from(d.to_kind(Kind::Double)).unwrap() {
        assert!((x - 8f64.ln()).abs() < 1e-5);
    }
    // An integer target on a sharply peaked distribution costs almost nothing.
    let mut peaked = vec![-20f32; 16];
    peaked[3] = 20.0;
    let p = Tensor::from_slice(&peaked).view([1, 16]);
    assert!(val(&dfl(&p, &Tensor::from_slice(&[3.0f32]))) < 1e-6);
}
