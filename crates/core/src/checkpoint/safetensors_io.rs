//! safetensors reading (from a memory map) and atomic writing.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{SafeTensorError, SafeTensors, View};
use tch::{Device, Kind, Tensor, nn::VarStore};

use super::dtype::DType;
use super::{CheckpointError, StateDict, map_file};

fn st_err(path: &Path, e: SafeTensorError) -> CheckpointError {
    match e {
        SafeTensorError::IoError(source) => CheckpointError::io(path, source),
        // The header length points past the end, or the data is shorter than the header says.
        SafeTensorError::InvalidHeaderLength | SafeTensorError::MetadataIncompleteBuffer => {
            CheckpointError::Truncated { path: path.to_path_buf(), what: format!("safetensors: {e}") }
        }
        other => CheckpointError::malformed(path, format!("safetensors: {other}")),
    }
}

/// Reads every tensor of a safetensors file, in data-offset order.
pub(crate) fn read_safetensors(path: &Path, bytes: &[u8]) -> Result<StateDict, CheckpointError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| st_err(path, e))?;
    let mut sd = StateDict::new();
    for (name, view) in st.iter() {
        let dtype = DType::from_safetensors(view.dtype()).ok_or_else(|| CheckpointError::Unsupported {
            path: path.to_path_buf(),
            reason: format!("{name}: dtype {:?}", view.dtype()),
        })?;
        let shape: Vec<i64> = view
            .shape()
            .iter()
            .map(|&d| i64::try_from(d))
            .collect::<Result<_, _>>()
            .map_err(|_| CheckpointError::malformed(path, format!("{name}: dimension too large")))?;
        let data = view.data();
        if dtype == DType::Bool && data.iter().any(|&b| b > 1) {
            return Err(CheckpointError::malformed(
                path,
                format!("{name}: bool tensor holds a byte other than 0 or 1"),
            ));
        }
        // deserialize() has checked that the data length equals the shape's byte size.
        let t = Tensor::f_from_data_size(data, &shape, dtype.kind())
            .map_err(|e| CheckpointError::torch(format!("{}: {name}", path.display()), e))?;
        sd.insert(name, t);
    }
    Ok(sd)
}

/// The `__metadata__` string map of a safetensors file (empty if it has none).
pub fn read_safetensors_metadata(path: &Path) -> Result<HashMap<String, String>, CheckpointError> {
    let map = map_file(path)?;
    let (_, meta) = SafeTensors::read_metadata(&map).map_err(|e| st_err(path, e))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// One tensor to write; its bytes are produced when the writer asks for them, so that only
/// one tensor at a time is copied out of libtorch.
struct Entry {
    tensor: Tensor,
    dtype: DType,
    shape: Vec<usize>,
    /// Set when copying the bytes out of libtorch failed (`View::data` cannot return an error).
    failed: Cell<bool>,
}

impl Entry {
    fn new(name: &str, t: &Tensor) -> Result<Entry, CheckpointError> {
        let ctx = || format!("saving {name}");
        let kind = t.f_kind().map_err(|e| CheckpointError::torch(ctx(), e))?;
        let dtype = DType::from_kind(kind)
            .ok_or_else(|| CheckpointError::torch(ctx(), tch::TchError::Kind(format!("unsupported dtype {kind:?}"))))?;
        let tensor = t
            .f_detach()
            .and_then(|t| t.f_to_device(Device::Cpu))
            .and_then(|t| t.f_contiguous())
            .map_err(|e| CheckpointError::torch(ctx(), e))?;
        let shape = tensor.size().iter().map(|&d| d as usize).collect();
        Ok(Entry { tensor, dtype, shape, failed: Cell::new(false) })
    }
}

impl View for &Entry {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype.to_safetensors()
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let numel: usize = self.shape.iter().product();
        let mut buf = vec![0u8; self.data_len()];
        if self.tensor.f_copy_data_u8(&mut buf, numel).is_err() {
            self.failed.set(true);
        }
        Cow::Owned(buf)
    }

    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

/// Writes named tensors (any device and supported dtype) to a safetensors file atomically:
/// `path.tmp` is written and fsynced, then renamed over `path`, then the directory is fsynced.
pub fn save_named_safetensors(
    tensors: &[(String, Tensor)],
    path: &Path,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), CheckpointError> {
    let mut entries = BTreeMap::new();
    for (name, t) in tensors {
        if entries.insert(name.clone(), Entry::new(name, t)?).is_some() {
            return Err(CheckpointError::malformed(path, format!("tensor name {name} appears twice")));
        }
    }
    write_atomic(&entries, path, metadata)
}

/// Writes every variable of `vs` under its VarStore name, plus a 0-dim i64
/// `<prefix>.num_batches_tracked` for every batch norm (`<prefix>.running_mean`) that lacks one,
/// so that torchvision's `load_state_dict(strict=True)` accepts the file. Atomic like
/// [`save_named_safetensors`].
pub fn save_safetensors(
    vs: &VarStore,
    path: &Path,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), CheckpointError> {
    let vars = vs.variables();
    let mut entries = BTreeMap::new();
    for (name, t) in &vars {
        entries.insert(name.clone(), Entry::new(name, t)?);
    }
    for name in vars.keys() {
        if let Some(prefix) = name.strip_suffix(".running_mean") {
            let nbt = format!("{prefix}.num_batches_tracked");
            if !entries.contains_key(&nbt) {
                let zero = Tensor::f_zeros([0i64; 0].as_slice(), (Kind::Int64, Device::Cpu))
                    .map_err(|e| CheckpointError::torch(format!("saving {nbt}"), e))?;
                entries.insert(nbt.clone(), Entry::new(&nbt, &zero)?);
            }
        }
    }
    write_atomic(&entries, path, metadata)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn write_atomic(
    entries: &BTreeMap<String, Entry>,
    path: &Path,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), CheckpointError> {
    let tmp = tmp_path(path);
    let result = (|| {
        safetensors::serialize_to_file(entries.iter().map(|(n, e)| (n.as_str(), e)), metadata, &tmp)
            .map_err(|e| st_err(&tmp, e))?;
        if let Some((name, _)) = entries.iter().find(|(_, e)| e.failed.get()) {
            let source = tch::TchError::Convert("copying the tensor bytes out of libtorch failed".into());
            return Err(CheckpointError::torch(format!("{}: saving {name}", path.display()), source));
        }
        let f = std::fs::File::open(&tmp).map_err(|e| CheckpointError::io(&tmp, e))?;
        f.sync_all().map_err(|e| CheckpointError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| CheckpointError::io(path, e))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| CheckpointError::io(dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
