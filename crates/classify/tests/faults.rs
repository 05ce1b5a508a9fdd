//! Bad checkpoints and numerical faults through the `classify` binary: a safetensors file with a
//! corrupted header, a run whose `classes.json` no longer matches its weights, and a learning rate that
//! makes the loss non-finite (with and without `train.retry_lower_lr`). Each is a one-line error with
//! exit code 2, and the last good checkpoint stays loadable. (Malicious, truncated and
//! wrong-architecture checkpoints are covered by `security.rs`.)

#![allow(clippy::panic)]

mod support;

use std::{path::Path, process::Output};

use support::{classify, run, stderr, two_class_folder};

/// Exit code 2 and exactly one `error:` line, which contains every one of `needles`.
fn one_line_error(what: &str, out: &Output, needles: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{what}: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "{what}: `{n}` missing in: {}", lines[0]);
    }
    lines[0].to_string()
}

fn train(data: &Path, project: &Path, name: &str, extra: &[&str]) -> Output {
    run(classify()
        .args(["train", "--preset", "quick", "--data"])
        .arg(data)
        .args(["--img-size", "32", "--batch", "8", "--name", name, "--set", "eval.predict_images=0"])
        .args(extra)
        .arg("--project")
        .arg(project))
}

fn trainer_state(path: &Path) -> serde_json::Value {
    let meta = tlcv_core::checkpoint::read_safetensors_metadata(path).unwrap_or_else(|e| panic!("{e}"));
    meta.get("tlcv_trainer_state")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| panic!("{}: no trainer state", path.display()))
}

#[test]
fn corrupted_safetensors_and_mismatched_classes_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = two_class_folder(tmp.path(), 32, &[("train", 4), ("val", 1)]);
    let project = tmp.path().join("runs");
    let out = train(&data, &project, "good", &["--epochs", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let good = project.join("classify").join("good");
    let image = data.join("val").join("a").join("good0.png");

    // Flipped bytes inside the JSON header of best.safetensors (the file predict loads).
    let original = std::fs::read(good.join("weights/best.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    let header_len = u64::from_le_bytes(original[..8].try_into().unwrap_or_else(|e| panic!("{e}"))) as usize;
    let mut flipped = original.clone();
    for i in (8 + header_len / 3..8 + header_len / 3 + 16).step_by(3) {
        flipped[i] ^= 0x5A;
    }
    let mut huge_len = original.clone();
    huge_len[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    for (case, bytes) in [("flipped header bytes", flipped), ("header length past the end", huge_len)] {
        std::fs::write(good.join("weights/best.safetensors"), &bytes).unwrap_or_else(|e| panic!("{e}"));
        let out = run(classify().args(["predict", "--run"]).arg(&good).arg(&image));
        one_line_error(case, &out, &["best.safetensors"]);
    }
    std::fs::write(good.join("weights/best.safetensors"), &original).unwrap_or_else(|e| panic!("{e}"));

    // --resume from a corrupted last.safetensors.
    let last = std::fs::read(good.join("weights/last.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    let mut bad = last.clone();
    for b in &mut bad[9..40] {
        *b = b'#';
    }
    std::fs::write(good.join("weights/last.safetensors"), &bad).unwrap_or_else(|e| panic!("{e}"));
    let out = train(&data, &project, "good", &["--epochs", "2", "--resume"]);
    one_line_error("resume from a corrupted checkpoint", &out, &["last.safetensors"]);
    std::fs::write(good.join("weights/last.safetensors"), &last).unwrap_or_else(|e| panic!("{e}"));

    // classes.json says three classes, the weights hold two: eval and predict refuse with the shapes.
    std::fs::write(good.join("classes.json"), r#"["a","b","c"]"#).unwrap_or_else(|e| panic!("{e}"));
    let out = run(classify().args(["eval", "--run"]).arg(&good).args(["--split", "val"]));
    one_line_error("eval with 3 classes", &out, &["best.safetensors", "[3, ", "[2, "]);
    let out = run(classify().args(["predict", "--run"]).arg(&good).arg(&image));
    one_line_error("predict with 3 classes", &out, &["best.safetensors"]);
    std::fs::write(good.join("classes.json"), r#"["a","b"]"#).unwrap_or_else(|e| panic!("{e}"));

    // --resume on data that gained a class: the 3-class model cannot take the 2-class checkpoint.
    let more = data.join("train").join("c");
    std::fs::create_dir_all(&more).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(data.join("val").join("c")).unwrap_or_else(|e| panic!("{e}"));
    for (from, to) in [("train/a/good0.png", "train/c/x.png"), ("val/a/good0.png", "val/c/x.png")] {
        std::fs::copy(data.join(from), data.join(to)).unwrap_or_else(|e| panic!("{e}"));
    }
    let out = train(&data, &project, "good", &["--epochs", "2", "--resume"]);
    one_line_error("resume with a new class", &out, &["last.safetensors"]);
    // The checkpoint is untouched and still loads.
    assert_eq!(std::fs::read(good.join("weights/last.safetensors")).ok(), Some(last));
}

#[test]
fn non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = two_class_folder(tmp.path(), 32, &[("train", 20), ("val", 1)]);
    let project = tmp.path().join("runs");
    // Epoch 1 at lr 3e-3, then the step schedule multiplies it by 1e30: the weights overflow.
    let diverge = [
        "--epochs",
        "4",
        "--set",
        "train.schedule=\"step\"",
        "--set",
        "train.step_size=1",
        "--set",
        "train.gamma=1e30",
        "--set",
        "train.warmup_epochs=0",
    ];
    let out = train(&data, &project, "nan", &diverge);
    let line = one_line_error("diverging lr", &out, &["non-finite loss", "step ", "last good checkpoint"]);
    assert!(!line.contains("epoch 1,"), "epoch 1 runs at a sane lr: {line}");
    let last = project.join("classify/nan/weights/last.safetensors");
    let sd = tlcv_core::checkpoint::read_state_dict(&last).unwrap_or_else(|e| panic!("{e}"));
    assert!(sd.iter().all(|(_, t)| t.isfinite().all().int64_value(&[]) == 1), "non-finite weights were saved");
    assert!(trainer_state(&last)["next_epoch"].as_u64().is_some_and(|e| e >= 1));

    // With retry_lower_lr the epoch is retried once at lr / 10 (which still overflows), then it stops.
    let mut with_retry = diverge.to_vec();
    with_retry.extend(["--set", "train.retry_lower_lr=true"]);
    let out = train(&data, &project, "retry", &with_retry);
    one_line_error("diverging lr with retry", &out, &["non-finite loss"]);
    assert_eq!(stderr(&out).matches("retrying the epoch once with lr / 10").count(), 1, "{}", stderr(&out));
    assert!(tlcv_core::checkpoint::read_state_dict(&project.join("classify/retry/weights/last.safetensors")).is_ok());
}
