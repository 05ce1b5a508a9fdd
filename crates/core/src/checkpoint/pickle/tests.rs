//! Unit tests of the restricted unpickler.

use super::*;

#[test]
fn small_values_and_memo() {
    // protocol 2: {'a': [1, -2, 'x'], 'b': (True, None, 1.5)} with the list memoized and reused.
    let data = b"\x80\x02}q\x00(X\x01\x00\x00\x00a]q\x01(K\x01J\xfe\xff\xff\xffX\x01\x00\x00\x00xeX\x01\x00\x00\x00b\x88NG?\xf8\x00\x00\x00\x00\x00\x00\x87X\x01\x00\x00\x00ch\x01u.";
    let u = unpickle(data).map_err(|e| format!("{e:?}")).unwrap_or_else(|e| unreachable!("{e}"));
    let Value::Dict(d) = &u.value else { unreachable!("not a dict") };
    let d = d.borrow();
    assert_eq!(d.entries.len(), 3);
    let Some(Value::List(l)) = d.get_str("a") else { unreachable!("a") };
    let l = l.borrow();
    assert!(matches!(l[0], Value::Int(1)));
    assert!(matches!(l[1], Value::Int(-2)));
    assert!(matches!(&l[2], Value::Str(s) if &**s == "x"));
    let Some(Value::Tuple(t)) = d.get_str("b") else { unreachable!("b") };
    assert!(matches!(t[0], Value::Bool(true)));
    assert!(matches!(t[1], Value::None));
    assert!(matches!(t[2], Value::Float(f) if f == 1.5));
    // The memoized list is the same object, filled after BINPUT.
    let Some(Value::List(c)) = d.get_str("c") else { unreachable!("c") };
    assert_eq!(c.borrow().len(), 3);
    assert_eq!(u.consumed, data.len());
}

#[test]
fn forbidden_globals_are_named() {
    let proto2 = b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85R.";
    assert!(matches!(unpickle(proto2), Err(PickleError::Forbidden(g)) if g == "posix.system"));
    let proto4 = b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x8c\x04eval\x93.";
    assert!(matches!(unpickle(proto4), Err(PickleError::Forbidden(g)) if g == "builtins.eval"));
}

#[test]
fn malformed_streams_are_errors() {
    let cases: &[&[u8]] = &[
        b"",                             // nothing
        b"\x80\x02",                     // no STOP
        b".",                            // STOP on an empty stack
        b"\x80\x02s.",                   // SETITEM underflow
        b"\x80\x02h\x05.",               // unset memo
        b"\x80\x02(K\x01K\x02.",         // STOP with a mark left
        b"\x80\x02X\xff\xff\xff\x7fab.", // string longer than the data
        b"\x80\x02\xfe.",                // unknown opcode
        b"\x80\x02]K\x01s.",             // SETITEM on a list
        b"\x80\x02(t(\x85.",             // TUPLE1 over a mark
    ];
    for c in cases {
        assert!(unpickle(c).is_err(), "{c:?} was accepted");
    }
}

#[test]
fn deep_nesting_does_not_overflow() {
    // 200k nested lists: ] ( ] ... then APPEND back up.
    let n = 200_000;
    let mut data = vec![0x80, 2];
    data.extend(std::iter::repeat_n(b']', n));
    data.extend(std::iter::repeat_n(b'a', n - 1));
    data.push(b'.');
    assert!(unpickle(&data).is_ok());
}

/// Protocol-2 pieces for hand-made streams.
fn glob(module: &str, name: &str) -> Vec<u8> {
    format!("c{module}\n{name}\n").into_bytes()
}

fn ustr(s: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend((s.len() as u32).to_le_bytes());
    v.extend(s.as_bytes());
    v
}

/// `cls.__new__(cls)` then BUILD with `{'_parameters': {}, '_buffers': {}, '_modules': {<children>}, <attrs>}`.
fn module(class: (&str, &str), children: &[(&str, Vec<u8>)], attrs: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut v = glob(class.0, class.1);
    v.extend(b")\x81}(");
    for key in ["_parameters", "_buffers"] {
        v.extend(ustr(key));
        v.push(b'}');
    }
    v.extend(ustr("_modules"));
    v.extend(b"}(");
    for (name, child) in children {
        v.extend(ustr(name));
        v.extend(child);
    }
    v.push(b'u');
    for (name, value) in attrs {
        v.extend(ustr(name));
        v.extend(value);
    }
    v.extend(b"ub");
    v
}

