//! Detector families behind one trait, as torchvision's `GeneralizedRCNN` gives every detector one
//! `forward(images, targets)`: a family builds its network on a core backbone, returns its named
//! training losses, predicts detections, and names the variables that never freeze. The pipeline,
//! the training task, evaluation and `detect compare` only see [`DetectorFamily`].
//!
//! Adding a family is a new folder (say `src/yolov8/`) with a `build` function and one line in the
//! [`families!`] list below, which also makes it a `model.family` / `--model` value.

use std::fmt;

use tch::{Kind, Tensor, nn};
use tlcv_core::backbones::{Arch, Backbone};
use tlcv_core::onnx::{Graph, Value};
use tlcv_core::train::Parallel;

use crate::config::{DetectConfig, ModelConfig};
use crate::error::{DetectError, Result};
use crate::export::OnnxHead;
use crate::model_io::{Detections, Targets};
use crate::postprocess::{Detection, PostprocessConfig};

/// One training step's losses: the scalar to back-propagate and its named terms.
#[derive(Debug)]
pub struct StepLosses {
    /// Scalar to back-propagate.
    pub total: Tensor,
    /// Named terms (already weighted), for the logs.
    pub terms: Vec<(String, f64)>,
}

impl StepLosses {
    /// Named loss tensors summed into one scalar, in order (the terms as logged values).
    pub fn sum(terms: Vec<(String, Tensor)>, device: tch::Device) -> Self {
        let mut total = Tensor::zeros([], (Kind::Float, device));
        let mut out = Vec::with_capacity(terms.len());
        for (name, t) in terms {
            out.push((name, t.double_value(&[])));
            total += t;
        }
        Self { total, terms: out }
    }
}

/// Over which batches a training loss is normalised: this process's, or every data-parallel rank's
/// together. A loss divided by a count over its batch (YOLO's sum of target scores) takes the count
/// over all ranks and is multiplied by the world size, so that averaging the ranks' gradients (as
/// DDP does) gives one process's gradient on all the batches: a step at world size W is one
/// process's step on the W batches. Ultralytics normalises per rank, which a step at W does not equal.
#[derive(Debug, Clone, Copy)]
pub struct LossScope<'a> {
    /// The ranks, when there are several.
    parallel: Option<&'a dyn Parallel>,
}

impl<'a> LossScope<'a> {
    /// One process: the batch alone.
    pub const SINGLE: LossScope<'static> = LossScope { parallel: None };

    /// The batches of every rank of `parallel` (the batch alone at world size 1).
    pub fn ranks(parallel: &'a dyn Parallel) -> Self {
        Self { parallel: (parallel.world_size() > 1).then_some(parallel) }
    }

    /// The divisor of a loss whose per-batch normaliser is `local` (a scalar, counts clamped at 1):
    /// `max(local, 1)` alone, or `max(sum over ranks, 1) / world size` on several ranks. Every rank
    /// must call it at the same point of its step (an all-reduce).
    pub fn divisor(&self, local: &Tensor) -> Result<Tensor> {
        let Some(p) = self.parallel else { return Ok(local.clamp_min(1.0)) };
        let mut sum = [local.double_value(&[])];
        p.all_reduce_sum(&mut sum)?;
        let d = sum[0].max(1.0) / p.world_size() as f64;
        Ok(Tensor::from(d).to_kind(local.kind()).to_device(local.device()))
    }
}

/// What a family's `build` function gets.
#[derive(Debug)]
pub struct BuildContext<'a> {
    /// The root of the detector's `VarStore`.
    pub root: &'a nn::Path<'a>,
    /// The backbone architecture.
    pub arch: Arch,
    /// Foreground classes of the data.
    pub num_classes: i64,
    /// The whole configuration (the family reads its own section).
    pub cfg: &'a DetectConfig,
}

