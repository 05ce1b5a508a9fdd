//! End-to-end orchestration: train a run, reload its best weights, evaluate at the original resolution,
//! and reload a finished run for `eval` / `predict`.

use std::path::Path;

use serde::Serialize;
use tlcv_core::{
    checkpoint::{self, LoadOptions},
    run::{
        self, RunDir, SkipLog, SkippedSummary, TrainedRun,
        report::{RunRecord, fit_facts},
    },
    train::{self, Convs, FitOptions, FitSummary, Parallel, TaskKind},
};

use crate::{
    SegmentError,
    config::SegmentConfig,
    data::{SegDataset, load_dataset},
    evaluate::{Evaluation, evaluate_samples},
    model::SegModel,
    predict::{PredictOptions, predict_file},
    report::{self, ReportInput},
    task::{SegTask, loss_of},
};

/// The JSON of `segment train/eval/run --json`: the metric keys plus the run directory.
#[derive(Debug, Clone, Serialize)]
pub struct JsonSummary {
    /// Mean IoU.
    pub miou: f64,
    /// Pixel accuracy.
    pub pixel_acc: f64,
    /// Mean Dice.
    pub mean_dice: f64,
    /// Frequency-weighted IoU.
    pub fw_iou: f64,
    /// IoU per class (`null` when the class is in neither gt nor prediction).
    pub per_class_iou: Vec<Option<f64>>,
    /// Class names.
    pub classes: Vec<String>,
    /// The run directory.
    pub run_dir: String,
}

impl JsonSummary {
    /// The summary of `e` for `run`.
    pub fn new(e: &Evaluation, classes: &[String], run: &Path) -> Self {
        let s = &e.summary;
        Self {
            miou: s.miou,
            pixel_acc: s.pixel_acc,
            mean_dice: s.mean_dice,
            fw_iou: s.fw_iou,
            per_class_iou: s.per_class_iou.clone(),
            classes: classes.to_vec(),
            run_dir: run.display().to_string(),
        }
    }
}

/// What a training run produced.
#[derive(Debug)]
pub struct TrainOutcome {
    /// Evaluation of the best checkpoint on val at the original resolution.
    pub eval: Evaluation,
    /// The training loop's summary.
    pub fit: FitSummary,
    /// Every skipped sample (indexing, training, evaluation), once per file.
    pub skipped: SkipLog,
    /// The data.
    pub dataset: SegDataset,
    /// Seconds of the final evaluation.
    pub eval_seconds: f64,
}

/// Trains per `cfg` into `run` and evaluates the best weights on val, as one rank of a data-parallel
/// group (or [`tlcv_core::train::SingleProcess`]): only the main rank writes into `run`; every rank
/// evaluates (the outcome is the same on each).
pub fn train(
    cfg: &SegmentConfig,
    run: &RunDir,
    resume: bool,
    parallel: &dyn Parallel,
) -> Result<TrainOutcome, SegmentError> {
    // The run's config.toml records what `train.precision` resolved to.
    let mut cfg = cfg.clone();
    let (device, plan) = cfg.train.prepare(TaskKind::Segment, Convs::of(cfg.model.backbone))?;
    let cfg = &cfg;
    let dataset = load_dataset(&cfg.data)?;
    eprintln!(
        "data: {} ({} classes; {} train, {} val, {} skipped)",
        dataset.root.display(),
        dataset.classes.len(),
        dataset.train.len(),
        dataset.val.len(),
        dataset.skipped.len()
    );
    dataset.skipped.print();
    if dataset.val.is_empty() {
        return Err(SegmentError::Invalid(format!("{}: the val split is empty", dataset.root.display())));
    }
    let mut model = SegModel::build(&cfg.model, dataset.classes.len() as i64, device)?;
    model.inference_kind = plan.inference_kind();
    if cfg.train.channels_last {
        tlcv_core::freeze::to_channels_last(&model.vs);
    }
    eprintln!("model: {} on {} ({}), {}", cfg.model.kind, cfg.model.backbone, cfg.model.strategy, model.freeze);
    if parallel.is_main() {
        run::write_run_files(run, cfg, &dataset.classes)?;
    }
    let loss = loss_of(cfg, dataset.classes.len())?;
    let skipped = SkipLog::default();
    skipped.extend(&dataset.skipped);
    let compute_kind = plan.training_kind();
    let mut task = SegTask { model, cfg: cfg.clone(), dataset, loss, skipped: skipped.clone(), compute_kind };
    let opts = FitOptions::interactive(resume);
    let fit = train::fit(&mut task, &cfg.train.for_strategy(cfg.model.strategy), run, parallel, &opts)?;
    // The main rank's last checkpoint is on disk before any rank reads the best weights back.
    parallel.barrier()?;
    let SegTask { model, dataset, .. } = task;
    if run.best_weights().is_file() {
        checkpoint::load_file(&model.vs, &run.best_weights(), &LoadOptions::default())
            .map_err(|e| SegmentError::Invalid(e.to_string()))?;
    }
    let start = std::time::Instant::now();
    let eval = evaluate_run(&model, cfg, &dataset)?;
    let eval_seconds = start.elapsed().as_secs_f64();
    skipped.extend(&eval.skipped);
    Ok(TrainOutcome { eval, fit, skipped, dataset, eval_seconds })
}

