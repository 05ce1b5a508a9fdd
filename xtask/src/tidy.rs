//! `cargo xtask tidy`: what keeps the repository self-contained and clean. `cargo xtask test` runs all
//! of it before the tests, and this crate's tests run the scan:
//! - nothing points outside the repository: no path into a sibling `shared` folder, no placeholder
//!   URL, and no issue-tracker numbers in the user documentation (README, `docs/`, configs), which a
//!   reader of a clone cannot follow;
//! - `cargo fmt --all -- --check`;
//! - `cargo clippy --workspace --all-targets -- -D warnings`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::util;

/// Options of `cargo xtask tidy`.
#[derive(clap::Args, Debug, Default)]
pub struct TidyArgs {
    /// Only scan the files (no rustfmt, no clippy).
    #[arg(long)]
    pub scan_only: bool,
    /// Scan and rustfmt, but no clippy (a quick check while editing).
    #[arg(long)]
    pub no_clippy: bool,
}

/// One line that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file, relative to the root.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub rule: &'static str,
}

/// Runs every check; returns 0 when all pass.
pub fn tidy(root: &Path, args: &TidyArgs) -> Result<i32> {
    let findings = scan(root)?;
    for f in &findings {
        println!("xtask tidy: {}:{}: {}", f.file.display(), f.line, f.rule);
    }
    let mut failed = !findings.is_empty();
    if !args.scan_only {
        let mut fmt = util::cargo();
        fmt.args(["fmt", "--all", "--", "--check"]).current_dir(root);
        failed |= !util::status(&mut fmt)?.success();
    }
    if !args.scan_only && !args.no_clippy {
        let mut clippy = util::cargo();
        clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]).current_dir(root);
        util::store_env(&mut clippy, &util::tlcv_home(root));
        failed |= !util::status(&mut clippy)?.success();
    }
    println!("xtask tidy: {}", if failed { "FAILED" } else { "ok" });
    Ok(i32::from(failed))
}

/// A path into the sibling folder next to the clone (built in two pieces so this file passes).
fn sibling_pointer() -> String {
    ["..", "/shared"].concat()
}

/// The placeholder domain of RFC 2606 (built in two pieces so this file passes).
fn placeholder_url() -> String {
    ["example", ".invalid"].concat()
}

/// Files a user reads as documentation of the product.
fn is_user_doc(file: &Path) -> bool {
    let s = file.to_string_lossy();
    s == "README.md" || s == "CHANGELOG.md" || s.starts_with("docs/") || s.starts_with("configs/")
}

/// Whether `line` names an issue of the tracker, as in "issue 10" or "issues 3 and 4".
fn names_issue(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    words.windows(2).any(|w| (w[0] == "issue" || w[0] == "issues") && w[1].chars().all(|c| c.is_ascii_digit()))
}

/// The rules a line breaks.
fn check_line(file: &Path, line: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if line.contains(&sibling_pointer()) {
        out.push("points at a folder outside the repository");
    }
    if line.contains(&placeholder_url()) {
        out.push("placeholder URL");
    }
    if is_user_doc(file) && names_issue(line) {
        out.push("names a tracker issue in user documentation");
    }
    out
}

/// Every finding in the files git tracks (or, outside a git checkout, every file under the root
/// except `target/` and `.tlcv/`).
pub fn scan(root: &Path) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    for file in tracked_files(root)? {
        let Ok(text) = std::fs::read_to_string(root.join(&file)) else { continue }; // binary files
        for (i, line) in text.lines().enumerate() {
            for rule in check_line(&file, line) {
                findings.push(Finding { file: file.clone(), line: i + 1, rule });
            }
        }
    }
    Ok(findings)
}

fn tracked_files(root: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("git").args(["ls-files", "-z"]).current_dir(root).output();
    match out {
        Ok(o) if o.status.success() => Ok(o
            .stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
            .collect()),
        _ => walk(root, Path::new("")),
    }
}

fn walk(root: &Path, rel: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let dir = root.join(rel);
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if [".git", ".tlcv", "target"].contains(&name.to_string_lossy().as_ref()) {
            continue;
        }
        let path = rel.join(&name);
        if entry.file_type()?.is_dir() {
            files.extend(walk(root, &path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_points_nowhere_outside_itself() -> Result<()> {
        let root = util::workspace_root()?;
        let findings = scan(&root)?;
        assert!(findings.is_empty(), "cargo xtask tidy: {findings:#?}");
        Ok(())
    }

    #[test]
    fn each_rule_catches_its_pointer_and_only_there() {
        let readme = Path::new("README.md");
        let code = Path::new("crates/core/src/lib.rs");
        assert_eq!(check_line(code, &format!("see {}/FACTS.md", sibling_pointer())).len(), 1);
        assert_eq!(check_line(code, &format!("https://{}/tlcv", placeholder_url())).len(), 1);
        assert_eq!(
            check_line(readme, "Still below target (issue 10): ..."),
            ["names a tracker issue in user documentation"]
        );
        assert!(check_line(code, "issue 10").is_empty(), "code comments may name issues");
        assert!(check_line(readme, "an issue with 3 images").is_empty());
        assert!(check_line(readme, "shared by every task, see ../README.md").is_empty());
    }
}
