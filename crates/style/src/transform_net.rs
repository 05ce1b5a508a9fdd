//! Johnson et al. (2016), "Perceptual Losses for Real-Time Style Transfer and Super-Resolution": a
//! feed-forward image transformation network. Reflection-padded convolutions, instance norm (Ulyanov
//! et al.) instead of batch norm, two stride-2 downsamplings, residual blocks, and nearest-neighbour
//! upsampling followed by a convolution (no transposed convolutions: fewer checkerboard artefacts).
//! The image comes out through a sigmoid: of the last convolution alone, or added to the input's logit
//! ([`FastOutput::Residual`], the default: the network starts as the identity and learns the change).
//!
//! Names: `conv1`, `in1`, `conv2`, `in2`, `conv3`, `in3`, `res.{i}.{conv1,in1,conv2,in2}`,
//! `up1`, `in4`, `up2`, `in5`, `conv_out` (each conv has `weight` and `bias`, each norm `weight`, `bias`).

use tch::{Kind, Tensor, nn};
use tlcv_core::backbones::layers::{Padding, autocast};
use tlcv_core::onnx::ops::{ConvSpec, Interp, SizeOf};
use tlcv_core::onnx::{Graph, OnnxError, Value};

use crate::config::FastOutput;
use crate::{Result, StyleError};

/// Inputs are clamped to `[CLAMP, 1 - CLAMP]` before their logit, so black and white stay finite.
const CLAMP: f64 = 1e-3;

#[derive(Debug)]
struct ConvLayer {
    conv: nn::Conv2D,
    pad: i64,
    stride: i64,
}

impl ConvLayer {
    fn new(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> Self {
        Self::with(p, (cin, cout, k), nn::ConvConfig { stride, padding: 0, ..Default::default() })
    }

    /// A stride-1 layer whose weights and bias start at zero (its output is zero until trained).
    fn zeros(p: nn::Path, cin: i64, cout: i64, k: i64) -> Self {
        let cfg = nn::ConvConfig { padding: 0, ws_init: nn::Init::Const(0.0), ..Default::default() };
        Self::with(p, (cin, cout, k), cfg)
    }

    fn with(p: nn::Path, (cin, cout, k): (i64, i64, i64), cfg: nn::ConvConfig) -> Self {
        ConvLayer { conv: nn::conv2d(p, cin, cout, k, cfg), pad: k / 2, stride: cfg.stride }
    }

    /// `[N, cin, H, W]` -> `[N, cout, H/stride, W/stride]` (reflection padding keeps borders clean).
    /// A bfloat16 input runs the convolution in bfloat16 with the float32 weights cast per call
    /// (mixed precision, as `torch.autocast`).
    fn forward(&self, x: &Tensor) -> Tensor {
        let p = self.pad;
        let x = x.reflection_pad2d([p, p, p, p]);
        let (w_cast, b_cast) = (autocast(&self.conv.ws, &x), self.conv.bs.as_ref().and_then(|b| autocast(b, &x)));
        let w = w_cast.as_ref().unwrap_or(&self.conv.ws);
        let b = b_cast.as_ref().or(self.conv.bs.as_ref());
        x.conv2d(w, b, [self.stride, self.stride], [0, 0], [1, 1], 1)
    }
}

#[derive(Debug)]
struct InstanceNorm {
    weight: Tensor,
    bias: Tensor,
}

impl InstanceNorm {
    fn new(p: nn::Path, c: i64) -> Self {
        InstanceNorm { weight: p.ones("weight", &[c]), bias: p.zeros("bias", &[c]) }
    }

