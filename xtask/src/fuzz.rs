//! `cargo xtask fuzz`: runs every cargo-fuzz target for a while.

use crate::util;
use anyhow::Result;
use std::path::Path;
use std::process::Command;

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// Seconds to fuzz each target.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub time: u64,
}

/// The fuzz targets: stems of `fuzz/fuzz_targets/*.rs`, sorted.
pub fn targets(root: &Path) -> Vec<String> {
    util::list(&root.join("fuzz").join("fuzz_targets"))
        .into_iter()
        .filter_map(|f| f.strip_suffix(".rs").map(str::to_owned))
        .collect()
}

/// A `cargo fuzz` command; `RUSTC_BOOTSTRAP=1` lets the stable toolchain take the `-Z` flags it uses.
fn cargo_fuzz(root: &Path) -> Command {
    let mut c = util::cargo();
    c.arg("fuzz").env("RUSTC_BOOTSTRAP", "1").current_dir(root);
    c
}

/// Installs cargo-fuzz if needed and fuzzes each target; returns the first failing exit code, else 0.
pub fn fuzz(root: &Path, args: &FuzzArgs) -> Result<i32> {
    if !root.join("fuzz").is_dir() {
        println!(
            "xtask: no fuzz/ directory in {}: nothing to fuzz",
            root.display()
        );
        return Ok(2);
    }
    let have = cargo_fuzz(root)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        println!("xtask: installing cargo-fuzz");
        util::run(util::cargo().args(["install", "cargo-fuzz"]))?;
    }
    let targets = targets(root);
    if targets.is_empty() {
        println!("xtask: fuzz/fuzz_targets/ holds no targets");
        return Ok(2);
    }
    for t in &targets {
        println!("xtask: fuzzing {t} for {} s", args.time);
        let mut c = cargo_fuzz(root);
        c.args(["run", t, "--"])
            .arg(format!("-max_total_time={}", args.time));
        let st = util::status(&mut c)?;
        if !st.success() {
            println!("xtask: fuzz target {t} failed ({st})");
            return Ok(st.code().unwrap_or(1));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::util::testdir::TestDir;

    #[test]
    fn targets_are_rs_stems_sorted() {
        let d = TestDir::new();
        let dir = d.0.join("fuzz/fuzz_targets");
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["toml.rs", "image.rs", "README.md"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        assert_eq!(targets(&d.0), ["image", "toml"]);
    }
}
