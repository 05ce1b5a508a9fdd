//! `torch.save` files: the zip format (torch >= 1.6) and the legacy sequential-pickle format.
//! Both are read from a memory map; each tensor is copied once, from a slice of the map.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;
use std::rc::Rc;

use tch::{Device, Tensor};

use super::module_tree;
use super::pickle::{self, PickleError, TensorRef, Value};
use super::{CheckpointError, StateDict};

/// The magic number the legacy format starts with (a pickled Python int).
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

fn pickle_err(path: &Path, what: &str, e: PickleError) -> CheckpointError {
    match e {
        PickleError::Truncated => {
            CheckpointError::Truncated { path: path.to_path_buf(), what: format!("{what} ends early") }
        }
        PickleError::Forbidden(global) => CheckpointError::ForbiddenGlobal { global, path: path.to_path_buf() },
        PickleError::Malformed(m) => CheckpointError::malformed(path, format!("{what}: {m}")),
    }
}

/// A parsed `torch.save` file: the unpickled top object and the bytes of each storage, by key.
pub(crate) struct Parsed<'a> {
    /// The top object.
    pub top: pickle::Unpickled,
    /// Storage key -> its bytes in the file.
    pub records: HashMap<String, &'a [u8]>,
}

impl<'a> Parsed<'a> {
    /// Copies the named tensors out of the file.
    pub fn build(
        &self,
        path: &Path,
        file_len: usize,
        entries: Vec<(String, Rc<TensorRef>)>,
    ) -> Result<StateDict, CheckpointError> {
        build(path, file_len, entries, |key: &str| self.records.get(key).copied())
    }
}

/// Reads a `torch.save` zip archive (`<dir>/data.pkl` plus `<dir>/data/<key>` storages).
pub(crate) fn read_zip(path: &Path, bytes: &[u8]) -> Result<StateDict, CheckpointError> {
    let parsed = parse_zip(path, bytes)?;
    let entries = select_state_dict(&parsed.top.value).map_err(|r| CheckpointError::malformed(path, r))?;
    parsed.build(path, bytes.len(), entries)
}

/// Unpickles a zip archive's `data.pkl` and locates its storages (nothing is copied).
pub(crate) fn parse_zip<'a>(path: &Path, bytes: &'a [u8]) -> Result<Parsed<'a>, CheckpointError> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| zip_err(path, bytes, e))?;
    // Every record of one archive sits under one top directory, whatever its name.
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_owned)
        .ok_or_else(|| {
            CheckpointError::malformed(path, "zip archive without <dir>/data.pkl (not a torch.save file)")
        })?;
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];
    let data_prefix = format!("{prefix}data/");
    let mut records: HashMap<String, &[u8]> = HashMap::new();
    let mut pkl: Option<&[u8]> = None;
    let mut byteorder: Option<&[u8]> = None;
    for i in 0..zip.len() {
        let f = zip.by_index_raw(i).map_err(|e| zip_err(path, bytes, e))?;
        let name = f.name().to_owned();
        let wanted = name == pkl_name || name.starts_with(&data_prefix) || name == format!("{prefix}byteorder");
        if !wanted {
            continue;
        }
        if f.compression() != zip::CompressionMethod::Stored {
            return Err(CheckpointError::Unsupported {
                path: path.to_path_buf(),
                reason: format!("zip entry {name} is compressed"),
            });
        }
        let start = usize::try_from(f.data_start()).ok();
        let len = usize::try_from(f.compressed_size()).ok();
        let slice = start.zip(len).and_then(|(s, l)| bytes.get(s..s.checked_add(l)?)).ok_or_else(|| {
            CheckpointError::Truncated {
                path: path.to_path_buf(),
                what: format!("zip entry {name} extends past the end of the file"),
            }
        })?;
        if name == pkl_name {
            pkl = Some(slice);
        } else if let Some(key) = name.strip_prefix(&data_prefix) {
            records.insert(key.to_owned(), slice);
        } else {
            byteorder = Some(slice);
        }
    }
    if let Some(bo) = byteorder
        && bo != b"little"
    {
        return Err(CheckpointError::Unsupported { path: path.to_path_buf(), reason: "big-endian tensor data".into() });
    }
    let pkl = pkl.ok_or_else(|| CheckpointError::malformed(path, "data.pkl missing"))?;
    let top = pickle::unpickle(pkl).map_err(|e| pickle_err(path, "data.pkl", e))?;
    Ok(Parsed { top, records })
}

