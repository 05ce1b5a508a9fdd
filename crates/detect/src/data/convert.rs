//! `detect convert --from yolo|coco --to coco|yolo IN OUT`: reads a data set in one layout (with the
//! usual validation) and writes it in the other, copying the images.

use std::path::Path;

use super::{DetDataset, Issues, coco, yolo};
use crate::config::DataFormat;
use crate::error::{DetectError, Result};

/// Converts `input` (in `from`) into a new folder `output` (in `to`); returns what was dropped.
pub fn convert(from: DataFormat, to: DataFormat, input: &Path, output: &Path) -> Result<(DetDataset, Issues)> {
    if output.exists() && std::fs::read_dir(output).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(DetectError::Invalid(format!("{}: output folder exists and is not empty", output.display())));
    }
    let ds = match from {
        DataFormat::Yolo => yolo::read_dataset(input)?,
        DataFormat::Coco => coco::read_dataset(input)?,
        DataFormat::Auto => super::load(input, DataFormat::Auto)?,
    };
    match to {
        DataFormat::Yolo => yolo::write_dataset(&ds, output)?,
        DataFormat::Coco => coco::write_dataset(&ds, output)?,
        DataFormat::Auto => return Err(DetectError::Invalid("--to must be yolo or coco".into())),
    }
    let issues = ds.issues.clone();
    Ok((ds, issues))
}
