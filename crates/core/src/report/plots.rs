//! PNG plots for run reports: curves, bar charts, precision-recall curves, and (re-exported here)
//! confusion matrices and captioned image grids.
//!
//! Every function writes one PNG at the given path (the extension selects the format, so use
//! `.png`) and returns [`ReportError`] on bad input or a failed write. Text needs a font, see
//! [`super::style::font_status`]; without one the plots are drawn without text. About 500 lines: the
//! plot kinds share their frame, axes and legend code, which is why they live in one file.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::ReportError;
use super::style::{
    AXIS, FAMILY, GRID, GRID_LIGHT, INK, MUTED, check_size, ellipsize, plot_err, series_color, text_enabled,
};

pub use super::confusion::{confusion_matrix, confusion_matrix_sized};
pub use super::image_grid::{Tile, image_grid, image_grid_size};

/// One named curve: `(x, y)` points in drawing order. Non-finite points are skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Points in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Half-heights of vertical error bars, one per point (e.g. a standard deviation); empty for none.
    pub errors: Vec<f64>,
}

impl Series {
    /// A named series.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, errors: Vec::new() }
    }

    /// The same series with error bars `y ± errors[i]` at its points.
    pub fn with_errors(mut self, errors: Vec<f64>) -> Self {
        self.errors = errors;
        self
    }

    /// The lowest and highest y the series draws, error bars included.
    fn y_extent(&self) -> impl Iterator<Item = f64> + '_ {
        self.points.iter().enumerate().flat_map(|(i, p)| {
            let e = self.errors.get(i).copied().filter(|e| e.is_finite()).unwrap_or(0.0);
            [p.1 - e, p.1 + e]
        })
    }
}

/// Default size of [`line_plot`] images.
pub const LINE_SIZE: (u32, u32) = (960, 600);
/// Default size of [`pr_curves`] images.
pub const PR_SIZE: (u32, u32) = (760, 700);
/// Width of [`bar_plot`] images (their height grows with the number of bars).
pub const BAR_WIDTH: u32 = 900;

/// Options of [`line_plot_with`].
#[derive(Debug, Clone)]
pub struct LineOptions {
    /// Image size in pixels.
    pub size: (u32, u32),
    /// Y-axis description (empty for none).
    pub y_label: String,
    /// Fixed y range; `None` fits the data with a small margin.
    pub y_range: Option<(f64, f64)>,
}

impl Default for LineOptions {
    fn default() -> Self {
        LineOptions { size: LINE_SIZE, y_label: String::new(), y_range: None }
    }
}

/// Line plot of one or more series (loss or metric curves) with legend, axes and grid.
pub fn line_plot(path: &Path, title: &str, x_label: &str, series: &[Series]) -> Result<(), ReportError> {
    line_plot_with(path, title, x_label, series, &LineOptions::default())
}

/// [`line_plot`] with a size, a y-axis description and an optional fixed y range.
pub fn line_plot_with(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[Series],
    opts: &LineOptions,
) -> Result<(), ReportError> {
    let (x0, x1) = fit_range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)), 0.02);
    let (y0, y1) = match opts.y_range {
        Some((a, b)) if a.is_finite() && b.is_finite() && a < b => (a, b),
        Some(r) => return Err(ReportError::Invalid(format!("invalid y range {r:?}"))),
        None => fit_range(series.iter().flat_map(Series::y_extent), 0.05),
    };
    let frame = Frame {
        title,
        x_label,
        y_label: &opts.y_label,
        x: (x0, x1),
        y: (y0, y1),
        legend: SeriesLabelPosition::UpperRight,
    };
    draw_curves(path, opts.size, &frame, series, text_enabled())
}

/// Precision-recall curves (x = recall, y = precision, both in [0, 1]); put AP in the series names.
pub fn pr_curves(path: &Path, title: &str, curves: &[Series]) -> Result<(), ReportError> {
    pr_curves_sized(path, PR_SIZE, title, curves)
}

/// [`pr_curves`] at a given size.
pub fn pr_curves_sized(path: &Path, size: (u32, u32), title: &str, curves: &[Series]) -> Result<(), ReportError> {
    let frame = Frame {
        title,
        x_label: "Recall",
        y_label: "Precision",
        x: (0.0, 1.0),
        y: (0.0, 1.02),
        legend: SeriesLabelPosition::LowerLeft,
    };
    draw_curves(path, size, &frame, curves, text_enabled())
}

/// Axes and labels of a curve plot.
pub(crate) struct Frame<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub x: (f64, f64),
    pub y: (f64, f64),
    pub legend: SeriesLabelPosition,
}

