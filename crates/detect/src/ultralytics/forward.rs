//! The parity tool behind `detect forward`: one float32 NCHW batch (RGB, 0-1) through an Ultralytics
//! network in eval mode, from `.npy` to `.npy`, giving what Ultralytics' `DetectionModel` returns
//! first: `[N, 4 + nc, A]`.

use std::path::Path;

use tch::{Device, Kind, Tensor, nn::VarStore};

use super::checkpoint::{self, YoloCheckpoint};
use super::spec::YoloArch;
use crate::error::{DetectError, Result};

/// What [`forward_npy`] ran.
#[derive(Debug)]
pub struct ForwardSummary {
    /// The network.
    pub arch: YoloArch,
    /// Shape of the output written.
    pub output_shape: Vec<i64>,
    /// Where the weights came from (`ema`, `model`, `state dict`).
    pub source: String,
    /// The class names.
    pub names: Vec<String>,
}

/// Runs `input` through `arch` (or the checkpoint's own network) with `weights`; writes float32.
pub fn forward_npy(arch: Option<YoloArch>, weights: &Path, input: &Path, output: &Path) -> Result<ForwardSummary> {
    let ckpt: YoloCheckpoint = checkpoint::read(weights)?;
    let vs = VarStore::new(Device::Cpu);
    let model = checkpoint::load_model(&vs, &ckpt, arch, weights)?;
    drop(ckpt.state_dict);
    let xs = Tensor::read_npy(input).map_err(|e| DetectError::Invalid(format!("{}: {e}", input.display())))?;
    let s = xs.size();
    if s.len() != 4 || s[1] != 3 || s[2] % 32 != 0 || s[3] % 32 != 0 || s[2] == 0 || s[3] == 0 {
        return Err(DetectError::Invalid(format!(
            "{}: expected a float32 [N, 3, H, W] array with H and W multiples of 32, got {s:?}",
            input.display()
        )));
    }
    let y = tch::no_grad(|| model.forward_eval(&xs.to_kind(Kind::Float))); // [N, 4 + nc, A]
    y.contiguous().write_npy(output).map_err(|e| DetectError::Invalid(format!("{}: {e}", output.display())))?;
    Ok(ForwardSummary { arch: model.arch, output_shape: y.size(), source: ckpt.source, names: ckpt.names })
}
