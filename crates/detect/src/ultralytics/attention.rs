//! YOLO11's attention blocks (`ultralytics/nn/modules/block.py`), after the position-sensitive
//! attention of YOLOv10 (Wang et al. 2024):
//! - `Attention(dim, num_heads, attn_ratio=0.5)`: one 1x1 `qkv` convolution gives per head a query and
//!   a key of `key_dim = head_dim / 2` channels and a value of `head_dim`; softmax attention over
//!   the `H * W` positions, plus a depthwise 3x3 `pe` of the values, then a 1x1 `proj`;
//! - `PSABlock`: `x + attn(x)`, then `x + ffn(x)` (1x1 to `2c` with SiLU, 1x1 back);
//! - `C2PSA(c1, c2, n)`: `cv1` splits into halves `a, b`; `b` runs through `n` `PSABlock`s with
//!   `max(c / 64, 1)` heads; `cv2(cat(a, b))`.

use tch::{Tensor, nn};
use tlcv_core::backbones::layers::{ConvBn, add_residual};
use tlcv_core::onnx::{Graph, OnnxError, Value};

use super::block::split_channels;
use super::conv::{ConvSpec, conv};
use crate::error::{DetectError, Result};

/// `Attention(dim, num_heads, attn_ratio=0.5)`.
#[derive(Debug)]
pub struct Attention {
    qkv: ConvBn,
    proj: ConvBn,
    pe: ConvBn,
    heads: i64,
    key_dim: i64,
    head_dim: i64,
}

impl Attention {
    /// `dim` channels in `heads` heads.
    pub fn new(p: &nn::Path, dim: i64, heads: i64) -> Result<Self> {
        if heads < 1 || dim % heads != 0 {
            return Err(DetectError::Invalid(format!("attention: {dim} channels do not split into {heads} heads")));
        }
        let head_dim = dim / heads;
        let key_dim = head_dim / 2;
        let h = dim + 2 * key_dim * heads;
        Ok(Self {
            qkv: conv(&(p / "qkv"), ConvSpec::new(dim, h, 1).linear())?,
            proj: conv(&(p / "proj"), ConvSpec::new(dim, dim, 1).linear())?,
            pe: conv(&(p / "pe"), ConvSpec::new(dim, dim, 3).groups(dim).linear())?,
            heads,
            key_dim,
            head_dim,
        })
    }

    /// Every convolution + batch norm (for folding).
    pub fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        vec![&mut self.qkv, &mut self.proj, &mut self.pe]
    }

    /// `[B, C, H, W]` -> `[B, C, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let s = x.size();
        let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
        let qkv = self.qkv.forward(x, train).view([b, self.heads, 2 * self.key_dim + self.head_dim, h * w]);
        let parts = qkv.split_with_sizes([self.key_dim, self.key_dim, self.head_dim], 2);
        let (q, k, v) = (&parts[0], &parts[1], &parts[2]); // [B, nh, kd | kd | hd, N]
        let scale = (self.key_dim as f64).powf(-0.5);
        let attn = (q * scale).transpose(-2, -1).matmul(k).softmax(-1, q.kind()); // [B, nh, N, N]
        let y = v.matmul(&attn.transpose(-2, -1)).view([b, c, h, w]); // [B, C, H, W]
        let y = add_residual(y, &self.pe.forward(&v.reshape([b, c, h, w]), train));
        self.proj.forward(&y, train)
    }
}

/// `PSABlock(c, attn_ratio=0.5, num_heads, shortcut=True)`.
#[derive(Debug)]
pub struct PsaBlock {
    attn: Attention,
    ffn: [ConvBn; 2],
}

impl PsaBlock {
    /// `c` channels, `heads` heads.
    pub fn new(p: &nn::Path, c: i64, heads: i64) -> Result<Self> {
        let f = p / "ffn";
        Ok(Self {
            attn: Attention::new(&(p / "attn"), c, heads)?,
            ffn: [conv(&(&f / 0), ConvSpec::new(c, 2 * c, 1))?, conv(&(&f / 1), ConvSpec::new(2 * c, c, 1).linear())?],
        })
    }

    /// Every convolution + batch norm (for folding).
    pub fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        let mut v = self.attn.conv_bns_mut();
        v.extend(self.ffn.iter_mut());
        v
    }

    /// `[B, c, H, W]` -> `[B, c, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let x = add_residual(self.attn.forward(x, train), x);
        let y = self.ffn[1].forward(&self.ffn[0].forward(&x, train), train);
        add_residual(y, &x)
    }
}

/// `C2PSA(c1, c2, n, e=0.5)`.
#[derive(Debug)]
pub struct C2psa {
    cv1: ConvBn,
    cv2: ConvBn,
    m: Vec<PsaBlock>,
    c: i64,
}