    /// `[N, C, H, W]` -> same shape, each (image, channel) plane normalised, then scaled and shifted.
    fn forward(&self, x: &Tensor) -> Tensor {
        x.instance_norm(Some(&self.weight), Some(&self.bias), None::<&Tensor>, None::<&Tensor>, true, 0.1, 1e-5, false)
    }
}

#[derive(Debug)]
struct Residual {
    conv1: ConvLayer,
    in1: InstanceNorm,
    conv2: ConvLayer,
    in2: InstanceNorm,
}

impl Residual {
    fn new(p: &nn::Path, c: i64) -> Self {
        Residual {
            conv1: ConvLayer::new(p / "conv1", c, c, 3, 1),
            in1: InstanceNorm::new(p / "in1", c),
            conv2: ConvLayer::new(p / "conv2", c, c, 3, 1),
            in2: InstanceNorm::new(p / "in2", c),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let y = self.in1.forward(&self.conv1.forward(x)).relu();
        self.in2.forward(&self.conv2.forward(&y)) + x
    }
}

/// The transformation network; its output is an image in `[0, 1]`.
#[derive(Debug)]
pub struct TransformNet {
    conv1: ConvLayer,
    in1: InstanceNorm,
    conv2: ConvLayer,
    in2: InstanceNorm,
    conv3: ConvLayer,
    in3: InstanceNorm,
    res: Vec<Residual>,
    up1: ConvLayer,
    in4: InstanceNorm,
    up2: ConvLayer,
    in5: InstanceNorm,
    conv_out: ConvLayer,
    output: FastOutput,
}

impl TransformNet {
    /// `width` channels after the first conv (Johnson et al.: 32), `blocks` residual blocks (5), and
    /// how the last convolution becomes an image.
    pub fn new(p: &nn::Path, width: i64, blocks: usize, output: FastOutput) -> Result<Self> {
        if width < 1 || blocks > 64 {
            return Err(StyleError::Invalid(format!("transform net width {width} / {blocks} blocks out of range")));
        }
        let w = width;
        Ok(TransformNet {
            conv1: ConvLayer::new(p / "conv1", 3, w, 9, 1),
            in1: InstanceNorm::new(p / "in1", w),
            conv2: ConvLayer::new(p / "conv2", w, 2 * w, 3, 2),
            in2: InstanceNorm::new(p / "in2", 2 * w),
            conv3: ConvLayer::new(p / "conv3", 2 * w, 4 * w, 3, 2),
            in3: InstanceNorm::new(p / "in3", 4 * w),
            res: (0..blocks).map(|i| Residual::new(&(p / "res" / i), 4 * w)).collect(),
            up1: ConvLayer::new(p / "up1", 4 * w, 2 * w, 3, 1),
            in4: InstanceNorm::new(p / "in4", 2 * w),
            up2: ConvLayer::new(p / "up2", 2 * w, w, 3, 1),
            in5: InstanceNorm::new(p / "in5", w),
            conv_out: match output {
                FastOutput::Sigmoid => ConvLayer::new(p / "conv_out", w, 3, 9, 1),
                FastOutput::Residual => ConvLayer::zeros(p / "conv_out", w, 3, 9),
            },
            output,
        })
    }

    /// How the last convolution becomes an image.
    pub fn output(&self) -> FastOutput {
        self.output
    }

    /// `[N, 3, H, W]` in `[0, 1]` -> `[N, 3, H, W]` in `[0, 1]` (any H, W >= 8), float32.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_in(x, Kind::Float)
    }