/// Draws `series` as lines (with point markers when sparse) in `frame`; `text` false draws no text.
pub(crate) fn draw_curves(
    path: &Path,
    size: (u32, u32),
    frame: &Frame<'_>,
    series: &[Series],
    text: bool,
) -> Result<(), ReportError> {
    check_size(path, size)?;
    let err = plot_err(path);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let plot_area = title_area(&root, frame.title, text).map_err(&err)?;

    let mut builder = ChartBuilder::on(&plot_area);
    builder.margin_right(24).margin_top(8).margin_left(8).margin_bottom(8);
    if text {
        builder.x_label_area_size(52).y_label_area_size(if frame.y_label.is_empty() { 56 } else { 70 });
    } else {
        builder.x_label_area_size(6).y_label_area_size(6);
    }
    let mut chart = builder.build_cartesian_2d(frame.x.0..frame.x.1, frame.y.0..frame.y.1).map_err(&err)?;

    let mut mesh = chart.configure_mesh();
    mesh.bold_line_style(GRID.stroke_width(1))
        .light_line_style(GRID_LIGHT.stroke_width(1))
        .max_light_lines(2)
        .axis_style(AXIS.stroke_width(1))
        .x_label_formatter(&|v| fmt_tick(*v))
        .y_label_formatter(&|v| fmt_tick(*v));
    if text {
        mesh.x_labels(10)
            .y_labels(8)
            .label_style((FAMILY, 14).into_font().color(&MUTED))
            .axis_desc_style((FAMILY, 16).into_font().color(&INK))
            .x_desc(frame.x_label)
            .y_desc(frame.y_label);
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(&err)?;

    for (i, s) in series.iter().enumerate() {
        let color = series_color(i);
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        let drawn = chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2))).map_err(&err)?;
        if text && !s.name.is_empty() {
            drawn
                .label(ellipsize(&s.name, 40))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3)));
        }
        // Markers help read epoch-level curves; on dense (per-step) curves they would be clutter.
        if pts.len() <= 40 {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(&err)?;
        }
        let bars = s.points.iter().zip(&s.errors).filter(|((x, y), e)| x.is_finite() && y.is_finite() && e.is_finite());
        // A vertical line from y - e to y + e with caps 1/60 of the x range wide.
        let cap = (frame.x.1 - frame.x.0) / 120.0;
        let segments = bars.flat_map(|(&(x, y), &e)| {
            [
                vec![(x, y - e), (x, y + e)],
                vec![(x - cap, y - e), (x + cap, y - e)],
                vec![(x - cap, y + e), (x + cap, y + e)],
            ]
        });
        chart.draw_series(segments.map(|pts| PathElement::new(pts, color.stroke_width(2)))).map_err(&err)?;
    }
    if text && series.iter().any(|s| !s.name.is_empty()) {
        chart
            .configure_series_labels()
            .position(frame.legend.clone())
            .margin(12)
            .legend_area_size(30)
            .background_style(WHITE.mix(0.9))
            .border_style(GRID.stroke_width(1))
            .label_font((FAMILY, 14).into_font().color(&INK))
            .draw()
            .map_err(&err)?;
    }
    root.present().map_err(&err)?;
    Ok(())
}

/// Horizontal bar chart, one bar per label (e.g. per-class IoU or F1), with values printed at
/// the bar ends and a line at the mean. NaN values show as "n/a". Height grows with the bar count.
pub fn bar_plot(path: &Path, title: &str, labels: &[String], values: &[f64]) -> Result<(), ReportError> {
    let height = (110 + 30 * labels.len() as u32).clamp(320, 8000);
    bar_plot_sized(path, (BAR_WIDTH, height), title, labels, values)
}

/// [`bar_plot`] at a given size.
pub fn bar_plot_sized(
    path: &Path,
    size: (u32, u32),
    title: &str,
    labels: &[String],
    values: &[f64],
) -> Result<(), ReportError> {
    draw_bars(path, size, title, (labels, values), text_enabled())
}

