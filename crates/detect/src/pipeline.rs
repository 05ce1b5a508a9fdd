//! End-to-end orchestration: train a run, reload its best weights, evaluate on the validation
//! split, and write `metrics.json` plus the COCO files of the evaluation (`val_gt.json`,
//! `val_dets.json`, readable by `detect evaluate` and pycocotools).

use std::path::{Path, PathBuf};

use serde::Serialize;
use tlcv_core::{
    checkpoint::{self, LoadOptions},
    run::{
        self, RunDir, SkipLog, SkippedSummary, TrainedRun,
        report::{RunRecord, fit_facts},
        write_atomic,
    },
    train::{self, FitOptions, FitSummary, Parallel, TaskKind},
};

use crate::config::DetectConfig;
use crate::data::{self, DetImage, Issues};
use crate::error::{DetectError, Result};
use crate::eval::sharded::evaluate_images_sharded;
use crate::evaluate::{EvalOutput, flat_metrics};
use crate::model::Detector;
use crate::postprocess::PostprocessConfig;
use crate::predict;
use crate::report::{self, ReportInput};
use crate::task::DetectTask;

/// What a training run produced.
#[derive(Debug)]
pub struct TrainOutcome {
    /// Evaluation of the best checkpoint on the validation split.
    pub eval: EvalOutput,
    /// The training loop's summary.
    pub fit: FitSummary,
    /// Class names.
    pub names: Vec<String>,
    /// The validation images.
    pub val: Vec<DetImage>,
    /// Where the data came from.
    pub data_dir: PathBuf,
    /// Label problems found while reading.
    pub issues: Issues,
    /// Training and evaluation images that failed to load.
    pub skipped: SkipLog,
}

/// Prints the label problems: the summary and the first few messages.
pub fn report_issues(issues: &Issues) {
    if issues.messages.is_empty() {
        return;
    }
    eprintln!("labels: {}", issues.summary());
    for m in issues.messages.iter().take(10) {
        eprintln!("  {m}");
    }
    if issues.messages.len() > 10 {
        eprintln!("  ... and {} more (see issues.txt in the run directory)", issues.messages.len() - 10);
    }
}

/// Trains per `cfg` into `run` (resuming if asked), then evaluates the best weights on val, as one rank
/// of a data-parallel group (or [`tlcv_core::train::SingleProcess`]): only the main rank writes into
/// `run`; every rank evaluates (the outcome is the same on each).
pub fn train(cfg: &DetectConfig, run: &RunDir, resume: bool, parallel: &dyn Parallel) -> Result<TrainOutcome> {
    // The run's config.toml records what `train.precision` resolved to.
    let mut cfg = cfg.clone();
    let (device, plan) = cfg.train.prepare(TaskKind::Detect, cfg.convs())?;
    let cfg = &cfg;
    let (ds, data_dir) = data::load_config(&cfg.data)?;
    let objects = |v: &[DetImage]| v.iter().map(|i| i.objects.len()).sum::<usize>();
    eprintln!(
        "data: {} ({} classes; {} train images / {} objects, {} val images / {} objects)",
        data_dir.display(),
        ds.names.len(),
        ds.train.len(),
        objects(&ds.train),
        ds.val.len(),
        objects(&ds.val)
    );
    report_issues(&ds.issues);
    if ds.val.is_empty() {
        return Err(DetectError::Invalid(format!("{}: the val split is empty", data_dir.display())));
    }
    let mut model = Detector::build(cfg, ds.names.len() as i64, device)?;
    model.set_precision(&plan);
    eprintln!(
        "model: {} + {} ({}), {:.2} M parameters, {}",
        cfg.model.family,
        cfg.network(),
        cfg.model.strategy,
        model.num_params() as f64 / 1e6,
        model.freeze
    );
    if parallel.is_main() {
        run::write_run_files(run, cfg, &ds.names)?;
        if !ds.issues.messages.is_empty() {
            write_atomic(&run.root().join("issues.txt"), (ds.issues.messages.join("\n") + "\n").as_bytes())?;
        }
    }
    let mut task = DetectTask::new(model, cfg.clone(), ds.names.clone(), ds.train, ds.val);
    let fit = train::fit(
        &mut task,
        &cfg.train.for_strategy(cfg.model.strategy),
        run,
        parallel,
        &FitOptions::interactive(resume),
    );
    // Named even when training fails (e.g. every image skipped).
    let skipped = task.skipped.clone();
    skipped.print();
    let fit = fit?;
    // The main rank's last checkpoint is on disk before any rank reads the best weights back.
    parallel.barrier()?;
    let DetectTask { model, val, names, .. } = task;
    if run.best_weights().is_file() {
        checkpoint::load_file(&model.vs, &run.best_weights(), &LoadOptions::default())?;
    }
    let pp = DetectTask::eval_postprocess(cfg);
    let eval = evaluate_images_sharded(&model, (&val, &names), &pp, cfg.train.batch.max(1) * 2, parallel)?;
    eval.skipped.print();
    skipped.extend(&eval.skipped);
    if parallel.is_main() {
        write_coco_files(run, &eval)?;
    }
    Ok(TrainOutcome { eval, fit, names, val, data_dir, issues: ds.issues, skipped })
}

