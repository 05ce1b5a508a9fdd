//! End-to-end orchestration: train a run, reload it, evaluate it, and write `metrics.json` and the report.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Serialize;
use tch::Kind;
use tlcv_core::{
    checkpoint::{self, LoadOptions},
    data::{ClassDataset, Sample},
    freeze::Strategy,
    metrics::{ClassScores, ClassificationMetrics},
    progress::Progress,
    run::{
        self, RunDir, SkipLog, SkippedSummary, TrainedRun,
        report::{RunRecord, fit_facts},
    },
    train::{self, Convs, FitOptions, FitSummary, Parallel, SingleProcess, TaskKind, TrainConfig},
};

use crate::{
    ClassifyError, Result,
    config::ClassifyConfig,
    data::load_dataset,
    evaluate::{Prediction, evaluate_split},
    model::Model,
    predict,
    report::{self, ReportInput},
    task::{ClassifyTask, Mode, cache_features},
};

/// The JSON `classify train/eval --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct JsonSummary {
    /// Top-1 accuracy.
    pub top1: f64,
    /// Top-5 accuracy.
    pub top5: f64,
    /// Macro precision.
    pub precision_macro: f64,
    /// Macro recall.
    pub recall_macro: f64,
    /// Macro F1.
    pub f1_macro: f64,
    /// Per-class scores.
    pub per_class: BTreeMap<String, ClassScores>,
    /// The run directory.
    pub run_dir: String,
    /// Images skipped (unreadable or refused), one per file, with their reasons.
    #[serde(flatten)]
    pub skipped: SkippedSummary,
}

impl JsonSummary {
    /// The summary of `m` for `run`.
    pub fn new(m: &ClassificationMetrics, run: &Path) -> Self {
        Self {
            top1: m.top1,
            top5: m.top5,
            precision_macro: m.precision_macro,
            recall_macro: m.recall_macro,
            f1_macro: m.f1_macro,
            per_class: m.per_class.clone(),
            run_dir: run.display().to_string(),
            skipped: SkipLog::default().summary(),
        }
    }

    /// The same summary listing the skipped images.
    pub fn with_skipped(mut self, skipped: &SkipLog) -> Self {
        self.skipped = skipped.summary();
        self
    }
}

/// What a training run produced.
#[derive(Debug)]
pub struct TrainOutcome {
    /// Metrics of the best checkpoint on the evaluation split.
    pub metrics: ClassificationMetrics,
    /// The split `metrics` come from (`test` or `val`).
    pub split: String,
    /// Every prediction on that split.
    pub predictions: Vec<Prediction>,
    /// The training loop's summary.
    pub fit: FitSummary,
    /// Samples that could not be loaded, with reasons.
    pub skipped: SkipLog,
    /// Class names.
    pub classes: Vec<String>,
    /// Seconds spent filling the feature cache (0 without cache).
    pub cache_seconds: f64,
}

/// Trains per `cfg` into `run` (resuming from its last checkpoint if asked) and evaluates the best weights.
/// With `train.head_epochs` (LP-FT) a fine-tune first trains the head alone on the feature cache, in
/// `run/lp-ft/head`, then everything from there.
pub fn train(cfg: &ClassifyConfig, run: &RunDir, resume: bool, max_epochs: Option<usize>) -> Result<TrainOutcome> {
    train_with(cfg, run, resume, max_epochs, &SingleProcess)
}

