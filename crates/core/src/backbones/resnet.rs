//! ResNet-18/34/50 (He et al. 2015, "Deep Residual Learning for Image Recognition"), mirroring
//! torchvision's `models/resnet.py` (v1.5: the stride of a bottleneck sits on its 3x3 conv).
//!
//! Names: `conv1`, `bn1`, `layer{1..4}.{i}.{conv1,bn1,conv2,bn2[,conv3,bn3][,downsample.0,downsample.1]}`,
//! `fc`. Stages: 0 = `conv1`/`bn1`, 1..4 = `layer1`..`layer4` (torchvision's `trainable_backbone_layers`).
//! Features: C3 = `layer2` (stride 8), C4 = `layer3` (16), C5 = `layer4` (32); the low-level map of
//! [`Backbone::forward_features_with_low`] is `layer1` (stride 4).
//!
//! Dilation ([`resnet_backbone_dilated`]): like torchvision's `replace_stride_with_dilation`, a layer
//! marked `true` keeps the resolution (stride 1 in its first block and its downsample) and dilates its
//! 3x3 convolutions instead; the first block of the layer still uses the previous dilation. `[false,
//! false, true]` gives output stride 16 (DeepLab OS16), `[false, true, true]` output stride 8.

use tch::{Tensor, nn};

use super::layers::{Act, ConvBn, ConvOpts, Linear, LinearInit, add_residual, global_avg_pool, prefix};
use super::{BACKBONE_GROUP, Backbone, ClassifierNet, FeatureInfo, HEAD_GROUP, Stages};
use crate::Result;
use crate::onnx::{Graph, OnnxError, Value};

const BN_EPS: f64 = 1e-5;

/// A basic block (two 3x3 convs) or a bottleneck (1x1, 3x3, 1x1 with 4x expansion).
#[derive(Debug)]
struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    /// A basic (or `bottleneck`) block from `cin` channels at `width`, its 3x3 convolution with
    /// `(stride, dilation)`.
    fn new(p: &nn::Path, cin: i64, width: i64, (stride, dilation): (i64, i64), bottleneck: bool) -> Result<Self> {
        let cb = |i: usize, ci: i64, co: i64, k: i64, s: i64, act: Act| {
            // Only 3x3 convolutions are dilated (1x1 ones are unaffected).
            let o = if k == 3 { ConvOpts::new(k).stride(s).dilation(dilation) } else { ConvOpts::new(k).stride(s) };
            ConvBn::new(&(p / format!("conv{i}")), &(p / format!("bn{i}")), ci, co, o.bn(BN_EPS, act))
        };
        let (convs, cout) = if bottleneck {
            let out = width * 4;
            let c = vec![
                cb(1, cin, width, 1, 1, Act::Relu)?,
                cb(2, width, width, 3, stride, Act::Relu)?,
                cb(3, width, out, 1, 1, Act::None)?,
            ];
            (c, out)
        } else {
            (vec![cb(1, cin, width, 3, stride, Act::Relu)?, cb(2, width, width, 3, 1, Act::None)?], width)
        };
        let downsample = if stride != 1 || cin != cout {
            let d = p / "downsample";
            let o = ConvOpts::new(1).stride(stride);
            Some(ConvBn::new(&(&d / 0), &(&d / 1), cin, cout, o.bn(BN_EPS, Act::None))?)
        } else {
            None
        };
        Ok(Block { convs, downsample })
    }

    /// `[N, cin, H, W]` -> `[N, cout, H/stride, W/stride]`.
    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut y = xs.shallow_clone();
        for c in &self.convs {
            y = c.forward(&y, train);
        }
        let shortcut = match &self.downsample {
            Some(d) => d.forward(xs, train),
            None => xs.shallow_clone(),
        };
        Act::Relu.apply(add_residual(y, &shortcut))
    }
}

/// The convolutional trunk of a ResNet (everything but `fc`); the headless [`Backbone`].
#[derive(Debug)]
pub struct ResNetBody {
    stem: ConvBn,
    layers: [Vec<Block>; 4],
    channels: [i64; 4],
    strides: [i64; 4],
    stages: Stages,
    frozen: usize,
}

