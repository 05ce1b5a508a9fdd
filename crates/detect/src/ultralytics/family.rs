//! YOLOv8 / YOLO11 as a [`DetectorFamily`] (`model.family = "ultralytics"`, `--model yolov8n`): the
//! exact network, started from an Ultralytics checkpoint, trained with the crate's YOLO loss
//! (task-aligned assignment, BCE, CIoU, DFL at Ultralytics' gains) on the crate's data, augmentation
//! and training loop, evaluated and saved like every family. The saved state dict keeps
//! Ultralytics' names, so `DetectionModel(yaml, nc).load_state_dict(..., strict=True)` takes it.
//!
//! Transfer ([`DetectorFamily::load_pretrained`]): every checkpoint tensor whose shape fits is kept;
//! the class branch's last convolutions (`model.<detect>.cv3.<i>.2`) are re-initialised when the
//! class count differs; both lists are printed. Freezing counts the modules of the `model` list,
//! whose backbone modules (0-9 in YOLOv8, 0-10 in YOLO11) are the stages: `feature-extract` freezes
//! them all, `fine-tune` trains the last `trainable_layers`, or with `freeze = N` (Ultralytics'
//! `freeze=N`) all but the first N (`scratch` trains everything); neck and head always train.
//! Frozen modules keep their batch-norm statistics.
//!
//! Export (`detect export`, [`DetectorFamily::to_onnx`]): the whole network and `Detect`'s decoding
//! as ONNX nodes for a fixed input size (the batch may be dynamic), ending at
//! [`DetectorFamily::decoded`]'s xyxy boxes and class probabilities; with `--nms` each anchor's best
//! class goes through ONNX's `NonMaxSuppression`, keeping the boxes [`non_max_suppression`] keeps.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor, nn};
use tlcv_core::backbones::Backbone;
use tlcv_core::checkpoint::{LoadOptions, load_into};
use tlcv_core::onnx::{Graph, OnnxError, Value};
use tlcv_core::weights::WeightsSource;

use super::checkpoint;
use super::postprocess::{MAX_NMS, NmsConfig, non_max_suppression};
use super::spec::YoloArch;
use super::{STRIDES, UltralyticsYolo};
use crate::config::ModelConfig;
use crate::error::{DetectError, Result};
use crate::export::{DenseHead, NmsRule, OnnxHead};
use crate::family::{BuildContext, DetectorFamily, LossScope, StepLosses};
use crate::model_io::Targets;
use crate::postprocess::{Detection, PostprocessConfig};
use crate::yolo::anchors::anchor_points;
use crate::yolo::loss::YoloLoss;

/// Folder of the pretrained checkpoints that ship with the repository (`assets/models/<arch>.pt`).
pub const SHIPPED: &str = "assets/models";

/// The network with its loss.
#[derive(Debug)]
pub struct YoloFamily {
    /// The network.
    pub model: UltralyticsYolo,
    loss: YoloLoss,
}

/// The pretrained checkpoint `model.weights` names: `None` for `none`, the shipped
/// `assets/models/<arch>.pt` for `imagenet` (the config default: the pretrained start), else the file.
pub fn weights_file(weights: &WeightsSource, arch: YoloArch) -> Result<Option<PathBuf>> {
    let path = match weights {
        WeightsSource::None => return Ok(None),
        WeightsSource::ImageNet => tlcv_core::paths::workspace_root()?.join(SHIPPED).join(format!("{arch}.pt")),
        WeightsSource::File(file) => file.clone(),
    };
    if path.is_file() {
        return Ok(Some(path));
    }
    Err(DetectError::Invalid(match weights {
        WeightsSource::ImageNet => format!(
            "no pretrained {arch} ships with tlcv ({} is missing): give --weights FILE (an Ultralytics .pt), or \
             --weights none --strategy scratch",
            path.display()
        ),
        _ => format!("weights file {} does not exist", path.display()),
    }))
}

/// Builds `model.ultralytics.arch` for the data's classes.
pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn DetectorFamily>> {
    let m = &ctx.cfg.model;
    let arch = m.ultralytics.arch;
    if let Some(n) = m.ultralytics.freeze {
        let backbone = arch.backbone_len();
        if n > backbone {
            return Err(DetectError::Invalid(format!(
                "freeze = {n} is out of range: {arch}'s backbone has {backbone} modules (the neck and head always \
                 train), so it must be 0..={backbone}"
            )));
        }
    }
    let model = UltralyticsYolo::new(ctx.root, arch, ctx.num_classes)?;
    let loss = YoloLoss { cfg: ctx.cfg.loss.clone(), reg_max: super::head::REG_MAX };
    Ok(Box::new(YoloFamily { model, loss }))
}

