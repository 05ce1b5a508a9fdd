//! ONNX export of the three segmentation families against ONNX Runtime and tract: U-Net on
//! EfficientNet-Lite0 (TensorFlow 'SAME' padding), DeepLabv3 on a dilated ResNet-18 (OS16) and
//! DeepLabv3+ on a dilated EfficientNet-Lite0, randomly initialised with non-trivial batch norms,
//! exported with a dynamic batch at 57 and 64 px. `onnx.checker` (full check) must pass and the logits
//! at the input size must equal tlcv's eval forward to 1e-4 relative on batches of 1 and 3 in ONNX
//! Runtime, and on a batch of 1 in tract.

use anyhow::{Context, Result, ensure};
use segment::config::{ModelConfig, ModelKind};
use segment::export::export;
use segment::model::SegModel;
use tch::{Device, Kind, Tensor};
use tlcv_core::backbones::Arch;
use tlcv_core::freeze::Strategy;
use tlcv_core::onnx::parity::{Compare, ParityCheck, max_rel_err, normalise, randomise_batch_norms};
use tlcv_core::onnx::runtime::OnnxModel;
use tlcv_core::onnx::{self, ExportOptions};

const RTOL: f64 = 1e-4;

fn model(kind: ModelKind, backbone: Arch) -> Result<SegModel> {
    let cfg = ModelConfig {
        kind,
        backbone,
        weights: tlcv_core::weights::WeightsSource::None,
        strategy: Strategy::Scratch,
        atrous_rates: vec![2, 4],
        aspp_channels: 32,
        low_level_channels: 16,
        decoder_channels: vec![32, 24, 16, 16, 8],
        ..ModelConfig::default()
    };
    let m = SegModel::new(&cfg, 3, Device::Cpu)?;
    randomise_batch_norms(&m.vs);
    Ok(m)
}

#[test]
fn every_segmentation_family_exports_and_matches_onnxruntime_and_tract() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut check = ParityCheck::new(tmp.path());
    let classes: Vec<String> = ["background", "circle", "square"].map(String::from).to_vec();
    let mut tract_cases = Vec::new();
    let families = [
        (ModelKind::Unet, Arch::EfficientnetLite0),
        (ModelKind::Deeplabv3, Arch::Resnet18),
        (ModelKind::Deeplabv3plus, Arch::EfficientnetLite0),
    ];
    for (i, (kind, backbone)) in families.into_iter().enumerate() {
        tch::manual_seed(200 + i as i64);
        let m = model(kind, backbone)?;
        for size in [57, 64] {
            let opts = ExportOptions { dynamic_batch: true, ..ExportOptions::new(size) };
            let name = format!("{kind}_{size}");
            onnx::save(&export(&m, &classes, &opts)?, &check.model_path(&name))?;
            check.model(&name, Compare::Relative { rtol: RTOL });
            for n in [1, 3] {
                let x = Tensor::rand([n, 3, size, size], (Kind::Float, Device::Cpu));
                let want = tch::no_grad(|| m.forward(&normalise(&x, m.normalization()), false));
                ensure!(want.size() == [n, 3, size, size], "{kind}: logits {:?}", want.size());
                check.run(&x, std::slice::from_ref(&want))?;
                if n == 1 {
                    tract_cases.push((check.model_path(&name), x, want));
                }
            }
        }
    }
    eprintln!("{}", check.check().context("ONNX Runtime parity")?);
    for (path, x, want) in &tract_cases {
        let got = OnnxModel::load(path)?.run(x)?;
        let err = max_rel_err(&got[0], want);
        ensure!(err <= RTOL, "{}: tract differs by {err:e}", path.display());
    }
    Ok(())
}
