//! The YOLOv8-style head: anchor-free and decoupled. At every level a box branch (two 3x3 convs then
//! a 1x1 to `4 * reg_max` logits: a distribution over `reg_max` bins for each of the distances
//! left/top/right/bottom from the cell centre, in stride units) and a class branch (two 3x3 convs
//! then a 1x1 to `nc` logits).

use tch::{Kind, Tensor, nn};
use tlcv_core::backbones::layers::{Conv, ConvBn, ConvInit, ConvOpts};
use tlcv_core::onnx::{Graph, OnnxError, Value};

use super::anchors::{AnchorPoints, anchor_points};
use super::neck::conv_bn_silu;
use crate::error::Result;

/// Raw head outputs, levels concatenated (P3 cells first, row-major).
#[derive(Debug)]
pub struct HeadOutput {
    /// `[N, A, nc]` class logits.
    pub cls: Tensor,
    /// `[N, A, 4 * reg_max]` edge-distance logits (l, t, r, b blocks of `reg_max`).
    pub dist: Tensor,
    /// `(H, W)` of each level.
    pub shapes: Vec<(i64, i64)>,
}

#[derive(Debug)]
struct Branch {
    c1: ConvBn,
    c2: ConvBn,
    out: Conv,
}

impl Branch {
    fn new(p: &nn::Path, cin: i64, mid: i64, cout: i64) -> Result<Self> {
        let o = ConvOpts::new(1).bias(true).init(ConvInit::Default);
        Ok(Self {
            c1: conv_bn_silu(&(p / 0), cin, mid, 3, 1)?,
            c2: conv_bn_silu(&(p / 1), mid, mid, 3, 1)?,
            out: Conv::new(&(p / 2), mid, cout, o)?,
        })
    }

    /// `[N, cin, H, W]` -> `[N, cout, H, W]`.
    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        self.out.forward(&self.c2.forward(&self.c1.forward(xs, train), train))
    }
}

/// The head over P3, P4, P5.
#[derive(Debug)]
pub struct YoloHead {
    boxes: Vec<Branch>,
    classes: Vec<Branch>,
    /// Number of classes.
    pub nc: i64,
    /// Bins per edge distribution.
    pub reg_max: i64,
    /// Stride of each level.
    pub strides: Vec<i64>,
}

impl YoloHead {
    /// A head under `p` (`box.{level}`, `cls.{level}`) for feature maps of `c` channels at `strides`,
    /// `nc` classes. Biases start as YOLOv8's: box logits 1, class logits at a prior of about 5
    /// objects per `img_size^2` image spread over the level's cells.
    pub fn new(p: &nn::Path, (c, nc): (i64, i64), reg_max: i64, strides: &[i64], img_size: i64) -> Result<Self> {
        let c2 = (c / 4).max(16).max(4 * reg_max);
        let c3 = c.max(nc.min(100));
        let mut boxes = Vec::new();
        let mut classes = Vec::new();
        for (i, &s) in strides.iter().enumerate() {
            let b = Branch::new(&(p / "box" / i), c, c2, 4 * reg_max)?;
            let k = Branch::new(&(p / "cls" / i), c, c3, nc)?;
            tch::no_grad(|| {
                if let Some(bias) = &b.out.bias {
                    let _ = bias.shallow_clone().fill_(1.0);
                }
                if let Some(bias) = &k.out.bias {
                    let cells = (img_size as f64 / s as f64).powi(2);
                    let _ = bias.shallow_clone().fill_((5.0 / nc as f64 / cells).ln());
                }
            });
            boxes.push(b);
            classes.push(k);
        }
        Ok(Self { boxes, classes, nc, reg_max, strides: strides.to_vec() })
    }

    /// `[P3, P4, P5]` (`[N, c, H_i, W_i]`) -> class logits `[N, A, nc]` and distance logits
    /// `[N, A, 4 * reg_max]`, `A = sum H_i * W_i`.
    pub fn forward(&self, feats: &[Tensor], train: bool) -> HeadOutput {
        let mut cls = Vec::new();
        let mut dist = Vec::new();
        let mut shapes = Vec::new();
        for ((f, b), k) in feats.iter().zip(&self.boxes).zip(&self.classes) {
            let s = f.size();
            shapes.push((s[2], s[3]));
            // [N, C, H, W] -> [N, H*W, C]
            dist.push(b.forward(f, train).flatten(2, 3).transpose(1, 2));
            cls.push(k.forward(f, train).flatten(2, 3).transpose(1, 2));
        }
        HeadOutput { cls: Tensor::cat(&cls, 1), dist: Tensor::cat(&dist, 1), shapes }
    }

    /// The anchor points matching an output.
    pub fn anchors(&self, out: &HeadOutput) -> AnchorPoints {
        anchor_points(&out.shapes, &self.strides, 0.5, out.cls.device())
    }
}

