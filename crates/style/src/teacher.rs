//! Teachers for fast-style training: the optimised (Gatys) result of every training photo, at the
//! photo's training size. A feed-forward network trained on the perceptual loss alone settles into
//! blotches (see `fast.teacher_weight`); a pixel term towards these images shows it what a good
//! answer looks like. Results are cached as PNGs named by photo and size, so runs share them.

use std::path::Path;

use tlcv_core::data::RgbImage;
use tlcv_core::progress::Progress;

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

/// Fills in `teacher` for every photo: read from `dir` when cached there at the same size, otherwise
/// optimised with the `[optim]` settings of `cfg` (style image at `style_size`) and written to `dir`.
pub fn fill(net: &FeatureNet, style: &RgbImage, cfg: &StyleConfig, photos: &mut [Photo], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| StyleError::io(dir, e))?;
    let bar = Progress::bar(photos.len() as u64, "teachers");
    for p in photos.iter_mut() {
        let (w, h) = (p.image.width, p.image.height);
        let stem = Path::new(&p.name).file_stem().and_then(|s| s.to_str()).unwrap_or("photo");
        let path = dir.join(format!("{stem}_{w}x{h}.png"));
        let cached = image::read(&path).ok().filter(|t| t.width == w && t.height == h);
        let teacher = match cached {
            Some(t) => t,
            None => {
                let mut c = cfg.clone();
                c.data.size = w.max(h) as i64;
                let r = transfer::stylize(net, &p.image, style, &c, false)?;
                let t = image::from_tensor(&r.image)?;
                image::write(&path, &t)?;
                t
            }
        };
        if teacher.width != w || teacher.height != h {
            return Err(StyleError::Invalid(format!(
                "teacher of {} is {}x{}, not {w}x{h}",
                p.name, teacher.width, teacher.height
            )));
        }
        p.teacher = Some(teacher);
        bar.inc(1);
    }
    bar.finish(format!("teachers: {} photos ready in {}", photos.len(), dir.display()));
    Ok(())
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
        fill(&net, &style, &cfg, &mut photos, tmp.path()).unwrap();
        assert_eq!(photos[0].teacher.as_ref().unwrap().data, cached.data, "the cached teacher was not used");
        let computed = photos[1].teacher.as_ref().unwrap();
        assert_eq!((computed.width, computed.height), (36, 28));
        assert_ne!(computed.data, photos[1].image.data, "the optimisation changed nothing");
        assert!(tmp.path().join("dog_36x28.png").is_file(), "the new teacher was not cached");
    }
}
