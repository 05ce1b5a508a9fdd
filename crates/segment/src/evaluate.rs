//! Final evaluation at the original resolution of every validation pair, with the metrics of
//! [`crate::metrics`], keeping a few predictions for the report's triplets.

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

/// Predicts every sample at its own resolution and accumulates the confusion matrix.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_samples(
    model: &SegModel,
    samples: &[SegSample],
    num_classes: usize,
    ignore: u8,
    size: i64,
    max_pixels: u64,
    channels_last: bool,
    keep: usize,
) -> Result<Evaluation, SegmentError> {
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
