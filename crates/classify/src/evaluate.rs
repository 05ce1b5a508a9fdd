//! Evaluation of a trained model on a split: metrics plus every prediction (for the report's grid).

use std::{path::PathBuf, sync::Arc};

use tch::Kind;
use tlcv_core::{
    data::Sample,
    metrics::{ClassificationAccumulator, ClassificationMetrics},
    progress::Progress,
};

use tlcv_core::run::SkipLog;

use crate::{ClassifyError, Result, config::ClassifyConfig, data::Pipeline, model::Model};

/// One evaluated image.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The image file.
    pub path: PathBuf,
    /// True class.
    pub label: usize,
    /// Predicted class.
    pub predicted: usize,
    /// Probability of the predicted class.
    pub prob: f64,
}

/// Metrics and predictions of `model` on `samples`; samples that fail to load are recorded in `skipped`.
/// An error when none of them loads.
pub fn evaluate_split(
    model: &Model,
    cfg: &ClassifyConfig,
    samples: &[Sample],
    classes: &[String],
    skipped: &SkipLog,
) -> Result<(ClassificationMetrics, Vec<Prediction>)> {
    let device = model.vs.device();
    let shared = Arc::new(samples.to_vec());
    // The loader reports which indices each batch holds, so predictions map back to files.
    let loader = tlcv_core::data::Loader::new(shared.len(), cfg.train.batch.max(1));
    let pipeline = Pipeline::new(&cfg.data, false);
    let norm = model.normalization();
    let load = Arc::clone(&shared);
    let iter = loader.iter_epoch(
        0,
        move |i, rng| pipeline.load(&load[i].path, rng).map(|img| (img, load[i].label)),
        move |items| crate::data::collate(items, norm),
    );
    let mut acc = ClassificationAccumulator::new(classes.len());
    let mut predictions = Vec::with_capacity(samples.len());
    let progress = Progress::bar(samples.len() as u64, "evaluate");
    for batch in iter {
        for s in &batch.skipped {
            skipped.record(&shared[s.index].path, &s.reason);
        }
        progress.inc((batch.indices.len() + batch.skipped.len()) as u64);
        let Some(data) = batch.data else { continue };
        let data = data?;
        let logits = tch::no_grad(|| model.forward(&data.images.to_device(device), false));
        acc.add_batch(&logits, &data.labels)?;
        let probs = logits.softmax(-1, Kind::Float);
        let (best, arg) = probs.max_dim(-1, false);
        let best: Vec<f64> = Vec::<f64>::try_from(&best.to_kind(Kind::Double))?;
        let arg: Vec<i64> = Vec::<i64>::try_from(&arg)?;
        for ((&index, p), a) in batch.indices.iter().zip(best).zip(arg) {
            predictions.push(Prediction {
                path: shared[index].path.clone(),
                label: shared[index].label,
                predicted: a as usize,
                prob: p,
            });
        }
    }
    if predictions.is_empty() && !samples.is_empty() {
        return Err(ClassifyError::Invalid(format!(
            "none of the {} images to evaluate could be loaded (e.g. {})",
            samples.len(),
            skipped.reasons().into_iter().next().unwrap_or_default()
        )));
    }
    let metrics = acc.finish(classes);
    progress.finish(format!("{} images, top-1 {:.4}", metrics.samples, metrics.top1));
    Ok((metrics, predictions))
}
