//! Replays `tests/fixtures/fuzz/{yolo_labels,coco_json}/` through the same calls and checks as the
//! cargo-fuzz targets `fuzz/fuzz_targets/{yolo_labels,coco_json}.rs`: hand-made hostile inputs plus
//! every input the fuzzers found. None may panic; every object that comes out lies inside its image
//! with a known class; `err-*` COCO files must be refused.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use detect::data::{DetImage, Issues, coco, yolo};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz").join(target);
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("fixture dir").filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no inputs", dir.display());
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

/// `b` lies inside a `(w, h)` image and `class` is below `classes`.
fn assert_inside(name: &str, (class, classes): (usize, usize), b: [f64; 4], (w, h): (f64, f64)) {
    assert!(class < classes, "{name}: class {class} of {classes}");
    assert!(b.iter().all(|v| v.is_finite()), "{name}: {b:?}");
    assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w && b[3] <= h, "{name}: {b:?} outside {w}x{h}");
    assert!(b[2] > b[0] && b[3] > b[1], "{name}: {b:?}");
}

#[test]
fn yolo_label_inputs() {
    let (mut dropped, mut kept, mut lines) = (0, 0, 0);
    for (name, data) in inputs("yolo_labels") {
        if data.len() < 5 {
            continue;
        }
        let w = u32::from(u16::from_le_bytes([data[0], data[1]])) + 1;
        let h = u32::from(u16::from_le_bytes([data[2], data[3]])) + 1;
        let nc = usize::from(data[4]);
        let text = String::from_utf8_lossy(&data[5..]);
        lines += text.lines().filter(|l| !l.trim().is_empty()).count();
        let mut issues = Issues::default();
        let objects = yolo::parse_labels(&text, Path::new(&name), (w, h), nc, &mut issues);
        for o in &objects {
            assert_inside(&name, (o.class, nc), o.bbox, (f64::from(w), f64::from(h)));
        }
        for m in &issues.messages {
            assert!(m.starts_with(&format!("{name}:")), "{name}: message without file and line: {m}");
        }
        dropped += issues.dropped_boxes;
        kept += objects.len();
        let _ = yolo::parse_data_yaml(&text, Path::new("data.yaml"));
    }
    // Every non-blank line is either a box or a reported drop; only good.txt's two lines are good.
    assert_eq!(kept + dropped, lines);
    assert_eq!(kept, 2);
}

#[test]
fn coco_json_inputs() {
    for (name, data) in inputs("coco_json") {
        let Ok(root) = serde_json::from_slice::<serde_json::Value>(&data) else { continue };
        let r = coco::parse_split(&root, Path::new(&name), Path::new("/nonexistent-tlcv-fuzz"));
        if name.starts_with("err-") {
            assert!(r.is_err(), "{name}: accepted");
            continue;
        }
        let (names, images, _issues): (Vec<String>, Vec<DetImage>, Issues) = r.expect("parse");
        for im in &images {
            for o in &im.objects {
                assert_inside(&name, (o.class, names.len()), o.bbox, (f64::from(im.width), f64::from(im.height)));
            }
        }
    }
}
