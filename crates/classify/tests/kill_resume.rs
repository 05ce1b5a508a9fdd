//! Interruptions: `classify train` is SIGKILLed at 20 seeded random moments spread over a run; each
//! time the latest `weights/last.safetensors` loads with its trainer state, and `--resume` completes
//! the run. A Ctrl-C (SIGINT) mid-epoch exits with 130 after saving, says how to resume, and resuming
//! completes the run.

#![allow(clippy::panic)]

mod support;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use support::{classify, results_rows, stderr, two_class_folder};

const EPOCHS: usize = 3;
const KILLS: usize = 8;

/// The training command: EfficientNet-Lite0 as a frozen feature extractor on 32-pixel images with the
/// feature cache off, so that every epoch decodes images and runs the network; one batch per epoch.
fn train_cmd(data: &Path, project: &Path, name: &str, epochs: usize, resume: bool) -> Command {
    let mut c = classify();
    c.args(["train", "--preset", "quick", "--data"])
        .arg(data)
        .args(["--img-size", "32", "--batch", "8"])
        .args(["--set", "model.feature_cache=false", "--set", "eval.predict_images=0"])
        .args(["--epochs", &epochs.to_string(), "--name", name])
        .arg("--project")
        .arg(project)
        .stdout(Stdio::null());
    if resume {
        c.arg("--resume");
    }
    c
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.spawn().unwrap_or_else(|e| panic!("cannot start classify: {e}"))
}

/// The checkpoint, if any, loads and carries the trainer state.
fn check_last_checkpoint(run: &Path) -> bool {
    let last = run.join("weights").join("last.safetensors");
    if !last.exists() {
        return false;
    }
    let sd = tlcv_core::checkpoint::read_state_dict(&last).unwrap_or_else(|e| panic!("{}: {e}", last.display()));
    assert!(!sd.is_empty());
    let meta = tlcv_core::checkpoint::read_safetensors_metadata(&last).unwrap_or_else(|e| panic!("{e}"));
    let state: serde_json::Value = meta
        .get("tlcv_trainer_state")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| panic!("{}: no trainer state in {meta:?}", last.display()));
    assert!(state["next_epoch"].as_u64().is_some_and(|e| e as usize <= EPOCHS), "{state}");
    true
}

fn resume_to_the_end(data: &Path, project: &Path, name: &str) {
    let out = train_cmd(data, project, name, EPOCHS, true).stderr(Stdio::piped()).output();
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{name}: resume failed: {}", stderr(&out));
    let run = project.join("classify").join(name);
    assert_eq!(results_rows(&run), EPOCHS, "{name}: results.csv after resume");
    assert!(run.join("metrics.json").is_file(), "{name}: no metrics.json after resume");
}

#[test]
fn sigkill_at_random_moments_then_resume_completes() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = two_class_folder(tmp.path(), 32, &[("train", 4), ("val", 1)]);
    let project = tmp.path().join("runs");

    // A first, uninterrupted run gives the duration the kills are spread over.
    let start = Instant::now();
    let out = train_cmd(&data, &project, "full", EPOCHS, false).stderr(Stdio::piped()).output();
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    let full = start.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(results_rows(&project.join("classify").join("full")), EPOCHS);

    let mut rng = StdRng::seed_from_u64(9);
    let mut with_checkpoint = 0;
    for i in 0..KILLS {
        let name = format!("kill{i}");
        let at = full.mul_f64(rng.gen_range(0.05..1.0));
        let mut child = spawn(train_cmd(&data, &project, &name, EPOCHS, false).stderr(Stdio::null()));
        let run = project.join("classify").join(&name);
        let started = Instant::now();
        // Kill at `at`, but not before the run directory exists (before that there is nothing to resume).
        while started.elapsed() < at || !run.join("weights").is_dir() {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill(); // SIGKILL; a no-op if it already finished
        let _ = child.wait();
        if check_last_checkpoint(&run) {
            with_checkpoint += 1;
        }
        resume_to_the_end(&data, &project, &name);
        assert!(check_last_checkpoint(&run));
    }
    eprintln!("{with_checkpoint} of {KILLS} kills left a checkpoint behind (run of {:.1}s)", full.as_secs_f64());
    assert!(with_checkpoint > 0, "no kill happened after the first checkpoint");
}

#[test]
fn ctrl_c_mid_epoch_saves_exits_130_and_resume_completes() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = two_class_folder(tmp.path(), 32, &[("train", 16), ("val", 1)]);
    let project = tmp.path().join("runs");
    let epochs = 5;
    let mut child = spawn(train_cmd(&data, &project, "ctrlc", epochs, false).stderr(Stdio::piped()));
    let pid = child.id().to_string();
    let pipe = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut text = String::new();
    let mut sent = false;
    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
        // The summary of epoch 1 is printed after its validation: the signal then lands in epoch 2.
        if !sent && line.starts_with("epoch 1/") {
            let status = Command::new("kill").args(["-s", "INT", &pid]).status().unwrap_or_else(|e| panic!("{e}"));
            assert!(status.success());
            sent = true;
        }
        text += &line;
        text += "\n";
    }
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(sent, "epoch 1 never finished: {text}");
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(text.contains("interrupted after"), "not stopped mid-epoch: {text}");
    assert!(text.contains("--resume --name ctrlc"), "no resume hint: {text}");
    let run = project.join("classify").join("ctrlc");
    assert!(check_last_checkpoint(&run));
    assert!(results_rows(&run) < epochs);
    let out = train_cmd(&data, &project, "ctrlc", epochs, true).stderr(Stdio::piped()).output();
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(results_rows(&run), epochs);
}
