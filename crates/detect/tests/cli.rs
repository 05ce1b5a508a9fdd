//! End to end through the `detect` binary on a tiny generated data set: train (1 epoch, 64 px),
//! eval, predict, convert and evaluate, checking exit codes, the run directory and the JSON schemas.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use opencv::core::{Mat, Rect, Scalar, Vector};
use opencv::{imgcodecs, imgproc};
use serde_json::Value;
use tlcv_testkit::{ok_stdout, run};

fn detect(args: &[&str], cwd: &Path) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_detect")).args(args).current_dir(cwd))
}

/// The smallest training: one epoch at 64 px in batches of 5, from scratch.
const TINY_TRAINING: [&str; 10] =
    ["--img-size", "64", "--epochs", "1", "--batch", "5", "--strategy", "scratch", "--weights", "none"];

/// 10 training and 4 validation 96x96 images with one or two filled rectangles (class 0 red, 1 blue).
fn tiny_yolo(root: &Path) {
    for split in ["train", "val"] {
        std::fs::create_dir_all(root.join("images").join(split)).unwrap();
        std::fs::create_dir_all(root.join("labels").join(split)).unwrap();
    }
    for i in 0..14i32 {
        let split = if i < 10 { "train" } else { "val" };
        let mut m = Mat::new_rows_cols_with_default(96, 96, opencv::core::CV_8UC3, Scalar::all(200.0)).unwrap();
        let mut labels = String::new();
        for (k, class) in [(0, i % 2), (1, (i + 1) % 2)].into_iter().take(1 + (i % 2) as usize) {
            let (x, y, w, h) = (8 + 44 * k + (i * 3) % 10, 10 + (i * 7) % 30, 30, 24 + i % 8);
            let bgr = if class == 0 { Scalar::new(0.0, 0.0, 255.0, 0.0) } else { Scalar::new(255.0, 0.0, 0.0, 0.0) };
            imgproc::rectangle(&mut m, Rect::new(x, y, w, h), bgr, -1, imgproc::LINE_8, 0).unwrap();
            let f = |v: i32| v as f64 / 96.0;
            labels += &format!("{class} {:.6} {:.6} {:.6} {:.6}\n", f(x) + f(w) / 2.0, f(y) + f(h) / 2.0, f(w), f(h));
        }
        let mut buf = Vector::<u8>::new();
        imgcodecs::imencode(".png", &m, &mut buf, &Vector::new()).unwrap();
        std::fs::write(root.join(format!("images/{split}/{i:02}.png")), buf.as_slice()).unwrap();
        std::fs::write(root.join(format!("labels/{split}/{i:02}.txt")), labels).unwrap();
    }
    std::fs::write(root.join("data.yaml"), "train: images/train\nval: images/val\nnames: [red, blue]\n").unwrap();
}

/// The names of the twelve COCO numbers, as pycocotools' fixture output has them.
fn coco_keys() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coco/crowd/expected.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.as_object().unwrap().keys().cloned().collect()
}

fn assert_metrics(v: &Value) {
    for k in coco_keys().iter().map(String::as_str).chain(["precision", "recall"]) {
        let x = v[k].as_f64().unwrap_or_else(|| panic!("missing number {k} in {v}"));
        assert!((-1.0..=1.0).contains(&x), "{k} = {x}");
    }
}

