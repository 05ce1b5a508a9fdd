//! Confusion-matrix heat map: rows are true classes, columns predicted classes.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::ReportError;
use super::plots::title_area;
use super::style::{FAMILY, INK, MUTED, blues, check_size, ellipsize, luminance, plot_err, text_enabled};

/// Largest class count for which the numbers are printed in the cells.
pub const MAX_ANNOTATED: usize = 20;

// Even pixel sizes: plotters' ab_glyph renderer truncates half-pixel glyph offsets, which
// misaligns glyphs (a raised decimal point) at odd sizes.
const TICK_FONT: f64 = 14.0;
const DESC_FONT: f64 = 16.0;
/// Colour bar: gap to the matrix, bar width, room for its tick labels.
const CBAR: (i32, i32, i32) = (22, 18, 56);

/// Heat map of `matrix` (`matrix[true][predicted]`) with class `labels` on both axes. With
/// `normalize`, each row is divided by its sum (recall per class) and cells show fractions;
/// otherwise raw counts. Numbers are printed in the cells when there are at most
/// [`MAX_ANNOTATED`] classes. The image size follows the class count.
pub fn confusion_matrix(
    path: &Path,
    title: &str,
    matrix: &[Vec<u64>],
    labels: &[String],
    normalize: bool,
) -> Result<(), ReportError> {
    let text = text_enabled();
    let n = check_matrix(path, matrix, labels)?;
    let layout = Layout::for_classes(n, labels, title, text);
    draw(path, layout.size(), title, Cells { matrix, labels, normalize }, text)
}

/// [`confusion_matrix`] of `(matrix, labels)` drawn into an image of the given size (cells shrink or
/// grow to fit).
pub fn confusion_matrix_sized(
    path: &Path,
    size: (u32, u32),
    title: &str,
    (matrix, labels): (&[Vec<u64>], &[String]),
    normalize: bool,
) -> Result<(), ReportError> {
    check_matrix(path, matrix, labels)?;
    draw(path, size, title, Cells { matrix, labels, normalize }, text_enabled())
}

/// What the cells of a confusion matrix show.
#[derive(Clone, Copy)]
struct Cells<'a> {
    matrix: &'a [Vec<u64>],
    labels: &'a [String],
    /// Rows normalised by the true class's count.
    normalize: bool,
}

fn check_matrix(path: &Path, matrix: &[Vec<u64>], labels: &[String]) -> Result<usize, ReportError> {
    let n = matrix.len();
    if n == 0 {
        return Err(ReportError::Invalid(format!("confusion matrix {}: no classes", path.display())));
    }
    if let Some((i, row)) = matrix.iter().enumerate().find(|(_, r)| r.len() != n) {
        return Err(ReportError::Invalid(format!(
            "confusion matrix {}: row {i} has {} entries, expected {n} (the matrix must be square)",
            path.display(),
            row.len()
        )));
    }
    if labels.len() != n {
        return Err(ReportError::Invalid(format!(
            "confusion matrix {}: {} labels for {n} classes",
            path.display(),
            labels.len()
        )));
    }
    Ok(n)
}

/// Pixel layout of the figure: fixed margins around an `n x n` grid of square cells.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    /// Left edge of the matrix and width reserved left of it (y labels + "True").
    pub left: i32,
    /// Top edge of the matrix (title band + margin).
    pub top: i32,
    /// Height below the matrix (x labels + "Predicted").
    pub bottom: i32,
    /// Width right of the matrix (colour bar + margin).
    pub right: i32,
    /// Cell side in pixels.
    pub cell: i32,
    pub n: i32,
    /// Whether the column labels are drawn vertically.
    pub rotate: bool,
}

impl Layout {
    fn margins(n: usize, labels: &[String], title: &str, text: bool, cell: i32) -> Layout {
        let label_w = if text { labels.iter().map(|l| text_width(&short(l), TICK_FONT)).max().unwrap_or(0) } else { 0 };
        let rotate = text && label_w > cell - 4;
        let title_h = if text && !title.is_empty() { 54 } else { 10 };
        let (left, bottom) =
            if text { (label_w + 12 + 30, if rotate { label_w + 12 } else { 26 } + 34) } else { (10, 10) };
        let right = CBAR.0 + CBAR.1 + if text { CBAR.2 } else { 6 } + 10;
        Layout { left, top: title_h + 4, bottom, right, cell, n: n as i32, rotate }
    }