impl ResNetBody {
    fn new(p: &nn::Path, depths: [usize; 4], bottleneck: bool, dilate: [bool; 3]) -> Result<Self> {
        let p = p.set_group(BACKBONE_GROUP);
        let stem =
            ConvBn::new(&(&p / "conv1"), &(&p / "bn1"), 3, 64, ConvOpts::new(7).stride(2).bn(BN_EPS, Act::Relu))?;
        let expansion = if bottleneck { 4 } else { 1 };
        let mut cin = 64;
        let mut layers: [Vec<Block>; 4] = Default::default();
        let mut channels = [0; 4];
        let mut strides = [4; 4];
        let (mut stride_now, mut dilation) = (4, 1);
        let mut stages = vec![vec![prefix(&p, "conv1"), prefix(&p, "bn1")]];
        for (li, depth) in depths.iter().enumerate() {
            let name = format!("layer{}", li + 1);
            let lp = &p / name.as_str();
            let width = 64 << li;
            let previous_dilation = dilation;
            let mut layer_stride = if li > 0 { 2 } else { 1 };
            if li > 0 && dilate[li - 1] {
                dilation *= layer_stride;
                layer_stride = 1;
            }
            stride_now *= layer_stride;
            for bi in 0..*depth {
                let (stride, d) = if bi == 0 { (layer_stride, previous_dilation) } else { (1, dilation) };
                layers[li].push(Block::new(&(&lp / bi), cin, width, (stride, d), bottleneck)?);
                cin = width * expansion;
            }
            channels[li] = cin;
            strides[li] = stride_now;
            stages.push(vec![prefix(&p, &name)]);
        }
        Ok(ResNetBody { stem, layers, channels, strides, stages: Stages { prefixes: stages }, frozen: 0 })
    }

    /// `[N, 3, H, W]` -> the outputs of `layer1..layer4` (strides 4, 8, 16, 32 without dilation).
    pub fn run(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        let mut x = self.stem.forward(xs, train && self.frozen == 0); // [N, 64, H/2, W/2]
        x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false); // [N, 64, H/4, W/4]
        let mut outs = Vec::with_capacity(4);
        for (li, layer) in self.layers.iter().enumerate() {
            let t = train && li + 1 >= self.frozen;
            for b in layer {
                x = b.forward(&x, t);
            }
            outs.push(x.shallow_clone()); // [N, C_li, H/strides[li], W/strides[li]]
        }
        outs
    }
}

impl ResNetBody {
    fn conv_bns(&mut self) -> Vec<&mut ConvBn> {
        let mut out = vec![&mut self.stem];
        for block in self.layers.iter_mut().flatten() {
            out.extend(block.convs.iter_mut());
            out.extend(block.downsample.as_mut());
        }
        out
    }
}

impl Block {
    /// The ONNX nodes of [`Block::forward`] in eval mode.
    fn to_onnx(&self, g: &mut Graph, x: &Value) -> Result<Value, OnnxError> {
        let mut y = x.clone();
        for c in &self.convs {
            y = c.to_onnx(g, &y)?;
        }
        let shortcut = match &self.downsample {
            Some(d) => d.to_onnx(g, x)?,
            None => x.clone(),
        };
        let sum = g.binary("Add", &y, &shortcut);
        Ok(g.unary("Relu", &sum))
    }
}

impl ResNetBody {
    /// The ONNX nodes of [`ResNetBody::run`] in eval mode: the outputs of `layer1..layer4`.
    fn run_onnx(&self, g: &mut Graph, x: &Value) -> Result<Vec<Value>, OnnxError> {
        let mut x = self.stem.to_onnx(g, x)?;
        x = g.pool(&x, false, (3, 2, 1));
        let mut outs = Vec::with_capacity(4);
        for layer in &self.layers {
            for b in layer {
                x = b.to_onnx(g, &x)?;
            }
            outs.push(x.clone());
        }
        Ok(outs)
    }
}

impl Backbone for ResNetBody {
    fn features_with_low_onnx(&self, g: &mut Graph, x: &Value) -> Result<Vec<Value>, OnnxError> {
        self.run_onnx(g, x)
    }
    fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        self.conv_bns()
    }
    fn forward_features(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        self.run(xs, train).split_off(1)
    }
    fn feature_info(&self) -> Vec<FeatureInfo> {
        (1..4).map(|i| FeatureInfo { stride: self.strides[i], channels: self.channels[i] }).collect()
    }
    fn forward_features_with_low(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        self.run(xs, train)
    }
    fn low_level_info(&self) -> FeatureInfo {
        FeatureInfo { stride: 4, channels: self.channels[0] }
    }
    fn stages(&self) -> &Stages {
        &self.stages
    }
    fn set_frozen_stages(&mut self, n: usize) {
        self.frozen = n;
    }
}

