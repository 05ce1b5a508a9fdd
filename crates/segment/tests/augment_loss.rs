//! Joint augmentation keeps masks aligned with images (the image's colours encode the class), and the
//! losses match hand-computed values.

#![allow(clippy::expect_used)] // test failures are panics

use rand::SeedableRng;
use rand::rngs::StdRng;
use segment::augment::{SegAugment, hflip_pair, random_crop_pair, resize_pair};
use segment::loss::{SegLoss, cross_entropy, dice};
use segment::mask::Mask;
use tch::{Kind, Tensor};
use tlcv_core::data::RgbImage;

const COLOURS: [[u8; 3]; 4] = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]];

/// A 60x40 image of blocks (classes 0..3) coloured by class, and its mask.
fn coded_pair() -> (RgbImage, Mask) {
    let (w, h) = (60, 40);
    let mut m = Mask::filled(w, h, 0);
    for y in 0..h {
        for x in 0..w {
            m.data[y * w + x] = match (x / 12, y / 10) {
                (1, _) => 1,
                (3, 1 | 2) => 2,
                (_, 3) if x < 30 => 3,
                _ => 0,
            };
        }
    }
    let data = m.data.iter().flat_map(|&c| COLOURS[c as usize]).collect();
    (RgbImage { width: w, height: h, data }, m)
}

/// The class whose colour is nearest to the pixel.
fn decode(p: [u8; 3]) -> u8 {
    let d = |c: [u8; 3]| (0..3).map(|k| (p[k] as i32 - c[k] as i32).pow(2)).sum::<i32>();
    (0..4).min_by_key(|&c| d(COLOURS[c])).unwrap_or(0) as u8
}

/// Every mask pixel whose 3x3 neighbourhood is one class (or ignore) agrees with the image's colour.
fn assert_aligned(img: &RgbImage, m: &Mask, ignore: u8, what: &str) {
    assert_eq!((img.width, img.height), (m.width, m.height), "{what}: sizes");
    let (mut checked, mut bad) = (0, 0);
    for y in 1..m.height.saturating_sub(1) {
        for x in 1..m.width.saturating_sub(1) {
            let v = m.at(x, y);
            let uniform = (0..9).all(|k| m.at(x + k % 3 - 1, y + k / 3 - 1) == v);
            if !uniform {
                continue;
            }
            checked += 1;
            let want = if v == ignore { 0 } else { v }; // padding is black in the image
            if decode(img.pixel(x, y)) != want {
                bad += 1;
            }
        }
    }
    assert!(checked > m.width * m.height / 3, "{what}: too few interior pixels ({checked})");
    assert_eq!(bad, 0, "{what}: {bad} of {checked} interior pixels disagree");
}

#[test]
fn every_transform_keeps_masks_aligned() {
    let (img, m) = coded_pair();
    assert_aligned(&img, &m, 255, "original");
    let (i, mm) = resize_pair(&img, &m, 90, 61).expect("up");
    assert_aligned(&i, &mm, 255, "upscale");
    let (i, mm) = resize_pair(&img, &m, 30, 20).expect("down");
    assert_aligned(&i, &mm, 255, "downscale");
    let (i, mm) = hflip_pair(&img, &m);
    assert_eq!(mm.at(0, 0), m.at(59, 0));
    assert_aligned(&i, &mm, 255, "flip");
    let mut rng = StdRng::seed_from_u64(3);
    let (i, mm) = random_crop_pair(&img, &m, 32, 255, &mut rng).expect("crop");
    assert_aligned(&i, &mm, 255, "crop");
    let (i, mm) = random_crop_pair(&img, &m, 64, 255, &mut rng).expect("pad+crop");
    assert!(mm.data.contains(&255), "padding must be the ignore index");
    assert_aligned(&i, &mm, 255, "pad+crop");
    let aug = SegAugment { size: 48, scale: (0.5, 2.0), hflip: true, jitter: None, ignore_index: 255 };
    for seed in 0..8 {
        let (i, mm) = aug.train(&img, &m, &mut StdRng::seed_from_u64(seed)).expect("train");
        assert_eq!((mm.width, mm.height), (48, 48));
        assert_aligned(&i, &mm, 255, &format!("full training transform, seed {seed}"));
    }
}

