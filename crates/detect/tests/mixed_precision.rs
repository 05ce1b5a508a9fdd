//! Mixed precision in every detector family: with the backbone computing in bfloat16, one training
//! step gives a finite float32 loss close to the float32 step's, and float32 gradients for float32
//! variables in the backbone, the neck and the heads.

use anyhow::{Result, ensure};
use detect::{DetectConfig, config::Family, family::LossScope, model::Detector, model_io::Targets};
use tch::{Device, Kind, Tensor};
use tlcv_core::freeze::Strategy;

fn targets() -> Targets {
    // Two images, up to two boxes each (input pixels, xyxy); the second box of image 1 is padding.
    let boxes = Tensor::from_slice(&[
        4.0f32, 6.0, 40.0, 50.0, 30.0, 20.0, 60.0, 58.0, 10.0, 10.0, 34.0, 30.0, 0.0, 0.0, 0.0, 0.0,
    ])
    .view([2, 2, 4]);
    let labels = Tensor::from_slice(&[0i64, 1, 1, 0]).view([2, 2]);
    let mask = Tensor::from_slice(&[true, true, true, false]).view([2, 2]);
    Targets { boxes, labels, mask }
}

#[test]
fn every_family_trains_float32_weights_with_a_bf16_backbone() -> Result<()> {
    for &family in Family::ALL {
        let mut cfg = DetectConfig::default();
        cfg.data.img_size = 64;
        cfg.model.family = family;
        cfg.model.backbone = tlcv_core::backbones::Arch::Resnet18;
        cfg.model.weights = tlcv_core::weights::WeightsSource::None;
        cfg.model.strategy = Strategy::Scratch;
        let xs = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        let mut losses = Vec::new();
        for kind in [Kind::Float, Kind::BFloat16] {
            tch::manual_seed(6);
            let mut model = Detector::build(&cfg, 2, Device::Cpu)?;
            model.set_compute_kind(kind);
            let out = model.loss(&xs, &targets(), LossScope::SINGLE)?;
            ensure!(out.total.kind() == Kind::Float, "{family} {kind:?}: the loss is {:?}", out.total.kind());
            let loss = out.total.double_value(&[]);
            ensure!(loss.is_finite() && loss > 0.0, "{family} {kind:?}: loss {loss}");
            out.total.backward();
            let mut trained = 0;
            for (name, var) in model.vs.variables() {
                ensure!(var.kind() == Kind::Float, "{family} {name}: variables must stay float32");
                let g = var.grad();
                if var.requires_grad() && g.defined() {
                    ensure!(g.kind() == Kind::Float, "{family} {name}: gradient is {:?}", g.kind());
                    // Ultralytics' networks have no `backbone` prefix: their stem is `model.0`.
                    let backbone = if family == Family::Ultralytics { "model.0." } else { "backbone" };
                    trained += usize::from(name.starts_with(backbone));
                }
            }
            ensure!(trained > 0, "{family} {kind:?}: no backbone variable got a gradient");
            losses.push(loss);
        }
        let rel = (losses[1] - losses[0]).abs() / losses[0];
        ensure!(
            rel > 0.0 && rel < 5e-2,
            "{family}: bf16 loss {} vs float32 {} (relative {rel:e})",
            losses[1],
            losses[0]
        );
    }
    Ok(())
}
