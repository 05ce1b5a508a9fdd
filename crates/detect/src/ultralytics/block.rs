//! The convolutional blocks of `ultralytics/nn/modules/block.py`, variable for variable:
//! - `Bottleneck`: two convolutions, plus the input when `shortcut` and the widths agree;
//! - `C3k` (a `C3` of two 3x3 bottlenecks): `cv3(cat(m(cv1(x)), cv2(x)))`;
//! - `C2f` (YOLOv8's CSP block with two convolutions) and `C3k2` (YOLO11's `C2f` whose inner blocks
//!   are half-width bottlenecks or `C3k`): `cv1` splits into two halves, each inner block extends the
//!   list from the last item, `cv2` fuses the concatenation;
//! - `SPPF` (spatial pyramid pooling, fast): three chained 5x5 max-pools of `cv1(x)`, concatenated.
//!
//! Every `forward` takes `train` (batch-norm statistics) and keeps the spatial size; every `to_onnx`
//! writes the eval-mode forward as ONNX nodes (batch norms folded into their convolutions).

use tch::{Tensor, nn};
use tlcv_core::backbones::layers::{ConvBn, add_residual};
use tlcv_core::onnx::{Graph, OnnxError, Value};

use super::conv::{ConvSpec, conv};
use crate::error::Result;

/// `Bottleneck(c1, c2, shortcut, k=(k1, k2), e)`.
#[derive(Debug)]
pub struct Bottleneck {
    cv1: ConvBn,
    cv2: ConvBn,
    add: bool,
}

impl Bottleneck {
    /// `(c1, c2)` channels in and out, hidden width `int(c2 * e)`; kernels `k`.
    pub fn new(p: &nn::Path, (c1, c2): (i64, i64), shortcut: bool, k: (i64, i64), e: f64) -> Result<Self> {
        let c = (c2 as f64 * e) as i64;
        Ok(Self {
            cv1: conv(&(p / "cv1"), ConvSpec::new(c1, c, k.0))?,
            cv2: conv(&(p / "cv2"), ConvSpec::new(c, c2, k.1))?,
            add: shortcut && c1 == c2,
        })
    }

    /// Every convolution + batch norm (for folding).
    pub fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        vec![&mut self.cv1, &mut self.cv2]
    }

    /// `[N, c1, H, W]` -> `[N, c2, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let y = self.cv2.forward(&self.cv1.forward(x, train), train);
        if self.add { add_residual(y, x) } else { y }
    }
}

/// `C3k(c1, c2, n=2, shortcut=True, e=0.5, k=3)`.
#[derive(Debug)]
pub struct C3k {
    cv1: ConvBn,
    cv2: ConvBn,
    cv3: ConvBn,
    m: Vec<Bottleneck>,
}

impl C3k {
    /// `n` 3x3 bottlenecks of width `c2 / 2` under `m.{i}`.
    pub fn new(p: &nn::Path, c1: i64, c2: i64, n: i64, shortcut: bool) -> Result<Self> {
        let c = c2 / 2;
        let m =
            (0..n).map(|i| Bottleneck::new(&(p / "m" / i), (c, c), shortcut, (3, 3), 1.0)).collect::<Result<_>>()?;
        Ok(Self {
            cv1: conv(&(p / "cv1"), ConvSpec::new(c1, c, 1))?,
            cv2: conv(&(p / "cv2"), ConvSpec::new(c1, c, 1))?,
            cv3: conv(&(p / "cv3"), ConvSpec::new(2 * c, c2, 1))?,
            m,
        })
    }

    /// Every convolution + batch norm (for folding).
    pub fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        let mut v = vec![&mut self.cv1, &mut self.cv2, &mut self.cv3];
        v.extend(self.m.iter_mut().flat_map(Bottleneck::conv_bns_mut));
        v
    }

    /// `[N, c1, H, W]` -> `[N, c2, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut a = self.cv1.forward(x, train);
        for b in &self.m {
            a = b.forward(&a, train);
        }
        self.cv3.forward(&Tensor::cat(&[a, self.cv2.forward(x, train)], 1), train)
    }
}

