//! The ONNX nodes of the building blocks in [`crate::backbones::layers`]: each layer writes the
//! eval-mode computation of its `forward` (batch norms folded into the convolution before them with
//! [`fold_bn`], the same arithmetic as [`ConvBn::fold`]; dropout and stochastic depth are the
//! identity in eval mode and write nothing).

use super::OnnxError;
use super::graph::{Graph, Value};
use super::ops::ConvSpec;
use crate::backbones::Normalization;
use crate::backbones::layers::{Act, Bn, Conv, ConvBn, Linear, fold_bn};

type Result<T> = std::result::Result<T, OnnxError>;

impl Conv {
    /// The convolution's geometry for [`Graph::conv`].
    pub fn spec(&self) -> ConvSpec {
        ConvSpec { stride: self.stride(), dilation: self.dilation(), groups: self.groups(), padding: self.padding() }
    }

    /// `[N, in, H, W]` -> `[N, out, H', W']`: one `Conv` node.
    pub fn to_onnx(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        g.conv(x, &self.weight, self.bias.as_ref(), self.spec())
    }
}

/// A convolution followed by an optional eval-mode batch norm, folded into one `Conv`.
pub fn conv_bn_to_onnx(g: &mut Graph, conv: &Conv, bn: Option<&Bn>, x: &Value) -> Result<Value> {
    match bn {
        None => conv.to_onnx(g, x),
        Some(bn) => {
            let (w, b) = fold_bn(conv, bn)?;
            // The folded tensors are new: name them after the convolution's variables.
            let prefix = g.param_name(&conv.weight).map(|n| n.trim_end_matches(".weight").to_string());
            let wv = match &prefix {
                Some(p) => format!("{p}.folded_weight"),
                None => "folded_weight".into(),
            };
            let bv = match &prefix {
                Some(p) => format!("{p}.folded_bias"),
                None => "folded_bias".into(),
            };
            g.conv_named(x, (&w, &b), conv.spec(), (&wv, &bv))
        }
    }
}

impl ConvBn {
    /// `[N, in, H, W]` -> `[N, out, H', W']`: the folded convolution and the activation.
    pub fn to_onnx(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = conv_bn_to_onnx(g, &self.conv, Some(&self.bn), x)?;
        self.act().to_onnx(g, &y)
    }
}

impl Act {
    /// The activation's nodes: `Relu`, `Clip(0, 6)`, `x * Sigmoid(x)`, or nothing.
    pub fn to_onnx(self, g: &mut Graph, x: &Value) -> Result<Value> {
        Ok(match self {
            Act::None => x.clone(),
            Act::Relu => g.unary("Relu", x),
            Act::Relu6 => g.clip(x, 0.0, 6.0)?,
            Act::Silu => g.silu(x),
        })
    }
}

impl Linear {
    /// `[N, in]` -> `[N, out]`: one `Gemm`.
    pub fn to_onnx(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        g.linear(x, &self.weight, &self.bias)
    }
}

/// `[N, 3, H, W]` pixels in `[0, 1]` -> `(x - mean) / std`, as a `Sub` and a `Div` on `[1, 3, 1, 1]`
/// constants (not folded into the first convolution: its zero padding would then pad with the
/// mean colour instead of zero, which differs from the trained network at the borders).
pub fn normalize(g: &mut Graph, x: &Value, n: Normalization) -> Result<Value> {
    let mean: Vec<f32> = n.mean.iter().map(|&v| v as f32).collect();
    let std: Vec<f32> = n.std.iter().map(|&v| v as f32).collect();
    let m = g.const_float(&mean, &[1, 3, 1, 1])?;
    let s = g.const_float(&std, &[1, 3, 1, 1])?;
    let centred = g.binary("Sub", x, &m);
    Ok(g.binary("Div", &centred, &s))
}

/// PyTorch's `adaptive_avg_pool2d` to `(oh, ow)` of a value whose spatial size is known: identity,
/// an `AveragePool` when the sizes divide, otherwise two `MatMul`s with the constant averaging
/// matrices (bin `i` of `n` over `m` inputs averages `floor(i m / n) .. ceil((i + 1) m / n)`).
pub fn adaptive_avg_pool(g: &mut Graph, x: &Value, oh: i64, ow: i64) -> Result<Value> {
    let (Some(h), Some(w)) = (x.dim(2), x.dim(3)) else {
        return Err(OnnxError::Unsupported("adaptive average pooling needs a fixed input size (--img-size)".into()));
    };
    if (h, w) == (oh, ow) {
        return Ok(x.clone());
    }
    if h % oh == 0 && w % ow == 0 && h / oh == w / ow {
        let k = h / oh;
        return Ok(g.pool(x, true, (k, k, 0)));
    }
    let bins = |m: i64, n: i64| -> Vec<f32> {
        let mut a = vec![0f32; (n * m) as usize];
        for i in 0..n {
            let (lo, hi) = ((i * m) / n, ((i + 1) * m + n - 1) / n);
            for j in lo..hi {
                a[(i * m + j) as usize] = 1.0 / (hi - lo) as f32;
            }
        }
        a
    };
    let ph = g.const_float(&bins(h, oh), &[oh, h])?; // [oh, h]
    let pw_t = {
        let a = bins(w, ow); // [ow, w] -> transposed [w, ow]
        let t: Vec<f32> =
            (0..w).flat_map(|j| (0..ow).map(move |i| (i, j))).map(|(i, j)| a[(i * w + j) as usize]).collect();
        g.const_float(&t, &[w, ow])?
    };
    let d = x.dims().to_vec();
    let rows = g.op("MatMul", &[&ph, x], &[], vec![d[0], d[1], Some(oh), Some(w)]);
    Ok(g.op("MatMul", &[&rows, &pw_t], &[], vec![d[0], d[1], Some(oh), Some(ow)]))
}
