//! A segmentation data set with bad samples next to good ones (a mask of the wrong size, an unknown
//! class value, a missing mask, empty / truncated / text image files): `segment train`, `eval` and
//! `predict` exit 0, use the good samples, and name and count every bad one with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use opencv::core::{CV_8UC1, CV_8UC3, Mat, Point, Rect, Scalar, Vector};
use opencv::{imgcodecs, imgproc};
use serde_json::Value;
use tlcv_testkit::{run, s, stderr};

fn segment(args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_segment")).args(args))
}

fn encode(ext: &str, m: &Mat) -> Vec<u8> {
    let mut buf = Vector::<u8>::new();
    imgcodecs::imencode(ext, m, &mut buf, &Vector::new()).unwrap();
    buf.as_slice().to_vec()
}

/// A `w`x`h` image with a bright disc and its index mask (disc = `value`, rest 0).
fn pair(w: i32, h: i32, x: i32, value: f64) -> (Mat, Mat) {
    let mut img = Mat::new_rows_cols_with_default(h, w, CV_8UC3, Scalar::all(30.0)).unwrap();
    let mut m = Mat::new_rows_cols_with_default(h, w, CV_8UC1, Scalar::all(0.0)).unwrap();
    let c = Point::new(x.min(w - 10), h / 2);
    imgproc::circle(&mut img, c, 9, Scalar::new(40.0, 200.0, 220.0, 0.0), -1, imgproc::LINE_8, 0).unwrap();
    imgproc::circle(&mut m, c, 9, Scalar::all(value), -1, imgproc::LINE_8, 0).unwrap();
    (img, m)
}

/// Writes `images/<split>/<name>` (bytes) and, when given, `masks/<split>/<stem>.png`.
fn put(root: &Path, split: &str, name: &str, image: &[u8], mask: Option<&Mat>) -> (PathBuf, PathBuf) {
    let img = root.join("images").join(split).join(name);
    let msk = root.join("masks").join(split).join(Path::new(name).with_extension("png"));
    for d in [img.parent().unwrap(), msk.parent().unwrap()] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(&img, image).unwrap();
    if let Some(m) = mask {
        std::fs::write(&msk, encode(".png", m)).unwrap();
    }
    (img, msk)
}

/// Good samples (4 train, 2 val, one train mask with an ignored region) and the bad ones; returns
/// each bad sample's (named file, reason).
fn dataset(root: &Path) -> Vec<(PathBuf, String)> {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("classes.txt"), "background\ndisc\n").unwrap();
    for (split, n) in [("train", 4), ("val", 2)] {
        for i in 0..n {
            let (img, m) = pair(56, 40, 14 + 8 * i, 1.0);
            put(root, split, &format!("{i}.png"), &encode(".png", &img), Some(&m));
        }
    }
    let (img, mut m) = pair(56, 40, 30, 1.0);
    imgproc::rectangle(&mut m, Rect::new(0, 0, 8, 8), Scalar::all(255.0), -1, imgproc::LINE_8, 0).unwrap();
    put(root, "train", "ignored.png", &encode(".png", &img), Some(&m));

    let (img, m) = pair(56, 40, 20, 1.0);
    let (png, jpg) = (encode(".png", &img), encode(".jpg", &img));
    let (_, small) = pair(40, 30, 20, 1.0);
    let (_, seven) = pair(56, 40, 20, 7.0);
    let mut bad = Vec::new();
    let (i, k) = put(root, "train", "wrong_size.png", &png, Some(&small));
    bad.push((k.clone(), format!("mask is 40x30 but its image {} is 56x40", i.display())));
    let (_, k) = put(root, "train", "unknown.png", &png, Some(&seven));
    bad.push((k, "unknown class value 7 (classes are 0..1, ignore index 255)".into()));
    let (_, k) = put(root, "train", "nomask.png", &png, None);
    bad.push((k, "mask file not found".into()));
    let (i, _) = put(root, "train", "zero.jpg", b"", Some(&m));
    bad.push((i, "empty file (0 bytes)".into()));
    let (i, _) = put(root, "val", "text.jpg", b"not an image\n", Some(&m));
    bad.push((i, "not a supported image: the content is text".into()));
    // The truncated header gives the size: these pass indexing and fail at decoding.
    for split in ["train", "val"] {
        let (i, _) = put(root, split, "truncated.jpg", &jpg[..jpg.len() / 2], Some(&m));
        bad.push((i, "cannot decode: truncated JPEG".into()));
    }
    bad
}

