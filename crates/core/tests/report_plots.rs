//! Every plot function writes a PNG that OpenCV decodes, at the requested size, showing the data.
//! Set `TLCV_KEEP_REPORT=<dir>` to keep the images for a look.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use opencv::core::{Mat, MatTraitConst, Vec3b};
use opencv::imgcodecs;
use tlcv_core::report::{self, Series, Tile};

/// Output folder: `$TLCV_KEEP_REPORT` if set, else a temp dir kept alive by the guard.
fn out_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    match std::env::var_os("TLCV_KEEP_REPORT") {
        Some(d) => {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d).unwrap();
            (d, None)
        }
        None => {
            let t = tempfile::tempdir().unwrap();
            (t.path().to_path_buf(), Some(t))
        }
    }
}

fn read(path: &Path) -> Mat {
    let m = imgcodecs::imread(path.to_str().unwrap(), imgcodecs::IMREAD_COLOR).unwrap();
    assert!(!m.empty(), "{} did not decode", path.display());
    m
}

fn size(m: &Mat) -> (u32, u32) {
    (m.cols() as u32, m.rows() as u32)
}

/// Number of pixels within `tol` of `rgb` (OpenCV stores BGR).
fn count_color(m: &Mat, rgb: [u8; 3], tol: i32) -> usize {
    let mut n = 0;
    for y in 0..m.rows() {
        for x in 0..m.cols() {
            let p: &Vec3b = m.at_2d(y, x).unwrap();
            let d = (i32::from(p[2]) - i32::from(rgb[0])).abs()
                + (i32::from(p[1]) - i32::from(rgb[1])).abs()
                + (i32::from(p[0]) - i32::from(rgb[2])).abs();
            if d <= tol {
                n += 1;
            }
        }
    }
    n
}

/// Bounding box `(x0, y0, x1, y1)` of the pixels within `tol` of `rgb`.
fn bbox(m: &Mat, rgb: [u8; 3], tol: i32) -> Option<(i32, i32, i32, i32)> {
    let mut b: Option<(i32, i32, i32, i32)> = None;
    for y in 0..m.rows() {
        for x in 0..m.cols() {
            let p = pixel(m, x, y);
            let d: i32 = (0..3).map(|k| (i32::from(p[k]) - i32::from(rgb[k])).abs()).sum();
            if d <= tol {
                b = Some(match b {
                    None => (x, y, x, y),
                    Some((a, c, e, f)) => (a.min(x), c.min(y), e.max(x), f.max(y)),
                });
            }
        }
    }
    b
}

fn pixel(m: &Mat, x: i32, y: i32) -> [u8; 3] {
    let p: &Vec3b = m.at_2d(y, x).unwrap();
    [p[2], p[1], p[0]]
}

const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [255, 127, 14];

fn loss_curves() -> Vec<Series> {
    let train = (1..=20).map(|e| (f64::from(e), 2.3 * (-0.15 * f64::from(e)).exp() + 0.1)).collect();
    let val = (1..=20).map(|e| (f64::from(e), 2.3 * (-0.12 * f64::from(e)).exp() + 0.25)).collect();
    vec![Series::new("train loss", train), Series::new("val loss", val)]
}

