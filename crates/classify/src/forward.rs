//! The parity tool: one batch through a network in eval mode, from `.npy` to `.npy`, so that a port can be
//! compared with PyTorch on the same input.

use std::path::Path;

use tch::{Kind, Tensor};
use tlcv_core::{backbones::Arch, weights::WeightsSource};

use crate::{ClassifyError, Result, predict::Pretrained};

/// Runs `input` (float32 NCHW, already normalised) through `arch` with `weights`; writes float32 logits.
pub fn forward_npy(
    arch: Arch,
    weights: &WeightsSource,
    num_classes: Option<i64>,
    input: &Path,
    output: &Path,
) -> Result<Vec<i64>> {
    let model = Pretrained::load(arch, weights, num_classes)?;
    let xs = Tensor::read_npy(input).map_err(|e| ClassifyError::Invalid(format!("{}: {e}", input.display())))?;
    if xs.dim() != 4 || xs.size()[1] != 3 {
        return Err(ClassifyError::Invalid(format!(
            "{}: expected a float32 [N, 3, H, W] array, got {:?}",
            input.display(),
            xs.size()
        )));
    }
    let logits = tch::no_grad(|| model.net.forward_t(&xs.to_kind(Kind::Float), false)); // [N, 3, H, W] -> [N, C]
    logits
        .to_kind(Kind::Float)
        .contiguous()
        .write_npy(output)
        .map_err(|e| ClassifyError::Invalid(format!("{}: {e}", output.display())))?;
    Ok(logits.size())
}
