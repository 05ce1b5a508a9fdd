//! What the ONNX export tests share: detections as the exported `[N, K, 6]` rows, and the comparison
//! of two runtimes' detections that tolerates NMS ties.

use anyhow::{Result, bail};
use detect::postprocess::Detection;
use tch::Tensor;

/// Detections as `[N, K, 6]` rows padded with zeros.
pub fn rows(dets: &[Vec<Detection>], k: usize) -> Tensor {
    let mut v = vec![0f32; dets.len() * k * 6];
    for (i, img) in dets.iter().enumerate() {
        for (j, d) in img.iter().take(k).enumerate() {
            let r = &mut v[(i * k + j) * 6..(i * k + j + 1) * 6];
            r.copy_from_slice(&[d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3], d.score, d.class as f64].map(|x| x as f32));
        }
    }
    Tensor::from_slice(&v).view([dets.len() as i64, k as i64, 6])
}

/// `got` and `want` pair one to one: same class, coordinates within `box_tol`, score within 1e-4. Rows
/// are paired in `want`'s order among the unpaired ones, so boxes whose scores tie within 1e-4 may come
/// in either order (two runtimes' float sums differ in the last bits).
pub fn same_boxes(got: &[Detection], want: &[Detection], box_tol: f64, nms_iou: f64) -> Result<()> {
    let mut free = vec![true; got.len()];
    let mut unpaired = Vec::new();
    for b in want {
        let hit = got.iter().enumerate().position(|(i, a)| {
            let box_err = a.bbox.iter().zip(&b.bbox).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
            free[i] && a.class == b.class && box_err < box_tol && (a.score - b.score).abs() < 1e-4
        });
        match hit {
            Some(i) => free[i] = false,
            None => unpaired.push(b),
        }
    }
    // As scripts/onnx_parity.py: a box kept on one side only must tie with one kept on the other only
    // (same class, score within 1e-4, IoU above the NMS threshold: NMS met the pair in the other order).
    let left: Vec<&Detection> = got.iter().zip(&free).filter(|(_, f)| **f).map(|(d, _)| d).collect();
    let tied = |a: &Detection, b: &Detection| {
        a.class == b.class && (a.score - b.score).abs() < 1e-4 && iou(&a.bbox, &b.bbox) > nms_iou
    };
    for (mine, theirs) in [(&unpaired, &left), (&left, &unpaired)] {
        if let Some(b) = mine.iter().find(|b| !theirs.iter().any(|o| tied(b, o))) {
            bail!("{b:?} has no match and no tie among {} boxes", got.len());
        }
    }
    Ok(())
}

/// IoU of two xyxy boxes.
fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let inter = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0) * (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}
