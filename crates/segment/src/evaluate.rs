//! Final evaluation at the original resolution of every validation pair, with the metrics of
//! [`crate::metrics`], keeping a few predictions for the report's triplets.

use crate::SegmentConfig;
use rayon::prelude::*;
use tlcv_core::{data::RgbImage, run::SkipLog};

use crate::{
    data::{SegSample, load_pair},
    error::SegmentError,
    mask::Mask,
    metrics::{SegConfusion, SegSummary},
    model::SegModel,
    predict::predict_mask,
};

/// An evaluated image kept for the report.
#[derive(Debug, Clone)]
pub struct Evaluated {
    /// The sample.
    pub sample: SegSample,
    /// The image.
    pub image: RgbImage,
    /// Ground truth.
    pub truth: Mask,
    /// Prediction.
    pub pred: Mask,
}

/// What [`evaluate_samples`] found.
#[derive(Debug)]
pub struct Evaluation {
    /// Metrics.
    pub summary: SegSummary,
    /// The confusion matrix.
    pub confusion: SegConfusion,
    /// The first `keep` evaluated images.
    pub kept: Vec<Evaluated>,
    /// Samples that could not be loaded.
    pub skipped: SkipLog,
}

/// Predicts every sample at its own resolution (network input `cfg.data.img_size`) and accumulates
/// the confusion matrix; keeps as many evaluated images as the report and `predict` show.
pub fn evaluate_samples(
    model: &SegModel,
    samples: &[SegSample],
    num_classes: usize,
    cfg: &SegmentConfig,
) -> Result<Evaluation, SegmentError> {
    let (ignore, size, max_pixels) = (cfg.data.ignore_index, cfg.data.img_size, cfg.data.max_pixels);
    let (channels_last, keep) = (cfg.train.channels_last, cfg.eval.triplets.max(cfg.eval.predict_images));
    let mut confusion = SegConfusion::new(num_classes, Some(i64::from(ignore)))?;
    let mut kept = Vec::new();
    let skipped = SkipLog::default();
    // Decode in parallel in chunks, run the network one image at a time (sizes may differ).
    for chunk in samples.chunks(16) {
        let loaded: Vec<_> = chunk.par_iter().map(|s| (s, load_pair(s, max_pixels))).collect();
        for (s, pair) in loaded {
            let (image, truth) = match pair {
                Ok(p) => p,
                Err(e) => {
                    s.record_skip(&skipped, &e.to_string());
                    continue;
                }
            };
            let pred = predict_mask(model, &image, size, channels_last)?;
            confusion.update(&truth.data, &pred.data)?;
            if kept.len() < keep {
                kept.push(Evaluated { sample: s.clone(), image, truth, pred });
            }
        }
    }
    Ok(Evaluation { summary: confusion.summary(), confusion, kept, skipped })
}
