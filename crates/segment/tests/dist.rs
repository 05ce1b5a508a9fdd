//! `segment train` data-parallel on 127.0.0.1: 3 SGD steps of a U-Net (ResNet-18 encoder, scratch,
//! `train.sync_bn = true`, cross-entropy only, no augmentation) at world size 2 with batch 4 per rank
//! give the weights of one process with batch 8 over the same 8 images, to float32 rounding, whether
//! the ranks are started by `--nproc-per-node 2` or by hand with torchrun's environment. Validation is
//! split over the ranks (whole batches, confusion matrices summed), and its mIoU per epoch is the
//! single process's; only rank 0 writes a run directory.
//!
//! "Float32 rounding" is measured, not assumed: the same single-process run with 2 threads instead of
//! 1 (other summation orders, nothing else) ends 3.6e-5 away in the weights and 1.7e-3 (relative) in
//! the batch norms' running statistics, because this small network from scratch amplifies rounding.
//! Two ranks land 3.3e-5 and 1.1e-3 away; with per-rank batch statistics (`sync_bn = false`) they land
//! 4.6e-4 and 1.0e-1 away, which the bounds below reject.

#![allow(clippy::panic, clippy::expect_used)] // test failures are panics

use std::path::Path;
use std::process::{Command, Stdio};

use opencv::core::{CV_8UC1, CV_8UC3, Mat, Point, Scalar, Vector};
use opencv::imgcodecs::imwrite;
use opencv::imgproc;
use tch::Tensor;
use tlcv_testkit::{dir_names, ok, run_weights, train_both_launches};

/// 8 train and 5 val 56x40 images: a disc (class 1) and a bar (class 2) at varying places.
fn make_data(root: &Path) {
    std::fs::create_dir_all(root).expect("mkdir");
    std::fs::write(root.join("classes.txt"), "background\ndisc\nbar\n").expect("classes");
    for (split, n) in [("train", 8), ("val", 5)] {
        for i in 0..n {
            let mut img = Mat::new_rows_cols_with_default(40, 56, CV_8UC3, Scalar::all(30.0)).expect("img");
            let mut m = Mat::new_rows_cols_with_default(40, 56, CV_8UC1, Scalar::all(0.0)).expect("mask");
            let c = Point::new(12 + 4 * i, 14 + (i % 3) * 4);
            imgproc::circle(&mut img, c, 8, Scalar::new(40.0, 200.0, 220.0, 0.0), -1, imgproc::LINE_8, 0)
                .expect("draw");
            imgproc::circle(&mut m, c, 8, Scalar::all(1.0), -1, imgproc::LINE_8, 0).expect("draw");
            let bar = opencv::core::Rect::new(4 + 2 * i, 30, 24, 6);
            imgproc::rectangle(&mut img, bar, Scalar::new(200.0, 60.0, 40.0, 0.0), -1, imgproc::LINE_8, 0)
                .expect("draw");
            imgproc::rectangle(&mut m, bar, Scalar::all(2.0), -1, imgproc::LINE_8, 0).expect("draw");
            for (kind, mat) in [("images", &img), ("masks", &m)] {
                let dir = root.join(kind).join(split);
                std::fs::create_dir_all(&dir).expect("mkdir");
                imwrite(dir.join(format!("{i}.png")).to_str().expect("utf8"), mat, &Vector::new()).expect("write");
            }
        }
    }
}

