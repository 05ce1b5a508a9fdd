//! Assembles `<home>/libtorch/` from the project venv: `include` is a symlink into torch's headers, `lib/`
//! holds hard links of the shared libraries (so libtorch's `$ORIGIN` rpath finds its neighbours).

use super::venv::TORCH_VERSION;
use super::{Report, SetupArgs, Store};
use crate::util::{self, link_or_copy, same_file};
use anyhow::{Context, Result, bail};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which libtorch is assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// The CPU-only library set (~450 MB).
    Cpu,
    /// Every torch and NVIDIA library (~5 GB).
    Cuda,
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavour::Cpu => "cpu",
            Flavour::Cuda => "cuda",
        })
    }
}

/// Parses the contents of the `flavour` file.
pub fn parse_flavour(s: &str) -> Option<Flavour> {
    match s.trim() {
        "cpu" => Some(Flavour::Cpu),
        "cuda" => Some(Flavour::Cuda),
        _ => None,
    }
}

/// The flavour recorded in `dir/flavour`, if any.
pub fn read_flavour(dir: &Path) -> Option<Flavour> {
    fs::read_to_string(dir.join("flavour")).ok().and_then(|s| parse_flavour(&s))
}

/// The flavour to assemble: the one asked for, else the one already there, else CPU.
pub fn wanted(dir: &Path, args: &SetupArgs) -> Flavour {
    if args.cuda {
        Flavour::Cuda
    } else if args.cpu {
        Flavour::Cpu
    } else {
        read_flavour(dir).unwrap_or(Flavour::Cpu)
    }
}

/// torch's libraries a CPU build links, from `torch/lib`.
const CPU_TORCH_LIBS: [&str; 4] = ["libtorch_cpu.so", "libtorch.so", "libc10.so", "libgomp.so.1"];
/// The CUDA runtime pieces `libtorch_cpu.so` still needs, from `nvidia/cu13/lib`.
const CPU_NVIDIA_LIBS: [&str; 2] = ["libcudart.so.13", "libcupti.so.13"];

fn is_shared_lib(dir: &Path, name: &str) -> bool {
    (name.ends_with(".so") || name.contains(".so.")) && dir.join(name).is_file()
}

/// `(name in lib/, source file)` of every library of `flavour`, found in the venv's `site`.
pub fn sources(site: &Path, flavour: Flavour) -> Result<Vec<(String, PathBuf)>> {
    let torch_lib = site.join("torch").join("lib");
    let mut v: Vec<(String, PathBuf)> = Vec::new();
    match flavour {
        Flavour::Cpu => {
            let cu = site.join("nvidia").join("cu13").join("lib");
            for n in CPU_TORCH_LIBS {
                v.push((n.to_owned(), torch_lib.join(n)));
            }
            for n in CPU_NVIDIA_LIBS {
                v.push((n.to_owned(), cu.join(n)));
            }
        }
        Flavour::Cuda => {
            let mut dirs = vec![torch_lib];
            let nv = site.join("nvidia");
            dirs.extend(util::list(&nv).iter().map(|p| nv.join(p).join("lib")));
            for d in dirs {
                for n in util::list(&d) {
                    // The first copy of a name wins (torch's own before NVIDIA's).
                    if is_shared_lib(&d, &n) && !v.iter().any(|(m, _)| *m == n) {
                        v.push((n.clone(), d.join(&n)));
                    }
                }
            }
        }
    }
    if let Some((_, p)) = v.iter().find(|(_, p)| !p.is_file()) {
        bail!("{} is missing from the venv; rerun setup after removing {}", p.display(), site.display());
    }
    v.sort();
    Ok(v)
}

/// What [`state`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum State {
    /// Everything in place.
    Ready,
    /// Libraries and headers in place, but `build-version`/`flavour` absent (an assembly made by hand).
    StampsMissing,
    /// Needs (re)assembly.
    Stale,
}

