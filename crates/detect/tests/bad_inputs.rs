//! A YOLO data set with bad images and bad label lines next to good ones: `detect train`, `eval` and
//! `predict` exit 0, keep every good box, and name and count each problem (labels as file:line). A
//! train split without a usable image is a one-line error (exit 2). COCO problems go through
//! `detect convert`: bad annotations are dropped with their JSON path, a duplicate image id is fatal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use opencv::core::{Mat, Rect, Scalar, Vector};
use opencv::{imgcodecs, imgproc};
use serde_json::{Value, json};
use tlcv_testkit::{run, s, stderr};

type Box5 = (usize, i32, i32, i32, i32); // class, x, y, w, h in pixels of a 96x96 image

/// Bad lines of `badlines.txt` (its lines 2..=7, between two good ones) and the reason reported.
const BAD_LINES: [(&str, &str); 6] = [
    ("1 0.5 0.5 0.2", "expected 5 fields `class cx cy w h`, found 4"),
    ("1 0.5 0.5 0.2 0.2 0.9", "expected 5 fields `class cx cy w h`, found 6"),
    ("0 nan 0.5 0.2 0.2", "coordinates must be finite numbers"),
    ("0 -0.1 0.5 0.2 0.2", "is out of range"),
    ("1 0.5 1.5 0.2 0.2", "is out of range"),
    ("5 0.5 0.5 0.2 0.2", "unknown class id 5 (the data set has 2 classes)"),
];
const BADLINE_BOXES: [Box5; 2] = [(0, 10, 10, 30, 24), (1, 50, 50, 30, 30)];

fn detect(args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_detect")).args(args))
}

/// A 96x96 image with the filled boxes, encoded as `ext`.
fn encode(ext: &str, boxes: &[Box5]) -> Vec<u8> {
    let mut m = Mat::new_rows_cols_with_default(96, 96, opencv::core::CV_8UC3, Scalar::all(200.0)).unwrap();
    for &(c, x, y, w, h) in boxes {
        let bgr = if c == 0 { Scalar::new(0.0, 0.0, 255.0, 0.0) } else { Scalar::new(255.0, 0.0, 0.0, 0.0) };
        imgproc::rectangle(&mut m, Rect::new(x, y, w, h), bgr, -1, imgproc::LINE_8, 0).unwrap();
    }
    let mut buf = Vector::<u8>::new();
    imgcodecs::imencode(ext, &m, &mut buf, &Vector::new()).unwrap();
    buf.as_slice().to_vec()
}

fn line((c, x, y, w, h): Box5) -> String {
    let f = |v: i32| f64::from(v) / 96.0;
    format!("{c} {:.6} {:.6} {:.6} {:.6}\n", f(x) + f(w) / 2.0, f(y) + f(h) / 2.0, f(w), f(h))
}

/// Writes `images/<split>/<name>` and, when given, its label file.
fn put(root: &Path, split: &str, name: &str, bytes: &[u8], label: Option<&str>) -> PathBuf {
    let img = root.join("images").join(split).join(name);
    let lbl = root.join("labels").join(split).join(Path::new(name).with_extension("txt"));
    for d in [img.parent().unwrap(), lbl.parent().unwrap()] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(&img, bytes).unwrap();
    if let Some(l) = label {
        std::fs::write(lbl, l).unwrap();
    }
    img
}

fn good_boxes(i: i32) -> Vec<Box5> {
    let boxes = [(0, (i % 2) as usize), (1, ((i + 1) % 2) as usize)];
    let n = 1 + (i % 2) as usize;
    boxes[..n].iter().map(|&(k, c)| (c, 8 + 44 * k + (i * 3) % 10, 10 + (i * 7) % 30, 30, 24 + i % 8)).collect()
}

