//! ONNX export of every backbone against ONNX Runtime and tract: each classifier (logits) and each
//! headless backbone (C2..C5), randomly initialised with non-trivial batch-norm statistics, exported
//! with a dynamic batch at two input sizes (57 px, odd, for TensorFlow 'SAME' padding's asymmetric
//! case, and 64 px; for VGG, whose four classifiers share one 0.5 GB head, VGG-16's classifier at 64 px
//! and every variant's convolutional part at both sizes) must pass `onnx.checker.check_model(full_check=True)` and give tlcv's own eval
//! forward to 1e-4 relative on batches of 1 and 3 in ONNX Runtime (`scripts/onnx_parity.py`) and in
//! tract ([`tlcv_core::onnx::runtime`]). A float16 export (`--half`) passes the checker and stays
//! within 3e-2 of the float32 forward in tract (ONNX Runtime has no float16 convolution on x86 CPUs).

use anyhow::{Context, Result, ensure};
use tch::{Device, Kind, Tensor, nn};
use tlcv_core::backbones::{self, Arch};
use tlcv_core::onnx::parity::{Compare, ParityCheck, max_rel_err, normalise, randomise_batch_norms};
use tlcv_core::onnx::runtime::OnnxModel;
use tlcv_core::onnx::{self, ExportOptions, Metadata};

const SIZES: [i64; 2] = [57, 64];
const RTOL: f64 = 1e-4;

/// Checks a model loaded in tract on batch 1 (the runtime `predict --onnx` uses).
fn check_tract(path: &std::path::Path, x: &Tensor, want: &[Tensor]) -> Result<()> {
    let m = OnnxModel::load(path)?;
    let got = m.run(x)?;
    ensure!(got.len() == want.len(), "{}: {} outputs, expected {}", path.display(), got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let err = max_rel_err(g, w);
        ensure!(err <= RTOL, "{}: tract differs by {err:e} (relative)", path.display());
    }
    Ok(())
}

#[test]
fn every_backbone_exports_and_matches_onnxruntime_and_tract() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut check = ParityCheck::new(tmp.path());
    let mut tract_cases = Vec::new();
    for (i, arch) in Arch::ALL.into_iter().enumerate() {
        let t0 = std::time::Instant::now();
        tch::manual_seed(100 + i as i64);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = backbones::classifier(vs.root(), arch, 5)?;
        randomise_batch_norms(&vs);
        let norm = arch.normalization();
        // A VGG classifier weighs 0.5 GB: its head (adaptive pooling, fc6, fc7, fc8) is the same for
        // the four variants, so VGG-16's is checked at one size; every variant's convolutional part is
        // checked at both sizes as a headless backbone below.
        let sizes: &[i64] = match arch {
            Arch::Vgg16 => &SIZES[1..],
            Arch::Vgg16Bn | Arch::Vgg19 | Arch::Vgg19Bn => &[],
            _ => &SIZES,
        };
        for &size in sizes {
            let opts = ExportOptions { dynamic_batch: true, ..ExportOptions::new(size) };
            let (mut g, x) = onnx::begin(&opts, Some(norm))?;
            g.name_params(vs.variables().iter());
            let feats = net.penultimate_onnx(&mut g, &x)?;
            let logits = net.head_onnx(&mut g, &feats)?;
            onnx::float_output(&mut g, &logits, "logits", &["batch"]);
            let name = format!("{arch}_{size}");
            let model = onnx::finish(g, "test", Metadata::new("classify", arch.name(), &opts, Some(norm)));
            onnx::save(&model, &check.model_path(&name))?;
            check.model(&name, Compare::Relative { rtol: RTOL });
            for n in [1, 3] {
                let x = Tensor::rand([n, 3, size, size], (Kind::Float, Device::Cpu));
                let want = tch::no_grad(|| net.forward_t(&normalise(&x, norm), false));
                check.run(&x, std::slice::from_ref(&want))?;
                if n == 1 && size == SIZES[0] {
                    tract_cases.push((check.model_path(&name), x, vec![want]));
                }
            }
        }
        drop(net);
        // The headless twin: C2..C5; at both sizes where the classifier was not checked at both.
        let vs = nn::VarStore::new(Device::Cpu);
        let body = backbones::backbone(vs.root(), arch)?;
        randomise_batch_norms(&vs);
        let body_sizes: &[i64] = if sizes.len() == SIZES.len() { &SIZES[1..] } else { &SIZES };
        for &size in body_sizes {
            let opts = ExportOptions { dynamic_batch: true, ..ExportOptions::new(size) };
            let (mut g, x) = onnx::begin(&opts, Some(norm))?;
            let feats = body.features_with_low_onnx(&mut g, &x)?;
            for (k, f) in feats.iter().enumerate() {
                onnx::float_output(&mut g, f, &format!("c{}", k + 2), &["batch"]);
            }
            let name = format!("{arch}_body_{size}");
            let model = onnx::finish(g, "test", Metadata::new("backbone", arch.name(), &opts, Some(norm)));
            onnx::save(&model, &check.model_path(&name))?;
            check.model(&name, Compare::Relative { rtol: RTOL });
            for n in [1, 3] {
                let x = Tensor::rand([n, 3, size, size], (Kind::Float, Device::Cpu));
                let want = tch::no_grad(|| body.forward_features_with_low(&normalise(&x, norm), false));
                ensure!(want.len() == 4, "{arch}: {} maps", want.len());
                check.run(&x, &want)?;
            }
        }
        eprintln!("{arch}: exported in {:.1} s", t0.elapsed().as_secs_f64());
    }
    // --half: ResNet-18 and EfficientNet-Lite0 (TF padding) in float16.
    let mut half_cases = Vec::new();
    for arch in [Arch::Resnet18, Arch::EfficientnetLite0] {
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = backbones::classifier(vs.root(), arch, 5)?;
        randomise_batch_norms(&vs);
        let opts = ExportOptions { half: true, ..ExportOptions::new(64) };
        let (mut g, x) = onnx::begin(&opts, Some(arch.normalization()))?;
        let feats = net.penultimate_onnx(&mut g, &x)?;
        let logits = net.head_onnx(&mut g, &feats)?;
        onnx::float_output(&mut g, &logits, "logits", &["batch"]);
        let name = format!("{arch}_half");
        onnx::save(
            &onnx::finish(g, "test", Metadata::new("classify", arch.name(), &opts, Some(arch.normalization()))),
            &check.model_path(&name),
        )?;
        check.model(&name, Compare::Relative { rtol: RTOL }); // checker only: no runs
        let x = Tensor::rand([1, 3, 64, 64], (Kind::Float, Device::Cpu));
        let want = tch::no_grad(|| net.forward_t(&normalise(&x, arch.normalization()), false));
        half_cases.push((check.model_path(&name), x, want));
    }
    let t0 = std::time::Instant::now();
    let report = check.check().context("ONNX Runtime parity")?;
    eprintln!("{report}ONNX Runtime: {:.1} s", t0.elapsed().as_secs_f64());
    let t0 = std::time::Instant::now();
    for (path, x, want) in &tract_cases {
        check_tract(path, x, want)?;
    }
    for (path, x, want) in &half_cases {
        let got = OnnxModel::load(path)?.run(x)?;
        let err = max_rel_err(&got[0], want);
        // float16 rounding through 20 layers: mostly below 1e-2, 1.06e-2 in one CI run (tract's float16
        // kernels do not sum in a fixed order); a wrong layer or an unfolded batch norm is off by O(1).
        ensure!(err <= 3e-2, "{}: float16 differs by {err:e}", path.display());
    }
    eprintln!("tract: {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
