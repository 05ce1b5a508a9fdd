//! Debian packages: presence through `dpkg-query`, installation through `apt-get` (as root or via sudo).

use super::Report;
use crate::util::{self, run_logged};
use anyhow::{Result, bail};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// apt-get with its log, running `apt-get update` at most once per setup.
pub struct Apt {
    log: PathBuf,
    updated: bool,
}

/// The installed packages named in `dpkg-query -W -f='${Package} ${Status}\n'` output.
pub fn parse_installed(out: &str) -> HashSet<String> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| status.trim() == "install ok installed")
        .map(|(name, _)| name.split(':').next().unwrap_or(name).to_owned())
        .collect()
}

/// The packages of `pkgs` that dpkg does not report as installed.
pub fn missing(pkgs: &[&str]) -> Result<Vec<String>> {
    // Unknown packages make dpkg-query exit 1 with a note on stderr: only stdout matters here.
    let out = Command::new("dpkg-query").arg("-W").arg("-f=${Package} ${Status}\n").args(pkgs).output();
    let installed = match out {
        Ok(o) => parse_installed(&String::from_utf8_lossy(&o.stdout)),
        Err(e) => bail!("cannot run dpkg-query ({e}): tlcv's setup needs a Debian-based system"),
    };
    Ok(pkgs.iter().filter(|p| !installed.contains(**p)).map(|p| p.to_string()).collect())
}

impl Apt {
    /// apt-get logging to `log`.
    pub fn new(log: PathBuf) -> Self {
        Apt { log, updated: false }
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// A privileged apt-get command: direct as root, else through sudo; else an error with the exact
    /// command to run by hand.
    fn command(&self, args: &[&str]) -> Result<Command> {
        if util::is_root() {
            let mut c = Command::new("apt-get");
            c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            Ok(c)
        } else if util::on_path("sudo") {
            let mut c = Command::new("sudo");
            c.args(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]).args(args);
            Ok(c)
        } else {
            bail!(
                "setup needs root to run apt-get and sudo is not available; run as root:\n  \
                 apt-get update && DEBIAN_FRONTEND=noninteractive apt-get {}",
                args.join(" ")
            )
        }
    }

    /// `apt-get update`, once.
    pub fn update(&mut self) -> Result<()> {
        if !self.updated {
            let mut c = self.command(&["update", "-q"])?;
            run_logged(&mut c, &self.log, "apt-get update")?;
            self.updated = true;
        }
        Ok(())
    }

    /// Installs the missing ones of `pkgs`.
    pub fn ensure(&mut self, pkgs: &[&str], rep: &mut Report) -> Result<()> {
        let what = format!("debian packages ({})", pkgs.join(" "));
        let missing = missing(pkgs)?;
        if missing.is_empty() {
            rep.present(&what);
            return Ok(());
        }
        let t = Instant::now();
        let mut args = vec!["install", "-y", "-q"];
        args.extend(missing.iter().map(String::as_str));
        // Fail early (before apt-get update) when we cannot get root.
        let mut c = self.command(&args)?;
        self.update()?;
        run_logged(&mut c, &self.log, &format!("installing {}", missing.join(" ")))?;
        let still = self::missing(pkgs)?;
        if !still.is_empty() {
            bail!(
                "apt-get reported success but {} is still not installed (see {})",
                still.join(" "),
                self.log.display()
            );
        }
        rep.installed(&format!("debian packages ({})", missing.join(" ")), t);
        Ok(())
    }

    /// `apt-get download pkgs` into `dir` (no root needed), updating the lists if apt cannot find them.
    pub fn download(&mut self, pkgs: &[&str], dir: &Path) -> Result<()> {
        let mut c = Command::new("apt-get");
        c.arg("download").args(pkgs).current_dir(dir);
        let label = format!("downloading {}", pkgs.join(" "));
        match run_logged(&mut c, &self.log, &label) {
            Ok(()) => Ok(()),
            Err(e) if !self.updated && util::tail(&self.log, 30).contains("Unable to locate") => {
                drop(e);
                self.update()?;
                run_logged(&mut c, &self.log, &label)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_installed_keeps_only_installed() {
        let out = "clang install ok installed\nlibfoo:amd64 install ok installed\n\
                   chromium unknown ok not-installed\nold deinstall ok config-files\n";
        let s = parse_installed(out);
        assert!(s.contains("clang") && s.contains("libfoo"));
        assert!(!s.contains("chromium") && !s.contains("old"));
        assert_eq!(s.len(), 2);
    }
}
