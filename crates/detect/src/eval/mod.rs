//! Detection evaluation: pycocotools-exact COCO bbox metrics, PR/F1 curves and a confusion matrix.

pub mod coco;
pub mod curves;
pub mod json;
pub mod sharded;

use std::path::Path;

pub use coco::{CocoEval, CocoParams, CocoSummary, evaluate};
pub use json::{CocoAnnotation, CocoCategory, CocoDataset, CocoDetection, CocoImage, load_dets, load_gt};

use crate::error::DetectError;

/// Offline COCO bbox evaluation of a result file against a ground-truth file with the default
/// parameters; errors name the file and JSON path of bad input.
pub fn evaluate_files(gt: &Path, dets: &Path) -> Result<CocoSummary, DetectError> {
    let ds = load_gt(gt)?;
    let d = load_dets(dets, &ds)?;
    Ok(evaluate(&ds, &d, &CocoParams::default())?.summary())
}
