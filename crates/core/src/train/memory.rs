//! Out-of-memory handling: libtorch's allocation failures (a `TchError`, or a panic from tch's
//! non-`f_` methods) become one clear error that names the flags to change.

use std::{
    cell::Cell,
    panic::{AssertUnwindSafe, catch_unwind, resume_unwind},
};

use crate::{Error, Result};

/// Substrings of libtorch's allocation-failure messages (CPU and CUDA allocators).
const OOM_MARKERS: [&str; 3] =
    ["DefaultCPUAllocator: can't allocate memory", "out of memory", "CUDA error: out of memory"];

/// Whether a libtorch message reports a failed allocation.
pub fn is_oom_message(message: &str) -> bool {
    OOM_MARKERS.iter().any(|m| message.contains(m))
}

/// The error for a batch of `batch` samples that does not fit in memory, quoting libtorch's first line.
pub fn oom_error(message: &str, batch: usize) -> Error {
    let first = message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("allocation failed");
    Error::Invalid(format!(
        "a batch of {batch} samples does not fit in memory ({first}); lower --batch or data.img_size"
    ))
}

/// Maps an allocation failure inside `err` to [`oom_error`]; other errors are returned unchanged.
pub fn map_oom(err: Error, batch: usize) -> Error {
    match &err {
        Error::Torch(e) if is_oom_message(&e.to_string()) => oom_error(&e.to_string(), batch),
        _ => err,
    }
}

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (a training step); an allocation failure, returned or panicked (tch's non-`f_` methods
/// panic), becomes [`oom_error`]. Any other panic continues unwinding.
pub fn guard_oom<R>(batch: usize, f: impl FnOnce() -> Result<R>) -> Result<R> {
    install_panic_filter();
    let was = GUARDED.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    match result {
        Ok(r) => r.map_err(|e| map_oom(e, batch)),
        Err(payload) => match panic_message(payload.as_ref()) {
            Some(msg) if is_oom_message(&msg) => Err(oom_error(&msg, batch)),
            _ => resume_unwind(payload),
        },
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload.downcast_ref::<String>().cloned().or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
}

/// Keeps the default panic report quiet for allocation failures inside [`guard_oom`], which reports them.
fn install_panic_filter() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let quiet = GUARDED.with(Cell::get) && panic_message(info.payload()).is_some_and(|m| is_oom_message(&m));
            if !quiet {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use tch::{Device, Kind, Tensor};

    use super::*;

    /// 2^20 images of 3×8192×8192 floats: 2^40 × 3 × 4 bytes, far beyond any machine, refused at once.
    const ABSURD: [i64; 4] = [1 << 20, 3, 8192, 8192];

    #[test]
    fn an_absurd_allocation_maps_to_a_batch_error() {
        let err = match Tensor::f_zeros(ABSURD, (Kind::Float, Device::Cpu)) {
            Ok(_) => panic!("the absurd allocation succeeded"),
            Err(e) => Error::Torch(e),
        };
        let msg = map_oom(err, 1 << 20).to_string();
        assert!(msg.contains("does not fit in memory"), "{msg}");
        assert!(msg.contains("--batch") && msg.contains("1048576"), "{msg}");
        assert_eq!(msg.lines().count(), 1, "{msg}");
    }

    #[test]
    fn a_panicking_allocation_inside_the_guard_is_an_error() {
        let result = guard_oom(64, || Ok(Tensor::zeros(ABSURD, (Kind::Float, Device::Cpu)).size()));
        match result {
            Err(Error::Invalid(msg)) => assert!(msg.contains("lower --batch"), "{msg}"),
            other => panic!("expected the memory error, got {other:?}"),
        }
    }

    #[test]
    fn other_errors_pass_through() {
        let e = map_oom(Error::Invalid("bad value".into()), 8);
        assert_eq!(e.to_string(), "bad value");
        assert!(!is_oom_message("shape mismatch"));
        assert!(is_oom_message("CUDA out of memory. Tried to allocate 2.00 GiB"));
    }

    #[test]
    fn other_panics_keep_unwinding() {
        let caught = std::panic::catch_unwind(|| guard_oom(1, || -> Result<()> { panic!("not memory") }));
        assert!(caught.is_err());
    }
}