/// Checks `dir` against the libraries of `flavour` in `site` (names and sizes, no hashing).
pub fn state(dir: &Path, site: &Path, flavour: Flavour) -> Result<State> {
    let src = sources(site, flavour)?;
    let lib = dir.join("lib");
    let names: Vec<&str> = src.iter().map(|(n, _)| n.as_str()).collect();
    let have = util::list(&lib);
    let libs_ok = have.iter().map(String::as_str).eq(names.iter().copied())
        && src.iter().all(|(n, p)| same_file(p, &lib.join(n)));
    let include_ok = match (dir.join("include").canonicalize(), site.join("torch").join("include").canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !(libs_ok && include_ok) {
        return Ok(State::Stale);
    }
    let version = fs::read_to_string(dir.join("build-version")).ok();
    match (version.as_deref().map(str::trim), read_flavour(dir)) {
        (Some(v), Some(f)) if v == TORCH_VERSION && f == flavour => Ok(State::Ready),
        (None, None) => Ok(State::StampsMissing),
        _ => Ok(State::Stale),
    }
}

fn write_stamps(dir: &Path, flavour: Flavour) -> Result<()> {
    fs::write(dir.join("build-version"), format!("{TORCH_VERSION}\n")).context("writing libtorch/build-version")?;
    fs::write(dir.join("flavour"), format!("{flavour}\n")).context("writing libtorch/flavour")
}

/// (Re)builds `dir` from `site`: a fresh `lib/` of hard links, the `include` symlink, the stamps.
pub fn assemble(dir: &Path, site: &Path, flavour: Flavour) -> Result<()> {
    let src = sources(site, flavour)?;
    let lib = dir.join("lib");
    if lib.exists() {
        fs::remove_dir_all(&lib).with_context(|| format!("removing {}", lib.display()))?;
    }
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for (n, p) in &src {
        link_or_copy(p, &lib.join(n))?;
    }
    let inc = dir.join("include");
    if fs::symlink_metadata(&inc).is_ok() {
        if inc.is_dir() && !fs::symlink_metadata(&inc).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_dir_all(&inc)
        } else {
            fs::remove_file(&inc)
        }
        .with_context(|| format!("removing {}", inc.display()))?;
    }
    // Relative when the venv sits next to libtorch/, so the store can move.
    let target = site.join("torch").join("include");
    let rel = dir.parent().and_then(|h| target.strip_prefix(h).ok()).map(|r| Path::new("..").join(r));
    std::os::unix::fs::symlink(rel.as_deref().unwrap_or(&target), &inc)
        .with_context(|| format!("linking {}", inc.display()))?;
    write_stamps(dir, flavour)
}

