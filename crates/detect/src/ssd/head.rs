//! SSD's prediction convs: per level a 3x3 classification conv (`head.cls.{l}`, `A * (K + 1)`
//! outputs, background at 0) and a 3x3 regression conv (`head.reg.{l}`, `A * 4`).

use tch::{Tensor, nn};
use tlcv_core::backbones::layers::Conv;
use tlcv_core::onnx::{Graph, OnnxError, Value};

use crate::error::DetectError;
use crate::faster_rcnn::fpn::{conv_bias, normal_init};

/// The per-level heads.
#[derive(Debug)]
pub struct SsdHead {
    cls: Vec<Conv>,
    reg: Vec<Conv>,
    num_outputs: i64,
}

/// `[N, A * K, H, W]` -> `[N, H * W * A, K]` (location-major, then anchor, as the priors).
fn flatten(t: &Tensor, k: i64) -> Tensor {
    let s = t.size();
    let (n, h, w) = (s[0], s[2], s[3]);
    t.view([n, -1, k, h, w]).permute([0, 3, 4, 1, 2]).reshape([n, -1, k])
}

impl SsdHead {
    /// Heads for levels of `channels` widths with `anchors` priors per location and
    /// `num_classes` foreground classes.
    pub fn new(p: &nn::Path, channels: &[i64], anchors: &[i64], num_classes: i64) -> Result<Self, DetectError> {
        let k = num_classes + 1;
        let (mut cls, mut reg) = (Vec::new(), Vec::new());
        for (l, (&c, &a)) in channels.iter().zip(anchors).enumerate() {
            let mut x = conv_bias(&(p / "cls" / l as i64), c, a * k, 3, 1)?;
            let mut y = conv_bias(&(p / "reg" / l as i64), c, a * 4, 3, 1)?;
            normal_init(&mut x, 0.01);
            normal_init(&mut y, 0.01);
            cls.push(x);
            reg.push(y);
        }
        Ok(Self { cls, reg, num_outputs: k })
    }

    /// Level maps -> `(logits [N, P, K + 1], deltas [N, P, 4])` over all priors.
    pub fn forward(&self, feats: &[Tensor]) -> (Tensor, Tensor) {
        let mut logits = Vec::with_capacity(feats.len());
        let mut deltas = Vec::with_capacity(feats.len());
        for ((f, c), r) in feats.iter().zip(&self.cls).zip(&self.reg) {
            logits.push(flatten(&c.forward(f), self.num_outputs));
            deltas.push(flatten(&r.forward(f), 4));
        }
        (Tensor::cat(&logits, 1), Tensor::cat(&deltas, 1))
    }
}

/// [`flatten`] as ONNX nodes: `[N, A * K, H, W]` -> `[N, H * W * A, K]`.
fn flatten_onnx(g: &mut Graph, t: &Value, k: i64) -> Result<Value, OnnxError> {
    let (Some(h), Some(w)) = (t.dim(2), t.dim(3)) else {
        return Err(OnnxError::Unsupported("the SSD head needs a fixed input size".into()));
    };
    let v = g.reshape(t, &[0, -1, k, h, w]);
    let p = g.transpose(&v, &[0, 3, 4, 1, 2]);
    Ok(g.reshape(&p, &[0, -1, k]))
}

impl SsdHead {
    /// The ONNX nodes of [`SsdHead::forward`]: `(logits [N, P, K + 1], deltas [N, P, 4])`.
    pub fn to_onnx(&self, g: &mut Graph, feats: &[Value]) -> Result<(Value, Value), OnnxError> {
        let (mut logits, mut deltas) = (Vec::new(), Vec::new());
        for ((f, c), r) in feats.iter().zip(&self.cls).zip(&self.reg) {
            let l = c.to_onnx(g, f)?;
            logits.push(flatten_onnx(g, &l, self.num_outputs)?);
            let d = r.to_onnx(g, f)?;
            deltas.push(flatten_onnx(g, &d, 4)?);
        }
        let logits = g.concat(&logits.iter().collect::<Vec<_>>(), 1);
        let deltas = g.concat(&deltas.iter().collect::<Vec<_>>(), 1);
        Ok((logits, deltas))
    }
}
