//! EfficientNet-B0 (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
//! Networks"), mirroring torchvision's `models/efficientnet.py`.
//!
//! Names: `features.0.{0,1}` (stem conv, bn), `features.{1..7}.{j}.block.{k}` MBConv blocks where `k`
//! runs over [expand conv-bn `{0,1}`,] depthwise conv-bn `{0,1}`, squeeze-excitation `{fc1,fc2}`,
//! projection conv-bn `{0,1}`; `features.8.{0,1}` (1x1 conv to 1280), `classifier.1` (after a dropout
//! `classifier.0`). SiLU activations, batch-norm eps 1e-5 (torchvision's B0 keeps the `BatchNorm2d` default; checked
//! against torchvision 0.28), symmetric padding; stochastic depth
//! (p = 0.2 * block / 16, "row" mode) only when training.
//! Stages: 0 = `features.0`, 1..7 = `features.1..7`; the classifier adds `features.8` to stage 7.
//! Features: C3 = `features.3` (stride 8, 40 ch), C4 = `features.5` (16, 112), C5 = `features.7`
//! (32, 320: the last MBConv output; `features.8` is not part of the headless model).

use tch::{Tensor, nn};

use super::layers::{
    Act, Conv, ConvBn, ConvOpts, Linear, LinearInit, add_residual, global_avg_pool, prefix, stochastic_depth,
    strides_8_16_32,
};
use super::{BACKBONE_GROUP, Backbone, ClassifierNet, FeatureInfo, HEAD_GROUP, Normalization, Stages};
use crate::Result;
use crate::onnx::{Graph, OnnxError, Value};

/// torchvision's B0..B7 use `nn.BatchNorm2d` defaults (eps 1e-5); only its V2 models use 1e-3.
const BN_EPS: f64 = 1e-5;
/// One stage of an EfficientNet stage table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StageSpec {
    /// Expansion ratio of the blocks' inverted bottleneck.
    pub(crate) expand: i64,
    /// Depthwise kernel size.
    pub(crate) kernel: i64,
    /// Stride of the stage's first block.
    pub(crate) stride: i64,
    /// Output channels.
    pub(crate) channels: i64,
    /// Number of blocks.
    pub(crate) repeats: usize,
}

const fn stage(expand: i64, kernel: i64, stride: i64, channels: i64, repeats: usize) -> StageSpec {
    StageSpec { expand, kernel, stride, channels, repeats }
}

/// The stages `features.1..7` of B0 (and of Lite0).
pub(crate) const B0: [StageSpec; 7] = [
    stage(1, 3, 1, 16, 1),
    stage(6, 3, 2, 24, 2),
    stage(6, 5, 2, 40, 2),
    stage(6, 3, 2, 80, 3),
    stage(6, 5, 1, 112, 3),
    stage(6, 5, 2, 192, 4),
    stage(6, 3, 1, 320, 1),
];
const STOCHASTIC_DEPTH: f64 = 0.2;

/// Squeeze-and-excitation: `x * sigmoid(fc2(silu(fc1(avgpool(x)))))`.
#[derive(Debug)]
struct SqueezeExcite {
    fc1: Conv,
    fc2: Conv,
}

impl SqueezeExcite {
    /// `[N, C, H, W]` -> same shape.
    fn forward(&self, xs: &Tensor) -> Tensor {
        let s = xs.adaptive_avg_pool2d([1, 1]); // [N, C, 1, 1]
        let s = self.fc2.forward(&self.fc1.forward(&s).silu()).sigmoid();
        xs * s
    }
}

#[derive(Debug)]
pub struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    se: SqueezeExcite,
    project: ConvBn,
    residual: bool,
    drop_p: f64,
}

