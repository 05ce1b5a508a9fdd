//! End to end through the `segment` binary on a tiny data set (1 epoch, seconds): train each model
//! family, predict at the original resolution, score folders offline, and fail cleanly on bad input.

#![allow(clippy::panic, clippy::expect_used)] // test failures are panics

use std::path::{Path, PathBuf};
use std::process::Command;

use opencv::core::{CV_8UC1, CV_8UC3, Mat, Point, Scalar, Vector};
use opencv::imgcodecs::imwrite;
use opencv::imgproc;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_segment"))
}

/// 4 train and 2 val 56x40 images: a bright disc (class 1) on dark noise-free background.
fn tiny_data(root: &Path) {
    std::fs::create_dir_all(root).expect("mkdir");
    std::fs::write(root.join("classes.txt"), "background\ndisc\n").expect("classes");
    for (split, n) in [("train", 4), ("val", 2)] {
        for i in 0..n {
            let mut img = Mat::new_rows_cols_with_default(40, 56, CV_8UC3, Scalar::all(30.0)).expect("img");
            let mut m = Mat::new_rows_cols_with_default(40, 56, CV_8UC1, Scalar::all(0.0)).expect("mask");
            let c = Point::new(14 + 8 * i, 20);
            imgproc::circle(&mut img, c, 9, Scalar::new(40.0, 200.0, 220.0, 0.0), -1, imgproc::LINE_8, 0)
                .expect("draw");
            imgproc::circle(&mut m, c, 9, Scalar::all(1.0), -1, imgproc::LINE_8, 0).expect("draw");
            for (kind, mat) in [("images", &img), ("masks", &m)] {
                let dir = root.join(kind).join(split);
                std::fs::create_dir_all(&dir).expect("mkdir");
                imwrite(dir.join(format!("{i}.png")).to_str().expect("utf8"), mat, &Vector::new()).expect("write");
            }
        }
    }
}

fn train(data: &Path, project: &Path, model: &str) -> (serde_json::Value, PathBuf) {
    let out = bin()
        .args(["train", "--model", model, "--backbone", "resnet18", "--weights", "none", "--strategy", "scratch"])
        .args(["--epochs", "1", "--img-size", "64", "--batch", "2", "--name", model, "--json"])
        .arg("--data")
        .arg(data)
        .arg("--project")
        .arg(project)
        .args(["--set", "model.aspp_channels=16", "--set", "model.decoder_channels=[16,16,8,8,8]"])
        .output()
        .expect("run segment");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "segment train --model {model} failed:\n{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    let run = PathBuf::from(json["run_dir"].as_str().expect("run_dir"));
    (json, run)
}

#[test]
fn each_model_trains_predicts_and_reports() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    tiny_data(&data);
    for model in ["unet", "deeplabv3", "deeplabv3plus"] {
        let (json, run) = train(&data, &tmp.path().join("runs"), model);
        for key in ["miou", "pixel_acc", "mean_dice", "fw_iou"] {
            let v = json[key].as_f64().unwrap_or_else(|| panic!("{model}: {key} missing in {json}"));
            assert!((0.0..=1.0).contains(&v), "{model}: {key} = {v}");
        }
        assert_eq!(json["per_class_iou"].as_array().map(Vec::len), Some(2), "{model}: {json}");
        for f in [
            "config.toml",
            "metrics.json",
            "results.csv",
            "report.html",
            "weights/best.safetensors",
            "plots/triplets.png",
            "plots/per_class_iou.png",
            "plots/confusion_matrix.png",
        ] {
            assert!(run.join(f).is_file(), "{model}: {f} missing in {}", run.display());
        }
        let html = std::fs::read_to_string(run.join("report.html")).expect("html");
        assert!(html.contains("IoU per class") && html.contains("ground truth"), "{model}: report sections");
        // predict at the original resolution (56x40), index mask + overlay
        let out_dir = tmp.path().join(format!("pred_{model}"));
        let img = data.join("images/val/0.png");
        let out = bin()
            .arg("predict")
            .arg("--run")
            .arg(&run)
            .arg("--out")
            .arg(&out_dir)
            .arg("--json")
            .arg(&img)
            .output()
            .expect("predict");
        assert!(out.status.success(), "{model} predict: {}", String::from_utf8_lossy(&out.stderr));
        let mask = segment::mask::read_index_mask(&out_dir.join("0.png")).expect("predicted mask");
        assert_eq!((mask.width, mask.height), (56, 40), "{model}: prediction at the original size");
        assert!(mask.data.iter().all(|&v| v < 2));
        let overlay =
            tlcv_core::data::decode_file(out_dir.join("0_overlay.png"), &Default::default()).expect("overlay");
        assert_eq!((overlay.width, overlay.height), (56, 40));
        // eval --json on the run gives the same keys
        let out = bin().arg("eval").arg("--run").arg(&run).arg("--json").output().expect("eval");
        assert!(out.status.success(), "{model} eval: {}", String::from_utf8_lossy(&out.stderr));
        let e: serde_json::Value = serde_json::from_slice(&out.stdout).expect("eval json");
        let (a, b) = (e["miou"].as_f64().expect("miou"), json["miou"].as_f64().expect("miou"));
        assert!((a - b).abs() < 1e-9, "{model}: eval {a} vs train {b}");
    }
}

#[test]
fn evaluate_subcommand_matches_numpy_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seg/basic");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).expect("expected")).expect("json");
    let nc = want["num_classes"].as_u64().expect("nc").to_string();
    let ig = want["ignore_index"].as_u64().expect("ig").to_string();
    let out = bin()
        .args(["evaluate", "--num-classes", &nc, "--ignore-index", &ig, "--json", "--gt"])
        .arg(dir.join("gt"))
        .arg("--pred")
        .arg(dir.join("pred"))
        .output()
        .expect("evaluate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for k in ["miou", "pixel_acc", "mean_dice", "fw_iou"] {
        let (g, w) = (got[k].as_f64().expect("got"), want[k].as_f64().expect("want"));
        assert!((g - w).abs() < 1e-9, "{k}: {g} vs numpy {w}");
    }
}

#[test]
fn user_errors_exit_2_with_one_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = bin()
        .args(["train", "--epochs", "1", "--data"])
        .arg(tmp.path().join("nope"))
        .arg("--project")
        .arg(tmp.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error:") && last.contains("nope"), "{err}");
    let out = bin().args(["train", "--model", "segformer"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}
