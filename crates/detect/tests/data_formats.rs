//! YOLO and COCO readers (validation with file:line / JSON path), `data.yaml` parsing, the writers
//! and the converter round trip.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use detect::config::DataFormat;
use detect::data::{self, DetImage, Issues, Object, coco, convert, yolo};
use opencv::core::{Mat, Scalar, Vector};
use opencv::imgcodecs;

/// Writes a `w x h` grey PNG.
fn write_png(path: &Path, w: i32, h: i32) {
    let m = Mat::new_rows_cols_with_default(h, w, opencv::core::CV_8UC3, Scalar::all(90.0)).unwrap();
    let mut buf = Vector::<u8>::new();
    imgcodecs::imencode(".png", &m, &mut buf, &Vector::new()).unwrap();
    std::fs::write(path, buf.as_slice()).unwrap();
}

fn close(a: [f64; 4], b: [f64; 4], tol: f64) -> bool {
    a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= tol)
}

#[test]
fn yolo_labels_are_validated_with_file_and_line() {
    let path = PathBuf::from("labels/train/a.txt");
    let text = "0 0.5 0.5 0.2 0.4\n\
                1 0.5 0.5 0.2\n\
                7 0.5 0.5 0.2 0.2\n\
                0 nan 0.5 0.2 0.2\n\
                0 0.5 0.5 0 0.2\n\
                0 1.5 0.5 0.2 0.2\n\
                0 0.05 0.5 0.2 0.2\n\
                x 0.5 0.5 0.2 0.2\n\
                \n\
                1 0.25 0.75 0.5 0.5\n";
    let mut issues = Issues::default();
    let objs = yolo::parse_labels(text, &path, (200, 100), 2, &mut issues);
    assert_eq!(objs.len(), 2, "{objs:?}");
    assert_eq!(objs[0], Object { class: 0, bbox: [80.0, 30.0, 120.0, 70.0] });
    assert_eq!(objs[1], Object { class: 1, bbox: [0.0, 50.0, 100.0, 100.0] });
    assert_eq!(issues.dropped_boxes, 7);
    let m = &issues.messages;
    assert!(m[0].starts_with("labels/train/a.txt:2:") && m[0].contains("5 fields"), "{m:?}");
    assert!(m[1].contains(":3:") && m[1].contains("unknown class id 7"), "{m:?}");
    assert!(m[2].contains(":4:") && m[2].contains("finite"), "{m:?}");
    assert!(m[3].contains(":5:") && m[3].contains("out of range"), "{m:?}");
    assert!(m[4].contains(":6:") && m[4].contains("out of range"), "{m:?}");
    assert!(m[5].contains(":7:") && m[5].contains("outside"), "{m:?}");
    assert!(m[6].contains(":8:") && m[6].contains("class id"), "{m:?}");
}

#[test]
fn degenerate_boxes_are_dropped() {
    let mut issues = Issues::default();
    // 0.002 * 100 px = 0.2 px high.
    let objs = yolo::parse_labels("0 0.5 0.5 0.5 0.002\n", Path::new("l.txt"), (100, 100), 1, &mut issues);
    assert!(objs.is_empty());
    assert!(issues.messages[0].contains("degenerate"), "{:?}", issues.messages);
}

#[test]
fn data_yaml_subset() {
    let p = Path::new("/data/set/data.yaml");
    let flow = yolo::parse_data_yaml(
        "path: .  # root\ntrain: images/train\nval: images/val\nnc: 2\nnames: [cat, 'dog # 2']\n",
        p,
    )
    .unwrap();
    assert_eq!(flow.names, vec!["cat", "dog # 2"]);
    assert_eq!(flow.root, PathBuf::from("/data/set/."));
    assert_eq!(flow.train, "images/train");
    let block = yolo::parse_data_yaml("train: a\nval: b\nnames:\n  - x\n  - \"y\"\n", p).unwrap();
    assert_eq!(block.names, vec!["x", "y"]);
    let map = yolo::parse_data_yaml("train: a\nval: b\nnames:\n  1: y\n  0: x\ndownload: |\n  echo\n", p).unwrap();
    assert_eq!(map.names, vec!["x", "y"]);
    let err = yolo::parse_data_yaml("train: a\nval: b\nnc: 3\nnames: [a, b]\n", p).unwrap_err().to_string();
    assert!(err.contains("nc = 3"), "{err}");
    let err = yolo::parse_data_yaml("train: a\nnames: [a]\n", p).unwrap_err().to_string();
    assert!(err.contains("no `val`"), "{err}");
}

/// A YOLO data set: train has a normal image, an empty label file and a missing one; val one image.
fn yolo_fixture(root: &Path) {
    for split in ["train", "val"] {
        std::fs::create_dir_all(root.join("images").join(split)).unwrap();
        std::fs::create_dir_all(root.join("labels").join(split)).unwrap();
    }
    write_png(&root.join("images/train/a.png"), 200, 100);
    write_png(&root.join("images/train/b.png"), 64, 64);
    write_png(&root.join("images/train/c.png"), 64, 48);
    write_png(&root.join("images/val/d.png"), 100, 100);
    std::fs::write(root.join("labels/train/a.txt"), "0 0.5 0.5 0.2 0.4\n1 0.25 0.75 0.5 0.5\n2 0.5 0.5 0.1 0.1\n")
        .unwrap();
    std::fs::write(root.join("labels/train/b.txt"), "").unwrap();
    std::fs::write(root.join("labels/val/d.txt"), "1 0.3 0.3 0.2 0.2\n").unwrap();
    std::fs::write(root.join("data.yaml"), "path: .\ntrain: images/train\nval: images/val\nnames: [red, blue]\n")
        .unwrap();
}