#[test]
fn train_eval_predict_convert_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = root.join("data");
    tiny_yolo(&data);
    let data_s = data.to_str().unwrap();
    let extra = ["--name", "t", "--project", "runs", "--set", "model.neck_channels=32", "--set", "eval.grid_images=2"];
    let out = detect(&[&["train", "--data", data_s][..], &TINY_TRAINING, &extra, &["--json"]].concat(), root);
    let stdout = ok_stdout(&out);
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_metrics(&summary);
    let run = root.join("runs/detect/t");
    assert_eq!(summary["run_dir"].as_str().unwrap(), "runs/detect/t");
    for f in [
        "config.toml",
        "classes.json",
        "results.csv",
        "metrics.json",
        "report.html",
        "val_gt.json",
        "val_dets.json",
        "weights/last.safetensors",
        "plots/loss.png",
        "plots/pr_curves.png",
        "plots/confusion_matrix.png",
        "plots/val_predictions.png",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let csv = std::fs::read_to_string(run.join("results.csv")).unwrap();
    for col in ["box_loss", "cls_loss", "dfl_loss"] {
        assert!(csv.lines().next().unwrap().contains(col), "results.csv header lacks {col}: {csv}");
    }
    let metrics: Value = serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    assert_metrics(&metrics);
    assert_eq!(metrics["per_class"].as_array().unwrap().len(), 2);
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("data:image/png;base64"), "report embeds its plots");

    // eval --json
    let out = detect(&["eval", "--run", run.to_str().unwrap(), "--json"], root);
    let v: Value = serde_json::from_str(ok_stdout(&out).trim()).unwrap();
    assert_metrics(&v);

    // predict: JSON lines in original pixels and annotated images
    let imgs = [data.join("images/val/10.png"), data.join("images/val/11.png")];
    let pred_dir = root.join("pred");
    let out = detect(
        &[
            "predict",
            "--run",
            run.to_str().unwrap(),
            "--out",
            pred_dir.to_str().unwrap(),
            "--conf",
            "0.0",
            "--json",
            imgs[0].to_str().unwrap(),
            imgs[1].to_str().unwrap(),
        ],
        root,
    );
    let text = ok_stdout(&out);
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for (line, img) in lines.iter().zip(&imgs) {
        assert_eq!(line["image"].as_str().unwrap(), img.to_str().unwrap());
        let dets = line["detections"].as_array().unwrap();
        assert!(!dets.is_empty(), "conf 0 keeps detections");
        for d in dets {
            let b: Vec<f64> = d["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert_eq!(b.len(), 4);
            assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 96.0 && b[3] <= 96.0 && b[0] < b[2] && b[1] < b[3], "{b:?}");
            assert!(d["score"].as_f64().unwrap() >= 0.0);
            let idx = d["index"].as_u64().unwrap();
            assert_eq!(d["class"].as_str().unwrap(), ["red", "blue"][idx as usize]);
        }
    }
    assert!(pred_dir.join("10.jpg").is_file() && pred_dir.join("11.jpg").is_file());

    // evaluate: the 12 COCO numbers of the run's own files
    let out = detect(
        &[
            "evaluate",
            "--coco-gt",
            run.join("val_gt.json").to_str().unwrap(),
            "--coco-dets",
            run.join("val_dets.json").to_str().unwrap(),
            "--json",
        ],
        root,
    );
    let v: Value = serde_json::from_str(ok_stdout(&out).trim()).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 12);
    for k in coco_keys() {
        assert!((v[&k].as_f64().unwrap() - summary[&k].as_f64().unwrap()).abs() < 1e-9, "{k}");
    }

    // convert yolo -> coco
    let out = detect(&["convert", "--from", "yolo", "--to", "coco", data_s, root.join("coco").to_str().unwrap()], root);
    ok_stdout(&out);
    let coco: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("coco/annotations/instances_val.json")).unwrap())
            .unwrap();
    assert_eq!(coco["images"].as_array().unwrap().len(), 4);
    assert_eq!(coco["categories"][1]["name"], "blue");

    // User errors: exit code 2 with one line.
    for args in [
        vec!["eval", "--run", "/nonexistent/run"],
        vec!["train", "--data", "/nonexistent/data", "--project", "runs"],
        vec!["convert", "--from", "yolo", "--to", "coco", data_s, root.join("coco").to_str().unwrap()],
        vec![
            "train",
            "--data",
            data_s,
            "--img-size",
            "65",
            "--project",
            "runs",
            "--weights",
            "none",
            "--strategy",
            "scratch",
        ],
    ] {
        let out = detect(&args, root);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.lines().last().unwrap().starts_with("error: "), "{err}");
    }
}

