//! Hostile or broken checkpoints given to the `classify` binary: every entry point that reads
//! weights (`predict`, `forward`, `train`) refuses the committed malicious pickles (which would run
//! `touch /tmp/tlcv_pwned_marker` if unpickled by Python) with exit code 2 and a one-line error
//! naming the forbidden global and the file, and nothing is executed. Truncated and
//! wrong-architecture checkpoints fail the same way. Nothing may panic.

#![allow(clippy::panic)] // test failures are panics

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use opencv::{core, imgcodecs};

const MARKER: &str = "/tmp/tlcv_pwned_marker";
const MALICIOUS: [&str; 3] = ["malicious_legacy.pth", "malicious_zip.pth", "malicious_zip_proto4.pth"];

fn checkpoint_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/checkpoint").join(name)
}

fn classify() -> Command {
    Command::new(env!("CARGO_BIN_EXE_classify"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot start classify: {e}"))
}

/// Writes a small noisy PNG.
fn write_png(path: &Path, seed: i32) {
    let mut img = core::Mat::new_rows_cols_with_default(40, 40, core::CV_8UC3, core::Scalar::all(0.0))
        .unwrap_or_else(|e| panic!("{e}"));
    let lo = core::Scalar::all(f64::from(seed % 50));
    core::randu(&mut img, &lo, &core::Scalar::all(255.0)).unwrap_or_else(|e| panic!("{e}"));
    let ok = imgcodecs::imwrite(path, &img, &core::Vector::new()).unwrap_or_else(|e| panic!("{e}"));
    assert!(ok, "could not write {}", path.display());
}

/// Everything the commands need: an image, an input batch, a two-class image folder.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write_png(&dir.path().join("img.png"), 1);
        let x = tch::Tensor::zeros([1, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
        x.write_npy(dir.path().join("x.npy")).unwrap_or_else(|e| panic!("{e}"));
        for (split, n) in [("train", 2), ("val", 1)] {
            for class in ["a", "b"] {
                let d = dir.path().join("data").join(split).join(class);
                std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
                for i in 0..n {
                    write_png(&d.join(format!("{i}.png")), i + 7);
                }
            }
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The three commands that read `weights` (for `model`).
    fn commands(&self, model: &str, weights: &Path) -> Vec<(&'static str, Command)> {
        let mut predict = classify();
        predict.args(["predict", "--model", model, "--weights"]).arg(weights).arg(self.path("img.png"));
        let mut forward = classify();
        forward
            .args(["forward", "--model", model, "--weights"])
            .arg(weights)
            .arg("--input")
            .arg(self.path("x.npy"))
            .arg("--output")
            .arg(self.path("y.npy"));
        let mut train = classify();
        train
            .args(["train", "--backbone", model, "--epochs", "1", "--device", "cpu", "--weights"])
            .arg(weights)
            .arg("--data")
            .arg(self.path("data"))
            .arg("--project")
            .arg(self.path("runs"));
        vec![("predict", predict), ("forward", forward), ("train", train)]
    }
}

/// Exit code 2, no panic, and exactly one `error:` line, which contains every one of `needles`.
fn assert_one_line_error(what: &str, out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{what}: exit status {:?}\n{err}", out.status);
    assert!(!err.contains("panicked"), "{what} panicked:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{what}: expected one error line:\n{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{what}: the error line does not mention {n:?}:\n{}", lines[0]);
    }
    lines[0].to_string()
}

#[test]
fn malicious_pickles_are_refused_by_every_command_without_running_anything() {
    let scratch = Scratch::new();
    for name in MALICIOUS {
        let file = checkpoint_fixture(name);
        assert!(file.is_file(), "{} missing", file.display());
        let shown = file.display().to_string();
        for (cmd_name, mut cmd) in scratch.commands("resnet18", &file) {
            let _ = std::fs::remove_file(MARKER);
            let out = run(&mut cmd);
            let what = format!("classify {cmd_name} --weights {name}");
            assert_one_line_error(&what, &out, &["posix.system", &shown]);
            assert!(!Path::new(MARKER).exists(), "{what}: {MARKER} appeared: the pickle was executed");
            assert!(!scratch.path("y.npy").exists(), "{what}: wrote an output");
        }
    }
}

/// The Ultralytics checkpoint whose `DetectionModel` smuggles `posix.system`
/// (`scripts/fixtures/gen_ultralytics.py`): the module records are inert, the call is refused by name.
#[test]
fn malicious_ultralytics_checkpoint_is_refused_by_every_command() {
    let scratch = Scratch::new();
    let fx = tlcv_core::paths::generated_fixture("ultralytics").unwrap_or_else(|e| panic!("{e}"));
    let file = fx.join("malicious.pt");
    let shown = file.display().to_string();
    for (cmd_name, mut cmd) in scratch.commands("resnet18", &file) {
        let _ = std::fs::remove_file(MARKER);
        let out = run(&mut cmd);
        let what = format!("classify {cmd_name} --weights malicious.pt");
        assert_one_line_error(&what, &out, &["posix.system", &shown]);
        assert!(!Path::new(MARKER).exists(), "{what}: {MARKER} appeared: the pickle was executed");
    }
}

#[test]
fn truncated_checkpoint_is_a_one_line_error() {
    let scratch = Scratch::new();
    let full = std::fs::read(checkpoint_fixture("zip_all.pth")).unwrap_or_else(|e| panic!("{e}"));
    let legacy = std::fs::read(checkpoint_fixture("legacy_all.pth")).unwrap_or_else(|e| panic!("{e}"));
    for (name, bytes) in [("truncated_zip.pth", &full), ("truncated_legacy.pth", &legacy)] {
        let cut = scratch.path(name);
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap_or_else(|e| panic!("{e}"));
        let shown = cut.display().to_string();
        for (cmd_name, mut cmd) in scratch.commands("resnet18", &cut) {
            let out = run(&mut cmd);
            assert_one_line_error(&format!("classify {cmd_name} --weights {name}"), &out, &[&shown]);
        }
    }
}

#[test]
fn wrong_architecture_checkpoint_is_a_one_line_error() {
    // resnet18 weights given to vgg16: the state dict is a valid, torchvision-written zip.
    let fx = tlcv_core::paths::generated_fixture("backbones").unwrap_or_else(|e| panic!("{e}"));
    let file = fx.join("resnet18.pth");
    let shown = file.display().to_string();
    let scratch = Scratch::new();
    for (cmd_name, mut cmd) in scratch.commands("vgg16", &file) {
        let out = run(&mut cmd);
        let line = assert_one_line_error(
            &format!("classify {cmd_name} --model vgg16 --weights resnet18.pth"),
            &out,
            &[&shown],
        );
        // It says why: the keys do not match the model.
        assert!(line.contains("does not fit") || line.contains("missing"), "{cmd_name}: {line}");
        assert!(!scratch.path("y.npy").exists(), "{cmd_name}: wrote an output");
    }
}