#[test]
fn colour_jitter_changes_the_image_only() {
    let (img, m) = coded_pair();
    let jitter = tlcv_core::data::transforms::ColorJitter { brightness: 0.5, contrast: 0.5, saturation: 0.5, hue: 0.0 };
    let plain = SegAugment { size: 60, scale: (1.0, 1.0), hflip: false, jitter: None, ignore_index: 255 };
    let jit = SegAugment { jitter: Some(jitter), ..plain.clone() };
    let (a, ma) = plain.train(&img, &m, &mut StdRng::seed_from_u64(1)).expect("plain");
    let (b, mb) = jit.train(&img, &m, &mut StdRng::seed_from_u64(1)).expect("jitter");
    assert_eq!(ma, mb, "jitter must not touch the mask");
    assert_ne!(a.data, b.data, "jitter must change the image");
}

#[test]
fn cross_entropy_matches_hand_values() {
    // One image, 2 classes, 1x3 pixels. Logits per pixel (c0, c1): (0, 0), (2, 0), (0, 1).
    let logits = Tensor::from_slice(&[0f32, 2.0, 0.0, 0.0, 0.0, 1.0]).view([1, 2, 1, 3]);
    let target = Tensor::from_slice(&[0i64, 1, 255]).view([1, 1, 3]);
    // Pixel 0: -log(1/2) = ln 2; pixel 1: -log(e^0 / (e^2 + 1)) = ln(1 + e^2); pixel 2 ignored.
    let want = (2f64.ln() + (1.0 + 2f64.exp()).ln()) / 2.0;
    let got = cross_entropy(&logits, &target, None, 255).double_value(&[]);
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    // Weights (1, 3): (1 * ln 2 + 3 * ln(1 + e^2)) / (1 + 3).
    let w = Tensor::from_slice(&[1f32, 3.0]);
    let want_w = (2f64.ln() + 3.0 * (1.0 + 2f64.exp()).ln()) / 4.0;
    let got_w = cross_entropy(&logits, &target, Some(&w), 255).double_value(&[]);
    assert!((got_w - want_w).abs() < 1e-6, "{got_w} vs {want_w}");
    let all_ignored = Tensor::from_slice(&[255i64, 255, 255]).view([1, 1, 3]);
    assert_eq!(cross_entropy(&logits, &all_ignored, None, 255).double_value(&[]), 0.0);
}

#[test]
fn dice_matches_hand_values() {
    let logits = Tensor::from_slice(&[0f32, 2.0, 0.0, 0.0, 0.0, 1.0]).view([1, 2, 1, 3]);
    let target = Tensor::from_slice(&[0i64, 1, 255]).view([1, 1, 3]);
    // Softmax p1 per pixel: 0.5, 1/(1+e^2); pixel 2 ignored.
    let q = 1.0 / (1.0 + 2f64.exp());
    let (p0, p1) = ([0.5, 1.0 - q], [0.5, q]);
    // Class 0: g = (1, 0); class 1: g = (0, 1).
    let s = 1.0;
    let d0 = (2.0 * p0[0] + s) / (p0[0] + p0[1] + 1.0 + s);
    let d1 = (2.0 * p1[1] + s) / (p1[0] + p1[1] + 1.0 + s);
    let want = 1.0 - (d0 + d1) / 2.0;
    let got = dice(&logits, &target, 255, s).double_value(&[]);
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    // A perfect, confident prediction has a Dice loss near 0.
    let sure = Tensor::from_slice(&[20f32, -20.0, -20.0, 20.0]).view([1, 2, 1, 2]);
    let t = Tensor::from_slice(&[0i64, 1]).view([1, 1, 2]);
    assert!(dice(&sure, &t, 255, 1.0).double_value(&[]) < 1e-6);
}

#[test]
fn combined_loss_is_the_weighted_sum() {
    let logits = Tensor::randn([2, 3, 4, 5], (Kind::Float, tch::Device::Cpu));
    let target = Tensor::randint(3, [2, 4, 5], (Kind::Int64, tch::Device::Cpu));
    let l = SegLoss { ce_weight: 0.7, dice_weight: 0.3, class_weights: None, ignore_index: 255, smooth: 1.0 };
    let (total, terms) = l.compute(&logits, &target);
    let ce = cross_entropy(&logits, &target, None, 255).double_value(&[]);
    let d = dice(&logits, &target, 255, 1.0).double_value(&[]);
    assert!((total.double_value(&[]) - (0.7 * ce + 0.3 * d)).abs() < 1e-6);
    assert_eq!(terms.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(), ["loss", "ce", "dice"]);
}
