//! Checkpoint import and export without Python.
//!
//! - [`read_state_dict`] reads `torch.save` zip files, legacy (pre-1.6) pickle files and
//!   safetensors, sniffing the format from the content. Pickles go through a restricted
//!   unpickler that only knows how to build tensors and dicts, keeps the objects of a pickled
//!   whole model (`torch.nn.modules.*`, `ultralytics.*`) as inert records, and refuses every other
//!   global.
//! - [`read_checkpoint`] also returns what a whole-model checkpoint holds besides the weights
//!   (module classes and attributes, training arguments; see [`ModuleTree`]).
//! - [`load_into`] / [`load_file`] copy a state dict into a `VarStore`, strictly by default.
//! - [`save_safetensors`] / [`save_named_safetensors`] write safetensors atomically, adding the
//!   `num_batches_tracked` buffers torchvision's strict `load_state_dict` expects.

mod dtype;
mod load;
mod module_tree;
mod pickle;
mod safetensors_io;
mod torch_format;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tch::Tensor;

pub use load::{LoadOptions, LoadReport, load_file, load_into};
pub use module_tree::{ModuleInfo, ModuleTree, PyValue};
pub use safetensors_io::{read_safetensors_metadata, save_named_safetensors, save_safetensors};

/// A shape that differs between the checkpoint and the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// State-dict key.
    pub name: String,
    /// Shape in the checkpoint.
    pub checkpoint: Vec<i64>,
    /// Shape of the model variable.
    pub model: Vec<i64>,
}

impl fmt::Display for ShapeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: checkpoint {:?}, model {:?}", self.name, self.checkpoint, self.model)
    }
}

/// Errors from reading or writing checkpoints. Each names the file (where there is one) and
/// says what is wrong in one line.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The content is none of the supported formats.
    #[error("{}: not a checkpoint: {reason}", path.display())]
    NotACheckpoint { path: PathBuf, reason: String },
    /// The file ends early.
    #[error("{}: truncated checkpoint: {what}", path.display())]
    Truncated { path: PathBuf, what: String },
    /// The pickle names a global outside the state-dict allow-list; nothing was executed.
    #[error(
        "{}: refusing to load: the pickle references the global `{global}`, which a state dict never needs (possibly malicious; nothing was executed)",
        path.display()
    )]
    ForbiddenGlobal { global: String, path: PathBuf },
    /// The content is inconsistent (bad opcode, out-of-range slice, ...).
    #[error("{}: malformed checkpoint: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    /// Valid but not supported here (compressed zip entries, big-endian data, exotic dtypes).
    #[error("{}: unsupported checkpoint: {reason}", path.display())]
    Unsupported { path: PathBuf, reason: String },
    /// The checkpoint does not fit the model: every problem is listed.
    #[error("{}", incompatible_message(path.as_deref(), missing, unexpected, shapes))]
    Incompatible {
        /// The checkpoint file, when loading from one.
        path: Option<PathBuf>,
        /// Model variables the checkpoint lacks.
        missing: Vec<String>,
        /// Checkpoint keys the model lacks.
        unexpected: Vec<String>,
        /// Keys present in both with different shapes.
        shapes: Vec<ShapeMismatch>,
    },
    /// A libtorch call failed.
    #[error("{context}: torch: {source}")]
    Torch {
        context: String,
        #[source]
        source: tch::TchError,
    },
}

fn incompatible_message(
    path: Option<&Path>,
    missing: &[String],
    unexpected: &[String],
    shapes: &[ShapeMismatch],
) -> String {
    let mut parts = Vec::new();
    if !shapes.is_empty() {
        let s: Vec<String> = shapes.iter().map(ToString::to_string).collect();
        parts.push(format!("shape mismatch: {}", s.join("; ")));
    }
    if !missing.is_empty() {
        parts.push(format!("missing from the checkpoint: {}", missing.join(", ")));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected in the checkpoint: {}", unexpected.join(", ")));
    }
    let what = match path {
        Some(p) => format!("{}: checkpoint does not fit the model", p.display()),
        None => "checkpoint does not fit the model".to_string(),
    };
    format!("{what}: {}", parts.join(" | "))
}

