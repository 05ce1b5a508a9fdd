//! `cargo xtask run <task>`: setup, a release build of the task's binary, then its end-to-end `run`.

use crate::setup::{self, SetupArgs};
use crate::util;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;

/// The tasks tlcv implements, one binary crate each.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Image classification (crates/classify).
    Classify,
    /// Object detection (crates/detect).
    Detect,
    /// Semantic segmentation (crates/segment).
    Segment,
    /// Neural style transfer (crates/style).
    Style,
}

impl Task {
    /// The package and binary name.
    pub fn name(self) -> &'static str {
        match self {
            Task::Classify => "classify",
            Task::Detect => "detect",
            Task::Segment => "segment",
            Task::Style => "style",
        }
    }
}

/// Options of `cargo xtask run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The task to train, evaluate, predict with and report on.
    #[arg(value_enum)]
    pub task: Task,
    /// Arguments passed on to `<task> run --config configs/<task>.toml` (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// The exit status of "not implemented".
const NOT_IMPLEMENTED: i32 = 2;

fn not_implemented(task: Task) -> i32 {
    println!("xtask: task {} is not implemented yet", task.name());
    NOT_IMPLEMENTED
}

/// Runs the task end to end; returns the exit code to leave with.
pub fn run(root: &Path, args: &RunArgs) -> Result<i32> {
    let name = args.task.name();
    let config = Path::new("configs").join(format!("{name}.toml"));
    if !root.join(&config).is_file() {
        return Ok(not_implemented(args.task));
    }
    setup::setup(root, &SetupArgs::default())?;
    let home = util::tlcv_home(root);
    let mut build = util::cargo();
    build.args(["build", "--release", "-p", name]).current_dir(root);
    util::store_env(&mut build, &home);
    util::run(&mut build)?;

    let bin = util::target_dir(root).join("release").join(name);
    let mut cmd = Command::new(&bin);
    cmd.arg("run").arg("--config").arg(&config).args(&args.args).current_dir(root);
    util::store_env(&mut cmd, &home);
    // Both streams go through a tee so that a "not implemented" answer can be recognised.
    // Inherited stdio: the task's progress bars need the terminal.
    let st = cmd.status().with_context(|| format!("starting `{}`", util::show(&cmd)))?;
    Ok(st.code().unwrap_or(1))
}
