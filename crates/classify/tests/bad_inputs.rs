//! A data set holding every kind of bad input next to good images: training (with and without the
//! feature cache), `eval` and `predict` finish with exit 0, use every decodable image (odd formats
//! included), and name each bad file exactly once with its reason, in `metrics.json`, in the `eval`
//! JSON and on stderr. A data set without any usable training image stops with one error line.

#![allow(clippy::panic)]

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use opencv::{core, imgproc, prelude::*};
use support::{classify, drawing, run, stderr, two_class_folder, write};

/// The pixel limit given with `--set data.max_pixels`: every good image is below it, `huge.png` above.
const MAX_PIXELS: u64 = 4000;

/// Bad files and the reason each must be reported with.
const BAD: [(&str, &str); 6] = [
    ("zero.jpg", "empty file"),
    ("truncated.jpg", "truncated JPEG"),
    ("text.jpg", "the content is text"),
    ("text.png", "the content is text"),
    ("huge.png", "over the limit of 4000 pixels"),
    ("crafted_header.png", "over the limit of 4000 pixels"),
];

/// Decodable oddities that must be used like any image.
const ODD: [&str; 10] = [
    "png_named.jpg",
    "cmyk.jpg",
    "exif6.jpg",
    "sixteen_bit.png",
    "palette.png",
    "grey.png",
    "grey.jpg",
    "rgba.png",
    "one_pixel.png",
    "elongated.png",
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/data").join(name)
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A PNG written by hand: `color_type` 3 (palette) with `plte`, rows of filter 0, stored deflate blocks.
fn raw_png(width: u32, height: u32, color_type: u8, plte: Option<&[u8]>, pixels: &[u8]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, color_type, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    if let Some(p) = plte {
        png_chunk(&mut out, b"PLTE", p);
    }
    let row = pixels.len() / height as usize;
    let mut raw = Vec::new();
    for r in pixels.chunks(row) {
        raw.push(0);
        raw.extend_from_slice(r);
    }
    // zlib: header, one final stored block (fits: < 65536 bytes), Adler-32.
    let mut z = vec![0x78, 0x01, 0x01];
    let len = raw.len() as u16;
    z.extend_from_slice(&len.to_le_bytes());
    z.extend_from_slice(&(!len).to_le_bytes());
    z.extend_from_slice(&raw);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    png_chunk(&mut out, b"IDAT", &z);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

fn convert(mat: &core::Mat, code: i32) -> core::Mat {
    let mut out = core::Mat::default();
    imgproc::cvt_color_def(mat, &mut out, code).unwrap_or_else(|e| panic!("{e}"));
    out
}

fn bytes(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Writes every bad and odd file into `dir` (a class folder), drawn as `class`.
fn write_specimens(dir: &Path, class: usize) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    let img = drawing(class, 3, 40, 40);
    // Bad ones.
    bytes(&dir.join("zero.jpg"), b"");
    let mut jpeg = core::Vector::<u8>::new();
    opencv::imgcodecs::imencode(".jpg", &img, &mut jpeg, &core::Vector::new()).unwrap_or_else(|e| panic!("{e}"));
    let jpeg = jpeg.to_vec();
    bytes(&dir.join("truncated.jpg"), &jpeg[..jpeg.len() / 2]);
    bytes(&dir.join("text.jpg"), b"this is not a picture\nbut a note saved with the wrong name\n");
    bytes(&dir.join("text.png"), "<html><body>404 – not found</body></html>\n".as_bytes());
    write(&dir.join("huge.png"), &drawing(class, 1, 100, 100), &[]);
    // A valid 8x8 grey PNG whose header claims 100000 x 100000 pixels.
    let mut crafted = raw_png(8, 8, 0, None, &[128; 64]);
    crafted[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    crafted[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    bytes(&dir.join("crafted_header.png"), &crafted);
    // Odd but decodable ones.
    let mut png = core::Vector::<u8>::new();
    opencv::imgcodecs::imencode(".png", &img, &mut png, &core::Vector::new()).unwrap_or_else(|e| panic!("{e}"));
    bytes(&dir.join("png_named.jpg"), png.as_slice());
    std::fs::copy(fixture("cmyk.jpg"), dir.join("cmyk.jpg")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(fixture("exif6.jpg"), dir.join("exif6.jpg")).unwrap_or_else(|e| panic!("{e}"));
    let mut wide = core::Mat::default();
    img.convert_to(&mut wide, core::CV_16UC3, 257.0, 0.0).unwrap_or_else(|e| panic!("{e}"));
    write(&dir.join("sixteen_bit.png"), &wide, &[]);
    // Palette: a 16x16 two-colour pattern (index 1 = the class colour).
    let plte = if class == 0 { [128, 128, 128, 220, 30, 30] } else { [128, 128, 128, 30, 40, 220] };
    let idx: Vec<u8> = (0..256).map(|i| u8::from((4..12).contains(&(i % 16)) && (4..12).contains(&(i / 16)))).collect();
    bytes(&dir.join("palette.png"), &raw_png(16, 16, 3, Some(&plte), &idx));
    let grey = convert(&img, imgproc::COLOR_BGR2GRAY);
    write(&dir.join("grey.png"), &grey, &[]);
    write(&dir.join("grey.jpg"), &grey, &[]);
    write(&dir.join("rgba.png"), &convert(&img, imgproc::COLOR_BGR2BGRA), &[]);
    write(&dir.join("one_pixel.png"), &drawing(class, 0, 1, 1), &[]);
    write(&dir.join("elongated.png"), &drawing(class, 0, 1000, 3), &[]);
}

/// The data set: good images in every split, the specimens in train/a, val/b and test/a.
fn dataset(root: &Path) -> (PathBuf, Vec<PathBuf>) {
    let data = two_class_folder(root, 40, &[("train", 6), ("val", 2), ("test", 3)]);
    let mut bad = Vec::new();
    for (split, class) in [("train", "a"), ("val", "b"), ("test", "a")] {
        let dir = data.join(split).join(class);
        write_specimens(&dir, usize::from(class == "b"));
        bad.extend(BAD.iter().map(|(name, _)| dir.join(name)));
    }
    (data, bad)
}

fn reason_for(path: &Path) -> &'static str {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    BAD.iter().find(|(n, _)| *n == name).map(|(_, r)| *r).unwrap_or_else(|| panic!("no reason for {name}"))
}

/// Each of `expected` appears in exactly one of `reported`, with its reason; nothing else is reported.
fn assert_reported_once(what: &str, reported: &[String], expected: &[PathBuf]) {
    assert_eq!(reported.len(), expected.len(), "{what}: {reported:#?}");
    for path in expected {
        let p = path.display().to_string();
        let hits: Vec<&String> = reported.iter().filter(|r| r.starts_with(&format!("{p}:"))).collect();
        assert_eq!(hits.len(), 1, "{what}: {p} reported {} times in {reported:#?}", hits.len());
        assert!(hits[0].contains(reason_for(path)), "{what}: wrong reason for {p}: {}", hits[0]);
    }
}

/// The `skipped_files` list of `metrics.json` or `--json` as `<file>: <reason>` lines.
fn skipped_lines(value: &serde_json::Value) -> Vec<String> {
    let line = |v: &serde_json::Value| Some(format!("{}: {}", v["file"].as_str()?, v["reason"].as_str()?));
    value["skipped_files"].as_array().map(|a| a.iter().filter_map(line).collect()).unwrap_or_default()
}

fn train(data: &Path, project: &Path, name: &str, extra: &[&str]) -> std::process::Output {
    let max = format!("data.max_pixels={MAX_PIXELS}");
    run(classify()
        .args(["train", "--preset", "quick", "--data"])
        .arg(data)
        .args(["--img-size", "32", "--epochs", "2", "--batch", "8", "--name", name, "--set", &max])
        .args(extra)
        .arg("--project")
        .arg(project))
}

#[test]
fn bad_inputs_are_skipped_and_named_once_good_ones_are_used() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (data, bad) = dataset(tmp.path());
    let project = tmp.path().join("runs");
    let test_bad: Vec<PathBuf> = bad.iter().filter(|p| p.starts_with(data.join("test"))).cloned().collect();
    // Test split: 3 good images per class plus every odd one.
    let test_usable = (2 * 3 + ODD.len()) as u64;

    for (name, extra) in [("nocache", vec!["--set", "model.feature_cache=false"]), ("cache", vec![])] {
        let out = train(&data, &project, name, &extra);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{name}: {err}");
        let run_dir = project.join("classify").join(name);
        let text = std::fs::read_to_string(run_dir.join("metrics.json")).unwrap_or_else(|e| panic!("{e}"));
        let metrics: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let skipped = skipped_lines(&metrics);
        assert_eq!(metrics["skipped"].as_u64(), Some(bad.len() as u64), "{name}: {text}");
        assert_reported_once(&format!("{name} metrics.json"), &skipped, &bad);
        for odd in ODD {
            assert!(
                !skipped.iter().any(|s| s.contains(&format!("/{odd}:"))),
                "{name}: {odd} was skipped: {skipped:#?}"
            );
        }
        // Every usable test image was evaluated; the bad ones are named on stderr.
        assert_eq!(metrics["samples"].as_u64(), Some(test_usable), "{name}: {text}");
        for path in &bad {
            assert!(err.contains(&format!("skipped: {}", path.display())), "{name}: {} not on stderr", path.display());
        }
        assert_eq!(support::results_rows(&run_dir), 2, "{name}: both epochs ran");
    }

    // eval: the test split's bad files, once each; every usable image evaluated.
    let run_dir = project.join("classify").join("nocache");
    let out = run(classify().args(["eval", "--run"]).arg(&run_dir).args(["--split", "test", "--json"]));
    assert_eq!(out.status.code(), Some(0), "eval: {}", stderr(&out));
    let eval: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(eval["skipped"].as_u64(), Some(test_bad.len() as u64), "{eval}");
    assert_reported_once("eval", &skipped_lines(&eval), &test_bad);
    let per_class_support: u64 =
        eval["per_class"].as_object().map_or(0, |m| m.values().filter_map(|c| c["support"].as_u64()).sum());
    assert_eq!(per_class_support, test_usable, "{eval}");

    // predict: one prediction per decodable file, a named reason for each bad one, exit 0.
    let test_a = data.join("test").join("a");
    let mut images: Vec<PathBuf> = ODD.iter().map(|n| test_a.join(n)).collect();
    images.extend(test_bad.iter().cloned());
    let out = run(classify().args(["predict", "--run"]).arg(&run_dir).arg("--json").args(&images));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "predict: {err}");
    let predicted: BTreeMap<String, f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .map(|v| (v["image"].as_str().unwrap_or_default().to_string(), v["top"][0]["prob"].as_f64().unwrap_or(-1.0)))
        .collect();
    assert_eq!(predicted.len(), ODD.len(), "{predicted:#?}");
    for odd in ODD {
        let prob = predicted.get(&test_a.join(odd).display().to_string()).copied();
        assert!(prob.is_some_and(|p| p.is_finite() && (0.0..=1.0).contains(&p)), "{odd}: {prob:?}");
    }
    for path in &test_bad {
        let line = err.lines().find(|l| l.starts_with(&format!("skipped: {}:", path.display())));
        assert!(line.is_some_and(|l| l.contains(reason_for(path))), "predict: {} not named: {err}", path.display());
    }
}

#[test]
fn no_usable_training_image_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = two_class_folder(tmp.path(), 40, &[("val", 2)]);
    for class in ["a", "b"] {
        let dir = data.join("train").join(class);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        bytes(&dir.join("zero.jpg"), b"");
        bytes(&dir.join("text.png"), b"not an image");
    }
    let project = tmp.path().join("runs");
    for (name, extra) in [("nocache", vec!["--set", "model.feature_cache=false"]), ("cache", vec![])] {
        let out = train(&data, &project, name, &extra);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{name}: {err}");
        assert!(lines[0].contains("could be loaded") && lines[0].contains("train"), "{name}: {}", lines[0]);
        // It names a skipped file and why.
        assert!(
            lines[0].contains("zero.jpg: empty file") || lines[0].contains("text.png: not a supported image"),
            "{name}: {}",
            lines[0]
        );
    }
}
