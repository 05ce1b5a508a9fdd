//! `segment train --weights` with the committed malicious pickles: refused with exit code 2 and one
//! error line naming `posix.system` and the file; the marker file the pickles would create never
//! appears. (`classify` and `detect` have the same test for their commands.)

#![allow(clippy::panic, clippy::unwrap_used)]

use std::path::Path;

use opencv::{core, imgcodecs};

#[path = "../../core/tests/common/malicious.rs"]
mod malicious;

use malicious::{assert_refused, malicious_checkpoints, train_with_weights};

fn write(path: &Path, mat: &core::Mat) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    assert!(imgcodecs::imwrite(path.to_str().unwrap(), mat, &core::Vector::new()).unwrap());
}

#[test]
fn malicious_pickles_are_refused_by_segment_train() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut image = core::Mat::new_rows_cols_with_default(64, 64, core::CV_8UC3, core::Scalar::all(0.0)).unwrap();
    core::randu(&mut image, &core::Scalar::all(0.0), &core::Scalar::all(255.0)).unwrap();
    let mask = core::Mat::new_rows_cols_with_default(64, 64, core::CV_8UC1, core::Scalar::all(1.0)).unwrap();
    for (split, i) in [("train", 0), ("train", 1), ("val", 0)] {
        write(&data.join(format!("images/{split}/{i}.png")), &image);
        write(&data.join(format!("masks/{split}/{i}.png")), &mask);
    }
    std::fs::write(data.join("classes.txt"), "background\nthing\n").unwrap();
    for file in malicious_checkpoints() {
        let mut cmd = train_with_weights(env!("CARGO_BIN_EXE_segment"), &file, &data, &tmp.path().join("runs"));
        assert_refused(&format!("segment train --weights {}", file.display()), &mut cmd, &file);
    }
}
