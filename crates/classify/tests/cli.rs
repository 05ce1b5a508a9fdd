//! The `classify` binary end to end: configuration errors, and a small train → eval → predict run whose
//! outputs (run directory, JSON schemas) are checked.

#![allow(clippy::panic)] // test failures are panics

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use opencv::{core, imgcodecs, imgproc};
use tlcv_core::train::{Convs, Precision, TaskKind};
use tlcv_testkit::{run, stderr};

fn classify() -> Command {
    Command::new(env!("CARGO_BIN_EXE_classify"))
}

/// Three visually distinct classes: red squares, green circles, blue bars, on noisy grey.
fn write_image(path: &Path, class: usize, seed: i32) {
    let mut img = core::Mat::new_rows_cols_with_default(48, 48, core::CV_8UC3, core::Scalar::all(128.0))
        .unwrap_or_else(|e| panic!("{e}"));
    let offset = seed % 7;
    let color = match class {
        0 => core::Scalar::new(30.0, 30.0, 220.0, 0.0),
        1 => core::Scalar::new(30.0, 200.0, 30.0, 0.0),
        _ => core::Scalar::new(220.0, 40.0, 30.0, 0.0),
    };
    let result = match class {
        0 => imgproc::rectangle(&mut img, core::Rect::new(10 + offset, 10, 24, 24), color, -1, imgproc::LINE_8, 0),
        1 => imgproc::circle(&mut img, core::Point::new(24 + offset, 24), 13, color, -1, imgproc::LINE_8, 0),
        _ => imgproc::rectangle(&mut img, core::Rect::new(6, 18 + offset, 36, 8), color, -1, imgproc::LINE_8, 0),
    };
    result.unwrap_or_else(|e| panic!("{e}"));
    let ok = imgcodecs::imwrite(path, &img, &core::Vector::new()).unwrap_or_else(|e| panic!("{e}"));
    assert!(ok, "could not write {}", path.display());
}

fn make_folder(root: &Path) -> PathBuf {
    let data = root.join("data");
    for (split, n) in [("train", 6), ("val", 3), ("test", 3)] {
        for (c, name) in ["circle_green", "bar_blue", "square_red"].iter().enumerate() {
            // Sorted class names: bar_blue=0, circle_green=1, square_red=2 -> map drawing to the name.
            let class = match *name {
                "square_red" => 0,
                "circle_green" => 1,
                _ => 2,
            };
            let dir = data.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
            for i in 0..n {
                write_image(&dir.join(format!("{i}.png")), class, (i * 3 + c) as i32);
            }
        }
    }
    data
}

#[test]
fn config_errors_exit_2_and_create_no_run_dir() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let project = tmp.path().join("runs");
    let cases: [(&str, &str, &str); 3] = [
        ("unknown.toml", "[train]\nlr2 = 0.1\n", "unknown key `train.lr2`"),
        ("wrong_type.toml", "[train]\nepochs = \"many\"\n", "train.epochs"),
        ("missing.toml", "", "does not exist"),
    ];
    for (file, text, expected) in cases {
        let path = tmp.path().join(file);
        if !text.is_empty() {
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        }
        let out = run(classify().args(["train", "--config"]).arg(&path).arg("--project").arg(&project));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(err.contains(expected), "{file}: expected `{expected}` in: {err}");
        assert!(err.contains(file), "{file}: the message should name the file: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{file}: one line expected: {err}");
        assert!(!project.exists(), "{file}: a run directory was created");
    }
    // A bad --set is reported with its key too.
    let out = run(classify().args(["train", "--set", "train.lr=fast"]).arg("--project").arg(&project));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("train.lr"), "{}", stderr(&out));
    assert!(!project.exists());
}

#[test]
fn train_eval_predict_end_to_end() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = make_folder(tmp.path());
    let project = tmp.path().join("runs");
    let out = run(classify()
        .args(["train", "--preset", "quick", "--data"])
        .arg(&data)
        .args(["--epochs", "3", "--img-size", "32", "--name", "e2e", "--json", "--set", "train.lr=0.01"])
        .arg("--project")
        .arg(&project));
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    for key in ["top1", "top5", "precision_macro", "recall_macro", "f1_macro", "per_class", "run_dir"] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    assert_eq!(json["per_class"].as_object().map(|m| m.len()), Some(3));
    assert!(json["top1"].as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)));

    let run_dir = project.join("classify").join("e2e");
    for file in [
        "config.toml",
        "classes.json",
        "weights/best.safetensors",
        "weights/last.safetensors",
        "results.csv",
        "metrics.json",
        "report.html",
        "plots/loss.png",
        "plots/metrics.png",
        "plots/confusion_matrix.png",
        "plots/confusion_matrix_normalized.png",
        "plots/predictions.png",
    ] {
        assert!(run_dir.join(file).is_file(), "missing {file}");
    }
    let csv = std::fs::read_to_string(run_dir.join("results.csv")).unwrap_or_default();
    assert_eq!(csv.lines().count(), 4, "header + 3 epochs: {csv}");

    // config.toml keeps `precision = "auto"` and records what it resolved to on this host.
    let saved: classify::ClassifyConfig =
        tlcv_core::config::load(Some(&run_dir.join("config.toml")), &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(saved.train.precision, Precision::Auto);
    let want = Precision::Auto.resolve(tch::Device::Cpu, TaskKind::Classify, Convs::of(saved.model.backbone));
    assert_eq!(saved.train.precision_resolved, Some(want), "config.toml: the resolved precision");

    let out = run(classify().args(["eval", "--run"]).arg(&run_dir).args(["--split", "val", "--json"]));
    assert!(out.status.success(), "eval failed: {}", stderr(&out));
    let eval: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert!(eval["top1"].as_f64().is_some());

    let image = data.join("test").join("square_red").join("0.png");
    let out = run(classify().args(["predict", "--run"]).arg(&run_dir).args(["--top-k", "2", "--json"]).arg(&image));
    assert!(out.status.success(), "predict failed: {}", stderr(&out));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(line["image"].as_str(), Some(image.to_string_lossy().as_ref()));
    let top = line["top"].as_array().cloned().unwrap_or_default();
    assert_eq!(top.len(), 2);
    for t in &top {
        assert!(t["index"].as_u64().is_some() && t["class"].as_str().is_some() && t["prob"].as_f64().is_some());
    }
    assert!(top[0]["prob"].as_f64() >= top[1]["prob"].as_f64());

    // Resume continues the same run to more epochs.
    let out = run(classify()
        .args(["train", "--preset", "quick", "--data"])
        .arg(&data)
        .args(["--epochs", "4", "--img-size", "32", "--name", "e2e", "--resume", "--set", "train.lr=0.01"])
        .arg("--project")
        .arg(&project));
    assert!(out.status.success(), "resume failed: {}", stderr(&out));
    let csv = std::fs::read_to_string(run_dir.join("results.csv")).unwrap_or_default();
    assert_eq!(csv.lines().count(), 5, "header + 4 epochs after resume: {csv}");
}

#[test]
fn unfreezing_schedule_adds_a_stage_every_n_epochs() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = make_folder(tmp.path());
    let out = run(classify()
        .args(["train", "--preset", "quick", "--data"])
        .arg(&data)
        .args(["--epochs", "3", "--img-size", "32", "--strategy", "feature-extract", "--set", "train.unfreeze_every=1"])
        .arg("--project")
        .arg(tmp.path().join("runs")));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("epoch 2: 1 backbone stage(s) now train"), "{err}");
    assert!(err.contains("epoch 3: 2 backbone stage(s) now train"), "{err}");
}
