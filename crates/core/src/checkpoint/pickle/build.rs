//! What REDUCE, NEWOBJ and persistent ids build: the few data constructors of a state dict
//! (`OrderedDict`, `_rebuild_tensor_v2`, `_rebuild_parameter`, storages, `set`, `torch.Size`) and
//! the inert records of allowed classes. Nothing here calls anything.

use std::cell::RefCell;
use std::rc::Rc;

use super::{Dict, Global, PResult, PickleError, Record, StorageRef, TensorRef, Unpickler, Value, bad, dispose};

impl Unpickler<'_> {
    pub(super) fn new_obj(&mut self, cls: Value, args: Value) -> PResult<Value> {
        match (&cls, &args) {
            (Value::Global(Global::OrderedDict), Value::Tuple(t)) if t.is_empty() => Ok(Value::Dict(Rc::default())),
            (Value::Global(Global::Class(class)), Value::Tuple(_)) => Ok(record(class, args)),
            _ => bad(format!("NEWOBJ of a {}", cls.type_name())),
        }
    }

    pub(super) fn call(&mut self, func: Value, args: Value) -> PResult<Value> {
        let Value::Global(g) = func else {
            return bad(format!("REDUCE on a {}", func.type_name()));
        };
        let Value::Tuple(args) = args else {
            return bad("REDUCE arguments are not a tuple");
        };
        match g {
            Global::OrderedDict => {
                let mut d = Dict::default();
                match args.first() {
                    None => {}
                    Some(Value::List(pairs)) => {
                        for p in pairs.borrow().iter() {
                            match p {
                                Value::Tuple(kv) if kv.len() == 2 => d.insert(kv[0].clone(), kv[1].clone())?,
                                _ => return bad("OrderedDict([...]) with a non-pair item"),
                            }
                        }
                    }
                    Some(_) => return bad("OrderedDict called with an unsupported argument"),
                }
                Ok(Value::Dict(Rc::new(RefCell::new(d))))
            }
            Global::RebuildTensorV2 | Global::RebuildTensor => {
                if args.len() < 4 {
                    return bad("_rebuild_tensor with fewer than 4 arguments");
                }
                let Value::Storage(storage) = &args[0] else {
                    return bad(format!("_rebuild_tensor on a {}, not a storage", args[0].type_name()));
                };
                let offset = args[1].as_int("storage offset")?;
                let size = args[2].as_int_tuple("tensor size")?;
                let stride = args[3].as_int_tuple("tensor stride")?;
                if size.len() != stride.len() {
                    return bad(format!("tensor size has {} dims but stride has {}", size.len(), stride.len()));
                }
                Ok(Value::Tensor(Rc::new(TensorRef { storage: storage.clone(), offset, size, stride })))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => match args.first() {
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                _ => bad("_rebuild_parameter without a tensor"),
            },
            Global::Storage(_) => bad("a storage class was called"),
            Global::Object => bad("`object` was called"),
            Global::Class(class) => Ok(record(&class, Value::Tuple(args))),
            Global::Set => match args.first() {
                None => Ok(Value::List(Rc::default())),
                Some(Value::List(items)) => Ok(Value::List(Rc::new(RefCell::new(items.borrow().clone())))),
                Some(Value::Tuple(items)) => Ok(Value::List(Rc::new(RefCell::new(items.to_vec())))),
                Some(other) => bad(format!("set() of a {}", other.type_name())),
            },
            Global::TorchSize => match args.first() {
                Some(t @ Value::Tuple(_)) => {
                    t.as_int_tuple("torch.Size")?;
                    Ok(t.clone())
                }
                _ => bad("torch.Size without a tuple of ints"),
            },
            Global::Reconstructor => match (args.first(), args.get(1)) {
                (Some(Value::Global(Global::Class(class))), Some(Value::Global(Global::Object))) => {
                    Ok(record(class, Value::Tuple(Rc::default())))
                }
                _ => bad("copyreg._reconstructor is only allowed for a record class on `object`"),
            },
        }
    }

    pub(super) fn persistent_load(&mut self, pid: Value) -> PResult<Value> {
        let Value::Tuple(t) = &pid else {
            return bad("persistent id is not a tuple");
        };
        if t.len() < 5 || !matches!(&t[0], Value::Str(s) if &**s == "storage") {
            return bad("persistent id is not ('storage', ...)");
        }
        let Value::Global(Global::Storage(dtype)) = t[1].clone() else {
            return bad("persistent id does not name a storage type");
        };
        let key = match &t[2] {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            other => return bad(format!("storage key is a {}", other.type_name())),
        };
        let numel = u64::try_from(t[4].as_int("storage size")?)
            .map_err(|_| PickleError::Malformed("negative storage size".into()))?;
        let view = match t.get(5) {
            None | Some(Value::None) => None,
            Some(Value::Tuple(v)) if v.len() == 3 => {
                let off = u64::try_from(v[1].as_int("view offset")?)
                    .map_err(|_| PickleError::Malformed("negative view offset".into()))?;
                let len = u64::try_from(v[2].as_int("view size")?)
                    .map_err(|_| PickleError::Malformed("negative view size".into()))?;
                Some((off, len))
            }
            Some(_) => return bad("malformed storage view metadata"),
        };
        match self.storages.get(&key) {
            Some(d) if *d != dtype => return bad(format!("storage {key} is used with two dtypes")),
            _ => {
                self.storages.insert(key.clone(), dtype);
            }
        }
        Ok(Value::Storage(Rc::new(StorageRef { key, dtype, numel, view })))
    }
}

/// A fresh inert record of `class`.
fn record(class: &Rc<str>, args: Value) -> Value {
    Value::Record(Rc::new(Record { class: class.clone(), args, state: RefCell::new(Value::None) }))
}

/// BUILD on a record: the first state is kept as is; a later dict state updates an earlier dict
/// state (what `nn.Module.__setstate__` and a plain `__dict__` update do).
pub(super) fn set_state(r: &Rc<Record>, state: Value) -> PResult<()> {
    let old = match &*r.state.borrow() {
        Value::None => None,
        Value::Dict(old) => Some(old.clone()),
        _ => return bad(format!("a second BUILD on a {} record", r.class)),
    };
    let Some(old) = old else {
        *r.state.borrow_mut() = state;
        return Ok(());
    };
    let Value::Dict(new) = &state else {
        return bad(format!("a second BUILD on a {} record", r.class));
    };
    if !Rc::ptr_eq(&old, new) {
        let entries: Vec<(Value, Value)> = new.borrow().entries.clone();
        let mut old = old.borrow_mut();
        for (k, v) in entries {
            old.insert(k, v)?;
        }
    }
    dispose([state]);
    Ok(())
}
