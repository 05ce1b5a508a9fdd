//! Box utilities shared by every detector family: format conversions, areas, IoU (pairwise on
//! tensors and in plain f64, element-wise with CIoU for the YOLO loss and assigner), clipping and the
//! box encodings (Faster R-CNN/SSD deltas, anchor-free left/top/right/bottom distances).
//!
//! The `[N, 4]` tensor functions check shapes up front and return `DetectError::Invalid` instead of
//! letting libtorch panic; the element-wise [`iou`] and [`ciou`] broadcast any `[..., 4]` shapes
//! (pairwise matrices come from broadcasting, e.g. `[B, M, 1, 4]` with `[B, 1, A, 4]`).

use std::f64::consts::PI;

use tch::{Kind, Tensor};

use crate::error::DetectError;

/// Checks that `t` is `[N, 4]` and returns `N`.
pub fn check_boxes(t: &Tensor, what: &str) -> Result<i64, DetectError> {
    match t.size().as_slice() {
        [n, 4] => Ok(*n),
        s => Err(DetectError::Invalid(format!("{what}: expected boxes of shape [N, 4], got {s:?}"))),
    }
}

fn cols(t: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
    (t.select(1, 0), t.select(1, 1), t.select(1, 2), t.select(1, 3))
}

/// `[x1, y1, x2, y2]` to `[x, y, w, h]`; `[N, 4] -> [N, 4]`.
pub fn xyxy_to_xywh(b: &Tensor) -> Result<Tensor, DetectError> {
    check_boxes(b, "xyxy_to_xywh")?;
    let (x1, y1, x2, y2) = cols(b);
    Ok(Tensor::stack(&[&x1, &y1, &(&x2 - &x1), &(&y2 - &y1)], 1))
}

/// `[x, y, w, h]` to `[x1, y1, x2, y2]`; `[N, 4] -> [N, 4]`.
pub fn xywh_to_xyxy(b: &Tensor) -> Result<Tensor, DetectError> {
    check_boxes(b, "xywh_to_xyxy")?;
    let (x, y, w, h) = cols(b);
    Ok(Tensor::stack(&[&x, &y, &(&x + &w), &(&y + &h)], 1))
}

/// `[x1, y1, x2, y2]` to `[cx, cy, w, h]`; `[N, 4] -> [N, 4]`.
pub fn xyxy_to_cxcywh(b: &Tensor) -> Result<Tensor, DetectError> {
    check_boxes(b, "xyxy_to_cxcywh")?;
    let (x1, y1, x2, y2) = cols(b);
    let cx = (&x1 + &x2) * 0.5;
    let cy = (&y1 + &y2) * 0.5;
    Ok(Tensor::stack(&[&cx, &cy, &(&x2 - &x1), &(&y2 - &y1)], 1))
}

/// `[cx, cy, w, h]` to `[x1, y1, x2, y2]`; `[N, 4] -> [N, 4]`.
pub fn cxcywh_to_xyxy(b: &Tensor) -> Result<Tensor, DetectError> {
    check_boxes(b, "cxcywh_to_xyxy")?;
    let (cx, cy, w, h) = cols(b);
    let (hw, hh) = (&w * 0.5, &h * 0.5);
    Ok(Tensor::stack(&[&(&cx - &hw), &(&cy - &hh), &(&cx + &hw), &(&cy + &hh)], 1))
}

/// Areas of `[N, 4]` xyxy boxes, `[N]` (negative extents give negative areas, as torchvision).
pub fn box_area(b: &Tensor) -> Result<Tensor, DetectError> {
    check_boxes(b, "box_area")?;
    let (x1, y1, x2, y2) = cols(b);
    Ok((x2 - x1) * (y2 - y1))
}

/// Pairwise IoU of xyxy boxes: `[N, 4] x [M, 4] -> [N, M]` (0 where the union is empty).
pub fn box_iou(a: &Tensor, b: &Tensor) -> Result<Tensor, DetectError> {
    check_boxes(a, "box_iou (first)")?;
    check_boxes(b, "box_iou (second)")?;
    let area_a = box_area(a)?; // [N]
    let area_b = box_area(b)?; // [M]
    let lt = a.slice(1, 0, 2, 1).unsqueeze(1).maximum(&b.slice(1, 0, 2, 1).unsqueeze(0)); // [N, M, 2]
    let rb = a.slice(1, 2, 4, 1).unsqueeze(1).minimum(&b.slice(1, 2, 4, 1).unsqueeze(0)); // [N, M, 2]
    let wh = (rb - lt).clamp_min(0.0);
    let inter = wh.select(2, 0) * wh.select(2, 1); // [N, M]
    let union = area_a.unsqueeze(1) + area_b.unsqueeze(0) - &inter;
    // Empty unions (degenerate boxes) give 0 rather than NaN.
    let safe = union.clamp_min(f64::MIN_POSITIVE);
    Ok((&inter / safe).where_self(&union.gt(0.0), &inter.zeros_like()))
}

