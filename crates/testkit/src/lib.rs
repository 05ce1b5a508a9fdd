//! Helpers shared by the integration tests of the tlcv crates (a dev-dependency only): running a
//! binary and reading what it printed, listing files, and the reference venv's python.
//!
//! A test names its binary with `env!("CARGO_BIN_EXE_<name>")`, which Cargo sets only in the tests
//! of the package that builds it, so the helpers take the command or its output.

#![allow(clippy::panic)] // test failures are panics

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What the test failures say when the reference venv is missing.
pub const SETUP_REFERENCE: &str = "run `cargo xtask setup --reference`";

/// Runs `cmd` to completion; panics when it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// Runs `cmd` and asserts that it succeeded (the panic shows its stderr).
pub fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", stderr(&out));
    out
}

/// Asserts that `out` is a success and returns its stdout.
pub fn ok_stdout(out: &Output) -> String {
    assert!(out.status.success(), "exit {:?}\nstderr:\n{}", out.status.code(), stderr(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stderr of `out` as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Each line of stdout parsed as JSON (`--json` output).
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Runs `cmd` and asserts that it stopped with the one-line error of exit code 2 (no panic); returns
/// that line.
pub fn one_line_error(cmd: &mut Command) -> String {
    let out = run(cmd);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{cmd:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A path as `&str` (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| panic!("not UTF-8: {}", p.display()))
}

/// The entries of `dir`, sorted.
pub fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The reference venv's python; fails the test with the setup hint when it is absent.
pub fn reference_python() -> PathBuf {
    let py = workspace_root().join(".tlcv/venv-ref/bin/python");
    assert!(py.exists(), "reference venv missing ({}): {SETUP_REFERENCE}", py.display());
    py
}

/// Runs `scripts/<script>` with the reference venv's python on `args` and asserts that it succeeded;
/// the failure message starts with `what` and holds the script's output.
pub fn reference_check<S: AsRef<OsStr>>(script: &str, args: &[S], what: &str) {
    let out = run(Command::new(reference_python()).arg(workspace_root().join("scripts").join(script)).args(args));
    assert!(out.status.success(), "{what}: {:?}\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), stderr(&out));
}

/// A free TCP port on 127.0.0.1, for a rendezvous.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// Runs `world` ranks of `rank_cmd()` with torchrun's environment set by hand, as `torchrun
/// --nproc-per-node <world> --no-python ...` would (rendezvous on 127.0.0.1 at a free port), and waits
/// for all of them; panics with the stderr of the first rank that failed.
pub fn run_torchrun_ranks(world: usize, rank_cmd: impl Fn() -> Command) {
    let port = free_port().to_string();
    let ranks: Vec<std::process::Child> = (0..world)
        .map(|rank| {
            rank_cmd()
                .envs([
                    ("WORLD_SIZE", world.to_string()),
                    ("MASTER_ADDR", "127.0.0.1".into()),
                    ("MASTER_PORT", port.clone()),
                ])
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start rank {rank}: {e}"))
        })
        .collect();
    for (rank, child) in ranks.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("rank {rank}: {e}"));
        assert!(out.status.success(), "torchrun rank {rank} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// How a data-parallel `train` was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// `--nproc-per-node 2` (run `launched`).
    NprocPerNode,
    /// torchrun's environment set by hand, as `torchrun --nproc-per-node 2 --no-python <task> train ...`
    /// (run `torchrun`).
    Torchrun,
}

impl Launch {
    /// The run's name.
    pub fn name(self) -> &'static str {
        match self {
            Launch::NprocPerNode => "launched",
            Launch::Torchrun => "torchrun",
        }
    }
}

/// Trains at world size 2 both ways every `train` command accepts, `cmd(run_name)` being one rank's
/// command (the launcher's, for `--nproc-per-node`), and calls `check` after each launch with the
/// launcher's output (`None` for torchrun, whose ranks' outputs [`run_torchrun_ranks`] checks).
pub fn train_both_launches(cmd: impl Fn(&str) -> Command, mut check: impl FnMut(Launch, Option<&Output>)) {
    let port = free_port().to_string();
    let launched = Launch::NprocPerNode;
    let out = ok(cmd(launched.name()).args(["--nproc-per-node", "2", "--master-port", &port]));
    check(launched, Some(&out));
    run_torchrun_ranks(2, || cmd(Launch::Torchrun.name()));
    check(Launch::Torchrun, None);
}

/// The names of the entries of `dir`, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

/// The variables of `project/<task>/<name>/weights/last.safetensors`, sorted by name.
pub fn run_weights(project: &Path, task: &str, name: &str) -> Vec<(String, tch::Tensor)> {
    let path = project.join(task).join(name).join("weights").join("last.safetensors");
    let mut w = tch::Tensor::read_safetensors(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}
