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