/// `segment train` / `run`: trains into `run`; then, unless stopped by a Ctrl-C, writes
/// `metrics.json` and the report, predicts a few held-out images when `end_to_end`, and prints the
/// summary line.
pub fn train_and_report(
    cfg: &SegmentConfig,
    run: &RunDir,
    resume: bool,
    end_to_end: bool,
    parallel: &dyn Parallel,
) -> Result<TrainOutcome, SegmentError> {
    let outcome = train(cfg, run, resume, parallel)?;
    // Only the main rank writes the run's files.
    if outcome.fit.interrupted || !parallel.is_main() {
        return Ok(outcome);
    }
    let classes = &outcome.dataset.classes;
    let metrics_file = MetricsFile {
        split: "val",
        metrics: &outcome.eval.summary,
        classes,
        skipped: outcome.skipped.summary(),
        best_epoch: outcome.fit.best_epoch.map(|e| e + 1),
        train_seconds: outcome.fit.seconds,
        eval_seconds: outcome.eval_seconds,
    };
    run.write_json(&run.metrics_json(), &metrics_file)?;
    let mut facts = fit_facts(&outcome.fit);
    facts.push((
        "train / val images".to_string(),
        format!("{} / {}", outcome.dataset.train.len(), outcome.dataset.val.len()),
    ));
    let skipped = outcome.skipped.reasons();
    let record = RunRecord { cfg, classes, history: &outcome.fit.history, skipped: &skipped, facts };
    let input = ReportInput { record, eval: &outcome.eval };
    report::write(run, &input)?;
    outcome.skipped.print();
    if end_to_end {
        predict_held_out(cfg, run, &outcome)?;
    }
    let s = &outcome.eval.summary;
    eprintln!(
        "val mIoU {:.4}  pixel acc {:.4}  mean Dice {:.4}  ({} images, {} skipped, {:.1} s training)",
        s.miou,
        s.pixel_acc,
        s.mean_dice,
        outcome.dataset.val.len(),
        outcome.skipped.len(),
        outcome.fit.seconds
    );
    eprintln!("run directory: {}  (report: {})", run.root().display(), run.report_html().display());
    Ok(outcome)
}

/// Segments the first held-out validation images with the trained run into `predictions/` and
/// `predictions.jsonl`.
fn predict_held_out(cfg: &SegmentConfig, run: &RunDir, outcome: &TrainOutcome) -> Result<(), SegmentError> {
    let (_, model) = load_run(run.root())?;
    let out = run.root().join("predictions");
    let opts = PredictOptions::of_run(cfg);
    run::write_predictions(
        run,
        outcome.dataset.val.iter().take(cfg.eval.predict_images).map(|s| {
            predict_file(&model, &s.image, &out, opts)
                .map(|p| {
                    let line = format!("{} -> {}", p.image, p.overlay);
                    (p, line)
                })
                .map_err(|e| e.to_string())
        }),
    )?;
    Ok(())
}

/// Evaluates `model` on the val split of `dataset` at the original resolution.
pub fn evaluate_run(model: &SegModel, cfg: &SegmentConfig, dataset: &SegDataset) -> Result<Evaluation, SegmentError> {
    evaluate_samples(model, &dataset.val, dataset.classes.len(), cfg)
}

/// A trained run: its configuration, class names and model with the best (else last) weights.
pub fn load_run(dir: &Path) -> Result<(TrainedRun<SegmentConfig>, SegModel), SegmentError> {
    let run = TrainedRun::<SegmentConfig>::open(dir)?;
    let cfg = &run.config;
    let device = cfg.train.device.resolve()?;
    let mut model = SegModel::untrained(&cfg.model, run.classes.len() as i64, device)?;
    // Resolved again here: the run may have been trained on another device.
    model.inference_kind =
        cfg.train.precision.resolve(device, TaskKind::Segment, Convs::of(cfg.model.backbone)).inference_kind();
    run.load_weights(&model.vs)?;
    if cfg.train.channels_last {
        tlcv_core::freeze::to_channels_last(&model.vs);
    }
    Ok((run, model))
}

/// `metrics.json`: the final metrics plus run facts.
#[derive(Debug, Serialize)]
pub struct MetricsFile<'a> {
    /// Split evaluated.
    pub split: &'a str,
    /// The metrics.
    #[serde(flatten)]
    pub metrics: &'a crate::metrics::SegSummary,
    /// Class names.
    pub classes: &'a [String],
    /// Samples skipped, one per file, with their reasons.
    #[serde(flatten)]
    pub skipped: SkippedSummary,
    /// Best epoch (1-based).
    pub best_epoch: Option<usize>,
    /// Training seconds.
    pub train_seconds: f64,
    /// Evaluation seconds.
    pub eval_seconds: f64,
}
