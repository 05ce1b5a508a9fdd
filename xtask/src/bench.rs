//! `cargo xtask bench`: setup, then the criterion benchmarks.

use crate::setup::{self, SetupArgs};
use crate::util;
use anyhow::Result;
use std::path::Path;

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Compare against the reference implementations (not implemented yet: exits 2).
    #[arg(long)]
    pub compare: bool,
}

/// Runs `cargo bench -p tlcv-benches`; returns its exit code.
pub fn bench(root: &Path, args: &BenchArgs) -> Result<i32> {
    if args.compare {
        println!("xtask: bench --compare is not implemented yet");
        return Ok(2);
    }
    setup::setup(root, &SetupArgs::default())?;
    let mut c = util::cargo();
    c.args(["bench", "-p", "tlcv-benches"]).current_dir(root);
    util::store_env(&mut c, &util::tlcv_home(root));
    Ok(util::status(&mut c)?.code().unwrap_or(1))
}
