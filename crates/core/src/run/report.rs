//! The sections every task's `report.html` shares: the training facts at the top, curves over the
//! epochs, and at the bottom the skipped files and the configuration. A task adds its own metrics,
//! tables and pictures in between.

use serde::Serialize;

use super::dir::RunDir;
use crate::{
    Result,
    report::{Figure, Report, Series, line_plot},
    train::{EpochRecord, FitSummary},
};

/// Most lines of the skipped-files block (the rest are counted).
const MAX_SKIPPED_LINES: usize = 200;

/// Which half of an [`EpochRecord`] a curve reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The mean training loss terms.
    Train,
    /// The validation metrics.
    Val,
}

/// One curve over the epochs: its legend and the value it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Curve {
    /// Legend.
    pub label: String,
    /// Training terms or validation metrics.
    pub split: Split,
    /// Key in that map.
    pub key: String,
}

impl Curve {
    /// A training term.
    pub fn train(label: impl Into<String>, key: impl Into<String>) -> Self {
        Self { label: label.into(), split: Split::Train, key: key.into() }
    }

    /// A validation metric.
    pub fn val(label: impl Into<String>, key: impl Into<String>) -> Self {
        Self { label: label.into(), split: Split::Val, key: key.into() }
    }

    fn series(&self, history: &[EpochRecord]) -> Series {
        let points = history
            .iter()
            .filter_map(|r| {
                let values = if self.split == Split::Train { &r.train } else { &r.val };
                values.get(&self.key).map(|&v| ((r.epoch + 1) as f64, v))
            })
            .collect();
        Series::new(self.label.as_str(), points)
    }
}

/// Draws `curves` over the epochs into `run/plots/<file>` and returns its figure, or `None` when no
/// curve has a point (no epoch finished, or the metrics were not computed).
pub fn epoch_plot(
    run: &RunDir,
    file: &str,
    title: &str,
    history: &[EpochRecord],
    curves: &[Curve],
) -> Result<Option<Figure>> {
    let series: Vec<Series> = curves.iter().map(|c| c.series(history)).filter(|s| !s.points.is_empty()).collect();
    if series.is_empty() {
        return Ok(None);
    }
    let path = run.plot(file);
    line_plot(&path, title, "epoch", &series)?;
    Ok(Some(Figure::new(title, path)))
}

/// The plots of [`epoch_plot`] that have data, each given as `(file, title, curves)`.
pub fn epoch_plots(run: &RunDir, history: &[EpochRecord], plots: &[(&str, &str, &[Curve])]) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for &(file, title, curves) in plots {
        figures.extend(epoch_plot(run, file, title, history, curves)?);
    }
    Ok(figures)
}

/// The facts of a training run: epochs, best epoch (1-based) and training time.
pub fn fit_facts(fit: &FitSummary) -> Vec<(String, String)> {
    vec![
        ("epochs".to_string(), fit.history.len().to_string()),
        ("best epoch".to_string(), fit.best_epoch.map_or("-".into(), |e| (e + 1).to_string())),
        ("training time".to_string(), format!("{:.1} s", fit.seconds)),
    ]
}

/// What every task's report shows besides its own results: the configuration, the class names, the
/// epoch history, the skipped inputs and the facts at the top of the page.
#[derive(Debug)]
pub struct RunRecord<'a, C> {
    /// The run's configuration, shown at the end of the page.
    pub cfg: &'a C,
    /// Class names.
    pub classes: &'a [String],
    /// Per-epoch history.
    pub history: &'a [EpochRecord],
    /// Skipped inputs (and label problems) with reasons.
    pub skipped: &'a [String],
    /// Extra facts (name, value) shown at the top.
    pub facts: Vec<(String, String)>,
}

/// Appends the closing sections (`record`'s skipped inputs under `skipped_title` when there are any,
/// then its configuration) and writes the page to `run/report.html`.
pub fn finish<C: Serialize>(
    run: &RunDir,
    mut page: Report,
    skipped_title: &str,
    record: &RunRecord<'_, C>,
) -> Result<()> {
    let skipped = record.skipped;
    if !skipped.is_empty() {
        let mut lines: Vec<&str> = skipped.iter().take(MAX_SKIPPED_LINES).map(String::as_str).collect();
        let more = format!("... and {} more", skipped.len().saturating_sub(MAX_SKIPPED_LINES));
        if skipped.len() > MAX_SKIPPED_LINES {
            lines.push(&more);
        }
        page = page.code(skipped_title, lines.join("\n"));
    }
    page.config(crate::config::to_toml(record.cfg)?).write(&run.report_html())?;
    Ok(())
}