/// Exactly one of `lines` is `<file>: <reason>...` (after `prefix`).
fn assert_named_once(lines: &[&str], prefix: &str, file: &Path, why: &str, all: &str) {
    let want = format!("{prefix}{}: {why}", file.display());
    assert_eq!(lines.iter().filter(|l| l.starts_with(&want)).count(), 1, "`{want}` not once in:\n{all}");
}

#[test]
fn bad_samples_are_named_counted_and_good_ones_used() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, project) = (tmp.path().join("data"), tmp.path().join("runs"));
    let bad = dataset(&data);
    let tiny = "train --model unet --backbone resnet18 --weights none --strategy scratch --epochs 1 --img-size 64 \
                --batch 2 --name t --json --set model.decoder_channels=[16,16,8,8,8]";
    let mut args: Vec<&str> = tiny.split_whitespace().collect();
    args.extend(["--data", s(&data), "--project", s(&project)]);
    let out = segment(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // Indexing keeps 4 good + ignored + truncated (train), 2 good + truncated (val); skips 5.
    let counts = format!("data: {} (2 classes; 6 train, 3 val, 5 skipped)", data.display());
    assert!(err.lines().any(|l| l == counts), "`{counts}` not in:\n{err}");
    let json: Value = serde_json::from_slice(&out.stdout).expect("one JSON summary");
    let run = PathBuf::from(json["run_dir"].as_str().unwrap());

    // metrics.json counts and names each bad sample once; so does stderr.
    let m: Value = serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["skipped"], bad.len(), "{m}");
    let listed: Vec<String> = m["skipped_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("{}: {}", v["file"].as_str().unwrap(), v["reason"].as_str().unwrap()))
        .collect();
    let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
    assert_eq!(listed.len(), bad.len(), "{m}");
    let lines: Vec<&str> = err.lines().collect();
    for (file, why) in &bad {
        assert_named_once(&listed, "", file, why, &m.to_string());
        assert!(lines.iter().any(|l| l.starts_with(&format!("skipped: {}: {why}", file.display()))), "{err}");
    }
    // The good samples trained (a finite loss) and were evaluated (background IoU is a number).
    let csv = std::fs::read_to_string(run.join("results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    let losses: Vec<f64> = rows[0]
        .split(',')
        .zip(rows[1].split(','))
        .filter(|(k, _)| k.starts_with("train/"))
        .map(|(_, v)| v.parse().unwrap())
        .collect();
    assert!(!losses.is_empty() && losses.iter().all(|l| l.is_finite() && *l > 0.0), "{csv}");
    assert!(json["per_class_iou"][0].as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)), "{json}");

    // eval: the index-time skips of both splits plus the val image that fails to decode.
    let out = segment(&["eval", "--run", s(&run), "--json"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let e: Value = serde_json::from_slice(&out.stdout).expect("eval JSON");
    assert!((e["miou"].as_f64().unwrap() - json["miou"].as_f64().unwrap()).abs() < 1e-9, "{e} vs {json}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("skipped: ")).collect();
    let train_truncated = data.join("images/train/truncated.jpg");
    assert_eq!(lines.len(), bad.len() - 1, "{err}");
    for (file, why) in bad.iter().filter(|(f, _)| *f != train_truncated) {
        assert_named_once(&lines, "skipped: ", file, why, &err);
    }

    // predict: the good image segmented at its size, each unreadable file named, exit 0.
    let good = data.join("images/val/0.png");
    let unreadable: Vec<&(PathBuf, String)> = bad.iter().filter(|(f, _)| f.starts_with(data.join("images"))).collect();
    let out_dir = tmp.path().join("pred");
    let mut args = vec!["predict", "--run", s(&run), "--out", s(&out_dir), "--json", s(&good)];
    args.extend(unreadable.iter().map(|(f, _)| s(f)));
    let out = segment(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let answered: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert_eq!(answered[0]["image"], s(&good));
    let mask = segment::mask::read_index_mask(&out_dir.join("0.png")).unwrap();
    assert_eq!((mask.width, mask.height), (56, 40));
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(unreadable.len(), 4);
    for (file, why) in unreadable {
        assert_named_once(&lines, "skipped: ", file, why, &err);
    }
}