/// [`train`] as one rank of a data-parallel group (or [`SingleProcess`]): only the main rank writes
/// into `run`; every rank evaluates (the outcome is the same on each).
pub fn train_with(
    cfg: &ClassifyConfig,
    run: &RunDir,
    resume: bool,
    max_epochs: Option<usize>,
    parallel: &dyn Parallel,
) -> Result<TrainOutcome> {
    // The run's config.toml records what `train.precision` resolved to.
    let mut cfg = cfg.clone();
    let (device, plan) = cfg.train.prepare(TaskKind::Classify, Convs::of(cfg.model.backbone))?;
    let cfg = &cfg;
    let (dataset, data_dir) = load_dataset(&cfg.data)?;
    eprintln!(
        "data: {} ({} classes; {} train, {} val, {} test)",
        data_dir.display(),
        dataset.classes.len(),
        dataset.train.len(),
        dataset.val.len(),
        dataset.test.len()
    );
    if dataset.val.is_empty() {
        return Err(ClassifyError::Invalid(format!("{}: the val split is empty", data_dir.display())));
    }
    let mut model = Model::build(&cfg.model, dataset.classes.len() as i64, device)?;
    if cfg.train.channels_last {
        model.use_channels_last();
    }
    model.set_precision(&plan);
    let fine_tune = cfg.model.strategy == Strategy::FineTune;
    if fine_tune {
        // Scratch has no pretrained statistics to keep, and a frozen backbone no batch norm that trains.
        model.set_bn_mode(cfg.train.bn);
    }
    eprintln!("model: {} ({}), {}", cfg.model.backbone, cfg.model.strategy, model.freeze);
    if parallel.is_main() {
        run::write_run_files(run, cfg, &dataset.classes)?;
    }

    let skipped = SkipLog::default();
    let continuing = resume && run.last_weights().is_file();
    let (mut task, cache_seconds) = if fine_tune && cfg.train.head_epochs > 0 && !continuing {
        if parallel.world_size() > 1 {
            return Err(ClassifyError::Invalid(
                "train.head_epochs > 0 (LP-FT) runs in one process only for now; set train.head_epochs=0".into(),
            ));
        }
        // LP-FT's second phase: everything that trains, on images.
        let (head, seconds) = fit_head_first(model, cfg, dataset, run, &skipped)?;
        (ClassifyTask::new(head.model, cfg.clone(), head.dataset, Mode::Images), seconds)
    } else {
        let frozen = model.freeze.frozen_stages == model.net.stages().len();
        let start = std::time::Instant::now();
        let (mode, cache_seconds) = if frozen && cfg.model.feature_cache && cfg.train.unfreeze_every == 0 {
            (cached_mode(&mut model, cfg, &dataset, &skipped)?, start.elapsed().as_secs_f64())
        } else {
            (Mode::Images, 0.0)
        };
        (ClassifyTask::new(model, cfg.clone(), dataset, mode), cache_seconds)
    };
    task.skipped = skipped;
    let opts = FitOptions { max_epochs_this_run: max_epochs, ..FitOptions::interactive(resume) };
    fit_and_evaluate(task, run, &opts, cache_seconds, parallel)
}

/// `classify train` / `run`: trains into `run`; then, unless stopped by a Ctrl-C, writes
/// `metrics.json` and the report, predicts a few held-out images when `end_to_end`, and prints the
/// summary line.
pub fn train_and_report(
    cfg: &ClassifyConfig,
    run: &RunDir,
    resume: bool,
    end_to_end: bool,
    parallel: &dyn Parallel,
) -> Result<TrainOutcome> {
    let outcome = train_with(cfg, run, resume, None, parallel)?;
    // Only the main rank writes the run's files.
    if outcome.fit.interrupted || !parallel.is_main() {
        return Ok(outcome);
    }
    let mut facts = fit_facts(&outcome.fit);
    facts.push(("feature cache".to_string(), format!("{:.1} s", outcome.cache_seconds)));
    let skipped = outcome.skipped.reasons();
    let metrics_file = MetricsFile {
        split: &outcome.split,
        metrics: &outcome.metrics,
        skipped: outcome.skipped.summary(),
        best_epoch: outcome.fit.best_epoch.map(|e| e + 1),
        train_seconds: outcome.fit.seconds,
        cache_seconds: outcome.cache_seconds,
    };
    run.write_json(&run.metrics_json(), &metrics_file)?;
    let input = ReportInput {
        record: RunRecord { cfg, classes: &outcome.classes, history: &outcome.fit.history, skipped: &skipped, facts },
        metrics: &outcome.metrics,
        split: &outcome.split,
        predictions: &outcome.predictions,
    };
    report::write(run, &input)?;
    outcome.skipped.print();
    if end_to_end {
        predict_held_out(cfg, run, &outcome)?;
    }
    eprintln!(
        "{} top-1 {:.4}  top-5 {:.4}  macro F1 {:.4}  ({} images, {} skipped)",
        outcome.split,
        outcome.metrics.top1,
        outcome.metrics.top5,
        outcome.metrics.f1_macro,
        outcome.metrics.samples,
        outcome.skipped.len()
    );
    eprintln!("run directory: {}  (report: {})", run.root().display(), run.report_html().display());
    Ok(outcome)
}

