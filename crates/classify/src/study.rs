//! "Which strategy for my data?": each backbone trained from scratch, as a frozen feature extractor
//! and fine-tuned, each strategy with its own recipe ([`ClassifyConfig::with_recipe`]), at several
//! training-set sizes and over several seeds, with mean ± standard deviation of accuracy and wall time
//! and a verdict per size that says when the best is within noise of the next.

use std::time::Instant;

use serde::Serialize;
use tlcv_core::{
    backbones::Arch,
    freeze::Strategy,
    report::{self, Report, Series},
    run::RunDir,
    weights::WeightsSource,
};

use crate::{Result, config::ClassifyConfig, pipeline};

/// What to compare.
#[derive(Debug, Clone)]
pub struct StudyPlan {
    /// Backbones; those without installable pretrained weights (and no `--weights` file) run from
    /// scratch only.
    pub backbones: Vec<Arch>,
    /// Training images per class.
    pub sizes: Vec<usize>,
    /// Seeds per configuration (`train.seed` = 0, 1, ...).
    pub seeds: usize,
}

/// One trained configuration of the study.
#[derive(Debug, Clone, Serialize)]
pub struct StudyRow {
    /// Backbone.
    pub backbone: Arch,
    /// Strategy.
    pub strategy: String,
    /// The strategy's recipe, in words.
    pub recipe: String,
    /// Training images per class.
    pub per_class: usize,
    /// `train.seed`.
    pub seed: u64,
    /// Top-1 on the evaluation split.
    pub top1: f64,
    /// Macro F1 on the evaluation split.
    pub f1_macro: f64,
    /// Wall time of the whole run (cache, training, evaluation), seconds.
    pub seconds: f64,
    /// Split of the metrics.
    pub split: String,
}

/// The seeds of one (backbone, strategy, size), summarised.
#[derive(Debug, Clone, Serialize)]
pub struct StudySummary {
    /// Backbone.
    pub backbone: Arch,
    /// Strategy.
    pub strategy: String,
    /// The strategy's recipe, in words.
    pub recipe: String,
    /// Training images per class.
    pub per_class: usize,
    /// Number of seeds.
    pub seeds: usize,
    /// Mean and sample standard deviation of top-1.
    pub top1: (f64, f64),
    /// Mean and sample standard deviation of macro F1.
    pub f1_macro: (f64, f64),
    /// Mean wall time, seconds.
    pub seconds: f64,
}

impl StudySummary {
    /// `backbone strategy`, the name of the configuration.
    pub fn label(&self) -> String {
        format!("{} {}", self.backbone, self.strategy)
    }
}

/// The strategies a backbone can run: all three when pretrained weights can be had, else scratch.
fn strategies_for(cfg: &ClassifyConfig) -> Vec<Strategy> {
    let weights = if cfg.model.weights.is_none() { WeightsSource::ImageNet } else { cfg.model.weights.clone() };
    let pretrained = weights.resolve(cfg.model.backbone).is_ok();
    if pretrained {
        vec![Strategy::Scratch, Strategy::FeatureExtract, Strategy::FineTune]
    } else {
        eprintln!("study: no pretrained weights for {} here; it runs from scratch only", cfg.model.backbone);
        vec![Strategy::Scratch]
    }
}

/// Runs the study: one run per backbone, size, strategy and seed under `study_dir/runs/`.
pub fn run_study(base_cfg: &ClassifyConfig, plan: &StudyPlan, study_dir: &RunDir) -> Result<Vec<StudyRow>> {
    let mut rows = Vec::new();
    for &backbone in &plan.backbones {
        let mut backbone_cfg = base_cfg.clone();
        backbone_cfg.model.backbone = backbone;
        for strategy in strategies_for(&backbone_cfg) {
            let recipe_cfg = backbone_cfg.with_recipe(strategy);
            for &n in &plan.sizes {
                for seed in 0..plan.seeds.max(1) as u64 {
                    let mut cfg = recipe_cfg.clone();
                    cfg.data.limit_per_class = n;
                    cfg.train.seed = seed;
                    let name = format!("{backbone}-{}-{n}-s{seed}", strategy.name());
                    let run = RunDir::create(study_dir.root(), "runs", Some(&name), "train")?;
                    eprintln!("\n== study: {name} ({}) ==", cfg.recipe_summary());
                    let start = Instant::now();
                    let outcome = pipeline::train(&cfg, &run, false, None)?;
                    rows.push(StudyRow {
                        backbone,
                        strategy: strategy.name().to_string(),
                        recipe: cfg.recipe_summary(),
                        per_class: n,
                        seed,
                        top1: outcome.metrics.top1,
                        f1_macro: outcome.metrics.f1_macro,
                        seconds: start.elapsed().as_secs_f64(),
                        split: outcome.split,
                    });
                    // Written after every run, so an interrupted study keeps what it measured.
                    study_dir.write_json(&study_dir.root().join("study.json"), &rows)?;
                }
            }
        }
    }
    write_outputs(base_cfg, &rows, study_dir)?;
    Ok(rows)
}

