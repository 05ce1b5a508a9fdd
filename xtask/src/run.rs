//! `cargo xtask run <task>`: setup, a release build of the task's binary, then its end-to-end `run`.

use crate::setup::{self, SetupArgs};
use crate::util;
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;

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

/// Copies `from` to `to` as it arrives; returns whether "not implemented" went by.
fn tee(mut from: impl Read, mut to: impl Write) -> bool {
    let mut buf = [0u8; 8192];
    let mut window: Vec<u8> = Vec::new();
    let mut seen = false;
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        let _ = to.write_all(&buf[..n]);
        let _ = to.flush();
        // Keep a short tail so a phrase split across reads is still found.
        window.extend(buf[..n].iter().map(u8::to_ascii_lowercase));
        if window.windows(15).any(|w| w == b"not implemented") {
            seen = true;
        }
        let keep = window.len().min(16);
        window.drain(..window.len() - keep);
    }
    seen
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
    build
        .args(["build", "--release", "-p", name])
        .current_dir(root);
    util::store_env(&mut build, &home);
    util::run(&mut build)?;

    let bin = util::target_dir(root).join("release").join(name);
    let mut cmd = Command::new(&bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .args(&args.args)
        .current_dir(root);
    util::store_env(&mut cmd, &home);
    // Both streams go through a tee so that a "not implemented" answer can be recognised.
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{}`", util::show(&cmd)))?;
    let out = child
        .stdout
        .take()
        .map(|o| thread::spawn(move || tee(o, std::io::stdout())));
    let err = child
        .stderr
        .take()
        .map(|e| thread::spawn(move || tee(e, std::io::stderr())));
    let st = child
        .wait()
        .with_context(|| format!("waiting for `{}`", util::show(&cmd)))?;
    let seen_out = out.is_some_and(|h| h.join().unwrap_or(false));
    let seen_err = err.is_some_and(|h| h.join().unwrap_or(false));
    let code = st.code().unwrap_or(1);
    if code == NOT_IMPLEMENTED && (seen_out || seen_err) {
        return Ok(not_implemented(args.task));
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tee_copies_and_spots_the_phrase_across_reads() {
        // A reader returning tiny chunks splits the phrase between reads.
        struct Chunky(Vec<u8>, usize);
        impl Read for Chunky {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = (self.0.len() - self.1).min(3).min(buf.len());
                buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }
        let text = b"error: run is Not Implemented\n".to_vec();
        let mut sink = Vec::new();
        assert!(tee(Chunky(text.clone(), 0), &mut sink));
        assert_eq!(sink, text);
        assert!(!tee(
            Chunky(b"all implemented fine".to_vec(), 0),
            Vec::new()
        ));
    }
}
