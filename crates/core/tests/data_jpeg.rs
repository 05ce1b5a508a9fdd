//! The direct libjpeg path (straight-to-RGB decoding and region decoding) against OpenCV's `imdecode`,
//! the independent reference built on the same library: every Debian JPEG decodes to identical bytes
//! at every reduction, and a random resized crop decoded from the region alone equals the crop of the
//! whole decode, pixel for pixel and with the same random draws.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod data_util;

use std::path::{Path, PathBuf};

use data_util::{debdata, fixtures};
use opencv::core::{Mat, Scalar, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};
use rand::{SeedableRng, rngs::StdRng};
use tlcv_core::data::{DecodeOptions, RgbImage, decode_bytes, transforms};

/// Every JPEG of the Debian data (opencv-doc and skimage photos), sorted.
fn debian_jpegs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["opencv", "skimage"] {
        for entry in std::fs::read_dir(debdata().join(sub)).unwrap().flatten() {
            let p = entry.path();
            // skimage's truncated.jpg is refused before decoding (data_decode tests that).
            let truncated = p.file_stem().is_some_and(|s| s == "truncated");
            if !truncated
                && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(out.len() >= 20, "expected the Debian photos, found {}", out.len());
    out
}

/// OpenCV's decode at the reduction `flags`, converted to RGB.
fn opencv_rgb(bytes: &[u8], flags: i32) -> RgbImage {
    let bgr = imgcodecs::imdecode(&Vector::<u8>::from_slice(bytes), flags).unwrap();
    let mut rgb = Mat::default();
    imgproc::cvt_color_def(&bgr, &mut rgb, imgproc::COLOR_BGR2RGB).unwrap();
    RgbImage::from_raw(rgb.cols() as usize, rgb.rows() as usize, rgb.data_bytes().unwrap().to_vec()).unwrap()
}

#[test]
fn every_debian_jpeg_decodes_to_opencvs_bytes_at_every_reduction() {
    for path in debian_jpegs() {
        let bytes = std::fs::read(&path).unwrap();
        let full = decode_bytes(&bytes, &path, &DecodeOptions::default()).unwrap();
        assert!(full == opencv_rgb(&bytes, imgcodecs::IMREAD_COLOR), "{}: full decode differs", path.display());
        let short = full.width.min(full.height);
        for (denom, flags) in [
            (2, imgcodecs::IMREAD_REDUCED_COLOR_2),
            (4, imgcodecs::IMREAD_REDUCED_COLOR_4),
            (8, imgcodecs::IMREAD_REDUCED_COLOR_8),
        ] {
            let opts = DecodeOptions { target_size: Some((short / denom).max(1)), ..Default::default() };
            let ours = decode_bytes(&bytes, &path, &opts).unwrap();
            let want = opencv_rgb(&bytes, flags);
            assert_eq!((ours.width, ours.height), (want.width, want.height), "{} at 1/{denom}", path.display());
            assert!(ours == want, "{} at 1/{denom}: pixels differ", path.display());
        }
    }
}

/// A BGR image with detail everywhere.
fn textured(w: i32, h: i32) -> Mat {
    let mut m = Mat::new_rows_cols_with_default(h, w, opencv::core::CV_8UC3, Scalar::all(0.0)).unwrap();
    for y in 0..h {
        for x in 0..w {
            let v = ((x * 7 + y * 13) % 97) as u8;
            *m.at_2d_mut::<opencv::core::Vec3b>(y, x).unwrap() =
                opencv::core::Vec3b::from([v, (x * 255 / w) as u8, (y * 255 / h) as u8]);
        }
    }
    m
}

fn encode(mat: &Mat, params: &[i32]) -> Vec<u8> {
    let mut buf = Vector::<u8>::new();
    assert!(imgcodecs::imencode(".jpg", mat, &mut buf, &Vector::from_slice(params)).unwrap());
    buf.to_vec()
}

#[test]
fn grey_progressive_cmyk_and_rotated_jpegs_match_opencv() {
    let colour = textured(75, 41);
    let mut grey = Mat::default();
    imgproc::cvt_color_def(&colour, &mut grey, imgproc::COLOR_BGR2GRAY).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("grey", encode(&grey, &[])),
        ("progressive", encode(&colour, &[imgcodecs::IMWRITE_JPEG_PROGRESSIVE, 1])),
        ("restart markers", encode(&colour, &[imgcodecs::IMWRITE_JPEG_RST_INTERVAL, 2])),
        // Left to OpenCV by the libjpeg path: they must still decode, the same way.
        ("cmyk", std::fs::read(fixtures().join("cmyk.jpg")).unwrap()),
        ("exif orientation 6", std::fs::read(fixtures().join("exif6.jpg")).unwrap()),
    ];
    for (name, bytes) in cases {
        let ours = decode_bytes(&bytes, Path::new(name), &DecodeOptions::default()).unwrap();
        let want = opencv_rgb(&bytes, imgcodecs::IMREAD_COLOR);
        assert!(
            ours == want,
            "{name}: differs from OpenCV ({}x{} vs {}x{})",
            ours.width,
            ours.height,
            want.width,
            want.height
        );
    }
}

#[test]
fn region_decoded_random_crops_equal_crops_of_the_whole_image() {
    let mut checked = 0;
    for (i, path) in debian_jpegs().iter().enumerate().step_by(3) {
        let bytes = std::fs::read(path).unwrap();
        for target in [None, Some(64)] {
            let opts = DecodeOptions { target_size: target, ..Default::default() };
            let whole = decode_bytes(&bytes, path, &opts).unwrap();
            for k in 0..4 {
                let seed = (i * 10 + k) as u64;
                let (scale, ratio) = ((0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0));
                let (mut rng_a, mut rng_b) = (StdRng::seed_from_u64(seed), StdRng::seed_from_u64(seed));
                let crop = transforms::RandomResizedCrop { scale, ratio, ..transforms::RandomResizedCrop::new(56, 48) };
                let fused = crop.decode(&bytes, path, &opts, &mut rng_a).unwrap();
                let want = crop.apply(&whole, &mut rng_b).unwrap();
                assert!(fused == want, "{} (target {target:?}, seed {seed}): crops differ", path.display());
                // The generators advanced alike, so what follows in the pipeline is unchanged too.
                assert_eq!(rand::Rng::r#gen::<u64>(&mut rng_a), rand::Rng::r#gen::<u64>(&mut rng_b));
                checked += 1;
            }
        }
    }
    assert!(checked >= 50, "{checked}");
}
