//! Serving an exported model with tract, a pure-Rust ONNX runtime (`predict --onnx FILE`).
//!
//! A file is checked before tract sees it: it must decode as an ONNX `ModelProto`, have one float
//! input `[N, 3, H, W]` and carry tlcv's metadata (`task`, ...). Anything tract still refuses is a
//! [`OnnxError::Malformed`] (parsing) or [`OnnxError::Runtime`] (running) error, and a panic inside tract
//! on a hostile file is caught and reported the same way, so a bad file is always a one-line error.
//! One optimised plan is built per batch size and kept.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex};

use prost::Message;
use tch::{Kind, Tensor};
use tract_onnx::pb;
use tract_onnx::prelude::{
    Datum, Framework, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable, TValue, TypedRunnableModel, tvec,
};

use super::{Metadata, OnnxError};

type Result<T> = std::result::Result<T, OnnxError>;

/// Largest input side a served model may declare (pixels).
const MAX_SIDE: i64 = 8192;

/// An exported model loaded into tract.
#[derive(Debug)]
pub struct OnnxModel {
    label: String,
    model: InferenceModel,
    meta: Metadata,
    /// Fixed `(H, W)` of the input, `None` when any size is accepted.
    input_hw: Option<(i64, i64)>,
    /// Fixed batch of the input, `None` when dynamic.
    batch: Option<i64>,
    plans: Mutex<HashMap<Vec<i64>, Arc<TypedRunnableModel>>>,
}

/// Runs `f`, turning a panic into `err(message)` (tract's parsers and planners are not all
/// panic-free on hostile input). The default hook would print the panic: it is silenced meanwhile.
fn guarded<T>(f: impl FnOnce() -> Result<T>, err: impl FnOnce(String) -> OnnxError) -> Result<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    out.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "internal error".into());
        Err(err(format!("runtime panicked: {msg}")))
    })
}

fn tract_msg(e: impl std::fmt::Display) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// Sets how many threads tract's matrix products use (default: every core, as libtorch); the
/// first call wins.
pub fn set_threads(n: usize) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use tract_linalg::multithread::{Executor, set_default_executor};
        if n > 1 {
            set_default_executor(Executor::multithread(n));
        }
    });
}

/// tract's ONNX parser with the operators tlcv exports and tract lacks (Faster R-CNN's `RoiAlign`).
fn parser() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    super::roi_align_op::register(&mut onnx);
    onnx
}

impl OnnxModel {
    /// Loads `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| OnnxError::Io { path: path.to_path_buf(), source })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Loads a model from its bytes; `label` names it in errors.
    pub fn from_bytes(bytes: &[u8], label: &str) -> Result<Self> {
        set_threads(std::thread::available_parallelism().map_or(1, |n| n.get()));
        let bad = |reason: String| OnnxError::Malformed { path: label.to_string(), reason };
        let proto = pb::ModelProto::decode(bytes).map_err(|e| bad(format!("not an ONNX protobuf ({e})")))?;
        let (batch, input_hw) = check_input(&proto).map_err(&bad)?;
        let meta = Metadata::from_model(&proto);
        if meta.get("task").is_none() {
            return Err(bad("no `task` metadata: not a model exported by tlcv".into()));
        }
        let model = guarded(|| parser().model_for_proto_model(&proto).map_err(|e| bad(tract_msg(e))), bad)?;
        Ok(OnnxModel { label: label.into(), model, meta, input_hw, batch, plans: Mutex::new(HashMap::new()) })
    }

    /// The model's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The fixed input size `(H, W)`, if the model has one.
    pub fn input_size(&self) -> Option<(i64, i64)> {
        self.input_hw
    }

    /// Checks that the model was exported for `task` (`classify`, `detect`, ...).
    pub fn expect_task(&self, task: &str) -> Result<()> {
        match self.meta.get("task") {
            Some(t) if t == task => Ok(()),
            other => Err(OnnxError::Malformed {
                path: self.label.clone(),
                reason: format!("exported for task {:?}, not {task}", other.unwrap_or("?")),
            }),
        }
    }

    fn plan(&self, shape: &[i64]) -> Result<Arc<TypedRunnableModel>> {
        let runtime = |m: String| OnnxError::Runtime(format!("{}: {m}", self.label));
        if let Some(p) = self.plans.lock().map_err(|_| runtime("plan cache poisoned".into()))?.get(shape) {
            return Ok(p.clone());
        }
        let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let plan = guarded(
            || {
                let fact = InferenceFact::dt_shape(f32::datum_type(), dims);
                let m = self.model.clone().with_input_fact(0, fact).map_err(|e| runtime(tract_msg(e)))?;
                let typed = m.into_optimized().map_err(|e| runtime(tract_msg(e)))?;
                typed.into_runnable().map_err(|e| runtime(tract_msg(e)))
            },
            runtime,
        )?;
        self.plans
            .lock()
            .map_err(|_| OnnxError::Runtime("plan cache poisoned".into()))?
            .insert(shape.to_vec(), plan.clone());
        Ok(plan)
    }