#[test]
fn yolo_dataset_reads_empty_and_missing_labels() {
    let dir = tempfile::tempdir().unwrap();
    yolo_fixture(dir.path());
    let ds = data::load(dir.path(), DataFormat::Auto).unwrap();
    assert_eq!(ds.names, vec!["red", "blue"]);
    assert_eq!(ds.train.len(), 3);
    let by_name = |n: &str| ds.train.iter().find(|i| i.path.ends_with(n)).unwrap();
    assert_eq!(by_name("a.png").objects.len(), 2); // class 2 unknown: dropped
    assert_eq!((by_name("a.png").width, by_name("a.png").height), (200, 100));
    assert!(by_name("b.png").objects.is_empty());
    assert!(by_name("c.png").objects.is_empty());
    assert_eq!(ds.issues.missing_labels, 1);
    assert_eq!(ds.issues.dropped_boxes, 1);
    assert!(
        ds.issues.messages.iter().any(|m| m.contains("c.txt") && m.contains("missing label file")),
        "{:?}",
        ds.issues.messages
    );
    assert!(ds.issues.messages.iter().any(|m| m.contains("a.txt:3") && m.contains("unknown class id 2")));
    assert_eq!(ds.val[0].objects, vec![Object { class: 1, bbox: [20.0, 20.0, 40.0, 40.0] }]);
}

#[test]
fn coco_annotations_are_validated_with_json_path() {
    let dir = tempfile::tempdir().unwrap();
    write_png(&dir.path().join("x.png"), 50, 40);
    let json = r#"{"images": [{"id": 3, "file_name": "x.png"}, {"id": 4, "width": 10}],
        "categories": [{"id": 7, "name": "b"}, {"id": 2, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 7, "bbox": [1, 2, 10, 20]},
            {"id": 2, "image_id": 3, "category_id": 9, "bbox": [1, 2, 10, 20]},
            {"id": 3, "image_id": 3, "category_id": 2, "bbox": [45, 2, 10, 20]},
            {"id": 4, "image_id": 3, "category_id": 2, "bbox": [1, 2, "w", 20]},
            {"id": 5, "image_id": 99, "category_id": 2, "bbox": [1, 2, 3, 4]},
            {"id": 6, "image_id": 3, "category_id": 2, "bbox": [5, 5, 0, 4]},
            {"id": 7, "image_id": 3, "category_id": 2, "bbox": [0, 0, 50, 40]}]}"#;
    let jp = dir.path().join("instances_train.json");
    std::fs::write(&jp, json).unwrap();
    let (names, images, issues) = coco::read_split(&jp, dir.path()).unwrap();
    assert_eq!(names, vec!["a", "b"]); // sorted by category id
    assert_eq!(images.len(), 1, "image 4 has no file_name");
    assert_eq!((images[0].width, images[0].height), (50, 40), "size read from the file header");
    assert_eq!(
        images[0].objects,
        vec![Object { class: 1, bbox: [1.0, 2.0, 11.0, 22.0] }, Object { class: 0, bbox: [0.0, 0.0, 50.0, 40.0] }]
    );
    assert_eq!(issues.dropped_boxes, 5);
    assert_eq!(issues.dropped_images, 1);
    let m = issues.messages.join("\n");
    for needle in [
        "at images[1]",
        "at annotations[1].category_id",
        "at annotations[2].bbox: box",
        "at annotations[3].bbox: expected",
        "at annotations[4].image_id",
        "at annotations[5].bbox: degenerate",
    ] {
        assert!(m.contains(needle), "missing {needle:?} in\n{m}");
    }
}

fn sorted(images: &[DetImage]) -> Vec<(String, Vec<Object>)> {
    let mut v: Vec<(String, Vec<Object>)> = images
        .iter()
        .map(|i| (i.path.file_name().unwrap().to_string_lossy().into_owned(), i.objects.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn converter_round_trip_yolo_coco_yolo() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("yolo");
    yolo_fixture(&src);
    let original = data::load(&src, DataFormat::Yolo).unwrap();
    let (_, issues) = convert::convert(DataFormat::Yolo, DataFormat::Coco, &src, &dir.path().join("coco")).unwrap();
    assert_eq!(issues.dropped_boxes, 1);
    let as_coco = data::load(&dir.path().join("coco"), DataFormat::Auto).unwrap();
    assert!(dir.path().join("coco/annotations/instances_val.json").is_file());
    assert_eq!(as_coco.names, original.names);
    convert::convert(DataFormat::Coco, DataFormat::Yolo, &dir.path().join("coco"), &dir.path().join("back")).unwrap();
    let back = data::load(&dir.path().join("back"), DataFormat::Auto).unwrap();
    assert_eq!(back.names, original.names);
    for (a, b) in [(&original.train, &back.train), (&original.val, &back.val), (&original.train, &as_coco.train)] {
        let (a, b) = (sorted(a), sorted(b));
        assert_eq!(a.len(), b.len());
        for ((na, oa), (nb, ob)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert_eq!(oa.len(), ob.len(), "{na}");
            for (x, y) in oa.iter().zip(ob) {
                assert_eq!(x.class, y.class);
                assert!(close(x.bbox, y.bbox, 1e-3), "{na}: {:?} vs {:?}", x.bbox, y.bbox);
            }
        }
    }
    // The labels written back are the same text as a fresh write of the originals.
    let a = std::fs::read_to_string(dir.path().join("back/labels/val/d.txt")).unwrap();
    assert_eq!(a, "1 0.300000 0.300000 0.200000 0.200000\n");
    let err =
        convert::convert(DataFormat::Yolo, DataFormat::Coco, &src, &dir.path().join("coco")).unwrap_err().to_string();
    assert!(err.contains("not empty"), "{err}");
}
