//! Assignment of priors to ground truth.

pub mod iou;