/// Makes `<home>/libtorch` match `flavour`; when this changes flavour, cleans torch-sys's cached build.
pub fn ensure(store: &Store, site: &Path, flavour: Flavour, rep: &mut Report) -> Result<()> {
    let dir = store.p("libtorch");
    let what = format!("libtorch {TORCH_VERSION} ({flavour}) in {}", dir.display());
    match state(&dir, site, flavour)? {
        State::Ready => rep.present(&what),
        State::StampsMissing => {
            write_stamps(&dir, flavour)?;
            rep.present(&format!("{what} (wrote its missing build-version and flavour files)"));
        }
        State::Stale => {
            let t = Instant::now();
            let before = read_flavour(&dir);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            assemble(&dir, site, flavour)?;
            rep.installed(&what, t);
            if before.is_some_and(|b| b != flavour) {
                println!("  libtorch switched flavour: running `cargo clean -p torch-sys` so tch rebuilds against it");
                util::run(util::cargo().args(["clean", "-p", "torch-sys"]).current_dir(&store.root))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::util::testdir::TestDir;

    /// A fake site-packages with torch's and NVIDIA's libraries.
    fn fake_site(root: &Path) -> PathBuf {
        let site = root.join("venv/lib/python3.11/site-packages");
        let tl = site.join("torch/lib");
        let cu = site.join("nvidia/cu13/lib");
        let nc = site.join("nvidia/cudnn/lib");
        for d in [&tl, &cu, &nc, &site.join("torch/include/torch"), &tl.join("libshm")] {
            fs::create_dir_all(d).unwrap();
        }
        for n in CPU_TORCH_LIBS.iter().chain(["libtorch_cuda.so", "libc10_cuda.so"].iter()) {
            fs::write(tl.join(n), n.as_bytes()).unwrap();
        }
        for n in CPU_NVIDIA_LIBS.iter().chain(["libcudart_static.a"].iter()) {
            fs::write(cu.join(n), n.as_bytes()).unwrap();
        }
        fs::write(nc.join("libcudnn.so.9"), b"cudnn").unwrap();
        site
    }

    #[test]
    fn flavour_file_parsing() {
        assert_eq!(parse_flavour("cpu\n"), Some(Flavour::Cpu));
        assert_eq!(parse_flavour(" cuda "), Some(Flavour::Cuda));
        assert_eq!(parse_flavour("gpu"), None);
        assert_eq!(parse_flavour(""), None);
        assert_eq!(Flavour::Cuda.to_string(), "cuda");
    }

    #[test]
    fn cuda_sources_take_every_shared_library() {
        let d = TestDir::new();
        let site = fake_site(&d.0);
        let names: Vec<String> = sources(&site, Flavour::Cuda).unwrap().into_iter().map(|(n, _)| n).collect();
        let want = [
            "libc10.so",
            "libc10_cuda.so",
            "libcudart.so.13",
            "libcudnn.so.9",
            "libcupti.so.13",
            "libgomp.so.1",
            "libtorch.so",
            "libtorch_cpu.so",
            "libtorch_cuda.so",
        ];
        assert_eq!(names, want);
    }

    #[test]
    fn assemble_then_state_is_ready_and_detects_changes() {
        let d = TestDir::new();
        let site = fake_site(&d.0);
        let dir = d.0.join("libtorch");
        assert_eq!(state(&dir, &site, Flavour::Cpu).unwrap(), State::Stale);
        fs::create_dir_all(&dir).unwrap();
        assemble(&dir, &site, Flavour::Cpu).unwrap();
        assert_eq!(util::list(&dir.join("lib")).len(), 6);
        assert!(dir.join("include/torch").is_dir());
        assert_eq!(
            fs::read_link(dir.join("include")).unwrap(),
            Path::new("../venv/lib/python3.11/site-packages/torch/include")
        );
        assert_eq!(fs::read_to_string(dir.join("build-version")).unwrap().trim(), "2.13.0");
        assert_eq!(read_flavour(&dir), Some(Flavour::Cpu));
        assert_eq!(state(&dir, &site, Flavour::Cpu).unwrap(), State::Ready);
        assert_eq!(state(&dir, &site, Flavour::Cuda).unwrap(), State::Stale);

        // A hand-made assembly without stamps is recognised as such.
        fs::remove_file(dir.join("flavour")).unwrap();
        fs::remove_file(dir.join("build-version")).unwrap();
        assert_eq!(state(&dir, &site, Flavour::Cpu).unwrap(), State::StampsMissing);
        write_stamps(&dir, Flavour::Cpu).unwrap();

        // A library of another size (a new torch in the venv) or an extra file makes it stale.
        // pip replaces files (new inodes), so the hard link keeps the old contents.
        fs::remove_file(site.join("torch/lib/libc10.so")).unwrap();
        fs::write(site.join("torch/lib/libc10.so"), b"a newer libc10").unwrap();
        assert_eq!(state(&dir, &site, Flavour::Cpu).unwrap(), State::Stale);
        assemble(&dir, &site, Flavour::Cpu).unwrap();
        fs::write(dir.join("lib/extra.so"), b"x").unwrap();
        assert_eq!(state(&dir, &site, Flavour::Cpu).unwrap(), State::Stale);

        // Re-assembling as CUDA replaces lib/ wholesale.
        assemble(&dir, &site, Flavour::Cuda).unwrap();
        assert_eq!(state(&dir, &site, Flavour::Cuda).unwrap(), State::Ready);
        assert!(dir.join("lib/libcudnn.so.9").is_file() && !dir.join("lib/extra.so").exists());
    }
}