/// `detect compare` trains YOLO, SSD and Faster R-CNN on the same tiny data (1 epoch, 64 px, from
/// scratch) and prints one table; each family's run then evaluates, predicts and exports through the
/// same commands, and logs its own loss terms.
#[test]
fn compare_trains_every_family_and_each_run_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = root.join("data");
    tiny_yolo(&data);
    let extra = ["--backbone", "resnet18", "--name", "c", "--project", "runs", "--set", "eval.grid_images=2", "--json"];
    let out = detect(&[&["compare", "--data", data.to_str().unwrap()][..], &TINY_TRAINING, &extra].concat(), root);
    let stdout = ok_stdout(&out);
    let table = std::fs::read_to_string(root.join("runs/detect/c-families.md")).unwrap();
    let rows: Vec<Value> = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(rows.len(), 3, "{stdout}");
    for (row, (family, terms)) in rows.iter().zip([
        ("yolo", &["box_loss", "cls_loss", "dfl_loss"][..]),
        ("ssd", &["bbox_regression", "classification"][..]),
        ("faster-rcnn", &["loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"][..]),
    ]) {
        assert_eq!(row["family"], family);
        assert!(table.contains(&format!("| {family} | resnet18 |")), "{table}");
        assert!(row["images_per_second"].as_f64().unwrap() > 0.0);
        assert!(row["params"].as_i64().unwrap() > 1_000_000, "{row}");
        let run = root.join(format!("runs/detect/c-{family}"));
        let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
        assert!(cfg.contains(&format!("family = \"{family}\"")), "{cfg}");
        let header = std::fs::read_to_string(run.join("results.csv")).unwrap();
        for t in terms {
            assert!(header.lines().next().unwrap().contains(t), "{family}: results.csv lacks {t}");
        }
        let v: Value =
            serde_json::from_str(ok_stdout(&detect(&["eval", "--run", run.to_str().unwrap(), "--json"], root)).trim())
                .unwrap();
        assert_metrics(&v);
        let img = data.join("images/val/10.png");
        let p = detect(
            &["predict", "--run", run.to_str().unwrap(), "--conf", "0.0", "--json", img.to_str().unwrap()],
            root,
        );
        let line: Value = serde_json::from_str(ok_stdout(&p).lines().next().unwrap()).unwrap();
        for d in line["detections"].as_array().unwrap() {
            let b: Vec<f64> = d["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 96.0 + 1e-3 && b[3] <= 96.0 + 1e-3, "{family}: {b:?}");
        }
        // Every family exports (Faster R-CNN with its NMS, unasked) and tract serves the file. The run may
        // predict in bf16 (`auto` precision), so only the best box is held to it here; onnx_export.rs
        // holds every box to float32 libtorch.
        ok_stdout(&detect(&["export", "--run", run.to_str().unwrap()], root));
        let onnx = run.join("weights/best.onnx");
        let args = ["predict", "--onnx", onnx.to_str().unwrap(), "--conf", "0.0", "--json", img.to_str().unwrap()];
        let got: Value = serde_json::from_str(ok_stdout(&detect(&args, root)).lines().next().unwrap()).unwrap();
        let (g, w) = (&got["detections"][0], &line["detections"][0]);
        assert_eq!(g["class"], w["class"], "{family}: {got} vs {line}");
        assert!((g["score"].as_f64().unwrap() - w["score"].as_f64().unwrap()).abs() < 2e-2, "{family}: {g} vs {w}");
    }
}

/// `--nproc-per-node 2` on 127.0.0.1: two ranks train their halves of the data (the YOLO-style network
/// on ImageNet Lite0, 64 px, 4 epochs: enough for a mAP above 0), rank 0 alone writes the run directory and prints the JSON summary,
/// and the validation split over the ranks (2 images per batch: one batch each) gives exactly the
/// metrics that one process's `detect eval` computes on the same checkpoint.
#[test]
fn two_local_ranks_train_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = root.join("data");
    tiny_yolo(&data);
    let port = tlcv_testkit::free_port();
    let launch = ["--nproc-per-node", "2", "--master-port", &port.to_string(), "--set", "train.dist_timeout=120"];
    let extra = ["--name", "dp", "--project", "runs", "--set", "model.neck_channels=32", "--json"];
    // Batch 1 per rank, so that validation (twice the batch) has two batches, one per rank.
    let training = ["--img-size", "64", "--epochs", "4", "--batch", "1"];
    let args = [&["train", "--data", data.to_str().unwrap()][..], &training, &extra, &launch].concat();
    let out = run(Command::new(env!("CARGO_BIN_EXE_detect")).args(args).current_dir(root).env("OMP_NUM_THREADS", "1"));
    let stdout = ok_stdout(&out);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one JSON summary, from rank 0: {stdout}");
    let summary: Value = serde_json::from_str(lines[0]).unwrap();
    assert_metrics(&summary);
    assert_eq!(tlcv_testkit::dir_names(&root.join("runs/detect")), ["dp"], "rank 1 wrote no run directory");
    let run_dir = root.join("runs/detect/dp");
    for f in ["config.toml", "metrics.json", "results.csv", "val_dets.json", "weights/last.safetensors"] {
        assert!(run_dir.join(f).is_file(), "missing {f}");
    }
    // Each rank trained half of the 10 images per epoch: 5 per rank, 10 in all (`samples`).
    let csv = std::fs::read_to_string(run_dir.join("results.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "samples").unwrap();
    let samples: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').nth(col).unwrap()).collect();
    assert_eq!(samples, ["10"; 4], "{csv}");
    let out = detect(&["eval", "--run", run_dir.to_str().unwrap(), "--json"], root);
    let v: Value = serde_json::from_str(ok_stdout(&out).trim()).unwrap();
    assert!(summary["map50"].as_f64().is_some_and(|m| m > 0.0), "a test of equal zeros proves nothing: {summary}");
    for key in ["map", "map50", "map75", "precision", "recall"] {
        assert_eq!(v[key], summary[key], "{key}: one process's eval {v}, the ranks' validation {summary}");
    }
}
