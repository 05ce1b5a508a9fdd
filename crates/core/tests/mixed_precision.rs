//! Mixed-precision training against `torch.autocast("cpu", dtype=torch.bfloat16)`: float32 variables,
//! a bfloat16 input, convolutions and linear layers run in bf16 through the per-call weight cast of
//! `tlcv_core::backbones::layers::autocast`, batch norms on bf16 activations with float32 parameters.
//! One training-mode step of a torchvision ResNet-18 must give autocast's bf16 logits, loss, float32
//! gradients and running statistics (fixtures from `scripts/fixtures/gen_mixed.py`). They agree
//! bit for bit here; the tolerances (1e-6 relative, 1e-5 for gradients) leave room only for a
//! different summation order, far below the 3e-2 by which a float32 forward misses.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use tch::{Device, Kind, Reduction, Tensor, nn};
use tlcv_core::backbones::{self, Arch};
use tlcv_core::checkpoint::{LoadOptions, load_into, read_state_dict};

fn fixtures() -> Result<PathBuf> {
    Ok(tlcv_core::paths::generated_fixture("mixed")?)
}

fn npy(name: &str) -> Result<Tensor> {
    let p = fixtures()?.join(format!("{name}.npy"));
    Tensor::read_npy(&p).with_context(|| format!("reading {}", p.display()))
}

/// Largest absolute difference relative to the reference's largest magnitude.
fn rel_diff(got: &Tensor, want: &Tensor) -> f64 {
    let scale = want.abs().max().double_value(&[]).max(1e-30);
    (got.to_kind(Kind::Float) - want).abs().max().double_value(&[]) / scale
}

/// ResNet-18 with the fixture's weights, all variables float32.
fn resnet18() -> Result<(nn::VarStore, Box<dyn backbones::ClassifierNet>)> {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = backbones::classifier(vs.root(), Arch::Resnet18, 10)?;
    let sd = read_state_dict(&fixtures()?.join("resnet18.pth"))?;
    let report = load_into(&vs, &sd, &LoadOptions::default())?;
    ensure!(report.loaded.len() == vs.variables().len(), "partial load: {:?}", report.missing);
    Ok((vs, net))
}

#[test]
fn bf16_step_matches_torch_autocast() -> Result<()> {
    let (vs, net) = resnet18()?;
    let xs = npy("input")?.to_kind(Kind::BFloat16);
    let ys = npy("labels")?;
    let logits = net.forward_t(&xs, true); // [2, 10] in bf16
    ensure!(logits.kind() == Kind::BFloat16, "logits are {:?}, not bf16", logits.kind());
    let want = npy("logits")?;
    let d = rel_diff(&logits, &want);
    eprintln!("logits: {d:e}");
    ensure!(d <= 1e-6, "logits differ from autocast's by {d:e} (relative)");

    let loss = logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(&ys, None, Reduction::Mean, -100, 0.0);
    let d = rel_diff(&loss.view([1]), &npy("loss")?);
    ensure!(d <= 1e-6, "loss differs from autocast's by {d:e} (relative)");
    loss.backward();

    let vars = vs.variables();
    for name in
        ["conv1.weight", "bn1.weight", "layer2.0.downsample.0.weight", "layer4.1.conv2.weight", "fc.weight", "fc.bias"]
    {
        let var = vars.get(name).with_context(|| format!("no variable {name}"))?;
        ensure!(var.kind() == Kind::Float, "{name} is {:?}: the master weights must stay float32", var.kind());
        let grad = var.grad();
        ensure!(grad.defined() && grad.kind() == Kind::Float, "{name}: gradient missing or not float32");
        let d = rel_diff(&grad, &npy(&format!("grad_{}", name.replace('.', "_")))?);
        eprintln!("{name} gradient: {d:e}");
        ensure!(d <= 1e-5, "{name}: gradient differs from autocast's by {d:e} (relative)");
    }
    let rm = vars.get("bn1.running_mean").context("no bn1.running_mean")?;
    let d = rel_diff(rm, &npy("running_mean_bn1")?);
    eprintln!("bn1 running mean: {d:e}");
    ensure!(d <= 1e-6, "bn1 running mean differs from autocast's by {d:e} (relative)");
    Ok(())
}

#[test]
fn float32_forward_is_distinguishable_from_the_bf16_reference() -> Result<()> {
    // The tolerances above must be able to fail: a float32 forward misses autocast's logits by more.
    let (_vs, net) = resnet18()?;
    let logits = net.forward_t(&npy("input")?, true);
    ensure!(logits.kind() == Kind::Float);
    let d = rel_diff(&logits, &npy("logits")?);
    eprintln!("float32 logits: {d:e}");
    ensure!(d > 1e-3, "float32 logits are within {d:e} of the bf16 reference: the test cannot tell them apart");
    Ok(())
}
