//! End-to-end orchestration: train a run, reload its best weights, evaluate on the validation
//! split, and write `metrics.json` plus the COCO files of the evaluation (`val_gt.json`,
//! `val_dets.json`, readable by `detect evaluate` and pycocotools).

use std::path::{Path, PathBuf};

use serde::Serialize;
use tlcv_core::{
    checkpoint::{self, LoadOptions},
    run::{self, RunDir, SkipLog, SkippedSummary, TrainedRun, write_atomic},
    train::{self, FitOptions, FitSummary, SingleProcess},
};

use crate::config::DetectConfig;
use crate::data::{self, DetImage, Issues};
use crate::error::{DetectError, Result};
use crate::evaluate::{EvalOutput, evaluate_images, flat_metrics};
use crate::model::Detector;
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

/// Trains per `cfg` into `run` (resuming if asked), then evaluates the best weights on val.
pub fn train(cfg: &DetectConfig, run: &RunDir, resume: bool) -> Result<TrainOutcome> {
    run::configure_threads();
    let device = cfg.train.device.resolve()?;
    tch::manual_seed(cfg.train.seed as i64);
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
    model.set_compute_kind(cfg.train.compute_kind(device));
    eprintln!(
        "model: {} + {} ({}), {:.2} M parameters, {}",
        cfg.model.family,
        cfg.network(),
        cfg.model.strategy,
        model.num_params() as f64 / 1e6,
        model.freeze
    );
    run::write_run_files(run, cfg, &ds.names)?;
    if !ds.issues.messages.is_empty() {
        write_atomic(&run.root().join("issues.txt"), (ds.issues.messages.join("\n") + "\n").as_bytes())?;
    }
    let mut task = DetectTask::new(model, cfg.clone(), ds.names.clone(), ds.train, ds.val);
    let fit = train::fit(
        &mut task,
        &cfg.train.for_strategy(cfg.model.strategy),
        run,
        &SingleProcess,
        &FitOptions { resume, max_epochs_this_run: None },
    );
    // Named even when training fails (e.g. every image skipped).
    let skipped = task.skipped.clone();
    skipped.print();
    let fit = fit?;
    let DetectTask { model, val, names, .. } = task;
    if run.best_weights().is_file() {
        checkpoint::load_file(&model.vs, &run.best_weights(), &LoadOptions::default())?;
    }
    let pp = DetectTask::eval_postprocess(cfg);
    let eval = evaluate_images(&model, &val, &names, &pp, cfg.train.batch.max(1) * 2)?;
    eval.skipped.print();
    skipped.extend(&eval.skipped);
    write_coco_files(run, &eval)?;
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
    let model = Detector::untrained(&run.config, run.classes.len() as i64)?;
    run.load_weights(&model.vs)?;
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

/// One line of `detect compare`'s table.
#[derive(Debug, Clone, Serialize)]
pub struct FamilyRow {
    /// Detector family.
    pub family: String,
    /// Backbone architecture.
    pub backbone: String,
    /// Validation mAP at IoU 0.5.
    pub map50: f64,
    /// Validation mAP averaged over IoU 0.5..0.95.
    pub map: f64,
    /// Seconds of training.
    pub train_seconds: f64,
    /// Images per second of forward pass plus post-processing (see [`inference_speed`]).
    pub images_per_second: f64,
    /// Parameters, frozen ones included.
    pub params: i64,
    /// The run directory.
    pub run: String,
}

/// Images per second of [`Detector::predict`] (forward pass, decoding and NMS, at `eval.conf`) on
/// batches of `batch` validation images already letterboxed into a tensor: one warm-up batch, then
/// the median of five timed batches.
pub fn inference_speed(model: &Detector, val: &[DetImage], batch: usize, cfg: &DetectConfig) -> Result<f64> {
    let size = model.img_size as usize;
    let norm = model.normalization();
    let opts = tlcv_core::data::DecodeOptions { max_pixels: cfg.data.max_pixels as usize, target_size: None };
    let mut images = Vec::with_capacity(batch);
    for im in val.iter().cycle().take(batch.max(1)) {
        let img = tlcv_core::data::decode_file(&im.path, &opts)?;
        images.push(crate::augment::letterbox(&img, &[], size)?.0.image);
    }
    if images.is_empty() {
        return Err(DetectError::Invalid("inference speed: no validation images".into()));
    }
    let xs = tlcv_core::data::to_tensor(&images, norm.mean, norm.std)?.to_device(model.vs.device()); // [B, 3, S, S]
    let pp = crate::task::DetectTask::eval_postprocess(cfg);
    model.predict(&xs, &pp)?;
    let mut times = Vec::with_capacity(5);
    for _ in 0..5 {
        let t = std::time::Instant::now();
        model.predict(&xs, &pp)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(images.len() as f64 / times[2].max(1e-9))
}

/// The Markdown table of `detect compare`.
pub fn families_table(rows: &[FamilyRow]) -> String {
    let mut t = String::from(
        "| family | backbone | val mAP@.5 | val mAP@[.5:.95] | training (s) | inference (img/s) | parameters (M) |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        t += &format!(
            "| {} | {} | {:.3} | {:.3} | {:.0} | {:.1} | {:.2} |\n",
            r.family,
            r.backbone,
            r.map50,
            r.map,
            r.train_seconds,
            r.images_per_second,
            r.params as f64 / 1e6
        );
    }
    t
}