    /// Layout with a cell size chosen from the class count.
    fn for_classes(n: usize, labels: &[String], title: &str, text: bool) -> Layout {
        let cell = (640 / n.max(1) as i32).clamp(10, 64);
        let mut l = Layout::margins(n, labels, title, text, cell);
        // Keep room for the title when the matrix itself is narrow.
        let min_w = if text { text_width(title, 22.0) + 40 } else { 0 };
        let w = l.left + l.cell * l.n + l.right;
        if w < min_w {
            l.left += (min_w - w) / 2;
            l.right += min_w - w - (min_w - w) / 2;
        }
        l
    }

    /// Layout fitting an image of `size`; the matrix is centred in the leftover space.
    fn fit(size: (u32, u32), n: usize, labels: &[String], title: &str, text: bool) -> Layout {
        let mut l = Layout::margins(n, labels, title, text, 64);
        let avail_w = size.0 as i32 - l.left - l.right;
        let avail_h = size.1 as i32 - l.top - l.bottom;
        let cell = (avail_w.min(avail_h) / n as i32).max(1);
        // Labels that fit the bigger cell may not fit a smaller one.
        let l2 = Layout::margins(n, labels, title, text, cell);
        let cell = ((size.0 as i32 - l2.left - l2.right).min(size.1 as i32 - l2.top - l2.bottom) / n as i32).max(1);
        l = Layout { cell, ..l2 };
        l.left += ((size.0 as i32 - l.left - l.right - cell * l.n) / 2).max(0);
        l
    }

    fn size(&self) -> (u32, u32) {
        let side = self.cell * self.n;
        ((self.left + side + self.right) as u32, (self.top + side + self.bottom) as u32)
    }
}

/// Label as shown on the axes.
fn short(label: &str) -> String {
    ellipsize(label, 22)
}

/// Rendered width of `s` in pixels at `size` (a rough estimate when the font is unavailable).
fn text_width(s: &str, size: f64) -> i32 {
    match (FAMILY, size).into_font().box_size(s) {
        Ok((w, _)) => w as i32,
        Err(_) => (s.chars().count() as f64 * size * 0.6) as i32,
    }
}

fn draw(path: &Path, size: (u32, u32), title: &str, cells: Cells<'_>, text: bool) -> Result<(), ReportError> {
    let Cells { matrix, labels, normalize } = cells;
    check_size(path, size)?;
    let n = matrix.len();
    let lay = Layout::fit(size, n, labels, title, text);
    let err = plot_err(path);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    title_area(&root, title, text).map_err(&err)?;

    // Cell values in display units and the colour scale's maximum.
    let values: Vec<Vec<f64>> = matrix
        .iter()
        .map(|row| {
            let sum: u64 = row.iter().sum();
            row.iter()
                .map(|&c| {
                    if !normalize {
                        c as f64
                    } else if sum == 0 {
                        0.0
                    } else {
                        c as f64 / sum as f64
                    }
                })
                .collect()
        })
        .collect();
    let vmax = if normalize { 1.0 } else { values.iter().flatten().copied().fold(0.0, f64::max).max(1.0) };
    let cell_text = |v: f64| if normalize { format!("{v:.2}") } else { format!("{v:.0}") };

    // Largest font in which every number fits its cell; no numbers when none does.
    let mut num_font =
        if text && n <= MAX_ANNOTATED { (2.0 * (f64::from(lay.cell) * 0.15).floor()).clamp(10.0, 16.0) } else { 0.0 };
    if num_font > 0.0 {
        let widest = values.iter().flatten().map(|&v| cell_text(v)).max_by_key(|s| s.len()).unwrap_or_default();
        while num_font >= 10.0 && text_width(&widest, num_font) > lay.cell - 4 {
            num_font -= 2.0;
        }
        if num_font < 10.0 {
            num_font = 0.0;
        }
    }

    let (x0, y0, c) = (lay.left, lay.top, lay.cell);
    let gap = i32::from(c >= 12);
    for (i, row) in values.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let (x, y) = (x0 + j as i32 * c, y0 + i as i32 * c);
            let color = blues(v / vmax);
            root.draw(&Rectangle::new([(x, y), (x + c - gap, y + c - gap)], color.filled())).map_err(&err)?;
            if num_font > 0.0 {
                let ink = if luminance(color) < 0.5 { WHITE } else { INK };
                let style = (FAMILY, num_font).into_font().color(&ink).pos(Pos::new(HPos::Center, VPos::Center));
                root.draw_text(&cell_text(v), &style, (x + c / 2, y + c / 2)).map_err(&err)?;
            }
        }
    }
    let side = c * lay.n;
    draw_colorbar(&root, &lay, vmax, normalize, text).map_err(&err)?;
    if !text {
        root.present().map_err(&err)?;
        return Ok(());
    }

    // Tick labels: skip some when cells are too small for every label.
    let step = ((TICK_FONT as i32 + 2) / c.max(1) + 1) as usize;
    let tick = (FAMILY, TICK_FONT).into_font().color(&INK);
    for (k, label) in labels.iter().enumerate().step_by(step) {
        let mid = k as i32 * c + c / 2;
        let s = short(label);
        root.draw_text(&s, &tick.pos(Pos::new(HPos::Right, VPos::Center)), (x0 - 8, y0 + mid)).map_err(&err)?;
        if lay.rotate {
            let style = tick.transform(FontTransform::Rotate270).pos(Pos::new(HPos::Right, VPos::Center));
            root.draw_text(&s, &style, (x0 + mid, y0 + side + 8)).map_err(&err)?;
        } else {
            root.draw_text(&s, &tick.pos(Pos::new(HPos::Center, VPos::Top)), (x0 + mid, y0 + side + 8))
                .map_err(&err)?;
        }
    }
    let desc = (FAMILY, DESC_FONT, FontStyle::Bold).into_font().color(&MUTED);
    let label_h = lay.bottom - 34;
    root.draw_text(
        "Predicted",
        &desc.pos(Pos::new(HPos::Center, VPos::Top)),
        (x0 + side / 2, y0 + side + label_h + 10),
    )
    .map_err(&err)?;
    let ystyle = desc.transform(FontTransform::Rotate270).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw_text("True", &ystyle, (14, y0 + side / 2)).map_err(&err)?;
    root.present().map_err(&err)?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type AreaError<'a> = DrawingAreaErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>;

