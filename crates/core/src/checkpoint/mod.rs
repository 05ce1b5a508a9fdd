//! Checkpoint import and export. TEMPORARY minimal version (safetensors only) until the full reader lands.

use std::{borrow::Cow, collections::HashMap, path::{Path, PathBuf}};

use safetensors::{Dtype, View};
use tch::{Kind, Tensor, nn::VarStore};

/// Errors from reading or writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Anything else, with the file.
    #[error("{path}: {reason}")]
    Other { path: PathBuf, reason: String },
}

fn err(path: &Path, reason: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Other { path: path.to_path_buf(), reason: reason.to_string() }
}

struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn raw(t: &Tensor) -> Result<Raw, String> {
    let t = t.to_device(tch::Device::Cpu).contiguous();
    let (dtype, size) = match t.kind() {
        Kind::Float => (Dtype::F32, 4),
        Kind::Double => (Dtype::F64, 8),
        Kind::Half => (Dtype::F16, 2),
        Kind::BFloat16 => (Dtype::BF16, 2),
        Kind::Int64 => (Dtype::I64, 8),
        Kind::Int => (Dtype::I32, 4),
        Kind::Uint8 => (Dtype::U8, 1),
        Kind::Bool => (Dtype::BOOL, 1),
        k => return Err(format!("unsupported kind {k:?}")),
    };
    let numel = t.numel();
    let mut bytes = vec![0u8; numel * size];
    t.f_copy_data_u8(&mut bytes, numel).map_err(|e| e.to_string())?;
    Ok(Raw { dtype, shape: t.size().iter().map(|&d| d as usize).collect(), bytes })
}

/// Writes named tensors as safetensors, atomically, with optional metadata.
pub fn save_named_safetensors(
    tensors: &[(String, Tensor)],
    path: &Path,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), CheckpointError> {
    let raws: Vec<(String, Raw)> = tensors
        .iter()
        .map(|(n, t)| raw(t).map(|r| (n.clone(), r)))
        .collect::<Result<_, _>>()
        .map_err(|e| err(path, e))?;
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(raws.iter().map(|(n, r)| (n.as_str(), r)), metadata, &tmp)
        .map_err(|e| err(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(path, e))
}

/// Writes every variable of `vs` as safetensors, atomically.
pub fn save_safetensors(vs: &VarStore, path: &Path, metadata: Option<HashMap<String, String>>) -> Result<(), CheckpointError> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    save_named_safetensors(&named, path, metadata)
}

/// Reads the metadata of a safetensors file.
pub fn read_safetensors_metadata(path: &Path) -> Result<HashMap<String, String>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| err(path, e))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Reads named tensors from a safetensors file.
pub fn read_named_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    Tensor::read_safetensors(path).map_err(|e| err(path, e))
}

/// Options for loading a state dict into a `VarStore`.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Fail on any missing or unexpected tensor.
    pub strict: bool,
    /// Checkpoint keys under these prefixes are ignored.
    pub ignore_prefixes: Vec<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { strict: true, ignore_prefixes: Vec::new() }
    }
}

/// What a load did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Loaded names.
    pub loaded: Vec<String>,
    /// Model variables the checkpoint lacks.
    pub missing: Vec<String>,
    /// Checkpoint tensors the model lacks.
    pub unexpected: Vec<String>,
}

/// Loads a safetensors checkpoint into `vs`.
pub fn load_file(vs: &VarStore, path: &Path, opts: &LoadOptions) -> Result<LoadReport, CheckpointError> {
    let tensors: HashMap<String, Tensor> = read_named_safetensors(path)?.into_iter().collect();
    let vars = vs.variables();
    let mut report = LoadReport::default();
    for (name, var) in &vars {
        match tensors.get(name) {
            Some(src) => {
                if src.size() != var.size() {
                    return Err(err(path, format!("{name}: checkpoint {:?}, model {:?}", src.size(), var.size())));
                }
                tch::no_grad(|| var.shallow_clone().copy_(src));
                report.loaded.push(name.clone());
            }
            None => report.missing.push(name.clone()),
        }
    }
    report.unexpected = tensors
        .keys()
        .filter(|k| !vars.contains_key(*k) && !k.ends_with("num_batches_tracked"))
        .filter(|k| !opts.ignore_prefixes.iter().any(|p| k.starts_with(p.as_str())))
        .cloned()
        .collect();
    if opts.strict && (!report.missing.is_empty() || !report.unexpected.is_empty()) {
        return Err(err(path, format!("missing {:?}, unexpected {:?}", report.missing, report.unexpected)));
    }
    Ok(report)
}