    /// Runs `[N, 3, H, W]` float32 pixels in `0..1` through the model; returns its outputs in order
    /// (float32 or int64 tensors on the CPU). A model exported with a batch of 1 takes any `N`, one
    /// image at a time.
    pub fn run(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let shape = x.size();
        if shape.len() != 4 || shape[1] != 3 {
            return Err(OnnxError::Runtime(format!("input must be [N, 3, H, W], got {shape:?}")));
        }
        if let Some((h, w)) = self.input_hw.filter(|&hw| hw != (shape[2], shape[3])) {
            return Err(OnnxError::Runtime(format!(
                "{} takes {h}x{w} inputs, got {}x{}",
                self.label, shape[2], shape[3]
            )));
        }
        if let Some(b) = self.batch.filter(|&b| b != shape[0]) {
            if b != 1 {
                return Err(OnnxError::Runtime(format!("{} takes batches of {b}, got {}", self.label, shape[0])));
            }
            // A batch-1 export runs a larger batch image by image.
            let per_image = (0..shape[0]).map(|i| self.run(&x.narrow(0, i, 1))).collect::<Result<Vec<_>>>()?;
            let outputs = per_image.first().map_or(0, Vec::len);
            return (0..outputs)
                .map(|k| Ok(Tensor::f_cat(&per_image.iter().map(|o| &o[k]).collect::<Vec<_>>(), 0)?))
                .collect();
        }
        let plan = self.plan(&shape)?;
        let data = Vec::<f32>::try_from(x.f_to_kind(Kind::Float)?.f_contiguous()?.f_reshape([-1])?)?;
        let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let input =
            tract_onnx::prelude::Tensor::from_shape(&dims, &data).map_err(|e| OnnxError::Runtime(tract_msg(e)))?;
        let runtime = |m: String| OnnxError::Runtime(format!("{}: {m}", self.label));
        let outs = guarded(|| plan.run(tvec!(TValue::from(input))).map_err(|e| runtime(tract_msg(e))), runtime)?;
        outs.iter().map(to_tch).collect()
    }
}

/// What `predict --onnx` does with a file, on bytes: load it and, when its input is small (at most
/// 64 x 64 pixels, or free), run one zero image through it. The `onnx_model` fuzz target and the
/// regression test of its inputs call this; it must never panic.
pub fn probe(bytes: &[u8]) -> Result<Vec<Tensor>> {
    let m = OnnxModel::from_bytes(bytes, "input")?;
    let (h, w) = m.input_size().unwrap_or((32, 32));
    if h * w > 64 * 64 {
        return Ok(Vec::new());
    }
    m.run(&Tensor::zeros([m.batch.unwrap_or(1), 3, h, w], (Kind::Float, tch::Device::Cpu)))
}

/// A tract output as a tch tensor.
fn to_tch(v: &TValue) -> Result<Tensor> {
    let err = |e: tract_onnx::prelude::TractError| OnnxError::Runtime(tract_msg(e));
    let dims: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
    let t = if let Ok(view) = v.to_plain_array_view::<f32>() {
        Tensor::from_slice(&view.iter().copied().collect::<Vec<f32>>())
    } else {
        let view = v.cast_to::<i64>().map_err(err)?;
        let view = view.to_plain_array_view::<i64>().map_err(err)?;
        Tensor::from_slice(&view.iter().copied().collect::<Vec<i64>>())
    };
    Ok(t.f_reshape(&dims)?)
}

/// The fixed batch and `(H, W)` of a model's input (`None` where symbolic).
type InputDims = (Option<i64>, Option<(i64, i64)>);

fn check_input(proto: &pb::ModelProto) -> std::result::Result<InputDims, String> {
    use pb::tensor_shape_proto::dimension::Value as D;
    let graph = proto.graph.as_ref().ok_or("no graph")?;
    let inits: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph.input.iter().filter(|i| !inits.contains(&i.name.as_str())).collect();
    let [input] = inputs.as_slice() else {
        return Err(format!("expected one input, found {}", inputs.len()));
    };
    let Some(pb::type_proto::Value::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(format!("input {:?} is not a tensor", input.name));
    };
    if t.elem_type != pb::tensor_proto::DataType::Float as i32 {
        return Err(format!("input {:?} is not float32", input.name));
    }
    let dims: Vec<Option<i64>> = t
        .shape
        .as_ref()
        .map(|s| s.dim.iter().map(|d| if let Some(D::DimValue(v)) = d.value { Some(v) } else { None }).collect())
        .unwrap_or_default();
    if dims.len() != 4 || dims[1] != Some(3) {
        return Err(format!("input {:?} must be [N, 3, H, W], got {dims:?}", input.name));
    }
    if dims.iter().flatten().any(|&d| !(1..=MAX_SIDE).contains(&d)) {
        return Err(format!("input {:?} has dimensions out of range: {dims:?}", input.name));
    }
    if graph.output.is_empty() {
        return Err("no outputs".into());
    }
    Ok((dims[0], dims[2].zip(dims[3])))
}
