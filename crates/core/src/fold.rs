//! Batch norm folded into convolutions for inference with frozen weights: every eval-mode
//! `conv -> bn` of a network becomes one biased convolution (see [`ConvBn::fold`]), which saves the
//! batch norm's pass over each activation map. Training-mode forwards are unaffected, and the
//! variables in the `VarStore` are never modified (the folded weights are separate tensors), so a
//! frozen backbone stays bit-identical.
//!
//! Folding snapshots the current weights: fold only networks whose folded layers will not be trained
//! (inference, or a frozen backbone), and [`unfold_classifier`] before training them again.

use crate::Result;
use crate::backbones::{Backbone, ClassifierNet, layers::ConvBn};

fn fold_all(layers: Vec<&mut ConvBn>) -> Result<usize> {
    let n = layers.len();
    for layer in layers {
        layer.fold()?;
    }
    Ok(n)
}

/// Folds every batch norm of `net` into its convolution; returns how many layers were folded (0 for
/// families without `ConvBn` layers, e.g. VGG).
pub fn fold_classifier(net: &mut dyn ClassifierNet) -> Result<usize> {
    fold_all(net.conv_bns_mut())
}

/// [`fold_classifier`] for a headless backbone.
pub fn fold_backbone(net: &mut dyn Backbone) -> Result<usize> {
    fold_all(net.conv_bns_mut())
}

/// Undoes [`fold_classifier`]: eval-mode forwards use the batch norms again.
pub fn unfold_classifier(net: &mut dyn ClassifierNet) {
    net.conv_bns_mut().into_iter().for_each(ConvBn::unfold);
}

/// Undoes [`fold_backbone`].
pub fn unfold_backbone(net: &mut dyn Backbone) {
    net.conv_bns_mut().into_iter().for_each(ConvBn::unfold);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tch::{Kind, Tensor, nn};

    use super::*;
    use crate::backbones::{self, Arch};
    use crate::freeze::{channels_last, to_channels_last};

    /// Gives every batch norm non-trivial statistics and affine parameters so folding is not the identity.
    fn randomise_bns(vs: &nn::VarStore) {
        tch::manual_seed(7);
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                let n = t.size();
                if name.ends_with("running_var") {
                    t.copy_(&(Tensor::rand(&n[..], (Kind::Float, t.device())) + 0.5));
                } else if name.ends_with("running_mean") || (t.dim() == 1 && name.ends_with("bias")) {
                    t.copy_(&(Tensor::randn(&n[..], (Kind::Float, t.device())) * 0.1));
                } else if t.dim() == 1 && name.ends_with("weight") {
                    t.copy_(&(Tensor::rand(&n[..], (Kind::Float, t.device())) + 0.5));
                }
            }
        });
    }

    fn max_rel_err(a: &Tensor, b: &Tensor) -> f64 {
        let diff = (a - b).abs().max().double_value(&[]);
        diff / b.abs().max().double_value(&[]).max(1e-12)
    }

    fn check(arch: Arch, cl: bool) {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let mut net = backbones::classifier(vs.root(), arch, 10).unwrap();
        randomise_bns(&vs);
        if cl {
            to_channels_last(&vs);
        }
        let before: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(k, v)| (k, v.copy())).collect();
        tch::manual_seed(1);
        let xs = Tensor::randn([2, 3, 64, 64], (Kind::Float, tch::Device::Cpu));
        let xs = if cl { channels_last(&xs) } else { xs };
        let reference = tch::no_grad(|| net.forward_t(&xs, false)); // [2, 10]
        let n = fold_classifier(net.as_mut()).unwrap();
        assert!(n >= 20, "{arch}: only {n} layers folded");
        let folded = tch::no_grad(|| net.forward_t(&xs, false));
        let err = max_rel_err(&folded, &reference);
        assert!(err < 1e-4, "{arch} (channels_last {cl}): folded logits differ by {err:e} (relative)");
        // The folded path really runs: zeroing a batch norm's scale changes only the unfolded output.
        let vars = vs.variables();
        let key = if arch == Arch::Resnet18 { "bn1.weight" } else { "features.0.1.weight" };
        let mut bn_w = vars[key].shallow_clone();
        let saved = bn_w.copy();
        tch::no_grad(|| {
            let _ = bn_w.fill_(0.0);
        });
        let still = tch::no_grad(|| net.forward_t(&xs, false));
        assert!(max_rel_err(&still, &reference) < 1e-4, "{arch}: eval forward does not use the folded weights");
        tch::no_grad(|| bn_w.copy_(&saved));
        // Variables are untouched bit for bit.
        let after = vs.variables();
        for (k, v) in &before {
            assert!(after[k].equal(v), "{arch}: variable {k} changed");
        }
        // Unfolding restores the batch-norm path exactly.
        unfold_classifier(net.as_mut());
        let again = tch::no_grad(|| net.forward_t(&xs, false));
        assert!(again.equal(&reference), "{arch}: unfold does not restore the original forward");
    }

    #[test]
    fn folding_keeps_resnet18_logits() {
        check(Arch::Resnet18, false);
    }

    #[test]
    fn folding_keeps_efficientnet_b0_logits_channels_last() {
        check(Arch::EfficientnetB0, true);
    }

    #[test]
    fn folding_leaves_training_forward_alone() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let mut net = backbones::backbone(vs.root(), Arch::Resnet18).unwrap();
        randomise_bns(&vs);
        let xs = Tensor::randn([2, 3, 32, 32], (Kind::Float, tch::Device::Cpu));
        let plain = tch::no_grad(|| net.forward_features(&xs, false));
        assert!(fold_backbone(net.as_mut()).unwrap() > 0);
        let folded = tch::no_grad(|| net.forward_features(&xs, false));
        for (a, b) in folded.iter().zip(&plain) {
            assert!(max_rel_err(a, b) < 1e-4);
        }
        // In training mode batch statistics are used, as without folding (same result twice: the
        // running statistics move but the output depends on the batch only).
        let t1 = tch::no_grad(|| net.forward_features(&xs, true));
        unfold_backbone(net.as_mut());
        let t2 = tch::no_grad(|| net.forward_features(&xs, true));
        for (a, b) in t1.iter().zip(&t2) {
            assert!(a.equal(b));
        }
    }
}
