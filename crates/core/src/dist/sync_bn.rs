//! Synchronised batch norm (`train.sync_bn = true`), as torch.nn.SyncBatchNorm: in training mode the
//! batch statistics are those of the global batch (every rank's samples), and the gradient flows
//! through them to every rank. Built from ordinary differentiable tensor operations around one
//! differentiable all-reduce (whose backward all-reduces the gradient), because libtorch's fused
//! SyncBatchNorm kernels (`batch_norm_stats`, ...) exist only for CUDA.
//!
//! A process holds one group, so the switch is process-wide: [`enable`] routes every training-mode
//! [`crate::backbones::layers::Bn`] through [`forward`]. A failed collective there cannot surface
//! through the infallible layer call; it is kept and returned by the next [`take_error`] (the trainer
//! checks after every step), while that layer and every later one fall back to local statistics
//! without trying the broken group again.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tch::Tensor;

use super::{DistError, ProcessGroup};

static GROUP: RwLock<Option<Arc<ProcessGroup>>> = RwLock::new(None);
static FAILED: Mutex<Option<DistError>> = Mutex::new(None);

/// Synchronises every training-mode batch norm of this process over `group` from now on.
pub fn enable(group: Arc<ProcessGroup>) {
    *GROUP.write().unwrap_or_else(PoisonError::into_inner) = Some(group);
}

/// Back to per-rank batch statistics.
pub fn disable() {
    *GROUP.write().unwrap_or_else(PoisonError::into_inner) = None;
}

/// The first collective failure of a synchronised batch norm since the last call, if any.
pub fn take_error() -> Option<DistError> {
    FAILED.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// The running statistics and affine parameters of one batch-norm layer.
#[derive(Debug, Clone, Copy)]
pub struct BnParams<'a> {
    /// `[C]` scale.
    pub weight: &'a Tensor,
    /// `[C]` shift.
    pub bias: &'a Tensor,
    /// `[C]` running mean, updated in place.
    pub running_mean: &'a Tensor,
    /// `[C]` running variance (unbiased), updated in place.
    pub running_var: &'a Tensor,
    /// The running statistics' update factor.
    pub momentum: f64,
    /// Added to the variance.
    pub eps: f64,
}

/// Training-mode batch norm of `xs` (`[N, C, ...]`) with the global batch's statistics; `None` when
/// synchronisation is off or the collective failed (the caller then uses local statistics).
pub fn forward(xs: &Tensor, p: &BnParams<'_>) -> Option<Tensor> {
    let group = GROUP.read().unwrap_or_else(PoisonError::into_inner).clone()?;
    // After a failure the group is broken: trying again in every later layer would wait out the
    // roll call each time (20 layers x the timeout) before the trainer sees the first error.
    if FAILED.lock().unwrap_or_else(PoisonError::into_inner).is_some() {
        return None;
    }
    match synced(&group, xs, p) {
        Ok(ys) => Some(ys),
        Err(e) => {
            FAILED.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
            None
        }
    }
}

fn synced(group: &ProcessGroup, xs: &Tensor, p: &BnParams<'_>) -> Result<Tensor, DistError> {
    let size = xs.size();
    let c = size.get(1).copied().unwrap_or(1);
    let dims: Vec<i64> = (0..size.len() as i64).filter(|&d| d != 1).collect();
    let mut shape = vec![1i64; size.len()];
    if let Some(s) = shape.get_mut(1) {
        *s = c;
    }
    let kind = xs.kind();
    let local_count = (xs.numel() as i64 / c.max(1)) as f64;
    // Sums (and the sample count) over the global batch; float32 like the data.
    let count = Tensor::from_slice(&[local_count]).to_kind(kind).to_device(xs.device());
    let sums =
        group.all_reduce_differentiable(&Tensor::cat(&[xs.sum_dim_intlist(&dims[..], false, kind), count], 0))?;
    let total = sums.narrow(0, c, 1).detach();
    let mean = sums.narrow(0, 0, c) / &total;
    let centred = xs - mean.view(&shape[..]);
    let sq = group.all_reduce_differentiable(&centred.square().sum_dim_intlist(&dims[..], false, kind))?;
    let var = &sq / &total;
    let scale = (&var + p.eps).rsqrt() * p.weight;
    let ys = centred * scale.view(&shape[..]) + p.bias.view(&shape[..]);
    tch::no_grad(|| -> Result<(), DistError> {
        let n = total.f_double_value(&[0])?;
        let unbiased = var.detach() * (n / (n - 1.0).max(1.0));
        let m = p.momentum;
        let _ = p.running_mean.shallow_clone().f_mul_scalar_(1.0 - m)?.f_add_(&(mean.detach() * m))?;
        let _ = p.running_var.shallow_clone().f_mul_scalar_(1.0 - m)?.f_add_(&(unbiased * m))?;
        Ok(())
    })?;
    Ok(ys)
}
