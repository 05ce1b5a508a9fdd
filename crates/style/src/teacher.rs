//! Teachers for fast-style training: the optimised (Gatys) result of every training photo, at the
//! photo's training size. A feed-forward network trained on the perceptual loss alone settles into
//! blotches (see `fast.teacher_weight`); a pixel term towards these images shows it what a good
//! answer looks like. Results are cached as PNGs named by photo and size, so runs share them.

use std::path::{Path, PathBuf};

use tlcv_core::data::RgbImage;
use tlcv_core::progress::{Mode, Progress};
use tlcv_core::train::Parallel;

use crate::config::StyleConfig;
use crate::features::FeatureNet;
use crate::{Result, StyleError, image, transfer};

/// One training photo and, when teachers are on, its optimised result of the same size.
#[derive(Debug)]
pub struct Photo {
    /// File name the photo came from.
    pub name: String,
    /// The photo, resized for training.
    pub image: RgbImage,
    /// Its stylised version (same size), if teachers are on.
    pub teacher: Option<RgbImage>,
}

/// How teachers are made: the optimised (Gatys) result on `net` for `style` with `cfg`'s `[optim]`
/// settings and the style image at `data.style_size`.
#[derive(Debug, Clone, Copy)]
pub struct Teacher<'a> {
    /// The feature network.
    pub net: &'a FeatureNet,
    /// The style image.
    pub style: &'a RgbImage,
    /// Loss weights, `[optim]` and `data.style_size`.
    pub cfg: &'a StyleConfig,
}

impl Teacher<'_> {
    /// Fills in `teacher` for every photo: read from `dir` when cached there at the same size, otherwise
    /// optimised. With several ranks each takes every `world_size`-th photo and the results are
    /// exchanged, so every rank ends with the same teachers; the main rank writes the new ones to `dir`.
    pub fn fill(&self, photos: &mut [Photo], dir: &Path, parallel: &dyn Parallel) -> Result<()> {
        if parallel.is_main() {
            std::fs::create_dir_all(dir).map_err(|e| StyleError::io(dir, e))?;
        }
        let mine: Vec<usize> = (parallel.rank()..photos.len()).step_by(parallel.world_size().max(1)).collect();
        let mode = if parallel.is_main() { Mode::Auto } else { Mode::Hidden };
        let bar = Progress::with_mode(Some(mine.len() as u64), "teachers", mode);
        let mut ours = Vec::new();
        for &i in &mine {
            let p = &photos[i];
            let teacher = match cached(&cache_path(dir, p), p.image.width, p.image.height) {
                Some(t) => t,
                None => {
                    let mut c = self.cfg.clone();
                    c.data.size = p.image.width.max(p.image.height) as i64;
                    image::from_tensor(&transfer::stylize(self.net, &p.image, self.style, &c, false)?.image)?
                }
            };
            encode(&mut ours, i, &teacher);
            bar.inc(1);
        }
        let every = parallel.gather_bytes(&ours)?.map(|parts| parts.concat()).unwrap_or_default();
        let every = parallel.broadcast_bytes(every)?;
        for (i, teacher) in decode(&every)? {
            let n = photos.len();
            let p = photos.get_mut(i).ok_or_else(|| StyleError::Invalid(format!("a teacher for photo {i} of {n}")))?;
            if (teacher.width, teacher.height) != (p.image.width, p.image.height) {
                return Err(StyleError::Invalid(format!(
                    "teacher of {} is {}x{}, not {}x{}",
                    p.name, teacher.width, teacher.height, p.image.width, p.image.height
                )));
            }
            let path = cache_path(dir, p);
            if parallel.is_main() && cached(&path, teacher.width, teacher.height).is_none() {
                image::write(&path, &teacher)?;
            }
            p.teacher = Some(teacher);
        }
        if let Some(p) = photos.iter().find(|p| p.teacher.is_none()) {
            return Err(StyleError::Invalid(format!("no teacher arrived for {}", p.name)));
        }
        bar.finish(format!("teachers: {} photos ready in {}", photos.len(), dir.display()));
        Ok(())
    }
}

/// `<dir>/<photo stem>_<w>x<h>.png`.
fn cache_path(dir: &Path, p: &Photo) -> PathBuf {
    let stem = Path::new(&p.name).file_stem().and_then(|s| s.to_str()).unwrap_or("photo");
    dir.join(format!("{stem}_{}x{}.png", p.image.width, p.image.height))
}

/// The image at `path` if it reads and is `w` x `h`.
fn cached(path: &Path, w: usize, h: usize) -> Option<RgbImage> {
    image::read(path).ok().filter(|t| t.width == w && t.height == h)
}

/// Appends `(index, width, height)` as little-endian u32s and the RGB bytes.
fn encode(out: &mut Vec<u8>, index: usize, img: &RgbImage) {
    for v in [index, img.width, img.height] {
        out.extend_from_slice(&(v as u32).to_le_bytes());
    }
    out.extend_from_slice(&img.data);
}

/// The `(index, image)` records of [`encode`], one after another.
fn decode(mut bytes: &[u8]) -> Result<Vec<(usize, RgbImage)>> {
    let bad = || StyleError::Invalid("the teachers exchanged between ranks are cut short".into());
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let head: Vec<usize> = (0..3)
            .map(|k| bytes.get(4 * k..4 * k + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes))
            .map(|v| v.map(|v| v as usize).ok_or_else(bad))
            .collect::<Result<_>>()?;
        let (index, width, height) = (head[0], head[1], head[2]);
        let data = bytes.get(12..12 + width * height * 3).ok_or_else(bad)?.to_vec();
        bytes = &bytes[12 + data.len()..];
        out.push((index, RgbImage { width, height, data }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tch::Device;
    use tlcv_core::backbones::Arch;

    fn photo(name: &str, w: usize, h: usize, v: u8) -> Photo {
        Photo { name: name.into(), image: RgbImage { width: w, height: h, data: vec![v; w * h * 3] }, teacher: None }
    }

    #[test]
    fn teachers_are_read_from_the_cache_and_computed_at_the_photo_size_otherwise() {
        let tmp = tempfile::tempdir().unwrap();
        let cached = RgbImage { width: 40, height: 32, data: (0..40 * 32 * 3).map(|i| (i % 251) as u8).collect() };
        image::write(&tmp.path().join("cat_40x32.png"), &cached).unwrap();
        let net = FeatureNet::new(Arch::EfficientnetLite0, Device::Cpu).unwrap();
        let style = RgbImage { width: 48, height: 48, data: (0..48 * 48 * 3).map(|i| (i * 7 % 256) as u8).collect() };
        let mut cfg = StyleConfig::default();
        (cfg.optim.steps, cfg.optim.coarse_steps, cfg.optim.levels) = (2, 2, 1);
        let mut photos = vec![photo("cat.jpg", 40, 32, 90), photo("dog.png", 36, 28, 120)];
        Teacher { net: &net, style: &style, cfg: &cfg }
            .fill(&mut photos, tmp.path(), &tlcv_core::train::SingleProcess)
            .unwrap();
        assert_eq!(photos[0].teacher.as_ref().unwrap().data, cached.data, "the cached teacher was not used");
        let computed = photos[1].teacher.as_ref().unwrap();
        assert_eq!((computed.width, computed.height), (36, 28));
        assert_ne!(computed.data, photos[1].image.data, "the optimisation changed nothing");
        assert!(tmp.path().join("dog_36x28.png").is_file(), "the new teacher was not cached");
    }
}
