//! Rendered shapes on real photos: six classes (circle, square, triangle, star, hexagon, cross) with
//! random colour, size, rotation and position, plus a few small distractor strokes, drawn on random
//! crops of the Debian sample photos and saved as 96x96 JPEGs.

use std::f64::consts::PI;
use std::path::Path;

use opencv::core::{Mat, Point, Rect, Scalar, Size, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::{DatasetError, SPLITS, Summary, build, make_class_dirs, mix};

/// The classes, in label order (also the folder names).
pub const CLASSES: [&str; 6] = ["circle", "square", "triangle", "star", "hexagon", "cross"];
/// Output image side in pixels.
pub const SIZE: i32 = 96;
/// Candidate background photos, relative to the Debian data folder; those present are used.
pub const BACKGROUNDS: [&str; 23] = [
    "skimage/astronaut.png",
    "skimage/coffee.png",
    "skimage/chelsea.png",
    "skimage/rocket.jpg",
    "skimage/brick.png",
    "skimage/grass.png",
    "skimage/gravel.png",
    "skimage/motorcycle_left.png",
    "opencv/fruits.jpg",
    "opencv/baboon.jpg",
    "opencv/building.jpg",
    "opencv/home.jpg",
    "opencv/messi5.jpg",
    "opencv/orange.jpg",
    "opencv/apple.jpg",
    "opencv/starry_night.jpg",
    "opencv/stuff.jpg",
    "opencv/board.jpg",
    "opencv/aloeL.jpg",
    "opencv/squirrel_cls.jpg",
    "opencv/butterfly.jpg",
    "opencv/HappyFish.jpg",
    "opencv/graf1.png",
];

/// Images per class in (train, val, test) for a given `per_class`: val and test get a quarter of
/// train each, rounded up.
pub fn split_counts(per_class: usize) -> [usize; 3] {
    let held_out = per_class.div_ceil(4);
    [per_class, held_out, held_out]
}

/// Renders `out_dir/{train,val,test}/<shape>/*.jpg` with [`split_counts`]`(per_class)` images per
/// class, from the photos in `debdata_dir` (see [`BACKGROUNDS`]). Every image depends only on `seed`
/// and its (split, class, index), so the output is identical whatever the thread count. Does nothing
/// if `out_dir` is complete already.
pub fn generate(out_dir: &Path, debdata_dir: &Path, per_class: usize, seed: u64) -> Result<Summary, DatasetError> {
    if per_class == 0 {
        return Err(DatasetError::Invalid("shapes: per_class must be at least 1".into()));
    }
    build(out_dir, |dir| {
        let (sources, photos) = load_backgrounds(debdata_dir)?;
        let classes: Vec<String> = CLASSES.iter().map(|c| c.to_string()).collect();
        make_class_dirs(dir, &classes)?;
        let counts = split_counts(per_class);
        let mut jobs = Vec::new();
        for (s, split) in SPLITS.iter().enumerate() {
            for c in 0..CLASSES.len() {
                jobs.extend((0..counts[s]).map(|i| (s, *split, c, i)));
            }
        }
        jobs.par_iter().try_for_each(|&(s, split, c, i)| {
            let path = dir.join(split).join(CLASSES[c]).join(format!("{}_{i:05}.jpg", CLASSES[c]));
            let ctx = || path.display().to_string();
            let mut rng = StdRng::seed_from_u64(mix(mix(seed, s as u64), (c as u64) << 32 | i as u64));
            let img = render(&photos, c, &mut rng).map_err(|e| DatasetError::cv(ctx(), e))?;
            let mut buf = Vector::<u8>::new();
            let params = Vector::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, 92]);
            imgcodecs::imencode(".jpg", &img, &mut buf, &params).map_err(|e| DatasetError::cv(ctx(), e))?;
            std::fs::write(&path, buf.as_slice()).map_err(|e| DatasetError::io(&path, e))
        })?;
        Ok(Summary {
            name: "shapes".into(),
            seed,
            classes,
            per_class: counts,
            train: CLASSES.len() * counts[0],
            val: CLASSES.len() * counts[1],
            test: CLASSES.len() * counts[2],
            sources,
        })
    })
}