/// Mean and sample standard deviation (0 for a single value).
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The rows grouped by (backbone, strategy, size), in the order they first appear.
pub fn summarize(rows: &[StudyRow]) -> Vec<StudySummary> {
    let mut keys: Vec<(Arch, String, usize)> = Vec::new();
    for r in rows {
        let key = (r.backbone, r.strategy.clone(), r.per_class);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .map(|(backbone, strategy, per_class)| {
            let group: Vec<&StudyRow> = rows
                .iter()
                .filter(|r| r.backbone == backbone && r.strategy == strategy && r.per_class == per_class)
                .collect();
            let pick = |f: fn(&StudyRow) -> f64| group.iter().map(|r| f(r)).collect::<Vec<f64>>();
            StudySummary {
                recipe: group.first().map(|r| r.recipe.clone()).unwrap_or_default(),
                backbone,
                strategy,
                per_class,
                seeds: group.len(),
                top1: mean_std(&pick(|r| r.top1)),
                f1_macro: mean_std(&pick(|r| r.f1_macro)),
                seconds: mean_std(&pick(|r| r.seconds)).0,
            }
        })
        .collect()
}

/// The verdict at one size.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Training images per class.
    pub per_class: usize,
    /// The configuration with the highest mean top-1.
    pub best: String,
    /// Configurations whose mean ± std interval overlaps the best's: not distinguishable from it with
    /// these seeds.
    pub within_noise: Vec<String>,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} images/class: {}", self.per_class, self.best)?;
        if !self.within_noise.is_empty() {
            write!(f, ", within noise of {}", self.within_noise.join(" and "))?;
        }
        Ok(())
    }
}

/// Per size, the best configuration by mean top-1 and those within noise of it (overlapping mean ±
/// standard deviation intervals; with one seed, only exact ties).
pub fn verdicts(summaries: &[StudySummary]) -> Vec<Verdict> {
    let mut sizes: Vec<usize> = summaries.iter().map(|s| s.per_class).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
        .into_iter()
        .filter_map(|n| {
            let at: Vec<&StudySummary> = summaries.iter().filter(|s| s.per_class == n).collect();
            let best = at.iter().max_by(|a, b| a.top1.0.total_cmp(&b.top1.0))?;
            let low = best.top1.0 - best.top1.1;
            let within_noise = at
                .iter()
                .filter(|s| !std::ptr::eq(**s, *best) && s.top1.0 + s.top1.1 >= low)
                .map(|s| s.label())
                .collect();
            Some(Verdict { per_class: n, best: best.label(), within_noise })
        })
        .collect()
}

/// Markdown table of the summaries (mean ± std over seeds).
pub fn markdown_table(summaries: &[StudySummary]) -> String {
    let mut text = String::from(
        "| images/class | backbone | strategy | recipe | test top-1 | macro F1 | wall time (s) |\n|---:|---|---|---|---:|---:|---:|\n",
    );
    for s in summaries {
        text += &format!(
            "| {} | {} | {} | {} | {:.4} ± {:.4} | {:.4} ± {:.4} | {:.1} |\n",
            s.per_class, s.backbone, s.strategy, s.recipe, s.top1.0, s.top1.1, s.f1_macro.0, s.f1_macro.1, s.seconds
        );
    }
    text
}