fn zip_err(path: &Path, bytes: &[u8], e: zip::result::ZipError) -> CheckpointError {
    // A zip cut short loses its central directory, which is at the end.
    if bytes.len() < 22 || matches!(e, zip::result::ZipError::InvalidArchive(_)) && !has_eocd(bytes) {
        return CheckpointError::Truncated {
            path: path.to_path_buf(),
            what: format!("zip archive is incomplete ({e})"),
        };
    }
    CheckpointError::malformed(path, format!("zip archive: {e}"))
}

fn has_eocd(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(65_557)..];
    tail.windows(4).any(|w| w == b"PK\x05\x06")
}

/// Reads the legacy format (see [`parse_legacy`]).
pub(crate) fn read_legacy(path: &Path, bytes: &[u8]) -> Result<StateDict, CheckpointError> {
    let parsed = parse_legacy(path, bytes)?;
    let entries = select_state_dict(&parsed.top.value).map_err(|r| CheckpointError::malformed(path, r))?;
    parsed.build(path, bytes.len(), entries)
}

/// Parses the legacy format: magic, protocol and sys-info pickles, the main pickle, the list of
/// storage keys, then each storage as a u64 little-endian element count and its raw bytes.
pub(crate) fn parse_legacy<'a>(path: &Path, bytes: &'a [u8]) -> Result<Parsed<'a>, CheckpointError> {
    let mut pos = 0usize;
    let mut next = |what: &str| -> Result<pickle::Unpickled, CheckpointError> {
        let rest = bytes.get(pos..).unwrap_or_default();
        let u = pickle::unpickle(rest).map_err(|e| pickle_err(path, what, e))?;
        pos += u.consumed;
        Ok(u)
    };
    let magic = next("magic number")?;
    if !matches!(&magic.value, Value::BigInt(b) if **b == LEGACY_MAGIC) {
        return Err(CheckpointError::NotACheckpoint {
            path: path.to_path_buf(),
            reason: "wrong legacy torch magic number".into(),
        });
    }
    let proto = next("protocol version")?;
    if !matches!(proto.value, Value::Int(1001)) {
        return Err(CheckpointError::Unsupported {
            path: path.to_path_buf(),
            reason: "legacy protocol version is not 1001".into(),
        });
    }
    let sys_info = next("sys info")?;
    if let Value::Dict(d) = &sys_info.value
        && let Some(Value::Bool(false)) = d.borrow().get_str("little_endian")
    {
        return Err(CheckpointError::Unsupported { path: path.to_path_buf(), reason: "big-endian tensor data".into() });
    }
    let main = next("main pickle")?;
    let keys = next("storage key list")?;
    let Value::List(keys) = &keys.value else {
        return Err(CheckpointError::malformed(path, "storage key list is not a list"));
    };
    let mut records: HashMap<String, &[u8]> = HashMap::new();
    for k in keys.borrow().iter() {
        let Value::Str(k) = k else {
            return Err(CheckpointError::malformed(path, "storage key is not a string"));
        };
        let dtype = main
            .storages
            .get(&**k)
            .ok_or_else(|| CheckpointError::malformed(path, format!("storage {k} is listed but never used")))?;
        let truncated =
            || CheckpointError::Truncated { path: path.to_path_buf(), what: format!("storage {k} ends early") };
        let count = bytes.get(pos..pos + 8).ok_or_else(truncated)?;
        let mut c = [0u8; 8];
        c.copy_from_slice(count);
        pos += 8;
        let n = usize::try_from(u64::from_le_bytes(c))
            .ok()
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(truncated)?;
        let data = pos.checked_add(n).and_then(|end| bytes.get(pos..end)).ok_or_else(truncated)?;
        pos += n;
        records.insert(k.to_string(), data);
    }
    Ok(Parsed { top: main, records })
}

