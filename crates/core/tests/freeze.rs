//! Freezing: after SGD steps in train mode, frozen stages (weights and batch-norm statistics) are
//! bit-identical and everything else moved; range and "nothing to train" errors; parameter groups;
//! the strategy names; the channels-last re-layout.

use std::collections::HashMap;

use anyhow::{Result, ensure};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor, nn};
use tlcv_core::backbones::{self, Arch, BACKBONE_GROUP, ClassifierNet, HEAD_GROUP};
use tlcv_core::freeze::{Strategy, apply_freeze, channels_last, to_channels_last};

fn snapshot(vs: &nn::VarStore) -> HashMap<String, Tensor> {
    vs.variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
}

/// Names whose values differ between two snapshots.
fn changed(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> Vec<String> {
    let mut v: Vec<String> = a.iter().filter(|(k, t)| !t.equal(&b[*k])).map(|(k, _)| k.clone()).collect();
    v.sort();
    v
}

/// Builds `arch` with 3 classes, freezes all but `trainable` stages, runs 3 SGD steps (momentum and
/// weight decay on) in train mode, and returns (before, after, model).
type Snapshot = HashMap<String, Tensor>;

fn train_steps(arch: Arch, trainable: usize) -> Result<(Snapshot, Snapshot, Box<dyn ClassifierNet>)> {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut net = backbones::classifier(vs.root(), arch, 3)?;
    let stages = net.stages().clone();
    let head = net.head_prefix().to_string();
    let sum = apply_freeze(&vs, &stages, trainable, &[&head])?;
    ensure!(sum.frozen_stages == stages.len() - trainable);
    net.set_frozen_stages(sum.frozen_stages);
    let before = snapshot(&vs);
    let mut opt = nn::Sgd { momentum: 0.9, wd: 1e-4, ..Default::default() }.build(&vs, 0.05)?;
    for _ in 0..3 {
        let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(3, [4], (Kind::Int64, Device::Cpu));
        let loss = net.forward_t(&x, true).cross_entropy_for_logits(&y);
        opt.backward_step(&loss);
    }
    let after = snapshot(&vs);
    Ok((before, after, net))
}

#[test]
fn feature_extract_keeps_every_backbone_tensor_bit_identical() -> Result<()> {
    for arch in [Arch::Resnet18, Arch::EfficientnetB0, Arch::EfficientnetLite0] {
        let (before, after, net) = train_steps(arch, Strategy::FeatureExtract.trainable_layers(2, 99))?;
        let head = net.head_prefix().to_string();
        let moved = changed(&before, &after);
        let want = vec![format!("{head}.bias"), format!("{head}.weight")];
        ensure!(moved == want, "{arch}: moved {moved:?}, expected only the head");
    }
    Ok(())
}

#[test]
fn fine_tune_one_stage_changes_only_the_last_stage_and_head() -> Result<()> {
    let (before, after, net) = train_steps(Arch::Resnet18, 1)?;
    let moved = changed(&before, &after);
    for name in before.keys() {
        let in_last = name.starts_with("layer4.") || name.starts_with("fc.");
        // num_batches_tracked is not a variable; every layer4 tensor (weights and BN stats) moves.
        ensure!(moved.contains(name) == in_last, "{name}: moved = {}, expected {in_last}", moved.contains(name));
    }
    ensure!(moved.iter().any(|n| n.ends_with("running_mean")), "layer4 BN statistics should update in train mode");
    ensure!(net.stages().len() == 5);
    Ok(())
}

#[test]
fn fine_tune_two_stages_of_efficientnet_lite() -> Result<()> {
    let (before, after, net) = train_steps(Arch::EfficientnetLite0, 2)?;
    let stages = net.stages().clone();
    let n = stages.len();
    for name in before.keys() {
        let expect = match stages.stage_of(name) {
            Some(s) => s >= n - 2,
            None => name.starts_with("_fc."),
        };
        let moved = !before[name].equal(&after[name]);
        ensure!(moved == expect, "{name}: moved = {moved}, expected {expect}");
    }
    Ok(())
}

#[test]
fn too_many_trainable_layers_is_an_error_naming_the_range() -> Result<()> {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = backbones::classifier(vs.root(), Arch::Resnet18, 3)?;
    let err = apply_freeze(&vs, net.stages(), 6, &["fc"]).err().map(|e| e.to_string()).unwrap_or_default();
    ensure!(err.contains("0..=5"), "error should name the range: {err:?}");
    ensure!(apply_freeze(&vs, net.stages(), 5, &["fc"])?.frozen_tensors == 0);
    Ok(())
}

#[test]
fn feature_extract_without_a_head_has_nothing_to_train() -> Result<()> {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = backbones::backbone(vs.root(), Arch::Resnet18)?;
    let err = apply_freeze(&vs, net.stages(), 0, &[]).err().map(|e| e.to_string()).unwrap_or_default();
    ensure!(err.contains("nothing to train"), "{err:?}");
    // With one stage trainable it is fine, and the counts add up.
    let s = apply_freeze(&vs, net.stages(), 1, &[])?;
    let total: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    ensure!(s.frozen_params + s.trainable_params == total && s.trainable_tensors > 0 && s.frozen_tensors > 0);
    let grads: usize = vs.trainable_variables().iter().filter(|t| t.requires_grad()).count();
    ensure!(grads == s.trainable_tensors);
    Ok(())
}

#[test]
fn backbone_vars_are_group_0_and_the_head_group_1() -> Result<()> {
    for arch in [Arch::Resnet18, Arch::EfficientnetLite0, Arch::EfficientnetB0] {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = backbones::classifier(vs.root() / "model", arch, 5)?;
        let head = net.head_prefix().to_string();
        let by_ptr: HashMap<usize, String> =
            vs.variables().into_iter().map(|(k, t)| (t.data_ptr() as usize, k)).collect();
        let vars = vs.variables_.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        for v in &vars.trainable_variables {
            let name = &by_ptr[&(v.tensor.data_ptr() as usize)];
            let want = if backbones::has_prefix(name, &head) { HEAD_GROUP } else { BACKBONE_GROUP };
            ensure!(v.group == want, "{arch} {name}: group {} expected {want}", v.group);
        }
    }
    Ok(())
}

#[test]
fn strategy_names() -> Result<()> {
    for (s, n) in [
        (Strategy::FeatureExtract, "feature-extract"),
        (Strategy::FineTune, "fine-tune"),
        (Strategy::Scratch, "scratch"),
    ] {
        ensure!(n.parse::<Strategy>()? == s && s.to_string() == n);
        ensure!(serde_json::to_string(&s)? == format!("\"{n}\""));
        ensure!(serde_json::from_str::<Strategy>(&format!("\"{n}\""))? == s);
    }
    ensure!("freeze-all".parse::<Strategy>().is_err());
    ensure!(Strategy::Scratch.trainable_layers(1, 8) == 8 && Strategy::FineTune.trainable_layers(3, 8) == 3);
    Ok(())
}

#[test]
fn channels_last_keeps_values_and_changes_strides() -> Result<()> {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = backbones::classifier(vs.root(), Arch::Resnet18, 4)?;
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let want = tch::no_grad(|| net.forward_t(&x, false));
    to_channels_last(&vs);
    let w = vs.variables()["conv1.weight"].shallow_clone(); // [64, 3, 7, 7]
    ensure!(w.stride() == [147, 1, 21, 3], "conv1.weight strides {:?}", w.stride());
    ensure!(w.requires_grad(), "re-layout must keep the variable trainable");
    let xc = channels_last(&x);
    ensure!(xc.stride() == [3072, 1, 96, 3] && xc.equal(&x));
    let got = tch::no_grad(|| net.forward_t(&xc, false));
    let diff = (&got - &want).abs().max().double_value(&[]);
    ensure!(diff <= 1e-4 * want.abs().max().double_value(&[]), "diff {diff}");
    Ok(())
}
