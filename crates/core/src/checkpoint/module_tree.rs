//! Whole-model checkpoints: a pickled `torch.nn.Module` arrives as a tree of inert [`Record`]s (see
//! [`super::pickle`]). This walks `_parameters` / `_buffers` / `_modules` to the state dict that
//! `model.state_dict()` gives (same names, same order), and turns the modules' other attributes and
//! the checkpoint's other entries into plain [`PyValue`]s for callers that need them (class names,
//! strides, training arguments). Walks are iterative and bounded, so a hostile file cannot exhaust
//! the stack or blow a shared sub-tree up exponentially.

use std::rc::Rc;

use super::pickle::{Record, TensorRef, Value};

/// Deepest module nesting accepted (Ultralytics models nest about 6 deep).
const MAX_DEPTH: usize = 64;
/// Most module visits in one walk (a shared module counts once per place it appears).
const MAX_MODULES: usize = 200_000;
/// Most values converted into [`PyValue`]s per checkpoint; the rest are [`PyValue::Elided`].
const MAX_VALUES: usize = 500_000;
/// Deepest value nesting converted.
const MAX_VALUE_DEPTH: usize = 24;
/// Largest tensor attribute whose values are read (e.g. `stride`).
pub(crate) const MAX_ATTR_TENSOR: u64 = 4096;

/// A pickled Python value outside the weights, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int that fits in 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list, tuple or set.
    List(Vec<PyValue>),
    /// A dict (insertion order).
    Dict(Vec<(PyValue, PyValue)>),
    /// An object of an allowed class: its class (`module.Name`) and its attributes.
    Object {
        /// `module.Name`.
        class: String,
        /// The attributes from its pickled state (for a module: the public ones).
        attrs: Vec<(String, PyValue)>,
    },
    /// A small tensor's values as float64, row-major, with its shape.
    Tensor {
        /// The shape.
        shape: Vec<i64>,
        /// The values.
        values: Vec<f64>,
    },
    /// A value that was not converted (a large tensor, bytes, a big int, nesting past the limits):
    /// what it was.
    Elided(String),
}

impl PyValue {
    /// The value under a string key of a dict, or an attribute of an object.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(entries) => {
                entries.iter().find(|(k, _)| matches!(k, PyValue::Str(s) if s == key)).map(|(_, v)| v)
            }
            PyValue::Object { attrs, .. } => attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The int, if this is one (bools count, as in Python).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            PyValue::Int(i) => Some(*i),
            PyValue::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The number, if this is an int or a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            PyValue::Float(f) => Some(*f),
            other => other.as_i64().map(|i| i as f64),
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One module of a whole-model checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleInfo {
    /// Its state-dict prefix (`""` for the root, `model.22`, `model.22.cv2.0`, ...).
    pub path: String,
    /// Its class, `module.Name` (`ultralytics.nn.modules.head.Detect`).
    pub class: String,
    /// Its public attributes (`nc`, `stride`, `names`, `yaml`, ...; nothing that starts with `_`).
    pub attrs: Vec<(String, PyValue)>,
}

impl ModuleInfo {
    /// The attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&PyValue> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// What a whole-model checkpoint holds besides the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleTree {
    /// The top-level key the model came from (`ema` or `model`), or `""` when the file is the model.
    pub source: String,
    /// Every module, depth-first in state-dict order, the root first.
    pub modules: Vec<ModuleInfo>,
    /// The checkpoint's other top-level entries (`train_args`, `date`, `version`, `epoch`, ...);
    /// tensors among them are elided.
    pub extra: Vec<(String, PyValue)>,
}

impl ModuleTree {
    /// The root module.
    pub fn root(&self) -> Option<&ModuleInfo> {
        self.modules.first()
    }

    /// The module at a state-dict prefix.
    pub fn module(&self, path: &str) -> Option<&ModuleInfo> {
        self.modules.iter().find(|m| m.path == path)
    }

