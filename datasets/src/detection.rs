//! The embedded detection data set: real handwritten digits (cut from opencv-doc's `digits.png`,
//! scaled up and coloured) and rendered shapes pasted at several scales onto crops of the Debian
//! photos, 1 to 6 non-overlapping objects per image. Written in both layouts:
//!
//! - YOLO: `images/{train,val}/NNNNNN.jpg`, `labels/{train,val}/NNNNNN.txt` (`class cx cy w h`,
//!   normalised) and `data.yaml` (`path`, `train`, `val`, `nc`, `names`);
//! - COCO: `annotations/instances_{train,val}.json` (category ids are class index + 1).
//!
//! Validation digits come from other cells of the sheet than training digits (other writers' samples).
//!
//! [`ClassSet`] picks the classes: all nine (the default), only the six shapes, or the ten digits
//! 0-9 on their own; the last two are two different data sets over the same photos, for showing
//! transfer from one detection task to another.

use std::f64::consts::PI;
use std::path::Path;

use opencv::core::{Mat, Point, Rect, Scalar, Size, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde_json::json;

use crate::shapes::{load_backgrounds, luma, polygon, random_colour};
use crate::{DatasetError, Summary, build, digits, mix};

/// Class names in label order: six shapes, then three digits.
pub const CLASSES: [&str; 9] =
    ["circle", "square", "triangle", "star", "hexagon", "cross", "digit_0", "digit_1", "digit_4"];
/// The digit shown by each digit class (classes `6..`).
pub const DIGITS: [usize; 3] = [0, 1, 4];
/// Number of shape classes (the first classes).
pub const NUM_SHAPES: usize = 6;
/// The splits written.
pub const SPLITS: [&str; 2] = ["train", "val"];

/// Which objects a data set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassSet {
    /// The six shapes and the digits 0, 1, 4 ([`CLASSES`]).
    #[default]
    All,
    /// Only the six shapes.
    Shapes,
    /// Only digits, all ten of them (`digit_0` .. `digit_9`).
    Digits,
}

/// What an object of a class is.
enum Kind {
    Shape(usize),
    Digit(usize),
}

impl ClassSet {
    /// Class names in label order.
    pub fn names(self) -> Vec<String> {
        match self {
            ClassSet::All => CLASSES.iter().map(|c| c.to_string()).collect(),
            ClassSet::Shapes => CLASSES[..NUM_SHAPES].iter().map(|c| c.to_string()).collect(),
            ClassSet::Digits => (0..10).map(|d| format!("digit_{d}")).collect(),
        }
    }