/// Writes `val_gt.json` and `val_dets.json` (COCO format) into the run directory.
pub fn write_coco_files(run: &RunDir, eval: &EvalOutput) -> Result<()> {
    run.write_json(&run.root().join("val_gt.json"), &eval.gt)?;
    run.write_json(&run.root().join("val_dets.json"), &eval.dets)?;
    Ok(())
}

/// A trained run: its configuration, class names and model with the best (else last) weights.
pub fn load_run(dir: &Path) -> Result<(TrainedRun<DetectConfig>, Detector)> {
    let run = TrainedRun::<DetectConfig>::open(dir)?;
    let mut model = Detector::untrained(&run.config, run.classes.len() as i64)?;
    run.load_weights(&model.vs)?;
    // Resolved again here: the run may have been trained on another device.
    let device = run.config.train.device.resolve()?;
    model.set_precision(&run.config.train.precision.resolve(device, TaskKind::Detect, run.config.convs()));
    Ok((run, model))
}

/// Per-class numbers of `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ClassRow {
    /// Class name.
    pub class: String,
    /// AP at IoU 0.5 (-1 without ground truth).
    pub ap50: f64,
    /// Precision at the best-F1 confidence.
    pub precision: f64,
    /// Recall there.
    pub recall: f64,
    /// Ground-truth boxes.
    pub instances: usize,
}

/// AP50 per class from the PR curves (mean interpolated precision over the 101 recall points).
pub fn per_class(eval: &EvalOutput, names: &[String]) -> Vec<ClassRow> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let cat = i as i64 + 1;
            let k = eval.pr.cat_ids.iter().position(|&c| c == cat);
            let ap50 = k.map_or(-1.0, |k| {
                let p = &eval.pr.precision[k];
                if p.iter().any(|&v| v < 0.0) { -1.0 } else { p.iter().sum::<f64>() / p.len().max(1) as f64 }
            });
            let prf = eval.f1.as_ref().and_then(|f| f.per_class.iter().find(|c| c.cat_id == cat));
            ClassRow {
                class: name.clone(),
                ap50,
                precision: prf.map_or(0.0, |c| c.precision),
                recall: prf.map_or(0.0, |c| c.recall),
                instances: eval.gt.annotations.iter().filter(|a| a.category_id == cat).count(),
            }
        })
        .collect()
}

/// `metrics.json`.
#[derive(Debug, Serialize)]
pub struct MetricsFile {
    /// Split evaluated.
    pub split: String,
    /// The COCO keys plus precision, recall, f1, f1_confidence.
    #[serde(flatten)]
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// Per class.
    pub per_class: Vec<ClassRow>,
    /// Images evaluated.
    pub images: usize,
    /// Best epoch (1-based).
    pub best_epoch: Option<usize>,
    /// Training seconds.
    pub train_seconds: f64,
    /// Boxes dropped while reading labels.
    pub dropped_boxes: usize,
    /// Images dropped while indexing (named in `issues.txt`).
    pub dropped_images: usize,
    /// Images that failed to decode in training or in the final evaluation, with reasons.
    #[serde(flatten)]
    pub skipped: SkippedSummary,
}