    /// The top-level entry `key`.
    pub fn extra(&self, key: &str) -> Option<&PyValue> {
        self.extra.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A module record met in a walk, with its state-dict prefix.
pub(crate) struct ModuleNode {
    pub path: String,
    pub record: Rc<Record>,
}

/// A walked module tree: the state-dict entries and the modules, both in state-dict order.
pub(crate) struct Walked {
    pub tensors: Vec<(String, Rc<TensorRef>)>,
    pub modules: Vec<ModuleNode>,
}

/// The attribute dict of a record's state (`__dict__`, or the first item of `(dict, slots)`).
fn state_dict_of(r: &Record) -> Option<Rc<std::cell::RefCell<super::pickle::Dict>>> {
    match &*r.state.borrow() {
        Value::Dict(d) => Some(d.clone()),
        Value::Tuple(t) => match t.first() {
            Some(Value::Dict(d)) => Some(d.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Whether a record is an `nn.Module` (its state has `_modules` and `_parameters`).
fn is_module(r: &Record) -> bool {
    state_dict_of(r).is_some_and(|d| {
        let d = d.borrow();
        d.get_str("_modules").is_some() && d.get_str("_parameters").is_some()
    })
}

/// The module a checkpoint holds: the top object itself when it is a module, else the top dict's
/// `ema` entry when it is a module (Ultralytics prefers it, and so does its loader), else `model`.
pub(crate) fn module_root(top: &Value) -> Option<(&'static str, Rc<Record>)> {
    match top {
        Value::Record(r) if is_module(r) => Some(("", r.clone())),
        Value::Dict(d) => {
            let d = d.borrow();
            ["ema", "model"].into_iter().find_map(|key| match d.get_str(key) {
                Some(Value::Record(r)) if is_module(r) => Some((key, r.clone())),
                _ => None,
            })
        }
        _ => None,
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

/// Walks a module tree to its state dict: per module its parameters, then its persistent buffers,
/// then its children in order (`nn.Module.state_dict`'s order). `None` entries are skipped.
pub(crate) fn walk(root: &Rc<Record>) -> Result<Walked, String> {
    let mut out = Walked { tensors: Vec::new(), modules: Vec::new() };
    let mut stack: Vec<(String, Rc<Record>, usize)> = vec![(String::new(), root.clone(), 0)];
    while let Some((path, rec, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(format!("module tree deeper than {MAX_DEPTH} at {path}"));
        }
        if out.modules.len() >= MAX_MODULES {
            return Err(format!("more than {MAX_MODULES} modules"));
        }
        let shown = if path.is_empty() { "the root module" } else { path.as_str() };
        let state = state_dict_of(&rec).ok_or_else(|| format!("{shown} ({}) has no attribute dict", rec.class))?;
        let state = state.borrow();
        let non_persistent: Vec<String> = match state.get_str("_non_persistent_buffers_set") {
            Some(Value::List(l)) => l
                .borrow()
                .iter()
                .filter_map(|v| if let Value::Str(s) = v { Some(s.to_string()) } else { None })
                .collect(),
            _ => Vec::new(),
        };
        for key in ["_parameters", "_buffers"] {
            let Some(Value::Dict(d)) = state.get_str(key) else {
                return Err(format!("{shown} ({}): {key} is missing or not a dict", rec.class));
            };
            for (k, v) in &d.borrow().entries {
                let Value::Str(name) = k else {
                    return Err(format!("{shown}: a {key} key is a {}", k.type_name()));
                };
                match v {
                    Value::Tensor(t) if !(key == "_buffers" && non_persistent.iter().any(|n| **n == **name)) => {
                        out.tensors.push((join(&path, name), t.clone()));
                    }
                    Value::Tensor(_) | Value::None => {}
                    other => return Err(format!("{}: a {} in {key}", join(&path, name), other.type_name())),
                }
            }
        }
        let Some(Value::Dict(children)) = state.get_str("_modules") else {
            return Err(format!("{shown} ({}): _modules is missing or not a dict", rec.class));
        };
        let mut kids = Vec::new();
        for (k, v) in &children.borrow().entries {
            let Value::Str(name) = k else {
                return Err(format!("{shown}: a _modules key is a {}", k.type_name()));
            };
            match v {
                Value::Record(r) if is_module(r) => kids.push((join(&path, name), r.clone(), depth + 1)),
                Value::None => {}
                other => return Err(format!("{}: a {} where a module belongs", join(&path, name), other.type_name())),
            }
        }
        drop(state);
        out.modules.push(ModuleNode { path, record: rec });
        stack.extend(kids.into_iter().rev());
    }
    Ok(out)
}

/// Reads a tensor attribute's `(shape, values)`, or declines (the value is then elided).
pub(crate) type TensorReader<'f> = &'f dyn Fn(&TensorRef) -> Option<(Vec<i64>, Vec<f64>)>;

/// Turns values into [`PyValue`]s within a budget; tensors go through a [`TensorReader`].
pub(crate) struct Converter<'f> {
    budget: usize,
    read_tensor: TensorReader<'f>,
}

impl<'f> Converter<'f> {
    pub fn new(read_tensor: TensorReader<'f>) -> Self {
        Self { budget: MAX_VALUES, read_tensor }
    }

    /// The public attributes of a module record (its `__dict__` minus `_`-prefixed entries), or every
    /// attribute of another record.
    pub fn attrs(&mut self, r: &Record) -> Vec<(String, PyValue)> {
        self.attrs_at(r, 0)
    }

    fn attrs_at(&mut self, r: &Record, depth: usize) -> Vec<(String, PyValue)> {
        let module = is_module(r);
        let Some(state) = state_dict_of(r) else { return Vec::new() };
        let state = state.borrow();
        state
            .entries
            .iter()
            .filter_map(|(k, v)| match k {
                Value::Str(s) if !(module && s.starts_with('_')) => Some((s.to_string(), self.value_at(v, depth + 1))),
                _ => None,
            })
            .collect()
    }

    /// One value.
    pub fn value(&mut self, v: &Value) -> PyValue {
        self.value_at(v, 0)
    }

    fn value_at(&mut self, v: &Value, depth: usize) -> PyValue {
        if self.budget == 0 || depth > MAX_VALUE_DEPTH {
            return PyValue::Elided(format!("{} past the conversion limits", v.type_name()));
        }
        self.budget -= 1;
        match v {
            Value::None => PyValue::None,
            Value::Bool(b) => PyValue::Bool(*b),
            Value::Int(i) => PyValue::Int(*i),
            Value::Float(f) => PyValue::Float(*f),
            Value::Str(s) => PyValue::Str(s.to_string()),
            Value::Tuple(t) => PyValue::List(t.iter().map(|x| self.value_at(x, depth + 1)).collect()),
            Value::List(l) => PyValue::List(l.borrow().iter().map(|x| self.value_at(x, depth + 1)).collect()),
            Value::Dict(d) => PyValue::Dict(
                d.borrow()
                    .entries
                    .iter()
                    .map(|(k, x)| (self.value_at(k, depth + 1), self.value_at(x, depth + 1)))
                    .collect(),
            ),
            Value::Record(r) if is_module(r) => PyValue::Elided(format!("{} module", r.class)),
            Value::Record(r) => PyValue::Object { class: r.class.to_string(), attrs: self.attrs_at(r, depth) },
            Value::Tensor(t) => match (self.read_tensor)(t) {
                Some((shape, values)) => PyValue::Tensor { shape, values },
                None => PyValue::Elided(format!("tensor {:?}", t.size)),
            },
            other => PyValue::Elided(other.type_name().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::pickle::unpickle;

    fn ustr(s: &str) -> Vec<u8> {
        let mut v = vec![b'X'];
        v.extend((s.len() as u32).to_le_bytes());
        v.extend(s.as_bytes());
        v
    }

    /// A `Sequential` record with children `child`, memoised at `memo` (BINPUT) after BUILD.
    fn sequential(children: &[(&str, Vec<u8>)], memo: Option<u8>) -> Vec<u8> {
        let mut v = b"ctorch.nn.modules.container\nSequential\n)\x81}(".to_vec();
        for key in ["_parameters", "_buffers"] {
            v.extend(ustr(key));
            v.push(b'}');
        }
        v.extend(ustr("_modules"));
        v.extend(b"}(");
        for (name, c) in children {
            v.extend(ustr(name));
            v.extend(c);
        }
        v.extend(b"uub");
        if let Some(m) = memo {
            v.extend([b'q', m]);
        }
        v
    }

    fn walk_bytes(body: Vec<u8>) -> Result<Walked, String> {
        let data = [b"\x80\x02".to_vec(), body, b".".to_vec()].concat();
        let u = unpickle(&data).map_err(|e| format!("{e:?}"))?;
        let (_, root) = module_root(&u.value).ok_or("no module root")?;
        walk(&root)
    }

    #[test]
    fn children_are_walked_in_order_with_their_paths() {
        let leaf = sequential(&[], None);
        let mid = sequential(&[("0", leaf.clone()), ("1", leaf)], None);
        let w = walk_bytes(sequential(&[("model", mid)], None)).unwrap_or_else(|e| unreachable!("{e}"));
        let paths: Vec<&str> = w.modules.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(paths, ["", "model", "model.0", "model.1"]);
    }

    #[test]
    fn deep_or_exploding_trees_are_refused() {
        let mut body = sequential(&[], None);
        for _ in 0..100 {
            body = sequential(&[("m", body)], None);
        }
        assert!(walk_bytes(body).is_err_and(|e| e.contains("deeper than")));
        // Each level holds the level below twice (memo reuse): 2^40 paths from 40 records.
        let mut body = sequential(&[], Some(0));
        for level in 1..40u8 {
            body = sequential(&[("a", body), ("b", vec![b'h', level - 1])], Some(level));
        }
        assert!(walk_bytes(body).is_err_and(|e| e.contains("more than")));
    }
}