/// Loads the background photos present (BGR), shrunk so the shorter side is at most 384 pixels so that
/// crops show objects rather than texture close-ups.
pub(crate) fn load_backgrounds(debdata_dir: &Path) -> Result<(Vec<String>, Vec<Mat>), DatasetError> {
    let mut names = Vec::new();
    let mut photos = Vec::new();
    for name in BACKGROUNDS {
        let path = debdata_dir.join(name);
        if !path.is_file() {
            continue;
        }
        let p = path.to_string_lossy().into_owned();
        let img = imgcodecs::imread(&p, imgcodecs::IMREAD_COLOR).map_err(|e| DatasetError::cv(&p, e))?;
        if img.empty() || img.rows() < SIZE || img.cols() < SIZE {
            return Err(DatasetError::Invalid(format!("{p}: cannot be decoded or smaller than {SIZE}x{SIZE}")));
        }
        let short = img.rows().min(img.cols());
        let img = if short > 384 {
            let f = 384.0 / short as f64;
            let mut small = Mat::default();
            let size = Size::new(
                ((img.cols() as f64 * f).round() as i32).max(SIZE),
                ((img.rows() as f64 * f).round() as i32).max(SIZE),
            );
            imgproc::resize(&img, &mut small, size, 0.0, 0.0, imgproc::INTER_AREA)
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

pub(crate) fn random_colour(rng: &mut StdRng) -> Scalar {
    Scalar::new(rng.gen_range(0..256) as f64, rng.gen_range(0..256) as f64, rng.gen_range(0..256) as f64, 0.0)
}

pub(crate) fn luma(c: &Scalar) -> f64 {
    0.114 * c[0] + 0.587 * c[1] + 0.299 * c[2] // BGR order
}

/// The outline of shape `class` (not the circle), centred at (cx, cy) with radius r, rotated by theta.
/// Coordinates carry 4 fractional bits (OpenCV's `shift`).
pub(crate) fn polygon(class: usize, cx: f64, cy: f64, r: f64, theta: f64) -> Vector<Point> {
    let regular = |n: usize, offset: f64| -> Vec<(f64, f64)> {
        (0..n).map(|k| (offset + 2.0 * PI * k as f64 / n as f64).sin_cos()).map(|(s, c)| (r * c, r * s)).collect()
    };
    let local: Vec<(f64, f64)> = match class {
        1 => regular(4, PI / 4.0),
        2 => regular(3, -PI / 2.0),
        3 => (0..10)
            .map(|k| {
                let rad = if k % 2 == 0 { r } else { 0.42 * r };
                let (s, c) = (-PI / 2.0 + PI * k as f64 / 5.0).sin_cos();
                (rad * c, rad * s)
            })
            .collect(),
        4 => regular(6, 0.0),
        _ => {
            let w = 0.3 * r;
            vec![
                (w, r),
                (w, w),
                (r, w),
                (r, -w),
                (w, -w),
                (w, -r),
                (-w, -r),
                (-w, -w),
                (-r, -w),
                (-r, w),
                (-w, w),
                (-w, r),
            ]
        }
    };
    let (s, c) = theta.sin_cos();
    local
        .into_iter()
        .map(|(x, y)| {
            Point::new(((cx + c * x - s * y) * 16.0).round() as i32, ((cy + s * x + c * y) * 16.0).round() as i32)
        })
        .collect()
}

fn strokes(img: &mut Mat, rng: &mut StdRng, n: usize) -> opencv::Result<()> {
    for _ in 0..n {
        let (x, y) = (rng.gen_range(0..SIZE), rng.gen_range(0..SIZE));
        let len = rng.gen_range(4.0..14.0);
        let (s, c) = rng.gen_range(0.0..2.0 * PI).sin_cos();
        let end = Point::new(x + (len * c) as i32, y + (len * s) as i32);
        let colour = random_colour(rng);
        imgproc::line(img, Point::new(x, y), end, colour, rng.gen_range(1..=2), imgproc::LINE_AA, 0)?;
    }
    Ok(())
}

/// One 96x96 BGR sample of shape `class`.
fn render(photos: &[Mat], class: usize, rng: &mut StdRng) -> opencv::Result<Mat> {
    let photo = &photos[rng.gen_range(0..photos.len())];
    let max_side = photo.rows().min(photo.cols());
    let side = rng.gen_range(SIZE..=max_side);
    let x = rng.gen_range(0..=photo.cols() - side);
    let y = rng.gen_range(0..=photo.rows() - side);
    let roi = Mat::roi(photo, Rect::new(x, y, side, side))?;
    let mut img = Mat::default();
    imgproc::resize(&roi, &mut img, Size::new(SIZE, SIZE), 0.0, 0.0, imgproc::INTER_AREA)?;
    let bg = opencv::core::mean_def(&img)?;
    // A colour that stands out from the background's mean brightness.
    let mut colour = random_colour(rng);
    for _ in 0..20 {
        if (luma(&colour) - luma(&bg)).abs() >= 70.0 {
            break;
        }
        colour = random_colour(rng);
    }
    if (luma(&colour) - luma(&bg)).abs() < 70.0 {
        colour = if luma(&bg) > 127.0 { Scalar::all(20.0) } else { Scalar::all(235.0) };
    }
    let before = rng.gen_range(1..=3);
    strokes(&mut img, rng, before)?;
    let r = rng.gen_range(16.0..34.0);
    let margin = r + 2.0;
    let cx = rng.gen_range(margin..SIZE as f64 - margin);
    let cy = rng.gen_range(margin..SIZE as f64 - margin);
    let theta = rng.gen_range(0.0..2.0 * PI);
    if class == 0 {
        let centre = Point::new((cx * 16.0).round() as i32, (cy * 16.0).round() as i32);
        imgproc::circle(&mut img, centre, (0.85 * r * 16.0).round() as i32, colour, -1, imgproc::LINE_AA, 4)?;
    } else {
        let mut polys = Vector::<Vector<Point>>::new();
        polys.push(polygon(class, cx, cy, r, theta));
        imgproc::fill_poly(&mut img, &polys, colour, imgproc::LINE_AA, 4, Point::new(0, 0))?;
    }
    let after = rng.gen_range(1..=3);
    strokes(&mut img, rng, after)?;
    Ok(img)
}