/// Draws one bar per `(label, value)`.
pub(crate) fn draw_bars(
    path: &Path,
    size: (u32, u32),
    title: &str,
    (labels, values): (&[String], &[f64]),
    text: bool,
) -> Result<(), ReportError> {
    check_size(path, size)?;
    if labels.len() != values.len() {
        return Err(ReportError::Invalid(format!(
            "bar plot {}: {} labels for {} values",
            path.display(),
            labels.len(),
            values.len()
        )));
    }
    if labels.is_empty() {
        return Err(ReportError::Invalid(format!("bar plot {}: no bars", path.display())));
    }
    let n = labels.len();
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let lo = finite.iter().copied().fold(0.0f64, f64::min);
    let hi = finite.iter().copied().fold(0.0f64, f64::max);
    // Scores in [0, 1] get a fixed axis so that plots of different runs compare at a glance.
    let hi = if lo >= 0.0 && hi <= 1.0 {
        1.0
    } else if hi > 0.0 {
        hi
    } else {
        1.0
    };
    let span = hi - lo;
    let (x0, x1) = (if lo < 0.0 { lo - 0.12 * span } else { 0.0 }, hi + 0.14 * span);

    let err = plot_err(path);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let plot_area = title_area(&root, title, text).map_err(&err)?;
    let shown: Vec<String> = labels.iter().map(|l| ellipsize(l, 26)).collect();
    let label_w = shown.iter().map(|l| l.chars().count()).max().unwrap_or(1) as u32 * 8 + 24;

    let mut builder = ChartBuilder::on(&plot_area);
    builder.margin_right(24).margin_top(6).margin_left(8).margin_bottom(8);
    if text {
        builder.x_label_area_size(36).y_label_area_size(label_w.clamp(60, 240));
    } else {
        builder.x_label_area_size(6).y_label_area_size(6);
    }
    // Row k (from the bottom) spans [k, k+1] and holds label n-1-k, so the first label is on top.
    let rows = n as f64;
    let mut chart = builder.build_cartesian_2d(x0..x1, 0.0..rows).map_err(&err)?;
    let row_of = |i: usize| (n - 1 - i) as f64;
    let mut mesh = chart.configure_mesh();
    mesh.disable_y_mesh()
        .bold_line_style(GRID.stroke_width(1))
        .light_line_style(GRID_LIGHT.stroke_width(1))
        .max_light_lines(2)
        .axis_style(AXIS.stroke_width(1))
        .x_label_formatter(&|v| fmt_tick(*v))
        .y_labels(0);
    if text {
        mesh.x_labels(8).label_style((FAMILY, 14).into_font().color(&INK));
    } else {
        mesh.x_labels(0);
    }
    mesh.draw().map_err(&err)?;

    let row_px = (chart.backend_coord(&(0.0, 0.0)).1 - chart.backend_coord(&(0.0, 1.0)).1).max(1);
    let gap = (f64::from(row_px) * 0.18).round() as u32;
    let bar_color = series_color(0);
    chart
        .draw_series(values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| {
            let k = row_of(i);
            let mut r = Rectangle::new([(0.0, k), (v, k + 1.0)], bar_color.filled());
            r.set_margin(gap, gap, 0, 0);
            r
        }))
        .map_err(&err)?;

    if text {
        // Class names left of the axis, drawn in pixel space (outside the plotting area).
        let name_style = (FAMILY, 14).into_font().color(&INK).pos(Pos::new(HPos::Right, VPos::Center));
        for (i, label) in shown.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(x0, row_of(i) + 0.5));
            root.draw(&PathElement::new(vec![(px - 4, py), (px, py)], AXIS.stroke_width(1))).map_err(&err)?;
            root.draw_text(label, &name_style, (px - 8, py)).map_err(&err)?;
        }
        let style = (FAMILY, 12).into_font().color(&INK).pos(Pos::new(HPos::Left, VPos::Center));
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                let (at, s) = if v.is_finite() { (v.max(0.0), fmt_value(v)) } else { (0.0, "n/a".into()) };
                EmptyElement::at((at, row_of(i) + 0.5)) + Text::new(s, (6, 0), style.clone())
            }))
            .map_err(&err)?;
    }
    if finite.len() > 1 {
        let mean = finite.iter().sum::<f64>() / finite.len() as f64;
        let line_color = RGBColor(214, 39, 40);
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(mean, 0.0), (mean, rows)], line_color.stroke_width(2))))
            .map_err(&err)?;
        if text {
            // The key goes in the title band, right-aligned, where no bar can hide it.
            let (w, _) = root.dim_in_pixel();
            let label = format!("mean {}", fmt_value(mean));
            let style = (FAMILY, 14).into_font().color(&INK).pos(Pos::new(HPos::Right, VPos::Center));
            let text_w = (FAMILY, 14).into_font().box_size(&label).map_or(90, |(tw, _)| tw as i32);
            let (x, y) = (w as i32 - 24, 40);
            root.draw_text(&label, &style, (x, y)).map_err(&err)?;
            root.draw(&PathElement::new(vec![(x - text_w - 30, y), (x - text_w - 8, y)], line_color.stroke_width(2)))
                .map_err(&err)?;
        }
    }
    root.present().map_err(&err)?;
    Ok(())
}

/// Draws the title band (when there is text) and returns the area below it.
pub(crate) fn title_area<'a>(
    root: &DrawingArea<BitMapBackend<'a>, Shift>,
    title: &str,
    text: bool,
) -> Result<DrawingArea<BitMapBackend<'a>, Shift>, DrawingAreaErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>>
{
    if !text || title.is_empty() {
        return Ok(root.margin(10, 0, 0, 0));
    }
    let (w, _) = root.dim_in_pixel();
    let (top, rest) = root.split_vertically(54);
    let style = TextStyle::from((FAMILY, 22, FontStyle::Bold).into_font())
        .color(&INK)
        .pos(Pos::new(HPos::Center, VPos::Center));
    top.draw_text(&ellipsize(title, (w as usize / 12).max(10)), &style, (w as i32 / 2, 30))?;
    Ok(rest)
}