/// Expected value of each edge distribution: `[N, A, 4 * reg_max]` -> `[N, A, 4]` distances in
/// stride units (`sum_i softmax(logits)_i * i`).
pub fn dfl_decode(dist: &Tensor, reg_max: i64) -> Tensor {
    let s = dist.size();
    let bins = Tensor::arange(reg_max, (Kind::Float, dist.device()));
    dist.view([s[0], s[1], 4, reg_max]).softmax(-1, Kind::Float).matmul(&bins) // [N, A, 4]
}

/// Distances `[.., 4]` (l, t, r, b) around points `[A, 2]` -> xyxy boxes `[.., 4]` in the same units.
pub fn dist_to_boxes(ltrb: &Tensor, points: &Tensor) -> Tensor {
    let lt = ltrb.slice(-1, 0, 2, 1);
    let rb = ltrb.slice(-1, 2, 4, 1);
    Tensor::cat(&[points - lt, points + rb], -1)
}

/// Decodes a head output: boxes `[N, A, 4]` xyxy in input pixels and class probabilities `[N, A, nc]`.
pub fn decode(out: &HeadOutput, anchors: &AnchorPoints, reg_max: i64) -> (Tensor, Tensor) {
    let ltrb = dfl_decode(&out.dist, reg_max); // [N, A, 4] stride units
    let boxes = dist_to_boxes(&ltrb, &anchors.grid()) * &anchors.strides; // [N, A, 4] pixels
    (boxes, out.cls.sigmoid())
}

impl Branch {
    /// `[N, cin, H, W]` -> `[N, H * W, cout]`: the branch's nodes, then flattened cells first.
    fn to_onnx(&self, g: &mut Graph, x: &Value) -> std::result::Result<Value, OnnxError> {
        let y = self.c1.to_onnx(g, x)?;
        let y = self.c2.to_onnx(g, &y)?;
        let y = self.out.to_onnx(g, &y)?; // [N, cout, H, W]
        let c = y.dim(1).unwrap_or(-1);
        let flat = g.reshape(&y, &[0, c, -1]); // [N, cout, H*W]
        Ok(g.transpose(&flat, &[0, 2, 1]))
    }
}

impl YoloHead {
    /// The ONNX nodes of [`YoloHead::forward`] and [`decode`]: `[P3, P4, P5]` ->
    /// boxes `[N, A, 4]` (x1, y1, x2, y2 in input pixels) and class probabilities `[N, A, nc]`. The
    /// anchor points and strides are constants of the export's input size.
    pub fn to_onnx(&self, g: &mut Graph, feats: &[Value]) -> std::result::Result<(Value, Value), OnnxError> {
        let mut cls = Vec::new();
        let mut dist = Vec::new();
        let mut shapes = Vec::new();
        for ((f, b), k) in feats.iter().zip(&self.boxes).zip(&self.classes) {
            let (Some(h), Some(w)) = (f.dim(2), f.dim(3)) else {
                return Err(OnnxError::Unsupported("the YOLO head needs a fixed input size".into()));
            };
            shapes.push((h, w));
            dist.push(b.to_onnx(g, f)?);
            cls.push(k.to_onnx(g, f)?);
        }
        let cls = g.concat(&cls.iter().collect::<Vec<_>>(), 1); // [N, A, nc]
        let dist = g.concat(&dist.iter().collect::<Vec<_>>(), 1); // [N, A, 4 * reg_max]
        let a: i64 = shapes.iter().map(|(h, w)| h * w).sum();
        // DFL: the expected bin of each edge distribution, [N, A, 4, R] -> [N, A, 4].
        let r = self.reg_max;
        let d = g.reshape(&dist, &[0, a, 4, r]);
        let p = g.softmax(&d, 3);
        let bins: Vec<f32> = (0..r).map(|i| i as f32).collect();
        let bins = g.const_float(&bins, &[r, 1])?;
        let e = g.op("MatMul", &[&p, &bins], &[], vec![dist.dims()[0], Some(a), Some(4), Some(1)]);
        let ltrb = g.reshape(&e, &[0, a, 4]);
        // (grid - lt, grid + rb) * stride, as `dist_to_boxes(..) * strides`.
        let anchors = anchor_points(&shapes, &self.strides, 0.5, tch::Device::Cpu);
        let grid = anchors.grid().reshape([-1]);
        let grid = g.const_float(&Vec::<f32>::try_from(&grid)?, &[a, 2])?;
        let strides = g.const_float(&Vec::<f32>::try_from(&anchors.strides.reshape([-1]))?, &[a, 1])?;
        let lt = g.slice(&ltrb, 2, 0, 2);
        let rb = g.slice(&ltrb, 2, 2, 4);
        let x1y1 = g.binary("Sub", &grid, &lt);
        let x2y2 = g.binary("Add", &grid, &rb);
        let xyxy = g.concat(&[&x1y1, &x2y2], 2);
        let boxes = g.binary("Mul", &xyxy, &strides);
        let scores = g.unary("Sigmoid", &cls);
        Ok((boxes, scores))
    }
}