/// Predicts a few held-out images with the trained run and writes them to `predictions.jsonl`.
fn predict_held_out(cfg: &ClassifyConfig, run: &RunDir, outcome: &TrainOutcome) -> Result<()> {
    let (trained, model) = load_run(run.root())?;
    // Spread the picks over the evaluation split so that several classes show up.
    let step = (outcome.predictions.len() / cfg.eval.predict_images.max(1)).max(1);
    let images: Vec<PathBuf> =
        outcome.predictions.iter().step_by(step).take(cfg.eval.predict_images).map(|p| p.path.clone()).collect();
    let results = predict::predict_images(&model, &cfg.data, &trained.classes, &images, cfg.eval.top_k);
    run::write_predictions(
        run,
        results.into_iter().map(|r| {
            r.map(|p| {
                let line =
                    p.top.first().map_or(String::new(), |b| format!("{}  ->  {} ({:.3})", p.image, b.class, b.prob));
                (p, line)
            })
            .map_err(|e| e.to_string())
        }),
    )?;
    Ok(())
}

/// The feature cache of a frozen backbone: every training image in `model.cache_views` views, and the
/// validation images once.
fn cached_mode(model: &mut Model, cfg: &ClassifyConfig, dataset: &ClassDataset, skipped: &SkipLog) -> Result<Mode> {
    let cache_start = std::time::Instant::now();
    let views = if cfg.data.augment { cfg.model.cache_views.max(1) } else { 1 };
    let total = (dataset.train.len() * views + dataset.val.len()) as u64;
    let progress = Progress::bar(total, "feature cache");
    // The frozen backbone runs with folded batch norms, and in bf16 where the hardware has it.
    let bf16 = model.inference_kind() == Kind::BFloat16;
    let (train, val) = model
        .frozen_inference(bf16, |m| {
            let train = cache_features(m, cfg, (&dataset.train, views), skipped, &progress)
                .map_err(|e| tlcv_core::Error::Invalid(format!("train split: {e}")))?;
            let val = cache_features(m, cfg, (&dataset.val, 1), skipped, &progress)
                .map_err(|e| tlcv_core::Error::Invalid(format!("val split: {e}")))?;
            Ok((train, val))
        })
        .map_err(ClassifyError::from)?;
    progress.finish(format!(
        "{} train features ({} views) and {} val features in {:.1}s",
        train.labels.size()[0],
        views,
        val.labels.size()[0],
        cache_start.elapsed().as_secs_f64()
    ));
    Ok(Mode::Cached { train, val })
}

/// LP-FT's first phase: the head alone for `train.head_epochs` on the feature cache, in
/// `run/lp-ft/head` (its own results and checkpoints); the best head is kept. Returns the task (model
/// and data back) and the seconds spent on the cache.
fn fit_head_first(
    mut model: Model,
    cfg: &ClassifyConfig,
    dataset: ClassDataset,
    run: &RunDir,
    skipped: &SkipLog,
) -> Result<(ClassifyTask, f64)> {
    let trainable = model.trainable_layers();
    model.set_trainable_layers(0)?;
    let start = std::time::Instant::now();
    let mode = cached_mode(&mut model, cfg, &dataset, skipped)?;
    let cache_seconds = start.elapsed().as_secs_f64();
    let head_cfg = ClassifyConfig {
        train: TrainConfig { epochs: cfg.train.head_epochs, unfreeze_every: 0, head_epochs: 0, ..cfg.train.clone() },
        ..cfg.clone()
    };
    let head_run = RunDir::create(run.root(), "lp-ft", Some("head"), "head")?;
    eprintln!("LP-FT: the head alone for {} epoch(s) on cached features", cfg.train.head_epochs);
    let mut task = ClassifyTask::new(model, head_cfg.clone(), dataset, mode);
    task.skipped = skipped.clone();
    let opts = FitOptions::interactive(head_run.last_weights().is_file());
    train::fit(&mut task, &head_cfg.train, &head_run, &SingleProcess, &opts).map_err(|e| with_skips(e, skipped))?;
    if head_run.best_weights().is_file() {
        checkpoint::load_file(&task.model.vs, &head_run.best_weights(), &LoadOptions::default())?;
    }
    task.model.set_trainable_layers(trainable)?;
    eprintln!("LP-FT: now {} backbone stage(s) and the head train ({})", trainable, task.model.freeze);
    Ok((task, cache_seconds))
}

