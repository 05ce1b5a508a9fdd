//! Box utilities: conversions, IoU against the plain-f64 version and hand values, coder round trips.

#![allow(clippy::expect_used)] // test failures are panics

use detect::boxes::*;
use tch::{Kind, Tensor};

fn t(rows: &[[f64; 4]]) -> Tensor {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_slice(&flat).view([-1, 4])
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn random_xyxy(n: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let xy = Tensor::rand([n, 2], (Kind::Double, tch::Device::Cpu)) * 100.0;
    let wh = Tensor::rand([n, 2], (Kind::Double, tch::Device::Cpu)) * 50.0 + 1.0;
    Tensor::cat(&[&xy, &(&xy + wh)], 1)
}

#[test]
fn conversions_known_values_and_round_trips() {
    let b = t(&[[10.0, 20.0, 30.0, 60.0]]);
    assert_eq!(max_abs_diff(&xyxy_to_xywh(&b).expect("ok"), &t(&[[10.0, 20.0, 20.0, 40.0]])), 0.0);
    assert_eq!(max_abs_diff(&xyxy_to_cxcywh(&b).expect("ok"), &t(&[[20.0, 40.0, 20.0, 40.0]])), 0.0);
    assert_eq!(box_area(&b).expect("ok").double_value(&[0]), 800.0);
    let r = random_xyxy(100, 1);
    assert!(max_abs_diff(&xywh_to_xyxy(&xyxy_to_xywh(&r).expect("ok")).expect("ok"), &r) < 1e-12);
    assert!(max_abs_diff(&cxcywh_to_xyxy(&xyxy_to_cxcywh(&r).expect("ok")).expect("ok"), &r) < 1e-12);
    assert!(xyxy_to_xywh(&Tensor::zeros([3, 5], (Kind::Float, tch::Device::Cpu))).is_err());
}

#[test]
fn iou_matrix_matches_plain_version_and_hand_values() {
    let a = t(&[[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [3.0, 3.0, 3.0, 3.0]]);
    let b = t(&[[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0]]);
    let m = box_iou(&a, &b).expect("iou");
    assert_eq!(m.size(), [3, 2]);
    let want = [[1.0 / 7.0, 1.0], [0.0, 0.25], [0.0, 0.0]];
    for (i, row) in want.iter().enumerate() {
        for (j, w) in row.iter().enumerate() {
            assert!((m.double_value(&[i as i64, j as i64]) - w).abs() < 1e-12);
        }
    }
    let (x, y) = (random_xyxy(40, 2), random_xyxy(30, 3));
    let plain = iou_matrix(&to_vec4(&x).expect("v"), &to_vec4(&y).expect("v"));
    let got = Vec::<f64>::try_from(box_iou(&x, &y).expect("iou").view(-1)).expect("vec");
    assert_eq!(got.len(), 1200);
    assert!(got.iter().zip(&plain).all(|(g, p)| (g - p).abs() < 1e-12));
    assert!(plain.iter().any(|&v| v > 0.0), "random boxes should overlap somewhere");
}

#[test]
fn clip_keeps_boxes_inside() {
    let b = t(&[[-5.0, -1.0, 700.0, 300.0], [10.0, 10.0, 20.0, 20.0]]);
    let c = clip_boxes(&b, 240.0, 640.0).expect("clip");
    assert_eq!(max_abs_diff(&c, &t(&[[0.0, 0.0, 640.0, 240.0], [10.0, 10.0, 20.0, 20.0]])), 0.0);
}

#[test]
fn delta_coder_round_trips_and_has_known_values() {
    let anchors = t(&[[0.0, 0.0, 10.0, 10.0]]);
    let target = t(&[[5.0, 0.0, 25.0, 10.0]]);
    let c = BoxCoder::new([10.0, 10.0, 5.0, 5.0]);
    let d = c.encode(&target, &anchors).expect("encode");
    // centre moves by 10 = 1 anchor width -> dx = 10; width doubles -> dw = 5 ln 2.
    assert!(max_abs_diff(&d, &t(&[[10.0, 0.0, 5.0 * 2f64.ln(), 0.0]])) < 1e-12);
    for coder in [BoxCoder::default(), c, BoxCoder::ssd([0.1, 0.2])] {
        let (a, g) = (random_xyxy(64, 4), random_xyxy(64, 5));
        let enc = coder.encode(&g, &a).expect("encode");
        assert!(max_abs_diff(&coder.decode(&enc, &a).expect("decode"), &g) < 1e-9);
    }
    // SSD variances are reciprocal weights.
    assert_eq!(BoxCoder::ssd([0.1, 0.2]).weights, [10.0, 10.0, 5.0, 5.0]);
    // Huge dw is clamped instead of overflowing.
    let big = BoxCoder::default().decode(&t(&[[0.0, 0.0, 1e6, 1e6]]), &anchors).expect("decode");
    assert!(big.isfinite().all().int64_value(&[]) == 1);
    assert!(c.encode(&target, &t(&[[0.0; 4], [0.0; 4]])).is_err());
}

#[test]
fn ltrb_round_trips() {
    let boxes = t(&[[2.0, 4.0, 12.0, 20.0]]);
    let pts = Tensor::from_slice(&[6.0f64, 10.0]).view([1, 2]);
    let d = encode_ltrb(&pts, &boxes, 2.0).expect("enc");
    assert_eq!(max_abs_diff(&d, &t(&[[2.0, 3.0, 3.0, 5.0]])), 0.0);
    let g = random_xyxy(50, 6);
    let p = (g.slice(1, 0, 2, 1) + g.slice(1, 2, 4, 1)) * 0.5;
    let enc = encode_ltrb(&p, &g, 8.0).expect("enc");
    assert!(max_abs_diff(&decode_ltrb(&p, &enc, 8.0).expect("dec"), &g) < 1e-12);
    assert!(encode_ltrb(&pts, &t(&[[0.0; 4], [0.0; 4]]), 1.0).is_err());
}
