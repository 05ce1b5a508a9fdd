//! Fonts, colours and small drawing helpers shared by every plot.
//!
//! plotters is built with its `ab_glyph` text renderer, which knows no system fonts: a TTF must be
//! registered at runtime. [`font_status`] loads one once (the first plot triggers it); when none is
//! found, plots are drawn without any text and a one-line warning is printed to stderr.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::style::{FontStyle, RGBColor, register_font};

use super::ReportError;

/// Font family name the plots ask plotters for. Use even font sizes with it: plotters' ab_glyph
/// renderer truncates half-pixel glyph offsets, so odd sizes misalign glyphs by a pixel.
pub(crate) const FAMILY: &str = "sans-serif";

/// Environment variable naming a TTF to use instead of the system search.
pub const FONT_ENV: &str = "TLCV_FONT";

/// Regular-weight fonts tried in order (Debian `fonts-dejavu-core` first, as `cargo xtask setup` installs it).
const CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Whether plot text can be drawn, and with which font.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FontStatus {
    /// A font was registered; `bold` is the bold face when one sits next to it.
    Loaded { regular: PathBuf, bold: Option<PathBuf> },
    /// No usable font: plots carry no text. The message says what was tried and how to fix it.
    Missing(String),
}

impl FontStatus {
    /// True when plot text is drawn.
    pub fn has_text(&self) -> bool {
        matches!(self, FontStatus::Loaded { .. })
    }
}

static STATUS: OnceLock<FontStatus> = OnceLock::new();

/// Loads and registers a plot font on first call; later calls return the same answer.
///
/// Prints one warning to stderr when no font is found (plots are then drawn without text).
pub fn font_status() -> &'static FontStatus {
    STATUS.get_or_init(|| {
        let status = load_fonts();
        if let FontStatus::Missing(msg) = &status {
            eprintln!("warning: {msg}");
        }
        status
    })
}

/// True when the plots carry titles, labels and legends.
pub(crate) fn text_enabled() -> bool {
    font_status().has_text()
}

fn load_fonts() -> FontStatus {
    let mut tried: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os(FONT_ENV) {
        tried.push(PathBuf::from(p));
    }
    tried.extend(CANDIDATES.iter().map(PathBuf::from));
    for path in &tried {
        let Ok(bytes) = std::fs::read(path) else { continue };
        // plotters keeps `&'static [u8]`; the font lives for the whole process anyway (loaded once).
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        if register_font(FAMILY, FontStyle::Normal, bytes).is_err() {
            continue;
        }
        let bold = bold_sibling(path).and_then(|b| {
            let data = std::fs::read(&b).ok()?;
            let data: &'static [u8] = Box::leak(data.into_boxed_slice());
            register_font(FAMILY, FontStyle::Bold, data).ok().map(|_| b)
        });
        return FontStatus::Loaded { regular: path.clone(), bold };
    }
    FontStatus::Missing(format!(
        "no TTF font found for plot text (tried ${FONT_ENV} and {}); plots are drawn without text. \
         Install Debian `fonts-dejavu-core` (`cargo xtask setup` does) or set {FONT_ENV}=/path/to/font.ttf",
        CANDIDATES[0]
    ))
}

/// `DejaVuSans.ttf` -> `DejaVuSans-Bold.ttf`, `LiberationSans-Regular.ttf` -> `LiberationSans-Bold.ttf`.
fn bold_sibling(path: &Path) -> Option<PathBuf> {
    let stem = path.file_stem()?.to_str()?;
    let base = stem.strip_suffix("-Regular").unwrap_or(stem);
    let cand = path.with_file_name(format!("{base}-Bold.ttf"));
    cand.is_file().then_some(cand)
}

