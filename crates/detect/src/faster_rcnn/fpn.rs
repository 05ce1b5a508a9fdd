//! Feature Pyramid Network (Lin et al. 2017) with torchvision's names: 1x1 lateral convs
//! `inner_blocks.{i}.0`, 3x3 output convs `layer_blocks.{i}.0` (both with bias, no norm), nearest
//! top-down upsampling, and `LastLevelMaxPool` (a stride-2 subsampling of the coarsest output).

use tch::{Tensor, nn};
use tlcv_core::backbones::layers::{Conv, ConvOpts};
use tlcv_core::onnx::ops::{Interp, SizeOf};
use tlcv_core::onnx::{Graph, OnnxError, Value};

use crate::error::DetectError;

/// Re-initialises a conv like `kaiming_uniform_(a=1)` (bound `sqrt(3 / fan_in)`) with a zero bias.
pub(crate) fn kaiming_uniform_a1(conv: &mut Conv) {
    let s = conv.weight.size();
    let fan_in: i64 = s.iter().skip(1).product();
    let b = (3.0 / fan_in.max(1) as f64).sqrt();
    tch::no_grad(|| {
        let _ = conv.weight.uniform_(-b, b);
        if let Some(bias) = &mut conv.bias {
            let _ = bias.zero_();
        }
    });
}

/// Re-initialises a conv with `normal_(std)` weights and a zero bias.
pub(crate) fn normal_init(conv: &mut Conv, std: f64) {
    tch::no_grad(|| {
        let _ = conv.weight.normal_(0.0, std);
        if let Some(bias) = &mut conv.bias {
            let _ = bias.zero_();
        }
    });
}

/// A conv with bias and PyTorch padding `k / 2`.
pub(crate) fn conv_bias(p: &nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> Result<Conv, DetectError> {
    Conv::new(p, cin, cout, ConvOpts::new(k).stride(stride).bias(true))
        .map_err(|e| DetectError::Invalid(format!("building {}: {e}", p.components().collect::<Vec<_>>().join("."))))
}

/// The FPN over `C2..C5` producing `P2..P5` and the pooled `P6` ("pool"), all `out_channels` wide.
#[derive(Debug)]
pub struct Fpn {
    inner: Vec<Conv>,
    layer: Vec<Conv>,
}

impl Fpn {
    /// Creates `p.inner_blocks.{i}.0` and `p.layer_blocks.{i}.0` for each input width.
    pub fn new(p: &nn::Path, in_channels: &[i64], out_channels: i64) -> Result<Self, DetectError> {
        let mut inner = Vec::new();
        let mut layer = Vec::new();
        for (i, &c) in in_channels.iter().enumerate() {
            let mut a = conv_bias(&(p / "inner_blocks" / i as i64 / 0), c, out_channels, 1, 1)?;
            let mut b = conv_bias(&(p / "layer_blocks" / i as i64 / 0), out_channels, out_channels, 3, 1)?;
            kaiming_uniform_a1(&mut a);
            kaiming_uniform_a1(&mut b);
            inner.push(a);
            layer.push(b);
        }
        Ok(Self { inner, layer })
    }

    /// `[C2..C5]` (finest first, `[N, C_i, H_i, W_i]`) -> `[P2, P3, P4, P5, P6]`, each `[N, out, H_i, W_i]`
    /// (P6 is P5 subsampled by 2).
    pub fn forward(&self, xs: &[Tensor]) -> Result<Vec<Tensor>, DetectError> {
        if xs.len() != self.inner.len() || xs.is_empty() {
            return Err(DetectError::Invalid(format!("fpn: {} inputs for {} levels", xs.len(), self.inner.len())));
        }
        let last = xs.len() - 1;
        let mut top = self.inner[last].forward(&xs[last]);
        let mut outs = vec![self.layer[last].forward(&top)];
        for i in (0..last).rev() {
            let lateral = self.inner[i].forward(&xs[i]);
            let s = lateral.size();
            let up = top.upsample_nearest2d([s[2], s[3]], None, None); // [N, out, H_i, W_i]
            top = lateral + up;
            outs.insert(0, self.layer[i].forward(&top));
        }
        let pool = outs[last].max_pool2d([1, 1], [2, 2], [0, 0], [1, 1], false); // [N, out, ceil(H/2), ceil(W/2)]
        outs.push(pool);
        Ok(outs)
    }

    /// [`Fpn::forward`] as ONNX nodes: the same maps, `[C2..C5]` -> `[P2, P3, P4, P5, P6]`.
    pub fn to_onnx(&self, g: &mut Graph, xs: &[Value]) -> Result<Vec<Value>, OnnxError> {
        if xs.len() != self.inner.len() || xs.is_empty() {
            return Err(OnnxError::Unsupported(format!("fpn: {} inputs for {} levels", xs.len(), self.inner.len())));
        }
        let last = xs.len() - 1;
        let mut top = self.inner[last].to_onnx(g, &xs[last])?;
        let mut outs = vec![self.layer[last].to_onnx(g, &top)?];
        for i in (0..last).rev() {
            let lateral = self.inner[i].to_onnx(g, &xs[i])?;
            let up = g.resize(&top, SizeOf::Like(&lateral), Interp::NearestFloor);
            top = g.binary("Add", &lateral, &up);
            outs.insert(0, self.layer[i].to_onnx(g, &top)?);
        }
        let pool = g.pool(&outs[last], false, (1, 2, 0)); // [N, out, ceil(H/2), ceil(W/2)]
        outs.push(pool);
        Ok(outs)
    }
}
