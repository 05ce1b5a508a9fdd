//! `segment export` and `segment predict --onnx` on the embedded data: a quick run (1 epoch) is
//! exported, and tract's masks on the validation images equal the libtorch path's (the same JSON
//! fields; the arg-max of logits that agree to 1e-4 may differ only on exact ties, so at least 99.9% of
//! the pixels must match, and the class counts within 0.1%); a malformed file is a one-line error with
//! exit code 2.

#![allow(clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tlcv_testkit::{json_lines, ok, one_line_error, sorted_files};

fn segment() -> Command {
    Command::new(env!("CARGO_BIN_EXE_segment"))
}

/// The validation images of the quick preset's embedded data.
fn val_images() -> Vec<PathBuf> {
    let root = tlcv_core::paths::generated_data_dir("shapes-seg-64px-8-4-s0").unwrap_or_else(|e| panic!("{e}"));
    let dir = root.join("images").join("val");
    let files = sorted_files(&dir);
    assert!(!files.is_empty(), "no images in {}", dir.display());
    files
}

fn mask(path: &Path) -> Vec<u8> {
    segment::mask::read_index_mask(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).data
}

#[test]
fn onnx_masks_equal_the_libtorch_ones() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let project = tmp.path().join("runs");
    // ONNX computes in float32: the libtorch side too, whatever `auto` picks on this host.
    ok(segment()
        .args(["train", "--preset", "quick", "--name", "x", "--set", "train.precision=\"fp32\""])
        .arg("--project")
        .arg(&project));
    let run = project.join("segment").join("x");
    let images = val_images();
    let onnx = tmp.path().join("model.onnx");
    ok(segment().args(["export", "--run"]).arg(&run).arg("--out").arg(&onnx));
    let (a, b) = (tmp.path().join("torch"), tmp.path().join("onnx"));
    let want =
        json_lines(&ok(segment().args(["predict", "--json", "--run"]).arg(&run).arg("--out").arg(&a).args(&images)));
    let got =
        json_lines(&ok(segment().args(["predict", "--json", "--onnx"]).arg(&onnx).arg("--out").arg(&b).args(&images)));
    assert_eq!(got.len(), images.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g["image"], w["image"]);
        let keys: Vec<&String> = g.as_object().map(|o| o.keys().collect()).unwrap_or_default();
        let wkeys: Vec<&String> = w.as_object().map(|o| o.keys().collect()).unwrap_or_default();
        assert_eq!(keys, wkeys, "the JSON schema differs");
        let (mg, mw) =
            (mask(Path::new(g["mask"].as_str().unwrap_or(""))), mask(Path::new(w["mask"].as_str().unwrap_or(""))));
        assert_eq!(mg.len(), mw.len());
        let same = mg.iter().zip(&mw).filter(|(p, q)| p == q).count();
        assert!(same as f64 >= 0.999 * mw.len() as f64, "{}: {same} of {} pixels agree", w["image"], mw.len());
    }
    let bad = tmp.path().join("bad.onnx");
    std::fs::write(&bad, b"\x08\x07\x12\x04tlcv junk").unwrap_or_else(|e| panic!("{e}"));
    one_line_error(segment().args(["predict", "--onnx"]).arg(&bad).arg("--out").arg(&b).arg(&images[0]));
}
