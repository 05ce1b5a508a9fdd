//! A restricted unpickler for the subset of the pickle protocol (2 to 5) that `torch.save` writes.
//!
//! Nothing is ever executed. The only callables a pickle may name are the few data constructors a
//! state dict needs (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, the storage
//! classes, `set`, `torch.Size`, ...), implemented here as plain data builders, and the classes of a
//! whole-model checkpoint (`torch.nn.modules.*`, `ultralytics.*` and a few argument holders), whose
//! objects become inert [`Record`]s: a class name and the state BUILD gives it. Any other global is
//! refused when it is *named*, before anything could use it. Tensors come out as lazy [`TensorRef`]
//! descriptions; the caller reads their bytes from the file afterwards.

mod build;
mod value;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::dtype::DType;
pub(crate) use value::{Dict, Global, Record, StorageRef, TensorRef, Value, dispose};

/// Why unpickling failed. The caller adds the file path.
#[derive(Debug)]
pub(crate) enum PickleError {
    /// The data ended in the middle of an opcode or before STOP.
    Truncated,
    /// A global outside the allow-list, as `module.name`.
    Forbidden(String),
    /// Anything else that is wrong with the stream.
    Malformed(String),
}

type PResult<T> = Result<T, PickleError>;

fn bad<T>(msg: impl Into<String>) -> PResult<T> {
    Err(PickleError::Malformed(msg.into()))
}

/// The result of one pickle: the top object and every storage its persistent ids named.
pub(crate) struct Unpickled {
    pub value: Value,
    /// Storage key -> dtype, for every storage seen (the legacy format needs it to size records).
    pub storages: HashMap<String, DType>,
    /// Bytes consumed, including STOP.
    pub consumed: usize,
}

impl Drop for Unpickled {
    fn drop(&mut self) {
        dispose([std::mem::replace(&mut self.value, Value::None)]);
    }
}

struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    storages: HashMap<String, DType>,
}

impl Drop for Unpickler<'_> {
    fn drop(&mut self) {
        dispose(std::mem::take(&mut self.stack));
        dispose(std::mem::take(&mut self.memo).into_values());
    }
}

/// Unpickles one pickle starting at the beginning of `data`.
pub(crate) fn unpickle(data: &[u8]) -> PResult<Unpickled> {
    let mut u = Unpickler {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        storages: HashMap::new(),
    };
    let value = u.run()?;
    Ok(Unpickled { value, storages: std::mem::take(&mut u.storages), consumed: u.pos })
}

impl<'a> Unpickler<'a> {
    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(PickleError::Truncated)?;
        let s = self.data.get(self.pos..end).ok_or(PickleError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self) -> PResult<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> PResult<u8> {
        Ok(self.arr::<1>()?[0])
    }

