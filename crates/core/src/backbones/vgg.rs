//! VGG-16/19 with and without batch norm (Simonyan & Zisserman 2014, "Very Deep Convolutional
//! Networks for Large-Scale Image Recognition"), mirroring torchvision's `models/vgg.py`.
//!
//! Names: `features.{i}` numbered like torchvision's `nn.Sequential` (conv, [bn,] relu, ..., maxpool),
//! then `avgpool` (adaptive 7x7, no weights) and `classifier.{0,3,6}` (Linear, ReLU, Dropout x2, Linear).
//! Stages: the five conv blocks between max-pools (stage 0 = block 1); the classifier adds
//! `classifier.0` and `classifier.3` (fc6, fc7) to the last stage, so the head is `classifier.6` alone.
//! Features (documented choice, as SSD's conv4_3): C3 = the last ReLU of block 4, before pool4
//! (stride 8, 512 ch); C4 = the last ReLU of block 5, before pool5 (stride 16, 512); C5 = after pool5
//! (stride 32, 512). [`VggFeatures::relu_taps`] gives named activations (`relu1_1` ... `relu5_4`) for
//! style transfer.

use tch::{Tensor, nn};

use super::layers::{Bn, Conv, ConvOpts, Linear, LinearInit, prefix};
use super::{BACKBONE_GROUP, Backbone, ClassifierNet, FeatureInfo, HEAD_GROUP, Stages};
use crate::onnx::{Graph, OnnxError, Value, layers::adaptive_avg_pool, layers::conv_bn_to_onnx};
use crate::{Error, Result};

const BN_EPS: f64 = 1e-5;
/// Output channels of the convs of each block (VGG-16 "D", VGG-19 "E").
const CFG16: [&[i64]; 5] = [&[64, 64], &[128, 128], &[256, 256, 256], &[512, 512, 512], &[512, 512, 512]];
const CFG19: [&[i64]; 5] =
    [&[64, 64], &[128, 128], &[256, 256, 256, 256], &[512, 512, 512, 512], &[512, 512, 512, 512]];

#[derive(Debug)]
struct VggConv {
    conv: Conv,
    bn: Option<Bn>,
}

/// The convolutional part (`features.*`) of a VGG; the headless [`Backbone`].
#[derive(Debug)]
pub struct VggFeatures {
    blocks: Vec<Vec<VggConv>>,
    stages: Stages,
    frozen: usize,
}

impl VggFeatures {
    fn new(p: &nn::Path, cfg: &[&[i64]; 5], batch_norm: bool) -> Result<Self> {
        let p = p.set_group(BACKBONE_GROUP);
        let fp = &p / "features";
        let mut idx = 0usize; // index in torchvision's `features` Sequential
        let mut cin = 3;
        let mut blocks = Vec::with_capacity(5);
        let mut stages = Vec::with_capacity(5);
        for widths in cfg {
            let mut block = Vec::new();
            let mut names = Vec::new();
            for &cout in *widths {
                let o = ConvOpts::new(3).bias(true);
                names.push(prefix(&fp, &idx.to_string()));
                let conv = Conv::new(&(&fp / idx), cin, cout, o)?;
                let bn = if batch_norm {
                    idx += 1;
                    names.push(prefix(&fp, &idx.to_string()));
                    Some(Bn::new(&(&fp / idx), cout, BN_EPS, 0.1)?)
                } else {
                    None
                };
                idx += 2; // conv or bn, then ReLU
                block.push(VggConv { conv, bn });
                cin = cout;
            }
            idx += 1; // MaxPool2d
            blocks.push(block);
            stages.push(names);
        }
        Ok(VggFeatures { blocks, stages: Stages { prefixes: stages }, frozen: 0 })
    }

    /// Runs block `b` (conv, [bn,] relu)* and calls `tap(j, relu_output)` after each ReLU.
    /// `[N, C, H, W]` -> `[N, C', H, W]` (before the block's max-pool).
    fn block(&self, b: usize, x: Tensor, train: bool, tap: &mut dyn FnMut(usize, &Tensor)) -> Tensor {
        let t = train && b >= self.frozen;
        let mut x = x;
        for (j, c) in self.blocks[b].iter().enumerate() {
            x = c.conv.forward(&x);
            if let Some(bn) = &c.bn {
                x = bn.forward(&x, t);
            }
            x = x.relu();
            tap(j, &x);
        }
        x
    }