/// Finds the tensors: a whole pickled module (the top object, or its `ema` / `model` entry, see
/// [`module_tree::module_root`]) walked to its state dict, else the dict of tensors that is the top
/// object or its `state_dict` / `model_state_dict` / `model` entry.
pub(crate) fn select_state_dict(top: &Value) -> Result<Vec<(String, Rc<TensorRef>)>, String> {
    if let Some((_, root)) = module_tree::module_root(top) {
        return Ok(module_tree::walk(&root)?.tensors);
    }
    let Value::Dict(d) = top else {
        return Err(format!("the pickle holds a {}, not a dict of tensors", top.type_name()));
    };
    if let Some(entries) = tensor_entries(top) {
        return Ok(entries);
    }
    let d = d.borrow();
    for key in ["state_dict", "model_state_dict", "model"] {
        if let Some(entries) = d.get_str(key).and_then(tensor_entries) {
            return Ok(entries);
        }
    }
    let keys: Vec<String> = d
        .entries
        .iter()
        .take(20)
        .map(|(k, _)| match k {
            Value::Str(s) => format!("'{s}'"),
            other => other.type_name().to_string(),
        })
        .collect();
    Err(format!(
        "no state dict found: top-level keys are [{}]; expected a dict of tensors, or one under 'state_dict', 'model_state_dict' or 'model'",
        keys.join(", ")
    ))
}

/// The entries of a dict whose keys are all strings and whose values are all tensors.
fn tensor_entries(v: &Value) -> Option<Vec<(String, Rc<TensorRef>)>> {
    let Value::Dict(d) = v else { return None };
    d.borrow()
        .entries
        .iter()
        .map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => Some((k.to_string(), t.clone())),
            _ => None,
        })
        .collect()
}

fn build<'a>(
    path: &Path,
    file_len: usize,
    entries: Vec<(String, Rc<TensorRef>)>,
    lookup: impl Fn(&str) -> Option<&'a [u8]>,
) -> Result<StateDict, CheckpointError> {
    let mut sd = StateDict::new();
    for (name, t) in entries {
        let data = lookup(&t.storage.key).ok_or_else(|| {
            CheckpointError::malformed(path, format!("{name}: storage {} is not in the file", t.storage.key))
        })?;
        let tensor = materialize(&t, data, file_len).map_err(|e| match e {
            Materialize::Bad(r) => CheckpointError::malformed(path, format!("{name}: {r}")),
            Materialize::Torch(e) => CheckpointError::torch(format!("{}: {name}", path.display()), e),
        })?;
        sd.insert(name, tensor);
    }
    Ok(sd)
}

pub(crate) enum Materialize {
    Bad(String),
    Torch(tch::TchError),
}

impl From<tch::TchError> for Materialize {
    fn from(e: tch::TchError) -> Self {
        Materialize::Torch(e)
    }
}

