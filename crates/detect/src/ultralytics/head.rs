//! Ultralytics' `Detect` head (`ultralytics/nn/modules/head.py`; anchor-free, decoupled, with the
//! distribution focal loss integral of Li et al., "Generalized Focal Loss", 2020). Per level `i`:
//! - `cv2.i`: box branch `Conv(x, c2, 3)`, `Conv(c2, c2, 3)`, `Conv2d(c2, 4 * reg_max, 1)`, with
//!   `c2 = max(16, ch[0] / 4, 4 * reg_max)`;
//! - `cv3.i`: class branch, `c3 = max(ch[0], min(nc, 100))`: YOLOv8 (the "legacy" head)
//!   `Conv(x, c3, 3)`, `Conv(c3, c3, 3)`, `Conv2d(c3, nc, 1)`; YOLO11 `[DWConv(x, x, 3), Conv(x, c3, 1)]`,
//!   `[DWConv(c3, c3, 3), Conv(c3, c3, 1)]`, `Conv2d(c3, nc, 1)`;
//! - `dfl.conv.weight` `[1, reg_max, 1, 1]` = `0, 1, ..., reg_max - 1`, not trained: the expected bin
//!   of each edge's softmax.
//!
//! In eval mode the output is `[N, 4 + nc, A]`: `dist2bbox` around the cell centres (offset 0.5) as
//! centre-x, centre-y, width, height in input pixels, then the class sigmoids.

use tch::{Device, Kind, Tensor, nn};
use tlcv_core::backbones::layers::{Conv, ConvBn, ConvInit, ConvOpts};
use tlcv_core::onnx::{Graph, OnnxError, Value};

use super::conv::{ConvSpec, conv};
use super::spec::Version;
use crate::error::{DetectError, Result};
use crate::yolo::anchors::anchor_points;
use crate::yolo::head::HeadOutput;

/// Bins per box edge in every released model.
pub const REG_MAX: i64 = 16;

/// One branch: convolution blocks, then a biased 1x1 convolution.
#[derive(Debug)]
struct Branch {
    convs: Vec<ConvBn>,
    out: Conv,
}

impl Branch {
    /// `[N, c_in, H, W]` -> `[N, c_out, H, W]`.
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = x.shallow_clone();
        for c in &self.convs {
            y = c.forward(&y, train);
        }
        self.out.forward(&y)
    }

    /// `[N, c_in, H, W]` -> `[N, H * W, c_out]`: the branch's nodes, then cells first (as
    /// `forward(..).flatten(2, 3).transpose(1, 2)`).
    fn to_onnx(&self, g: &mut Graph, x: &Value) -> std::result::Result<Value, OnnxError> {
        let mut y = x.clone();
        for c in &self.convs {
            y = c.to_onnx(g, &y)?;
        }
        let y = self.out.to_onnx(g, &y)?; // [N, c_out, H, W]
        let c = y.dim(1).unwrap_or(-1);
        let flat = g.reshape(&y, &[0, c, -1]); // [N, c_out, H * W]
        Ok(g.transpose(&flat, &[0, 2, 1]))
    }
}

/// The `Detect` head over P3, P4, P5.
#[derive(Debug)]
pub struct Detect {
    cv2: Vec<Branch>,
    cv3: Vec<Branch>,
    dfl: Tensor,
    /// Number of classes.
    pub nc: i64,
    /// Stride of each level.
    pub strides: Vec<i64>,
}

fn final_conv(p: &nn::Path, c: i64, out: i64, bias: f64) -> Result<Conv> {
    let conv = Conv::new(p, c, out, ConvOpts::new(1).bias(true).init(ConvInit::Default))?;
    // `Detect.bias_init`: the box logits at 2, the class logits at a prior of 5 objects per 640 px image.
    if let Some(b) = &conv.bias {
        tch::no_grad(|| {
            let _ = b.shallow_clone().fill_(bias);
        });
    }
    Ok(conv)
}