/// Good images `00..09` (train) and `10..13` (val), plus every bad input. Returns the bad image files.
fn dataset(root: &Path) -> Vec<PathBuf> {
    for i in 0..14 {
        let split = if i < 10 { "train" } else { "val" };
        let b = good_boxes(i);
        let label: String = b.iter().map(|&x| line(x)).collect();
        put(root, split, &format!("{i:02}.png"), &encode(".png", &b), Some(&label));
    }
    let jpeg = encode(".jpg", &[BADLINE_BOXES[0]]);
    let good = line(BADLINE_BOXES[0]);
    let mut bad = Vec::new();
    for split in ["train", "val"] {
        bad.push(put(root, split, "zero.jpg", b"", Some(&good)));
        bad.push(put(root, split, "text.jpg", b"just some notes\n", Some(&good)));
        // The truncated header still gives the size, so it is indexed with its box and fails at decoding.
        bad.push(put(root, split, "truncated.jpg", &jpeg[..jpeg.len() / 2], Some(&good)));
        let lines: Vec<String> = BAD_LINES.iter().map(|(l, _)| format!("{l}\n")).collect();
        let text = line(BADLINE_BOXES[0]) + &lines.concat() + &line(BADLINE_BOXES[1]);
        put(root, split, "badlines.png", &encode(".png", &BADLINE_BOXES), Some(&text));
    }
    put(root, "val", "empty.png", &encode(".png", &[]), Some(""));
    put(root, "val", "nolabel.png", &encode(".png", &[BADLINE_BOXES[1]]), None);
    std::fs::write(root.join("data.yaml"), "train: images/train\nval: images/val\nnames: [red, blue]\n").unwrap();
    bad
}