#[test]
fn line_plot_default_and_custom_size() {
    let (dir, _g) = out_dir();
    let p = dir.join("loss.png");
    report::line_plot(&p, "Loss", "epoch", &loss_curves()).unwrap();
    let m = read(&p);
    assert_eq!(size(&m), report::plots::LINE_SIZE);
    // Both series are drawn in their palette colours.
    assert!(count_color(&m, BLUE, 30) > 200, "first series missing");
    assert!(count_color(&m, ORANGE, 30) > 200, "second series missing");

    let p2 = dir.join("acc.png");
    let opts = report::LineOptions { size: (640, 400), y_label: "accuracy".into(), y_range: Some((0.0, 1.0)) };
    let acc = Series::new(
        "val acc",
        (0..50).map(|i| (f64::from(i) * 10.0, 1.0 - 0.9 * (-0.1 * f64::from(i)).exp())).collect(),
    );
    report::line_plot_with(&p2, "Validation accuracy", "step", &[acc], &opts).unwrap();
    let m2 = read(&p2);
    assert_eq!(size(&m2), (640, 400));
    assert!(count_color(&m2, BLUE, 30) > 100);
    // An empty or NaN-only series still gives a valid (empty) plot.
    let p3 = dir.join("empty.png");
    report::line_plot(&p3, "nothing", "x", &[Series::new("nan", vec![(f64::NAN, 1.0)])]).unwrap();
    assert_eq!(size(&read(&p3)), report::plots::LINE_SIZE);
    assert!(
        report::line_plot_with(
            &p3,
            "t",
            "x",
            &[],
            &report::LineOptions { y_range: Some((1.0, 0.0)), ..Default::default() }
        )
        .is_err()
    );
}

#[test]
fn pr_curves_size_and_colours() {
    let (dir, _g) = out_dir();
    let p = dir.join("pr.png");
    let c1 = Series::new(
        "cat (AP 0.912)",
        (0..=100)
            .map(|i| {
                let r = f64::from(i) / 100.0;
                (r, 1.0 - r.powi(4))
            })
            .collect(),
    );
    let c2 = Series::new(
        "dog (AP 0.701)",
        (0..=100)
            .map(|i| {
                let r = f64::from(i) / 100.0;
                (r, (1.0 - r * r).max(0.0) * 0.9)
            })
            .collect(),
    );
    report::pr_curves_sized(&p, (600, 560), "Precision-recall", &[c1.clone(), c2.clone()]).unwrap();
    let m = read(&p);
    assert_eq!(size(&m), (600, 560));
    assert!(count_color(&m, BLUE, 30) > 100 && count_color(&m, ORANGE, 30) > 100);
    let p = dir.join("pr_default.png");
    report::pr_curves(&p, "Precision-recall", &[c1, c2]).unwrap();
    assert_eq!(size(&read(&p)), report::plots::PR_SIZE);
}

#[test]
fn bar_plot_lengths_follow_values() {
    let (dir, _g) = out_dir();
    let labels: Vec<String> =
        ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus"].iter().map(|s| s.to_string()).collect();
    let values = [0.93, 0.81, 0.42, 0.77, f64::NAN, 0.55, 0.88];
    let p = dir.join("iou.png");
    report::bar_plot_sized(&p, (700, 420), "Per-class IoU", &labels, &values).unwrap();
    let m = read(&p);
    assert_eq!(size(&m), (700, 420));
    assert!(count_color(&m, BLUE, 20) > 2000, "bars missing");
    let p = dir.join("iou_default.png");
    report::bar_plot(&p, "Per-class IoU", &labels, &values).unwrap();
    let m = read(&p);
    assert_eq!(m.cols() as u32, report::plots::BAR_WIDTH);
    // Longer bars cover more pixels: a plot of halved values has fewer bar pixels.
    let half: Vec<f64> = values.iter().map(|v| v / 2.0).collect();
    let ph = dir.join("iou_half.png");
    report::bar_plot(&ph, "Per-class IoU", &labels, &half).unwrap();
    let full_px = count_color(&m, BLUE, 20);
    let half_px = count_color(&read(&ph), BLUE, 20);
    assert!(half_px * 10 < full_px * 6 && half_px * 10 > full_px * 4, "{half_px} vs {full_px}");
    assert!(report::bar_plot(&p, "x", &labels, &values[..3]).is_err());
    // A single bar works too.
    let p1 = dir.join("one_bar.png");
    report::bar_plot(&p1, "Accuracy", &labels[..1], &[0.5]).unwrap();
    let img = read(&p1);
    let (x0, y0, x1, y1) = bbox(&img, BLUE, 20).unwrap();
    // One bar, inside the plot (below the title, above the x axis), about half the axis long.
    assert!(y0 > 50 && y1 < img.rows() - 30, "bar rows {y0}..{y1}");
    let axis_len = f64::from(img.cols() - 24 - x0) / 1.14;
    let frac = f64::from(x1 - x0 + 1) / axis_len;
    assert!((frac - 0.5).abs() < 0.05, "bar covers {frac} of the axis");
}

