//! From dense predictions to detections: keep each anchor's best class above a score threshold, run
//! class-aware NMS ([`crate::nms::batched_nms_plain`]), cap the count, and map boxes back to
//! original pixels through the letterbox. (Decoding a head's raw output into boxes and scores is
//! the family's own, e.g. [`crate::yolo::head::decode`].)

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::augment::LetterboxInfo;
use crate::error::Result;
use crate::nms::{NmsParams, batched_nms_plain};

/// One detection.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Detection {
    /// `[x1, y1, x2, y2]` in pixels.
    #[serde(rename = "box")]
    pub bbox: [f64; 4],
    /// Confidence (sigmoid of the class logit).
    pub score: f64,
    /// Class index.
    #[serde(rename = "index")]
    pub class: usize,
}

/// Thresholds of [`postprocess`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PostprocessConfig {
    /// Keep scores above this.
    pub conf: f64,
    /// NMS IoU threshold.
    pub iou: f64,
    /// Most detections per image.
    pub max_det: usize,
    /// Most candidates entering NMS (highest scores first).
    pub max_candidates: usize,
}

impl Default for PostprocessConfig {
    fn default() -> Self {
        Self { conf: 0.25, iou: 0.7, max_det: 300, max_candidates: 3000 }
    }
}

/// Per image: best class per anchor, score filter, top candidates, class-aware NMS. Inputs are
/// boxes `[N, A, 4]` xyxy in input pixels and class probabilities `[N, A, nc]`; detections are in input pixels, sorted by score.
pub fn postprocess(boxes: &Tensor, scores: &Tensor, cfg: &PostprocessConfig) -> Result<Vec<Vec<Detection>>> {
    let n = boxes.size()[0];
    let (best, cls) = scores.max_dim(-1, false); // [N, A]
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let s = best.get(i);
        let keep = s.gt(cfg.conf).nonzero().squeeze_dim(1); // [K]
        let mut k = keep.size()[0];
        if k == 0 {
            out.push(Vec::new());
            continue;
        }
        let mut idx = keep;
        if k as usize > cfg.max_candidates {
            let (_, top) = s.index_select(0, &idx).topk(cfg.max_candidates as i64, 0, true, true);
            idx = idx.index_select(0, &top);
            k = cfg.max_candidates as i64;
        }
        let to_cpu = |t: &Tensor| t.to_device(Device::Cpu).to_kind(Kind::Double).contiguous();
        let b: Vec<f64> = Vec::try_from(to_cpu(&boxes.get(i).index_select(0, &idx)).view(-1))?;
        let sc: Vec<f64> = Vec::try_from(to_cpu(&s.index_select(0, &idx)))?;
        let cl: Vec<i64> = Vec::try_from(cls.get(i).index_select(0, &idx).to_device(Device::Cpu).contiguous())?;
        let bx: Vec<[f64; 4]> = b.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect();
        let kept = batched_nms_plain(&bx, &sc, &cl, NmsParams::new(cfg.iou, cfg.max_det))?;
        debug_assert!(kept.len() <= k as usize);
        out.push(kept.into_iter().map(|j| Detection { bbox: bx[j], score: sc[j], class: cl[j] as usize }).collect());
    }
    Ok(out)
}

/// Maps detections from letterboxed input pixels to the original `width x height` image.
pub fn to_original(dets: &[Detection], info: &LetterboxInfo, width: f64, height: f64) -> Vec<Detection> {
    dets.iter()
        .map(|d| Detection { bbox: info.unmap(d.bbox, width, height), ..*d })
        .filter(|d| d.bbox[2] > d.bbox[0] && d.bbox[3] > d.bbox[1])
        .collect()
}
