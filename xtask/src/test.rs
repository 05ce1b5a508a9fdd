//! `cargo xtask test`: THE test command (what `.ci/run` runs): `setup --reference`, `tidy`, then the
//! workspace tests.

use crate::setup::{self, SetupArgs};
use crate::tidy::{self, TidyArgs};
use crate::util::{self, secs};
use anyhow::Result;
use std::path::Path;
use std::time::Instant;

/// Options of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Arguments passed on to `cargo test --workspace` (after `--`), e.g. `-- -p tlcv-core`.
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// Sets up with the reference venv and fixtures, runs `cargo xtask tidy` (with clippy) and `cargo test --workspace`;
/// returns the tests' exit code, or tidy's when only tidy failed.
pub fn test(root: &Path, args: &TestArgs) -> Result<i32> {
    let t = Instant::now();
    setup::setup(root, &SetupArgs { reference: true, ..SetupArgs::default() })?;
    println!("xtask: setup took {}", secs(t));
    let t = Instant::now();
    let tidy_code = tidy::tidy(root, &TidyArgs::default())?;
    println!("xtask: tidy took {}", secs(t));
    let t = Instant::now();
    let mut c = util::cargo();
    c.args(["test", "--workspace", "--no-fail-fast"]).args(&args.args).current_dir(root);
    util::store_env(&mut c, &util::tlcv_home(root));
    let st = util::status(&mut c)?;
    println!("xtask: cargo test took {} ({st})", secs(t));
    let code = st.code().unwrap_or(1);
    Ok(if code == 0 { tidy_code } else { code })
}
