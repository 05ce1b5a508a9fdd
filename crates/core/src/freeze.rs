//! Transfer strategies and validated freezing.
//!
//! Freezing works on variable names: [`apply_freeze`] sets `requires_grad(false)` on every trainable
//! variable under the prefixes of the frozen [`Stages`] and `true` on every other trainable variable.
//! Frozen variables then get no gradient, so libtorch's optimisers skip them (no update, no weight
//! decay). The caller must also call the model's `set_frozen_stages(stages.len() - trainable_layers)`
//! so that batch norms in frozen stages run in eval mode and their running statistics never move.
//!
//! Per-group learning rates: the backbone builders create backbone variables in optimiser group 0
//! ([`crate::backbones::BACKBONE_GROUP`]) and the head in group 1 ([`crate::backbones::HEAD_GROUP`]) via
//! `nn::Path::set_group`; task heads should do the same (`p.set_group(1)`), and the training loop
//! gives each group its own learning rate with `Optimizer::set_lr_group`.

use std::fmt;
use std::str::FromStr;

use tch::{Tensor, nn};

use crate::backbones::{Stages, has_prefix};
use crate::{Error, Result};

/// How a pretrained backbone is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Freeze the whole backbone; only the head trains (trainable layers = 0).
    FeatureExtract,
    /// Train the last N stages and the head.
    FineTune,
    /// Random init, everything trains (trainable layers = all stages).
    Scratch,
}

impl Strategy {
    /// The trainable stage count this strategy means, given the `fine_tune_layers` asked for
    /// (used only by [`Strategy::FineTune`]) and the model's number of stages.
    pub fn trainable_layers(self, fine_tune_layers: usize, num_stages: usize) -> usize {
        match self {
            Strategy::FeatureExtract => 0,
            Strategy::FineTune => fine_tune_layers,
            Strategy::Scratch => num_stages,
        }
    }

    /// The backbone learning-rate scale to train with, given the configured `train.backbone_lr_scale`:
    /// the configured one protects pretrained features, but a random backbone (scratch) has nothing
    /// to protect and would only learn more slowly, so scratch trains it at the full rate (1).
    pub fn backbone_lr_scale(self, configured: f64) -> f64 {
        match self {
            Strategy::Scratch => 1.0,
            Strategy::FeatureExtract | Strategy::FineTune => configured,
        }
    }

    /// The config/CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::FeatureExtract => "feature-extract",
            Strategy::FineTune => "fine-tune",
            Strategy::Scratch => "scratch",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "feature-extract" => Ok(Strategy::FeatureExtract),
            "fine-tune" => Ok(Strategy::FineTune),
            "scratch" => Ok(Strategy::Scratch),
            _ => Err(Error::Invalid(format!("unknown strategy {s:?}; expected feature-extract, fine-tune or scratch"))),
        }
    }
}

/// What [`apply_freeze`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FreezeSummary {
    /// Trainable tensors set to `requires_grad(false)`.
    pub frozen_tensors: usize,
    /// Elements in those tensors.
    pub frozen_params: i64,
    /// Tensors left to train.
    pub trainable_tensors: usize,
    /// Elements in those tensors.
    pub trainable_params: i64,
    /// Of the trainable tensors, those under a head prefix.
    pub head_tensors: usize,
    /// Number of leading stages frozen (pass it to `set_frozen_stages`).
    pub frozen_stages: usize,
}

impl fmt::Display for FreezeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} stage(s) frozen: {} tensors / {} parameters frozen, {} tensors / {} parameters trainable",
            self.frozen_stages, self.frozen_tensors, self.frozen_params, self.trainable_tensors, self.trainable_params
        )
    }
}

/// Freezes all but the last `trainable_layers` stages: every trainable variable under a prefix of
/// stages `0 .. stages.len() - trainable_layers` gets `requires_grad(false)`, every other trainable
/// variable `requires_grad(true)`. Variables under `head_prefixes` are never frozen (a head prefix
/// that also lies inside a stage is an error). Non-trainable buffers (batch-norm statistics) are left
/// alone: the model's `set_frozen_stages` keeps them fixed.
///
/// Errors ([`Error::Invalid`]): `trainable_layers > stages.len()` (the message names the range), or
/// nothing left to train.
pub fn apply_freeze(
    vs: &nn::VarStore,
    stages: &Stages,
    trainable_layers: usize,
    head_prefixes: &[&str],
) -> Result<FreezeSummary> {
    let n = stages.len();
    if trainable_layers > n {
        return Err(Error::Invalid(format!(
            "trainable_layers = {trainable_layers} is out of range: this backbone has {n} stages, so it must be 0..={n}"
        )));
    }
    for h in head_prefixes {
        if let Some(s) = stages.prefixes.iter().flatten().find(|s| has_prefix(h, s) || has_prefix(s, h)) {
            return Err(Error::Invalid(format!("head prefix {h:?} overlaps backbone stage prefix {s:?}")));
        }
    }
    let frozen_stages = n - trainable_layers;
    let named = vs.variables();
    let trainable = trainable_set(vs);
    let mut sum = FreezeSummary { frozen_stages, ..Default::default() };
    for (name, t) in &named {
        if !trainable.contains(&key(t)) {
            continue; // buffer
        }
        let frozen = stages.stage_of(name).is_some_and(|s| s < frozen_stages);
        let _ = t.set_requires_grad(!frozen);
        if frozen {
            sum.frozen_tensors += 1;
            sum.frozen_params += t.numel() as i64;
        } else {
            sum.trainable_tensors += 1;
            sum.trainable_params += t.numel() as i64;
            if head_prefixes.iter().any(|h| has_prefix(name, h)) {
                sum.head_tensors += 1;
            }
        }
    }
    if sum.trainable_tensors == 0 {
        return Err(Error::Invalid(format!(
            "nothing to train: all {} trainable tensors are frozen (trainable_layers = {trainable_layers}) and \
             there is no head ({})",
            sum.frozen_tensors,
            if head_prefixes.is_empty() { "no head prefix given".to_string() } else { head_prefixes.join(", ") }
        )));
    }
    Ok(sum)
}

/// Identity of a tensor's storage (shallow clones share it).
fn key(t: &Tensor) -> usize {
    t.data_ptr() as usize
}

/// The storages of the var store's trainable variables.
fn trainable_set(vs: &nn::VarStore) -> std::collections::HashSet<usize> {
    vs.trainable_variables().iter().map(key).collect()
}

/// Re-lays every 4-d variable of `vs` as channels-last (NHWC strides, same NCHW shape) so that
/// libtorch's oneDNN convolutions run channels-last (about 1.4x faster on CPU). Values are unchanged.
pub fn to_channels_last(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (_, mut t) in vs.variables() {
            if t.dim() == 4 {
                let cl = channels_last(&t);
                t.set_data(&cl);
            }
        }
    })
}

/// The same tensor `[N, C, H, W]` with channels-last strides (other ranks are returned as is).
pub fn channels_last(xs: &Tensor) -> Tensor {
    if xs.dim() != 4 {
        return xs.shallow_clone();
    }
    xs.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}
