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
    /// Only these targets (default: all).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// cargo-fuzz sanitizer: none (default; libtorch and OpenCV are not instrumented anyway) or address.
    #[arg(long, default_value = "none")]
    pub sanitizer: String,
}

/// Where a target's regression inputs live: next to the tests of the crate whose parser it fuzzes
/// (each crate's `tests/fuzz_regressions.rs` replays them).
fn regression_dir(root: &Path, target: &str) -> std::path::PathBuf {
    let krate = match target {
        "yolo_labels" | "coco_json" => "detect",
        "mask_png" => "segment",
        _ => "core",
    };
    root.join("crates").join(krate).join("tests/fixtures/fuzz").join(target)
}

/// Committed inputs each target starts from, besides its own `fuzz/corpus/<target>`.
fn seed_dirs(root: &Path, target: &str) -> Vec<std::path::PathBuf> {
    let fixtures = root.join("crates/core/tests/fixtures");
    let mut dirs = vec![root.join("fuzz/seeds").join(target)];
    match target {
        "checkpoint" | "safetensors" => dirs.push(fixtures.join("checkpoint")),
        "image_decode" => dirs.push(fixtures.join("data")),
        "coco_json" => dirs.push(root.join("crates/detect/tests/fixtures/coco")),
        "mask_png" => dirs.push(root.join("crates/segment/tests/fixtures/masks")),
        _ => {}
    }
    dirs.push(regression_dir(root, target));
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

/// The fuzz targets: stems of `fuzz/fuzz_targets/*.rs`, sorted.
pub fn targets(root: &Path) -> Vec<String> {
    util::list(&root.join("fuzz").join("fuzz_targets"))
        .into_iter()
        .filter_map(|f| f.strip_suffix(".rs").map(str::to_owned))
        .collect()
}

/// A `cargo fuzz` command; `RUSTC_BOOTSTRAP=1` lets the stable toolchain take the `-Z` flags it uses.
/// cargo-fuzz sets `RUSTFLAGS`, which replaces the rpath flags of `.cargo/config.toml`, so the fuzz
/// binaries get an absolute rpath to libtorch here (and `LD_LIBRARY_PATH` for good measure). They build
/// into `fuzz/target`, apart from the uninstrumented workspace builds.
fn cargo_fuzz(root: &Path) -> Command {
    let mut c = util::cargo();
    let lib = util::tlcv_home(root).join("libtorch").join("lib");
    let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    flags += &format!(" -C link-arg=-Wl,--disable-new-dtags -C link-arg=-Wl,-rpath,{}", lib.display());
    let ld = match std::env::var("LD_LIBRARY_PATH") {
        Ok(old) if !old.is_empty() => format!("{}:{old}", lib.display()),
        _ => lib.display().to_string(),
    };
    c.arg("fuzz")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTFLAGS", flags.trim())
        .env("LD_LIBRARY_PATH", ld)
        .env("LIBTORCH", util::tlcv_home(root).join("libtorch"))
        .env("CARGO_TARGET_DIR", root.join("fuzz").join("target"))
        .current_dir(root);
    c
}

/// Installs cargo-fuzz if needed and fuzzes each target; returns the first failing exit code, else 0.
pub fn fuzz(root: &Path, args: &FuzzArgs) -> Result<i32> {
    if !root.join("fuzz").is_dir() {
        println!("xtask: no fuzz/ directory in {}: nothing to fuzz", root.display());
        return Ok(2);
    }
    let have = cargo_fuzz(root).arg("--version").output().is_ok_and(|o| o.status.success());
    if !have {
        println!("xtask: installing cargo-fuzz");
        util::run(util::cargo().args(["install", "cargo-fuzz"]))?;
    }
    let mut targets = targets(root);
    if !args.only.is_empty() {
        if let Some(bad) = args.only.iter().find(|t| !targets.contains(t)) {
            anyhow::bail!("no fuzz target `{bad}` (have: {})", targets.join(", "));
        }
        targets.retain(|t| args.only.contains(t));
    }
    if targets.is_empty() {
        println!("xtask: fuzz/fuzz_targets/ holds no targets");
        return Ok(2);
    }
    for t in &targets {
        println!("xtask: fuzzing {t} for {} s", args.time);
        let mut c = cargo_fuzz(root);
        c.args(["run", "--sanitizer", &args.sanitizer, t]);
        // The first corpus folder receives new inputs; the seed folders are only read.
        c.arg(root.join("fuzz/corpus").join(t)).args(seed_dirs(root, t));
        c.arg("--").arg(format!("-max_total_time={}", args.time)).args([
            "-timeout=10",
            "-rss_limit_mb=4096",
            "-print_final_stats=1",
        ]);
        std::fs::create_dir_all(root.join("fuzz/corpus").join(t))?;
        let st = util::status(&mut c)?;
        if !st.success() {
            println!("xtask: fuzz target {t} failed ({st}); the input is in fuzz/artifacts/{t}/");
            println!(
                "xtask: add it to {}/ so that tests/fuzz_regressions.rs replays it",
                regression_dir(root, t).display()
            );
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