    /// Folder-name suffix (empty for [`ClassSet::All`], whose folders keep their names).
    pub fn suffix(self) -> &'static str {
        match self {
            ClassSet::All => "",
            ClassSet::Shapes => "-shapes",
            ClassSet::Digits => "-digits",
        }
    }

    fn kind(self, class: usize) -> Kind {
        match self {
            ClassSet::All if class < NUM_SHAPES => Kind::Shape(class),
            ClassSet::All => Kind::Digit(DIGITS[class - NUM_SHAPES]),
            ClassSet::Shapes => Kind::Shape(class),
            ClassSet::Digits => Kind::Digit(class),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectionSpec {
    /// Training images.
    pub train: usize,
    /// Validation images.
    pub val: usize,
    /// Square image side in pixels.
    pub size: i32,
    /// Most objects per image (at least 1).
    pub max_objects: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// The classes.
    pub classes: ClassSet,
}

impl Default for DetectionSpec {
    fn default() -> Self {
        Self { train: 480, val: 120, size: 320, max_objects: 6, seed: 0, classes: ClassSet::All }
    }
}

/// One object: class index and box `[x1, y1, x2, y2]` in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object {
    /// Class index into the spec's [`ClassSet::names`].
    pub class: usize,
    /// Box corners in pixels.
    pub bbox: [f64; 4],
}

/// Generates the data set described by `spec` into `out_dir` from the Debian data in `debdata_dir`
/// (`opencv/digits.png` and the photos of [`crate::shapes::BACKGROUNDS`]). Every image depends only
/// on the seed and its (split, index). Does nothing if `out_dir` is complete already.
pub fn generate(out_dir: &Path, debdata_dir: &Path, spec: &DetectionSpec) -> Result<Summary, DatasetError> {
    if spec.train == 0 || spec.val == 0 || spec.size < 64 || spec.max_objects == 0 {
        return Err(DatasetError::Invalid(format!(
            "detection: need train, val and max_objects >= 1 and size >= 64, got {spec:?}"
        )));
    }
    let names = spec.classes.names();
    build(out_dir, |dir| {
        let (mut sources, photos) = load_backgrounds(debdata_dir)?;
        let sheet = load_sheet(debdata_dir)?;
        sources.push(digits::SOURCE.to_string());
        for split in SPLITS {
            for sub in ["images", "labels"] {
                let d = dir.join(sub).join(split);
                std::fs::create_dir_all(&d).map_err(|e| DatasetError::io(&d, e))?;
            }
        }
        let ann = dir.join("annotations");
        std::fs::create_dir_all(&ann).map_err(|e| DatasetError::io(&ann, e))?;
        for (s, split) in SPLITS.iter().enumerate() {
            let n = if s == 0 { spec.train } else { spec.val };
            let objects: Vec<Vec<Object>> = (0..n)
                .into_par_iter()
                .map(|i| {
                    let name = format!("{i:06}");
                    let img_path = dir.join("images").join(split).join(format!("{name}.jpg"));
                    let ctx = || img_path.display().to_string();
                    let mut rng = StdRng::seed_from_u64(mix(mix(spec.seed, s as u64 + 17), i as u64));
                    let (img, objs) =
                        render(&photos, &sheet, s == 1, spec, &mut rng).map_err(|e| DatasetError::cv(ctx(), e))?;
                    let mut buf = Vector::<u8>::new();
                    let params = Vector::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, 92]);
                    imgcodecs::imencode(".jpg", &img, &mut buf, &params).map_err(|e| DatasetError::cv(ctx(), e))?;
                    std::fs::write(&img_path, buf.as_slice()).map_err(|e| DatasetError::io(&img_path, e))?;
                    let label_path = dir.join("labels").join(split).join(format!("{name}.txt"));
                    std::fs::write(&label_path, yolo_lines(&objs, spec.size as f64))
                        .map_err(|e| DatasetError::io(&label_path, e))?;
                    Ok(objs)
                })
                .collect::<Result<_, DatasetError>>()?;
            let path = ann.join(format!("instances_{split}.json"));
            let text = coco_json(&objects, spec.size, &names);
            std::fs::write(&path, text).map_err(|e| DatasetError::io(&path, e))?;
        }
        let yaml = dir.join("data.yaml");
        std::fs::write(&yaml, data_yaml(&names)).map_err(|e| DatasetError::io(&yaml, e))?;
        Ok(Summary {
            name: format!("detection{}", spec.classes.suffix()),
            seed: spec.seed,
            classes: names.clone(),
            per_class: [0; 3],
            train: spec.train,
            val: spec.val,
            test: 0,
            sources,
        })
    })
}

/// The `data.yaml` of the YOLO layout.
fn data_yaml(names: &[String]) -> String {
    format!(
        "# Embedded tlcv detection data (YOLO layout).\npath: .\ntrain: images/train\nval: images/val\nnc: {}\nnames: [{}]\n",
        names.len(),
        names.join(", ")
    )
}

/// YOLO label lines `class cx cy w h` (normalised by the image side).
fn yolo_lines(objs: &[Object], side: f64) -> String {
    objs.iter()
        .map(|o| {
            let [x1, y1, x2, y2] = o.bbox;
            format!(
                "{} {:.6} {:.6} {:.6} {:.6}\n",
                o.class,
                (x1 + x2) / 2.0 / side,
                (y1 + y2) / 2.0 / side,
                (x2 - x1) / side,
                (y2 - y1) / side
            )
        })
        .collect()
}

/// COCO ground truth for one split; image ids are index + 1, category ids class + 1.
fn coco_json(objects: &[Vec<Object>], size: i32, names: &[String]) -> String {
    let images: Vec<_> = (0..objects.len())
        .map(|i| json!({"id": i + 1, "file_name": format!("{i:06}.jpg"), "width": size, "height": size}))
        .collect();
    let mut annotations = Vec::new();
    for (i, objs) in objects.iter().enumerate() {
        for o in objs {
            let [x1, y1, x2, y2] = o.bbox;
            let (w, h) = (x2 - x1, y2 - y1);
            let r = |v: f64| (v * 100.0).round() / 100.0;
            annotations.push(json!({
                "id": annotations.len() + 1,
                "image_id": i + 1,
                "category_id": o.class + 1,
                "bbox": [r(x1), r(y1), r(w), r(h)],
                "area": r(w * h),
                "iscrowd": 0,
            }));
        }
    }
    let categories: Vec<_> = names.iter().enumerate().map(|(i, c)| json!({"id": i + 1, "name": c})).collect();
    json!({"images": images, "annotations": annotations, "categories": categories}).to_string()
}