/// A family's constructor, registered in [`families!`].
pub type BuildFn = fn(&BuildContext<'_>) -> Result<Box<dyn DetectorFamily>>;

/// A detector family: backbone, neck, head and loss in one network.
///
/// Images are `[N, 3, S, S]`, normalised for the backbone and already in the compute kind and
/// memory layout of the detector; boxes are xyxy in input pixels.
pub trait DetectorFamily: fmt::Debug + Send {
    /// Training losses of a batch against padded ground truth (training mode, with gradients),
    /// normalised over `scope` where the family's loss has a batch-wide normaliser (YOLO's; SSD and
    /// Faster R-CNN normalise per rank, as torchvision's references do).
    fn forward_train(&self, xs: &Tensor, targets: &Targets, scope: LossScope<'_>) -> Result<StepLosses>;
    /// Detections per image in eval mode without gradients: scores above `cfg.conf`, at most
    /// `cfg.max_det`, best first.
    fn predict(&self, xs: &Tensor, cfg: &PostprocessConfig) -> Result<Vec<Vec<Detection>>>;
    /// The backbone (its stages and normalisation).
    fn backbone(&self) -> &dyn Backbone;
    /// Runs the first `n` backbone stages in eval mode (frozen).
    fn set_frozen_stages(&mut self, n: usize);
    /// Variable prefix of the backbone, where a classifier checkpoint is loaded (`backbone`).
    fn backbone_prefix(&self) -> &'static str;
    /// Prefixes of the variables after the backbone, which never freeze.
    fn head_prefixes(&self) -> &'static [&'static str];
    /// Backbone stages that train with `fine-tune` before the strategy caps them (a family may
    /// keep its own setting).
    fn trainable_layers(&self, model: &ModelConfig) -> usize {
        model.trainable_layers
    }
    /// The eval-mode network and its decoding, before NMS: boxes `[N, A, 4]` (input pixels) and
    /// per-class scores `[N, A, nc]`, what `detect export` writes without `--nms`.
    fn decoded(&self, xs: &Tensor) -> Result<(Tensor, Tensor)>;
    /// The eval-mode network as ONNX nodes (see [`crate::export`]): a one-stage family writes
    /// [`DetectorFamily::decoded`] and names its NMS rule ([`OnnxHead::Dense`]), leaving `pp` to the
    /// exporter; a two-stage family writes its detections with `pp` ([`OnnxHead::Detections`]) and
    /// fails on `None` (no `--nms`: it has no dense head to end at).
    fn to_onnx(&self, g: &mut Graph, x: &Value, pp: Option<&PostprocessConfig>) -> Result<OnnxHead>;
    /// The network's own name where the backbone does not name it (Ultralytics' `yolov8n`), for the
    /// exported model's metadata.
    fn network_name(&self) -> Option<String> {
        None
    }
    /// Loads `model.weights` itself when the family starts from its own whole-network checkpoints
    /// (Ultralytics' YOLO) and says so with `Ok(true)`; `Ok(false)` (the default) has the detector
    /// load a classifier checkpoint into the core backbone at [`DetectorFamily::backbone_prefix`].
    fn load_pretrained(&self, _vs: &nn::VarStore, _model: &ModelConfig) -> Result<bool> {
        Ok(false)
    }
}

/// Declares the families: the [`Family`] enum (config and CLI names, aliases) and each family's
/// constructor. One line per family.
macro_rules! families {
    ($($(#[$doc:meta])* $variant:ident = $name:literal $(| $alias:literal)* => $build:path,)+) => {
        /// The detector family (`model.family`, `--model`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Family {
            $($(#[$doc])* $variant,)+
        }

        impl Family {
            /// Every family, in the order of the README's table.
            pub const ALL: &'static [Family] = &[$(Family::$variant),+];

            /// The config and CLI name.
            pub fn name(self) -> &'static str {
                match self { $(Family::$variant => $name,)+ }
            }

            /// Other accepted spellings.
            fn aliases(self) -> &'static [&'static str] {
                match self { $(Family::$variant => &[$($alias),*],)+ }
            }

            /// The family's constructor.
            pub fn builder(self) -> BuildFn {
                match self { $(Family::$variant => $build,)+ }
            }
        }
    };
}

families! {
    /// Anchor-free, decoupled YOLOv8-style head with DFL and task-aligned assignment.
    Yolo = "yolo" => crate::yolo::build,
    /// Single-shot detector: default boxes on six levels, hard-negative mining.
    Ssd = "ssd" => crate::ssd::build,
    /// Two-stage detector: FPN, region proposals, RoIAlign and a box head.
    FasterRcnn = "faster-rcnn" | "fasterrcnn" => crate::faster_rcnn::build,
    /// Ultralytics' own YOLOv8 / YOLO11 (`model.ultralytics.arch`; `--model yolov8n` sets both),
    /// started from their checkpoints.
    Ultralytics = "ultralytics" => crate::ultralytics::family::build,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase().replace('_', "-");
        Family::ALL.iter().copied().find(|f| f.name() == t || f.aliases().contains(&t.as_str())).ok_or_else(|| {
            let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
            format!("unknown detector family `{t}`; use {}", names.join(", "))
        })
    }
}

impl serde::Serialize for Family {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Family {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A model's [`Detections`] -> the pipeline's detections, filtered by `cfg.conf` and capped.
pub fn to_detections(d: &Detections, cfg: &PostprocessConfig) -> Result<Vec<Detection>> {
    let boxes = Vec::<f32>::try_from(d.boxes.to_kind(Kind::Float).view([-1]))?;
    let scores = Vec::<f32>::try_from(d.scores.to_kind(Kind::Float))?;
    let labels = Vec::<i64>::try_from(d.labels.to_kind(Kind::Int64))?;
    let mut out: Vec<Detection> = scores
        .iter()
        .zip(&labels)
        .enumerate()
        .filter(|(_, (s, _))| f64::from(**s) > cfg.conf)
        .map(|(i, (s, l))| Detection {
            bbox: [0, 1, 2, 3].map(|c| f64::from(boxes[i * 4 + c])),
            score: f64::from(*s),
            class: (*l).max(0) as usize,
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.truncate(cfg.max_det);
    Ok(out)
}

/// Checks that the configuration fits every family (the input size) before one is built.
pub(crate) fn check_input_size(img_size: i64) -> Result<()> {
    if img_size < 32 || img_size % 32 != 0 {
        return Err(DetectError::Invalid(format!("data.img_size must be a positive multiple of 32, got {img_size}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_parse() {
        for f in Family::ALL {
            assert_eq!(f.name().parse::<Family>(), Ok(*f));
        }
        assert_eq!("faster_rcnn".parse::<Family>(), Ok(Family::FasterRcnn));
        assert_eq!("FasterRCNN".parse::<Family>(), Ok(Family::FasterRcnn));
        let err = "retina".parse::<Family>().err().unwrap_or_default();
        assert!(err.contains("yolo, ssd, faster-rcnn"), "{err}");
    }
}
