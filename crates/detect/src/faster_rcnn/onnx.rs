//! Faster R-CNN's eval-mode forward as ONNX nodes, for `detect export` (which always includes its
//! NMS: a two-stage network has no dense head to stop at). The graph follows [`FasterRcnn::predict`]
//! step for step, batched over images without a `Loop`:
//!
//! - backbone and FPN as in the other families; everything after the FPN runs in float32 (ONNX's
//!   `RoiAlign` and `NonMaxSuppression` take float32 only, so `--half` covers backbone and FPN);
//! - RPN: the head on every level, the anchors of the fixed input size as a constant, `TopK` per
//!   level on the logits, decoding, clipping, the minimum-size and score masks, then one
//!   `NonMaxSuppression` whose "classes" are the levels (torchvision's per-level NMS), and the best
//!   `proposals_test` per image; an image with fewer proposals pads with rows marked invalid;
//! - RoI heads: torchvision's level mapper, one `RoiAlign` per FPN level on the proposals that map
//!   to it (`NonZero` + `Gather`, put back with `ScatterND`; opset 16's `output_half_pixel` mode,
//!   which is RoIAlign v1 with `aligned = false`, the opset-10 operator's only mode), the box MLP,
//!   softmax, class-specific decoding and clipping, and class-wise NMS through the exporter's
//!   [`crate::export`] rows `[N, K, 6]`.
//!
//! tract has no `RoiAlign`, so `predict --onnx` cannot serve these files; ONNX Runtime does.

use tlcv_core::onnx::graph::{Attr, DataType, FloatKind};
use tlcv_core::onnx::{Graph, OnnxError, Value};

use super::FasterRcnn;
use crate::boxes::BoxCoder;
use crate::error::DetectError;
use crate::export::OnnxHead;
use crate::postprocess::PostprocessConfig;

type OnnxResult<T> = std::result::Result<T, OnnxError>;

impl FasterRcnn {
    /// `[N, 3, H, W]` (normalised, fixed H and W) -> detections `[N, K, 6]` (see [`crate::export`]).
    pub(super) fn detections_onnx(
        &self,
        g: &mut Graph,
        x: &Value,
        pp: &PostprocessConfig,
    ) -> Result<OnnxHead, DetectError> {
        let (Some(h), Some(w)) = (x.dim(2), x.dim(3)) else {
            return Err(DetectError::Invalid("faster-rcnn export needs a fixed input size".into()));
        };
        let c = if self.from_c2 { self.body.features_with_low_onnx(g, x)? } else { self.body.features_onnx(g, x)? };
        let f = self.fpn.to_onnx(g, &c)?;
        // Float32 from here on (RoiAlign and NonMaxSuppression have no float16 kernels).
        let f: Vec<Value> = if g.float_kind() == FloatKind::F16 {
            g.set_float_kind(FloatKind::F32);
            f.iter().map(|v| g.cast(v, DataType::Float)).collect()
        } else {
            f
        };
        let proposals = self.rpn.proposals_onnx(g, &f, (h, w))?;
        let levels = &f[..f.len().saturating_sub(1).max(1)]; // the pooled level only feeds the RPN
        let (rows, nms) = self.roi_heads.detections_onnx(g, levels, &proposals, pp)?;
        Ok(OnnxHead::Detections { rows, nms })
    }
}

/// Proposals of a batch as ONNX values.
#[derive(Debug)]
pub(crate) struct OnnxProposals {
    /// `[N, P, 4]` xyxy input pixels, best first.
    pub boxes: Value,
    /// `[N, P]` bool: the row is a proposal (an image with fewer than `P` pads with `false` rows).
    pub valid: Value,
    /// `(H, W)` of the input.
    pub image_size: (i64, i64),
}

/// Element `i` of the last axis of `v` (`[.., 4]` -> `[.., 1]`).
fn col(g: &mut Graph, v: &Value, i: i64) -> Value {
    g.slice(v, v.rank() - 1, i, i + 1)
}

