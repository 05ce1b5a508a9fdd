//! The style layers of the VGG-19 feature network equal torchvision's activations: torchvision's
//! `vgg19.pth` (written by `scripts/fixtures/gen_backbones.py`) loads strictly through
//! `FeatureNet::load_weights`, and on the fixture input the default style layers (`relu1_1` ..
//! `relu5_1`) match torchvision's `features[:k]` outputs saved beside it. This checks the style
//! crate's layer names and its ImageNet normalisation, on top of core's backbone parity test.

#![allow(clippy::panic)] // test failures are panics

use std::path::PathBuf;

use tch::{Device, Kind, Tensor};
use tlcv_core::backbones::{Arch, Normalization};

fn fixtures() -> PathBuf {
    tlcv_core::paths::generated_fixture("backbones").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn default_vgg19_style_layers_match_torchvision() -> Result<(), Box<dyn std::error::Error>> {
    let dir = fixtures();
    let mut net = style::features::FeatureNet::new(Arch::Vgg19, Device::Cpu)?;
    net.load_weights(&dir.join("vgg19.pth"))?;
    assert_eq!(net.style_layers, ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]);
    assert_eq!(net.content_layers, ["relu4_2"]);
    // input.npy is already normalised: undo ImageNet's normalisation to get the [0, 1] image.
    let x = Tensor::read_npy(dir.join("input.npy"))?.to_kind(Kind::Float);
    let n = Normalization::IMAGENET;
    let mean = Tensor::from_slice(&n.mean).to_kind(Kind::Float).view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&n.std).to_kind(Kind::Float).view([1, 3, 1, 1]);
    let image = &x * std + mean;
    let (content, styles) = tch::no_grad(|| net.extract(&image))?;
    for (k, got) in styles.iter().enumerate() {
        let want = Tensor::read_npy(dir.join(format!("vgg19_relu{}_1.npy", k + 1)))?;
        assert_eq!(got.size(), want.size(), "relu{}_1", k + 1);
        let scale = want.abs().max().double_value(&[]);
        let diff = (got - &want).abs().max().double_value(&[]);
        assert!(diff <= 1e-4 * scale, "relu{}_1: max |diff| {diff:e} vs scale {scale:e}", k + 1);
    }
    // relu4_2 sits in block 4 at stride 8 with 512 channels.
    let (n_, c, h, w) = content[0].size4()?;
    assert_eq!((n_, c, h * 8, w * 8), (x.size()[0], 512, x.size()[2], x.size()[3]));
    Ok(())
}
