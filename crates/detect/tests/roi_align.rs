//! RoIAlign against `torchvision.ops.roi_align` (outputs and input gradients recorded by
//! `scripts/fixtures/make_roi_align_fixtures.py`), a finite-difference gradient check, and the
//! FPN level mapper against hand-computed levels.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)] // test failures are panics

use std::collections::HashMap;
use std::path::PathBuf;

use detect::roi_align::{LevelMapper, MultiScaleRoiAlign, RoiAlignOptions, roi_align};
use tch::{Kind, Tensor};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/roi_align")
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn matches_torchvision_outputs_and_gradients() {
    let dir = fixture_dir();
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).expect("cases.json")).expect("json");
    let tensors: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("cases.safetensors")).expect("safetensors").into_iter().collect();
    assert_eq!(cases.len(), 10);
    let mut worst = (0.0f64, 0.0f64);
    for (i, case) in cases.iter().enumerate() {
        let get = |k: &str| tensors[&format!("{i}.{k}")].shallow_clone();
        let os = case["output_size"].as_array().expect("output_size");
        let opts = RoiAlignOptions {
            output_size: (os[0].as_i64().expect("ph"), os[1].as_i64().expect("pw")),
            spatial_scale: case["spatial_scale"].as_f64().expect("scale"),
            sampling_ratio: case["sampling_ratio"].as_i64().expect("sr"),
            aligned: case["aligned"].as_bool().expect("aligned"),
        };
        let input = get("input").set_requires_grad(true);
        let out = roi_align(&input, &get("rois"), &opts).expect("roi_align");
        let d = max_abs(&out, &get("output"));
        assert!(d <= 1e-5, "case {i} {opts:?}: output differs by {d}");
        (out * get("grad_weight")).sum(Kind::Float).backward();
        let g = input.grad();
        let dg = max_abs(&g, &get("grad_input"));
        assert!(dg <= 1e-5, "case {i} {opts:?}: input gradient differs by {dg}");
        // The fixture must exercise non-trivial values.
        assert!(get("output").abs().max().double_value(&[]) > 0.1, "case {i}: trivial fixture");
        worst = (worst.0.max(d), worst.1.max(dg));
    }
    eprintln!("roi_align vs torchvision: max |out diff| {:.3e}, max |grad diff| {:.3e}", worst.0, worst.1);
}

#[test]
fn gradient_matches_finite_differences() {
    tch::manual_seed(3);
    let input = Tensor::randn([1, 2, 5, 6], (Kind::Double, tch::Device::Cpu));
    let rois =
        Tensor::from_slice(&[0.0, 0.7, 0.4, 4.6, 3.9, 0.0, 1.3, 1.1, 3.2, 4.4]).view([2, 5]).to_kind(Kind::Double);
    let weight = Tensor::randn([2, 2, 3, 2], (Kind::Double, tch::Device::Cpu));
    for (sr, aligned) in [(2, false), (0, true)] {
        let opts = RoiAlignOptions { output_size: (3, 2), spatial_scale: 1.0, sampling_ratio: sr, aligned };
        let f =
            |x: &Tensor| (roi_align(x, &rois, &opts).expect("roi_align") * &weight).sum(Kind::Double).double_value(&[]);
        let x = input.copy().set_requires_grad(true);
        (roi_align(&x, &rois, &opts).expect("roi_align") * &weight).sum(Kind::Double).backward();
        let analytic = x.grad();
        let eps = 1e-6;
        let flat = input.view([-1]);
        let mut worst = 0.0f64;
        for j in 0..flat.size()[0] {
            let (p, m) = (input.copy(), input.copy());
            let _ = p.view([-1]).get(j).f_add_(&Tensor::from(eps)).expect("add");
            let _ = m.view([-1]).get(j).f_sub_(&Tensor::from(eps)).expect("sub");
            let numeric = (f(&p) - f(&m)) / (2.0 * eps);
            worst = worst.max((numeric - analytic.view([-1]).double_value(&[j])).abs());
        }
        assert!(worst < 1e-6, "sr {sr} aligned {aligned}: finite differences differ by {worst}");
        assert!(analytic.abs().sum(Kind::Double).double_value(&[]) > 0.1, "gradient is trivially zero");
    }
}

#[test]
fn level_mapper_matches_hand_computed_levels() {
    // floor(4 + log2(sqrt(area) / 224) + 1e-6), clamped to 2..=5, minus 2.
    let boxes = Tensor::from_slice(&[
        0.0f32, 0.0, 224.0, 224.0, // side 224 -> level 4
        0.0, 0.0, 112.0, 112.0, // 112 -> 3
        0.0, 0.0, 111.0, 112.0, // just under 112 -> 2
        10.0, 10.0, 458.0, 458.0, // 448 -> 5
        0.0, 0.0, 2000.0, 2000.0, // clamped to 5
        0.0, 0.0, 4.0, 4.0, // clamped to 2
    ])
    .view([6, 4]);
    let lv = LevelMapper::new(2, 5).map(&boxes).expect("map");
    assert_eq!(Vec::<i64>::try_from(lv).expect("vec"), vec![2, 1, 0, 3, 3, 0]);
}

#[test]
fn multiscale_pools_each_box_from_its_level() {
    // Constant maps per level: a box's pooled value names the level it was pooled from.
    let feats: Vec<Tensor> = (0..4)
        .map(|l| Tensor::full([1, 1, 64 >> l, 64 >> l], (l + 1) as f64, (Kind::Float, tch::Device::Cpu)))
        .collect();
    let boxes =
        Tensor::from_slice(&[0.0f32, 0.0, 20.0, 20.0, 0.0, 0.0, 130.0, 130.0, 0.0, 0.0, 250.0, 250.0]).view([3, 4]);
    let out = MultiScaleRoiAlign::new((2, 2), 2).forward(&feats, &[boxes], (256, 256)).expect("pool");
    assert_eq!(out.size(), vec![3, 1, 2, 2]);
    let v = Vec::<f32>::try_from(out.mean_dim([1, 2, 3].as_slice(), false, Kind::Float)).expect("vec");
    assert_eq!(v, vec![1.0, 2.0, 3.0]); // levels 2, 3, 4
}
