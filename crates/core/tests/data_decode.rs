//! Decoding real photos (checked against Pillow's decode, see tests/fixtures/data/make_refs.py) and a
//! folder of bad or unusual inputs generated here, each with its expected outcome.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod data_util;

use std::path::{Path, PathBuf};

use data_util::{debdata, fixtures, png, refs};
use opencv::core::{Mat, Scalar, Vector};
use opencv::imgcodecs;
use opencv::prelude::*;
use tlcv_core::data::image::{Format, header_dimensions, sniff_format};
use tlcv_core::data::{DataError, DecodeOptions, RgbImage, decode_file};

fn channel_sums(img: &RgbImage) -> [u64; 3] {
    let mut s = [0u64; 3];
    for p in img.data.chunks_exact(3) {
        for c in 0..3 {
            s[c] += p[c] as u64;
        }
    }
    s
}

fn mean_rgb(img: &RgbImage, x0: usize, x1: usize) -> [f64; 3] {
    let mut s = [0.0; 3];
    let mut n = 0.0;
    for y in 0..img.height {
        for x in x0..x1 {
            let p = img.pixel(x, y);
            for c in 0..3 {
                s[c] += p[c] as f64;
            }
            n += 1.0;
        }
    }
    s.map(|v| v / n)
}

fn json_u64s(v: &serde_json::Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

#[test]
fn lossless_pngs_match_pillow_exactly() {
    let refs = refs();
    for name in ["skimage/astronaut.png", "skimage/palette_color.png", "skimage/green_palette.png"] {
        let img = decode_file(debdata().join(name), &DecodeOptions::default()).unwrap();
        let r = &refs[name];
        assert_eq!(
            (img.width as u64, img.height as u64),
            (r["width"].as_u64().unwrap(), r["height"].as_u64().unwrap())
        );
        assert_eq!(channel_sums(&img).to_vec(), json_u64s(&r["sum"]), "{name}: channel sums (RGB order)");
        assert_eq!(img.pixel(5, 3).map(u64::from).to_vec(), json_u64s(&r["pixel_5_3"]), "{name}");
    }
}

#[test]
fn jpeg_photo_matches_pillow_and_reduced_decoding_is_smaller() {
    let refs = refs();
    let r = &refs["opencv/fruits.jpg"];
    let path = debdata().join("opencv/fruits.jpg");
    let full = decode_file(&path, &DecodeOptions::default()).unwrap();
    assert_eq!((full.width, full.height), (512, 480));
    let n = (full.width * full.height) as f64;
    let ours = channel_sums(&full);
    let pil = json_u64s(&r["sum"]);
    for c in 0..3 {
        let diff = (ours[c] as f64 - pil[c] as f64).abs() / n;
        assert!(diff < 0.5, "channel {c}: mean differs from Pillow's by {diff}");
    }
    // Red channel dominates (fruits), which fails if BGR was not converted.
    assert!(ours[0] > ours[1] && ours[1] > ours[2]);
    // Shorter side 480: a target of 100 allows 1/4 scale (120), a target of 200 only 1/2 (240).
    for (target, size) in [(100, (128, 120)), (200, (256, 240)), (300, (512, 480)), (60, (64, 60))] {
        let small = decode_file(&path, &DecodeOptions { target_size: Some(target), ..Default::default() }).unwrap();
        assert_eq!((small.width, small.height), size, "target {target}");
        let m_small = mean_rgb(&small, 0, small.width);
        let m_full = mean_rgb(&full, 0, full.width);
        for c in 0..3 {
            assert!((m_small[c] - m_full[c]).abs() < 2.0, "target {target}: {m_small:?} vs {m_full:?}");
        }
    }
}

#[test]
fn cmyk_jpeg_and_exif_orientation() {
    let refs = refs();
    let cmyk = decode_file(fixtures().join("cmyk.jpg"), &DecodeOptions::default()).unwrap();
    assert_eq!((cmyk.width, cmyk.height), (32, 24));
    let left = mean_rgb(&cmyk, 0, 14);
    let right = mean_rgb(&cmyk, 18, 32);
    let want_l: Vec<f64> = refs["cmyk"]["left"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let want_r: Vec<f64> = refs["cmyk"]["right"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    for c in 0..3 {
        assert!((left[c] - want_l[c]).abs() < 8.0, "left {left:?} vs Pillow {want_l:?}");
        assert!((right[c] - want_r[c]).abs() < 8.0, "right {right:?} vs Pillow {want_r:?}");
    }
    // Stored 40x20 with red left / blue right and orientation 6: displayed 20x40, red on top.
    let img = decode_file(fixtures().join("exif6.jpg"), &DecodeOptions::default()).unwrap();
    assert_eq!((img.width, img.height), (20, 40));
    let top = img.pixel(10, 5);
    let bottom = img.pixel(10, 34);
    assert!(top[0] > 200 && top[2] < 60, "top {top:?}");
    assert!(bottom[2] > 200 && bottom[0] < 60, "bottom {bottom:?}");
}

fn encode(ext: &str, mat: &Mat, params: &[i32]) -> Vec<u8> {
    let mut buf = Vector::<u8>::new();
    assert!(imgcodecs::imencode(ext, mat, &mut buf, &Vector::from_slice(params)).unwrap());
    buf.to_vec()
}

/// A BGR test pattern: blue rises left to right, green top to bottom, red constant 200.
fn pattern(w: i32, h: i32) -> Mat {
    let mut m = Mat::new_rows_cols_with_default(h, w, opencv::core::CV_8UC3, Scalar::all(0.0)).unwrap();
    for y in 0..h {
        for x in 0..w {
            *m.at_2d_mut::<opencv::core::Vec3b>(y, x).unwrap() =
                opencv::core::Vec3b::from([(x * 255 / w.max(2)) as u8, (y * 255 / h.max(2)) as u8, 200]);
        }
    }
    m
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn bad_and_unusual_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let opts = DecodeOptions::default();
    let photo = std::fs::read(debdata().join("opencv/baboon.jpg")).unwrap();

    // Zero bytes.
    let p = write(dir, "empty.jpg", b"");
    assert!(matches!(decode_file(&p, &opts), Err(DataError::Empty { .. })));

    // A JPEG cut in half: libjpeg alone would return grey-padded pixels; we refuse it.
    let p = write(dir, "cut.jpg", &photo[..photo.len() / 2]);
    let e = decode_file(&p, &opts).unwrap_err();
    assert!(
        matches!(e, DataError::Decode { .. })
            && e.to_string().contains("cut.jpg")
            && e.to_string().contains("truncated"),
        "{e}"
    );
    let e = decode_file(debdata().join("skimage/truncated.jpg"), &opts).unwrap_err();
    assert!(matches!(e, DataError::Decode { .. }), "{e}");

    // A PNG named .jpg: the content decides.
    let pat = pattern(17, 9);
    let p = write(dir, "really_png.jpg", &encode(".png", &pat, &[]));
    let img = decode_file(&p, &opts).unwrap();
    assert_eq!((img.width, img.height), (17, 9));
    assert_eq!(img.pixel(16, 8), [200, (8 * 255 / 9) as u8, (16 * 255 / 17) as u8], "BGR must become RGB");

    // A truncated PNG fails with the file named.
    let full_png = encode(".png", &pattern(64, 64), &[]);
    let p = write(dir, "cut.png", &full_png[..full_png.len() - 40]);
    let e = decode_file(&p, &opts).unwrap_err();
    assert!(matches!(e, DataError::Decode { .. }) && e.to_string().contains("cut.png"), "{e}");

    // Text named .png.
    let p = write(dir, "notes.png", b"label,path\ncat,a.jpg\n");
    let e = decode_file(&p, &opts).unwrap_err();
    assert!(
        matches!(e, DataError::UnknownFormat { .. })
            && e.to_string().contains("text")
            && e.to_string().contains("notes.png"),
        "{e}"
    );
    let p = write(dir, "noise.bmp", &[0u8, 1, 2, 3, 250, 251, 252, 253, 7, 7]);
    assert!(matches!(decode_file(&p, &opts), Err(DataError::UnknownFormat { .. })));

    // Grey PNG -> R = G = B.
    let grey = Mat::new_rows_cols_with_default(5, 6, opencv::core::CV_8UC1, Scalar::all(77.0)).unwrap();
    let img = decode_file(write(dir, "grey.png", &encode(".png", &grey, &[])), &opts).unwrap();
    assert!(img.data.iter().all(|&v| v == 77) && img.data.len() == 5 * 6 * 3);

    // RGBA PNG: alpha dropped, colour kept (not premultiplied).
    let rgba =
        Mat::new_rows_cols_with_default(4, 4, opencv::core::CV_8UC4, Scalar::new(10.0, 20.0, 30.0, 0.0)).unwrap();
    let img = decode_file(write(dir, "rgba.png", &encode(".png", &rgba, &[])), &opts).unwrap();
    assert_eq!(img.pixel(2, 2), [30, 20, 10]);

    // 16-bit PNG -> the high byte.
    let deep =
        Mat::new_rows_cols_with_default(3, 5, opencv::core::CV_16UC3, Scalar::new(4660.0, 40000.0, 65535.0, 0.0))
            .unwrap();
    let bytes = encode(".png", &deep, &[]);
    assert_eq!(bytes[24], 16, "the test image must really be a 16-bit PNG");
    let img = decode_file(write(dir, "deep.png", &bytes), &opts).unwrap();
    assert_eq!(img.pixel(4, 2), [255, (40000 >> 8) as u8, (4660 >> 8) as u8]);

    // Palette PNG written by hand: 4x2, indices 0..3 / 3..0 into red, green, blue, white.
    let pal = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];
    let bytes = png((4, 2), (8, 3), Some(&pal), &[0, 0, 1, 2, 3, 0, 3, 2, 1, 0]);
    let img = decode_file(write(dir, "palette.png", &bytes), &opts).unwrap();
    assert_eq!((img.width, img.height), (4, 2));
    let want: Vec<u8> = [0, 1, 2, 3, 3, 2, 1, 0].iter().flat_map(|&i| pal[i]).collect();
    assert_eq!(img.data, want);

    // 1x1 and 1x3000.
    let img = decode_file(write(dir, "dot.png", &encode(".png", &pattern(1, 1), &[])), &opts).unwrap();
    assert_eq!((img.width, img.height, img.pixel(0, 0)), (1, 1, [200, 0, 0]));
    let img = decode_file(write(dir, "strip.jpg", &encode(".jpg", &pattern(1, 3000), &[])), &opts).unwrap();
    assert_eq!((img.width, img.height), (1, 3000));

    // A forged header claiming 20000x20000 is refused before decoding, naming the size.
    let forged = png((20000, 20000), (8, 2), None, &[0, 1, 2, 3]);
    let p = write(dir, "huge.png", &forged);
    let r = decode_file(&p, &opts);
    assert!(
        matches!(&r, Err(DataError::TooLarge { width: 20000, height: 20000, limit, path }) if *limit == 64 * 1024 * 1024 && *path == p),
        "{r:?}"
    );
    // The limit is configurable and applies to every format's header.
    let tight = DecodeOptions { max_pixels: 100, target_size: None };
    let p = write(dir, "ten.png", &encode(".png", &pattern(10, 10), &[]));
    assert!(decode_file(&p, &tight).is_ok());
    for (ext, params) in [
        (".png", vec![]),
        (".jpg", vec![]),
        (".bmp", vec![]),
        (".webp", vec![imgcodecs::IMWRITE_WEBP_QUALITY, 101]),
        (".webp", vec![imgcodecs::IMWRITE_WEBP_QUALITY, 80]),
    ] {
        let bytes = encode(ext, &pattern(11, 10), &params);
        let fmt = sniff_format(&bytes).unwrap();
        assert_eq!(header_dimensions(fmt, &bytes), Some((11, 10)), "{ext} {params:?}");
        let p = write(dir, &format!("eleven{ext}"), &bytes);
        assert!(matches!(decode_file(&p, &tight), Err(DataError::TooLarge { width: 11, height: 10, .. })), "{ext}");
        let img = decode_file(&p, &opts).unwrap();
        assert_eq!((img.width, img.height), (11, 10));
        if fmt == Format::Bmp || params.first() == Some(&imgcodecs::IMWRITE_WEBP_QUALITY) && params[1] > 100 {
            assert_eq!(img.pixel(10, 9), [200, (9 * 255 / 10) as u8, (10 * 255 / 11) as u8], "{ext} is lossless");
        }
    }

    // A missing file is an I/O error naming it.
    let e = decode_file(dir.join("nope.png"), &opts).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }) && e.to_string().contains("nope.png"));
}