/// Data range of `values` (finite ones) with `pad` fraction added on both ends; never empty.
pub(crate) fn fit_range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let d = if lo.abs() > 1e-12 { lo.abs() * 0.05 } else { 0.5 };
        return (lo - d, hi + d);
    }
    let d = (hi - lo) * pad;
    (lo - d, hi + d)
}

/// Axis tick text: integers without decimals, other values with up to 4 significant digits.
pub(crate) fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if (v - v.round()).abs() < 1e-9 && v.abs() < 1e9 {
        return format!("{}", v.round() as i64);
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Value text next to a bar: 3 decimals for scores, fewer for large values.
pub(crate) fn fmt_value(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use opencv::core::{Mat, MatTraitConst, Vec3b};

    fn read(path: &Path) -> Mat {
        let m = opencv::imgcodecs::imread(path.to_str().unwrap(), opencv::imgcodecs::IMREAD_COLOR).unwrap();
        assert!(!m.empty());
        m
    }

    /// Pixels drawn in the text colour [`INK`] (titles, legends, bar labels).
    fn ink_pixels(m: &Mat) -> usize {
        let mut n = 0;
        for y in 0..m.rows() {
            for x in 0..m.cols() {
                let p: &Vec3b = m.at_2d(y, x).unwrap();
                n += usize::from(p[2] == INK.0 && p[1] == INK.1 && p[0] == INK.2);
            }
        }
        n
    }

    /// Without a font every plot is still drawn, at its size, and carries no title text.
    #[test]
    fn plots_without_text() {
        let font = super::super::style::font_status();
        assert!(font.has_text(), "{font:?}: install fonts-dejavu-core (cargo xtask setup does)");
        let dir = tempfile::tempdir().unwrap();
        let s = [Series::new("a", vec![(0.0, 1.0), (1.0, 0.5), (2.0, 0.2)])];
        let frame = Frame {
            title: "Title",
            x_label: "x",
            y_label: "y",
            x: (0.0, 2.0),
            y: (0.0, 1.0),
            legend: SeriesLabelPosition::UpperRight,
        };
        for text in [true, false] {
            let p = dir.path().join(format!("line_{text}.png"));
            draw_curves(&p, (400, 300), &frame, &s, text).unwrap();
            let m = read(&p);
            assert_eq!((m.cols(), m.rows()), (400, 300));
            // Text-coloured pixels appear exactly when text is drawn.
            assert_eq!(ink_pixels(&m) > 20, text, "text={text}");
            let p = dir.path().join(format!("bars_{text}.png"));
            draw_bars(&p, (300, 200), "Title", (&["a".into(), "b".into()], &[0.2, 0.9]), text).unwrap();
            let m = read(&p);
            assert_eq!((m.cols(), m.rows()), (300, 200));
            assert_eq!(ink_pixels(&m) > 20, text, "text={text}");
        }
        let tile = super::Tile {
            rgb: vec![0; 8 * 8 * 3],
            width: 8,
            height: 8,
            caption: "c".into(),
            caption_color: [0, 255, 0],
        };
        let p = dir.path().join("grid.png");
        let size = super::super::image_grid::draw_grid(&p, &[tile.clone(), tile], 2, false).unwrap();
        let m = read(&p);
        assert_eq!((m.cols() as u32, m.rows() as u32), size);
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(fmt_tick(0.0), "0");
        assert_eq!(fmt_tick(3.0), "3");
        assert_eq!(fmt_tick(-12.0), "-12");
        assert_eq!(fmt_tick(0.25), "0.25");
        assert_eq!(fmt_tick(0.1 + 0.2), "0.3");
        assert_eq!(fmt_tick(1.23456), "1.235");
        assert_eq!(fmt_tick(2.5e-5), "2.50e-5");
    }

    #[test]
    fn fit_range_pads_and_handles_degenerate_input() {
        assert_eq!(fit_range([1.0, 3.0].into_iter(), 0.0), (1.0, 3.0));
        let (a, b) = fit_range([1.0, 3.0, f64::NAN].into_iter(), 0.5);
        assert_eq!((a, b), (0.0, 4.0));
        assert_eq!(fit_range(std::iter::empty(), 0.1), (0.0, 1.0));
        let (a, b) = fit_range([2.0].into_iter(), 0.1);
        assert!(a < 2.0 && b > 2.0);
        let (a, b) = fit_range([0.0].into_iter(), 0.1);
        assert_eq!((a, b), (-0.5, 0.5));
    }
}
