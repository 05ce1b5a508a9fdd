//! ONNX export of a trained segmentation network (`segment export`) and serving an exported file
//! with tract (`segment predict --onnx`). The graph is the backbone's own
//! (`Backbone::features_with_low_onnx`), then the U-Net or DeepLab head, then the bilinear resize to
//! the input size: output `logits` `[N, classes, H, W]`.

use tch::{Device, Tensor};
use tlcv_core::backbones::Normalization;
use tlcv_core::onnx::ops::{Interp, SizeOf};
use tlcv_core::onnx::{self, ExportOptions, Metadata, ModelProto, OnnxError, runtime::OnnxModel};

use crate::error::SegmentError;
use crate::model::{Head, SegModel};
use crate::predict::Segmenter;

/// The ONNX model of `model` for `classes`.
pub fn export(model: &SegModel, classes: &[String], opts: &ExportOptions) -> Result<ModelProto, SegmentError> {
    let norm = model.normalization();
    let (mut g, x) = onnx::begin(opts, Some(norm))?;
    g.name_params(model.vs.variables().iter());
    let logits = match &model.head {
        Head::Unet(head) => {
            let feats = model.backbone.features_with_low_onnx(&mut g, &x)?; // [C2, C3, C4, C5]
            head.to_onnx(&mut g, &x, &feats)?
        }
        Head::V3(head) => {
            let feats = model.backbone.features_onnx(&mut g, &x)?;
            let deep = feats.last().ok_or_else(|| SegmentError::Invalid("backbone gave no maps".into()))?;
            let y = head.to_onnx(&mut g, deep)?;
            g.resize(&y, SizeOf::Like(&x), Interp::BilinearHalfPixel)
        }
        Head::V3Plus(head) => {
            let feats = model.backbone.features_with_low_onnx(&mut g, &x)?;
            let (Some(low), Some(deep)) = (feats.first(), feats.last()) else {
                return Err(SegmentError::Invalid("backbone gave no maps".into()));
            };
            let y = head.to_onnx(&mut g, low, deep)?;
            g.resize(&y, SizeOf::Like(&x), Interp::BilinearHalfPixel)
        }
    };
    onnx::float_output(&mut g, &logits, "logits", &["batch"]);
    let mut meta = Metadata::new("segment", &format!("{}/{}", model.kind, model.arch), opts, Some(norm));
    meta.names(classes);
    let s = opts.img_size.map_or(0, |(h, _)| h);
    meta.set("preprocess", &format!("resize to {s}x{s} (no letterbox); upsample the logits back and take the arg-max"));
    meta.set("outputs", "logits [N, classes, H, W] at the input size");
    let doc = format!("tlcv segment: {} on {} with {} classes", model.kind, model.arch, classes.len());
    Ok(onnx::finish(g, &doc, meta))
}

impl From<OnnxError> for SegmentError {
    fn from(e: OnnxError) -> Self {
        SegmentError::Invalid(e.to_string())
    }
}

/// An exported segmentation network served by tract.
#[derive(Debug)]
pub struct OnnxSegmenter {
    /// The model.
    pub model: OnnxModel,
    /// Class names from the metadata.
    pub classes: Vec<String>,
    /// Input side.
    pub img_size: i64,
}

impl OnnxSegmenter {
    /// Loads a file written by `segment export`.
    pub fn load(path: &std::path::Path) -> Result<Self, SegmentError> {
        let model = OnnxModel::load(path)?;
        model.expect_task("segment")?;
        let Some((img_size, _)) = model.input_size() else {
            return Err(SegmentError::Invalid(format!("{}: the model has no fixed input size", path.display())));
        };
        let classes: Vec<String> =
            model.metadata().get("names").and_then(|n| serde_json::from_str(n).ok()).unwrap_or_default();
        if classes.is_empty() {
            return Err(SegmentError::Invalid(format!("{}: no class names in the metadata", path.display())));
        }
        Ok(Self { model, classes, img_size })
    }
}

impl Segmenter for OnnxSegmenter {
    fn logits(&self, xs: &Tensor) -> Result<Tensor, SegmentError> {
        let mut outs = self.model.run(xs)?;
        outs.drain(..).next().ok_or_else(|| SegmentError::Invalid("the model has no output".into()))
    }
    fn input_normalization(&self) -> Option<Normalization> {
        None
    }
    fn num_classes(&self) -> i64 {
        self.classes.len() as i64
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
}