/// Runs the training loop on `task`, then evaluates its best checkpoint on the evaluation split;
/// `cache_seconds` (the feature cache's time) goes into the outcome.
fn fit_and_evaluate(
    mut task: ClassifyTask,
    run: &RunDir,
    opts: &FitOptions,
    cache_seconds: f64,
    parallel: &dyn Parallel,
) -> Result<TrainOutcome> {
    let skipped = task.skipped.clone();
    let cfg = task.cfg.clone();
    let cfg = &cfg;
    let fit =
        train::fit(&mut task, &cfg.effective_train(), run, parallel, opts).map_err(|e| with_skips(e, &skipped))?;
    // The main rank's last checkpoint is on disk before any rank reads the best weights back.
    parallel.barrier()?;
    // Evaluate the best checkpoint on the test split when there is one.
    let ClassifyTask { model, dataset, .. } = task;
    if run.best_weights().is_file() {
        checkpoint::load_file(&model.vs, &run.best_weights(), &LoadOptions::default())?;
    }
    let (split, samples) = eval_split(cfg, &dataset);
    let (metrics, predictions) = evaluate_split(&model, cfg, samples, &dataset.classes, &skipped)?;
    Ok(TrainOutcome {
        metrics,
        split: split.to_string(),
        predictions,
        fit,
        skipped,
        classes: dataset.classes,
        cache_seconds,
    })
}

/// Adds how many files were skipped (and one reason) to a training error caused by unusable data.
fn with_skips(err: tlcv_core::Error, skipped: &SkipLog) -> ClassifyError {
    match &err {
        tlcv_core::Error::Invalid(msg) if !skipped.is_empty() => ClassifyError::Invalid(skipped.explain(msg)),
        _ => err.into(),
    }
}

/// The split a run is finally evaluated on: `eval.split` if present, else val.
pub fn eval_split<'a>(cfg: &ClassifyConfig, dataset: &'a ClassDataset) -> (&'static str, &'a [Sample]) {
    if cfg.eval.split == "test" && !dataset.test.is_empty() { ("test", &dataset.test) } else { ("val", &dataset.val) }
}

/// A trained run: its configuration, class names and model with the best (else last) weights.
pub fn load_run(dir: &Path) -> Result<(TrainedRun<ClassifyConfig>, Model)> {
    let run = TrainedRun::<ClassifyConfig>::open(dir)?;
    let cfg = &run.config;
    let device = cfg.train.device.resolve()?;
    let mut model = Model::untrained(&cfg.model, run.classes.len() as i64, device)?;
    run.load_weights(&model.vs)?;
    if cfg.train.channels_last {
        model.use_channels_last();
    }
    // Resolved again here: the run may have been trained on another device.
    model.set_precision(&cfg.train.precision.resolve(device, TaskKind::Classify, Convs::of(cfg.model.backbone)));
    Ok((run, model))
}

/// `metrics.json`: the final metrics plus run facts.
#[derive(Debug, Serialize)]
pub struct MetricsFile<'a> {
    /// Split evaluated.
    pub split: &'a str,
    /// The metrics.
    #[serde(flatten)]
    pub metrics: &'a ClassificationMetrics,
    /// Images skipped (unreadable or refused), one per file, with their reasons.
    #[serde(flatten)]
    pub skipped: SkippedSummary,
    /// Best epoch (1-based).
    pub best_epoch: Option<usize>,
    /// Training seconds.
    pub train_seconds: f64,
    /// Feature-cache seconds.
    pub cache_seconds: f64,
}