impl Detect {
    /// The head at `p` for input channels `ch` (one per level) and `strides`.
    pub fn new(p: &nn::Path, version: Version, nc: i64, ch: &[i64], strides: &[i64]) -> Result<Self> {
        if ch.is_empty() || ch.len() != strides.len() || nc < 1 {
            return Err(DetectError::Invalid(format!("Detect: {nc} classes, channels {ch:?}, strides {strides:?}")));
        }
        let c2 = 16.max(ch[0] / 4).max(4 * REG_MAX);
        let c3 = ch[0].max(nc.min(100));
        let (mut cv2, mut cv3) = (Vec::new(), Vec::new());
        for (i, (&x, &s)) in ch.iter().zip(strides).enumerate() {
            let b = p / "cv2" / i;
            cv2.push(Branch {
                convs: vec![conv(&(&b / 0), ConvSpec::new(x, c2, 3))?, conv(&(&b / 1), ConvSpec::new(c2, c2, 3))?],
                out: final_conv(&(&b / 2), c2, 4 * REG_MAX, 2.0)?,
            });
            let k = p / "cv3" / i;
            let convs = match version {
                Version::V8 => {
                    vec![conv(&(&k / 0), ConvSpec::new(x, c3, 3))?, conv(&(&k / 1), ConvSpec::new(c3, c3, 3))?]
                }
                Version::V11 => vec![
                    conv(&(&k / 0 / 0), ConvSpec::depthwise(x, x, 3))?,
                    conv(&(&k / 0 / 1), ConvSpec::new(x, c3, 1))?,
                    conv(&(&k / 1 / 0), ConvSpec::depthwise(c3, c3, 3))?,
                    conv(&(&k / 1 / 1), ConvSpec::new(c3, c3, 1))?,
                ],
            };
            let prior = (5.0 / nc as f64 / (640.0 / s as f64).powi(2)).ln();
            cv3.push(Branch { convs, out: final_conv(&(&k / 2), c3, nc, prior)? });
        }
        let dfl = (p / "dfl" / "conv").f_zeros_no_train("weight", &[1, REG_MAX, 1, 1])?;
        tch::no_grad(|| {
            let bins = Tensor::arange(REG_MAX, (Kind::Float, dfl.device())).view([1, REG_MAX, 1, 1]);
            dfl.shallow_clone().copy_(&bins);
        });
        Ok(Self { cv2, cv3, dfl, nc, strides: strides.to_vec() })
    }

    /// `[P3, P4, P5]` (`[N, ch_i, H_i, W_i]`) -> class logits `[N, A, nc]` and edge-distance logits
    /// `[N, A, 4 * reg_max]` (the training output; `A = sum H_i * W_i`, level by level, row-major).
    pub fn forward_raw(&self, feats: &[Tensor], train: bool) -> HeadOutput {
        let (mut cls, mut dist, mut shapes) = (Vec::new(), Vec::new(), Vec::new());
        for ((f, b), k) in feats.iter().zip(&self.cv2).zip(&self.cv3) {
            let s = f.size();
            shapes.push((s[2], s[3]));
            dist.push(b.forward(f, train).flatten(2, 3).transpose(1, 2)); // [N, H*W, 4 * reg_max]
            cls.push(k.forward(f, train).flatten(2, 3).transpose(1, 2)); // [N, H*W, nc]
        }
        HeadOutput { cls: Tensor::cat(&cls, 1), dist: Tensor::cat(&dist, 1), shapes }
    }

    /// A raw output -> `[N, 4 + nc, A]`: boxes as centre x, centre y, width, height in input
    /// pixels, then the class probabilities (Ultralytics' eval output).
    pub fn decode(&self, out: &HeadOutput) -> Tensor {
        let s = out.dist.size();
        let bins = self.dfl.view([REG_MAX]).to_kind(out.dist.kind());
        let ltrb = out.dist.view([s[0], s[1], 4, REG_MAX]).softmax(-1, out.dist.kind()).matmul(&bins); // [N, A, 4]
        let anchors = anchor_points(&out.shapes, &self.strides, 0.5, out.dist.device());
        let grid = anchors.grid(); // [A, 2] in cells
        let x1y1 = &grid - ltrb.slice(-1, 0, 2, 1);
        let x2y2 = &grid + ltrb.slice(-1, 2, 4, 1);
        let xywh = Tensor::cat(&[(&x1y1 + &x2y2) / 2.0, &x2y2 - &x1y1], -1) * &anchors.strides; // [N, A, 4]
        Tensor::cat(&[xywh, out.cls.sigmoid()], -1).transpose(1, 2) // [N, 4 + nc, A]
    }

