//! tlcv's runner: `cargo xtask setup|run|test|bench|fuzz|tidy`. Uses only std, anyhow and clap, so it builds on a
//! bare machine before libtorch or OpenCV exist.

mod bench;
mod fuzz;
mod run;
mod setup;
mod test;
mod tidy;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// tlcv's project runner.
#[derive(Parser, Debug)]
#[command(name = "xtask", bin_name = "cargo xtask", about = "tlcv's runner: setup, run, test, bench, fuzz, tidy")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Install what is missing (Debian packages, venv, libtorch, models, data) into `.tlcv/` or $TLCV_HOME.
    Setup(setup::SetupArgs),
    /// Build a task in release mode and run it end to end (train, eval, predict, report).
    Run(run::RunArgs),
    /// `setup --reference`, then `cargo test --workspace` (the project's test command).
    Test(test::TestArgs),
    /// Run the criterion benchmarks, or with `--compare` the side-by-side comparison with PyTorch.
    Bench(bench::BenchArgs),
    /// Fuzz every target in `fuzz/fuzz_targets/`.
    Fuzz(fuzz::FuzzArgs),
    /// Check that nothing points outside the repository, rustfmt and clippy -D warnings (run by `test`).
    Tidy(tidy::TidyArgs),
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<i32> {
    let cli = Cli::parse();
    let root = util::workspace_root()?;
    match cli.cmd {
        Cmd::Setup(a) => setup::setup(&root, &a).map(|()| 0),
        Cmd::Run(a) => run::run(&root, &a),
        Cmd::Test(a) => test::test(&root, &a),
        Cmd::Bench(a) => bench::bench(&root, &a),
        Cmd::Fuzz(a) => fuzz::fuzz(&root, &a),
        Cmd::Tidy(a) => tidy::tidy(&root, &a),
    }
}
