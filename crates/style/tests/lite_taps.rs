//! The EfficientNet-Lite0 taps the style losses use agree with the parity-tested stage outputs.

use tch::{Device, Kind, Tensor, nn};
use tlcv_core::backbones::{Backbone, efficientnet_lite};

#[test]
fn lite0_block_taps_equal_the_stage_outputs() -> Result<(), Box<dyn std::error::Error>> {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = efficientnet_lite::efficientnet_lite0_backbone(vs.root())?;
    tch::manual_seed(0);
    let x = Tensor::randn([1, 3, 64, 64], (Kind::Float, Device::Cpu));
    let feats = tch::no_grad(|| net.forward_features(&x, false));
    // Stage 3 ends with block 4, stage 5 with block 10, stage 7 with block 15.
    let taps = tch::no_grad(|| net.taps(&x, &["blocks.15", "blocks.4", "blocks.10"], false))?;
    for (t, f) in [(&taps[1], &feats[0]), (&taps[2], &feats[1]), (&taps[0], &feats[2])] {
        assert_eq!(t.size(), f.size());
        assert!((t - f).abs().max().double_value(&[]) == 0.0);
    }
    // Block 0 has no expand conv: its "expand" tap is its input, the stem output.
    let s = tch::no_grad(|| net.taps(&x, &["stem", "blocks.0.expand", "blocks.5.expand", "blocks.5.dw"], false))?;
    assert!((&s[0] - &s[1]).abs().max().double_value(&[]) == 0.0);
    assert_eq!(s[0].size(), [1, 32, 32, 32]);
    assert_eq!(s[2].size(), [1, 240, 8, 8]); // 40 * 6 channels at stride 8
    assert_eq!(s[3].size(), [1, 240, 4, 4]); // the depthwise conv has stride 2
    // ReLU6 outputs lie in [0, 6].
    assert!(s[2].min().double_value(&[]) >= 0.0 && s[2].max().double_value(&[]) <= 6.0);
    for bad in ["blocks.16", "blocks.3.project", "conv1"] {
        assert!(net.taps(&x, &[bad], false).is_err(), "{bad} must be rejected");
    }
    Ok(())
}
