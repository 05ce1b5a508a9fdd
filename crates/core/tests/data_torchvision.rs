//! The classification transforms against torchvision 0.28 + Pillow on the Debian photos
//! (`scripts/fixtures/gen_preprocess.py`): `Resize(256)` + `CenterCrop(224)` and `resized_crop` with a
//! fixed rectangle to 224 and to 64 pixels, from our own decode of the same files. Pillow's resampler
//! must give torchvision's bytes (at most 1 grey level apart); OpenCV's area resize, the faster option,
//! must not (it is a different filter), which also shows the comparison can fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod data_util;

use std::path::PathBuf;

use data_util::debdata;
use tlcv_core::data::transforms::{self, CropRect, RandomResizedCrop, ResizeMethod};
use tlcv_core::data::{DecodeOptions, RgbImage, decode_file};

struct Case {
    image: String,
    name: String,
    /// `(top, left, height, width)`.
    crop: [usize; 4],
}

fn fixture() -> (PathBuf, Vec<Case>) {
    let dir = tlcv_core::paths::generated_fixture("preprocess").unwrap_or_else(|e| panic!("{e}"));
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let cases = index["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Case {
            image: e["image"].as_str().unwrap().to_string(),
            name: e["name"].as_str().unwrap().to_string(),
            crop: std::array::from_fn(|i| e["crop"][i].as_u64().unwrap() as usize),
        })
        .collect();
    (dir, cases)
}

/// Largest absolute difference, and how many values differ at all.
fn compare(got: &RgbImage, want: &[u8]) -> (u8, usize) {
    assert_eq!(got.data.len(), want.len(), "size");
    let diffs = got.data.iter().zip(want).map(|(a, b)| a.abs_diff(*b));
    diffs.fold((0, 0), |(max, n), d| (max.max(d), n + usize::from(d > 0)))
}

fn eval_transform(img: &RgbImage, method: ResizeMethod) -> RgbImage {
    let resized = transforms::resize_shorter_by(img, 256, method).unwrap();
    transforms::center_crop(&resized, 224, 224).unwrap()
}

#[test]
fn pillow_resize_equals_torchvision_on_the_debian_photos() {
    let (dir, cases) = fixture();
    assert!(cases.len() >= 10, "{} photos in the fixture", cases.len());
    let mut opencv_worst = 0u8;
    for case in &cases {
        let img = decode_file(debdata().join(&case.image), &DecodeOptions::default()).unwrap();
        let read = |suffix: &str| std::fs::read(dir.join(format!("{}.{suffix}.u8", case.name))).unwrap();

        let (max, n) = compare(&eval_transform(&img, ResizeMethod::Pillow), &read("eval"));
        eprintln!("{}: eval transform max diff {max} ({n} values differ)", case.image);
        assert!(max <= 1, "{}: Resize(256) + CenterCrop(224) differs by {max} grey levels", case.image);
        opencv_worst = opencv_worst.max(compare(&eval_transform(&img, ResizeMethod::Opencv), &read("eval")).0);

        let [top, left, height, width] = case.crop;
        let rect = CropRect { x: left, y: top, width, height };
        for (size, suffix) in [(224, "crop"), (64, "crop64")] {
            let rrc = RandomResizedCrop {
                width: size,
                height: size,
                scale: (0.08, 1.0),
                ratio: (0.75, 4.0 / 3.0),
                method: ResizeMethod::Pillow,
            };
            let (max, n) = compare(&rrc.resize_crop(&img, rect).unwrap(), &read(suffix));
            eprintln!("{}: resized crop to {size} max diff {max} ({n} values differ)", case.image);
            assert!(max <= 1, "{}: resized_crop to {size} differs by {max} grey levels", case.image);
        }
    }
    eprintln!("OpenCV's resize: worst difference {opencv_worst} grey levels");
    assert!(opencv_worst > 1, "OpenCV's area resize should not match Pillow's filter");
}
