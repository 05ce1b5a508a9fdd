//! ONNX export and serving.
//!
//! tlcv writes the graph itself from its module tree: every layer has a `to_onnx` that emits the
//! nodes of its eval-mode forward ([`layers`], the backbone families in [`crate::backbones`], the task
//! heads in their crates) into a [`Graph`], whose protobuf types come from `tract-onnx`
//! (`tract_onnx::pb`, prost-generated from `onnx.proto`). [`runtime`] runs an exported file with
//! tract, a pure-Rust runtime, for `predict --onnx`.
//!
//! # The input contract
//! One input `images`: float32, `[N, 3, H, W]` (NCHW), RGB, pixel values divided by 255 (range
//! `0..1`). The backbone's normalisation `(x - mean) / std` is written as two nodes (`Sub`, `Div`) right
//! after the input, not folded into the first convolution (whose zero padding would then pad with the
//! mean colour). Batch norms are folded into their convolutions. The metadata ([`Metadata`]) says all
//! of this, plus the class names, strides and outputs, so a consumer needs nothing else.
//!
//! # Precision and shapes
//! `--half` stores the weights and runs the network in float16 between a `Cast` after the input and
//! one before each output (the input and outputs stay float32). The batch is fixed (1) unless
//! `--dynamic-batch`; H and W are fixed at `--img-size`, except for the fully convolutional style
//! network, which takes any size.

pub mod cli;
pub mod graph;
pub mod layers;
pub mod ops;
pub mod parity;
mod roi_align_op;
pub mod runtime;

use std::path::Path;

use prost::Message;
use tract_onnx::pb;

pub use graph::{FloatKind, Graph, Value};
/// The ONNX model type (prost-generated, from `tract-onnx`).
pub use tract_onnx::pb::ModelProto;

use crate::backbones::Normalization;

/// What export and the ONNX runtime can fail with.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The model (or an option) uses something the exporter cannot write; the message says what.
    #[error("ONNX export: {0}")]
    Unsupported(String),
    /// A file given to `--onnx` is not a model tlcv can run; the message says why.
    #[error("{path}: not a usable ONNX model: {reason}")]
    Malformed { path: String, reason: String },
    /// The runtime failed on a valid model.
    #[error("ONNX runtime: {0}")]
    Runtime(String),
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, OnnxError>;

impl From<crate::Error> for OnnxError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Torch(t) => OnnxError::Torch(t),
            crate::Error::Onnx(o) => o,
            other => OnnxError::Unsupported(other.to_string()),
        }
    }
}

/// The name of the graph input.
pub const INPUT_NAME: &str = "images";
/// The default opset.
pub const DEFAULT_OPSET: i64 = 17;

/// How to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// ONNX opset (13 to 21; default 17).
    pub opset: i64,
    /// A symbolic batch dimension (`batch`) instead of a fixed 1.
    pub dynamic_batch: bool,
    /// Fixed `(H, W)` of the input; `None` = any size (fully convolutional networks only).
    pub img_size: Option<(i64, i64)>,
    /// Weights and network in float16.
    pub half: bool,
}

impl ExportOptions {
    /// Opset 17, batch 1, float32, a square input of `size`.
    pub fn new(size: i64) -> Self {
        ExportOptions { opset: DEFAULT_OPSET, dynamic_batch: false, img_size: Some((size, size)), half: false }
    }
}

/// The model's metadata (ONNX `metadata_props`): the input contract and what the outputs mean.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    props: Vec<(String, String)>,
}

impl Metadata {
    /// The standard keys: `task`, `model`, the input contract (`input_name`, `input_layout`,
    /// `input_color`, `input_range`, `input_size`), where and how the normalisation happens
    /// (`normalization`, `mean`, `std`), `precision`, `dynamic_batch` and `opset`.
    pub fn new(task: &str, model: &str, opts: &ExportOptions, norm: Option<Normalization>) -> Self {
        let mut m = Metadata::default();
        m.set("task", task);
        m.set("model", model);
        m.set("input_name", INPUT_NAME);
        m.set("input_layout", "NCHW");
        m.set("input_color", "RGB");
        m.set("input_range", "0..1 (float32 pixels / 255)");
        m.set("input_size", &opts.img_size.map_or_else(|| "any".to_string(), |(h, w)| format!("{h}x{w}")));
        match norm {
            Some(n) => {
                m.set("normalization", "in graph: (x - mean) / std right after the input (Sub, Div)");
                m.set("mean", &json_floats(&n.mean));
                m.set("std", &json_floats(&n.std));
            }
            None => m.set("normalization", "none (the network takes 0..1 pixels as they are)"),
        }
        m.set("batch_norm", "folded into the convolutions");
        m.set("precision", if opts.half { "float16 (float32 input and outputs)" } else { "float32" });
        m.set("dynamic_batch", if opts.dynamic_batch { "true" } else { "false" });
        m.set("opset", &opts.opset.to_string());
        m
    }

    /// Sets (or replaces) one key.
    pub fn set(&mut self, key: &str, value: &str) {
        self.props.retain(|(k, _)| k != key);
        self.props.push((key.to_string(), value.to_string()));
    }

    /// Sets `names` to the class names as a JSON array.
    pub fn names(&mut self, names: &[String]) {
        self.set("names", &serde_json::to_string(names).unwrap_or_else(|_| "[]".into()));
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The pairs, in insertion order.
    pub fn into_props(self) -> Vec<(String, String)> {
        self.props
    }

    /// Reads the metadata of a model.
    pub fn from_model(m: &pb::ModelProto) -> Self {
        Metadata { props: m.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect() }
    }
}

fn json_floats(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
    format!("[{}]", parts.join(", "))
}

/// A new graph for `opts` with the input declared: returns the graph and the network's input value
/// (after the float16 cast and the normalisation, when there are any).
pub fn begin(opts: &ExportOptions, norm: Option<Normalization>) -> Result<(Graph, Value)> {
    let float = if opts.half { FloatKind::F16 } else { FloatKind::F32 };
    let mut g = Graph::new(opts.opset, float)?;
    let batch = if opts.dynamic_batch { None } else { Some(1) };
    let (h, w) = match opts.img_size {
        Some((h, w)) => (Some(h), Some(w)),
        None => (None, None),
    };
    let x = g.input(INPUT_NAME, vec![batch, Some(3), h, w], &["batch", "", "height", "width"]);
    let x = g.cast_float(&x, FloatKind::F32);
    let x = match norm {
        Some(n) => layers::normalize(&mut g, &x, n)?,
        None => x,
    };
    Ok((g, x))
}

/// Declares a network output (cast back to float32 after a float16 network).
pub fn float_output(g: &mut Graph, v: &Value, name: &str, sym: &[&str]) {
    let from = g.float_kind();
    let v = if from == FloatKind::F16 { g.cast(v, pb::tensor_proto::DataType::Float) } else { v.clone() };
    g.output(&v, name, sym);
}

/// Encodes the finished graph with its metadata.
pub fn finish(g: Graph, doc: &str, meta: Metadata) -> pb::ModelProto {
    g.into_model(doc, meta.into_props())
}

/// Writes `model` to `path` (atomically).
pub fn save(model: &pb::ModelProto, path: &Path) -> crate::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    }
    crate::run::write_atomic(path, &model.encode_to_vec())
}
