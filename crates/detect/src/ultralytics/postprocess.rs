//! Ultralytics' `non_max_suppression` (`ultralytics/utils/nms.py`) for one-to-many heads, on the eval
//! output `[N, 4 + nc, A]`, in float32 as it computes: anchors whose best class scores above `conf`;
//! boxes from xywh to xyxy as `xywh2xyxy` does; the best class per anchor; at most `max_nms` (30000)
//! candidates by score; class-aware NMS at `iou` (IoU above it suppresses) on boxes shifted by
//! `class * 7680` pixels; at most `max_det` kept, by score.
//!
//! The shift separates the classes and also rounds the coordinates, which decides some pairs whose
//! IoU lies within about 1e-7 of the threshold; it is reproduced so that the same boxes are kept.
//! The suppression itself is the crate's ([`crate::nms::batched_nms_f32`]).

use tch::{Device, Kind, Tensor};

use crate::error::{DetectError, Result};
use crate::nms::batched_nms_f32;
use crate::postprocess::Detection;

/// Ultralytics' `max_nms`.
pub const MAX_NMS: usize = 30_000;
/// Ultralytics' `max_wh`: the per-class coordinate offset of its class-aware NMS.
pub const MAX_WH: f32 = 7680.0;

/// Thresholds of [`non_max_suppression`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NmsConfig {
    /// Keep anchors whose best class scores above this.
    pub conf: f64,
    /// IoU above which a lower-scored box of the same class is dropped.
    pub iou: f64,
    /// Most detections per image.
    pub max_det: usize,
}

/// The detections of every image of an eval output `[N, 4 + nc, A]`, xyxy in input pixels, best first.
pub fn non_max_suppression(pred: &Tensor, cfg: &NmsConfig) -> Result<Vec<Vec<Detection>>> {
    let s = pred.size();
    if s.len() != 3 || s[1] < 5 {
        return Err(DetectError::Invalid(format!("expected a [N, 4 + nc, A] output, got {s:?}")));
    }
    let rows = s[1] as usize;
    let p = pred.to_device(Device::Cpu).to_kind(Kind::Float).transpose(1, 2).contiguous(); // [N, A, 4 + nc]
    let conf = cfg.conf as f32; // torch compares a float32 tensor with a Python float in float32
    (0..s[0]).map(|i| image(&Vec::<f32>::try_from(p.get(i).view([-1]))?, rows, conf, cfg)).collect()
}

/// One image: `data` holds `A` rows of `4 + nc` values.
fn image(data: &[f32], rows: usize, conf: f32, cfg: &NmsConfig) -> Result<Vec<Detection>> {
    let mut cand: Vec<([f32; 4], f32, i64)> = Vec::new();
    for r in data.chunks_exact(rows) {
        let (mut best, mut cls) = (r[4], 0usize);
        for (c, &v) in r[5..].iter().enumerate() {
            if v > best {
                (best, cls) = (v, c + 1);
            }
        }
        if best > conf {
            let (hw, hh) = (r[2] / 2.0, r[3] / 2.0);
            cand.push(([r[0] - hw, r[1] - hh, r[0] + hw, r[1] + hh], best, cls as i64));
        }
    }
    if cand.len() > MAX_NMS {
        cand.sort_by(|a, b| b.1.total_cmp(&a.1));
        cand.truncate(MAX_NMS);
    }
    let shifted: Vec<[f32; 4]> = cand
        .iter()
        .map(|(b, _, c)| {
            let o = *c as f32 * MAX_WH;
            [b[0] + o, b[1] + o, b[2] + o, b[3] + o]
        })
        .collect();
    let scores: Vec<f32> = cand.iter().map(|c| c.1).collect();
    let classes: Vec<i64> = cand.iter().map(|c| c.2).collect();
    let kept = batched_nms_f32(&shifted, &scores, &classes, cfg.iou, cfg.max_det)?;
    Ok(kept
        .into_iter()
        .map(|k| {
            let (b, score, class) = cand[k];
            Detection { bbox: b.map(f64::from), score: f64::from(score), class: class as usize }
        })
        .collect())
}