#[test]
fn confusion_matrix_colours_follow_counts() {
    let (dir, _g) = out_dir();
    let labels: Vec<String> = ["cat", "dog", "bird", "horse"].iter().map(|s| s.to_string()).collect();
    let m = vec![vec![50, 2, 0, 0], vec![5, 40, 3, 2], vec![0, 0, 45, 0], vec![1, 9, 0, 40]];
    let p = dir.join("cm.png");
    report::confusion_matrix_sized(&p, (640, 600), "Confusion matrix", (&m, &labels), true).unwrap();
    let img = read(&p);
    assert_eq!(size(&img), (640, 600));
    // Row 2 is all correct: normalised 1.0 is the darkest colour of the scale.
    assert!(count_color(&img, [8, 48, 107], 6) > 500, "no full-scale cell");
    let p = dir.join("cm_counts.png");
    report::confusion_matrix(&p, "Counts", &m, &labels, false).unwrap();
    let img = read(&p);
    assert!(img.cols() > 200 && img.rows() > 200);
    // Many classes: no numbers, but still drawn.
    let n = 40;
    let big: Vec<Vec<u64>> =
        (0..n).map(|i| (0..n).map(|j| if i == j { 90 } else { (i * j % 3) as u64 }).collect()).collect();
    let names: Vec<String> = (0..n).map(|i| format!("class_{i:02}")).collect();
    let p = dir.join("cm_big.png");
    report::confusion_matrix(&p, "40 classes", &big, &names, true).unwrap();
    assert!(count_color(&read(&p), [8, 48, 107], 10) > 40 * 20);
    // Shape errors are reported, not drawn.
    assert!(report::confusion_matrix(&p, "x", &[vec![1, 2]], &labels[..1], false).is_err());
    assert!(report::confusion_matrix(&p, "x", &m, &labels[..3], false).is_err());
}

#[test]
fn image_grid_places_tiles_and_frames() {
    let (dir, _g) = out_dir();
    let mut tiles = Vec::new();
    for i in 0..7u32 {
        let (w, h) = if i == 3 { (64, 48) } else { (96, 96) };
        let mut rgb = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                rgb.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, (40 * i) as u8]);
            }
        }
        let ok = i % 3 != 2;
        tiles.push(Tile {
            rgb,
            width: w,
            height: h,
            caption: if ok { format!("cat ✓ {i}") } else { format!("dog (true: cat) {i}") },
            caption_color: if ok { Tile::CORRECT } else { Tile::WRONG },
        });
    }
    let p = dir.join("samples.png");
    report::image_grid(&p, &tiles, 4).unwrap();
    let img = read(&p);
    assert_eq!(size(&img), report::image_grid_size(&tiles, 4));
    // The first tile's gradient is copied verbatim: its top-left pixel is (0, 0, 0) inside a green frame.
    let (mut found, mut x0, mut y0) = (false, 0, 0);
    'outer: for y in 0..img.rows() / 2 {
        for x in 0..img.cols() / 4 {
            if pixel(&img, x, y) == [0, 0, 0] {
                (found, x0, y0) = (true, x, y);
                break 'outer;
            }
        }
    }
    assert!(found, "tile 0 not found");
    assert_eq!(pixel(&img, x0 + 95, y0 + 95), [(95 * 255 / 96) as u8, (95 * 255 / 96) as u8, 0]);
    assert_eq!(pixel(&img, x0 - 2, y0 + 10), Tile::CORRECT);
    assert!(count_color(&img, Tile::WRONG, 0) > 4 * 96 * 2, "red frames missing");
    // Bad buffers are rejected.
    let mut bad = tiles[0].clone();
    bad.rgb.pop();
    assert!(report::image_grid(&p, &[bad], 2).is_err());
    assert!(report::image_grid(&p, &tiles, 0).is_err());
}
