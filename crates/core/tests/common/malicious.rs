//! Shared by the task crates' `tests/security.rs` (`#[path]`-included): the committed malicious
//! pickles, which would run `touch /tmp/tlcv_pwned_marker` if unpickled by Python, and the check
//! that a command refused one: exit code 2, one `error:` line naming `posix.system` and the file,
//! and no marker.

#![allow(clippy::panic)] // test failures are panics

use std::path::{Path, PathBuf};
use std::process::Command;

const MARKER: &str = "/tmp/tlcv_pwned_marker";

/// The malicious checkpoints (legacy pickle, torch zip, zip with pickle protocol 4).
pub fn malicious_checkpoints() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/checkpoint");
    ["malicious_legacy.pth", "malicious_zip.pth", "malicious_zip_proto4.pth"].iter().map(|n| dir.join(n)).collect()
}

/// Runs `cmd` (which loads `file`) and asserts it was refused without running anything.
pub fn assert_refused(what: &str, cmd: &mut Command, file: &Path) {
    let _ = std::fs::remove_file(MARKER);
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{what}: {err}");
    let shown = file.display().to_string();
    assert!(errors[0].contains("posix.system") && errors[0].contains(&shown), "{what}: {}", errors[0]);
    assert!(!Path::new(MARKER).exists(), "{what}: {MARKER} appeared: the pickle was executed");
}

/// `<exe> train --backbone resnet18 --epochs 1 --img-size 64 --weights FILE --data DATA --project DIR`.
#[allow(dead_code)] // not every including test trains
pub fn train_with_weights(exe: &str, file: &Path, data: &Path, project: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(["train", "--backbone", "resnet18", "--epochs", "1", "--img-size", "64", "--weights"])
        .arg(file)
        .arg("--data")
        .arg(data)
        .arg("--project")
        .arg(project);
    cmd
}