/// An inner block of a [`C2f`].
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a few per network, built once
enum Inner {
    Bottleneck(Bottleneck),
    C3k(C3k),
}

/// Which blocks a [`C2f`] holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum C2fKind {
    /// YOLOv8's `C2f(c1, c2, n, shortcut)`: full-width 3x3 bottlenecks, hidden `c2 / 2`.
    C2f {
        /// Residual bottlenecks.
        shortcut: bool,
    },
    /// YOLO11's `C3k2(c1, c2, n, c3k, e)`: residual half-width bottlenecks, or `C3k` blocks.
    C3k2 {
        /// `C3k` inner blocks.
        c3k: bool,
        /// Hidden-width ratio.
        e: f64,
    },
}

/// `C2f` / `C3k2`.
#[derive(Debug)]
pub struct C2f {
    cv1: ConvBn,
    cv2: ConvBn,
    m: Vec<Inner>,
}

impl C2f {
    /// `n` inner blocks of the kind's width `int(c2 * e)` under `m.{i}`.
    pub fn new(p: &nn::Path, c1: i64, c2: i64, n: i64, kind: C2fKind) -> Result<Self> {
        let e = match kind {
            C2fKind::C2f { .. } => 0.5,
            C2fKind::C3k2 { e, .. } => e,
        };
        let c = (c2 as f64 * e) as i64;
        let m = (0..n)
            .map(|i| {
                let q = p / "m" / i;
                Ok(match kind {
                    C2fKind::C2f { shortcut } => Inner::Bottleneck(Bottleneck::new(&q, (c, c), shortcut, (3, 3), 1.0)?),
                    C2fKind::C3k2 { c3k: true, .. } => Inner::C3k(C3k::new(&q, c, c, 2, true)?),
                    C2fKind::C3k2 { c3k: false, .. } => {
                        Inner::Bottleneck(Bottleneck::new(&q, (c, c), true, (3, 3), 0.5)?)
                    }
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            cv1: conv(&(p / "cv1"), ConvSpec::new(c1, 2 * c, 1))?,
            cv2: conv(&(p / "cv2"), ConvSpec::new((2 + n) * c, c2, 1))?,
            m,
        })
    }

    /// Every convolution + batch norm (for folding).
    pub fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        let mut v = vec![&mut self.cv1, &mut self.cv2];
        for b in &mut self.m {
            v.extend(match b {
                Inner::Bottleneck(b) => b.conv_bns_mut(),
                Inner::C3k(b) => b.conv_bns_mut(),
            });
        }
        v
    }

    /// `[N, c1, H, W]` -> `[N, c2, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.cv1.forward(x, train).chunk(2, 1);
        for b in &self.m {
            let Some(last) = y.last() else { break };
            let next = match b {
                Inner::Bottleneck(b) => b.forward(last, train),
                Inner::C3k(b) => b.forward(last, train),
            };
            y.push(next);
        }
        self.cv2.forward(&Tensor::cat(&y, 1), train)
    }
}

/// `SPPF(c1, c2, k)` with an activated `cv1` (what `parse_model` gives the YAML's rows).
#[derive(Debug)]
pub struct Sppf {
    cv1: ConvBn,
    cv2: ConvBn,
    k: i64,
}

impl Sppf {
    /// Hidden width `c1 / 2`, pool size `k`.
    pub fn new(p: &nn::Path, c1: i64, c2: i64, k: i64) -> Result<Self> {
        let c = c1 / 2;
        Ok(Self {
            cv1: conv(&(p / "cv1"), ConvSpec::new(c1, c, 1))?,
            cv2: conv(&(p / "cv2"), ConvSpec::new(4 * c, c2, 1))?,
            k,
        })
    }

