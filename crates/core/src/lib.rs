//! tlcv-core: everything the four task crates share.
//!
//! - [`backbones`]: ImageNet backbones with torchvision's (or the shipped files') state-dict names,
//!   each with a classifier and a headless multi-scale variant.
//! - [`checkpoint`]: reading PyTorch checkpoints (zip, legacy pickle, safetensors) without Python,
//!   strict loading into a `VarStore`, and safetensors export.
//! - [`freeze`]: transfer strategies and validated freezing.
//! - [`fold`]: batch norm folded into convolutions for frozen inference.
//! - [`dist`]: data-parallel training on libtorch's c10d (TCPStore + ProcessGroupGloo).
//! - [`train`]: the task-independent training loop (optimisers, schedules, checkpoints, resume).
//! - [`data`]: decoding, augmentation and batching on u8 images, in parallel with rayon.
//! - [`metrics`], [`report`]: classification metrics, plots and the self-contained `report.html`.
//! - [`onnx`]: ONNX export from the module tree, and serving exported files with tract.
//! - [`alloc`]: allocator settings that keep freed activations in the process.
//! - [`run`]: the run lifecycle (run directory, run files, trained runs, skipped files, report sections).
//! - [`weights`]: where a backbone's initial weights come from, and loading them into a headless one.
//! - [`config`], [`cli`], [`paths`], [`device`], [`progress`]: the plumbing around a run.

pub mod alloc;
pub mod backbones;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod dist;
pub mod error;
pub mod fold;
pub mod freeze;
pub mod metrics;
pub mod onnx;
pub mod paths;
pub mod progress;
pub mod report;
pub mod run;
pub mod train;
pub mod weights;

pub use error::{Error, Result};