/// Vertical colour scale right of the matrix with ticks at 0, half and max.
fn draw_colorbar<'a>(
    root: &Area<'a>,
    lay: &Layout,
    vmax: f64,
    normalize: bool,
    text: bool,
) -> Result<(), AreaError<'a>> {
    let side = lay.cell * lay.n;
    let x = lay.left + side + CBAR.0;
    let (top, h) = (lay.top, side.max(1));
    for py in 0..h {
        let t = 1.0 - f64::from(py) / f64::from((h - 1).max(1));
        root.draw(&Rectangle::new([(x, top + py), (x + CBAR.1, top + py + 1)], blues(t).filled()))?;
    }
    root.draw(&Rectangle::new([(x, top), (x + CBAR.1, top + h)], RGBColor(180, 186, 192).stroke_width(1)))?;
    if text {
        let style = (FAMILY, 12.0).into_font().color(&MUTED).pos(Pos::new(HPos::Left, VPos::Center));
        for f in [0.0, 0.5, 1.0] {
            let y = top + ((1.0 - f) * f64::from(h - 1)) as i32;
            let v = f * vmax;
            let s = if normalize {
                format!("{v:.1}")
            } else if v >= 10_000.0 {
                format!("{v:.1e}")
            } else {
                format!("{v:.0}")
            };
            root.draw(&PathElement::new(vec![(x + CBAR.1, y), (x + CBAR.1 + 4, y)], MUTED.stroke_width(1)))?;
            root.draw_text(&s, &style, (x + CBAR.1 + 7, y))?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fitted_layout_stays_inside_the_image() {
        let labels: Vec<String> = (0..37).map(|i| format!("class number {i}")).collect();
        for size in [(400, 400), (800, 600), (1600, 1600)] {
            for text in [false, true] {
                let l = Layout::fit(size, labels.len(), &labels, "t", text);
                let side = l.cell * l.n;
                assert!(l.cell >= 1);
                assert!(l.left + side + l.right <= size.0 as i32, "{size:?} {text} {l:?}");
                assert!(l.top + side + l.bottom <= size.1 as i32, "{size:?} {text} {l:?}");
            }
        }
    }

    #[test]
    fn draws_without_text() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cm.png");
        let labels = vec!["a".to_string(), "b".to_string()];
        draw(&p, (200, 160), "t", Cells { matrix: &[vec![3, 1], vec![0, 4]], labels: &labels, normalize: true }, false)
            .unwrap();
        let m = opencv::imgcodecs::imread(p.to_str().unwrap(), opencv::imgcodecs::IMREAD_COLOR).unwrap();
        use opencv::core::MatTraitConst;
        assert_eq!((m.cols(), m.rows()), (200, 160));
    }

    #[test]
    fn long_labels_rotate_and_short_ones_do_not() {
        let short_labels: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let long_labels: Vec<String> = (0..3).map(|i| format!("a rather long class name {i}")).collect();
        assert!(!Layout::for_classes(3, &short_labels, "t", true).rotate);
        assert!(Layout::for_classes(3, &long_labels, "t", true).rotate);
        assert!(!Layout::for_classes(3, &long_labels, "t", false).rotate);
    }
}