    /// [`Detect::forward_raw`] and [`Detect::decode`] in eval mode as ONNX nodes, without the final
    /// transpose: `[P3, P4, P5]` (`[N, ch_i, H_i, W_i]`, fixed sizes) -> boxes `[N, A, 4]` as
    /// centre x, centre y, width, height in input pixels and class probabilities `[N, A, nc]`. The
    /// DFL is a `Softmax` over the bins and a `MatMul` with the `dfl.conv` weights (`0..reg_max`);
    /// the anchor points and strides are constants of the export's input size.
    pub fn to_onnx(&self, g: &mut Graph, feats: &[Value]) -> std::result::Result<(Value, Value), OnnxError> {
        if feats.len() != self.levels() {
            return Err(OnnxError::Unsupported(format!("Detect: {} maps for {} levels", feats.len(), self.levels())));
        }
        let (mut cls, mut dist, mut shapes) = (Vec::new(), Vec::new(), Vec::new());
        for ((f, b), k) in feats.iter().zip(&self.cv2).zip(&self.cv3) {
            let (Some(h), Some(w)) = (f.dim(2), f.dim(3)) else {
                return Err(OnnxError::Unsupported("the Detect head needs a fixed input size (--img-size)".into()));
            };
            shapes.push((h, w));
            dist.push(b.to_onnx(g, f)?); // [N, H*W, 4 * reg_max]
            cls.push(k.to_onnx(g, f)?); // [N, H*W, nc]
        }
        let cls = g.concat(&cls.iter().collect::<Vec<_>>(), 1); // [N, A, nc]
        let dist = g.concat(&dist.iter().collect::<Vec<_>>(), 1); // [N, A, 4 * reg_max]
        let a: i64 = shapes.iter().map(|(h, w)| h * w).sum();
        // DFL: the expected bin of each edge's distribution, [N, A, 4, R] -> [N, A, 4].
        let d = g.reshape(&dist, &[0, a, 4, REG_MAX]);
        let p = g.softmax(&d, 3);
        let bins = Vec::<f32>::try_from(self.dfl.to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1]))?;
        let bins = g.const_float(&bins, &[REG_MAX, 1])?;
        let e = g.op("MatMul", &[&p, &bins], &[], vec![dist.dims()[0], Some(a), Some(4), Some(1)]);
        let ltrb = g.reshape(&e, &[0, a, 4]);
        // dist2bbox(xywh=True) around the cell centres, then times the strides, as `decode`.
        let anchors = anchor_points(&shapes, &self.strides, 0.5, Device::Cpu);
        let grid = Vec::<f32>::try_from(anchors.grid().reshape([-1]))?;
        let grid = g.const_float(&grid, &[a, 2])?;
        let strides = Vec::<f32>::try_from(anchors.strides.reshape([-1]))?;
        let strides = g.const_float(&strides, &[a, 1])?;
        let lt = g.slice(&ltrb, 2, 0, 2);
        let rb = g.slice(&ltrb, 2, 2, 4);
        let x1y1 = g.binary("Sub", &grid, &lt);
        let x2y2 = g.binary("Add", &grid, &rb);
        let sum = g.binary("Add", &x1y1, &x2y2);
        let centre = g.scalar("Div", &sum, 2.0)?;
        let wh = g.binary("Sub", &x2y2, &x1y1);
        let xywh = g.concat(&[&centre, &wh], 2);
        let xywh = g.binary("Mul", &xywh, &strides); // [N, A, 4]
        Ok((xywh, g.unary("Sigmoid", &cls)))
    }

    /// Every convolution + batch norm (for folding).
    pub fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        self.cv2.iter_mut().chain(self.cv3.iter_mut()).flat_map(|b| b.convs.iter_mut()).collect()
    }

    /// Number of levels.
    pub fn levels(&self) -> usize {
        self.strides.len()
    }
}