/// The digit sheet (grey, 2000x1000).
fn load_sheet(debdata_dir: &Path) -> Result<Mat, DatasetError> {
    let src = debdata_dir.join(digits::SOURCE);
    if !src.is_file() {
        return Err(DatasetError::MissingSource { path: src });
    }
    let s = src.to_string_lossy().into_owned();
    let sheet = imgcodecs::imread(&s, imgcodecs::IMREAD_GRAYSCALE).map_err(|e| DatasetError::cv(&s, e))?;
    if sheet.cols() != 2000 || sheet.rows() != 1000 {
        return Err(DatasetError::Invalid(format!(
            "{s}: expected a 2000x1000 sheet, got {}x{}",
            sheet.cols(),
            sheet.rows()
        )));
    }
    Ok(sheet)
}

/// A random cell of digit `d`: validation uses cells `k % 5 == 0`, training the others. Returns the
/// cell cropped to its ink (pixels > 40).
fn digit_cell(sheet: &Mat, d: usize, val: bool, rng: &mut StdRng) -> opencv::Result<Mat> {
    let k = loop {
        let k = rng.gen_range(0..digits::PER_DIGIT);
        if (k % 5 == 0) == val {
            break k;
        }
    };
    let (row, col) = (5 * d + k / 100, k % 100);
    let cell = digits::CELL as i32;
    let roi = Mat::roi(sheet, Rect::new(col as i32 * cell, row as i32 * cell, cell, cell))?;
    let (mut x1, mut y1, mut x2, mut y2) = (cell, cell, -1, -1);
    for y in 0..cell {
        for x in 0..cell {
            if *roi.at_2d::<u8>(y, x)? > 40 {
                (x1, y1, x2, y2) = (x1.min(x), y1.min(y), x2.max(x), y2.max(y));
            }
        }
    }
    if x2 < x1 {
        return roi.try_clone();
    }
    Mat::roi(&roi, Rect::new(x1, y1, x2 - x1 + 1, y2 - y1 + 1))?.try_clone()
}

/// A colour standing out from `bg` (BGR mean) by at least 70 in luma.
fn contrasting(bg: &Scalar, rng: &mut StdRng) -> Scalar {
    for _ in 0..30 {
        let c = random_colour(rng);
        if (luma(&c) - luma(bg)).abs() >= 70.0 {
            return c;
        }
    }
    if luma(bg) > 127.0 { Scalar::all(20.0) } else { Scalar::all(235.0) }
}

fn overlaps(a: &[f64; 4], b: &[f64; 4], margin: f64) -> bool {
    a[0] < b[2] + margin && b[0] < a[2] + margin && a[1] < b[3] + margin && b[1] < a[3] + margin
}

/// One BGR image with its objects.
fn render(
    photos: &[Mat],
    sheet: &Mat,
    val: bool,
    spec: &DetectionSpec,
    rng: &mut StdRng,
) -> opencv::Result<(Mat, Vec<Object>)> {
    let size = spec.size;
    let photo = &photos[rng.gen_range(0..photos.len())];
    let short = photo.rows().min(photo.cols());
    let side = rng.gen_range((size / 2).min(short)..=short);
    let (x, y) = (rng.gen_range(0..=photo.cols() - side), rng.gen_range(0..=photo.rows() - side));
    let mut img = Mat::default();
    imgproc::resize(
        &Mat::roi(photo, Rect::new(x, y, side, side))?,
        &mut img,
        Size::new(size, size),
        0.0,
        0.0,
        imgproc::INTER_AREA,
    )?;
    let n = rng.gen_range(1..=spec.max_objects);
    let mut objs: Vec<Object> = Vec::with_capacity(n);
    let (lo, hi) = ((size as f64 * 0.075).ln(), (size as f64 * 0.38).ln());
    let classes = spec.classes.names().len();
    for _ in 0..n {
        let class = rng.gen_range(0..classes);
        let extent = rng.gen_range(lo..hi).exp(); // log-uniform: as many small as large objects
        for _attempt in 0..40 {
            let cand = match spec.classes.kind(class) {
                Kind::Shape(shape) => place_shape(shape, extent, size as f64, rng),
                Kind::Digit(d) => {
                    let cell = digit_cell(sheet, d, val, rng)?;
                    place_digit(cell, extent, size as f64, rng)
                }
            };
            let Some(placed) = cand else { continue };
            let bbox = placed.bbox();
            if objs.iter().any(|o| overlaps(&o.bbox, &bbox, 3.0)) {
                continue;
            }
            let r = Rect::new(
                bbox[0] as i32,
                bbox[1] as i32,
                ((bbox[2] - bbox[0]) as i32).max(1),
                ((bbox[3] - bbox[1]) as i32).max(1),
            );
            let bg = opencv::core::mean_def(&Mat::roi(&img, r)?)?;
            let colour = contrasting(&bg, rng);
            placed.draw(&mut img, colour)?;
            objs.push(Object { class, bbox });
            break;
        }
    }
    Ok((img, objs))
}