    /// `[N, 3, H, W]` -> `[N, 512, H/32, W/32]` (torchvision's `features`).
    fn run(&self, xs: &Tensor, train: bool, mut tap: impl FnMut(usize, usize, &Tensor)) -> Tensor {
        let mut x = xs.shallow_clone();
        for b in 0..self.blocks.len() {
            x = self.block(b, x, train, &mut |j, t| tap(b, j, t));
            x = x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false); // halves H, W
        }
        x
    }

    /// The activations after the named ReLUs, e.g. `["relu1_1", "relu2_1", ..., "relu5_1"]`
    /// (`relu{block}_{conv}`, 1-based, as in the style-transfer literature), in the order asked.
    /// Stops after the deepest one asked. `[N, 3, H, W]` -> `[N, C_k, H / 2^(block-1), W / 2^(block-1)]`.
    pub fn relu_taps(&self, xs: &Tensor, names: &[&str], train: bool) -> Result<Vec<Tensor>> {
        let mut wanted = Vec::with_capacity(names.len());
        for n in names {
            let parsed = n.strip_prefix("relu").and_then(|r| r.split_once('_')).and_then(|(b, j)| {
                Some((b.parse::<usize>().ok()?.checked_sub(1)?, j.parse::<usize>().ok()?.checked_sub(1)?))
            });
            match parsed {
                Some((b, j)) if b < self.blocks.len() && j < self.blocks[b].len() => wanted.push((b, j)),
                _ => {
                    return Err(Error::Invalid(format!("no VGG activation named {n:?} (expected reluB_J)")));
                }
            }
        }
        let last = wanted.iter().map(|w| w.0).max().unwrap_or(0);
        let mut found: Vec<Option<Tensor>> = wanted.iter().map(|_| None).collect();
        let mut x = xs.shallow_clone();
        for b in 0..=last.min(self.blocks.len().saturating_sub(1)) {
            if b > 0 {
                x = x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
            }
            x = self.block(b, x, train, &mut |j, t| {
                for (k, w) in wanted.iter().enumerate() {
                    if *w == (b, j) {
                        found[k] = Some(t.shallow_clone());
                    }
                }
            });
        }
        found.into_iter().zip(names).map(|(f, n)| f.ok_or_else(|| Error::Invalid(format!("{n} not reached")))).collect()
    }
}

impl VggFeatures {
    /// The ONNX nodes of [`VggFeatures::run`] in eval mode (batch norms folded): the pre-pool output
    /// of every block and the output after pool5.
    fn run_onnx(&self, g: &mut Graph, x: &Value) -> Result<(Vec<Value>, Value), OnnxError> {
        let mut x = x.clone();
        let mut pre_pool = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            for c in block {
                let y = conv_bn_to_onnx(g, &c.conv, c.bn.as_ref(), &x)?;
                x = g.unary("Relu", &y);
            }
            pre_pool.push(x.clone());
            x = g.pool(&x, false, (2, 2, 0));
        }
        Ok((pre_pool, x))
    }
}

impl Backbone for VggFeatures {
    fn features_with_low_onnx(&self, g: &mut Graph, x: &Value) -> Result<Vec<Value>, OnnxError> {
        let (mut pre_pool, c5) = self.run_onnx(g, x)?;
        let mut out = pre_pool.split_off(2.min(pre_pool.len())); // [relu3_last (s4), relu4_last, relu5_last]
        out.push(c5);
        Ok(out)
    }
    fn forward_features(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        let n = self.blocks.len();
        let mut pre_pool: Vec<Tensor> = Vec::with_capacity(n);
        let c5 = self.run(xs, train, |b, j, t| {
            if j + 1 == self.blocks[b].len() {
                pre_pool.push(t.shallow_clone());
            }
        });
        let mut out: Vec<Tensor> = pre_pool.split_off(3); // [relu4_last (s8), relu5_last (s16)]
        out.push(c5); // pool5 (s32)
        out
    }
    fn forward_features_with_low(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        let n = self.blocks.len();
        let mut pre_pool: Vec<Tensor> = Vec::with_capacity(n);
        let c5 = self.run(xs, train, |b, j, t| {
            if j + 1 == self.blocks[b].len() {
                pre_pool.push(t.shallow_clone());
            }
        });
        let mut out: Vec<Tensor> = pre_pool.split_off(2); // [relu3_last (s4), relu4_last, relu5_last]
        out.push(c5); // pool5 (s32)
        out
    }
    fn low_level_info(&self) -> FeatureInfo {
        FeatureInfo { stride: 4, channels: 256 }
    }
    fn feature_info(&self) -> Vec<FeatureInfo> {
        [8, 16, 32].into_iter().map(|stride| FeatureInfo { stride, channels: 512 }).collect()
    }
    fn stages(&self) -> &Stages {
        &self.stages
    }
    fn set_frozen_stages(&mut self, n: usize) {
        self.frozen = n;
    }
}

/// A VGG classifier: [`VggFeatures`], 7x7 adaptive average pooling, `classifier.{0,3,6}`.
#[derive(Debug)]
pub struct Vgg {
    features: VggFeatures,
    fc6: Linear,
    fc7: Linear,
    fc8: Linear,
    stages: Stages,
    head_prefix: String,
}