impl MbConv {
    fn new(p: &nn::Path, spec: BlockSpec) -> Result<Self> {
        let BlockSpec { cin, cout, expand, kernel: k, stride, drop_p, .. } = spec;
        let b = p / "block";
        let mid = cin * expand;
        let mut i = 0usize;
        let mut cb = |ci: i64, co: i64, o: ConvOpts, act: Act| {
            let q = &b / i;
            i += 1;
            ConvBn::new(&(&q / 0), &(&q / 1), ci, co, o.bn(BN_EPS, act))
        };
        let expand_cb = if expand != 1 { Some(cb(cin, mid, ConvOpts::new(1), Act::Silu)?) } else { None };
        let depthwise = cb(mid, mid, ConvOpts::new(k).stride(stride).groups(mid), Act::Silu)?;
        let se_p = &b / i;
        let squeeze = (cin / 4).max(1);
        let se = SqueezeExcite {
            fc1: Conv::new(&(&se_p / "fc1"), mid, squeeze, ConvOpts::new(1).bias(true))?,
            fc2: Conv::new(&(&se_p / "fc2"), squeeze, mid, ConvOpts::new(1).bias(true))?,
        };
        i += 1;
        let q = &b / i;
        let project = ConvBn::new(&(&q / 0), &(&q / 1), mid, cout, ConvOpts::new(1).bn(BN_EPS, Act::None))?;
        Ok(MbConv { expand: expand_cb, depthwise, se, project, residual: stride == 1 && cin == cout, drop_p })
    }
}

impl StageBlock for MbConv {
    const NORMALIZATION: Normalization = Normalization::IMAGENET;
    /// `[N, cin, H, W]` -> `[N, cout, H/stride, W/stride]`.
    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut x = match &self.expand {
            Some(e) => e.forward(xs, train), // [N, cin*expand, H, W]
            None => xs.shallow_clone(),
        };
        x = self.depthwise.forward(&x, train);
        x = self.se.forward(&x);
        x = self.project.forward(&x, train);
        if self.residual { add_residual(stochastic_depth(&x, self.drop_p, train), xs) } else { x }
    }

    /// The ONNX nodes of [`MbConv::forward`] in eval mode (stochastic depth is the identity).
    fn to_onnx(&self, g: &mut Graph, xs: &Value) -> Result<Value, OnnxError> {
        let mut x = match &self.expand {
            Some(e) => e.to_onnx(g, xs)?,
            None => xs.clone(),
        };
        x = self.depthwise.to_onnx(g, &x)?;
        x = self.se.to_onnx(g, &x)?;
        x = self.project.to_onnx(g, &x)?;
        Ok(if self.residual { g.binary("Add", &x, xs) } else { x })
    }

    fn conv_bns(&mut self) -> [Option<&mut ConvBn>; 3] {
        [self.expand.as_mut(), Some(&mut self.depthwise), Some(&mut self.project)]
    }
}

impl SqueezeExcite {
    /// The ONNX nodes of [`SqueezeExcite::forward`].
    fn to_onnx(&self, g: &mut Graph, x: &Value) -> Result<Value, OnnxError> {
        let s = g.global_avg_pool(x); // [N, C, 1, 1]
        let s = self.fc1.to_onnx(g, &s)?;
        let s = g.silu(&s);
        let s = self.fc2.to_onnx(g, &s)?;
        let s = g.unary("Sigmoid", &s);
        Ok(g.binary("Mul", x, &s))
    }
}

/// The shape of one EfficientNet block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockSpec {
    /// Input channels.
    pub(crate) cin: i64,
    /// Output channels.
    pub(crate) cout: i64,
    /// Expansion ratio (1: no expansion convolution).
    pub(crate) expand: i64,
    /// Depthwise kernel size.
    pub(crate) kernel: i64,
    /// Depthwise stride.
    pub(crate) stride: i64,
    /// Depthwise dilation (1: none).
    pub(crate) dilation: i64,
    /// Stochastic-depth probability when training.
    pub(crate) drop_p: f64,
}