/// An object ready to draw.
enum Placed {
    Circle { cx: f64, cy: f64, r: f64 },
    Poly(Vector<Point>),
    Digit { ink: Mat, x: i32, y: i32 },
}

impl Placed {
    fn bbox(&self) -> [f64; 4] {
        match self {
            Placed::Circle { cx, cy, r } => [cx - r, cy - r, cx + r, cy + r],
            Placed::Poly(pts) => {
                let mut b = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
                for p in pts {
                    let (x, y) = (p.x as f64 / 16.0, p.y as f64 / 16.0);
                    b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
                }
                b
            }
            Placed::Digit { ink, x, y } => [*x as f64, *y as f64, (x + ink.cols()) as f64, (y + ink.rows()) as f64],
        }
    }

    fn draw(&self, img: &mut Mat, colour: Scalar) -> opencv::Result<()> {
        match self {
            Placed::Circle { cx, cy, r } => {
                let c = Point::new((cx * 16.0).round() as i32, (cy * 16.0).round() as i32);
                imgproc::circle(img, c, (r * 16.0).round() as i32, colour, -1, imgproc::LINE_AA, 4)
            }
            Placed::Poly(pts) => {
                let mut polys = Vector::<Vector<Point>>::new();
                polys.push(pts.clone());
                imgproc::fill_poly(img, &polys, colour, imgproc::LINE_AA, 4, Point::new(0, 0))
            }
            Placed::Digit { ink, x, y } => {
                // Alpha-blend the colour with the ink as alpha.
                let mut roi = Mat::roi_mut(img, Rect::new(*x, *y, ink.cols(), ink.rows()))?;
                for r in 0..ink.rows() {
                    for c in 0..ink.cols() {
                        let a = *ink.at_2d::<u8>(r, c)? as f64 / 255.0;
                        let px = roi.at_2d_mut::<opencv::core::Vec3b>(r, c)?;
                        for k in 0..3 {
                            px[k] = (px[k] as f64 * (1.0 - a) + colour[k] * a).round().clamp(0.0, 255.0) as u8;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// A shape of class `class` whose outline fits a circle of diameter `extent`, inside the image.
fn place_shape(class: usize, extent: f64, side: f64, rng: &mut StdRng) -> Option<Placed> {
    let r = extent / 2.0;
    let margin = r + 1.0;
    if 2.0 * margin >= side {
        return None;
    }
    let (cx, cy) = (rng.gen_range(margin..side - margin), rng.gen_range(margin..side - margin));
    let theta = rng.gen_range(0.0..2.0 * PI);
    Some(if class == 0 { Placed::Circle { cx, cy, r } } else { Placed::Poly(polygon(class, cx, cy, r, theta)) })
}

/// A digit whose height is `extent` (width by the ink's aspect), inside the image.
fn place_digit(cell: Mat, extent: f64, side: f64, rng: &mut StdRng) -> Option<Placed> {
    let h = extent.round().max(8.0) as i32;
    let w = ((cell.cols() as f64 * h as f64 / cell.rows().max(1) as f64).round() as i32).max(3);
    let s = side as i32;
    if w + 2 >= s || h + 2 >= s {
        return None;
    }
    let mut ink = Mat::default();
    imgproc::resize(&cell, &mut ink, Size::new(w, h), 0.0, 0.0, imgproc::INTER_LINEAR).ok()?;
    let (x, y) = (rng.gen_range(1..s - w - 1), rng.gen_range(1..s - h - 1));
    Some(Placed::Digit { ink, x, y })
}
