//! Where a backbone's initial weights come from, answered once for every task: `model.weights` /
//! `--weights` is [`WeightsSource`] (`imagenet`, `none` or a checkpoint file),
//! [`WeightsSource::resolve`] finds the file for an architecture, and [`load_backbone`] puts an
//! ImageNet classifier checkpoint into a headless backbone, leaving out the classifier-only keys
//! ([`Arch::classifier_only_prefixes`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tch::{Device, nn::VarStore};

use crate::{
    Error, Result,
    backbones::{self, Arch},
    checkpoint::{self, LoadOptions, StateDict},
    paths,
};

/// The initial weights of a network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WeightsSource {
    /// The ImageNet weights in the model store (`cargo xtask setup` installs EfficientNet-Lite0/1/2).
    #[default]
    ImageNet,
    /// Random initialisation.
    None,
    /// A checkpoint file: `.pth`, `.pt`, `.bin` or `.safetensors`.
    File(PathBuf),
}

impl WeightsSource {
    /// Whether the network starts from random weights.
    pub fn is_none(&self) -> bool {
        *self == WeightsSource::None
    }

    /// The checkpoint for `arch`, or `None` for random initialisation; an error when the ImageNet
    /// file is not in the store or the given file does not exist.
    pub fn resolve(&self, arch: Arch) -> Result<Option<PathBuf>> {
        match self {
            WeightsSource::None => Ok(None),
            WeightsSource::ImageNet => match arch.imagenet_file() {
                Some(name) => Ok(Some(paths::model_file(name)?)),
                None => Err(Error::Invalid(format!(
                    "no ImageNet weights for {arch} can be installed from the package registries; pass --weights FILE \
                     with torchvision's {arch} checkpoint, or use efficientnet_lite0/1/2"
                ))),
            },
            WeightsSource::File(file) if file.is_file() => Ok(Some(file.clone())),
            WeightsSource::File(file) => Err(Error::Invalid(format!("weights file {} does not exist", file.display()))),
        }
    }
}

impl fmt::Display for WeightsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsSource::ImageNet => f.write_str("imagenet"),
            WeightsSource::None => f.write_str("none"),
            WeightsSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl FromStr for WeightsSource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "" => Err(Error::Invalid("weights: expected imagenet, none or a checkpoint file".into())),
            "imagenet" => Ok(WeightsSource::ImageNet),
            "none" => Ok(WeightsSource::None),
            path => Ok(WeightsSource::File(PathBuf::from(path))),
        }
    }
}

impl serde::Serialize for WeightsSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for WeightsSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Loads the classifier checkpoint `file` of `arch` into the headless backbone whose variables are
/// `{prefix}.*` in `vs` (or at the root when `prefix` is empty). Every backbone variable must be in
/// the file and every key of the file must be a backbone variable, except the classifier-only ones;
/// keys already under `backbone.` (a segmentation or detection checkpoint) are read as well.
/// Returns how many tensors were loaded.
pub fn load_backbone(vs: &VarStore, arch: Arch, file: &Path, prefix: &str) -> Result<usize> {
    let sd = checkpoint::read_state_dict(file)?;
    let mut plain = StateDict::new();
    for (k, t) in sd.iter() {
        plain.insert(k.strip_prefix("backbone.").unwrap_or(k), t.shallow_clone());
    }
    // The headless twin on the CPU checks the file strictly before anything in `vs` changes.
    let probe = VarStore::new(Device::Cpu);
    let _net = backbones::backbone(probe.root(), arch)?;
    let ignore = arch.classifier_only_prefixes().iter().map(|p| p.to_string()).collect();
    let report = checkpoint::load_into(&probe, &plain, &LoadOptions { strict: true, ignore_prefixes: ignore })
        .map_err(|e| Error::Invalid(format!("{}: not a {arch} checkpoint: {e}", file.display())))?;
    let mut dst = vs.variables();
    tch::no_grad(|| -> Result<()> {
        for (name, t) in probe.variables() {
            let key = if prefix.is_empty() { name } else { format!("{prefix}.{name}") };
            let var = dst.get_mut(&key).ok_or_else(|| Error::Invalid(format!("the network has no variable {key}")))?;
            var.f_copy_(&t)?;
        }
        Ok(())
    })?;
    Ok(report.loaded.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_round_trip_through_text() {
        for (text, source) in [
            ("imagenet", WeightsSource::ImageNet),
            ("none", WeightsSource::None),
            ("w/resnet18.pth", WeightsSource::File("w/resnet18.pth".into())),
        ] {
            assert_eq!(text.parse::<WeightsSource>().ok(), Some(source.clone()));
            assert_eq!(source.to_string(), text);
        }
        assert!("".parse::<WeightsSource>().is_err());
    }

    #[test]
    fn imagenet_is_refused_by_name_where_no_file_ships() {
        let err = WeightsSource::ImageNet.resolve(Arch::Resnet50).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("resnet50") && err.contains("--weights FILE"), "{err}");
        let missing = WeightsSource::File("no/such.pth".into()).resolve(Arch::Resnet18);
        assert!(missing.is_err_and(|e| e.to_string().contains("no/such.pth")));
        assert_eq!(WeightsSource::None.resolve(Arch::Vgg16).ok(), Some(None));
    }
}
