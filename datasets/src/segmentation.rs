//! Semantic segmentation data with pixel-exact masks: filled shapes (circle, square, triangle) and real
//! handwritten digit strokes (opencv-doc's `digits.png`) pasted on crops of the Debian photos.
//!
//! Layout: `images/{train,val}/NNNNN.png` (RGB, lossless so every object pixel has exactly its drawn
//! colour), `masks/{train,val}/NNNNN.png` (8-bit grey, one class index per pixel: 0 background,
//! 1 circle, 2 square, 3 triangle, 4 digit), `classes.txt` (one name per line, index order). Shapes are
//! drawn without anti-aliasing into the image and the mask with the same call, and digits are pasted
//! where their thresholded stroke is set, so image and mask agree to the pixel. Later objects cover
//! earlier ones in both. Train digits come from cells 0..399 of each digit, val digits from 400..499.

use std::f64::consts::PI;
use std::path::Path;

use opencv::core::{CV_8UC1, Mat, Point, Rect, Scalar, Size, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::{DatasetError, Summary, build, mix, shapes::BACKGROUNDS};

/// Class names in index order (also written to `classes.txt`).
pub const CLASSES: [&str; 5] = ["background", "circle", "square", "triangle", "digit"];
/// The digit sheet, relative to the Debian data folder.
pub const DIGITS: &str = "opencv/digits.png";
/// Splits written.
pub const SEG_SPLITS: [&str; 2] = ["train", "val"];

/// Generation parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegParams {
    /// Image side in pixels (square images).
    pub size: i32,
    /// Training images.
    pub train: usize,
    /// Validation images.
    pub val: usize,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for SegParams {
    fn default() -> Self {
        Self { size: 128, train: 256, val: 64, seed: 0 }
    }
}

/// Writes the data set into `out_dir` (see the module docs) from the Debian data in `debdata_dir`.
/// Each image depends only on the seed and its (split, index). Does nothing if `out_dir` is complete.
pub fn generate(out_dir: &Path, debdata_dir: &Path, params: SegParams) -> Result<Summary, DatasetError> {
    if params.size < 48 || params.train == 0 || params.val == 0 {
        return Err(DatasetError::Invalid(format!(
            "segmentation: need size >= 48 and at least one train and one val image, got {params:?}"
        )));
    }
    build(out_dir, |dir| {
        let (mut sources, photos) = load_photos(debdata_dir, params.size)?;
        let digits = load_digits(debdata_dir)?;
        sources.push(DIGITS.into());
        for kind in ["images", "masks"] {
            for split in SEG_SPLITS {
                let d = dir.join(kind).join(split);
                std::fs::create_dir_all(&d).map_err(|e| DatasetError::io(&d, e))?;
            }
        }
        let classes: Vec<String> = CLASSES.iter().map(|c| c.to_string()).collect();
        let cls = dir.join("classes.txt");
        std::fs::write(&cls, classes.join("\n") + "\n").map_err(|e| DatasetError::io(&cls, e))?;
        let jobs: Vec<(usize, usize)> =
            (0..params.train).map(|i| (0, i)).chain((0..params.val).map(|i| (1, i))).collect();
        jobs.par_iter().try_for_each(|&(s, i)| {
            let name = format!("{i:05}.png");
            let img_path = dir.join("images").join(SEG_SPLITS[s]).join(&name);
            let mask_path = dir.join("masks").join(SEG_SPLITS[s]).join(&name);
            let ctx = || img_path.display().to_string();
            let mut rng = StdRng::seed_from_u64(mix(mix(params.seed, 0x5E6 + s as u64), i as u64));
            let (img, mask) =
                render(&photos, &digits, s == 1, params.size, &mut rng).map_err(|e| DatasetError::cv(ctx(), e))?;
            for (path, m) in [(&img_path, &img), (&mask_path, &mask)] {
                let mut buf = Vector::<u8>::new();
                imgcodecs::imencode(".png", m, &mut buf, &Vector::new()).map_err(|e| DatasetError::cv(ctx(), e))?;
                std::fs::write(path, buf.as_slice()).map_err(|e| DatasetError::io(path, e))?;
            }
            Ok(())
        })?;
        Ok(Summary {
            name: "segmentation".into(),
            seed: params.seed,
            classes,
            per_class: [params.train, params.val, 0],
            train: params.train,
            val: params.val,
            test: 0,
            sources,
        })
    })
}

/// The background photos present (BGR), shrunk so the shorter side is at most `3 * size`.
fn load_photos(debdata_dir: &Path, size: i32) -> Result<(Vec<String>, Vec<Mat>), DatasetError> {
    let mut names = Vec::new();
    let mut photos = Vec::new();
    for name in BACKGROUNDS {
        let path = debdata_dir.join(name);
        if !path.is_file() {
            continue;
        }
        let p = path.to_string_lossy().into_owned();
        let img = imgcodecs::imread(&p, imgcodecs::IMREAD_COLOR).map_err(|e| DatasetError::cv(&p, e))?;
        if img.empty() || img.rows() < size || img.cols() < size {
            continue;
        }
        let short = img.rows().min(img.cols());
        let img = if short > 3 * size {
            let f = (3 * size) as f64 / short as f64;
            let mut small = Mat::default();
            let sz = Size::new(
                ((img.cols() as f64 * f).round() as i32).max(size),
                ((img.rows() as f64 * f).round() as i32).max(size),
            );
            imgproc::resize(&img, &mut small, sz, 0.0, 0.0, imgproc::INTER_AREA)
                .map_err(|e| DatasetError::cv(&p, e))?;
            small
        } else {
            img
        };
        names.push(name.to_string());
        photos.push(img);
    }
    if photos.is_empty() {
        return Err(DatasetError::MissingSource { path: debdata_dir.join(BACKGROUNDS[0]) });
    }
    Ok((names, photos))
}

/// The 2000x1000 grey digit sheet.
fn load_digits(debdata_dir: &Path) -> Result<Mat, DatasetError> {
    let src = debdata_dir.join(DIGITS);
    if !src.is_file() {
        return Err(DatasetError::MissingSource { path: src });
    }
    let p = src.to_string_lossy().into_owned();
    let sheet = imgcodecs::imread(&p, imgcodecs::IMREAD_GRAYSCALE).map_err(|e| DatasetError::cv(&p, e))?;
    if sheet.cols() != 2000 || sheet.rows() != 1000 {
        return Err(DatasetError::Invalid(format!(
            "{p}: expected a 2000x1000 sheet, got {}x{}",
            sheet.cols(),
            sheet.rows()
        )));
    }
    Ok(sheet)
}

fn luma(c: &Scalar) -> f64 {
    0.114 * c[0] + 0.587 * c[1] + 0.299 * c[2] // BGR order
}

/// A random colour at least 80 luma levels away from `bg`.
fn contrasting(rng: &mut StdRng, bg: &Scalar) -> Scalar {
    for _ in 0..30 {
        let c =
            Scalar::new(rng.gen_range(0..256) as f64, rng.gen_range(0..256) as f64, rng.gen_range(0..256) as f64, 0.0);
        if (luma(&c) - luma(bg)).abs() >= 80.0 {
            return c;
        }
    }
    if luma(bg) > 127.0 { Scalar::all(15.0) } else { Scalar::all(240.0) }
}

/// One sample: a BGR image and its class-index mask, both `size` x `size`.
fn render(photos: &[Mat], digits: &Mat, val: bool, size: i32, rng: &mut StdRng) -> opencv::Result<(Mat, Mat)> {
    let photo = &photos[rng.gen_range(0..photos.len())];
    let max_side = photo.rows().min(photo.cols());
    let side = rng.gen_range(size..=max_side);
    let (x, y) = (rng.gen_range(0..=photo.cols() - side), rng.gen_range(0..=photo.rows() - side));
    let roi = Mat::roi(photo, Rect::new(x, y, side, side))?;
    let mut img = Mat::default();
    imgproc::resize(&roi, &mut img, Size::new(size, size), 0.0, 0.0, imgproc::INTER_AREA)?;
    let mut mask = Mat::new_rows_cols_with_default(size, size, CV_8UC1, Scalar::all(0.0))?;
    let s = size as f64;
    let objects = rng.gen_range(2..=4);
    for k in 0..objects {
        // At least one digit per image; other objects are any class.
        let class = if k == 0 { 4 } else { rng.gen_range(1..=4) };
        let local_bg = opencv::core::mean_def(&img)?;
        let colour = contrasting(rng, &local_bg);
        let label = Scalar::all(class as f64);
        if class == 4 {
            paste_digit((&mut img, &mut mask), digits, val, colour, rng)?;
            continue;
        }
        let r = rng.gen_range(0.09 * s..0.2 * s);
        let cx = rng.gen_range(r..s - r);
        let cy = rng.gen_range(r..s - r);
        if class == 1 {
            let c = Point::new(cx.round() as i32, cy.round() as i32);
            for (m, col) in [(&mut img, colour), (&mut mask, label)] {
                imgproc::circle(m, c, r.round() as i32, col, -1, imgproc::LINE_8, 0)?;
            }
        } else {
            let (n, offset) = if class == 2 { (4, PI / 4.0) } else { (3, -PI / 2.0) };
            let theta = rng.gen_range(0.0..2.0 * PI);
            let pts: Vector<Point> = (0..n)
                .map(|j| (offset + theta + 2.0 * PI * j as f64 / n as f64).sin_cos())
                .map(|(sn, cs)| Point::new((cx + r * cs).round() as i32, (cy + r * sn).round() as i32))
                .collect();
            let mut polys = Vector::<Vector<Point>>::new();
            polys.push(pts);
            for (m, col) in [(&mut img, colour), (&mut mask, label)] {
                imgproc::fill_poly(m, &polys, col, imgproc::LINE_8, 0, Point::new(0, 0))?;
            }
        }
    }
    Ok((img, mask))
}

/// Pastes one real digit, scaled 2.5-4x and thresholded, at a random place, in `colour`.
fn paste_digit(
    (img, mask): (&mut Mat, &mut Mat),
    sheet: &Mat,
    val: bool,
    colour: Scalar,
    rng: &mut StdRng,
) -> opencv::Result<()> {
    let d = rng.gen_range(0..10);
    let k = if val { rng.gen_range(400..500) } else { rng.gen_range(0..400) };
    let (row, col) = (5 * d + k / 100, k % 100);
    let cell = Mat::roi(sheet, Rect::new(col * 20, row * 20, 20, 20))?;
    let side = (20.0 * rng.gen_range(2.5f64..4.0)).round() as i32;
    let side = side.min(img.rows()).min(img.cols());
    let mut big = Mat::default();
    imgproc::resize(&cell, &mut big, Size::new(side, side), 0.0, 0.0, imgproc::INTER_LINEAR)?;
    let mut stroke = Mat::default();
    imgproc::threshold(&big, &mut stroke, 110.0, 255.0, imgproc::THRESH_BINARY)?;
    let x = rng.gen_range(0..=img.cols() - side);
    let y = rng.gen_range(0..=img.rows() - side);
    let rect = Rect::new(x, y, side, side);
    let mut img_roi = Mat::roi_mut(img, rect)?;
    img_roi.set_to(&colour, &stroke)?;
    let mut mask_roi = Mat::roi_mut(mask, rect)?;
    mask_roi.set_to(&Scalar::all(4.0), &stroke)?;
    Ok(())
}
