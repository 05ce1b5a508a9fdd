//! The frozen perceptual network: named activations of EfficientNet-Lite0 (the shipped ImageNet
//! weights, the default) or VGG-16/19 (a torchvision file), in eval mode, with only the image
//! receiving gradients. Images come in as `[N, 3, H, W]` in `[0, 1]`; the network's own input
//! normalisation is applied here. Optionally the network runs in bf16 and its outputs come back in fp32.

use std::path::Path;

use tch::{Device, Kind, Tensor, nn};
use tlcv_core::backbones::{
    Arch, Normalization,
    efficientnet_lite::{self, EfficientNetLiteBody},
    vgg::{self, VggFeatures},
};
use tlcv_core::weights::{self, WeightsSource};

use crate::config::{ModelConfig, Precision};
use crate::{Result, StyleError};
use tlcv_core::train::{Convs, TaskKind};

/// The supported feature networks.
#[derive(Debug)]
enum Net {
    Vgg(VggFeatures),
    Lite(Box<EfficientNetLiteBody>),
}

/// Default `(content, style)` layers of an architecture (see [`ModelConfig`]).
pub fn default_layers(arch: Arch) -> (Vec<&'static str>, Vec<&'static str>) {
    match arch {
        Arch::EfficientnetLite0 => (
            vec!["blocks.5.expand"],
            vec!["stem", "blocks.1.expand", "blocks.3.expand", "blocks.5.expand", "blocks.8.expand"],
        ),
        _ => (vec!["relu4_2"], vec!["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]),
    }
}

/// A frozen feature network and the layers the losses use.
#[derive(Debug)]
pub struct FeatureNet {
    vs: nn::VarStore,
    net: Net,
    arch: Arch,
    norm: Normalization,
    kind: Kind,
    /// Content layer names.
    pub content_layers: Vec<String>,
    /// Style layer names.
    pub style_layers: Vec<String>,
    /// One weight per style layer.
    pub style_weights: Vec<f64>,
}

impl FeatureNet {
    /// An untrained network of `arch` (`vgg16`, `vgg19` or `efficientnet_lite0`) with its default layers.
    pub fn new(arch: Arch, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let net = match arch {
            Arch::Vgg16 => Net::Vgg(vgg::vgg16_backbone(vs.root())?),
            Arch::Vgg19 => Net::Vgg(vgg::vgg19_backbone(vs.root())?),
            Arch::EfficientnetLite0 => Net::Lite(Box::new(efficientnet_lite::efficientnet_lite0_backbone(vs.root())?)),
            other => {
                return Err(StyleError::Invalid(format!(
                    "backbone {other} is not supported for style transfer (use efficientnet_lite0, vgg16 or vgg19)"
                )));
            }
        };
        let (c, s) = default_layers(arch);
        let n = s.len();
        Ok(Self {
            vs,
            net,
            arch,
            norm: arch.normalization(),
            kind: Kind::Float,
            content_layers: c.into_iter().map(String::from).collect(),
            style_layers: s.into_iter().map(String::from).collect(),
            style_weights: vec![1.0 / n as f64; n],
        })
    }

    /// Builds the network of `cfg`, loads its weights strictly (the classifier keys of the file are
    /// skipped), freezes it and sets the layers and precision.
    pub fn from_config(cfg: &ModelConfig, device: Device) -> Result<Self> {
        let arch = cfg.backbone;
        let mut net = Self::new(arch, device)?;
        let path = match &cfg.weights {
            WeightsSource::None => None,
            source => source.resolve(arch)?,
        };
        let path = path.ok_or_else(|| {
            StyleError::Invalid("style transfer needs pretrained weights (weights = \"none\")".into())
        })?;
        net.load_weights(&path)?;
        let list = |s: &str| -> Vec<String> {
            s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect()
        };
        let weights = list(&cfg.style_layer_weights)
            .iter()
            .map(|w| {
                w.parse::<f64>()
                    .map_err(|_| StyleError::Invalid(format!("model.style_layer_weights: {w:?} is not a number")))
            })
            .collect::<Result<Vec<f64>>>()?;
        net.set_layers(&list(&cfg.content_layers), &list(&cfg.style_layers), &weights)?;
        if cfg.precision == Precision::Bf16 && !tlcv_core::train::precision::native_bf16(device) {
            eprintln!(
                "note: model.precision = \"bf16\" but this CPU has no native bf16 (AVX-512 BF16 or AMX): using float32"
            );
        }
        if cfg.precision.resolve(device, TaskKind::Style, Convs::Dense).inference == Precision::Bf16 {
            net.set_kind(Kind::BFloat16);
        }
        Ok(net)
    }

    /// Loads a classifier checkpoint strictly (without the classifier keys a full ImageNet file has,
    /// see [`weights::load_backbone`]) and freezes.
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        weights::load_backbone(&self.vs, self.arch, path, "")?;
        self.vs.freeze();
        Ok(())
    }

    /// Replaces the layers (empty lists keep the current ones); checks every name by a dry run.
    pub fn set_layers(&mut self, content: &[String], style: &[String], style_weights: &[f64]) -> Result<()> {
        if !content.is_empty() {
            self.content_layers = content.to_vec();
        }
        if !style.is_empty() {
            self.style_layers = style.to_vec();
            self.style_weights = vec![1.0 / style.len() as f64; style.len()];
        }
        if !style_weights.is_empty() {
            if style_weights.len() != self.style_layers.len() {
                return Err(StyleError::Invalid(format!(
                    "{} style layer weights for {} style layers",
                    style_weights.len(),
                    self.style_layers.len()
                )));
            }
            self.style_weights = style_weights.to_vec();
        }
        let probe = Tensor::zeros([1, 3, 32, 32], (Kind::Float, self.vs.device()));
        let names: Vec<&str> = self.content_layers.iter().chain(&self.style_layers).map(String::as_str).collect();
        tch::no_grad(|| self.taps(&probe, &names)).map(|_| ())
    }

    /// Runs the network in `kind` (e.g. `Kind::BFloat16`); outputs stay fp32.
    pub fn set_kind(&mut self, kind: Kind) {
        self.vs.set_kind(kind);
        self.kind = kind;
    }

    /// The precision the network runs in.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// `[N, 3, H, W]` in `[0, 1]` -> the named activations in fp32, in the order asked.
    pub fn taps(&self, image: &Tensor, names: &[&str]) -> Result<Vec<Tensor>> {
        let dev = image.device();
        let mean = Tensor::from_slice(&self.norm.mean).to_kind(Kind::Float).to_device(dev).view([1, 3, 1, 1]);
        let std = Tensor::from_slice(&self.norm.std).to_kind(Kind::Float).to_device(dev).view([1, 3, 1, 1]);
        let x = ((image - mean) / std).to_kind(self.kind); // [N, 3, H, W] normalised
        let outs = match &self.net {
            Net::Vgg(v) => v.relu_taps(&x, names, false)?,
            Net::Lite(l) => l.taps(&x, names, false)?,
        };
        Ok(outs.into_iter().map(|t| t.to_kind(Kind::Float)).collect())
    }

    /// `[N, 3, H, W]` in `[0, 1]` -> (content features, style features), one forward pass.
    pub fn extract(&self, image: &Tensor) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        let names: Vec<&str> = self.content_layers.iter().chain(&self.style_layers).map(String::as_str).collect();
        let mut all = self.taps(image, &names)?;
        let style = all.split_off(self.content_layers.len());
        Ok((all, style))
    }
}