/// `segment train` for 3 epochs of one step each (8 images, `batch` per process) into `project/segment/<name>`.
fn train_cmd(data: &Path, project: &Path, name: &str, batch: usize) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_segment"));
    cmd.args(["train", "--model", "unet", "--backbone", "resnet18", "--weights", "none", "--strategy", "scratch"])
        .args(["--epochs", "3", "--img-size", "64", "--batch", &batch.to_string(), "--name", name])
        .arg("--data")
        .arg(data)
        .arg("--project")
        .arg(project)
        .args(["--set", "model.decoder_channels=[16,16,8,8,8]", "--set", "data.augment=false"])
        .args(["--set", "train.sync_bn=true", "--set", "train.seed=5", "--set", "train.dist_timeout=60"])
        // SGD without warmup: AdamW's m / sqrt(v) turns float noise in a near-zero gradient into a step.
        .args(["--set", "train.optimizer=\"sgd\"", "--set", "train.lr=0.01", "--set", "train.warmup_epochs=0"])
        // Cross-entropy is a mean over pixels, so the ranks' mean is the batch's; a batch Dice is not.
        .args(["--set", "loss.dice_weight=0", "--set", "loss.ce_weight=1"])
        .args(["--set", "train.precision=\"fp32\"", "--set", "train.patience=0"])
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null());
    cmd
}

fn weights(project: &Path, name: &str) -> Vec<(String, Tensor)> {
    run_weights(project, "segment", name)
}

/// The `val/miou` column of a run's `results.csv`, one value per epoch.
fn val_miou(project: &Path, name: &str) -> Vec<f64> {
    let path = project.join("segment").join(name).join("results.csv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').map(str::trim).collect();
    let col = header.iter().position(|h| *h == "val/miou").unwrap_or_else(|| panic!("no val/miou in {header:?}"));
    lines.map(|l| l.split(',').nth(col).and_then(|v| v.trim().parse().ok()).expect("a number")).collect()
}

/// Largest difference of a trained weight (see the header for the measured spread).
const WEIGHT_TOLERANCE: f64 = 1e-4;
/// Largest difference of a running statistic, relative to the largest of its values (at least 1).
const RUNNING_TOLERANCE: f64 = 1e-2;
/// Largest difference of a validation mIoU: a few pixels that float32 rounding flips.
const MIOU_TOLERANCE: f64 = 2e-3;

fn assert_same(a: &[(String, Tensor)], b: &[(String, Tensor)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: variable counts differ");
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb, "{what}");
        let (ta, tb) = (ta.to_kind(tch::Kind::Double), tb.to_kind(tch::Kind::Double));
        let diff = (&ta - tb).abs().max().double_value(&[]);
        if na.contains("running_") {
            let rel = diff / ta.abs().max().double_value(&[]).max(1.0);
            assert!(rel <= RUNNING_TOLERANCE, "{what}: {na} differs by {rel:e} (relative)");
        } else {
            assert!(diff <= WEIGHT_TOLERANCE, "{what}: {na} differs by {diff:e}");
        }
    }
}

#[test]
fn two_ranks_train_and_validate_like_one_process_with_the_double_batch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    make_data(&data);
    let project = tmp.path().join("runs");

    ok(&mut train_cmd(&data, &project, "one", 8));
    let one = weights(&project, "one");
    let one_miou = val_miou(&project, "one");
    assert_eq!(one_miou.len(), 3, "three epochs");
    // The weights moved: a test that compares two runs that both did nothing would pass.
    assert!(one_miou.iter().any(|m| *m > 0.0), "{one_miou:?}");

    train_both_launches(
        |name| train_cmd(&data, &project, name, 4),
        |l, _| {
            assert_same(&one, &weights(&project, l.name()), &format!("{l:?} vs one process"));
            // The sharded validation (confusion matrices summed over ranks) scores every val image once.
            let miou = val_miou(&project, l.name());
            assert_eq!(miou.len(), one_miou.len());
            for (a, b) in one_miou.iter().zip(&miou) {
                assert!(
                    (a - b).abs() <= MIOU_TOLERANCE,
                    "val mIoU per epoch: one process {one_miou:?}, {l:?} {miou:?}"
                );
            }
        },
    );

    // Rank 1 wrote no run directory of its own.
    assert_eq!(dir_names(&project.join("segment")), ["launched", "one", "torchrun"]);
}
