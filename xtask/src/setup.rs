//! `cargo xtask setup`: installs what is missing into the project store (`.tlcv/` or `$TLCV_HOME`).
//!
//! Every step first checks files (no pip, no python) so that a run with everything present takes well
//! under a second; only missing items are installed.

mod apt;
mod data;
mod libtorch;
mod venv;

use crate::util::{self, secs};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use libtorch::Flavour;

/// Options of `cargo xtask setup`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SetupArgs {
    /// Install the full CUDA torch (~5 GB) and assemble a CUDA libtorch (runs `cargo clean -p torch-sys`
    /// when this switches flavour). Without `--cuda`/`--cpu` the flavour already assembled is kept.
    #[arg(long, conflicts_with = "cpu")]
    pub cuda: bool,
    /// Assemble the CPU-only libtorch (the default on a fresh store); switches back from `--cuda`.
    #[arg(long)]
    pub cpu: bool,
    /// Also create the reference venv (torch, torchvision, numpy, pycocotools, ...), generate the large
    /// test fixtures with `scripts/fixtures/gen_*.py`, and install chromium for the report test.
    #[arg(long)]
    pub reference: bool,
    /// Also fetch the pretrained EfficientNet-Lite N weights (N = 1 or 2; lite0 is always fetched).
    /// Repeatable: `--lite 1 --lite 2`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub lite: Vec<u8>,
}

/// Counts and prints what each step found or installed.
pub struct Report {
    start: Instant,
    installed: usize,
}

impl Report {
    fn new() -> Self {
        Report { start: Instant::now(), installed: 0 }
    }

    /// A step whose items were all present.
    pub fn present(&self, what: &str) {
        println!("present: {what}");
    }

    /// A step that installed something, started at `t`.
    pub fn installed(&mut self, what: &str, t: Instant) {
        println!("installed: {what} ({})", secs(t));
        self.installed += 1;
    }

    fn finish(&self) {
        if self.installed == 0 {
            println!("setup: nothing to do ({})", secs(self.start));
        } else {
            println!("setup: installed {} items in {}", self.installed, secs(self.start));
        }
    }
}

/// Paths of the store.
pub struct Store {
    /// The workspace root.
    pub root: PathBuf,
    /// `.tlcv/` or `$TLCV_HOME`.
    pub home: PathBuf,
}

impl Store {
    /// The store of the workspace at `root`.
    pub fn new(root: &Path) -> Self {
        Store { root: root.to_path_buf(), home: util::tlcv_home(root) }
    }

    /// `<home>/<rel>`.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.home.join(rel)
    }

    /// A log file under `<home>/logs/`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.home.join("logs").join(name)
    }
}

/// The Debian packages every build needs (OpenCV and clang for the opencv crate's bindings, libjpeg's
/// headers for tlcv-core's region decoder, gloo's headers for its c10d shim, a font for plots).
const APT_BASE: [&str; 6] =
    ["libopencv-dev", "clang", "libclang-dev", "libjpeg62-turbo-dev", "libgloo-dev", "fonts-dejavu-core"];

/// Runs every setup step; fast and silent apart from `present:` lines when everything is there.
pub fn setup(root: &Path, args: &SetupArgs) -> Result<()> {
    let store = Store::new(root);
    std::fs::create_dir_all(&store.home).with_context(|| format!("creating {}", store.home.display()))?;
    let mut rep = Report::new();
    let mut apt = apt::Apt::new(store.log("apt.log"));

    let mut pkgs: Vec<&str> = APT_BASE.to_vec();
    if args.reference {
        pkgs.push("chromium");
    }
    apt.ensure(&pkgs, &mut rep)?;

    let flavour = libtorch::wanted(&store.p("libtorch"), args);
    let site = venv::ensure_main(&store, flavour, &args.lite, &mut rep)?;
    libtorch::ensure(&store, &site, flavour, &mut rep)?;
    data::ensure_models(&store, &site, &args.lite, &mut rep)?;
    data::ensure_debdata(&store, &mut apt, &mut rep)?;
    if args.reference {
        let py = venv::ensure_reference(&store, &mut rep)?;
        data::ensure_fixtures(&store, &py, &mut rep)?;
    }
    rep.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        s: SetupArgs,
    }

    #[test]
    fn lite_is_repeatable_and_bounded() {
        let t = T::try_parse_from(["x", "--lite", "1", "--lite", "2", "--reference"]).unwrap();
        assert_eq!(t.s.lite, vec![1, 2]);
        assert!(t.s.reference && !t.s.cuda);
        assert!(T::try_parse_from(["x", "--lite", "3"]).is_err());
        assert!(T::try_parse_from(["x", "--cuda", "--cpu"]).is_err());
    }
}