/// A block of an EfficientNet stage: B0's MBConv, or Lite's (without squeeze-excitation).
pub trait StageBlock: std::fmt::Debug + Send {
    /// The input normalisation of the family's pretrained weights.
    const NORMALIZATION: Normalization;
    /// `[N, cin, H, W]` -> `[N, cout, H/stride, W/stride]`.
    fn forward(&self, xs: &Tensor, train: bool) -> Tensor;
    /// The ONNX nodes of [`StageBlock::forward`] in eval mode (stochastic depth is the identity).
    fn to_onnx(&self, g: &mut Graph, xs: &Value) -> Result<Value, OnnxError>;
    /// The expansion (when there is one), depthwise and projection convolutions.
    fn conv_bns(&mut self) -> [Option<&mut ConvBn>; 3];
}

/// The stem and the block stages, the part B0 and Lite share in shape, and how many stages run frozen.
#[derive(Debug)]
pub(crate) struct Trunk<B> {
    pub(crate) stem: ConvBn,
    pub(crate) blocks: Vec<Vec<B>>,
    pub(crate) frozen: usize,
}

impl<B: StageBlock> Trunk<B> {
    /// `[N, 3, H, W]` -> the output of each stage of blocks after the stem; the stem trains when nothing
    /// is frozen, stage `i` (0-based) when `i + 1 >= frozen`.
    pub(crate) fn run(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        let mut x = self.stem.forward(xs, train && self.frozen == 0); // [N, 32, H/2, W/2]
        let mut outs = Vec::with_capacity(self.blocks.len());
        for (si, stage) in self.blocks.iter().enumerate() {
            let t = train && si + 1 >= self.frozen;
            for b in stage {
                x = b.forward(&x, t);
            }
            outs.push(x.shallow_clone());
        }
        outs
    }

    /// The ONNX nodes of [`Trunk::run`] in eval mode.
    pub(crate) fn run_onnx(&self, g: &mut Graph, x: &Value) -> Result<Vec<Value>, OnnxError> {
        let mut x = self.stem.to_onnx(g, x)?;
        let mut outs = Vec::with_capacity(self.blocks.len());
        for stage in &self.blocks {
            for b in stage {
                x = b.to_onnx(g, &x)?;
            }
            outs.push(x.clone());
        }
        Ok(outs)
    }

    /// The stem's and every block's convolutions, in order.
    pub(crate) fn conv_bns(&mut self) -> Vec<&mut ConvBn> {
        let mut out = vec![&mut self.stem];
        for b in self.blocks.iter_mut().flatten() {
            out.extend(b.conv_bns().into_iter().flatten());
        }
        out
    }
}

/// C2, C3, C4, C5 (stages 2, 3, 5, 7) of the seven stage outputs; fewer outputs are returned as they are.
pub(crate) fn take_c2_to_c5(mut outs: Vec<Tensor>) -> Vec<Tensor> {
    if outs.len() < 7 {
        return outs;
    }
    let c5 = outs.swap_remove(6);
    let c4 = outs.swap_remove(4);
    let c3 = outs.swap_remove(2);
    let c2 = outs.swap_remove(1); // [N, 24, H/4, W/4]
    vec![c2, c3, c4, c5]
}

/// A headless EfficientNet, B0's or Lite's: the trunk, with the stride and channels of each stage's output.
#[derive(Debug)]
pub struct EfficientNetBackbone<B> {
    pub(crate) trunk: Trunk<B>,
    /// Output channels of each block stage.
    pub(crate) channels: Vec<i64>,
    /// Output stride of each block stage.
    pub(crate) strides: Vec<i64>,
    pub(crate) stages: Stages,
}

/// EfficientNet-B0 without `features.8` and the classifier; the headless [`Backbone`].
pub type EfficientNetBody = EfficientNetBackbone<MbConv>;