/// Copies every checkpoint tensor whose name and shape fit into `vs` (the rest keeps its fresh
/// initialisation) and prints what it did. Names that are in only one of them are an error: the
/// checkpoint is another network.
fn transfer(vs: &nn::VarStore, arch: YoloArch, path: &Path) -> Result<()> {
    let ck = checkpoint::read(path)?;
    if let Some(a) = ck.arch
        && a != arch
    {
        return Err(DetectError::Invalid(format!("{}: the checkpoint holds {a}, not {arch}", path.display())));
    }
    let vars = vs.variables();
    let reinit: Vec<String> = ck
        .state_dict
        .iter()
        .filter(|(name, t)| vars.get(*name).is_some_and(|v| v.size() != t.size()))
        .map(|(name, _)| name.to_string())
        .collect();
    let opts = LoadOptions { strict: true, ignore_prefixes: reinit.clone() };
    let report = load_into(vs, &ck.state_dict, &opts)
        .map_err(|e| DetectError::Invalid(format!("{}: not a {arch} checkpoint: {e}", path.display())))?;
    let shown = if reinit.is_empty() { "nothing".to_string() } else { reinit.join(", ") };
    eprintln!(
        "weights: {} ({arch}, {}, {} classes): kept {} tensors; re-initialised {shown}",
        path.display(),
        ck.source,
        ck.nc,
        report.loaded.len()
    );
    Ok(())
}

impl DetectorFamily for YoloFamily {
    fn forward_train(&self, xs: &Tensor, targets: &Targets, scope: LossScope<'_>) -> Result<StepLosses> {
        let mut out = self.model.forward_raw(xs, true); // [N, A, nc], [N, A, 64]
        (out.cls, out.dist) = (out.cls.to_kind(Kind::Float), out.dist.to_kind(Kind::Float));
        let anchors = anchor_points(&out.shapes, &STRIDES, 0.5, out.cls.device());
        Ok(self.loss.compute(&out, &anchors, targets, scope)?.into())
    }

    /// Ultralytics' `non_max_suppression` with the given thresholds on the eval output.
    fn predict(&self, xs: &Tensor, cfg: &PostprocessConfig) -> Result<Vec<Vec<Detection>>> {
        let y = tch::no_grad(|| self.model.forward_eval(xs)).to_kind(Kind::Float).to_device(Device::Cpu);
        non_max_suppression(&y, &NmsConfig { conf: cfg.conf, iou: cfg.iou, max_det: cfg.max_det })
    }

    fn backbone(&self) -> &dyn Backbone {
        &self.model
    }

    fn set_frozen_stages(&mut self, n: usize) {
        self.model.set_frozen_modules(n);
    }

    fn backbone_prefix(&self) -> &'static str {
        "model"
    }

    fn head_prefixes(&self) -> &'static [&'static str] {
        self.model.arch.head_prefixes()
    }

    fn trainable_layers(&self, model: &ModelConfig) -> usize {
        let backbone = self.model.arch.backbone_len();
        model.ultralytics.freeze.map_or(model.trainable_layers, |n| backbone.saturating_sub(n))
    }

    fn network_name(&self) -> Option<String> {
        Some(self.model.arch.to_string())
    }

    fn load_pretrained(&self, vs: &nn::VarStore, model: &ModelConfig) -> Result<bool> {
        if let Some(file) = weights_file(&model.weights, self.model.arch)? {
            transfer(vs, self.model.arch, &file)?;
        }
        Ok(true)
    }

    /// The eval output `[N, 4 + nc, A]` as boxes `[N, A, 4]` (xyxy as [`xywh_to_xyxy`], what
    /// [`non_max_suppression`] computes) and class probabilities `[N, A, nc]`, in float32.
    fn decoded(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        let y = tch::no_grad(|| self.model.forward_eval(xs)).to_kind(Kind::Float).transpose(1, 2); // [N, A, 4 + nc]
        let nc = y.size()[2] - 4;
        Ok((xywh_to_xyxy(&y.narrow(2, 0, 4)), y.narrow(2, 4, nc).contiguous()))
    }

    /// The network, `Detect`'s decoding and the xyxy conversion of [`DetectorFamily::decoded`] as ONNX
    /// nodes; NMS (`--nms`) keeps each anchor's best class, as [`non_max_suppression`] does.
    fn to_onnx(&self, g: &mut Graph, x: &Value, _: Option<&PostprocessConfig>) -> Result<OnnxHead> {
        let (xywh, scores) = self.model.to_onnx(g, x)?; // [N, A, 4], [N, A, nc]
        let boxes = xywh_to_xyxy_onnx(g, &xywh)?;
        let strides = Some(STRIDES.to_vec());
        Ok(OnnxHead::Dense(DenseHead { boxes, scores, nms: NmsRule::BestClass { max_candidates: MAX_NMS }, strides }))
    }
}

