//! Segmentation metrics against the numpy reference of `scripts/fixtures/make_seg_fixtures.py`.

#![allow(clippy::panic, clippy::expect_used)] // test failures are panics

use std::path::{Path, PathBuf};

use opencv::core::{CV_8UC1, CV_8UC3, Mat, Scalar, Vector};
use opencv::imgcodecs::imwrite;
use segment::error::SegmentError;
use segment::metrics::{SegConfusion, SegSummary, evaluate_dirs};
use tch::Tensor;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seg")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9
}

fn check_case(name: &str) {
    let dir = fixtures().join(name);
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).expect("expected.json"))
            .expect("json");
    let nc = want["num_classes"].as_u64().expect("nc") as usize;
    let ig = want["ignore_index"].as_u64().expect("ig") as u8;
    let got = evaluate_dirs(&dir.join("gt"), &dir.join("pred"), nc, ig).expect("evaluate");
    for (k, v) in
        [("miou", got.miou), ("pixel_acc", got.pixel_acc), ("mean_dice", got.mean_dice), ("fw_iou", got.fw_iou)]
    {
        let w = want[k].as_f64().expect("number");
        assert!(close(v, w), "{name}: {k} = {v}, numpy says {w}");
    }
    let per = want["per_class_iou"].as_array().expect("array");
    assert_eq!(got.per_class_iou.len(), per.len());
    for (c, (g, w)) in got.per_class_iou.iter().zip(per).enumerate() {
        match (g, w.as_f64()) {
            (Some(g), Some(w)) => assert!(close(*g, w), "{name}: class {c}: {g} vs {w}"),
            (None, None) => {}
            _ => panic!("{name}: class {c}: {g:?} vs {w}"),
        }
    }
}

#[test]
fn basic_matches_numpy() {
    check_case("basic");
}

#[test]
fn empty_prediction_and_zero_ignore_match_numpy() {
    check_case("empty_pred");
}

#[test]
fn perfect_matches_numpy() {
    check_case("perfect");
}

#[test]
fn hand_values_and_nan_as_null() {
    // gt:   0 0 1 255      pred: 0 1 1 2   (3 classes + class 3 never seen; 255 ignored)
    let mut cm = SegConfusion::new(4, Some(255)).expect("new");
    cm.update(&[0u8, 0, 1, 255], &[0u8, 1, 1, 2]).expect("update");
    let iou = cm.iou_per_class();
    assert_eq!(iou[0], 0.5);
    assert_eq!(iou[1], 0.5);
    assert!(iou[2].is_nan() && iou[3].is_nan(), "{iou:?}");
    assert_eq!(cm.miou(), 0.5);
    assert!((cm.pixel_accuracy() - 2.0 / 3.0).abs() < 1e-15);
    assert!((cm.mean_dice() - 2.0 / 3.0).abs() < 1e-15);
    assert!((cm.fw_iou() - 0.5).abs() < 1e-15);
    let v = serde_json::to_value(cm.summary()).expect("json");
    assert_eq!(v["per_class_iou"], serde_json::json!([0.5, 0.5, null, null]));
    let back: SegSummary = serde_json::from_value(v).expect("round trip");
    assert_eq!(back.per_class_iou[2], None);
    assert!(cm.update(&[0u8, 4], &[0u8, 0]).is_err(), "gt label 4 is out of range");
    assert!(cm.update(&[0i64], &[-1i64]).is_err());
}

#[test]
fn tensor_update_equals_slice_update() {
    tch::manual_seed(3);
    let gt = Tensor::randint(6, [2, 37, 41], (tch::Kind::Int64, tch::Device::Cpu));
    let pred = Tensor::randint(5, [2, 37, 41], (tch::Kind::Int64, tch::Device::Cpu));
    let gt = gt.where_scalarother(&gt.ne(5), 255); // label 5 becomes the ignore value
    let (g, p) =
        (Vec::<i64>::try_from(gt.reshape([-1])).expect("g"), Vec::<i64>::try_from(pred.reshape([-1])).expect("p"));
    let mut a = SegConfusion::new(5, Some(255)).expect("new");
    let mut b = a.clone();
    a.update(&g, &p).expect("slices");
    b.update_tensor(&gt, &pred.to_kind(tch::Kind::Uint8)).expect("tensors");
    assert_eq!(a, b);
    assert!(a.counts().iter().sum::<u64>() > 0 && a.counts().iter().sum::<u64>() < 2 * 37 * 41);
    assert!(b.update_tensor(&gt, &pred.slice(1, 0, 5, 1)).is_err());
}

fn copy_case(to: &Path) {
    for sub in ["gt", "pred"] {
        std::fs::create_dir_all(to.join(sub)).expect("mkdir");
        for e in std::fs::read_dir(fixtures().join("basic").join(sub)).expect("read") {
            let p = e.expect("entry").path();
            std::fs::copy(&p, to.join(sub).join(p.file_name().expect("name"))).expect("copy");
        }
    }
}

fn mask_error(dir: &Path) -> (PathBuf, String) {
    match evaluate_dirs(&dir.join("gt"), &dir.join("pred"), 6, 255) {
        Err(SegmentError::Mask { path, message }) => (path, message),
        other => panic!("expected a mask error, got {other:?}"),
    }
}

#[test]
fn errors_name_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    copy_case(tmp.path());
    let victim = tmp.path().join("pred/img01.png");
    std::fs::remove_file(&victim).expect("rm");
    assert_eq!(mask_error(tmp.path()).0, victim);

    let small = Mat::new_rows_cols_with_default(5, 5, CV_8UC1, Scalar::all(1.0)).expect("mat");
    assert!(imwrite(victim.to_str().expect("utf8"), &small, &Vector::new()).expect("imwrite"));
    let (p, msg) = mask_error(tmp.path());
    assert_eq!(p, victim);
    assert!(msg.contains("size"), "{msg}");

    let rgb = Mat::new_rows_cols_with_default(24, 32, CV_8UC3, Scalar::all(1.0)).expect("mat");
    assert!(imwrite(victim.to_str().expect("utf8"), &rgb, &Vector::new()).expect("imwrite"));
    let (p, msg) = mask_error(tmp.path());
    assert_eq!(p, victim);
    assert!(msg.contains("channel"), "{msg}");
}
