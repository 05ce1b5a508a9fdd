//! Decode round trip: known boxes in an original image are letterboxed, written into head outputs
//! as edge distributions at known anchors, then decoded, thresholded, NMS-ed and mapped back.
#![allow(clippy::unwrap_used)]

use detect::augment::letterbox;
use detect::data::Object;
use detect::postprocess::{PostprocessConfig, postprocess, to_original};
use detect::yolo::anchors::anchor_points;
use detect::yolo::head::{HeadOutput, decode};
use tch::{Kind, Tensor};
use tlcv_core::data::RgbImage;

const R: i64 = 16;

/// Logits whose softmax puts `1 - f` on bin `floor(d)` and `f` on the next (expected value d).
fn edge_logits(d: f64) -> Vec<f32> {
    let lo = d.floor() as usize;
    let f = d - lo as f64;
    let mut v = vec![-60f32; R as usize];
    v[lo] = (1.0 - f).max(1e-12).ln() as f32;
    if lo + 1 < R as usize {
        v[lo + 1] = f.max(1e-12).ln() as f32;
    }
    v
}

#[test]
fn decode_round_trip_through_letterbox() {
    let (w, h) = (200.0, 100.0);
    let originals =
        [Object { class: 1, bbox: [20.0, 10.0, 120.0, 80.0] }, Object { class: 0, bbox: [150.0, 40.0, 190.0, 90.0] }];
    let img = RgbImage::filled(200, 100, [0, 0, 0]);
    let (lb, info) = letterbox(&img, &originals, 64).unwrap(); // scale 0.32, pad_y 16
    let shapes = [(8i64, 8i64), (4, 4), (2, 2)];
    let strides = [8i64, 16, 32];
    let anchors = anchor_points(&shapes, &strides, 0.5, tch::Device::Cpu);
    let a = anchors.len();
    assert_eq!(a, 84);
    let pts = Vec::<f32>::try_from(anchors.points.reshape([-1])).unwrap();
    let st = Vec::<f32>::try_from(anchors.strides.reshape([-1])).unwrap();
    let mut dist = vec![-60f32; (a * 4 * R) as usize];
    let mut cls = vec![-12f32; (a * 2) as usize];
    // Each object is predicted by the anchors whose point lies inside its box; the anchor nearest the
    // box centre gets the highest score, the others lower scores (suppressed by NMS).
    for o in &lb.objects {
        let [x1, y1, x2, y2] = o.bbox;
        let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        let mut inside: Vec<(usize, f64)> = (0..a as usize)
            .filter(|&i| {
                let (px, py) = (pts[2 * i] as f64, pts[2 * i + 1] as f64);
                px > x1 && px < x2 && py > y1 && py < y2 && st[i] == 8.0
            })
            .map(|i| (i, (pts[2 * i] as f64 - cx).hypot(pts[2 * i + 1] as f64 - cy)))
            .collect();
        inside.sort_by(|p, q| p.1.total_cmp(&q.1));
        assert!(inside.len() >= 2, "test setup: need two anchors in {:?}", o.bbox);
        for (rank, &(i, _)) in inside.iter().enumerate() {
            let (px, py, s) = (pts[2 * i] as f64, pts[2 * i + 1] as f64, st[i] as f64);
            for (e, d) in [(px - x1) / s, (py - y1) / s, (x2 - px) / s, (y2 - py) / s].into_iter().enumerate() {
                let off = ((i as i64 * 4 + e as i64) * R) as usize;
                dist[off..off + R as usize].copy_from_slice(&edge_logits(d));
            }
            cls[i * 2 + o.class] = 4.0 - rank as f32 * 0.5;
        }
    }
    let out = HeadOutput {
        cls: Tensor::from_slice(&cls).view([1, a, 2]),
        dist: Tensor::from_slice(&dist).view([1, a, 4 * R]),
        shapes: shapes.to_vec(),
    };
    let (boxes, scores) = decode(&out, &anchors, R);
    assert_eq!(boxes.size(), vec![1, a, 4]);
    assert_eq!(scores.size(), vec![1, a, 2]);
    let dets =
        postprocess(&boxes, &scores, &PostprocessConfig { conf: 0.25, iou: 0.7, max_det: 300, max_candidates: 3000 })
            .unwrap();
    assert_eq!(dets[0].len(), 2, "NMS leaves one box per object: {:?}", dets[0]);
    let back = to_original(&dets[0], &info, w, h);
    for o in &originals {
        let d = back.iter().find(|d| d.class == o.class).unwrap();
        assert!((d.score - 1.0 / (1.0 + (-4f64).exp())).abs() < 1e-5, "best anchor's score: {}", d.score);
        for (p, q) in d.bbox.iter().zip(&o.bbox) {
            assert!((p - q).abs() < 1e-2, "{:?} vs {:?}", d.bbox, o.bbox);
        }
    }
    // A threshold above every score leaves nothing; max_det caps the count.
    assert!(
        postprocess(&boxes, &scores, &PostprocessConfig { conf: 0.99, ..Default::default() }).unwrap()[0].is_empty()
    );
    assert_eq!(
        postprocess(&boxes, &scores, &PostprocessConfig { conf: 0.25, max_det: 1, ..Default::default() }).unwrap()[0]
            .len(),
        1
    );
    let _ = Kind::Float;
}
