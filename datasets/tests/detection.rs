//! The embedded detection data set on the real Debian data: determinism, the YOLO labels and the
//! COCO JSON describing the same boxes, boxes inside the images, 1-6 objects per image.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use tlcv_datasets::detection::{CLASSES, ClassSet, DetectionSpec, generate};

fn debdata() -> PathBuf {
    let dir = std::env::var_os("TLCV_DEBDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tlcv/debdata"));
    assert!(dir.join(".done").is_file(), "Debian data missing at {}: run `cargo xtask setup` first", dir.display());
    dir
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn detection_set_is_deterministic_and_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = DetectionSpec { train: 8, val: 4, size: 128, max_objects: 6, seed: 5, ..Default::default() };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let s = generate(&a, &debdata(), &spec).unwrap();
    generate(&b, &debdata(), &spec).unwrap();
    assert_eq!((s.train, s.val), (8, 4));
    assert_eq!(files(&a), files(&b), "same seed, same bytes");
    let yaml = std::fs::read_to_string(a.join("data.yaml")).unwrap();
    assert!(yaml.contains(&format!("nc: {}", CLASSES.len())) && yaml.contains("digit_4"));
    for (split, n) in [("train", 8), ("val", 4)] {
        let coco: Value = serde_json::from_str(
            &std::fs::read_to_string(a.join(format!("annotations/instances_{split}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(coco["images"].as_array().unwrap().len(), n);
        assert_eq!(coco["categories"].as_array().unwrap().len(), CLASSES.len());
        for (i, img) in coco["images"].as_array().unwrap().iter().enumerate() {
            let name = img["file_name"].as_str().unwrap();
            assert!(a.join("images").join(split).join(name).is_file());
            let id = img["id"].as_i64().unwrap();
            let anns: Vec<&Value> =
                coco["annotations"].as_array().unwrap().iter().filter(|x| x["image_id"].as_i64() == Some(id)).collect();
            assert!((1..=6).contains(&anns.len()), "image {i}: {} objects", anns.len());
            let label =
                std::fs::read_to_string(a.join("labels").join(split).join(name.replace(".jpg", ".txt"))).unwrap();
            let lines: Vec<Vec<f64>> =
                label.lines().map(|l| l.split(' ').map(|v| v.parse().unwrap()).collect()).collect();
            assert_eq!(lines.len(), anns.len());
            for (l, ann) in lines.iter().zip(&anns) {
                let bb: Vec<f64> = ann["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                assert_eq!(l[0] as i64 + 1, ann["category_id"].as_i64().unwrap());
                let s = 128.0;
                assert!(
                    (l[1] * s - (bb[0] + bb[2] / 2.0)).abs() < 0.02 && (l[3] * s - bb[2]).abs() < 0.02,
                    "{l:?} vs {bb:?}"
                );
                assert!(
                    bb[0] >= 0.0
                        && bb[1] >= 0.0
                        && bb[0] + bb[2] <= s
                        && bb[1] + bb[3] <= s
                        && bb[2] >= 2.0
                        && bb[3] >= 2.0
                );
            }
        }
    }
}

#[test]
fn shapes_and_digits_are_two_class_sets() {
    let tmp = tempfile::tempdir().unwrap();
    for (set, nc, first) in [(ClassSet::Shapes, 6, "circle"), (ClassSet::Digits, 10, "digit_0")] {
        let spec = DetectionSpec { train: 6, val: 2, size: 128, classes: set, ..Default::default() };
        let dir = tmp.path().join(set.suffix().trim_start_matches('-'));
        let s = generate(&dir, &debdata(), &spec).unwrap();
        assert_eq!((s.classes.len(), s.classes[0].as_str()), (nc, first));
        let yaml = std::fs::read_to_string(dir.join("data.yaml")).unwrap();
        assert!(yaml.contains(&format!("nc: {nc}")), "{yaml}");
        let coco: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("annotations/instances_train.json")).unwrap())
                .unwrap();
        let ids: Vec<i64> =
            coco["annotations"].as_array().unwrap().iter().map(|a| a["category_id"].as_i64().unwrap()).collect();
        assert!(!ids.is_empty() && ids.iter().all(|&c| (1..=nc as i64).contains(&c)), "{ids:?}");
    }
}
