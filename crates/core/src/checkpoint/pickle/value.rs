//! The Python values a checkpoint pickle can produce: plain data, lazy tensors, and inert records of
//! the module classes a whole-model checkpoint names (their class name and state, never an instance).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::{PResult, bad};
use crate::checkpoint::dtype::DType;

/// The callables and classes a checkpoint pickle may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildTensor,
    RebuildParameter,
    RebuildParameterWithState,
    Storage(DType),
    /// `set` / `frozenset`: built as a list (nothing here hashes their items).
    Set,
    /// `torch.Size`: built as the tuple it wraps.
    TorchSize,
    /// `copyreg._reconstructor(cls, base, state)` (protocols 0 and 1): builds a record of `cls`.
    Reconstructor,
    /// `object`, only as `_reconstructor`'s base argument; calling it is refused.
    Object,
    /// A class whose objects become inert [`Record`]s, as `module.Name`.
    Class(Rc<str>),
}

/// Module prefixes whose every name becomes an inert record class: PyTorch's layers and whatever
/// Ultralytics pickles with a model (its layers, `DetectionModel`, argument namespaces).
const RECORD_MODULES: [&str; 2] = ["torch.nn.modules.", "ultralytics."];

/// Other classes that whole-model checkpoints carry as plain data (argument holders, paths, numpy
/// scalars in training metrics); as records they are inert too.
const RECORD_CLASSES: [(&str, &str); 9] = [
    ("types", "SimpleNamespace"),
    ("argparse", "Namespace"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
];

impl Global {
    pub(super) fn resolve(module: &str, name: &str) -> Option<Global> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
            ("torch", "Size") => Global::TorchSize,
            ("torch", storage) => Global::Storage(DType::from_storage_name(storage)?),
            ("torch.storage", "UntypedStorage") => Global::Storage(DType::U8),
            ("builtins" | "__builtin__", "set" | "frozenset") => Global::Set,
            ("builtins" | "__builtin__", "object") => Global::Object,
            ("copyreg" | "copy_reg", "_reconstructor") => Global::Reconstructor,
            _ if is_record_class(module, name) => Global::Class(Rc::from(format!("{module}.{name}"))),
            _ => return None,
        })
    }
}

fn is_record_class(module: &str, name: &str) -> bool {
    let identifier = |s: &str| {
        !s.is_empty() && s.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
    };
    identifier(module)
        && identifier(name)
        && (RECORD_MODULES.iter().any(|p| format!("{module}.").starts_with(p))
            || RECORD_CLASSES.contains(&(module, name)))
}

/// An object of an allowed class, kept as data: its class, the arguments its constructor would
/// have received, and the state BUILD gave it. Nothing of the class ever runs.
#[derive(Debug)]
pub(crate) struct Record {
    /// `module.Name`.
    pub class: Rc<str>,
    /// The constructor arguments (a tuple; empty for NEWOBJ of an `nn.Module`).
    pub args: Value,
    /// The state from BUILD (for an `nn.Module`, its `__dict__`); `None` before BUILD.
    pub state: RefCell<Value>,
}

/// A storage named by a persistent id: `('storage', type, key, location, numel[, view])`.
#[derive(Debug)]
pub(crate) struct StorageRef {
    pub key: String,
    pub dtype: DType,
    /// Number of elements of the whole (root) storage.
    pub numel: u64,
    /// Legacy storage views: `(element offset, element count)` inside the root storage.
    pub view: Option<(u64, u64)>,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage.
#[derive(Debug)]
pub(crate) struct TensorRef {
    pub storage: Rc<StorageRef>,
    pub offset: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
}

/// A hashable dictionary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    None,
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
}

/// An insertion-ordered dictionary (Python dicts keep insertion order).
#[derive(Debug, Default)]
pub(crate) struct Dict {
    pub entries: Vec<(Value, Value)>,
    index: HashMap<Key, usize>,
}

impl Dict {
    pub(super) fn insert(&mut self, k: Value, v: Value) -> PResult<()> {
        let key = match &k {
            Value::None => Key::None,
            Value::Bool(b) => Key::Bool(*b),
            Value::Int(i) => Key::Int(*i),
            Value::Float(f) => Key::Float(f.to_bits()),
            Value::Str(s) => Key::Str(s.clone()),
            Value::Bytes(b) => Key::Bytes(b.clone()),
            other => return bad(format!("unhashable dict key of type {}", other.type_name())),
        };
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = v,
            None => {
                self.index.insert(key, self.entries.len());
                self.entries.push((k, v));
            }
        }
        Ok(())
    }

    /// The value under a string key.
    pub fn get_str(&self, key: &str) -> Option<&Value> {
        self.index.get(&Key::Str(Rc::from(key))).map(|&i| &self.entries[i].1)
    }
}

/// A Python value as far as a state dict needs one.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in i64 (little-endian two's complement bytes).
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Dict>>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
    Record(Rc<Record>),
}

impl Value {
    /// A short name for error messages (never recursive).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Record(_) => "object",
        }
    }

    pub(super) fn as_int(&self, what: &str) -> PResult<i64> {
        match self {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(i64::from(*b)),
            other => bad(format!("{what}: expected an int, found {}", other.type_name())),
        }
    }

    pub(super) fn as_int_tuple(&self, what: &str) -> PResult<Vec<i64>> {
        match self {
            Value::Tuple(t) => t.iter().map(|v| v.as_int(what)).collect(),
            Value::List(l) => l.borrow().iter().map(|v| v.as_int(what)).collect(),
            other => bad(format!("{what}: expected a tuple of ints, found {}", other.type_name())),
        }
    }
}

/// Drops a value graph without recursion, so that deeply nested input cannot overflow the stack.
pub(crate) fn dispose(values: impl IntoIterator<Item = Value>) {
    let mut work: Vec<Value> = values.into_iter().collect();
    while let Some(v) = work.pop() {
        match v {
            Value::Tuple(rc) => {
                if let Ok(items) = Rc::try_unwrap(rc) {
                    work.extend(items);
                }
            }
            Value::List(rc) => {
                if let Ok(cell) = Rc::try_unwrap(rc) {
                    work.extend(cell.into_inner());
                }
            }
            Value::Dict(rc) => {
                if let Ok(cell) = Rc::try_unwrap(rc) {
                    for (k, v) in cell.into_inner().entries {
                        work.push(k);
                        work.push(v);
                    }
                }
            }
            Value::Record(rc) => {
                if let Ok(r) = Rc::try_unwrap(rc) {
                    work.push(r.args);
                    work.push(r.state.into_inner());
                }
            }
            _ => {}
        }
    }
}
