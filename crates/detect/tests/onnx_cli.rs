//! `detect export` and `detect predict --onnx` on the embedded data: a quick YOLO run (1 epoch) is
//! exported with and without NMS in the graph, and tract's detections on the validation images
//! equal the libtorch path's (same JSON schema, same boxes and classes, scores within 1e-4); a
//! malformed file is a one-line error with exit code 2.

#![allow(clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use tlcv_testkit::{json_lines, ok, one_line_error, sorted_files};

fn detect() -> Command {
    Command::new(env!("CARGO_BIN_EXE_detect"))
}

/// The validation images of the quick preset's embedded data.
fn val_images() -> Vec<PathBuf> {
    let generated = tlcv_core::paths::generated_data_dir("").unwrap_or_else(|e| panic!("{e}"));
    let root = std::fs::read_dir(&generated)
        .unwrap_or_else(|e| panic!("{}: {e}", generated.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("detection-8-4-")))
        .unwrap_or_else(|| panic!("no quick detection data in {}", generated.display()));
    sorted_files(&root.join("images").join("val"))
}

#[test]
fn onnx_detections_equal_the_libtorch_ones() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let project = tmp.path().join("runs");
    // ONNX computes in float32: the libtorch side too, whatever `auto` picks on this host.
    ok(detect()
        .args(["train", "--preset", "quick", "--name", "x", "--set", "train.precision=\"fp32\""])
        .arg("--project")
        .arg(&project));
    let run = project.join("detect").join("x");
    let images = val_images();
    assert!(!images.is_empty());
    let (raw, nms) = (tmp.path().join("raw.onnx"), tmp.path().join("nms.onnx"));
    ok(detect().args(["export", "--run"]).arg(&run).arg("--out").arg(&raw));
    ok(detect().args(["export", "--nms", "--conf", "0.01", "--run"]).arg(&run).arg("--out").arg(&nms));
    // A low threshold so that the one-epoch network gives boxes to compare.
    let predict = |src: &[&str], file: &PathBuf| {
        let out = tmp.path().join(format!("out-{}", src[0].trim_start_matches('-')));
        json_lines(&ok(detect()
            .args(["predict", "--json", "--conf", "0.01"])
            .arg(src[0])
            .arg(file)
            .arg("--out")
            .arg(out)
            .args(&images)))
    };
    let want = predict(&["--run"], &run);
    let total: usize = want.iter().map(|w| w["detections"].as_array().map_or(0, Vec::len)).sum();
    assert!(total > 0, "the run detects nothing at conf 0.01: nothing to compare");
    for file in [&raw, &nms] {
        let got = predict(&["--onnx"], file);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g["image"], w["image"]);
            let (gd, wd) = (
                g["detections"].as_array().cloned().unwrap_or_default(),
                w["detections"].as_array().cloned().unwrap_or_default(),
            );
            assert_eq!(gd.len(), wd.len(), "{}: {g} vs {w}", file.display());
            for (a, b) in gd.iter().zip(&wd) {
                assert_eq!(a["index"], b["index"]);
                assert_eq!(a["class"], b["class"]);
                let score = (a["score"].as_f64().unwrap_or(-1.0) - b["score"].as_f64().unwrap_or(1.0)).abs();
                assert!(score < 1e-4, "{}: {a} vs {b}", file.display());
                let (ab, bb) = (
                    a["box"].as_array().cloned().unwrap_or_default(),
                    b["box"].as_array().cloned().unwrap_or_default(),
                );
                for (p, q) in ab.iter().zip(&bb) {
                    let d = (p.as_f64().unwrap_or(-1e9) - q.as_f64().unwrap_or(1e9)).abs();
                    assert!(d < 0.05, "{}: {a} vs {b}", file.display());
                }
            }
        }
    }
    let bad = tmp.path().join("bad.onnx");
    std::fs::write(&bad, [0xffu8; 64]).unwrap_or_else(|e| panic!("{e}"));
    one_line_error(detect().args(["predict", "--onnx"]).arg(&bad).arg(&images[0]));
}