/// IoU of two xyxy boxes in plain f64 (0 when the union is empty).
pub fn iou_xyxy(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Pairwise IoU in plain f64, row-major `[a.len(), b.len()]`.
pub fn iou_matrix(a: &[[f64; 4]], b: &[[f64; 4]]) -> Vec<f64> {
    a.iter().flat_map(|x| b.iter().map(move |y| iou_xyxy(x, y))).collect()
}

/// Small constant keeping the element-wise IoU's divisions finite (YOLOv8's value).
pub const EPS: f64 = 1e-7;

fn split_last(b: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
    let c = b.unbind(-1);
    (c[0].shallow_clone(), c[1].shallow_clone(), c[2].shallow_clone(), c[3].shallow_clone())
}

/// IoU of broadcast-compatible `[..., 4]` xyxy boxes -> `[...]`.
pub fn iou(a: &Tensor, b: &Tensor) -> Tensor {
    iou_parts(a, b).0
}

/// `(iou, inter, union)` helper.
fn iou_parts(a: &Tensor, b: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (ax1, ay1, ax2, ay2) = split_last(a);
    let (bx1, by1, bx2, by2) = split_last(b);
    let iw = (ax2.minimum(&bx2) - ax1.maximum(&bx1)).clamp_min(0.0);
    let ih = (ay2.minimum(&by2) - ay1.maximum(&by1)).clamp_min(0.0);
    let inter = iw * ih;
    let union = (&ax2 - &ax1) * (&ay2 - &ay1 + EPS) + (&bx2 - &bx1) * (&by2 - &by1 + EPS) - &inter + EPS;
    (&inter / &union, inter, union)
}

/// Complete IoU (Zheng et al. 2020): `IoU - rho^2 / c^2 - alpha * v` with `v` the aspect-ratio
/// term and `alpha = v / (1 - IoU + v)` treated as a constant, for `[..., 4]` xyxy boxes -> `[...]`.
pub fn ciou(a: &Tensor, b: &Tensor) -> Tensor {
    let (ax1, ay1, ax2, ay2) = split_last(a);
    let (bx1, by1, bx2, by2) = split_last(b);
    let (w1, h1) = (&ax2 - &ax1, &ay2 - &ay1 + EPS);
    let (w2, h2) = (&bx2 - &bx1, &by2 - &by1 + EPS);
    let (iou, _, _) = iou_parts(a, b);
    let cw = ax2.maximum(&bx2) - ax1.minimum(&bx1); // enclosing box
    let ch = ay2.maximum(&by2) - ay1.minimum(&by1);
    let c2 = cw.square() + ch.square() + EPS;
    let rho2 = ((&bx1 + &bx2 - &ax1 - &ax2).square() + (&by1 + &by2 - &ay1 - &ay2).square()) / 4.0;
    let v = ((w2 / h2).atan() - (w1 / h1).atan()).square() * (4.0 / (PI * PI));
    let alpha = tch::no_grad(|| &v / (&v - &iou + (1.0 + EPS)));
    iou - (rho2 / c2 + v * alpha)
}

/// Clamps xyxy boxes into an image of `height x width`; `[N, 4] -> [N, 4]`.
pub fn clip_boxes(b: &Tensor, height: f64, width: f64) -> Result<Tensor, DetectError> {
    check_boxes(b, "clip_boxes")?;
    let (x1, y1, x2, y2) = cols(b);
    Ok(Tensor::stack(&[x1.clamp(0.0, width), y1.clamp(0.0, height), x2.clamp(0.0, width), y2.clamp(0.0, height)], 1))
}

/// Faster R-CNN style box coder: deltas `(dx, dy, dw, dh)` of a target relative to a reference
/// box, scaled by `weights`. SSD's variances `(v0, v1)` are weights `(1/v0, 1/v0, 1/v1, 1/v1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxCoder {
    /// Multipliers for `(dx, dy, dw, dh)`.
    pub weights: [f64; 4],
    /// Upper clamp on decoded `dw`/`dh` to keep `exp` finite.
    pub scale_clamp: f64,
}

impl Default for BoxCoder {
    /// torchvision's RPN coder: weights `(1, 1, 1, 1)`, clamp `ln(1000/16)`.
    fn default() -> Self {
        Self { weights: [1.0; 4], scale_clamp: (1000.0f64 / 16.0).ln() }
    }
}

