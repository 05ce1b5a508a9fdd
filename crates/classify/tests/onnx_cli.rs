//! `classify export` and `classify predict --onnx` end to end on (a small copy of) the embedded digits:
//! a quick run is exported, and tract's predictions on test images equal the libtorch path's (same top classes, same
//! JSON schema, probabilities within 1e-4); a softmax export gives the same; a malformed file is a
//! one-line error with exit code 2.

#![allow(clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tlcv_testkit::{json_lines, ok, one_line_error, sorted_files};

fn classify() -> Command {
    Command::new(env!("CARGO_BIN_EXE_classify"))
}

/// A small copy of the embedded digits (`classify` generates them on first use): per class 5 train,
/// 2 val and 2 test images, so that training and the final evaluation take seconds.
fn small_digits(tmp: &Path) -> PathBuf {
    let root = classify::data::ensure_embedded("digits", 5, 0).unwrap_or_else(|e| panic!("{e}"));
    let out = tmp.join("digits");
    for (split, n) in [("train", 5), ("val", 2), ("test", 2)] {
        for class in 0..10 {
            let (src, dst) = (root.join(split).join(class.to_string()), out.join(split).join(class.to_string()));
            std::fs::create_dir_all(&dst).unwrap_or_else(|e| panic!("{e}"));
            for f in sorted_files(&src).iter().take(n) {
                std::fs::copy(f, dst.join(f.file_name().unwrap_or_default())).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
    out
}

fn test_images(data: &Path) -> Vec<PathBuf> {
    (0..10).flat_map(|class| sorted_files(&data.join("test").join(class.to_string()))).collect()
}

#[test]
fn onnx_predictions_equal_the_libtorch_ones() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let project = tmp.path().join("runs");
    let data = small_digits(tmp.path());
    ok(classify()
        // ONNX computes in float32: the libtorch side too, whatever `auto` picks on this host.
        .args(["train", "--preset", "quick", "--epochs", "1", "--name", "x", "--set", "train.precision=\"fp32\""])
        .arg("--data")
        .arg(&data)
        .arg("--project")
        .arg(&project));
    let run = project.join("classify").join("x");
    let images = test_images(&data);
    let onnx = tmp.path().join("model.onnx");
    ok(classify().args(["export", "--run"]).arg(&run).arg("--out").arg(&onnx));
    let soft = tmp.path().join("softmax.onnx");
    ok(classify().args(["export", "--softmax", "--dynamic-batch", "--run"]).arg(&run).arg("--out").arg(&soft));
    let want = json_lines(&ok(classify().args(["predict", "--json", "--top-k", "3", "--run"]).arg(&run).args(&images)));
    assert_eq!(want.len(), images.len());
    for file in [&onnx, &soft] {
        let got =
            json_lines(&ok(classify().args(["predict", "--json", "--top-k", "3", "--onnx"]).arg(file).args(&images)));
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g["image"], w["image"]);
            let (gt, wt) =
                (g["top"].as_array().cloned().unwrap_or_default(), w["top"].as_array().cloned().unwrap_or_default());
            assert_eq!(gt.len(), 3);
            assert_eq!(gt[0]["index"], wt[0]["index"], "{}: top-1 differs: {g} vs {w}", file.display());
            assert_eq!(gt[0]["class"], wt[0]["class"]);
            for (a, b) in gt.iter().zip(&wt) {
                let (pa, pb) = (a["prob"].as_f64().unwrap_or(-1.0), b["prob"].as_f64().unwrap_or(1.0));
                assert!((pa - pb).abs() < 1e-4, "{}: {g} vs {w}", file.display());
            }
        }
    }
    // A malformed file: one line on stderr, exit code 2, no panic.
    let bad = tmp.path().join("bad.onnx");
    let mut bytes = std::fs::read(&onnx).unwrap_or_default();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&bad, &bytes).unwrap_or_else(|e| panic!("{e}"));
    for file in [bad, tmp.path().join("missing.onnx"), run.join("config.toml")] {
        let err = one_line_error(classify().args(["predict", "--onnx"]).arg(&file).arg(&images[0]));
        assert!(err.contains(&*file.display().to_string()), "{err}");
    }
}
