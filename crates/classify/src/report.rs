//! The classification report: curves, confusion matrices, per-class scores, a grid of validation images
//! (errors first) and `report.html`.

use tlcv_core::{
    data::{self, DecodeOptions, transforms},
    metrics::ClassificationMetrics,
    report::{self, Figure, Report, Tile},
    run::{
        RunDir,
        report::{Curve, RunRecord, epoch_plots, finish},
    },
};

use crate::{Result, config::ClassifyConfig, evaluate::Prediction};

/// Everything the report shows.
#[derive(Debug)]
pub struct ReportInput<'a> {
    /// Configuration, class names, history, skipped inputs and facts.
    pub record: RunRecord<'a, ClassifyConfig>,
    /// Final metrics.
    pub metrics: &'a ClassificationMetrics,
    /// Split of the final metrics.
    pub split: &'a str,
    /// Predictions on that split.
    pub predictions: &'a [Prediction],
}

/// Draws the plots into `run/plots/` and writes `run/report.html`.
pub fn write(run: &RunDir, input: &ReportInput<'_>) -> Result<()> {
    let loss = [Curve::train("train loss", "loss"), Curve::val("val loss", "loss")];
    let scores = [Curve::val("top-1", "top1"), Curve::val("top-5", "top5"), Curve::val("macro F1", "f1_macro")];
    let figures = epoch_plots(
        run,
        input.record.history,
        &[("loss.png", "Loss", &loss), ("metrics.png", "Validation metrics", &scores)],
    )?;
    let cm = run.plot("confusion_matrix.png");
    report::plots::confusion_matrix(
        &cm,
        &format!("Confusion matrix ({})", input.split),
        &input.metrics.confusion,
        input.record.classes,
        false,
    )?;
    let cm_norm = run.plot("confusion_matrix_normalized.png");
    report::plots::confusion_matrix(
        &cm_norm,
        "Confusion matrix, normalised by true class",
        &input.metrics.confusion,
        input.record.classes,
        true,
    )?;
    let f1 = run.plot("per_class_f1.png");
    let f1_values: Vec<f64> =
        input.record.classes.iter().map(|c| input.metrics.per_class.get(c).map_or(f64::NAN, |s| s.f1)).collect();
    report::plots::bar_plot(&f1, "F1 per class", input.record.classes, &f1_values)?;
    let grid = run.plot("predictions.png");
    write_grid(&grid, input)?;

    let m = input.metrics;
    let mut facts = input.record.facts.clone();
    facts.extend([
        (format!("top-1 ({})", input.split), format!("{:.4}", m.top1)),
        (format!("top-5 ({})", input.split), format!("{:.4}", m.top5)),
        ("macro F1".to_string(), format!("{:.4}", m.f1_macro)),
        ("images evaluated".to_string(), m.samples.to_string()),
        ("images skipped".to_string(), input.record.skipped.len().to_string()),
    ]);
    let rows: Vec<Vec<String>> = input
        .record
        .classes
        .iter()
        .filter_map(|c| input.metrics.per_class.get(c).map(|s| (c, s)))
        .map(|(c, s)| {
            vec![
                c.clone(),
                format!("{:.4}", s.precision),
                format!("{:.4}", s.recall),
                format!("{:.4}", s.f1),
                s.support.to_string(),
            ]
        })
        .chain(std::iter::once(vec![
            "macro".to_string(),
            format!("{:.4}", m.precision_macro),
            format!("{:.4}", m.recall_macro),
            format!("{:.4}", m.f1_macro),
            m.samples.to_string(),
        ]))
        .collect();
    let headers = ["class", "precision", "recall", "F1", "support"].map(String::from).to_vec();
    let page = Report::new(format!("classify: {}", run.root().display()))
        .subtitle(format!(
            "{} · {} · {}",
            input.record.cfg.model.backbone, input.record.cfg.model.strategy, input.record.cfg.data.path
        ))
        .key_values(facts)
        .heading("Metrics per class")
        .metrics_table(headers, rows)
        .heading("Curves and confusion")
        .images(figures)
        .images(vec![
            Figure::new("Confusion matrix", cm),
            Figure::new("Normalised", cm_norm),
            Figure::new("F1 per class", f1),
        ])
        .heading(format!("Predictions on {} (errors first)", input.split))
        .image("Predicted / true", grid);
    finish(run, page, "Skipped images", &input.record)?;
    Ok(())
}

/// A grid of evaluated images captioned `predicted (p) / true`, wrong ones first.
fn write_grid(path: &std::path::Path, input: &ReportInput<'_>) -> Result<()> {
    let mut order: Vec<&Prediction> = input.predictions.iter().collect();
    order.sort_by_key(|p| (p.predicted == p.label, p.path.clone()));
    let mut tiles = Vec::new();
    for p in order.into_iter().take(input.record.cfg.eval.grid_images) {
        let Ok(img) = data::decode_file(&p.path, &DecodeOptions::default()) else { continue };
        let thumb = transforms::resize(&img, 96, 96)?;
        let name = |i: usize| input.record.classes.get(i).cloned().unwrap_or_else(|| i.to_string());
        let correct = p.predicted == p.label;
        tiles.push(Tile {
            rgb: thumb.data,
            width: 96,
            height: 96,
            caption: if correct {
                format!("{} {:.2}", name(p.predicted), p.prob)
            } else {
                format!("{} {:.2} / {}", name(p.predicted), p.prob, name(p.label))
            },
            caption_color: if correct { Tile::CORRECT } else { Tile::WRONG },
        });
    }
    if tiles.is_empty() {
        tiles.push(Tile::placeholder("no images"));
    }
    report::plots::image_grid(path, &tiles, 8)?;
    Ok(())
}