impl Vgg {
    fn new(p: &nn::Path, cfg: &[&[i64]; 5], batch_norm: bool, num_classes: i64) -> Result<Self> {
        let features = VggFeatures::new(p, cfg, batch_norm)?;
        let cp = p.set_group(BACKBONE_GROUP) / "classifier";
        let init = LinearInit::Normal(0.01);
        let fc6 = Linear::new(&(&cp / 0), 512 * 7 * 7, 4096, init)?;
        let fc7 = Linear::new(&(&cp / 3), 4096, 4096, init)?;
        let fc8 = Linear::new(&(p.set_group(HEAD_GROUP) / "classifier" / 6), 4096, num_classes, init)?;
        let mut stages = features.stages.clone();
        if let Some(last) = stages.prefixes.last_mut() {
            last.push(prefix(&cp, "0"));
            last.push(prefix(&cp, "3"));
        }
        let head_prefix = prefix(&(p / "classifier"), "6");
        Ok(Vgg { features, fc6, fc7, fc8, stages, head_prefix })
    }

    /// The convolutional part, e.g. for [`VggFeatures::relu_taps`].
    pub fn features(&self) -> &VggFeatures {
        &self.features
    }
}

impl ClassifierNet for Vgg {
    fn penultimate_onnx(&self, g: &mut Graph, x: &Value) -> Result<Value, OnnxError> {
        let (_, x) = self.features.run_onnx(g, x)?; // [N, 512, H/32, W/32]
        let x = adaptive_avg_pool(g, &x, 7, 7)?;
        let x = g.flatten(&x, 1); // [N, 25088]
        let x = self.fc6.to_onnx(g, &x)?;
        let x = g.unary("Relu", &x);
        let x = self.fc7.to_onnx(g, &x)?;
        Ok(g.unary("Relu", &x)) // [N, 4096]
    }
    fn head_onnx(&self, g: &mut Graph, feats: &Value) -> Result<Value, OnnxError> {
        self.fc8.to_onnx(g, feats)
    }
    fn penultimate(&self, xs: &Tensor, train: bool) -> Tensor {
        let x = self.features.run(xs, train, |_, _, _| {}); // [N, 512, H/32, W/32]
        let x = x.adaptive_avg_pool2d([7, 7]).flatten(1, -1); // [N, 25088]
        let t = train && self.features.frozen < self.stages.len(); // fc6/fc7 are in the last stage
        let x = self.fc6.forward(&x).relu().dropout(0.5, t); // [N, 4096]
        self.fc7.forward(&x).relu().dropout(0.5, t) // [N, 4096]
    }
    fn head(&self, feats: &Tensor) -> Tensor {
        self.fc8.forward(feats)
    }
    fn penultimate_dim(&self) -> i64 {
        4096
    }
    fn head_prefix(&self) -> &str {
        &self.head_prefix
    }
    fn stages(&self) -> &Stages {
        &self.stages
    }
    fn set_frozen_stages(&mut self, n: usize) {
        self.features.frozen = n;
    }
}

/// VGG-16 classifier.
pub fn vgg16(p: nn::Path, num_classes: i64) -> Result<Vgg> {
    Vgg::new(&p, &CFG16, false, num_classes)
}
/// VGG-16-BN classifier.
pub fn vgg16_bn(p: nn::Path, num_classes: i64) -> Result<Vgg> {
    Vgg::new(&p, &CFG16, true, num_classes)
}
/// VGG-19 classifier.
pub fn vgg19(p: nn::Path, num_classes: i64) -> Result<Vgg> {
    Vgg::new(&p, &CFG19, false, num_classes)
}
/// VGG-19-BN classifier.
pub fn vgg19_bn(p: nn::Path, num_classes: i64) -> Result<Vgg> {
    Vgg::new(&p, &CFG19, true, num_classes)
}
/// Headless VGG-16 (`features.*` only).
pub fn vgg16_backbone(p: nn::Path) -> Result<VggFeatures> {
    VggFeatures::new(&p, &CFG16, false)
}
/// Headless VGG-16-BN.
pub fn vgg16_bn_backbone(p: nn::Path) -> Result<VggFeatures> {
    VggFeatures::new(&p, &CFG16, true)
}
/// Headless VGG-19 (the style-transfer loss network: use [`VggFeatures::relu_taps`]).
pub fn vgg19_backbone(p: nn::Path) -> Result<VggFeatures> {
    VggFeatures::new(&p, &CFG19, false)
}
/// Headless VGG-19-BN.
pub fn vgg19_bn_backbone(p: nn::Path) -> Result<VggFeatures> {
    VggFeatures::new(&p, &CFG19, true)
}
