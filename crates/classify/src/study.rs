//! "Which strategy for my data?": the same backbone trained from scratch, as a frozen feature extractor
//! and fine-tuned, at several training-set sizes, with accuracy and wall time side by side.

use std::time::Instant;

use serde::Serialize;
use tlcv_core::{
    freeze::Strategy,
    report::{self, Report, Series},
    run::RunDir,
};

use crate::{Result, config::ClassifyConfig, pipeline};

/// One trained configuration of the study.
#[derive(Debug, Clone, Serialize)]
pub struct StudyRow {
    /// Strategy.
    pub strategy: String,
    /// Training images per class.
    pub per_class: usize,
    /// Top-1 on the evaluation split.
    pub top1: f64,
    /// Macro F1 on the evaluation split.
    pub f1_macro: f64,
    /// Wall time of the whole run (cache, training, evaluation), seconds.
    pub seconds: f64,
    /// Split of the metrics.
    pub split: String,
}

/// Runs the study: for each size in `sizes` and each strategy, a run under `base/<strategy>-<n>`.
pub fn run_study(base_cfg: &ClassifyConfig, sizes: &[usize], study_dir: &RunDir) -> Result<Vec<StudyRow>> {
    let strategies = [Strategy::Scratch, Strategy::FeatureExtract, Strategy::FineTune];
    let mut rows = Vec::new();
    for &n in sizes {
        for strategy in strategies {
            let mut cfg = base_cfg.clone();
            cfg.data.limit_per_class = n;
            cfg.model.strategy = strategy;
            if strategy == Strategy::Scratch {
                cfg.model.weights = tlcv_core::weights::WeightsSource::None;
            }
            let name = format!("{}-{n}", strategy.name());
            let run = RunDir::create(study_dir.root(), "runs", Some(&name), "train")?;
            eprintln!("\n== study: {name} ==");
            let start = Instant::now();
            let outcome = pipeline::train(&cfg, &run, false, None)?;
            rows.push(StudyRow {
                strategy: strategy.name().to_string(),
                per_class: n,
                top1: outcome.metrics.top1,
                f1_macro: outcome.metrics.f1_macro,
                seconds: start.elapsed().as_secs_f64(),
                split: outcome.split,
            });
        }
    }
    write_outputs(base_cfg, &rows, sizes, study_dir)?;
    Ok(rows)
}

/// The winning strategy per size (highest top-1; ties go to the faster).
pub fn winners(rows: &[StudyRow], sizes: &[usize]) -> Vec<(usize, String)> {
    sizes
        .iter()
        .filter_map(|&n| {
            rows.iter()
                .filter(|r| r.per_class == n)
                .max_by(|a, b| a.top1.total_cmp(&b.top1).then(b.seconds.total_cmp(&a.seconds)))
                .map(|r| (n, r.strategy.clone()))
        })
        .collect()
}

/// Markdown table of the rows.
pub fn markdown_table(rows: &[StudyRow]) -> String {
    let mut text =
        String::from("| images/class | strategy | top-1 | macro F1 | wall time (s) |\n|---:|---|---:|---:|---:|\n");
    for r in rows {
        text +=
            &format!("| {} | {} | {:.4} | {:.4} | {:.1} |\n", r.per_class, r.strategy, r.top1, r.f1_macro, r.seconds);
    }
    text
}

fn write_outputs(cfg: &ClassifyConfig, rows: &[StudyRow], sizes: &[usize], dir: &RunDir) -> Result<()> {
    dir.write_json(&dir.root().join("study.json"), &rows)?;
    let table = markdown_table(rows);
    tlcv_core::run::write_atomic(&dir.root().join("study.md"), table.as_bytes())?;
    let per_strategy = |f: &dyn Fn(&StudyRow) -> f64| -> Vec<Series> {
        ["scratch", "feature-extract", "fine-tune"]
            .iter()
            .map(|s| {
                Series::new(*s, rows.iter().filter(|r| r.strategy == *s).map(|r| (r.per_class as f64, f(r))).collect())
            })
            .collect()
    };
    let acc = dir.plot("accuracy_vs_size.png");
    report::plots::line_plot(
        &acc,
        "Test top-1 vs training images per class",
        "images per class",
        &per_strategy(&|r| r.top1),
    )?;
    let time = dir.plot("time_vs_size.png");
    report::plots::line_plot(
        &time,
        "Wall time (s) vs training images per class",
        "images per class",
        &per_strategy(&|r| r.seconds),
    )?;
    let winners = winners(rows, sizes);
    let verdict: Vec<String> = winners.iter().map(|(n, s)| format!("{n} images/class: {s}")).collect();
    let headers = ["images/class", "strategy", "top-1", "macro F1", "seconds"].map(String::from).to_vec();
    let table_rows = rows
        .iter()
        .map(|r| {
            vec![
                r.per_class.to_string(),
                r.strategy.clone(),
                format!("{:.4}", r.top1),
                format!("{:.4}", r.f1_macro),
                format!("{:.1}", r.seconds),
            ]
        })
        .collect();
    Report::new("classify study: which strategy for my data?")
        .subtitle(format!("{} on {}", cfg.model.backbone, cfg.data.path))
        .paragraph(format!("Winner by test top-1: {}.", verdict.join("; ")))
        .metrics_table(headers, table_rows)
        .image("Accuracy vs training-set size", acc)
        .image("Wall time vs training-set size", time)
        .config(tlcv_core::config::to_toml(cfg)?)
        .write(&dir.report_html())?;
    Ok(())
}
