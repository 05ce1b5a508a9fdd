//! The embedded segmentation set on the real Debian data: determinism (byte-identical reruns), layout,
//! mask format and values, and at least one real digit per image.

#![allow(clippy::expect_used)] // test failures are panics

use std::path::{Path, PathBuf};

use opencv::core::Mat;
use opencv::imgcodecs;
use opencv::prelude::*;
use tlcv_datasets::segmentation::{CLASSES, SegParams, generate};

fn debdata() -> PathBuf {
    let dir = std::env::var_os("TLCV_DEBDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tlcv/debdata"));
    assert!(dir.join(".done").is_file(), "Debian data missing at {}: run `cargo xtask setup` first", dir.display());
    dir
}

fn read(path: &Path, flags: i32) -> Mat {
    let m = imgcodecs::imread(path.to_str().expect("utf8"), flags).expect("imread");
    assert!(!m.empty(), "{} unreadable", path.display());
    m
}

#[test]
fn generates_deterministic_pairs_with_digits() {
    let tmp = tempfile::tempdir().expect("tmp");
    let params = SegParams { size: 64, train: 6, val: 3, seed: 7 };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let sa = generate(&a, &debdata(), params).expect("generate");
    generate(&b, &debdata(), params).expect("generate again");
    assert_eq!((sa.train, sa.val), (6, 3));
    assert_eq!(std::fs::read_to_string(a.join("classes.txt")).expect("classes").lines().collect::<Vec<_>>(), CLASSES);
    let mut digit_images = 0;
    for (split, n) in [("train", 6), ("val", 3)] {
        for i in 0..n {
            let name = format!("{i:05}.png");
            for kind in ["images", "masks"] {
                let (fa, fb) = (a.join(kind).join(split).join(&name), b.join(kind).join(split).join(&name));
                assert_eq!(
                    std::fs::read(&fa).expect("a"),
                    std::fs::read(&fb).expect("b"),
                    "{} differs between runs",
                    fa.display()
                );
            }
            let img = read(&a.join("images").join(split).join(&name), imgcodecs::IMREAD_COLOR);
            let mask = read(&a.join("masks").join(split).join(&name), imgcodecs::IMREAD_UNCHANGED);
            assert_eq!((mask.channels(), mask.rows(), mask.cols()), (1, 64, 64));
            assert_eq!((img.rows(), img.cols()), (64, 64));
            let m = mask.data_bytes().expect("bytes");
            assert!(m.iter().all(|&v| (v as usize) < CLASSES.len()), "mask values out of range");
            if m.contains(&4) {
                digit_images += 1;
            }
        }
    }
    assert_eq!(digit_images, 9, "every image holds at least one digit");
}
