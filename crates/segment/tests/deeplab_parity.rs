//! DeepLabv3-ResNet50 against torchvision: the state dict of `deeplabv3_resnet50(weights=None,
//! weights_backbone=None, num_classes=5, aux_loss=False)` (BN statistics randomised) loads strictly and
//! gives the same eval-mode logits. Fixture: `scripts/fixtures/gen_deeplab.py`.

#![allow(clippy::panic, clippy::expect_used)] // test failures are panics

use std::path::PathBuf;

use segment::config::{ModelConfig, ModelKind};
use segment::model::SegModel;
use tch::{Device, Tensor};
use tlcv_core::backbones::Arch;
use tlcv_core::checkpoint::{LoadOptions, load_file};

fn fixtures() -> PathBuf {
    tlcv_core::paths::generated_fixture("deeplab").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn deeplabv3_resnet50_matches_torchvision() {
    let dir = fixtures();
    let cfg = ModelConfig {
        kind: ModelKind::Deeplabv3,
        backbone: Arch::Resnet50,
        output_stride: 8,
        atrous_rates: vec![12, 24, 36],
        aspp_channels: 256,
        ..ModelConfig::default()
    };
    let model = SegModel::new(&cfg, 5, Device::Cpu).expect("build");
    let report =
        load_file(&model.vs, &dir.join("deeplabv3_resnet50.pth"), &LoadOptions::default()).expect("strict load");
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    assert_eq!(report.loaded.len(), model.vs.variables().len(), "every variable must come from the file");
    let x = Tensor::read_npy(dir.join("input.npy")).expect("input");
    let want = Tensor::read_npy(dir.join("logits.npy")).expect("logits");
    let got = tch::no_grad(|| model.forward(&x, false));
    assert_eq!(got.size(), want.size());
    let max_abs = want.abs().max().double_value(&[]);
    let diff = (&got - &want).abs().max().double_value(&[]);
    assert!(diff <= 1e-4 * max_abs, "max |diff| {diff} > 1e-4 * max |logit| ({max_abs})");
}

#[test]
fn output_strides_of_dilated_backbones() {
    // OS16 keeps C5 at stride 16, OS8 keeps C4 and C5 at stride 8 (torchvision's replace_stride_with_dilation).
    let x = Tensor::zeros([1, 3, 64, 64], (tch::Kind::Float, Device::Cpu));
    for (arch, os, want) in [
        ("resnet18", 16, [8, 16, 16]),
        ("resnet18", 8, [8, 8, 8]),
        ("efficientnet_lite0", 16, [8, 16, 16]),
        ("efficientnet_lite0", 8, [8, 8, 8]),
    ] {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let arch: tlcv_core::backbones::Arch = arch.parse().expect("arch");
        let b = tlcv_core::backbones::backbone_with_output_stride(vs.root(), arch, os).expect("backbone");
        let strides: Vec<i64> = b.feature_info().iter().map(|f| f.stride).collect();
        assert_eq!(strides, want, "{arch} OS{os}: feature_info");
        let feats = tch::no_grad(|| b.forward_features_with_low(&x, false));
        let got: Vec<i64> = feats.iter().map(|f| 64 / f.size()[2]).collect();
        assert_eq!(got[0], 4, "{arch}: low-level map");
        assert_eq!(got[1..], want, "{arch} OS{os}: actual strides");
    }
}