impl CheckpointError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        CheckpointError::Io { path: path.to_path_buf(), source }
    }

    fn malformed(path: &Path, reason: impl Into<String>) -> Self {
        CheckpointError::Malformed { path: path.to_path_buf(), reason: reason.into() }
    }

    fn torch(context: impl Into<String>, source: tch::TchError) -> Self {
        CheckpointError::Torch { context: context.into(), source }
    }
}

/// An ordered list of named tensors, as a PyTorch `state_dict()` holds them (CPU tensors).
#[derive(Default)]
pub struct StateDict {
    entries: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
}

impl fmt::Debug for StateDict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries.iter().map(|(n, t)| (n, t.size()))).finish()
    }
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; a repeated name replaces the earlier tensor in place.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        let name = name.into();
        match self.index.get(&name) {
            Some(&i) => self.entries[i].1 = tensor,
            None => {
                self.index.insert(name.clone(), self.entries.len());
                self.entries.push((name, tensor));
            }
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tensor under `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    /// The names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// `(name, tensor)` pairs, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }
}

impl IntoIterator for StateDict {
    type Item = (String, Tensor);
    type IntoIter = std::vec::IntoIter<(String, Tensor)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Which format a file holds, judged from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Zip,
    Legacy,
    Safetensors,
}

fn sniff(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Some(Format::Zip);
    }
    if bytes.starts_with(b"\x80\x02\x8a\x0a") {
        return Some(Format::Legacy);
    }
    // safetensors: u64 little-endian header length, then a JSON object.
    if bytes.len() >= 9 && bytes[8] == b'{' {
        return Some(Format::Safetensors);
    }
    None
}

/// Memory-maps a file read-only.
fn map_file(path: &Path) -> Result<memmap2::Mmap, CheckpointError> {
    let file = std::fs::File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    // SAFETY: the map is read-only and only read through bounds-checked slices; a concurrent
    // writer truncating the file is the only hazard, as with every mmap-based loader.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| CheckpointError::io(path, e))?;
    Ok(map)
}

/// Reads a checkpoint (torch zip, legacy torch pickle or safetensors; sniffed from the content)
/// into CPU tensors. A top-level dict holding a `state_dict`, `model_state_dict` or `model` dict
/// of tensors is unwrapped, and a `module.` prefix shared by every key (DataParallel) is removed.
pub fn read_state_dict(path: &Path) -> Result<StateDict, CheckpointError> {
    let map = map_file(path)?;
    read_state_dict_bytes(&map, path)
}

/// [`read_state_dict`] on bytes already in memory; `path` only names the source in errors.
pub fn read_state_dict_bytes(bytes: &[u8], path: &Path) -> Result<StateDict, CheckpointError> {
    let sd = match sniff(bytes) {
        Some(Format::Zip) => torch_format::read_zip(path, bytes)?,
        Some(Format::Legacy) => torch_format::read_legacy(path, bytes)?,
        Some(Format::Safetensors) => safetensors_io::read_safetensors(path, bytes)?,
        None => {
            return Err(CheckpointError::NotACheckpoint {
                path: path.to_path_buf(),
                reason: "expected a PyTorch zip, a legacy PyTorch pickle or a safetensors file".into(),
            });
        }
    };
    Ok(strip_module_prefix(sd))
}

/// A checkpoint's weights and, for a pickled whole model, what else it holds.
#[derive(Debug)]
pub struct Checkpoint {
    /// The weights, named as `model.state_dict()` names them.
    pub state_dict: StateDict,
    /// The module tree of a whole-model checkpoint (`None` for a state dict or safetensors file).
    pub modules: Option<ModuleTree>,
}

/// Reads a checkpoint like [`read_state_dict`], and for a pickled whole model (an Ultralytics `.pt`,
/// `torch.save(model)`) also its module classes, their public attributes and the file's other
/// top-level entries. Only the chosen module's tensors are read (its `ema` over its `model`), each
/// copied once from the memory-mapped file.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let map = map_file(path)?;
    read_checkpoint_bytes(&map, path)
}

/// [`read_checkpoint`] on bytes already in memory; `path` only names the source in errors.
pub fn read_checkpoint_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint, CheckpointError> {
    let parsed = match sniff(bytes) {
        Some(Format::Zip) => torch_format::parse_zip(path, bytes)?,
        Some(Format::Legacy) => torch_format::parse_legacy(path, bytes)?,
        _ => return Ok(Checkpoint { state_dict: read_state_dict_bytes(bytes, path)?, modules: None }),
    };
    let Some((source, root)) = module_tree::module_root(&parsed.top.value) else {
        let entries =
            torch_format::select_state_dict(&parsed.top.value).map_err(|r| CheckpointError::malformed(path, r))?;
        let state_dict = strip_module_prefix(parsed.build(path, bytes.len(), entries)?);
        return Ok(Checkpoint { state_dict, modules: None });
    };
    let walked = module_tree::walk(&root).map_err(|r| CheckpointError::malformed(path, r))?;
    let state_dict = parsed.build(path, bytes.len(), walked.tensors)?;
    let read_small = |t: &pickle::TensorRef| -> Option<(Vec<i64>, Vec<f64>)> {
        let numel = t.size.iter().try_fold(1u64, |a, &s| a.checked_mul(u64::try_from(s).ok()?))?;
        if numel > module_tree::MAX_ATTR_TENSOR {
            return None;
        }
        let data = parsed.records.get(&t.storage.key)?;
        let x = torch_format::materialize(t, data, bytes.len()).ok()?;
        let values = Vec::<f64>::try_from(x.f_to_kind(tch::Kind::Double).ok()?.f_view([-1]).ok()?).ok()?;
        Some((t.size.clone(), values))
    };
    let mut conv = module_tree::Converter::new(&read_small);
    let modules = walked
        .modules
        .iter()
        .map(|n| ModuleInfo { path: n.path.clone(), class: n.record.class.to_string(), attrs: conv.attrs(&n.record) })
        .collect();
    let no_tensors = |_: &pickle::TensorRef| None;
    let mut conv = module_tree::Converter::new(&no_tensors);
    let mut extra = Vec::new();
    if let pickle::Value::Dict(d) = &parsed.top.value {
        for (k, v) in &d.borrow().entries {
            if let pickle::Value::Str(k) = k
                && !matches!(v, pickle::Value::Record(r) if Rc::ptr_eq(r, &root))
            {
                extra.push((k.to_string(), conv.value(v)));
            }
        }
    }
    Ok(Checkpoint { state_dict, modules: Some(ModuleTree { source: source.to_string(), modules, extra }) })
}

/// Removes `module.` when every key starts with it (a `DataParallel` checkpoint).
fn strip_module_prefix(sd: StateDict) -> StateDict {
    const P: &str = "module.";
    if sd.is_empty() || !sd.names().all(|n| n.starts_with(P) && n.len() > P.len()) {
        return sd;
    }
    let mut out = StateDict::new();
    for (n, t) in sd {
        out.insert(&n[P.len()..], t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"PK\x03\x04rest"), Some(Format::Zip));
        assert_eq!(sniff(b"\x80\x02\x8a\x0alFl\x00"), Some(Format::Legacy));
        assert_eq!(sniff(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}"), Some(Format::Safetensors));
        assert_eq!(sniff(b"\x80\x04\x95"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn module_prefix_is_stripped_only_when_shared() {
        let mut sd = StateDict::new();
        sd.insert("module.a", Tensor::from(1.0f32));
        sd.insert("module.b.c", Tensor::from(2.0f32));
        let out = strip_module_prefix(sd);
        assert_eq!(out.names().collect::<Vec<_>>(), ["a", "b.c"]);
        let mut sd = StateDict::new();
        sd.insert("module.a", Tensor::from(1.0f32));
        sd.insert("b", Tensor::from(2.0f32));
        let out = strip_module_prefix(sd);
        assert_eq!(out.names().collect::<Vec<_>>(), ["module.a", "b"]);
    }

    #[test]
    fn incompatible_lists_everything() {
        let e = CheckpointError::Incompatible {
            path: Some(PathBuf::from("/x/y.pth")),
            missing: vec!["fc.bias".into()],
            unexpected: vec!["head.weight".into()],
            shapes: vec![ShapeMismatch {
                name: "layer1.0.conv1.weight".into(),
                checkpoint: vec![64, 3, 7, 7],
                model: vec![64, 3, 3, 3],
            }],
        };
        let s = e.to_string();
        assert!(s.contains("/x/y.pth"), "{s}");
        assert!(s.contains("layer1.0.conv1.weight: checkpoint [64, 3, 7, 7], model [64, 3, 3, 3]"), "{s}");
        assert!(s.contains("fc.bias") && s.contains("head.weight"), "{s}");
    }
}
