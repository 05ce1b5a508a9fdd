//! Mixed precision in every segmentation model: a bfloat16 input runs the network in bf16 while its
//! variables, gradients and the loss stay float32, and the logits stay close to a float32 forward.

use anyhow::{Result, ensure};
use segment::config::{ModelConfig, ModelKind};
use segment::model::SegModel;
use tch::{Device, Kind, Reduction, Tensor};
use tlcv_core::{backbones::Arch, freeze::Strategy, weights::WeightsSource};

#[test]
fn every_model_trains_float32_weights_through_bf16_activations() -> Result<()> {
    for kind in [ModelKind::Unet, ModelKind::Deeplabv3, ModelKind::Deeplabv3plus] {
        tch::manual_seed(5);
        let cfg = ModelConfig {
            kind,
            backbone: Arch::Resnet18,
            weights: WeightsSource::None,
            strategy: Strategy::Scratch,
            ..ModelConfig::default()
        };
        let model = SegModel::build(&cfg, 3, Device::Cpu)?;
        let xs = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        let ys = Tensor::randint(3, [2, 64, 64], (Kind::Int64, Device::Cpu));
        let fp32 = tch::no_grad(|| model.forward(&xs, false)); // [2, 3, 64, 64]
        let bf16 = tch::no_grad(|| model.forward(&xs.to_kind(Kind::BFloat16), false));
        ensure!(bf16.kind() == Kind::BFloat16, "{kind:?}: the bf16 forward returned {:?}", bf16.kind());
        let err =
            (bf16.to_kind(Kind::Float) - &fp32).abs().max().double_value(&[]) / fp32.abs().max().double_value(&[]);
        ensure!(err < 5e-2, "{kind:?}: bf16 logits differ from float32 ones by {err:e} (relative)");

        let logits = model.forward(&xs.to_kind(Kind::BFloat16), true).to_kind(Kind::Float);
        logits.cross_entropy_loss::<Tensor>(&ys, None, Reduction::Mean, -100, 0.0).backward();
        let mut with_grad = 0;
        for (name, var) in model.vs.variables() {
            ensure!(var.kind() == Kind::Float, "{kind:?} {name}: master weights must stay float32");
            if var.requires_grad() {
                let g = var.grad();
                ensure!(g.defined() && g.kind() == Kind::Float, "{kind:?} {name}: no float32 gradient");
                with_grad += 1;
            }
        }
        ensure!(with_grad > 0, "{kind:?}: nothing was trained");
    }
    Ok(())
}