    fn u32(&mut self) -> PResult<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }

    fn len_u64(&mut self) -> PResult<usize> {
        let n = u64::from_le_bytes(self.arr()?);
        usize::try_from(n).map_err(|_| PickleError::Truncated)
    }

    fn line(&mut self) -> PResult<&'a str> {
        let rest = self.data.get(self.pos..).ok_or(PickleError::Truncated)?;
        let n = rest.iter().position(|&b| b == b'\n').ok_or(PickleError::Truncated)?;
        let s =
            std::str::from_utf8(&rest[..n]).map_err(|_| PickleError::Malformed("GLOBAL name is not UTF-8".into()))?;
        self.pos += n + 1;
        Ok(s)
    }

    fn str_of(&mut self, n: usize) -> PResult<Value> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| PickleError::Malformed("string is not valid UTF-8".into()))?;
        Ok(Value::Str(Rc::from(s)))
    }

    fn bytes_of(&mut self, n: usize) -> PResult<Value> {
        Ok(Value::Bytes(Rc::from(self.take(n)?)))
    }

    fn pop(&mut self) -> PResult<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return bad("stack underflow");
        }
        self.stack.pop().ok_or_else(|| PickleError::Malformed("stack underflow".into()))
    }

    fn top(&mut self) -> PResult<&mut Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return bad("stack underflow");
        }
        self.stack.last_mut().ok_or_else(|| PickleError::Malformed("stack underflow".into()))
    }

    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let m = self.marks.pop().ok_or_else(|| PickleError::Malformed("no MARK on the stack".into()))?;
        if m > self.stack.len() {
            return bad("MARK above the stack top");
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, idx: u32) -> PResult<()> {
        let v = self.top()?.clone();
        if let Some(old) = self.memo.insert(idx, v) {
            dispose([old]);
        }
        Ok(())
    }

    fn memo_get(&mut self, idx: u32) -> PResult<()> {
        let v = self
            .memo
            .get(&idx)
            .cloned()
            .ok_or_else(|| PickleError::Malformed(format!("memo index {idx} is not set")))?;
        self.stack.push(v);
        Ok(())
    }

    fn tuple(&mut self, n: usize) -> PResult<()> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return bad("stack underflow");
        }
        let items = self.stack.split_off(self.stack.len() - n);
        self.stack.push(Value::Tuple(Rc::new(items)));
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> PResult<()> {
        if !items.len().is_multiple_of(2) {
            return bad("SETITEMS with an odd number of items");
        }
        let Value::Dict(d) = self.top()?.clone() else {
            return bad("SETITEM(S) on a non-dict");
        };
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.insert(k, v)?;
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> PResult<()> {
        let Value::List(l) = self.top()?.clone() else {
            return bad("APPEND(S) on a non-list");
        };
        l.borrow_mut().extend(items);
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str) -> PResult<()> {
        match Global::resolve(module, name) {
            Some(g) => {
                self.stack.push(Value::Global(g));
                Ok(())
            }
            None => Err(PickleError::Forbidden(format!("{module}.{name}"))),
        }
    }

    fn run(&mut self) -> PResult<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return bad(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.arr::<8>()?; // FRAME: a length hint only
                }
                b'.' => {
                    let v = self.pop()?;
                    if !self.stack.is_empty() || !self.marks.is_empty() {
                        dispose([v]);
                        return bad("STOP with items left on the stack");
                    }
                    return Ok(v);
                }
                b'}' => self.stack.push(Value::Dict(Rc::default())),
                0x8f => self.stack.push(Value::List(Rc::default())), // EMPTY_SET
                0x90 => {
                    // ADDITEMS
                    let items = self.pop_mark()?;
                    let Value::List(l) = self.top()?.clone() else {
                        return bad("ADDITEMS on a non-set");
                    };
                    l.borrow_mut().extend(items);
                }
                0x91 => {
                    // FROZENSET
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b']' => self.stack.push(Value::List(Rc::default())),
                b')' => self.stack.push(Value::Tuple(Rc::default())),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    let v = self.pop()?;
                    dispose([v]);
                }
                b'1' => {
                    let v = self.pop_mark()?;
                    dispose(v);
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.str_of(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.str_of(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let v = self.str_of(n)?;
                    self.stack.push(v);
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let v = self.bytes_of(n)?;
                    self.stack.push(v);
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let v = self.bytes_of(n)?;
                    self.stack.push(v);
                }
                0x8e => {
                    let n = self.len_u64()?;
                    let v = self.bytes_of(n)?;
                    self.stack.push(v);
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.arr()?);
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.arr()?);
                    self.stack.push(Value::Int(i64::from(v)));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    self.stack.push(long_value(b));
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.arr()?);
                    let n = usize::try_from(n)
                        .map_err(|_| PickleError::Malformed("LONG4 with a negative length".into()))?;
                    let b = self.take(n)?;
                    self.stack.push(long_value(b));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.arr()?);
                    self.stack.push(Value::Float(v));
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                0x85 => self.tuple(1)?,
                0x86 => self.tuple(2)?,
                0x87 => self.tuple(3)?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(u32::from(i))?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i =
                        u32::try_from(self.memo.len()).map_err(|_| PickleError::Malformed("memo overflow".into()))?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()?;
                    self.memo_get(u32::from(i))?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&module, &name) {
                        (Value::Str(m), Value::Str(n)) => {
                            let (m, n) = (m.clone(), n.clone());
                            self.global(&m, &n)?;
                        }
                        _ => return bad("STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.call(func, args)?;
                    self.stack.push(v);
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.new_obj(cls, args)?;
                    self.stack.push(v);
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let record = matches!(cls, Value::Global(Global::Class(_)));
                    if !record && !matches!(&kwargs, Value::Dict(d) if d.borrow().entries.is_empty()) {
                        return bad("NEWOBJ_EX with keyword arguments");
                    }
                    dispose([kwargs]);
                    let v = self.new_obj(cls, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    // OrderedDict carries `_metadata` as instance state and tensors may carry
                    // Python attributes; neither matters for the weights.
                    match self.top()? {
                        Value::Dict(_) | Value::Tensor(_) => dispose([state]),
                        Value::Record(r) => build::set_state(r, state)?,
                        other => return bad(format!("BUILD on a {}", other.type_name())),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.stack.push(v);
                }
                other => {
                    return bad(format!("unsupported pickle opcode 0x{other:02x} at byte {}", self.pos - 1));
                }
            }
        }
    }
}

/// LONG1/LONG4 payload: little-endian two's complement.
fn long_value(b: &[u8]) -> Value {
    if b.is_empty() {
        return Value::Int(0);
    }
    if b.len() <= 8 {
        let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
        let mut a = [fill; 8];
        a[..b.len()].copy_from_slice(b);
        return Value::Int(i64::from_le_bytes(a));
    }
    Value::BigInt(Rc::from(b))
}

#[cfg(test)]
mod tests;
