//! The committed malicious pickles (they would run `touch /tmp/tlcv_pwned_marker` if unpickled by
//! Python) given to `detect train --weights`: exit code 2, one error line naming the forbidden global
//! and the file, and the marker never appears. (`classify` has the same test for its commands.)

#![allow(clippy::panic, clippy::unwrap_used)]

use std::path::Path;

use opencv::{core, imgcodecs};

#[path = "../../core/tests/common/malicious.rs"]
mod malicious;

use malicious::{assert_refused, malicious_checkpoints, train_with_weights};

fn noise_png(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut img = core::Mat::new_rows_cols_with_default(64, 64, core::CV_8UC3, core::Scalar::all(0.0)).unwrap();
    core::randu(&mut img, &core::Scalar::all(0.0), &core::Scalar::all(255.0)).unwrap();
    assert!(imgcodecs::imwrite(path.to_str().unwrap(), &img, &core::Vector::new()).unwrap());
}

#[test]
fn malicious_pickles_are_refused_by_detect_train() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for (split, i) in [("train", 0), ("train", 1), ("val", 0)] {
        noise_png(&data.join(format!("images/{split}/{i}.png")));
        std::fs::create_dir_all(data.join(format!("labels/{split}"))).unwrap();
        std::fs::write(data.join(format!("labels/{split}/{i}.txt")), "0 0.5 0.5 0.3 0.3\n").unwrap();
    }
    std::fs::write(data.join("data.yaml"), "train: images/train\nval: images/val\nnames: [a]\n").unwrap();
    for file in malicious_checkpoints() {
        let mut cmd = train_with_weights(env!("CARGO_BIN_EXE_detect"), &file, &data, &tmp.path().join("runs"));
        assert_refused(&format!("detect train --weights {}", file.display()), &mut cmd, &file);
    }
}

/// An Ultralytics checkpoint (made by `scripts/fixtures/gen_ultralytics.py`) whose `DetectionModel`
/// record carries a `posix.system` call: refused by every command that reads YOLO weights.
#[test]
fn malicious_ultralytics_checkpoint_is_refused() {
    let fx = tlcv_core::paths::generated_fixture("ultralytics").unwrap_or_else(|e| panic!("{e}"));
    let file = fx.join("malicious.pt");
    let tmp = tempfile::tempdir().unwrap();
    let mut forward = std::process::Command::new(env!("CARGO_BIN_EXE_detect"));
    forward.args(["forward", "--model", "yolov8n", "--weights"]).arg(&file).arg("--input");
    forward.arg(fx.join("input.npy")).arg("--output").arg(tmp.path().join("out.npy"));
    assert_refused("detect forward", &mut forward, &file);
    let mut train = std::process::Command::new(env!("CARGO_BIN_EXE_detect"));
    train.args(["train", "--model", "yolov8n", "--preset", "quick", "--weights"]).arg(&file);
    train.arg("--project").arg(tmp.path().join("runs"));
    assert_refused("detect train --model yolov8n", &mut train, &file);
}
