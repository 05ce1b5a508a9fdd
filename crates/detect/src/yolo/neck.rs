//! The neck: FPN (top-down) + PAN (bottom-up) over C3/C4/C5, YOLOv8-style but light: every level is
//! projected to `c` channels, merged by concatenation and a residual fuse block (1x1 then two 3x3
//! convolutions with a skip), so each output level sees both finer and coarser context.

use tch::{Tensor, nn};
use tlcv_core::backbones::layers::{Act, ConvBn, ConvOpts};
use tlcv_core::onnx::ops::{Interp, SizeOf};
use tlcv_core::onnx::{Graph, OnnxError, Value};

use crate::error::Result;

/// Batch-norm settings of the new layers (YOLOv8's).
const BN_EPS: f64 = 1e-3;
const BN_MOMENTUM: f64 = 0.03;

/// Convolution + batch norm + SiLU at `p.conv` / `p.bn`.
pub fn conv_bn_silu(p: &nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> Result<ConvBn> {
    Ok(ConvBn::new(&(p / "conv"), &(p / "bn"), cin, cout, ConvOpts::new(k).stride(stride).bn(BN_EPS, Act::Silu))?
        .bn_momentum(BN_MOMENTUM))
}

/// `cin -> c` by a 1x1 convolution, then `y + conv3x3(conv3x3(y))`.
#[derive(Debug)]
pub struct Fuse {
    reduce: ConvBn,
    cv1: ConvBn,
    cv2: ConvBn,
}

impl Fuse {
    /// A fuse block under `p` (`reduce`, `cv1`, `cv2`).
    pub fn new(p: &nn::Path, cin: i64, c: i64) -> Result<Self> {
        Ok(Self {
            reduce: conv_bn_silu(&(p / "reduce"), cin, c, 1, 1)?,
            cv1: conv_bn_silu(&(p / "cv1"), c, c, 3, 1)?,
            cv2: conv_bn_silu(&(p / "cv2"), c, c, 3, 1)?,
        })
    }

    /// `[N, cin, H, W]` -> `[N, c, H, W]`.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let y = self.reduce.forward(xs, train); // [N, c, H, W]
        let r = self.cv2.forward(&self.cv1.forward(&y, train), train);
        y + r
    }
}

/// FPN + PAN producing P3, P4, P5 with `c` channels each.
#[derive(Debug)]
pub struct PanFpn {
    lateral: Vec<ConvBn>,
    td4: Fuse,
    td3: Fuse,
    down3: ConvBn,
    bu4: Fuse,
    down4: ConvBn,
    bu5: Fuse,
    /// Output channels of every level.
    pub channels: i64,
}

impl PanFpn {
    /// A neck under `p` for inputs with `in_channels` (C3, C4, C5), `c` output channels.
    pub fn new(p: &nn::Path, in_channels: &[i64], c: i64) -> Result<Self> {
        let lateral = in_channels
            .iter()
            .enumerate()
            .map(|(i, &ci)| conv_bn_silu(&(p / "lateral" / i), ci, c, 1, 1))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            lateral,
            td4: Fuse::new(&(p / "td4"), 2 * c, c)?,
            td3: Fuse::new(&(p / "td3"), 2 * c, c)?,
            down3: conv_bn_silu(&(p / "down3"), c, c, 3, 2)?,
            bu4: Fuse::new(&(p / "bu4"), 2 * c, c)?,
            down4: conv_bn_silu(&(p / "down4"), c, c, 3, 2)?,
            bu5: Fuse::new(&(p / "bu5"), 2 * c, c)?,
            channels: c,
        })
    }

    /// `[C3, C4, C5]` -> `[P3 [N, c, H/8, W/8], P4 [N, c, H/16, W/16], P5 [N, c, H/32, W/32]]`.
    pub fn forward(&self, feats: &[Tensor], train: bool) -> Vec<Tensor> {
        let l: Vec<Tensor> = self.lateral.iter().zip(feats).map(|(m, f)| m.forward(f, train)).collect(); // [N, c, *]
        let up = |x: &Tensor, like: &Tensor| {
            let s = like.size();
            x.upsample_nearest2d([s[2], s[3]], None, None) // to the finer level's size
        };
        let t5 = l[2].shallow_clone();
        let t4 = self.td4.forward(&Tensor::cat(&[up(&t5, &l[1]), l[1].shallow_clone()], 1), train); // [N, c, H/16, W/16]
        let p3 = self.td3.forward(&Tensor::cat(&[up(&t4, &l[0]), l[0].shallow_clone()], 1), train); // [N, c, H/8, W/8]
        let p4 = self.bu4.forward(&Tensor::cat(&[self.down3.forward(&p3, train), t4], 1), train); // [N, c, H/16, W/16]
        let p5 = self.bu5.forward(&Tensor::cat(&[self.down4.forward(&p4, train), t5], 1), train); // [N, c, H/32, W/32]
        vec![p3, p4, p5]
    }
}

impl Fuse {
    /// The ONNX nodes of [`Fuse::forward`] in eval mode.
    pub fn to_onnx(&self, g: &mut Graph, x: &Value) -> std::result::Result<Value, OnnxError> {
        let y = self.reduce.to_onnx(g, x)?;
        let r = self.cv1.to_onnx(g, &y)?;
        let r = self.cv2.to_onnx(g, &r)?;
        Ok(g.binary("Add", &y, &r))
    }
}

impl PanFpn {
    /// The ONNX nodes of [`PanFpn::forward`] in eval mode: `[C3, C4, C5]` -> `[P3, P4, P5]`.
    pub fn to_onnx(&self, g: &mut Graph, feats: &[Value]) -> std::result::Result<Vec<Value>, OnnxError> {
        let l =
            self.lateral.iter().zip(feats).map(|(m, f)| m.to_onnx(g, f)).collect::<std::result::Result<Vec<_>, _>>()?;
        let [l3, l4, l5] = l.as_slice() else {
            return Err(OnnxError::Unsupported(format!("the neck needs 3 maps, got {}", l.len())));
        };
        let up4 = g.resize(l5, SizeOf::Like(l4), Interp::NearestFloor);
        let cat = g.concat(&[&up4, l4], 1);
        let t4 = self.td4.to_onnx(g, &cat)?;
        let up3 = g.resize(&t4, SizeOf::Like(l3), Interp::NearestFloor);
        let cat = g.concat(&[&up3, l3], 1);
        let p3 = self.td3.to_onnx(g, &cat)?;
        let d3 = self.down3.to_onnx(g, &p3)?;
        let cat = g.concat(&[&d3, &t4], 1);
        let p4 = self.bu4.to_onnx(g, &cat)?;
        let d4 = self.down4.to_onnx(g, &p4)?;
        let cat = g.concat(&[&d4, l5], 1);
        let p5 = self.bu5.to_onnx(g, &cat)?;
        Ok(vec![p3, p4, p5])
    }
}
