//! End-to-end orchestration: train a run, reload its best weights, evaluate at the original resolution,
//! and reload a finished run for `eval` / `predict`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tlcv_core::{
    checkpoint::{self, LoadOptions},
    freeze::Strategy,
    run_dir::RunDir,
    train::{self, FitOptions, FitSummary, SingleProcess},
};

use crate::{
    SegmentError,
    config::SegmentConfig,
    data::{SegDataset, load_dataset},
    evaluate::{Evaluation, evaluate_samples},
    model::SegModel,
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
    /// Every skipped sample (indexing, training, evaluation), deduplicated.
    pub skipped: Vec<String>,
    /// The data.
    pub dataset: SegDataset,
    /// Seconds of the final evaluation.
    pub eval_seconds: f64,
}

/// Sets libtorch's and rayon's thread counts once.
pub fn configure_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let _ = tlcv_core::data::configure_threads(cores);
    });
}

/// Trains per `cfg` into `run` and evaluates the best weights on val.
pub fn train(cfg: &SegmentConfig, run: &RunDir, resume: bool) -> Result<TrainOutcome, SegmentError> {
    configure_threads();
    let device = cfg.train.device.resolve()?;
    tch::manual_seed(cfg.train.seed as i64);
    let dataset = load_dataset(&cfg.data)?;
    eprintln!(
        "data: {} ({} classes; {} train, {} val, {} skipped)",
        dataset.root.display(),
        dataset.classes.len(),
        dataset.train.len(),
        dataset.val.len(),
        dataset.skipped.len()
    );
    for s in &dataset.skipped {
        eprintln!("skipped: {s}");
    }
    if dataset.val.is_empty() {
        return Err(SegmentError::Invalid(format!("{}: the val split is empty", dataset.root.display())));
    }
    let model = SegModel::build(&cfg.model, dataset.classes.len() as i64, device)?;
    if cfg.train.channels_last {
        tlcv_core::freeze::to_channels_last(&model.vs);
    }
    eprintln!("model: {} on {} ({}), {}", cfg.model.kind, cfg.model.backbone, cfg.model.strategy, model.freeze);
    write_run_files(cfg, run, &dataset.classes)?;
    let loss = loss_of(cfg, dataset.classes.len())?;
    let skipped = Arc::new(Mutex::new(Vec::new()));
    let compute_kind = cfg.train.compute_kind(device);
    let mut task = SegTask { model, cfg: cfg.clone(), dataset, loss, skipped: Arc::clone(&skipped), compute_kind };
    let opts = FitOptions { resume, max_epochs_this_run: None };
    let fit = train::fit(&mut task, &cfg.train.for_strategy(cfg.model.strategy), run, &SingleProcess, &opts)?;
    let SegTask { model, dataset, .. } = task;
    if run.best_weights().is_file() {
        checkpoint::load_file(&model.vs, &run.best_weights(), &LoadOptions::default())
            .map_err(|e| SegmentError::Invalid(e.to_string()))?;
    }
    let start = std::time::Instant::now();
    let eval = evaluate_run(&model, cfg, &dataset)?;
    let eval_seconds = start.elapsed().as_secs_f64();
    let mut all: Vec<String> = dataset.skipped.clone();
    all.extend(skipped.lock().map(|l| l.clone()).unwrap_or_default());
    all.extend(eval.skipped.iter().cloned());
    all.sort();
    all.dedup();
    Ok(TrainOutcome { eval, fit, skipped: all, dataset, eval_seconds })
}

/// Evaluates `model` on the val split of `dataset` at the original resolution.
pub fn evaluate_run(model: &SegModel, cfg: &SegmentConfig, dataset: &SegDataset) -> Result<Evaluation, SegmentError> {
    evaluate_samples(
        model,
        &dataset.val,
        dataset.classes.len(),
        cfg.data.ignore_index,
        cfg.data.img_size,
        cfg.data.max_pixels,
        cfg.train.channels_last,
        cfg.eval.triplets.max(cfg.eval.predict_images),
    )
}

/// Writes the resolved configuration and the class names into the run directory.
pub fn write_run_files(cfg: &SegmentConfig, run: &RunDir, classes: &[String]) -> Result<(), SegmentError> {
    let text = tlcv_core::config::to_toml(cfg).map_err(|e| SegmentError::Invalid(e.to_string()))?;
    tlcv_core::run_dir::write_atomic(&run.config_path(), text.as_bytes())?;
    run.write_json(&run.root().join("classes.json"), &classes)?;
    Ok(())
}

/// A trained run: its configuration, class names and model with the best weights.
pub fn load_run(dir: &Path) -> Result<(SegmentConfig, Vec<String>, SegModel, RunDir), SegmentError> {
    let run = RunDir::open(dir)?;
    let cfg: SegmentConfig =
        tlcv_core::config::load(Some(&run.config_path()), &[]).map_err(|e| SegmentError::Invalid(e.to_string()))?;
    let classes_path = run.root().join("classes.json");
    let text = std::fs::read_to_string(&classes_path)
        .map_err(|source| SegmentError::Io { path: classes_path.clone(), source })?;
    let classes: Vec<String> =
        serde_json::from_str(&text).map_err(|e| SegmentError::Invalid(format!("{}: {e}", classes_path.display())))?;
    let mut model_cfg = cfg.model.clone();
    model_cfg.weights = "none".into();
    model_cfg.strategy = Strategy::Scratch;
    let model = SegModel::build(&model_cfg, classes.len() as i64, cfg.train.device.resolve()?)?;
    let weights = if run.best_weights().is_file() { run.best_weights() } else { run.last_weights() };
    checkpoint::load_file(&model.vs, &weights, &LoadOptions::default())
        .map_err(|e| SegmentError::Invalid(e.to_string()))?;
    if cfg.train.channels_last {
        tlcv_core::freeze::to_channels_last(&model.vs);
    }
    Ok((cfg, classes, model, run))
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
    /// Number of samples skipped.
    pub skipped_samples: usize,
    /// Their reasons, one per file.
    pub skipped: &'a [String],
    /// Best epoch (1-based).
    pub best_epoch: Option<usize>,
    /// Training seconds.
    pub train_seconds: f64,
    /// Evaluation seconds.
    pub eval_seconds: f64,
}