impl C2psa {
    /// `n` blocks on half of `c1` channels; `c2` must equal `c1`.
    pub fn new(p: &nn::Path, c1: i64, c2: i64, n: i64) -> Result<Self> {
        if c1 != c2 {
            return Err(DetectError::Invalid(format!("C2PSA needs c1 == c2, got {c1} and {c2}")));
        }
        let c = c1 / 2;
        let m = (0..n).map(|i| PsaBlock::new(&(p / "m" / i), c, (c / 64).max(1))).collect::<Result<_>>()?;
        Ok(Self {
            cv1: conv(&(p / "cv1"), ConvSpec::new(c1, 2 * c, 1))?,
            cv2: conv(&(p / "cv2"), ConvSpec::new(2 * c, c1, 1))?,
            m,
            c,
        })
    }

    /// Every convolution + batch norm (for folding).
    pub fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        let mut v = vec![&mut self.cv1, &mut self.cv2];
        v.extend(self.m.iter_mut().flat_map(PsaBlock::conv_bns_mut));
        v
    }

    /// `[B, c1, H, W]` -> `[B, c1, H, W]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let ab = self.cv1.forward(x, train).split_with_sizes([self.c, self.c], 1);
        let mut b = ab[1].shallow_clone();
        for blk in &self.m {
            b = blk.forward(&b, train);
        }
        self.cv2.forward(&Tensor::cat(&[&ab[0], &b], 1), train)
    }
}

/// What the emitters return.
type OnnxResult<T> = std::result::Result<T, OnnxError>;

impl Attention {
    /// `[B, C, H, W]` -> `[B, C, H, W]` (H and W fixed): the ops of [`Attention::forward`] in order,
    /// `qkv` reshaped to `[B, nh, 2 kd + hd, H W]` and sliced, `MatMul(Transpose(q * scale), k)`,
    /// `Softmax` over the keys, `MatMul(v, Transpose(attn))`, plus `pe(v)`, then `proj`.
    pub fn to_onnx(&self, g: &mut Graph, x: &Value) -> OnnxResult<Value> {
        let (Some(c), Some(h), Some(w)) = (x.dim(1), x.dim(2), x.dim(3)) else {
            return Err(OnnxError::Unsupported("C2PSA attention needs a fixed input size (--img-size)".into()));
        };
        let b = x.dims()[0];
        let (nh, kd, hd, n) = (self.heads, self.key_dim, self.head_dim, h * w);
        let qkv = self.qkv.to_onnx(g, x)?; // [B, nh (2 kd + hd), H, W]
        let qkv = g.reshape(&qkv, &[0, nh, 2 * kd + hd, n]); // [B, nh, 2 kd + hd, N]
        let q = g.slice(&qkv, 2, 0, kd);
        let k = g.slice(&qkv, 2, kd, 2 * kd);
        let v = g.slice(&qkv, 2, 2 * kd, 2 * kd + hd); // [B, nh, hd, N]
        let q = g.scalar("Mul", &q, (kd as f64).powf(-0.5) as f32)?;
        let qt = g.transpose(&q, &[0, 1, 3, 2]); // [B, nh, N, kd]
        let attn = g.op("MatMul", &[&qt, &k], &[], vec![b, Some(nh), Some(n), Some(n)]);
        let attn = g.softmax(&attn, 3); // [B, nh, N, N]
        let attn_t = g.transpose(&attn, &[0, 1, 3, 2]);
        let y = g.op("MatMul", &[&v, &attn_t], &[], vec![b, Some(nh), Some(hd), Some(n)]);
        let y = g.reshape(&y, &[0, c, h, w]); // [B, C, H, W]
        let v = g.reshape(&v, &[0, c, h, w]);
        let pe = self.pe.to_onnx(g, &v)?;
        let y = g.binary("Add", &y, &pe);
        self.proj.to_onnx(g, &y)
    }
}

impl PsaBlock {
    /// `[B, c, H, W]` -> `[B, c, H, W]`: `x + attn(x)`, then `x + ffn(x)`.
    pub fn to_onnx(&self, g: &mut Graph, x: &Value) -> OnnxResult<Value> {
        let a = self.attn.to_onnx(g, x)?;
        let x = g.binary("Add", &a, x);
        let y = self.ffn[0].to_onnx(g, &x)?;
        let y = self.ffn[1].to_onnx(g, &y)?;
        Ok(g.binary("Add", &y, &x))
    }
}

impl C2psa {
    /// `[B, c1, H, W]` -> `[B, c1, H, W]`: `cv1`, its halves `a, b` (two `Slice`s), the blocks on
    /// `b`, `Concat(a, b)`, `cv2`.
    pub fn to_onnx(&self, g: &mut Graph, x: &Value) -> OnnxResult<Value> {
        let y = self.cv1.to_onnx(g, x)?;
        let [a, mut b] = split_channels(g, &y, self.c, self.c);
        for blk in &self.m {
            b = blk.to_onnx(g, &b)?;
        }
        let cat = g.concat(&[&a, &b], 1);
        self.cv2.to_onnx(g, &cat)
    }
}