/// Colours for series, chosen to stay distinguishable and print well (a 10-colour qualitative palette).
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Colour of the `i`-th series (cycles).
pub(crate) fn series_color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Dark text colour used for titles and labels.
pub(crate) const INK: RGBColor = RGBColor(33, 37, 41);
/// Secondary text colour (axis descriptions, tick labels).
pub(crate) const MUTED: RGBColor = RGBColor(90, 98, 106);
/// Major grid lines.
pub(crate) const GRID: RGBColor = RGBColor(226, 230, 234);
/// Minor grid lines.
pub(crate) const GRID_LIGHT: RGBColor = RGBColor(242, 244, 246);
/// Axis lines.
pub(crate) const AXIS: RGBColor = RGBColor(150, 156, 162);

/// Linear interpolation on a white -> deep blue ramp, `t` in [0, 1] (for heat maps).
pub(crate) fn blues(t: f64) -> RGBColor {
    // Stops of a sequential blue ramp: light to dark.
    const STOPS: [(f64, [f64; 3]); 5] = [
        (0.0, [247.0, 251.0, 255.0]),
        (0.25, [198.0, 219.0, 239.0]),
        (0.5, [107.0, 174.0, 214.0]),
        (0.75, [33.0, 113.0, 181.0]),
        (1.0, [8.0, 48.0, 107.0]),
    ];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    for w in STOPS.windows(2) {
        let (t0, c0) = w[0];
        let (t1, c1) = w[1];
        if t <= t1 {
            let f = (t - t0) / (t1 - t0);
            let ch = |k: usize| (c0[k] + (c1[k] - c0[k]) * f).round() as u8;
            return RGBColor(ch(0), ch(1), ch(2));
        }
    }
    RGBColor(8, 48, 107)
}

/// Relative luminance in [0, 1], to pick black or white text on a coloured cell.
pub(crate) fn luminance(c: RGBColor) -> f64 {
    (0.2126 * f64::from(c.0) + 0.7152 * f64::from(c.1) + 0.0722 * f64::from(c.2)) / 255.0
}

/// Wraps any plotters error with the file being drawn.
pub(crate) fn plot_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> ReportError + '_ {
    move |e| ReportError::Plot { path: path.to_path_buf(), message: e.to_string() }
}

/// Rejects sizes plotters cannot draw into.
pub(crate) fn check_size(path: &Path, (w, h): (u32, u32)) -> Result<(), ReportError> {
    if w < 64 || h < 64 || w > 16384 || h > 16384 {
        return Err(ReportError::Invalid(format!(
            "{}: plot size {w}x{h} is outside 64..=16384 pixels per side",
            path.display()
        )));
    }
    Ok(())
}

/// Shortens `s` to at most `max` characters, ending with an ellipsis when cut.
pub(crate) fn ellipsize(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let keep: String = s.chars().take(max.saturating_sub(1)).collect();
    format!("{keep}…")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn blues_ramp_ends_and_is_monotone_in_luminance() {
        assert_eq!(blues(0.0), RGBColor(247, 251, 255));
        assert_eq!(blues(1.0), RGBColor(8, 48, 107));
        assert_eq!(blues(f64::NAN), blues(0.0));
        let mut last = f64::INFINITY;
        for i in 0..=20 {
            let l = luminance(blues(f64::from(i) / 20.0));
            assert!(l < last, "luminance must fall along the ramp");
            last = l;
        }
    }

    #[test]
    fn bold_sibling_names() {
        let dir = tempfile::tempdir().unwrap();
        let reg = dir.path().join("LiberationSans-Regular.ttf");
        let bold = dir.path().join("LiberationSans-Bold.ttf");
        std::fs::write(&bold, b"x").unwrap();
        assert_eq!(bold_sibling(&reg), Some(bold));
        assert_eq!(bold_sibling(&dir.path().join("DejaVuSans.ttf")), None);
    }

    #[test]
    fn ellipsize_cuts_long_labels() {
        assert_eq!(ellipsize("cat", 5), "cat");
        assert_eq!(ellipsize("potted plant", 6), "potte…");
    }
}