/// Builds a contiguous CPU tensor from a strided view of a storage's bytes, after checking that
/// every element it touches lies inside the storage and that its size is bounded by the file.
pub(crate) fn materialize(t: &TensorRef, storage: &[u8], file_len: usize) -> Result<Tensor, Materialize> {
    let bad = |m: String| Materialize::Bad(m);
    let dtype = t.storage.dtype;
    let es = dtype.size() as u64;
    let root = t.storage.numel;
    if root.checked_mul(es).is_none_or(|b| b > storage.len() as u64) {
        return Err(bad(format!(
            "storage {} declares {root} elements but holds {} bytes",
            t.storage.key,
            storage.len()
        )));
    }
    let (base, avail) = t.storage.view.unwrap_or((0, root));
    if base.checked_add(avail).is_none_or(|end| end > root) {
        return Err(bad("storage view lies outside its storage".into()));
    }
    if t.offset < 0 || t.size.iter().any(|&s| s < 0) || t.stride.iter().any(|&s| s < 0) {
        return Err(bad(format!("negative offset, size or stride ({}, {:?}, {:?})", t.offset, t.size, t.stride)));
    }
    let numel = t.size.iter().try_fold(1u64, |acc, &s| acc.checked_mul(s as u64));
    let out_bytes = numel.and_then(|n| n.checked_mul(es));
    let Some((numel, out_bytes)) = numel.zip(out_bytes).filter(|&(_, b)| b <= file_len as u64) else {
        return Err(bad(format!("tensor of size {:?} is larger than the file", t.size)));
    };
    if numel == 0 {
        return Ok(Tensor::f_zeros(t.size.as_slice(), (dtype.kind(), Device::Cpu))?);
    }
    // Index of the last element the view touches, relative to the view's storage start.
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset as u64, |acc, (&s, &st)| acc.checked_add((s as u64 - 1).checked_mul(st as u64)?));
    let Some(last) = last.filter(|&l| l < avail) else {
        return Err(bad(format!(
            "view (offset {}, size {:?}, stride {:?}) reaches past its storage of {avail} elements",
            t.offset, t.size, t.stride
        )));
    };
    let start = ((base + t.offset as u64) * es) as usize;
    let end = ((base + last + 1) * es) as usize;
    let slice = &storage[start..end];
    if dtype == super::dtype::DType::Bool && slice.iter().any(|&b| b > 1) {
        return Err(bad("bool tensor holds a byte other than 0 or 1".into()));
    }
    let mut expected = 1i64;
    let mut contiguous = true;
    for (&s, &st) in t.size.iter().zip(&t.stride).rev() {
        if s != 1 && st != expected {
            contiguous = false;
        }
        expected *= s;
    }
    if contiguous && slice.len() as u64 == out_bytes {
        return Ok(Tensor::f_from_data_size(slice, &t.size, dtype.kind())?);
    }
    let span = (last + 1 - t.offset as u64) as i64;
    let flat = Tensor::f_from_data_size(slice, &[span], dtype.kind())?;
    Ok(flat.f_as_strided(t.size.as_slice(), t.stride.as_slice(), Some(0))?.f_contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::super::dtype::DType;
    use super::super::pickle::StorageRef;
    use super::*;

    fn f32_storage(n: u64, view: Option<(u64, u64)>) -> (Rc<StorageRef>, Vec<u8>) {
        let bytes: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
        (Rc::new(StorageRef { key: "0".into(), dtype: DType::F32, numel: n, view }), bytes)
    }

    fn view(storage: &Rc<StorageRef>, offset: i64, size: &[i64], stride: &[i64]) -> TensorRef {
        TensorRef { storage: storage.clone(), offset, size: size.to_vec(), stride: stride.to_vec() }
    }

    fn values(t: &Tensor) -> Vec<f32> {
        let n = t.numel();
        let mut v = vec![0f32; n];
        t.f_copy_data(&mut v, n).map_err(|e| e.to_string()).unwrap_or_else(|e| unreachable!("{e}"));
        v
    }

    #[test]
    fn strided_views_become_contiguous() {
        let (s, bytes) = f32_storage(8, None);
        let ok = |t: TensorRef| match materialize(&t, &bytes, 1 << 20) {
            Ok(t) => t,
            Err(_) => unreachable!("rejected a valid view"),
        };
        // Transpose of a [2, 3] block starting at element 1.
        let t = ok(view(&s, 1, &[3, 2], &[1, 3]));
        assert_eq!(t.size(), [3, 2]);
        assert_eq!(values(&t), [1., 4., 2., 5., 3., 6.]);
        // Plain contiguous slice at an offset, and a 0-dim tensor.
        assert_eq!(values(&ok(view(&s, 5, &[3], &[1]))), [5., 6., 7.]);
        assert_eq!(values(&ok(view(&s, 7, &[], &[]))), [7.]);
        // A legacy storage view shifts the base.
        let (s, bytes) = f32_storage(8, Some((4, 4)));
        let t = match materialize(&view(&s, 1, &[2], &[2]), &bytes, 1 << 20) {
            Ok(t) => t,
            Err(_) => unreachable!("rejected a valid legacy view"),
        };
        assert_eq!(values(&t), [5., 7.]);
    }

    #[test]
    fn out_of_range_views_are_rejected() {
        let (s, bytes) = f32_storage(8, None);
        let cases = [
            view(&s, 0, &[9], &[1]),              // past the end
            view(&s, 6, &[2, 2], &[1, 1]),        // last element index 8
            view(&s, 0, &[3], &[4]),              // strided past the end
            view(&s, -1, &[2], &[1]),             // negative offset
            view(&s, 0, &[2], &[-1]),             // negative stride
            view(&s, 0, &[1 << 40], &[0]),        // bigger than the file
            view(&s, 0, &[i64::MAX, 4], &[0, 0]), // size overflow
            view(&s, i64::MAX, &[2], &[1]),       // offset overflow
        ];
        for t in cases {
            assert!(materialize(&t, &bytes, 4096).is_err(), "{t:?} accepted");
        }
        // Storage declaring more elements than its bytes hold; a view outside its root.
        let (s, _) = f32_storage(8, None);
        assert!(materialize(&view(&s, 0, &[1], &[1]), &[0u8; 16], 4096).is_err());
        let (s, bytes) = f32_storage(8, Some((6, 4)));
        assert!(materialize(&view(&s, 0, &[1], &[1]), &bytes, 4096).is_err());
        // Bool bytes other than 0/1.
        let s = Rc::new(StorageRef { key: "0".into(), dtype: DType::Bool, numel: 2, view: None });
        assert!(materialize(&view(&s, 0, &[2], &[1]), &[1, 7], 4096).is_err());
    }
}
