//! `detect train --model yolov8n --weights <Ultralytics .pt>` on a few embedded images: the transfer
//! keeps every tensor but the class branch's last convolutions (the data has 9 classes, the
//! checkpoint 7), `--freeze N` freezes the first N modules, `detect eval` and `detect predict` work on
//! the run, `detect export --nms` writes it and `detect predict --onnx` serves the file, and the saved
//! state dict loads into Ultralytics'
//! `DetectionModel` with `strict=True` and gives what `detect forward` gives
//! (`scripts/check_ultralytics_load.py`).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test failures are panics

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tlcv_testkit::{reference_check, workspace_root};

fn fixtures() -> PathBuf {
    tlcv_core::paths::generated_fixture("ultralytics").unwrap_or_else(|e| panic!("{e}"))
}

fn detect(args: &[&str], extra: &[&Path]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_detect"));
    cmd.args(args).args(extra);
    cmd.output().unwrap_or_else(|e| panic!("cannot start detect: {e}"))
}

fn ok(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what}: {err}");
    err
}

#[test]
fn fine_tunes_an_ultralytics_checkpoint_and_saves_what_ultralytics_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("runs");
    let weights = fixtures().join("yolov8n.pt");
    let args = ["train", "--model", "yolov8n", "--preset", "quick", "--freeze", "10", "--name", "y8", "--weights"];
    let out = detect(&args, &[weights.as_path(), Path::new("--project"), project.as_path()]);
    let err = ok(&out, "detect train");
    let reinit: Vec<String> =
        (0..3).flat_map(|i| [format!("model.22.cv3.{i}.2.weight"), format!("model.22.cv3.{i}.2.bias")]).collect();
    let line = err.lines().find(|l| l.starts_with("weights:")).unwrap_or_else(|| panic!("no transfer report: {err}"));
    assert!(line.contains(&format!("re-initialised {}", reinit.join(", "))), "{line}");
    assert!(err.contains("10 stage(s) frozen"), "{err}");

    let run = project.join("detect/y8");
    let eval = detect(&["eval", "--json", "--run"], &[run.as_path()]);
    ok(&eval, "detect eval");
    let v: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert!(v["map50"].as_f64().is_some_and(|m| (0.0..=1.0).contains(&m)), "{v}");
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("family = \"ultralytics\"") && config.contains("arch = \"yolov8n\""), "{config}");
    // The quick preset's embedded data (made by the training run above).
    let image = workspace_root().join("datasets/generated/detection-8-4-320-s0/images/val/000000.jpg");
    let pred = detect(&["predict", "--json", "--run"], &[run.as_path(), image.as_path()]);
    ok(&pred, "detect predict");
    // The export with NMS, served by tract (the numbers are checked in onnx_ultralytics.rs).
    let onnx = tmp.path().join("y8.onnx");
    ok(&detect(&["export", "--nms", "--run"], &[run.as_path(), Path::new("--out"), onnx.as_path()]), "detect export");
    ok(&detect(&["predict", "--json", "--onnx"], &[onnx.as_path(), image.as_path()]), "detect predict --onnx");

    // The saved weights: strict load into Ultralytics, same output as detect forward.
    let best = run.join("weights/best.safetensors");
    let y = tmp.path().join("y.npy");
    let input = fixtures().join("input.npy");
    let fwd = detect(
        &["forward", "--model", "yolov8n", "--weights"],
        &[best.as_path(), Path::new("--input"), input.as_path(), Path::new("--output"), y.as_path()],
    );
    ok(&fwd, "detect forward on the trained weights");
    let args = ["yolov8n".as_ref(), best.as_os_str(), input.as_os_str(), y.as_os_str()];
    reference_check("check_ultralytics_load.py", &args, "Ultralytics rejected the trained weights");
}
