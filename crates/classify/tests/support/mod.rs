//! Helpers shared by the `classify` binary tests: running it, and writing small generated images.

#![allow(dead_code, clippy::panic)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use opencv::{core, imgcodecs, imgproc};
#[allow(unused_imports)] // each test uses some
pub use tlcv_testkit::{run, stderr};

/// A `classify` command: the binary Cargo built for this test, or `$TLCV_TEST_CLASSIFY_BIN` when set
/// (for running a copied test binary against a copied `classify` outside the target directory).
pub fn classify() -> Command {
    match std::env::var_os("TLCV_TEST_CLASSIFY_BIN") {
        Some(bin) => Command::new(bin),
        None => Command::new(env!("CARGO_BIN_EXE_classify")),
    }
}

/// A `w`×`h` BGR image of class 0 (red square) or 1 (blue bar) on grey, shifted by `seed`.
pub fn drawing(class: usize, seed: i32, w: i32, h: i32) -> core::Mat {
    let mut img = core::Mat::new_rows_cols_with_default(h, w, core::CV_8UC3, core::Scalar::all(128.0))
        .unwrap_or_else(|e| panic!("{e}"));
    let o = seed % 5;
    let result = if class == 0 {
        let color = core::Scalar::new(30.0, 30.0, 220.0, 0.0);
        imgproc::rectangle(&mut img, core::Rect::new(w / 4 + o, h / 4, w / 2, h / 2), color, -1, imgproc::LINE_8, 0)
    } else {
        let color = core::Scalar::new(220.0, 40.0, 30.0, 0.0);
        imgproc::rectangle(&mut img, core::Rect::new(2, h / 3 + o, w - 4, h / 4), color, -1, imgproc::LINE_8, 0)
    };
    result.unwrap_or_else(|e| panic!("{e}"));
    img
}

/// Writes `mat` to `path` (format from the extension), with optional encoder parameters.
pub fn write(path: &Path, mat: &core::Mat, params: &[i32]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    }
    let ok = imgcodecs::imwrite(path, mat, &core::Vector::from_slice(params)).unwrap_or_else(|e| panic!("{e}"));
    assert!(ok, "could not write {}", path.display());
}

/// A two-class ImageFolder (`a` = red squares, `b` = blue bars) of `side`-pixel PNGs under `root/data`.
pub fn two_class_folder(root: &Path, side: i32, counts: &[(&str, usize)]) -> PathBuf {
    let data = root.join("data");
    for &(split, n) in counts {
        for (class, name) in ["a", "b"].iter().enumerate() {
            for i in 0..n {
                let img = drawing(class, (i * 2 + class) as i32, side, side);
                write(&data.join(split).join(name).join(format!("good{i}.png")), &img, &[]);
            }
        }
    }
    data
}

/// Number of data rows of a run's `results.csv` (0 when absent).
pub fn results_rows(run: &Path) -> usize {
    std::fs::read_to_string(run.join("results.csv")).map_or(0, |t| t.lines().count().saturating_sub(1))
}