fn train_args<'a>(data: &'a Path, project: &'a Path) -> Vec<&'a str> {
    let tiny = "train --name t --img-size 64 --epochs 1 --batch 4 --strategy scratch --weights none \
                --backbone resnet18 --set model.neck_channels=32 --set eval.grid_images=2 --json";
    let mut a: Vec<&str> = tiny.split_whitespace().collect();
    a.extend(["--data", s(data), "--project", s(project)]);
    a
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

#[test]
fn yolo_bad_inputs_are_named_counted_and_good_boxes_used() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, project) = (tmp.path().join("data"), tmp.path().join("runs"));
    let bad = dataset(&data);
    // Mosaic on every sample, so the truncated image is often drawn as a partner: that must not cost
    // the main image its turn.
    let mut args = train_args(&data, &project);
    args.extend(["--set", "augment.mosaic=1.0", "--set", "augment.close_mosaic=0"]);
    let out = detect(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    serde_json::from_slice::<Value>(&out.stdout).expect("one JSON summary");
    // Kept: 10 good + truncated + badlines (train); 4 good + truncated + badlines + empty + nolabel (val).
    let objects: usize = (0..10).map(|i| good_boxes(i).len()).sum::<usize>() + 1 + 2;
    let val_objects: usize = (10..14).map(|i| good_boxes(i).len()).sum::<usize>() + 1 + 2;
    let counts = format!("12 train images / {objects} objects, 8 val images / {val_objects} objects");
    assert!(err.contains(&counts), "expected `{counts}` in:\n{err}");
    assert!(err.contains("labels: 12 box(es) dropped, 1 image(s) without labels, 4 image(s) dropped"), "{err}");

    let run = project.join("detect/t");
    // Every readable training image was trained on: the 12 kept minus the truncated one.
    let csv = std::fs::read_to_string(run.join("results.csv")).expect("results.csv");
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "samples").expect("samples column");
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row[col], "11", "{csv}");
    let issues = std::fs::read_to_string(run.join("issues.txt")).expect("issues.txt");
    assert_eq!(issues.lines().count(), 12 + 1 + 4, "{issues}");
    for split in ["train", "val"] {
        let lbl = data.join("labels").join(split).join("badlines.txt");
        for (k, (_, why)) in BAD_LINES.iter().enumerate() {
            let at = format!("{}:{}: ", lbl.display(), k + 2);
            let hit: Vec<&str> = issues.lines().filter(|l| l.starts_with(&at)).collect();
            assert!(hit.len() == 1 && hit[0].contains(why), "{at}{why} not in:\n{issues}");
        }
        for name in ["zero.jpg", "text.jpg"] {
            let msg = format!(
                "{}: not a readable JPEG/PNG/BMP/WebP image",
                data.join("images").join(split).join(name).display()
            );
            assert!(issues.lines().any(|l| l == msg), "{msg} not in:\n{issues}");
        }
    }
    // A missing label file is reported (image kept); an empty one is a valid background image.
    let missing =
        format!("{}: missing label file (image kept without objects)", data.join("labels/val/nolabel.txt").display());
    assert!(issues.lines().any(|l| l == missing), "{issues}");
    assert!(!issues.contains("empty.txt") && !issues.contains("empty.png"), "{issues}");

    // metrics.json: label drops, and every unreadable image (at indexing or decoding) named once.
    let m = read_json(&run.join("metrics.json"));
    assert_eq!(m["dropped_boxes"], 12, "{m}");
    assert_eq!(m["dropped_images"], 4, "{m}");
    assert_eq!(m["skipped"], 2, "{m}");
    assert_eq!(m["images"], 8, "{m}");
    let skipped: Vec<String> = m["skipped_files"]
        .as_array()
        .expect("skipped list")
        .iter()
        .map(|v| format!("{}: {}", v["file"].as_str().unwrap(), v["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(skipped.len(), 2, "{m}");
    for split in ["train", "val"] {
        let t = format!(
            "{}: cannot decode: truncated JPEG",
            data.join("images").join(split).join("truncated.jpg").display()
        );
        assert_eq!(skipped.iter().filter(|l| l.starts_with(&t)).count(), 1, "{t} in {skipped:?}");
        assert!(err.contains(&format!("skipped: {t}")), "{t} not on stderr");
    }

    // val_gt.json holds exactly the good val boxes; empty.png and nolabel.png are images without objects.
    // The unreadable truncated.jpg is left out with its box, so the model is not scored on it.
    let gt = read_json(&run.join("val_gt.json"));
    let files: BTreeSet<(i64, String)> = gt["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_i64().unwrap(), i["file_name"].as_str().unwrap().to_string()))
        .collect();
    let names: BTreeSet<&str> = files.iter().map(|(_, n)| n.as_str()).collect();
    let want_names: BTreeSet<&str> =
        "10.png 11.png 12.png 13.png badlines.png empty.png nolabel.png".split(' ').collect();
    assert_eq!(names, want_names);
    let name_of = |id: i64| files.iter().find(|(i, _)| *i == id).unwrap().1.clone();
    let got: BTreeSet<(String, i64, [i64; 4])> = gt["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let b: Vec<i64> =
                a["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap().round() as i64).collect();
            (name_of(a["image_id"].as_i64().unwrap()), a["category_id"].as_i64().unwrap(), [b[0], b[1], b[2], b[3]])
        })
        .collect();
    let mut want = BTreeSet::new();
    let boxes = (10..14)
        .map(|i| (format!("{i:02}.png"), good_boxes(i)))
        .chain([("badlines.png".into(), BADLINE_BOXES.to_vec())]);
    for (name, bs) in boxes {
        for (c, x, y, w, h) in bs {
            want.insert((name.clone(), c as i64 + 1, [x, y, w, h].map(i64::from)));
        }
    }
    assert_eq!(got, want);

    // eval: exit 0, the val truncated image named, label problems summarised.
    let out = detect(&["eval", "--run", s(&run), "--json"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    serde_json::from_slice::<Value>(&out.stdout).expect("eval JSON");
    let t = format!("skipped: {}: cannot decode: truncated JPEG", data.join("images/val/truncated.jpg").display());
    assert_eq!(err.matches(&t).count(), 1, "{err}");
    assert!(err.contains("labels: 12 box(es) dropped, 1 image(s) without labels, 4 image(s) dropped"), "{err}");

    // predict: good and odd-but-decodable images answered, each bad one named with its reason.
    let cmyk = data.join("cmyk.jpg");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/data/cmyk.jpg"), &cmyk).unwrap();
    let good = [data.join("images/val/10.png"), cmyk];
    let mut args = vec!["predict", "--run", s(&run), "--conf", "0.0", "--json"];
    args.extend(good.iter().chain(&bad[..3]).map(|p| s(p)));
    let out = detect(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let answered: Vec<&str> = lines.iter().map(|l| l["image"].as_str().unwrap()).collect();
    assert_eq!(answered, good.iter().map(|p| s(p)).collect::<Vec<_>>());
    for (p, why) in bad[..3].iter().zip([
        "empty file (0 bytes)",
        "not a supported image: the content is text",
        "cannot decode: truncated JPEG",
    ]) {
        let want = format!("skipped: {}: {why}", p.display());
        assert_eq!(err.lines().filter(|l| l.starts_with(&want)).count(), 1, "{want} not in:\n{err}");
    }
}

#[test]
fn no_usable_training_image_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    dataset(&data);
    let train = data.join("images/train");
    for e in std::fs::read_dir(&train).unwrap() {
        let p = e.unwrap().path();
        if !["zero.jpg", "text.jpg", "truncated.jpg"].contains(&p.file_name().unwrap().to_str().unwrap()) {
            std::fs::remove_file(p).unwrap();
        }
    }
    let run = |project: &str, why: &str| {
        let out = detect(&train_args(&data, &tmp.path().join(project)));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert_eq!(err.lines().last(), Some(errors[0]));
        assert!(errors[0].contains(why), "`{why}` not in {}", errors[0]);
        err
    };
    // Only the truncated file has a readable header: it fails at decoding, and is named above the error.
    let err = run("runs1", "no training sample could be loaded");
    let t = format!("skipped: {}: cannot decode: truncated JPEG", train.join("truncated.jpg").display());
    assert!(err.contains(&t), "{err}");
    // Nothing readable at all: the error names a dropped file and why.
    std::fs::remove_file(train.join("truncated.jpg")).unwrap();
    let why = format!("{}: not a readable JPEG/PNG/BMP/WebP image", train.join("text.jpg").display());
    run(
        "runs2",
        &format!("no training images (6 box(es) dropped, 1 image(s) without labels, 4 image(s) dropped; first: {why})"),
    );
}

/// COCO: a box outside its image, a missing `bbox`, an unknown category, an unknown image id and an
/// image without `file_name` are dropped and named by JSON path; a duplicate image id is fatal.
#[test]
fn coco_problems_are_dropped_with_their_json_path_or_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("coco");
    for (split, name) in [("train", "a.png"), ("train", "b.png"), ("val", "c.png")] {
        std::fs::create_dir_all(root.join("images").join(split)).unwrap();
        std::fs::write(root.join("images").join(split).join(name), encode(".png", &[])).unwrap();
    }
    std::fs::create_dir_all(root.join("annotations")).unwrap();
    let cats = json!([{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]);
    let ann =
        |id: i64, img: i64, cat: i64, bbox: Value| json!({"id": id, "image_id": img, "category_id": cat, "bbox": bbox});
    let train = json!({
        "categories": cats,
        "images": [{"id": 1, "file_name": "a.png", "width": 96, "height": 96}, {"id": 2, "file_name": "b.png"}, {"id": 3}],
        "annotations": [
            ann(1, 1, 1, json!([10, 10, 30, 20])),
            ann(2, 1, 2, json!([80, 80, 40, 40])),
            json!({"id": 3, "image_id": 2, "category_id": 1}),
            ann(4, 2, 7, json!([5, 5, 20, 20])),
            ann(5, 99, 1, json!([5, 5, 20, 20])),
            ann(6, 2, 2, json!([5, 5, 20, 20])),
        ],
    });
    let mut val = json!({
        "categories": cats,
        "images": [{"id": 1, "file_name": "c.png", "width": 96, "height": 96}],
        "annotations": [ann(1, 1, 1, json!([1, 2, "x", 4])), ann(2, 1, 2, json!([40, 40, 20, 20]))],
    });
    let write = |split: &str, v: &Value| {
        std::fs::write(root.join(format!("annotations/instances_{split}.json")), v.to_string()).unwrap()
    };
    write("train", &train);
    write("val", &val);
    let (tj, vj) = (root.join("annotations/instances_train.json"), root.join("annotations/instances_val.json"));
    let out_dir = tmp.path().join("yolo");
    let out = detect(&["convert", "--from", "coco", "--to", "yolo", s(&root), s(&out_dir)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("labels: 5 box(es) dropped, 0 image(s) without labels, 1 image(s) dropped"), "{err}");
    for (file, at, why) in [
        (&tj, "images[2]", "needs an integer `id` and a string `file_name`; image dropped"),
        (&tj, "annotations[1].bbox", "box [80.0, 80.0, 120.0, 120.0] lies outside the 96x96 image"),
        (&tj, "annotations[2].bbox", "expected [x, y, w, h] of 4 numbers"),
        (&tj, "annotations[3].category_id", "missing, not an integer or an unknown category"),
        (&tj, "annotations[4].image_id", "missing, not an integer or not a listed image"),
        (&vj, "annotations[0].bbox", "expected [x, y, w, h] of 4 numbers"),
    ] {
        let want = format!("  {}: at {at}: {why}", file.display());
        assert!(err.lines().any(|l| l == want), "`{want}` not in:\n{err}");
    }
    // The good boxes survive, one per image.
    for (lbl, b) in
        [("train/a.txt", (0, 10, 10, 30, 20)), ("train/b.txt", (1, 5, 5, 20, 20)), ("val/c.txt", (1, 40, 40, 20, 20))]
    {
        assert_eq!(std::fs::read_to_string(out_dir.join("labels").join(lbl)).unwrap(), line(b), "{lbl}");
    }
    // A duplicate image id stops the read: exit 2, one line with the JSON path.
    val["images"].as_array_mut().unwrap().push(json!({"id": 1, "file_name": "c.png", "width": 96, "height": 96}));
    write("val", &val);
    let out = detect(&["convert", "--from", "coco", "--to", "yolo", s(&root), s(&tmp.path().join("yolo2"))]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.lines().last(),
        Some(format!("error: {}: at images[1].id: duplicate image id 1", vj.display()).as_str()),
        "{err}"
    );
}