/// Builds and writes `metrics.json`.
pub fn write_metrics(run: &RunDir, o: &TrainOutcome) -> Result<MetricsFile> {
    let m = MetricsFile {
        split: "val".into(),
        metrics: flat_metrics(&o.eval),
        per_class: per_class(&o.eval, &o.names),
        images: o.val.len(),
        best_epoch: o.fit.best_epoch.map(|e| e + 1),
        train_seconds: o.fit.seconds,
        dropped_boxes: o.issues.dropped_boxes,
        dropped_images: o.issues.dropped_images,
        skipped: o.skipped.summary(),
    };
    run.write_json(&run.metrics_json(), &m)?;
    Ok(m)
}

/// `detect train` / `run`: trains into `run`; then, unless stopped by a Ctrl-C, writes
/// `metrics.json` and the report, predicts a few held-out images when `end_to_end`, and prints the
/// validation summary.
pub fn train_and_report(
    cfg: &DetectConfig,
    run: &RunDir,
    resume: bool,
    end_to_end: bool,
    parallel: &dyn Parallel,
) -> Result<TrainOutcome> {
    let started = std::time::Instant::now();
    let outcome = train(cfg, run, resume, parallel)?;
    // Only the main rank writes the run's files.
    if outcome.fit.interrupted || !parallel.is_main() {
        return Ok(outcome);
    }
    let metrics = write_metrics(run, &outcome)?;
    let mut issues = outcome.issues.messages.clone();
    issues.extend(outcome.skipped.reasons());
    let mut facts = vec![("family".to_string(), cfg.model.family.to_string()), ("network".to_string(), cfg.network())];
    facts.extend(fit_facts(&outcome.fit));
    facts.extend([
        ("data".to_string(), outcome.data_dir.display().to_string()),
        ("label problems".to_string(), outcome.issues.summary()),
    ]);
    report::write(
        run,
        &ReportInput {
            record: RunRecord { cfg, classes: &outcome.names, history: &outcome.fit.history, skipped: &issues, facts },
            eval: &outcome.eval,
            per_class: &metrics.per_class,
            val: &outcome.val,
        },
    )?;
    if end_to_end {
        predict_held_out(cfg, run, &outcome)?;
    }
    let s = &outcome.eval.summary;
    let (p, r) = outcome.eval.f1.as_ref().map_or((0.0, 0.0), |f| (f.precision, f.recall));
    eprintln!(
        "val mAP@.5 {:.4}  mAP@[.5:.95] {:.4}  precision {:.3}  recall {:.3}  ({} images; training {:.0} s, total {:.0} s)",
        s.map50,
        s.map,
        p,
        r,
        outcome.val.len(),
        outcome.fit.seconds,
        started.elapsed().as_secs_f64()
    );
    eprintln!("run directory: {}  (report: {})", run.root().display(), run.report_html().display());
    Ok(outcome)
}

/// Predicts the first held-out validation images with the trained run into `predict/` and
/// `predictions.jsonl`.
fn predict_held_out(cfg: &DetectConfig, run: &RunDir, outcome: &TrainOutcome) -> Result<()> {
    let (trained, model) = load_run(run.root())?;
    let images: Vec<PathBuf> = outcome.val.iter().take(cfg.eval.predict_images).map(|i| i.path.clone()).collect();
    let pp = PostprocessConfig {
        conf: cfg.eval.predict_conf,
        iou: cfg.eval.iou,
        max_det: cfg.eval.max_det,
        ..Default::default()
    };
    let out = run.root().join("predict");
    let results = predict::predict_files(&model, &trained.classes, &images, &pp, Some(&out))?;
    run::write_predictions(
        run,
        results.into_iter().map(|r| {
            r.map(|p| {
                let shown: Vec<String> = p.detections.iter().map(|d| format!("{} {:.2}", d.class, d.score)).collect();
                let line =
                    format!("{} -> {}", p.image, if shown.is_empty() { "nothing".into() } else { shown.join(", ") });
                (p, line)
            })
        }),
    )?;
    Ok(())
}
