//! ONNX export of a trained classifier (`classify export`) and serving an exported file with tract
//! (`classify predict --onnx`). The graph is the backbone's own (`ClassifierNet::penultimate_onnx`),
//! then the linear head or the MLP head, then optionally a softmax; the metadata carries the class
//! names and the eval preprocessing.

use tch::Tensor;
use tlcv_core::onnx::{self, ExportOptions, Graph, Metadata, ModelProto, OnnxError, Value, runtime::OnnxModel};

use crate::{
    ClassifyError, Result,
    model::{MLP_PREFIX, Model},
    predict::Logits,
};

/// The MLP head's ONNX nodes: `Gemm`, `Relu`, `Gemm` on the `mlp_head.{0,2}` variables.
fn mlp_onnx(model: &Model, g: &mut Graph, x: &Value) -> std::result::Result<Value, OnnxError> {
    let vars = model.vs.variables();
    let get = |k: &str| {
        vars.get(&format!("{MLP_PREFIX}.{k}"))
            .ok_or_else(|| OnnxError::Unsupported(format!("MLP head without {MLP_PREFIX}.{k}")))
    };
    let h = g.linear(x, get("0.weight")?, get("0.bias")?)?;
    let h = g.unary("Relu", &h);
    g.linear(&h, get("2.weight")?, get("2.bias")?)
}

/// The ONNX model of `model` for `classes`: output `logits` `[N, classes]`, or `probs` with `softmax`.
pub fn export(model: &Model, classes: &[String], opts: &ExportOptions, softmax: bool) -> Result<ModelProto> {
    let norm = model.normalization();
    let (mut g, x) = onnx::begin(opts, Some(norm))?;
    g.name_params(model.vs.variables().iter());
    let feats = model.net.penultimate_onnx(&mut g, &x)?; // [N, D]
    let logits = match &model.mlp {
        Some(_) => mlp_onnx(model, &mut g, &feats),
        None => model.net.head_onnx(&mut g, &feats),
    }?;
    let out = if softmax { g.softmax(&logits, 1) } else { logits };
    onnx::float_output(&mut g, &out, if softmax { "probs" } else { "logits" }, &["batch"]);
    let doc = format!("tlcv classify: {} with {} classes", model.arch, classes.len());
    Ok(onnx::finish(g, &doc, metadata(model, classes, opts, softmax)))
}

/// The metadata of a classifier export.
pub fn metadata(model: &Model, classes: &[String], opts: &ExportOptions, softmax: bool) -> Metadata {
    let mut m = Metadata::new("classify", model.arch.name(), opts, Some(model.normalization()));
    m.names(classes);
    let s = opts.img_size.map_or(0, |(h, _)| h);
    m.set("preprocess", &format!("resize the shorter side to {s} px, centre crop {s}x{s}"));
    m.set("outputs", if softmax { "probs [N, classes] (softmax)" } else { "logits [N, classes]" });
    m
}

/// An exported classifier served by tract, with its class names.
#[derive(Debug)]
pub struct OnnxClassifier {
    /// The model.
    pub model: OnnxModel,
    /// Class names from the metadata (indices when absent).
    pub classes: Vec<String>,
    /// Input side.
    pub img_size: i64,
    softmax: bool,
}

impl OnnxClassifier {
    /// Loads a file written by `classify export`.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let model = OnnxModel::load(path)?;
        model.expect_task("classify")?;
        let Some((img_size, _)) = model.input_size() else {
            return Err(ClassifyError::Invalid(format!("{}: the model has no fixed input size", path.display())));
        };
        let meta = model.metadata();
        let classes: Vec<String> = meta.get("names").and_then(|n| serde_json::from_str(n).ok()).unwrap_or_default();
        let softmax = meta.get("outputs").is_some_and(|o| o.starts_with("probs"));
        Ok(Self { model, classes, img_size, softmax })
    }
}

impl Logits for OnnxClassifier {
    fn logits(&self, xs: &Tensor) -> std::result::Result<Tensor, String> {
        let mut outs = self.model.run(xs).map_err(|e| e.to_string())?;
        let first = outs.drain(..).next().ok_or_else(|| "the model has no output".to_string())?;
        // A softmax export gives probabilities: their log is a logit vector with the same softmax.
        Ok(if self.softmax { first.log() } else { first })
    }
    fn input_normalization(&self) -> Option<tlcv_core::backbones::Normalization> {
        None
    }
}
