//! Workloads shared by the criterion benchmarks (`benches/*.rs`) and the side-by-side comparison with
//! PyTorch (`src/bin/compare.rs`, driven by `cargo xtask bench --compare`): the same JPEGs, boxes,
//! detections and models on both sides.
//!
//! - [`corpus`]: ~200 JPEGs of 500x375 cut from the Debian photos, generated once.
//! - [`pipeline`]: decode + random-resized-crop 224 + flip + normalise + batch.
//! - [`models`]: a training step and an inference batch of a backbone in fp32, channels-last or bf16.
//! - [`flops`]: each network's FLOPs per image and libtorch's matrix-multiply peak on this machine.
//! - [`synth`]: deterministic synthetic NMS boxes, COCO ground truth and detections, segmentation masks.
//! - [`tasks`]: a training step and an inference batch of the embedded YOLO-style detector and U-Net.
//! - [`yolo`]: a training step and an inference batch of Ultralytics' YOLOv8 / YOLO11.
//! - [`dist`]: a gradient all-reduce and data-parallel training steps over local c10d ranks.

pub mod corpus;
pub mod dist;
pub mod flops;
pub mod models;
pub mod onnx;
pub mod pipeline;
pub mod synth;
pub mod tasks;
pub mod yolo;

/// A `kB` field of `/proc/self/status` in MiB (`VmHWM` = peak resident set size); 0 where unknown.
pub fn proc_status_mb(field: &str) -> f64 {
    tlcv_core::train::proc_status_mb(field).unwrap_or(0.0)
}

/// The median of `xs` (0 when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