fn write_outputs(cfg: &ClassifyConfig, rows: &[StudyRow], dir: &RunDir) -> Result<()> {
    let summaries = summarize(rows);
    dir.write_json(&dir.root().join("study.json"), &rows)?;
    dir.write_json(&dir.root().join("summary.json"), &summaries)?;
    let verdicts = verdicts(&summaries);
    let verdict_text: Vec<String> = verdicts.iter().map(ToString::to_string).collect();
    let table = markdown_table(&summaries) + "\n" + &verdict_text.join("\n") + "\n";
    tlcv_core::run::write_atomic(&dir.root().join("study.md"), table.as_bytes())?;
    let mut labels: Vec<String> = Vec::new();
    for s in &summaries {
        if !labels.contains(&s.label()) {
            labels.push(s.label());
        }
    }
    let curves = |f: &dyn Fn(&StudySummary) -> (f64, f64)| -> Vec<Series> {
        labels
            .iter()
            .map(|label| {
                let group: Vec<&StudySummary> = summaries.iter().filter(|s| &s.label() == label).collect();
                let points = group.iter().map(|s| (s.per_class as f64, f(s).0)).collect();
                Series::new(label.as_str(), points).with_errors(group.iter().map(|s| f(s).1).collect())
            })
            .collect()
    };
    let acc = dir.plot("accuracy_vs_size.png");
    report::plots::line_plot(
        &acc,
        "Test top-1 (mean ± std over seeds) vs training images per class",
        "images per class",
        &curves(&|s| s.top1),
    )?;
    let time = dir.plot("time_vs_size.png");
    report::plots::line_plot(
        &time,
        "Wall time (s) vs training images per class",
        "images per class",
        &curves(&|s| (s.seconds, 0.0)),
    )?;
    let headers =
        ["images/class", "backbone", "strategy", "recipe", "top-1", "macro F1", "seconds"].map(String::from).to_vec();
    let table_rows = summaries
        .iter()
        .map(|s| {
            vec![
                s.per_class.to_string(),
                s.backbone.to_string(),
                s.strategy.clone(),
                s.recipe.clone(),
                format!("{:.4} ± {:.4}", s.top1.0, s.top1.1),
                format!("{:.4} ± {:.4}", s.f1_macro.0, s.f1_macro.1),
                format!("{:.1}", s.seconds),
            ]
        })
        .collect();
    Report::new("classify study: which strategy for my data?")
        .subtitle(format!("{} on {}", labels_of_backbones(&summaries), cfg.data.path))
        .paragraph(format!("Best by mean test top-1: {}.", verdict_text.join("; ")))
        .metrics_table(headers, table_rows)
        .image("Accuracy vs training-set size", acc)
        .image("Wall time vs training-set size", time)
        .config(tlcv_core::config::to_toml(cfg)?)
        .write(&dir.report_html())?;
    Ok(())
}

fn labels_of_backbones(summaries: &[StudySummary]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for s in summaries {
        if !names.contains(&s.backbone.name()) {
            names.push(s.backbone.name());
        }
    }
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(strategy: &str, seed: u64, top1: f64) -> StudyRow {
        StudyRow {
            backbone: Arch::Resnet18,
            strategy: strategy.into(),
            recipe: String::new(),
            per_class: 10,
            seed,
            top1,
            f1_macro: top1,
            seconds: 1.0,
            split: "test".into(),
        }
    }

    #[test]
    fn verdicts_say_within_noise_only_where_intervals_overlap() {
        // a: 0.80 ± 0.01, b: 0.79 ± 0.01 (overlaps a), c: 0.70 ± 0.01 (does not).
        let rows = vec![
            row("a", 0, 0.79),
            row("a", 1, 0.80),
            row("a", 2, 0.81),
            row("b", 0, 0.78),
            row("b", 1, 0.79),
            row("b", 2, 0.80),
            row("c", 0, 0.69),
            row("c", 1, 0.70),
            row("c", 2, 0.71),
        ];
        let s = summarize(&rows);
        assert_eq!(s.len(), 3);
        assert!((s[0].top1.0 - 0.80).abs() < 1e-12 && (s[0].top1.1 - 0.01).abs() < 1e-12);
        let v = verdicts(&s);
        let expected = Verdict { per_class: 10, best: "resnet18 a".into(), within_noise: vec!["resnet18 b".into()] };
        assert_eq!(v, vec![expected]);
        assert_eq!(v[0].to_string(), "10 images/class: resnet18 a, within noise of resnet18 b");
    }
}
