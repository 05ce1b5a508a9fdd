//! Colour preservation: the luminance-only result keeps the content's CbCr exactly (up to 8-bit
//! rounding), the YCbCr transform matches the JPEG (BT.601 full-range) definition, and histogram
//! matching reproduces the reference's distribution.

use style::color;
use tch::{Kind, Tensor};
use tlcv_core::data::RgbImage;

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn ycbcr_matches_the_jpeg_definition_and_round_trips() {
    // Pure red: Y = 0.299, Cb = 0.5 - 0.168736, Cr = 1.0 (JFIF).
    let red = Tensor::from_slice(&[1.0f32, 0.0, 0.0]).view([1, 3, 1, 1]);
    let ycc = color::rgb_to_ycbcr(&red);
    let want = Tensor::from_slice(&[0.299f32, 0.331_264, 1.0]).view([1, 3, 1, 1]);
    assert!(max_abs(&ycc, &want) < 1e-6);
    tch::manual_seed(0);
    let x = Tensor::rand([2, 3, 5, 7], (Kind::Float, tch::Device::Cpu));
    assert!(max_abs(&color::ycbcr_to_rgb(&color::rgb_to_ycbcr(&x)), &x) < 1e-5);
}

#[test]
fn luminance_transfer_keeps_the_content_chroma() -> style::Result<()> {
    // A muted content image (no channel near 0 or 1, so nothing clips) and an unrelated "stylised" one.
    tch::manual_seed(1);
    let content = Tensor::rand([1, 3, 16, 16], (Kind::Float, tch::Device::Cpu)) * 0.3 + 0.35;
    let stylised = Tensor::rand([1, 3, 16, 16], (Kind::Float, tch::Device::Cpu)) * 0.3 + 0.35;
    let out = color::combine_luminance(&stylised, &content);
    let (o, c, s) = (color::rgb_to_ycbcr(&out), color::rgb_to_ycbcr(&content), color::rgb_to_ycbcr(&stylised));
    assert!(max_abs(&o.narrow(1, 1, 2), &c.narrow(1, 1, 2)) < 1e-5, "CbCr must be the content's");
    assert!(max_abs(&o.narrow(1, 0, 1), &s.narrow(1, 0, 1)) < 1e-5, "Y must be the stylised image's");
    // Through 8-bit PNG pixels the chroma still agrees to rounding.
    let png = style::image::to_tensor(&style::image::from_tensor(&out)?)?;
    let cbcr8 = color::rgb_to_ycbcr(&png).narrow(1, 1, 2);
    assert!(max_abs(&cbcr8, &c.narrow(1, 1, 2)) < 2.0 / 255.0);
    Ok(())
}

#[test]
fn histogram_matching_copies_the_reference_distribution() -> style::Result<()> {
    // Source levels 0..255 each once per channel; reference: the same levels doubled and clamped.
    let src: Vec<u8> = (0..=255u8).flat_map(|v| [v, v, 255 - v]).collect();
    let reference: Vec<u8> = (0..=255u8).flat_map(|v| [v / 2, v / 2, v / 2]).collect();
    let src = RgbImage::from_raw(16, 16, src)?;
    let reference = RgbImage::from_raw(16, 16, reference)?;
    let out = color::match_histograms(&src, &reference)?;
    for c in 0..3 {
        let mut got: Vec<u8> = out.data.chunks_exact(3).map(|p| p[c]).collect();
        let mut want: Vec<u8> = reference.data.chunks_exact(3).map(|p| p[c]).collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "channel {c}");
    }
    // Monotone: the order of the source levels is kept.
    assert!(out.data.chunks_exact(3).map(|p| p[0]).collect::<Vec<_>>().windows(2).all(|w| w[0] <= w[1]));
    Ok(())
}