impl EfficientNetBody {
    fn new(p: &nn::Path) -> Result<Self> {
        let p = p.set_group(BACKBONE_GROUP);
        let f = &p / "features";
        let s0 = &f / 0;
        let stem = ConvBn::new(&(&s0 / 0), &(&s0 / 1), 3, 32, ConvOpts::new(3).stride(2).bn(BN_EPS, Act::Silu))?;
        let total: usize = B0.iter().map(|s| s.repeats).sum();
        let (mut cin, mut stride_now) = (32, 2);
        let mut block_id = 0usize;
        let mut blocks = Vec::with_capacity(B0.len());
        let (mut channels, mut strides) = (Vec::with_capacity(B0.len()), Vec::with_capacity(B0.len()));
        let mut stages = vec![vec![prefix(&f, "0")]];
        for (si, &StageSpec { expand, kernel, stride: s, channels: cout, repeats: reps }) in B0.iter().enumerate() {
            let sp = &f / (si + 1);
            let mut stage = Vec::with_capacity(reps);
            for j in 0..reps {
                let drop_p = STOCHASTIC_DEPTH * block_id as f64 / total as f64;
                let stride = if j == 0 { s } else { 1 };
                let spec = BlockSpec { cin, cout, expand, kernel, stride, dilation: 1, drop_p };
                stage.push(MbConv::new(&(&sp / j), spec)?);
                cin = cout;
                block_id += 1;
            }
            stride_now *= s;
            blocks.push(stage);
            channels.push(cout);
            strides.push(stride_now);
            stages.push(vec![prefix(&f, &(si + 1).to_string())]);
        }
        let trunk = Trunk { stem, blocks, frozen: 0 };
        Ok(EfficientNetBackbone { trunk, channels, strides, stages: Stages { prefixes: stages } })
    }
}

impl<B: StageBlock> EfficientNetBackbone<B> {
    /// `[N, 3, H, W]` -> the outputs of the seven block stages.
    fn run(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        self.trunk.run(xs, train)
    }

    fn info(&self, stage: usize) -> FeatureInfo {
        FeatureInfo {
            stride: self.strides.get(stage).copied().unwrap_or(0),
            channels: self.channels.get(stage).copied().unwrap_or(0),
        }
    }
}

/// C2, C3, C4, C5 (stages 2, 3, 5, 7) of the seven stage outputs.
pub(crate) fn pick_c2_to_c5<T: Clone>(outs: &[T]) -> Vec<T> {
    [1, 2, 4, 6].iter().filter_map(|&i| outs.get(i).cloned()).collect()
}

impl<B: StageBlock> Backbone for EfficientNetBackbone<B> {
    fn features_with_low_onnx(&self, g: &mut Graph, x: &Value) -> Result<Vec<Value>, OnnxError> {
        Ok(pick_c2_to_c5(&self.trunk.run_onnx(g, x)?))
    }
    fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        self.trunk.conv_bns()
    }
    fn forward_features(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        strides_8_16_32(self.run(xs, train))
    }
    fn forward_features_with_low(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        take_c2_to_c5(self.run(xs, train))
    }
    fn low_level_info(&self) -> FeatureInfo {
        FeatureInfo { stride: 4, ..self.info(1) }
    }
    fn feature_info(&self) -> Vec<FeatureInfo> {
        [2, 4, 6].into_iter().map(|i| self.info(i)).collect()
    }
    fn stages(&self) -> &Stages {
        &self.stages
    }
    fn set_frozen_stages(&mut self, n: usize) {
        self.trunk.frozen = n;
    }
    fn normalization(&self) -> Normalization {
        B::NORMALIZATION
    }
}

/// An EfficientNet classifier, B0's or Lite's: the trunk, a 1x1 convolution to 1280 channels, global
/// average pooling, dropout and the final `Linear`.
#[derive(Debug)]
pub struct EfficientNetClassifier<B> {
    trunk: Trunk<B>,
    head_conv: ConvBn,
    fc: Linear,
    dropout: f64,
    stages: Stages,
    head_prefix: String,
}

/// The EfficientNet-B0 classifier.
pub type EfficientNet = EfficientNetClassifier<MbConv>;