    /// Every convolution + batch norm (for folding).
    pub fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        vec![&mut self.cv1, &mut self.cv2]
    }

    /// `[N, c1, H, W]` -> `[N, c2, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = vec![self.cv1.forward(x, train)];
        for _ in 0..3 {
            let Some(last) = y.last() else { break };
            let pooled = last.max_pool2d([self.k, self.k], [1, 1], [self.k / 2, self.k / 2], [1, 1], false);
            y.push(pooled);
        }
        self.cv2.forward(&Tensor::cat(&y, 1), train)
    }
}

/// What the emitters return.
type OnnxResult<T> = std::result::Result<T, OnnxError>;

/// `[N, a + b, H, W]` -> `[N, a, H, W]`, `[N, b, H, W]` (`chunk` / `split_with_sizes` on the channels).
pub(crate) fn split_channels(g: &mut Graph, x: &Value, a: i64, b: i64) -> [Value; 2] {
    [g.slice(x, 1, 0, a), g.slice(x, 1, a, a + b)]
}

/// The channels of an NCHW value, which the emitters need to split it.
pub(crate) fn channels(x: &Value) -> OnnxResult<i64> {
    x.dim(1).ok_or_else(|| OnnxError::Unsupported(format!("{}: unknown channel count", x.name())))
}

impl Bottleneck {
    /// `[N, c1, H, W]` -> `[N, c2, H, W]`: `cv1`, `cv2`, and an `Add` of the input with the shortcut.
    pub fn to_onnx(&self, g: &mut Graph, x: &Value) -> OnnxResult<Value> {
        let y = self.cv1.to_onnx(g, x)?;
        let y = self.cv2.to_onnx(g, &y)?;
        Ok(if self.add { g.binary("Add", &y, x) } else { y })
    }
}

impl C3k {
    /// `[N, c1, H, W]` -> `[N, c2, H, W]`.
    pub fn to_onnx(&self, g: &mut Graph, x: &Value) -> OnnxResult<Value> {
        let mut a = self.cv1.to_onnx(g, x)?;
        for b in &self.m {
            a = b.to_onnx(g, &a)?;
        }
        let b = self.cv2.to_onnx(g, x)?;
        let cat = g.concat(&[&a, &b], 1);
        self.cv3.to_onnx(g, &cat)
    }
}

impl C2f {
    /// `[N, c1, H, W]` -> `[N, c2, H, W]`: `cv1`, its two channel halves (two `Slice`s), the inner
    /// blocks each on the last item, `Concat`, `cv2`.
    pub fn to_onnx(&self, g: &mut Graph, x: &Value) -> OnnxResult<Value> {
        let y = self.cv1.to_onnx(g, x)?; // [N, 2c, H, W]
        let c = channels(&y)? / 2;
        let mut ys = split_channels(g, &y, c, c).to_vec();
        for b in &self.m {
            let Some(last) = ys.last() else { break };
            let next = match b {
                Inner::Bottleneck(b) => b.to_onnx(g, last)?,
                Inner::C3k(b) => b.to_onnx(g, last)?,
            };
            ys.push(next);
        }
        let cat = g.concat(&ys.iter().collect::<Vec<_>>(), 1); // [N, (2 + n) c, H, W]
        self.cv2.to_onnx(g, &cat)
    }
}

impl Sppf {
    /// `[N, c1, H, W]` -> `[N, c2, H, W]`: `cv1`, three chained `MaxPool`s (kernel `k`, stride 1,
    /// padding `k / 2`), `Concat`, `cv2`.
    pub fn to_onnx(&self, g: &mut Graph, x: &Value) -> OnnxResult<Value> {
        let mut ys = vec![self.cv1.to_onnx(g, x)?];
        for _ in 0..3 {
            let Some(last) = ys.last() else { break };
            let pooled = g.pool(last, false, (self.k, 1, self.k / 2));
            ys.push(pooled);
        }
        let cat = g.concat(&ys.iter().collect::<Vec<_>>(), 1); // [N, 4 c, H, W]
        self.cv2.to_onnx(g, &cat)
    }
}
