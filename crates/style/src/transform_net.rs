//! Johnson et al. (2016), "Perceptual Losses for Real-Time Style Transfer and Super-Resolution": a
//! feed-forward image transformation network. Reflection-padded convolutions, instance norm (Ulyanov
//! et al.) instead of batch norm, two stride-2 downsamplings, residual blocks, and nearest-neighbour
//! upsampling followed by a convolution (no transposed convolutions: fewer checkerboard artefacts).
//!
//! Names: `conv1`, `in1`, `conv2`, `in2`, `conv3`, `in3`, `res.{i}.{conv1,in1,conv2,in2}`,
//! `up1`, `in4`, `up2`, `in5`, `conv_out` (each conv has `weight` and `bias`, each norm `weight`, `bias`).

use tch::{Tensor, nn};
use tlcv_core::backbones::layers::Padding;
use tlcv_core::onnx::ops::{ConvSpec, Interp, SizeOf};
use tlcv_core::onnx::{Graph, OnnxError, Value};

use crate::{Result, StyleError};

#[derive(Debug)]
struct ConvLayer {
    conv: nn::Conv2D,
    pad: i64,
    stride: i64,
}

impl ConvLayer {
    fn new(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> Self {
        let cfg = nn::ConvConfig { stride, padding: 0, ..Default::default() };
        ConvLayer { conv: nn::conv2d(p, cin, cout, k, cfg), pad: k / 2, stride }
    }

    /// `[N, cin, H, W]` -> `[N, cout, H/stride, W/stride]` (reflection padding keeps borders clean).
    fn forward(&self, x: &Tensor) -> Tensor {
        let p = self.pad;
        x.reflection_pad2d([p, p, p, p]).apply(&self.conv)
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
}

impl TransformNet {
    /// `width` channels after the first conv (Johnson et al.: 32), `blocks` residual blocks (5).
    pub fn new(p: &nn::Path, width: i64, blocks: usize) -> Result<Self> {
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
            conv_out: ConvLayer::new(p / "conv_out", w, 3, 9, 1),
        })
    }

    /// `[N, 3, H, W]` in `[0, 1]` -> `[N, 3, H, W]` in `[0, 1]` (any H, W >= 8).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (h, w) = (x.size()[2], x.size()[3]);
        let y = self.in1.forward(&self.conv1.forward(&(x - 0.5))).relu(); // [N, w, H, W]
        let y = self.in2.forward(&self.conv2.forward(&y)).relu(); // [N, 2w, H/2, W/2]
        let mut y = self.in3.forward(&self.conv3.forward(&y)).relu(); // [N, 4w, H/4, W/4]
        for r in &self.res {
            y = r.forward(&y);
        }
        let y = y.upsample_nearest2d([(h + 1) / 2, (w + 1) / 2], None, None); // [N, 4w, H/2, W/2]
        let y = self.in4.forward(&self.up1.forward(&y)).relu(); // [N, 2w, H/2, W/2]
        let y = y.upsample_nearest2d([h, w], None, None); // [N, 2w, H, W]
        let y = self.in5.forward(&self.up2.forward(&y)).relu(); // [N, w, H, W]
        self.conv_out.forward(&y).sigmoid() // [N, 3, H, W]
    }
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
        Ok(g.unary("Sigmoid", &y))
    }
}