/// A ResNet classifier: [`ResNetBody`], global average pooling and `fc`.
#[derive(Debug)]
pub struct ResNet {
    body: ResNetBody,
    fc: Linear,
    head_prefix: String,
}

impl ResNet {
    fn new(p: &nn::Path, depths: [usize; 4], bottleneck: bool, num_classes: i64) -> Result<Self> {
        let body = ResNetBody::new(p, depths, bottleneck, [false; 3])?;
        let hp = p.set_group(HEAD_GROUP);
        let fc = Linear::new(&(&hp / "fc"), body.channels[3], num_classes, LinearInit::Default)?;
        Ok(ResNet { body, fc, head_prefix: prefix(p, "fc") })
    }
}

impl ClassifierNet for ResNet {
    fn penultimate_onnx(&self, g: &mut Graph, x: &Value) -> Result<Value, OnnxError> {
        let c5 = self.body.run_onnx(g, x)?.pop().unwrap_or_else(|| x.clone());
        let pooled = g.global_avg_pool(&c5);
        Ok(g.flatten(&pooled, 1)) // [N, 512 or 2048]
    }
    fn head_onnx(&self, g: &mut Graph, feats: &Value) -> Result<Value, OnnxError> {
        self.fc.to_onnx(g, feats)
    }
    fn penultimate(&self, xs: &Tensor, train: bool) -> Tensor {
        let c5 = self.body.run(xs, train).pop().unwrap_or_else(|| xs.shallow_clone());
        global_avg_pool(&c5) // [N, 512 or 2048]
    }
    fn head(&self, feats: &Tensor) -> Tensor {
        self.fc.forward(feats)
    }
    fn penultimate_dim(&self) -> i64 {
        self.body.channels[3]
    }
    fn head_prefix(&self) -> &str {
        &self.head_prefix
    }
    fn stages(&self) -> &Stages {
        &self.body.stages
    }
    fn set_frozen_stages(&mut self, n: usize) {
        self.body.frozen = n;
    }
    fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        self.body.conv_bns()
    }
}

/// ResNet-18 classifier.
pub fn resnet18(p: nn::Path, num_classes: i64) -> Result<ResNet> {
    ResNet::new(&p, [2, 2, 2, 2], false, num_classes)
}
/// ResNet-34 classifier.
pub fn resnet34(p: nn::Path, num_classes: i64) -> Result<ResNet> {
    ResNet::new(&p, [3, 4, 6, 3], false, num_classes)
}
/// ResNet-50 classifier.
pub fn resnet50(p: nn::Path, num_classes: i64) -> Result<ResNet> {
    ResNet::new(&p, [3, 4, 6, 3], true, num_classes)
}
/// Headless ResNet-18 (C3/C4/C5 = 128/256/512 channels).
pub fn resnet18_backbone(p: nn::Path) -> Result<ResNetBody> {
    ResNetBody::new(&p, [2, 2, 2, 2], false, [false; 3])
}
/// Headless ResNet-34 (C3/C4/C5 = 128/256/512 channels).
pub fn resnet34_backbone(p: nn::Path) -> Result<ResNetBody> {
    ResNetBody::new(&p, [3, 4, 6, 3], false, [false; 3])
}
/// Headless ResNet-50 (C3/C4/C5 = 512/1024/2048 channels).
pub fn resnet50_backbone(p: nn::Path) -> Result<ResNetBody> {
    ResNetBody::new(&p, [3, 4, 6, 3], true, [false; 3])
}
/// Headless ResNet-18/34/50 (`depth`) whose `layer2..layer4` trade stride for dilation where
/// `replace_stride_with_dilation` is true (torchvision's option of the same name; see the module docs).
pub fn resnet_backbone_dilated(
    p: nn::Path,
    depth: usize,
    replace_stride_with_dilation: [bool; 3],
) -> Result<ResNetBody> {
    let (depths, bottleneck) = match depth {
        18 => ([2, 2, 2, 2], false),
        34 => ([3, 4, 6, 3], false),
        50 => ([3, 4, 6, 3], true),
        d => {
            return Err(crate::Error::Invalid(format!("no ResNet-{d}; expected 18, 34 or 50")));
        }
    };
    ResNetBody::new(&p, depths, bottleneck, replace_stride_with_dilation)
}
