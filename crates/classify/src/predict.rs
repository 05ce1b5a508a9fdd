//! Prediction on image files, from a trained run or from a pretrained ImageNet classifier.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use serde::Serialize;
use tch::{Device, Kind, Tensor, nn};
use tlcv_core::{
    backbones::{self, Arch, ClassifierNet},
    checkpoint::{self, LoadOptions},
    data, paths,
    weights::WeightsSource,
};

use crate::{
    ClassifyError, Result,
    config::{ClassifyConfig, DataConfig},
    data::Pipeline,
    model::Model,
};

/// One class of a prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Top {
    /// Class index.
    pub index: usize,
    /// Class name.
    pub class: String,
    /// Softmax probability.
    pub prob: f64,
}

/// The prediction for one image (the JSON line of `classify predict --json`).
#[derive(Debug, Clone, Serialize)]
pub struct ImagePrediction {
    /// The image path as given.
    pub image: String,
    /// The best classes, most probable first.
    pub top: Vec<Top>,
}

/// Something that maps images to logits: the libtorch models, or an exported file served by tract.
pub trait Logits {
    /// `[N, 3, H, W]` (normalised as [`Logits::input_normalization`] says) → `[N, classes]`.
    fn logits(&self, xs: &Tensor) -> std::result::Result<Tensor, String>;
    /// The normalisation the input must have; `None` = pixels in `0..1` (an ONNX export normalises
    /// inside its graph).
    fn input_normalization(&self) -> Option<backbones::Normalization>;
}

impl Logits for Model {
    fn logits(&self, xs: &Tensor) -> std::result::Result<Tensor, String> {
        Ok(self.forward(xs, false))
    }
    fn input_normalization(&self) -> Option<backbones::Normalization> {
        Some(self.normalization())
    }
}

/// A bare pretrained classifier (all of its layers, e.g. ImageNet's 1000 classes).
#[derive(Debug)]
pub struct Pretrained {
    /// Its variables.
    pub vs: nn::VarStore,
    /// The network.
    pub net: Box<dyn ClassifierNet>,
    /// The architecture.
    pub arch: Arch,
}

impl Logits for Pretrained {
    fn logits(&self, xs: &Tensor) -> std::result::Result<Tensor, String> {
        Ok(self.net.forward_t(xs, false))
    }
    fn input_normalization(&self) -> Option<backbones::Normalization> {
        Some(self.arch.normalization())
    }
}

impl Pretrained {
    /// Number of classes of the loaded head.
    pub fn net_classes(&self) -> usize {
        let head = format!("{}.weight", self.net.head_prefix());
        self.vs.variables().get(&head).map_or(0, |w| w.size()[0] as usize)
    }

    /// Loads `arch` with `weights` (`imagenet` or a file), strictly; the class count comes from the file.
    pub fn load(arch: Arch, weights: &WeightsSource, num_classes: Option<i64>) -> Result<Self> {
        let file = weights.resolve(arch)?.ok_or_else(|| {
            ClassifyError::Invalid(format!("{arch} with --weights none has no trained classes to predict"))
        })?;
        let sd = checkpoint::read_state_dict(&file)?;
        let probe = nn::VarStore::new(Device::Cpu);
        let head = backbones::classifier(probe.root(), arch, 1)?.head_prefix().to_string();
        let from_file = sd.get(&format!("{head}.weight")).and_then(|w| w.size().first().copied());
        let Some(classes) = num_classes.or(from_file) else {
            // No head of this architecture: the file may be another architecture's, so say that first.
            let opts = LoadOptions { strict: true, ignore_prefixes: vec![head.clone()] };
            checkpoint::load_into(&probe, &sd, &opts)
                .map_err(|e| ClassifyError::Invalid(format!("{}: {e}", file.display())))?;
            return Err(ClassifyError::Invalid(format!("{}: no `{head}.weight`; pass --num-classes", file.display())));
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let net = backbones::classifier(vs.root(), arch, classes)?;
        checkpoint::load_into(&vs, &sd, &LoadOptions::default())
            .map_err(|e| ClassifyError::Invalid(format!("{}: {e}", file.display())))?;
        Ok(Self { vs, net, arch })
    }
}

/// ImageNet-1k class names from the model store, or indices when absent or the count differs.
pub fn imagenet_names(count: usize) -> Vec<String> {
    let names: Option<Vec<String>> = paths::model_file("imagenet_classes.json")
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok());
    match names {
        Some(n) if n.len() == count => n,
        _ => (0..count).map(|i| i.to_string()).collect(),
    }
}

/// Predicts the `k` best classes of each image; an unreadable image gives an error naming it.
pub fn predict_images(
    model: &dyn Logits,
    data_cfg: &DataConfig,
    classes: &[String],
    images: &[PathBuf],
    k: usize,
) -> Vec<std::result::Result<ImagePrediction, String>> {
    let pipeline = Pipeline::new(data_cfg, false);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    images
        .iter()
        .map(|path| {
            let img = pipeline.load(path, &mut rng).map_err(|e| e.to_string())?;
            let unit = backbones::Normalization { mean: [0.0; 3], std: [1.0; 3] };
            let norm = model.input_normalization().unwrap_or(unit);
            let xs = data::to_tensor(&[img], norm.mean, norm.std).map_err(|e| e.to_string())?;
            let probs = tch::no_grad(|| model.logits(&xs))?.softmax(-1, Kind::Float).squeeze_dim(0);
            Ok(ImagePrediction { image: path.display().to_string(), top: top_k(&probs, classes, k) })
        })
        .collect()
}

fn top_k(probs: &Tensor, classes: &[String], k: usize) -> Vec<Top> {
    let k = k.clamp(1, classes.len().max(1)) as i64;
    let (values, indices) = probs.topk(k, -1, true, true);
    let values: Vec<f64> = Vec::<f64>::try_from(&values.to_kind(Kind::Double)).unwrap_or_default();
    let indices: Vec<i64> = Vec::<i64>::try_from(&indices).unwrap_or_default();
    values
        .into_iter()
        .zip(indices)
        .map(|(prob, i)| Top {
            index: i as usize,
            class: classes.get(i as usize).cloned().unwrap_or_else(|| i.to_string()),
            prob,
        })
        .collect()
}

/// The data configuration for predicting with a bare pretrained model at `img_size`.
pub fn pretrained_data_config(arch: Arch, img_size: Option<i64>) -> DataConfig {
    DataConfig {
        img_size: img_size.unwrap_or_else(|| arch.default_img_size()),
        augment: false,
        ..ClassifyConfig::default().data
    }
}

/// Checks that every path exists before any work starts.
pub fn check_images(images: &[PathBuf]) -> Result<()> {
    if images.is_empty() {
        return Err(ClassifyError::Invalid("no image given".into()));
    }
    if let Some(missing) = images.iter().find(|p| !Path::new(p).exists()) {
        return Err(ClassifyError::Invalid(format!("{} does not exist", missing.display())));
    }
    Ok(())
}
