//! Ultralytics' `Conv` (`ultralytics/nn/modules/conv.py`): `Conv2d` without bias, `BatchNorm2d`
//! (eps 1e-3, momentum 0.03, as `initialize_weights` sets them) and SiLU or no activation, at
//! `<p>.conv` / `<p>.bn`; padding `k / 2`; PyTorch's default `Conv2d` initialisation. `DWConv` is the
//! same with `groups = gcd(c1, c2)`.

use tch::nn;
use tlcv_core::backbones::layers::{Act, ConvBn, ConvInit, ConvOpts};

use crate::error::Result;

/// Batch-norm epsilon of every Ultralytics layer.
pub const BN_EPS: f64 = 1e-3;
/// Batch-norm running-statistics momentum (PyTorch convention).
pub const BN_MOMENTUM: f64 = 0.03;

/// The shape of one [`conv`].
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    /// Input channels.
    pub c1: i64,
    /// Output channels.
    pub c2: i64,
    /// Kernel size.
    pub k: i64,
    /// Stride.
    pub s: i64,
    /// Groups.
    pub g: i64,
    /// SiLU after the batch norm (`act=True`), or nothing (`act=False`).
    pub silu: bool,
}

impl ConvSpec {
    /// `Conv(c1, c2, k)`: stride 1, one group, SiLU.
    pub fn new(c1: i64, c2: i64, k: i64) -> Self {
        Self { c1, c2, k, s: 1, g: 1, silu: true }
    }

    /// `DWConv(c1, c2, k)`: groups `gcd(c1, c2)`.
    pub fn depthwise(c1: i64, c2: i64, k: i64) -> Self {
        Self { g: gcd(c1, c2), ..Self::new(c1, c2, k) }
    }

    /// Sets the stride.
    pub fn stride(self, s: i64) -> Self {
        Self { s, ..self }
    }

    /// Sets the groups.
    pub fn groups(self, g: i64) -> Self {
        Self { g, ..self }
    }

    /// No activation (`act=False`).
    pub fn linear(self) -> Self {
        Self { silu: false, ..self }
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

/// A `Conv` at `p`: `[N, c1, H, W]` -> `[N, c2, H / s, W / s]` through [`ConvBn::forward`].
pub fn conv(p: &nn::Path, c: ConvSpec) -> Result<ConvBn> {
    let opts = ConvOpts::new(c.k).stride(c.s).groups(c.g).init(ConvInit::Default);
    let act = if c.silu { Act::Silu } else { Act::None };
    Ok(ConvBn::new(&(p / "conv"), &(p / "bn"), c.c1, c.c2, opts.bn(BN_EPS, act))?.bn_momentum(BN_MOMENTUM))
}

#[cfg(test)]
mod tests {
    #[test]
    fn gcd_groups() {
        assert_eq!(super::gcd(64, 64), 64);
        assert_eq!(super::gcd(64, 96), 32);
        assert_eq!(super::ConvSpec::depthwise(128, 128, 3).g, 128);
    }
}