/// The parts of [`EfficientNetClassifier`] after its trunk.
pub(crate) struct ClassifierHead {
    /// The 1x1 convolution to 1280 channels and its batch norm.
    pub(crate) conv: ConvBn,
    /// The final `Linear`.
    pub(crate) fc: Linear,
    /// Dropout before `fc` when training.
    pub(crate) dropout: f64,
    /// The variable prefixes of `conv`, added to the last stage.
    pub(crate) conv_prefixes: Vec<String>,
    /// The variable prefix of `fc`.
    pub(crate) fc_prefix: String,
}

impl<B> EfficientNetClassifier<B> {
    /// `stages` are the trunk's; the head's convolution joins the last of them.
    pub(crate) fn new(trunk: Trunk<B>, mut stages: Stages, head: ClassifierHead) -> Self {
        if let Some(last) = stages.prefixes.last_mut() {
            last.extend(head.conv_prefixes);
        }
        EfficientNetClassifier {
            trunk,
            head_conv: head.conv,
            fc: head.fc,
            dropout: head.dropout,
            stages,
            head_prefix: head.fc_prefix,
        }
    }
}

impl<B: StageBlock> ClassifierNet for EfficientNetClassifier<B> {
    fn penultimate_onnx(&self, g: &mut Graph, x: &Value) -> Result<Value, OnnxError> {
        let last = self.trunk.run_onnx(g, x)?.pop().unwrap_or_else(|| x.clone()); // [N, 320, h, w]
        let x = self.head_conv.to_onnx(g, &last)?; // [N, 1280, h, w]
        let pooled = g.global_avg_pool(&x);
        Ok(g.flatten(&pooled, 1)) // [N, 1280]
    }
    fn head_onnx(&self, g: &mut Graph, feats: &Value) -> Result<Value, OnnxError> {
        self.fc.to_onnx(g, feats)
    }
    fn penultimate(&self, xs: &Tensor, train: bool) -> Tensor {
        let last = self.trunk.run(xs, train).pop().unwrap_or_else(|| xs.shallow_clone()); // [N, 320, h, w]
        let t = train && self.trunk.frozen < self.stages.len();
        let x = self.head_conv.forward(&last, t); // [N, 1280, h, w]
        global_avg_pool(&x).dropout(self.dropout, t) // [N, 1280]
    }
    fn head(&self, feats: &Tensor) -> Tensor {
        self.fc.forward(feats)
    }
    fn penultimate_dim(&self) -> i64 {
        1280
    }
    fn head_prefix(&self) -> &str {
        &self.head_prefix
    }
    fn stages(&self) -> &Stages {
        &self.stages
    }
    fn set_frozen_stages(&mut self, n: usize) {
        self.trunk.frozen = n;
    }
    fn conv_bns_mut(&mut self) -> Vec<&mut ConvBn> {
        let mut out = self.trunk.conv_bns();
        out.push(&mut self.head_conv);
        out
    }
}

/// The EfficientNet-B0 classifier (`classifier.1` has `num_classes` outputs).
pub fn efficientnet_b0(p: nn::Path, num_classes: i64) -> Result<EfficientNet> {
    let EfficientNetBody { trunk, stages, .. } = EfficientNetBody::new(&p)?;
    let f8 = p.set_group(BACKBONE_GROUP) / "features" / 8;
    let conv = ConvBn::new(&(&f8 / 0), &(&f8 / 1), 320, 1280, ConvOpts::new(1).bn(BN_EPS, Act::Silu))?;
    let cp = p.set_group(HEAD_GROUP) / "classifier";
    let fc = Linear::new(&(&cp / 1), 1280, num_classes, LinearInit::UniformOut)?;
    let head = ClassifierHead {
        conv,
        fc,
        dropout: 0.2,
        conv_prefixes: vec![prefix(&(&p / "features"), "8")],
        fc_prefix: prefix(&cp, "1"),
    };
    Ok(EfficientNetClassifier::new(trunk, stages, head))
}

/// Headless EfficientNet-B0 (C3/C4/C5 = 40/112/320 channels).
pub fn efficientnet_b0_backbone(p: nn::Path) -> Result<EfficientNetBody> {
    EfficientNetBody::new(&p)
}