/// `[.., 4]` centre x, centre y, width, height -> x1, y1, x2, y2, as Ultralytics' `xywh2xyxy`:
/// `x - w / 2`, `y - h / 2`, `x + w / 2`, `y + h / 2` in the tensor's kind.
pub fn xywh_to_xyxy(xywh: &Tensor) -> Tensor {
    let xy = xywh.narrow(-1, 0, 2);
    let half = xywh.narrow(-1, 2, 2) / 2.0;
    Tensor::cat(&[&xy - &half, &xy + &half], -1)
}

/// [`xywh_to_xyxy`] as ONNX nodes: `[N, A, 4]` -> `[N, A, 4]`.
fn xywh_to_xyxy_onnx(g: &mut Graph, xywh: &Value) -> std::result::Result<Value, OnnxError> {
    let xy = g.slice(xywh, 2, 0, 2);
    let wh = g.slice(xywh, 2, 2, 4);
    let half = g.scalar("Div", &wh, 2.0)?;
    let x1y1 = g.binary("Sub", &xy, &half);
    let x2y2 = g.binary("Add", &xy, &half);
    Ok(g.concat(&[&x1y1, &x2y2], 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DetectConfig;
    use tlcv_core::freeze::Strategy;

    fn family(arch: &str, strategy: Strategy, freeze: Option<usize>) -> Result<Box<dyn DetectorFamily>> {
        let mut cfg = DetectConfig::default();
        cfg.model.ultralytics.arch = arch.parse().map_err(DetectError::Invalid)?;
        (cfg.model.strategy, cfg.model.ultralytics.freeze) = (strategy, freeze);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        build(&BuildContext { root: &root, arch: tlcv_core::backbones::Arch::Resnet18, num_classes: 3, cfg: &cfg })
    }

    #[test]
    fn the_backbone_modules_are_the_stages() {
        // Widths from the YAMLs at width 0.25: yolov8n C2f 256/512, SPPF 1024; yolo11n C3k2 512/512, C2PSA 1024.
        for (arch, modules, c3) in [("yolov8n", 10, 64), ("yolo11n", 11, 128)] {
            let f = family(arch, Strategy::FineTune, None).unwrap_or_else(|e| unreachable!("{e}"));
            assert_eq!(f.backbone().stages().len(), modules, "{arch}");
            assert_eq!(f.head_prefixes().len(), 13, "{arch}: neck and Detect");
            let info: Vec<(i64, i64)> = f.backbone().feature_info().iter().map(|i| (i.stride, i.channels)).collect();
            assert_eq!(info, [(8, c3), (16, 128), (32, 256)], "{arch}");
        }
    }

    #[test]
    fn freeze_counts_modules_from_the_first() {
        let f = family("yolov8n", Strategy::FineTune, Some(4)).unwrap_or_else(|e| unreachable!("{e}"));
        let mut m = ModelConfig::default();
        m.ultralytics.freeze = Some(4);
        assert_eq!(f.trainable_layers(&m), 6, "freeze=4 leaves modules 4-9 training");
        assert!(family("yolov8n", Strategy::FineTune, Some(11)).is_err(), "past the backbone");
    }

    #[test]
    fn decoded_is_the_eval_output_in_xyxy() {
        for arch in ["yolov8n", "yolo11n"] {
            tch::manual_seed(7);
            let vs = nn::VarStore::new(Device::Cpu);
            let arch: YoloArch = arch.parse().unwrap_or_else(|e| unreachable!("{e}"));
            let model = UltralyticsYolo::new(&vs.root(), arch, 3).unwrap_or_else(|e| unreachable!("{e}"));
            let f =
                YoloFamily { model, loss: YoloLoss { cfg: Default::default(), reg_max: super::super::head::REG_MAX } };
            let xs = Tensor::rand([2, 3, 64, 96], (Kind::Float, Device::Cpu));
            let eval = tch::no_grad(|| f.model.forward_eval(&xs)); // [N, 4 + nc, A]
            let (boxes, scores) = f.decoded(&xs).unwrap_or_else(|e| unreachable!("{e}"));
            let a = (8 * 12) + (4 * 6) + (2 * 3);
            assert_eq!((boxes.size(), scores.size()), (vec![2, a, 4], vec![2, a, 3]), "{arch}");
            // xywh2xyxy on every row, in float32 as non_max_suppression computes it.
            let rows = Vec::<f32>::try_from(eval.transpose(1, 2).contiguous().view([-1])).unwrap_or_default();
            let want: Vec<f32> = rows
                .chunks_exact(7)
                .flat_map(|r| {
                    let (hw, hh) = (r[2] / 2.0, r[3] / 2.0);
                    [r[0] - hw, r[1] - hh, r[0] + hw, r[1] + hh]
                })
                .collect();
            let got = Vec::<f32>::try_from(boxes.contiguous().view([-1])).unwrap_or_default();
            assert_eq!(got, want, "{arch}: boxes");
            let probs = eval.narrow(1, 4, 3).transpose(1, 2);
            assert!(scores.equal(&probs), "{arch}: scores");
        }
    }
}