/// [`BoxCoder::decode`] as nodes, with the same operations in the same order: deltas `[.., 4]` and
/// reference boxes broadcast against them -> xyxy boxes of the deltas' shape.
pub(crate) fn decode(g: &mut Graph, deltas: &Value, anchors: &Value, coder: &BoxCoder) -> OnnxResult<Value> {
    let [wx, wy, ww, wh] = coder.weights.map(|v| v as f32);
    let (x1, y1, x2, y2) = (col(g, anchors, 0), col(g, anchors, 1), col(g, anchors, 2), col(g, anchors, 3));
    let sx = g.binary("Add", &x1, &x2);
    let acx = g.scalar("Mul", &sx, 0.5)?;
    let sy = g.binary("Add", &y1, &y2);
    let acy = g.scalar("Mul", &sy, 0.5)?;
    let aw = g.binary("Sub", &x2, &x1);
    let ah = g.binary("Sub", &y2, &y1);
    let centre = |g: &mut Graph, i: i64, wt: f32, size: &Value, c: &Value| -> OnnxResult<Value> {
        let d = col(g, deltas, i);
        let d = g.scalar("Div", &d, wt)?;
        let d = g.binary("Mul", &d, size);
        Ok(g.binary("Add", &d, c))
    };
    let cx = centre(g, 0, wx, &aw, &acx)?;
    let cy = centre(g, 1, wy, &ah, &acy)?;
    let clamp = coder.scale_clamp as f32;
    let extent = |g: &mut Graph, i: i64, wt: f32, size: &Value| -> OnnxResult<Value> {
        let d = col(g, deltas, i);
        let d = g.scalar("Div", &d, wt)?;
        let d = g.scalar("Min", &d, clamp)?;
        let e = g.unary("Exp", &d);
        Ok(g.binary("Mul", &e, size))
    };
    let bw = extent(g, 2, ww, &aw)?;
    let bh = extent(g, 3, wh, &ah)?;
    let hw = g.scalar("Mul", &bw, 0.5)?;
    let hh = g.scalar("Mul", &bh, 0.5)?;
    let parts =
        [g.binary("Sub", &cx, &hw), g.binary("Sub", &cy, &hh), g.binary("Add", &cx, &hw), g.binary("Add", &cy, &hh)];
    let refs: Vec<&Value> = parts.iter().collect();
    Ok(g.concat(&refs, deltas.rank() - 1))
}

/// [`crate::boxes::clip_boxes`]: xyxy `[.., 4]` clamped to `0..W` and `0..H`.
pub(crate) fn clip(g: &mut Graph, boxes: &Value, (h, w): (i64, i64)) -> OnnxResult<Value> {
    let lo = g.const_float(&[0.0], &[])?;
    let hi = g.const_float(&[w as f32, h as f32, w as f32, h as f32], &[4])?;
    let b = g.binary("Max", boxes, &lo);
    Ok(g.binary("Min", &b, &hi))
}

/// Whether both sides of xyxy `[.., 4]` boxes are at least `min`: bool `[..]` (the last axis dropped).
pub(crate) fn wide_enough(g: &mut Graph, boxes: &Value, min: f64) -> OnnxResult<Value> {
    let m = g.const_float(&[min as f32], &[])?;
    let mut ok = Vec::new();
    for (a, b) in [(0, 2), (1, 3)] {
        let (lo, hi) = (col(g, boxes, a), col(g, boxes, b));
        let side = g.binary("Sub", &hi, &lo);
        ok.push(g.binary("GreaterOrEqual", &side, &m)); // [.., 1]
    }
    let both = g.binary("And", &ok[0], &ok[1]);
    Ok(squeeze_last(g, &both))
}

/// Drops the last axis (of size 1).
pub(crate) fn squeeze_last(g: &mut Graph, v: &Value) -> Value {
    let axis = v.rank() as i64 - 1;
    let av = g.ints(&[axis]);
    let dims = v.dims()[..v.rank() - 1].to_vec();
    g.op("Squeeze", &[v, &av], &[], dims)
}

/// `a AND b` (bool values).
pub(crate) fn and(g: &mut Graph, a: &Value, b: &Value) -> Value {
    g.binary("And", a, b)
}

/// `GatherND` with `batch_dims = 1`: rows `[N, K]` (int64) of `data` `[N, T, D]` -> `[N, K, D]`.
pub(crate) fn gather_rows(g: &mut Graph, data: &Value, rows: &Value) -> Value {
    let idx = g.unsqueeze(rows, 2);
    let dims = vec![data.dims()[0], rows.dims()[1], data.dims()[2]];
    g.op("GatherND", &[data, &idx], &[Attr::Int("batch_dims", 1)], dims)
}