impl BoxCoder {
    /// A coder with the given weights and the default clamp (`(10, 10, 5, 5)` for the ROI heads).
    pub fn new(weights: [f64; 4]) -> Self {
        Self { weights, ..Self::default() }
    }

    /// SSD coder from its variances, e.g. `[0.1, 0.2]`.
    pub fn ssd(variances: [f64; 2]) -> Self {
        let (a, b) = (1.0 / variances[0], 1.0 / variances[1]);
        Self::new([a, a, b, b])
    }

    /// Encodes xyxy `targets` against xyxy `anchors`: `[N, 4], [N, 4] -> [N, 4]` deltas.
    pub fn encode(&self, targets: &Tensor, anchors: &Tensor) -> Result<Tensor, DetectError> {
        let n = check_boxes(targets, "encode targets")?;
        if check_boxes(anchors, "encode anchors")? != n {
            return Err(DetectError::Invalid(format!("encode: {n} targets but {:?} anchors", anchors.size())));
        }
        let [wx, wy, ww, wh] = self.weights;
        let a = xyxy_to_cxcywh(anchors)?;
        let t = xyxy_to_cxcywh(targets)?;
        let (acx, acy, aw, ah) = cols(&a);
        let (tcx, tcy, tw, th) = cols(&t);
        let dx = (tcx - &acx) / &aw * wx;
        let dy = (tcy - &acy) / &ah * wy;
        let dw = (tw / &aw).log() * ww;
        let dh = (th / &ah).log() * wh;
        Ok(Tensor::stack(&[dx, dy, dw, dh], 1))
    }

    /// Decodes deltas `[N, 4]` against xyxy `anchors` `[N, 4]` into xyxy boxes `[N, 4]`.
    pub fn decode(&self, deltas: &Tensor, anchors: &Tensor) -> Result<Tensor, DetectError> {
        let n = check_boxes(deltas, "decode deltas")?;
        if check_boxes(anchors, "decode anchors")? != n {
            return Err(DetectError::Invalid(format!("decode: {n} deltas but {:?} anchors", anchors.size())));
        }
        let [wx, wy, ww, wh] = self.weights;
        let a = xyxy_to_cxcywh(&anchors.to_kind(deltas.kind()))?;
        let (acx, acy, aw, ah) = cols(&a);
        let (dx, dy, dw, dh) = cols(deltas);
        let cx = dx / wx * &aw + acx;
        let cy = dy / wy * &ah + acy;
        let w = (dw / ww).clamp_max(self.scale_clamp).exp() * aw;
        let h = (dh / wh).clamp_max(self.scale_clamp).exp() * ah;
        cxcywh_to_xyxy(&Tensor::stack(&[cx, cy, w, h], 1))
    }
}

fn check_points(p: &Tensor, n: i64, what: &str) -> Result<(), DetectError> {
    match p.size().as_slice() {
        [m, 2] if *m == n => Ok(()),
        s => Err(DetectError::Invalid(format!("{what}: expected points of shape [{n}, 2], got {s:?}"))),
    }
}

/// Anchor-free encoding (FCOS/YOLOv8): distances `(l, t, r, b)` from `points` `[N, 2]` to the
/// edges of xyxy `boxes` `[N, 4]`, divided by `stride`; `-> [N, 4]`.
pub fn encode_ltrb(points: &Tensor, boxes: &Tensor, stride: f64) -> Result<Tensor, DetectError> {
    let n = check_boxes(boxes, "encode_ltrb")?;
    check_points(points, n, "encode_ltrb")?;
    let (px, py) = (points.select(1, 0), points.select(1, 1));
    let (x1, y1, x2, y2) = cols(boxes);
    Ok(Tensor::stack(&[&px - x1, &py - y1, x2 - &px, y2 - &py], 1) / stride)
}

/// Inverse of [`encode_ltrb`]: `points` `[N, 2]`, distances `[N, 4]` (in stride units) `-> [N, 4]` xyxy.
pub fn decode_ltrb(points: &Tensor, dist: &Tensor, stride: f64) -> Result<Tensor, DetectError> {
    let n = check_boxes(dist, "decode_ltrb")?;
    check_points(points, n, "decode_ltrb")?;
    let d = dist * stride;
    let (l, t, r, b) = cols(&d);
    let (px, py) = (points.select(1, 0), points.select(1, 1));
    Ok(Tensor::stack(&[&px - l, &py - t, &px + r, &py + b], 1))
}

/// Copies an `[N, 4]` tensor into plain f64 boxes.
pub fn to_vec4(t: &Tensor) -> Result<Vec<[f64; 4]>, DetectError> {
    check_boxes(t, "to_vec4")?;
    let flat: Vec<f64> =
        Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(tch::Device::Cpu).contiguous().view(-1))?;
    Ok(flat.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect())
}
