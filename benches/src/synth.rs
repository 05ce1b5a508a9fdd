//! Deterministic synthetic inputs: NMS boxes, a COCO ground truth with detections, segmentation masks.

use detect::eval::{CocoAnnotation, CocoCategory, CocoDataset, CocoDetection, CocoImage};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// `n` boxes xyxy in a 1000x1000 image (sides 10..200 px) and scores in [0, 1), as float32.
pub fn nms_boxes(n: usize, seed: u64) -> (Vec<[f32; 4]>, Vec<f32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let boxes = (0..n)
        .map(|_| {
            let (x, y) = (rng.gen_range(0.0..900.0f32), rng.gen_range(0.0..900.0f32));
            let (w, h) = (rng.gen_range(10.0..200.0f32), rng.gen_range(10.0..200.0f32));
            [x, y, x + w, y + h]
        })
        .collect();
    let scores = (0..n).map(|_| rng.gen_range(0.0..1.0f32)).collect();
    (boxes, scores)
}

/// Rounds to 2 decimals so that the JSON files carry the exact values both evaluators read.
fn r2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// A ground truth of `images` 640x480 images with 1..=15 boxes each over 20 categories (some crowd),
/// and `dets_per_image` detections per image: jittered copies of the ground truth plus random boxes.
pub fn coco(images: usize, dets_per_image: usize, seed: u64) -> (CocoDataset, Vec<CocoDetection>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut gt = CocoDataset {
        categories: (1..=20).map(|id| CocoCategory { id, name: format!("c{id}") }).collect(),
        ..Default::default()
    };
    let mut dets = Vec::new();
    let mut ann_id = 1;
    for img in 0..images as i64 {
        let image_id = img + 1;
        gt.images.push(CocoImage { id: image_id, width: Some(640), height: Some(480), file_name: None });
        let n_gt = rng.gen_range(1..=15);
        let mut boxes = Vec::new();
        for _ in 0..n_gt {
            let w = r2(rng.gen_range(4.0..300.0));
            let h = r2(rng.gen_range(4.0..300.0));
            let x = r2(rng.gen_range(0.0..(640.0 - w)));
            let y = r2(rng.gen_range(0.0..(480.0 - h)));
            let category_id = rng.gen_range(1..=20);
            let iscrowd = u8::from(rng.gen_bool(0.03));
            gt.annotations.push(CocoAnnotation {
                id: ann_id,
                image_id,
                category_id,
                bbox: [x, y, w, h],
                area: r2(w * h),
                iscrowd,
            });
            ann_id += 1;
            boxes.push((category_id, [x, y, w, h]));
        }
        for d in 0..dets_per_image {
            let (category_id, bbox) = if d < boxes.len() * 2 && rng.gen_bool(0.8) {
                let (c, [x, y, w, h]) = boxes[d % boxes.len()];
                let j = |v: f64, s: f64, rng: &mut StdRng| r2((v + rng.gen_range(-0.15..0.15) * s).max(0.0));
                let c = if rng.gen_bool(0.9) { c } else { rng.gen_range(1..=20) };
                (c, [j(x, w, &mut rng), j(y, h, &mut rng), j(w, w, &mut rng).max(1.0), j(h, h, &mut rng).max(1.0)])
            } else {
                let w = r2(rng.gen_range(4.0..300.0));
                let h = r2(rng.gen_range(4.0..300.0));
                (
                    rng.gen_range(1..=20),
                    [r2(rng.gen_range(0.0..(640.0 - w))), r2(rng.gen_range(0.0..(480.0 - h))), w, h],
                )
            };
            let score = (rng.gen_range(0.0..1.0f64) * 1e4).round() / 1e4;
            dets.push(CocoDetection { image_id, category_id, bbox, score });
        }
    }
    (gt, dets)
}

/// `count` pairs of `side`x`side` masks (ground truth, prediction) over `classes` classes, the prediction
/// agreeing with the ground truth on about 70% of the pixels.
pub fn seg_masks(count: usize, side: usize, classes: u8, seed: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let gt: Vec<u8> =
                (0..side * side).map(|i| ((i / side / 32 + i % side / 32) % classes as usize) as u8).collect();
            let pred = gt.iter().map(|&g| if rng.gen_bool(0.7) { g } else { rng.gen_range(0..classes) }).collect();
            (gt, pred)
        })
        .collect()
}
