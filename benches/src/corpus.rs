//! The benchmark JPEGs: 500x375 crops of the Debian opencv-doc photos, resized with OpenCV and written at
//! quality 90, deterministic from a seed, generated once into `datasets/generated/bench-jpegs`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use opencv::{core, imgcodecs, imgproc, prelude::*};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// Width of every generated JPEG.
pub const WIDTH: i32 = 500;
/// Height of every generated JPEG.
pub const HEIGHT: i32 = 375;

/// The folder of the corpus of `n` images.
pub fn corpus_dir(n: usize) -> Result<PathBuf> {
    Ok(tlcv_core::paths::generated_data_dir(&format!("bench-jpegs-{n}"))?)
}

/// The `n` JPEG paths, generating them (from `<debdata>/opencv/*.jpg`) if the folder is not complete.
pub fn ensure_corpus(n: usize) -> Result<Vec<PathBuf>> {
    let dir = corpus_dir(n)?;
    let paths: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("{i:04}.jpg"))).collect();
    if dir.join(".done").is_file() {
        return Ok(paths);
    }
    let debdata = tlcv_core::paths::debdata_dir().context("the Debian photos (run `cargo xtask setup`)")?;
    let sources = source_images(&debdata.join("opencv"))?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut rng = StdRng::seed_from_u64(10);
    for path in &paths {
        let src = &sources[rng.gen_range(0..sources.len())];
        let img = crop_resize(src, &mut rng)?;
        let params = core::Vector::<i32>::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, 90]);
        if !imgcodecs::imwrite(path, &img, &params)? {
            bail!("could not write {}", path.display());
        }
    }
    std::fs::write(dir.join(".done"), format!("{n}\n")).context("writing .done")?;
    Ok(paths)
}

/// The colour photos of at least 256x192 pixels, sorted by name.
fn source_images(dir: &Path) -> Result<Vec<Mat>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg")))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let img = imgcodecs::imread(&name, imgcodecs::IMREAD_COLOR)?;
        if img.cols() >= 256 && img.rows() >= 192 {
            out.push(img);
        }
    }
    if out.is_empty() {
        bail!("no usable JPEG in {}", dir.display());
    }
    Ok(out)
}

/// A random 4:3 crop (at least half the largest one) resized to 500x375, flipped half the time.
fn crop_resize(src: &Mat, rng: &mut StdRng) -> Result<Mat> {
    let (w, h) = (src.cols(), src.rows());
    let max_w = w.min(h * 4 / 3);
    let cw = rng.gen_range(max_w / 2..=max_w).max(4);
    let ch = (cw * 3 / 4).max(3);
    let x = rng.gen_range(0..=(w - cw).max(0));
    let y = rng.gen_range(0..=(h - ch).max(0));
    let roi = Mat::roi(src, core::Rect::new(x, y, cw, ch))?;
    let mut resized = Mat::default();
    imgproc::resize(&roi, &mut resized, core::Size::new(WIDTH, HEIGHT), 0.0, 0.0, imgproc::INTER_AREA)?;
    if rng.gen_bool(0.5) {
        let mut flipped = Mat::default();
        core::flip(&resized, &mut flipped, 1)?;
        return Ok(flipped);
    }
    Ok(resized)
}