#[test]
fn module_objects_become_inert_records() {
    // A Sequential holding a Conv2d; attributes: torch.Size, a set, an IterableSimpleNamespace.
    let size = [glob("torch", "Size"), b"K\x01K\x02\x86\x85R".to_vec()].concat();
    let set = [glob("__builtin__", "set"), b"](K\x01K\x02e\x85R".to_vec()].concat();
    let ns = [
        glob("ultralytics.utils", "IterableSimpleNamespace"),
        b")R}".to_vec(),
        ustr("lr0"),
        b"G?\x84z\xe1G\xae\x14{sb".to_vec(),
    ]
    .concat();
    let conv = module(("torch.nn.modules.conv", "Conv2d"), &[], &[("in_channels", b"K\x03".to_vec())]);
    let top = module(
        ("torch.nn.modules.container", "Sequential"),
        &[("0", conv)],
        &[("shape", size), ("tags", set), ("args", ns)],
    );
    let data = [b"\x80\x02".to_vec(), top, b".".to_vec()].concat();
    let u = unpickle(&data).unwrap_or_else(|e| unreachable!("{e:?}"));
    let Value::Record(r) = &u.value else { unreachable!("not a record: {}", u.value.type_name()) };
    assert_eq!(&*r.class, "torch.nn.modules.container.Sequential");
    let Value::Dict(state) = &*r.state.borrow() else { unreachable!("no state") };
    let state = state.borrow();
    assert!(matches!(state.get_str("shape"), Some(Value::Tuple(t)) if t.len() == 2));
    assert!(matches!(state.get_str("tags"), Some(Value::List(l)) if l.borrow().len() == 2));
    let Some(Value::Record(ns)) = state.get_str("args") else { unreachable!("args") };
    assert_eq!(&*ns.class, "ultralytics.utils.IterableSimpleNamespace");
    let Some(Value::Dict(children)) = state.get_str("_modules") else { unreachable!("_modules") };
    assert!(
        matches!(children.borrow().get_str("0"), Some(Value::Record(c)) if &*c.class == "torch.nn.modules.conv.Conv2d")
    );
}

#[test]
fn a_forbidden_global_inside_a_record_is_refused_by_name() {
    let call = [glob("posix", "system"), ustr("touch /tmp/x"), b"\x85R".to_vec()].concat();
    let top = module(("ultralytics.nn.tasks", "DetectionModel"), &[], &[("pwn", call)]);
    let data = [b"\x80\x02".to_vec(), top, b".".to_vec()].concat();
    assert!(matches!(unpickle(&data), Err(PickleError::Forbidden(g)) if g == "posix.system"));
    // Classes outside the record namespaces stay forbidden, even when they look like modules.
    let other = module(("mypackage.nn", "Conv"), &[], &[]);
    let data = [b"\x80\x02".to_vec(), other, b".".to_vec()].concat();
    assert!(matches!(unpickle(&data), Err(PickleError::Forbidden(g)) if g == "mypackage.nn.Conv"));
}

#[test]
fn records_are_never_called() {
    // REDUCE on a record instance, `object()`, and _reconstructor on something else are errors.
    let rec = [glob("torch.nn.modules.linear", "Identity"), b")\x81)R.".to_vec()].concat();
    let data = [b"\x80\x02".to_vec(), rec].concat();
    assert!(matches!(unpickle(&data), Err(PickleError::Malformed(m)) if m.contains("REDUCE on a object")));
    let data = [b"\x80\x02".to_vec(), glob("builtins", "object"), b")R.".to_vec()].concat();
    assert!(unpickle(&data).is_err());
    let recon = [
        glob("copyreg", "_reconstructor"),
        glob("collections", "OrderedDict"),
        glob("builtins", "object"),
        b"N\x87R.".to_vec(),
    ];
    assert!(unpickle(&[b"\x80\x02".to_vec(), recon.concat()].concat()).is_err());
    // The protocol-0/1 path for a record class works.
    let recon = [
        glob("copyreg", "_reconstructor"),
        glob("torch.nn.modules.linear", "Identity"),
        glob("builtins", "object"),
        b"N\x87R.".to_vec(),
    ];
    let u = unpickle(&[b"\x80\x02".to_vec(), recon.concat()].concat()).unwrap_or_else(|e| unreachable!("{e:?}"));
    assert!(matches!(&u.value, Value::Record(r) if &*r.class == "torch.nn.modules.linear.Identity"));
}
