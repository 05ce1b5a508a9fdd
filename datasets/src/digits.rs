//! Real handwritten digits: opencv-doc's `digits.png` is a 2000x1000 grey sheet of 20x20 cells,
//! 50 rows by 100 columns, 500 per digit, digit `d` filling rows `5d..5d+4`. Each cell is saved as
//! its original 20x20 grey PNG (the model resizes) under `<split>/<d>/<d>_<cell>.png`.

use std::path::Path;

use opencv::core::{Mat, Rect, Vector};
use opencv::imgcodecs;
use opencv::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use crate::{DatasetError, Summary, build, make_class_dirs, mix};

/// Source file, relative to the Debian data folder.
pub const SOURCE: &str = "opencv/digits.png";
/// Cell size in pixels.
pub const CELL: usize = 20;
/// Digits per class in the sheet.
pub const PER_DIGIT: usize = 500;
/// Validation images per class.
pub const VAL_PER_CLASS: usize = 100;
/// Test images per class.
pub const TEST_PER_CLASS: usize = 200;
/// Largest `train_per_class` (what remains after val and test).
pub const MAX_TRAIN_PER_CLASS: usize = PER_DIGIT - VAL_PER_CLASS - TEST_PER_CLASS;

/// Splits the digits into `out_dir/{train,val,test}/<0..9>/`: per class 100 val, 200 test and
/// `train_per_class` (at most 200) train images, drawn from a per-digit permutation seeded by `seed`.
/// `debdata_dir` holds the extracted Debian data (`opencv/digits.png`). Does nothing if `out_dir` is
/// complete already.
pub fn generate(
    out_dir: &Path,
    debdata_dir: &Path,
    train_per_class: usize,
    seed: u64,
) -> Result<Summary, DatasetError> {
    if train_per_class == 0 || train_per_class > MAX_TRAIN_PER_CLASS {
        return Err(DatasetError::Invalid(format!(
            "digits: train_per_class must be in 1..={MAX_TRAIN_PER_CLASS}, got {train_per_class}"
        )));
    }
    build(out_dir, |dir| {
        let src = debdata_dir.join(SOURCE);
        if !src.is_file() {
            return Err(DatasetError::MissingSource { path: src });
        }
        let src_str = src.to_string_lossy().into_owned();
        let sheet =
            imgcodecs::imread(&src_str, imgcodecs::IMREAD_GRAYSCALE).map_err(|e| DatasetError::cv(&src_str, e))?;
        if sheet.cols() as usize != 100 * CELL || sheet.rows() as usize != 50 * CELL {
            return Err(DatasetError::Invalid(format!(
                "{}: expected a 2000x1000 sheet, got {}x{}",
                src.display(),
                sheet.cols(),
                sheet.rows()
            )));
        }
        let classes: Vec<String> = (0..10).map(|d| d.to_string()).collect();
        make_class_dirs(dir, &classes)?;
        // (split, digit, cell index within the digit's 500)
        let mut jobs = Vec::new();
        for d in 0..10usize {
            let mut cells: Vec<usize> = (0..PER_DIGIT).collect();
            cells.shuffle(&mut StdRng::seed_from_u64(mix(seed, d as u64)));
            let (val, rest) = cells.split_at(VAL_PER_CLASS);
            let (test, rest) = rest.split_at(TEST_PER_CLASS);
            let train = &rest[..train_per_class];
            for (split, ids) in [("train", train), ("val", val), ("test", test)] {
                jobs.extend(ids.iter().map(|&k| (split, d, k)));
            }
        }
        jobs.par_iter().try_for_each(|&(split, d, k)| {
            let (row, col) = (5 * d + k / 100, k % 100);
            let rect = Rect::new((col * CELL) as i32, (row * CELL) as i32, CELL as i32, CELL as i32);
            let path = dir.join(split).join(d.to_string()).join(format!("{d}_{k:03}.png"));
            let ctx = || path.display().to_string();
            let cell = Mat::roi(&sheet, rect).map_err(|e| DatasetError::cv(ctx(), e))?;
            let mut buf = Vector::<u8>::new();
            imgcodecs::imencode(".png", &cell, &mut buf, &Vector::new()).map_err(|e| DatasetError::cv(ctx(), e))?;
            std::fs::write(&path, buf.as_slice()).map_err(|e| DatasetError::io(&path, e))
        })?;
        Ok(Summary {
            name: "digits".into(),
            seed,
            classes,
            per_class: [train_per_class, VAL_PER_CLASS, TEST_PER_CLASS],
            train: 10 * train_per_class,
            val: 10 * VAL_PER_CLASS,
            test: 10 * TEST_PER_CLASS,
            sources: vec![SOURCE.into()],
        })
    })
}
