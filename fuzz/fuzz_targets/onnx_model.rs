//! `predict --onnx` on arbitrary bytes: protobuf decoding, the input and metadata checks, tract's
//! parser and planner, and one run on a small zero image (`tlcv_core::onnx::runtime::probe`). Errors
//! are fine; a panic, a hang or unbounded memory is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tlcv_core::onnx::runtime::probe(data);
});