    /// [`TransformNet::forward`] with the layers computing in `kind` (`BFloat16`: mixed precision, the
    /// weights stay float32); the input and the output are float32.
    pub fn forward_in(&self, x: &Tensor, kind: Kind) -> Tensor {
        let (h, w) = (x.size()[2], x.size()[3]);
        let y = self.in1.forward(&self.conv1.forward(&(x - 0.5).to_kind(kind))).relu(); // [N, w, H, W]
        let y = self.in2.forward(&self.conv2.forward(&y)).relu(); // [N, 2w, H/2, W/2]
        let mut y = self.in3.forward(&self.conv3.forward(&y)).relu(); // [N, 4w, H/4, W/4]
        for r in &self.res {
            y = r.forward(&y);
        }
        let y = y.upsample_nearest2d([(h + 1) / 2, (w + 1) / 2], None, None); // [N, 4w, H/2, W/2]
        let y = self.in4.forward(&self.up1.forward(&y)).relu(); // [N, 2w, H/2, W/2]
        let y = y.upsample_nearest2d([h, w], None, None); // [N, 2w, H, W]
        let y = self.in5.forward(&self.up2.forward(&y)).relu(); // [N, w, H, W]
        let out = self.conv_out.forward(&y).to_kind(Kind::Float); // [N, 3, H, W]
        match self.output {
            FastOutput::Sigmoid => out.sigmoid(),
            FastOutput::Residual => (logit(x) + out).sigmoid(),
        }
    }
}

/// `log(x / (1 - x))` of `x` clamped to `[CLAMP, 1 - CLAMP]`, elementwise.
fn logit(x: &Tensor) -> Tensor {
    let x = x.clamp(CLAMP, 1.0 - CLAMP);
    let odds: Tensor = &x / (1.0 - &x);
    odds.log()
}

impl ConvLayer {
    /// Reflection `Pad` and `Conv`.
    fn to_onnx(&self, g: &mut Graph, x: &Value) -> std::result::Result<Value, OnnxError> {
        let p = self.pad;
        let padded = g.pad(x, [p; 4], "reflect");
        let spec = ConvSpec { stride: self.stride, dilation: 1, groups: 1, padding: Padding::Symmetric(0) };
        g.conv(&padded, &self.conv.ws, self.conv.bs.as_ref(), spec)
    }
}

impl InstanceNorm {
    /// `InstanceNormalization` (epsilon 1e-5, as the forward).
    fn to_onnx(&self, g: &mut Graph, x: &Value) -> std::result::Result<Value, OnnxError> {
        let (s, b) = (g.param(&self.weight, "weight")?, g.param(&self.bias, "bias")?);
        Ok(g.op(
            "InstanceNormalization",
            &[x, &s, &b],
            &[tlcv_core::onnx::graph::Attr::Float("epsilon", 1e-5)],
            x.dims().to_vec(),
        ))
    }
}

impl TransformNet {
    /// The ONNX nodes of [`TransformNet::forward`] for any input size: `[N, 3, H, W]` in `[0, 1]` ->
    /// `[N, 3, H, W]` in `[0, 1]`. The two upsampling targets, `ceil(H / 2)` and `H`, are computed
    /// from the input's shape in the graph.
    pub fn to_onnx(&self, g: &mut Graph, x: &Value) -> std::result::Result<Value, OnnxError> {
        let block =
            |g: &mut Graph, c: &ConvLayer, n: &InstanceNorm, x: &Value| -> std::result::Result<Value, OnnxError> {
                let y = c.to_onnx(g, x)?;
                let y = n.to_onnx(g, &y)?;
                Ok(g.unary("Relu", &y))
            };
        let centred = g.scalar("Sub", x, 0.5)?;
        let y = block(g, &self.conv1, &self.in1, &centred)?;
        let y = block(g, &self.conv2, &self.in2, &y)?;
        let mut y = block(g, &self.conv3, &self.in3, &y)?;
        for r in &self.res {
            let a = block(g, &r.conv1, &r.in1, &y)?;
            let b = r.conv2.to_onnx(g, &a)?;
            let b = r.in2.to_onnx(g, &b)?;
            y = g.binary("Add", &b, &y);
        }
        // (H, W) and ceil((H, W) / 2), as int64 [2].
        let shape = g.shape_of(x);
        let hw = g.slice(&shape, 0, 2, 4);
        let one = g.ints(&[1]);
        let two = g.ints(&[2]);
        let plus = g.binary("Add", &hw, &one);
        let half = g.binary("Div", &plus, &two);
        let known = x.dim(2).zip(x.dim(3));
        let y =
            g.resize(&y, SizeOf::Computed(&half, known.map(|(h, w)| ((h + 1) / 2, (w + 1) / 2))), Interp::NearestFloor);
        let y = block(g, &self.up1, &self.in4, &y)?;
        let y = g.resize(&y, SizeOf::Computed(&hw, known), Interp::NearestFloor);
        let y = block(g, &self.up2, &self.in5, &y)?;
        let y = self.conv_out.to_onnx(g, &y)?;
        let y = match self.output {
            FastOutput::Sigmoid => y,
            FastOutput::Residual => {
                let x = g.clip(x, CLAMP as f32, 1.0 - CLAMP as f32)?;
                let rest = g.scalar("Sub", &x, 1.0)?; // x - 1
                let ratio = g.binary("Div", &x, &rest); // -x / (1 - x)
                let odds = g.scalar("Mul", &ratio, -1.0)?;
                let logit = g.unary("Log", &odds);
                g.binary("Add", &logit, &y)
            }
        };
        Ok(g.unary("Sigmoid", &y))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tch::Device;

    #[test]
    fn residual_output_starts_as_the_identity_and_sigmoid_does_not() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let x = Tensor::rand([2, 3, 20, 30], (Kind::Float, Device::Cpu)).clamp(CLAMP, 1.0 - CLAMP);
        let residual = TransformNet::new(&(vs.root() / "r"), 8, 2, FastOutput::Residual).unwrap();
        let d = (residual.forward(&x) - &x).abs().max().double_value(&[]);
        assert!(d < 1e-5, "residual output differs from its input by {d} before training");
        let sigmoid = TransformNet::new(&(vs.root() / "s"), 8, 2, FastOutput::Sigmoid).unwrap();
        let d = (sigmoid.forward(&x) - &x).abs().mean(Kind::Float).double_value(&[]);
        assert!(d > 0.05, "the sigmoid form should start far from the input, mean difference {d}");
    }

    #[test]
    fn mixed_bf16_forward_is_close_to_float32_and_returns_float32() {
        tch::manual_seed(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = TransformNet::new(&vs.root(), 8, 2, FastOutput::Sigmoid).unwrap();
        let x = Tensor::rand([2, 3, 24, 20], (Kind::Float, Device::Cpu));
        let mixed = net.forward_in(&x, Kind::BFloat16);
        assert_eq!(mixed.kind(), Kind::Float);
        let d = (mixed - net.forward(&x)).abs().max().double_value(&[]);
        assert!(d < 0.02, "bf16 and float32 outputs differ by {d}");
    }
}
