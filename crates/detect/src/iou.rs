//! Element-wise (broadcasting) IoU and CIoU of xyxy boxes `[..., 4]`, as used by the assigner and
//! the box loss (pairwise matrices come from broadcasting, e.g. `[B, M, 1, 4]` with `[B, 1, A, 4]`).

use std::f64::consts::PI;

use tch::Tensor;

/// Small constant keeping divisions finite (YOLOv8's value).
pub const EPS: f64 = 1e-7;

fn split(b: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
    let c = b.unbind(-1);
    (c[0].shallow_clone(), c[1].shallow_clone(), c[2].shallow_clone(), c[3].shallow_clone())
}

/// IoU of broadcast-compatible `[..., 4]` xyxy boxes -> `[...]`.
pub fn iou(a: &Tensor, b: &Tensor) -> Tensor {
    iou_parts(a, b).0
}

/// `(iou, inter, union)` helper.
fn iou_parts(a: &Tensor, b: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (ax1, ay1, ax2, ay2) = split(a);
    let (bx1, by1, bx2, by2) = split(b);
    let iw = (ax2.minimum(&bx2) - ax1.maximum(&bx1)).clamp_min(0.0);
    let ih = (ay2.minimum(&by2) - ay1.maximum(&by1)).clamp_min(0.0);
    let inter = iw * ih;
    let union = (&ax2 - &ax1) * (&ay2 - &ay1 + EPS) + (&bx2 - &bx1) * (&by2 - &by1 + EPS) - &inter + EPS;
    (&inter / &union, inter, union)
}

/// Complete IoU (Zheng et al. 2020): `IoU - rho^2 / c^2 - alpha * v` with `v` the aspect-ratio
/// term and `alpha = v / (1 - IoU + v)` treated as a constant, for `[..., 4]` xyxy boxes -> `[...]`.
pub fn ciou(a: &Tensor, b: &Tensor) -> Tensor {
    let (ax1, ay1, ax2, ay2) = split(a);
    let (bx1, by1, bx2, by2) = split(b);
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
